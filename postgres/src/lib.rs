//! A PostgreSQL store for gen_registry's persisted state and reminders: the
//! store several nodes of a cluster share.
//!
//! [`Postgres`] implements [`gen_registry::state::Backend`]; put a
//! [`Store`](gen_registry::state::Store) in front of it, as for the
//! in-memory and SQLite stores, and workers load and write their
//! [`Stored`](gen_registry::state::Stored) state through it.
//!
//! - **One transaction per batch.** The store's group commit hands over
//!   whatever writes are queued; they are checked in order (epoch first,
//!   then version, as [`gen_registry::state::check`] says) against the
//!   records as the earlier writes of the batch left them, applied in one
//!   transaction, and answered only once `COMMIT` has returned. The batch
//!   first takes a transaction-scoped advisory lock on each record it
//!   touches, so two nodes committing at once never both accept a write of
//!   the same record (even one that does not exist yet). A batch costs two
//!   round trips: `BEGIN`, the locks and the read pipelined, then the
//!   write and `COMMIT`.
//! - **Any executor.** The client's I/O runs on a tokio runtime the store
//!   owns (two threads, started with the store) or on one you pass in
//!   ([`Settings::runtime`]); its futures can be awaited anywhere, on
//!   Bastion's executor as on tokio's.
//! - **Bounded waits.** Connecting gives up after
//!   [`Settings::connect_timeout`], every operation after
//!   [`Settings::operation_timeout`]; a failure is an [`Error`] (a text
//!   naming the server and the operation), never a hang. A broken
//!   connection is dropped and opened again by the next operation, so the
//!   store recovers by itself from a restart of the server.
//! - **Its schema, created on first connect.** Two tables and an index,
//!   each `CREATE ... IF NOT EXISTS` ([`SCHEMA`]); the server's user needs
//!   the right to create them the first time.
//!
//! ```no_run
//! use gen_registry::Executor;
//! use gen_registry::state::{Store, Stored};
//! use gen_registry_postgres::Postgres;
//! # futures::executor::block_on(async {
//! let postgres = Postgres::new("postgresql://app@db.internal/app").unwrap();
//! postgres.connect().await.unwrap(); // fail now, not at the first call
//! let store = Store::new(postgres, Executor::Bastion);
//! let mut visits = Stored::<u64>::load(&store, "visits", "alice").await.unwrap();
//! *visits += 1;
//! visits.write().await.unwrap(); // committed in PostgreSQL when this returns
//! # });
//! ```
//!
//! The feature `testing` adds [`testing::Server`], a real PostgreSQL
//! server started from Debian's `postgresql` package for tests and benches.

mod plan;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use store::{Error, Postgres, SCHEMA, Settings};
