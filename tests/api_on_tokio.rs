//! Every test of tests/api.rs again, with the registries' workers as tokio
//! tasks (`Executor::Tokio`): the test helpers pick the executor by this
//! binary's name (see `common::executor`).
#![cfg(feature = "tokio")]

#[path = "api.rs"]
mod api;
