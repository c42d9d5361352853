//! Model-based test: random sequences of registry operations on a small pool
//! of ids, each step checked against a reference model of which worker lives
//! under which id and what its state is.
//!
//! It proves, for every generated sequence (and proptest shrinks any failure to
//! a minimal one), under each restart policy (never, always, at most 1 or 2
//! restarts) and each registry configuration drawn (an unbounded or a small
//! bounded mailbox; no limit, a capacity that refuses or evicts, or a short
//! idle timeout): each result is the one the model predicts (lookups, starts,
//! stops, calls and casts, calls by id, including panicking and failing inits,
//! panicking handlers — which end the worker or restart it with its first
//! state under the same handles — and workers that stop themselves); after
//! every step `count()`, `to_list()` and `reduce` agree with the model, never
//! two workers of one id are alive (the probe log's overlaps), no ended worker
//! is reachable by `lookup`, every old handle of an ended worker is dead and
//! fails at once, its monitor resolves with the reason the model gives, exactly
//! one `init` runs per start that the model says must start, every call is
//! answered or errored within a deadline, and after `shutdown` nothing is left.
//!
//! The lifecycle features, as operations:
//! - a call held in its handler on a gate the model opens: while it is held,
//!   the worker's casts queue, and with a bounded mailbox the cast or call
//!   past its capacity fails at once with `MailboxFull`;
//! - with `max_workers(n)`: `count()` never exceeds `n`; a start at the limit
//!   is refused with `AtCapacity(n)` (init not run, nothing started) under
//!   `AtCapacity::Refuse`, or when every worker is held; under `Evict` it
//!   evicts exactly one worker — any one not held, which the model learns from
//!   the registry — whose handles are then dead and whose `terminate` runs
//!   with `ExitReason::Evicted`;
//! - with a short idle timeout: a worker may idle out only once the timeout
//!   has passed since its last mail (the model learns which did, and checks
//!   it had no mail for that long, was not held, and ran `terminate` with
//!   `ExitReason::Idle`); an explicit wait step ends every worker not held,
//!   and the next start of an idled id is fresh;
//! - timers: a short `send_after` fires exactly once; one scheduled in a
//!   handler that then panics never fires, not even into the restarted
//!   incarnation (checked by a later timer of the new incarnation, which
//!   timers' earliest-first order would deliver after it); `cancel_timer`
//!   finds pending exactly the long timers of the current incarnation.
//!
//! Size: `GEN_REGISTRY_MODEL_CASES` sequences (150 by default; CI, in
//! `.ci/run`, runs 1000) of up to `GEN_REGISTRY_MODEL_STEPS` operations
//! (default 64).

use crate::common::*;
use futures::channel::oneshot;
use gen_registry::{AtCapacity, Error, ExitReason, GenRegistry, Options, RestartPolicy, WorkerRef};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// These tests run twice in the suite: on Bastion's executor at its top, and
// on tokio's under `on_tokio`; the parent module's `executor` says which.
use super::executor;
registries_on!(executor);

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Ids are drawn from `0..IDS`: few enough that operations collide often.
const IDS: u64 = 6;
/// No call may take longer than this; a `CallTimeout` is reported as a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a held call may wait for its gate (within the case's deadline).
const HOLD_DEADLINE: Duration = Duration::from_secs(60);
/// The idle timeout of the registries drawn with one: short, so that a wait
/// step is quick, and so that workers also idle out between steps, which
/// the model must then learn.
const IDLE: Duration = Duration::from_millis(40);
/// A timer that falls due within its step (the step waits for it).
const SHORT_MS: u64 = 2;
/// A timer that never falls due within a case (a case's deadline is 60 s).
const LONG_MS: u64 = 600_000;
/// How long a step waits for the registry to settle (terminates run, inits
/// of restarts, monitors resolve).
const SETTLE: Duration = Duration::from_secs(10);

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
    /// `Get`, answered later through a deferred reply.
    GetDeferred,
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

/// How long a timer waits.
#[derive(Clone, Copy, Debug)]
enum Delay {
    /// [`SHORT_MS`]: the step waits until it fired.
    Short,
    /// [`LONG_MS`]: pending for the rest of the case.
    Long,
}

#[derive(Clone, Debug)]
enum Op {
    Lookup(u64),
    /// id, how its init behaves, the state it starts with.
    LookupOrStart(u64, InitKind, u64),
    Start(u64, InitKind, u64),
    Stop(u64),
    Call(u64, Via, CallKind),
    /// id, handle, the amount, how many casts in a row.
    Cast(u64, Via, u64, usize),
    /// `registry.call(id, args, request)`: id, how an init it needs
    /// behaves, the state it starts with, the request.
    CallById(u64, InitKind, u64, CallKind),
    /// A call whose handler waits on a gate until `Release`: the worker is
    /// in the middle of a call, and its mail queues.
    Hold(u64),
    Release(u64),
    /// A call whose handler schedules a timer to the worker itself.
    Timer(u64, Delay),
    /// Calls that schedule a long timer, then a short one in a handler that
    /// panics; after a restart, one that schedules a timer (due after the
    /// short one) and one that cancels every timer of the id.
    TimerThenPanic(u64),
    /// A call whose handler cancels every timer scheduled for the id.
    CancelTimers(u64),
    /// With an idle timeout: waits until every worker not held has idled
    /// out (without one, nothing).
    Wait,
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

/// What bounds the number of live workers: nothing, a capacity, or an idle
/// timeout ([`IDLE`]). The last two are not drawn together: with both, which
/// worker a start evicts would also depend on which ones idled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    None,
    Capacity(usize, AtCapacity),
    Idle,
}

#[derive(Clone, Debug)]
struct Case {
    policy: Policy,
    /// `Options::mailbox_capacity`, if drawn.
    mailbox: Option<usize>,
    limit: Limit,
    ops: Vec<Op>,
}

/// The registry options of `case`.
fn options(case: &Case) -> Options<Probe> {
    let mut options = match case.policy {
        Policy::Never => Options::default(),
        Policy::Always => Options::default().restart(RestartPolicy::Always),
        Policy::Tries(restarts) => Options::default().restart(RestartPolicy::Tries {
            restarts,
            within: Duration::from_secs(3600),
        }),
    };
    if let Some(k) = case.mailbox {
        options = options.mailbox_capacity(k);
    }
    options = match case.limit {
        Limit::None => options,
        Limit::Capacity(n, at) => options.max_workers(n).at_capacity(at),
        Limit::Idle => options.idle_timeout(IDLE),
    };
    options.executor(executor())
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Never),
        Just(Policy::Always),
        (1..3u32).prop_map(Policy::Tries)
    ]
}

fn limit() -> impl Strategy<Value = Limit> {
    let at = prop_oneof![Just(AtCapacity::Refuse), Just(AtCapacity::Evict)];
    prop_oneof![
        2 => Just(Limit::None),
        2 => (1..5usize, at).prop_map(|(n, at)| Limit::Capacity(n, at)),
        1 => Just(Limit::Idle),
    ]
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
        2 => Just(CallKind::GetDeferred),
        4 => (1..100u64).prop_map(CallKind::Add),
        1 => Just(CallKind::StopSelf),
        1 => Just(CallKind::Panic),
    ];
    let times = prop_oneof![3 => Just(1usize), 1 => 2..5usize];
    let delay = prop_oneof![Just(Delay::Short), Just(Delay::Long)];
    prop_oneof![
        2 => id().prop_map(Op::Lookup),
        3 => (id(), init(), 0..1000u64).prop_map(|(i, k, s)| Op::LookupOrStart(i, k, s)),
        2 => (id(), init(), 0..1000u64).prop_map(|(i, k, s)| Op::Start(i, k, s)),
        2 => id().prop_map(Op::Stop),
        5 => (id(), via.clone(), call.clone()).prop_map(|(i, v, c)| Op::Call(i, v, c)),
        3 => (id(), via, 1..100u64, times).prop_map(|(i, v, n, t)| Op::Cast(i, v, n, t)),
        3 => (id(), init(), 0..1000u64, call).prop_map(|(i, k, s, c)| Op::CallById(i, k, s, c)),
        2 => id().prop_map(Op::Hold),
        2 => id().prop_map(Op::Release),
        1 => (id(), delay).prop_map(|(i, d)| Op::Timer(i, d)),
        1 => id().prop_map(Op::TimerThenPanic),
        1 => id().prop_map(Op::CancelTimers),
        1 => Just(Op::Wait),
    ]
}

fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    let mailbox = prop_oneof![2 => Just(None), 1 => (1..4usize).prop_map(Some)];
    (
        policy(),
        mailbox,
        limit(),
        prop::collection::vec(op(), 1..=max_steps),
    )
        .prop_map(|(policy, mailbox, limit, ops)| Case {
            policy,
            mailbox,
            limit,
            ops,
        })
}

/// One live worker of the model. `generation` tells workers of one id apart.
#[derive(Clone, Copy, Debug)]
struct Live {
    state: u64,
    generation: u64,
    /// The state `init` gives it (again, on a restart).
    initial: u64,
    restarts: u32,
    /// No later than its last mail (or its start): taken before the step
    /// that sent it.
    touched: Instant,
    /// It got mail since it started.
    mailed: bool,
    /// In the middle of a held call.
    held: bool,
    /// Casts queued behind the held call, and their sum.
    queued: usize,
    queued_sum: u64,
    /// Long timers of this incarnation not yet cancelled.
    long_timers: usize,
}

/// A held call: the gate that releases it, the thread waiting for its
/// reply, and the state it will reply with.
struct Hold {
    open: oneshot::Sender<()>,
    call: JoinHandle<Result<u64, Error<Probe>>>,
    state: u64,
}

/// How a worker ended, as its monitor must report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Stopped,
    Normal,
    Panicked,
    Idle,
    Evicted,
}

/// What the test holds: the last handle it was given for each id, with the
/// model generation of the worker it belongs to.
type Handles = HashMap<u64, (WorkerRef<Probe>, u64)>;

/// The reference model: which worker lives under each id.
struct Model {
    policy: Policy,
    mailbox: Option<usize>,
    limit: Limit,
    live: HashMap<u64, Live>,
    holds: HashMap<u64, Hold>,
    handles: Handles,
    next_generation: u64,
    /// Workers that ended in a way that runs `terminate` (stopped, stopped
    /// themselves, panicked in a handler, idled out, evicted).
    terminated: usize,
    idled: usize,
    evicted: usize,
    /// `init`s run: one per start attempt, one per restart.
    inits: usize,
    /// The tags of the timers that must have fired (no other may).
    fired: BTreeSet<u64>,
    next_tag: u64,
    /// Handles of workers that ended, with the end their monitor must report.
    ending: Vec<(WorkerRef<Probe>, End)>,
    /// Ids of workers that ended whose handle the test never held.
    ending_ids: Vec<u64>,
}

impl Model {
    fn new(case: &Case) -> Model {
        Model {
            policy: case.policy,
            mailbox: case.mailbox,
            limit: case.limit,
            live: HashMap::new(),
            holds: HashMap::new(),
            handles: Handles::new(),
            next_generation: 0,
            terminated: 0,
            idled: 0,
            evicted: 0,
            inits: 0,
            fired: BTreeSet::new(),
            next_tag: 0,
            ending: Vec::new(),
            ending_ids: Vec::new(),
        }
    }

    fn started(&mut self, id: u64, state: u64, now: Instant) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.live.insert(
            id,
            Live {
                state,
                generation,
                initial: state,
                restarts: 0,
                touched: now,
                mailed: false,
                held: false,
                queued: 0,
                queued_sum: 0,
                long_timers: 0,
            },
        );
        generation
    }

    /// The live worker of `id` ended, running `terminate`, for `end`.
    fn end(&mut self, id: u64, end: End) {
        let live = self.live.remove(&id).expect("only a live worker ends");
        self.terminated += 1;
        match end {
            End::Idle => self.idled += 1,
            End::Evicted => self.evicted += 1,
            _ => {}
        }
        match self.handles.get(&id) {
            Some((h, generation)) if *generation == live.generation => {
                self.ending.push((h.clone(), end));
            }
            _ => self.ending_ids.push(id),
        }
    }

    /// The live worker of `id` got mail in the step that began at `now`.
    fn touch(&mut self, id: u64, now: Instant) {
        if let Some(live) = self.live.get_mut(&id) {
            live.touched = now;
            live.mailed = true;
        }
    }

    fn handler_panicked(&mut self, id: u64, now: Instant) {
        let restarts = self.live[&id].restarts;
        match self.policy {
            Policy::Never => self.end(id, End::Panicked),
            Policy::Tries(max) if restarts >= max => self.end(id, End::Panicked),
            Policy::Always | Policy::Tries(_) => {
                // terminate ran for the crashed incarnation; the next one
                // starts over from the same args, under the same handles,
                // without the crashed one's timers.
                self.terminated += 1;
                self.inits += 1;
                let live = self.live.get_mut(&id).expect("a live worker panicked");
                live.state = live.initial;
                live.restarts += 1;
                live.long_timers = 0;
                live.touched = now;
                live.mailed = true;
            }
        }
    }

    /// The model's live worker of `id` is gone from the registry: legal only
    /// for an idle timeout, a worker not held, and no mail for the timeout
    /// (measured now, after the registry was seen without it).
    fn vanished(&mut self, id: u64) -> Result<(), String> {
        let live = self.live[&id];
        let quiet = live.touched.elapsed();
        check!(
            self.limit == Limit::Idle && !live.held && quiet >= IDLE,
            "worker {id} is gone, though {}",
            if self.limit != Limit::Idle {
                "the registry has no idle timeout".to_string()
            } else if live.held {
                "it is in the middle of a call".to_string()
            } else {
                format!(
                    "it got mail (or started, mail: {}) {quiet:?} ago, under an idle timeout of \
                     {IDLE:?}",
                    live.mailed
                )
            }
        );
        IDLE_ENDS.fetch_add(1, Ordering::Relaxed);
        self.end(id, End::Idle);
        Ok(())
    }

    /// With an idle timeout: every live worker the registry no longer has
    /// idled out (checked by [`vanished`](Self::vanished)). Whether any did.
    fn learn(&mut self, r: &GenRegistry<Probe>) -> Result<bool, String> {
        if self.limit != Limit::Idle {
            return Ok(false);
        }
        let gone: Vec<u64> = self
            .live
            .keys()
            .copied()
            .filter(|id| matches!(r.lookup(id), Err(Error::NotFound)))
            .collect();
        for &id in &gone {
            self.vanished(id)?;
        }
        Ok(!gone.is_empty())
    }

    /// Whether the held worker's mailbox is full.
    fn full(&self, live: &Live) -> bool {
        self.mailbox.is_some_and(|k| live.queued >= k)
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Keeps `h` as the id's last handle; a handle of a generation already
    /// known must be that same worker.
    fn remember(&mut self, id: u64, h: &WorkerRef<Probe>, generation: u64) -> Result<(), String> {
        if let Some((known, g)) = self.handles.get(&id) {
            check!(
                *g != generation || known == h,
                "one worker of id {id} came back as two different handles"
            );
        }
        self.handles.insert(id, (h.clone(), generation));
        Ok(())
    }
}

/// Operations run, by kind, over all cases; printed at the end.
static OPS: [AtomicUsize; 13] = [const { AtomicUsize::new(0) }; 13];
const OP_NAMES: [&str; 13] = [
    "lookup",
    "lookup_or_start",
    "start",
    "stop",
    "call",
    "cast",
    "call by id",
    "hold",
    "release",
    "timer",
    "timer then panic",
    "cancel timers",
    "wait",
];
static STEPS_CHECKED: AtomicUsize = AtomicUsize::new(0);
static MAX_LIVE: AtomicUsize = AtomicUsize::new(0);
static INJECTED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
const INJECTED_NAMES: [&str; 4] = ["init errors", "init panics", "handler panics", "self-stops"];
static IDLE_ENDS: AtomicUsize = AtomicUsize::new(0);
static EVICTIONS: AtomicUsize = AtomicUsize::new(0);
static REFUSED_AT_CAPACITY: AtomicUsize = AtomicUsize::new(0);
static MAILBOX_FULL: AtomicUsize = AtomicUsize::new(0);
static TIMERS_FIRED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn the_registry_behaves_like_its_model() {
    quiet_deliberate_panics();
    let cases = size_from_env("GEN_REGISTRY_MODEL_CASES", 150) as u32;
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
    let counts = |counters: &[AtomicUsize], names: &[&str]| -> String {
        let all: Vec<String> = counters
            .iter()
            .zip(names)
            .map(|(n, name)| format!("{name} {}", n.load(Ordering::Relaxed)))
            .collect();
        all.join(", ")
    };
    let lifecycle = [
        &IDLE_ENDS,
        &EVICTIONS,
        &REFUSED_AT_CAPACITY,
        &MAILBOX_FULL,
        &TIMERS_FIRED,
    ]
    .map(|n| n.load(Ordering::Relaxed));
    eprintln!(
        "model: {cases} cases (up to {steps} steps each), {} operations checked in {:.1?}: {}; \
         faults injected: {}; at most {} workers live at once; {} idled out, {} evicted, \
         {} starts refused at capacity, {} refused by a full mailbox, {} timers fired",
        STEPS_CHECKED.load(Ordering::Relaxed),
        began.elapsed(),
        counts(&OPS, &OP_NAMES),
        counts(&INJECTED, &INJECTED_NAMES),
        MAX_LIVE.load(Ordering::Relaxed),
        lifecycle[0],
        lifecycle[1],
        lifecycle[2],
        lifecycle[3],
        lifecycle[4],
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
    let r = GenRegistry::<Probe>::new(options(&case)).map_err(|e| e.to_string())?;
    let mut model = Model::new(&case);
    let mut outcome = Ok(());
    for (step, op) in case.ops.iter().enumerate() {
        outcome = apply(&r, &log, &mut model, op)
            .await
            .map_err(|e| format!("step {step} ({op:?}): {e}"));
        if outcome.is_ok() {
            outcome = invariants(&r, &log, &mut model)
                .await
                .map_err(|e| format!("after step {step} ({op:?}): {e}"));
        }
        if outcome.is_err() {
            break;
        }
        STEPS_CHECKED.fetch_add(1, Ordering::Relaxed);
        MAX_LIVE.fetch_max(model.live.len(), Ordering::Relaxed);
    }
    // Held calls end before the shutdown, which would wait for them.
    for (_, hold) in model.holds.drain() {
        let _ = hold.open.send(());
        let _ = hold.call.join();
    }
    outcome?;
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
    for (id, (h, _)) in &model.handles {
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
    model: &mut Model,
    id: u64,
    via: Via,
) -> Result<Option<(WorkerRef<Probe>, u64)>, String> {
    match via {
        Via::LastHandle => Ok(model.handles.get(&id).cloned()),
        Via::Lookup => match (r.lookup(&id), model.live.get(&id).copied()) {
            (Ok(h), Some(live)) => {
                model.remember(id, &h, live.generation)?;
                Ok(Some((h, live.generation)))
            }
            (Err(Error::NotFound), None) => Ok(None),
            (Err(Error::NotFound), Some(_)) => {
                model.vanished(id)?;
                Ok(None)
            }
            (got, expected) => Err(format!("lookup gave {got:?}, the model has {expected:?}")),
        },
    }
}

/// The live worker of `id`, through a fresh lookup, unless it is held (a
/// call to it would wait for the gate).
fn idle_handle(
    r: &GenRegistry<Probe>,
    model: &mut Model,
    id: u64,
) -> Result<Option<(WorkerRef<Probe>, Live)>, String> {
    let Some((h, _)) = handle_for(r, model, id, Via::Lookup)? else {
        return Ok(None);
    };
    let live = model.live[&id];
    Ok((!live.held).then_some((h, live)))
}

fn args(log: &Arc<Log>, kind: InitKind, state: u64) -> Args {
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
        CallKind::GetDeferred => Req::GetDeferred,
        CallKind::Add(n) => Req::Add(n),
        CallKind::StopSelf => Req::StopSelf,
        CallKind::Panic => Req::Panic,
    }
}

/// Checks the answer `got` of the live worker `live` of `id` to a call of
/// `kind`, sent in the step that began at `now`, and updates the model.
fn answered(
    model: &mut Model,
    id: u64,
    live: Live,
    kind: CallKind,
    got: Result<u64, Error<Probe>>,
    now: Instant,
) -> Result<(), String> {
    match (kind, got) {
        (CallKind::Get | CallKind::GetDeferred, Ok(v)) if v == live.state => model.touch(id, now),
        (CallKind::Add(n), Ok(v)) if v == live.state + n => {
            model.touch(id, now);
            model.live.get_mut(&id).unwrap().state = v;
        }
        (CallKind::StopSelf, Ok(v)) if v == live.state => {
            INJECTED[3].fetch_add(1, Ordering::Relaxed);
            model.end(id, End::Normal);
        }
        (CallKind::Panic, Err(Error::HandlerPanicked(m))) if m.contains("handler of") => {
            INJECTED[2].fetch_add(1, Ordering::Relaxed);
            model.handler_panicked(id, now);
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

/// Sleeps about a millisecond on the crate's timer.
async fn pause() {
    let _ = gen_registry::timeout(Duration::from_millis(1), futures::future::pending::<()>()).await;
}

/// Whether a start of `id` finds the registry at its capacity.
fn at_capacity(model: &Model, id: u64) -> bool {
    matches!(model.limit, Limit::Capacity(n, _) if !model.live.contains_key(&id) && model.live.len() >= n)
}

/// Whether a start of `id` refused at capacity is to be tried again: the
/// registry evicts and the model has a worker it may evict, but a worker
/// that has just answered, or is waiting out a restart back-off, is not
/// evictable until it waits for mail again.
fn retry_at_capacity(model: &Model, id: u64) -> bool {
    at_capacity(model, id)
        && matches!(model.limit, Limit::Capacity(_, AtCapacity::Evict))
        && model.live.values().any(|l| !l.held)
}

/// Runs `$attempt`, an async start, again (within [`SETTLE`]) while it is
/// refused at capacity and [`retry_at_capacity`] says so.
macro_rules! admitted {
    ($model:expr, $id:expr, $attempt:expr) => {{
        let retry = retry_at_capacity($model, $id);
        let deadline = Instant::now() + SETTLE;
        loop {
            let got = $attempt.await;
            if !(retry && matches!(got, Err(Error::AtCapacity(_))) && Instant::now() < deadline) {
                break got;
            }
            pause().await;
        }
    }};
}

/// A start of `id` that ran `ran` inits, at the capacity limit: checks that
/// it was refused (`refused`) or evicted exactly one worker not held, which
/// the model learns. Whether it was refused.
fn at_limit(
    r: &GenRegistry<Probe>,
    model: &mut Model,
    id: u64,
    ran: usize,
    refused: Option<usize>,
) -> Result<bool, String> {
    let Limit::Capacity(n, at) = model.limit else {
        return Ok(false);
    };
    if !at_capacity(model, id) {
        check!(
            refused.is_none(),
            "a start below the capacity of {n} was refused"
        );
        return Ok(false);
    }
    let held = model.live.values().filter(|l| l.held).count();
    if at == AtCapacity::Refuse || held == n {
        check!(
            refused == Some(n) && ran == 0,
            "a start at the capacity of {n} ({at:?}, {held} held) ran {ran} inits and was \
             refused with {refused:?}"
        );
        REFUSED_AT_CAPACITY.fetch_add(1, Ordering::Relaxed);
        return Ok(true);
    }
    check!(
        refused.is_none(),
        "a start at capacity was refused, though {} workers could be evicted",
        n - held
    );
    let gone: Vec<u64> = model
        .live
        .keys()
        .copied()
        .filter(|i| r.lookup(i).is_err())
        .collect();
    check!(gone.len() == 1, "a start at capacity evicted {gone:?}");
    check!(
        !model.live[&gone[0]].held,
        "a start at capacity evicted {}, a worker in the middle of a call",
        gone[0]
    );
    EVICTIONS.fetch_add(1, Ordering::Relaxed);
    model.end(gone[0], End::Evicted);
    Ok(false)
}

/// The capacity an `AtCapacity` error names.
fn refused<T>(got: &Result<T, Error<Probe>>) -> Option<usize> {
    match got {
        Err(Error::AtCapacity(n)) => Some(*n),
        _ => None,
    }
}

/// Waits until the timer `tag` of `id` fired; with an idle timeout, the
/// worker may have idled out first, with the timer.
async fn fired_or_idled(
    r: &GenRegistry<Probe>,
    log: &Log,
    model: &mut Model,
    id: u64,
    tag: u64,
) -> Result<(), String> {
    model.fired.insert(tag);
    let idle = model.limit == Limit::Idle;
    let deadline = Instant::now() + SETTLE;
    loop {
        if log.fired.lock().contains(&tag) {
            TIMERS_FIRED.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if idle && r.lookup(&id).is_err() {
            model.fired.remove(&tag);
            return model.vanished(id);
        }
        check!(Instant::now() < deadline, "timer {tag} of {id} never fired");
        pause().await;
    }
}

/// With a bounded mailbox, waits until the casts queued to the live worker
/// of `id` (through `h`) were handled, by a `Get` that queues behind them:
/// until then its mailbox may be full, with the worker not even busy.
async fn drained(model: &mut Model, id: u64, h: &WorkerRef<Probe>) -> Result<(), String> {
    if model.mailbox.is_none() {
        return Ok(());
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = Instant::now();
        match h.call_timeout(Req::Get, CALL_DEADLINE).await {
            Ok(v) if v == model.live[&id].state => {
                model.touch(id, now);
                return Ok(());
            }
            Err(Error::MailboxFull) if Instant::now() < deadline => pause().await,
            Err(Error::WorkerEnded) => return model.vanished(id),
            got => return Err(format!("a call after casts gave {got:?}")),
        }
    }
}

async fn apply(
    r: &GenRegistry<Probe>,
    log: &Arc<Log>,
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    let now = Instant::now();
    let idle = model.limit == Limit::Idle;
    match *op {
        Op::Lookup(id) => {
            OPS[0].fetch_add(1, Ordering::Relaxed);
            handle_for(r, model, id, Via::Lookup)?;
        }
        Op::LookupOrStart(id, kind, state) | Op::Start(id, kind, state) => {
            let exclusive = matches!(op, Op::Start(..));
            OPS[if exclusive { 2 } else { 1 }].fetch_add(1, Ordering::Relaxed);
            let inits = log.inits();
            let got = admitted!(model, id, async {
                if exclusive {
                    r.start(id, args(log, kind, state)).await
                } else {
                    r.lookup_or_start(id, args(log, kind, state)).await
                }
            });
            let ran = log.inits() - inits;
            if at_limit(r, model, id, ran, refused(&got))? {
                return Ok(());
            }
            if model.live.contains_key(&id) && ran == 1 {
                // It idled out just before: this start made a fresh one.
                model.vanished(id)?;
            }
            if let Some(live) = model.live.get(&id).copied() {
                check!(ran == 0, "{ran} inits ran for a live id");
                let h = match got {
                    Ok(h) if !exclusive => h,
                    Err(Error::AlreadyStarted(h)) if exclusive => h,
                    other => return Err(format!("expected the live worker, got {other:?}")),
                };
                return model.remember(id, &h, live.generation);
            }
            check!(ran == 1, "{ran} inits ran for one start");
            model.inits += 1;
            match (kind, got) {
                (InitKind::Ok, Ok(h)) => {
                    let generation = model.started(id, state, now);
                    model.remember(id, &h, generation)?;
                }
                // It idled out before its starter got it: on a busy
                // machine, the starter may not run for longer than a short
                // idle timeout.
                (InitKind::Ok, Err(Error::WorkerEnded)) if idle => {
                    model.started(id, state, now);
                    model.vanished(id)?;
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
            if model.live.get(&id).is_some_and(|l| l.held) {
                // `stop` would wait for the held call to finish.
                return Ok(());
            }
            let terminates = log.terminates();
            let got = r.stop(&id).await;
            match (got, model.live.contains_key(&id)) {
                (Ok(()), true) => {
                    model.end(id, End::Stopped);
                    // `stop` returns after terminate ran and the worker is gone.
                    check!(
                        log.terminates() > terminates,
                        "stop returned before terminate ran"
                    );
                }
                (Err(Error::NotFound), false) => {}
                (Err(Error::NotFound), true) => model.vanished(id)?,
                (got, live) => return Err(format!("stop gave {got:?}; live in the model: {live}")),
            }
        }
        Op::Call(id, via, kind) => {
            OPS[4].fetch_add(1, Ordering::Relaxed);
            let Some((h, generation)) = handle_for(r, model, id, via)? else {
                return Ok(());
            };
            let current = model
                .live
                .get(&id)
                .filter(|l| l.generation == generation)
                .copied();
            if let Some(live) = current.filter(|l| l.held) {
                // A call with room in the mailbox would wait for the gate.
                if model.full(&live) {
                    let got = h.call_timeout(request(kind), CALL_DEADLINE).await;
                    check!(
                        matches!(got, Err(Error::MailboxFull)),
                        "a call to a full mailbox gave {got:?}"
                    );
                    MAILBOX_FULL.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            let got = h.call_timeout(request(kind), CALL_DEADLINE).await;
            let Some(live) = current else {
                check!(
                    matches!(got, Err(Error::WorkerEnded)),
                    "a call on the handle of an ended worker gave {got:?}"
                );
                return Ok(());
            };
            if matches!(got, Err(Error::WorkerEnded)) {
                return model.vanished(id);
            }
            answered(model, id, live, kind, got, now)?;
        }
        Op::CallById(id, init, state, kind) => {
            OPS[6].fetch_add(1, Ordering::Relaxed);
            // With an idle timeout, a restart's init and a fresh start's
            // would look alike.
            let kind = match kind {
                CallKind::Panic if idle => CallKind::Get,
                kind => kind,
            };
            let inits = log.inits();
            if let Some(live) = model.live.get(&id).filter(|l| l.held).copied() {
                if model.full(&live) {
                    let got = r.call(id, args(log, init, state), request(kind)).await;
                    check!(
                        matches!(got, Err(Error::MailboxFull)) && log.inits() == inits,
                        "a call by id to a full mailbox gave {got:?}"
                    );
                    MAILBOX_FULL.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            let got = admitted!(model, id, r.call(id, args(log, init, state), request(kind)));
            // A panicking request may restart the worker: its init may
            // have run again already.
            let restart = usize::from(matches!(kind, CallKind::Panic));
            let ran = log.inits() - inits;
            if at_limit(r, model, id, ran, refused(&got))? {
                return Ok(());
            }
            if model.live.contains_key(&id) && ran > restart {
                // It idled out just before: the call started a fresh one.
                model.vanished(id)?;
            }
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
                model.inits += 1;
                match (init, &got) {
                    (InitKind::Ok, _) => {
                        model.started(id, state, now);
                    }
                    (InitKind::Fail, Err(Error::Init(_))) => return Ok(()),
                    (InitKind::Panic, Err(Error::InitPanicked(_))) => return Ok(()),
                    (init, got) => {
                        return Err(format!("call by id with init {init:?} gave {got:?}"));
                    }
                }
            }
            if idle && matches!(got, Err(Error::NotDelivered)) {
                // The worker it called (or started) idled out before the
                // request was queued, and its args were spent on the start.
                return model.vanished(id);
            }
            let live = model.live[&id];
            answered(model, id, live, kind, got, now)?;
        }
        Op::Cast(id, via, n, times) => {
            OPS[5].fetch_add(1, Ordering::Relaxed);
            let Some((h, generation)) = handle_for(r, model, id, via)? else {
                return Ok(());
            };
            let mailbox = model.mailbox;
            let deadline = Instant::now() + SETTLE;
            let mut cast = 0;
            while cast < times {
                cast += 1;
                let got = h.cast(n);
                let current = model
                    .live
                    .get_mut(&id)
                    .filter(|l| l.generation == generation);
                match current {
                    Some(live) if live.held && mailbox.is_some_and(|k| live.queued >= k) => {
                        check!(
                            matches!(got, Err(Error::MailboxFull)),
                            "a cast to a full mailbox gave {got:?}"
                        );
                        MAILBOX_FULL.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(live) if live.held => {
                        check!(got.is_ok(), "a cast to a held worker gave {got:?}");
                        live.touched = now;
                        live.queued += 1;
                        live.queued_sum += n;
                    }
                    Some(live) => match got {
                        Ok(()) => {
                            live.state += n;
                            live.touched = now;
                        }
                        // The worker has not yet handled the casts before.
                        Err(Error::MailboxFull)
                            if mailbox.is_some() && Instant::now() < deadline =>
                        {
                            cast -= 1;
                            pause().await;
                        }
                        Err(Error::WorkerEnded) => model.vanished(id)?,
                        got => return Err(format!("a cast to a live worker gave {got:?}")),
                    },
                    None => check!(
                        matches!(got, Err(Error::WorkerEnded)),
                        "a cast to an ended worker gave {got:?}"
                    ),
                }
            }
            if model
                .live
                .get(&id)
                .is_some_and(|l| l.generation == generation && !l.held)
            {
                drained(model, id, &h).await?;
            }
        }
        Op::Hold(id) => {
            OPS[7].fetch_add(1, Ordering::Relaxed);
            let Some((h, live)) = idle_handle(r, model, id)? else {
                return Ok(());
            };
            let (open, gate) = handler_gate();
            let holding = log.holding.load(Ordering::SeqCst);
            let call = std::thread::spawn(move || {
                futures::executor::block_on(h.call_timeout(Req::Wait(gate), HOLD_DEADLINE))
            });
            let entered = || log.holding.load(Ordering::SeqCst) > holding;
            wait_until(|| entered() || call.is_finished()).await;
            if !entered() {
                let got = call
                    .join()
                    .map_err(|_| "the held call panicked".to_string())?;
                check!(
                    matches!(got, Err(Error::WorkerEnded)),
                    "a held call gave {got:?} before its gate opened"
                );
                return model.vanished(id);
            }
            let held = model.live.get_mut(&id).expect("a held worker is live");
            held.held = true;
            held.touched = now;
            held.mailed = true;
            model.holds.insert(
                id,
                Hold {
                    open,
                    call,
                    state: live.state,
                },
            );
        }
        Op::Release(id) => {
            OPS[8].fetch_add(1, Ordering::Relaxed);
            let Some(hold) = model.holds.remove(&id) else {
                return Ok(());
            };
            // Its idle time counts from its last mail (the held call, the
            // casts queued behind it), as the idle timeout's doc says.
            let _ = hold.open.send(());
            let got = hold
                .call
                .join()
                .map_err(|_| "the held call panicked".to_string())?;
            check!(
                matches!(got, Ok(v) if v == hold.state),
                "a held call gave {got:?}; the model's state was {}",
                hold.state
            );
            let live = model.live.get_mut(&id).expect("a held worker is live");
            live.held = false;
            live.state += live.queued_sum;
            live.queued = 0;
            live.queued_sum = 0;
            let (h, _) = model.handles[&id].clone();
            drained(model, id, &h).await?;
        }
        Op::Timer(id, delay) => {
            OPS[9].fetch_add(1, Ordering::Relaxed);
            let Some((h, live)) = idle_handle(r, model, id)? else {
                return Ok(());
            };
            let tag = model.tag();
            let ms = match delay {
                Delay::Short => SHORT_MS,
                Delay::Long => LONG_MS,
            };
            match h.call_timeout(Req::After { ms, tag }, CALL_DEADLINE).await {
                Ok(v) if v == live.state => model.touch(id, now),
                Err(Error::WorkerEnded) => return model.vanished(id),
                got => return Err(format!("scheduling a timer gave {got:?}")),
            }
            match delay {
                Delay::Short => fired_or_idled(r, log, model, id, tag).await?,
                Delay::Long => model.live.get_mut(&id).unwrap().long_timers += 1,
            }
        }
        Op::TimerThenPanic(id) => {
            OPS[10].fetch_add(1, Ordering::Relaxed);
            let Some((h, live)) = idle_handle(r, model, id)? else {
                return Ok(());
            };
            // A long timer, which a restart must drop too (checked below).
            let long = model.tag();
            let after = Req::After {
                ms: LONG_MS,
                tag: long,
            };
            match h.call_timeout(after, CALL_DEADLINE).await {
                Ok(v) if v == live.state => model.touch(id, now),
                Err(Error::WorkerEnded) => return model.vanished(id),
                got => return Err(format!("scheduling a timer gave {got:?}")),
            }
            model.live.get_mut(&id).unwrap().long_timers += 1;
            let live = model.live[&id];
            // Due before anything the restarted incarnation schedules.
            let doomed = model.tag();
            let got = h
                .call_timeout(
                    Req::AfterThenPanic {
                        ms: SHORT_MS,
                        tag: doomed,
                    },
                    CALL_DEADLINE,
                )
                .await;
            if matches!(got, Err(Error::WorkerEnded)) {
                return model.vanished(id);
            }
            answered(model, id, live, CallKind::Panic, got, now)?;
            let Some(restarted) = model
                .live
                .get(&id)
                .filter(|l| l.generation == live.generation)
                .copied()
            else {
                return Ok(());
            };
            // Timers fall due earliest first: once this one of the new
            // incarnation fired, the doomed one would have, had the restart
            // kept it (`invariants` checks it never fires).
            let sentinel = model.tag();
            let after = Req::After {
                ms: SHORT_MS,
                tag: sentinel,
            };
            let sent = Instant::now();
            match h.call_timeout(after, CALL_DEADLINE).await {
                Ok(v) if v == restarted.state => model.touch(id, sent),
                Err(Error::WorkerEnded) => return model.vanished(id),
                got => return Err(format!("a timer after the restart gave {got:?}")),
            }
            fired_or_idled(r, log, model, id, sentinel).await?;
            let Some(restarted) = model.live.get(&id).copied() else {
                return Ok(());
            };
            let sent = Instant::now();
            match h.call_timeout(Req::CancelTimers, CALL_DEADLINE).await {
                Ok(n) if n == restarted.long_timers as u64 => model.touch(id, sent),
                Err(Error::WorkerEnded) => return model.vanished(id),
                got => {
                    return Err(format!(
                        "after a restart, cancelling found {got:?} timers pending; the model \
                         has {}",
                        restarted.long_timers
                    ));
                }
            }
        }
        Op::CancelTimers(id) => {
            OPS[11].fetch_add(1, Ordering::Relaxed);
            let Some((h, live)) = idle_handle(r, model, id)? else {
                return Ok(());
            };
            match h.call_timeout(Req::CancelTimers, CALL_DEADLINE).await {
                Ok(n) if n == live.long_timers as u64 => {
                    model.touch(id, now);
                    model.live.get_mut(&id).unwrap().long_timers = 0;
                }
                Err(Error::WorkerEnded) => return model.vanished(id),
                got => {
                    return Err(format!(
                        "cancelling found {got:?} timers pending; the model has {} in this \
                         incarnation",
                        live.long_timers
                    ));
                }
            }
        }
        Op::Wait => {
            OPS[12].fetch_add(1, Ordering::Relaxed);
            if !idle {
                return Ok(());
            }
            let quiet: Vec<u64> = model
                .live
                .iter()
                .filter(|(_, l)| !l.held)
                .map(|(id, _)| *id)
                .collect();
            let deadline = Instant::now() + IDLE + SETTLE;
            while quiet.iter().any(|id| r.lookup(id).is_ok()) {
                check!(
                    Instant::now() < deadline,
                    "workers without mail outlived their idle timeout: {:?}",
                    quiet
                        .iter()
                        .filter(|id| r.lookup(id).is_ok())
                        .collect::<Vec<_>>()
                );
                pause().await;
            }
            for id in quiet {
                model.vanished(id)?;
            }
            for (id, _) in model.live.iter() {
                check!(r.lookup(id).is_ok(), "held worker {id} idled out");
            }
        }
    }
    Ok(())
}

/// What must hold after every step. With an idle timeout, workers idle out
/// while it looks: a disagreement is rechecked after the model learned
/// which did.
async fn invariants(r: &GenRegistry<Probe>, log: &Log, model: &mut Model) -> Result<(), String> {
    loop {
        model.learn(r)?;
        match snapshot(r, log, model) {
            Ok(()) => break,
            Err(e) => {
                if !model.learn(r)? {
                    return Err(e);
                }
            }
        }
    }
    // A worker that stopped itself, panicked, idled out or was evicted
    // runs terminate and is dropped just after; a restart's init runs after
    // its back-off. Wait for that.
    let reasons = |wanted: ExitReason| {
        log.reasons
            .lock()
            .iter()
            .filter(|(_, reason)| *reason == wanted)
            .count()
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        model.learn(r)?;
        let settled = [
            (log.live(), model.live.len()),
            (log.terminates(), model.terminated),
            (log.inits(), model.inits),
            (reasons(ExitReason::Idle), model.idled),
            (reasons(ExitReason::Evicted), model.evicted),
        ];
        if settled.iter().all(|(seen, expected)| seen == expected) {
            break;
        }
        check!(
            Instant::now() < deadline,
            "live, terminates, inits, idle ends, evictions: the probes' log has {:?}, the \
             model {:?}",
            settled.map(|s| s.0),
            settled.map(|s| s.1)
        );
        pause().await;
    }
    let fired: BTreeSet<u64> = log.fired.lock().iter().copied().collect();
    check!(
        fired == model.fired && log.fired.lock().len() == fired.len(),
        "timers fired: {:?}; the model expects {:?}",
        log.fired.lock(),
        model.fired
    );
    // Until a worker has ended its id may still hold a place under the
    // capacity; `stop` of an ending worker waits for its end.
    for id in std::mem::take(&mut model.ending_ids) {
        if model.live.contains_key(&id) {
            continue;
        }
        let stopped = gen_registry::timeout(SETTLE, r.stop(&id))
            .await
            .map_err(|_| format!("stop of the ended worker {id} never returned"))?;
        check!(
            matches!(stopped, Err(Error::NotFound)),
            "stop of the ended worker {id} gave {stopped:?}"
        );
    }
    for (h, end) in std::mem::take(&mut model.ending) {
        let reason = gen_registry::timeout(SETTLE, h.monitor())
            .await
            .map_err(|_| format!("the monitor of ended worker {} never resolved", h.id()))?;
        let expected = match end {
            End::Stopped => matches!(reason, ExitReason::Stopped),
            End::Normal => matches!(reason, ExitReason::Normal),
            End::Panicked => matches!(reason, ExitReason::Panicked(_)),
            End::Idle => matches!(reason, ExitReason::Idle),
            End::Evicted => matches!(reason, ExitReason::Evicted),
        };
        check!(
            expected,
            "the monitor of worker {} says {reason:?}; the model {end:?}",
            h.id()
        );
    }
    Ok(())
}

/// What must hold of the registry's view at one instant.
fn snapshot(r: &GenRegistry<Probe>, log: &Log, model: &Model) -> Result<(), String> {
    let expected: BTreeSet<u64> = model.live.keys().copied().collect();
    check!(
        r.count() == expected.len(),
        "count() is {}, the model has {} live",
        r.count(),
        expected.len()
    );
    if let Limit::Capacity(n, _) = model.limit {
        check!(
            r.count() <= n,
            "count() is {} over a capacity of {n}",
            r.count()
        );
    }
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
    for (id, (h, generation)) in &model.handles {
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
    Ok(())
}

/// A worker that gets no mail after its start idles out no sooner than its
/// idle timeout after that start (the idle timeout's doc: it ends between the
/// timeout and the timeout plus the sweep's period). A busy machine only
/// delays an end, so a worker seen ending sooner is certain evidence.
#[test]
fn a_worker_without_mail_outlives_its_idle_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let log = Log::new();
    let r = registry_with(Options::default().idle_timeout(TIMEOUT));
    let lives = run(30, async move {
        let mut ends = Vec::new();
        for id in 0..8 {
            let started = Instant::now();
            let w = r.lookup_or_start(id, Args::new(&log)).await.unwrap();
            let end = w.monitor();
            ends.push(async move { (end.await, started.elapsed()) });
            // Starts spread over the sweep's period (a quarter of the timeout).
            for _ in 0..7 {
                pause().await;
            }
        }
        futures::future::join_all(ends).await
    });
    for (reason, lived) in &lives {
        assert_eq!(*reason, ExitReason::Idle);
        assert!(
            *lived >= TIMEOUT,
            "a worker without mail ended {lived:?} after its start, under an idle timeout of \
             {TIMEOUT:?}: {lives:?}"
        );
    }
}

/// Once a call that stopped its worker has returned, `count()` no longer
/// counts that worker; nor may the capacity: a start then finds room, and
/// evicts nobody. Tried 100 times under each policy, because the window is
/// the stopped worker's `terminate`.
#[test]
fn a_worker_that_stopped_itself_frees_its_place_under_the_capacity() {
    let log = Log::new();
    for at in [AtCapacity::Refuse, AtCapacity::Evict] {
        for _ in 0..100 {
            let r = registry_with(Options::default().max_workers(2).at_capacity(at));
            let log = log.clone();
            run(30, async move {
                let first = r.lookup_or_start(1, Args::new(&log)).await.unwrap();
                let second = r.lookup_or_start(2, Args::new(&log)).await.unwrap();
                first.call(Req::StopSelf).await.unwrap();
                assert_eq!(r.count(), 1);
                let third = r.lookup_or_start(3, Args::new(&log)).await;
                assert!(
                    third.is_ok(),
                    "{at:?}: a start with 1 of 2 places taken gave {third:?}"
                );
                assert!(
                    second.is_alive(),
                    "{at:?}: a start with a place free evicted a worker"
                );
                r.shutdown().await;
            });
        }
    }
}

/// The model test of persisted state and reminders: random sequences of
/// writes, unwritten changes, stops, kills, restarts of the registry, and
/// reminders set (from inside a worker and from outside), cancelled, listed
/// and fired, on a small pool of ids, each step checked against a model of
/// what the store holds and what each worker holds in memory.
///
/// It proves, for every sequence: a worker's state is what the model says
/// (an acknowledged write survives every end; an unwritten change survives
/// a graceful end, which flushes it, and is lost by a kill); `list` shows
/// every reminder set for later, with its message, and nothing that was not
/// set; every reminder due fires exactly once (no process dies here, so at
/// least once is exactly once), a reminder replaced or cancelled before it
/// was due never fires, and nothing set for later fires at all.
mod persisted {
    use super::{CALL_DEADLINE, executor, pause};
    use crate::common::*;
    use gen_registry::state::{Reminded, Reminders, Service, StateError, Store, Stored, When};
    use gen_registry::{Context, ExitReason, GenRegistry, Options, Worker};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const IDS: u64 = 4;
    const NAMES: [&str; 3] = ["a", "b", "c"];
    const SCAN: Duration = Duration::from_millis(2);
    /// A reminder set for later: never due within a case.
    const LATER: Duration = Duration::from_secs(3_600);

    /// What the workers of a case share.
    #[derive(Clone)]
    struct Env {
        store: Store,
        reminders: Reminders<Keeper, u64>,
        /// Every delivery handled: id, name, message.
        fired: Arc<Mutex<Vec<(u64, String, u64)>>>,
    }

    struct Keeper {
        values: Stored<Vec<u64>>,
        env: Env,
    }

    enum Ask {
        Write(u64),
        Note(u64),
        Get,
        Remind(&'static str, When, u64),
        Reminded(Reminded<u64>),
    }

    impl From<Reminded<u64>> for Ask {
        fn from(reminded: Reminded<u64>) -> Ask {
            Ask::Reminded(reminded)
        }
    }

    impl Worker for Keeper {
        type Id = u64;
        type Args = Env;
        type Request = Ask;
        type Reply = Result<Vec<u64>, StateError>;
        type Message = ();
        type Error = StateError;

        async fn init(id: &u64, env: Env, _: &Context<Self>) -> Result<Self, StateError> {
            let values = Stored::load(&env.store, "keeper", id).await?;
            Ok(Keeper { values, env })
        }

        async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> Self::Reply {
            match ask {
                Ask::Write(n) => {
                    self.values.push(n);
                    self.values.write().await?;
                }
                Ask::Note(n) => self.values.push(n),
                Ask::Get => {}
                Ask::Remind(name, when, message) => {
                    self.env
                        .reminders
                        .set(ctx.id(), name, when, &message)
                        .await?;
                }
                Ask::Reminded(reminded) => {
                    let fire = (*ctx.id(), reminded.name, reminded.message);
                    self.env.fired.lock().unwrap().push(fire);
                }
            }
            Ok(self.values.to_vec())
        }

        async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
            if !reason.is_abnormal() {
                let _ = self.values.flush().await;
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Due {
        /// Due at once: fires at the next scan.
        Now,
        /// Due in an hour: never within a case.
        Later,
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Write(u64, u64),
        Note(u64, u64),
        Get(u64),
        /// A graceful end: `terminate` flushes what changed.
        Stop(u64),
        /// An abort: no `terminate`, unwritten changes are lost.
        Kill(u64),
        /// The registry shuts down (flushing every worker), and a new
        /// registry and service take over the store.
        Restart,
        /// id, name, due, from inside the worker (or from outside).
        Remind(u64, usize, Due, bool),
        Cancel(u64, usize),
        List(u64),
        /// Waits until every reminder due has fired and was marked fired.
        Settle,
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = || 0..IDS;
        let name = || 0..NAMES.len();
        let due = prop_oneof![Just(Due::Now), Just(Due::Later)];
        prop_oneof![
            3 => (id(), 0..100u64).prop_map(|(i, n)| Op::Write(i, n)),
            3 => (id(), 0..100u64).prop_map(|(i, n)| Op::Note(i, n)),
            2 => id().prop_map(Op::Get),
            2 => id().prop_map(Op::Stop),
            2 => id().prop_map(Op::Kill),
            1 => Just(Op::Restart),
            4 => (id(), name(), due, any::<bool>()).prop_map(|(i, n, d, w)| Op::Remind(i, n, d, w)),
            2 => (id(), name()).prop_map(|(i, n)| Op::Cancel(i, n)),
            2 => id().prop_map(Op::List),
            2 => Just(Op::Settle),
        ]
    }

    /// What the model holds.
    #[derive(Default)]
    struct Model {
        /// What the store holds for each id.
        durable: HashMap<u64, Vec<u64>>,
        /// What each running worker holds (its unwritten changes too).
        running: HashMap<u64, Vec<u64>>,
        /// The reminders set and not yet fired or cancelled: message, due.
        reminders: BTreeMap<(u64, usize), (u64, Due)>,
        /// Messages of reminders due that must fire.
        must_fire: HashSet<u64>,
        /// Messages of reminders that must never fire (set for later, or
        /// replaced or cancelled while not yet due).
        never: HashSet<u64>,
        /// Messages due when their worker was killed or the registry
        /// restarted: a delivery cut off before its mark was written is
        /// delivered again (at least once), so these may fire twice.
        may_repeat: HashSet<u64>,
        next_message: u64,
    }

    impl Model {
        fn values(&mut self, id: u64) -> &mut Vec<u64> {
            let durable = self.durable.get(&id).cloned().unwrap_or_default();
            self.running.entry(id).or_insert(durable)
        }

        /// A reminder of `(id, name)` goes: replaced, or cancelled.
        /// One set for later must then never fire; one due may have fired
        /// already, or not.
        fn drop_reminder(&mut self, at: (u64, usize)) {
            match self.reminders.remove(&at) {
                Some((message, Due::Later)) => self.never.insert(message),
                Some((message, Due::Now)) => self.must_fire.remove(&message),
                None => false,
            };
        }
    }

    struct Running {
        registry: GenRegistry<Keeper>,
        service: Service,
    }

    fn start(env: &Env) -> Running {
        let options = Options::default().executor(executor());
        let registry = GenRegistry::<Keeper>::new(options).unwrap();
        let args = env.clone();
        let service = env.reminders.serve(&registry, move |_| args.clone(), SCAN);
        Running { registry, service }
    }

    async fn call(
        r: &GenRegistry<Keeper>,
        env: &Env,
        id: u64,
        ask: Ask,
    ) -> Result<Vec<u64>, String> {
        let reply = gen_registry::timeout(CALL_DEADLINE, r.call(id, env.clone(), ask)).await;
        let reply = reply.map_err(|_| format!("call to {id} did not return"))?;
        let reply = reply.map_err(|e| format!("call to {id}: {e}"))?;
        reply.map_err(|e| format!("call to {id}: {e}"))
    }

    async fn apply(
        running: &mut Running,
        env: &Env,
        model: &mut Model,
        op: Op,
    ) -> Result<(), String> {
        let r = &running.registry;
        match op {
            Op::Write(id, n) => {
                let got = call(r, env, id, Ask::Write(n)).await?;
                model.values(id).push(n);
                let want = model.values(id).clone();
                check!(got == want, "wrote to {id}: {got:?}, the model {want:?}");
                model.durable.insert(id, want);
            }
            Op::Note(id, n) => {
                let got = call(r, env, id, Ask::Note(n)).await?;
                model.values(id).push(n);
                let want = model.values(id);
                check!(got == *want, "noted on {id}: {got:?}, the model {want:?}");
            }
            Op::Get(id) => {
                let got = call(r, env, id, Ask::Get).await?;
                let want = model.values(id);
                check!(got == *want, "{id} holds {got:?}, the model {want:?}");
            }
            Op::Stop(id) => {
                // A worker the model does not know of may run: one the
                // reminders service started, holding what the store holds.
                let stopped = r.stop(&id).await;
                let running = model.running.remove(&id);
                check!(
                    stopped.is_ok() || running.is_none(),
                    "stop {id}: {stopped:?}"
                );
                if let Some(values) = running {
                    model.durable.insert(id, values);
                }
            }
            Op::Kill(id) => {
                if let Ok(worker) = r.lookup(&id) {
                    let ended = worker.monitor();
                    worker.kill();
                    check!(ended.await == ExitReason::Killed, "kill {id}");
                }
                model.running.remove(&id);
                let due = model
                    .reminders
                    .iter()
                    .filter(|((of, _), (_, due))| *of == id && *due == Due::Now);
                let due: Vec<u64> = due.map(|(_, (message, _))| *message).collect();
                model.may_repeat.extend(due);
            }
            Op::Restart => {
                let due = model.reminders.values().filter(|(_, due)| *due == Due::Now);
                let due: Vec<u64> = due.map(|(message, _)| *message).collect();
                model.may_repeat.extend(due);
                let report = running.registry.shutdown().await;
                check!(report.aborted == 0, "a worker was aborted at shutdown");
                wait_until(|| !running.service.is_running()).await;
                for (id, values) in model.running.drain() {
                    model.durable.insert(id, values);
                }
                *running = start(env);
            }
            Op::Remind(id, name, due, inside) => {
                let message = model.next_message;
                model.next_message += 1;
                let when = match due {
                    Due::Now => When::After(Duration::ZERO),
                    Due::Later => When::After(LATER),
                };
                if inside {
                    call(r, env, id, Ask::Remind(NAMES[name], when, message)).await?;
                    model.values(id);
                } else {
                    let set = env.reminders.set(&id, NAMES[name], when, &message).await;
                    set.map_err(|e| e.to_string())?;
                }
                model.drop_reminder((id, name));
                model.reminders.insert((id, name), (message, due));
                match due {
                    Due::Now => model.must_fire.insert(message),
                    Due::Later => model.never.insert(message),
                };
            }
            Op::Cancel(id, name) => {
                let cancelled = env.reminders.cancel(&id, NAMES[name]).await;
                let cancelled = cancelled.map_err(|e| e.to_string())?;
                // One due may have fired already: only one set for later
                // must be found.
                if let Some((_, Due::Later)) = model.reminders.get(&(id, name)) {
                    check!(cancelled, "cancel of {id}/{} found nothing", NAMES[name]);
                }
                if !cancelled {
                    check!(
                        !matches!(model.reminders.get(&(id, name)), Some((_, Due::Later))),
                        "cancel of {id}/{} found nothing",
                        NAMES[name]
                    );
                }
                model.drop_reminder((id, name));
            }
            Op::List(id) => {
                let listed = env.reminders.list(&id).await.map_err(|e| e.to_string())?;
                for ((of, name), (message, due)) in &model.reminders {
                    let found = listed.iter().find(|r| r.name == NAMES[*name]);
                    if *of == id && *due == Due::Later {
                        check!(
                            found.is_some_and(|r| r.message == *message && r.period.is_none()),
                            "list of {id}: {listed:?}, the model has {}: {message}",
                            NAMES[*name]
                        );
                    }
                }
                for reminder in &listed {
                    let name = NAMES.iter().position(|n| *n == reminder.name);
                    let set = name.and_then(|name| model.reminders.get(&(id, name)));
                    check!(
                        set.is_some_and(|(message, _)| *message == reminder.message),
                        "list of {id} shows {reminder:?}, which the model does not have"
                    );
                }
            }
            Op::Settle => {
                let fired = env.fired.clone();
                let must: HashSet<u64> = model.must_fire.clone();
                wait_until(|| {
                    let fired = fired.lock().unwrap();
                    must.iter().all(|m| fired.iter().any(|(_, _, f)| f == m))
                })
                .await;
                // Marked fired: gone from the store.
                for ((id, name), (message, due)) in model.reminders.clone() {
                    if due == Due::Now {
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        let marked = loop {
                            let listed =
                                env.reminders.list(&id).await.map_err(|e| e.to_string())?;
                            if !listed.iter().any(|r| r.message == message) {
                                break true;
                            }
                            if std::time::Instant::now() > deadline {
                                break false;
                            }
                            pause().await;
                        };
                        check!(marked, "{id}/{} fired but stayed in the store", NAMES[name]);
                        model.reminders.remove(&(id, name));
                    }
                }
            }
        }
        // Whatever fired must have been due, and fired once.
        let fired = env.fired.lock().unwrap().clone();
        let mut seen = HashSet::new();
        for (id, name, message) in &fired {
            check!(
                !model.never.contains(message),
                "{id}/{name} fired message {message}, set for later or dropped"
            );
            check!(
                seen.insert(*message) || model.may_repeat.contains(message),
                "{id}/{name} fired message {message} twice, with no kill nor restart to repeat it"
            );
        }
        Ok(())
    }

    async fn run_case(ops: Vec<Op>) -> Result<(), String> {
        let store = Store::new(gen_registry::state::Memory::new(), executor());
        let env = Env {
            reminders: Reminders::new(&store, "keeper"),
            store,
            fired: Arc::default(),
        };
        let mut model = Model::default();
        let mut running = start(&env);
        let mut outcome = Ok(());
        for (step, op) in ops.iter().enumerate() {
            outcome = apply(&mut running, &env, &mut model, *op)
                .await
                .map_err(|e| format!("step {step} ({op:?}): {e}"));
            if outcome.is_err() {
                break;
            }
        }
        running.registry.shutdown().await;
        wait_until(|| !running.service.is_running()).await;
        outcome
    }

    #[test]
    fn persisted_state_and_reminders_behave_like_their_model() {
        let cases = size_from_env("GEN_REGISTRY_MODEL_CASES", 150) as u32;
        let steps = size_from_env("GEN_REGISTRY_MODEL_STEPS", 64);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let ops = prop::collection::vec(op(), 1..=steps);
        let result = runner.run(&ops, |ops| match run_caught(60, run_case(ops)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) | Err(message) => Err(TestCaseError::fail(message)),
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, ops)) => {
                panic!("persisted state departed from the model: {why}\nminimal case: {ops:#?}")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
