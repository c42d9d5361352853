//! # gen_registry
//!
//! One worker per natural id — a user id, a session id, a phone number —
//! started lazily on first use, found again by that id, supervised, and cleaned
//! up when it ends: Elixir's [GenRegistry](https://hex.pm/packages/gen_registry)
//! for the [Bastion](https://docs.rs/bastion) runtime.
//!
//! - A [`Worker`] is a type with an async `init` and typed request/reply and
//!   fire-and-forget handlers (a GenServer's counterpart).
//! - A [`GenRegistry`] maps each id to one running worker. Lookups are table
//!   reads; a miss starts the worker in its own lightweight process on
//!   Bastion's executor, once, however many callers race for it.
//! - A [`WorkerRef`] is the handle (the pid): cheap to clone, typed `call`
//!   with a timeout, `cast`. Once a worker has ended, no lookup returns it and
//!   every call on an old handle fails at once.
//!
//! ```
//! use gen_registry::{Context, GenRegistry, Options, Worker};
//!
//! /// Per-phone-number blacklist.
//! struct Blacklist {
//!     blocked: Vec<String>,
//! }
//!
//! enum Request {
//!     Block(String),
//!     Allows(String),
//! }
//!
//! impl Worker for Blacklist {
//!     type Id = String;
//!     type Args = ();
//!     type Request = Request;
//!     type Reply = bool;
//!     type Message = ();
//!     type Error = std::convert::Infallible;
//!
//!     async fn init(_number: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
//!         Ok(Blacklist { blocked: Vec::new() })
//!     }
//!
//!     async fn handle_call(&mut self, request: Request, _: &mut Context<Self>) -> bool {
//!         match request {
//!             Request::Block(sender) => {
//!                 self.blocked.push(sender);
//!                 true
//!             }
//!             Request::Allows(sender) => !self.blocked.contains(&sender),
//!         }
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let registry = GenRegistry::<Blacklist>::new(Options::default()).unwrap();
//! let alice = registry.lookup_or_start("+15550100".into(), ()).await.unwrap();
//! alice.call(Request::Block("+15550199".into())).await.unwrap();
//!
//! // Anywhere else, later: the same worker, found by its id.
//! let again = registry.lookup("+15550100").unwrap();
//! assert!(!again.call(Request::Allows("+15550199".into())).await.unwrap());
//! registry.shutdown().await;
//! # });
//! ```
//!
//! The registry's async methods can be awaited from any executor (Bastion's,
//! `futures::executor::block_on`, a Bastion child's exec); they never block a
//! thread.
//!
//! # Seeing inside
//!
//! What a registry reports to operators: metrics through the `metrics`
//! crate's facade, `tracing` spans around each worker's callbacks, and a
//! health snapshot ([`GenRegistry::stats`]).
//!
//! The metrics need the cargo feature `metrics` (`features = ["metrics"]`):
//! off by default, because counting and sampling cost the fastest paths a
//! visible share (a start takes about a microsecond; BENCHMARKS.md, "What
//! metrics cost", has the figures). Without it the registry counts nothing
//! and reads no clock for them; the spans and the snapshot are there either
//! way.
//!
//! The crate installs no exporter: the application installs one (a
//! Prometheus exporter, a StatsD one…) before it creates its registries,
//! and every registry reports to it. Each metric carries the label
//! `registry`, the registry's [name](crate::Options::name). The metrics and
//! what a bad value says are listed in the guide's "Seeing inside" chapter,
//! with PromQL for the common alerts;
//! in short:
//!
//! | metric | kind | counts |
//! |---|---|---|
//! | `gen_registry_starts_total` | counter | workers started (their first `init` succeeded) |
//! | `gen_registry_init_failures_total` | counter | `init`s that failed, panicked or timed out (starts and restarts) |
//! | `gen_registry_restarts_total` | counter | restarts scheduled after a crash |
//! | `gen_registry_give_ups_total` | counter | workers whose restart policy was spent |
//! | `gen_registry_stops_total` | counter | workers gone for good, by `reason` (`normal`, `stopped`, `shutdown`, `panicked`, `init_failed`, `killed`, `idle`, `evicted`) |
//! | `gen_registry_capacity_refusals_total` | counter | starts refused at [`max_workers`](crate::Options::max_workers) |
//! | `gen_registry_mailbox_full_total` | counter | messages refused by a full mailbox |
//! | `gen_registry_calls_total` | counter | calls queued to a worker |
//! | `gen_registry_call_timeouts_total` | counter | calls that got no reply within their timeout |
//! | `gen_registry_calls_to_ended_total` | counter | messages refused because their worker was stopping |
//! | `gen_registry_workers` | gauge | live workers (started, not yet stopped) |
//! | `gen_registry_workers_in_back_off` | gauge | crashed workers waiting out a restart back-off |
//! | `gen_registry_init_seconds` | histogram | duration of `init`, one in 64 |
//! | `gen_registry_call_seconds` | histogram | a call's round trip, one in 64 |
//! | `gen_registry_mailbox_wait_seconds` | histogram | time a message waited in its mailbox, one in 64 |
//!
//! Handles are resolved once, when the registry is created; a recorder
//! installed later does not see that registry. Without a recorder, each
//! count is one branch, and the histograms' sampling one thread-local
//! decrement.
//!
//! Turn the spans on with a `tracing` subscriber that enables target
//! `gen_registry` at `DEBUG`; `examples/otel_spans` exports them
//! with OpenTelemetry, and `examples/http_service` serves the metrics to
//! Prometheus.

#![deny(missing_docs)]

// The modules in layers, one folder each; a module imports only from its
// own layer or those below it (tests/layering.rs checks this).
//
// The facade: the registry and its Bastion embedding.
mod registry;
// Persisted state, beside the facade: workers keep a `Stored` of their own.
pub mod state;
// The worker machinery: the trait, its context and handle, options, errors
// and events, the cell, the registry's shared state, and the worker's loop.
mod worker;
// Primitives that know nothing of workers.
mod primitives;
// The executor seam: the one module that knows who polls a worker.
mod executor;

#[doc(hidden)]
pub mod doc_support;

/// The guide's chapters, compiled and run as doctests so the guide cannot rot.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../guide/src/why.md")]
    struct Why;
    #[doc = include_str!("../guide/src/first-registry.md")]
    struct FirstRegistry;
    #[doc = include_str!("../guide/src/restarts.md")]
    struct Restarts;
    #[doc = include_str!("../guide/src/many-ids.md")]
    struct ManyIds;
    #[doc = include_str!("../guide/src/bastion.md")]
    struct Bastion;
    #[doc = include_str!("../guide/src/io.md")]
    struct Io;
    #[doc = include_str!("../guide/src/events.md")]
    struct Events;
    #[doc = include_str!("../guide/src/seeing-inside.md")]
    struct SeeingInside;
    #[doc = include_str!("../guide/src/worker.md")]
    struct Writing;
    #[doc = include_str!("../guide/src/api.md")]
    struct Api;
    #[doc = include_str!("../guide/src/shutdown.md")]
    struct Shutdown;
    #[doc = include_str!("../guide/src/performance.md")]
    struct Performance;
    #[doc = include_str!("../guide/src/elixir.md")]
    struct Elixir;
    #[doc = include_str!("../guide/src/design.md")]
    struct Design;
    #[doc = include_str!("../guide/src/state.md")]
    struct State;
    #[doc = include_str!("../README.md")]
    struct Readme;
}

pub use executor::Executor;
pub use primitives::timer::{Elapsed, Timeout, timeout};
pub use registry::GenRegistry;
pub use registry::spec::Spec;
pub use worker::context::{Context, TimerRef};
pub use worker::error::{BlockingError, Error};
pub use worker::event::{Event, trace};
pub use worker::handle::WorkerRef;
pub use worker::options::{AtCapacity, Options};
pub use worker::reply::Deferred;
pub use worker::restart::{BackOff, RestartPolicy};
pub use worker::shared::ShutdownReport;
pub use worker::stats::Stats;
pub use worker::{ExitReason, Worker};
