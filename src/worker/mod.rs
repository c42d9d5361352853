//! The worker machinery: everything typed by a worker type.
//!
//! - The [`Worker`] trait (this file): what a per-id worker is, a
//!   GenServer's counterpart, and [`ExitReason`].
//! - What a worker and its callers see: its [`Context`](context::Context),
//!   its handle ([`WorkerRef`](handle::WorkerRef)), the registry's
//!   [`Options`](options::Options), [`Error`](error::Error)s and
//!   [`Event`](event::Event)s, the restart policies.
//! - What they share: the cell (one worker's lifecycle and mailbox), and
//!   the registry's shared state (the id table, the running count, the ways
//!   a worker leaves).
//! - The worker's loop ([`supervise`]): `init`, mail, restarts, `terminate`.
//!
//! A worker's callbacks take its context, which holds its handle and reaches
//! its registry, so these modules refer to one another; none of them refers
//! to the facade above (`crate::registry`).

pub(crate) mod cell;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod handle;
pub(crate) mod options;
pub(crate) mod reply;
pub(crate) mod restart;
pub(crate) mod shared;
pub(crate) mod stats;
pub(crate) mod supervise;
pub(crate) mod telemetry;

use crate::worker::context::Context;
use std::fmt::{self, Debug};
use std::future::Future;
use std::hash::Hash;

/// A worker: the state kept for one id, and how it answers messages.
///
/// It is the counterpart of the worker module of an Elixir GenRegistry (a
/// GenServer): [`init`](Worker::init) is `start_link`/`init`,
/// [`handle_call`](Worker::handle_call) answers a request with a reply,
/// [`handle_cast`](Worker::handle_cast) takes a fire-and-forget message and
/// [`terminate`](Worker::terminate) runs when the worker ends. Every message type
/// is an associated type, so calls are checked by the compiler and nothing is
/// downcast.
///
/// A worker handles one message at a time, in the order they arrived: its state
/// needs no lock. Write the handlers as `async fn`; they run on the
/// registry's [executor](crate::Executor) — Bastion's by default, or tokio's —
/// and must never block its threads: await instead, and hand blocking work
/// (a synchronous database client, `std::fs`, a CPU-heavy step) to
/// [`Context::blocking`], which runs it on a blocking pool while other ids
/// keep being served:
///
/// ```
/// # use gen_registry::{Context, Worker};
/// /// A checksum per id, computed off the executor's threads.
/// struct Digest { sum: u64 }
///
/// impl Worker for Digest {
///     type Id = u32; type Args = Vec<u8>; type Request = (); type Reply = u64;
///     type Message = (); type Error = std::convert::Infallible;
///
///     async fn init(_: &u32, data: Vec<u8>, ctx: &Context<Self>) -> Result<Self, Self::Error> {
///         let sum = ctx.blocking(move || data.iter().map(|&b| u64::from(b)).sum()).await;
///         Ok(Digest { sum })
///     }
///
///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
///         self.sum
///     }
/// }
/// ```
///
/// A full worker:
///
/// ```
/// use gen_registry::{Context, Worker};
///
/// /// One counter per user id.
/// struct Counter {
///     value: u64,
/// }
///
/// enum Op {
///     Get,
///     Add(u64),
/// }
///
/// impl Worker for Counter {
///     type Id = u64;
///     type Args = u64; // the starting value
///     type Request = Op;
///     type Reply = u64;
///     type Message = u64; // add without waiting for a reply
///     type Error = std::convert::Infallible;
///
///     async fn init(_id: &u64, start: u64, _ctx: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Counter { value: start })
///     }
///
///     async fn handle_call(&mut self, op: Op, _ctx: &mut Context<Self>) -> u64 {
///         if let Op::Add(n) = op {
///             self.value += n;
///         }
///         self.value
///     }
///
///     async fn handle_cast(&mut self, n: u64, _ctx: &mut Context<Self>) {
///         self.value += n;
///     }
/// }
/// ```
pub trait Worker: Sized + Send + 'static {
    /// The natural id a worker is registered under (a user id, a session id,
    /// a phone number). An id that owns memory (a `String`) is kept once per
    /// worker, in its cell, where the id table reads it. Messages for people —
    /// errors, events, a handle's `Debug` — show its `Debug` form, cut after
    /// 64 characters with its full length named, so a huge id cannot flood a
    /// log.
    type Id: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// What `init` receives. It need not be `Clone`: under the default
    /// [`RestartPolicy::Never`](crate::RestartPolicy::Never) it is moved into
    /// `init` once and never copied, so it can be a one-shot sender or a
    /// connection. A policy that restarts ([`Options::restart`](crate::Options::restart),
    /// which asks for `Clone`) keeps a clone, made when the worker starts,
    /// for `init` to run again, and clones it once more for each restart.
    type Args: Send + 'static;
    /// The requests [`handle_call`](Worker::handle_call) answers.
    type Request: Send + 'static;
    /// The reply to a request.
    type Reply: Send + 'static;
    /// The fire-and-forget messages [`handle_cast`](Worker::handle_cast) takes;
    /// `()` if the worker takes none.
    type Message: Send + 'static;
    /// Why `init` can fail; [`std::convert::Infallible`] if it cannot. Any
    /// type that can be printed will do — your own error enum, a `String`,
    /// a `Box<dyn std::error::Error + Send + Sync>`, an `anyhow::Error`: the
    /// caller gets it back in [`Error::Init`](crate::Error::Init), and a
    /// failed restart's [event](crate::Event) carries its text.
    type Error: Debug + fmt::Display + Send + 'static;

    /// Builds the worker's state for `id`. An `Err` (or a panic) fails the start:
    /// the caller gets [`Error::Init`](crate::Error::Init) (or
    /// [`Error::InitPanicked`](crate::Error::InitPanicked)) and nothing is
    /// registered. `init` runs in the worker's own process, so a slow `init` of
    /// one id never delays other ids; it may use the registry through
    /// [`Context::registry`].
    fn init(
        id: &Self::Id,
        args: Self::Args,
        ctx: &Context<Self>,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Answers one request. A panic here answers the caller with
    /// [`Error::HandlerPanicked`](crate::Error::HandlerPanicked) and ends the
    /// worker — or, under a [`RestartPolicy`](crate::RestartPolicy) that
    /// restarts it, the incarnation: the next one serves the queued mail. Call [`Context::stop`] to end the worker after this reply.
    ///
    /// A handler that must wait on something slow (another service, a
    /// database) need not hold up the worker's mailbox for it: it can take
    /// the reply along with [`Context::defer`], hand the wait and the
    /// [`Deferred`](crate::Deferred) reply to a task, and return at once
    /// (the value it returns is then dropped). The worker goes on with its
    /// next message; the task answers when the wait is over. The caller's
    /// own timeout still holds, and a reply handle dropped unanswered gives
    /// it [`Error::ReplyDropped`](crate::Error::ReplyDropped) at once
    /// (GenServer's `{:noreply, state}` and `GenServer.reply/2`):
    ///
    /// ```
    /// use gen_registry::{Context, GenRegistry, Options, Worker};
    ///
    /// /// One worker per user; looking up a user's score is slow, a ping is not.
    /// struct User;
    ///
    /// enum Ask { Score, Ping }
    ///
    /// /// A slow, blocking client.
    /// fn fetch_score() -> u64 {
    ///     std::thread::sleep(std::time::Duration::from_millis(50));
    ///     42
    /// }
    ///
    /// impl Worker for User {
    ///     type Id = u64; type Args = (); type Request = Ask; type Reply = u64;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///
    ///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
    ///         Ok(User)
    ///     }
    ///
    ///     async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> u64 {
    ///         match ask {
    ///             Ask::Score => {
    ///                 let reply = ctx.defer().expect("in handle_call");
    ///                 let score = ctx.blocking(fetch_score);
    ///                 // Answered by a task; this worker is free at once.
    ///                 bastion::executor::spawn(async move { reply.send(score.await) });
    ///                 0 // dropped: the reply was deferred
    ///             }
    ///             Ask::Ping => 1,
    ///         }
    ///     }
    /// }
    ///
    /// # futures::executor::block_on(async {
    /// let users = GenRegistry::<User>::new(Options::default()).unwrap();
    /// let user = users.lookup_or_start(7, ()).await.unwrap();
    /// let (score, ping) = futures::join!(user.call(Ask::Score), user.call(Ask::Ping));
    /// assert_eq!((score.unwrap(), ping.unwrap()), (42, 1));
    /// # users.shutdown().await;
    /// # });
    /// ```
    fn handle_call(
        &mut self,
        request: Self::Request,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// Handles one fire-and-forget message. The default drops it.
    fn handle_cast(
        &mut self,
        message: Self::Message,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (message, ctx);
        async {}
    }

    /// Runs once when the worker ends for any reason but an abort
    /// ([`ExitReason::Killed`]): it stopped itself, was stopped, panicked,
    /// its registry shut down, or its id moved to another owner. A panic here is contained. The default does
    /// nothing.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// Why a worker ended.
///
/// ```
/// use gen_registry::ExitReason;
/// assert_eq!(ExitReason::Stopped.to_string(), "stopped by the registry");
/// assert!(ExitReason::Panicked("boom".into()).is_abnormal());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The worker asked to stop ([`Context::stop`]).
    Normal,
    /// [`GenRegistry::stop`](crate::GenRegistry::stop) stopped it.
    Stopped,
    /// Its registry shut down.
    Shutdown,
    /// Its id moved to another owner: its registry was handed over
    /// ([`GenRegistry::hand_over`](crate::GenRegistry::hand_over)); in
    /// cluster mode, its shard moved to another node, or its node left or
    /// lost its lease. A graceful end: `terminate` runs, the place to write
    /// state the next owner loads (a
    /// [`Stored::flush`](crate::state::Stored::flush)).
    Moved,
    /// A handler panicked; the panic's message.
    Panicked(String),
    /// A restart's `init` failed (returned an error, panicked or timed out);
    /// the failure's text. Only [events](crate::Event) carry it: there was
    /// no incarnation to `terminate`.
    InitFailed(String),
    /// It was aborted without running `terminate`
    /// ([`WorkerRef::kill`](crate::WorkerRef::kill), or a `terminate` that
    /// outlived the shutdown timeout).
    Killed,
    /// It received no mail for its idle timeout
    /// ([`Options::idle_timeout`](crate::Options::idle_timeout),
    /// [`Context::set_idle_timeout`](crate::Context::set_idle_timeout)); the
    /// next start of its id makes a fresh one.
    Idle,
    /// The registry was at its capacity
    /// ([`Options::max_workers`](crate::Options::max_workers)) and a start
    /// evicted it.
    Evicted,
}

impl ExitReason {
    /// Whether the worker ended because something went wrong (a panic, a
    /// failed restart or an abort) rather than because it or its registry asked it to.
    ///
    /// ```
    /// use gen_registry::ExitReason;
    /// assert!(!ExitReason::Normal.is_abnormal());
    /// assert!(ExitReason::Killed.is_abnormal());
    /// ```
    pub fn is_abnormal(&self) -> bool {
        matches!(
            self,
            ExitReason::Panicked(_) | ExitReason::InitFailed(_) | ExitReason::Killed
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped itself"),
            ExitReason::Stopped => f.write_str("stopped by the registry"),
            ExitReason::Shutdown => f.write_str("its registry shut down"),
            ExitReason::Moved => f.write_str("its id moved to another owner"),
            ExitReason::Panicked(m) => write!(f, "panicked: {m}"),
            ExitReason::InitFailed(m) => write!(f, "restart failed: {m}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Idle => f.write_str("idle for its idle timeout"),
            ExitReason::Evicted => f.write_str("evicted: the registry was at its capacity"),
        }
    }
}

/// Characters of an id's `Debug` form shown in messages for people.
const SHOWN_ID_CHARS: usize = 64;

/// An id as messages for people show it: its `Debug` form, cut after
/// [`SHOWN_ID_CHARS`] characters and followed by `… (N bytes)`, N the length
/// of the whole form. Nothing is allocated: the form is written straight to
/// the output, and past the cut only counted.
pub(crate) struct ShownId<'a, I: ?Sized>(pub(crate) &'a I);

impl<I: Debug + ?Sized> fmt::Display for ShownId<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cut = Cut {
            out: f,
            chars: 0,
            bytes: 0,
        };
        fmt::write(&mut cut, format_args!("{:?}", self.0))?;
        if cut.chars > SHOWN_ID_CHARS {
            write!(cut.out, "… ({} bytes)", cut.bytes)?;
        }
        Ok(())
    }
}

impl<I: Debug + ?Sized> Debug for ShownId<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Passes the first [`SHOWN_ID_CHARS`] characters on and counts the rest.
struct Cut<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    /// Characters seen, up to one past the cut.
    chars: usize,
    /// Bytes seen, all of them.
    bytes: usize,
}

impl fmt::Write for Cut<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes += s.len();
        if self.chars > SHOWN_ID_CHARS {
            return Ok(());
        }
        let room = SHOWN_ID_CHARS - self.chars;
        match s.char_indices().nth(room) {
            Some((end, _)) => {
                self.chars = SHOWN_ID_CHARS + 1;
                self.out.write_str(&s[..end])
            }
            None => {
                self.chars += s.chars().count();
                self.out.write_str(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_id_is_shown_whole_and_a_long_one_cut_with_its_length() {
        assert_eq!(ShownId(&7u64).to_string(), "7");
        let exact = "x".repeat(62); // 64 characters with the quotes
        assert_eq!(ShownId(&exact).to_string(), format!("{exact:?}"));
        let long = "é".repeat(1 << 20);
        let shown = ShownId(&long).to_string();
        let expected = format!("\"{}… ({} bytes)", "é".repeat(63), 2 * (1 << 20) + 2);
        assert_eq!(shown, expected);
    }
}
