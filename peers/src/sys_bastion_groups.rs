//! The obvious registry on plain Bastion 0.4.5: each id a children group
//! (one element, no dispatcher) under one supervisor, the table a
//! `parking_lot::RwLock<FxHashMap<u64, Entry>>` whose lookup clones the
//! entry's `ChildRef` (the handle). The entry also keeps the group's
//! `ChildrenRef` (stopping the group needs it) and a oneshot fired by a drop
//! guard owned by the exec's future, the one reliable end-of-child signal
//! (bastion.md). Asks are `ask_anonymously` wrapped in a 5 s timeout.
//!
//! Starts are check-then-insert under the write lock, so a race of one id
//! starts one group (a lookup under the read lock and an insert after the
//! spawn would start all 64 racers of W11).
//!
//! Bastion's supervisor keeps every stopped group forever (bastion.md), so
//! W9 runs a tenth of the churn cycles here and says so.

use crate::bastion_rt::{Procs, inside, timeout};
use crate::common::*;
use crate::drivers::{Registry, churn, drive, race};
use bastion::Bastion;
use bastion::prelude::{BastionContext, ChildRef, ChildrenRef, MessageHandler, SupervisorRef};
use futures::channel::oneshot;
use fxhash::FxHashMap;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static INITS: AtomicU64 = AtomicU64::new(0);
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

struct Entry {
    child: ChildRef,
    group: ChildrenRef,
    ended: Option<oneshot::Receiver<()>>,
}

/// Fires the group's end signal when the exec's future is dropped or returns.
struct EndGuard(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Clone)]
struct Groups {
    sup: SupervisorRef,
    table: Arc<RwLock<FxHashMap<u64, Entry>>>,
}

impl Groups {
    fn lookup(&self, id: u64) -> Option<ChildRef> {
        self.table.read().get(&id).map(|e| e.child.clone())
    }

    /// Starts a group for `id` unless one is registered; `(handle, fresh)`.
    fn lookup_or_start(&self, id: u64) -> Option<(ChildRef, bool)> {
        if let Some(h) = self.lookup(id) {
            return Some((h, false));
        }
        let mut table = self.table.write();
        if let Some(e) = table.get(&id) {
            return Some((e.child.clone(), false));
        }
        let state = state_of(id);
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let group = self
            .sup
            .children(move |c| {
                c.with_exec(move |ctx: BastionContext| {
                    let guard = EndGuard(tx.clone());
                    async move {
                        let _guard = guard;
                        INITS.fetch_add(1, Ordering::Relaxed);
                        loop {
                            let msg = ctx.recv().await?;
                            MessageHandler::new(msg)
                                .on_question(|x: u64, sender| {
                                    let _ = sender.reply(x + state);
                                })
                                .on_fallback(|_, _| ());
                        }
                    }
                })
            })
            .ok()?;
        let child = group.elems().first()?.clone();
        table.insert(
            id,
            Entry {
                child: child.clone(),
                group,
                ended: Some(rx),
            },
        );
        Some((child, true))
    }

    async fn call(h: &ChildRef, x: u64) -> Option<u64> {
        let answer = h.ask_anonymously(x).ok()?;
        let reply = timeout(ASK_TIMEOUT, answer).await?.ok()?;
        MessageHandler::new(reply)
            .on_tell(|v: u64, _| Some(v))
            .on_fallback(|_, _| None)
    }

    /// Removes `id`, stops its group and waits until its exec ended.
    async fn stop(&self, id: u64) -> bool {
        let Some(mut entry) = self.table.write().remove(&id) else {
            return false;
        };
        if entry.group.stop().is_err() {
            return false;
        }
        match entry.ended.take() {
            Some(rx) => matches!(timeout(ASK_TIMEOUT, rx).await, Some(Ok(()))),
            None => false,
        }
    }
}

/// What W9 and W11 ask of a system: a start is the table's check-then-start
/// (a fresh group or a failure), a lookup_or_start the same taking an
/// existing group; execs count their inits once they run.
impl Registry for Groups {
    type Handle = ChildRef;

    async fn start(&self, id: u64) -> Option<ChildRef> {
        match Groups::lookup_or_start(self, id) {
            Some((h, true)) => Some(h),
            _ => None,
        }
    }

    async fn call(&self, h: &ChildRef, x: u64) -> Option<u64> {
        Groups::call(h, x).await
    }

    async fn stop(&self, id: u64) -> bool {
        Groups::stop(self, id).await
    }

    async fn lookup_or_start(&self, id: u64) -> Option<ChildRef> {
        Groups::lookup_or_start(self, id).map(|(h, _)| h)
    }

    fn inits(&self) -> u64 {
        INITS.load(Ordering::Relaxed)
    }

    /// A start returns before the group's exec ran: let it run.
    fn await_inits(&self, before: u64) {
        wait_until(Duration::from_secs(2), || {
            INITS.load(Ordering::Relaxed) > before
        });
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(cfg: &Config, out: &Out) {
    Bastion::init();
    Bastion::start();
    let sup = Bastion::supervisor(|sp| sp).expect("Bastion supervisor");
    let g = Groups {
        sup,
        table: Arc::new(RwLock::new(FxHashMap::default())),
    };
    let order = shuffled(cfg.n, ORDER_SEED);
    let ids: Vec<u64> = (0..cfg.n as u64).collect();
    let limit = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    out.emit("N", cfg.n as f64, "ids");

    // W1 + W2: spawning a group is synchronous and serialized (the table's
    // write lock, then the supervisor), so it runs on one plain thread: the
    // fastest way measured (2 driver procs: ~38k/s — a contended lock parks
    // an executor thread —, 2 threads: ~51k/s, 1 thread: ~71k/s at N = 20k).
    // "Running" = the exec has started.
    out.progress("W1 start");
    let rss0 = rss_bytes();
    let start = Instant::now();
    for &id in &ids {
        assert!(
            matches!(g.lookup_or_start(id), Some((_, true))),
            "bastion groups W1: start of {id} failed"
        );
    }
    assert!(
        wait_until(limit, || INITS.load(Ordering::Relaxed) >= cfg.n as u64),
        "bastion groups W1: execs did not all start"
    );
    let t = start.elapsed();
    let rss1 = rss_bytes();
    out.emit("W1", cfg.n as f64 / t.as_secs_f64(), "starts/s");
    out.emit("W2", (rss1 as f64 - rss0 as f64) / cfg.n as f64, "B/worker");

    // W3 + W4
    out.progress("W3 lookup");
    let w3 = lookup_ns_1t(&order, cfg.lookup_time, |id| g.lookup(id));
    out.emit("W3", w3, "ns/op");
    out.progress("W4 lookup, 2 threads");
    let w4 = lookup_ops_2t(&order, cfg.lookup_time, |id| g.lookup(id));
    out.emit("W4", w4 / 1e6, "Mops/s");
    out.emit("W4x", w4 / (1e9 / w3), "x");
    // W5: Bastion has no lookup_or_start; the table's check-then-start is ours.
    out.absent("W5", "ns/op");

    // W6
    out.progress("W6 call round trip");
    let h = g.lookup(order[0]).expect("W6 worker");
    let expect = state_of(order[0]);
    let m = cfg.m;
    let samples = inside(async move {
        rtt_samples(m, |x| {
            let h = h.clone();
            async move { Groups::call(&h, x).await == Some(x + expect) }
        })
        .await
    });
    emit_rtt(out, "W6", &samples);

    // W7
    out.progress("W7 lookup + call, spread");
    let gg = g.clone();
    let ord = order.clone();
    let w7 = inside(async move {
        let start = Instant::now();
        for i in 0..m {
            let id = ord[i % ord.len()];
            let h = gg.lookup(id).expect("W7 lookup");
            assert_eq!(
                Groups::call(&h, 1).await,
                Some(1 + state_of(id)),
                "W7 reply"
            );
        }
        start.elapsed().as_secs_f64() * 1e6 / m as f64
    });
    out.emit("W7", w7, "µs/op");

    // W10
    out.progress("W10 count / reduce / to_list");
    out.emit(
        "W10count",
        ns_per_call(1_000, Duration::from_millis(100), || g.table.read().len()),
        "ns",
    );
    out.emit(
        "W10reduce",
        ms_median(3, || {
            g.table
                .read()
                .keys()
                .fold(0u64, |a, id| a.wrapping_add(*id))
        }),
        "ms",
    );
    out.emit(
        "W10list",
        ms_median(3, || {
            g.table
                .read()
                .iter()
                .map(|(id, e)| (*id, e.child.clone()))
                .collect::<Vec<_>>()
        }),
        "ms",
    );

    // W8
    out.progress("W8 stop all");
    let gg = g.clone();
    let (t, failed) = drive(&Procs, &ids, limit, move |id| {
        let gg = gg.clone();
        async move { gg.stop(id).await }
    });
    out.emit("W8", cfg.n as f64 / t.as_secs_f64(), "stops/s");
    out.emit("W8left", g.table.read().len() as f64, "entries");
    if failed > 0 {
        out.note(&format!("W8: {failed} stops failed or timed out"));
    }

    // W9, a tenth of the cycles: every cycle leaves a stopped group behind.
    let cycles = cfg.churn / 10;
    out.note(&format!(
        "W9 ran {cycles} cycles, not {}: Bastion's supervisor retains every stopped group",
        cfg.churn
    ));
    churn(out, &Procs, &g, cycles, cfg.pool, limit);

    // W11
    race(out, &Procs, &g, limit);
}
