//! Bounded memory over many ids: a worker's timers (tied to one
//! incarnation), idle passivation, bounded mailboxes, monitors, call and
//! cast by id, and the restart count a worker sees. Each runs on every
//! executor the build has.

use crate::common;
use futures::channel::oneshot;
use gen_registry::doc_support::wait_until;
use gen_registry::{
    AtCapacity, Context, Error, Event, ExitReason, GenRegistry, Options, RestartPolicy, TimerRef,
    Worker,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What the workers of one test report.
#[derive(Default)]
struct Log {
    inits: AtomicUsize,
    /// Why each worker's incarnations ended, by id.
    terminates: Mutex<Vec<(u32, ExitReason)>>,
    /// Ticks of timers, by (id, incarnation the tick was scheduled in,
    /// incarnation that got it).
    ticks: Mutex<Vec<(u32, u32, u32)>>,
    /// Requests handled, by token.
    handled: Mutex<HashMap<u64, usize>>,
    /// A `Hold` handler has started.
    holding: AtomicUsize,
}

#[derive(Clone)]
struct Args {
    log: Arc<Log>,
    /// Schedule a tick every this many ms from `init`.
    tick_every: Option<u64>,
    /// The worker's own idle timeout, from `init`.
    idle: Option<Option<Duration>>,
}

impl Args {
    fn new(log: &Arc<Log>) -> Args {
        Args {
            log: log.clone(),
            tick_every: None,
            idle: None,
        }
    }
}

type Gate = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

enum Req {
    Get(u64),
    Hold(Gate),
    Panic,
    Restarts,
    After(u64),
    CancelAfter(u64),
}

#[derive(Clone, Debug)]
enum Tick {
    /// From the incarnation of this number.
    From(u32),
    Once,
}

struct Probe {
    id: u32,
    log: Arc<Log>,
    once: Option<TimerRef>,
}

impl Worker for Probe {
    type Id = u32;
    type Args = Args;
    type Request = Req;
    type Reply = u64;
    type Message = Tick;
    type Error = std::convert::Infallible;

    async fn init(id: &u32, args: Args, ctx: &Context<Self>) -> Result<Self, Self::Error> {
        args.log.inits.fetch_add(1, Ordering::SeqCst);
        if let Some(ms) = args.tick_every {
            ctx.send_interval(Duration::from_millis(ms), Tick::From(ctx.restarts()));
        }
        if let Some(idle) = args.idle {
            ctx.set_idle_timeout(idle);
        }
        Ok(Probe {
            id: *id,
            log: args.log,
            once: None,
        })
    }

    async fn handle_call(&mut self, req: Req, ctx: &mut Context<Self>) -> u64 {
        match req {
            Req::Get(token) => {
                *self.log.handled.lock().entry(token).or_default() += 1;
                u64::from(self.log.inits.load(Ordering::SeqCst) as u32)
            }
            Req::Hold(gate) => {
                self.log.holding.fetch_add(1, Ordering::SeqCst);
                let gate = gate.lock().take();
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                0
            }
            Req::Panic => panic!("deliberate: a handler panicked"),
            Req::Restarts => u64::from(ctx.restarts()),
            Req::After(ms) => {
                self.once = Some(ctx.send_after(Duration::from_millis(ms), Tick::Once));
                0
            }
            Req::CancelAfter(ms) => {
                let timer = ctx.send_after(Duration::from_millis(ms), Tick::Once);
                u64::from(ctx.cancel_timer(timer))
            }
        }
    }

    async fn handle_cast(&mut self, tick: Tick, ctx: &mut Context<Self>) {
        let from = match tick {
            Tick::From(incarnation) => incarnation,
            Tick::Once => u32::MAX,
        };
        self.log.ticks.lock().push((self.id, from, ctx.restarts()));
    }

    async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
        self.log.terminates.lock().push((self.id, reason.clone()));
    }
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn gate() -> (oneshot::Sender<()>, Gate) {
    let (open, gate) = oneshot::channel();
    (open, Arc::new(Mutex::new(Some(gate))))
}

// ---- timers ----

#[test]
fn a_timer_delivers_its_message_once_and_a_cancelled_one_never() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let r = GenRegistry::<Probe>::new(Options::default().executor(executor)).unwrap();
        run(async {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            assert_eq!(
                w.call(Req::CancelAfter(1)).await.unwrap(),
                1,
                "cancel found it pending"
            );
            w.call(Req::After(5)).await.unwrap();
            wait_until(|| !log.ticks.lock().is_empty()).await;
            // Another timer, scheduled later and due later, marks the time
            // by which a cancelled one would have fired.
            w.call(Req::After(20)).await.unwrap();
            wait_until(|| log.ticks.lock().len() == 2).await;
            assert_eq!(*log.ticks.lock(), [(1, u32::MAX, 0), (1, u32::MAX, 0)]);
            r.shutdown().await;
        });
    }
}

#[test]
fn a_restart_cancels_the_crashed_incarnations_timers() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let options = Options::default()
            .executor(executor)
            .restart(RestartPolicy::Always);
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let mut args = Args::new(&log);
            args.tick_every = Some(1);
            let w = r.lookup_or_start(1, args).await.unwrap();
            for _ in 0..5 {
                wait_until(|| !log.ticks.lock().is_empty()).await;
                assert!(matches!(
                    w.call(Req::Panic).await,
                    Err(Error::HandlerPanicked(_))
                ));
            }
            assert_eq!(w.call(Req::Restarts).await.unwrap(), 5);
            log.ticks.lock().clear();
            wait_until(|| log.ticks.lock().len() >= 20).await;
            let ticks = log.ticks.lock().clone();
            assert!(
                ticks.iter().all(|&(_, from, got)| from == 5 && got == 5),
                "a tick outlived its incarnation: {ticks:?}"
            );
            r.shutdown().await;
        });
    }
}

// ---- idle passivation ----

#[test]
fn an_idle_worker_ends_with_terminate_and_the_next_start_is_fresh() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let seen = stopped.clone();
        let options = Options::default()
            .executor(executor)
            .idle_timeout(Duration::from_millis(20))
            .observe(move |e: &Event<'_, Probe>| {
                if let Event::Stopped { id, reason } = e {
                    seen.lock().push((**id, (*reason).clone()));
                }
            });
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let first = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let down = first.monitor();
            assert_eq!(down.await, ExitReason::Idle);
            assert!(r.lookup(&1).is_err());
            assert_eq!(*log.terminates.lock(), [(1, ExitReason::Idle)]);
            assert_eq!(*stopped.lock(), [(1, ExitReason::Idle)]);
            let second = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            assert_ne!(first, second);
            assert_eq!(log.inits.load(Ordering::SeqCst), 2);
            r.shutdown().await;
        });
    }
}

#[test]
fn a_worker_in_the_middle_of_a_call_is_not_ended_for_idling() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let options = Options::default()
            .executor(executor)
            .idle_timeout(Duration::from_millis(10));
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let busy = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let (open, hold) = gate();
            let call = {
                let busy = busy.clone();
                std::thread::spawn(move || run(busy.call(Req::Hold(hold))))
            };
            wait_until(|| log.holding.load(Ordering::SeqCst) == 1).await;
            // A worker started after the busy one idles out: the sweep has
            // run past the timeout, and the busy worker is still there.
            let idle = r.lookup_or_start(2, Args::new(&log)).await.unwrap();
            assert_eq!(idle.monitor().await, ExitReason::Idle);
            assert!(
                busy.is_alive(),
                "a worker was ended for idling in the middle of a call"
            );
            open.send(()).unwrap();
            assert_eq!(call.join().unwrap().unwrap(), 0);
            r.shutdown().await;
        });
    }
}

#[test]
fn a_worker_sets_its_own_idle_timeout_or_none() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        // No registry-wide idle timeout: the worker's own starts the sweep.
        let r = GenRegistry::<Probe>::new(Options::default().executor(executor)).unwrap();
        run(async {
            let mut resident = Args::new(&log);
            resident.idle = Some(None);
            let mut brief = Args::new(&log);
            brief.idle = Some(Some(Duration::from_millis(10)));
            let keeps = r.lookup_or_start(1, resident).await.unwrap();
            let leaves = r.lookup_or_start(2, brief).await.unwrap();
            assert_eq!(leaves.monitor().await, ExitReason::Idle);
            assert!(keeps.is_alive());
            r.shutdown().await;
        });
        let registry_wide = Options::<Probe>::default().idle_timeout(Duration::from_millis(10));
        let r = GenRegistry::new(registry_wide).unwrap();
        run(async {
            let mut resident = Args::new(&log);
            resident.idle = Some(None);
            let keeps = r.lookup_or_start(1, resident).await.unwrap();
            let leaves = r.lookup_or_start(2, Args::new(&log)).await.unwrap();
            assert_eq!(leaves.monitor().await, ExitReason::Idle);
            assert!(
                keeps.is_alive(),
                "a worker that opted out of the idle timeout ended"
            );
            r.shutdown().await;
        });
    }
}

#[test]
fn a_bad_idle_timeout_or_mailbox_capacity_is_refused() {
    for options in [
        Options::<Probe>::default().idle_timeout(Duration::ZERO),
        Options::default().idle_timeout(Duration::from_secs(60 * 24 * 3600)),
        Options::default().mailbox_capacity(0),
    ] {
        assert!(matches!(
            GenRegistry::new(options),
            Err(Error::InvalidOptions(_))
        ));
    }
}

#[test]
fn a_table_sized_for_some_workers_holds_more_and_an_absurd_size_is_refused() {
    assert!(matches!(
        GenRegistry::<Probe>::new(Options::default().expected_workers(usize::MAX)),
        Err(Error::InvalidOptions(text)) if text.contains("expected_workers")
    ));
    let log = Arc::new(Log::default());
    let r = GenRegistry::<Probe>::new(Options::default().expected_workers(100)).unwrap();
    run(async {
        // Past the size it was made for, the table grows as any other.
        for id in 0..1_000 {
            r.lookup_or_start(id, Args::new(&log)).await.unwrap();
        }
        assert_eq!(r.count(), 1_000);
        for id in 0..1_000 {
            assert!(r.lookup(&id).is_ok(), "worker {id} was lost");
        }
        r.shutdown().await;
    });
}

// ---- bounded mailboxes ----

#[test]
fn a_full_mailbox_refuses_casts_and_calls_at_once() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let options = Options::default().executor(executor).mailbox_capacity(2);
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let (open, hold) = gate();
            let call = {
                let w = w.clone();
                std::thread::spawn(move || run(w.call(Req::Hold(hold))))
            };
            wait_until(|| log.holding.load(Ordering::SeqCst) == 1).await;
            w.cast(Tick::Once).unwrap();
            w.cast(Tick::Once).unwrap();
            assert!(matches!(w.cast(Tick::Once), Err(Error::MailboxFull)));
            let refused = w.call_timeout(Req::Get(1), Duration::from_secs(60)).await;
            assert!(matches!(refused, Err(Error::MailboxFull)), "{refused:?}");
            open.send(()).unwrap();
            call.join().unwrap().unwrap();
            // The two queued casts are handled; drained, there is room again.
            wait_until(|| log.ticks.lock().len() == 2).await;
            assert_eq!(w.call(Req::Get(2)).await.unwrap(), 1);
            r.shutdown().await;
        });
    }
}

// ---- monitors ----

#[test]
fn a_monitor_resolves_with_the_workers_exit_reason_and_not_at_a_restart() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let r = GenRegistry::<Probe>::new(
            Options::default()
                .executor(executor.clone())
                .restart(RestartPolicy::Always),
        )
        .unwrap();
        run(async {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let mut down = Box::pin(w.monitor());
            assert!(w.call(Req::Panic).await.is_err());
            assert_eq!(w.call(Req::Restarts).await.unwrap(), 1);
            assert!(
                futures::poll!(down.as_mut()).is_pending(),
                "a monitor resolved at a restart"
            );
            r.stop(&1).await.unwrap();
            assert_eq!(down.await, ExitReason::Stopped);
            // On a worker already ended: at once.
            assert_eq!(w.monitor().await, ExitReason::Stopped);
        });
        let r = GenRegistry::<Probe>::new(Options::default().executor(executor)).unwrap();
        run(async {
            let w = r.lookup_or_start(2, Args::new(&log)).await.unwrap();
            let down = w.monitor();
            assert!(w.call(Req::Panic).await.is_err());
            assert!(matches!(down.await, ExitReason::Panicked(m) if m.contains("deliberate")));
            let w = r.lookup_or_start(3, Args::new(&log)).await.unwrap();
            let down = w.monitor();
            w.kill();
            assert_eq!(down.await, ExitReason::Killed);
        });
    }
}

// ---- call and cast by id ----

#[test]
fn call_by_id_starts_once_and_uses_args_only_for_a_start() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let r = GenRegistry::<Probe>::new(Options::default().executor(executor)).unwrap();
        run(async {
            assert_eq!(r.call(1, Args::new(&log), Req::Get(1)).await.unwrap(), 1);
            assert_eq!(r.call(1, Args::new(&log), Req::Get(2)).await.unwrap(), 1);
            r.cast(1, Args::new(&log), Tick::Once).await.unwrap();
            r.cast(2, Args::new(&log), Tick::Once).await.unwrap();
            assert_eq!(log.inits.load(Ordering::SeqCst), 2);
            wait_until(|| log.ticks.lock().len() == 2).await;
            r.shutdown().await;
            assert!(matches!(
                r.call(1, Args::new(&log), Req::Get(3)).await,
                Err(Error::RegistryStopped)
            ));
        });
    }
}

#[test]
fn call_by_id_retries_an_undelivered_request_once_on_a_fresh_worker() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let r = GenRegistry::<Probe>::new(Options::default().executor(executor)).unwrap();
        run(async {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let (_open, hold) = gate();
            let held = {
                let w = w.clone();
                std::thread::spawn(move || run(w.call(Req::Hold(hold))))
            };
            wait_until(|| log.holding.load(Ordering::SeqCst) == 1).await;
            // One poll finds the worker and queues the request behind the
            // held call (nothing before the queueing awaits).
            let mut by_id = Box::pin(r.call(1, Args::new(&log), Req::Get(7)));
            assert!(futures::poll!(by_id.as_mut()).is_pending());
            w.kill();
            assert!(matches!(held.join().unwrap(), Err(Error::WorkerEnded)));
            // Answered by a second worker, and handled exactly once.
            assert_eq!(by_id.await.unwrap(), 2);
            assert_eq!(log.handled.lock()[&7], 1);
            assert_eq!(log.inits.load(Ordering::SeqCst), 2);
            r.shutdown().await;
        });
    }
}

#[test]
fn under_stop_churn_call_by_id_never_delivers_a_request_twice() {
    let log = Arc::new(Log::default());
    let r = GenRegistry::<Probe>::new(Options::default()).unwrap();
    let tokens = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (r, log, tokens, ended) = (r.clone(), log.clone(), tokens.clone(), ended.clone());
            std::thread::spawn(move || {
                run(async {
                    for i in 0..3_000u32 {
                        let token = tokens.fetch_add(1, Ordering::SeqCst) as u64;
                        match r.call(i % 8, Args::new(&log), Req::Get(token)).await {
                            Ok(_) => {}
                            Err(Error::NotDelivered) => {
                                ended.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("call by id failed: {e}"),
                        }
                    }
                })
            })
        })
        .collect();
    let stopper = {
        let r = r.clone();
        std::thread::spawn(move || {
            run(async {
                for i in 0..3_000u32 {
                    let _ = r.stop(&(i % 8)).await;
                }
            })
        })
    };
    callers.into_iter().for_each(|c| c.join().unwrap());
    stopper.join().unwrap();
    let handled = log.handled.lock();
    let twice: Vec<_> = handled.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "requests delivered twice: {twice:?}");
    let answered = handled.len();
    eprintln!(
        "call by id under stop churn: {answered} of 12000 requests handled, {} NotDelivered, {} workers started",
        ended.load(Ordering::SeqCst),
        log.inits.load(Ordering::SeqCst)
    );
    assert_eq!(answered + ended.load(Ordering::SeqCst), 12_000);
    run(r.shutdown());
}

// ---- the capacity limit ----

#[test]
fn a_start_at_capacity_evicts_a_worker_which_runs_terminate() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let evicted = Arc::new(AtomicUsize::new(0));
        let seen = evicted.clone();
        let options = Options::default()
            .executor(executor)
            .max_workers(4)
            .observe(move |e: &Event<'_, Probe>| {
                if let Event::Stopped {
                    reason: ExitReason::Evicted,
                    ..
                } = e
                {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            });
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let mut downs = Vec::new();
            for id in 0..20 {
                let w = r.lookup_or_start(id, Args::new(&log)).await.unwrap();
                downs.push(w.monitor());
            }
            wait_until(|| evicted.load(Ordering::SeqCst) == 16).await;
            assert_eq!(r.count(), 4);
            let reasons = futures::future::join_all(downs.drain(..16)).await;
            assert!(reasons.iter().all(|reason| *reason == ExitReason::Evicted));
            let terminated = log.terminates.lock().len();
            assert_eq!(terminated, 16, "an evicted worker skipped terminate");
            r.shutdown().await;
        });
    }
}

#[test]
fn a_start_right_after_the_only_worker_answered_evicts_it() {
    // A worker that has answered its last call is done with it: a start at
    // the limit right after the answer evicts it, and is never refused as
    // if the worker were still in the middle of the call.
    let rounds = common::size_from_env("GEN_REGISTRY_EVICT_AFTER_REPLY_ROUNDS", 2_000);
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let options = Options::default().executor(executor).max_workers(1);
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            for round in 0..rounds {
                let id = round as u32;
                let w = r.lookup_or_start(id, Args::new(&log)).await.unwrap();
                w.call(Req::Get(u64::from(id))).await.unwrap();
                match r.lookup_or_start(id + 1_000_000, Args::new(&log)).await {
                    Ok(_) => r.stop(&(id + 1_000_000)).await.unwrap(),
                    Err(e) => panic!("round {round}: a start after the only worker answered: {e}"),
                }
            }
            r.shutdown().await;
        });
    }
}

#[test]
fn a_worker_in_the_middle_of_a_call_is_never_evicted() {
    for (executor, _rt) in common::every_executor() {
        let log = Arc::new(Log::default());
        let options = Options::default().executor(executor).max_workers(2);
        let r = GenRegistry::<Probe>::new(options).unwrap();
        run(async {
            let mut gates = Vec::new();
            let mut calls = Vec::new();
            for id in 0..2 {
                let w = r.lookup_or_start(id, Args::new(&log)).await.unwrap();
                let (open, hold) = gate();
                gates.push(open);
                calls.push(std::thread::spawn(move || run(w.call(Req::Hold(hold)))));
            }
            wait_until(|| log.holding.load(Ordering::SeqCst) == 2).await;
            match r.lookup_or_start(9, Args::new(&log)).await {
                Err(Error::AtCapacity(2)) => {}
                other => panic!("expected AtCapacity(2), got {other:?}"),
            }
            assert!(r.lookup(&9).is_err(), "a refused start left an entry");
            for open in gates {
                open.send(()).unwrap();
            }
            for call in calls {
                assert_eq!(call.join().unwrap().unwrap(), 0);
            }
            // Idle again (once both have parked): now the start evicts one.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match r.lookup_or_start(9, Args::new(&log)).await {
                    Ok(_) => break,
                    Err(Error::AtCapacity(2)) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "never evictable again"
                        );
                        let pause = futures::future::pending::<()>();
                        let _ = gen_registry::timeout(Duration::from_millis(1), pause).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            r.shutdown().await;
        });
    }
}

#[test]
fn a_registry_that_refuses_at_capacity_evicts_nobody() {
    let log = Arc::new(Log::default());
    let options = Options::default()
        .max_workers(3)
        .at_capacity(AtCapacity::Refuse);
    let r = GenRegistry::<Probe>::new(options).unwrap();
    run(async {
        for id in 0..3 {
            r.lookup_or_start(id, Args::new(&log)).await.unwrap();
        }
        assert!(matches!(
            r.lookup_or_start(3, Args::new(&log)).await,
            Err(Error::AtCapacity(3))
        ));
        assert!(log.terminates.lock().is_empty());
        r.stop(&0).await.unwrap();
        r.lookup_or_start(3, Args::new(&log)).await.unwrap();
        r.shutdown().await;
    });
    assert!(matches!(
        GenRegistry::<Probe>::new(Options::default().max_workers(0)),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn ids_in_use_outlast_a_scan_of_ids_used_once() {
    let log = Arc::new(Log::default());
    let r = GenRegistry::<Probe>::new(Options::default().max_workers(20)).unwrap();
    run(async {
        // Ten ids in use: each looked up again right after its start.
        for id in 0..10 {
            r.lookup_or_start(id, Args::new(&log)).await.unwrap();
            for _ in 0..3 {
                r.lookup(&id).unwrap();
            }
        }
        // A scan: 200 ids started once and never used again.
        for id in 1_000..1_200 {
            r.lookup_or_start(id, Args::new(&log)).await.unwrap();
            for hot in 0..10 {
                let _ = r.lookup(&hot);
            }
        }
        let kept: Vec<u32> = (0..10).filter(|id| r.lookup(id).is_ok()).collect();
        assert_eq!(
            kept,
            (0..10).collect::<Vec<_>>(),
            "ids in use were evicted by a scan"
        );
        r.shutdown().await;
    });
}

// ---- the restart count ----

#[test]
fn a_worker_tells_a_first_start_from_a_restart() {
    let log = Arc::new(Log::default());
    let r = GenRegistry::<Probe>::new(Options::default().restart(RestartPolicy::Always)).unwrap();
    run(async {
        let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_eq!(w.call(Req::Restarts).await.unwrap(), 0);
        for restarts in 1..=3 {
            assert!(w.call(Req::Panic).await.is_err());
            assert_eq!(w.call(Req::Restarts).await.unwrap(), restarts);
        }
        r.shutdown().await;
    });
}
