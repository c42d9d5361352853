//! A worker's own timers: messages it scheduled to itself, after a delay or
//! at an interval (GenServer's `Process.send_after`).
//!
//! They belong to one incarnation: the worker's mailbox keeps them, its
//! loop takes their messages as mail when they fall due, and they are
//! dropped when the incarnation ends, so a restart never duplicates them.
//! However many a worker has, they cost one entry on the crate's timer (for
//! the earliest deadline) and a small entry each here; a worker without
//! timers pays one empty pointer in its mailbox.

use crate::primitives::timer::{Sleep, instant_after};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How an interval timer repeats: its period, and how to make the next
/// message from the last.
pub(crate) type Repeat<M> = Option<(Duration, fn(&M) -> M)>;

/// One scheduled message.
struct Entry<M> {
    key: u64,
    due: Instant,
    repeat: Repeat<M>,
    message: M,
}

/// Timer keys, unique in the process: a key kept after its timer fired or
/// was cancelled never names a later timer.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// The pending timers of one incarnation.
pub(crate) struct Timers<M> {
    entries: Vec<Entry<M>>,
    /// Armed for the earliest deadline.
    sleep: Option<(Instant, Sleep)>,
}

impl<M> Timers<M> {
    pub(crate) fn new() -> Self {
        Timers {
            entries: Vec::new(),
            sleep: None,
        }
    }

    /// Schedules `message` after `delay`, then every `repeat.0` if set;
    /// returns the key that cancels it.
    pub(crate) fn add(&mut self, delay: Duration, repeat: Repeat<M>, message: M) -> u64 {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let due = instant_after(delay);
        self.entries.push(Entry {
            key,
            due,
            repeat,
            message,
        });
        key
    }

    /// Cancels the timer of `key`; whether it was still pending.
    pub(crate) fn cancel(&mut self, key: u64) -> bool {
        match self.entries.iter().position(|e| e.key == key) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The message of a timer that has fallen due, earliest first; otherwise
    /// the task of `cx` is woken at the next deadline.
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<M> {
        let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].due) else {
            self.sleep = None;
            return Poll::Pending;
        };
        let now = Instant::now();
        if self.entries[i].due <= now {
            let entry = &mut self.entries[i];
            return Poll::Ready(match entry.repeat {
                Some((period, next)) => {
                    // The next one is due a period after this one was, so
                    // an interval does not drift with the worker's delays
                    // (missed ones are not made up: at most one a poll).
                    entry.due = (entry.due + period).max(now);
                    next(&entry.message)
                }
                None => self.entries.swap_remove(i).message,
            });
        }
        let due = self.entries[i].due;
        let sleep = match &mut self.sleep {
            Some((armed, sleep)) if *armed == due => sleep,
            slot => &mut slot.insert((due, Sleep::new(due - now))).1,
        };
        match Pin::new(sleep).poll(cx) {
            // Due by the crate's clock a hair before by `Instant`: poll again.
            Poll::Ready(()) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::future::poll_fn;

    fn next<M>(timers: &mut Timers<M>) -> M {
        block_on(poll_fn(|cx| timers.poll_due(cx)))
    }

    #[test]
    fn timers_fall_due_earliest_first() {
        let mut timers = Timers::new();
        timers.add(Duration::from_millis(30), None, "late");
        timers.add(Duration::from_millis(10), None, "early");
        assert_eq!(next(&mut timers), "early");
        assert_eq!(next(&mut timers), "late");
        assert!(timers.is_empty());
    }

    #[test]
    fn a_cancelled_timer_never_falls_due() {
        let mut timers = Timers::new();
        let key = timers.add(Duration::from_millis(5), None, 1);
        timers.add(Duration::from_millis(20), None, 2);
        assert!(timers.cancel(key));
        assert!(!timers.cancel(key), "cancelled twice");
        assert_eq!(next(&mut timers), 2);
    }

    #[test]
    fn a_spent_key_never_cancels_a_later_timer() {
        let mut timers = Timers::new();
        let first = timers.add(Duration::from_secs(60), None, 1);
        assert!(timers.cancel(first));
        let mut again = Timers::new(); // as after the last cancel, or a restart
        again.add(Duration::from_secs(60), None, 2);
        assert!(!again.cancel(first), "a spent key cancelled a later timer");
        assert!(!again.is_empty());
    }

    #[test]
    fn an_interval_repeats_until_cancelled() {
        let mut timers = Timers::new();
        let key = timers.add(
            Duration::from_millis(1),
            Some((Duration::from_millis(1), |n: &u32| *n)),
            7,
        );
        for _ in 0..3 {
            assert_eq!(next(&mut timers), 7);
        }
        assert!(timers.cancel(key));
        assert!(timers.is_empty());
    }
}
