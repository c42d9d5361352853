//! The probe: a worker whose `init` and handlers can be made to succeed,
//! fail, panic, hang, wait on a gate or schedule and cancel timers to
//! itself, and that reports every init, terminate and drop (and any two live
//! probes of one id, held handlers and fired timers) to a shared [`Log`].

use futures::channel::oneshot;
use gen_registry::{Context, Event, ExitReason, GenRegistry, Options, TimerRef, Worker};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What every probe worker of one test reports.
#[derive(Default)]
pub struct Log {
    pub inits: AtomicUsize,
    pub terminates: AtomicUsize,
    pub drops: AtomicUsize,
    /// Live probes per id (created by a successful init, not yet dropped).
    live: Mutex<HashMap<u64, usize>>,
    /// Times a probe was created while another of its id was alive.
    pub overlaps: AtomicUsize,
    pub reasons: Mutex<Vec<(u64, ExitReason)>>,
    /// Inits attempted per id (successful or not).
    attempts: Mutex<HashMap<u64, usize>>,
    /// What the registry's observer reported, as text.
    pub events: Mutex<Vec<String>>,
    /// Handlers of [`Req::Wait`] entered so far.
    pub holding: AtomicUsize,
    /// The tags of the timers that fired, in order.
    pub fired: Mutex<Vec<u64>>,
    /// Every timer scheduled by [`Req::After`] and not yet cancelled by
    /// [`Req::CancelTimers`], by id, from every incarnation.
    pub timers: Mutex<HashMap<u64, Vec<TimerRef>>>,
}

impl Log {
    pub fn new() -> Arc<Log> {
        Arc::new(Log::default())
    }
    pub fn inits(&self) -> usize {
        self.inits.load(Ordering::SeqCst)
    }
    pub fn terminates(&self) -> usize {
        self.terminates.load(Ordering::SeqCst)
    }
    pub fn live(&self) -> usize {
        self.live.lock().values().sum()
    }
    pub fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }
    /// The events reported so far.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().clone()
    }
    /// How many reported events start with `prefix`.
    pub fn count_events(&self, prefix: &str) -> usize {
        self.events
            .lock()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
}

/// Options whose observer records every event in `log`.
pub fn observed(log: &Arc<Log>) -> Options<Probe> {
    let log = log.clone();
    Options::default()
        .observe(move |event: &Event<'_, Probe>| log.events.lock().push(event.to_string()))
}

/// How a probe's init behaves.
#[derive(Clone)]
pub enum Init {
    Ok,
    Fail,
    Panic,
    /// Never finishes.
    Hang,
    /// Waits until the gate is opened (its sender sends or is dropped).
    Gate(Arc<Mutex<Option<oneshot::Receiver<()>>>>),
    /// Waits for the gate, then fails.
    GateThenFail(Arc<Mutex<Option<oneshot::Receiver<()>>>>),
    /// Starts (lookup_or_start) another id of the same registry first.
    StartOther(u64),
    /// Succeeds for the first `n` attempts of the id, then fails.
    FailAfter(usize),
}

#[derive(Clone)]
pub struct Args {
    pub log: Arc<Log>,
    pub init: Init,
    pub state: u64,
}

impl Args {
    pub fn new(log: &Arc<Log>) -> Args {
        Args {
            log: log.clone(),
            init: Init::Ok,
            state: 0,
        }
    }
    pub fn init(mut self, init: Init) -> Args {
        self.init = init;
        self
    }
    pub fn state(mut self, state: u64) -> Args {
        self.state = state;
        self
    }
}

pub fn gate() -> (oneshot::Sender<()>, Init) {
    let (tx, rx) = oneshot::channel();
    (tx, Init::Gate(Arc::new(Mutex::new(Some(rx)))))
}

/// An init that waits for the gate and then fails.
pub fn gate_then_fail() -> (oneshot::Sender<()>, Init) {
    let (tx, rx) = oneshot::channel();
    (tx, Init::GateThenFail(Arc::new(Mutex::new(Some(rx)))))
}

#[derive(Debug)]
pub enum Req {
    Get,
    /// Like `Get`, answered from another thread through a deferred reply.
    GetDeferred,
    Add(u64),
    /// Reply, then stop.
    StopSelf,
    Panic,
    /// Never reply.
    Hang,
    /// lookup_or_start another id from inside the handler; reply with its state.
    CallOther(u64),
    /// Wait until the gate opens, then reply with the state.
    Wait(Gate),
    /// Schedule a timer tagged `tag` to this worker after `ms` milliseconds
    /// (`ctx.send_after`); reply with the state. Its message leaves the state
    /// as it is and logs the tag in `Log::fired`.
    After {
        ms: u64,
        tag: u64,
    },
    /// Like `After`, then panic in the same handler.
    AfterThenPanic {
        ms: u64,
        tag: u64,
    },
    /// Cancel every timer `After` scheduled for this id, in any incarnation;
    /// reply with how many were still pending.
    CancelTimers,
}

/// A gate a handler waits on: open it by sending on (or dropping) its sender.
#[derive(Clone)]
pub struct Gate(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// A closed gate for [`Req::Wait`] and its key.
pub fn handler_gate() -> (oneshot::Sender<()>, Gate) {
    let (tx, rx) = oneshot::channel();
    (tx, Gate(Arc::new(Mutex::new(Some(rx)))))
}

/// A cast the probe panics on.
pub const PANIC_CAST: u64 = u64::MAX;

/// A timer's message: this plus its tag (see [`Req::After`]).
pub const TIMER: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
#[error("probe init refused: {0}")]
pub struct ProbeError(pub String);

pub struct Probe {
    id: u64,
    state: u64,
    log: Arc<Log>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.log.drops.fetch_add(1, Ordering::SeqCst);
        let mut live = self.log.live.lock();
        *live.get_mut(&self.id).expect("a live probe is counted") -= 1;
    }
}

impl Worker for Probe {
    type Id = u64;
    type Args = Args;
    type Request = Req;
    type Reply = u64;
    type Message = u64;
    type Error = ProbeError;

    async fn init(id: &u64, args: Args, ctx: &Context<Self>) -> Result<Self, ProbeError> {
        args.log.inits.fetch_add(1, Ordering::SeqCst);
        let attempt = {
            let mut attempts = args.log.attempts.lock();
            let n = attempts.entry(*id).or_default();
            *n += 1;
            *n
        };
        match &args.init {
            Init::FailAfter(n) if attempt > *n => {
                return Err(ProbeError(format!("id {id}, attempt {attempt}")));
            }
            Init::FailAfter(_) => {}
            Init::Ok => {}
            Init::Fail => return Err(ProbeError(format!("id {id}"))),
            Init::Panic => panic!("init of {id} panicked"),
            Init::Hang => futures::future::pending::<()>().await,
            Init::Gate(rx) | Init::GateThenFail(rx) => {
                let rx = rx.lock().take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                if matches!(args.init, Init::GateThenFail(_)) {
                    return Err(ProbeError(format!("id {id}, after the gate")));
                }
            }
            Init::StartOther(other) => {
                let registry = ctx.registry().expect("registry alive");
                registry
                    .lookup_or_start(*other, Args::new(&args.log))
                    .await
                    .expect("start from init");
            }
        }
        let mut live = args.log.live.lock();
        let n = live.entry(*id).or_default();
        if *n > 0 {
            args.log.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *n += 1;
        drop(live);
        Ok(Probe {
            id: *id,
            state: args.state,
            log: args.log,
        })
    }

    async fn handle_call(&mut self, req: Req, ctx: &mut Context<Self>) -> u64 {
        match req {
            Req::Get => self.state,
            Req::GetDeferred => {
                let (reply, state) = (ctx.defer().expect("a call's reply"), self.state);
                std::thread::spawn(move || reply.send(state));
                0 // dropped: the reply was deferred
            }
            Req::Add(n) => {
                self.state += n;
                self.state
            }
            Req::StopSelf => {
                ctx.stop();
                self.state
            }
            Req::Panic => panic!("handler of {} panicked", self.id),
            Req::Hang => futures::future::pending().await,
            Req::CallOther(other) => {
                let registry = ctx.registry().expect("registry alive");
                let w = registry
                    .lookup_or_start(other, Args::new(&self.log).state(other))
                    .await
                    .expect("start from handler");
                w.call(Req::Get).await.expect("call from handler")
            }
            Req::Wait(gate) => {
                self.log.holding.fetch_add(1, Ordering::SeqCst);
                let rx = gate.0.lock().take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                self.state
            }
            Req::After { ms, tag } | Req::AfterThenPanic { ms, tag } => {
                let timer = ctx.send_after(std::time::Duration::from_millis(ms), TIMER + tag);
                self.log
                    .timers
                    .lock()
                    .entry(self.id)
                    .or_default()
                    .push(timer);
                if matches!(req, Req::AfterThenPanic { .. }) {
                    panic!("handler of {} panicked after scheduling a timer", self.id);
                }
                self.state
            }
            Req::CancelTimers => {
                let timers = self.log.timers.lock().remove(&self.id).unwrap_or_default();
                let pending = timers.into_iter().filter(|t| ctx.cancel_timer(*t));
                pending.count() as u64
            }
        }
    }

    async fn handle_cast(&mut self, n: u64, _ctx: &mut Context<Self>) {
        if n == PANIC_CAST {
            panic!("cast handler of {} panicked", self.id);
        }
        if n >= TIMER {
            self.log.fired.lock().push(n - TIMER);
            return;
        }
        self.state += n;
    }

    async fn terminate(&mut self, reason: &ExitReason, _ctx: &mut Context<Self>) {
        self.log.terminates.fetch_add(1, Ordering::SeqCst);
        self.log.reasons.lock().push((self.id, reason.clone()));
    }
}

pub fn registry() -> GenRegistry<Probe> {
    registry_with(Options::default())
}

/// A registry with `options` (on Bastion's executor unless they name
/// another).
pub fn registry_with(options: Options<Probe>) -> GenRegistry<Probe> {
    GenRegistry::new(options).unwrap()
}
