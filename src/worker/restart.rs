//! Restart policies and back-off: when a worker that crashed runs again, and
//! after how long.
//!
//! The words are Bastion's (`RestartPolicy::{Always, Never, Tries}`, linear and
//! exponential back-off), but they apply to one worker at a time: a worker
//! waiting out its back-off holds no lock and delays nobody else.

use std::time::{Duration, Instant};

/// Whether a worker that crashed (a panic in a handler, or an `init` that
/// failed when it ran again) is restarted.
///
/// Only crashes count. A worker that stopped itself, was stopped, was
/// [killed](crate::WorkerRef::kill) or whose registry shut down is never
/// restarted, and a failed *first* `init` is the starter's error, not a crash.
///
/// ```
/// use gen_registry::RestartPolicy;
/// use std::time::Duration;
///
/// // At most 3 restarts within any minute; the 4th crash removes the worker.
/// let policy = RestartPolicy::Tries { restarts: 3, within: Duration::from_secs(60) };
/// assert_ne!(policy, RestartPolicy::default());
/// assert_eq!(RestartPolicy::default(), RestartPolicy::Never);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// A crashed worker is removed (GenRegistry's behaviour, OTP's
    /// *temporary*). The default.
    #[default]
    Never,
    /// A crashed worker is always restarted.
    Always,
    /// A crashed worker is restarted at most `restarts` times within a window
    /// of `within`, counted from the first restart of the window; the next
    /// crash in that window removes it (an [`Event::GaveUp`](crate::Event::GaveUp)
    /// reports it).
    Tries {
        /// Restarts allowed per window; at least 1.
        restarts: u32,
        /// The window's length; not zero.
        within: Duration,
    },
}

impl From<bastion::supervisor::RestartPolicy> for RestartPolicy {
    /// Bastion's policies: `Tries(n)` counts restarts forever, so its window is
    /// endless.
    ///
    /// ```
    /// use gen_registry::RestartPolicy;
    /// use std::time::Duration;
    ///
    /// let ours = RestartPolicy::from(bastion::supervisor::RestartPolicy::Tries(2));
    /// assert_eq!(ours, RestartPolicy::Tries { restarts: 2, within: Duration::MAX });
    /// ```
    fn from(policy: bastion::supervisor::RestartPolicy) -> Self {
        use bastion::supervisor::RestartPolicy as B;
        match policy {
            B::Always => RestartPolicy::Always,
            B::Never => RestartPolicy::Never,
            B::Tries(n) => RestartPolicy::Tries {
                restarts: u32::try_from(n).unwrap_or(u32::MAX),
                within: Duration::MAX,
            },
        }
    }
}

/// How long a crashed worker waits before it runs again.
///
/// The n-th restart in a row waits `step × n` ([`Linear`](BackOff::Linear)) or
/// `initial × 2ⁿ⁻¹` ([`Exponential`](BackOff::Exponential) — truly
/// exponential, unlike Bastion's `ExponentialBackOff`, which grows linearly),
/// never more than `max`. An incarnation that made progress — it handled a
/// call or a cast without panicking — or that stayed up for `max` or longer
/// is healthy again: its next crash starts from the first delay. So a busy
/// worker that crashes now and then waits the first delay each time, while
/// a crash loop (an `init` that keeps failing, or an incarnation that
/// crashes before it handled anything) backs off up to `max`.
///
/// While it waits, the worker keeps its place: lookups find it, calls and
/// casts queue up for the next incarnation, and a `stop` or a shutdown ends it
/// at once.
///
/// The default is [`BackOff::DEFAULT`]: 10 ms doubling up to 1 s, so a worker
/// whose `init` keeps failing retries about once a second rather than
/// spinning (with [`Immediate`](BackOff::Immediate), one such worker ran
/// 0.6–1.8 million failing `init`s a second on a 2-core machine).
///
/// ```
/// use gen_registry::BackOff;
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// let back_off = BackOff::Exponential { initial: ms(10), max: ms(50) };
/// let delays: Vec<_> = (1..=5).map(|n| back_off.delay(n)).collect();
/// assert_eq!(delays, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
///
/// let linear = BackOff::Linear { step: ms(10), max: ms(25) };
/// assert_eq!(linear.delay(2), ms(20));
/// assert_eq!(linear.delay(3), ms(25));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackOff {
    /// Restart at once. A worker whose `init` keeps failing then restarts as
    /// fast as a thread can run it, so pair it with a
    /// [`RestartPolicy::Tries`] that ends the storm.
    Immediate,
    /// Wait `step × n` before the n-th restart in a row, at most `max`.
    Linear {
        /// The first delay and the increment; not zero.
        step: Duration,
        /// The longest delay; at least `step`.
        max: Duration,
    },
    /// Wait `initial × 2ⁿ⁻¹` before the n-th restart in a row, at most `max`.
    Exponential {
        /// The first delay; not zero.
        initial: Duration,
        /// The longest delay; at least `initial`.
        max: Duration,
    },
}

impl Default for BackOff {
    /// [`BackOff::DEFAULT`].
    ///
    /// ```
    /// use gen_registry::BackOff;
    /// assert_eq!(BackOff::default(), BackOff::DEFAULT);
    /// ```
    fn default() -> Self {
        BackOff::DEFAULT
    }
}

impl BackOff {
    /// The default back-off: 10 ms before the first restart in a row,
    /// doubling up to 1 s. A crash now and then costs its callers 10 ms; a
    /// crash loop settles at one `init` a second.
    ///
    /// ```
    /// use gen_registry::BackOff;
    /// use std::time::Duration;
    ///
    /// let delays: Vec<u128> = (1..=9).map(|n| BackOff::DEFAULT.delay(n).as_millis()).collect();
    /// assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    /// ```
    pub const DEFAULT: BackOff = BackOff::Exponential {
        initial: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };

    /// The delay before the `n`-th restart in a row (counting from 1).
    ///
    /// ```
    /// use gen_registry::BackOff;
    /// use std::time::Duration;
    /// assert_eq!(BackOff::Immediate.delay(7), Duration::ZERO);
    /// ```
    pub fn delay(&self, n: u32) -> Duration {
        let n = n.max(1);
        match *self {
            BackOff::Immediate => Duration::ZERO,
            BackOff::Linear { step, max } => step.checked_mul(n).map_or(max, |d| d.min(max)),
            BackOff::Exponential { initial, max } => 1u32
                .checked_shl(n - 1)
                .and_then(|factor| initial.checked_mul(factor))
                .map_or(max, |d| d.min(max)),
        }
    }

    /// How long an incarnation must stay up to count as healthy again.
    fn healthy_after(&self) -> Duration {
        match *self {
            BackOff::Immediate => Duration::ZERO,
            BackOff::Linear { max, .. } | BackOff::Exponential { max, .. } => max,
        }
    }
}

/// Checks a policy and a back-off; the error says which value is wrong.
pub(crate) fn validate(policy: RestartPolicy, back_off: BackOff) -> Result<(), String> {
    if let RestartPolicy::Tries { restarts, within } = policy {
        if restarts == 0 {
            return Err(
                "RestartPolicy::Tries allows 0 restarts: use RestartPolicy::Never to remove crashed workers".into(),
            );
        }
        if within.is_zero() {
            return Err(
                "RestartPolicy::Tries has a zero window: no restart could be counted against it"
                    .into(),
            );
        }
    }
    let (first, max, name) = match back_off {
        BackOff::Immediate => return Ok(()),
        BackOff::Linear { step, max } => (step, max, "BackOff::Linear's step"),
        BackOff::Exponential { initial, max } => {
            (initial, max, "BackOff::Exponential's initial delay")
        }
    };
    if first.is_zero() {
        return Err(format!(
            "{name} is zero: use BackOff::Immediate for no delay"
        ));
    }
    if max < first {
        return Err(format!(
            "{name} ({first:?}) is longer than its max ({max:?})"
        ));
    }
    Ok(())
}

/// One worker's restart bookkeeping. It exists only under a policy that
/// restarts, and its size is fixed: a restart storm costs no memory.
pub(crate) struct Restarts<A> {
    /// What `init` runs with again (a clone of it each time).
    args: A,
    clone: fn(&A) -> A,
    /// Restarts in the current window, and when the window began.
    in_window: u32,
    window_start: Option<Instant>,
    /// Restarts in a row, for the back-off.
    in_a_row: u32,
    /// When the current incarnation's `init` succeeded; `None` while there is
    /// no running incarnation.
    up_since: Option<Instant>,
    /// The current incarnation handled a message without panicking.
    progressed: bool,
}

/// A permitted restart: its number in a row and the delay before it.
pub(crate) struct Permit {
    pub(crate) attempt: u32,
    pub(crate) delay: Duration,
}

impl<A> Restarts<A> {
    /// Keeps a clone of `args` (made with `clone`) for the restarts.
    pub(crate) fn new(args: &A, clone: fn(&A) -> A) -> Self {
        Restarts {
            args: clone(args),
            clone,
            in_window: 0,
            window_start: None,
            in_a_row: 0,
            up_since: Some(Instant::now()),
            progressed: false,
        }
    }

    /// The args for a restart's `init`.
    pub(crate) fn args(&self) -> A {
        (self.clone)(&self.args)
    }

    /// A new incarnation is up.
    pub(crate) fn up(&mut self) {
        self.up_since = Some(Instant::now());
        self.progressed = false;
    }

    /// The current incarnation handled a message without panicking: its
    /// next crash is not part of a crash loop.
    pub(crate) fn progress(&mut self) {
        self.progressed = true;
    }

    /// The worker crashed: may it restart, and after how long? `None` means
    /// it is removed (the policy is spent). Counts the restart it permits.
    pub(crate) fn permit(&mut self, policy: RestartPolicy, back_off: BackOff) -> Option<Permit> {
        let now = Instant::now();
        match policy {
            RestartPolicy::Never => return None,
            RestartPolicy::Always => {}
            RestartPolicy::Tries { restarts, within } => {
                let expired = self
                    .window_start
                    .is_none_or(|start| now.saturating_duration_since(start) >= within);
                if expired {
                    self.window_start = Some(now);
                    self.in_window = 0;
                }
                if self.in_window >= restarts {
                    return None;
                }
                self.in_window += 1;
            }
        }
        let progressed = std::mem::take(&mut self.progressed);
        let healthy = self
            .up_since
            .take()
            .is_some_and(|since| now.saturating_duration_since(since) >= back_off.healthy_after());
        let healthy = healthy || progressed;
        if healthy {
            self.in_a_row = 0;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        Some(Permit {
            attempt: self.in_a_row,
            delay: back_off.delay(self.in_a_row),
        })
    }

    /// Restarts counted in the current window: what a spent
    /// [`RestartPolicy::Tries`] reports when it gives up.
    pub(crate) fn count(&self) -> u32 {
        self.in_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_up_to_its_cap_and_never_overflows() {
        let b = BackOff::Exponential {
            initial: MS,
            max: 100 * MS,
        };
        let delays: Vec<u128> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(b.delay(40), 100 * MS);
        assert_eq!(b.delay(u32::MAX), 100 * MS);
        let huge = BackOff::Exponential {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.delay(3), Duration::MAX);
    }

    #[test]
    fn linear_grows_by_its_step_up_to_its_cap() {
        let b = BackOff::Linear {
            step: 10 * MS,
            max: 35 * MS,
        };
        let delays: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 30, 35, 35]);
        assert_eq!(b.delay(u32::MAX), 35 * MS);
    }

    #[test]
    fn never_permits_nothing_and_always_permits_forever() {
        let mut r = Restarts::new(&(), Clone::clone);
        assert!(r.permit(RestartPolicy::Never, BackOff::Immediate).is_none());
        for n in 1..=1000 {
            let p = r.permit(RestartPolicy::Always, BackOff::Immediate).unwrap();
            assert_eq!((p.attempt, p.delay), (n, Duration::ZERO));
        }
    }

    #[test]
    fn tries_gives_up_after_its_count_within_the_window() {
        let policy = RestartPolicy::Tries {
            restarts: 3,
            within: Duration::from_secs(3600),
        };
        let mut r = Restarts::new(&(), Clone::clone);
        for _ in 0..3 {
            assert!(r.permit(policy, BackOff::Immediate).is_some());
            r.up();
        }
        assert!(r.permit(policy, BackOff::Immediate).is_none());
        assert_eq!(r.count(), 3);
    }

    #[test]
    fn a_new_window_allows_restarts_again() {
        let policy = RestartPolicy::Tries {
            restarts: 1,
            within: Duration::from_nanos(1),
        };
        let mut r = Restarts::new(&(), Clone::clone);
        assert!(r.permit(policy, BackOff::Immediate).is_some());
        // The window is 1 ns long: by the next crash it has expired.
        std::thread::yield_now();
        assert!(r.permit(policy, BackOff::Immediate).is_some());
    }

    #[test]
    fn failed_restarts_keep_growing_the_delay_and_a_healthy_run_resets_it() {
        let b = BackOff::Exponential {
            initial: MS,
            max: Duration::from_secs(3600),
        };
        let mut r = Restarts::new(&(), Clone::clone);
        // Crashes right after each init: 1, 2, 4 ms.
        for expected in [1, 2, 4] {
            let p = r.permit(RestartPolicy::Always, b).unwrap();
            assert_eq!(p.delay, expected * MS);
            r.up();
        }
        // A restart whose init failed never came up: no reset, 8 ms next.
        let p = r.permit(RestartPolicy::Always, b).unwrap();
        assert_eq!(p.delay, 4 * MS * 2);
        // Healthy: without a back-off, any time up counts as healthy.
        r.up();
        let p = r.permit(RestartPolicy::Always, BackOff::Immediate).unwrap();
        assert_eq!(p.attempt, 1);
    }

    #[test]
    fn an_incarnation_that_made_progress_restarts_from_the_first_delay() {
        let b = BackOff::DEFAULT;
        let mut r = Restarts::new(&(), Clone::clone);
        // Crashes before any progress: 10, 20, 40 ms.
        for expected in [10, 20, 40] {
            assert_eq!(
                r.permit(RestartPolicy::Always, b).unwrap().delay,
                expected * MS
            );
            r.up();
        }
        // This incarnation handled a message, then crashed: back to 10 ms.
        r.progress();
        let p = r.permit(RestartPolicy::Always, b).unwrap();
        assert_eq!((p.attempt, p.delay), (1, 10 * MS));
        // The progress was this incarnation's: a failed init grows again.
        assert_eq!(r.permit(RestartPolicy::Always, b).unwrap().delay, 20 * MS);
        r.up();
        assert_eq!(r.permit(RestartPolicy::Always, b).unwrap().delay, 40 * MS);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let tries0 = RestartPolicy::Tries {
            restarts: 0,
            within: MS,
        };
        assert!(
            validate(tries0, BackOff::Immediate)
                .unwrap_err()
                .contains("Never")
        );
        let window0 = RestartPolicy::Tries {
            restarts: 1,
            within: Duration::ZERO,
        };
        assert!(
            validate(window0, BackOff::Immediate)
                .unwrap_err()
                .contains("zero window")
        );
        let step0 = BackOff::Linear {
            step: Duration::ZERO,
            max: MS,
        };
        assert!(
            validate(RestartPolicy::Always, step0)
                .unwrap_err()
                .contains("Immediate")
        );
        let inverted = BackOff::Exponential {
            initial: 2 * MS,
            max: MS,
        };
        assert!(
            validate(RestartPolicy::Always, inverted)
                .unwrap_err()
                .contains("max")
        );
        assert!(validate(RestartPolicy::Always, BackOff::Immediate).is_ok());
    }
}
