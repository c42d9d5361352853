//! The shared state of one worker: its lifecycle and its mailbox.
//!
//! A cell is allocated once per worker and shared (one `Arc`) by the id table,
//! every handle and the worker's own process. It outlives restarts, so handles
//! never go stale. The lifecycle is an atomic byte that lookups read without
//! locking; every transition happens under the cell's lock, and tasks waiting on
//! a transition are woken after the lock is released.
//!
//! ```text
//!   Starting ──init ok──▶ Running ──stop / self-stop / panic──▶ Stopping ──▶ Ended
//!       │                                                              ▲
//!       └──────────── init failed, timed out, or stop before running ──┘
//! ```
//!
//! This drawing is the one place the diagram lives. [`State`] only moves
//! forward along it: every transition goes through [`Cell::advance`], which
//! checks that.
//!
//! A worker that crashed and may restart stays Running while it waits out its
//! back-off and runs `init` again: it keeps its place, its mail and its
//! handles. A stop request in that time moves it to Stopping, and the worker
//! sees the request when it wakes.
//!
//! Only Running workers are visible to lookups and counted; a worker leaves
//! Running *before* it answers the request that ends it, so nobody who got that
//! answer can be handed the dying worker again.
//!
//! The cell sees its registry only through a [`RegistryView`]: the running
//! count it keeps, its mailbox bound and the call timeout, nothing typed by
//! the worker.
//!
//! A worker's end takes two steps: [`Cell::close`] closes the mailbox, then,
//! once the entry has left the table, [`Cell::mark_ended`] publishes Ended and
//! wakes the waiters. So Ended implies the id is free, and nobody waiting on a
//! stop has to remove the entry again.

use crate::executor::Task;
use crate::primitives::queue::Queue;
use crate::primitives::table::Entry;
use crate::primitives::timers::{Repeat, Timers};
use crate::worker::telemetry::{Metrics, Sampled, sampled};
use crate::worker::{ExitReason, Worker};
use futures::channel::oneshot;
use parking_lot::lock_api::RawMutex as _;
use std::cell::UnsafeCell;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Where a worker is in its lifecycle (drawn in this module's doc). Kept in
/// one atomic byte that lookups read without locking; it only moves forward.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum State {
    /// `init` runs (the first one: a restart stays `Running`).
    Starting = 0,
    /// Visible to lookups, counted, taking mail.
    Running = 1,
    /// Asked to stop, stopping by itself, or killed: no new mail; its
    /// `terminate` may be running.
    Stopping = 2,
    /// Gone, and its id is free.
    Ended = 3,
}

impl State {
    fn from_byte(byte: u8) -> State {
        match byte {
            0 => State::Starting,
            1 => State::Running,
            2 => State::Stopping,
            _ => State::Ended,
        }
    }
}

/// The part of a registry its workers' cells read and write: the count of
/// running workers, which a cell keeps in step with its state, the mailbox
/// bound, and the call timeout a handle's call waits. Not generic over the
/// worker type; the registry's shared state holds one.
pub(crate) struct RegistryView {
    /// Workers in the Running state, updated under each worker's lock in the
    /// same step as its state, so a caller who saw a state also sees its count.
    pub(crate) running: AtomicUsize,
    /// Each mailbox's bound in messages; 0 for none.
    pub(crate) mailbox_bound: u32,
    /// How long a call on a handle waits for its reply.
    pub(crate) call_timeout: Duration,
    /// The registry's metric handles (see [`crate::worker::telemetry`]).
    pub(crate) metrics: Metrics,
}

/// The largest mailbox capacity (in messages) kept once the mailbox is empty.
const KEEP_MAILBOX_CAPACITY: usize = 1024;

/// Why a call got no reply from the handler.
pub(crate) enum CallFailure<R> {
    Panicked(String),
    /// The handler deferred its reply, and the reply handle was dropped
    /// without an answer.
    Dropped,
    /// The worker ended with the request still in its mailbox: no handler
    /// saw it, and here it is back.
    Undelivered(R),
}

/// What a caller gets back from the worker: the reply, or why none came.
pub(crate) type Outcome<W> = Result<<W as Worker>::Reply, CallFailure<<W as Worker>::Request>>;

pub(crate) type ReplyTo<W> = oneshot::Sender<Outcome<W>>;

/// Why a message was not queued; the message comes back.
pub(crate) enum Refused<W: Worker> {
    /// The worker is stopping or has ended.
    Closed(Envelope<W>),
    /// The mailbox holds its capacity.
    Full(Envelope<W>),
}

pub(crate) enum Envelope<W: Worker> {
    Call(W::Request, ReplyTo<W>),
    Cast(W::Message),
}

/// Why a start did not produce a running worker.
pub(crate) enum StartFailure<E> {
    Init(E),
    Panicked(String),
    Timeout(Duration),
    ExecutorShutDown,
}

impl<E: std::fmt::Display> std::fmt::Display for StartFailure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::Init(e) => write!(f, "init failed: {e}"),
            StartFailure::Panicked(m) => write!(f, "init panicked: {m}"),
            StartFailure::Timeout(d) => write!(f, "init did not finish within {d:?}"),
            StartFailure::ExecutorShutDown => f.write_str("its executor shut down during init"),
        }
    }
}

/// What the worker's process gets from its mailbox.
pub(crate) enum Next<W: Worker> {
    Mail(Envelope<W>),
    Stop(ExitReason),
}

/// A stop asked for from outside the worker: the only reasons one comes with.
/// A byte in the cell, where an [`ExitReason`] would take 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// [`GenRegistry::stop`](crate::GenRegistry::stop).
    Stop,
    /// [`GenRegistry::shutdown`](crate::GenRegistry::shutdown).
    Shutdown,
    /// [`GenRegistry::hand_over`](crate::GenRegistry::hand_over).
    Moved,
    /// The idle timeout passed without mail.
    Idle,
    /// A start at the registry's capacity chose it.
    Evicted,
}

impl From<StopRequest> for ExitReason {
    fn from(request: StopRequest) -> Self {
        match request {
            StopRequest::Stop => ExitReason::Stopped,
            StopRequest::Shutdown => ExitReason::Shutdown,
            StopRequest::Moved => ExitReason::Moved,
            StopRequest::Idle => ExitReason::Idle,
            StopRequest::Evicted => ExitReason::Evicted,
        }
    }
}

/// Why a worker ended, kept in its cell for monitors: a byte in the cell
/// for the reasons without text; a reason with text (a panic's message) is
/// kept in [`Rare::exit`], and its byte is `TEXT`.
struct Exit;

impl Exit {
    /// The worker has not ended.
    const NONE: u8 = 0;
    /// The reason is in [`Rare::exit`].
    const TEXT: u8 = 7;

    /// The byte for `reason`; `TEXT` for a reason with text.
    fn code(reason: &ExitReason) -> u8 {
        match reason {
            ExitReason::Normal => 1,
            ExitReason::Stopped => 2,
            ExitReason::Shutdown => 3,
            ExitReason::Killed => 4,
            ExitReason::Idle => 5,
            ExitReason::Evicted => 6,
            ExitReason::Moved => 8,
            _ => Exit::TEXT,
        }
    }

    fn reason(code: u8, rare: Option<&Rare<impl Worker>>) -> Option<ExitReason> {
        Some(match code {
            1 => ExitReason::Normal,
            2 => ExitReason::Stopped,
            3 => ExitReason::Shutdown,
            4 => ExitReason::Killed,
            5 => ExitReason::Idle,
            6 => ExitReason::Evicted,
            8 => ExitReason::Moved,
            Exit::TEXT => rare?.exit.clone()?,
            _ => return None,
        })
    }
}

/// What few workers need, boxed together so that every cell pays one
/// pointer for all of it: a failed start's error, an exit reason with text,
/// an incarnation's timers, and the tasks waiting on the lifecycle beyond the
/// first.
struct Rare<W: Worker> {
    start_failure: Option<StartFailure<W::Error>>,
    exit: Option<ExitReason>,
    /// This incarnation's timers; `None` until it schedules one.
    timers: Option<Timers<W::Message>>,
    /// Tasks waiting for the lifecycle to move on, after `Inner::waiter`.
    waiters: Vec<Waker>,
    /// Since when the message at the head of the mailbox has waited for a
    /// busy worker (see [`Stats::oldest_wait`](crate::Stats::oldest_wait));
    /// `None` while the mailbox is empty or the worker is about to take it.
    head_since: Option<Instant>,
    /// A message timed for the mailbox-wait histogram: when it was queued,
    /// and how many messages are still ahead of it.
    timed: Option<(Instant, usize)>,
}

impl<W: Worker> Rare<W> {
    /// Whether none of its parts is in use, so the box can go.
    fn is_unused(&self) -> bool {
        self.start_failure.is_none()
            && self.exit.is_none()
            && self.timers.is_none()
            && self.waiters.is_empty()
            && self.head_since.is_none()
            && self.timed.is_none()
    }
}

/// Where the id table keeps its copy of "this worker is Running": a flag
/// inside the table's entry for this cell.
#[derive(Clone, Copy)]
struct Mirror(NonNull<AtomicBool>);

// SAFETY: it points to an `AtomicBool`, which any thread may read and write;
// `Cell::attach` states for how long it stays valid.
unsafe impl Send for Mirror {}
unsafe impl Sync for Mirror {}

/// The cell's [`RegistryView`].
///
/// A pointer, not an `Arc`, so that starts and stops write no reference
/// count on the registry's shared line. It is valid whenever the cell is not
/// Ended: the registry's shared state, which holds the view, is kept alive
/// by the worker's own process until after its cell is Ended, and by whoever
/// is starting the worker before that; every use is under the cell's lock,
/// after a check that the cell is not Ended.
struct Registered(NonNull<RegistryView>);

// SAFETY: it points to a `RegistryView`, which any thread may read and whose
// count any thread may update; the type's doc states for how long it stays
// valid.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

impl Registered {
    /// The registry's view. Only under the cell's lock, with the cell not
    /// Ended.
    fn get(&self) -> &RegistryView {
        // SAFETY: see the type's doc.
        unsafe { self.0.as_ref() }
    }
}

struct Inner<W: Worker> {
    queue: Queue<Envelope<W>>,
    /// The worker's process, parked waiting for mail.
    worker: Option<Waker>,
    /// A task waiting for the lifecycle to move on. There is nearly always
    /// at most one (the starter, or the stopper); any more wait in
    /// [`Rare::waiters`].
    waiter: Option<Waker>,
    /// The worker's future on its executor, to abort it.
    task: Option<Task>,
    /// See [`Rare`]; `None` until one of its parts is needed.
    rare: Option<Box<Rare<W>>>,
    /// The table's copy of "Running", written with the state; `None` before
    /// the cell is in the table and from `close` on.
    mirror: Option<Mirror>,
    /// The registry's running count, mailbox bound and call timeout.
    registry: Registered,
    /// A stop asked for from outside, not yet seen by the worker.
    stop: Option<StopRequest>,
    kill: bool,
    /// The worker is not handling mail: it waits in `poll_next`, has not
    /// polled its mailbox yet, or has answered the call it handled and no
    /// mail waits. True from the start, so that a worker that
    /// has just started — Running, its starter woken, its first poll of the
    /// mailbox still to come — can be evicted like any idle one: a start
    /// right after it at the capacity limit is not refused because the
    /// worker's thread was preempted for a moment.
    parked: bool,
    /// Its starter has been handed the running worker, or it got mail:
    /// until then it is never evicted (so a start, or a call by id that
    /// started it, does not end in `WorkerEnded` for that).
    handed: bool,
    /// Sweeps in a row that found the worker parked without mail: 32 bits,
    /// as an idle timeout of up to 49 days may take billions of sweeps of a
    /// millisecond (a 16-bit count stopped every timeout past 18 hours).
    idle_sweeps: u32,
}

/// `Cell::evict_slot` of a worker no evictor tracks.
pub(crate) const NO_SLOT: u64 = u64::MAX;

/// `Cell::idle_ms`: the registry's idle timeout applies.
pub(crate) const IDLE_DEFAULT: u32 = 0;
/// `Cell::idle_ms`: the worker never idles out.
pub(crate) const IDLE_NEVER: u32 = u32::MAX;

/// An idle timeout in the cells' milliseconds: at least 1 (0 is
/// `IDLE_DEFAULT`), below `IDLE_NEVER`.
pub(crate) fn idle_millis(timeout: Duration) -> u32 {
    let ms = timeout.as_millis().clamp(1, u128::from(IDLE_NEVER - 1));
    ms as u32
}

impl<W: Worker> Inner<W> {
    /// A message is about to be queued: if the worker is busy and the
    /// mailbox empty, the message starts waiting now; one in
    /// [`SAMPLE_EVERY`](crate::worker::telemetry::SAMPLE_EVERY) is timed until the
    /// worker takes it. Only a busy worker, or a timed message, makes the
    /// rare parts and reads the clock.
    fn note_queued(&mut self) {
        let waits = !self.parked && self.queue.is_empty();
        let timed =
            sampled(Sampled::Mailbox) && self.rare.as_ref().is_none_or(|r| r.timed.is_none());
        if !waits && !timed {
            return;
        }
        let now = Instant::now();
        let ahead = self.queue.len();
        let rare = self.rare();
        if waits {
            rare.head_since = Some(now);
        }
        if timed {
            rare.timed = Some((now, ahead));
        }
    }

    /// The worker takes the message at the head of its mailbox: the next
    /// one, if any, waits from now on. How long the taken one waited, if it
    /// was the timed one.
    fn note_taken(&mut self) -> Option<Duration> {
        let more = !self.queue.is_empty();
        if !more && self.rare.is_none() {
            return None;
        }
        let rare = self.rare();
        let waited = match &mut rare.timed {
            Some((at, 0)) => {
                let waited = at.elapsed();
                rare.timed = None;
                Some(waited)
            }
            Some((_, ahead)) => {
                *ahead -= 1;
                None
            }
            None => None,
        };
        rare.head_since = more.then(Instant::now);
        if rare.is_unused() {
            self.rare = None;
        }
        waited
    }

    /// The rare parts, made on first use.
    fn rare(&mut self) -> &mut Rare<W> {
        self.rare.get_or_insert_with(|| {
            Box::new(Rare {
                start_failure: None,
                exit: None,
                timers: None,
                waiters: Vec::new(),
                head_since: None,
                timed: None,
            })
        })
    }

    /// This incarnation's timers, if it scheduled any.
    fn timers(&mut self) -> Option<&mut Timers<W::Message>> {
        self.rare.as_deref_mut()?.timers.as_mut()
    }

    /// Takes this incarnation's timers away, to drop them outside the lock.
    fn take_timers(&mut self) -> Option<Timers<W::Message>> {
        self.rare.as_deref_mut()?.timers.take()
    }

    /// Adds a task waiting for the lifecycle to move on, unless it waits
    /// already.
    fn add_waiter(&mut self, waker: &Waker) {
        match &self.waiter {
            None => self.waiter = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                let more = &mut self.rare().waiters;
                if !more.iter().any(|w| w.will_wake(waker)) {
                    more.push(waker.clone());
                }
            }
        }
    }

    /// Takes every waiting task, to wake them once the lock is released.
    fn take_waiters(&mut self) -> Wake {
        let more = self
            .rare
            .as_deref_mut()
            .map(|rare| std::mem::take(&mut rare.waiters))
            .unwrap_or_default();
        Wake {
            first: self.waiter.take(),
            more,
            worker: None,
        }
    }

    /// Counts the worker in or out of `running` (the registry's count) and
    /// writes the table's copy, in the same step as its state enters or leaves
    /// Running: the three move together, under the cell's lock.
    fn count_running(&self, now: bool) {
        let running = &self.registry.get().running;
        if now {
            running.fetch_add(1, Ordering::AcqRel);
        } else {
            running.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(Mirror(flag)) = self.mirror {
            // SAFETY: see `Cell::attach`; the pointer is dropped at `Cell::close`.
            unsafe { flag.as_ref() }.store(now, Ordering::Release);
        }
    }
}

/// `repr(C)`, state then id first: the lifecycle byte that `lookup_or_start`,
/// `stop` and a message's delivery read, and the id a table lookup compares
/// when the table keeps no copy of it (an id that owns memory), sit right
/// after the `Arc`'s reference count the handle they take increments, so
/// they touch one cache line of the cell for it, not two (Rust's own layout
/// puts the byte last). `lookup` reads the table's copy of the state instead.
///
/// The lock's byte, `exit`, `touched` and `idle_ms` share the state's word:
/// a `Mutex<Inner>` would pad its one-byte lock to a word of its own, and
/// every cell is paid by an idle worker.
#[repr(C)]
pub(crate) struct Cell<W: Worker> {
    state: AtomicU8,
    /// Guards `inner` (see [`Cell::lock`]).
    lock: parking_lot::RawMutex,
    /// Why the worker ended, once it has (see [`Exit`]). Only read and
    /// written under the lock, as are `touched` and `idle_ms`.
    exit: AtomicU8,
    /// Mail came, or the worker started, since the idle sweep last looked:
    /// the sweep that sees it only starts the count, so an idle timeout is
    /// counted from the start or the last mail, never from an earlier sweep.
    touched: AtomicBool,
    /// This worker's own idle timeout in milliseconds, set from its context:
    /// `IDLE_DEFAULT` for the registry's, `IDLE_NEVER` for none. Only read
    /// and written under the lock; atomic so that it can sit out of `inner`.
    idle_ms: AtomicU32,
    id: W::Id,
    /// Where the registry's evictor tracks this worker (`Slot::to_bits`),
    /// read without the lock on every lookup of a registry with a capacity;
    /// `NO_SLOT` otherwise.
    evict_slot: AtomicU64,
    inner: UnsafeCell<Inner<W>>,
}

// SAFETY: `inner` is only reached through `Cell::lock`, which holds the
// lock, as a `Mutex<Inner<W>>` would, and such a mutex is `Send` and `Sync`
// when `Inner<W>` is `Send` (checked below); the id is `Send` and `Sync`
// (`Worker::Id`'s bounds), and so are the other fields.
unsafe impl<W: Worker> Send for Cell<W> {}
unsafe impl<W: Worker> Sync for Cell<W> {}

/// Fails to compile if `Inner` stops being `Send`, which the impls above rely on.
#[allow(dead_code)]
fn inner_is_send<W: Worker>() {
    fn send<T: Send>() {}
    send::<Inner<W>>();
}

/// The cell's lock, held: its `Inner`, released when dropped.
struct Locked<'a, W: Worker>(&'a Cell<W>);

impl<W: Worker> Deref for Locked<'_, W> {
    type Target = Inner<W>;
    fn deref(&self) -> &Inner<W> {
        // SAFETY: the lock is held for as long as `self` lives.
        unsafe { &*self.0.inner.get() }
    }
}

impl<W: Worker> DerefMut for Locked<'_, W> {
    fn deref_mut(&mut self) -> &mut Inner<W> {
        // SAFETY: the lock is held for as long as `self` lives, and `self`
        // is borrowed mutably.
        unsafe { &mut *self.0.inner.get() }
    }
}

impl<W: Worker> Drop for Locked<'_, W> {
    fn drop(&mut self) {
        // SAFETY: `Cell::lock` locked it, and this is its only unlock.
        unsafe { self.0.lock.unlock() }
    }
}

impl<W: Worker> Entry for Cell<W> {
    type Id = W::Id;

    fn id(&self) -> &W::Id {
        &self.id
    }

    /// The cell writes the table's copy of its Running state in the same
    /// step as the state itself from now until [`close`](Cell::close).
    /// (`flag` lives in the table's entry for this cell, which is removed
    /// only after `close`.)
    unsafe fn attach(&self, flag: &AtomicBool) {
        self.lock().mirror = Some(Mirror(NonNull::from(flag)));
    }
}

/// Wakers to wake once the cell's lock is released: the tasks waiting on
/// the lifecycle, and the worker's.
#[must_use]
pub(crate) struct Wake {
    first: Option<Waker>,
    more: Vec<Waker>,
    worker: Option<Waker>,
}

impl Wake {
    /// Nobody to wake.
    fn none() -> Self {
        Wake {
            first: None,
            more: Vec::new(),
            worker: None,
        }
    }

    fn run(self) {
        let all = self.first.into_iter().chain(self.more).chain(self.worker);
        all.for_each(Waker::wake);
    }
}

impl<W: Worker> Cell<W> {
    /// A cell for a worker of `id` in the registry whose view is
    /// `registry`, counted in its running count while it runs, its mailbox
    /// bounded by its bound. `registry` must outlive the cell's worker (see
    /// `Registered`).
    pub(crate) fn new(id: W::Id, registry: &RegistryView) -> Self {
        Cell {
            state: AtomicU8::new(State::Starting as u8),
            lock: parking_lot::RawMutex::INIT,
            exit: AtomicU8::new(Exit::NONE),
            touched: AtomicBool::new(true),
            idle_ms: AtomicU32::new(IDLE_DEFAULT),
            id,
            evict_slot: AtomicU64::new(NO_SLOT),
            inner: UnsafeCell::new(Inner {
                queue: Queue::new(),
                worker: None,
                waiter: None,
                task: None,
                rare: None,
                mirror: None,
                registry: Registered(NonNull::from(registry)),
                stop: None,
                kill: false,
                parked: true,
                handed: false,
                idle_sweeps: 0,
            }),
        }
    }

    /// Takes the cell's lock, for its `Inner`.
    fn lock(&self) -> Locked<'_, W> {
        self.lock.lock();
        Locked(self)
    }

    /// The cell's address, which names its worker (see [`crate::primitives::current`]).
    pub(crate) fn address(&self) -> usize {
        self as *const Self as usize
    }

    pub(crate) fn state(&self) -> State {
        State::from_byte(self.state.load(Ordering::Acquire))
    }

    /// Moves the lifecycle forward to `to`; only under the cell's lock, so a
    /// plain store suffices. Moving back, or staying, is a bug: checked in
    /// debug builds (every test).
    fn advance(&self, to: State) {
        let from = self.state();
        debug_assert!(
            from < to,
            "a worker's lifecycle moved from {from:?} to {to:?}"
        );
        self.state.store(to as u8, Ordering::Release);
    }

    /// [`advance`](Self::advance), then takes the tasks waiting for the
    /// lifecycle to move, to wake once the lock is released.
    fn transition(&self, g: &mut Inner<W>, to: State) -> Wake {
        self.advance(to);
        g.take_waiters()
    }

    /// Queues a message unless the worker is stopping or has ended, or its
    /// mailbox is full; gives the message back if it cannot be queued.
    /// Returns the registry's call timeout, read while the registry is sure
    /// to be alive, for a call to wait.
    pub(crate) fn push(&self, envelope: Envelope<W>) -> Result<Duration, Refused<W>> {
        let (call_timeout, waker) = {
            let mut g = self.lock();
            let state = self.state();
            if state >= State::Stopping {
                if state == State::Stopping {
                    // Not Ended: the registry is alive.
                    g.registry.get().metrics.calls_to_ended.increment(1);
                }
                return Err(Refused::Closed(envelope));
            }
            // The registry is alive: the worker has not ended.
            let registry = g.registry.get();
            let (bound, call_timeout) = (registry.mailbox_bound, registry.call_timeout);
            if bound != 0 && g.queue.len() >= bound as usize {
                registry.metrics.mailbox_full.increment(1);
                return Err(Refused::Full(envelope));
            }
            if let Envelope::Call(..) = envelope {
                registry.metrics.calls.increment(1);
            }
            g.note_queued();
            g.queue.push_back(envelope);
            self.touched.store(true, Ordering::Relaxed);
            g.handed = true;
            (call_timeout, g.worker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(call_timeout)
    }

    /// The worker's side of the mailbox: a stop request first, then its
    /// timers that fell due, then mail in arrival order.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next<W>> {
        let mut g = self.lock();
        g.parked = false;
        if let Some(request) = g.stop.take() {
            return Poll::Ready(Next::Stop(request.into()));
        }
        if let Some(timers) = g.timers() {
            if let Poll::Ready(message) = timers.poll_due(cx) {
                return Poll::Ready(Next::Mail(Envelope::Cast(message)));
            }
        }
        if let Some(e) = g.queue.pop_front() {
            let waited = g.note_taken();
            // A mailbox that was flooded gives its memory back once drained,
            // instead of holding its peak size for the worker's whole life.
            if g.queue.is_empty() && g.queue.capacity() > KEEP_MAILBOX_CAPACITY {
                g.queue = Queue::new();
            }
            if let Some(waited) = waited {
                // Not Ended: the worker takes mail.
                let histogram = g.registry.get().metrics.mailbox_wait_seconds.clone();
                drop(g);
                histogram.record(waited.as_secs_f64());
            }
            return Poll::Ready(Next::Mail(e));
        }
        g.parked = true;
        park(&mut g.worker, cx)
    }

    /// The worker's state, the messages in its mailbox and since when its
    /// head has waited for a busy worker (`None` if it does not), seen in
    /// one step.
    pub(crate) fn mailbox(&self) -> (State, usize, Option<Instant>) {
        let g = self.lock();
        let len = g.queue.len();
        let since = g.rare.as_deref().and_then(|r| r.head_since);
        (self.state(), len, since.filter(|_| len > 0))
    }

    /// Runs `f` on the registry's view, unless the worker has ended (when
    /// its registry may be gone).
    pub(crate) fn with_registry(&self, f: impl FnOnce(&RegistryView)) {
        let g = self.lock();
        if self.state() != State::Ended {
            f(g.registry.get());
        }
    }

    /// Schedules a timer of the current incarnation (see [`crate::primitives::timers`]).
    pub(crate) fn add_timer(
        &self,
        delay: Duration,
        repeat: Repeat<W::Message>,
        message: W::Message,
    ) -> u64 {
        let (key, waker) = {
            let mut g = self.lock();
            let timers = g.rare().timers.get_or_insert_with(Timers::new);
            let key = timers.add(delay, repeat, message);
            // A parked worker arms the new deadline at its next poll.
            (key, g.worker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        key
    }

    /// Cancels a timer; whether it was still pending.
    pub(crate) fn cancel_timer(&self, key: u64) -> bool {
        let mut g = self.lock();
        let Some(timers) = g.timers() else {
            return false;
        };
        let cancelled = timers.cancel(key);
        if timers.is_empty() {
            drop(g.take_timers());
        }
        cancelled
    }

    /// Drops the timers of the incarnation that ends.
    pub(crate) fn clear_timers(&self) {
        let timers = self.lock().take_timers();
        drop(timers);
    }

    /// Sets this worker's own idle timeout (see `Cell::idle_ms`).
    pub(crate) fn set_idle_ms(&self, idle_ms: u32) {
        let _g = self.lock();
        self.idle_ms.store(idle_ms, Ordering::Relaxed);
    }

    /// One look of the idle sweep, every `sweep_ms`: a running worker parked
    /// on an empty mailbox, with no mail since the last look, for longer
    /// than its idle timeout (`default_ms` unless it set its own; 0 for
    /// none) is asked to stop. Whether it was.
    pub(crate) fn sweep_idle(&self, sweep_ms: u32, default_ms: u32) -> bool {
        let mut g = self.lock();
        let idle_ms = match self.idle_ms.load(Ordering::Relaxed) {
            IDLE_DEFAULT => default_ms,
            own => own,
        };
        if self.state() != State::Running || idle_ms == IDLE_DEFAULT || idle_ms == IDLE_NEVER {
            return false;
        }
        let touched = self.touched.swap(false, Ordering::Relaxed);
        if touched || !g.parked || !g.queue.is_empty() || g.stop.is_some() {
            g.idle_sweeps = 0;
            return false;
        }
        g.idle_sweeps = g.idle_sweeps.saturating_add(1);
        if u64::from(g.idle_sweeps) * u64::from(sweep_ms) < u64::from(idle_ms) {
            return false;
        }
        drop(g);
        self.request_stop(StopRequest::Idle);
        true
    }

    /// Whether the worker waits in `poll_next` for mail, its waker kept
    /// (for tests that drive the sweep).
    #[cfg(test)]
    pub(crate) fn is_parked(&self) -> bool {
        let g = self.lock();
        g.parked && g.worker.is_some()
    }

    /// Where the evictor tracks this worker (`NO_SLOT`: nowhere).
    pub(crate) fn evict_slot(&self) -> u64 {
        self.evict_slot.load(Ordering::Relaxed)
    }

    pub(crate) fn set_evict_slot(&self, slot: u64) {
        self.evict_slot.store(slot, Ordering::Relaxed);
    }

    /// Whether the worker may be evicted now: running, handed to its
    /// starter, and parked on an empty mailbox (never in the middle of a
    /// call, nor with mail waiting).
    pub(crate) fn evictable(&self) -> bool {
        let g = self.lock();
        self.state() == State::Running
            && g.handed
            && g.parked
            && g.queue.is_empty()
            && g.stop.is_none()
    }

    /// Its starter has the running worker (see `Inner::handed`).
    pub(crate) fn mark_handed(&self) {
        self.lock().handed = true;
    }

    /// Records why the worker ended, for monitors.
    pub(crate) fn set_exit(&self, reason: &ExitReason) {
        let code = Exit::code(reason);
        let mut g = self.lock();
        self.exit.store(code, Ordering::Relaxed);
        if code == Exit::TEXT {
            g.rare().exit = Some(reason.clone());
        }
    }

    /// Why the worker ended: `None` before it has.
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        let g = self.lock();
        Exit::reason(self.exit.load(Ordering::Relaxed), g.rare.as_deref())
    }

    /// A stop request, if one came (while the worker was restarting).
    pub(crate) fn take_stop(&self) -> Option<ExitReason> {
        self.lock().stop.take().map(ExitReason::from)
    }

    /// The worker's side while it waits out a back-off: ready with a stop
    /// request; otherwise the worker is woken when one comes (or on mail).
    pub(crate) fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<ExitReason> {
        let mut g = self.lock();
        if let Some(request) = g.stop.take() {
            return Poll::Ready(request.into());
        }
        park(&mut g.worker, cx)
    }

    pub(crate) fn next(&self) -> NextMail<'_, W> {
        NextMail(self)
    }

    /// Resolves with the new state once the state is no longer `from`.
    pub(crate) fn changed(&self, from: State) -> Changed<'_, W> {
        Changed { cell: self, from }
    }

    /// Resolves once the worker has ended and its entry is gone.
    pub(crate) async fn ended(&self) {
        loop {
            let state = self.state();
            if state == State::Ended {
                return;
            }
            self.changed(state).await;
        }
    }

    /// Starting → Running (counted in `running`), unless a stop was requested
    /// during `init` or the registry is shutting down (`shutdown`, with the
    /// way it stops its workers): then Starting → Stopping and the reason is
    /// returned.
    pub(crate) fn mark_running(&self, shutdown: Option<StopRequest>) -> Result<(), ExitReason> {
        let mut g = self.lock();
        if g.kill {
            // Killed during `init`: already Stopping, and about to be dropped.
            return Err(ExitReason::Killed);
        }
        let reason = match g.stop.take() {
            Some(r) => Some(r.into()),
            None => shutdown.map(ExitReason::from),
        };
        let (result, wake) = match reason {
            Some(r) => (Err(r), self.transition(&mut g, State::Stopping)),
            None => {
                g.count_running(true);
                (Ok(()), self.transition(&mut g, State::Running))
            }
        };
        drop(g);
        wake.run();
        result
    }

    /// Running → Stopping, from the worker itself.
    pub(crate) fn leave_running(&self) {
        let mut g = self.lock();
        if self.state() != State::Running {
            return;
        }
        g.count_running(false);
        let wake = self.transition(&mut g, State::Stopping);
        drop(g);
        wake.run();
    }

    /// Asks the worker to stop: at once if it is running (Running → Stopping),
    /// after `init` if it is starting. A stopping or ended worker is left alone.
    pub(crate) fn request_stop(&self, request: StopRequest) {
        let mut g = self.lock();
        let state = self.state();
        if state >= State::Stopping {
            return;
        }
        g.stop = Some(request);
        let mut wake = if state == State::Running {
            g.count_running(false);
            self.transition(&mut g, State::Stopping)
        } else {
            Wake::none()
        };
        wake.worker = g.worker.take();
        drop(g);
        wake.run();
    }

    /// Records why the start failed; the starter takes it.
    pub(crate) fn set_start_failure(&self, failure: StartFailure<W::Error>) {
        self.lock().rare().start_failure = Some(failure);
    }

    /// The worker's future was dropped before its `init` finished, and not
    /// by a kill: its executor dropped it (a tokio runtime shutting down).
    pub(crate) fn abandoned(&self) {
        let mut g = self.lock();
        if !g.kill && g.rare.as_ref().is_none_or(|r| r.start_failure.is_none()) {
            g.rare().start_failure = Some(StartFailure::ExecutorShutDown);
        }
    }

    pub(crate) fn take_start_failure(&self) -> Option<StartFailure<W::Error>> {
        self.lock().rare.as_deref_mut()?.start_failure.take()
    }

    /// Keeps the worker's task so it can be aborted.
    pub(crate) fn set_task(&self, task: Task) {
        let mut g = self.lock();
        if g.kill {
            drop(g);
            task.abort();
        } else if self.state() != State::Ended {
            g.task = Some(task);
        }
    }

    /// Aborts the worker: from now on it takes no mail (what it held is
    /// failed, so its callers get
    /// [`Error::WorkerEnded`](crate::Error::WorkerEnded)) and no lookup returns
    /// it; its future is dropped at its next turn on the executor, without
    /// running `terminate`. Whether this call killed it (it had not ended,
    /// nor been killed already).
    pub(crate) fn kill(&self) -> bool {
        let (task, queue, wake) = {
            let mut g = self.lock();
            let state = self.state();
            if state == State::Ended || g.kill {
                return false;
            }
            g.kill = true;
            let wake = if state < State::Stopping {
                if state == State::Running {
                    g.count_running(false);
                }
                self.transition(&mut g, State::Stopping)
            } else {
                Wake::none()
            };
            (g.task.take(), std::mem::take(&mut g.queue), wake)
        };
        undeliver(queue);
        wake.run();
        if let Some(task) = task {
            task.abort();
        }
        true
    }

    /// Answers a call of this worker, unless the worker was killed: then the
    /// answer is dropped, and so is `reply_to`, and its caller gets
    /// [`Error::WorkerEnded`](crate::Error::WorkerEnded). Whether it was sent.
    ///
    /// The send happens under the cell's lock, the one [`kill`](Self::kill)
    /// takes to mark the worker killed: a reply sent after `kill` returned
    /// would be seen by a caller who was promised `WorkerEnded`. (A handler
    /// running when the kill comes finishes its current step, and the
    /// worker's loop reaches this send before its future is dropped.) The
    /// send wakes the caller under the lock; a waker only schedules a task.
    pub(crate) fn answer(&self, reply_to: ReplyTo<W>, outcome: Outcome<W>) -> bool {
        send_unless_killed(self.lock(), reply_to, outcome)
    }

    /// The worker's own answer to the call it has just handled, sent as
    /// [`answer`](Self::answer) sends it; in the same step the worker counts
    /// as parked again if no mail waits. It is done with the call, so a
    /// start at the capacity limit right after the answer may evict it
    /// (until its next look at the mailbox it would count as busy, and such
    /// a start was refused now and then).
    pub(crate) fn answer_handled(&self, reply_to: ReplyTo<W>, outcome: Outcome<W>) {
        let mut g = self.lock();
        if g.queue.is_empty() {
            g.parked = true;
        }
        send_unless_killed(g, reply_to, outcome);
    }

    /// The first half of the end: closes the mailbox (any state → at least
    /// Stopping) and fails what it still held (their callers get
    /// [`Error::WorkerEnded`](crate::Error::WorkerEnded)). Nobody is woken
    /// yet: that waits for [`mark_ended`](Self::mark_ended), once the entry
    /// is gone.
    pub(crate) fn close(&self) {
        let mut g = self.lock();
        let state = self.state();
        if state == State::Running {
            g.count_running(false);
        }
        // The table's entry goes once this returns: stop writing to it.
        g.mirror = None;
        if state < State::Stopping {
            // Those waiting are woken at `mark_ended`, once the entry is gone.
            self.advance(State::Stopping);
        }
        let queue = std::mem::take(&mut g.queue);
        let task = g.task.take();
        let timers = g.take_timers();
        g.stop = None;
        drop(g);
        undeliver(queue);
        drop((task, timers));
    }

    /// The second half: → Ended, waking everyone waiting for a change. The
    /// caller has removed the entry, so whoever sees Ended sees the id free.
    pub(crate) fn mark_ended(&self) {
        let mut g = self.lock();
        let mut wake = self.transition(&mut g, State::Ended);
        wake.worker = g.worker.take();
        drop(g);
        wake.run();
    }
}

/// Sends `outcome` to its caller under the cell's lock `g`, unless the
/// worker was killed; whether it was sent. What was not sent (the reply of a
/// killed worker, or one whose caller had gone) is dropped once the lock is
/// released: dropping a reply runs the worker's own code.
fn send_unless_killed<W: Worker>(
    g: Locked<'_, W>,
    reply_to: ReplyTo<W>,
    outcome: Outcome<W>,
) -> bool {
    let unsent = if g.kill {
        Some((Some(reply_to), outcome))
    } else {
        reply_to.send(outcome).err().map(|outcome| (None, outcome))
    };
    drop(g);
    let sent = unsent.is_none();
    drop(unsent);
    sent
}

/// Hands every queued call its request back, unhandled, so its caller can
/// tell it was never delivered (call-by-id retries it). Done outside the
/// cell's lock: answering wakes the callers.
fn undeliver<W: Worker>(queue: Queue<Envelope<W>>) {
    for envelope in queue {
        if let Envelope::Call(request, reply_to) = envelope {
            let _ = reply_to.send(Err(CallFailure::Undelivered(request)));
        }
    }
}

/// Keeps the worker's waker for the next wake-up (mail or a stop request).
fn park<T>(worker: &mut Option<Waker>, cx: &mut Context<'_>) -> Poll<T> {
    match worker {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *worker = Some(cx.waker().clone()),
    }
    Poll::Pending
}

pub(crate) struct NextMail<'a, W: Worker>(&'a Cell<W>);

impl<W: Worker> Future for NextMail<'_, W> {
    type Output = Next<W>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Next<W>> {
        self.0.poll_next(cx)
    }
}

pub(crate) struct Changed<'a, W: Worker> {
    cell: &'a Cell<W>,
    from: State,
}

impl<W: Worker> Future for Changed<'_, W> {
    type Output = State;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<State> {
        let s = self.cell.state();
        if s != self.from {
            return Poll::Ready(s);
        }
        let mut g = self.cell.lock();
        let s = self.cell.state();
        if s != self.from {
            return Poll::Ready(s);
        }
        g.add_waiter(cx.waker());
        Poll::Pending
    }
}
