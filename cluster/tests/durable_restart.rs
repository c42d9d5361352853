//! A rolling restart of nodes keeping their workers' totals in a real
//! PostgreSQL: clients on every node keep `write ID 1` requests going (each
//! answered only once its total is written to the store) while each node in
//! turn leaves gracefully, starts again under its name and joins. Every
//! write a client saw acknowledged must be in the store afterwards (read
//! directly once every node was killed, so that no flush can make up for a
//! write that was answered before it was made), in the running workers, and
//! in what each worker's next incarnation loads. A write whose answer was
//! lost, or that failed after its worker had added it, may or may not be in
//! a total: those are counted apart, as the only slack above it.

mod common;

use common::*;
use gen_registry_postgres::testing::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const IDS: u64 = 48;
/// Writes each client keeps outstanding, to distinct ids.
const IN_FLIGHT: usize = 8;
/// Writes acknowledged in each round after the node is back, while it takes
/// its shards again, before the round's load stops (bounded by
/// [`ROUND_DEADLINE`]).
const PER_ROUND: u64 = 1_000;
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// Longer than any request may take (the call timeout is 5 s): an answer
/// that does not come within it is a request that hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// Nodes a, b and c on 127.0.0.2 to 4, settled.
fn three_nodes(etcd: &Etcd, log: &Path, pg: &Server) -> Vec<Node> {
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .zip(2..)
        .map(|(name, host)| Node::on_postgres(etcd, name, host, log, pg))
        .collect();
    settled(&mut nodes);
    nodes
}

/// What one client (the writes sent through one node) saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged adds, by id.
    acked: BTreeMap<u64, u64>,
    /// Adds whose outcome is unknown (no answer, a timeout, a refused
    /// store write after the worker added in memory), by id: each may or
    /// may not be in the total.
    ambiguous: BTreeMap<u64, u64>,
    /// Writes that failed before any worker applied them.
    not_applied: u64,
    /// One line of each kind of failure, to print.
    failures: BTreeSet<String>,
}

impl Tally {
    fn acked(&self) -> u64 {
        self.acked.values().sum()
    }

    fn ambiguous(&self) -> u64 {
        self.ambiguous.values().sum()
    }

    fn failed(&self) -> u64 {
        self.ambiguous() + self.not_applied
    }

    /// Counts one answer line of `write`; the id it answers.
    fn answer(&mut self, line: &str) -> Option<u64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["write", id, outcome, rest @ ..] = words.as_slice() else {
            return None;
        };
        let id: u64 = id.parse().ok()?;
        let message = rest.join(" ");
        match *outcome {
            "ok" => *self.acked.entry(id).or_default() += 1,
            // The worker refused before adding: its node no longer holds
            // the shard.
            "refused" if message == "fenced" => self.not_applied += 1,
            // The request reached no worker (the node said so), or this
            // node had left.
            "err"
                if message.contains("it was not handled")
                    || message.contains("has left the cluster") =>
            {
                self.not_applied += 1
            }
            _ => *self.ambiguous.entry(id).or_default() += 1,
        }
        if *outcome != "ok" {
            // The kind of failure, without the id.
            self.failures.insert(format!("{outcome} {message}"));
        }
        Some(id)
    }

    fn merge(&mut self, other: Tally) {
        for (id, n) in other.acked {
            *self.acked.entry(id).or_default() += n;
        }
        for (id, n) in other.ambiguous {
            *self.ambiguous.entry(id).or_default() += n;
        }
        self.not_applied += other.not_applied;
        self.failures.extend(other.failures);
    }
}

/// A client writing through one node, with up to [`IN_FLIGHT`] writes
/// outstanding, each to an id none of its other outstanding writes has.
struct Client {
    next: u64,
    in_flight: BTreeSet<u64>,
    tally: Tally,
}

impl Client {
    fn new(first: u64) -> Client {
        Client {
            next: first,
            in_flight: BTreeSet::new(),
            tally: Tally::default(),
        }
    }

    /// Sends writes until [`IN_FLIGHT`] are outstanding.
    fn fill(&mut self, node: &mut Node) {
        while self.in_flight.len() < IN_FLIGHT {
            let id = self.next % IDS;
            self.next += 1;
            if self.in_flight.insert(id) {
                node.send(&format!("write {id} 1"));
            }
        }
    }

    /// Reads one line; false when none came within [`ANSWER_WITHIN`] or the
    /// node's output closed.
    fn read(&mut self, node: &mut Node, acked: &AtomicU64) -> bool {
        let Some(line) = node.next_line(ANSWER_WITHIN) else {
            return false;
        };
        let before = self.tally.acked();
        if let Some(id) = self.tally.answer(&line) {
            assert!(
                self.in_flight.remove(&id),
                "{}: an answer to no outstanding write: {line}",
                node.name
            );
        }
        acked.fetch_add(self.tally.acked() - before, Ordering::Relaxed);
        true
    }

    /// Keeps writes outstanding through `node` until `stop` is set, then
    /// reads the answers of those still outstanding.
    fn write_until(&mut self, node: &mut Node, stop: &AtomicBool, acked: &AtomicU64) {
        while !stop.load(Ordering::Acquire) {
            self.fill(node);
            assert!(
                self.read(node, acked),
                "{}: no answer to a write within {ANSWER_WITHIN:?}",
                node.name
            );
        }
        while !self.in_flight.is_empty() {
            assert!(
                self.read(node, acked),
                "{}: no answer to a write within {ANSWER_WITHIN:?}",
                node.name
            );
        }
    }

    /// Sends `leave` with writes outstanding, and reads every line until the
    /// process has exited: the writes it never answered are ambiguous.
    fn leave(&mut self, node: &mut Node, acked: &AtomicU64) {
        self.fill(node);
        node.send("leave");
        while self.read(node, acked) {}
        node.wait_exit(Duration::from_secs(10));
        for id in std::mem::take(&mut self.in_flight) {
            *self.tally.ambiguous.entry(id).or_default() += 1;
            self.tally
                .failures
                .insert("no answer: the node exited".into());
        }
    }
}

/// Sets its flag when dropped, also when a panic unwinds: the threads
/// watching it end, and the scope that waits for them can end too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Each id's total as the store holds it, read with a store of the test's
/// own on the same database.
fn stored_totals(pg: &Server) -> BTreeMap<u64, u64> {
    let runtime = runtime();
    runtime.block_on(async {
        let postgres = gen_registry_postgres::Postgres::new(&pg.url()).expect("a store");
        postgres.connect().await.expect("PostgreSQL answers");
        let store = gen_registry::state::Store::new(
            postgres,
            gen_registry::Executor::Tokio(tokio::runtime::Handle::current()),
        );
        let mut totals = BTreeMap::new();
        for id in 0..IDS {
            let record = store.record("probe", &id).await.expect("the record reads");
            let total = match record.and_then(|r| r.state) {
                Some(bytes) => postcard::from_bytes::<u64>(&bytes).expect("a total"),
                None => 0,
            };
            totals.insert(id, total);
        }
        totals
    })
}

/// Checks `totals` against what the clients saw: every acknowledged add is
/// in each id's total, and nothing beyond the ambiguous ones. The number of
/// acknowledged adds missing.
fn check(what: &str, totals: &BTreeMap<u64, u64>, tally: &Tally) -> u64 {
    let mut lost = 0;
    for id in 0..IDS {
        let total = totals[&id];
        let acked = tally.acked.get(&id).copied().unwrap_or_default();
        let ambiguous = tally.ambiguous.get(&id).copied().unwrap_or_default();
        if total < acked {
            println!("{what}: id {id} has {total}, {acked} adds were acknowledged");
            lost += acked - total;
        }
        assert!(
            total <= acked + ambiguous,
            "{what}: id {id} has {total}, more than its {acked} acknowledged and {ambiguous} ambiguous adds"
        );
    }
    lost
}

/// Each id's total, read with `call ID 0` through the nodes in turn (until
/// a call succeeds: bounded).
fn totals_via(nodes: &mut [Node]) -> BTreeMap<u64, u64> {
    let mut totals = BTreeMap::new();
    for id in 0..IDS {
        let via = &mut nodes[(id % 3) as usize];
        let mut total = None;
        wait_until(Duration::from_secs(30), "a call to succeed", || {
            total = via.call(id, 0).ok();
            total.is_some()
        });
        totals.insert(id, total.expect("a total"));
    }
    totals
}

#[test]
fn a_rolling_restart_on_postgres_keeps_every_acknowledged_write() {
    let _turn = one_at_a_time();
    let pg = Server::start().unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log, &pg);
    let mut clients: Vec<Client> = (0..3).map(|n| Client::new(n * IDS / 3)).collect();
    for restarting in 0..nodes.len() {
        let (stop, back) = (AtomicBool::new(false), AtomicBool::new(false));
        let acked = AtomicU64::new(0);
        let (name, host) = (nodes[restarting].name.clone(), restarting as u8 + 2);
        std::thread::scope(|scope| {
            // However this round ends, the clients stop.
            let _stop = StopOnDrop(&stop);
            for (n, (node, client)) in nodes.iter_mut().zip(clients.iter_mut()).enumerate() {
                let (stop, back, acked) = (&stop, &back, &acked);
                let (etcd, log, pg, name) = (&etcd, &log, &pg, &name);
                scope.spawn(move || {
                    if n == restarting {
                        // Writes through the node until some were answered,
                        // then it leaves with writes outstanding, and the
                        // client goes on through its next process.
                        let until = acked.load(Ordering::Relaxed) + PER_ROUND / 4;
                        let deadline = Instant::now() + ROUND_DEADLINE;
                        while acked.load(Ordering::Relaxed) < until && Instant::now() < deadline {
                            client.fill(node);
                            assert!(client.read(node, acked), "{name}: a write went unanswered");
                        }
                        client.leave(node, acked);
                        *node = Node::on_postgres(etcd, name, host, log, pg);
                        back.store(true, Ordering::Release);
                    }
                    client.write_until(node, stop, acked);
                });
            }
            // The load goes on until the node is back, and then through
            // the moves of shards to it (for its writes, or a deadline).
            wait_until(ROUND_DEADLINE * 2, "the node to restart", || {
                back.load(Ordering::Acquire)
            });
            let (until, deadline) = (
                acked.load(Ordering::Relaxed) + PER_ROUND,
                Instant::now() + ROUND_DEADLINE,
            );
            wait_until(ROUND_DEADLINE * 2, "the round's writes", || {
                acked.load(Ordering::Relaxed) >= until || Instant::now() > deadline
            });
        });
        println!(
            "restarting {name}: {} writes acknowledged",
            acked.load(Ordering::Relaxed)
        );
        settled(&mut nodes);
    }
    let mut tally = Tally::default();
    for client in clients {
        tally.merge(client.tally);
    }
    // What each id's worker has now: loaded by its incarnation on the
    // restarted nodes (or kept by the one running there since).
    let running = totals_via(&mut nodes);
    // Then every node is killed, without a flush: the store holds only what
    // was written while the load ran.
    for node in nodes.iter_mut() {
        node.signal("KILL");
        node.wait_exit(Duration::from_secs(10));
    }
    let stored = stored_totals(&pg);
    // Started again, the nodes' workers are new incarnations: each loads
    // what the store holds.
    let mut nodes = three_nodes(&etcd, &log, &pg);
    let next = totals_via(&mut nodes);
    let lost_running = check("the running workers", &running, &tally);
    let lost_stored = check("the store", &stored, &tally);
    let lost_next = check("the next incarnations", &next, &tally);
    println!(
        "rolling restart on PostgreSQL: {} writes acknowledged, {} failed ({} ambiguous, {} not applied), \
         {IDS} ids checked; acknowledged writes lost: {lost_stored} in the store, \
         {lost_running} in the running workers, {lost_next} in their next incarnations",
        tally.acked(),
        tally.failed(),
        tally.ambiguous(),
        tally.not_applied
    );
    for failure in &tally.failures {
        println!("  a failed write: {failure}");
    }
    assert_eq!(lost_stored, 0, "acknowledged writes missing from the store");
    assert_eq!(
        lost_running, 0,
        "acknowledged writes missing from the running workers"
    );
    assert_eq!(
        lost_next, 0,
        "acknowledged writes missing from the next incarnations"
    );
    assert!(
        tally.acked() >= 1_000,
        "only {} writes were acknowledged: too few for the check to mean much",
        tally.acked()
    );
    // The restarts moved workers under the load: each moved worker's
    // incarnation flushed its total on the way out.
    let handed_over = incarnations(&log)
        .values()
        .flatten()
        .filter(|i| i.flush.as_deref() == Some("ok"))
        .count();
    println!("workers handed over through the store: {handed_over}");
    assert!(handed_over > 0, "no worker moved during the restarts");
    let found = overlaps(&log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
