//! The life of one worker: `init`, the message loop, `terminate`, and the
//! bookkeeping when it ends, whatever way it ends.
//!
//! Each worker is one future on its registry's executor (see
//! [`crate::executor`]): a `lightproc` proc on Bastion's, a task on tokio's.
//! It owns a [`Guard`] from before its first poll, so even a future
//! cancelled before it ever ran, or dropped mid-`init`, leaves the registry
//! consistent: the guard's drop marks the cell ended and removes its entry.
//! Panics in the worker's callbacks are caught around each callback, so the
//! loop itself decides what a panic means (answer the caller, end the
//! worker) instead of losing the worker's future.

use crate::executor::Task;
use crate::primitives::current::Polling;
use crate::primitives::timer::{Elapsed, Sleep, timeout};
use crate::worker::cell::{CallFailure, Cell, Envelope, Next, StartFailure, State};
use crate::worker::context::Context;
use crate::worker::event::{Event, notify};
use crate::worker::restart::{Permit, Restarts};
use crate::worker::telemetry::{Callback, Sampled, in_span, span_for, start_clock};
use crate::worker::{ExitReason, Worker};
use futures::FutureExt;
use futures::future::{self, Either, OptionFuture};
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// Messages handled in a row before the worker yields its thread to others.
const BUDGET: u32 = 64;

/// Owns the worker's context; ending the worker goes through it exactly once
/// (once it has, the cell is Ended). Whether `Started` was reported, so
/// `Stopped` must be, is `ctx.started`: a flag of its own here would cost
/// each idle worker 8 bytes of padding.
pub(crate) struct Guard<W: Worker> {
    ctx: Context<W>,
}

impl<W: Worker> Guard<W> {
    pub(crate) fn new(ctx: Context<W>) -> Self {
        Guard { ctx }
    }

    fn cell(&self) -> &Cell<W> {
        &self.ctx.handle.cell
    }

    fn notify(&self, event: Event<'_, W>) {
        self.ctx.shared.view.metrics.count(&event);
        notify(self.ctx.shared.options.observer(), event);
    }

    /// The worker is gone for good: report it, then free its id.
    fn end(&mut self, reason: &ExitReason) {
        self.cell().set_exit(reason);
        if self.ctx.started {
            self.notify(Event::Stopped {
                id: self.ctx.id(),
                reason,
            });
        }
        self.ctx.shared.retire(&self.ctx.handle.cell);
    }
}

impl<W: Worker> Drop for Guard<W> {
    fn drop(&mut self) {
        if self.cell().state() != State::Ended {
            // Aborted (killed, cancelled) or unwinding: nothing else will clean up.
            if !self.ctx.started {
                // Not killed, so its executor dropped it: tell the starter why.
                self.cell().abandoned();
            } else {
                self.notify(Event::Exited {
                    id: self.ctx.id(),
                    reason: &ExitReason::Killed,
                });
            }
            self.end(&ExitReason::Killed);
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

/// Runs the worker of `guard` on its registry's executor.
pub(crate) fn spawn<W: Worker>(guard: Guard<W>, args: W::Args) -> Task {
    let address = guard.cell().address();
    let shared = guard.ctx.shared.clone();
    shared
        .options
        .get_executor()
        .spawn(Polling::new(address, run(guard, args)))
}

/// The whole life of a worker: its start (its first `init`), then, if it
/// started, its incarnations for as long as its restart policy allows.
///
/// The start runs boxed, apart from the rest: a future is as large as its
/// largest state, and the start's states (the worker's `init` future inside
/// the start timeout) are larger than an idle worker's, so inline they would
/// be paid by each idle worker for its whole life, for a step that runs once.
/// The box is freed as soon as the worker runs. The two steps are chained
/// with combinators rather than in an `async` block, which would keep the
/// box's pointer and its own state beside the running worker's future.
///
/// The box is made at the future's first poll, on the executor thread that
/// also frees it, rather than here on the starter's: there the allocator
/// hands the same block to the next start on that thread, whereas a block
/// freed on another thread than the one that made it left holes among the
/// running workers' memory (100,000 workers started one after the other:
/// 407.5 B of RSS per worker this way, 457.6 B that way; BENCHMARKS.md,
/// "Memory per idle worker").
fn run<W: Worker>(guard: Guard<W>, args: W::Args) -> impl Future<Output = ()> {
    future::lazy(|_| Box::pin(start(guard, args)))
        .flatten()
        .map(|started| OptionFuture::from(started.map(live)))
        .flatten()
        .map(|_| ())
}

/// Only a restarting policy keeps a clone of the args (and its counters),
/// boxed, so the default costs one pointer and no clone.
type MaybeRestarts<W> = Option<Box<Restarts<<W as Worker>::Args>>>;

/// A running worker: its state, its restart policy's state and its guard,
/// dropped in that order (fields drop in the order they are declared): if
/// its future is dropped (killed, aborted), the worker's resources are
/// released before the guard ends it, so whoever sees it ended sees them
/// released too. (`live`'s future captures the fields one by one, and keeps
/// their drop order; `a_killed_workers_state_is_dropped_before_it_is_seen_ended`
/// checks it.)
struct Life<W: Worker> {
    worker: W,
    restarts: MaybeRestarts<W>,
    guard: Guard<W>,
}

/// Starts the worker: its first `init`, then Running. The running worker;
/// `None` if it ended instead.
async fn start<W: Worker>(mut guard: Guard<W>, args: W::Args) -> Option<Life<W>> {
    let restarts = guard
        .ctx
        .shared
        .options
        .clone_args_for_restarts()
        .map(|clone| Box::new(Restarts::new(&args, clone)));
    let worker = match init(&guard.ctx, args).await {
        Ok(worker) => worker,
        Err(failure) => {
            guard.cell().set_start_failure(failure);
            guard.end(&ExitReason::Normal);
            return None;
        }
    };
    guard.ctx.started = true;
    guard.notify(Event::Started { id: guard.ctx.id() });
    match guard.ctx.shared.mark_running(guard.cell()) {
        Ok(()) => Some(Life {
            worker,
            restarts,
            guard,
        }),
        // Its future is being dropped: no `terminate`.
        Err(ExitReason::Killed) => None,
        Err(reason) => {
            // Boxed: a path few starts take, which would more than double
            // the start's own box.
            Box::pin(finish(&mut guard, worker, reason, None)).await;
            None
        }
    }
}

/// The running worker: its message loop, restarts included, until it ends.
///
/// Written as a function returning an `async move` block, not an `async fn`:
/// an `async fn` moves its parameters into fresh locals, so the future would
/// hold them twice. The loop is written out here rather than awaited as a
/// future of its own, which would hold references to the guard, the worker
/// and the restarts: every byte of this future is paid by each idle worker.
#[allow(clippy::manual_async_fn)] // deliberate: see above
fn live<W: Worker>(mut life: Life<W>) -> impl Future<Output = ()> {
    async move {
        let mut budget = BUDGET;
        loop {
            // Made in a block of its own, so that the reason is not kept
            // beside the box while the ending runs.
            let ended = {
                // The message loop; breaks with why the incarnation ends and, if
                // it crashed and may restart, the permit. A crash that may not
                // restart leaves the registry's view before its caller hears of it.
                let (reason, permit) = loop {
                    let envelope = match life.guard.cell().next().await {
                        Next::Stop(reason) => break (reason, None),
                        Next::Mail(envelope) => envelope,
                    };
                    match envelope {
                        Envelope::Call(request, reply_to) => {
                            // In the context while the handler runs, so that it
                            // can take it along (`Context::defer`).
                            life.guard.ctx.reply = Some(reply_to);
                            let span = span_for(Callback::Call, &life.guard.ctx);
                            let call = life.worker.handle_call(request, &mut life.guard.ctx);
                            let reply = AssertUnwindSafe(in_span(call, span)).catch_unwind().await;
                            // `None`: the handler deferred its reply.
                            let reply_to = life.guard.ctx.reply.take();
                            match reply {
                                Ok(reply) => {
                                    if life.guard.ctx.stop {
                                        // Leave the registry before the caller can act on the reply.
                                        life.guard.ctx.shared.leave_running(life.guard.cell());
                                    }
                                    if let Some(reply_to) = reply_to {
                                        life.guard.cell().answer_handled(reply_to, Ok(reply));
                                    }
                                }
                                Err(panic) => {
                                    let message = panic_message(panic);
                                    let ending = crash(
                                        &life.guard.ctx,
                                        life.restarts.as_deref_mut(),
                                        message.clone(),
                                    );
                                    if let Some(reply_to) = reply_to {
                                        let panicked = Err(CallFailure::Panicked(message));
                                        life.guard.cell().answer(reply_to, panicked);
                                    }
                                    break ending;
                                }
                            }
                        }
                        Envelope::Cast(message) => {
                            let done = AssertUnwindSafe(
                                life.worker.handle_cast(message, &mut life.guard.ctx),
                            )
                            .catch_unwind()
                            .await;
                            if let Err(panic) = done {
                                break crash(
                                    &life.guard.ctx,
                                    life.restarts.as_deref_mut(),
                                    panic_message(panic),
                                );
                            }
                        }
                    }
                    // Handled without a panic: this incarnation made progress,
                    // so its next crash is not part of a crash loop.
                    if let Some(restarts) = life.restarts.as_deref_mut() {
                        restarts.progress();
                    }
                    if life.guard.ctx.stop {
                        life.guard.ctx.shared.leave_running(life.guard.cell());
                        break (ExitReason::Normal, None);
                    }
                    budget -= 1;
                    if budget == 0 {
                        budget = BUDGET;
                        yield_now().await;
                    }
                };
                // Boxed, taking the reason and the permit along: the ending and
                // restart paths run once, and inline their states would double the
                // size of every idle worker's future.
                match permit {
                    None => {
                        // A crash without a permit under a restarting policy: it gave up.
                        let gave_up = life.restarts.as_ref().filter(|_| reason.is_abnormal());
                        let gave_up = gave_up.map(|r| r.count());
                        let finish = finish(&mut life.guard, life.worker, reason, gave_up);
                        Either::Left(Box::pin(finish.map(|()| None)))
                    }
                    Some(permit) => {
                        let restarts = life
                            .restarts
                            .as_deref_mut()
                            .expect("a permit comes from a restart policy");
                        let restart =
                            restart(&mut life.guard, life.worker, reason, restarts, permit);
                        Either::Right(Box::pin(restart))
                    }
                }
            };
            match ended.await {
                Some(next) => life.worker = next,
                None => return,
            }
        }
    }
}

/// A handler panicked with `message`: the incarnation ends, with a permit to
/// restart if its policy grants one; without one, the worker leaves the
/// registry's view now.
fn crash<W: Worker>(
    ctx: &Context<W>,
    restarts: Option<&mut Restarts<W::Args>>,
    message: String,
) -> (ExitReason, Option<Permit>) {
    let options = &ctx.shared.options;
    let permit = restarts.and_then(|r| r.permit(options.get_restart(), options.get_back_off()));
    if permit.is_none() {
        ctx.shared.leave_running(&ctx.handle.cell);
    }
    (ExitReason::Panicked(message), permit)
}

/// Brings a crashed worker back: ends the crashed incarnation, waits out the
/// back-off and runs `init` again, for as long as the policy permits. The worker keeps its place
/// (Running) meanwhile: lookups find it, mail queues up for the next
/// incarnation. `None` once the worker has ended (stopped, or given up).
async fn restart<W: Worker>(
    guard: &mut Guard<W>,
    crashed: W,
    reason: ExitReason,
    restarts: &mut Restarts<W::Args>,
    mut permit: Permit,
) -> Option<W> {
    exit(guard, crashed, &reason).await;
    let shared = guard.ctx.shared.clone();
    let (policy, back_off) = (shared.options.get_restart(), shared.options.get_back_off());
    loop {
        // Counted from the crash until the next `init` has returned.
        let in_back_off = shared.view.metrics.back_off();
        guard.notify(Event::Restarting {
            id: guard.ctx.id(),
            attempt: permit.attempt,
            delay: permit.delay,
        });
        if let Some(stop) = wait_or_stop(guard.cell(), permit.delay).await {
            drop(in_back_off);
            guard.end(&stop);
            return None;
        }
        guard.ctx.restarts = guard.ctx.restarts.saturating_add(1);
        let started = init(&guard.ctx, restarts.args()).await;
        drop(in_back_off);
        let failure = match started {
            Ok(worker) => match guard.cell().take_stop() {
                Some(stop) => {
                    finish(guard, worker, stop, None).await;
                    return None;
                }
                None => {
                    restarts.up();
                    guard.notify(Event::Restarted {
                        id: guard.ctx.id(),
                        attempt: permit.attempt,
                    });
                    return Some(worker);
                }
            },
            Err(failure) => ExitReason::InitFailed(failure.to_string()),
        };
        guard.notify(Event::Exited {
            id: guard.ctx.id(),
            reason: &failure,
        });
        if let Some(stop) = guard.cell().take_stop() {
            guard.end(&stop);
            return None;
        }
        match restarts.permit(policy, back_off) {
            Some(next) => permit = next,
            None => {
                guard.ctx.shared.leave_running(guard.cell());
                guard.notify(Event::GaveUp {
                    id: guard.ctx.id(),
                    restarts: restarts.count(),
                });
                guard.end(&failure);
                return None;
            }
        }
    }
}

/// Runs `init` with the start timeout, containing a panic.
/// (An `async move` block for the reason given at [`live`]; the timeout is
/// read again on failure rather than kept across the wait.)
#[allow(clippy::manual_async_fn)] // deliberate: see `run`
fn init<W: Worker>(
    ctx: &Context<W>,
    args: W::Args,
) -> impl Future<Output = Result<W, StartFailure<W::Error>>> + '_ {
    async move {
        let options = &ctx.shared.options;
        let clock = start_clock(Sampled::Init);
        let init = in_span(W::init(ctx.id(), args, ctx), span_for(Callback::Init, ctx));
        let init = AssertUnwindSafe(init).catch_unwind();
        let outcome = match timeout(options.get_start_timeout(), init).await {
            Ok(Ok(Ok(worker))) => Ok(worker),
            Ok(Ok(Err(e))) => Err(StartFailure::Init(e)),
            Ok(Err(panic)) => Err(StartFailure::Panicked(panic_message(panic))),
            Err(Elapsed) => Err(StartFailure::Timeout(options.get_start_timeout())),
        };
        let took = clock.map(|at| at.elapsed());
        ctx.shared.view.metrics.init_ended(took, outcome.is_err());
        outcome
    }
}

/// Ends an incarnation: `terminate` (a panic in it is contained), then the
/// worker's state is dropped, then `Exited` is reported.
async fn exit<W: Worker>(guard: &mut Guard<W>, mut worker: W, reason: &ExitReason) {
    // The incarnation's timers go with it: a restart never duplicates them.
    guard.cell().clear_timers();
    let span = span_for(Callback::Terminate, &guard.ctx);
    let terminate = worker.terminate(reason, &mut guard.ctx);
    let _ = AssertUnwindSafe(in_span(terminate, span))
        .catch_unwind()
        .await;
    // The state goes before the entry: once `stop` returns, the worker's
    // resources are released too.
    drop(worker);
    guard.notify(Event::Exited {
        id: guard.ctx.id(),
        reason,
    });
}

/// Ends the last incarnation and the worker, reporting a spent restart policy
/// (`gave_up`: the restarts counted against it) in between.
async fn finish<W: Worker>(
    guard: &mut Guard<W>,
    worker: W,
    reason: ExitReason,
    gave_up: Option<u32>,
) {
    exit(guard, worker, &reason).await;
    if let Some(restarts) = gave_up {
        guard.notify(Event::GaveUp {
            id: guard.ctx.id(),
            restarts,
        });
    }
    guard.end(&reason);
}

/// Waits out a back-off; a stop request cuts it short and is returned.
async fn wait_or_stop<W: Worker>(cell: &Cell<W>, delay: Duration) -> Option<ExitReason> {
    if delay.is_zero() {
        return cell.take_stop();
    }
    let mut sleep = Sleep::new(delay);
    futures::future::poll_fn(|cx| {
        if let Poll::Ready(stop) = cell.poll_stop(cx) {
            return Poll::Ready(Some(stop));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| None)
    })
    .await
}

/// Gives the executor thread to other workers once.
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
