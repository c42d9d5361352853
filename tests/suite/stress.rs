//! Stress: OS threads and tasks on Bastion's executor run random operations on
//! one shared pool of ids at the same time — starts that succeed, fail or
//! panic, lookups, stops, calls (some panic, some stop the worker), casts —
//! for a bounded number of operations.
//!
//! It proves that under that contention every operation returns one of the
//! results its kind allows (a call is answered or errored, never times out;
//! an init error or panic is reported only to the caller whose init failed),
//! two workers of one id are never alive together, and once everything is
//! quiet `count()`, `to_list()` and `reduce` agree with the workers actually
//! alive (the probe log), every `terminate` ran, and after `shutdown` nothing
//! is left.
//!
//! Size: `GEN_REGISTRY_STRESS_OPS` operations in all: 200,000 by default;
//! CI (`.ci/run`) runs 1,000,000.

use crate::common::*;
use gen_registry::{Error, GenRegistry, WorkerRef};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const IDS: u64 = 48;
const THREADS: usize = 4;
const TASKS: usize = 64;
/// A call that takes longer than this is counted as a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Tallies shared by every thread and task.
#[derive(Default)]
struct Tally {
    ops: AtomicUsize,
    calls: AtomicUsize,
    calls_answered: AtomicUsize,
    calls_errored: AtomicUsize,
    init_errors: AtomicUsize,
    init_panics: AtomicUsize,
    handler_panics: AtomicUsize,
    self_stops: AtomicUsize,
    stops_ok: AtomicUsize,
    /// Starts whose worker was ended by another task before the starter was
    /// handed it (documented: `Error::WorkerEnded`).
    ended_before_handed: AtomicUsize,
    max_count: AtomicUsize,
    /// Results a kind of operation must never give; the first few kept.
    violations: AtomicUsize,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn violation(&self, what: String) {
        self.violations.fetch_add(1, Ordering::SeqCst);
        let mut examples = self.examples.lock();
        if examples.len() < 10 {
            examples.push(what);
        }
    }
}

#[test]
fn random_operations_from_threads_and_tasks_keep_every_invariant() {
    quiet_deliberate_panics();
    let total = size_from_env("GEN_REGISTRY_STRESS_OPS", 200_000);
    let per_thread = total / 2 / THREADS;
    let per_task = total / 2 / TASKS;
    let log = Log::new();
    let r = registry();
    let tally = Arc::new(Tally::default());
    let began = Instant::now();

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (r, log, tally) = (r.clone(), log.clone(), tally.clone());
            spawn(async move { churn(&r, &log, &tally, 1000 + t as u64, per_task).await })
        })
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (r, log, tally) = (r.clone(), log.clone(), tally.clone());
            std::thread::spawn(move || {
                futures::executor::block_on(churn(&r, &log, &tally, t as u64, per_thread))
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let (quiet_count, quiet_live) = run(600, {
        let (r, log) = (r.clone(), log.clone());
        async move {
            futures::future::join_all(tasks).await;
            // Quiescence: a worker that stopped itself or panicked is dropped
            // just after its last reply.
            wait_until(|| log.live() == r.count()).await;
            (r.count(), log.live())
        }
    });
    let churned = began.elapsed();

    // The views agree with the workers actually alive.
    let list = r.to_list();
    assert_eq!(list.len(), quiet_count, "to_list and count disagree");
    assert_eq!(r.reduce(0, |n, _, _| n + 1), quiet_count);
    assert!(
        list.iter().all(|(_, h)| h.is_alive()),
        "a dead worker listed"
    );
    for id in 0..IDS {
        let listed = list.iter().any(|(i, _)| *i == id);
        match r.lookup(&id) {
            Ok(h) => assert!(
                listed && h.is_alive(),
                "lookup({id}) found an unlisted worker"
            ),
            Err(Error::NotFound) => assert!(!listed, "lookup({id}) misses a listed worker"),
            Err(e) => panic!("lookup({id}) gave {e:?}"),
        }
    }
    assert_eq!(log.overlaps(), 0, "two live workers of one id");
    let drops = || log.drops.load(Ordering::SeqCst);
    assert_eq!(
        log.terminates(),
        drops(),
        "an ended worker skipped terminate"
    );

    run(60, {
        let r = r.clone();
        async move { r.shutdown().await }
    });
    assert_eq!(r.count(), 0);
    assert!(r.to_list().is_empty());
    assert_eq!(log.live(), 0, "a worker survived shutdown");
    assert_eq!(log.terminates(), drops());
    // Every init either made a worker (dropped by now) or failed, and each
    // failure was reported to exactly one caller: the one whose init it was.
    let n = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(
        log.inits(),
        drops() + n(&tally.init_errors) + n(&tally.init_panics),
        "inits that neither made a worker nor reached their caller as an error"
    );
    assert!(list.iter().all(|(_, h)| !h.is_alive()));

    eprintln!(
        "stress: {} operations from {THREADS} threads and {TASKS} tasks on {IDS} ids in {churned:.1?}: \
         {} workers started ({} ended before their starter got them), {} stopped, {} calls ({} answered, {} errored, none hung), \
         faults: {} init errors, {} init panics, {} handler panics, {} self-stops; \
         at most {} workers at once, {} at quiescence ({} live per the log); overlaps {}; \
         violations {}",
        n(&tally.ops),
        drops(),
        n(&tally.ended_before_handed),
        n(&tally.stops_ok),
        n(&tally.calls),
        n(&tally.calls_answered),
        n(&tally.calls_errored),
        n(&tally.init_errors),
        n(&tally.init_panics),
        n(&tally.handler_panics),
        n(&tally.self_stops),
        n(&tally.max_count),
        quiet_count,
        quiet_live,
        log.overlaps(),
        n(&tally.violations),
    );
    assert_eq!(
        n(&tally.calls),
        n(&tally.calls_answered) + n(&tally.calls_errored),
        "a call never came back"
    );
    assert_eq!(
        n(&tally.violations),
        0,
        "results no operation may give: {:#?}",
        tally.examples.lock()
    );
}

/// `ops` random operations; every result is checked against what its kind
/// allows.
async fn churn(r: &GenRegistry<Probe>, log: &Arc<Log>, tally: &Tally, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    // The last handle this thread or task got per id; may be stale.
    let mut handles: HashMap<u64, WorkerRef<Probe>> = HashMap::new();
    for _ in 0..ops {
        tally.ops.fetch_add(1, Ordering::Relaxed);
        let id = rng.below(IDS);
        let roll = rng.below(100);
        match roll {
            0..15 => match r.lookup(&id) {
                Ok(h) => {
                    handles.insert(id, h);
                }
                Err(Error::NotFound) => {}
                Err(e) => tally.violation(format!("lookup: {e:?}")),
            },
            15..45 => {
                let init = match rng.below(20) {
                    0 => Init::Fail,
                    1 => Init::Panic,
                    _ => Init::Ok,
                };
                let exclusive = roll >= 35;
                let args = Args::new(log).init(init.clone());
                let got = if exclusive {
                    r.start(id, args).await
                } else {
                    r.lookup_or_start(id, args).await
                };
                match (init, got) {
                    (_, Ok(h)) => {
                        handles.insert(id, h);
                    }
                    (_, Err(Error::AlreadyStarted(h))) if exclusive => {
                        handles.insert(id, h);
                    }
                    (Init::Ok, Err(Error::WorkerEnded)) => {
                        tally.ended_before_handed.fetch_add(1, Ordering::Relaxed);
                    }
                    (Init::Fail, Err(Error::Init(_))) => {
                        tally.init_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    (Init::Panic, Err(Error::InitPanicked(_))) => {
                        tally.init_panics.fetch_add(1, Ordering::Relaxed);
                    }
                    (_, got) => tally.violation(format!("start: {got:?}")),
                }
            }
            45..55 => match r.stop(&id).await {
                Ok(()) => {
                    tally.stops_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::NotFound) => {}
                Err(e) => tally.violation(format!("stop: {e:?}")),
            },
            55..90 => {
                // Half through a fresh lookup, half through a possibly stale handle.
                let h = if rng.below(2) == 0 {
                    r.lookup(&id).ok()
                } else {
                    handles.get(&id).cloned()
                };
                let Some(h) = h else { continue };
                let (request, kind) = match rng.below(40) {
                    0 => (Req::Panic, 'p'),
                    1 => (Req::StopSelf, 's'),
                    2..20 => (Req::Get, 'g'),
                    _ => (Req::Add(1), 'a'),
                };
                tally.calls.fetch_add(1, Ordering::Relaxed);
                let got = h.call_timeout(request, CALL_DEADLINE).await;
                match (kind, &got) {
                    ('s', Ok(_)) => {
                        tally.self_stops.fetch_add(1, Ordering::Relaxed);
                        tally.calls_answered.fetch_add(1, Ordering::Relaxed);
                    }
                    ('g' | 'a', Ok(_)) => {
                        tally.calls_answered.fetch_add(1, Ordering::Relaxed);
                    }
                    ('p', Err(Error::HandlerPanicked(_))) => {
                        tally.handler_panics.fetch_add(1, Ordering::Relaxed);
                        tally.calls_errored.fetch_add(1, Ordering::Relaxed);
                    }
                    (_, Err(Error::WorkerEnded)) => {
                        tally.calls_errored.fetch_add(1, Ordering::Relaxed);
                    }
                    (_, got) => {
                        tally.calls_errored.fetch_add(1, Ordering::Relaxed);
                        tally.violation(format!("call {kind}: {got:?}"));
                    }
                }
            }
            _ => {
                if let Some(h) = handles.get(&id) {
                    match h.cast(1) {
                        Ok(()) | Err(Error::WorkerEnded) => {}
                        Err(e) => tally.violation(format!("cast: {e:?}")),
                    }
                }
            }
        }
        tally.max_count.fetch_max(r.count(), Ordering::Relaxed);
    }
}

/// Shutdowns that race with starts and stops from OS threads and tasks, many
/// times over: each returns (a lost wake-up would hang it, since the
/// shutdown timeout here is far longer than the test's deadline, so nothing
/// is rescued by a kill), leaves no worker registered or alive, ran every
/// `terminate`, and no start succeeds after it.
#[test]
fn shutdowns_racing_with_starts_and_stops_end_every_worker_and_return() {
    const ROUNDS: u64 = 40;
    run(120, async {
        for round in 0..ROUNDS {
            let log = Log::new();
            let r = registry_with(
                gen_registry::Options::default().shutdown_timeout(Duration::from_secs(3_600)),
            );
            let churn = |offset: u64| {
                let (r, log) = (r.clone(), log.clone());
                async move {
                    let mut rng = Rng::new(round * 100 + offset);
                    loop {
                        let id = rng.below(500);
                        if rng.below(4) == 0 {
                            let _ = r.stop(&id).await;
                        } else if let Err(Error::RegistryStopped) =
                            r.lookup_or_start(id, Args::new(&log)).await
                        {
                            return;
                        }
                    }
                }
            };
            let threads: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let churn = churn(t);
                    std::thread::spawn(move || futures::executor::block_on(churn))
                })
                .collect();
            let tasks: Vec<_> = (0..16).map(|t| spawn(churn(10 + t))).collect();
            wait_until(|| r.count() >= 100).await;
            r.shutdown().await;
            assert_eq!(
                r.count(),
                0,
                "round {round}: workers counted after shutdown"
            );
            assert!(r.to_list().is_empty(), "round {round}: workers listed");
            assert_eq!(log.live(), 0, "round {round}: a worker outlived shutdown");
            assert_eq!(
                log.inits(),
                log.terminates(),
                "round {round}: a terminate did not run"
            );
            futures::future::join_all(tasks).await;
            threads.into_iter().for_each(|t| t.join().unwrap());
            assert!(matches!(
                r.start(0, Args::new(&log)).await,
                Err(Error::RegistryStopped)
            ));
        }
    });
}
