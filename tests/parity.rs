//! GenServer parity and what a suite written from the public docs checks:
//! a kill silences the reply of the killed incarnation; a back-off forgives
//! an incarnation that made progress; a worker's own shorter idle timeout
//! is honoured on time; blocking work whose executor went away is an error
//! the worker handles; a shutdown keeps its deadline and reports what it
//! did; a handler can defer its reply.

mod common;

use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// A kill silences the reply.

/// A worker whose handler kills itself, or computes for a while without
/// awaiting, before it answers.
struct Doomed {
    /// Set when the busy handler has begun.
    busy: Arc<AtomicBool>,
}

enum Job {
    /// Kill its own handle, then answer.
    KillSelfThenAnswer,
    /// Compute for 30 ms without an `.await`, then answer.
    Compute,
}

impl Worker for Doomed {
    type Id = u32;
    type Args = Arc<AtomicBool>;
    type Request = Job;
    type Reply = &'static str;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, busy: Arc<AtomicBool>, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Doomed { busy })
    }

    async fn handle_call(&mut self, job: Job, ctx: &mut Context<Self>) -> &'static str {
        match job {
            Job::KillSelfThenAnswer => {
                ctx.handle().kill();
                "answered after its own kill"
            }
            Job::Compute => {
                self.busy.store(true, Ordering::SeqCst);
                let began = Instant::now();
                while began.elapsed() < Duration::from_millis(30) {
                    std::hint::spin_loop();
                }
                "answered after a kill from outside"
            }
        }
    }

    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        DOOMED_TERMINATES.fetch_add(1, Ordering::SeqCst);
    }
}

/// `terminate`s run by any [`Doomed`] worker: every one of them is killed.
static DOOMED_TERMINATES: AtomicUsize = AtomicUsize::new(0);

/// A short name of `executor` for a failure's message.
fn executor_name(executor: &Executor) -> &'static str {
    match executor {
        Executor::Bastion => "Bastion",
        _ => "tokio",
    }
}

fn doomed_on(executor: Executor) -> GenRegistry<Doomed> {
    GenRegistry::new(Options::default().executor(executor)).unwrap()
}

#[test]
fn a_handler_that_kills_itself_never_answers_its_caller() {
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let registry = doomed_on(executor);
        common::run(30, async move {
            for round in 0..50 {
                let worker = registry
                    .lookup_or_start(round, Arc::default())
                    .await
                    .unwrap();
                let reply = worker.call(Job::KillSelfThenAnswer).await;
                assert!(
                    matches!(reply, Err(Error::WorkerEnded)),
                    "{name}, round {round}: a killed incarnation answered: {reply:?}"
                );
                assert_eq!(worker.monitor().await, ExitReason::Killed);
                assert!(registry.lookup(&round).is_err());
            }
            registry.shutdown().await;
        });
    }
    assert_eq!(DOOMED_TERMINATES.load(Ordering::SeqCst), 0);
}

#[test]
fn a_busy_handler_killed_from_outside_never_answers_its_caller() {
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let registry = doomed_on(executor);
        common::run(60, async move {
            for round in 0..10 {
                let busy = Arc::new(AtomicBool::new(false));
                let worker = registry.lookup_or_start(round, busy.clone()).await.unwrap();
                let caller = worker.clone();
                let reply = common::spawn(async move { caller.call(Job::Compute).await });
                common::wait_until(|| busy.load(Ordering::SeqCst)).await;
                worker.kill();
                let reply = reply.await;
                assert!(
                    matches!(reply, Err(Error::WorkerEnded)),
                    "{name}, round {round}: answered after kill returned: {reply:?}"
                );
                assert_eq!(worker.monitor().await, ExitReason::Killed);
                assert!(registry.lookup(&round).is_err());
            }
            registry.shutdown().await;
        });
    }
    assert_eq!(DOOMED_TERMINATES.load(Ordering::SeqCst), 0);
}
