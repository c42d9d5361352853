//! [`Context`]: what a worker's callbacks can reach.

use crate::executor::Unfinished;
use crate::worker::Worker;
use crate::worker::cell::{IDLE_NEVER, ReplyTo, idle_millis};
use crate::worker::error::BlockingError;
use crate::worker::handle::WorkerRef;
use crate::worker::reply::Deferred;
use crate::worker::shared::Shared;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    /// Restarts so far: 0 in the first incarnation.
    pub(crate) restarts: u32,
    /// The reply owed to the caller of the call being handled, until the
    /// handler takes it ([`Context::defer`]) or returns.
    pub(crate) reply: Option<ReplyTo<W>>,
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
    /// When the pool can no longer run the work — its tokio runtime has shut
    /// down, which a registry on [`Executor::BastionWithTokio`](crate::Executor)
    /// outlives, or a `terminate` of a registry shut down while its runtime
    /// was shutting down too — the work does not run, and this panics in
    /// the awaiting callback with a message that says so: a panic in a
    /// handler answers its caller with
    /// [`Error::HandlerPanicked`](crate::Error::HandlerPanicked), one in
    /// `terminate` is contained. Where the worker must know, say to report
    /// state it could not save, use [`try_blocking`](Self::try_blocking),
    /// which returns that case as an error instead. Bastion's own pool
    /// never drops work.
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
        let work = self.try_blocking(work);
        async move {
            work.await
                .unwrap_or_else(|unfinished| panic!("{unfinished}"))
        }
    }

    /// [`blocking`](Self::blocking), with the case where the blocking pool
    /// can no longer run the work as an error: [`BlockingError`] when the
    /// work was dropped unfinished (on the tokio executors, its runtime has
    /// shut down; the work did not run), the work's result otherwise. A
    /// panic in `work` is still a panic in the awaiting callback.
    ///
    /// `BlockingError` converts into [`std::io::Error`], so a worker whose
    /// blocking work returns `std::io::Result` can use `??`:
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Saves its notes in `terminate`, and says so when it could not.
    /// struct Notes { path: std::path::PathBuf, text: String }
    ///
    /// impl Worker for Notes {
    ///     type Id = std::path::PathBuf; type Args = (); type Request = String; type Reply = ();
    ///     type Message = (); type Error = std::io::Error;
    ///
    ///     async fn init(path: &std::path::PathBuf, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         let read = path.clone();
    ///         let text = ctx.try_blocking(move || std::fs::read_to_string(read)).await??;
    ///         Ok(Notes { path: path.clone(), text })
    ///     }
    ///
    ///     async fn handle_call(&mut self, note: String, _: &mut Context<Self>) {
    ///         self.text.push_str(&note);
    ///     }
    ///
    ///     async fn terminate(&mut self, _: &gen_registry::ExitReason, ctx: &mut Context<Self>) {
    ///         let (path, text) = (self.path.clone(), std::mem::take(&mut self.text));
    ///         match ctx.try_blocking(move || std::fs::write(path, text)).await {
    ///             Ok(Ok(())) => {}
    ///             Ok(Err(e)) => eprintln!("notes not saved: {e}"),
    ///             Err(e) => eprintln!("notes not saved: {e}"),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn try_blocking<R, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<R, BlockingError>> + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let work = self.shared.options.get_executor().blocking(work);
        async move { work.await.map_err(|Unfinished| BlockingError(())) }
    }

    /// How many times this worker has been restarted: 0 in its first
    /// incarnation, so `init` can tell a first start from a restart (say,
    /// to reload state saved by the crashed incarnation).
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// struct Loader { restarts: u32 }
    /// impl Worker for Loader {
    ///     type Id = u8; type Args = (); type Request = (); type Reply = u32;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u8, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         if ctx.restarts() > 0 {
    ///             // a restart: recover what the last incarnation left
    ///         }
    ///         Ok(Loader { restarts: ctx.restarts() })
    ///     }
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u32 { self.restarts }
    /// }
    /// ```
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The epoch of its registry's ownership of its ids
    /// ([`Options::epoch`](crate::Options::epoch)); `None` for a registry
    /// given none. In cluster mode, the epoch of the worker's shard on this
    /// node: a later owner of the shard has a larger one. Persisted state
    /// loaded with [`Stored::load_for`](crate::state::Stored::load_for)
    /// carries it on its writes.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Stamps every reply with the owner's epoch.
    /// struct Stamp;
    /// impl Worker for Stamp {
    ///     type Id = u64; type Args = (); type Request = (); type Reply = Option<u64>;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Stamp) }
    ///     async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> Option<u64> {
    ///         ctx.epoch()
    ///     }
    /// }
    /// ```
    pub fn epoch(&self) -> Option<u64> {
        self.shared.options.get_epoch()
    }

    /// Whether its registry still holds its [epoch](Self::epoch), as the
    /// registry's [epoch check](crate::Options::epoch_check) says; `true`
    /// without one. In cluster mode: whether this node still serves the
    /// worker's shard, with its lease safely unexpired. Check it right
    /// before a side effect no store fences; a store that takes the epoch
    /// closes the window a pause between the check and the write leaves.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Sends a notice only while it owns its id.
    /// struct Notifier;
    /// impl Worker for Notifier {
    ///     type Id = u64; type Args = (); type Request = String; type Reply = bool;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Notifier) }
    ///     async fn handle_call(&mut self, notice: String, ctx: &mut Context<Self>) -> bool {
    ///         if !ctx.holds_epoch() {
    ///             return false; // another owner serves this id now
    ///         }
    ///         println!("{notice}");
    ///         true
    ///     }
    /// }
    /// ```
    pub fn holds_epoch(&self) -> bool {
        self.shared.options.holds_epoch()
    }

    /// The name of the node its registry runs on
    /// ([`Options::node`](crate::Options::node)); `None` for a registry
    /// given none. Cluster mode sets it to the node's name.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Says where it runs.
    /// struct Where;
    /// impl Worker for Where {
    ///     type Id = u64; type Args = (); type Request = (); type Reply = String;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Where) }
    ///     async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> String {
    ///         ctx.node().unwrap_or("a standalone registry").to_string()
    ///     }
    /// }
    /// ```
    pub fn node(&self) -> Option<&str> {
        self.shared.options.get_node()
    }

    /// Sends `message` to this worker after `delay`, to its
    /// [`handle_cast`](crate::Worker::handle_cast) (GenServer's
    /// `Process.send_after`). The timer belongs to this incarnation: it is
    /// cancelled when the incarnation ends, so a restart never duplicates
    /// it. A timer's message does not count as mail for the idle timeout.
    /// Due timers go ahead of queued mail.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # use std::time::Duration;
    /// /// A session that ends itself 30 minutes after it started.
    /// struct Session;
    /// enum Tick { Expire }
    /// impl Worker for Session {
    ///     type Id = u64; type Args = (); type Request = (); type Reply = ();
    ///     type Message = Tick; type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.send_after(Duration::from_secs(30 * 60), Tick::Expire);
    ///         Ok(Session)
    ///     }
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
    ///     async fn handle_cast(&mut self, tick: Tick, ctx: &mut Context<Self>) {
    ///         match tick {
    ///             Tick::Expire => ctx.stop(),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn send_after(&self, delay: Duration, message: W::Message) -> TimerRef {
        TimerRef(self.handle.cell.add_timer(delay, None, message))
    }

    /// Sends `message` to this worker every `period`, the first time after
    /// one period, until the timer is cancelled or the incarnation ends. A
    /// worker busy past a tick gets it late, once: missed ticks are not
    /// made up. A zero period is taken as one millisecond.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # use std::time::Duration;
    /// /// Flushes its buffer every second.
    /// struct Buffer { pending: Vec<u8> }
    /// #[derive(Clone)]
    /// enum Tick { Flush }
    /// impl Worker for Buffer {
    ///     type Id = u64; type Args = (); type Request = u8; type Reply = ();
    ///     type Message = Tick; type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.send_interval(Duration::from_secs(1), Tick::Flush);
    ///         Ok(Buffer { pending: Vec::new() })
    ///     }
    ///     async fn handle_call(&mut self, byte: u8, _: &mut Context<Self>) {
    ///         self.pending.push(byte);
    ///     }
    ///     async fn handle_cast(&mut self, Tick::Flush: Tick, _: &mut Context<Self>) {
    ///         self.pending.clear(); // a real worker writes them out here
    ///     }
    /// }
    /// ```
    pub fn send_interval(&self, period: Duration, message: W::Message) -> TimerRef
    where
        W::Message: Clone,
    {
        let period = period.max(Duration::from_millis(1));
        let clone: fn(&W::Message) -> W::Message = Clone::clone;
        TimerRef(
            self.handle
                .cell
                .add_timer(period, Some((period, clone)), message),
        )
    }

    /// Cancels a timer of this incarnation; whether it was still pending (a
    /// fired `send_after`, a timer of an earlier incarnation, or one
    /// cancelled already, is not).
    ///
    /// ```
    /// # use gen_registry::{Context, TimerRef, Worker};
    /// # use std::time::Duration;
    /// /// Reminds the user unless they answer within a minute.
    /// struct Prompt { reminder: Option<TimerRef> }
    /// enum Tick { Remind }
    /// impl Worker for Prompt {
    ///     type Id = u64; type Args = (); type Request = &'static str; type Reply = ();
    ///     type Message = Tick; type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         Ok(Prompt { reminder: Some(ctx.send_after(Duration::from_secs(60), Tick::Remind)) })
    ///     }
    ///     async fn handle_call(&mut self, _answer: &'static str, ctx: &mut Context<Self>) {
    ///         if let Some(reminder) = self.reminder.take() {
    ///             ctx.cancel_timer(reminder);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn cancel_timer(&self, timer: TimerRef) -> bool {
        self.handle.cell.cancel_timer(timer.0)
    }

    /// Sets this worker's own idle timeout, in place of the registry's
    /// ([`Options::idle_timeout`](crate::Options::idle_timeout)): after
    /// `Some(d)` without mail it ends with
    /// [`ExitReason::Idle`](crate::ExitReason::Idle), running `terminate`;
    /// `None` keeps it however long it idles. It lasts for the worker's
    /// life, across restarts. The idle check runs at a granularity of a
    /// quarter of the shortest idle timeout in use (at most 1 s), so an
    /// idle worker ends between `d` and `d` plus that granularity. A timeout
    /// shorter than any in use so far takes effect at once: the sweep,
    /// sleeping out the longer period, is woken to the shorter one. Timeouts
    /// are kept in milliseconds, at most about 49 days.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # use std::time::Duration;
    /// /// Paying customers stay resident; others leave after 10 idle minutes.
    /// struct Account;
    /// impl Worker for Account {
    ///     type Id = u64; type Args = bool; type Request = (); type Reply = ();
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, paying: bool, ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.set_idle_timeout(if paying { None } else { Some(Duration::from_secs(600)) });
    ///         Ok(Account)
    ///     }
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
    /// }
    /// ```
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        let idle_ms = match timeout {
            None => IDLE_NEVER,
            Some(d) => idle_millis(d),
        };
        self.handle.cell.set_idle_ms(idle_ms);
        self.shared.watch_idle(idle_ms);
    }

    /// Takes the reply owed to the caller of the call being handled, to
    /// answer later ([`Deferred::send`]): the handler returns, the value it
    /// returns is dropped instead of sent, and the worker goes on with its
    /// mailbox while the caller waits, within its own timeout, for the
    /// answer. `None` outside [`handle_call`](crate::Worker::handle_call)
    /// (in `init`, `handle_cast`, `terminate`) and when this call's reply
    /// was already taken: a caller is answered once. See
    /// [`Worker::handle_call`](crate::Worker::handle_call) for an example,
    /// and [`Deferred`] for what happens to a handle dropped unanswered.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Id = u8; type Args = (); type Request = (); type Reply = bool;
    /// #     type Message = (); type Error = std::convert::Infallible;
    /// #     async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(W) }
    /// async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> bool {
    ///     let reply = ctx.defer().expect("in handle_call");
    ///     assert!(ctx.defer().is_none()); // taken already
    ///     reply.send(true);
    ///     false // dropped: the reply was deferred, and sent above
    /// }
    /// # }
    /// ```
    pub fn defer(&mut self) -> Option<Deferred<W>> {
        let reply_to = self.reply.take()?;
        Some(Deferred::new(reply_to, self.handle.cell.clone()))
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

/// A timer a worker scheduled to itself ([`Context::send_after`],
/// [`Context::send_interval`]), to cancel it with [`Context::cancel_timer`].
///
/// ```
/// # use gen_registry::{Context, TimerRef, Worker};
/// # use std::time::Duration;
/// # struct W;
/// # impl Worker for W {
/// #     type Id = u8; type Args = (); type Request = (); type Reply = bool;
/// #     type Message = (); type Error = std::convert::Infallible;
/// #     async fn init(_: &u8, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(W) }
/// async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> bool {
///     let timer: TimerRef = ctx.send_after(Duration::from_secs(5), ());
///     ctx.cancel_timer(timer) // true: it had not fired yet
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerRef(u64);
