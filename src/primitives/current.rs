//! Which worker the current thread is polling, so a worker that waits on
//! itself (calls its own handle, stops its own id, shuts its registry down)
//! is told at once instead of waiting out a timeout.
//!
//! The worker's future is wrapped in [`Polling`], which names its worker in a
//! thread-local for the length of each poll: two stores per poll, no lock, no
//! shared write. A task spawned by a worker is not the worker, so a call
//! from it still reaches the worker as any other call does.

use pin_project_lite::pin_project;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static POLLING: Cell<usize> = const { Cell::new(0) };
}

/// Whether the worker at `address` is the one being polled on this thread.
pub(crate) fn is(address: usize) -> bool {
    POLLING
        .try_with(Cell::get)
        .is_ok_and(|polling| polling == address)
}

pin_project! {
    /// A worker's future, with its worker's address set as current while it
    /// is polled.
    pub(crate) struct Polling<F> {
        address: usize,
        #[pin]
        future: F,
    }
}

impl<F> Polling<F> {
    pub(crate) fn new(address: usize, future: F) -> Self {
        Polling { address, future }
    }
}

impl<F: Future> Future for Polling<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let outer = POLLING.replace(*this.address);
        // Put back even if the poll panics (a panic outside the callbacks,
        // which the worker's loop catches, ends the worker's future).
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                POLLING.set(self.0);
            }
        }
        let _restore = Restore(outer);
        this.future.poll(cx)
    }
}
