//! [`Postgres`]: the connections, the runtime their I/O runs on, and the
//! [`Backend`] methods as SQL.

use crate::plan::{self, RecordKey, ReminderKey};
use futures_util::future::{try_join, try_join3};
use gen_registry::state::{
    Backend, BoxFuture, Key, Record, Refusal, Reminder, ReminderWrite, Stamp, Write,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// The tables and the index the store keeps, created on its first
/// connection if they are not there (each statement is `IF NOT EXISTS`, run
/// under an advisory lock, so several nodes may start together).
///
/// - `gen_registry_state`: one row per record, keyed by its kind and
///   encoded id; a cleared record keeps its row with a NULL state, so its
///   version and epoch still refuse a late writer.
/// - `gen_registry_reminders`: one row per reminder, keyed by its worker
///   and its name, with the index on `(kind, partition, due_ms)` that
///   [`Backend::due`] reads.
///
/// Versions and epochs (`u64`) are kept bit for bit in `BIGINT` and
/// compared in Rust; due times and periods are milliseconds since the Unix
/// epoch and must fit a `BIGINT`.
///
/// ```
/// assert!(gen_registry_postgres::SCHEMA.contains("gen_registry_reminders_due"));
/// ```
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gen_registry_state (
    kind TEXT NOT NULL,
    id BYTEA NOT NULL,
    version BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    state BYTEA,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS gen_registry_reminders (
    kind TEXT NOT NULL,
    id BYTEA NOT NULL,
    name TEXT NOT NULL,
    partition BIGINT NOT NULL,
    due_ms BIGINT NOT NULL,
    period_ms BIGINT,
    message BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (kind, id, name)
);
CREATE INDEX IF NOT EXISTS gen_registry_reminders_due
    ON gen_registry_reminders (kind, partition, due_ms);
";

/// The advisory lock the schema is created under (an arbitrary constant).
const SCHEMA_LOCK: i64 = 0x6765_6e5f_7265_6721;

/// How a [`Postgres`] store connects and how long it waits.
///
/// ```
/// use gen_registry_postgres::Settings;
/// use std::time::Duration;
/// let settings = Settings::default()
///     .connections(4)
///     .connect_timeout(Duration::from_secs(2))
///     .operation_timeout(Duration::from_secs(10));
/// assert_eq!(settings.connect_timeout_value(), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct Settings {
    connections: usize,
    connect_timeout: Duration,
    operation_timeout: Duration,
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connections: 2,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            runtime: None,
        }
    }
}

impl Settings {
    /// How many connections commit batches, and how many more serve
    /// loads and reminder reads (default 2 of each, at least 1). Reads are
    /// pipelined on their connections, taken in turn. A
    /// [`Store`](gen_registry::state::Store) commits one batch at a time,
    /// so more than one committing connection helps only when several
    /// stores share this backend.
    ///
    /// ```
    /// let settings = gen_registry_postgres::Settings::default().connections(1);
    /// # let _ = settings;
    /// ```
    pub fn connections(mut self, n: usize) -> Settings {
        self.connections = n.max(1);
        self
    }

    /// How long opening a connection may take, schema included (default
    /// 5 s): an unreachable server fails an operation within it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = gen_registry_postgres::Settings::default().connect_timeout(Duration::from_secs(1));
    /// assert_eq!(settings.connect_timeout_value(), Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Settings {
        self.connect_timeout = timeout;
        self
    }

    /// The connect timeout in force.
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = gen_registry_postgres::Settings::default();
    /// assert_eq!(settings.connect_timeout_value(), Duration::from_secs(5));
    /// ```
    pub fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    /// How long one operation (a load, a batch, a reminder query) may take
    /// in all, connecting included (default 30 s). A batch that runs out of
    /// time fails; if its `COMMIT` was already sent, whether it applied is
    /// unknown, and the error says so.
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = gen_registry_postgres::Settings::default().operation_timeout(Duration::from_secs(5));
    /// # let _ = settings;
    /// ```
    pub fn operation_timeout(mut self, timeout: Duration) -> Settings {
        self.operation_timeout = timeout;
        self
    }

    /// Runs the client's I/O on this tokio runtime instead of a runtime of
    /// the store's own. The runtime needs its I/O and time drivers
    /// (`enable_all`).
    ///
    /// ```
    /// let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    /// let settings = gen_registry_postgres::Settings::default().runtime(runtime.handle().clone());
    /// # let _ = settings;
    /// ```
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Settings {
        self.runtime = Some(handle);
        self
    }
}

/// A failure of the PostgreSQL store: a text naming the server and the
/// operation, and what went wrong.
///
/// ```
/// use gen_registry_postgres::Postgres;
/// let e = Postgres::new("not a connection string").unwrap_err();
/// assert!(e.to_string().starts_with("PostgreSQL"), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A [`Backend`] in a PostgreSQL database, shared by every process that
/// connects to it (see the [crate] documentation). Cheap to clone: clones
/// share the connections.
///
/// ```no_run
/// use gen_registry::Executor;
/// use gen_registry::state::Store;
/// use gen_registry_postgres::{Postgres, Settings};
/// let postgres = Postgres::with_settings("host=db.internal user=app", Settings::default()).unwrap();
/// let store = Store::new(postgres, Executor::Bastion);
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct Postgres {
    shared: Arc<Shared>,
    // Dropped with the last clone; tasks on the runtime never hold it.
    _runtime: Option<Arc<OwnRuntime>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("server", &self.shared.server)
            .finish_non_exhaustive()
    }
}

/// A runtime of the store's own, shut down without waiting when the last
/// handle goes (which may happen inside another runtime).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the tasks on the runtime share.
struct Shared {
    config: Config,
    /// The server and database, for messages: `host:port/database`.
    server: String,
    settings: Settings,
    handle: tokio::runtime::Handle,
    /// The connections batches commit on, each used by one batch at a time.
    /// A connection is taken out of its slot while in use and put back only
    /// after a success, so one left in an unknown state is closed.
    writers: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next_writer: AtomicUsize,
    /// The connections reads share, each pipelined, taken in turn.
    readers: Vec<tokio::sync::Mutex<Option<Arc<Connection>>>>,
    next_reader: AtomicUsize,
    schema_ready: AtomicBool,
}

/// One open connection and its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

struct Statements {
    load: Statement,
    lock: Statement,
    stamps: Statement,
    upsert: Statement,
    reminders_read: Statement,
    reminders_upsert: Statement,
    reminders_delete: Statement,
    due: Statement,
    reminders_of: Statement,
}

impl Postgres {
    /// A store in the database at `url` (a `postgresql://` URL or a
    /// `key=value` connection string), with the default [`Settings`]. It
    /// connects on first use; [`connect`](Self::connect) checks the server
    /// now.
    ///
    /// ```
    /// use gen_registry_postgres::Postgres;
    /// // No I/O yet: a server that is down fails the first operation instead.
    /// let postgres = Postgres::new("postgresql://app@127.0.0.1:1/app").unwrap();
    /// # let _ = postgres;
    /// ```
    pub fn new(url: &str) -> Result<Postgres, Error> {
        Postgres::with_settings(url, Settings::default())
    }

    /// A store in the database at `url`, with `settings`.
    ///
    /// ```
    /// use gen_registry_postgres::{Postgres, Settings};
    /// let postgres = Postgres::with_settings("host=127.0.0.1 port=1 user=app", Settings::default().connections(1));
    /// assert!(postgres.is_ok());
    /// ```
    pub fn with_settings(url: &str, settings: Settings) -> Result<Postgres, Error> {
        let mut config: Config = url.parse().map_err(|e| {
            Error(format!(
                "PostgreSQL: the connection string does not parse: {e}"
            ))
        })?;
        config.connect_timeout(settings.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("gen_registry");
        let server = server_name(&config);
        let (handle, runtime) = match &settings.runtime {
            Some(handle) => (handle.clone(), None),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("gen_registry_postgres")
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        Error(format!("PostgreSQL {server}: starting its runtime: {e}"))
                    })?;
                (
                    runtime.handle().clone(),
                    Some(Arc::new(OwnRuntime(Some(runtime)))),
                )
            }
        };
        let connections = settings.connections;
        let writers = (0..connections)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Ok(Postgres {
            shared: Arc::new(Shared {
                config,
                server,
                settings,
                handle,
                writers,
                next_writer: AtomicUsize::new(0),
                readers: (0..connections)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                next_reader: AtomicUsize::new(0),
                schema_ready: AtomicBool::new(false),
            }),
            _runtime: runtime,
        })
    }

    /// Connects now (creating the schema if needed), to fail at start-up
    /// rather than at the first call: within the connect timeout for a
    /// server that does not answer.
    ///
    /// ```
    /// use gen_registry_postgres::{Postgres, Settings};
    /// use std::time::Duration;
    /// # futures::executor::block_on(async {
    /// let settings = Settings::default().connect_timeout(Duration::from_secs(1));
    /// let nobody = Postgres::with_settings("postgresql://app@127.0.0.1:1/app", settings).unwrap();
    /// let e = nobody.connect().await.unwrap_err();
    /// assert!(e.to_string().contains("127.0.0.1:1/app"), "{e}");
    /// # });
    /// ```
    pub async fn connect(&self) -> Result<(), Error> {
        self.run("connecting", |shared| async move {
            shared.reader().await.map(drop)
        })
        .await
        .map_err(Error)
    }

    /// The server and database this store uses, as its messages name them
    /// (`host:port/database`).
    ///
    /// ```
    /// let postgres = gen_registry_postgres::Postgres::new("postgresql://app@10.0.0.5:5433/orders").unwrap();
    /// assert_eq!(postgres.server(), "10.0.0.5:5433/orders");
    /// ```
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    /// Runs `work` on the store's runtime within the operation timeout; the
    /// returned future may be awaited on any executor.
    fn run<T, F, W>(&self, operation: &'static str, work: W) -> BoxFuture<Result<T, String>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
        W: FnOnce(Arc<Shared>) -> F,
    {
        let shared = Arc::clone(&self.shared);
        let server = shared.server.clone();
        let limit = shared.settings.operation_timeout;
        let work = work(shared);
        let task = self.shared.handle.spawn(async move {
            match tokio::time::timeout(limit, work).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "gave up after {limit:?} (if a commit was under way, whether it applied is \
                     unknown)"
                )),
            }
        });
        Box::pin(async move {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) if e.is_panic() => Err("the operation panicked".to_owned()),
                Err(_) => Err("the store's runtime shut down".to_owned()),
            };
            outcome.map_err(|reason| format!("PostgreSQL {server}: {operation}: {reason}"))
        })
    }
}

/// `host:port/database` from a parsed configuration.
fn server_name(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

/// A client error as a text: the server's own message for a database error
/// (tokio-postgres's `Display` says only "db error"), the cause otherwise.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether a batch failed only because another transaction got in its way
/// (a deadlock between two nodes' batches), so trying again is right.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// How many times a batch is tried when transactions of other nodes get in
/// its way.
const TRIES: usize = 3;

impl Shared {
    /// Opens a connection, creates the schema the first time, and prepares
    /// the statements.
    async fn open(&self) -> Result<Connection, String> {
        let limit = self.settings.connect_timeout;
        let opened = tokio::time::timeout(limit, async {
            let (client, connection) = self
                .config
                .connect(NoTls)
                .await
                .map_err(|e| format!("connecting: {}", describe(&e)))?;
            // The connection's I/O, until the client is dropped or the
            // server goes away.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            if !self.schema_ready.load(Ordering::Acquire) {
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;"
                    ))
                    .await
                    .map_err(|e| format!("creating the schema: {}", describe(&e)))?;
                self.schema_ready.store(true, Ordering::Release);
            }
            let statements = Statements::prepare(&client)
                .await
                .map_err(|e| format!("preparing statements: {}", describe(&e)))?;
            Ok(Connection { client, statements })
        })
        .await;
        opened.unwrap_or_else(|_| Err(format!("connecting: no answer within {limit:?}")))
    }

    /// A read connection (each in turn), opened again if it broke.
    async fn reader(&self) -> Result<Arc<Connection>, String> {
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.readers[turn % self.readers.len()].lock().await;
        match &*slot {
            Some(connection) if !connection.client.is_closed() => Ok(Arc::clone(connection)),
            _ => {
                *slot = None;
                let connection = Arc::new(self.open().await?);
                *slot = Some(Arc::clone(&connection));
                Ok(connection)
            }
        }
    }

    /// Runs a read on the shared connection; a failure that closed it is
    /// not kept (the next read opens another).
    async fn read<T, F>(&self, read: impl FnOnce(Arc<Connection>) -> F) -> Result<T, String>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let connection = self.reader().await?;
        read(connection).await.map_err(|e| describe(&e))
    }

    /// Runs `batch` in a transaction on a writer connection: a free one if
    /// there is one, else the next in turn once it is free. The connection
    /// goes back to its slot only after a success; a deadlock with another
    /// node's batch is tried again.
    async fn write<B: Batch>(&self, batch: &B) -> Result<B::Outcome, String> {
        let n = self.writers.len();
        let start = self.next_writer.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|i| self.writers[(start + i) % n].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.writers[start % n].lock().await,
        };
        let mut connection = match slot.take() {
            Some(connection) if !connection.client.is_closed() => connection,
            _ => self.open().await?,
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match batch.apply(&mut connection).await {
                Ok(outcome) => {
                    *slot = Some(connection);
                    return Ok(outcome);
                }
                Err(e) if retryable(&e) && tries < TRIES => {
                    // The batch's transaction failed: end it before the next try.
                    if let Err(e) = connection.client.batch_execute("ROLLBACK").await {
                        return Err(describe(&e));
                    }
                }
                Err(e) => return Err(describe(&e)),
            }
        }
    }
}

/// A batch of writes, applied in one transaction.
trait Batch: Sync {
    type Outcome: Send;
    fn apply<'c>(
        &'c self,
        connection: &'c mut Connection,
    ) -> impl Future<Output = Result<Self::Outcome, tokio_postgres::Error>> + Send + 'c;
}

impl Batch for Vec<Write> {
    type Outcome = Vec<Result<(), Refusal>>;
    fn apply<'c>(
        &'c self,
        connection: &'c mut Connection,
    ) -> impl Future<Output = Result<Self::Outcome, tokio_postgres::Error>> + Send + 'c {
        commit_batch(connection, self)
    }
}

impl Batch for Vec<ReminderWrite> {
    type Outcome = Vec<Result<bool, Refusal>>;
    fn apply<'c>(
        &'c self,
        connection: &'c mut Connection,
    ) -> impl Future<Output = Result<Self::Outcome, tokio_postgres::Error>> + Send + 'c {
        remind_batch(connection, self)
    }
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            load: client
                .prepare(
                    "SELECT version, epoch, state FROM gen_registry_state \
                     WHERE kind = $1 AND id = $2",
                )
                .await?,
            // Each record (or worker) a batch touches is locked for the
            // transaction, in one order for every node, so two batches
            // never decide on the same row from one reading: a row that
            // does not exist yet has nothing `FOR UPDATE` could lock. The
            // lock function is volatile, so it runs after the sort.
            lock: client
                .prepare(
                    "SELECT pg_advisory_xact_lock(h) FROM (
                         SELECT DISTINCT hashtextextended(k.kind || '/' || encode(k.id, 'hex'), 0) AS h
                         FROM unnest($1::text[], $2::bytea[]) AS k(kind, id)
                     ) AS keys ORDER BY h",
                )
                .await?,
            stamps: client
                .prepare(
                    "SELECT s.kind, s.id, s.version, s.epoch FROM gen_registry_state s
                     JOIN unnest($1::text[], $2::bytea[]) AS k(kind, id)
                       ON s.kind = k.kind AND s.id = k.id",
                )
                .await?,
            upsert: client
                .prepare(
                    "INSERT INTO gen_registry_state (kind, id, version, epoch, state)
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::int8[], $5::bytea[])
                     ON CONFLICT (kind, id) DO UPDATE
                     SET version = excluded.version, epoch = excluded.epoch, state = excluded.state",
                )
                .await?,
            reminders_read: client
                .prepare(
                    "SELECT r.id, r.name, r.partition, r.due_ms, r.period_ms, r.message, r.epoch, r.kind
                     FROM gen_registry_reminders r
                     JOIN unnest($1::text[], $2::bytea[], $3::text[]) AS k(kind, id, name)
                       ON r.kind = k.kind AND r.id = k.id AND r.name = k.name",
                )
                .await?,
            reminders_upsert: client
                .prepare(
                    "INSERT INTO gen_registry_reminders
                         (kind, id, name, partition, due_ms, period_ms, message, epoch)
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int8[],
                                          $5::int8[], $6::int8[], $7::bytea[], $8::int8[])
                     ON CONFLICT (kind, id, name) DO UPDATE
                     SET partition = excluded.partition, due_ms = excluded.due_ms,
                         period_ms = excluded.period_ms, message = excluded.message,
                         epoch = excluded.epoch",
                )
                .await?,
            reminders_delete: client
                .prepare(
                    "DELETE FROM gen_registry_reminders r
                     USING unnest($1::text[], $2::bytea[], $3::text[]) AS k(kind, id, name)
                     WHERE r.kind = k.kind AND r.id = k.id AND r.name = k.name",
                )
                .await?,
            due: client
                .prepare(
                    "SELECT id, name, partition, due_ms, period_ms, message, epoch FROM gen_registry_reminders
                     WHERE kind = $1 AND partition = $2 AND due_ms <= $3
                     ORDER BY due_ms LIMIT $4",
                )
                .await?,
            reminders_of: client
                .prepare(
                    "SELECT id, name, partition, due_ms, period_ms, message, epoch
                     FROM gen_registry_reminders WHERE kind = $1 AND id = $2
                     ORDER BY name COLLATE \"C\"",
                )
                .await?,
        })
    }
}

// Versions and epochs are u64 in Rust and BIGINT (i64) in PostgreSQL: kept
// bit for bit, compared only in Rust.
fn to_sql(n: u64) -> i64 {
    n as i64
}
fn from_sql(n: i64) -> u64 {
    n as u64
}

/// A time or period in milliseconds as a BIGINT, which SQL compares: one
/// past `i64::MAX` (some 292 million years) is refused, not wrapped.
fn millis(ms: u64, what: &str) -> Result<i64, String> {
    i64::try_from(ms).map_err(|_| {
        format!("a reminder's {what} of {ms} ms is past the largest the store keeps (i64::MAX)")
    })
}

/// The distinct records (or workers) of a batch, as the two arrays the
/// lock and read statements take.
fn distinct_keys<'a>(keys: impl Iterator<Item = RecordKey<'a>>) -> (Vec<&'a str>, Vec<&'a [u8]>) {
    let mut seen = HashSet::new();
    keys.filter(|key| seen.insert(*key)).unzip()
}

/// Begins a transaction, takes the advisory locks of the records (or
/// workers) `kinds` and `ids` name, and runs `read` with `params` once they
/// are held: three statements in one round trip (the client pipelines
/// requests in the order they are first polled, and the server runs them in
/// that order; the read's snapshot is taken after the locks are held).
async fn begin_locked(
    client: &Client,
    statements: &Statements,
    kinds: &[&str],
    ids: &[&[u8]],
    read: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let begin = client.batch_execute("BEGIN");
    let keys: [&(dyn ToSql + Sync); 2] = [&kinds, &ids];
    let lock = client.execute(&statements.lock, &keys);
    let (_, _, rows) = try_join3(begin, lock, client.query(read, params)).await?;
    Ok(rows)
}

/// One batch of record writes, in a transaction of its own.
async fn commit_batch(
    connection: &mut Connection,
    writes: &[Write],
) -> Result<Vec<Result<(), Refusal>>, tokio_postgres::Error> {
    let (client, statements) = (&connection.client, &connection.statements);
    let (kinds, ids) = distinct_keys(writes.iter().map(|w| (w.key.kind, w.key.id.as_slice())));
    let rows = begin_locked(
        client,
        statements,
        &kinds,
        &ids,
        &statements.stamps,
        &[&kinds, &ids],
    )
    .await?;
    let mut found: HashMap<(String, Vec<u8>), Stamp> = HashMap::with_capacity(rows.len());
    for row in rows {
        let stamp = Stamp {
            version: from_sql(row.try_get(2)?),
            epoch: from_sql(row.try_get(3)?),
        };
        found.insert((row.try_get(0)?, row.try_get(1)?), stamp);
    }
    let held: HashMap<RecordKey<'_>, Stamp> = found
        .iter()
        .map(|((kind, id), stamp)| ((kind.as_str(), id.as_slice()), *stamp))
        .collect();
    let plan = plan::records(writes, &held);
    if !plan.finals.is_empty() {
        let f = &plan.finals;
        let kinds: Vec<&str> = f.iter().map(|w| w.key.kind).collect();
        let ids: Vec<&[u8]> = f.iter().map(|w| w.key.id.as_slice()).collect();
        let versions: Vec<i64> = f
            .iter()
            .map(|w| to_sql(w.expected.wrapping_add(1)))
            .collect();
        let epochs: Vec<i64> = f.iter().map(|w| to_sql(w.epoch)).collect();
        let states: Vec<Option<&[u8]>> = f.iter().map(|w| w.state.as_deref()).collect();
        let params: [&(dyn ToSql + Sync); 5] = [&kinds, &ids, &versions, &epochs, &states];
        let upsert = client.execute(&statements.upsert, &params);
        try_join(upsert, client.batch_execute("COMMIT")).await?;
    } else {
        client.batch_execute("COMMIT").await?;
    }
    Ok(plan.outcomes)
}

/// One batch of reminder writes, in a transaction of its own.
async fn remind_batch(
    connection: &mut Connection,
    writes: &[ReminderWrite],
) -> Result<Vec<Result<bool, Refusal>>, tokio_postgres::Error> {
    let (client, statements) = (&connection.client, &connection.statements);
    let keys: Vec<ReminderKey<'_>> = writes.iter().map(plan::reminder_key).collect();
    let (workers, worker_ids) = distinct_keys(keys.iter().map(|(kind, id, _)| (*kind, *id)));
    let distinct: HashSet<ReminderKey<'_>> = keys.iter().copied().collect();
    let kinds: Vec<&str> = distinct.iter().map(|k| k.0).collect();
    let ids: Vec<&[u8]> = distinct.iter().map(|k| k.1).collect();
    let names: Vec<&str> = distinct.iter().map(|k| k.2).collect();
    let read = &statements.reminders_read;
    let rows = begin_locked(
        client,
        statements,
        &workers,
        &worker_ids,
        read,
        &[&kinds, &ids, &names],
    )
    .await?;
    let mut found: HashMap<(String, Vec<u8>, String), tokio_postgres::Row> = HashMap::new();
    for row in rows {
        found.insert((row.try_get(7)?, row.try_get(0)?, row.try_get(1)?), row);
    }
    let mut held = HashMap::with_capacity(found.len());
    for key in distinct {
        let Some(row) = found.get(&(key.0.to_owned(), key.1.to_vec(), key.2.to_owned())) else {
            continue;
        };
        held.insert(key, reminder(key.0, row)?);
    }
    let plan = plan::reminders(writes, held);
    if !plan.deletes.is_empty() {
        let d = &plan.deletes;
        let kinds: Vec<&str> = d.iter().map(|k| k.0).collect();
        let ids: Vec<&[u8]> = d.iter().map(|k| k.1).collect();
        let names: Vec<&str> = d.iter().map(|k| k.2).collect();
        client
            .execute(&statements.reminders_delete, &[&kinds, &ids, &names])
            .await?;
    }
    if !plan.upserts.is_empty() {
        let u = &plan.upserts;
        let kinds: Vec<&str> = u.iter().map(|r| r.key.kind).collect();
        let ids: Vec<&[u8]> = u.iter().map(|r| r.key.id.as_slice()).collect();
        let names: Vec<&str> = u.iter().map(|r| r.name.as_str()).collect();
        let partitions: Vec<i64> = u.iter().map(|r| i64::from(r.partition)).collect();
        // Checked to fit before the transaction began.
        let dues: Vec<i64> = u.iter().map(|r| to_sql(r.due_ms)).collect();
        let periods: Vec<Option<i64>> = u.iter().map(|r| r.period_ms.map(to_sql)).collect();
        let messages: Vec<&[u8]> = u.iter().map(|r| r.message.as_slice()).collect();
        let epochs: Vec<i64> = u.iter().map(|r| to_sql(r.epoch)).collect();
        let params: [&(dyn ToSql + Sync); 8] = [
            &kinds,
            &ids,
            &names,
            &partitions,
            &dues,
            &periods,
            &messages,
            &epochs,
        ];
        client
            .execute(&statements.reminders_upsert, &params)
            .await?;
    }
    client.batch_execute("COMMIT").await?;
    Ok(plan.outcomes)
}

/// A reminder of `kind` from a row whose first columns are `id, name,
/// partition, due_ms, period_ms, message, epoch` (every reminder query's).
fn reminder(
    kind: &'static str,
    row: &tokio_postgres::Row,
) -> Result<Reminder, tokio_postgres::Error> {
    Ok(Reminder {
        key: Key {
            kind,
            id: row.try_get(0)?,
        },
        name: row.try_get(1)?,
        partition: row.try_get::<_, i64>(2)? as u32,
        due_ms: from_sql(row.try_get(3)?),
        period_ms: row.try_get::<_, Option<i64>>(4)?.map(from_sql),
        message: row.try_get(5)?,
        epoch: from_sql(row.try_get(6)?),
    })
}

/// The reminders of `kind` in `rows`, as [`reminder`] reads each.
fn reminders(kind: &'static str, rows: &[tokio_postgres::Row]) -> Result<Vec<Reminder>, String> {
    rows.iter()
        .map(|row| reminder(kind, row))
        .collect::<Result<_, _>>()
        .map_err(|e| describe(&e))
}

/// Refuses a batch whose times do not fit a BIGINT, before it starts.
fn check_times(writes: &[ReminderWrite]) -> Result<(), String> {
    for write in writes {
        match write {
            ReminderWrite::Set(r) => {
                millis(r.due_ms, "due time")?;
                if let Some(period) = r.period_ms {
                    millis(period, "period")?;
                }
            }
            ReminderWrite::Fired {
                next_due_ms: Some(next),
                ..
            } => {
                millis(*next, "next due time")?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl Backend for Postgres {
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
        self.run("loading a record", |shared| async move {
            let row = shared
                .read(move |c| async move {
                    c.client
                        .query_opt(&c.statements.load, &[&key.kind, &key.id])
                        .await
                })
                .await?;
            row.map(|row| {
                Ok(Record {
                    stamp: Stamp {
                        version: from_sql(row.try_get(0)?),
                        epoch: from_sql(row.try_get(1)?),
                    },
                    state: row.try_get(2)?,
                })
            })
            .transpose()
            .map_err(|e: tokio_postgres::Error| describe(&e))
        })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
        let operation = "committing a batch of writes";
        self.run(
            operation,
            |shared| async move { shared.write(&writes).await },
        )
    }

    fn remind(
        &self,
        writes: Vec<ReminderWrite>,
    ) -> BoxFuture<Result<Vec<Result<bool, Refusal>>, String>> {
        self.run(
            "committing a batch of reminder writes",
            |shared| async move {
                check_times(&writes)?;
                shared.write(&writes).await
            },
        )
    }

    fn due(
        &self,
        kind: &'static str,
        partition: u32,
        until_ms: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Reminder>, String>> {
        self.run("reading the due reminders", move |shared| async move {
            // Everything stored is at most i64::MAX: a later bound is that.
            let until = i64::try_from(until_ms).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let partition = i64::from(partition);
            let rows = shared
                .read(move |c| async move {
                    c.client
                        .query(&c.statements.due, &[&kind, &partition, &until, &limit])
                        .await
                })
                .await?;
            reminders(kind, &rows)
        })
    }

    fn reminders_of(&self, key: Key) -> BoxFuture<Result<Vec<Reminder>, String>> {
        self.run("reading a worker's reminders", |shared| async move {
            let (kind, id) = (key.kind, key.id.clone());
            let rows = shared
                .read(move |c| async move {
                    c.client
                        .query(&c.statements.reminders_of, &[&kind, &id])
                        .await
                })
                .await?;
            reminders(key.kind, &rows)
        })
    }
}
