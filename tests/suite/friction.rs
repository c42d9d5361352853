//! What a user's worker may look like, and what the registry does with it:
//! args that are not `Clone`, init errors of the usual shapes, ids of any
//! size, a lookup that needs no owned id, the call timeout as an option, and
//! when events are reported.

use crate::common::*;
use futures::channel::oneshot;
use gen_registry::{Context, Error, GenRegistry, Options, RestartPolicy, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The events a registry with these options reports, as text.
type Recorded = Arc<parking_lot::Mutex<Vec<String>>>;

/// Options whose observer records every event, and the record.
fn recorded<W: Worker>() -> (Recorded, Options<W>) {
    let events = Recorded::default();
    let seen = events.clone();
    let options = Options::default().observe(move |event: &gen_registry::Event<'_, W>| {
        seen.lock().push(event.to_string());
    });
    (events, options)
}

// ---- Args need not be Clone ----

/// A worker whose args are a one-shot sender: it tells its starter its id.
struct Announcer;

impl Worker for Announcer {
    type Id = u64;
    type Args = oneshot::Sender<u64>;
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(
        id: &u64,
        told: oneshot::Sender<u64>,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        let _ = told.send(*id);
        Ok(Announcer)
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
}

#[test]
fn args_need_not_be_clone_without_a_restart_policy() {
    run(10, async {
        let registry = GenRegistry::<Announcer>::new(Options::default()).unwrap();
        let (tx, rx) = oneshot::channel();
        registry.start(7, tx).await.unwrap();
        assert_eq!(rx.await.unwrap(), 7);
        registry.shutdown().await;
    });
}

/// Args that count their clones.
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counted(self.0.clone())
    }
}

/// A worker that panics on request `true`.
struct Fragile;

impl Worker for Fragile {
    type Id = u64;
    type Args = Counted;
    type Request = bool;
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, _: Counted, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Fragile)
    }

    async fn handle_call(&mut self, crash: bool, _: &mut Context<Self>) {
        assert!(!crash, "deliberate crash");
    }
}

#[test]
fn args_are_cloned_once_per_start_and_once_per_restart_only_under_a_restart_policy() {
    run(10, async {
        let clones = Arc::new(AtomicUsize::new(0));
        let args = || Counted(clones.clone());
        let never = GenRegistry::<Fragile>::new(Options::default()).unwrap();
        never.start(1, args()).await.unwrap();
        never.lookup_or_start(1, args()).await.unwrap();
        assert_eq!(clones.load(Ordering::SeqCst), 0);

        let always =
            GenRegistry::<Fragile>::new(Options::default().restart(RestartPolicy::Always)).unwrap();
        let worker = always.start(1, args()).await.unwrap();
        always.lookup_or_start(1, args()).await.unwrap();
        assert_eq!(
            clones.load(Ordering::SeqCst),
            1,
            "one clone kept at the start"
        );
        assert!(worker.call(true).await.is_err());
        // The restart's init runs with a clone of the kept one.
        wait_until(|| clones.load(Ordering::SeqCst) == 2).await;
        worker.call(false).await.unwrap();
        assert_eq!(clones.load(Ordering::SeqCst), 2);
        never.shutdown().await;
        always.shutdown().await;
    });
}

// ---- init errors of the usual shapes ----

/// A worker whose init fails with the error its args make.
struct Refusing<E>(std::marker::PhantomData<E>);

impl<E: std::fmt::Debug + std::fmt::Display + Send + 'static> Worker for Refusing<E> {
    type Id = u64;
    type Args = fn() -> E;
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = E;

    async fn init(_: &u64, error: fn() -> E, _: &Context<Self>) -> Result<Self, E> {
        Err(error())
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
}

/// The error a registry of `Refusing<E>` returns for a start.
fn refused<E: std::fmt::Debug + std::fmt::Display + Send + 'static>(
    error: fn() -> E,
) -> Error<Refusing<E>> {
    run(10, async move {
        let registry = GenRegistry::<Refusing<E>>::new(Options::default()).unwrap();
        registry.start(1, error).await.unwrap_err()
    })
}

#[test]
fn an_init_error_may_be_a_string() {
    let error = refused(|| "no such account".to_string());
    assert!(matches!(&error, Error::Init(text) if text == "no such account"));
    assert!(error.to_string().ends_with(": no such account"), "{error}");
    assert!(std::error::Error::source(&error).is_none());
}

/// An error with a cause, to follow the chain through a boxed init error.
#[derive(Debug)]
struct Unreachable(std::num::ParseIntError);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the account store is unreachable")
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn an_init_error_may_be_a_boxed_error_and_its_causes_stay_reachable() {
    type Boxed = Box<dyn std::error::Error + Send + Sync>;
    let error = refused::<Boxed>(|| Box::new(Unreachable("x".parse::<u8>().unwrap_err())));
    assert!(
        error
            .to_string()
            .ends_with(": the account store is unreachable"),
        "{error}"
    );
    let cause = std::error::Error::source(&error).expect("the boxed error's cause");
    assert_eq!(cause.to_string(), "invalid digit found in string");
    // The registry's error converts into a boxed error itself, so `?` works
    // in a function that returns one.
    let converted: Boxed = error.into();
    assert!(converted.to_string().contains("unreachable"));
}

// ---- ids of any size ----

/// A worker with a `String` id.
struct Named;

impl Worker for Named {
    type Id = String;
    type Args = ();
    type Request = ();
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Named)
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
}

#[test]
fn a_huge_id_is_cut_in_errors_events_and_debug_output_with_its_length_named() {
    let (events, options) = recorded::<Named>();
    run(10, async move {
        let registry = GenRegistry::new(options).unwrap();
        let id = "a".repeat(1 << 20);
        let worker = registry.start(id.clone(), ()).await.unwrap();
        let error = registry.start(id.clone(), ()).await.unwrap_err();
        let cut = format!("\"{}… (1048578 bytes)", "a".repeat(63));
        let texts = [
            error.to_string(),
            format!("{error:?}"),
            format!("{worker:?}"),
            events.lock()[0].clone(),
        ];
        for text in texts {
            assert!(text.len() < 300, "{} bytes: {}", text.len(), &text[..300]);
            assert!(text.contains(&cut), "{text}");
        }
        registry.shutdown().await;
    });
}

// ---- a lookup that needs no owned id ----

#[test]
fn lookup_or_start_with_makes_its_args_only_to_start() {
    run(10, async {
        let registry = GenRegistry::<Named>::new(Options::default()).unwrap();
        let made = AtomicUsize::new(0);
        let args = || {
            made.fetch_add(1, Ordering::SeqCst);
        };
        let started = registry.lookup_or_start_with("alice", args).await.unwrap();
        assert_eq!(started.id(), "alice");
        assert_eq!(made.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            let found = registry.lookup_or_start_with("alice", args).await.unwrap();
            assert_eq!(found, started);
        }
        assert_eq!(made.load(Ordering::SeqCst), 1, "a hit makes no args");
        registry.stop("alice").await.unwrap();
        registry.lookup_or_start_with("alice", args).await.unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 2);
        registry.shutdown().await;
    });
}

#[test]
fn args_that_panic_in_lookup_or_start_with_leave_the_id_free() {
    run(10, async {
        let registry = GenRegistry::<Named>::new(Options::default()).unwrap();
        let panicked = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            registry.lookup_or_start_with("bob", || panic!("deliberate: no args")),
        ))
        .await;
        assert!(panicked.is_err());
        assert_eq!(registry.count(), 0);
        registry.lookup_or_start_with("bob", || ()).await.unwrap();
        assert_eq!(registry.count(), 1);
        registry.shutdown().await;
    });
}

// ---- the call timeout is an option ----

#[test]
fn call_waits_the_call_timeout_of_the_registrys_options() {
    run(10, async {
        let log = Log::new();
        let short = std::time::Duration::from_millis(20);
        let registry = registry_with(Options::default().call_timeout(short));
        let worker = registry.start(1, Args::new(&log)).await.unwrap();
        match worker.call(Req::Hang).await {
            Err(Error::CallTimeout(waited)) => assert_eq!(waited, short),
            other => panic!("{other:?}"),
        }
        // A call's own timeout still wins.
        let own = std::time::Duration::from_millis(30);
        assert!(matches!(
            worker.call_timeout(Req::Hang, own).await,
            Err(Error::CallTimeout(waited)) if waited == own
        ));
        // Its handler never returns: no stop could end it.
        worker.kill();
    });
    let zero = Options::<Probe>::default().call_timeout(std::time::Duration::ZERO);
    assert!(matches!(
        GenRegistry::new(zero),
        Err(Error::InvalidOptions(why)) if why.contains("call_timeout")
    ));
}

// ---- when events are reported ----

/// A worker whose `terminate` waits until its gate opens.
struct SlowToEnd {
    gate: Option<oneshot::Receiver<()>>,
}

impl Worker for SlowToEnd {
    type Id = u64;
    type Args = oneshot::Receiver<()>;
    type Request = bool; // `true` panics, `false` stops the worker
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(
        _: &u64,
        gate: oneshot::Receiver<()>,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(SlowToEnd { gate: Some(gate) })
    }

    async fn handle_call(&mut self, panic: bool, ctx: &mut Context<Self>) {
        assert!(!panic, "deliberate panic");
        ctx.stop();
    }

    async fn terminate(&mut self, _: &gen_registry::ExitReason, _: &mut Context<Self>) {
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
    }
}

#[test]
fn a_caller_is_answered_before_the_events_of_the_end_its_call_caused() {
    let (events, options) = recorded::<SlowToEnd>();
    run(10, async move {
        let registry = GenRegistry::new(options).unwrap();
        for (id, panic) in [(1, true), (2, false)] {
            let (open, gate) = oneshot::channel();
            let worker = registry.start(id, gate).await.unwrap();
            assert_eq!(
                *events.lock(),
                [format!("worker {id} started")],
                "before start returned"
            );
            let reply = worker.call(panic).await;
            assert_eq!(reply.is_err(), panic);
            // Answered, while `terminate` still waits: nothing reported yet.
            assert_eq!(events.lock().len(), 1, "{:?}", events.lock());
            open.send(()).unwrap();
            let stopped = format!("worker {id} stopped");
            wait_until(|| events.lock().iter().any(|e| e.starts_with(&stopped))).await;
            events.lock().clear();
        }
        registry.shutdown().await;
    });
}
