//! The seam between persisted workers and where their state is kept: the
//! [`Backend`] trait a store implements, and the records and writes it
//! handles.

use crate::state::error::{Refusal, Stamp, StateError};
use crate::worker::ShownId;
use serde::Serialize;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

/// A boxed future a [`Backend`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where one record lives: its kind (the worker type's name for its state,
/// like a table name) and its id, encoded.
///
/// ```
/// use gen_registry::state::Key;
/// let key = Key { kind: "cart", id: vec![7] };
/// assert_eq!(key.kind, "cart");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The kind of record (say, `"cart"`).
    pub kind: &'static str,
    /// The id, encoded with postcard.
    pub id: Vec<u8>,
}

/// One record as a store holds it.
///
/// ```
/// use gen_registry::state::{Record, Stamp};
/// let cleared = Record { stamp: Stamp { version: 5, epoch: 1 }, state: None };
/// assert!(cleared.state.is_none()); // cleared: a fresh start, at version 5
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its version and the epoch of its last write.
    pub stamp: Stamp,
    /// The encoded state; `None` once cleared. A cleared record keeps its
    /// version and epoch, so a late writer is still refused.
    pub state: Option<Vec<u8>>,
}

/// One write of a batch.
///
/// ```
/// use gen_registry::state::{Key, Write};
/// let write = Write { key: Key { kind: "cart", id: vec![7] }, expected: 0, epoch: 0, state: Some(vec![1, 2]) };
/// assert_eq!(write.expected, 0); // a first write: the record must not exist yet
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The record.
    pub key: Key,
    /// The version the writer holds; the record becomes `expected + 1`.
    pub expected: u64,
    /// The writer's epoch; the record keeps it as its last accepted epoch.
    pub epoch: u64,
    /// The new encoded state; `None` clears the record.
    pub state: Option<Vec<u8>>,
}

/// A place to keep records: the seam a store implements.
///
/// Both methods return `'static` futures (clone what they need out of
/// `self`); blocking stores run their work on a blocking pool inside them,
/// never on the caller's thread. A failure is a text for people; it reaches
/// each writer as [`StateError::Store`].
///
/// ```
/// use gen_registry::state::{Backend, BoxFuture, Key, Memory, Record, Refusal, Write};
///
/// /// A store that counts its transactions, around the in-memory one.
/// struct Counting { inner: Memory, commits: std::sync::Arc<std::sync::atomic::AtomicUsize> }
///
/// impl Backend for Counting {
///     fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
///         self.inner.load(key)
///     }
///     fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
///         self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.commit(writes)
///     }
/// }
/// ```
pub trait Backend: Send + Sync + 'static {
    /// Reads one record; `None` if it was never written.
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>>;

    /// Applies `writes` in order, in one transaction, each checked with
    /// [`check`](crate::state::check) against the record as the writes
    /// before it in the batch left it. Returns one outcome per write, in
    /// order, once the transaction has committed (durably, for a store that
    /// keeps anything); a refused write leaves its record as it was and does
    /// not affect the others. An `Err` means nothing of the batch was
    /// applied.
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>>;

    /// Applies reminder writes in order, in one transaction, as
    /// [`commit`](Self::commit) does for records. Each outcome says whether
    /// the write changed a reminder (`Ok(true)`), found nothing to change
    /// (`Ok(false)`: a cancel of a reminder that is not there, or a
    /// [`Fired`](ReminderWrite::Fired) whose reminder was set again or
    /// cancelled since it was read), or was refused: a write whose epoch is
    /// older than the reminder's is [`Refusal::Fenced`]. An `Err` means
    /// nothing of the batch was applied.
    ///
    /// The default keeps no reminders: it fails every batch.
    fn remind(
        &self,
        writes: Vec<ReminderWrite>,
    ) -> BoxFuture<Result<Vec<Result<bool, Refusal>>, String>> {
        let _ = writes;
        Box::pin(async { Err(NO_REMINDERS.to_string()) })
    }

    /// The reminders of `kind` in `partition` due at or before `until_ms`
    /// (milliseconds since the Unix epoch), earliest first, at most `limit`
    /// of them. A store answers from an index on the due time, so the cost
    /// follows the number of reminders due, not the number kept.
    ///
    /// The default keeps no reminders: it fails.
    fn due(
        &self,
        kind: &'static str,
        partition: u32,
        until_ms: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let _ = (kind, partition, until_ms, limit);
        Box::pin(async { Err(NO_REMINDERS.to_string()) })
    }

    /// Every reminder of one worker, by name.
    ///
    /// The default keeps no reminders: it fails.
    fn reminders_of(&self, key: Key) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let _ = key;
        Box::pin(async { Err(NO_REMINDERS.to_string()) })
    }
}

/// What a [`Backend`] that keeps no reminders answers.
const NO_REMINDERS: &str = "this store keeps no reminders";

/// One durable reminder as a store holds it: a message for one worker,
/// due at a wall-clock time, once or periodically. A reminder is named by
/// its worker's key and its name; setting it again replaces it.
///
/// ```
/// use gen_registry::state::{Key, Reminder};
/// let expire = Reminder {
///     key: Key { kind: "rule", id: vec![7] },
///     name: "expire".into(),
///     partition: 0,
///     due_ms: 1_800_000_000_000,
///     period_ms: None,
///     message: vec![],
///     epoch: 0,
/// };
/// assert!(expire.period_ms.is_none()); // fires once, then is gone
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reminder {
    /// The worker it is for: its kind and encoded id.
    pub key: Key,
    /// Its name, one per worker.
    pub name: String,
    /// Which partition's owner fires it: the shard in cluster mode, `0`
    /// in one process.
    pub partition: u32,
    /// When it is next due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Its period in milliseconds; `None` fires once.
    pub period_ms: Option<u64>,
    /// The message it delivers, encoded.
    pub message: Vec<u8>,
    /// The epoch of the last write the store accepted for it.
    pub epoch: u64,
}

/// One write of a batch of reminder writes (see [`Backend::remind`]).
///
/// ```
/// use gen_registry::state::{Key, ReminderWrite};
/// let cancel = ReminderWrite::Cancel { key: Key { kind: "rule", id: vec![7] }, name: "expire".into(), epoch: 0 };
/// # let _ = cancel;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReminderWrite {
    /// Sets a reminder, replacing one of the same worker and name; the
    /// reminder's `epoch` is the writer's.
    Set(Reminder),
    /// Removes a reminder.
    Cancel {
        /// Its worker.
        key: Key,
        /// Its name.
        name: String,
        /// The writer's epoch.
        epoch: u64,
    },
    /// A reminder due at `due_ms` was delivered: it moves to `next_due_ms`
    /// (a periodic one, or a failed delivery left for later), or is removed
    /// (`next_due_ms: None`). Only if it is still due at `due_ms` with the
    /// same `message`: one set again meanwhile is kept, even within the
    /// same millisecond.
    Fired {
        /// Its worker.
        key: Key,
        /// Its name.
        name: String,
        /// The due time it was delivered for.
        due_ms: u64,
        /// The message it delivered.
        message: Vec<u8>,
        /// Its next due time, for a periodic one.
        next_due_ms: Option<u64>,
        /// The writer's epoch.
        epoch: u64,
    },
}

/// The key of `id` in `kind`, and the record's name for messages.
pub(crate) fn key_of<I>(kind: &'static str, id: &I) -> Result<(Key, String), StateError>
where
    I: Serialize + Debug + ?Sized,
{
    let record = format!("{kind}/{}", ShownId(id));
    let id = postcard::to_allocvec(id).map_err(|e| StateError::Encode {
        record: record.clone(),
        reason: format!("the id: {e}"),
    })?;
    Ok((Key { kind, id }, record))
}
