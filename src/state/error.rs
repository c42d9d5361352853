//! Versions, epochs, and the errors a persisted worker sees.
//!
//! The rule both stores apply to each write lives here ([`check`]), so the
//! in-memory store and SQLite refuse exactly the same writes.

use std::fmt;

/// What a store holds for one record: its version and the epoch of the last
/// write it accepted. A record that was never written has neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Bumped by one on every accepted write (a clear included).
    pub version: u64,
    /// The epoch of the last accepted write.
    pub epoch: u64,
}

/// Why a store refused one write of a batch; the other writes of the batch
/// are not affected.
///
/// ```
/// use gen_registry::state::Refusal;
/// let refused = Refusal::Stale { found: 3 };
/// assert_eq!(refused.to_string(), "the record is at version 3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The write expected another version: the record was written by
    /// someone else since the writer loaded it.
    Stale {
        /// The version the store holds.
        found: u64,
    },
    /// The write's epoch is older than the last one the store accepted for
    /// the record: a writer that lost its ownership (a paused node) woke up.
    Fenced {
        /// The epoch of the last accepted write.
        last: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stale { found } => write!(f, "the record is at version {found}"),
            Refusal::Fenced { last } => write!(f, "the record was last written at epoch {last}"),
        }
    }
}

/// Whether a write expecting version `expected` at `epoch` may replace what
/// the store holds (`held`, `None` for a record never written): the epoch
/// first, so a fenced writer is told it is fenced even when its version is
/// stale too.
///
/// ```
/// use gen_registry::state::{Refusal, Stamp, check};
/// assert_eq!(check(None, 0, 1), Ok(()));
/// let held = Some(Stamp { version: 4, epoch: 2 });
/// assert_eq!(check(held, 4, 2), Ok(()));
/// assert_eq!(check(held, 3, 2), Err(Refusal::Stale { found: 4 }));
/// assert_eq!(check(held, 4, 1), Err(Refusal::Fenced { last: 2 }));
/// ```
pub fn check(held: Option<Stamp>, expected: u64, epoch: u64) -> Result<(), Refusal> {
    let held = held.unwrap_or(Stamp {
        version: 0,
        epoch: 0,
    });
    if epoch < held.epoch {
        Err(Refusal::Fenced { last: held.epoch })
    } else if expected != held.version {
        Err(Refusal::Stale {
            found: held.version,
        })
    } else {
        Ok(())
    }
}

/// An error of persisted state: loading, writing or clearing one record.
/// Every variant names the record (`kind/id`), so a log line says which.
///
/// ```
/// use gen_registry::state::StateError;
/// let e = StateError::TooLarge { record: "cart/7".into(), bytes: 2048, limit: 1024 };
/// assert_eq!(
///     e.to_string(),
///     "state cart/7 is 2048 bytes encoded, over the store's limit of 1024 bytes; nothing was written"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// A write carried a version the record no longer has: another writer
    /// wrote it since this one loaded it. Nothing was written; reload to
    /// see the other writer's state.
    Stale {
        /// The record, as `kind/id`.
        record: String,
        /// The version this writer loaded (or last wrote).
        expected: u64,
        /// The version the store holds.
        found: u64,
    },
    /// A write carried an epoch older than the last one the store accepted
    /// for the record: this writer no longer owns it. Nothing was written.
    Fenced {
        /// The record, as `kind/id`.
        record: String,
        /// The epoch of the refused write.
        epoch: u64,
        /// The epoch of the last accepted write.
        last: u64,
    },
    /// The stored bytes do not decode as the worker's state type (the type
    /// changed since they were written). The record is left as it is.
    Decode {
        /// The record, as `kind/id`.
        record: String,
        /// The version of the record that failed to decode.
        version: u64,
        /// What the decoder said.
        reason: String,
    },
    /// The state could not be encoded (a serde `Serialize` impl failed).
    Encode {
        /// The record, as `kind/id`.
        record: String,
        /// What the encoder said.
        reason: String,
    },
    /// The encoded state is larger than the store accepts
    /// ([`Store::with_max_state_bytes`](crate::state::Store::with_max_state_bytes)).
    TooLarge {
        /// The record, as `kind/id`.
        record: String,
        /// The encoded size.
        bytes: usize,
        /// The store's limit.
        limit: usize,
    },
    /// The store itself failed (I/O, a full disk, a corrupt file, its
    /// writer gone). Whether the write happened is unknown only if the
    /// failure came after the commit was sent; reload to find out.
    Store {
        /// The record, as `kind/id`.
        record: String,
        /// What the store said.
        reason: String,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Stale {
                record,
                expected,
                found,
            } => write!(
                f,
                "state {record} was written by another writer: this one expected version \
                 {expected}, the store holds {found}; nothing was written"
            ),
            StateError::Fenced {
                record,
                epoch,
                last,
            } => write!(
                f,
                "state {record} refused a write at epoch {epoch}: the store accepted epoch \
                 {last} already, so this writer no longer owns the record; nothing was written"
            ),
            StateError::Decode {
                record,
                version,
                reason,
            } => write!(
                f,
                "state {record} (version {version}) does not decode as this worker's state \
                 type: {reason}; the record was left untouched"
            ),
            StateError::Encode { record, reason } => {
                write!(f, "state {record} could not be encoded: {reason}")
            }
            StateError::TooLarge {
                record,
                bytes,
                limit,
            } => write!(
                f,
                "state {record} is {bytes} bytes encoded, over the store's limit of {limit} \
                 bytes; nothing was written"
            ),
            StateError::Store { record, reason } => {
                write!(f, "the store failed on state {record}: {reason}")
            }
        }
    }
}

impl std::error::Error for StateError {}
