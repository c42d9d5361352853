//! The group-commit writer: many workers' writes, one transaction. A store
//! has two, one for records and one for reminders (the same logic over the
//! backend's `commit` and `remind`).
//!
//! Writes queue here. When a write arrives and no commit is in flight, a
//! committer task starts on the store's executor; it takes everything queued
//! (up to the batch limit), hands it to the backend as one transaction, and
//! answers each writer only once that transaction has committed. While it
//! commits, new writes queue behind it and go together in the next
//! transaction, so the batch grows with the load and a lone write waits for
//! nothing: no timer, no linger. The guide's chapter on state has the
//! measurement against a commit per write (`examples/state_group_commit.rs`):
//! 17–38× the writes per second at 64 writers on SQLite.

use crate::executor::Executor;
use crate::state::backend::{Backend, BoxFuture, ReminderWrite, Write};
use crate::state::error::Refusal;
use futures::FutureExt;
use futures::channel::oneshot;
use parking_lot::Mutex;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Why one write of a batch failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The backend refused it (a stale version, an old epoch).
    Refused(Refusal),
    /// The transaction failed; the text says why.
    Store(String),
}

/// A batch's outcome: one per write, in order, or why nothing of it applied.
type Outcomes<T> = Result<Vec<Result<T, Refusal>>, String>;

/// What a group commits: a kind of write, what each accepted write
/// answers, and the backend call that commits a batch of them.
pub(crate) trait Kind: Send + Sync + 'static {
    type Write: Send + 'static;
    type Done: Send + 'static;
    fn commit(backend: &dyn Backend, writes: Vec<Self::Write>) -> BoxFuture<Outcomes<Self::Done>>;
}

/// Records' writes (`Backend::commit`).
pub(crate) struct Records;

impl Kind for Records {
    type Write = Write;
    type Done = ();
    fn commit(backend: &dyn Backend, writes: Vec<Write>) -> BoxFuture<Outcomes<()>> {
        backend.commit(writes)
    }
}

/// Reminders set or cancelled (`Backend::remind`); each answers whether it
/// changed a reminder.
pub(crate) struct Reminders;

impl Kind for Reminders {
    type Write = ReminderWrite;
    type Done = bool;
    fn commit(backend: &dyn Backend, writes: Vec<ReminderWrite>) -> BoxFuture<Outcomes<bool>> {
        backend.remind(writes)
    }
}

type Answer<K> = oneshot::Sender<Result<<K as Kind>::Done, Failure>>;

/// The writes waiting for the next transaction.
struct Queue<K: Kind> {
    pending: Vec<(K::Write, Answer<K>)>,
    /// Whether a committer task is running; it clears this, under the same
    /// lock, when it finds the queue empty, so a write never waits for a
    /// committer that already left.
    committing: bool,
}

pub(crate) struct Group<K: Kind> {
    queue: Mutex<Queue<K>>,
    backend: Arc<dyn Backend>,
    executor: Executor,
    max_batch: AtomicUsize,
    transactions: AtomicU64,
    written: AtomicU64,
}

impl<K: Kind> Group<K> {
    pub(crate) fn new(backend: Arc<dyn Backend>, executor: Executor) -> Self {
        Group {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                committing: false,
            }),
            backend,
            executor,
            max_batch: AtomicUsize::new(DEFAULT_MAX_BATCH),
            transactions: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub(crate) fn set_max_batch(&self, n: usize) {
        self.max_batch.store(n.max(1), Ordering::Relaxed);
    }

    pub(crate) fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Acquire)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().pending.len()
    }

    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Queues `write` at once; the future resolves once the transaction
    /// holding it has committed (or failed), or fails with a store error if
    /// its committer was dropped first (its executor shut down).
    pub(crate) fn submit(
        self: &Arc<Self>,
        write: K::Write,
    ) -> impl Future<Output = Result<K::Done, Failure>> + use<K> {
        let (answer, outcome) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.pending.push((write, answer));
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            // Detached: the committer ends by itself once the queue is empty.
            drop(self.executor.spawn(Arc::clone(self).commit_all()));
        }
        async move {
            outcome.await.unwrap_or_else(|_| {
                Err(Failure::Store(
                    "the store's writer ended before committing (its executor shut down)"
                        .to_owned(),
                ))
            })
        }
    }

    /// Commits batches until the queue is empty.
    async fn commit_all(self: Arc<Self>) {
        loop {
            let batch: Vec<(K::Write, Answer<K>)> = {
                let mut queue = self.queue.lock();
                if queue.pending.is_empty() {
                    queue.committing = false;
                    return;
                }
                let take = queue
                    .pending
                    .len()
                    .min(self.max_batch.load(Ordering::Relaxed));
                queue.pending.drain(..take).collect()
            };
            let (writes, answers): (Vec<K::Write>, Vec<Answer<K>>) = batch.into_iter().unzip();
            let count = writes.len();
            // A backend that panics fails its batch, not the store: the
            // next batch gets a committer as usual.
            let outcome = AssertUnwindSafe(K::commit(&*self.backend, writes))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err("the store's commit panicked".to_owned()));
            let outcome = match outcome {
                Ok(outcomes) if outcomes.len() != count => Err(format!(
                    "the store answered {} writes of a batch of {count}",
                    outcomes.len()
                )),
                outcome => outcome,
            };
            match outcome {
                Ok(outcomes) => {
                    // Counted before anyone is answered, so a writer that
                    // was answered sees its transaction counted.
                    self.transactions.fetch_add(1, Ordering::AcqRel);
                    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
                    self.written.fetch_add(accepted as u64, Ordering::AcqRel);
                    for (answer, outcome) in answers.into_iter().zip(outcomes) {
                        let _ = answer.send(outcome.map_err(Failure::Refused));
                    }
                }
                Err(reason) => {
                    for answer in answers {
                        let _ = answer.send(Err(Failure::Store(reason.clone())));
                    }
                }
            }
        }
    }
}

/// Writes per transaction at most, by default: enough that 1,024 workers
/// writing at once commit in one transaction, small enough that one
/// transaction stays a few milliseconds on SQLite.
pub(crate) const DEFAULT_MAX_BATCH: usize = 1024;
