//! Restart policies, back-off and events: a crashed worker restarts with the
//! same id, mailbox and handles when its policy allows, gives up when it is
//! spent, never delays other workers, and stops at once while it waits.

use crate::common::*;
use gen_registry::{BackOff, Error, ExitReason, RestartPolicy};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

fn always(log: &std::sync::Arc<Log>) -> gen_registry::GenRegistry<Probe> {
    registry_with(observed(log).restart(RestartPolicy::Always))
}

#[test]
fn by_default_a_crashed_worker_is_removed_and_never_restarted() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(observed(&log));
        let worker = registry.start(1, Args::new(&log)).await.unwrap();
        assert!(matches!(
            worker.call(Req::Panic).await,
            Err(Error::HandlerPanicked(_))
        ));
        assert!(matches!(registry.lookup(&1), Err(Error::NotFound)));
        wait_until(|| log.count_events("worker 1 stopped") == 1).await;
        assert_eq!(log.inits(), 1);
        assert_eq!(
            log.events(),
            [
                "worker 1 started",
                "worker 1 exited: panicked: handler of 1 panicked",
                "worker 1 stopped: panicked: handler of 1 panicked",
            ]
        );
    });
}

#[test]
fn a_restarted_worker_keeps_its_id_its_handles_and_its_queued_mail() {
    run(10, async {
        let log = Log::new();
        let registry = always(&log);
        let worker = registry.start(1, Args::new(&log).state(100)).await.unwrap();
        assert_eq!(worker.call(Req::Add(5)).await.unwrap(), 105);

        // Hold the worker in a handler while a panic and two more requests
        // queue up behind it; join polls (and so queues) them in this order,
        // and opens the gate last.
        let (open, gate) = handler_gate();
        let (held, crash, a, b, ()) = futures::join!(
            worker.call(Req::Wait(gate)),
            worker.call(Req::Panic),
            worker.call(Req::Add(1)),
            worker.call(Req::Add(2)),
            async { open.send(()).unwrap() },
        );
        assert_eq!(held.unwrap(), 105);
        assert!(matches!(crash, Err(Error::HandlerPanicked(_))));
        // The new incarnation ran init again with the same args (state 100)
        // and served what was queued, in order.
        assert_eq!((a.unwrap(), b.unwrap()), (101, 103));
        assert_eq!(log.inits(), 2);
        // The old handle, the looked-up one and the count are unchanged.
        assert_eq!(registry.lookup(&1).unwrap(), worker);
        assert!(worker.is_alive());
        assert_eq!(registry.count(), 1);
        assert_eq!(log.overlaps(), 0);
        assert!(
            log.events()
                .contains(&"worker 1 restarted (attempt 1)".to_string())
        );
        registry.shutdown().await;
    });
}

#[test]
fn a_panic_in_a_cast_restarts_too() {
    run(10, async {
        let log = Log::new();
        let registry = always(&log);
        let worker = registry.start(2, Args::new(&log).state(1)).await.unwrap();
        worker.cast(PANIC_CAST).unwrap();
        worker.cast(7).unwrap();
        // Both casts were queued before this call: the new incarnation (state
        // 1 again) took the second.
        assert_eq!(worker.call(Req::Get).await.unwrap(), 8);
        assert_eq!(log.inits(), 2);
        registry.shutdown().await;
    });
}

#[test]
fn tries_gives_up_when_spent_and_its_last_caller_cannot_find_the_worker_again() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(observed(&log).restart(RestartPolicy::Tries {
            restarts: 2,
            within: HOUR,
        }));
        let worker = registry.start(3, Args::new(&log)).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                worker.call(Req::Panic).await,
                Err(Error::HandlerPanicked(_))
            ));
            assert_eq!(registry.lookup(&3).unwrap(), worker);
        }
        assert!(matches!(
            worker.call(Req::Panic).await,
            Err(Error::HandlerPanicked(_))
        ));
        // The third crash in the window: removed before its caller heard of it.
        assert!(matches!(registry.lookup(&3), Err(Error::NotFound)));
        assert!(matches!(
            worker.call(Req::Get).await,
            Err(Error::WorkerEnded)
        ));
        wait_until(|| log.count_events("worker 3 stopped") == 1).await;
        assert_eq!(log.inits(), 3);
        assert_eq!(log.count_events("worker 3 gave up after 2 restarts"), 1);
        assert_eq!(registry.count(), 0);
        // The id is free again.
        registry.start(3, Args::new(&log)).await.unwrap();
    });
}

#[test]
fn a_restart_storm_is_bounded_by_the_policy_and_reports_each_step() {
    run(20, async {
        let log = Log::new();
        let registry = registry_with(
            observed(&log)
                .restart(RestartPolicy::Tries {
                    restarts: 200,
                    within: HOUR,
                })
                .back_off(BackOff::Immediate),
        );
        // Every init after the first fails: each restart crashes at once.
        let worker = registry
            .start(4, Args::new(&log).init(Init::FailAfter(1)))
            .await
            .unwrap();
        let _ = worker.call(Req::Panic).await;
        wait_until(|| log.count_events("worker 4 stopped") == 1).await;
        assert_eq!(log.inits(), 201);
        assert_eq!(log.count_events("worker 4 restarts in"), 200);
        assert_eq!(log.count_events("worker 4 exited: restart failed"), 200);
        assert_eq!(log.count_events("worker 4 gave up after 200 restarts"), 1);
        assert_eq!(log.live(), 0);
        assert!(matches!(registry.lookup(&4), Err(Error::NotFound)));
        let last = log.events().pop().unwrap();
        assert_eq!(
            last,
            "worker 4 stopped: restart failed: init failed: probe init refused: id 4, attempt 201"
        );
    });
}

/// Starts worker `id` of `registry` so that every restart's init fails,
/// crashes it, and returns it with its first `n` "restarts in" events.
async fn crash_loop(
    registry: &gen_registry::GenRegistry<Probe>,
    log: &std::sync::Arc<Log>,
    id: u64,
    n: usize,
) -> (gen_registry::WorkerRef<Probe>, Vec<String>) {
    let worker = registry
        .start(id, Args::new(log).init(Init::FailAfter(1)))
        .await
        .unwrap();
    let _ = worker.call(Req::Panic).await;
    let prefix = format!("worker {id} restarts in");
    wait_until(|| log.count_events(&prefix) >= n).await;
    let delays = log.events().into_iter().filter(|e| e.starts_with(&prefix));
    (worker, delays.take(n).collect())
}

#[test]
fn by_default_a_crash_loop_waits_longer_before_each_restart_instead_of_spinning() {
    run(10, async {
        let log = Log::new();
        let registry = always(&log);
        let (_, delays) = crash_loop(&registry, &log, 6, 3).await;
        assert_eq!(
            delays,
            [
                "worker 6 restarts in 10ms (attempt 1)",
                "worker 6 restarts in 20ms (attempt 2)",
                "worker 6 restarts in 40ms (attempt 3)",
            ]
        );
        registry.stop(&6).await.unwrap();
    });
}

#[test]
fn exponential_back_off_doubles_up_to_its_cap() {
    run(20, async {
        let log = Log::new();
        let registry = registry_with(observed(&log).restart(RestartPolicy::Always).back_off(
            BackOff::Exponential {
                initial: MS,
                max: 8 * MS,
            },
        ));
        let (worker, delays) = crash_loop(&registry, &log, 5, 6).await;
        assert_eq!(
            delays,
            [
                "worker 5 restarts in 1ms (attempt 1)",
                "worker 5 restarts in 2ms (attempt 2)",
                "worker 5 restarts in 4ms (attempt 3)",
                "worker 5 restarts in 8ms (attempt 4)",
                "worker 5 restarts in 8ms (attempt 5)",
                "worker 5 restarts in 8ms (attempt 6)",
            ]
        );
        // Still registered while it retries; a stop ends it.
        assert_eq!(registry.lookup(&5).unwrap(), worker);
        registry.stop(&5).await.unwrap();
        assert!(!worker.is_alive());
        assert!(
            log.events()
                .last()
                .unwrap()
                .starts_with("worker 5 stopped: stopped by the registry")
        );
    });
}

#[test]
fn stop_and_shutdown_end_a_worker_waiting_out_its_back_off_at_once() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(observed(&log).restart(RestartPolicy::Always).back_off(
            BackOff::Linear {
                step: HOUR,
                max: HOUR,
            },
        ));
        let a = registry.start(1, Args::new(&log)).await.unwrap();
        let b = registry.start(2, Args::new(&log)).await.unwrap();
        let _ = a.call(Req::Panic).await;
        let _ = b.call(Req::Panic).await;
        wait_until(|| log.count_events("worker 2 restarts in 3600s") == 1).await;
        // Mail sent during the back-off waits for the next incarnation...
        let pending = spawn({
            let a = a.clone();
            async move { a.call(Req::Get).await }
        });
        // ...and a stop does not wait for the hour to pass (run's deadline is 10 s).
        registry.stop(&1).await.unwrap();
        assert!(matches!(pending.await, Err(Error::WorkerEnded)));
        registry.shutdown().await;
        assert!(!b.is_alive());
        assert_eq!(log.inits(), 2);
        assert_eq!(
            log.count_events("worker 2 stopped: its registry shut down"),
            1
        );
    });
}

#[test]
fn a_worker_in_back_off_delays_no_other_worker_or_registry_operation() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(observed(&log).restart(RestartPolicy::Always).back_off(
            BackOff::Exponential {
                initial: HOUR,
                max: HOUR,
            },
        ));
        let slow = registry.start(0, Args::new(&log)).await.unwrap();
        let _ = slow.call(Req::Panic).await;
        wait_until(|| log.count_events("worker 0 restarts in") == 1).await;
        // Others start, crash, restart, stop and are counted meanwhile.
        let registry2 = registry_with(observed(&log).restart(RestartPolicy::Always));
        for id in 1..=50 {
            let w = registry.lookup_or_start(id, Args::new(&log)).await.unwrap();
            assert_eq!(w.call(Req::Add(1)).await.unwrap(), 1);
            let other = registry2.start(id, Args::new(&log)).await.unwrap();
            let _ = other.call(Req::Panic).await;
            assert_eq!(other.call(Req::Get).await.unwrap(), 0);
        }
        assert_eq!(registry.count(), 51);
        assert_eq!(registry.reduce(0, |n, _, _| n + 1), 51);
        for id in 1..=50 {
            registry.stop(&id).await.unwrap();
        }
        assert_eq!(registry.count(), 1);
        registry.shutdown().await;
        registry2.shutdown().await;
    });
}

#[test]
fn only_crashes_restart_a_worker() {
    run(10, async {
        let log = Log::new();
        let registry = always(&log);
        // Stopping itself.
        let w = registry.start(1, Args::new(&log)).await.unwrap();
        w.call(Req::StopSelf).await.unwrap();
        // Stopped.
        registry.start(2, Args::new(&log)).await.unwrap();
        registry.stop(&2).await.unwrap();
        // Killed.
        let k = registry.start(3, Args::new(&log)).await.unwrap();
        k.kill();
        wait_until(|| !k.is_alive()).await;
        // A failed first init is the starter's error, not a crash.
        assert!(matches!(
            registry.start(4, Args::new(&log).init(Init::Fail)).await,
            Err(Error::Init(_))
        ));
        wait_until(|| log.count_events("worker 3 stopped") == 1).await;
        assert_eq!(registry.count(), 0);
        assert_eq!(log.inits(), 4);
        assert_eq!(log.count_events("worker 3 stopped: killed"), 1);
        assert_eq!(log.count_events("worker 4"), 0);
        assert_eq!(log.count_events("worker") - log.count_events("worker 3"), 6);
        let mut reasons = log.reasons.lock().clone();
        reasons.sort_by_key(|(id, _)| *id);
        assert_eq!(reasons, [(1, ExitReason::Normal), (2, ExitReason::Stopped)]);
    });
}

#[test]
fn events_pair_every_start_with_one_stop_and_a_hit_reports_nothing() {
    run(20, async {
        let log = Log::new();
        let registry = registry_with(observed(&log).restart(RestartPolicy::Tries {
            restarts: 1,
            within: HOUR,
        }));
        for id in 0..20u64 {
            let w = registry.lookup_or_start(id, Args::new(&log)).await.unwrap();
            // A hit and a refused start report nothing.
            registry.lookup_or_start(id, Args::new(&log)).await.unwrap();
            assert!(registry.start(id, Args::new(&log)).await.is_err());
            match id % 4 {
                // One crash: restarted.
                0 => assert!(w.call(Req::Panic).await.is_err()),
                // Two crashes: the policy gives up.
                1 => {
                    assert!(w.call(Req::Panic).await.is_err());
                    assert!(w.call(Req::Panic).await.is_err());
                }
                2 => registry.stop(&id).await.unwrap(),
                _ => {}
            }
        }
        let count = |what: &str| log.events().iter().filter(|e| e.contains(what)).count();
        // A restart after a crash runs after the crashed call has returned
        // its error: wait for both kinds of event.
        wait_until(|| count(" stopped: ") == 10 && count(" restarted ") >= 10).await;
        assert_eq!(count(" started"), 20);
        assert_eq!(count(" restarted "), 10);
        assert_eq!(count(" gave up "), 5);
        assert_eq!(registry.count(), 10);
        registry.shutdown().await;
        assert_eq!((count(" started"), count(" stopped: ")), (20, 20));
        assert_eq!(log.events().last().unwrap(), "registry stopped");
        registry.shutdown().await;
        assert_eq!(count("registry stopped"), 1);
    });
}

#[test]
fn a_panicking_observer_loses_its_event_but_harms_no_worker() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(
            gen_registry::Options::default()
                .observe(|_: &gen_registry::Event<'_, Probe>| panic!("observer")),
        );
        let w = registry.start(1, Args::new(&log)).await.unwrap();
        assert_eq!(w.call(Req::Add(2)).await.unwrap(), 2);
        registry.stop(&1).await.unwrap();
        assert_eq!(log.terminates(), 1);
        assert_eq!(log.live(), 0);
    });
}

#[test]
fn restart_options_out_of_range_are_refused_with_the_reason() {
    let refused = [
        (
            RestartPolicy::Tries {
                restarts: 0,
                within: HOUR,
            },
            BackOff::Immediate,
        ),
        (
            RestartPolicy::Tries {
                restarts: 1,
                within: Duration::ZERO,
            },
            BackOff::Immediate,
        ),
        (
            RestartPolicy::Always,
            BackOff::Linear {
                step: Duration::ZERO,
                max: HOUR,
            },
        ),
        (
            RestartPolicy::Always,
            BackOff::Exponential {
                initial: HOUR,
                max: MS,
            },
        ),
    ];
    for (policy, back_off) in refused {
        let options = gen_registry::Options::<Probe>::default()
            .restart(policy)
            .back_off(back_off);
        match gen_registry::GenRegistry::new(options) {
            Err(Error::InvalidOptions(why)) => assert!(!why.is_empty()),
            other => panic!("{policy:?} / {back_off:?} accepted: {other:?}"),
        }
    }
}

/// Failing inits per second of one crash-looping worker under
/// `RestartPolicy::Always` with `back_off`, counted over `window`.
fn failing_inits_per_second(back_off: Option<BackOff>, window: Duration) -> f64 {
    run(30, async move {
        let log = Log::new();
        let mut options = gen_registry::Options::default().restart(RestartPolicy::Always);
        if let Some(back_off) = back_off {
            options = options.back_off(back_off);
        }
        let registry = registry_with(options);
        let worker = registry
            .start(1, Args::new(&log).init(Init::FailAfter(1)))
            .await
            .unwrap();
        let _ = worker.call(Req::Panic).await;
        let began = std::time::Instant::now();
        let first = log.inits();
        // A measurement, not a condition: the window is the point.
        gen_registry::timeout(window, futures::future::pending::<()>())
            .await
            .unwrap_err();
        let inits = log.inits() - first;
        let elapsed = began.elapsed();
        registry.shutdown().await;
        inits as f64 / elapsed.as_secs_f64()
    })
}

/// Not a check: prints how fast a crash loop spins with the default back-off
/// and with `BackOff::Immediate`. Run it with
/// `cargo test --release --test suite restarts::measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run it explicitly"]
fn measure_failing_inits_per_second_of_a_crash_loop() {
    let window = Duration::from_secs(2);
    let default = failing_inits_per_second(None, window);
    let immediate = failing_inits_per_second(Some(BackOff::Immediate), window);
    eprintln!(
        "crash loop under RestartPolicy::Always, over {window:?}: {default:.1} failing inits/s \
         with the default back-off, {immediate:.0} with BackOff::Immediate"
    );
}
