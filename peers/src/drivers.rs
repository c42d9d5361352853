//! The drivers, one of each for every system: the bulk driver of W1 and W8,
//! the W9 churn driver and the W11 race driver. What differs is the runtime
//! the tasks run on ([`Tasks`]: Bastion's executor or a tokio runtime) and
//! the system's own operations ([`Registry`], or the closure given to
//! [`drive`]).

use crate::common::{
    CHUNK, ChurnStats, DRIVERS, Out, RACE_ID, RACERS, Rng, churn_plan, emit_churn, rss_bytes,
    state_of,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A runtime that runs tasks concurrently.
pub trait Tasks {
    /// Runs `f(0)`, …, `f(k - 1)` as `k` concurrent tasks and waits (from
    /// this plain thread) until all of them finished: each task's output,
    /// `None` for a task that panicked; `None` in all after `limit`.
    fn run_all<T, F, Fut>(&self, k: usize, limit: Duration, f: F) -> Option<Vec<Option<T>>>
    where
        T: Send + 'static,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = T> + Send + 'static;

    /// Runs `f` as one task and waits for its output from this plain
    /// thread: the measurements taken from inside the runtime (W5–W7).
    /// Panics if the task panicked.
    fn inside<T, Fut>(&self, f: Fut) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static;
}

/// What W9 and W11 ask of a system. A clone is one more handle on the same
/// registry (each task gets its own).
pub trait Registry: Clone + Send + Sync + 'static {
    /// What a start returns and a call goes through.
    type Handle: Send;

    /// Starts a fresh worker for `id` with the state `state_of(id)`;
    /// `None` when the start failed or `id` was taken.
    fn start(&self, id: u64) -> impl Future<Output = Option<Self::Handle>> + Send;
    /// One round trip: `x` answered with `x + state`.
    fn call(&self, h: &Self::Handle, x: u64) -> impl Future<Output = Option<u64>> + Send;
    /// Stops the worker of `id` and waits until it ended; `false` on failure.
    fn stop(&self, id: u64) -> impl Future<Output = bool> + Send;
    /// The handle of `id`'s worker, started (state `state_of(id)`) if there
    /// is none; `None` on failure.
    fn lookup_or_start(&self, id: u64) -> impl Future<Output = Option<Self::Handle>> + Send;
    /// How many inits have run so far.
    fn inits(&self) -> u64;
    /// Waits (on a plain thread) until the inits that starts set off have
    /// run, `before` being `inits()` before those starts. Nothing to wait for
    /// when a start returns once its init ran.
    fn await_inits(&self, _before: u64) {}
}

/// Applies `op` to every id: `DRIVERS` tasks, each over its own contiguous
/// slice, `CHUNK` ops at a time with `join_all`. Returns the wall time and
/// how many ops returned `false`. Panics after `limit`, or if a task
/// panicked.
pub fn drive<F, Fut>(tasks: &impl Tasks, ids: &[u64], limit: Duration, op: F) -> (Duration, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let ids: Arc<[u64]> = ids.into();
    let per = ids.len().div_ceil(DRIVERS).max(1);
    let start = Instant::now();
    let failed = tasks
        .run_all(DRIVERS, limit, |i| {
            let (ids, op) = (ids.clone(), op.clone());
            async move {
                let part = &ids[(i * per).min(ids.len())..((i + 1) * per).min(ids.len())];
                let mut failed = 0u64;
                for chunk in part.chunks(CHUNK) {
                    let results = futures::future::join_all(chunk.iter().map(|&id| op(id))).await;
                    failed += results.iter().filter(|ok| !**ok).count() as u64;
                }
                failed
            }
        })
        .expect("bulk phase timed out")
        .into_iter()
        .map(|r| r.expect("driver panicked"))
        .sum();
    (start.elapsed(), failed)
}

/// W9: `cycles` start → call → stop cycles on ids drawn from a pool of
/// `pool`, `CHURN_DRIVERS` tasks each on its own half of the pool, in two
/// phases with the RSS mark in between; emits W9, W9rss, W9leak, W9cycles
/// and errors. Panics after `limit` per phase.
pub fn churn<R: Registry>(
    out: &Out,
    tasks: &impl Tasks,
    reg: &R,
    cycles: usize,
    pool: usize,
    limit: Duration,
) {
    out.progress("W9 churn");
    let (halves, phase1, phase2) = churn_plan(cycles, pool);
    let phase = |n: usize, seed: u64| -> (ChurnStats, Duration) {
        let start = Instant::now();
        let stats = tasks
            .run_all(halves.len(), limit, |d| {
                let reg = reg.clone();
                let half = halves[d].clone();
                async move {
                    let mut rng = Rng::new(seed + d as u64);
                    let mut st = ChurnStats::default();
                    for _ in 0..n {
                        let id = half[rng.below(half.len() as u64) as usize];
                        let ok = match reg.start(id).await {
                            Some(h) => reg.call(&h, 3).await == Some(3 + state_of(id)),
                            None => false,
                        };
                        let stopped = reg.stop(id).await;
                        st.cycles += 1;
                        if !ok || !stopped {
                            st.errors += 1;
                        }
                    }
                    st
                }
            })
            .expect("churn timed out")
            .into_iter()
            .map(|s| s.expect("churn task panicked"))
            .fold(ChurnStats::default(), ChurnStats::add);
        (stats, start.elapsed())
    };
    let (s1, t1) = phase(phase1, 91);
    let rss_mark = rss_bytes();
    let (s2, t2) = phase(phase2, 191);
    let rss_end = rss_bytes();
    let all = s1.add(s2);
    emit_churn(out, all.cycles, t1 + t2, rss_mark, rss_end, s2.cycles);
    out.emit("W9cycles", all.cycles as f64, "cycles");
    out.emit("errors", all.errors as f64, "errors");
}

/// W11: `RACERS` tasks all lookup_or_start `RACE_ID` at once; notes the
/// racers left without a handle and emits the inits that ran. Panics after
/// `limit`.
pub fn race<R: Registry>(out: &Out, tasks: &impl Tasks, reg: &R, limit: Duration) {
    out.progress("W11 race");
    let before = reg.inits();
    let got = tasks
        .run_all(RACERS, limit, |_| {
            let reg = reg.clone();
            async move { reg.lookup_or_start(RACE_ID).await.is_some() }
        })
        .expect("W11 timed out")
        .into_iter()
        .filter(|r| *r == Some(true))
        .count();
    if got != RACERS {
        out.note(&format!("W11: only {got} of {RACERS} racers got a handle"));
    }
    reg.await_inits(before);
    out.emit("W11", (reg.inits() - before) as f64, "inits");
}
