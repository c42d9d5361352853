//! The in-memory store, for tests: the same checks as every store, in a map.

use crate::state::backend::{Backend, BoxFuture, Key, Record, Write};
use crate::state::error::{Refusal, check};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// A [`Backend`] in this process's memory: records last as long as it does.
/// A batch is applied under one lock, so it is atomic as a transaction is.
/// Clones share the records.
///
/// ```
/// use gen_registry::Executor;
/// use gen_registry::state::{Memory, Store};
/// let store = Store::new(Memory::new(), Executor::Bastion); // what Store::memory() does
/// # let _ = store;
/// ```
#[derive(Clone, Default)]
pub struct Memory {
    records: Arc<Mutex<HashMap<Key, Record>>>,
}

impl Memory {
    /// An empty store.
    ///
    /// ```
    /// let memory = gen_registry::state::Memory::new();
    /// # let _ = memory;
    /// ```
    pub fn new() -> Memory {
        Memory::default()
    }
}

impl Backend for Memory {
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
        let record = self.records.lock().get(&key).cloned();
        Box::pin(async move { Ok(record) })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
        let mut records = self.records.lock();
        let outcomes = writes
            .into_iter()
            .map(|write| {
                let held = records.get(&write.key).map(|r| r.stamp);
                check(held, write.expected, write.epoch)?;
                let record = Record {
                    stamp: crate::state::error::Stamp {
                        version: write.expected + 1,
                        epoch: write.epoch,
                    },
                    state: write.state,
                };
                records.insert(write.key, record);
                Ok(())
            })
            .collect();
        drop(records);
        Box::pin(async move { Ok(outcomes) })
    }
}
