//! [`Context`]: what a worker's callbacks can reach.

use crate::handle::WorkerRef;
use crate::shared::Shared;
use crate::worker::Worker;
use std::future::Future;
use std::sync::Arc;

/// Given to every callback of a [`Worker`]: its id, its own handle, its
/// registry, and the way to stop itself.
///
/// ```
/// use gen_registry::{Context, Worker};
///
/// /// A session that ends itself on logout.
/// struct Session;
///
/// enum Request { Ping, Logout }
///
/// impl Worker for Session {
///     type Id = u64; type Args = (); type Request = Request; type Reply = &'static str;
///     type Message = (); type Error = std::convert::Infallible;
///
///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Session)
///     }
///
///     async fn handle_call(&mut self, request: Request, ctx: &mut Context<Self>) -> &'static str {
///         match request {
///             Request::Ping => "pong",
///             Request::Logout => {
///                 ctx.stop(); // after this reply, `terminate` runs and the id is free
///                 "bye"
///             }
///         }
///     }
/// }
/// ```
pub struct Context<W: Worker> {
    pub(crate) handle: WorkerRef<W>,
    pub(crate) shared: Arc<Shared<W>>,
    pub(crate) stop: bool,
    /// Whether `Started` was reported (so `Stopped` will be). The worker's
    /// guard owns it; it sits here to share the padding after `stop`.
    pub(crate) started: bool,
}

impl<W: Worker> Context<W> {
    /// The worker's id.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # struct Hello;
    /// # impl Worker for Hello {
    /// #     type Id = String; type Args = (); type Request = (); type Reply = String;
    /// #     type Message = (); type Error = std::convert::Infallible;
    /// #     async fn init(_: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Hello) }
    /// async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> String {
    ///     format!("hello from {}", ctx.id())
    /// }
    /// # }
    /// ```
    pub fn id(&self) -> &W::Id {
        self.handle.id()
    }

    /// The worker's own handle, e.g. to cast to itself or to hand to others.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # struct Ticker(u32);
    /// # impl Worker for Ticker {
    /// #     type Id = u8; type Args = (); type Request = (); type Reply = u32;
    /// #     type Message = (); type Error = std::convert::Infallible;
    /// #     async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Ticker(0)) }
    /// #     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u32 { self.0 }
    /// async fn handle_cast(&mut self, _: (), ctx: &mut Context<Self>) {
    ///     self.0 += 1;
    ///     if self.0 < 3 {
    ///         let _ = ctx.handle().cast(()); // tick again, after what is queued
    ///     }
    /// }
    /// # }
    /// ```
    pub fn handle(&self) -> &WorkerRef<W> {
        &self.handle
    }

    /// Runs `work` on the executor's blocking pool and resolves with its
    /// result: the one sanctioned way for a worker to block (a synchronous
    /// database client such as rusqlite, `std::fs`, a CPU-heavy step).
    /// Blocking in a callback itself would stall the executor thread and
    /// every other worker on it; here, while this worker waits, the others
    /// keep being served. A panic in `work` is a panic in the callback that
    /// awaited it.
    ///
    /// The pool is Bastion's blocking pool on [`Executor::Bastion`](crate::Executor::Bastion),
    /// tokio's (`spawn_blocking`) on the tokio executors.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// A file per id, read without blocking the executor.
    /// struct Profile { text: String }
    ///
    /// impl Worker for Profile {
    ///     type Id = std::path::PathBuf; type Args = (); type Request = (); type Reply = usize;
    ///     type Message = (); type Error = std::io::Error;
    ///
    ///     async fn init(path: &std::path::PathBuf, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         let path = path.clone();
    ///         let text = ctx.blocking(move || std::fs::read_to_string(path)).await?;
    ///         Ok(Profile { text })
    ///     }
    ///
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> usize {
    ///         self.text.len()
    ///     }
    /// }
    /// ```
    pub fn blocking<R, F>(&self, work: F) -> impl Future<Output = R> + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.options.get_executor().blocking(work)
    }

    /// Ends the worker once the current callback returns: it leaves the
    /// registry before its reply is delivered, then runs `terminate` with
    /// [`ExitReason::Normal`](crate::ExitReason::Normal). Messages still queued
    /// are answered with [`Error::WorkerEnded`](crate::Error::WorkerEnded).
    /// See the example on [`Context`].
    pub fn stop(&mut self) {
        self.stop = true;
    }
}
