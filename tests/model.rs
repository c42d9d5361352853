//! Model-based test: random sequences of registry operations on a small pool
//! of ids, each step checked against a reference model of which worker lives
//! under which id and what its state is.
//!
//! It proves, for every generated sequence (and proptest shrinks any failure to
//! a minimal one), under each restart policy (never, always, at most 1 or 2
//! restarts): each result is the one the model predicts (lookups, starts,
//! stops, calls and casts, including panicking and failing inits, panicking
//! handlers — which end the worker or restart it with its first state under
//! the same handles — and workers that stop themselves); after every step `count()`,
//! `to_list()` and `reduce` agree with the model, never two workers of one id
//! are alive (the probe log's overlaps), no ended worker is reachable by
//! `lookup`, every old handle of an ended worker is dead and fails at once,
//! exactly one `init` runs per start that the model says must start, every
//! call is answered or errored within a deadline, and after `shutdown` nothing
//! is left.
//!
//! Size: `GEN_REGISTRY_MODEL_CASES` sequences (250 by default; CI, in
//! `.ci/run`, runs 1000) of up to `GEN_REGISTRY_MODEL_STEPS` operations
//! (default 64).

mod common;

use common::*;
use gen_registry::{Error, GenRegistry, Options, RestartPolicy, WorkerRef};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Ids are drawn from `0..IDS`: few enough that operations collide often.
const IDS: u64 = 6;
/// No call may take longer than this; a `CallTimeout` is reported as a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// How a start's `init` behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InitKind {
    Ok,
    /// `init` returns an error.
    Fail,
    /// `init` panics.
    Panic,
}

/// What a call asks of the worker.
#[derive(Clone, Copy, Debug)]
enum CallKind {
    Get,
    Add(u64),
    /// The handler replies and calls `ctx.stop()`.
    StopSelf,
    /// The handler panics.
    Panic,
}

/// Which handle an operation on a worker goes through.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// A fresh `lookup` (an ended worker must not be found).
    Lookup,
    /// The last handle the test was given for the id, possibly of a worker
    /// that has ended since (it must fail at once, never reach a newer one).
    LastHandle,
}

#[derive(Clone, Debug)]
enum Op {
    Lookup(u64),
    /// id, how its init behaves, the state it starts with.
    LookupOrStart(u64, InitKind, u64),
    Start(u64, InitKind, u64),
    Stop(u64),
    Call(u64, Via, CallKind),
    Cast(u64, Via, u64),
    /// `registry.call(id, args, request)`: id, how an init it needs
    /// behaves, the state it starts with, the request.
    CallById(u64, InitKind, u64, CallKind),
}

/// What the registry does with a worker whose handler panicked: each restart
/// policy, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// The worker ends (GenRegistry's behaviour).
    Never,
    /// The worker restarts, every time, with the state of its first start.
    Always,
    /// The worker restarts at most this many times (the window is an hour:
    /// it never expires during a case), then ends.
    Tries(u32),
}

/// The registry options that give `policy`.
fn options(policy: Policy) -> Options<Probe> {
    let options = match policy {
        Policy::Never => Options::default(),
        Policy::Always => Options::default().restart(RestartPolicy::Always),
        Policy::Tries(restarts) => Options::default().restart(RestartPolicy::Tries {
            restarts,
            within: std::time::Duration::from_secs(3600),
        }),
    };
    options.executor(common::executor())
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Never),
        Just(Policy::Always),
        (1..3u32).prop_map(Policy::Tries)
    ]
}

#[derive(Clone, Debug)]
struct Case {
    policy: Policy,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let id = || 0..IDS;
    let init = || {
        prop_oneof![
            8 => Just(InitKind::Ok),
            1 => Just(InitKind::Fail),
            1 => Just(InitKind::Panic),
        ]
    };
    let via = prop_oneof![Just(Via::Lookup), Just(Via::LastHandle)];
    let call = prop_oneof![
        4 => Just(CallKind::Get),
        4 => (1..100u64).prop_map(CallKind::Add),
        1 => Just(CallKind::StopSelf),
        1 => Just(CallKind::Panic),
    ];
    prop_oneof![
        2 => id().prop_map(Op::Lookup),
        3 => (id(), init(), 0..1000u64).prop_map(|(i, k, s)| Op::LookupOrStart(i, k, s)),
        2 => (id(), init(), 0..1000u64).prop_map(|(i, k, s)| Op::Start(i, k, s)),
        2 => id().prop_map(Op::Stop),
        5 => (id(), via.clone(), call.clone()).prop_map(|(i, v, c)| Op::Call(i, v, c)),
        2 => (id(), via, 1..100u64).prop_map(|(i, v, n)| Op::Cast(i, v, n)),
        3 => (id(), init(), 0..1000u64, call).prop_map(|(i, k, s, c)| Op::CallById(i, k, s, c)),
    ]
}

fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    (policy(), prop::collection::vec(op(), 1..=max_steps))
        .prop_map(|(policy, ops)| Case { policy, ops })
}

/// One live worker of the model. `generation` tells workers of one id apart.
#[derive(Clone, Copy, Debug)]
struct Live {
    state: u64,
    generation: u64,
    /// The state `init` gives it (again, on a restart).
    initial: u64,
    restarts: u32,
}

/// The reference model: which worker lives under each id.
struct Model {
    policy: Policy,
    live: HashMap<u64, Live>,
    next_generation: u64,
    /// Workers that ended in a way that runs `terminate` (stopped, stopped
    /// themselves, panicked in a handler).
    terminated: usize,
}

impl Model {
    fn new(policy: Policy) -> Model {
        Model {
            policy,
            live: HashMap::new(),
            next_generation: 0,
            terminated: 0,
        }
    }

    fn started(&mut self, id: u64, state: u64) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.live.insert(
            id,
            Live {
                state,
                generation,
                initial: state,
                restarts: 0,
            },
        );
        generation
    }

    fn ended(&mut self, id: u64) {
        self.live.remove(&id).expect("only a live worker ends");
        self.terminated += 1;
    }

    fn handler_panicked(&mut self, id: u64) {
        let restarts = self.live[&id].restarts;
        match self.policy {
            Policy::Never => self.ended(id),
            Policy::Tries(max) if restarts >= max => self.ended(id),
            Policy::Always | Policy::Tries(_) => {
                // terminate ran for the crashed incarnation; the next one
                // starts over from the same args, under the same handles.
                self.terminated += 1;
                let live = self.live.get_mut(&id).expect("a live worker panicked");
                live.state = live.initial;
                live.restarts += 1;
            }
        }
    }
}

/// What the test holds: the last handle it was given for each id, with the
/// model generation of the worker it belongs to.
type Handles = HashMap<u64, (WorkerRef<Probe>, u64)>;

/// Operations run, by kind, over all cases; printed at the end.
static OPS: [AtomicUsize; 7] = [const { AtomicUsize::new(0) }; 7];
const OP_NAMES: [&str; 7] = [
    "lookup",
    "lookup_or_start",
    "start",
    "stop",
    "call",
    "cast",
    "call by id",
];
static STEPS_CHECKED: AtomicUsize = AtomicUsize::new(0);
static MAX_LIVE: AtomicUsize = AtomicUsize::new(0);
static INJECTED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
const INJECTED_NAMES: [&str; 4] = ["init errors", "init panics", "handler panics", "self-stops"];

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

#[test]
fn the_registry_behaves_like_its_model() {
    quiet_deliberate_panics();
    let cases = size_from_env("GEN_REGISTRY_MODEL_CASES", 250) as u32;
    let steps = size_from_env("GEN_REGISTRY_MODEL_STEPS", 64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let began = Instant::now();
    let result = runner.run(&case(steps), |case| match run_caught(60, run_case(case)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) | Err(message) => Err(TestCaseError::fail(message)),
    });
    let ops: Vec<String> = OPS
        .iter()
        .zip(OP_NAMES)
        .map(|(n, name)| format!("{name} {}", n.load(Ordering::Relaxed)))
        .collect();
    let injected: Vec<String> = INJECTED
        .iter()
        .zip(INJECTED_NAMES)
        .map(|(n, name)| format!("{name} {}", n.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "model: {cases} cases (up to {steps} steps each), {} operations checked in {:.1?}: {}; \
         faults injected: {}; at most {} workers live at once",
        STEPS_CHECKED.load(Ordering::Relaxed),
        began.elapsed(),
        ops.join(", "),
        injected.join(", "),
        MAX_LIVE.load(Ordering::Relaxed),
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => {
            panic!("the registry departed from the model: {why}\nminimal case: {case:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs one sequence against a fresh registry; `Err` says where the registry
/// and the model first disagreed.
async fn run_case(case: Case) -> Result<(), String> {
    let log = Log::new();
    let r = GenRegistry::<Probe>::new(options(case.policy)).map_err(|e| e.to_string())?;
    let mut model = Model::new(case.policy);
    let mut handles = Handles::new();
    for (step, op) in case.ops.iter().enumerate() {
        apply(&r, &log, &mut model, &mut handles, op)
            .await
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        invariants(&r, &log, &model, &handles)
            .await
            .map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
        STEPS_CHECKED.fetch_add(1, Ordering::Relaxed);
        MAX_LIVE.fetch_max(model.live.len(), Ordering::Relaxed);
    }
    r.shutdown().await;
    check!(r.count() == 0, "count {} after shutdown", r.count());
    check!(r.to_list().is_empty(), "entries left after shutdown");
    wait_until(|| log.live() == 0).await;
    check!(
        log.terminates() == log.drops.load(Ordering::SeqCst),
        "{} terminates for {} workers ended",
        log.terminates(),
        log.drops.load(Ordering::SeqCst)
    );
    check!(log.overlaps() == 0, "two live workers of one id");
    for (id, (h, _)) in &handles {
        check!(!h.is_alive(), "worker {id} alive after shutdown");
        check!(
            matches!(r.lookup(id), Err(Error::RegistryStopped)),
            "lookup after shutdown is not RegistryStopped"
        );
    }
    Ok(())
}

/// The handle an operation goes through; `None` when there is none to use.
fn handle_for(
    r: &GenRegistry<Probe>,
    model: &Model,
    handles: &mut Handles,
    id: u64,
    via: Via,
) -> Result<Option<(WorkerRef<Probe>, u64)>, String> {
    match via {
        Via::LastHandle => Ok(handles.get(&id).cloned()),
        Via::Lookup => match (r.lookup(&id), model.live.get(&id)) {
            (Ok(h), Some(live)) => {
                remember(handles, id, &h, live.generation)?;
                Ok(Some((h, live.generation)))
            }
            (Err(Error::NotFound), None) => Ok(None),
            (got, expected) => Err(format!("lookup gave {got:?}, the model has {expected:?}")),
        },
    }
}

/// Keeps `h` as the id's last handle; a handle of a generation already known
/// must be that same worker.
fn remember(
    handles: &mut Handles,
    id: u64,
    h: &WorkerRef<Probe>,
    generation: u64,
) -> Result<(), String> {
    if let Some((known, g)) = handles.get(&id) {
        check!(
            *g != generation || known == h,
            "one worker of id {id} came back as two different handles"
        );
    }
    handles.insert(id, (h.clone(), generation));
    Ok(())
}

fn args(log: &std::sync::Arc<Log>, kind: InitKind, state: u64) -> Args {
    let init = match kind {
        InitKind::Ok => Init::Ok,
        InitKind::Fail => Init::Fail,
        InitKind::Panic => Init::Panic,
    };
    Args::new(log).init(init).state(state)
}

/// The request a call of `kind` sends.
fn request(kind: CallKind) -> Req {
    match kind {
        CallKind::Get => Req::Get,
        CallKind::Add(n) => Req::Add(n),
        CallKind::StopSelf => Req::StopSelf,
        CallKind::Panic => Req::Panic,
    }
}

/// Checks the answer `got` of the live worker `live` of `id` to a call of
/// `kind`, and updates the model.
fn answered(
    model: &mut Model,
    id: u64,
    live: Live,
    kind: CallKind,
    got: Result<u64, Error<Probe>>,
) -> Result<(), String> {
    match (kind, got) {
        (CallKind::Get, Ok(v)) if v == live.state => {}
        (CallKind::Add(n), Ok(v)) if v == live.state + n => {
            model.live.get_mut(&id).unwrap().state = v;
        }
        (CallKind::StopSelf, Ok(v)) if v == live.state => {
            INJECTED[3].fetch_add(1, Ordering::Relaxed);
            model.ended(id);
        }
        (CallKind::Panic, Err(Error::HandlerPanicked(m))) if m.contains("handler of") => {
            INJECTED[2].fetch_add(1, Ordering::Relaxed);
            model.handler_panicked(id);
        }
        (kind, got) => {
            return Err(format!(
                "call {kind:?} gave {got:?}; the model's state is {}",
                live.state
            ));
        }
    }
    Ok(())
}

async fn apply(
    r: &GenRegistry<Probe>,
    log: &std::sync::Arc<Log>,
    model: &mut Model,
    handles: &mut Handles,
    op: &Op,
) -> Result<(), String> {
    match *op {
        Op::Lookup(id) => {
            OPS[0].fetch_add(1, Ordering::Relaxed);
            handle_for(r, model, handles, id, Via::Lookup)?;
        }
        Op::LookupOrStart(id, kind, state) | Op::Start(id, kind, state) => {
            let exclusive = matches!(op, Op::Start(..));
            OPS[if exclusive { 2 } else { 1 }].fetch_add(1, Ordering::Relaxed);
            let inits = log.inits();
            let got = if exclusive {
                r.start(id, args(log, kind, state)).await
            } else {
                r.lookup_or_start(id, args(log, kind, state)).await
            };
            let ran = log.inits() - inits;
            if let Some(live) = model.live.get(&id).copied() {
                check!(ran == 0, "{ran} inits ran for a live id");
                let h = match got {
                    Ok(h) if !exclusive => h,
                    Err(Error::AlreadyStarted(h)) if exclusive => h,
                    other => return Err(format!("expected the live worker, got {other:?}")),
                };
                remember(handles, id, &h, live.generation)?;
                return Ok(());
            }
            check!(ran == 1, "{ran} inits ran for one start");
            match (kind, got) {
                (InitKind::Ok, Ok(h)) => {
                    let generation = model.started(id, state);
                    remember(handles, id, &h, generation)?;
                }
                (InitKind::Fail, Err(Error::Init(_))) => {
                    INJECTED[0].fetch_add(1, Ordering::Relaxed);
                }
                (InitKind::Panic, Err(Error::InitPanicked(m))) if m.contains("init of") => {
                    INJECTED[1].fetch_add(1, Ordering::Relaxed);
                }
                (kind, other) => return Err(format!("init {kind:?} gave {other:?}")),
            }
        }
        Op::Stop(id) => {
            OPS[3].fetch_add(1, Ordering::Relaxed);
            let terminates = log.terminates();
            let got = r.stop(&id).await;
            match (got, model.live.contains_key(&id)) {
                (Ok(()), true) => {
                    model.ended(id);
                    // `stop` returns after terminate ran and the worker is gone.
                    check!(
                        log.terminates() == terminates + 1,
                        "stop returned before terminate ran"
                    );
                }
                (Err(Error::NotFound), false) => {}
                (got, live) => return Err(format!("stop gave {got:?}; live in the model: {live}")),
            }
        }
        Op::Call(id, via, kind) => {
            OPS[4].fetch_add(1, Ordering::Relaxed);
            let Some((h, generation)) = handle_for(r, model, handles, id, via)? else {
                return Ok(());
            };
            let got = h.call_timeout(request(kind), CALL_DEADLINE).await;
            let current = model.live.get(&id).filter(|l| l.generation == generation);
            let Some(live) = current.copied() else {
                check!(
                    matches!(got, Err(Error::WorkerEnded)),
                    "a call on the handle of an ended worker gave {got:?}"
                );
                return Ok(());
            };
            answered(model, id, live, kind, got)?;
        }
        Op::CallById(id, init, state, kind) => {
            OPS[6].fetch_add(1, Ordering::Relaxed);
            let inits = log.inits();
            let got = r.call(id, args(log, init, state), request(kind)).await;
            // A panicking request may restart the worker: its init may
            // have run again already.
            let restart = usize::from(matches!(kind, CallKind::Panic));
            let ran = log.inits() - inits;
            if model.live.contains_key(&id) {
                check!(
                    ran <= restart,
                    "{ran} inits ran for a call by id to a live worker"
                );
            } else {
                check!(
                    (1..=1 + restart).contains(&ran),
                    "{ran} inits ran for a call by id that needed a start"
                );
                match (init, &got) {
                    (InitKind::Ok, _) => {
                        model.started(id, state);
                    }
                    (InitKind::Fail, Err(Error::Init(_))) => return Ok(()),
                    (InitKind::Panic, Err(Error::InitPanicked(_))) => return Ok(()),
                    (init, got) => {
                        return Err(format!("call by id with init {init:?} gave {got:?}"));
                    }
                }
            }
            let live = model.live[&id];
            answered(model, id, live, kind, got)?;
        }
        Op::Cast(id, via, n) => {
            OPS[5].fetch_add(1, Ordering::Relaxed);
            let Some((h, generation)) = handle_for(r, model, handles, id, via)? else {
                return Ok(());
            };
            let got = h.cast(n);
            match model
                .live
                .get_mut(&id)
                .filter(|l| l.generation == generation)
            {
                Some(live) => {
                    check!(got.is_ok(), "a cast to a live worker gave {got:?}");
                    live.state += n;
                }
                None => check!(
                    matches!(got, Err(Error::WorkerEnded)),
                    "a cast to an ended worker gave {got:?}"
                ),
            }
        }
    }
    Ok(())
}

/// What must hold after every step.
async fn invariants(
    r: &GenRegistry<Probe>,
    log: &Log,
    model: &Model,
    handles: &Handles,
) -> Result<(), String> {
    let expected: BTreeSet<u64> = model.live.keys().copied().collect();
    check!(
        r.count() == expected.len(),
        "count() is {}, the model has {} live",
        r.count(),
        expected.len()
    );
    let listed: Vec<u64> = r.to_list().into_iter().map(|(id, _)| id).collect();
    let listed_set: BTreeSet<u64> = listed.iter().copied().collect();
    check!(
        listed.len() == listed_set.len() && listed_set == expected,
        "to_list() has {listed:?}, the model {expected:?}"
    );
    let reduced = r.reduce(0, |n, _, h| n + usize::from(h.is_alive()));
    check!(
        reduced == expected.len(),
        "reduce saw {reduced} live workers"
    );
    for id in 0..IDS {
        let found = r.lookup(&id);
        match (model.live.get(&id), &found) {
            (Some(_), Ok(h)) => check!(h.is_alive(), "lookup({id}) gave a dead worker"),
            (None, Err(Error::NotFound)) => {}
            (live, found) => {
                return Err(format!(
                    "lookup({id}) gave {found:?}, the model has {live:?}"
                ));
            }
        }
    }
    for (id, (h, generation)) in handles {
        let current = model
            .live
            .get(id)
            .is_some_and(|l| l.generation == *generation);
        check!(
            h.is_alive() == current,
            "the old handle of {id} says alive = {}, the model {current}",
            h.is_alive()
        );
    }
    check!(log.overlaps() == 0, "two live workers of one id");
    // A worker that stopped itself or panicked is dropped just after it
    // answered; wait for that, within wait_until's deadline.
    wait_until(|| log.live() == expected.len() && log.terminates() == model.terminated).await;
    Ok(())
}
