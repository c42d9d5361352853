//! What a batch does, decided in Rust from the rows it touches as they were
//! when the batch locked them: each write is checked against the row as
//! the earlier writes of the batch left it, and only each row's final form
//! is sent back, in one statement.

use gen_registry::state::{Refusal, Reminder, ReminderWrite, Stamp, Write, check};
use std::collections::HashMap;

/// A record's name in a batch: its kind and encoded id.
pub(crate) type RecordKey<'a> = (&'a str, &'a [u8]);

/// The outcome of a batch of record writes: one outcome per write, and the
/// writes whose result each touched record ends with (the last accepted
/// write of each record), in batch order.
pub(crate) struct RecordPlan<'a> {
    pub(crate) outcomes: Vec<Result<(), Refusal>>,
    pub(crate) finals: Vec<&'a Write>,
}

/// Checks `writes` in order against `held` (the stamps of the records that
/// exist, as the transaction read them).
pub(crate) fn records<'a>(
    writes: &'a [Write],
    held: &HashMap<RecordKey<'_>, Stamp>,
) -> RecordPlan<'a> {
    // Per record: its stamp as the batch left it so far, and the index of
    // the last accepted write.
    let mut now: HashMap<RecordKey<'a>, (Option<Stamp>, Option<usize>)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(writes.len());
    for (i, write) in writes.iter().enumerate() {
        let key = (write.key.kind, write.key.id.as_slice());
        let entry = now
            .entry(key)
            .or_insert_with(|| (held.get(&key).copied(), None));
        let outcome = check(entry.0, write.expected, write.epoch);
        if outcome.is_ok() {
            entry.0 = Some(Stamp {
                version: write.expected.wrapping_add(1),
                epoch: write.epoch,
            });
            entry.1 = Some(i);
        }
        outcomes.push(outcome);
    }
    let mut last: Vec<usize> = now.values().filter_map(|(_, i)| *i).collect();
    last.sort_unstable();
    RecordPlan {
        outcomes,
        finals: last.into_iter().map(|i| &writes[i]).collect(),
    }
}

/// A reminder's name: its worker's kind and encoded id, and its own name.
pub(crate) type ReminderKey<'a> = (&'static str, &'a [u8], &'a str);

/// The reminder a write is about.
pub(crate) fn reminder_key(write: &ReminderWrite) -> ReminderKey<'_> {
    match write {
        ReminderWrite::Set(r) => (r.key.kind, r.key.id.as_slice(), r.name.as_str()),
        ReminderWrite::Cancel { key, name, .. } | ReminderWrite::Fired { key, name, .. } => {
            (key.kind, key.id.as_slice(), name.as_str())
        }
    }
}

/// The outcome of a batch of reminder writes: one outcome per write, the
/// reminders to store (set, or moved to their next due time) and the ones
/// to delete.
pub(crate) struct ReminderPlan<'a> {
    pub(crate) outcomes: Vec<Result<bool, Refusal>>,
    pub(crate) upserts: Vec<Reminder>,
    pub(crate) deletes: Vec<ReminderKey<'a>>,
}

/// Applies `writes` in order to `held` (the reminders they name that
/// exist, as the transaction read them).
pub(crate) fn reminders<'a>(
    writes: &'a [ReminderWrite],
    mut held: HashMap<ReminderKey<'a>, Reminder>,
) -> ReminderPlan<'a> {
    // Per reminder touched: what it is now, and whether it changed.
    let mut now: HashMap<ReminderKey<'a>, (Option<Reminder>, bool)> = HashMap::new();
    let mut order = Vec::new();
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let key = reminder_key(write);
        let entry = now.entry(key).or_insert_with(|| {
            order.push(key);
            (held.remove(&key), false)
        });
        let fenced = |epoch: u64, current: &Option<Reminder>| match current {
            Some(r) if epoch < r.epoch => Err(Refusal::Fenced { last: r.epoch }),
            _ => Ok(()),
        };
        let outcome = match write {
            ReminderWrite::Set(reminder) => fenced(reminder.epoch, &entry.0).map(|()| {
                entry.0 = Some(reminder.clone());
                true
            }),
            ReminderWrite::Cancel { epoch, .. } => {
                fenced(*epoch, &entry.0).map(|()| entry.0.take().is_some())
            }
            ReminderWrite::Fired {
                due_ms,
                message,
                next_due_ms,
                epoch,
                ..
            } => fenced(*epoch, &entry.0).map(|()| match &mut entry.0 {
                Some(r) if r.due_ms == *due_ms && r.message == *message => {
                    match next_due_ms {
                        Some(next) => {
                            r.due_ms = *next;
                            r.epoch = *epoch;
                        }
                        None => entry.0 = None,
                    }
                    true
                }
                _ => false,
            }),
        };
        if outcome == Ok(true) {
            entry.1 = true;
        }
        outcomes.push(outcome);
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for key in order {
        match now.remove(&key) {
            Some((Some(reminder), true)) => upserts.push(reminder),
            Some((None, true)) => deletes.push(key),
            _ => {}
        }
    }
    ReminderPlan {
        outcomes,
        upserts,
        deletes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gen_registry::state::Key;

    fn write(id: u8, expected: u64, epoch: u64, state: u8) -> Write {
        Write {
            key: Key {
                kind: "k",
                id: vec![id],
            },
            expected,
            epoch,
            state: Some(vec![state]),
        }
    }

    #[test]
    fn each_write_is_checked_against_what_the_earlier_writes_left() {
        let held = HashMap::from([(
            ("k", &[2u8][..]),
            Stamp {
                version: 3,
                epoch: 1,
            },
        )]);
        let writes = [
            write(1, 0, 0, 10), // new record: accepted
            write(1, 0, 0, 11), // stale: the first made it version 1
            write(1, 1, 0, 12), // accepted, the record's final form
            write(2, 3, 0, 20), // fenced: the record is at epoch 1
            write(2, 2, 1, 21), // stale
        ];
        let plan = records(&writes, &held);
        assert_eq!(
            plan.outcomes,
            [
                Ok(()),
                Err(Refusal::Stale { found: 1 }),
                Ok(()),
                Err(Refusal::Fenced { last: 1 }),
                Err(Refusal::Stale { found: 3 }),
            ]
        );
        assert_eq!(plan.finals, [&writes[2]]);
    }

    fn reminder(name: &str, due_ms: u64, epoch: u64) -> Reminder {
        Reminder {
            key: Key {
                kind: "k",
                id: vec![1],
            },
            name: name.into(),
            partition: 0,
            due_ms,
            period_ms: None,
            message: vec![],
            epoch,
        }
    }

    #[test]
    fn a_fired_write_applies_only_to_the_reminder_it_was_due_for() {
        let key = Key {
            kind: "k",
            id: vec![1],
        };
        let fired = |due_ms, next_due_ms| ReminderWrite::Fired {
            key: key.clone(),
            name: "a".into(),
            due_ms,
            message: vec![],
            next_due_ms,
            epoch: 0,
        };
        let writes = [
            ReminderWrite::Set(reminder("a", 100, 0)),
            fired(50, None),       // set again since: kept
            fired(100, Some(200)), // periodic: moves on
            fired(200, None),      // one-shot now: gone
            ReminderWrite::Cancel {
                key: key.clone(),
                name: "a".into(),
                epoch: 0,
            },
        ];
        let plan = reminders(&writes, HashMap::new());
        assert_eq!(
            plan.outcomes,
            [Ok(true), Ok(false), Ok(true), Ok(true), Ok(false)]
        );
        assert!(plan.upserts.is_empty());
        assert_eq!(plan.deletes, [("k", &[1u8][..], "a")]);
    }

    #[test]
    fn a_reminder_write_from_an_older_epoch_is_fenced() {
        let held = HashMap::from([(("k", &[1u8][..], "a"), reminder("a", 100, 5))]);
        let writes = [
            ReminderWrite::Set(reminder("a", 300, 4)),
            ReminderWrite::Set(reminder("a", 400, 5)),
        ];
        let plan = reminders(&writes, held);
        assert_eq!(plan.outcomes, [Err(Refusal::Fenced { last: 5 }), Ok(true)]);
        assert_eq!(plan.upserts, [reminder("a", 400, 5)]);
    }
}
