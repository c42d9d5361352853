//! [`Event`]: what a registry reports to its observer (the counterpart of
//! GenRegistry's `:gen_module` spy), and [`trace`], an observer that turns
//! events into `tracing` events.

use crate::worker::{ExitReason, ShownId, Worker};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// Something that happened to a worker or to the registry.
///
/// Set an observer with [`Options::observe`](crate::Options::observe). Each
/// worker's events arrive in the order they happened, from the worker's own
/// process; events of different workers may interleave. Every `Started` is
/// followed, sooner or later, by exactly one `Stopped`.
///
#[doc = include_str!("../doc_support/pinger.md")]
///
/// The events of a start, a hit and a stop, as text:
///
/// ```
/// use gen_registry::{Event, Options};
/// # use gen_registry::doc_support::*;
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let options = Options::default().observe(move |event: &Event<'_, Pinger>| {
///     log.lock().unwrap().push(event.to_string());
/// });
/// # run(async {
/// let registry = gen_registry::GenRegistry::new(options).unwrap();
/// registry.lookup_or_start(1, 0).await.unwrap();
/// registry.lookup_or_start(1, 0).await.unwrap(); // a hit: no event
/// registry.stop(&1).await.unwrap();
/// assert_eq!(*seen.lock().unwrap(), [
///     "worker 1 started",
///     "worker 1 exited: stopped by the registry",
///     "worker 1 stopped: stopped by the registry",
/// ]);
/// # });
/// ```
#[non_exhaustive]
pub enum Event<'a, W: Worker> {
    /// The worker's first `init` succeeded; lookups find it from now on.
    Started {
        /// The worker's id.
        id: &'a W::Id,
    },
    /// An incarnation of the worker ended (after its `terminate`), or a
    /// restart's `init` failed. A restart or a `Stopped` follows.
    Exited {
        /// The worker's id.
        id: &'a W::Id,
        /// Why it ended.
        reason: &'a ExitReason,
    },
    /// The worker crashed and its restart policy lets it run again after
    /// `delay`; it keeps its place meanwhile.
    Restarting {
        /// The worker's id.
        id: &'a W::Id,
        /// The restart's number in a row (1 for the first since the worker
        /// was last healthy).
        attempt: u32,
        /// The back-off before `init` runs again.
        delay: Duration,
    },
    /// A restart's `init` succeeded: the new incarnation serves the mailbox.
    Restarted {
        /// The worker's id.
        id: &'a W::Id,
        /// The restart's number in a row.
        attempt: u32,
    },
    /// The restart policy is spent: the worker is removed. `Stopped` follows.
    GaveUp {
        /// The worker's id.
        id: &'a W::Id,
        /// The restarts counted against the policy.
        restarts: u32,
    },
    /// The worker is gone for good; its entry is removed right after.
    Stopped {
        /// The worker's id.
        id: &'a W::Id,
        /// Why its last incarnation ended.
        reason: &'a ExitReason,
    },
    /// The registry has shut down: no worker is left.
    RegistryStopped,
}

impl<W: Worker> fmt::Display for Event<'_, W> {
    /// One line, for logs. An id longer than 64 characters (in its `Debug`
    /// form) is cut, with its length named.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Event, ExitReason};
    /// let event: Event<'_, Pinger> = Event::GaveUp { id: &7, restarts: 3 };
    /// assert_eq!(event.to_string(), "worker 7 gave up after 3 restarts");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started { id } => write!(f, "worker {} started", ShownId(*id)),
            Event::Exited { id, reason } => {
                write!(f, "worker {} exited: {reason}", ShownId(*id))
            }
            Event::Restarting { id, attempt, delay } => write!(
                f,
                "worker {} restarts in {delay:?} (attempt {attempt})",
                ShownId(*id)
            ),
            Event::Restarted { id, attempt } => {
                write!(f, "worker {} restarted (attempt {attempt})", ShownId(*id))
            }
            Event::GaveUp { id, restarts } => write!(
                f,
                "worker {} gave up after {restarts} restarts",
                ShownId(*id)
            ),
            Event::Stopped { id, reason } => {
                write!(f, "worker {} stopped: {reason}", ShownId(*id))
            }
            Event::RegistryStopped => f.write_str("registry stopped"),
        }
    }
}

impl<W: Worker> fmt::Debug for Event<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An observer that emits every event as a `tracing` event (target
/// `gen_registry`): crashes, give-ups and restarts at `WARN`, the rest at
/// `DEBUG`. Pass it to [`Options::observe`](crate::Options::observe).
///
/// ```
/// use gen_registry::{Options, Worker};
///
/// /// Options that log every event of a registry of `W`.
/// fn traced<W: Worker>() -> Options<W> {
///     Options::default().observe(gen_registry::trace)
/// }
/// ```
pub fn trace<W: Worker>(event: &Event<'_, W>) {
    let worker = std::any::type_name::<W>();
    match event {
        Event::Exited { reason, .. } if reason.is_abnormal() => {
            tracing::warn!(target: "gen_registry", worker, "{event}")
        }
        Event::Restarting { .. } | Event::GaveUp { .. } => {
            tracing::warn!(target: "gen_registry", worker, "{event}")
        }
        _ => tracing::debug!(target: "gen_registry", worker, "{event}"),
    }
}

/// The observer a registry calls; absent unless one was set.
pub(crate) type Observer<W> = Arc<dyn Fn(&Event<'_, W>) + Send + Sync>;

/// Calls the observer, if any. A panicking observer loses that one event and
/// never harms the worker that reported it.
#[inline]
pub(crate) fn notify<W: Worker>(observer: Option<&Observer<W>>, event: Event<'_, W>) {
    if let Some(observer) = observer {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| observer(&event)));
    }
}
