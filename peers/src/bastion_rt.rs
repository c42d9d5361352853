//! What the systems on Bastion's executor share (gen_registry, Bastion
//! children groups, the bare-proc floor): measuring from inside a proc,
//! running tasks as procs, timeouts.

use crate::drivers::Tasks;
use futures::future::{Either, select};
use std::future::Future;
use std::time::Duration;

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

    fn inside<T, Fut>(&self, f: Fut) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        inside(f)
    }
}
