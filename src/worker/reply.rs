//! [`Deferred`]: the reply to a call, taken along by its handler to answer
//! later (GenServer's `{:noreply, state}` and `GenServer.reply/2`).

use crate::worker::Worker;
use crate::worker::cell::{CallFailure, Cell, ReplyTo};
use std::fmt;
use std::sync::Arc;

/// The reply owed to one caller, taken from
/// [`handle_call`](crate::Worker::handle_call) by
/// [`Context::defer`](crate::Context::defer) so that the handler can return
/// at once and the worker go on with its mailbox, while whoever holds this
/// answers later: a spawned task, a later message to the same worker, a
/// timer.
///
/// It is typed by the worker, so only a [`Worker::Reply`] can be sent, and
/// [`send`](Self::send) consumes it, so a caller is answered at most once.
/// It is `Send`, and holds no lock.
///
/// - Dropped without an answer, its caller gets
///   [`Error::ReplyDropped`](crate::Error::ReplyDropped) at once. Handles
///   kept in the worker's state are dropped with it when the worker ends or
///   restarts, so their callers get that error too; handles held by tasks
///   outlive the worker and may still answer.
/// - The caller's own timeout still holds: an answer after it is dropped.
/// - Once the worker has been [killed](crate::WorkerRef::kill), no answer
///   reaches its caller, who gets [`Error::WorkerEnded`](crate::Error::WorkerEnded).
///
/// ```
/// use gen_registry::{Context, Deferred, GenRegistry, Options, Worker};
///
/// /// Holds each `Wait` call until the next `Release`, which answers them all.
/// struct Barrier { waiting: Vec<Deferred<Barrier>> }
///
/// enum Ask { Wait, Release }
///
/// impl Worker for Barrier {
///     type Id = u8; type Args = (); type Request = Ask; type Reply = usize;
///     type Message = (); type Error = std::convert::Infallible;
///
///     async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Barrier { waiting: Vec::new() })
///     }
///
///     async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> usize {
///         match ask {
///             Ask::Wait => {
///                 self.waiting.extend(ctx.defer());
///                 0 // not sent: the reply was deferred
///             }
///             Ask::Release => {
///                 let released = self.waiting.len();
///                 for waiter in self.waiting.drain(..) {
///                     waiter.send(released);
///                 }
///                 released
///             }
///         }
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let registry = GenRegistry::<Barrier>::new(Options::default()).unwrap();
/// let barrier = registry.start(1, ()).await.unwrap();
/// let (first, second) = (barrier.call(Ask::Wait), barrier.call(Ask::Wait));
/// let release = async {
///     // The worker keeps serving while both callers wait.
///     barrier.call(Ask::Release).await.unwrap()
/// };
/// let (first, second, released) = futures::join!(first, second, release);
/// assert_eq!((first.unwrap(), second.unwrap(), released), (2, 2, 2));
/// # registry.shutdown().await;
/// # });
/// ```
pub struct Deferred<W: Worker> {
    /// `None` once answered.
    reply_to: Option<ReplyTo<W>>,
    /// The worker's cell, which knows whether it was killed.
    cell: Arc<Cell<W>>,
}

impl<W: Worker> Deferred<W> {
    pub(crate) fn new(reply_to: ReplyTo<W>, cell: Arc<Cell<W>>) -> Self {
        Deferred {
            reply_to: Some(reply_to),
            cell,
        }
    }

    /// Answers the caller with `reply`. Whether the answer reached a caller
    /// still waiting: `false` when its call had timed out or been dropped,
    /// or the worker was killed.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # struct Echo;
    /// # impl Worker for Echo {
    /// #     type Id = u8; type Args = (); type Request = u32; type Reply = u32;
    /// #     type Message = (); type Error = std::convert::Infallible;
    /// #     async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Echo) }
    /// async fn handle_call(&mut self, n: u32, ctx: &mut Context<Self>) -> u32 {
    ///     if let Some(reply) = ctx.defer() {
    ///         reply.send(n); // answered now, after all
    ///     }
    ///     0
    /// }
    /// # }
    /// ```
    pub fn send(mut self, reply: W::Reply) -> bool {
        let reply_to = self.reply_to.take().expect("answered only once, by `send`");
        self.cell.answer(reply_to, Ok(reply))
    }
}

impl<W: Worker> Drop for Deferred<W> {
    fn drop(&mut self) {
        if let Some(reply_to) = self.reply_to.take() {
            self.cell.answer(reply_to, Err(CallFailure::Dropped));
        }
    }
}

/// The worker's id.
impl<W: Worker> fmt::Debug for Deferred<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field(
                "id",
                &crate::worker::ShownId(crate::primitives::table::Entry::id(&*self.cell)),
            )
            .finish()
    }
}
