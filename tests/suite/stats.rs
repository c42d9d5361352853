//! The health snapshot (`GenRegistry::stats`): workers by state, the mail
//! waiting and for how long, the back-off and the capacity in use. It needs
//! no recorder and no cargo feature.

use crate::common::*;
use gen_registry::{BackOff, Options, RestartPolicy};
use std::time::Duration;

#[test]
fn the_snapshot_counts_workers_by_state_and_the_mail_waiting() {
    run(10, async {
        let log = Log::new();
        let registry = registry_with(Options::default());
        // 1 runs; 2 is held in its `init`; 3 is held in a handler, then
        // three more calls queue behind it.
        registry.start(1, Args::new(&log)).await.unwrap();
        let (let_init_finish, held_init) = gate();
        let starting = spawn({
            let registry = registry.clone();
            let args = Args::new(&log).init(held_init);
            async move { registry.start(2, args).await.map(|_| ()) }
        });
        let busy = registry.start(3, Args::new(&log)).await.unwrap();
        let (let_handler_finish, held_handler) = handler_gate();
        let held = spawn({
            let busy = busy.clone();
            async move { busy.call(Req::Wait(held_handler)).await }
        });
        // Queued once the worker is busy: the first waits from its arrival.
        wait_until(|| log.holding.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        let calls = spawn(async move {
            let (a, b, c) = futures::join!(
                busy.call(Req::Get),
                busy.call(Req::Get),
                busy.call(Req::Get)
            );
            a.and(b).and(c).map(|_| ())
        });
        wait_until(|| registry.stats().queued == 3).await;
        let stats = registry.stats();
        assert_eq!((stats.starting, stats.running, stats.stopping), (1, 2, 0));
        assert_eq!(stats.resident, None);
        // The head of the busy worker's mailbox waits, and keeps waiting.
        let before = stats.oldest_wait;
        wait_until(|| registry.stats().oldest_wait > before).await;

        let_handler_finish.send(()).unwrap();
        held.await.unwrap();
        calls.await.unwrap();
        let_init_finish.send(()).unwrap();
        starting.await.unwrap();
        let stats = registry.stats();
        assert_eq!((stats.starting, stats.running, stats.queued), (0, 3, 0));
        assert_eq!(stats.oldest_wait, Duration::ZERO);
        registry.shutdown().await;
    });
}

#[test]
fn the_snapshot_shows_a_worker_in_back_off_and_the_capacity_in_use() {
    run(10, async {
        let log = Log::new();
        let options = Options::default()
            .restart(RestartPolicy::Always)
            .back_off(BackOff::Linear {
                step: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
            })
            .max_workers(10);
        let registry = registry_with(options);
        let worker = registry.start(1, Args::new(&log)).await.unwrap();
        registry.start(2, Args::new(&log)).await.unwrap();
        let _ = worker.call(Req::Panic).await;
        wait_until(|| registry.stats().in_back_off == 1).await;
        let stats = registry.stats();
        assert_eq!((stats.running, stats.in_back_off), (1, 1));
        assert_eq!(stats.resident, Some(2));
        // A stop cuts the back-off short.
        registry.stop(&1).await.unwrap();
        assert_eq!(registry.stats().in_back_off, 0);
        registry.shutdown().await;
    });
}
