//! [`Context`]: what a worker's callbacks can reach.

use crate::handle::WorkerRef;
use crate::registry::{GenRegistry, Shared};
use crate::worker::Worker;
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

    /// The registry this worker belongs to, to start or look up other ids;
    /// `None` once every handle to the registry has been dropped. Use it and
    /// let it go: a worker that keeps it in its state keeps the registry
    /// alive, so dropping the users' last clone no longer shuts it down. Never wait,
    /// from `init`, on the start of the worker's own id: it cannot finish
    /// before `init` does.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Each node starts its parent on first use.
    /// struct Node;
    /// impl Worker for Node {
    ///     type Id = u32; type Args = (); type Request = (); type Reply = usize;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(id: &u32, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         if *id > 0 {
    ///             if let Some(registry) = ctx.registry() {
    ///                 let _ = registry.lookup_or_start(id / 2, ()).await;
    ///             }
    ///         }
    ///         Ok(Node)
    ///     }
    ///     async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> usize {
    ///         ctx.registry().map_or(0, |r| r.count())
    ///     }
    /// }
    /// ```
    pub fn registry(&self) -> Option<GenRegistry<W>> {
        self.shared.owner.upgrade().map(GenRegistry::from_owner)
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
