//! The registry's metric handles (through the `metrics` crate's facade,
//! with the cargo feature `metrics`; handles that do nothing without it),
//! the sampling of its histograms, and the `tracing` spans around a
//! worker's callbacks. What each metric means is in the crate's doc
//! (src/lib.rs) and the guide's "Seeing inside".

use crate::worker::context::Context;
use crate::worker::event::Event;
use crate::worker::{ExitReason, ShownId, Worker};
use futures::future::Either;
#[cfg(feature = "metrics")]
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
#[cfg(not(feature = "metrics"))]
use off::{Counter, Gauge, Histogram};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tracing::Span;
use tracing::instrument::{Instrument, Instrumented};

/// One in this many calls, inits and queued messages is timed for the
/// histograms: two clock reads per call, some tens of nanoseconds, would be
/// a visible part of a round trip of about half a microsecond. Counters and
/// gauges count every event.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const SAMPLE_EVERY: u32 = 64;

/// The histograms that are sampled, each counting its own turns.
#[derive(Clone, Copy)]
pub(crate) enum Sampled {
    Init = 0,
    Call = 1,
    Mailbox = 2,
}

#[cfg(feature = "metrics")]
thread_local! {
    static COUNTDOWNS: [std::cell::Cell<u32>; 3] =
        const { [const { std::cell::Cell::new(SAMPLE_EVERY) }; 3] };
}

/// Whether this event is the one in [`SAMPLE_EVERY`] of its kind that is
/// timed (counted per thread: no shared write).
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn sampled(kind: Sampled) -> bool {
    COUNTDOWNS.with(|c| {
        let c = &c[kind as usize];
        let left = c.get() - 1;
        if left == 0 {
            c.set(SAMPLE_EVERY);
            true
        } else {
            c.set(left);
            false
        }
    })
}

/// Without the `metrics` feature nothing is timed: no clock is read.
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn sampled(_: Sampled) -> bool {
    false
}

/// Without the `metrics` feature: handles that do nothing, in place of the
/// facade's, so that every count and record compiles away.
#[cfg(not(feature = "metrics"))]
mod off {
    #[derive(Clone)]
    pub(crate) struct Counter;

    impl Counter {
        #[inline(always)]
        pub(crate) fn increment(&self, _: u64) {}
    }

    pub(crate) struct Gauge;

    impl Gauge {
        #[inline(always)]
        pub(crate) fn increment(&self, _: f64) {}

        #[inline(always)]
        pub(crate) fn decrement(&self, _: f64) {}
    }

    #[derive(Clone)]
    pub(crate) struct Histogram;

    impl Histogram {
        #[inline(always)]
        pub(crate) fn record(&self, _: f64) {}
    }
}

/// The stop reasons, as `gen_registry_stops_total`'s `reason` label.
const REASONS: [&str; 9] = [
    "normal",
    "stopped",
    "shutdown",
    "panicked",
    "init_failed",
    "killed",
    "idle",
    "evicted",
    "moved",
];

fn reason_index(reason: &ExitReason) -> usize {
    match reason {
        ExitReason::Normal => 0,
        ExitReason::Stopped => 1,
        ExitReason::Shutdown => 2,
        ExitReason::Panicked(_) => 3,
        ExitReason::InitFailed(_) => 4,
        ExitReason::Killed => 5,
        ExitReason::Idle => 6,
        ExitReason::Evicted => 7,
        ExitReason::Moved => 8,
    }
}

/// One registry's metric handles, resolved once when it is created.
pub(crate) struct Metrics {
    starts: Counter,
    init_failures: Counter,
    restarts: Counter,
    give_ups: Counter,
    stops: [Counter; REASONS.len()],
    pub(crate) capacity_refusals: Counter,
    pub(crate) mailbox_full: Counter,
    pub(crate) calls: Counter,
    pub(crate) call_timeouts: Counter,
    pub(crate) calls_to_ended: Counter,
    workers: Gauge,
    in_back_off: Gauge,
    /// Workers in back-off now, for [`Stats::in_back_off`](crate::Stats::in_back_off).
    pub(crate) backing_off: AtomicUsize,
    init_seconds: Histogram,
    pub(crate) call_seconds: Histogram,
    pub(crate) mailbox_wait_seconds: Histogram,
}

impl Metrics {
    /// The handles of the registry named `name`, from the recorder installed now.
    #[cfg(feature = "metrics")]
    pub(crate) fn new(name: &str) -> Metrics {
        let name = name.to_owned();
        let stops = REASONS.map(|reason| {
            counter!("gen_registry_stops_total", "registry" => name.clone(), "reason" => reason)
        });
        Metrics {
            starts: counter!("gen_registry_starts_total", "registry" => name.clone()),
            init_failures: counter!("gen_registry_init_failures_total", "registry" => name.clone()),
            restarts: counter!("gen_registry_restarts_total", "registry" => name.clone()),
            give_ups: counter!("gen_registry_give_ups_total", "registry" => name.clone()),
            stops,
            capacity_refusals: counter!("gen_registry_capacity_refusals_total", "registry" => name.clone()),
            mailbox_full: counter!("gen_registry_mailbox_full_total", "registry" => name.clone()),
            calls: counter!("gen_registry_calls_total", "registry" => name.clone()),
            call_timeouts: counter!("gen_registry_call_timeouts_total", "registry" => name.clone()),
            calls_to_ended: counter!("gen_registry_calls_to_ended_total", "registry" => name.clone()),
            workers: gauge!("gen_registry_workers", "registry" => name.clone()),
            in_back_off: gauge!("gen_registry_workers_in_back_off", "registry" => name.clone()),
            backing_off: AtomicUsize::new(0),
            init_seconds: histogram!("gen_registry_init_seconds", "registry" => name.clone()),
            call_seconds: histogram!("gen_registry_call_seconds", "registry" => name.clone()),
            mailbox_wait_seconds: histogram!("gen_registry_mailbox_wait_seconds", "registry" => name),
        }
    }

    /// Handles that do nothing: the crate is built without `metrics`.
    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(_: &str) -> Metrics {
        Metrics {
            starts: Counter,
            init_failures: Counter,
            restarts: Counter,
            give_ups: Counter,
            stops: [const { Counter }; REASONS.len()],
            capacity_refusals: Counter,
            mailbox_full: Counter,
            calls: Counter,
            call_timeouts: Counter,
            calls_to_ended: Counter,
            workers: Gauge,
            in_back_off: Gauge,
            backing_off: AtomicUsize::new(0),
            init_seconds: Histogram,
            call_seconds: Histogram,
            mailbox_wait_seconds: Histogram,
        }
    }

    /// Counts what a worker's event says: a start, a restart, a give-up,
    /// a stop by its reason.
    pub(crate) fn count<W: Worker>(&self, event: &Event<'_, W>) {
        match event {
            Event::Started { .. } => {
                self.starts.increment(1);
                self.workers.increment(1.0);
            }
            Event::Restarting { .. } => self.restarts.increment(1),
            Event::GaveUp { .. } => self.give_ups.increment(1),
            Event::Stopped { reason, .. } => {
                self.stops[reason_index(reason)].increment(1);
                self.workers.decrement(1.0);
            }
            _ => {}
        }
    }

    /// An `init` ended: its duration if it was timed, and whether it failed.
    pub(crate) fn init_ended(&self, took: Option<Duration>, failed: bool) {
        if let Some(took) = took {
            self.init_seconds.record(took.as_secs_f64());
        }
        if failed {
            self.init_failures.increment(1);
        }
    }

    /// Counts a worker in the back-off gauge until the returned guard drops
    /// (when the back-off ends, or the worker's future is dropped in it).
    pub(crate) fn back_off(&self) -> InBackOff<'_> {
        self.in_back_off.increment(1.0);
        self.backing_off.fetch_add(1, Ordering::Relaxed);
        InBackOff(self)
    }
}

/// A worker counted as in back-off, in the gauge and in [`Stats`](crate::Stats).
pub(crate) struct InBackOff<'a>(&'a Metrics);

impl Drop for InBackOff<'_> {
    fn drop(&mut self) {
        self.0.in_back_off.decrement(1.0);
        self.0.backing_off.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The time, if this event is one of the sampled ones of its kind.
#[inline]
pub(crate) fn start_clock(kind: Sampled) -> Option<Instant> {
    sampled(kind).then(Instant::now)
}

/// The three callbacks a span is opened around.
#[derive(Clone, Copy)]
pub(crate) enum Callback {
    Init,
    Call,
    Terminate,
}

/// A `DEBUG` span (target `gen_registry`) named after `callback`, with
/// the worker's id (cut as messages for people show it), its registry's
/// name and its incarnation (0 for the first), if a subscriber wants it;
/// otherwise a disabled span, and the check was the callsite's cached
/// interest: a load and a branch, no field formatted.
pub(crate) fn span_for<W: Worker>(callback: Callback, ctx: &Context<W>) -> Span {
    let id = ShownId(ctx.handle.id());
    let registry = ctx.shared.options.get_name();
    let incarnation = ctx.restarts;
    match callback {
        Callback::Init => {
            tracing::debug_span!(target: "gen_registry", "init", id = %id, registry, incarnation)
        }
        Callback::Call => {
            tracing::debug_span!(target: "gen_registry", "call", id = %id, registry, incarnation)
        }
        Callback::Terminate => {
            tracing::debug_span!(target: "gen_registry", "terminate", id = %id, registry, incarnation)
        }
    }
}

/// `future` inside `span`, or as it is when the span is disabled. A
/// wanted span boxes the future, so that a worker's own future does not
/// grow by a span, which every idle worker would pay.
pub(crate) fn in_span<F: Future>(future: F, span: Span) -> Either<F, Pin<Box<Instrumented<F>>>> {
    if span.is_disabled() {
        Either::Left(future)
    } else {
        Either::Right(Box::pin(future.instrument(span)))
    }
}
