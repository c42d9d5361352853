//! What a registry built with the feature `metrics` reports to a metrics
//! recorder: each counter moves with the events it counts, under the
//! registry's name, and one in 64 of each timed event is timed.

use crate::common::*;
use gen_registry::{AtCapacity, BackOff, Error, GenRegistry, Options, RestartPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::time::Duration;

/// A registry named `name` whose metrics go to a recorder of its own (set
/// while it is created: handles are resolved then), and the way to read them.
fn recorded(name: &'static str, options: Options<Probe>) -> (GenRegistry<Probe>, Metrics) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let registry = metrics::with_local_recorder(&recorder, || registry_with(options.name(name)));
    let totals = Default::default();
    (
        registry,
        Metrics {
            snapshotter,
            name,
            totals,
        },
    )
}

/// A metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// A registry's metrics as its recorder saw them. Each snapshot of the
/// recorder hands over what changed since the last one (counters and
/// gauges by their deltas, histograms by their samples), so the totals are
/// summed here.
struct Metrics {
    snapshotter: Snapshotter,
    name: &'static str,
    totals: std::sync::Mutex<HashMap<Series, f64>>,
}

impl Metrics {
    /// The total of `metric` with the registry's label and `labels`: a
    /// counter's count, a gauge's value, a histogram's number of samples.
    fn total(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let delta = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            *totals.entry((key.name().to_owned(), labels)).or_default() += delta;
        }
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .chain(&[("registry", self.name)])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        *totals
            .get(&(metric.to_owned(), wanted))
            .unwrap_or_else(|| panic!("{metric} {labels:?} was never registered"))
    }

    fn counter(&self, metric: &str) -> u64 {
        self.total(metric, &[]) as u64
    }

    fn counter_with(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.total(metric, labels) as u64
    }

    fn gauge(&self, metric: &str) -> f64 {
        self.total(metric, &[])
    }

    fn samples(&self, metric: &str) -> usize {
        self.total(metric, &[]) as usize
    }
}

#[test]
fn starts_calls_and_stops_by_reason_are_counted_and_the_gauge_follows() {
    run(10, async {
        let log = Log::new();
        let (registry, metrics) = recorded("metrics-counts", Options::default());
        for id in 0..3 {
            registry.start(id, Args::new(&log)).await.unwrap();
        }
        let worker = registry.lookup(&0).unwrap();
        for _ in 0..5 {
            worker.call(Req::Get).await.unwrap();
        }
        registry.stop(&2).await.unwrap();
        assert_eq!(metrics.counter("gen_registry_starts_total"), 3);
        assert_eq!(metrics.counter("gen_registry_calls_total"), 5);
        let stopped = [("reason", "stopped")];
        assert_eq!(
            metrics.counter_with("gen_registry_stops_total", &stopped),
            1
        );
        assert_eq!(metrics.gauge("gen_registry_workers"), 2.0);

        registry.shutdown().await;
        let shutdown = [("reason", "shutdown")];
        assert_eq!(
            metrics.counter_with("gen_registry_stops_total", &shutdown),
            2
        );
        assert_eq!(metrics.gauge("gen_registry_workers"), 0.0);
        assert!(matches!(
            worker.call(Req::Get).await,
            Err(Error::WorkerEnded)
        ));
    });
}

#[test]
fn failed_inits_restarts_and_give_ups_are_counted() {
    run(10, async {
        let log = Log::new();
        let options = Options::default()
            .restart(RestartPolicy::Tries {
                restarts: 1,
                within: Duration::from_secs(3600),
            })
            .back_off(BackOff::Immediate);
        let (registry, metrics) = recorded("metrics-failures", options);
        let failed = registry.start(1, Args::new(&log).init(Init::Fail)).await;
        assert!(matches!(failed, Err(Error::Init(_))));
        assert_eq!(metrics.counter("gen_registry_init_failures_total"), 1);
        assert_eq!(metrics.counter("gen_registry_starts_total"), 0);

        let worker = registry.start(2, Args::new(&log)).await.unwrap();
        let _ = worker.call(Req::Panic).await;
        wait_until(|| metrics.counter("gen_registry_restarts_total") == 1).await;
        wait_until(|| worker.is_alive() && registry.stats().in_back_off == 0).await;
        let _ = worker.call(Req::Panic).await;
        wait_until(|| metrics.counter("gen_registry_give_ups_total") == 1).await;
        let panicked = [("reason", "panicked")];
        wait_until(|| metrics.counter_with("gen_registry_stops_total", &panicked) == 1).await;
        assert_eq!(metrics.gauge("gen_registry_workers_in_back_off"), 0.0);
    });
}

#[test]
fn refusals_at_capacity_full_mailboxes_and_call_timeouts_are_counted() {
    run(10, async {
        let log = Log::new();
        let options = Options::default()
            .max_workers(1)
            .at_capacity(AtCapacity::Refuse)
            .mailbox_capacity(1)
            .call_timeout(Duration::from_millis(20));
        let (registry, metrics) = recorded("metrics-refusals", options);
        let worker = registry.start(1, Args::new(&log)).await.unwrap();
        assert!(matches!(
            registry.start(2, Args::new(&log)).await,
            Err(Error::AtCapacity(1))
        ));
        assert_eq!(metrics.counter("gen_registry_capacity_refusals_total"), 1);

        // The worker hangs in a handler; one message fits its mailbox.
        assert!(matches!(
            worker.call(Req::Hang).await,
            Err(Error::CallTimeout(_))
        ));
        assert_eq!(metrics.counter("gen_registry_call_timeouts_total"), 1);
        worker.cast(1).unwrap();
        assert!(matches!(worker.cast(1), Err(Error::MailboxFull)));
        assert_eq!(metrics.counter("gen_registry_mailbox_full_total"), 1);
        worker.kill();
    });
}

#[test]
fn one_call_start_and_queued_message_in_sixty_four_is_timed() {
    run(20, async {
        let log = Log::new();
        let (registry, metrics) = recorded("metrics-histograms", Options::default());
        // Inits run on the executor's threads, each counting its own
        // turn: enough starts that some thread times one.
        for id in 0..1024 {
            registry.start(id, Args::new(&log)).await.unwrap();
        }
        let worker = registry.lookup(&0).unwrap();
        // Calls are counted on this test's own thread.
        for _ in 0..64 {
            worker.call(Req::Get).await.unwrap();
        }
        assert!(metrics.samples("gen_registry_init_seconds") >= 1);
        assert_eq!(metrics.samples("gen_registry_call_seconds"), 1);
        assert_eq!(metrics.samples("gen_registry_mailbox_wait_seconds"), 1);
        registry.shutdown().await;
    });
}
