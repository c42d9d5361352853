//! The registry's guarantees under concurrency, one test each (see the
//! architecture's list: one init per id, failed starts harm nobody, no stale
//! handles, stop leaves no window, re-entrancy, shutdown).

use crate::common::*;
use gen_registry::{Error, ExitReason, Options};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// These tests run twice in the suite: on Bastion's executor at its top, and
// on tokio's under `on_tokio`; the parent module's `executor` says which.
use super::executor;
registries_on!(executor);

// ---- 1. exactly one init per id ----

#[test]
fn racing_lookup_or_start_callers_of_one_id_run_one_init() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (r, log) = (r.clone(), log.clone());
                spawn(async move { r.lookup_or_start(7, Args::new(&log)).await.unwrap() })
            })
            .collect();
        let handles = futures::future::join_all(tasks).await;
        assert_eq!(log.inits(), 1);
        assert!(handles.iter().all(|h| *h == handles[0]));
        assert_eq!(r.count(), 1);
    });
}

#[test]
fn racing_start_callers_of_one_id_run_one_init_and_one_wins() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (r, log) = (r.clone(), log.clone());
                spawn(async move { r.start(7, Args::new(&log)).await })
            })
            .collect();
        let results = futures::future::join_all(tasks).await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1);
        for r in &results {
            match r {
                Ok(_) => {}
                Err(Error::AlreadyStarted(h)) => assert_eq!(h, winners[0]),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(log.inits(), 1);
    });
}

#[test]
fn four_threads_starting_the_same_5000_ids_end_with_5000_workers() {
    let log = Log::new();
    let r = registry();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (r, log) = (r.clone(), log.clone());
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    // Each thread walks the ids from a different offset so that
                    // they collide all along.
                    for i in 0..5000u64 {
                        let id = (i + t * 1250) % 5000;
                        r.lookup_or_start(id, Args::new(&log)).await.unwrap();
                    }
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(r.count(), 5000);
    assert_eq!(log.inits(), 5000);
    assert_eq!(r.to_list().len(), 5000);
    run(30, async move { r.shutdown().await });
}

// ---- 2. a slow, failing or panicking init harms nobody else ----

#[test]
fn a_slow_init_does_not_delay_the_start_of_another_id() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let (open, held) = gate();
        let slow = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.start(1, Args::new(&log).init(held)).await }
        });
        wait_until(|| log.inits() == 1).await;
        // Id 1 is held in init; id 2 starts, and is callable, meanwhile.
        let other = r.start(2, Args::new(&log).state(5)).await.unwrap();
        assert_eq!(other.call(Req::Get).await.unwrap(), 5);
        assert!(
            matches!(r.lookup(&1), Err(Error::NotFound)),
            "still starting"
        );
        assert_eq!(r.count(), 1);
        open.send(()).unwrap();
        slow.await.unwrap();
        assert_eq!(r.count(), 2);
    });
}

#[test]
fn callers_waiting_on_a_slow_start_share_it() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let (open, held) = gate();
        let first = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move {
                r.lookup_or_start(1, Args::new(&log).init(held))
                    .await
                    .unwrap()
            }
        });
        wait_until(|| log.inits() == 1).await;
        let second = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.lookup_or_start(1, Args::new(&log)).await.unwrap() }
        });
        open.send(()).unwrap();
        assert_eq!(first.await, second.await);
        assert_eq!(log.inits(), 1);
    });
}

#[test]
fn a_panicking_init_is_an_error_and_leaves_nothing_behind() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let bystander = r.start(1, Args::new(&log)).await.unwrap();
        match r.start(2, Args::new(&log).init(Init::Panic)).await {
            Err(Error::InitPanicked(msg)) => assert!(msg.contains("init of 2 panicked")),
            other => panic!("expected InitPanicked, got {other:?}"),
        }
        assert!(matches!(r.lookup(&2), Err(Error::NotFound)));
        assert_eq!(r.count(), 1);
        assert_eq!(bystander.call(Req::Get).await.unwrap(), 0);
        // The registry still starts new ids, including the one that panicked.
        r.start(2, Args::new(&log)).await.unwrap();
        assert_eq!(r.count(), 2);
    });
}

#[test]
fn a_start_over_the_start_timeout_fails_and_registers_nothing() {
    run(30, async {
        let log = Log::new();
        let r = registry_with(Options::default().start_timeout(Duration::from_millis(50)));
        match r.start(1, Args::new(&log).init(Init::Hang)).await {
            Err(Error::StartTimeout(d)) => assert_eq!(d, Duration::from_millis(50)),
            other => panic!("expected StartTimeout, got {other:?}"),
        }
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
        assert_eq!(r.count(), 0);
        assert_eq!(log.live(), 0);
        // The id is free again.
        r.start(1, Args::new(&log)).await.unwrap();
    });
}

#[test]
fn a_waiter_on_a_failed_start_makes_its_own_attempt() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let (open, held) = gate_then_fail();
        let failing = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.start(9, Args::new(&log).init(held)).await }
        });
        wait_until(|| log.inits() == 1).await;
        let waiter = spawn({
            let (r, log) = (r.clone(), log.clone());
            async move { r.lookup_or_start(9, Args::new(&log).state(3)).await }
        });
        open.send(()).unwrap();
        // The starter gets its own init's error; the waiter's own start, with
        // its own args, succeeds.
        assert!(matches!(failing.await, Err(Error::Init(_))));
        let w = waiter.await.unwrap();
        assert_eq!(w.call(Req::Get).await.unwrap(), 3);
        assert_eq!(log.inits(), 2);
    });
}

// ---- 3. no stale handles ----

#[test]
fn a_worker_that_stopped_itself_is_never_handed_out_again() {
    run(60, async {
        let log = Log::new();
        let r = registry();
        let mut dead_handles = 0;
        for _ in 0..1000 {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            w.call(Req::StopSelf).await.unwrap();
            let again = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            if again == w || !again.is_alive() {
                dead_handles += 1;
            }
        }
        assert_eq!(dead_handles, 0, "stale handles returned out of 1000");
        assert_eq!(log.overlaps(), 0);
    });
}

#[test]
fn lookup_never_returns_an_ended_worker() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        for _ in 0..200 {
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            w.call(Req::StopSelf).await.unwrap();
            assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
            // A crash ends it just the same.
            let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            assert!(matches!(
                w.call(Req::Panic).await,
                Err(Error::HandlerPanicked(_))
            ));
            assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
            assert!(matches!(w.call(Req::Get).await, Err(Error::WorkerEnded)));
        }
    });
}

#[test]
fn calls_queued_behind_a_stop_get_an_error_not_a_hang() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let w = w.clone();
                spawn(async move { w.call(if i == 10 { Req::StopSelf } else { Req::Get }).await })
            })
            .collect();
        for result in futures::future::join_all(calls).await {
            assert!(
                matches!(result, Ok(_) | Err(Error::WorkerEnded)),
                "{result:?}"
            );
        }
    });
}

#[test]
fn a_call_to_a_worker_that_never_replies_times_out() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        let d = Duration::from_millis(30);
        assert!(matches!(w.call_timeout(Req::Hang, d).await, Err(Error::CallTimeout(x)) if x == d));
    });
}

// ---- 4. stop leaves no window for a second worker ----

#[test]
fn stop_then_an_immediate_lookup_or_start_never_overlaps() {
    run(60, async {
        let log = Log::new();
        let r = registry();
        for _ in 0..500 {
            r.lookup_or_start(1, Args::new(&log)).await.unwrap();
            let stopper = spawn({
                let r = r.clone();
                async move { r.stop(&1).await }
            });
            let starter = spawn({
                let (r, log) = (r.clone(), log.clone());
                async move { r.lookup_or_start(1, Args::new(&log)).await }
            });
            let _ = stopper.await;
            starter.await.unwrap();
            assert!(r.count() <= 1);
        }
        assert_eq!(log.overlaps(), 0, "two live workers of one id");
    });
}

// ---- 5. re-entrancy: workers use their registry ----

#[test]
fn a_worker_may_start_other_ids_from_its_init() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        r.start(1, Args::new(&log).init(Init::StartOther(2)))
            .await
            .unwrap();
        assert_eq!(r.count(), 2);
        assert!(r.lookup(&2).is_ok());
    });
}

#[test]
fn a_worker_may_start_and_call_other_ids_from_its_handlers() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        assert_eq!(w.call(Req::CallOther(42)).await.unwrap(), 42);
        assert_eq!(r.count(), 2);
    });
}

// ---- 6. shutdown ----

#[test]
fn shutdown_runs_every_terminate_and_leaves_nothing_running() {
    run(30, async {
        let log = Log::new();
        let r = registry();
        for id in 0..100 {
            r.start(id, Args::new(&log)).await.unwrap();
        }
        r.shutdown().await;
        assert_eq!(log.terminates(), 100);
        assert_eq!(log.live(), 0);
        assert_eq!(r.count(), 0);
        assert!(
            log.reasons
                .lock()
                .iter()
                .all(|(_, why)| *why == ExitReason::Shutdown)
        );
        assert!(matches!(r.lookup(&1), Err(Error::RegistryStopped)));
        assert!(matches!(r.stop(&1).await, Err(Error::RegistryStopped)));
        assert!(matches!(
            r.lookup_or_start(1, Args::new(&log)).await,
            Err(Error::RegistryStopped)
        ));
    });
}

#[test]
fn calls_in_flight_during_shutdown_all_finish() {
    run(60, async {
        let log = Log::new();
        let r = registry_with(Options::default().shutdown_timeout(Duration::from_millis(200)));
        let mut workers = Vec::new();
        for id in 0..20 {
            workers.push(r.start(id, Args::new(&log)).await.unwrap());
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..2000)
            .map(|i| {
                let w = workers[i % 20].clone();
                let answered = answered.clone();
                // A few handlers never return: shutdown must abort those workers.
                let req = if i % 500 == 0 { Req::Hang } else { Req::Add(1) };
                spawn(async move {
                    let result = w.call(req).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    result
                })
            })
            .collect();
        r.shutdown().await;
        assert_eq!(log.live(), 0);
        for result in futures::future::join_all(calls).await {
            assert!(
                matches!(result, Ok(_) | Err(Error::WorkerEnded)),
                "a call in flight ended with {result:?}"
            );
        }
        assert_eq!(answered.load(Ordering::SeqCst), 2000);
        assert!(workers.iter().all(|w| !w.is_alive()));
    });
}

#[test]
fn shutdown_during_starts_leaves_nothing_registered() {
    run(60, async {
        let log = Log::new();
        let r = registry();
        let (open, held) = gate();
        let starts: Vec<_> = (0..200u64)
            .map(|id| {
                let (r, log, held) = (r.clone(), log.clone(), held.clone());
                spawn(async move {
                    let args = if id == 0 {
                        Args::new(&log).init(held)
                    } else {
                        Args::new(&log)
                    };
                    r.start(id, args).await
                })
            })
            .collect();
        wait_until(|| log.inits() > 0).await;
        let shutdown = spawn({
            let r = r.clone();
            async move { r.shutdown().await }
        });
        wait_until(|| r.is_stopped()).await;
        drop(open);
        shutdown.await;
        for result in futures::future::join_all(starts).await {
            assert!(
                matches!(result, Ok(_) | Err(Error::RegistryStopped)),
                "{result:?}"
            );
        }
        assert_eq!(r.count(), 0);
        assert!(r.to_list().is_empty());
        assert_eq!(log.live(), 0);
    });
}
