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
pub use worker::{ExitReason, Worker};
