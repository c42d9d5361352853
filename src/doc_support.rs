//! Helpers for the documentation examples and tests; not part of the API.
//!
//! An example may import from here only in hidden lines, and only what its
//! rendered page shows: [`Pinger`] is shown by `doc_support/pinger.md`,
//! which the pages that use it include.

use crate::{Context, Worker};
use std::future::Future;
use std::time::{Duration, Instant};

/// A worker that answers `x` with `x + state` and adds a cast to its state:
/// the one `doc_support/pinger.md` shows.
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

/// A worker whose requests are the reminders it receives, each answered
/// with its message: the one `doc_support/alarm.md` shows.
pub struct Alarm;

impl Worker for Alarm {
    type Id = u64;
    type Args = ();
    type Request = crate::state::Reminded<String>;
    type Reply = String;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Alarm)
    }

    async fn handle_call(
        &mut self,
        reminded: crate::state::Reminded<String>,
        _: &mut Context<Self>,
    ) -> String {
        reminded.message
    }
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
        crate::primitives::timer::Sleep::new(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    /// The source files of the pages whose examples use [`Pinger`](super::Pinger).
    const PAGES: [(&str, &str); 8] = [
        ("registry/mod.rs", include_str!("registry/mod.rs")),
        ("worker/handle.rs", include_str!("worker/handle.rs")),
        ("worker/options.rs", include_str!("worker/options.rs")),
        ("worker/event.rs", include_str!("worker/event.rs")),
        ("registry/spec.rs", include_str!("registry/spec.rs")),
        ("executor/mod.rs", include_str!("executor/mod.rs")),
        ("worker/shared.rs", include_str!("worker/shared.rs")),
        ("worker/stats.rs", include_str!("worker/stats.rs")),
    ];

    #[test]
    fn every_page_whose_examples_use_alarm_shows_its_definition() {
        let text = include_str!("state/reminders.rs");
        assert!(text.contains("doc_support::Alarm"));
        assert!(text.contains("doc_support/alarm.md\")]"));
    }

    #[test]
    fn every_page_whose_examples_use_pinger_shows_its_definition() {
        for (file, text) in PAGES {
            let uses = text.contains("# use gen_registry::doc_support::");
            let shows = text.contains("doc_support/pinger.md\")]");
            assert!(
                !uses || shows,
                "{file}: examples use Pinger, the page never shows it"
            );
        }
    }
}
