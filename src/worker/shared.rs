//! What a registry and its workers share: the id table, the running count,
//! the options, and the ways a worker leaves (retire, stop, shutdown).
//!
//! [`Owner`] is what the users' handles ([`GenRegistry`](crate::GenRegistry)
//! clones) hold: when the last one goes, the registry shuts down. [`Shared`]
//! refers back to it only weakly, so a registry is not kept alive by its own
//! workers.

use crate::primitives::current;
use crate::primitives::evict::{Evictor, Slot};
use crate::primitives::table::Table;
use crate::primitives::timer::{Sleep, instant_after, timeout};
use crate::worker::cell::{
    Cell, IDLE_NEVER, NO_SLOT, RegistryView, State, StopRequest, idle_millis,
};
use crate::worker::event::{Event, notify};
use crate::worker::options::{AtCapacity, Options};
use crate::worker::stats::Stats;
use crate::worker::telemetry::Metrics;
use crate::worker::{ExitReason, Worker};
use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

/// What the users' handles share.
pub(crate) struct Owner<W: Worker> {
    pub(crate) shared: Arc<Shared<W>>,
}

/// What the registry and its workers share.
pub(crate) struct Shared<W: Worker> {
    /// The users' side, for [`Context::registry`](crate::Context::registry):
    /// a weak back-reference kept once here, rather than in every worker's
    /// context (where taking and dropping it cost each start and stop a write
    /// to a shared line).
    pub(crate) owner: Weak<Owner<W>>,
    pub(crate) table: Table<Cell<W>>,
    /// What its workers' cells read and write: the running count, the
    /// mailbox bound and the call timeout.
    pub(crate) view: RegistryView,
    pub(crate) stopped: AtomicBool,
    /// Set before `stopped` by a hand-over: the workers end as moved, not
    /// shut down.
    moved: AtomicBool,
    /// Whether `RegistryStopped` was reported.
    announced: AtomicBool,
    /// The idle sweep's period, and the way to wake it when it shortens.
    sweep: Arc<SweepPeriod>,
    /// With `Options::max_workers`: who is resident, and who goes first.
    evictor: Option<Evictor<Resident<W>>>,
    pub(crate) options: Options<W>,
}

/// Workers a shutdown asks to stop at a time (see [`Shared::shutdown`]).
const SHUTDOWN_WINDOW: usize = 1024;

/// `SweepPeriod::ms` before an idle timeout is in use.
const NO_SWEEP: u32 = u32::MAX;
/// The longest the idle sweep sleeps.
const MAX_SWEEP_MS: u32 = 1_000;

impl<W: Worker> Owner<W> {
    /// A new registry's shared state, with `options` already checked; its
    /// idle sweep runs if it has an idle timeout.
    pub(crate) fn new(options: Options<W>) -> Arc<Owner<W>> {
        let owner = Self::with(options);
        if let Some(idle) = owner.shared.options.get_idle_timeout() {
            owner.shared.watch_idle(idle_millis(idle));
        }
        owner
    }

    fn with(options: Options<W>) -> Arc<Owner<W>> {
        Arc::new_cyclic(|owner| Owner {
            shared: Arc::new(Shared {
                owner: owner.clone(),
                table: Table::new(options.get_expected_workers()),
                view: RegistryView {
                    running: AtomicUsize::new(0),
                    mailbox_bound: options.get_mailbox_capacity().map_or(0, |n| n as u32),
                    call_timeout: options.get_call_timeout(),
                    metrics: Metrics::new(options.get_name()),
                },
                stopped: AtomicBool::new(false),
                moved: AtomicBool::new(false),
                announced: AtomicBool::new(false),
                sweep: Arc::new(SweepPeriod {
                    ms: AtomicU32::new(NO_SWEEP),
                    shortened: AtomicWaker::new(),
                }),
                evictor: options
                    .get_max_workers()
                    .map(|n| Evictor::new(n).expect("max_workers is checked by the options")),
                options,
            }),
        })
    }
}

impl<W: Worker> Drop for Owner<W> {
    fn drop(&mut self) {
        if self.shared.stopped.load(Ordering::Acquire) && self.shared.table.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        // Detached: nobody is left to wait for it. (On a tokio runtime that
        // has shut down it never runs, and nothing is left for it to stop.)
        drop(self.shared.options.get_executor().spawn(async move {
            shared.shutdown().await;
        }));
    }
}

impl<W: Worker> Shared<W> {
    /// Starting → Running for a worker whose `init` succeeded.
    pub(crate) fn mark_running(&self, cell: &Cell<W>) -> Result<(), ExitReason> {
        let stopped = self.stopped.load(Ordering::SeqCst);
        cell.mark_running(stopped.then(|| self.shutdown_request()))
    }

    /// How a shutdown asks its workers to stop: as moved after a hand-over.
    fn shutdown_request(&self) -> StopRequest {
        match self.moved.load(Ordering::Acquire) {
            true => StopRequest::Moved,
            false => StopRequest::Shutdown,
        }
    }

    /// A shutdown whose workers end with `ExitReason::Moved`.
    pub(crate) async fn hand_over(&self) -> ShutdownReport {
        self.moved.store(true, Ordering::Release);
        self.shutdown().await
    }

    /// A worker that is about to end leaves the registry's view.
    pub(crate) fn leave_running(&self, cell: &Cell<W>) {
        cell.leave_running();
    }

    pub(crate) fn request_stop(&self, cell: &Cell<W>, request: StopRequest) {
        cell.request_stop(request);
    }

    /// Makes room for the worker of `cell`, just inserted, under the
    /// registry's capacity: evicts a worker the policy picks (it runs
    /// `terminate` with `ExitReason::Evicted`), or fails when the registry
    /// refuses starts at capacity, or every worker is busy.
    pub(crate) fn admit(&self, cell: &Arc<Cell<W>>) -> Result<(), usize> {
        let Some(evictor) = &self.evictor else {
            return Ok(());
        };
        let evict = self.options.get_at_capacity() == AtCapacity::Evict;
        // A worker already on its way out (it stopped itself, or was
        // stopped, and its `terminate` is running) leaves the evictor only
        // when it retires: it gives up its place to a start first, under
        // either policy, since it no longer counts as running.
        let leaving = |r: &Resident<W>| r.0.state() >= State::Stopping;
        match evictor.insert(Resident(cell.clone()), |r| {
            leaving(r) || (evict && r.0.evictable())
        }) {
            Ok(inserted) => {
                cell.set_evict_slot(inserted.slot.to_bits());
                if let Some(victim) = inserted.evicted {
                    victim.0.set_evict_slot(NO_SLOT);
                    // A leaving worker's state never goes back to Running.
                    if !leaving(&victim) {
                        self.request_stop(&victim.0, StopRequest::Evicted);
                    }
                }
                Ok(())
            }
            Err(_) => Err(evictor.capacity()),
        }
    }

    /// The registry's health now (see [`Stats`]).
    pub(crate) fn stats(&self) -> Stats {
        let now = Instant::now();
        let mut stats = Stats {
            resident: self.evictor.as_ref().map(Evictor::len),
            ..Stats::default()
        };
        self.table.for_each(|cell| {
            let (state, queued, since) = cell.mailbox();
            match state {
                State::Starting => stats.starting += 1,
                State::Running => stats.running += 1,
                State::Stopping => stats.stopping += 1,
                State::Ended => return,
            }
            stats.queued += queued;
            if let Some(since) = since {
                stats.oldest_wait = stats.oldest_wait.max(now.saturating_duration_since(since));
            }
        });
        let backing_off = self.view.metrics.backing_off.load(Ordering::Relaxed);
        // Seen at another moment than the walk: never more than it found.
        stats.in_back_off = backing_off.min(stats.running);
        stats.running -= stats.in_back_off;
        stats
    }

    /// Counts a use of `cell` for the eviction policy (a lookup, a call by
    /// id): one relaxed load, rarely a compare-and-swap, no lock.
    pub(crate) fn touch(&self, cell: &Cell<W>) {
        if let Some(evictor) = &self.evictor {
            evictor.touch(Slot::from_bits(cell.evict_slot()));
        }
    }

    /// The worker has ended: close its mailbox (failing what it held), drop
    /// its entry, and only then mark it Ended and wake those waiting — so
    /// whoever sees a worker ended also sees its id free.
    pub(crate) fn retire(&self, cell: &Arc<Cell<W>>) {
        cell.close();
        if let Some(evictor) = &self.evictor {
            // An evicted worker has left the evictor already: a no-op.
            drop(evictor.remove(Slot::from_bits(cell.evict_slot())));
        }
        self.table.remove(cell);
        cell.mark_ended();
        if self.stopped.load(Ordering::Acquire) {
            self.announce_if_empty();
        }
    }

    /// Makes sure the idle sweep runs often enough for an idle timeout of
    /// `idle_ms`: every quarter of the shortest in use, at most every second.
    /// The first call starts it; a registry that never uses an idle timeout
    /// runs none. A shorter period wakes the sweep, which may be sleeping
    /// out the longer one, so the new timeout is honoured on time.
    pub(crate) fn watch_idle(self: &Arc<Self>, idle_ms: u32) {
        if idle_ms == IDLE_NEVER {
            return;
        }
        let period = (idle_ms / 4).clamp(1, MAX_SWEEP_MS);
        let before = self.sweep.ms.fetch_min(period, Ordering::AcqRel);
        if before == NO_SWEEP {
            let shared = Arc::downgrade(self);
            let period = self.sweep.clone();
            drop(self.options.get_executor().spawn(sweep(shared, period)));
        } else if period < before {
            self.sweep.shortened.wake();
        }
    }

    /// The registry's idle timeout in the cells' milliseconds; 0 for none.
    fn idle_default_ms(&self) -> u32 {
        self.options.get_idle_timeout().map_or(0, idle_millis)
    }

    /// Reports `RegistryStopped` once, when the stopped registry is empty.
    fn announce_if_empty(&self) {
        if self.table.is_empty() && !self.announced.swap(true, Ordering::AcqRel) {
            notify(self.options.observer(), Event::RegistryStopped);
        }
    }

    /// Waits until every worker of `cells` has ended (and so its entry is
    /// gone), killing those left at `deadline` (`None`: the shutdown timeout
    /// from now). How many this call killed.
    pub(crate) async fn await_end(
        &self,
        cells: &[Arc<Cell<W>>],
        deadline: Option<Instant>,
    ) -> usize {
        let all_ended = || async {
            for cell in cells {
                cell.ended().await;
            }
        };
        let budget = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.options.get_shutdown_timeout(),
        };
        if timeout(budget, all_ended()).await.is_ok() {
            return 0;
        }
        let killed = cells.iter().filter(|cell| cell.kill()).count();
        all_ended().await;
        killed
    }

    /// Stops every worker; returns once none is left, with how many ended in
    /// time and how many were aborted. Called from inside a worker, it
    /// cannot wait for that worker, which ends after its current callback:
    /// it returns once every other worker has ended (and does not count
    /// the caller). The shutdown timeout is one deadline for the whole
    /// shutdown: the workers still running when it passes are killed, those
    /// not yet asked to stop included.
    pub(crate) async fn shutdown(&self) -> ShutdownReport {
        self.stopped.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A timeout too long to be a deadline is none.
        let timeout = self.options.get_shutdown_timeout();
        let deadline = instant_after(timeout);
        let mut report = ShutdownReport::default();
        // A start racing with the first walk may have added a worker, which
        // ends by itself once it sees `stopped`: walk until none is left.
        loop {
            let mut cells = self.table.cells();
            cells.retain(|cell| {
                let other = !current::is(cell.address());
                if !other {
                    self.request_stop(cell, self.shutdown_request());
                }
                other
            });
            if cells.is_empty() {
                self.announce_if_empty();
                return report;
            }
            // In the order of their cells' addresses (windows are taken off
            // the end), not the table's, which is the order of the ids'
            // hashes: workers started one after another sit side by side in
            // memory, so their stops share cache lines and pages. At 1 M
            // workers this took a shutdown from about 2.8 s to 1.6 s.
            cells.sort_unstable_by_key(|cell| std::cmp::Reverse(cell.address()));
            // A window of workers at a time, the next one asked to stop
            // before this one is awaited, so that up to two windows stop at
            // once: enough to overlap slow `terminate`s, few enough that
            // their memory stays in cache. (Awaiting every worker's end with
            // a future of its own, all at once, took 74 s for 10 M workers.)
            // Each window waits until the one deadline at most; after it,
            // the rest are asked and killed a window at a time.
            let mut next = self.ask_window(&mut cells);
            while !next.is_empty() {
                let window = std::mem::replace(&mut next, self.ask_window(&mut cells));
                let aborted = self.await_end(&window, Some(deadline)).await;
                report.aborted += aborted;
                report.terminated += window.len() - aborted;
            }
        }
    }

    /// Takes up to [`SHUTDOWN_WINDOW`] cells off the end of `cells` and asks
    /// their workers to stop.
    fn ask_window(&self, cells: &mut Vec<Arc<Cell<W>>>) -> Vec<Arc<Cell<W>>> {
        let window = cells.split_off(cells.len().saturating_sub(SHUTDOWN_WINDOW));
        for cell in &window {
            self.request_stop(cell, self.shutdown_request());
        }
        window
    }
}

/// The idle sweep's period in milliseconds (`NO_SWEEP` while none runs),
/// shared by the registry and its sweep, which holds the registry only
/// weakly.
struct SweepPeriod {
    ms: AtomicU32,
    /// The sweep, sleeping out its period: woken when the period shortens.
    shortened: AtomicWaker,
}

impl SweepPeriod {
    /// Sleeps `period` ms; returns early, with `false`, once the period is
    /// shorter than `period`.
    async fn sleep(&self, period: u32) -> bool {
        let mut sleep = Sleep::new(Duration::from_millis(u64::from(period)));
        futures::future::poll_fn(|cx| {
            // Registered before the period is read: a shortening after the
            // read wakes this task.
            self.shortened.register(cx.waker());
            if self.ms.load(Ordering::Acquire) < period {
                return Poll::Ready(false);
            }
            Pin::new(&mut sleep).poll(cx).map(|()| true)
        })
        .await
    }
}

/// The idle sweep of one registry: every period, each running worker that
/// idled past its timeout is asked to stop (see [`Cell::sweep_idle`]). It
/// holds the registry weakly, and ends with it. When the period shortens
/// mid-sleep it starts a new sleep at the new period; the part already slept
/// is not counted as a sweep, so no worker ends before its timeout.
async fn sweep<W: Worker>(shared: Weak<Shared<W>>, sweep: Arc<SweepPeriod>) {
    loop {
        match shared.upgrade() {
            Some(s) if !s.stopped.load(Ordering::Acquire) => {}
            _ => return,
        }
        let period = sweep.ms.load(Ordering::Acquire);
        if !sweep.sleep(period).await {
            continue;
        }
        let Some(s) = shared.upgrade() else {
            return;
        };
        let default_ms = s.idle_default_ms();
        s.table.for_each_running(|_, cell| {
            cell.sweep_idle(period, default_ms);
            true
        });
    }
}

/// A worker as the evictor holds it; it hashes as its id, so the policy
/// recognises an id that comes back after it was evicted.
struct Resident<W: Worker>(Arc<Cell<W>>);

impl<W: Worker> std::hash::Hash for Resident<W> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        crate::primitives::table::Entry::id(&*self.0).hash(state);
    }
}

/// What a [`shutdown`](crate::GenRegistry::shutdown) did: how many workers
/// ended in time and how many were aborted at its deadline, the
/// [shutdown timeout](crate::Options::shutdown_timeout). A deploy can log it
/// and tell whether any state was lost: an aborted worker's `terminate` did
/// not run, or did not finish.
///
#[doc = include_str!("../doc_support/pinger.md")]
///
/// ```
/// # use gen_registry::doc_support::*;
/// # use gen_registry::{GenRegistry, Options};
/// use gen_registry::ShutdownReport;
/// # run(async {
/// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
/// registry.start(1, 0).await.unwrap();
/// registry.start(2, 0).await.unwrap();
/// let report: ShutdownReport = registry.shutdown().await;
/// assert_eq!((report.terminated, report.aborted), (2, 0));
/// assert!(report.is_clean());
/// println!("{report}"); // 2 workers terminated, 0 aborted
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Workers that ended before the deadline: their `terminate` ran (but
    /// for a worker that was waiting out a restart back-off, which has no
    /// incarnation to terminate, or one that ended on its own meanwhile).
    pub terminated: usize,
    /// Workers still running at the deadline, killed: their `terminate` did
    /// not run, or was cut short.
    pub aborted: usize,
}

impl ShutdownReport {
    /// Whether no worker was aborted.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert!(registry.shutdown().await.is_clean());
    /// # });
    /// ```
    pub fn is_clean(&self) -> bool {
        self.aborted == 0
    }
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} workers terminated, {} aborted",
            self.terminated, self.aborted
        )
    }
}
