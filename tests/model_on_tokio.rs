//! Every test of tests/model.rs again, with the registries' workers as tokio
//! tasks (`Executor::Tokio`): the test helpers pick the executor by this
//! binary's name (see `common::executor`).
#![cfg(feature = "tokio")]

#[path = "model.rs"]
mod model;
