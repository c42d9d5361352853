//! [`Store`], the handle persisted workers share, which puts the
//! group-commit writer in front of a [`Backend`].

use crate::executor::Executor;
use crate::state::backend::{Backend, Key, Record, key_of};
use crate::state::error::StateError;
use crate::state::group::{self, Group};
use std::sync::Arc;

/// The handle to a store that persisted workers share: cheap to clone (an
/// `Arc`), and the group-commit writer in front of its backend.
///
/// Writes that arrive while a transaction is committing wait, together, for
/// the next one: under load many workers share one transaction, and each is
/// answered only once the transaction holding its write committed.
/// Reminders set or cancelled together share transactions the same way
/// (their own: a transaction holds records or reminders, never both).
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
    group: Arc<Group<group::Records>>,
    reminders: Arc<Group<group::Reminders>>,
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
        let backend: Arc<dyn Backend> = Arc::new(backend);
        Store {
            group: Arc::new(Group::new(backend.clone(), executor.clone())),
            reminders: Arc::new(Group::new(backend, executor)),
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
    /// 1), for records and for reminders alike. `1` commits each write
    /// alone — the baseline the group commit is measured against. It applies
    /// to every clone of this store.
    ///
    /// ```
    /// let store = gen_registry::state::Store::memory().with_max_batch(1);
    /// # let _ = store;
    /// ```
    pub fn with_max_batch(self, writes: usize) -> Store {
        self.group.set_max_batch(writes);
        self.reminders.set_max_batch(writes);
        self
    }

    /// Transactions of records committed so far (a failed one is not
    /// counted; reminders' are not counted here). Each
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

    /// Writes waiting for a transaction, of records and of reminders:
    /// queued behind the one committing now, they will share the next.
    ///
    /// ```
    /// assert_eq!(gen_registry::state::Store::memory().queued(), 0);
    /// ```
    pub fn queued(&self) -> usize {
        self.group.queued() + self.reminders.queued()
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
        let (key, name) = key_of(kind, id)?;
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

    pub(crate) fn group(&self) -> &Arc<Group<group::Records>> {
        &self.group
    }

    /// The group commit of reminders set and cancelled.
    pub(crate) fn reminder_group(&self) -> &Arc<Group<group::Reminders>> {
        &self.reminders
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
