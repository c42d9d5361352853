//! Deadlines for calls, starts and stops, cheap enough for every call.
//!
//! Every call carries a timeout, so the timer sits on the hot path of a call round
//! trip. `futures-timer` allocates a node per delay and wakes its thread for every
//! new one (a futex call per request); here a deadline is an entry in a slab
//! sharded by thread, and the timer thread is only woken when a new deadline is
//! earlier than the one it already sleeps towards. With a fixed timeout, deadlines
//! arrive in increasing order, so in steady state registering and cancelling a
//! deadline is two uncontended lock/unlock pairs and no system call.
//!
//! The timer thread sleeps until the earliest deadline it knows of (a lower
//! bound: cancelled entries are not tracked), then scans every shard, wakes the
//! expired entries and recomputes the bound. Scans therefore happen at most once
//! per expiry instant, not once per entry.

use parking_lot::{Condvar, Mutex};
use pin_project_lite::pin_project;
use slab::Slab;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
const NEVER: u64 = u64::MAX;

struct Entry {
    deadline: u64,
    /// `None` once the timer fired the entry; the owner removes it.
    waker: Option<Waker>,
}

#[repr(align(128))]
struct Shard(Mutex<Slab<Entry>>);

struct Timer {
    epoch: Instant,
    shards: Vec<Shard>,
    /// What the timer thread sleeps towards; a registration earlier than this
    /// must wake it. Mirrors `sleep` for a lock-free first check.
    planned: AtomicU64,
    sleep: Mutex<u64>,
    wake: Condvar,
}

static TIMER: OnceLock<&'static Timer> = OnceLock::new();

fn timer() -> &'static Timer {
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            epoch: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Slab::new())))
                .collect(),
            planned: AtomicU64::new(NEVER),
            sleep: Mutex::new(NEVER),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("gen_registry-timer".into())
            .spawn(move || timer.run())
            .expect("gen_registry: cannot spawn its timer thread");
        timer
    })
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

impl Timer {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn deadline_after(&self, d: Duration) -> u64 {
        self.now()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(NEVER))
    }

    fn register(&self, deadline: u64, waker: Waker) -> (usize, usize) {
        let shard = my_shard();
        let key = self.shards[shard].0.lock().insert(Entry {
            deadline,
            waker: Some(waker),
        });
        if deadline < self.planned.load(Ordering::Acquire) {
            let mut planned = self.sleep.lock();
            if deadline < *planned {
                *planned = deadline;
                self.planned.store(deadline, Ordering::Release);
                self.wake.notify_one();
            }
        }
        (shard, key)
    }

    fn run(&self) {
        loop {
            {
                let mut planned = self.sleep.lock();
                loop {
                    let now = self.now();
                    if *planned <= now {
                        break;
                    }
                    if *planned == NEVER {
                        self.wake.wait(&mut planned);
                    } else {
                        let wait = Duration::from_nanos(*planned - now);
                        let _ = self.wake.wait_for(&mut planned, wait);
                    }
                }
                // From here until the scan is done, any registration wakes us
                // again, so none can be missed.
                *planned = NEVER;
                self.planned.store(NEVER, Ordering::Release);
            }
            let now = self.now();
            let mut next = NEVER;
            let mut due = Vec::new();
            for shard in &self.shards {
                let mut slab = shard.0.lock();
                for (_, e) in slab.iter_mut() {
                    if e.waker.is_none() {
                        continue;
                    }
                    if e.deadline <= now {
                        due.extend(e.waker.take());
                    } else {
                        next = next.min(e.deadline);
                    }
                }
            }
            // Wake outside the shard locks: a waker may run code that registers.
            for w in due {
                w.wake();
            }
            let mut planned = self.sleep.lock();
            if next < *planned {
                *planned = next;
                self.planned.store(next, Ordering::Release);
            }
        }
    }
}

/// The instant `after` from now; a century from now for a delay too large
/// for `Instant` (a deadline nobody reaches).
pub(crate) fn instant_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A future that completes at a deadline.
pub(crate) struct Sleep {
    deadline: u64,
    slot: Option<(usize, usize)>,
}

impl Sleep {
    pub(crate) fn new(after: Duration) -> Sleep {
        Sleep {
            deadline: timer().deadline_after(after),
            slot: None,
        }
    }

    fn deregister(&mut self) {
        if let Some((shard, key)) = self.slot.take() {
            timer().shards[shard].0.lock().remove(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = timer();
        match self.slot {
            // The clock is read at the first poll only: after that the
            // timer thread says when the deadline has passed (it clears the
            // entry's waker as it fires it), so a woken worker's polls cost
            // no clock read.
            None => {
                if t.now() >= self.deadline {
                    return Poll::Ready(());
                }
                self.slot = Some(t.register(self.deadline, cx.waker().clone()));
            }
            Some((shard, key)) => {
                let mut slab = t.shards[shard].0.lock();
                let e = &mut slab[key];
                match &e.waker {
                    None => {
                        drop(slab);
                        self.deregister();
                        return Poll::Ready(());
                    }
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => e.waker = Some(cx.waker().clone()),
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The deadline of a [`timeout`] passed before its future completed.
///
/// ```
/// assert_eq!(gen_registry::Elapsed.to_string(), "deadline elapsed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project! {
    /// The future returned by [`timeout`]: the inner future's output, or
    /// [`Elapsed`].
    ///
    /// ```
    /// use gen_registry::{Timeout, timeout};
    /// use std::time::Duration;
    /// let bounded: Timeout<_> = timeout(Duration::from_secs(1), async { "done" });
    /// assert_eq!(futures::executor::block_on(bounded), Ok("done"));
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        after: Duration,
        sleep: Option<Sleep>,
    }
}

/// Runs `future` until it completes or `after` has passed, on the crate's
/// own timer (no runtime needed). Bastion's asks have no timeout: wrap them in
/// this. The deadline is only registered if the future is not ready at its
/// first poll.
///
/// ```
/// use gen_registry::{Elapsed, timeout};
/// use std::time::Duration;
/// # futures::executor::block_on(async {
/// let never = futures::future::pending::<()>();
/// assert_eq!(timeout(Duration::from_millis(5), never).await, Err(Elapsed));
/// assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
/// # });
/// ```
pub fn timeout<F: Future>(after: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        after,
        sleep: None,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let after = *this.after;
        let sleep = this.sleep.get_or_insert_with(|| Sleep::new(after));
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn sleep_completes_after_its_deadline() {
        let start = Instant::now();
        block_on(Sleep::new(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn timeout_passes_a_ready_value_through() {
        assert_eq!(
            block_on(timeout(Duration::from_secs(5), async { 7 })).unwrap(),
            7
        );
    }

    #[test]
    fn timeout_fires_on_a_future_that_never_completes() {
        let r = block_on(timeout(
            Duration::from_millis(10),
            futures::future::pending::<()>(),
        ));
        assert!(r.is_err());
    }

    #[test]
    fn an_earlier_deadline_wakes_a_sleeping_timer() {
        // A long sleep makes the timer thread plan far ahead; a short one
        // registered afterwards must still fire on time, not after the long one.
        let long = std::thread::spawn(|| block_on(Sleep::new(Duration::from_secs(3))));
        std::thread::sleep(Duration::from_millis(20));
        let r = block_on(timeout(
            Duration::from_secs(2),
            Sleep::new(Duration::from_millis(30)),
        ));
        assert!(r.is_ok(), "the short sleep fired only after the 2 s guard");
        long.join().unwrap();
    }

    #[test]
    fn cancelled_deadlines_leave_no_entries() {
        for _ in 0..1000 {
            let r = block_on(timeout(Duration::from_secs(60), async { 1 }));
            assert_eq!(r.unwrap(), 1);
            let mut s = Sleep::new(Duration::from_secs(60));
            let waker = futures::task::noop_waker();
            let _ = Pin::new(&mut s).poll(&mut Context::from_waker(&waker));
            drop(s);
        }
        let live: usize = timer().shards.iter().map(|s| s.0.lock().len()).sum();
        // Other tests may hold entries concurrently, but never a thousand.
        assert!(live < 100, "{live} timer entries left behind");
    }
}
