//! What the integration tests share: the probe worker and its log
//! ([`probe`]), runners that bound a test by a deadline, waiting on a
//! condition, test sizes from the environment, a seeded random generator,
//! a temporary SQLite file, a test run as a child process, and a panic hook that keeps the tests'
//! deliberate panics quiet.
//!
//! The suite (tests/suite/main.rs) and each test binary of its own (soak,
//! footprint, bastion_stop) include it with `mod common;` and take what they
//! use; hence unused items, re-exports and macros are allowed.
#![allow(dead_code, unused_imports, unused_macros)]

mod child;
mod probe;
mod splitmix;
mod temp_db;

pub use child::child_test;
pub use probe::*;
pub use splitmix::Rng;
pub use temp_db::TempDb;

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::time::Duration;

/// A tokio runtime for the tests' workers: 2 worker threads, as many as the
/// machine CI runs on has cores, with its I/O and time drivers.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Every executor this build has, to run a test on each: Bastion's, and
/// (with the `tokio` feature) tokio's, on a runtime of its own that the
/// second field keeps alive.
pub fn every_executor() -> Vec<(gen_registry::Executor, Option<Box<dyn std::any::Any>>)> {
    #[allow(unused_mut)]
    let mut all: Vec<(gen_registry::Executor, Option<Box<dyn std::any::Any>>)> =
        vec![(gen_registry::Executor::Bastion, None)];
    #[cfg(feature = "tokio")]
    {
        let rt = tokio_runtime();
        all.push((
            gen_registry::Executor::Tokio(rt.handle().clone()),
            Some(Box::new(rt)),
        ));
    }
    all
}

/// Defines `registry()` and `registry_with(options)` in a test module whose
/// tests run on more than one executor (the suite's api, guarantees and
/// model): like the probe's own (see [`probe::registry_with`]), but on the
/// executor that `$executor()` returns, the parent module's — Bastion's at
/// the top of the suite, tokio's under `on_tokio`. They shadow the probe's,
/// which the module's `use crate::common::*` brings in.
macro_rules! registries_on {
    ($executor:path) => {
        /// A registry of probes on this module's executor.
        #[allow(dead_code)] // a module may use only `registry_with`
        fn registry() -> gen_registry::GenRegistry<Probe> {
            registry_with(gen_registry::Options::default())
        }

        /// A registry of probes with `options`, on this module's executor.
        fn registry_with(
            options: gen_registry::Options<Probe>,
        ) -> gen_registry::GenRegistry<Probe> {
            gen_registry::GenRegistry::new(options.executor($executor())).unwrap()
        }
    };
}
pub(crate) use registries_on;

/// Waits until `condition` holds, on the crate's own timer; panics after 10 s.
pub use gen_registry::doc_support::wait_until;

/// The size a test runs at: `default`, or the value of the variable `name`.
pub fn size_from_env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs `future` to completion on its own thread and returns its output;
/// panics, with the future's own panic message or with "did not finish"
/// (instead of hanging the test run), if it panicked or took longer than
/// `secs` seconds.
pub fn run<F>(secs: u64, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    run_caught(secs, future).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run`], but returns the panic message or the hang as an error.
pub fn run_caught<F>(secs: u64, future: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(AssertUnwindSafe(future).catch_unwind());
        let _ = tx.send(out.map_err(panic_text));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out,
        Err(_) => Err(format!("did not finish within {secs} s (a hang)")),
    }
}

/// Spawns `future` as a proc on Bastion's executor.
pub fn spawn<F>(future: F) -> impl Future<Output = F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = bastion::executor::spawn(future);
    async move { handle.await.expect("the spawned task panicked") }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

/// The texts of the panics the tests cause on purpose (the probe's init and
/// handlers, and the fault workers').
const DELIBERATE: [&str; 3] = ["init of", "handler of", "deliberate"];

/// Installs (once per test binary) a panic hook that stays silent for the
/// tests' deliberate panics and reports every other panic as usual, so that
/// thousands of injected faults do not bury a real failure.
pub fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !DELIBERATE.iter().any(|d| text.contains(d)) {
                default(info);
            }
        }));
    });
}
