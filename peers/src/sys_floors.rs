//! The floors: what the bare parts cost, with no registry semantics at all.
//!
//! - `floor_rwlock_fxhashmap`: a `parking_lot::RwLock<FxHashMap<u64, Arc<u64>>>`,
//!   lookup = read lock + get + `Arc` clone (W3, W4 only).
//! - `floor_bastion_proc`: one proc per id spawned with
//!   `bastion::executor::spawn`, an unbounded `futures` mpsc mailbox, a
//!   `futures` oneshot per reply; the handles are a plain `Vec` of senders
//!   (no table). W1, W2, W6 and W8 (stop = close the mailbox and await the
//!   proc's handle).

use crate::bastion_rt::{Procs, inside, timeout};
use crate::common::*;
use crate::drivers::drive;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use fxhash::FxHashMap;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn run_rwlock(cfg: &Config, out: &Out) {
    let order = shuffled(cfg.n, ORDER_SEED);
    out.emit("N", cfg.n as f64, "ids");
    let map: RwLock<FxHashMap<u64, Arc<u64>>> = RwLock::new(
        (0..cfg.n as u64)
            .map(|id| (id, Arc::new(state_of(id))))
            .collect(),
    );
    let lookup = |id: u64| map.read().get(&id).cloned();
    out.progress("W3 lookup");
    let w3 = lookup_ns_1t(&order, cfg.lookup_time, lookup);
    out.emit("W3", w3, "ns/op");
    out.progress("W4 lookup, 2 threads");
    let w4 = lookup_ops_2t(&order, cfg.lookup_time, lookup);
    out.emit("W4", w4 / 1e6, "Mops/s");
    out.emit("W4x", w4 / (1e9 / w3), "x");
}

type Mailbox = mpsc::UnboundedSender<(u64, oneshot::Sender<u64>)>;

static STARTED: AtomicU64 = AtomicU64::new(0);
static ENDED: AtomicU64 = AtomicU64::new(0);

struct EndGuard;

impl Drop for EndGuard {
    fn drop(&mut self) {
        ENDED.fetch_add(1, Ordering::Relaxed);
    }
}

type Slot = Option<(
    Mailbox,
    lightproc::recoverable_handle::RecoverableHandle<()>,
)>;

fn spawn_proc(
    state: u64,
) -> (
    Mailbox,
    lightproc::recoverable_handle::RecoverableHandle<()>,
) {
    let (tx, mut rx) = mpsc::unbounded::<(u64, oneshot::Sender<u64>)>();
    let handle = bastion::executor::spawn(async move {
        let _guard = EndGuard;
        STARTED.fetch_add(1, Ordering::Relaxed);
        while let Some((x, reply)) = rx.next().await {
            let _ = reply.send(x + state);
        }
    });
    (tx, handle)
}

async fn call(tx: &Mailbox, x: u64) -> Option<u64> {
    let (reply, answer) = oneshot::channel();
    tx.unbounded_send((x, reply)).ok()?;
    timeout(Duration::from_secs(5), answer).await?.ok()
}

pub fn run_proc(cfg: &Config, out: &Out) {
    let n = cfg.n;
    let ids: Vec<u64> = (0..n as u64).collect();
    let limit = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    out.emit("N", n as f64, "ids");
    // Index = id. Each slot has its own lock only so the drivers can fill
    // them in parallel; the floor itself is the proc + mailbox.
    let slots: Arc<Vec<Mutex<Slot>>> = Arc::new((0..n).map(|_| Mutex::new(None)).collect());

    out.progress("W1 start");
    let rss0 = rss_bytes();
    let start = Instant::now();
    let s = slots.clone();
    let (_, failed) = drive(&Procs, &ids, limit, move |id| {
        *s[id as usize].lock() = Some(spawn_proc(state_of(id)));
        async { true }
    });
    assert_eq!(failed, 0);
    assert!(
        wait_until(limit, || STARTED.load(Ordering::Relaxed) >= n as u64),
        "floor procs did not all start"
    );
    let t = start.elapsed();
    let rss1 = rss_bytes();
    out.emit("W1", n as f64 / t.as_secs_f64(), "starts/s");
    out.emit("W2", (rss1 as f64 - rss0 as f64) / n as f64, "B/worker");

    out.progress("W6 call round trip");
    let tx = slots[0].lock().as_ref().expect("proc 0").0.clone();
    let expect = state_of(0);
    let m = cfg.m;
    let samples = inside(async move {
        rtt_samples(m, |x| {
            let tx = tx.clone();
            async move { call(&tx, x).await == Some(x + expect) }
        })
        .await
    });
    emit_rtt(out, "W6", &samples);

    out.progress("W8 stop all");
    let s = slots.clone();
    let (t, failed) = drive(&Procs, &ids, limit, move |id| {
        let slot = s[id as usize].lock().take();
        async move {
            match slot {
                Some((tx, handle)) => {
                    drop(tx); // closing the mailbox ends the proc
                    matches!(
                        timeout(Duration::from_secs(5), handle).await,
                        Some(Some(()))
                    )
                }
                None => false,
            }
        }
    });
    out.emit("W8", n as f64 / t.as_secs_f64(), "stops/s");
    let alive = STARTED.load(Ordering::Relaxed) - ENDED.load(Ordering::Relaxed);
    out.emit("W8left", alive as f64, "procs alive");
    if failed > 0 {
        out.note(&format!("W8: {failed} procs did not end in time"));
    }
}
