//! The SQLite store, the embedded default: one file in WAL mode, every
//! statement run on the executor's blocking pool.

use crate::executor::{Executor, Unfinished};
use crate::state::backend::{Backend, BoxFuture, Key, Record, Reminder, ReminderWrite, Write};
use crate::state::error::{Refusal, Stamp, check};
use crate::state::store::Store;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The table every kind of record shares; a cleared record keeps its row
/// with a NULL state, so its version and epoch keep fencing late writers.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS gen_registry_state (
    kind TEXT NOT NULL,
    id BLOB NOT NULL,
    version INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    state BLOB,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gen_registry_reminders (
    kind TEXT NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    partition INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    period_ms INTEGER,
    message BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (kind, id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gen_registry_reminders_due
    ON gen_registry_reminders (kind, partition, due_ms)";

/// The columns of a reminder, in the order [`reminder_of_row`] reads them.
const REMINDER_COLUMNS: &str = "kind, id, name, partition, due_ms, period_ms, message, epoch";

/// A [`Backend`] in one SQLite file, in WAL mode with `synchronous=FULL`:
/// a commit returns once the write-ahead log is on disk, so an acknowledged
/// write survives a crash of the process or of the machine. Loads go
/// through their own connection and never wait for a commit (WAL lets
/// readers and the writer run together). Clones share the connections.
///
/// ```
/// use gen_registry::Executor;
/// use gen_registry::state::{Sqlite, Store};
/// let dir = std::env::temp_dir().join(format!("gen_registry_doc_{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let sqlite = Sqlite::open(dir.join("state.db"), Executor::Bastion).unwrap();
/// let store = Store::new(sqlite, Executor::Bastion); // what Store::sqlite does
/// # let _ = store;
/// # std::fs::remove_dir_all(&dir).ok();
/// ```
#[derive(Clone)]
pub struct Sqlite {
    connections: Arc<Connections>,
    executor: Executor,
}

struct Connections {
    // Locked only on the blocking pool, for one statement or one
    // transaction, never across an await.
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (creating it if needed) the SQLite file at `path`, puts it in
    /// WAL mode and creates the state and reminder tables. It runs its statements on
    /// `executor`'s blocking pool. Opening is itself blocking file I/O:
    /// call it at start-up, not from a worker's callback.
    ///
    /// ```
    /// # use gen_registry::Executor;
    /// # use gen_registry::state::Sqlite;
    /// let not_a_dir = std::env::temp_dir().join("gen_registry_no_such_dir/x/state.db");
    /// assert!(Sqlite::open(not_a_dir, Executor::Bastion).is_err());
    /// ```
    pub fn open(path: impl AsRef<Path>, executor: Executor) -> std::io::Result<Sqlite> {
        let path = path.as_ref();
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let connection = Connection::open(path)?;
            connection.busy_timeout(std::time::Duration::from_secs(5))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            Ok(connection)
        };
        let wrap = |e: rusqlite::Error| {
            std::io::Error::other(format!("SQLite store {}: {e}", path.display()))
        };
        let writer = open(path).map_err(wrap)?;
        writer.execute_batch(SCHEMA).map_err(wrap)?;
        let reader = open(path).map_err(wrap)?;
        Ok(Sqlite {
            connections: Arc::new(Connections {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
            executor,
        })
    }
}

impl Store {
    /// A store in the SQLite file at `path` (see [`Sqlite`]), its
    /// statements and its batches run from `executor`.
    ///
    /// ```
    /// use gen_registry::Executor;
    /// use gen_registry::state::{Store, Stored};
    /// # gen_registry::doc_support::run(async {
    /// let dir = std::env::temp_dir().join(format!("gen_registry_doc2_{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::sqlite(dir.join("state.db"), Executor::Bastion).unwrap();
    /// let mut seen = Stored::<u32>::load(&store, "seen", "x").await.unwrap();
    /// *seen += 1;
    /// seen.write().await.unwrap();
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # });
    /// ```
    pub fn sqlite(path: impl AsRef<Path>, executor: Executor) -> std::io::Result<Store> {
        let sqlite = Sqlite::open(path, executor.clone())?;
        Ok(Store::new(sqlite, executor))
    }
}

// Versions and epochs are u64 in Rust and INTEGER (i64) in SQLite: stored
// bit for bit, compared only in Rust.
fn to_sql(n: u64) -> i64 {
    n as i64
}
fn from_sql(n: i64) -> u64 {
    n as u64
}

fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic inside a statement cannot leave the connection half-changed
    // (a dropped transaction rolls back), so a poisoned lock is still good.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the row's epoch is at most `?4`, both u64 kept bit for bit as
/// i64: compared as i64 within the same half, and across halves the one
/// kept negative (2^63 and above) is the larger.
const EPOCH_AT_MOST: &str = "CASE WHEN (gen_registry_state.epoch < 0) = (?4 < 0) THEN gen_registry_state.epoch <= ?4 \
     ELSE gen_registry_state.epoch >= 0 END";

/// Applies `writes` in one transaction. Each write is one statement when it
/// is accepted, the common case: an insert of a new record, or an update
/// conditioned on the version and epoch the write expects. Only a write
/// that changed nothing reads the row, to say why it was refused.
fn commit_blocking(
    connection: &mut Connection,
    writes: Vec<Write>,
) -> rusqlite::Result<Vec<Result<(), Refusal>>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(writes.len());
    {
        let mut read = transaction.prepare_cached(
            "SELECT version, epoch FROM gen_registry_state WHERE kind = ?1 AND id = ?2",
        )?;
        // A record expected new: inserted if absent; a row there already
        // (only one of version 0 could be taken) is updated on the same
        // conditions as below.
        let mut create = transaction.prepare_cached(&format!(
            "INSERT INTO gen_registry_state (kind, id, version, epoch, state)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, id) DO UPDATE
             SET version = excluded.version, epoch = excluded.epoch, state = excluded.state
             WHERE gen_registry_state.version = ?6 AND {EPOCH_AT_MOST}"
        ))?;
        let mut update = transaction.prepare_cached(&format!(
            "UPDATE gen_registry_state SET version = ?3, epoch = ?4, state = ?5
             WHERE kind = ?1 AND id = ?2 AND version = ?6 AND {EPOCH_AT_MOST}"
        ))?;
        for write in writes {
            let values = params![
                write.key.kind,
                write.key.id,
                to_sql(write.expected + 1),
                to_sql(write.epoch),
                write.state,
                to_sql(write.expected)
            ];
            let changed = match write.expected {
                0 => create.execute(values)?,
                _ => update.execute(values)?,
            };
            let outcome = if changed == 1 {
                Ok(())
            } else {
                let held = read
                    .query_row(params![write.key.kind, write.key.id], |row| {
                        Ok(Stamp {
                            version: from_sql(row.get(0)?),
                            epoch: from_sql(row.get(1)?),
                        })
                    })
                    .optional()?;
                // The statement changed nothing, so the check refuses.
                match check(held, write.expected, write.epoch) {
                    Err(refusal) => Err(refusal),
                    Ok(()) => Err(Refusal::Stale {
                        found: held.map_or(0, |h| h.version),
                    }),
                }
            };
            outcomes.push(outcome);
        }
    }
    transaction.commit()?;
    Ok(outcomes)
}

/// A due time as SQLite keeps it: times past `i64::MAX` ms (292 million
/// years) are kept as `i64::MAX`, so the index orders them as Rust does.
fn due_to_sql(ms: u64) -> i64 {
    ms.min(i64::MAX as u64) as i64
}

/// The reminder in a row of [`REMINDER_COLUMNS`]; the kind is the one asked
/// for, as `Key` holds a `&'static str`.
fn reminder_of_row(kind: &'static str, row: &rusqlite::Row<'_>) -> rusqlite::Result<Reminder> {
    Ok(Reminder {
        key: Key {
            kind,
            id: row.get(1)?,
        },
        name: row.get(2)?,
        partition: row.get(3)?,
        due_ms: from_sql(row.get(4)?),
        period_ms: row.get::<_, Option<i64>>(5)?.map(from_sql),
        message: row.get(6)?,
        epoch: from_sql(row.get(7)?),
    })
}

fn remind_blocking(
    connection: &mut Connection,
    writes: Vec<ReminderWrite>,
) -> rusqlite::Result<Vec<Result<bool, Refusal>>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(writes.len());
    {
        let mut read = transaction.prepare_cached(
            "SELECT due_ms, epoch, message FROM gen_registry_reminders
             WHERE kind = ?1 AND id = ?2 AND name = ?3",
        )?;
        let mut upsert = transaction.prepare_cached(&format!(
            "INSERT OR REPLACE INTO gen_registry_reminders ({REMINDER_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?;
        let mut delete = transaction.prepare_cached(
            "DELETE FROM gen_registry_reminders WHERE kind = ?1 AND id = ?2 AND name = ?3",
        )?;
        let mut moved = transaction.prepare_cached(
            "UPDATE gen_registry_reminders SET due_ms = ?4, epoch = ?5
             WHERE kind = ?1 AND id = ?2 AND name = ?3",
        )?;
        for write in writes {
            let (key, name, epoch) = match &write {
                ReminderWrite::Set(r) => (&r.key, &r.name, r.epoch),
                ReminderWrite::Cancel { key, name, epoch }
                | ReminderWrite::Fired {
                    key, name, epoch, ..
                } => (key, name, *epoch),
            };
            let held: Option<(u64, u64, Vec<u8>)> = read
                .query_row(params![key.kind, key.id, name], |row| {
                    Ok((from_sql(row.get(0)?), from_sql(row.get(1)?), row.get(2)?))
                })
                .optional()?;
            if let Some((_, last, _)) = held
                && epoch < last
            {
                outcomes.push(Err(Refusal::Fenced { last }));
                continue;
            }
            let changed = match &write {
                ReminderWrite::Set(r) => {
                    upsert.execute(params![
                        r.key.kind,
                        r.key.id,
                        r.name,
                        r.partition,
                        due_to_sql(r.due_ms),
                        r.period_ms.map(to_sql),
                        r.message,
                        to_sql(r.epoch)
                    ])?;
                    true
                }
                ReminderWrite::Cancel { .. } => {
                    held.is_some() && delete.execute(params![key.kind, key.id, name])? > 0
                }
                ReminderWrite::Fired {
                    due_ms,
                    message,
                    next_due_ms,
                    ..
                } => match held {
                    Some((held_due, _, held_message))
                        if held_due == from_sql(due_to_sql(*due_ms))
                            && held_message == *message =>
                    {
                        match next_due_ms {
                            Some(next) => moved.execute(params![
                                key.kind,
                                key.id,
                                name,
                                due_to_sql(*next),
                                to_sql(epoch)
                            ])?,
                            None => delete.execute(params![key.kind, key.id, name])?,
                        };
                        true
                    }
                    _ => false,
                },
            };
            outcomes.push(Ok(changed));
        }
    }
    transaction.commit()?;
    Ok(outcomes)
}

impl Backend for Sqlite {
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
        let connections = Arc::clone(&self.connections);
        let work = self.executor.blocking(move || {
            let connection = lock(&connections.reader);
            let mut read = connection.prepare_cached(
                "SELECT version, epoch, state FROM gen_registry_state WHERE kind = ?1 AND id = ?2",
            )?;
            read.query_row(params![key.kind, key.id], |row| {
                Ok(Record {
                    stamp: Stamp {
                        version: from_sql(row.get(0)?),
                        epoch: from_sql(row.get(1)?),
                    },
                    state: row.get(2)?,
                })
            })
            .optional()
        });
        Box::pin(async move { finished(work.await) })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
        let connections = Arc::clone(&self.connections);
        let work = self
            .executor
            .blocking(move || commit_blocking(&mut lock(&connections.writer), writes));
        Box::pin(async move { finished(work.await) })
    }

    fn remind(
        &self,
        writes: Vec<ReminderWrite>,
    ) -> BoxFuture<Result<Vec<Result<bool, Refusal>>, String>> {
        let connections = Arc::clone(&self.connections);
        let work = self
            .executor
            .blocking(move || remind_blocking(&mut lock(&connections.writer), writes));
        Box::pin(async move { finished(work.await) })
    }

    fn due(
        &self,
        kind: &'static str,
        partition: u32,
        until_ms: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let connections = Arc::clone(&self.connections);
        let work = self.executor.blocking(move || {
            let connection = lock(&connections.reader);
            let mut read = connection.prepare_cached(&format!(
                "SELECT {REMINDER_COLUMNS} FROM gen_registry_reminders
                 WHERE kind = ?1 AND partition = ?2 AND due_ms <= ?3
                 ORDER BY due_ms LIMIT ?4"
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            read.query_map(
                params![kind, partition, due_to_sql(until_ms), limit],
                |row| reminder_of_row(kind, row),
            )?
            .collect()
        });
        Box::pin(async move { finished(work.await) })
    }

    fn reminders_of(&self, key: Key) -> BoxFuture<Result<Vec<Reminder>, String>> {
        let connections = Arc::clone(&self.connections);
        let work = self.executor.blocking(move || {
            let connection = lock(&connections.reader);
            let mut read = connection.prepare_cached(&format!(
                "SELECT {REMINDER_COLUMNS} FROM gen_registry_reminders
                 WHERE kind = ?1 AND id = ?2 ORDER BY name"
            ))?;
            read.query_map(params![key.kind, key.id], |row| {
                reminder_of_row(key.kind, row)
            })?
            .collect()
        });
        Box::pin(async move { finished(work.await) })
    }
}

/// The outcome of a statement run on the blocking pool, as the store trait
/// reports it: SQLite's error, or the pool shutting down before it ran.
fn finished<T>(outcome: Result<rusqlite::Result<T>, Unfinished>) -> Result<T, String> {
    match outcome {
        Ok(result) => result.map_err(|e| format!("SQLite: {e}")),
        Err(Unfinished) => {
            Err("SQLite: the blocking pool shut down before the statement ran".to_owned())
        }
    }
}
