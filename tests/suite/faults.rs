//! Injected faults, shutdown under load, and bad input.
//!
//! It proves that panics in `init`, in `handle_call`, in `handle_cast` and in
//! `terminate` are contained (the worker ends, its callers get an error, the
//! registry keeps serving); that an `init` or a handler that never returns
//! only costs its own id and its own callers (start, call and shutdown
//! timeouts free them); what a handler that blocks its thread does to `stop`
//! and `shutdown` (they cannot interrupt it: they return once it does); that a
//! flooded (unbounded) mailbox delivers every message, in order; that a
//! shutdown with 10,000 calls in flight answers every caller and leaves no
//! worker; and that invalid options and operations on unknown ids, ended
//! workers or a shut-down registry fail at once with the documented error.

use crate::common::*;
use futures::channel::oneshot;
use gen_registry::{Context, Error, ExitReason, GenRegistry, Options, Worker};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---- a worker whose every callback can be made to fail ----

/// What the fault workers of one test report.
#[derive(Default)]
struct FaultLog {
    inits: AtomicUsize,
    terminates: AtomicUsize,
    drops: AtomicUsize,
    /// Sequenced casts handled.
    handled: AtomicUsize,
    /// A blocking handler has started / has returned.
    blocking: AtomicBool,
    blocked_done: AtomicBool,
    reasons: Mutex<Vec<ExitReason>>,
}

impl FaultLog {
    fn new() -> Arc<FaultLog> {
        Arc::new(FaultLog::default())
    }
    fn get(n: &AtomicUsize) -> usize {
        n.load(Ordering::SeqCst)
    }
    /// Workers created and not yet dropped.
    fn live(&self) -> usize {
        // Read drops first: a drop never precedes its init.
        let drops = Self::get(&self.drops);
        Self::get(&self.inits) - drops
    }
}

#[derive(Clone)]
struct FaultArgs {
    log: Arc<FaultLog>,
    panic_in_init: bool,
    panic_in_terminate: bool,
}

impl FaultArgs {
    fn new(log: &Arc<FaultLog>) -> FaultArgs {
        FaultArgs {
            log: log.clone(),
            panic_in_init: false,
            panic_in_terminate: false,
        }
    }
}

enum FaultReq {
    Ping,
    /// How many sequenced casts were handled.
    Seen,
    /// How many sequenced casts arrived out of order.
    OutOfOrder,
    Panic,
    /// Blocks its executor thread (`std::thread::sleep`), then replies.
    Block(Duration),
}

enum FaultMsg {
    /// The next number of a sequence: 0, 1, 2, ...
    Seq(u64),
    /// Holds the worker until the gate opens (or its sender is dropped).
    Wait(oneshot::Receiver<()>),
    Panic,
}

struct Faulty {
    log: Arc<FaultLog>,
    next: u64,
    out_of_order: u64,
    panic_in_terminate: bool,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.log.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl Worker for Faulty {
    type Id = u64;
    type Args = FaultArgs;
    type Request = FaultReq;
    type Reply = u64;
    type Message = FaultMsg;
    type Error = std::convert::Infallible;

    async fn init(id: &u64, args: FaultArgs, _: &Context<Self>) -> Result<Self, Self::Error> {
        if args.panic_in_init {
            panic!("deliberate panic in the init of {id}");
        }
        args.log.inits.fetch_add(1, Ordering::SeqCst);
        Ok(Faulty {
            log: args.log,
            next: 0,
            out_of_order: 0,
            panic_in_terminate: args.panic_in_terminate,
        })
    }

    async fn handle_call(&mut self, request: FaultReq, _: &mut Context<Self>) -> u64 {
        match request {
            FaultReq::Ping => 1,
            FaultReq::Seen => self.next,
            FaultReq::OutOfOrder => self.out_of_order,
            FaultReq::Panic => panic!("deliberate panic in handle_call"),
            FaultReq::Block(d) => {
                self.log.blocking.store(true, Ordering::SeqCst);
                std::thread::sleep(d);
                self.log.blocked_done.store(true, Ordering::SeqCst);
                0
            }
        }
    }

    async fn handle_cast(&mut self, message: FaultMsg, _: &mut Context<Self>) {
        match message {
            FaultMsg::Seq(n) => {
                if n != self.next {
                    self.out_of_order += 1;
                }
                self.next = n + 1;
                self.log.handled.fetch_add(1, Ordering::SeqCst);
                // A slow consumer: give the thread away after every message.
                yield_now().await;
            }
            FaultMsg::Wait(gate) => {
                let _ = gate.await;
            }
            FaultMsg::Panic => panic!("deliberate panic in handle_cast"),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
        self.log.terminates.fetch_add(1, Ordering::SeqCst);
        self.log.reasons.lock().push(reason.clone());
        if self.panic_in_terminate {
            panic!("deliberate panic in terminate");
        }
    }
}

fn faulty(options: Options<Faulty>) -> GenRegistry<Faulty> {
    GenRegistry::new(options).unwrap()
}

async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Queues `future`'s message by polling it once, and hands it back to be
/// awaited later: the call is then in the mailbox, in order.
async fn enqueued<F: std::future::Future + Unpin>(mut future: F) -> F {
    assert!(
        futures::poll!(&mut future).is_pending(),
        "expected the call to wait in the mailbox"
    );
    future
}

// ---- panics ----

#[test]
fn a_panic_in_a_cast_handler_ends_the_worker_and_fails_what_was_queued_behind_it() {
    quiet_deliberate_panics();
    run(30, async {
        let log = FaultLog::new();
        let r = faulty(Options::default());
        let w = r.start(1, FaultArgs::new(&log)).await.unwrap();
        let (open, gate) = oneshot::channel();
        w.cast(FaultMsg::Wait(gate)).unwrap();
        w.cast(FaultMsg::Seq(0)).unwrap();
        w.cast(FaultMsg::Panic).unwrap();
        let behind = enqueued(Box::pin(w.call(FaultReq::Seen))).await;
        open.send(()).unwrap();
        assert!(matches!(behind.await, Err(Error::WorkerEnded)));
        wait_until(|| log.live() == 0).await;
        assert!(!w.is_alive());
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
        assert!(matches!(w.cast(FaultMsg::Seq(1)), Err(Error::WorkerEnded)));
        assert_eq!(
            *log.reasons.lock(),
            [ExitReason::Panicked(
                "deliberate panic in handle_cast".into()
            )]
        );
        assert_eq!(FaultLog::get(&log.terminates), 1);
        // The id starts afresh.
        let again = r.start(1, FaultArgs::new(&log)).await.unwrap();
        assert_eq!(again.call(FaultReq::Seen).await.unwrap(), 0);
    });
}

#[test]
fn a_panic_in_terminate_is_contained_by_stop_and_by_shutdown() {
    quiet_deliberate_panics();
    run(30, async {
        let log = FaultLog::new();
        let r = faulty(Options::default());
        let args = FaultArgs {
            panic_in_terminate: true,
            ..FaultArgs::new(&log)
        };
        r.start(0, args.clone()).await.unwrap();
        r.stop(&0).await.unwrap();
        assert_eq!(log.live(), 0, "stop returned before the worker was gone");
        assert!(matches!(r.lookup(&0), Err(Error::NotFound)));
        for id in 1..=50 {
            r.start(id, args.clone()).await.unwrap();
        }
        r.shutdown().await;
        assert_eq!(FaultLog::get(&log.terminates), 51);
        assert_eq!(log.live(), 0);
        assert_eq!(r.count(), 0);
        assert!(r.to_list().is_empty());
    });
}

#[test]
fn a_thousand_faults_in_a_row_leave_the_registry_serving() {
    quiet_deliberate_panics();
    run(60, async {
        let log = FaultLog::new();
        let r = faulty(Options::default());
        let bystander = r.start(0, FaultArgs::new(&log)).await.unwrap();
        let mut injected = [0usize; 4];
        for i in 0..1000u64 {
            let id = 1 + i % 5;
            let kind = (i % 4) as usize;
            injected[kind] += 1;
            match kind {
                0 => {
                    let args = FaultArgs {
                        panic_in_init: true,
                        ..FaultArgs::new(&log)
                    };
                    let got = r.start(id, args).await;
                    assert!(matches!(got, Err(Error::InitPanicked(_))), "{got:?}");
                }
                1 => {
                    let w = r.lookup_or_start(id, FaultArgs::new(&log)).await.unwrap();
                    let got = w.call(FaultReq::Panic).await;
                    assert!(matches!(got, Err(Error::HandlerPanicked(_))), "{got:?}");
                }
                2 => {
                    let w = r.lookup_or_start(id, FaultArgs::new(&log)).await.unwrap();
                    w.cast(FaultMsg::Panic).unwrap();
                    wait_until(|| !w.is_alive()).await;
                }
                _ => {
                    let args = FaultArgs {
                        panic_in_terminate: true,
                        ..FaultArgs::new(&log)
                    };
                    r.lookup_or_start(id, args).await.unwrap();
                    r.stop(&id).await.unwrap();
                }
            }
            assert_eq!(bystander.call(FaultReq::Ping).await.unwrap(), 1);
            assert!(matches!(r.lookup(&id), Err(Error::NotFound)));
        }
        wait_until(|| log.live() == 1).await;
        assert_eq!(r.count(), 1);
        assert_eq!(FaultLog::get(&log.terminates), FaultLog::get(&log.drops));
        eprintln!(
            "faults: {} init panics, {} call panics, {} cast panics, {} terminate panics; \
             the bystander answered after each of them",
            injected[0], injected[1], injected[2], injected[3]
        );
        r.shutdown().await;
        assert_eq!(log.live(), 0);
    });
}

// ---- hangs ----

#[test]
fn an_init_that_never_returns_is_cancelled_and_its_waiters_start_their_own() {
    run(30, async {
        let log = Log::new();
        let r = registry_with(Options::default().start_timeout(Duration::from_millis(100)));
        let hung = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.start(1, Args::new(&log).init(Init::Hang)).await }
        });
        wait_until(|| log.inits() == 1).await;
        let waiter = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.lookup_or_start(1, Args::new(&log).state(7)).await }
        });
        // The hung init holds its own id only.
        let other = r.start(2, Args::new(&log).state(2)).await.unwrap();
        assert_eq!(other.call(Req::Get).await.unwrap(), 2);
        assert!(matches!(hung.await, Err(Error::StartTimeout(_))));
        let w = waiter.await.unwrap();
        assert_eq!(w.call(Req::Get).await.unwrap(), 7);
        assert_eq!(log.inits(), 3);
        assert_eq!(log.live(), 2);
        assert_eq!(r.count(), 2);
    });
}

#[test]
fn stop_of_an_id_whose_init_hangs_returns_when_the_start_times_out() {
    run(30, async {
        let log = Log::new();
        let r = registry_with(Options::default().start_timeout(Duration::from_millis(200)));
        let hung = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.start(1, Args::new(&log).init(Init::Hang)).await }
        });
        wait_until(|| log.inits() == 1).await;
        let began = Instant::now();
        // `stop` waits for a starting worker's init; this one never ends, so
        // the start timeout ends it, and there is nothing left to stop.
        assert!(matches!(r.stop(&1).await, Err(Error::NotFound)));
        let waited = began.elapsed();
        assert!(matches!(hung.await, Err(Error::StartTimeout(_))));
        assert_eq!(r.count(), 0);
        assert_eq!(log.live(), 0);
        eprintln!(
            "faults: stop of an id whose init hangs returned after {waited:.0?} (start timeout 200 ms)"
        );
    });
}

#[test]
fn shutdown_during_an_init_that_never_returns_aborts_it() {
    run(30, async {
        let log = Log::new();
        // Only shutdown can end this init: the start timeout is far away.
        let r = registry_with(
            Options::default()
                .start_timeout(Duration::from_secs(3600))
                .shutdown_timeout(Duration::from_millis(100)),
        );
        let hung = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.start(1, Args::new(&log).init(Init::Hang)).await }
        });
        wait_until(|| log.inits() == 1).await;
        let began = Instant::now();
        r.shutdown().await;
        let took = began.elapsed();
        assert!(matches!(hung.await, Err(Error::RegistryStopped)));
        assert_eq!(r.count(), 0);
        assert!(r.to_list().is_empty());
        assert_eq!(log.live(), 0);
        eprintln!("faults: shutdown during a hung init took {took:.0?} (shutdown timeout 100 ms)");
    });
}

#[test]
fn a_handler_that_never_returns_times_out_its_callers_and_stop_aborts_it() {
    run(30, async {
        let log = Log::new();
        let r = registry_with(Options::default().shutdown_timeout(Duration::from_millis(100)));
        let w = r.start(1, Args::new(&log)).await.unwrap();
        let short = Duration::from_millis(50);
        // The hung request, and one queued behind it, time out.
        assert!(
            matches!(w.call_timeout(Req::Hang, short).await, Err(Error::CallTimeout(d)) if d == short)
        );
        assert!(matches!(
            w.call_timeout(Req::Get, short).await,
            Err(Error::CallTimeout(_))
        ));
        // A patient caller queued behind it gets an error once the worker is
        // aborted, not a hang.
        let patient = enqueued(Box::pin(w.call_timeout(Req::Get, Duration::from_secs(20)))).await;
        let began = Instant::now();
        r.stop(&1).await.unwrap();
        let took = began.elapsed();
        assert!(matches!(patient.await, Err(Error::WorkerEnded)));
        assert_eq!(log.live(), 0);
        assert_eq!(log.terminates(), 0, "an aborted worker runs no terminate");
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
        r.start(1, Args::new(&log)).await.unwrap();
        eprintln!(
            "faults: stop of a worker stuck in a handler took {took:.0?} (shutdown timeout 100 ms)"
        );

        // Shutdown with stuck and healthy workers alike.
        for id in 2..12 {
            let w = r.start(id, Args::new(&log)).await.unwrap();
            if id % 2 == 0 {
                let _ = w.call_timeout(Req::Hang, Duration::from_millis(1)).await;
            }
        }
        let began = Instant::now();
        r.shutdown().await;
        let took = began.elapsed();
        assert_eq!(log.live(), 0);
        assert_eq!(log.terminates(), 6, "the 6 healthy workers ran terminate");
        eprintln!("faults: shutdown of 5 stuck and 6 healthy workers took {took:.0?}");
    });
}

#[test]
fn a_handler_that_blocks_its_thread_delays_stop_and_shutdown_until_it_returns() {
    run(30, async {
        let log = FaultLog::new();
        let block = Duration::from_millis(300);
        let r = faulty(Options::default().shutdown_timeout(Duration::from_millis(50)));
        let bystander = r.start(0, FaultArgs::new(&log)).await.unwrap();

        for how in ["stop", "shutdown"] {
            log.blocking.store(false, Ordering::SeqCst);
            log.blocked_done.store(false, Ordering::SeqCst);
            let w = r.start(1, FaultArgs::new(&log)).await.unwrap();
            let blocked = spawn(async move { w.call(FaultReq::Block(block)).await });
            wait_until(|| log.blocking.load(Ordering::SeqCst)).await;
            let began = Instant::now();
            if how == "stop" {
                // Another worker is still served while one thread is blocked.
                assert_eq!(bystander.call(FaultReq::Ping).await.unwrap(), 1);
                let served_during = !log.blocked_done.load(Ordering::SeqCst);
                eprintln!(
                    "faults: another worker served while a thread was blocked: {served_during}"
                );
                r.stop(&1).await.unwrap();
            } else {
                r.shutdown().await;
            }
            let took = began.elapsed();
            // Neither can interrupt a blocked thread: they return after the
            // handler did, although the shutdown timeout (50 ms) passed and the
            // worker was aborted meanwhile.
            assert!(
                log.blocked_done.load(Ordering::SeqCst),
                "{how} returned first"
            );
            let reply = blocked.await;
            let reason = log.reasons.lock().last().cloned();
            eprintln!(
                "faults: {how} of a worker blocked for {block:?} returned after {took:.0?}; \
                 the blocked caller got {:?}; terminate ran: {reason:?}",
                reply.as_ref().map_err(|e| e.to_string())
            );
            assert!(
                matches!(reply, Ok(0) | Err(Error::WorkerEnded)),
                "{reply:?}"
            );
            assert!(matches!(
                r.lookup(&1),
                Err(Error::NotFound | Error::RegistryStopped)
            ));
        }
        assert_eq!(log.live(), 0);
        assert_eq!(r.count(), 0);
    });
}

// ---- a flooded mailbox ----

#[test]
fn a_flooded_mailbox_handles_every_message_in_order() {
    let n: u64 = 100_000;
    run(120, async move {
        let log = FaultLog::new();
        let r = faulty(Options::default());
        let w = r.start(1, FaultArgs::new(&log)).await.unwrap();
        // Hold the worker so that every message piles up in its mailbox.
        let (open, gate) = oneshot::channel();
        w.cast(FaultMsg::Wait(gate)).unwrap();
        let began = Instant::now();
        for i in 0..n {
            w.cast(FaultMsg::Seq(i)).unwrap();
        }
        let queued = began.elapsed();
        assert_eq!(
            FaultLog::get(&log.handled),
            0,
            "all {n} were queued at once"
        );
        open.send(()).unwrap();
        let began = Instant::now();
        let long = Duration::from_secs(60);
        assert_eq!(w.call_timeout(FaultReq::Seen, long).await.unwrap(), n);
        let drained = began.elapsed();
        assert_eq!(w.call_timeout(FaultReq::OutOfOrder, long).await.unwrap(), 0);
        assert_eq!(FaultLog::get(&log.handled), n as usize);
        eprintln!(
            "faults: {n} casts queued in {queued:.0?} behind a held worker, then handled in order in {drained:.0?}"
        );
        r.stop(&1).await.unwrap();
    });
}

// ---- shutdown under load ----

#[test]
fn shutdown_with_ten_thousand_calls_in_flight_answers_every_caller() {
    const WORKERS: u64 = 100;
    const CALLS: usize = 10_000;
    const STARTS: u64 = 1_000;
    run(120, async {
        let log = FaultLog::new();
        let r = faulty(Options::default());
        let mut workers = Vec::new();
        let mut gates = Vec::new();
        for id in 0..WORKERS {
            let w = r.start(id, FaultArgs::new(&log)).await.unwrap();
            // Each worker is held until the load is queued.
            let (open, gate) = oneshot::channel();
            w.cast(FaultMsg::Wait(gate)).unwrap();
            gates.push(open);
            workers.push(w);
        }
        let queued = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let w = workers[i % WORKERS as usize].clone();
                let (queued, answered, finished) =
                    (queued.clone(), answered.clone(), finished.clone());
                spawn(async move {
                    let call = enqueued(Box::pin(w.call(FaultReq::Ping))).await;
                    queued.fetch_add(1, Ordering::SeqCst);
                    let result = call.await;
                    if result.is_ok() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    result
                })
            })
            .collect();
        wait_until(|| queued.load(Ordering::SeqCst) == CALLS).await;
        // Release the load and start new ids; once some of the load is
        // answered, shut down while the rest is in flight.
        drop(gates);
        let starts: Vec<_> = (WORKERS..WORKERS + STARTS)
            .map(|id| {
                let (r, log, finished) = (r.clone(), log.clone(), finished.clone());
                spawn(async move {
                    let result = r.lookup_or_start(id, FaultArgs::new(&log)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    result
                })
            })
            .collect();
        wait_until(|| answered.load(Ordering::SeqCst) >= CALLS / 10).await;
        let in_flight = CALLS - answered.load(Ordering::SeqCst);
        r.shutdown().await;
        let (mut ok, mut ended) = (0, 0);
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(1) => ok += 1,
                Err(Error::WorkerEnded) => ended += 1,
                other => panic!("a call in flight during shutdown ended with {other:?}"),
            }
        }
        let (mut started, mut refused) = (0, 0);
        for result in futures::future::join_all(starts).await {
            match result {
                Ok(_) | Err(Error::WorkerEnded) => started += 1,
                Err(Error::RegistryStopped) => refused += 1,
                Err(e) => panic!("a start racing shutdown ended with {e:?}"),
            }
        }
        assert_eq!(ok + ended, CALLS);
        assert_eq!(started + refused, STARTS as usize);
        assert_eq!(finished.load(Ordering::SeqCst), CALLS + STARTS as usize);
        assert_eq!(log.live(), 0, "a worker survived shutdown");
        assert_eq!(
            FaultLog::get(&log.terminates),
            FaultLog::get(&log.inits),
            "every worker ran terminate"
        );
        assert_eq!(r.count(), 0);
        assert!(r.to_list().is_empty());
        assert!(workers.iter().all(|w| !w.is_alive()));
        eprintln!(
            "faults: shutdown with {in_flight} of {CALLS} calls in flight over {WORKERS} workers: \
             {ok} answered, {ended} WorkerEnded, none lost; of {STARTS} racing starts {started} got \
             a handle and {refused} RegistryStopped ({} of their inits ran, each worker then stopped \
             by the shutdown); {} workers, {} terminates, 0 left",
            FaultLog::get(&log.inits) - WORKERS as usize,
            FaultLog::get(&log.inits),
            FaultLog::get(&log.terminates),
        );
    });
}

// ---- bad input ----

#[test]
fn invalid_options_are_refused_naming_the_option_and_extreme_ones_work() {
    let zero = Duration::ZERO;
    for (options, names) in [
        (Options::default().start_timeout(zero), "start_timeout"),
        (
            Options::default().shutdown_timeout(zero),
            "shutdown_timeout",
        ),
        (
            Options::default()
                .start_timeout(zero)
                .shutdown_timeout(zero),
            "start_timeout",
        ),
    ] {
        match GenRegistry::<Probe>::new(options) {
            Err(e @ Error::InvalidOptions(_)) => {
                let text = e.to_string();
                assert!(text.contains(names), "{text:?} does not name {names}");
            }
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }
    run(30, async {
        let log = Log::new();
        // The longest timeouts mean "never" and do not overflow.
        let r = registry_with(
            Options::default()
                .start_timeout(Duration::MAX)
                .shutdown_timeout(Duration::MAX),
        );
        let w = r.start(1, Args::new(&log)).await.unwrap();
        assert_eq!(w.call_timeout(Req::Add(1), Duration::MAX).await.unwrap(), 1);
        r.stop(&1).await.unwrap();
        r.start(2, Args::new(&log)).await.unwrap();
        r.shutdown().await;
        assert_eq!(log.live(), 0);
        // The shortest: an init that is ready at once still starts, or times
        // out; either way nothing is left behind and nothing hangs.
        let r = registry_with(Options::default().start_timeout(Duration::from_nanos(1)));
        match r.start(1, Args::new(&log)).await {
            Ok(_) => assert_eq!(r.count(), 1),
            Err(Error::StartTimeout(_)) => assert_eq!(r.count(), 0),
            Err(e) => panic!("{e:?}"),
        }
        r.shutdown().await;
        assert_eq!(log.live(), 0);
    });
}

#[test]
fn every_operation_on_a_shut_down_registry_is_refused_or_empty() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        let clone = r.clone();
        r.shutdown().await;
        for r in [&r, &clone] {
            assert!(r.is_stopped());
            assert!(matches!(r.lookup(&1), Err(Error::RegistryStopped)));
            assert!(matches!(r.lookup(&2), Err(Error::RegistryStopped)));
            assert!(matches!(
                r.lookup_or_start(1, Args::new(&log)).await,
                Err(Error::RegistryStopped)
            ));
            assert!(matches!(
                r.start(3, Args::new(&log)).await,
                Err(Error::RegistryStopped)
            ));
            assert!(matches!(r.stop(&1).await, Err(Error::RegistryStopped)));
            assert!(matches!(r.stop(&4).await, Err(Error::RegistryStopped)));
            assert_eq!(r.count(), 0);
            assert!(r.to_list().is_empty());
            assert!(r.sample().is_none());
            assert_eq!(r.reduce(7, |n, _, _| n + 1), 7);
            r.shutdown().await; // again: returns at once
        }
        assert!(!w.is_alive());
        assert!(matches!(
            w.call_timeout(Req::Get, Duration::MAX).await,
            Err(Error::WorkerEnded)
        ));
        assert!(matches!(w.cast(1), Err(Error::WorkerEnded)));
        w.kill(); // a no-op on an ended worker
        assert_eq!(log.inits(), 1, "no init ran after shutdown");
        assert_eq!(log.live(), 0);
    });
}

#[test]
fn unknown_ids_and_workers_ended_every_way_fail_at_once() {
    quiet_deliberate_panics();
    run(30, async {
        let log = Log::new();
        let r = registry();
        assert!(matches!(r.stop(&99).await, Err(Error::NotFound)));
        assert!(matches!(r.lookup(&99), Err(Error::NotFound)));

        let stopped = r.start(1, Args::new(&log)).await.unwrap();
        r.stop(&1).await.unwrap();
        assert!(
            matches!(r.stop(&1).await, Err(Error::NotFound)),
            "stop twice"
        );
        let self_stopped = r.start(2, Args::new(&log)).await.unwrap();
        self_stopped.call(Req::StopSelf).await.unwrap();
        let panicked = r.start(3, Args::new(&log)).await.unwrap();
        let _ = panicked.call(Req::Panic).await;
        let killed = r.start(4, Args::new(&log)).await.unwrap();
        killed.kill();
        wait_until(|| !killed.is_alive() && log.live() == 0).await;

        for (how, w) in [
            ("stopped", &stopped),
            ("self-stopped", &self_stopped),
            ("panicked", &panicked),
            ("killed", &killed),
        ] {
            assert!(!w.is_alive(), "{how}");
            // Even without a timeout, a call to an ended worker cannot wait.
            let got = w.call_timeout(Req::Get, Duration::MAX).await;
            assert!(matches!(got, Err(Error::WorkerEnded)), "{how}: {got:?}");
            assert!(matches!(w.cast(1), Err(Error::WorkerEnded)), "{how}");
            assert!(matches!(r.lookup(w.id()), Err(Error::NotFound)), "{how}");
            assert!(
                matches!(r.stop(w.id()).await, Err(Error::NotFound)),
                "{how}"
            );
            w.kill();
        }

        // A zero call timeout is an answer or a timeout, and harms nothing.
        let live = r.start(5, Args::new(&log).state(5)).await.unwrap();
        let got = live.call_timeout(Req::Get, Duration::ZERO).await;
        assert!(matches!(got, Ok(5) | Err(Error::CallTimeout(_))), "{got:?}");
        assert_eq!(live.call(Req::Get).await.unwrap(), 5);
        assert_eq!(r.count(), 1);
    });
}
