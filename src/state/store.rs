//! The seam between persisted workers and where their state is kept: the
//! [`Backend`] trait a store implements, and [`Store`], the handle workers
//! share, which puts the group-commit writer in front of a backend.

use crate::executor::Executor;
use crate::state::error::{Refusal, Stamp, StateError};
use crate::state::group::Group;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
}

/// The handle to a store that persisted workers share: cheap to clone (an
/// `Arc`), and the group-commit writer in front of its backend.
///
/// Writes that arrive while a transaction is committing wait, together, for
/// the next one: under load many workers share one transaction, and each is
/// answered only once the transaction holding its write committed.
///
/// ```
/// use gen_registry::state::{Store, Stored};
/// # gen_registry::doc_support::run(async {
/// let store = Store::memory();
/// let mut visits = Stored::<u64>::load(&store, "visits", "alice").await.unwrap();
/// *visits += 1;
/// visits.write().await.unwrap();
/// assert_eq!(store.transactions(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Store {
    group: Arc<Group>,
    max_state_bytes: usize,
}

/// The largest encoded state a store accepts unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_STATE_BYTES: usize = 1 << 20;

impl Store {
    /// A store over `backend`, committing its batches from tasks on
    /// `executor`.
    ///
    /// ```
    /// use gen_registry::Executor;
    /// use gen_registry::state::{Memory, Store};
    /// let store = Store::new(Memory::new(), Executor::Bastion);
    /// assert_eq!(store.transactions(), 0);
    /// ```
    pub fn new(backend: impl Backend, executor: Executor) -> Store {
        Store {
            group: Arc::new(Group::new(Arc::new(backend), executor)),
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }

    /// A store in this process's memory, for tests: records last as long as
    /// the store. Its batches commit on Bastion's executor.
    ///
    /// ```
    /// let store = gen_registry::state::Store::memory();
    /// assert_eq!(store.writes(), 0);
    /// ```
    pub fn memory() -> Store {
        Store::new(crate::state::memory::Memory::new(), Executor::Bastion)
    }

    /// This handle, refusing states larger than `bytes` once encoded with
    /// [`StateError::TooLarge`] (default [`DEFAULT_MAX_STATE_BYTES`]). The
    /// limit belongs to the handle: clones made after this call share it.
    ///
    /// ```
    /// let store = gen_registry::state::Store::memory().with_max_state_bytes(64 * 1024);
    /// assert_eq!(store.max_state_bytes(), 64 * 1024);
    /// ```
    pub fn with_max_state_bytes(mut self, bytes: usize) -> Store {
        self.max_state_bytes = bytes;
        self
    }

    /// The largest encoded state this handle writes.
    ///
    /// ```
    /// use gen_registry::state::{DEFAULT_MAX_STATE_BYTES, Store};
    /// assert_eq!(Store::memory().max_state_bytes(), DEFAULT_MAX_STATE_BYTES);
    /// ```
    pub fn max_state_bytes(&self) -> usize {
        self.max_state_bytes
    }

    /// Caps how many writes share one transaction (default 1,024; at least
    /// 1). `1` commits each write alone — the baseline the group commit is
    /// measured against. It applies to every clone of this store.
    ///
    /// ```
    /// let store = gen_registry::state::Store::memory().with_max_batch(1);
    /// # let _ = store;
    /// ```
    pub fn with_max_batch(self, writes: usize) -> Store {
        self.group.set_max_batch(writes);
        self
    }

    /// Transactions committed so far (a failed one is not counted). Each
    /// writer is answered after its transaction was counted here, so a
    /// writer that got its answer sees its transaction in this count.
    ///
    /// ```
    /// assert_eq!(gen_registry::state::Store::memory().transactions(), 0);
    /// ```
    pub fn transactions(&self) -> u64 {
        self.group.transactions()
    }

    /// Writes (clears included) the store accepted so far; with
    /// [`transactions`](Self::transactions), how many writes shared a
    /// transaction on average.
    ///
    /// ```
    /// assert_eq!(gen_registry::state::Store::memory().writes(), 0);
    /// ```
    pub fn writes(&self) -> u64 {
        self.group.written()
    }

    /// Writes waiting for a transaction: queued behind the one committing
    /// now, they will share the next.
    ///
    /// ```
    /// assert_eq!(gen_registry::state::Store::memory().queued(), 0);
    /// ```
    pub fn queued(&self) -> usize {
        self.group.queued()
    }

    /// The record of `id` in `kind` as the store holds it (its stamp and
    /// encoded bytes), without decoding it: to inspect a record that no
    /// longer decodes.
    ///
    /// ```
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// assert_eq!(store.record("visits", "bob").await.unwrap(), None);
    /// let mut visits = Stored::<u64>::load(&store, "visits", "bob").await.unwrap();
    /// visits.set(3);
    /// visits.write().await.unwrap();
    /// assert_eq!(store.record("visits", "bob").await.unwrap().unwrap().stamp.version, 1);
    /// # });
    /// ```
    pub async fn record<I>(&self, kind: &'static str, id: &I) -> Result<Option<Record>, StateError>
    where
        I: serde::Serialize + std::fmt::Debug + ?Sized,
    {
        let (key, name) = crate::state::stored::key_of(kind, id)?;
        self.load_key(key, &name).await
    }

    pub(crate) async fn load_key(
        &self,
        key: Key,
        name: &str,
    ) -> Result<Option<Record>, StateError> {
        self.group
            .backend()
            .load(key)
            .await
            .map_err(|reason| StateError::Store {
                record: name.to_owned(),
                reason,
            })
    }

    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("transactions", &self.transactions())
            .field("writes", &self.writes())
            .field("max_state_bytes", &self.max_state_bytes)
            .finish()
    }
}
