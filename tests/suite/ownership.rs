//! Who owns an id, as a worker sees it: the epoch and the node name its
//! registry was given, read from its context; a hand-over, which ends the
//! workers as moved with their `terminate` run; and state handed from one
//! owner to the next through a store, with the old owner's late writes
//! refused by epoch.

use crate::common;
use futures::channel::oneshot;
use gen_registry::doc_support::wait_until;
use gen_registry::state::{StateError, Store, Stored};
use gen_registry::{Context, Error, ExitReason, GenRegistry, Options, Worker};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why each worker ended, by id.
type Ends = Arc<Mutex<Vec<(u64, ExitReason)>>>;

/// Opened once by its sender; taken by the first `init` that waits on it.
type Gate = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

#[derive(Clone)]
struct Args {
    store: Store,
    ends: Ends,
    /// `init` sets the flag, then waits for the gate before it returns.
    gate: Option<(Arc<AtomicBool>, Gate)>,
}

impl Args {
    fn new(store: &Store, ends: &Ends) -> Args {
        Args {
            store: store.clone(),
            ends: ends.clone(),
            gate: None,
        }
    }
}

/// A number per id, kept in a store and flushed in `terminate`.
struct Keeper {
    value: Stored<u64>,
    ends: Ends,
}

enum Req {
    /// What the context says: epoch, node, whether the epoch is held.
    Where,
    Get,
    /// Changes the value without writing it.
    Set(u64),
    /// Changes the value and writes it.
    Write(u64),
}

#[derive(Debug)]
enum Reply {
    Where(Option<u64>, Option<String>, bool),
    Value(u64),
    Done,
    Written(Result<(), StateError>),
}

impl Worker for Keeper {
    type Id = u64;
    type Args = Args;
    type Request = Req;
    type Reply = Reply;
    type Message = ();
    type Error = StateError;

    async fn init(_: &u64, args: Args, ctx: &Context<Self>) -> Result<Self, StateError> {
        let value = Stored::load_for(&args.store, "keeper", ctx).await?;
        if let Some((entered, gate)) = args.gate {
            entered.store(true, Ordering::Release);
            let gate = gate.lock().take();
            if let Some(gate) = gate {
                let _ = gate.await;
            }
        }
        Ok(Keeper {
            value,
            ends: args.ends,
        })
    }

    async fn handle_call(&mut self, req: Req, ctx: &mut Context<Self>) -> Reply {
        match req {
            Req::Where => Reply::Where(
                ctx.epoch(),
                ctx.node().map(str::to_string),
                ctx.holds_epoch(),
            ),
            Req::Get => Reply::Value(*self.value),
            Req::Set(n) => {
                self.value.set(n);
                Reply::Done
            }
            Req::Write(n) => {
                self.value.set(n);
                Reply::Written(self.value.write().await)
            }
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        if !reason.is_abnormal() {
            let _ = self.value.flush().await;
        }
        self.ends.lock().push((*ctx.id(), reason.clone()));
    }
}

fn fresh() -> (Store, Ends) {
    (Store::memory(), Arc::new(Mutex::new(Vec::new())))
}

/// One store, and two registries owning the same ids one after the other:
/// the old one at epoch 1, the new one at epoch 2.
fn two_owners() -> (Store, GenRegistry<Keeper>, GenRegistry<Keeper>, Args) {
    let (store, ends) = fresh();
    let old = GenRegistry::<Keeper>::new(Options::default().epoch(1)).unwrap();
    let new = GenRegistry::<Keeper>::new(Options::default().epoch(2)).unwrap();
    let args = Args::new(&store, &ends);
    (store, old, new, args)
}

#[test]
fn a_worker_reads_its_registry_s_epoch_node_and_epoch_check_from_its_context() {
    let (store, ends) = fresh();
    let held = Arc::new(AtomicBool::new(true));
    let check = held.clone();
    let owned = GenRegistry::<Keeper>::new(
        Options::default()
            .epoch(5)
            .node("node-a")
            .epoch_check(move || check.load(Ordering::Acquire)),
    )
    .unwrap();
    let plain = GenRegistry::<Keeper>::new(Options::default()).unwrap();
    let args = Args::new(&store, &ends);
    common::run(10, async move {
        let seen = owned.call(1, args.clone(), Req::Where).await.unwrap();
        assert!(
            matches!(&seen, Reply::Where(Some(5), Some(n), true) if n == "node-a"),
            "{seen:?}"
        );
        held.store(false, Ordering::Release);
        let seen = owned.call(1, args.clone(), Req::Where).await.unwrap();
        assert!(matches!(seen, Reply::Where(Some(5), _, false)), "{seen:?}");
        let seen = plain.call(1, args, Req::Where).await.unwrap();
        assert!(matches!(seen, Reply::Where(None, None, true)), "{seen:?}");
        owned.shutdown().await;
        plain.shutdown().await;
    });
}

#[test]
fn a_hand_over_ends_every_worker_as_moved_and_a_shutdown_as_shut_down() {
    let (store, ends) = fresh();
    let moved = GenRegistry::<Keeper>::new(Options::default()).unwrap();
    let shut = GenRegistry::<Keeper>::new(Options::default()).unwrap();
    let args = Args::new(&store, &ends);
    let log = ends.clone();
    common::run(10, async move {
        for id in 0..3 {
            moved.lookup_or_start(id, args.clone()).await.unwrap();
            shut.lookup_or_start(10 + id, args.clone()).await.unwrap();
        }
        let report = moved.hand_over().await;
        assert_eq!((report.terminated, report.aborted), (3, 0));
        assert!(moved.is_stopped());
        assert!(matches!(
            moved.lookup_or_start(0, args.clone()).await,
            Err(Error::RegistryStopped)
        ));
        shut.shutdown().await;
    });
    let mut ends = log.lock().clone();
    ends.sort_by_key(|(id, _)| *id);
    let expected: Vec<(u64, ExitReason)> = (0..3)
        .map(|id| (id, ExitReason::Moved))
        .chain((10..13).map(|id| (id, ExitReason::Shutdown)))
        .collect();
    assert_eq!(ends, expected);
    assert!(!ExitReason::Moved.is_abnormal());
}

#[test]
fn a_worker_still_in_init_when_its_registry_is_handed_over_ends_as_moved() {
    let (store, ends) = fresh();
    let registry = GenRegistry::<Keeper>::new(Options::default()).unwrap();
    let (open, gate) = oneshot::channel();
    let entered = Arc::new(AtomicBool::new(false));
    let mut args = Args::new(&store, &ends);
    args.gate = Some((entered.clone(), Arc::new(Mutex::new(Some(gate)))));
    let log = ends.clone();
    common::run(10, async move {
        let starting = {
            let registry = registry.clone();
            common::spawn(async move { registry.lookup_or_start(1, args).await })
        };
        wait_until(|| entered.load(Ordering::Acquire)).await;
        let handing = {
            let registry = registry.clone();
            common::spawn(async move { registry.hand_over().await })
        };
        wait_until(|| registry.is_stopped()).await;
        let _ = open.send(());
        assert!(starting.await.is_err(), "the start outlived the hand-over");
        handing.await;
    });
    assert_eq!(log.lock().clone(), vec![(1, ExitReason::Moved)]);
}

#[test]
fn state_flushed_by_an_owner_handing_over_is_what_the_next_owner_loads() {
    let (store, old, new, args) = two_owners();
    common::run(10, async move {
        // Changed, never written: only the flush in `terminate` keeps it.
        assert!(matches!(
            old.call(7, args.clone(), Req::Set(41)).await,
            Ok(Reply::Done)
        ));
        old.hand_over().await;
        let got = new.call(7, args.clone(), Req::Get).await.unwrap();
        assert!(matches!(got, Reply::Value(41)), "{got:?}");
        let wrote = new.call(7, args.clone(), Req::Write(42)).await.unwrap();
        assert!(matches!(wrote, Reply::Written(Ok(()))), "{wrote:?}");
        let saved = Stored::<u64>::load(&store, "keeper", &7u64).await.unwrap();
        assert_eq!((*saved, saved.version(), saved.epoch()), (42, 2, 2));
        new.shutdown().await;
    });
}

#[test]
fn an_old_owner_is_refused_by_the_store_once_a_newer_owner_wrote() {
    let (store, old, new, args) = two_owners();
    common::run(10, async move {
        // Both owners run a worker of id 3: the old one loaded first.
        assert!(matches!(
            old.call(3, args.clone(), Req::Get).await,
            Ok(Reply::Value(0))
        ));
        let wrote = new.call(3, args.clone(), Req::Write(2)).await.unwrap();
        assert!(matches!(wrote, Reply::Written(Ok(()))), "{wrote:?}");
        // The old owner's write is refused by epoch...
        let late = old.call(3, args.clone(), Req::Write(1)).await.unwrap();
        assert!(
            matches!(
                late,
                Reply::Written(Err(StateError::Fenced {
                    epoch: 1,
                    last: 2,
                    ..
                }))
            ),
            "{late:?}"
        );
        // ...and a worker it starts for another id written at epoch 2
        // fails its start: it would run on state it does not own.
        let wrote = new.call(4, args.clone(), Req::Write(2)).await.unwrap();
        assert!(matches!(wrote, Reply::Written(Ok(()))), "{wrote:?}");
        match old.call(4, args.clone(), Req::Get).await {
            Err(Error::Init(StateError::Fenced {
                epoch: 1, last: 2, ..
            })) => {}
            other => panic!("the old owner started id 4: {other:?}"),
        }
        old.stop(&3).await.unwrap();
        let saved = Stored::<u64>::load(&store, "keeper", &3u64).await.unwrap();
        assert_eq!((*saved, saved.epoch()), (2, 2), "the flush was refused too");
        old.shutdown().await;
        new.shutdown().await;
    });
}
