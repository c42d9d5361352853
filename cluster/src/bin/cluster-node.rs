//! A cluster node for the multi-process tests and the benchmarks: joins a
//! cluster of `Probe` workers, and takes commands on standard input, one per
//! line, answering each on standard output:
//!
//! - `call ID ADD` → `call ID ok TOTAL` | `call ID refused MESSAGE` | `call ID err MESSAGE`
//! - `write ID ADD` → as `call`, and the worker writes its state to the store
//!   before it answers (`write ID ok TOTAL` once the write committed)
//! - `load IDS MILLIS TASKS` → `load ok N err M undelivered U max_ms X p50_us Y p99_us Z first_err E`
//!   (U of the M errors are requests no worker took: `ClusterError::NotDelivered`)
//! - `starts FROM COUNT TASKS` → `starts ok N err M millis X`
//! - `count` → `count LOCAL TOTAL` | `count err partial WORKERS unanswered NODES` | `count err MESSAGE`
//! - `owner ID` → `owner ID NODE EPOCH` | `owner ID none`
//! - `shard ID` → `shard ID SHARD`
//! - `served` → `served SHARDS` (the shards this node serves)
//! - `stats` → `stats shards S running R queued Q lease_ms L` (the node's
//!   health snapshot, [`Cluster::stats`]; L is `none` while fenced)
//! - `metrics` → `metrics ADDR` (where `--metrics` serves) | `metrics none`
//! - `spans` → one `span NAME TRACE_ID SPAN_ID PARENT_ID` line per span
//!   ended so far, then `spans N` (with `--spans`; `spans 0` without)
//! - `probe IDS CALLS` → `probe local_p50_us A local_p99_us B remote_p50_us C remote_p99_us D`:
//!   one call at a time, `CALLS` each to the ids of `0..IDS` served here and elsewhere
//! - `remote IDS CALLS TASKS` → `remote ok N err M millis X`: `CALLS` calls
//!   from `TASKS` tasks at once, to the ids of `0..IDS` served elsewhere
//! - `check FROM COUNT TASKS` → `check ok N wrong W fenced F err M first WHAT`:
//!   calls each new id of `FROM..FROM+COUNT` once, adding the id, from
//!   `TASKS` tasks at once; a total other than the id is wrong
//! - `remind FROM COUNT AFTER_MS SPREAD_MS [EVERY_MS]` → `remind ok N err M first_err E`:
//!   sets reminder `r` of each id of `FROM..FROM+COUNT` (message: the id),
//!   once, the i-th due `AFTER_MS + i × SPREAD_MS` ms from now, or with
//!   `EVERY_MS`, every `EVERY_MS` ms (needs `--pg`)
//! - `reminded` → `reminded fired F retried R store_errors S`: what this
//!   node's reminder services did (`store_errors`: marks the store refused)
//! - `pending FROM COUNT` → `pending N` | `pending err MESSAGE`: the
//!   reminders still set for those ids
//! - `leave` → `left`, then the process exits
//!
//! The crate's warnings (a refused connection…) are printed as lines of
//! their own, each containing `WARN`.
//!
//! Every incarnation of a worker appends to the log file: `start ID INC NODE
//! EPOCH T`, `call ID INC T` for each request it handled, and `end ID INC T`
//! when it ended while still holding its shard (`endfenced` otherwise), with
//! T in nanoseconds of the wall clock. "Holding its shard" is what the
//! worker's context says ([`Context::holds_epoch`]), and EPOCH is its
//! context's epoch. Each line is one `write` to a file
//! opened for appending, so lines of several processes never interleave.
//!
//! With `--pg URL` (feature `postgres`), a worker's total is persisted
//! state in that PostgreSQL database, loaded with the worker's epoch
//! (`Stored::load_for`): a call changes it without writing, `write` writes
//! it, and `terminate` flushes it, logging `flush ID INC OUTCOME T`, OUTCOME
//! being `ok`, `fenced` (the store refused the epoch) or `error`.
//!
//! With `--metrics ADDR` (feature `prometheus`), the node serves its
//! metrics at `GET /metrics` on ADDR (port 0: any free port, told by the
//! `metrics` command), in Prometheus' text format: the core's metrics of
//! every shard's registry and the cluster's own.
//!
//! With `--spans on` (feature `span-log`), the node keeps its spans with
//! OpenTelemetry (the SDK's in-memory exporter) for the `spans` command:
//! each `call` and `write` runs in an `INFO` span `request`, and the
//! cluster's spans (`DEBUG`, target `gen_registry_cluster`) are recorded,
//! so a test sees the span a peer served a request in, under its caller's.
//!
//! With `--remind-ms MS` (and `--pg`), the node fires the reminders of the
//! shards it serves, scanning every MS ms; each delivery is logged, with
//! `--fired FILE`, as `fired ID DUE_MS NODE EPOCH HOLDS T` (HOLDS: 1 if the
//! worker's node held the shard at EPOCH) in that file; with
//! `--remind-delay-ms MS`, a worker takes MS ms to handle a reminder.
//!
//! Usage: `cluster-node --etcd URL --name NAME --listen ADDR --secret S
//! --log FILE [--ttl SECS] [--margin-ms MS] [--shards N] [--prefix P]
//! [--tls-ca PEM --tls-cert PEM --tls-key PEM] [--pg URL] [--metrics ADDR]
//! [--spans on] [--remind-ms MS] [--remind-delay-ms MS] [--fired FILE]`

use gen_registry::state::{Reminded, StateError, Store, Stored, When};
use gen_registry::{Context, ExitReason, Options, Worker};
use gen_registry_cluster::{Cluster, ClusterError, ClusterReminders, Config, Tls};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

static LOG: OnceLock<File> = OnceLock::new();
/// The store workers keep their totals in, if any.
static STORE: OnceLock<Store> = OnceLock::new();
/// Where reminders' deliveries are logged (`--fired FILE`), if anywhere.
static FIRED: OnceLock<File> = OnceLock::new();
/// How long a worker takes to handle a reminder (`--remind-delay-ms`).
static REMIND_DELAY_MS: AtomicU64 = AtomicU64::new(0);
static INCARNATIONS: AtomicU64 = AtomicU64::new(0);

fn wall_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// One small append: a single `write` on an O_APPEND file, which does not
/// wait on anything a worker's executor thread should not wait on.
fn log(line: String) {
    if let Some(mut file) = LOG.get() {
        let _ = file.write_all(line.as_bytes());
    }
}

/// A counter that records its incarnation's life in the log.
struct Probe {
    id: u64,
    incarnation: String,
    total: Total,
}

/// A request: what to add and whether to write the total to the store
/// before answering, or a reminder's delivery (which adds nothing).
#[derive(serde::Serialize, serde::Deserialize)]
enum Ask {
    Add(u64, bool),
    Reminded { due_ms: u64 },
}

impl From<Reminded<u64>> for Ask {
    fn from(reminded: Reminded<u64>) -> Ask {
        let due = reminded.due.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ask::Reminded {
            due_ms: due.as_millis() as u64,
        }
    }
}

/// Logs a reminder's delivery to the `--fired` file: `fired ID DUE_MS NODE
/// EPOCH HOLDS T`, HOLDS being 1 if the worker's node held its shard at
/// that epoch.
fn fired(id: u64, due_ms: u64, ctx: &Context<Probe>) {
    if let Some(mut file) = FIRED.get() {
        let line = format!(
            "fired {id} {due_ms} {} {} {} {}\n",
            ctx.node().unwrap_or("?"),
            ctx.epoch().unwrap_or_default(),
            u8::from(ctx.holds_epoch()),
            wall_nanos()
        );
        let _ = file.write_all(line.as_bytes());
    }
}

/// A worker's total: in memory, or persisted state in the store.
enum Total {
    Memory(u64),
    Stored(Stored<u64>),
}

impl Worker for Probe {
    type Id = u64;
    type Args = ();
    /// What to add, and whether to write the total to the store before
    /// answering.
    type Request = Ask;
    /// The total, or why the request was refused.
    type Reply = Result<u64, String>;
    type Message = ();
    type Error = StateError;

    async fn init(id: &u64, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
        let node = ctx.node().unwrap_or("?");
        let incarnation = format!(
            "{node}:{}:{}",
            std::process::id(),
            INCARNATIONS.fetch_add(1, Ordering::Relaxed)
        );
        let total = match STORE.get() {
            Some(store) => Total::Stored(Stored::load_for(store, "probe", ctx).await?),
            None => Total::Memory(0),
        };
        if ctx.holds_epoch() {
            log(format!(
                "start {id} {incarnation} {node} {} {}\n",
                ctx.epoch().unwrap_or_default(),
                wall_nanos()
            ));
        }
        Ok(Probe {
            id: *id,
            incarnation,
            total,
        })
    }

    async fn handle_call(&mut self, ask: Ask, ctx: &mut Context<Self>) -> Result<u64, String> {
        let (add, write) = match ask {
            Ask::Add(add, write) => (add, write),
            Ask::Reminded { due_ms } => {
                fired(self.id, due_ms, ctx);
                let delay = REMIND_DELAY_MS.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                (0, false)
            }
        };
        if !ctx.holds_epoch() {
            return Err("fenced".into());
        }
        let total = match &mut self.total {
            Total::Memory(total) => {
                *total += add;
                *total
            }
            Total::Stored(stored) => {
                **stored += add;
                if write {
                    stored.write().await.map_err(|e| e.to_string())?;
                }
                **stored
            }
        };
        log(format!(
            "call {} {} {}\n",
            self.id,
            self.incarnation,
            wall_nanos()
        ));
        Ok(total)
    }

    async fn terminate(&mut self, _: &ExitReason, ctx: &mut Context<Self>) {
        let kind = if ctx.holds_epoch() {
            "end"
        } else {
            "endfenced"
        };
        log(format!(
            "{kind} {} {} {}\n",
            self.id,
            self.incarnation,
            wall_nanos()
        ));
        if let Total::Stored(stored) = &mut self.total {
            let outcome = match stored.flush().await {
                Ok(_) => "ok",
                Err(StateError::Fenced { .. }) => "fenced",
                Err(_) => "error",
            };
            log(format!(
                "flush {} {} {outcome} {}\n",
                self.id,
                self.incarnation,
                wall_nanos()
            ));
        }
    }
}

fn flags() -> HashMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.trim_start_matches("--").to_string(), v.clone())),
            _ => None,
        })
        .collect()
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let flags = flags();
    let need = |k: &str| {
        flags.get(k).cloned().unwrap_or_else(|| {
            eprintln!("cluster-node: missing --{k}");
            std::process::exit(2)
        })
    };
    let name = need("name");
    let log_path = need("log");
    let file = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| {
            eprintln!("cluster-node: cannot open {log_path}: {e}");
            std::process::exit(2)
        });
    let _ = LOG.set(file);
    if let Some(path) = flags.get("fired") {
        let file = File::options().create(true).append(true).open(path);
        let _ = FIRED.set(file.unwrap_or_else(|e| {
            eprintln!("cluster-node: cannot open {path}: {e}");
            std::process::exit(2)
        }));
    }
    let number =
        |k: &str, default: u64| flags.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut config = Config::new(name, [need("etcd")], need("secret"))
        .lease_ttl(Duration::from_secs(number("ttl", 3)))
        .fence_margin(Duration::from_millis(number("margin-ms", 1000)))
        .shards(number("shards", 32) as u32)
        .call_timeout(Duration::from_millis(number("timeout-ms", 5000)));
    REMIND_DELAY_MS.store(number("remind-delay-ms", 0), Ordering::Relaxed);
    if let Some(listen) = flags.get("listen").and_then(|l| l.parse().ok()) {
        config = config.listen(listen);
    }
    if let Some(prefix) = flags.get("prefix") {
        config = config.prefix(prefix.clone());
    }
    if flags.contains_key("tls-ca") {
        match Tls::from_pem_files(need("tls-ca"), need("tls-cert"), need("tls-key")) {
            Ok(tls) => config = config.tls(tls),
            Err(e) => {
                say(format!("failed {e}"));
                std::process::exit(1);
            }
        }
    }
    // The crate's warnings go to stdout; with `--spans`, under the
    // subscriber that also records spans (there is one global subscriber).
    let spans = flags.contains_key("spans").then(record_spans);
    if spans.is_none() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .without_time()
            .with_writer(std::io::stdout)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("cluster-node: no runtime: {e}");
            std::process::exit(2)
        });
    runtime.block_on(async move {
        if let Some(url) = flags.get("pg") {
            let _ = STORE.set(postgres_store(url).await);
        }
        // Before joining: the node and its shards' registries take their
        // metric handles from the recorder installed when they are made.
        let metrics_at = match flags.get("metrics") {
            Some(addr) => Some(serve_metrics(addr).await),
            None => None,
        };
        let cluster = match Cluster::<Probe>::join(config, Options::default()).await {
            Ok(c) => c,
            Err(e) => {
                say(format!("failed {e}"));
                std::process::exit(1);
            }
        };
        let reminders = STORE
            .get()
            .map(|store| cluster.reminders::<u64>(store, "probe"));
        if let (Some(reminders), Some(scan)) = (&reminders, flags.get("remind-ms")) {
            let scan = Duration::from_millis(scan.parse().unwrap_or(100));
            if let Err(e) = reminders.serve(|_id| (), scan) {
                say(format!("failed {e}"));
                std::process::exit(1);
            }
        }
        say(format!("ready {} {}", cluster.name(), cluster.address()));
        let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = commands.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let cluster = cluster.clone();
            match words.as_slice() {
                ["leave"] => {
                    cluster.leave().await;
                    say("left".into());
                    std::process::exit(0);
                }
                [verb @ ("call" | "write"), id, add] => {
                    let (verb, write) = (verb.to_string(), *verb == "write");
                    let (id, add) = (id.parse().unwrap_or(0), add.parse().unwrap_or(0));
                    let span = tracing::info_span!(target: "cluster_node", "request", id);
                    tokio::spawn(
                        async move {
                            say(match cluster.call(id, (), Ask::Add(add, write)).await {
                                Ok(Ok(total)) => format!("{verb} {id} ok {total}"),
                                Ok(Err(refused)) => format!("{verb} {id} refused {refused}"),
                                Err(e) => format!("{verb} {id} err {e}"),
                            })
                        }
                        .instrument(span),
                    );
                }
                ["load", ids, millis, tasks] => {
                    let ids: u64 = ids.parse().unwrap_or(1).max(1);
                    let millis = millis.parse().unwrap_or(1000);
                    let tasks = tasks.parse().unwrap_or(4);
                    tokio::spawn(load(cluster, ids, Duration::from_millis(millis), tasks));
                }
                ["starts", from, count, tasks] => {
                    let from: u64 = from.parse().unwrap_or(0);
                    let count: u64 = count.parse().unwrap_or(0);
                    let tasks: u64 = tasks.parse().unwrap_or(4).max(1);
                    tokio::spawn(starts(cluster, from, count, tasks));
                }
                ["reminded"] => match &reminders {
                    Some(reminders) => {
                        let c = reminders.counts();
                        say(format!(
                            "reminded fired {} retried {} store_errors {}",
                            c.fired, c.retried, c.store_errors
                        ));
                    }
                    None => say("reminded err no store: start with --pg".into()),
                },
                ["remind", from, count, after, spread, rest @ ..] => {
                    let Some(reminders) = reminders.clone() else {
                        say("remind err no store: start with --pg".into());
                        continue;
                    };
                    let (from, count): (u64, u64) =
                        (from.parse().unwrap_or(0), count.parse().unwrap_or(0));
                    let (after, spread): (u64, u64) =
                        (after.parse().unwrap_or(0), spread.parse().unwrap_or(0));
                    let every = rest.first().and_then(|e| e.parse().ok());
                    let when = move |i: u64| match every {
                        Some(every) => When::Every(Duration::from_millis(every)),
                        None => {
                            When::At(SystemTime::now() + Duration::from_millis(after + spread * i))
                        }
                    };
                    tokio::spawn(remind(reminders, from..from + count, when));
                }
                ["pending", from, count] => {
                    let Some(reminders) = reminders.clone() else {
                        say("pending err no store: start with --pg".into());
                        continue;
                    };
                    let (from, count): (u64, u64) =
                        (from.parse().unwrap_or(0), count.parse().unwrap_or(0));
                    tokio::spawn(async move {
                        let mut pending = 0;
                        for id in from..from + count {
                            match reminders.list(&id).await {
                                Ok(list) => pending += list.len(),
                                Err(e) => return say(format!("pending err {e}")),
                            }
                        }
                        say(format!("pending {pending}"));
                    });
                }
                ["count"] => {
                    tokio::spawn(async move {
                        say(match cluster.count().await {
                            Ok(c) if c.is_complete() => {
                                format!("count {} {}", cluster.local_count(), c.workers)
                            }
                            Ok(c) => format!(
                                "count err partial {} unanswered {}",
                                c.workers,
                                c.unanswered.join(",")
                            ),
                            Err(e) => format!("count err {e}"),
                        })
                    });
                }
                ["owner", id] => {
                    let id = id.parse().unwrap_or(0);
                    say(match cluster.owner(&id).await {
                        Ok(Some(o)) => format!("owner {id} {} {}", o.node, o.epoch),
                        Ok(None) => format!("owner {id} none"),
                        Err(e) => format!("owner {id} err {e}"),
                    });
                }
                ["shard", id] => {
                    let id = id.parse().unwrap_or(0);
                    say(match cluster.shard_of(&id) {
                        Ok(shard) => format!("shard {id} {shard}"),
                        Err(e) => format!("shard {id} err {e}"),
                    });
                }
                ["stats"] => {
                    let stats = cluster.stats();
                    let lease = stats
                        .lease_left
                        .map_or("none".to_string(), |l| l.as_millis().to_string());
                    say(format!(
                        "stats shards {} running {} queued {} lease_ms {lease}",
                        stats.shards.len(),
                        stats.workers.running,
                        stats.workers.queued,
                    ));
                }
                ["spans"] => {
                    let lines = spans.as_ref().map(|s| s.lines()).unwrap_or_default();
                    for line in &lines {
                        say(line.clone());
                    }
                    say(format!("spans {}", lines.len()));
                }
                ["metrics"] => say(format!(
                    "metrics {}",
                    metrics_at.map_or("none".to_string(), |a| a.to_string())
                )),
                ["served"] => {
                    let served = (0..cluster.shards()).filter(|s| cluster.serves(*s)).count();
                    say(format!("served {served}"));
                }
                ["probe", ids, calls] => {
                    let ids = ids.parse().unwrap_or(100);
                    let calls = calls.parse().unwrap_or(1000);
                    tokio::spawn(probe(cluster, ids, calls));
                }
                ["check", from, count, tasks] => {
                    let from: u64 = from.parse().unwrap_or(0);
                    let count: u64 = count.parse().unwrap_or(0);
                    let tasks: u64 = tasks.parse().unwrap_or(4).max(1);
                    tokio::spawn(check(cluster, from, count, tasks));
                }
                ["remote", ids, calls, tasks] => {
                    let ids = ids.parse().unwrap_or(100);
                    let calls = calls.parse().unwrap_or(1000);
                    let tasks = tasks.parse().unwrap_or(64);
                    tokio::spawn(remote(cluster, ids, calls, tasks));
                }
                _ => say(format!("unknown {line}")),
            }
        }
    });
}

/// Calls random ids from `0..ids` from `tasks` tasks for `length`.
async fn load(cluster: Cluster<Probe>, ids: u64, length: Duration, tasks: u64) {
    let end = Instant::now() + length;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let cluster = cluster.clone();
        set.spawn(async move {
            let mut seed =
                0x9e37_79b9_7f4a_7c15_u64 ^ (task + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let (mut ok, mut err, mut undelivered, mut first) = (0u64, 0u64, 0u64, None);
            let mut latencies = Vec::new();
            while Instant::now() < end {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let started = Instant::now();
                let result = cluster.call(seed % ids, (), Ask::Add(1, false)).await;
                latencies.push(started.elapsed());
                match result {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(refused)) => {
                        err += 1;
                        first.get_or_insert(refused);
                    }
                    Err(e) => {
                        err += 1;
                        if let ClusterError::NotDelivered(_) = e {
                            undelivered += 1;
                        }
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, err, undelivered, first, latencies)
        });
    }
    let (mut ok, mut err, mut undelivered, mut first, mut latencies) = (0, 0, 0, None, Vec::new());
    while let Some(Ok((o, e, u, f, l))) = set.join_next().await {
        ok += o;
        err += e;
        undelivered += u;
        first = first.or(f);
        latencies.extend(l);
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
    };
    let us = |d: Option<&Duration>| d.map(|d| d.as_micros()).unwrap_or(0);
    say(format!(
        "load ok {ok} err {err} undelivered {undelivered} max_ms {} p50_us {} p99_us {} first_err {}",
        latencies.last().map(|d| d.as_millis()).unwrap_or(0),
        us(at(0.5)),
        us(at(0.99)),
        first.unwrap_or_else(|| "-".into()).replace(' ', "_")
    ));
}

/// Sets reminder `r` of each id of `ids`, the i-th `when(i)`, from 8 tasks.
async fn remind(
    reminders: ClusterReminders<Probe, u64>,
    ids: std::ops::Range<u64>,
    when: impl Fn(u64) -> When + Copy + Send + 'static,
) {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..8 {
        let reminders = reminders.clone();
        let ids = ids.clone();
        set.spawn(async move {
            let (mut ok, mut err, mut first) = (0u64, 0u64, None);
            for id in ids.clone().skip(task).step_by(8) {
                match reminders.set(&id, "r", when(id - ids.start), &id).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        err += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, err, first)
        });
    }
    let (mut ok, mut err, mut first) = (0, 0, None);
    while let Some(Ok((o, e, f))) = set.join_next().await {
        ok += o;
        err += e;
        first = first.or(f);
    }
    say(format!(
        "remind ok {ok} err {err} first_err {}",
        first.unwrap_or_else(|| "-".into()).replace(' ', "_")
    ));
}

/// `calls` calls adding `add`, the n-th to `id_of(n)` (none once it gives
/// no id), from `tasks` tasks taking every `tasks`-th n: how many were
/// answered, how many failed, and the milliseconds they all took.
async fn calls_from_tasks(
    cluster: &Cluster<Probe>,
    calls: u64,
    tasks: u64,
    add: u64,
    id_of: impl Fn(u64) -> Option<u64> + Clone + Send + 'static,
) -> (u64, u64, u128) {
    let tasks = tasks.max(1);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (cluster, id_of) = (cluster.clone(), id_of.clone());
        set.spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            for n in (task..calls).step_by(tasks as usize) {
                let Some(id) = id_of(n) else { break };
                match cluster.call(id, (), Ask::Add(add, false)).await {
                    Ok(Ok(_)) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        });
    }
    let (mut ok, mut err) = (0, 0);
    while let Some(Ok((o, e))) = set.join_next().await {
        ok += o;
        err += e;
    }
    (ok, err, started.elapsed().as_millis())
}

/// Starts `count` new ids from `from` on, from `tasks` tasks.
async fn starts(cluster: Cluster<Probe>, from: u64, count: u64, tasks: u64) {
    let (ok, err, millis) =
        calls_from_tasks(&cluster, count, tasks, 0, move |n| Some(from + n)).await;
    say(format!("starts ok {ok} err {err} millis {millis}"));
}

/// Calls each new id of `from..from + count` once with the id itself, from
/// `tasks` tasks: each reply must be the id (a reply handed to the wrong
/// call would not be).
async fn check(cluster: Cluster<Probe>, from: u64, count: u64, tasks: u64) {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let cluster = cluster.clone();
        set.spawn(async move {
            let (mut ok, mut wrong, mut fenced, mut err, mut first) = (0u64, 0, 0, 0, None);
            let mut id = from + task;
            while id < from + count {
                match cluster.call(id, (), Ask::Add(id, false)).await {
                    Ok(Ok(total)) if total == id => ok += 1,
                    Ok(Ok(total)) => {
                        wrong += 1;
                        first.get_or_insert_with(|| format!("{id}_answered_{total}"));
                    }
                    Ok(Err(_)) => fenced += 1,
                    Err(e) => {
                        err += 1;
                        first.get_or_insert_with(|| format!("{id}:_{e}"));
                    }
                }
                id += tasks;
            }
            (ok, wrong, fenced, err, first)
        });
    }
    let (mut ok, mut wrong, mut fenced, mut err, mut first) = (0, 0, 0, 0, None);
    while let Some(Ok((o, w, n, e, f))) = set.join_next().await {
        ok += o;
        wrong += w;
        fenced += n;
        err += e;
        first = first.or(f);
    }
    let first = first.unwrap_or_else(|| "-".into()).replace(' ', "_");
    say(format!(
        "check ok {ok} wrong {wrong} fenced {fenced} err {err} first {first}"
    ));
}

/// The ids of `0..ids` served here, and those served by other nodes.
async fn split_ids(cluster: &Cluster<Probe>, ids: u64) -> (Vec<u64>, Vec<u64>) {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for id in 0..ids {
        if let Ok(Some(owner)) = cluster.owner(&id).await {
            if owner.node == cluster.name() {
                local.push(id)
            } else {
                remote.push(id)
            }
        }
    }
    (local, remote)
}

/// `calls` calls to ids served by other nodes, `tasks` at a time.
async fn remote(cluster: Cluster<Probe>, ids: u64, calls: u64, tasks: u64) {
    let (_, remote) = split_ids(&cluster, ids).await;
    let remote = std::sync::Arc::new(remote);
    let id_of = move |n: u64| remote.get(n as usize % remote.len().max(1)).copied();
    let (ok, err, millis) = calls_from_tasks(&cluster, calls, tasks, 1, id_of).await;
    say(format!("remote ok {ok} err {err} millis {millis}"));
}

/// Latency of one call at a time, to ids served here and to ids served by
/// other nodes.
async fn probe(cluster: Cluster<Probe>, ids: u64, calls: usize) {
    let (local, remote) = split_ids(&cluster, ids).await;
    let mut figures = Vec::new();
    for set in [&local, &remote] {
        let mut latencies = Vec::with_capacity(calls);
        for n in 0..calls {
            let Some(id) = set.get(n % set.len().max(1)) else {
                break;
            };
            let started = Instant::now();
            let _ = cluster.call(*id, (), Ask::Add(1, false)).await;
            latencies.push(started.elapsed().as_micros());
        }
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get((latencies.len() as f64 * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        figures.push((at(0.5), at(0.99)));
    }
    say(format!(
        "probe local_p50_us {} local_p99_us {} remote_p50_us {} remote_p99_us {}",
        figures[0].0, figures[0].1, figures[1].0, figures[1].1
    ));
}

/// The store of `--pg URL`: a PostgreSQL database the nodes share.
#[cfg(feature = "postgres")]
async fn postgres_store(url: &str) -> Store {
    let postgres = gen_registry_postgres::Postgres::new(url).unwrap_or_else(|e| {
        say(format!("failed {e}"));
        std::process::exit(1)
    });
    if let Err(e) = postgres.connect().await {
        say(format!("failed {e}"));
        std::process::exit(1);
    }
    Store::new(
        postgres,
        gen_registry::Executor::Tokio(tokio::runtime::Handle::current()),
    )
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store(_: &str) -> Store {
    say("failed --pg needs the feature `postgres`".into());
    std::process::exit(2)
}

/// Installs the Prometheus recorder and serves its rendering at `GET
/// /metrics` on `addr`; the address it listens on.
#[cfg(feature = "prometheus")]
async fn serve_metrics(addr: &str) -> std::net::SocketAddr {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .unwrap_or_else(|e| fail(format!("no metrics recorder: {e}")));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(format!("cannot serve metrics on {addr}: {e}")));
    let local = listener
        .local_addr()
        .unwrap_or_else(|e| fail(e.to_string()));
    let upkeep = handle.clone();
    tokio::spawn(async move {
        // The recorder's housekeeping (draining its histograms' buckets),
        // which an installed recorder without a listener leaves to us.
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                // One request per connection: read its head, answer, close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if head.starts_with(b"GET /metrics ") {
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    local
}

#[cfg(not(feature = "prometheus"))]
async fn serve_metrics(_: &str) -> std::net::SocketAddr {
    fail("--metrics needs the feature `prometheus`".into())
}

/// Says why the node cannot start, and exits.
fn fail(why: String) -> ! {
    say(format!("failed {why}"));
    std::process::exit(2)
}

/// The spans this node recorded, for the `spans` command.
struct SpanLog {
    #[cfg(feature = "span-log")]
    exporter: opentelemetry_sdk::trace::InMemorySpanExporter,
    /// Kept for as long as the log: dropping it shuts its export down.
    #[cfg(feature = "span-log")]
    _provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl SpanLog {
    /// `span NAME TRACE_ID SPAN_ID PARENT_ID` for each span ended so far.
    #[cfg(feature = "span-log")]
    fn lines(&self) -> Vec<String> {
        let spans = self.exporter.get_finished_spans().unwrap_or_default();
        spans
            .iter()
            .map(|s| {
                format!(
                    "span {} {} {} {}",
                    s.name,
                    s.span_context.trace_id(),
                    s.span_context.span_id(),
                    s.parent_span_id
                )
            })
            .collect()
    }

    #[cfg(not(feature = "span-log"))]
    fn lines(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Records the node's `request` spans and the cluster's spans with
/// OpenTelemetry, each exported to memory when it ends.
#[cfg(feature = "span-log")]
fn record_spans() -> SpanLog {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Level;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("cluster-node"))
                .with_filter(
                    Targets::new()
                        .with_target("cluster_node", Level::INFO)
                        .with_target("gen_registry_cluster", Level::DEBUG),
                ),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_writer(std::io::stdout)
                .with_filter(LevelFilter::WARN),
        );
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        fail(format!("no span subscriber: {e}"));
    }
    SpanLog {
        exporter,
        _provider: provider,
    }
}

#[cfg(not(feature = "span-log"))]
fn record_spans() -> SpanLog {
    fail("--spans needs the feature `span-log`".into())
}
