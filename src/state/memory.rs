//! The in-memory store, for tests: the same checks as every store, in a map,
//! and its reminders in an ordered index by due time.

use crate::state::backend::{Backend, BoxFuture, Key, Record, Reminder, ReminderWrite, Write};
use crate::state::error::{Refusal, check};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    reminders: Arc<Mutex<Reminders>>,
}

/// A worker's reminder, by its key and name.
type Named = (Key, String);

/// The reminders, by worker and name, and the index the scan reads: by
/// kind, partition and due time, so [`Backend::due`] walks only what is due.
#[derive(Default)]
struct Reminders {
    by_name: BTreeMap<Named, Reminder>,
    by_due: BTreeSet<(&'static str, u32, u64, Named)>,
}

impl Reminders {
    fn insert(&mut self, reminder: Reminder) {
        let named = (reminder.key.clone(), reminder.name.clone());
        self.remove(&named);
        self.by_due.insert((
            reminder.key.kind,
            reminder.partition,
            reminder.due_ms,
            named.clone(),
        ));
        self.by_name.insert(named, reminder);
    }

    fn remove(&mut self, named: &Named) -> Option<Reminder> {
        let old = self.by_name.remove(named)?;
        self.by_due
            .remove(&(old.key.kind, old.partition, old.due_ms, named.clone()));
        Some(old)
    }

    /// Applies one write: whether it changed a reminder, or why it was
    /// refused (an epoch older than the reminder's).
    fn apply(&mut self, write: ReminderWrite) -> Result<bool, Refusal> {
        let fence = |held: Option<&Reminder>, epoch: u64| match held {
            Some(held) if epoch < held.epoch => Err(Refusal::Fenced { last: held.epoch }),
            _ => Ok(()),
        };
        match write {
            ReminderWrite::Set(reminder) => {
                let named = (reminder.key.clone(), reminder.name.clone());
                fence(self.by_name.get(&named), reminder.epoch)?;
                self.insert(reminder);
                Ok(true)
            }
            ReminderWrite::Cancel { key, name, epoch } => {
                let named = (key, name);
                fence(self.by_name.get(&named), epoch)?;
                Ok(self.remove(&named).is_some())
            }
            ReminderWrite::Fired {
                key,
                name,
                due_ms,
                message,
                next_due_ms,
                epoch,
            } => {
                let named = (key, name);
                let held = self.by_name.get(&named);
                fence(held, epoch)?;
                if held.is_none_or(|held| held.due_ms != due_ms || held.message != message) {
                    return Ok(false);
                }
                let mut reminder = self.remove(&named).expect("held above");
                if let Some(next) = next_due_ms {
                    reminder.due_ms = next;
                    reminder.epoch = epoch;
                    self.insert(reminder);
                }
                Ok(true)
            }
        }
    }
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

    fn remind(
        &self,
        writes: Vec<ReminderWrite>,
    ) -> BoxFuture<Result<Vec<Result<bool, Refusal>>, String>> {
        let mut reminders = self.reminders.lock();
        let outcomes = writes.into_iter().map(|w| reminders.apply(w)).collect();
        drop(reminders);
        Box::pin(async move { Ok(outcomes) })
    }

    fn due(
        &self,
        kind: &'static str,
        partition: u32,
        until_ms: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let reminders = self.reminders.lock();
        let from = (
            kind,
            partition,
            0,
            (
                Key {
                    kind,
                    id: Vec::new(),
                },
                String::new(),
            ),
        );
        let due: Vec<Reminder> = reminders
            .by_due
            .range(from..)
            .take_while(|(k, p, due_ms, _)| *k == kind && *p == partition && *due_ms <= until_ms)
            .take(limit)
            .map(|(_, _, _, named)| reminders.by_name[named].clone())
            .collect();
        drop(reminders);
        Box::pin(async move { Ok(due) })
    }

    fn reminders_of(&self, key: Key) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let reminders = self.reminders.lock();
        let of: Vec<Reminder> = reminders
            .by_name
            .range((key.clone(), String::new())..)
            .take_while(|((k, _), _)| *k == key)
            .map(|(_, reminder)| reminder.clone())
            .collect();
        drop(reminders);
        Box::pin(async move { Ok(of) })
    }
}
