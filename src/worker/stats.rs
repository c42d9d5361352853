//! [`Stats`]: a registry's health at a glance.

use std::time::Duration;

/// A snapshot of a registry's workers and their mail, from
/// [`GenRegistry::stats`](crate::GenRegistry::stats), for a health endpoint
/// or a dashboard.
///
/// It is taken by visiting each worker once, under its lock for a moment,
/// without stopping the registry: each worker is seen in one consistent
/// state, but workers that start or stop during the walk may or may not be
/// counted. It costs about as much as [`GenRegistry::reduce`](crate::GenRegistry::reduce).
///
#[doc = include_str!("../doc_support/pinger.md")]
///
/// ```
/// # use gen_registry::doc_support::*;
/// use gen_registry::{GenRegistry, Options};
/// use std::time::Duration;
/// # run(async {
/// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
/// registry.lookup_or_start(1, 0).await.unwrap();
/// registry.lookup_or_start(2, 0).await.unwrap();
/// let stats = registry.stats();
/// assert_eq!(stats.running, 2);
/// assert_eq!(stats.queued, 0);
/// assert_eq!(stats.oldest_wait, Duration::ZERO);
/// assert_eq!(stats.resident, None); // no capacity limit
/// # });
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Workers whose first `init` is running: not visible to lookups yet.
    pub starting: usize,
    /// Workers serving their mailbox (not counting those in back-off).
    pub running: usize,
    /// Workers that crashed and wait out a restart back-off, or run `init`
    /// again; they keep their place and their mail meanwhile.
    pub in_back_off: usize,
    /// Workers asked to stop (or stopping by themselves) whose `terminate`
    /// has not finished.
    pub stopping: usize,
    /// Messages (calls and casts) waiting in all mailboxes.
    pub queued: usize,
    /// The longest any worker with mail waiting has gone without taking its
    /// next message: how long the oldest message at the head of a mailbox
    /// has waited for a busy worker (a message that arrived behind others
    /// may have waited longer in all). Zero when no mail waits. A value
    /// that grows from one snapshot to the next names a worker that is
    /// slow or stuck in a handler.
    pub oldest_wait: Duration,
    /// With [`Options::max_workers`](crate::Options::max_workers): the
    /// workers the capacity counts; `None` without a limit.
    pub resident: Option<usize>,
}
