//! A worker that waits on itself, and `kill`: a worker calling its own handle
//! is told at once; a handler that stops its own id or shuts its registry
//! down ends after that handler with `terminate`; once `kill` returns, the
//! killed worker takes no mail and no lookup returns it. Each runs on every
//! executor the build has.

use crate::common;
use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// Why each worker ended, by id.
type Ends = Arc<Mutex<Vec<(u32, ExitReason)>>>;

struct Selfish {
    ends: Ends,
}

enum Ask {
    /// Call its own handle.
    CallSelf,
    /// `registry.stop(own id)`.
    StopOwnId,
    /// `registry.shutdown()`.
    Shutdown,
    Ping,
}

impl Worker for Selfish {
    type Id = u32;
    type Args = Ends;
    type Request = Ask;
    type Reply = String;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, ends: Ends, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Selfish { ends })
    }

    async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> String {
        match ask {
            Ask::CallSelf => {
                let me = ctx.handle().clone();
                format!("{:?}", me.call(Ask::Ping).await)
            }
            Ask::StopOwnId => {
                let registry = ctx.registry().expect("registry alive");
                format!("{:?}", registry.stop(ctx.id()).await)
            }
            Ask::Shutdown => {
                let registry = ctx.registry().expect("registry alive");
                registry.shutdown().await;
                "shut down".into()
            }
            Ask::Ping => "pong".into(),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        self.ends.lock().push((*ctx.id(), reason.clone()));
    }
}

fn registry_on(executor: Executor) -> GenRegistry<Selfish> {
    // A long call timeout: a call that waited it out would make the test
    // time out rather than pass.
    GenRegistry::new(Options::default().executor(executor)).unwrap()
}

#[test]
fn a_worker_calling_its_own_handle_is_told_at_once() {
    for (executor, _runtime) in common::every_executor() {
        let ends = Ends::default();
        let registry = registry_on(executor);
        futures::executor::block_on(async {
            let worker = registry.lookup_or_start(1, ends.clone()).await.unwrap();
            let reply = worker
                .call_timeout(Ask::CallSelf, Duration::from_secs(60))
                .await;
            assert_eq!(reply.unwrap(), "Err(CalledSelf)");
            // Still alive and serving.
            assert_eq!(worker.call(Ask::Ping).await.unwrap(), "pong");
            registry.shutdown().await;
        });
    }
}

#[test]
fn a_call_from_a_task_the_worker_spawned_is_not_a_self_call() {
    // Only the worker's own future is "itself": another task may call it.
    let registry = registry_on(Executor::Bastion);
    futures::executor::block_on(async {
        let worker = registry.lookup_or_start(1, Ends::default()).await.unwrap();
        let other = worker.clone();
        let reply = bastion::executor::spawn(async move { other.call(Ask::Ping).await })
            .await
            .unwrap();
        assert_eq!(reply.unwrap(), "pong");
        registry.shutdown().await;
    });
}

#[test]
fn a_handler_stopping_its_own_id_ends_after_the_handler_with_terminate() {
    for (executor, _runtime) in common::every_executor() {
        let ends = Ends::default();
        let registry = registry_on(executor);
        futures::executor::block_on(async {
            let worker = registry.lookup_or_start(7, ends.clone()).await.unwrap();
            let reply = worker
                .call_timeout(Ask::StopOwnId, Duration::from_secs(60))
                .await;
            assert_eq!(reply.unwrap(), "Ok(())");
            gen_registry::doc_support::wait_until(|| {
                registry.lookup(&7).is_err() && !ends.lock().is_empty()
            })
            .await;
            assert_eq!(*ends.lock(), [(7, ExitReason::Stopped)]);
            assert!(!worker.is_alive());
        });
    }
}

#[test]
fn a_handler_shutting_its_registry_down_runs_every_terminate() {
    for (executor, _runtime) in common::every_executor() {
        let ends = Ends::default();
        let registry = registry_on(executor);
        futures::executor::block_on(async {
            for id in 0..10 {
                registry.lookup_or_start(id, ends.clone()).await.unwrap();
            }
            let worker = registry.lookup(&0).unwrap();
            let reply = worker
                .call_timeout(Ask::Shutdown, Duration::from_secs(60))
                .await;
            assert_eq!(reply.unwrap(), "shut down");
            gen_registry::doc_support::wait_until(|| ends.lock().len() == 10).await;
            assert!(
                ends.lock()
                    .iter()
                    .all(|(_, reason)| *reason == ExitReason::Shutdown)
            );
            registry.shutdown().await;
            assert_eq!(registry.count(), 0);
            assert!(matches!(registry.lookup(&0), Err(Error::RegistryStopped)));
        });
    }
}

#[test]
fn once_kill_returns_the_worker_takes_no_mail_and_no_lookup_returns_it() {
    for (executor, _runtime) in common::every_executor() {
        let ends = Ends::default();
        let registry = registry_on(executor);
        futures::executor::block_on(async {
            for round in 0..1000 {
                let worker = registry.lookup_or_start(1, ends.clone()).await.unwrap();
                worker.kill();
                assert!(!worker.is_alive(), "round {round}: alive after kill");
                assert!(
                    registry.lookup(&1).is_err(),
                    "round {round}: found after kill"
                );
                assert!(
                    matches!(worker.call(Ask::Ping).await, Err(Error::WorkerEnded)),
                    "round {round}: a killed worker answered"
                );
                assert!(
                    worker.cast(()).is_err(),
                    "round {round}: a killed worker took a cast"
                );
                let next = registry.lookup_or_start(1, ends.clone()).await.unwrap();
                assert_ne!(
                    next, worker,
                    "round {round}: lookup_or_start gave the killed worker"
                );
                next.kill();
            }
            registry.shutdown().await;
        });
        assert!(ends.lock().is_empty(), "a killed worker ran terminate");
    }
}

/// Whether each dropped [`Witness`] was already seen ended when its state
/// was dropped.
type Drops = Arc<Mutex<Vec<bool>>>;

/// A worker that holds its own handle, to check at its drop whether it is
/// already seen ended.
struct Witness {
    me: gen_registry::WorkerRef<Witness>,
    drops: Drops,
}

impl Worker for Witness {
    type Id = u32;
    type Args = Drops;
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, drops: Drops, ctx: &Context<Self>) -> Result<Self, Self::Error> {
        let me = ctx.handle().clone();
        Ok(Witness { me, drops })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
}

impl Drop for Witness {
    fn drop(&mut self) {
        use futures::FutureExt;
        let ended = self.me.monitor().now_or_never().is_some();
        self.drops.lock().push(ended);
    }
}

#[test]
fn a_killed_workers_state_is_dropped_before_it_is_seen_ended() {
    for (executor, _runtime) in common::every_executor() {
        let drops = Drops::default();
        let registry = GenRegistry::<Witness>::new(Options::default().executor(executor)).unwrap();
        futures::executor::block_on(async {
            for id in 0..100 {
                let worker = registry.start(id, drops.clone()).await.unwrap();
                worker.call(()).await.unwrap();
                worker.kill();
                worker.monitor().await;
            }
            common::wait_until(|| drops.lock().len() == 100).await;
            registry.shutdown().await;
        });
        let drops = drops.lock();
        assert!(
            drops.iter().all(|ended| !ended),
            "{} of {} killed workers were seen ended before their state was dropped",
            drops.iter().filter(|ended| **ended).count(),
            drops.len()
        );
    }
}
