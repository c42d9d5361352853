//! The life of one worker: `init`, the message loop, `terminate`, and the
//! bookkeeping when it ends, whatever way it ends.
//!
//! Each worker is one future on Bastion's executor (a `lightproc` proc). It owns
//! a [`Guard`] from before its first poll, so even a proc cancelled before it
//! ever ran, or dropped mid-`init`, leaves the registry consistent: the guard's
//! drop marks the cell ended and removes its entry. Panics in the worker's
//! callbacks are caught around each callback, so the loop itself decides what a
//! panic means (answer the caller, end the worker) instead of losing the proc.

use crate::cell::{CallFailure, Envelope, Next, StartFailure};
use crate::context::Context;
use crate::timer::{Elapsed, timeout};
use crate::worker::{ExitReason, Worker};
use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

/// Messages handled in a row before the worker yields its thread to others.
const BUDGET: u32 = 64;

/// Owns the worker's context; ending the worker goes through it exactly once.
pub(crate) struct Guard<W: Worker> {
    ctx: Context<W>,
    retired: bool,
}

impl<W: Worker> Guard<W> {
    pub(crate) fn new(ctx: Context<W>) -> Self {
        Guard {
            ctx,
            retired: false,
        }
    }

    fn retire(&mut self) {
        self.retired = true;
        self.ctx.shared.retire(&self.ctx.handle.cell);
    }
}

impl<W: Worker> Drop for Guard<W> {
    fn drop(&mut self) {
        if !self.retired {
            // Aborted (killed, cancelled) or unwinding: nothing else will clean up.
            self.retire();
        }
    }
}

/// Turns a caught panic's payload into its message.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

/// The whole life of a worker.
pub(crate) async fn run<W: Worker>(mut guard: Guard<W>, args: W::Args) {
    let start_timeout = guard.ctx.shared.options.get_start_timeout();
    let init = {
        let ctx = &guard.ctx;
        let init = AssertUnwindSafe(W::init(ctx.id(), args, ctx)).catch_unwind();
        timeout(start_timeout, init).await
    };
    let failure = match init {
        Ok(Ok(Ok(worker))) => return serve(guard, worker).await,
        Ok(Ok(Err(e))) => StartFailure::Init(e),
        Ok(Err(panic)) => StartFailure::Panicked(panic_message(panic)),
        Err(Elapsed) => StartFailure::Timeout(start_timeout),
    };
    guard.ctx.handle.cell.set_start_failure(failure);
    guard.retire();
}

async fn serve<W: Worker>(mut guard: Guard<W>, mut worker: W) {
    let reason = match guard.ctx.shared.mark_running(&guard.ctx.handle.cell) {
        Err(reason) => reason,
        Ok(()) => handle_mail(&mut guard.ctx, &mut worker).await,
    };
    let ctx = &mut guard.ctx;
    let _ = AssertUnwindSafe(worker.terminate(&reason, ctx))
        .catch_unwind()
        .await;
    // The state goes before the entry: once `stop` returns, the worker's
    // resources are released too.
    drop(worker);
    guard.retire();
}

/// The message loop; returns why the worker ends.
async fn handle_mail<W: Worker>(ctx: &mut Context<W>, worker: &mut W) -> ExitReason {
    let mut budget = BUDGET;
    loop {
        let envelope = match ctx.handle.cell.next().await {
            Next::Stop(reason) => return reason,
            Next::Mail(envelope) => envelope,
        };
        match envelope {
            Envelope::Call(request, reply_to) => {
                let reply = AssertUnwindSafe(worker.handle_call(request, ctx))
                    .catch_unwind()
                    .await;
                match reply {
                    Ok(reply) => {
                        if ctx.stop {
                            // Leave the registry before the caller can act on the reply.
                            ctx.shared.leave_running(&ctx.handle.cell);
                        }
                        let _ = reply_to.send(Ok(reply));
                    }
                    Err(panic) => {
                        let message = panic_message(panic);
                        ctx.shared.leave_running(&ctx.handle.cell);
                        let _ = reply_to.send(Err(CallFailure::Panicked(message.clone())));
                        return ExitReason::Panicked(message);
                    }
                }
            }
            Envelope::Cast(message) => {
                let done = AssertUnwindSafe(worker.handle_cast(message, ctx))
                    .catch_unwind()
                    .await;
                if let Err(panic) = done {
                    ctx.shared.leave_running(&ctx.handle.cell);
                    return ExitReason::Panicked(panic_message(panic));
                }
            }
        }
        if ctx.stop {
            ctx.shared.leave_running(&ctx.handle.cell);
            return ExitReason::Normal;
        }
        budget -= 1;
        if budget == 0 {
            budget = BUDGET;
            yield_now().await;
        }
    }
}

/// Gives the executor thread to other procs once.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}
