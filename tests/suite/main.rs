//! The integration tests that can share a process, in one test binary: one
//! module per area, so a test's name says where it lives
//! (`api::lookup_of_an_unknown_id_is_not_found`). One binary links the crate,
//! Bastion and tokio once instead of once per file.
//!
//! What its tests share, and so must not change for the others: Bastion's
//! system, started once (by `bastion`'s tests) and never stopped; the panic
//! hook (`common::quiet_deliberate_panics`, installed once); the published
//! registry names (`bastion`'s tests use names no other module uses). The
//! tests that need a process of their own stay in binaries of their own:
//! `bastion_stop` (stopping Bastion is final for the process), `soak` and
//! `footprint` (a counting global allocator), and `layering`.
//!
//! The tests of `api`, `guarantees` and `model` run twice: at the top on
//! Bastion's executor ([`executor`] below), and under [`on_tokio`] with the
//! registries' workers as tokio tasks (`on_tokio::api::...`).

#[path = "../common/mod.rs"]
mod common;

mod api;
mod bastion;
mod delivery;
#[cfg(feature = "tokio")]
mod executors;
mod faults;
mod friction;
mod guarantees;
mod lifecycle;
mod model;
// It loads the files of `api`, `guarantees` and `model` a second time, on
// purpose: each is a module once more there, with tokio as its executor.
#[cfg(feature = "tokio")]
#[allow(clippy::duplicate_mod)]
mod on_tokio;
mod ownership;
mod parity;
mod restarts;
mod self_and_kill;
mod stats;
mod stress;
// What a recorder sees: only with the cargo feature `metrics`.
#[cfg(feature = "metrics")]
mod telemetry;

/// The executor of the registries of `api`, `guarantees` and `model` at the
/// top of the suite: Bastion's.
fn executor() -> gen_registry::Executor {
    gen_registry::Executor::Bastion
}
