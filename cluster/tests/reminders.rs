//! Reminders in cluster mode: `cluster-node` processes on 127.0.0.x sharing
//! a real PostgreSQL (started by the test from Debian's package) and an
//! etcd of the test's own, each firing the reminders of the shards it
//! serves. Every delivery is logged with the node, the shard's epoch and
//! whether the worker's node held the shard then.

mod common;

use common::*;
use gen_registry_postgres::testing::Server;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One delivery of a reminder, from the `--fired` log.
#[derive(Debug)]
struct Fired {
    id: u64,
    due_ms: u64,
    node: String,
    epoch: i64,
    held: bool,
}

fn fired(path: &Path) -> Vec<Fired> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["fired", id, due_ms, node, epoch, held, _] => Fired {
                    id: id.parse().expect("an id"),
                    due_ms: due_ms.parse().expect("a due time"),
                    node: node.to_string(),
                    epoch: epoch.parse().expect("an epoch"),
                    held: held == "1",
                },
                _ => panic!("unreadable line {line:?}"),
            },
        )
        .collect()
}

/// Deliveries by id.
fn by_id(all: &[Fired]) -> BTreeMap<u64, Vec<&Fired>> {
    let mut map: BTreeMap<u64, Vec<&Fired>> = BTreeMap::new();
    for f in all {
        map.entry(f.id).or_default().push(f);
    }
    map
}

struct Setup {
    pg: Server,
    etcd: Etcd,
    log: PathBuf,
    fired: PathBuf,
}

impl Setup {
    fn start() -> Setup {
        let pg = Server::start().unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
        let etcd = Etcd::start();
        let log = log_path(&etcd.dir);
        let fired = etcd.dir.path().join("fired.log");
        Setup {
            pg,
            etcd,
            log,
            fired,
        }
    }

    /// A node firing reminders with a scan every 100 ms.
    fn node(&self, name: &str, host: u8) -> Node {
        self.node_with(name, host, &[])
    }

    fn node_with(&self, name: &str, host: u8, more: &[&str]) -> Node {
        let fired = self.fired.to_string_lossy().into_owned();
        let url = self.pg.url();
        let extra = [
            "--pg",
            &url,
            "--shards",
            "16",
            "--remind-ms",
            "100",
            "--fired",
            &fired,
        ];
        let extra: Vec<&str> = extra.iter().chain(more).copied().collect();
        Node::start_with(&self.etcd, name, host, &self.log, &extra)
    }
}

/// `pending FROM COUNT` on `node`.
fn pending(node: &mut Node, from: u64, count: u64) -> usize {
    let line = node.ask(
        &format!("pending {from} {count}"),
        "pending ",
        Duration::from_secs(30),
    );
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// `reminded` on `node`: the marks of its deliveries the store refused.
fn refused(node: &mut Node) -> u64 {
    let line = node.ask("reminded", "reminded ", Duration::from_secs(10));
    line.split_whitespace()
        .nth(6)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

const IDS: u64 = 200;

#[test]
fn every_reminder_fires_on_its_shards_owner_while_nodes_join_and_leave() {
    let _turn = one_at_a_time();
    let setup = Setup::start();
    let mut nodes = vec![setup.node("a", 2), setup.node("b", 3)];
    settled(&mut nodes);
    // Due from 0.5 s to 5.5 s from now, one every 25 ms. c joins once 20
    // have fired, and b leaves once 60 have: both while they come due.
    let answer = nodes[0].ask(
        &format!("remind 0 {IDS} 500 25"),
        "remind ",
        Duration::from_secs(60),
    );
    assert!(
        answer.starts_with(&format!("remind ok {IDS} err 0")),
        "{answer}"
    );
    let fired_ids = || by_id(&fired(&setup.fired)).len();
    wait_until(Duration::from_secs(30), "20 reminders to fire", || {
        fired_ids() >= 20
    });
    nodes.push(setup.node("c", 4));
    settled(&mut nodes);
    let at_join = fired_ids();
    wait_until(Duration::from_secs(30), "60 reminders to fire", || {
        fired_ids() >= 60
    });
    nodes[1].ask("leave", "left", Duration::from_secs(20));
    let at_leave = fired_ids();
    nodes[1].wait_exit(Duration::from_secs(10));
    let mut nodes = vec![nodes.remove(0), nodes.remove(1)];
    settled(&mut nodes);
    wait_until(Duration::from_secs(60), "every reminder to fire", || {
        by_id(&fired(&setup.fired)).len() == IDS as usize
    });
    wait_until(
        Duration::from_secs(30),
        "every reminder marked fired",
        || pending(&mut nodes[0], 0, IDS) == 0,
    );
    let all = fired(&setup.fired);
    let deliveries = by_id(&all);
    assert_eq!(
        deliveries.keys().copied().collect::<Vec<_>>(),
        (0..IDS).collect::<Vec<_>>(),
        "every id's reminder fired"
    );
    for f in &all {
        assert!(
            f.held,
            "id {} fired on {} at epoch {}, which it no longer held",
            f.id, f.node, f.epoch
        );
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &all {
        *per_node.entry(f.node.as_str()).or_default() += 1;
    }
    let twice = deliveries.values().filter(|list| list.len() > 1).count();
    println!(
        "{IDS} reminders ({at_join} had fired once c had joined, {at_leave} once b had left): \
         {} deliveries, by node {per_node:?}; {twice} delivered more than once",
        all.len()
    );
    for list in deliveries.values() {
        let due: std::collections::BTreeSet<u64> = list.iter().map(|f| f.due_ms).collect();
        assert_eq!(due.len(), 1, "one firing per reminder: {list:?}");
    }
    let found = overlaps(&setup.log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_node_paused_past_its_lease_is_refused_when_it_marks_a_reminder_fired_on_waking() {
    let _turn = one_at_a_time();
    let setup = Setup::start();
    // Handling a reminder takes 2 s: a paused node is caught mid-delivery.
    let slow = ["--remind-delay-ms", "2000"];
    let mut nodes: Vec<Node> = [("a", 2), ("b", 3), ("c", 4)]
        .into_iter()
        .map(|(name, host)| setup.node_with(name, host, &slow))
        .collect();
    settled(&mut nodes);
    let answer = nodes[0].ask("remind 0 48 0 0 500", "remind ", Duration::from_secs(60));
    assert!(answer.starts_with("remind ok 48 err 0"), "{answer}");
    // c pauses while it delivers a reminder it has not marked yet.
    let mut on_c = None;
    wait_until(Duration::from_secs(30), "c to deliver a reminder", || {
        on_c = fired(&setup.fired)
            .into_iter()
            .find(|f| f.node == "c" && f.held);
        on_c.is_some()
    });
    nodes[2].signal("STOP");
    let on_c = on_c.expect("a delivery on c");
    // Its shard's new owner fires that reminder, marks it at a later epoch,
    // and fires it again at its next period.
    wait_until(
        Duration::from_secs(30),
        "the new owner to fire it twice",
        || {
            let list = fired(&setup.fired);
            let again: std::collections::BTreeSet<u64> = list
                .iter()
                .filter(|f| f.id == on_c.id && f.node != "c" && f.epoch > on_c.epoch && f.held)
                .map(|f| f.due_ms)
                .collect();
            again.len() >= 2
        },
    );
    nodes[2].signal("CONT");
    // On waking, c's delivery ends and its mark, at c's old epoch, is
    // refused by the store.
    wait_until(
        Duration::from_secs(30),
        "c's late mark to be refused",
        || refused(&mut nodes[2]) >= 1,
    );
    let late: Vec<Fired> = fired(&setup.fired)
        .into_iter()
        .filter(|f| !f.held)
        .collect();
    for f in &late {
        assert_eq!(
            f.node, "c",
            "only the paused node delivered without its shard: {f:?}"
        );
    }
    println!(
        "c (epoch {}) was paused delivering id {}'s reminder; {} marks of c refused, {} deliveries by c without its shard",
        on_c.epoch,
        on_c.id,
        refused(&mut nodes[2]),
        late.len()
    );
    let found = overlaps(&setup.log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
