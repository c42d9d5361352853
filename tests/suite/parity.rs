//! GenServer parity and what a suite written from the public docs checks:
//! a kill silences the reply of the killed incarnation; a back-off forgives
//! an incarnation that made progress; a worker's own shorter idle timeout
//! is honoured on time; blocking work whose executor went away is an error
//! the worker handles; a shutdown keeps its deadline and reports what it
//! did; a handler can defer its reply.

use crate::common;
use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// A kill silences the reply.

/// A worker whose handler kills itself, or computes without awaiting
/// until its kill was sent, before it answers.
struct Doomed {
    /// Where the busy handler is: [`IDLE`], [`BUSY`], then [`KILL_SENT`]
    /// (set by the test once `kill` returned).
    busy: Arc<AtomicU8>,
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const KILL_SENT: u8 = 2;

enum Job {
    /// Kill its own handle, then answer.
    KillSelfThenAnswer,
    /// Compute without an `.await` until the kill was sent (at most 10 s),
    /// then answer.
    Compute,
}

impl Worker for Doomed {
    type Id = u32;
    type Args = Arc<AtomicU8>;
    type Request = Job;
    type Reply = &'static str;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, busy: Arc<AtomicU8>, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Doomed { busy })
    }

    async fn handle_call(&mut self, job: Job, ctx: &mut Context<Self>) -> &'static str {
        match job {
            Job::KillSelfThenAnswer => {
                ctx.handle().kill();
                "answered after its own kill"
            }
            Job::Compute => {
                self.busy.store(BUSY, Ordering::SeqCst);
                let began = Instant::now();
                while self.busy.load(Ordering::SeqCst) != KILL_SENT
                    && began.elapsed() < Duration::from_secs(10)
                {
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
                let busy = Arc::new(AtomicU8::new(IDLE));
                let worker = registry.lookup_or_start(round, busy.clone()).await.unwrap();
                let caller = worker.clone();
                let reply = common::spawn(async move { caller.call(Job::Compute).await });
                common::wait_until(|| busy.load(Ordering::SeqCst) == BUSY).await;
                worker.kill();
                busy.store(KILL_SENT, Ordering::SeqCst);
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

// ---------------------------------------------------------------------------
// A back-off that forgives progress.

/// One hot id: answers with the number of requests so far, and panics on
/// every 100th.
struct Hot {
    requests: Arc<AtomicUsize>,
}

impl Worker for Hot {
    type Id = u32;
    type Args = Arc<AtomicUsize>;
    type Request = ();
    type Reply = usize;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(
        _: &u32,
        requests: Arc<AtomicUsize>,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(Hot { requests })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> usize {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if n % 100 == 0 {
            panic!("deliberate: request {n}");
        }
        n
    }
}

#[test]
fn a_hot_id_that_crashes_now_and_then_answers_every_caller_in_time() {
    common::quiet_deliberate_panics();
    // 10,000 in the full run: GEN_REGISTRY_PARITY_HOT_CALLERS=10000.
    let callers = common::size_from_env("GEN_REGISTRY_PARITY_HOT_CALLERS", 2_000);
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let options = Options::default()
            .executor(executor)
            .restart(gen_registry::RestartPolicy::Always);
        let registry = GenRegistry::<Hot>::new(options).unwrap();
        let (answered, panicked, other) = common::run(120, async move {
            let worker = registry.start(1, Arc::default()).await.unwrap();
            let calls = (0..callers).map(|_| {
                let worker = worker.clone();
                common::spawn(async move { worker.call(()).await })
            });
            let replies = futures::future::join_all(calls).await;
            registry.shutdown().await;
            let mut counts = (0, 0, Vec::new());
            for reply in replies {
                match reply {
                    Ok(_) => counts.0 += 1,
                    Err(Error::HandlerPanicked(m)) if m.contains("deliberate") => counts.1 += 1,
                    Err(e) => counts.2.push(e.to_string()),
                }
            }
            counts
        });
        assert!(
            other.is_empty(),
            "{name}: {} of {callers} calls failed otherwise, first: {}",
            other.len(),
            other[0]
        );
        assert_eq!(answered + panicked, callers, "{name}");
        assert_eq!(panicked, callers / 100, "{name}");
    }
}

/// A worker that crashes before it handles anything: its `init` sends it a
/// message whose handler panics.
struct Brittle;

impl Worker for Brittle {
    type Id = u32;
    type Args = ();
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
        ctx.handle().cast(()).unwrap();
        Ok(Brittle)
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}

    async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {
        panic!("deliberate: crash before any progress");
    }
}

#[test]
fn a_worker_that_crashes_before_any_progress_still_backs_off_to_the_max() {
    common::quiet_deliberate_panics();
    let delays = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = delays.clone();
    let options = Options::default()
        .restart(gen_registry::RestartPolicy::Always)
        .observe(move |event: &gen_registry::Event<'_, Brittle>| {
            if let gen_registry::Event::Restarting { delay, .. } = event {
                seen.lock().push(delay.as_millis());
            }
        });
    let registry = GenRegistry::<Brittle>::new(options).unwrap();
    common::run(30, async move {
        registry.start(1, ()).await.unwrap();
        common::wait_until(|| delays.lock().len() >= 5).await;
        registry.shutdown().await;
        assert_eq!(delays.lock()[..5], [10, 20, 40, 80, 160]);
    });
}

// ---------------------------------------------------------------------------
// A worker's own shorter idle timeout, honoured on time.

/// A worker that sets its own idle timeout of 50 ms in `init`.
struct Brief;

impl Worker for Brief {
    type Id = u32;
    type Args = ();
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
        ctx.set_idle_timeout(Some(Duration::from_millis(50)));
        Ok(Brief)
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
}

#[test]
fn a_workers_own_shorter_idle_timeout_is_honoured_on_time() {
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let options = Options::default()
            .executor(executor)
            .idle_timeout(Duration::from_secs(10));
        let registry = GenRegistry::<Brief>::new(options).unwrap();
        common::run(30, async move {
            // The registry's sweep already runs, at the 10 s timeout's period.
            for id in 0..2 {
                let began = Instant::now();
                let worker = registry.start(id, ()).await.unwrap();
                assert_eq!(worker.monitor().await, ExitReason::Idle);
                let took = began.elapsed();
                // The promise is 50 ms plus a quarter of it; the bound is
                // generous for a loaded machine, and far below the 1 s period
                // of the registry's own timeout.
                assert!(
                    took < Duration::from_millis(500),
                    "{name}: worker {id} idled out after {took:?}"
                );
            }
            registry.shutdown().await;
        });
    }
}

// ---------------------------------------------------------------------------
// Blocking work when the executor goes away.

/// A worker that runs blocking work on request: with `try_blocking`, or with
/// `blocking`.
#[cfg(feature = "tokio")]
struct Offloader;

#[cfg(feature = "tokio")]
impl Worker for Offloader {
    type Id = u32;
    type Args = ();
    /// Whether to use `try_blocking`.
    type Request = bool;
    type Reply = String;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Offloader)
    }

    async fn handle_call(&mut self, fallible: bool, ctx: &mut Context<Self>) -> String {
        if fallible {
            match ctx.try_blocking(|| 6 * 7).await {
                Ok(n) => n.to_string(),
                Err(e) => format!("handled: {e}"),
            }
        } else {
            ctx.blocking(|| 6 * 7).await.to_string()
        }
    }
}

#[cfg(feature = "tokio")]
#[test]
fn blocking_work_whose_pool_shut_down_is_an_error_the_worker_handles() {
    common::quiet_deliberate_panics();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Workers on Bastion's executor, their blocking work on tokio's pool.
    let executor = Executor::BastionWithTokio(runtime.handle().clone());
    let registry = GenRegistry::<Offloader>::new(Options::default().executor(executor)).unwrap();
    let worker = common::run(10, {
        let registry = registry.clone();
        async move { registry.start(1, ()).await.unwrap() }
    });
    let first = common::run(10, {
        let worker = worker.clone();
        async move { worker.call(true).await }
    });
    assert_eq!(first.unwrap(), "42");
    runtime.shutdown_background();
    let reply = common::run(10, {
        let worker = worker.clone();
        async move { worker.call(true).await }
    });
    let reply = reply.unwrap();
    assert!(
        reply.starts_with("handled: ") && reply.contains("shut"),
        "{reply}"
    );
    // `blocking` itself panics, as its docs say: the handler's panic, with
    // a message that names the cause.
    match common::run(10, async move { worker.call(false).await }) {
        Err(Error::HandlerPanicked(m)) => assert!(m.contains("shutting down"), "{m}"),
        other => panic!("{other:?}"),
    }
    common::run(10, async move { registry.shutdown().await });
}

// ---------------------------------------------------------------------------
// A shutdown a deployment can size and check.

/// A worker whose `terminate` finishes at once, or never (`Args = true`).
struct Lingerer {
    stubborn: bool,
    terminated: Arc<AtomicUsize>,
}

impl Worker for Lingerer {
    type Id = u32;
    type Args = (bool, Arc<AtomicUsize>);
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, args: Self::Args, _: &Context<Self>) -> Result<Self, Self::Error> {
        let (stubborn, terminated) = args;
        Ok(Lingerer {
            stubborn,
            terminated,
        })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}

    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        if self.stubborn {
            futures::future::pending::<()>().await;
        }
        self.terminated.fetch_add(1, Ordering::SeqCst);
    }
}

fn lingerers(executor: Executor, timeout: Duration) -> GenRegistry<Lingerer> {
    let options = Options::default()
        .executor(executor)
        .shutdown_timeout(timeout);
    GenRegistry::new(options).unwrap()
}

#[test]
fn the_shutdown_timeout_is_one_deadline_for_every_worker() {
    // More workers than a shutdown stops at once (about a thousand), each
    // with a `terminate` that never finishes.
    let workers = common::size_from_env("GEN_REGISTRY_PARITY_SHUTDOWN_WORKERS", 2_500) as u32;
    let timeout = Duration::from_secs(1);
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let registry = lingerers(executor, timeout);
        let (report, took) = common::run(60, async move {
            for id in 0..workers {
                registry.start(id, (true, Arc::default())).await.unwrap();
            }
            let began = Instant::now();
            let report = registry.shutdown().await;
            assert_eq!(registry.count(), 0);
            (report, began.elapsed())
        });
        assert_eq!(
            (report.terminated, report.aborted),
            (0, workers as usize),
            "{name}"
        );
        // The deadline, and a generous margin to kill what is left: one
        // timeout per window of workers would take three.
        assert!(
            took < timeout * 2,
            "{name}: {workers} workers took {took:?} against a {timeout:?} timeout"
        );
    }
}

#[test]
fn shutdown_reports_how_many_workers_terminated_and_how_many_were_aborted() {
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let registry = lingerers(executor, Duration::from_millis(200));
        let terminated = Arc::new(AtomicUsize::new(0));
        let report = common::run(30, {
            let terminated = terminated.clone();
            async move {
                for id in 0..10 {
                    let stubborn = id % 2 == 0;
                    registry
                        .start(id, (stubborn, terminated.clone()))
                        .await
                        .unwrap();
                }
                registry.shutdown().await
            }
        });
        assert_eq!((report.terminated, report.aborted), (5, 5), "{name}");
        assert!(!report.is_clean());
        assert_eq!(report.to_string(), "5 workers terminated, 5 aborted");
        assert_eq!(terminated.load(Ordering::SeqCst), 5, "{name}");
    }
}

// ---------------------------------------------------------------------------
// Deferred replies.

/// What a [`Broker`] is asked.
enum Ask {
    /// Answered `n * 2` later by a task, after a delay that depends on `n`.
    Later(u32),
    /// Answered `n + 1` at once.
    Now(u32),
    /// The reply handle is kept in the worker's state, unanswered.
    Keep,
    /// The reply handle is dropped unanswered.
    Drop,
    /// Panics (a crash that restarts the worker).
    Crash,
}

/// A worker that defers its replies to tasks on a tokio runtime, or keeps
/// or drops the reply handles.
struct Broker {
    runtime: tokio::runtime::Handle,
    /// The order in which the deferred answers were sent.
    order: Arc<parking_lot::Mutex<Vec<u32>>>,
    kept: Vec<gen_registry::Deferred<Broker>>,
}

type BrokerArgs = (tokio::runtime::Handle, Arc<parking_lot::Mutex<Vec<u32>>>);

impl Worker for Broker {
    type Id = u32;
    type Args = BrokerArgs;
    type Request = Ask;
    type Reply = u32;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(
        _: &u32,
        (runtime, order): BrokerArgs,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(Broker {
            runtime,
            order,
            kept: Vec::new(),
        })
    }

    async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> u32 {
        match ask {
            Ask::Later(n) => {
                let reply = ctx.defer().expect("a call's reply can be deferred");
                let order = self.order.clone();
                self.runtime.spawn(async move {
                    let delay = u64::from(n.wrapping_mul(7_919) % 50);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    order.lock().push(n);
                    reply.send(n * 2);
                });
            }
            Ask::Now(n) => return n + 1,
            Ask::Keep => {
                self.kept.push(ctx.defer().unwrap());
                self.order.lock().push(0);
            }
            Ask::Drop => drop(ctx.defer().unwrap()),
            Ask::Crash => panic!("deliberate: a crash with replies outstanding"),
        }
        // Dropped: the reply was deferred.
        0
    }
}

fn brokers(executor: Executor) -> (GenRegistry<Broker>, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = Options::default()
        .executor(executor)
        .restart(gen_registry::RestartPolicy::Always)
        .call_timeout(Duration::from_secs(60));
    (GenRegistry::new(options).unwrap(), runtime)
}

#[test]
fn deferred_replies_complete_out_of_order_while_the_worker_keeps_serving() {
    let requests = common::size_from_env("GEN_REGISTRY_PARITY_DEFERRED", 1_000) as u32;
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let (registry, answers) = brokers(executor);
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let args = (answers.handle().clone(), order.clone());
        let answered_first = common::run(60, {
            let order = order.clone();
            async move {
                let worker = registry.start(1, args).await.unwrap();
                let deferred = (0..requests).map(|n| {
                    let worker = worker.clone();
                    common::spawn(async move { (n, worker.call(Ask::Later(n)).await) })
                });
                let deferred = futures::future::join_all(deferred);
                // Plain calls, answered while the deferred ones wait.
                let mut answered_first = None;
                for n in 0..20 {
                    assert_eq!(worker.call(Ask::Now(n)).await.unwrap(), n + 1);
                    answered_first.get_or_insert(order.lock().len());
                }
                for (n, reply) in deferred.await {
                    assert_eq!(reply.unwrap(), n * 2, "{name}: caller {n}");
                }
                registry.shutdown().await;
                answered_first.unwrap()
            }
        });
        assert!(
            answered_first < requests as usize,
            "{name}: the plain calls waited for every deferred one"
        );
        let order = order.lock();
        assert_eq!(order.len(), requests as usize);
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "{name}: the deferred replies came in order"
        );
    }
}

#[test]
fn a_dropped_reply_handle_gives_its_caller_an_error_at_once() {
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let (registry, answers) = brokers(executor);
        let args = (answers.handle().clone(), Arc::default());
        common::run(30, async move {
            let worker = registry.start(1, args).await.unwrap();
            // The call timeout is a minute: an error within the run's 30 s
            // came from the dropped handle.
            let reply = worker.call(Ask::Drop).await;
            assert!(
                matches!(reply, Err(Error::ReplyDropped)),
                "{name}: {reply:?}"
            );
            assert!(
                Error::<Broker>::ReplyDropped
                    .to_string()
                    .contains("dropped")
            );
            // Plain calls go on.
            assert_eq!(worker.call(Ask::Now(1)).await.unwrap(), 2);
            registry.shutdown().await;
        });
    }
}

#[test]
fn outstanding_reply_handles_end_in_an_error_when_the_worker_restarts_stops_or_is_killed() {
    common::quiet_deliberate_panics();
    for (executor, _runtime) in common::every_executor() {
        let name = executor_name(&executor);
        let (registry, answers) = brokers(executor);
        // One entry per reply handle kept.
        let kept_so_far = Arc::<parking_lot::Mutex<Vec<u32>>>::default();
        let args = (answers.handle().clone(), kept_so_far.clone());
        common::run(30, async move {
            let worker = registry.start(1, args.clone()).await.unwrap();
            // Ten calls whose handles the worker keeps, once it has them all.
            let kept = |worker: &gen_registry::WorkerRef<Broker>| {
                let before = kept_so_far.lock().len();
                let calls: Vec<_> = (0..10)
                    .map(|_| {
                        let worker = worker.clone();
                        common::spawn(async move { worker.call(Ask::Keep).await })
                    })
                    .collect();
                let kept_so_far = kept_so_far.clone();
                async move {
                    common::wait_until(|| kept_so_far.lock().len() == before + 10).await;
                    calls
                }
            };
            // A restart drops the crashed incarnation's state, and the
            // handles it kept.
            let outstanding = kept(&worker).await;
            let crash = worker.call(Ask::Crash).await;
            assert!(
                matches!(crash, Err(Error::HandlerPanicked(_))),
                "{name}: {crash:?}"
            );
            for reply in futures::future::join_all(outstanding).await {
                assert!(
                    matches!(reply, Err(Error::ReplyDropped)),
                    "{name}: {reply:?}"
                );
            }
            // A stop drops them too.
            let outstanding = kept(&worker).await;
            registry.stop(&1).await.unwrap();
            for reply in futures::future::join_all(outstanding).await {
                assert!(
                    matches!(reply, Err(Error::ReplyDropped)),
                    "{name}: {reply:?}"
                );
            }
            // A kill: the callers get `WorkerEnded`, as any caller of a
            // killed worker.
            let worker = registry.start(1, args).await.unwrap();
            let outstanding = kept(&worker).await;
            worker.kill();
            for reply in futures::future::join_all(outstanding).await {
                assert!(
                    matches!(reply, Err(Error::WorkerEnded)),
                    "{name}: {reply:?}"
                );
            }
            registry.shutdown().await;
        });
    }
}
