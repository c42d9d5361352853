//! What the PostgreSQL tests share: a server of their own, stores on it,
//! a raw client to look at the tables, and a runner bounded by a deadline.
#![allow(dead_code, unused_imports)]

use futures::FutureExt;
use gen_registry::state::Store;
use gen_registry_postgres::testing::Server;
use gen_registry_postgres::{Postgres, Settings};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

pub use gen_registry::doc_support::wait_until;

/// A PostgreSQL server of the test's own.
pub fn server() -> Server {
    Server::start().unwrap_or_else(|e| panic!("a PostgreSQL server: {e}"))
}

/// The backend on `server`, with short deadlines.
pub fn backend(server: &Server) -> Postgres {
    let settings = Settings::default()
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(20));
    Postgres::with_settings(&server.url(), settings).expect("a store")
}

/// A store over the backend on `server`, committing from Bastion's executor.
pub fn store(server: &Server) -> Store {
    Store::new(backend(server), gen_registry::Executor::Bastion)
}

/// A plain client of `server` (and the task driving it, on `runtime`), to
/// look at the tables as they are.
pub async fn client(server: &Server, runtime: &tokio::runtime::Handle) -> tokio_postgres::Client {
    let url = server.url();
    let connect = runtime.spawn(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("a client");
        tokio::spawn(connection);
        client
    });
    connect.await.expect("a client")
}

/// Runs `future` to completion on its own thread and returns its output;
/// panics with the future's own panic or after `secs` seconds (a hang).
pub fn run<F>(secs: u64, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(AssertUnwindSafe(future).catch_unwind());
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not finish within {secs} s (a hang)"),
    }
}

/// Waits on this thread until `condition` holds, checking every 10 ms;
/// panics after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `future` as a proc on Bastion's executor.
pub fn spawn<F>(future: F) -> impl Future<Output = F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = bastion::executor::spawn(future);
    async move { handle.await.expect("the spawned task panicked") }
}

/// A tokio runtime for a test's own tasks: 2 worker threads, as many as the
/// machine CI runs on has cores, with its I/O and time drivers.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Keeps the tests' deliberate panics (their messages start with
/// "deliberate") out of the output; other panics print as usual.
pub fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
            if !text.is_some_and(|t| t.starts_with("deliberate")) {
                default(info);
            }
        }));
    });
}
