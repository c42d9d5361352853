//! Helpers for the documentation examples and tests; not part of the API.

use crate::{Context, GenRegistry, Options, Worker};
use std::future::Future;
use std::time::{Duration, Instant};

/// A worker that answers `x` with `x + state` and adds a cast to its state.
pub struct Pinger(u64);

impl Worker for Pinger {
    type Id = u64;
    type Args = u64;
    type Request = u64;
    type Reply = u64;
    type Message = u64;
    type Error = std::convert::Infallible;

    async fn init(_: &u64, state: u64, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Pinger(state))
    }

    async fn handle_call(&mut self, x: u64, _: &mut Context<Self>) -> u64 {
        x + self.0
    }

    async fn handle_cast(&mut self, x: u64, _: &mut Context<Self>) {
        self.0 += x;
    }
}

/// A fresh registry of [`Pinger`]s with default options.
pub fn registry() -> GenRegistry<Pinger> {
    GenRegistry::new(Options::default()).expect("default options are valid")
}

/// Runs a future to completion on the current thread.
pub fn run<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Waits until `condition` holds, polling every millisecond; panics after 10 s.
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        crate::timer::Sleep::new(Duration::from_millis(1)).await;
    }
}
