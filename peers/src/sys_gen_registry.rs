//! gen_registry: a standalone `GenRegistry<Pinger>`, measured on each of its
//! executors.
//!
//! - `gen_registry`: the default executor, Bastion's; every measurement
//!   that awaits runs inside a proc spawned there (`bastion::executor::spawn`,
//!   waited for with `bastion::executor::run`). W6t calls the same worker
//!   from a tokio task on a runtime of its own (2 workers, like ractor's and
//!   kameo's), built after the other W6 samples.
//! - `gen_registry_tokio`: `Executor::Tokio` on a tokio multi-thread runtime
//!   with 2 workers (the one ractor and kameo run on): workers are tokio
//!   tasks, and every measurement that awaits runs inside a tokio task, so
//!   its W6 is already a call from a tokio task and W6t repeats it.

use crate::bastion_rt::Procs;
use crate::common::*;
use crate::drivers::{Registry, Tasks, churn, drive, race};
use crate::tokio_rt;
use gen_registry::{Context, Executor, GenRegistry, Options, Worker, WorkerRef};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static INITS: AtomicU64 = AtomicU64::new(0);

pub struct Pinger {
    state: u64,
}

impl Worker for Pinger {
    type Id = u64;
    type Args = u64;
    type Request = u64;
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_id: &u64, state: u64, _ctx: &Context<Self>) -> Result<Self, Self::Error> {
        INITS.fetch_add(1, Ordering::Relaxed);
        Ok(Pinger { state })
    }

    async fn handle_call(&mut self, x: u64, _ctx: &mut Context<Self>) -> u64 {
        x + self.state
    }
}

/// What W9 and W11 ask of a system: the registry's own operations.
impl Registry for GenRegistry<Pinger> {
    type Handle = WorkerRef<Pinger>;

    async fn start(&self, id: u64) -> Option<WorkerRef<Pinger>> {
        GenRegistry::start(self, id, state_of(id)).await.ok()
    }

    async fn call(&self, h: &WorkerRef<Pinger>, x: u64) -> Option<u64> {
        h.call(x).await.ok()
    }

    async fn stop(&self, id: u64) -> bool {
        GenRegistry::stop(self, &id).await.is_ok()
    }

    async fn lookup_or_start(&self, id: u64) -> Option<WorkerRef<Pinger>> {
        GenRegistry::lookup_or_start(self, id, state_of(id))
            .await
            .ok()
    }

    fn inits(&self) -> u64 {
        INITS.load(Ordering::Relaxed)
    }
}

/// `gen_registry`: workers and measuring tasks on Bastion's executor.
pub fn run(cfg: &Config, out: &Out) {
    install_recorder_if_asked();
    let reg = GenRegistry::new(Options::default()).expect("registry");
    measure(cfg, out, &Procs, &reg, W6t::OwnRuntime);
}

/// With `PEERS_RECORDER=prometheus`, a Prometheus recorder is installed
/// before the registry is made, so every metric the registry reports is
/// recorded (nothing scrapes it): the cost of metrics with an exporter
/// (BENCHMARKS.md, "What metrics cost"). Built without the feature
/// `metrics`, the bench says so and exits rather than measure the wrong
/// build.
fn install_recorder_if_asked() {
    if std::env::var("PEERS_RECORDER").as_deref() != Ok("prometheus") {
        return;
    }
    #[cfg(feature = "metrics")]
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a Prometheus recorder");
    #[cfg(not(feature = "metrics"))]
    {
        eprintln!("PEERS_RECORDER=prometheus needs the bench built with `--features metrics`");
        std::process::exit(2);
    }
}

/// `gen_registry_tokio`: workers and measuring tasks on one tokio runtime.
pub fn run_tokio(cfg: &Config, out: &Out) {
    let rt = tokio_rt::runtime();
    let reg = GenRegistry::new(Options::default().executor(Executor::Tokio(rt.handle().clone())))
        .expect("registry");
    measure(cfg, out, &rt, &reg, W6t::SameAsW6);
}

/// Where W6t's caller runs.
enum W6t {
    /// The measuring tasks are tokio tasks already: W6 is W6t.
    SameAsW6,
    /// A tokio multi-thread runtime (2 workers) built for W6t alone.
    OwnRuntime,
}

/// W10: count, then reduce and to_list over every worker (median of `reps`
/// runs each).
pub fn w10(out: &Out, reg: &GenRegistry<Pinger>, reps: usize) {
    out.progress("W10 count / reduce / to_list");
    out.emit(
        "W10count",
        ns_per_call(1_000, Duration::from_millis(100), || reg.count()),
        "ns",
    );
    out.emit(
        "W10reduce",
        ms_median(reps, || reg.reduce(0u64, |a, id, _| a.wrapping_add(*id))),
        "ms",
    );
    out.emit("W10list", ms_median(reps, || reg.to_list().len()), "ms");
}

/// W1–W11 on `reg`, whose measuring tasks run on `tasks`.
fn measure(cfg: &Config, out: &Out, tasks: &impl Tasks, reg: &GenRegistry<Pinger>, w6t: W6t) {
    let order = shuffled(cfg.n, ORDER_SEED);
    let ids: Vec<u64> = (0..cfg.n as u64).collect();
    let limit = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    out.emit("N", cfg.n as f64, "ids");
    // Bring the executor up before the RSS baseline (Bastion's starts on
    // first use).
    tasks.inside(async {});

    // W1 + W2: lookup_or_start returns once init ran and the worker is
    // registered; 2 driver procs × join_all of 16 starts (common::CHUNK).
    out.progress("W1 start");
    let rss0 = rss_bytes();
    let r = reg.clone();
    let (t, failed) = drive(tasks, &ids, limit, move |id| {
        let r = r.clone();
        async move { r.lookup_or_start(id, state_of(id)).await.is_ok() }
    });
    assert_eq!(failed, 0, "{} W1: {failed} starts failed", out.system);
    let rss1 = rss_bytes();
    out.emit("W1", cfg.n as f64 / t.as_secs_f64(), "starts/s");
    out.emit("W2", (rss1 as f64 - rss0 as f64) / cfg.n as f64, "B/worker");
    assert_eq!(reg.count(), cfg.n, "{} W1: count", out.system);

    // W3 + W4
    out.progress("W3 lookup");
    let w3 = lookup_ns_1t(&order, cfg.lookup_time, |id| reg.lookup(&id).ok());
    out.emit("W3", w3, "ns/op");
    out.progress("W4 lookup, 2 threads");
    let w4 = lookup_ops_2t(&order, cfg.lookup_time, |id| reg.lookup(&id).ok());
    out.emit("W4", w4 / 1e6, "Mops/s");
    out.emit("W4x", w4 / (1e9 / w3), "x");

    // W5: lookup_or_start hits, inside a proc, for the same time as W3.
    out.progress("W5 lookup_or_start hit");
    let (r, ord, budget) = (reg.clone(), order.clone(), cfg.lookup_time);
    let w5 = tasks.inside(async move {
        let start = Instant::now();
        let mut ops = 0usize;
        while start.elapsed() < budget {
            for &id in &ord {
                let h = r.lookup_or_start(black_box(id), state_of(id)).await;
                assert!(h.is_ok(), "W5 lookup_or_start failed");
                black_box(h.ok());
            }
            ops += ord.len();
        }
        start.elapsed().as_nanos() as f64 / ops as f64
    });
    out.emit("W5", w5, "ns/op");

    // W6
    out.progress("W6 call round trip");
    let h = reg.lookup(&order[0]).expect("W6 worker");
    let expect = state_of(order[0]);
    let m = cfg.m;
    let rtt = move |h: WorkerRef<Pinger>| async move {
        rtt_samples(m, |x| {
            let h = &h;
            async move { h.call(x).await.ok() == Some(x + expect) }
        })
        .await
    };
    let samples = tasks.inside(rtt(h.clone()));
    emit_rtt(out, "W6", &samples);
    out.progress("W6t call from a tokio task");
    match w6t {
        W6t::SameAsW6 => emit_rtt(out, "W6t", &samples),
        W6t::OwnRuntime => {
            let rt = tokio_rt::runtime();
            emit_rtt(out, "W6t", &tokio_rt::inside(&rt, rtt(h)));
        }
    }

    // W7
    out.progress("W7 lookup + call, spread");
    let (r, ord) = (reg.clone(), order.clone());
    let w7 = tasks.inside(async move {
        let start = Instant::now();
        for i in 0..m {
            let id = ord[i % ord.len()];
            let h = r.lookup(&id).expect("W7 lookup");
            assert_eq!(h.call(1).await.ok(), Some(1 + state_of(id)), "W7 reply");
        }
        start.elapsed().as_secs_f64() * 1e6 / m as f64
    });
    out.emit("W7", w7, "µs/op");

    w10(out, reg, 3);

    // W8: `stop` returns once the worker terminated and its entry is gone.
    out.progress("W8 stop all");
    let r = reg.clone();
    let (t, failed) = drive(tasks, &ids, limit, move |id| {
        let r = r.clone();
        async move { r.stop(&id).await.is_ok() }
    });
    out.emit("W8", cfg.n as f64 / t.as_secs_f64(), "stops/s");
    out.emit("W8left", reg.count() as f64, "entries");
    if failed > 0 {
        out.note(&format!("W8: {failed} stops failed"));
    }
    let listed = reg.to_list().len();
    if listed > 0 {
        out.note(&format!("W8: to_list still shows {listed} workers"));
    }

    // W9 + W11
    churn(out, tasks, reg, cfg.churn, cfg.pool, limit);
    race(out, tasks, reg, limit);
}
