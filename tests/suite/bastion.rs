//! A registry inside a Bastion supervision tree: the modern spec and the legacy
//! helper (GenRegistry's six supervision tests), names, Bastion stopping and
//! restarting the registry's group, and calls in both directions between
//! workers and Bastion children.
//!
//! Bastion is started once for the suite and never stopped (stopping it is
//! final for the process).

use crate::common::*;
use bastion::prelude::*;
use gen_registry::{Context, Error, GenRegistry, Spec, Worker, timeout};
use std::sync::{Arc, Once};
use std::time::Duration;

fn bastion() {
    static START: Once = Once::new();
    START.call_once(|| {
        Bastion::init();
        Bastion::start();
    });
}

fn named(name: &str) -> GenRegistry<Probe> {
    GenRegistry::<Probe>::whereis_named(name).expect("the registry is published")
}

/// Whether no registry of `Probe` is published under `name`.
fn unpublished(name: &str) -> bool {
    matches!(
        GenRegistry::<Probe>::whereis_named(name),
        Err(Error::NotPublished(_))
    )
}

#[test]
fn a_modern_spec_runs_under_its_supervisor_and_is_found_by_worker_type() {
    bastion();
    run(10, async {
        let log = Log::new();
        // The one test of the suite that uses the default name (the type's).
        let spec = GenRegistry::<Probe>::child_spec(observed(&log)).unwrap();
        Bastion::supervisor(|sp| sp.children(spec)).unwrap();
        let registry = GenRegistry::<Probe>::whereis().unwrap();
        let w = registry.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_eq!(w.call(Req::Add(3)).await.unwrap(), 3);
        assert_eq!(GenRegistry::<Probe>::whereis().unwrap(), registry);
        // The name is the worker type's and is now taken.
        assert!(matches!(
            GenRegistry::<Probe>::child_spec(observed(&log)),
            Err(Error::NameTaken(name)) if name.ends_with("Probe")
        ));
    });
}

#[test]
fn two_modern_specs_with_custom_names_coexist_and_are_independent() {
    bastion();
    run(10, async {
        let log = Log::new();
        let a = GenRegistry::<Probe>::child_spec(observed(&log).name("modern-a")).unwrap();
        let b = GenRegistry::<Probe>::child_spec(observed(&log).name("modern-b")).unwrap();
        Bastion::supervisor(|sp| sp.children(a).children(b)).unwrap();
        let (a, b) = (named("modern-a"), named("modern-b"));
        assert_ne!(a, b);
        a.start(1, Args::new(&log).state(10)).await.unwrap();
        b.start(1, Args::new(&log).state(20)).await.unwrap();
        a.start(2, Args::new(&log)).await.unwrap();
        assert_eq!((a.count(), b.count()), (2, 1));
        assert_eq!(a.lookup(&1).unwrap().call(Req::Get).await.unwrap(), 10);
        assert_eq!(b.lookup(&1).unwrap().call(Req::Get).await.unwrap(), 20);
    });
}

#[test]
fn legacy_specs_give_whole_supervisors_and_custom_names_coexist() {
    bastion();
    run(10, async {
        let log = Log::new();
        let one = Spec::child_spec::<Probe>(observed(&log).name("legacy-1")).unwrap();
        let two = Spec::child_spec::<Probe>(observed(&log).name("legacy-2")).unwrap();
        Bastion::supervisor(one).unwrap();
        Bastion::supervisor(two).unwrap();
        let (one, two) = (named("legacy-1"), named("legacy-2"));
        assert_ne!(one, two);
        one.start(5, Args::new(&log)).await.unwrap();
        assert!(matches!(two.lookup(&5), Err(Error::NotFound)));
    });
}

#[test]
fn a_taken_name_is_refused_and_bad_options_are_refused_before_any_group_exists() {
    let log = Log::new();
    let _first = GenRegistry::<Probe>::child_spec(observed(&log).name("taken")).unwrap();
    match Spec::child_spec::<Probe>(observed(&log).name("taken")) {
        Err(e @ Error::NameTaken(_)) => assert!(e.to_string().contains("\"taken\"")),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a second registry took a taken name"),
    }
    // Other worker types have names of their own.
    assert!(
        GenRegistry::<Asker>::child_spec(gen_registry::Options::default().name("taken")).is_ok()
    );
    let zero = observed(&log).name("zero").start_timeout(Duration::ZERO);
    assert!(matches!(
        GenRegistry::<Probe>::child_spec(zero),
        Err(Error::InvalidOptions(_))
    ));
    assert!(unpublished("zero"));
    assert!(matches!(
        GenRegistry::<Probe>::child_spec(observed(&log).name("")),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn when_bastion_stops_the_group_every_worker_runs_terminate_and_the_name_is_free() {
    bastion();
    run(10, async {
        let log = Log::new();
        let spec = GenRegistry::<Probe>::child_spec(observed(&log).name("stopped")).unwrap();
        let supervisor = Bastion::supervisor(|sp| sp.children(spec)).unwrap();
        let registry = named("stopped");
        let mut workers = Vec::new();
        for id in 0..20 {
            workers.push(registry.start(id, Args::new(&log)).await.unwrap());
        }
        supervisor.stop().unwrap();
        wait_until(|| registry.is_stopped() && log.terminates() == 20).await;
        wait_until(|| GenRegistry::<Probe>::whereis_named("stopped").is_err()).await;
        assert_eq!(log.live(), 0);
        assert!(workers.iter().all(|w| !w.is_alive()));
        assert!(matches!(
            registry.start(1, Args::new(&log)).await,
            Err(Error::RegistryStopped)
        ));
        // Each worker reports `Stopped` after its terminate; the registry's
        // own event comes once the last has: wait for it, then check that
        // nothing came after it.
        wait_until(|| log.events().last().is_some_and(|e| e == "registry stopped")).await;
        assert_eq!(log.count_events("registry stopped"), 1);
        assert_eq!(log.events().last().unwrap(), "registry stopped");
        // The name can be used again.
        let _again = GenRegistry::<Probe>::child_spec(observed(&log).name("stopped")).unwrap();
    });
}

#[test]
fn when_bastion_restarts_the_group_a_new_empty_registry_takes_the_name() {
    bastion();
    run(20, async {
        let log = Log::new();
        let spec = GenRegistry::<Probe>::child_spec(observed(&log).name("restarted")).unwrap();
        let supervisor = Bastion::supervisor(|sp| {
            sp.with_strategy(SupervisionStrategy::OneForAll)
                .children(spec)
        })
        .unwrap();
        // A sibling that fails on demand: OneForAll restarts the registry too.
        let crasher = supervisor
            .children(|c| {
                c.with_exec(|ctx: BastionContext| async move {
                    loop {
                        let msg = ctx.recv().await?;
                        let crash = MessageHandler::new(msg)
                            .on_tell(|_: &'static str, _| true)
                            .on_fallback(|_, _| false);
                        if crash {
                            return Err(());
                        }
                    }
                })
            })
            .unwrap();
        let old = named("restarted");
        let worker = old.start(1, Args::new(&log).state(9)).await.unwrap();
        crasher.elems()[0].tell_anonymously("crash").unwrap();

        wait_until(|| GenRegistry::<Probe>::whereis_named("restarted").is_ok_and(|new| new != old))
            .await;
        let new = named("restarted");
        assert_eq!(new.count(), 0);
        // The old incarnation is shut down: its worker ran terminate, and
        // handles to it say so.
        wait_until(|| old.is_stopped() && log.terminates() == 1).await;
        assert!(matches!(old.lookup(&1), Err(Error::RegistryStopped)));
        assert!(matches!(
            worker.call(Req::Get).await,
            Err(Error::WorkerEnded)
        ));
        // The new one works and knows nothing of the old workers.
        let fresh = new.lookup_or_start(1, Args::new(&log)).await.unwrap();
        assert_eq!(fresh.call(Req::Get).await.unwrap(), 0);
        assert_ne!(fresh, worker);
        supervisor.stop().unwrap();
    });
}

/// A worker that asks a Bastion child (its args) and replies with the answer.
struct Asker {
    child: ChildRef,
}

impl Worker for Asker {
    type Id = u64;
    type Args = ChildRef;
    type Request = u64;
    type Reply = Option<u64>;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, child: ChildRef, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Asker { child })
    }

    async fn handle_call(&mut self, x: u64, _: &mut Context<Self>) -> Option<u64> {
        // Bastion's asks have no timeout of their own.
        let answer = self.child.ask_anonymously(x).ok()?;
        let reply = timeout(Duration::from_secs(5), answer).await.ok()?.ok()?;
        MessageHandler::new(reply)
            .on_tell(|v: u64, _| Some(v))
            .on_fallback(|_, _| None)
    }
}

#[test]
fn a_worker_asks_a_bastion_child_and_a_bastion_child_calls_a_worker() {
    bastion();
    run(10, async {
        // Worker → Bastion child: a doubling child answers a worker's asks.
        let doubler = Bastion::children(|c| {
            c.with_exec(|ctx: BastionContext| async move {
                loop {
                    MessageHandler::new(ctx.recv().await?)
                        .on_question(|x: u64, sender| {
                            let _ = sender.reply(x * 2);
                        })
                        .on_fallback(|_, _| ());
                }
            })
        })
        .unwrap();
        let askers = GenRegistry::<Asker>::new(gen_registry::Options::default()).unwrap();
        let asker = askers
            .lookup_or_start(1, doubler.elems()[0].clone())
            .await
            .unwrap();
        assert_eq!(asker.call(21).await.unwrap(), Some(42));

        // Bastion child → worker: a child's exec finds a registry by name and
        // calls a worker; it reports the reply on a channel.
        let log = Log::new();
        let spec = GenRegistry::<Probe>::child_spec(observed(&log).name("called")).unwrap();
        Bastion::supervisor(|sp| sp.children(spec)).unwrap();
        let (tx, rx) = futures::channel::oneshot::channel();
        let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
        let args = Args::new(&log).state(100);
        Bastion::children(move |c| {
            let (tx, args) = (tx.clone(), args.clone());
            c.with_exec(move |_ctx: BastionContext| {
                let (tx, args) = (tx.clone(), args.clone());
                async move {
                    let registry = GenRegistry::<Probe>::whereis_named("called").map_err(|_| ())?;
                    let worker = registry.lookup_or_start(7, args).await.map_err(|_| ())?;
                    let reply = worker.call(Req::Add(1)).await.map_err(|_| ())?;
                    if let Some(tx) = tx.lock().take() {
                        let _ = tx.send(reply);
                    }
                    Ok(())
                }
            })
        })
        .unwrap();
        assert_eq!(rx.await.unwrap(), 101);
        assert_eq!(
            named("called")
                .lookup(&7)
                .unwrap()
                .call(Req::Get)
                .await
                .unwrap(),
            101
        );
    });
}

#[test]
fn a_spec_dropped_without_a_supervisor_frees_its_name_and_shuts_its_registry_down() {
    run(10, async {
        let log = Log::new();
        let spec = GenRegistry::<Probe>::child_spec(observed(&log).name("dropped")).unwrap();
        let registry = named("dropped");
        registry.start(1, Args::new(&log)).await.unwrap();
        drop(spec);
        assert!(unpublished("dropped"));
        let _again = GenRegistry::<Probe>::child_spec(observed(&log).name("dropped")).unwrap();
        assert_ne!(named("dropped"), registry);
        wait_until(|| registry.is_stopped() && log.terminates() == 1).await;
    });
}

#[test]
fn whereis_with_nothing_published_says_nothing_is_published_under_the_name() {
    match GenRegistry::<Asker>::whereis() {
        Err(e @ Error::NotPublished(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("published") && text.contains("Asker"),
                "{text}"
            );
            assert!(!text.contains("lookup_or_start"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        GenRegistry::<Probe>::whereis_named("nobody"),
        Err(Error::NotPublished(name)) if name == "nobody"
    ));
}

#[test]
fn a_registry_from_new_with_a_name_is_published_under_it_and_the_name_is_exclusive() {
    let log = Log::new();
    let registry = GenRegistry::<Probe>::new(observed(&log).name("standalone")).unwrap();
    assert_eq!(named("standalone"), registry);
    assert!(matches!(
        GenRegistry::<Probe>::new(observed(&log).name("standalone")),
        Err(Error::NameTaken(name)) if name == "standalone"
    ));
    assert!(matches!(
        GenRegistry::<Probe>::child_spec(observed(&log).name("standalone")),
        Err(Error::NameTaken(_))
    ));
    // A spec's name is just as exclusive for `new`.
    let _spec = GenRegistry::<Probe>::child_spec(observed(&log).name("spec-first")).unwrap();
    assert!(matches!(
        GenRegistry::<Probe>::new(observed(&log).name("spec-first")),
        Err(Error::NameTaken(_))
    ));
    // Unnamed registries are not published, and do not collide.
    let (_a, _b) = (registry_with(observed(&log)), registry_with(observed(&log)));
}

#[test]
fn a_named_registry_from_new_is_withdrawn_when_it_shuts_down() {
    run(10, async {
        let log = Log::new();
        let registry = GenRegistry::<Probe>::new(observed(&log).name("shut")).unwrap();
        registry.shutdown().await;
        assert!(unpublished("shut"));
        let again = GenRegistry::<Probe>::new(observed(&log).name("shut")).unwrap();
        assert_eq!(named("shut"), again);
    });
}

#[test]
fn a_named_registry_from_new_is_not_kept_alive_by_its_name() {
    run(10, async {
        let log = Log::new();
        let registry = GenRegistry::<Probe>::new(observed(&log).name("dropped-new")).unwrap();
        registry.start(1, Args::new(&log)).await.unwrap();
        drop(registry);
        // The name is free at once; the registry shuts down in the background.
        assert!(unpublished("dropped-new"));
        let _again = GenRegistry::<Probe>::new(observed(&log).name("dropped-new")).unwrap();
        wait_until(|| log.terminates() == 1).await;
    });
}
