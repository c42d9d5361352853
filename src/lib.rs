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

// The modules in layers; a module imports only from its own layer or those
// below it (tests/layering.rs checks this).
//
// The facade: the registry and its Bastion embedding.
mod directory;
mod registry;
mod spec;
// The worker's loop: init, mail, restarts, terminate.
mod supervise;
// What a worker and its callers see, and the state they share: the trait
// and its context, handles, errors, events, options, the cell (lifecycle and
// mailbox) and the registry's shared state. A worker's callbacks take its
// context, which holds its handle, so these refer to one another.
mod cell;
mod context;
mod error;
mod event;
mod handle;
mod options;
mod restart;
mod shared;
mod worker;
// Primitives that know nothing of workers: the executor seam, the id table,
// the eviction policy, the timers, the mailboxes' queue, and which worker a
// thread is polling.
mod current;
mod evict;
mod executor;
mod queue;
mod table;
mod timer;
mod timers;

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
    #[doc = include_str!("../README.md")]
    struct Readme;
}

pub use context::{Context, TimerRef};
pub use error::Error;
pub use event::{Event, trace};
pub use executor::Executor;
pub use handle::WorkerRef;
pub use options::{AtCapacity, Options};
pub use registry::GenRegistry;
pub use restart::{BackOff, RestartPolicy};
pub use spec::Spec;
pub use timer::{Elapsed, Timeout, timeout};
pub use worker::{ExitReason, Worker};
