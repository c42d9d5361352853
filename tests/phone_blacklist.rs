//! The phone blacklist demo's tests, which live beside it in
//! examples/phone_blacklist.rs: `cargo test` runs no example's tests on its
//! own, so this file compiles the example as a module, tests included.

#[allow(dead_code)] // the example's `main` and what only it uses
#[path = "../examples/phone_blacklist.rs"]
mod phone_blacklist;
