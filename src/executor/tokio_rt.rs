//! The tokio side of the seam.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::runtime::Handle;

/// The runtime current on this thread, or why there is none.
pub(super) fn current() -> Result<Handle, String> {
    Handle::try_current().map_err(|_| {
        "Executor::CurrentTokio needs a tokio runtime, and the registry was created outside one: \
         create it inside the runtime (e.g. in `#[tokio::main]` or `Runtime::block_on`), or pass \
         `Executor::Tokio(handle)`"
            .to_owned()
    })
}

pin_project! {
    /// A future polled inside a tokio runtime's context, wherever it runs:
    /// what it awaits can register with that runtime's reactor and timer.
    pub(super) struct Entered<F> {
        handle: Handle,
        #[pin]
        future: F,
    }
}

impl<F> Entered<F> {
    pub(super) fn new(handle: Handle, future: F) -> Self {
        Entered { handle, future }
    }
}

impl<F: Future> Future for Entered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _context = this.handle.enter();
        this.future.poll(cx)
    }
}
