//! What the systems on Bastion's executor share (gen_registry, Bastion
//! children groups, the bare-proc floor): measuring from inside a proc,
//! concurrent drivers, timeouts.

use crate::common::{CHUNK, slices};
use crate::drivers::Tasks;
use futures::future::{Either, select};
use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `f` in a proc spawned on Bastion's executor and waits for it from
/// this (non-executor) thread with `bastion::executor::run`.
pub fn inside<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    bastion::executor::run(bastion::executor::spawn(f)).expect("measuring proc panicked")
}

/// `f`, or `None` after `d` (Bastion's asks have no timeout of their own).
pub async fn timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    let f = std::pin::pin!(f);
    match select(f, futures_timer::Delay::new(d)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Applies `op` to every id: `DRIVERS` procs, each over its slice, `CHUNK`
/// ops at a time with `join_all`. Returns the wall time and how many ops
/// returned `false`. Panics after `limit`.
pub fn drive<F, Fut>(ids: &[u64], limit: Duration, op: F) -> (Duration, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = slices(ids)
        .into_iter()
        .map(|part| {
            let op = op.clone();
            bastion::executor::spawn(async move {
                let mut failed = 0u64;
                for chunk in part.chunks(CHUNK) {
                    let results = futures::future::join_all(chunk.iter().map(|&id| op(id))).await;
                    failed += results.iter().filter(|ok| !**ok).count() as u64;
                }
                failed
            })
        })
        .collect();
    let failed = bastion::executor::run(timeout(limit, futures::future::join_all(handles)))
        .expect("bulk phase timed out")
        .into_iter()
        .map(|r| r.expect("driver proc panicked"))
        .sum();
    (start.elapsed(), failed)
}

/// Bastion's executor as a [`Tasks`] runtime: each task a proc.
pub struct Procs;

impl Tasks for Procs {
    fn run_all<T, F, Fut>(&self, k: usize, limit: Duration, f: F) -> Option<Vec<Option<T>>>
    where
        T: Send + 'static,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let handles: Vec<_> = (0..k).map(|i| bastion::executor::spawn(f(i))).collect();
        bastion::executor::run(timeout(limit, futures::future::join_all(handles)))
    }
}
