//! The tests of `api`, `guarantees` and `model` again, with the registries'
//! workers as tokio tasks (`Executor::Tokio`): the same files, compiled once
//! more as modules of this one, whose [`executor`] they use.

/// The executor of the registries of the modules below: tokio's, on one
/// runtime that all their tests share.
fn executor() -> gen_registry::Executor {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
        std::sync::LazyLock::new(crate::common::tokio_runtime);
    gen_registry::Executor::Tokio(RUNTIME.handle().clone())
}

#[path = "api.rs"]
mod api;
#[path = "guarantees.rs"]
mod guarantees;
#[path = "model.rs"]
mod model;
