//! The counterparts of GenRegistry's own test suite, group by group
//! (lookup, lookup_or_start, start, stop, count, reduce, sample, to_list, a
//! killed worker, stopping the registry, independent registries).

use crate::common::*;
use gen_registry::{Error, ExitReason, Options};
use std::collections::HashSet;

// These tests run twice in the suite: on Bastion's executor at its top, and
// on tokio's under `on_tokio`; the parent module's `executor` says which.
use super::executor;
registries_on!(executor);

// ---- lookup ----

#[test]
fn lookup_of_an_unknown_id_is_not_found() {
    let r = registry();
    assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
}

#[test]
fn lookup_of_a_started_id_returns_the_same_worker() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        assert_eq!(r.lookup(&1).unwrap(), w);
    });
}

#[test]
fn lookup_of_other_ids_is_still_not_found() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        r.start(1, Args::new(&log)).await.unwrap();
        assert!(matches!(r.lookup(&2), Err(Error::NotFound)));
    });
}

#[test]
fn lookup_after_stop_is_not_found() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        r.start(1, Args::new(&log)).await.unwrap();
        r.stop(&1).await.unwrap();
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
    });
}

// ---- lookup_or_start ----

#[test]
fn lookup_or_start_starts_an_unknown_id_that_lookup_then_finds() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert!(w.is_alive());
        assert_eq!(r.lookup(&1).unwrap(), w);
        assert_eq!(log.inits(), 1);
    });
}

#[test]
fn lookup_or_start_of_a_known_id_returns_the_same_worker_and_count_stays_one() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let a = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        let b = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(r.count(), 1);
        assert_eq!(log.inits(), 1);
    });
}

#[test]
fn lookup_or_start_passes_args_to_init_and_later_args_are_ignored() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r
            .lookup_or_start(1, Args::new(&log).state(40))
            .await
            .unwrap();
        assert_eq!(w.call(Req::Get).await.unwrap(), 40);
        let again = r
            .lookup_or_start(1, Args::new(&log).state(99))
            .await
            .unwrap();
        assert_eq!(again.call(Req::Get).await.unwrap(), 40);
    });
}

#[test]
fn lookup_or_start_returns_the_init_error() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        match r.lookup_or_start(1, Args::new(&log).init(Init::Fail)).await {
            Err(Error::Init(ProbeError(msg))) => assert_eq!(msg, "id 1"),
            other => panic!("expected the init error, got {other:?}"),
        }
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
        assert_eq!(r.count(), 0);
    });
}

#[test]
fn a_failed_start_leaves_the_other_workers_alive() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let mut workers = Vec::new();
        for id in 0..5 {
            workers.push(r.lookup_or_start(id, Args::new(&log)).await.unwrap());
        }
        assert!(
            r.lookup_or_start(5, Args::new(&log).init(Init::Fail))
                .await
                .is_err()
        );
        assert_eq!(r.count(), 5);
        for w in &workers {
            assert!(w.is_alive());
            assert_eq!(w.call(Req::Get).await.unwrap(), 0);
        }
    });
}

#[test]
fn an_id_can_be_reused_after_stop_with_a_fresh_worker() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let old = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        old.call(Req::Add(5)).await.unwrap();
        r.stop(&1).await.unwrap();
        let new = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_ne!(old, new);
        assert_eq!(new.call(Req::Get).await.unwrap(), 0, "fresh state");
        assert_eq!(log.inits(), 2);
    });
}

// ---- start ----

#[test]
fn start_of_an_unknown_id_starts_a_worker() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log).state(3)).await.unwrap();
        assert_eq!(w.call(Req::Get).await.unwrap(), 3);
        assert_eq!(r.count(), 1);
    });
}

#[test]
fn start_of_a_known_id_is_already_started_with_the_running_worker() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        match r.start(1, Args::new(&log)).await {
            Err(Error::AlreadyStarted(existing)) => assert_eq!(existing, w),
            other => panic!("expected AlreadyStarted, got {other:?}"),
        }
        assert_eq!(r.count(), 1);
        assert_eq!(log.inits(), 1);
    });
}

#[test]
fn start_returns_the_init_error_and_registers_nothing() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        assert!(matches!(
            r.start(1, Args::new(&log).init(Init::Fail)).await,
            Err(Error::Init(_))
        ));
        assert_eq!(r.count(), 0);
        // The id is free: a good start now succeeds.
        r.start(1, Args::new(&log)).await.unwrap();
    });
}

// ---- stop ----

#[test]
fn stop_of_an_unknown_id_is_not_found() {
    run(10, async {
        let r = registry();
        assert!(matches!(r.stop(&1).await, Err(Error::NotFound)));
    });
}

#[test]
fn stop_of_a_known_id_ends_the_worker_after_its_terminate() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        r.stop(&1).await.unwrap();
        // All of this holds the moment stop returns: no waiting.
        assert!(!w.is_alive());
        assert_eq!(log.terminates(), 1);
        assert_eq!(log.live(), 0);
        assert_eq!(r.count(), 0);
        assert_eq!(log.reasons.lock()[0], (1, ExitReason::Stopped));
        assert!(matches!(w.call(Req::Get).await, Err(Error::WorkerEnded)));
    });
}

// ---- count ----

#[test]
fn count_of_an_empty_registry_is_zero() {
    assert_eq!(registry().count(), 0);
}

#[test]
fn count_rises_with_each_start() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        for id in 1..=5 {
            r.start(id, Args::new(&log)).await.unwrap();
            assert_eq!(r.count(), id as usize);
        }
    });
}

#[test]
fn count_drops_after_stop() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        for id in 1..=5 {
            r.start(id, Args::new(&log)).await.unwrap();
        }
        r.stop(&3).await.unwrap();
        assert_eq!(r.count(), 4);
    });
}

#[test]
fn count_drops_when_a_worker_stops_itself() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        r.start(2, Args::new(&log)).await.unwrap();
        w.call(Req::StopSelf).await.unwrap();
        // The worker left the registry before its reply was delivered.
        assert_eq!(r.count(), 1);
        wait_until(|| log.terminates() == 1).await;
        assert_eq!(log.reasons.lock()[0], (1, ExitReason::Normal));
    });
}

// ---- reduce ----

#[test]
fn reduce_over_an_empty_registry_returns_the_accumulator() {
    let r = registry();
    assert_eq!(r.reduce(0u64, |acc, id, _| acc + id), 0);
    assert_eq!(
        r.reduce(vec![7u64], |mut acc, id, _| {
            acc.push(*id);
            acc
        }),
        vec![7]
    );
}

#[test]
fn reduce_visits_every_worker_once() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        for id in 1..=10 {
            r.start(id, Args::new(&log)).await.unwrap();
        }
        assert_eq!(r.reduce(0u64, |acc, id, _| acc + id), 55);
        let mut seen = r.reduce(vec![0u64], |mut acc, id, w| {
            assert_eq!(w.id(), id);
            acc.push(*id);
            acc
        });
        seen.sort();
        assert_eq!(seen, (0..=10).collect::<Vec<_>>());
    });
}

#[test]
fn reduce_may_call_the_registry_from_its_function() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        for id in 1..=3 {
            r.start(id, Args::new(&log)).await.unwrap();
        }
        let found = r.reduce(0, |acc, id, w| {
            assert_eq!(r.lookup(id).unwrap(), *w);
            acc + r.count()
        });
        assert_eq!(found, 9);
    });
}

// ---- sample ----

#[test]
fn sample_of_an_empty_registry_is_none() {
    assert!(registry().sample().is_none());
}

#[test]
fn sample_returns_entries_of_the_registry_and_reaches_all_of_them() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        for id in 0..4 {
            r.start(id, Args::new(&log)).await.unwrap();
        }
        let mut seen = HashSet::new();
        for _ in 0..400 {
            let (id, w) = r.sample().unwrap();
            assert_eq!(*w.id(), id);
            assert_eq!(r.lookup(&id).unwrap(), w);
            seen.insert(id);
        }
        // A uniform sample of 4 entries misses one in 400 draws with
        // probability 4 × (3/4)^400 ≈ 1e-50.
        assert_eq!(seen.len(), 4, "sample is not spread over the entries");
    });
}

// ---- to_list ----

#[test]
fn to_list_of_an_empty_registry_is_empty() {
    assert!(registry().to_list().is_empty());
}

#[test]
fn to_list_returns_every_entry() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let mut started = Vec::new();
        for id in 0..5 {
            started.push((id, r.start(id, Args::new(&log)).await.unwrap()));
        }
        let mut list = r.to_list();
        list.sort_by_key(|(id, _)| *id);
        assert_eq!(list, started);
    });
}

// ---- a worker killed from outside ----

#[test]
fn a_killed_worker_leaves_the_count() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        w.kill();
        wait_until(|| r.count() == 0).await;
        wait_until(|| log.live() == 0).await;
        assert_eq!(log.terminates(), 0, "a kill runs no terminate");
    });
}

#[test]
fn a_killed_worker_is_not_found() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        w.kill();
        wait_until(|| !w.is_alive()).await;
        assert!(matches!(r.lookup(&1), Err(Error::NotFound)));
        assert!(matches!(w.call(Req::Get).await, Err(Error::WorkerEnded)));
        // And the id can be started again.
        let fresh = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_ne!(fresh, w);
    });
}

// ---- stopping the registry ----

#[test]
fn stopping_the_registry_stops_all_its_workers() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let workers: Vec<_> =
            futures::future::join_all((0..20).map(|id| r.start(id, Args::new(&log))))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        r.shutdown().await;
        assert!(workers.iter().all(|w| !w.is_alive()));
        assert_eq!(log.terminates(), 20);
        assert_eq!(log.live(), 0);
        assert!(r.to_list().is_empty());
    });
}

#[test]
fn a_dropped_registry_stops_its_workers_in_the_background() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        drop(r);
        wait_until(|| !w.is_alive() && log.live() == 0).await;
        assert_eq!(log.terminates(), 1);
    });
}

// ---- custom names: independent registries ----

#[test]
fn two_registries_of_one_worker_type_are_independent() {
    run(10, async {
        let log = Log::new();
        let a = registry();
        let b = registry();
        let wa = a.start(1, Args::new(&log).state(1)).await.unwrap();
        assert!(matches!(b.lookup(&1), Err(Error::NotFound)));
        let wb = b.start(1, Args::new(&log).state(2)).await.unwrap();
        assert_ne!(wa, wb);
        a.stop(&1).await.unwrap();
        assert_eq!(b.lookup(&1).unwrap().call(Req::Get).await.unwrap(), 2);
        assert_eq!((a.count(), b.count()), (0, 1));
    });
}

// ---- bad input ----

#[test]
fn zero_timeouts_are_refused_with_a_clear_error() {
    use std::time::Duration;
    for options in [
        Options::default().start_timeout(Duration::ZERO),
        Options::default().shutdown_timeout(Duration::ZERO),
    ] {
        match gen_registry::GenRegistry::<Probe>::new(options) {
            Err(e @ Error::InvalidOptions(_)) => assert!(e.to_string().contains("zero")),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }
}

#[test]
fn a_cast_to_an_ended_worker_is_an_error() {
    run(10, async {
        let log = Log::new();
        let r = registry();
        let w = r.start(1, Args::new(&log)).await.unwrap();
        w.cast(2).unwrap();
        assert_eq!(w.call(Req::Get).await.unwrap(), 2);
        r.stop(&1).await.unwrap();
        assert!(matches!(w.cast(1), Err(Error::WorkerEnded)));
    });
}
