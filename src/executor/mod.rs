//! The executor seam: the one module that knows who polls a worker.
//!
//! Everything else in the crate — the table, the cells, the worker's loop,
//! the restarts, the timer — is plain `futures` code that does not care which
//! executor runs it. It asks this module for three things only: to spawn a
//! worker's future ([`Executor::spawn`]), to abort it ([`Task::abort`]), and to
//! run blocking work off the executor's threads ([`Executor::blocking`]).
//!
//! Two executors implement the seam:
//! - Bastion's (the default, [`Executor::Bastion`]): each worker is a
//!   lightweight proc on the same threads as every Bastion child. Given a
//!   tokio runtime handle ([`Executor::BastionWithTokio`]), the worker's
//!   future is polled inside that runtime's context, so tokio-based clients
//!   work in it.
//! - tokio's (feature `tokio`, [`Executor::Tokio`] and
//!   [`Executor::CurrentTokio`]): each worker is a tokio task.

#[cfg(feature = "tokio")]
mod tokio_rt;

use lightproc::proc_stack::ProcStack;
use lightproc::recoverable_handle::RecoverableHandle;
use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Which executor runs a registry's workers; chosen per registry with
/// [`Options::executor`](crate::Options::executor).
///
/// Bastion's executor is the default: this is GenRegistry for Bastion, and a
/// registry in a Bastion tree needs nothing else. With the `tokio` feature,
/// a registry can run its workers as tokio tasks instead, or stay on
/// Bastion's executor and still let its workers use tokio-based clients.
/// The registry is never picked up from the current runtime on its own: the
/// choice is always written in the options, where a reader sees it.
///
/// | executor | workers are | tokio clients in workers | blocking work ([`Context::blocking`](crate::Context::blocking)) |
/// |---|---|---|---|
/// | `Bastion` | procs on Bastion's executor | no (they panic: no reactor) | Bastion's blocking pool |
/// | `BastionWithTokio(handle)` | procs on Bastion's executor, polled inside the runtime's context | yes | tokio's blocking pool |
/// | `Tokio(handle)` / `CurrentTokio` | tokio tasks | yes | tokio's blocking pool |
///
/// ```
/// # use gen_registry::doc_support::Pinger;
/// use gen_registry::{Executor, GenRegistry, Options};
///
/// let registry = GenRegistry::<Pinger>::new(Options::default().executor(Executor::Bastion)).unwrap();
/// assert!(matches!(registry.options().get_executor(), Executor::Bastion));
/// ```
///
#[doc = include_str!("../doc_support/pinger.md")]
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Executor {
    /// Bastion's executor (the default).
    #[default]
    Bastion,
    /// Bastion's executor, with every worker polled inside this tokio
    /// runtime's context: `tokio::time`, `tokio::net` and every client built
    /// on them (sqlx, reqwest, tonic, redis) work in the workers, driven by
    /// that runtime's reactor. The runtime must outlive the registry.
    #[cfg(feature = "tokio")]
    BastionWithTokio(tokio::runtime::Handle),
    /// Each worker is a tokio task on this runtime. A call from a tokio task
    /// costs about a tokio channel round trip. When the runtime shuts down,
    /// it drops its workers' futures at their next `.await`: they end as if
    /// killed (no `terminate`, or the rest of one already begun is cut
    /// short), and later starts fail with
    /// [`Error::ExecutorShutDown`](crate::Error::ExecutorShutDown). Shut the
    /// registry down before the runtime.
    #[cfg(feature = "tokio")]
    Tokio(tokio::runtime::Handle),
    /// [`Executor::Tokio`] on the runtime that is current where the registry
    /// is created ([`GenRegistry::new`](crate::GenRegistry::new) fails with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions) outside one).
    #[cfg(feature = "tokio")]
    CurrentTokio,
}

/// A spawned worker's future, to abort it. Dropping it detaches the worker.
pub(crate) enum Task {
    Bastion(RecoverableHandle<()>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::AbortHandle),
}

impl Task {
    /// Drops the future at its next turn on the executor (at once if it is
    /// not running now), without polling it again.
    pub(crate) fn abort(self) {
        match self {
            Task::Bastion(handle) => handle.cancel(),
            #[cfg(feature = "tokio")]
            Task::Tokio(handle) => handle.abort(),
        }
    }
}

thread_local! {
    /// The process stack a worker's proc gets: Bastion's own spawn builds a
    /// fresh one per proc, which allocates a state no worker uses; a clone
    /// of this one shares it.
    static STACK: ProcStack = ProcStack::default();
}

impl Executor {
    /// The executor a registry will use: [`Executor::CurrentTokio`] becomes
    /// the runtime current now.
    pub(crate) fn resolve(self) -> Result<Executor, String> {
        match self {
            #[cfg(feature = "tokio")]
            Executor::CurrentTokio => tokio_rt::current().map(Executor::Tokio),
            other => Ok(other),
        }
    }

    /// Runs `future` on this executor.
    pub(crate) fn spawn<F>(&self, future: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Executor::Bastion => Task::Bastion(spawn_proc(future)),
            #[cfg(feature = "tokio")]
            Executor::BastionWithTokio(handle) => {
                Task::Bastion(spawn_proc(tokio_rt::Entered::new(handle.clone(), future)))
            }
            #[cfg(feature = "tokio")]
            // Boxed: tokio's task cell holds the future inline at a 128-byte
            // alignment, so a boxed future (one pointer) makes an idle
            // worker's task far smaller (W2 on tokio: 745 -> 573 B).
            Executor::Tokio(handle) => Task::Tokio(handle.spawn(Box::pin(future)).abort_handle()),
            #[cfg(feature = "tokio")]
            Executor::CurrentTokio => unreachable!("resolved when the registry is created"),
        }
    }

    /// Runs `work` on the executor's blocking pool; its result, or its panic
    /// (resumed in the awaiting task, so a panicking handler is handled as
    /// any other panic in a handler). [`Unfinished`] if the pool dropped the
    /// work before it finished: its tokio runtime has shut down.
    pub(crate) fn blocking<R, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<R, Unfinished>> + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let work = move || catch_unwind(AssertUnwindSafe(work));
        let outcome = match self {
            Executor::Bastion => Blocking::Bastion(bastion_executor::blocking::spawn_blocking(
                async move { work() },
                ProcStack::default(),
            )),
            #[cfg(feature = "tokio")]
            Executor::BastionWithTokio(handle) | Executor::Tokio(handle) => {
                Blocking::Tokio(handle.spawn_blocking(work))
            }
            #[cfg(feature = "tokio")]
            Executor::CurrentTokio => unreachable!("resolved when the registry is created"),
        };
        async move {
            let outcome = match outcome {
                Blocking::Bastion(handle) => handle.await,
                #[cfg(feature = "tokio")]
                Blocking::Tokio(handle) => handle.await.ok(),
            };
            match outcome {
                Some(Ok(value)) => Ok(value),
                Some(Err(panic)) => resume_unwind(panic),
                None => Err(Unfinished),
            }
        }
    }
}

/// Blocking work the executor's pool dropped before it finished.
#[derive(Debug)]
pub(crate) struct Unfinished;

type Caught<R> = Result<R, Box<dyn Any + Send>>;

enum Blocking<R> {
    Bastion(RecoverableHandle<Caught<R>>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::JoinHandle<Caught<R>>),
}

fn spawn_proc<F>(future: F) -> RecoverableHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stack = STACK.try_with(ProcStack::clone).unwrap_or_default();
    bastion_executor::pool::spawn(future, stack)
}
