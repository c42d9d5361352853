//! Persisted state on a real PostgreSQL server: round trips through each
//! way a worker ends, versions and epochs, group commit, bad input, a kill
//! -9 of the writing process, a crash of the server in the middle of group
//! commits, and a server nobody answers for.

mod common;
#[path = "../../tests/common/ledger.rs"]
mod ledger;

use common::*;
use futures::future::join_all;
use gen_registry::state::{
    Backend, BoxFuture, Key, Record, Refusal, StateError, Store, Stored, Write,
};
use gen_registry::{Error, ExitReason, GenRegistry, Options, RestartPolicy};
use gen_registry_postgres::{Postgres, Settings};
use ledger::{Account, Ledger, Op, entries, registry};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Ends every worker of a registry without `terminate` (a kill), so a
/// worker holding a refused change does not retry it.
async fn kill_all(accounts: &GenRegistry<Account>) {
    for (_, worker) in accounts.to_list() {
        let down = worker.monitor();
        worker.kill();
        down.await;
    }
}

/// Account 1 writes 1 and notes 2 without writing, `end` ends its worker
/// (returning the exit reason), and the next start loads both.
fn round_trip<F>(
    options: Options<Account>,
    expected: ExitReason,
    end: fn(GenRegistry<Account>) -> F,
) where
    F: std::future::Future<Output = ExitReason> + Send + 'static,
{
    let server = server();
    let store = store(&server);
    run(60, async move {
        let accounts = registry(options);
        entries(accounts.call(1, store.clone(), Op::Add(1)).await);
        entries(accounts.call(1, store.clone(), Op::Note(2)).await);
        assert_eq!(end(accounts.clone()).await, expected);
        let loaded = entries(accounts.call(1, store.clone(), Op::Get).await);
        assert_eq!(loaded, [1, 2]);
        accounts.shutdown().await;
    });
}

#[test]
fn a_stop_writes_what_changed_and_the_next_start_loads_it() {
    round_trip(
        Options::default(),
        ExitReason::Stopped,
        |accounts| async move {
            let down = accounts.lookup(&1).unwrap().monitor();
            accounts.stop(&1).await.unwrap();
            down.await
        },
    );
}

#[test]
fn an_idle_end_writes_what_changed_and_the_next_start_loads_it() {
    let idle = Options::default().idle_timeout(Duration::from_millis(50));
    round_trip(idle, ExitReason::Idle, |accounts| async move {
        accounts.lookup(&1).unwrap().monitor().await
    });
}

#[test]
fn an_eviction_writes_what_changed_and_the_next_start_loads_it() {
    let server = server();
    let store = store(&server);
    run(60, async move {
        let accounts = registry(Options::default().max_workers(1));
        entries(accounts.call(1, store.clone(), Op::Note(5)).await);
        let first = accounts.lookup(&1).unwrap();
        entries(accounts.call(2, store.clone(), Op::Get).await);
        assert_eq!(first.monitor().await, ExitReason::Evicted);
        let loaded = entries(accounts.call(1, store.clone(), Op::Get).await);
        assert_eq!(loaded, [5]);
        accounts.shutdown().await;
    });
}

#[test]
fn a_restart_after_a_panic_loads_what_was_written_and_not_what_was_not() {
    quiet_deliberate_panics();
    let server = server();
    let store = store(&server);
    run(60, async move {
        let accounts = registry(Options::default().restart(RestartPolicy::Always));
        entries(accounts.call(1, store.clone(), Op::Add(1)).await);
        entries(accounts.call(1, store.clone(), Op::Note(2)).await);
        let panicked = accounts.call(1, store.clone(), Op::Panic).await;
        assert!(matches!(panicked, Err(Error::HandlerPanicked(_))));
        let worker = accounts.lookup(&1).unwrap();
        let loaded = entries(worker.call(Op::Get).await);
        assert_eq!(loaded, [1], "the restart reloads the written state");
        accounts.shutdown().await;
    });
}

#[test]
fn a_shutdown_writes_what_changed_and_another_process_loads_it() {
    let server = server();
    let store = store(&server);
    // Another process's view: a backend of its own, its own connections.
    let other = common::store(&server);
    run(60, async move {
        let accounts = registry(Options::default());
        for id in 0..10 {
            entries(accounts.call(id, store.clone(), Op::Note(id)).await);
        }
        accounts.shutdown().await;
        let again = registry(Options::default());
        for id in 0..10 {
            let loaded = entries(again.call(id, other.clone(), Op::Get).await);
            assert_eq!(loaded, [id]);
        }
        again.shutdown().await;
    });
}

#[test]
fn a_second_writer_of_one_record_is_refused_by_version() {
    let server = server();
    let (first_store, second_store) = (store(&server), store(&server));
    run(60, async move {
        // Two nodes, each with its own backend, run a worker of id 7.
        let first = registry(Options::default());
        let second = registry(Options::default());
        entries(second.call(7, second_store.clone(), Op::Get).await);
        entries(first.call(7, first_store.clone(), Op::Add(1)).await);
        let refused = second
            .call(7, second_store.clone(), Op::Add(2))
            .await
            .unwrap();
        match refused {
            Err(StateError::Stale {
                record,
                expected: 0,
                found: 1,
            }) => assert_eq!(record, "account/7"),
            other => panic!("expected a stale write, got {other:?}"),
        }
        let held = Stored::<Ledger>::load(&second_store, "account", &7u64)
            .await
            .unwrap();
        assert_eq!(held.entries, [1], "the first writer's state stands");
        kill_all(&second).await;
        first.shutdown().await;
    });
}

/// Loads account 3, sets the handle's epoch, appends `entry` and writes it.
async fn write_at(
    store: &Store,
    epoch: u64,
    entry: u64,
) -> (Stored<Ledger>, Result<(), StateError>) {
    let mut owner = Stored::<Ledger>::load(store, "account", &3u64)
        .await
        .unwrap();
    owner.set_epoch(epoch);
    owner.entries.push(entry);
    let written = owner.write().await;
    (owner, written)
}

#[test]
fn a_write_at_an_epoch_older_than_the_last_accepted_is_refused() {
    let server = server();
    let store = store(&server);
    run(60, async move {
        write_at(&store, 1, 1).await.1.unwrap();
        write_at(&store, 2, 2).await.1.unwrap();
        // The old owner reloads (its version is current) and writes at its
        // old epoch: refused for the epoch alone.
        let (mut late, refused) = write_at(&store, 1, 3).await;
        match refused {
            Err(StateError::Fenced {
                record,
                epoch: 1,
                last: 2,
            }) => assert_eq!(record, "account/3"),
            other => panic!("expected a fenced write, got {other:?}"),
        }
        assert!(matches!(late.clear().await, Err(StateError::Fenced { .. })));
        let held = store.record("account", &3u64).await.unwrap().unwrap();
        assert_eq!((held.stamp.version, held.stamp.epoch), (2, 2));
        let held = Stored::<Ledger>::load(&store, "account", &3u64)
            .await
            .unwrap();
        assert_eq!(held.entries, [1, 2]);
    });
}

#[test]
fn a_cleared_record_starts_fresh_and_still_refuses_a_stale_writer() {
    let server = server();
    let store = store(&server);
    run(60, async move {
        let accounts = registry(Options::default());
        let mut stale = Stored::<Ledger>::load(&store, "account", &4u64)
            .await
            .unwrap();
        entries(accounts.call(4, store.clone(), Op::Add(1)).await);
        assert!(entries(accounts.call(4, store.clone(), Op::Clear).await).is_empty());
        accounts.stop(&4).await.unwrap();
        let held = store.record("account", &4u64).await.unwrap().unwrap();
        assert_eq!((held.stamp.version, held.state), (2, None));
        assert!(entries(accounts.call(4, store.clone(), Op::Get).await).is_empty());
        stale.entries.push(9);
        assert!(matches!(
            stale.write().await,
            Err(StateError::Stale { found: 2, .. })
        ));
        accounts.shutdown().await;
    });
}

#[test]
fn one_batch_checks_each_write_against_the_earlier_ones_and_refuses_only_the_bad() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let key = |id: u8| Key {
            kind: "account",
            id: vec![id],
        };
        let write = |id, expected, epoch, state: u8| Write {
            key: key(id),
            expected,
            epoch,
            state: Some(vec![state]),
        };
        let outcomes = postgres
            .commit(vec![
                write(1, 0, 0, 10),
                write(1, 0, 0, 11), // stale: the write before made it version 1
                write(1, 1, 2, 12),
                write(1, 2, 1, 13), // fenced: the write before was at epoch 2
                write(2, 0, 0, 20),
            ])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Err(Refusal::Stale { found: 1 }),
                Ok(()),
                Err(Refusal::Fenced { last: 2 }),
                Ok(())
            ]
        );
        let one = postgres.load(key(1)).await.unwrap().unwrap();
        assert_eq!(
            (one.stamp.version, one.stamp.epoch, one.state),
            (2, 2, Some(vec![12]))
        );
        let two = postgres.load(key(2)).await.unwrap().unwrap();
        assert_eq!((two.stamp.version, two.state), (1, Some(vec![20])));
        assert_eq!(postgres.load(key(3)).await.unwrap(), None);
    });
}

#[test]
fn two_stores_racing_for_new_records_never_both_win() {
    // Two nodes write version 1 of the same new records at once: for each
    // record exactly one write is accepted, the other is told it is stale.
    let server = server();
    let (a, b) = (backend(&server), backend(&server));
    run(120, async move {
        for round in 0..50u8 {
            let writes = |node: u8| {
                (0..20u8)
                    .map(|i| Write {
                        key: Key {
                            kind: "race",
                            id: vec![round, i],
                        },
                        expected: 0,
                        epoch: 0,
                        state: Some(vec![node]),
                    })
                    .collect::<Vec<_>>()
            };
            let (ra, rb) = futures::join!(a.commit(writes(1)), b.commit(writes(2)));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            for i in 0..20usize {
                let won = [ra[i].is_ok(), rb[i].is_ok()];
                assert_eq!(
                    won.iter().filter(|w| **w).count(),
                    1,
                    "round {round}, record {i}"
                );
                let held = a
                    .load(Key {
                        kind: "race",
                        id: vec![round, i as u8],
                    })
                    .await
                    .unwrap()
                    .unwrap();
                let winner = if won[0] { 1 } else { 2 };
                assert_eq!((held.stamp.version, held.state), (1, Some(vec![winner])));
            }
        }
    });
}

/// A backend that holds every commit at a gate the test opens, and records
/// the size of each batch it was handed.
#[derive(Clone)]
struct Gated {
    inner: Postgres,
    gate: Arc<futures::lock::Mutex<()>>,
    batches: Arc<parking_lot::Mutex<Vec<usize>>>,
}

impl Backend for Gated {
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
        self.inner.load(key)
    }
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
        self.batches.lock().push(writes.len());
        let (inner, gate) = (self.inner.clone(), Arc::clone(&self.gate));
        Box::pin(async move {
            let _open = gate.lock().await;
            inner.commit(writes).await
        })
    }
}

#[test]
fn writers_arriving_together_share_one_transaction_and_are_answered_after_it() {
    const WRITERS: u64 = 64;
    let server = server();
    let gate = Arc::new(futures::lock::Mutex::new(()));
    let batches = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let gated = Gated {
        inner: backend(&server),
        gate: Arc::clone(&gate),
        batches: Arc::clone(&batches),
    };
    let store = Store::new(gated, gen_registry::Executor::Bastion);
    let reader = common::store(&server);
    run(60, async move {
        let closed = gate.lock().await;
        let accounts = registry(Options::default());
        let answered = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..WRITERS)
            .map(|id| {
                let (accounts, store, answered) =
                    (accounts.clone(), store.clone(), Arc::clone(&answered));
                spawn(async move {
                    let reply = entries(accounts.call(id, store, Op::Add(id)).await);
                    answered.fetch_add(1, Ordering::SeqCst);
                    reply
                })
            })
            .collect();
        let calls = spawn(join_all(calls));
        wait_until(|| {
            let first = batches.lock().first().copied().unwrap_or(0);
            first + store.queued() == WRITERS as usize
        })
        .await;
        assert_eq!(
            answered.load(Ordering::SeqCst),
            0,
            "answered before its commit"
        );
        assert_eq!(store.transactions(), 0);
        drop(closed);
        for (id, reply) in calls.await.into_iter().enumerate() {
            assert_eq!(reply, [id as u64]);
        }
        let batches = batches.lock().clone();
        assert!(batches.len() <= 2, "64 writes in {batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), WRITERS as usize);
        assert_eq!(store.transactions(), batches.len() as u64);
        assert_eq!(store.writes(), WRITERS);
        accounts.shutdown().await;
        for id in 0..WRITERS {
            let held = Stored::<Ledger>::load(&reader, "account", &id)
                .await
                .unwrap();
            assert_eq!(held.entries, [id]);
        }
    });
}

/// A row of the state table as the server holds it, with its row version.
type RawRow = (String, Vec<u8>, i64, i64, Option<Vec<u8>>, String);

/// The ledger's earlier shape, before its type changed.
#[derive(Default, Debug, PartialEq, Serialize, Deserialize)]
struct OldLedger {
    owner: String,
    entries: Vec<u64>,
    closed: bool,
}

#[test]
fn a_record_that_no_longer_decodes_fails_the_start_and_its_row_is_left_byte_for_byte() {
    let server = server();
    let store = store(&server);
    let runtime = tokio_runtime();
    let handle = runtime.handle().clone();
    run(60, async move {
        let client = client(&server, &handle).await;
        let row = "SELECT kind, id, version, epoch, state, xmin::text FROM gen_registry_state";
        let raw = async |client: &tokio_postgres::Client| -> Vec<RawRow> {
            let rows = client.query(row, &[]).await.unwrap();
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                .collect()
        };
        let mut old = Stored::<OldLedger>::load(&store, "account", &9u64)
            .await
            .unwrap();
        old.owner = "ada".into();
        old.entries = vec![1, 2];
        old.write().await.unwrap();
        let before = raw(&client).await;
        assert_eq!(before.len(), 1);

        let accounts = registry(Options::default());
        match accounts.call(9, store.clone(), Op::Get).await {
            Err(Error::Init(e @ StateError::Decode { .. })) => {
                let text = e.to_string();
                assert!(text.contains("account/9"), "{text}");
                assert!(text.contains("version 1"), "{text}");
                assert!(text.contains("left untouched"), "{text}");
            }
            Err(other) => panic!("expected a decode error, got {other}"),
            Ok(_) => panic!("a record of another type was taken as a ledger"),
        }
        assert!(accounts.lookup(&9).is_err(), "nothing is registered");
        assert_eq!(accounts.count(), 0);
        // Same bytes, and the same row version (xmin): never rewritten.
        assert_eq!(raw(&client).await, before);
        accounts.shutdown().await;
        drop(server);
    });
}

#[test]
fn an_oversized_state_is_a_clear_error_and_nothing_is_written() {
    let server = server();
    let store = store(&server).with_max_state_bytes(256);
    run(60, async move {
        let accounts = registry(Options::default());
        entries(accounts.call(5, store.clone(), Op::Add(1)).await);
        match accounts
            .call(5, store.clone(), Op::Fill(1000))
            .await
            .unwrap()
        {
            Err(e @ StateError::TooLarge { limit: 256, .. }) => {
                assert!(e.to_string().contains("account/5"), "{e}");
            }
            other => panic!("expected a too-large error, got {other:?}"),
        }
        let held = Stored::<Ledger>::load(&store, "account", &5u64)
            .await
            .unwrap();
        assert_eq!((held.entries.as_slice(), held.version()), (&[1][..], 1));
        assert_eq!(store.writes(), 1);
        kill_all(&accounts).await;
        accounts.shutdown().await;
    });
}

/// The environment variable that makes [`kill_nine_child`] the child of
/// [`every_acknowledged_write_survives_a_kill_9_of_the_writer`]: the
/// server's URL.
const KILL_CHILD: &str = "GEN_REGISTRY_PG_KILL_CHILD";

/// The child: 64 workers append to their ledgers in a loop, each append
/// written before its reply, and print `ack ID N` for each reply, until
/// the parent kills the process.
#[test]
#[ignore = "the child process of every_acknowledged_write_survives_a_kill_9_of_the_writer"]
fn kill_nine_child() {
    let Ok(url) = std::env::var(KILL_CHILD) else {
        return;
    };
    let store = Store::new(
        Postgres::new(&url).unwrap(),
        gen_registry::Executor::Bastion,
    );
    let accounts = GenRegistry::<Account>::new(Options::default()).unwrap();
    let writers = (0..64u64).map(|id| {
        let (accounts, store) = (accounts.clone(), store.clone());
        spawn(async move {
            for n in 0.. {
                entries(accounts.call(id, store.clone(), Op::Add(n)).await);
                println!("ack {id} {n}");
            }
        })
    });
    futures::executor::block_on(join_all(writers));
}

/// Reads `ack ID N` lines until `count` were read (or the deadline),
/// keeping, per id, one more than the highest N acknowledged.
fn read_acks(
    acks: &std::sync::mpsc::Receiver<(u64, u64)>,
    acknowledged: &mut std::collections::HashMap<u64, u64>,
    until: impl Fn(usize) -> bool,
    deadline: std::time::Instant,
) -> usize {
    let mut count = 0;
    while !until(count) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match acks.recv_timeout(left) {
            Ok((id, n)) => {
                let last = acknowledged.entry(id).or_default();
                *last = (*last).max(n + 1);
                count += 1;
            }
            Err(_) => break,
        }
    }
    count
}

/// How many of `acknowledged` (per id: how many appends were acknowledged)
/// are missing from `store`.
async fn lost(store: &Store, acknowledged: &std::collections::HashMap<u64, u64>) -> usize {
    let mut lost = 0;
    for (id, written) in acknowledged {
        let held = Stored::<Ledger>::load(store, "account", id).await.unwrap();
        let expected: Vec<u64> = (0..*written).collect();
        if held.entries.len() < expected.len() || held.entries[..expected.len()] != expected {
            lost += 1;
        }
    }
    lost
}

#[test]
fn every_acknowledged_write_survives_a_kill_9_of_the_writer() {
    use std::io::BufRead;
    const ACKS: usize = 2_000;
    let server = server();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["kill_nine_child", "--exact", "--ignored", "--nocapture"])
        .env(KILL_CHILD, server.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the child process");
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            if words.next() == Some("ack") {
                let id: u64 = words.next().unwrap().parse().unwrap();
                let n: u64 = words.next().unwrap().parse().unwrap();
                if lines.send((id, n)).is_err() {
                    break;
                }
            }
        }
    });
    let mut acknowledged = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut count = read_acks(&acks, &mut acknowledged, |n| n >= ACKS, deadline);
    child.kill().expect("SIGKILL"); // kill -9, in the middle of the writes
    child.wait().unwrap();
    assert!(
        count >= ACKS,
        "the child acknowledged only {count} writes in 120 s"
    );
    let now = std::time::Instant::now();
    count += read_acks(&acks, &mut acknowledged, |_| false, now);
    let store = store(&server);
    let lost = run(60, {
        let acknowledged = acknowledged.clone();
        async move { lost(&store, &acknowledged).await }
    });
    println!(
        "kill -9 of the writer: {count} writes acknowledged by {} workers, {lost} lost",
        acknowledged.len()
    );
    assert_eq!(lost, 0);
    assert!(count >= 1_000);
}

#[test]
fn a_crash_of_the_server_amid_group_commits_fails_writers_and_keeps_every_acknowledged_write() {
    const WRITERS: u64 = 64;
    let server = Arc::new(server());
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let logged = Logged {
        inner: backend(&server),
        log: Arc::clone(&log),
        in_flight: Arc::clone(&in_flight),
    };
    let store = Store::new(logged.clone(), gen_registry::Executor::Bastion);
    let acked = Arc::new(parking_lot::Mutex::new(
        std::collections::HashMap::<u64, u64>::new(),
    ));
    let failures = Arc::new(AtomicUsize::new(0));
    let accounts = registry(Options::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 64 writers append in a loop: an acknowledged append is recorded; a
    // failed one is counted and its worker ended (its change may or may not
    // have been committed), and the writer reads what is there before it
    // goes on. They run on a tokio runtime, to pause after a failure.
    let runtime = tokio_runtime();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (accounts, store, acked, failures, stop) = (
                accounts.clone(),
                store.clone(),
                Arc::clone(&acked),
                Arc::clone(&failures),
                Arc::clone(&stop),
            );
            runtime.spawn(async move {
                let mut next = None;
                while !stop.load(Ordering::SeqCst) {
                    let op = match next {
                        Some(n) => Op::Add(n),
                        None => Op::Get,
                    };
                    match accounts.call(id, store.clone(), op).await {
                        Ok(Ok(entries)) => {
                            if next.is_some() {
                                acked.lock().insert(id, entries.len() as u64);
                            }
                            next = Some(entries.len() as u64);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            next = None;
                            if let Ok(worker) = accounts.lookup(&id) {
                                let down = worker.monitor();
                                worker.kill();
                                down.await;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let writers = std::thread::spawn(move || {
        runtime.block_on(join_all(writers));
    });
    let count = || acked.lock().values().sum::<u64>();
    // Three crashes, each while a batch is being committed.
    let mut crashes = Vec::new();
    for crash in 1..=3 {
        let target = crash * 400;
        wait_for(60, "appends acknowledged", || count() >= target);
        let failed = failures.load(Ordering::SeqCst);
        wait_for(60, "a batch in flight", || {
            in_flight.load(Ordering::SeqCst) > 0
        });
        server.kill().unwrap();
        crashes.push(count());
        wait_for(60, "a writer told of the crash", || {
            failures.load(Ordering::SeqCst) > failed
        });
        server.restart().unwrap();
    }
    wait_for(60, "appends after the last restart", || count() >= 1_400);
    stop.store(true, Ordering::SeqCst);
    writers.join().unwrap();
    let acknowledged = acked.lock().clone();
    let total = count();
    let reader = common::store(&server);
    let log = log.lock().clone();
    let failed_batches = log.iter().filter(|b| !b.1).count();
    let (lost, torn, half) = run(60, async move {
        let lost = lost(&reader, &acknowledged).await;
        // Every ledger is 0, 1, 2, ... with no gap, and its version counts
        // its writes (one append per write).
        let mut torn = 0;
        for id in 0..WRITERS {
            let held = Stored::<Ledger>::load(&reader, "account", &id)
                .await
                .unwrap();
            let in_order = held.entries.iter().enumerate().all(|(i, n)| *n == i as u64);
            if !in_order || held.version() != held.entries.len() as u64 {
                torn += 1;
            }
        }
        (lost, torn, half_applied(&log, &logged.inner).await)
    });
    println!(
        "server killed 3 times amid group commits: {total} appends acknowledged (at the \
         crashes: {crashes:?}), {} calls failed, {lost} lost, {torn} ledgers torn, {half} of \
         {failed_batches} failed batches half applied",
        failures.load(Ordering::SeqCst),
    );
    accounts_shutdown(accounts);
    assert_eq!((lost, torn, half), (0, 0, 0));
    assert!(failures.load(Ordering::SeqCst) >= 1);
}

/// A batch as [`Logged`] keeps it: each write's record and expected
/// version, and whether the batch committed.
type Batch = (Vec<(Key, u64)>, bool);

/// A backend that logs every batch it commits (each write's record and
/// expected version, and whether the batch committed) and counts the
/// batches being committed.
#[derive(Clone)]
struct Logged {
    inner: Postgres,
    log: Arc<parking_lot::Mutex<Vec<Batch>>>,
    in_flight: Arc<AtomicUsize>,
}

impl Backend for Logged {
    fn load(&self, key: Key) -> BoxFuture<Result<Option<Record>, String>> {
        self.inner.load(key)
    }
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<Result<Vec<Result<(), Refusal>>, String>> {
        let batch: Vec<(Key, u64)> = writes.iter().map(|w| (w.key.clone(), w.expected)).collect();
        let (inner, log, in_flight) = (
            self.inner.clone(),
            Arc::clone(&self.log),
            Arc::clone(&self.in_flight),
        );
        Box::pin(async move {
            in_flight.fetch_add(1, Ordering::SeqCst);
            let outcome = inner.commit(writes).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            log.lock().push((batch, outcome.is_ok()));
            outcome
        })
    }
}

/// How many failed batches of `log` were applied in part. Whether a failed
/// write was applied shows in the next write of its record (a writer told
/// of a failure reloads before it writes again): it expects the failed
/// write's version if it was, the one before if not; or, with no write
/// after it, in the record's final version.
async fn half_applied(log: &[Batch], store: &Postgres) -> usize {
    let mut half = 0;
    for (i, (batch, committed)) in log.iter().enumerate() {
        if *committed {
            continue;
        }
        let mut applied = Vec::new();
        for (key, expected) in batch {
            let next = log[i + 1..]
                .iter()
                .flat_map(|(b, _)| b)
                .find(|(k, _)| k == key)
                .map(|(_, e)| *e);
            let version = match next {
                Some(e) => e,
                None => store
                    .load(key.clone())
                    .await
                    .unwrap()
                    .map_or(0, |r| r.stamp.version),
            };
            applied.push(version > *expected);
        }
        if applied.contains(&true) && applied.contains(&false) {
            half += 1;
        }
    }
    half
}

fn accounts_shutdown(accounts: GenRegistry<Account>) {
    run(60, async move {
        kill_all(&accounts).await;
        accounts.shutdown().await;
    });
}

/// Calls account 1 through a store whose server is `url`, with a start
/// timeout longer than the store's connect timeout: the call fails with the
/// store's error, and no worker is left.
fn a_call_through(url: String) -> String {
    let settings = Settings::default().connect_timeout(Duration::from_millis(500));
    let postgres = Postgres::with_settings(&url, settings).unwrap();
    let store = Store::new(postgres, gen_registry::Executor::Bastion);
    run(30, async move {
        let accounts = registry(Options::default().start_timeout(Duration::from_secs(10)));
        let failed = accounts.call(1, store.clone(), Op::Get).await;
        let text = match failed {
            Err(Error::Init(e @ StateError::Store { .. })) => e.to_string(),
            Err(other) => panic!("expected the store's error, got {other}"),
            Ok(_) => panic!("a call through an unreachable store succeeded"),
        };
        assert_eq!(accounts.count(), 0, "no half-started worker");
        assert!(accounts.lookup(&1).is_err());
        accounts.shutdown().await;
        text
    })
}

#[test]
fn a_store_nobody_listens_for_fails_the_call_and_leaves_no_worker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = a_call_through(format!("postgresql://postgres@127.0.0.1:{port}/postgres"));
    assert!(
        text.contains(&format!("127.0.0.1:{port}/postgres")),
        "{text}"
    );
    assert!(text.contains("loading a record"), "{text}");
    assert!(text.contains("connecting"), "{text}");
}

#[test]
fn a_store_that_accepts_but_never_answers_fails_the_call_within_the_connect_timeout() {
    // A listener that takes connections and says nothing: no handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let text = a_call_through(format!("postgresql://postgres@127.0.0.1:{port}/postgres"));
    assert!(text.contains("no answer within"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}/postgres")),
        "{text}"
    );
    drop(silent);
}
