//! What the two tokio peers (ractor, kameo) share: the runtime and the
//! [`Tasks`] on tokio.

use crate::drivers::{Registry, Tasks, churn, drive, race};
use std::future::Future;
use std::time::{Duration, Instant};

/// A tokio multi-thread runtime with 2 workers (peers.md's `mt`).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` inside the runtime (on a worker, as a spawned task) and returns
/// its output: W6 / W7 / W9 are measured from inside the runtime.
pub fn inside<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async move { tokio::spawn(f).await.expect("measuring task panicked") })
}

/// The runtime as a [`Tasks`] runtime: each task a tokio task.
impl Tasks for tokio::runtime::Runtime {
    fn run_all<T, F, Fut>(&self, k: usize, limit: Duration, f: F) -> Option<Vec<Option<T>>>
    where
        T: Send + 'static,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let tasks: Vec<_> = (0..k).map(|i| self.spawn(f(i))).collect();
        let done = self.block_on(async {
            tokio::time::timeout(limit, futures::future::join_all(tasks)).await
        });
        Some(done.ok()?.into_iter().map(Result::ok).collect())
    }

    fn inside<T, Fut>(&self, f: Fut) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        inside(self, f)
    }
}

/// The operations a tokio peer offers, each written the way its docs show.
/// Ids are mapped to the names `"w{id}"`, built once up front.
pub trait Peer: Send + Sync + 'static {
    /// What a lookup returns (a clone the caller owns).
    type Handle: Clone + Send + Sync + 'static;
    /// The system's name in the table.
    const NAME: &'static str;

    /// Looks a name up in the peer's registry.
    fn lookup(&self, id: u64) -> Option<Self::Handle>;
    /// Spawns and registers a fresh worker; `None` when the name is taken.
    /// Returns once the worker's init ran.
    fn start(&self, id: u64) -> impl Future<Output = Option<Self::Handle>> + Send;
    /// One round trip: `Ping(x)` answered with `x + state`.
    fn call(h: &Self::Handle, x: u64) -> impl Future<Output = Option<u64>> + Send;
    /// Stops the worker registered under `id` and waits until it terminated
    /// and left the registry; `false` if there was none.
    fn stop(&self, id: u64) -> impl Future<Output = bool> + Send;
    /// Registered names (W10's count).
    fn count(&self) -> usize;
    /// Every (name, handle) pair (W10's to_list).
    fn to_list(&self) -> Vec<(String, Self::Handle)>;
    /// How many inits have run so far (W11).
    fn inits(&self) -> u64;
    /// The peer's equivalent of lookup_or_start: lookup, else start, else
    /// (lost the race for the name) lookup again.
    fn lookup_or_start(&self, id: u64) -> impl Future<Output = Option<Self::Handle>> + Send {
        async move {
            if let Some(h) = self.lookup(id) {
                return Some(h);
            }
            match self.start(id).await {
                Some(h) => Some(h),
                None => self.lookup(id),
            }
        }
    }
}

/// What W9 and W11 ask of a system: the peer's operations.
impl<P: Peer> Registry for std::sync::Arc<P> {
    type Handle = P::Handle;

    fn start(&self, id: u64) -> impl Future<Output = Option<P::Handle>> + Send {
        P::start(self, id)
    }

    fn call(&self, h: &P::Handle, x: u64) -> impl Future<Output = Option<u64>> + Send {
        P::call(h, x)
    }

    fn stop(&self, id: u64) -> impl Future<Output = bool> + Send {
        P::stop(self, id)
    }

    fn lookup_or_start(&self, id: u64) -> impl Future<Output = Option<P::Handle>> + Send {
        P::lookup_or_start(self, id)
    }

    fn inits(&self) -> u64 {
        P::inits(self)
    }
}

/// The names `"w{id}"` of the W1 ids, the W9 pool and the W11 id.
pub struct Names {
    main: Vec<String>,
    pool: Vec<String>,
    race: String,
}

impl Names {
    pub fn new(n: usize, pool: usize) -> Names {
        Names {
            main: (0..n as u64).map(crate::common::name_of).collect(),
            pool: (0..pool as u64)
                .map(|i| crate::common::name_of(crate::common::POOL_BASE + i))
                .collect(),
            race: crate::common::name_of(crate::common::RACE_ID),
        }
    }

    pub fn get(&self, id: u64) -> &str {
        if id == crate::common::RACE_ID {
            &self.race
        } else if id >= crate::common::POOL_BASE {
            &self.pool[(id - crate::common::POOL_BASE) as usize]
        } else {
            &self.main[id as usize]
        }
    }
}

/// W10 of a peer: count, and to_list (median of `reps` runs); it has no
/// reduce.
pub fn w10<P: Peer>(out: &crate::common::Out, peer: &P, reps: usize) {
    use crate::common::{ms_median, ns_per_call};
    out.progress("W10 count / to_list");
    out.emit(
        "W10count",
        ns_per_call(1, Duration::from_millis(200), || peer.count()),
        "ns",
    );
    out.absent("W10reduce", "ms");
    out.emit("W10list", ms_median(reps, || peer.to_list().len()), "ms");
}

/// Runs W1–W11 on a tokio peer, reporting through `out`.
pub fn run_peer<P: Peer>(
    cfg: &crate::common::Config,
    out: &crate::common::Out,
    make: impl FnOnce(&crate::common::Config) -> P,
) {
    use crate::common::*;
    use std::sync::Arc;

    let rt = runtime();
    let order = shuffled(cfg.n, ORDER_SEED);
    let ids: Vec<u64> = (0..cfg.n as u64).collect();
    let peer = Arc::new(make(cfg));
    let limit = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    out.emit("N", cfg.n as f64, "ids");

    // W1 + W2
    out.progress("W1 start");
    let rss0 = rss_bytes();
    let p = peer.clone();
    let (t, failed) = drive(&rt, &ids, limit, move |id| {
        let p = p.clone();
        async move { p.start(id).await.is_some() }
    });
    assert_eq!(failed, 0, "{} W1: {failed} starts failed", P::NAME);
    let rss1 = rss_bytes();
    out.emit("W1", cfg.n as f64 / t.as_secs_f64(), "starts/s");
    out.emit("W2", (rss1 as f64 - rss0 as f64) / cfg.n as f64, "B/worker");
    assert_eq!(peer.count(), cfg.n, "{} W1: registry count", P::NAME);

    // W3 + W4
    out.progress("W3 lookup");
    let w3 = lookup_ns_1t(&order, cfg.lookup_time, |id| peer.lookup(id));
    out.emit("W3", w3, "ns/op");
    out.progress("W4 lookup, 2 threads");
    let w4 = lookup_ops_2t(&order, cfg.lookup_time, |id| peer.lookup(id));
    out.emit("W4", w4 / 1e6, "Mops/s");
    out.emit("W4x", w4 / (1e9 / w3), "x");

    // W5: no lookup_or_start in the peer's API.
    out.absent("W5", "ns/op");

    // W6
    out.progress("W6 call round trip");
    let h = peer.lookup(order[0]).expect("W6 worker");
    let expect = state_of(order[0]);
    let m = cfg.m;
    let samples = inside(&rt, async move {
        rtt_samples(m, |x| {
            let h = h.clone();
            async move { P::call(&h, x).await == Some(x + expect) }
        })
        .await
    });
    emit_rtt(out, "W6", &samples);
    // W6 is a call between two tokio tasks already.
    emit_rtt(out, "W6t", &samples);

    // W7
    out.progress("W7 lookup + call, spread");
    let p = peer.clone();
    let ord = order.clone();
    let w7 = inside(&rt, async move {
        let start = Instant::now();
        for i in 0..m {
            let id = ord[i % ord.len()];
            let h = p.lookup(id).expect("W7 lookup");
            let r = P::call(&h, 1).await;
            assert_eq!(r, Some(1 + state_of(id)), "W7 reply");
        }
        start.elapsed().as_secs_f64() * 1e6 / m as f64
    });
    out.emit("W7", w7, "µs/op");

    w10(out, &*peer, 3);

    // W8
    out.progress("W8 stop all");
    let p = peer.clone();
    let (t, failed) = drive(&rt, &ids, limit, move |id| {
        let p = p.clone();
        async move { p.stop(id).await }
    });
    out.emit("W8", cfg.n as f64 / t.as_secs_f64(), "stops/s");
    out.emit("W8left", peer.count() as f64, "entries");
    if failed > 0 {
        out.note(&format!("W8: {failed} stops found no worker"));
    }

    // W9 + W11
    churn(out, &rt, &peer, cfg.churn, cfg.pool, limit);
    race(out, &rt, &peer, limit);
}
