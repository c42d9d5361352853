//! State that outlives its worker: persisted state, opt-in per worker type.
//!
//! A worker that wants its state to survive its end — a stop, an idle
//! timeout, an eviction, a restart after a panic, a shutdown — keeps it in a
//! [`Stored<S>`], `S` a serde type of its own choosing, loaded in `init`
//! from a [`Store`] and written when the worker says so. A worker type that
//! persists nothing pays nothing: this module adds no field to a worker's
//! cell or its future; a `Stored` is a field of the workers that want one.
//!
//! The contract:
//! - **Loaded before the worker runs.** `init` loads the record; a record
//!   never written is a fresh start (`S::default()`); one that no longer
//!   decodes fails the start with [`StateError::Decode`], naming the id and
//!   the record, and the record is left untouched.
//! - **Written when the worker says so, durable when the write returns.**
//!   [`Stored::write`] returns once the transaction holding the write has
//!   committed; a reply sent after it is durable. A failed write is an
//!   `Err` the worker sees.
//! - **Graceful ends write what changed, if the worker says so.** Call
//!   [`Stored::flush`] from `terminate` (it runs on stop, idle, eviction,
//!   shutdown and after a panic); nothing is written behind the worker's
//!   back. See the guide's chapter "State that outlives its worker".
//! - **Versions detect a second writer; epochs fence an old owner.** Each
//!   write carries the version it was loaded at and an epoch; the store
//!   refuses a stale version ([`StateError::Stale`]) and an epoch older
//!   than the last it accepted for the record ([`StateError::Fenced`]).
//! - **Group commit.** Writes arriving together share one transaction
//!   (see [`Store`]); so do reminders set or cancelled together.
//! - **Reminders are state too.** [`Reminders`] are durable timers by id
//!   and name, kept in the same store: each due one is delivered as a call
//!   by id (starting its worker if none runs), at least once, and marked
//!   fired only after the worker answered.
//!
//! The stores: [`Memory`] for tests and [`Sqlite`] (feature `sqlite`), one
//! file in WAL mode, through the executor's blocking pool. A store of your
//! own implements [`Backend`].
//!
//! ```
//! use gen_registry::state::{Store, Stored};
//! # gen_registry::doc_support::run(async {
//! let store = Store::memory();
//! let mut score = Stored::<u32>::load(&store, "score", "ada").await.unwrap();
//! *score += 10;
//! score.write().await.unwrap();
//!
//! let again = Stored::<u32>::load(&store, "score", "ada").await.unwrap();
//! assert_eq!((*again, again.version()), (10, 1));
//! # });
//! ```

mod backend;
mod error;
mod group;
mod memory;
mod reminders;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod stored;

pub use backend::{Backend, BoxFuture, Key, Record, Reminder, ReminderWrite, Write};
pub use error::{Refusal, Stamp, StateError, check};
pub use memory::Memory;
pub use reminders::{Counts, Reminded, Reminders, Scheduled, Service, When};
#[cfg(feature = "sqlite")]
pub use sqlite::Sqlite;
pub use store::{DEFAULT_MAX_STATE_BYTES, Store};
pub use stored::Stored;
