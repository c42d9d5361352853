//! [`Stored`]: one worker's persisted state, typed, with its version.

use crate::state::backend::{Key, Write, key_of};
use crate::state::error::StateError;
use crate::state::group::Failure;
use crate::state::store::Store;
use crate::worker::Worker;
use crate::worker::context::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};

/// One record of persisted state, held by the worker it belongs to: the
/// value (a serde type of the worker's choosing), its version, and whether
/// it changed since it was last written.
///
/// - [`load`](Self::load) reads the record, before the worker's code uses
///   it; a record never written (or cleared) is a fresh start,
///   `S::default()`.
/// - Read it through `Deref`; change it through `DerefMut` or
///   [`set`](Self::set), which mark it changed.
/// - [`write`](Self::write) writes it and returns once the transaction
///   holding the write has committed: a reply sent after that is durable.
///   A failed write is an `Err` the worker sees, and the value stays as
///   the worker left it, still marked changed.
/// - [`flush`](Self::flush) writes only if it changed: call it from
///   `terminate` to keep what changed since the last write when the worker
///   ends gracefully. Nothing writes on its own: dropping a changed
///   `Stored` logs a warning and loses the change.
/// - [`clear`](Self::clear) deletes the state (keeping the version, so a
///   late writer is still refused).
///
/// Every write carries the version it was loaded at (or last wrote) and
/// the handle's [epoch](Self::set_epoch); the store refuses a write whose
/// version is stale ([`StateError::Stale`]: another writer wrote the record)
/// or whose epoch is older than the last it accepted
/// ([`StateError::Fenced`]).
///
/// ```
/// use gen_registry::state::{StateError, Store, Stored};
/// use gen_registry::{Context, ExitReason, Worker};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Cart { items: Vec<String> }
///
/// struct Shopper { cart: Stored<Cart> }
///
/// impl Worker for Shopper {
///     type Id = u64;
///     type Args = Store;
///     type Request = String;
///     type Reply = Result<usize, StateError>;
///     type Message = ();
///     type Error = StateError;
///
///     async fn init(id: &u64, store: Store, _: &Context<Self>) -> Result<Self, StateError> {
///         Ok(Shopper { cart: Stored::load(&store, "cart", id).await? })
///     }
///
///     async fn handle_call(&mut self, item: String, _: &mut Context<Self>) -> Result<usize, StateError> {
///         self.cart.items.push(item);
///         self.cart.write().await?; // durable before the reply
///         Ok(self.cart.items.len())
///     }
///
///     async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
///         if !reason.is_abnormal() {
///             let _ = self.cart.flush().await; // nothing to do here: each call wrote
///         }
///     }
/// }
/// ```
pub struct Stored<S> {
    value: S,
    store: Store,
    key: Key,
    /// `kind/id`, as errors name the record.
    record: String,
    version: u64,
    epoch: u64,
    changed: bool,
}

impl<S> Stored<S>
where
    S: Serialize + DeserializeOwned + Default + Send,
{
    /// Loads the record of `id` in `kind` from `store`: its state, or
    /// `S::default()` at version 0 if it was never written (or was
    /// cleared). `kind` names the records of one worker type, as a table
    /// name does; ids of different kinds never meet.
    ///
    /// Bytes that do not decode as `S` (the type changed since they were
    /// written) fail with [`StateError::Decode`], naming the record, and
    /// leave it untouched; return it from `init` and the start fails with
    /// that error.
    ///
    /// ```
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let fresh = Stored::<Vec<String>>::load(&store, "rules", "+15550100").await.unwrap();
    /// assert!(fresh.is_empty());
    /// assert_eq!(fresh.version(), 0);
    /// # });
    /// ```
    pub async fn load<I>(store: &Store, kind: &'static str, id: &I) -> Result<Stored<S>, StateError>
    where
        I: Serialize + Debug + ?Sized,
    {
        let (key, record) = key_of(kind, id)?;
        let held = store.load_key(key.clone(), &record).await?;
        let (value, version, epoch) = match held {
            None => (S::default(), 0, 0),
            Some(held) => {
                let value = match &held.state {
                    None => S::default(),
                    Some(bytes) => decode(bytes).map_err(|reason| StateError::Decode {
                        record: record.clone(),
                        version: held.stamp.version,
                        reason,
                    })?,
                };
                (value, held.stamp.version, held.stamp.epoch)
            }
        };
        Ok(Stored {
            value,
            store: store.clone(),
            key,
            record,
            version,
            epoch,
            changed: false,
        })
    }

    /// Loads the state of the worker `ctx` belongs to: the record of its
    /// id in `kind`, as [`load`](Self::load) does, with the handle's epoch
    /// set to the worker's [epoch](crate::Context::epoch) when its registry
    /// has one (in cluster mode, its shard's). Every write then carries the
    /// owner's epoch, so once a later owner of the id has written, the
    /// writes of this one are refused ([`StateError::Fenced`]); a record
    /// already written at a later epoch than the worker's is refused here,
    /// with the same error, before the worker runs on state it does not
    /// own. Without an epoch it is `load`.
    ///
    /// ```
    /// use gen_registry::state::{StateError, Store, Stored};
    /// use gen_registry::{Context, ExitReason, GenRegistry, Options, Worker};
    ///
    /// /// A visit counter per page, kept in a store.
    /// struct Page { visits: Stored<u64> }
    ///
    /// impl Worker for Page {
    ///     type Id = String; type Args = Store; type Request = (); type Reply = u64;
    ///     type Message = (); type Error = StateError;
    ///
    ///     async fn init(_: &String, store: Store, ctx: &Context<Self>) -> Result<Self, StateError> {
    ///         Ok(Page { visits: Stored::load_for(&store, "visits", ctx).await? })
    ///     }
    ///
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
    ///         *self.visits += 1;
    ///         *self.visits
    ///     }
    ///
    ///     async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
    ///         let _ = self.visits.flush().await;
    ///     }
    /// }
    ///
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let pages = GenRegistry::<Page>::new(Options::default().epoch(3)).unwrap();
    /// assert_eq!(pages.call("/".into(), store.clone(), ()).await.unwrap(), 1);
    /// pages.shutdown().await; // terminate flushes, at epoch 3
    /// let saved = Stored::<u64>::load(&store, "visits", "/").await.unwrap();
    /// assert_eq!((*saved, saved.epoch()), (1, 3));
    /// # });
    /// ```
    pub async fn load_for<W>(
        store: &Store,
        kind: &'static str,
        ctx: &Context<W>,
    ) -> Result<Stored<S>, StateError>
    where
        W: Worker<Id: Serialize>,
    {
        let mut stored = Self::load(store, kind, ctx.id()).await?;
        if let Some(epoch) = ctx.epoch() {
            if epoch < stored.epoch {
                return Err(StateError::Fenced {
                    record: std::mem::take(&mut stored.record),
                    epoch,
                    last: stored.epoch,
                });
            }
            stored.epoch = epoch;
        }
        Ok(stored)
    }

    /// Writes the state and returns once the transaction holding the write
    /// has committed. On success the version goes up by one and the state
    /// is no longer marked changed; on an error nothing was written (but see
    /// [`StateError::Store`]) and the state stays as it is, still marked
    /// changed if it was.
    ///
    /// ```
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let mut count = Stored::<u32>::load(&store, "count", &1u8).await.unwrap();
    /// *count += 1;
    /// count.write().await.unwrap();
    /// assert_eq!(count.version(), 1);
    /// assert!(!count.is_changed());
    /// # });
    /// ```
    pub async fn write(&mut self) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(&self.value).map_err(|e| StateError::Encode {
            record: self.record.clone(),
            reason: e.to_string(),
        })?;
        if bytes.len() > self.store.max_state_bytes() {
            return Err(StateError::TooLarge {
                record: self.record.clone(),
                bytes: bytes.len(),
                limit: self.store.max_state_bytes(),
            });
        }
        self.send(Some(bytes)).await?;
        self.changed = false;
        Ok(())
    }

    /// Writes the state if it changed since it was loaded or last written;
    /// whether it wrote. The call for `terminate`.
    ///
    /// ```
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let mut count = Stored::<u32>::load(&store, "count", &2u8).await.unwrap();
    /// assert!(!count.flush().await.unwrap()); // unchanged: nothing written
    /// count.set(5);
    /// assert!(count.flush().await.unwrap());
    /// # });
    /// ```
    pub async fn flush(&mut self) -> Result<bool, StateError> {
        if !self.changed {
            return Ok(false);
        }
        self.write().await?;
        Ok(true)
    }

    /// Deletes the state (a user deleted their account): the record holds
    /// no state from now on, and the value here is `S::default()` again.
    /// The record keeps its version and epoch, so a stale or fenced writer
    /// is still refused, and a later load starts fresh.
    ///
    /// ```
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let mut name = Stored::<String>::load(&store, "name", "u1").await.unwrap();
    /// name.set("Ada".into());
    /// name.write().await.unwrap();
    /// name.clear().await.unwrap();
    /// let again = Stored::<String>::load(&store, "name", "u1").await.unwrap();
    /// assert_eq!(*again, "");
    /// assert_eq!(again.version(), 2);
    /// # });
    /// ```
    pub async fn clear(&mut self) -> Result<(), StateError> {
        self.send(None).await?;
        self.value = S::default();
        self.changed = false;
        Ok(())
    }

    async fn send(&mut self, state: Option<Vec<u8>>) -> Result<(), StateError> {
        let write = Write {
            key: self.key.clone(),
            expected: self.version,
            epoch: self.epoch,
            state,
        };
        let outcome = self.store.group().submit(write).await;
        match outcome {
            Ok(()) => {
                self.version += 1;
                Ok(())
            }
            Err(Failure::Refused(refusal)) => Err(self.refused(refusal)),
            Err(Failure::Store(reason)) => Err(StateError::Store {
                record: self.record.clone(),
                reason,
            }),
        }
    }

    fn refused(&self, refusal: crate::state::error::Refusal) -> StateError {
        use crate::state::error::Refusal;
        match refusal {
            Refusal::Stale { found } => StateError::Stale {
                record: self.record.clone(),
                expected: self.version,
                found,
            },
            Refusal::Fenced { last } => StateError::Fenced {
                record: self.record.clone(),
                epoch: self.epoch,
                last,
            },
        }
    }
}

impl<S> Stored<S> {
    /// Replaces the state and marks it changed.
    ///
    /// ```
    /// # use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// # let mut n = Stored::<u8>::load(&Store::memory(), "n", &0u8).await.unwrap();
    /// n.set(9);
    /// assert!(n.is_changed());
    /// # });
    /// ```
    pub fn set(&mut self, value: S) {
        self.value = value;
        self.changed = true;
    }

    /// The version of the record this state was loaded at or last written
    /// as: 0 for a fresh start.
    ///
    /// ```
    /// # use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let fresh = Stored::<u8>::load(&Store::memory(), "n", &0u8).await.unwrap();
    /// assert_eq!(fresh.version(), 0);
    /// # });
    /// ```
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The epoch this handle's writes carry: the last one the store accepted
    /// for the record when it was loaded, unless [set](Self::set_epoch).
    ///
    /// ```
    /// # use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let fresh = Stored::<u8>::load(&Store::memory(), "n", &0u8).await.unwrap();
    /// assert_eq!(fresh.epoch(), 0);
    /// # });
    /// ```
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sets the epoch this handle's writes carry: the owner's epoch (in
    /// cluster mode, the shard's). The store refuses a write whose epoch is
    /// older than the last one it accepted for the record, with
    /// [`StateError::Fenced`], and keeps the epoch of each write it accepts.
    ///
    /// ```
    /// use gen_registry::state::{StateError, Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let store = Store::memory();
    /// let mut old_owner = Stored::<u8>::load(&store, "n", &0u8).await.unwrap();
    /// old_owner.set_epoch(1);
    /// let mut new_owner = Stored::<u8>::load(&store, "n", &0u8).await.unwrap();
    /// new_owner.set_epoch(2);
    /// new_owner.set(2);
    /// new_owner.write().await.unwrap();
    /// old_owner.set(1);
    /// assert!(matches!(old_owner.write().await, Err(StateError::Fenced { epoch: 1, last: 2, .. })));
    /// # });
    /// ```
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Whether the state changed since it was loaded or last written.
    ///
    /// ```
    /// # use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let mut n = Stored::<u8>::load(&Store::memory(), "n", &0u8).await.unwrap();
    /// assert!(!n.is_changed());
    /// *n += 1;
    /// assert!(n.is_changed());
    /// # });
    /// ```
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The record's name, `kind/id`, as errors show it.
    ///
    /// ```
    /// # use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let n = Stored::<u8>::load(&Store::memory(), "n", "ada").await.unwrap();
    /// assert_eq!(n.record(), "n/\"ada\"");
    /// # });
    /// ```
    pub fn record(&self) -> &str {
        &self.record
    }
}

/// Decodes a whole record: bytes left over mean the type changed too.
fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!(
            "{} of its {} bytes were left over after decoding",
            rest.len(),
            bytes.len()
        ))
    }
}

impl<S> Deref for Stored<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.value
    }
}

/// Marks the state changed, whatever the caller does with it.
impl<S> DerefMut for Stored<S> {
    fn deref_mut(&mut self) -> &mut S {
        self.changed = true;
        &mut self.value
    }
}

impl<S: Debug> Debug for Stored<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("record", &self.record)
            .field("version", &self.version)
            .field("epoch", &self.epoch)
            .field("changed", &self.changed)
            .field("value", &self.value)
            .finish()
    }
}

impl<S> Drop for Stored<S> {
    fn drop(&mut self) {
        if self.changed {
            tracing::warn!(
                record = %self.record,
                version = self.version,
                "persisted state dropped with changes that were never written"
            );
        }
    }
}
