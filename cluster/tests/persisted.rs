//! Persisted state in cluster mode: `cluster-node` processes on 127.0.0.x
//! sharing a real PostgreSQL (started by the test from Debian's package)
//! and an etcd of the test's own. A worker's total is loaded with its
//! shard's epoch, changed by calls without being written, and flushed in
//! `terminate`: a shard that moves hands it over through the store, and a
//! node paused past its lease cannot overwrite what the new owner wrote.

mod common;

use common::*;
use gen_registry_postgres::testing::Server;
use std::path::{Path, PathBuf};
use std::time::Duration;

const IDS: u64 = 24;

fn start_postgres() -> Server {
    Server::start().unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"))
}

/// A PostgreSQL, an etcd, and nodes on 127.0.0.2 on sharing them, settled;
/// the incarnation log's path.
fn cluster(names: &[&str]) -> (Server, Etcd, PathBuf, Vec<Node>) {
    let pg = start_postgres();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes: Vec<Node> = (2..)
        .zip(names)
        .map(|(host, name)| Node::on_postgres(&etcd, name, host, &log, &pg))
        .collect();
    settled(&mut nodes);
    (pg, etcd, log, nodes)
}

/// Calls `id` from `node` until a call succeeds (bounded): while a shard
/// has no owner, calls time out.
fn call_until_ok(node: &mut Node, id: u64, add: u64) -> u64 {
    let mut total = None;
    wait_until(Duration::from_secs(30), "a call to succeed", || {
        total = node.call(id, add).ok();
        total.is_some()
    });
    total.expect("a total")
}

#[test]
fn a_moving_shard_hands_its_workers_state_to_the_new_owner_through_postgres() {
    let _turn = one_at_a_time();
    let (pg, etcd, log, mut nodes) = cluster(&["a", "b"]);
    // Three calls per id from both nodes: totals only in the workers'
    // memory, never written by a call.
    for round in 0..3 {
        for id in 0..IDS {
            let via = &mut nodes[((id + round) % 2) as usize];
            assert_eq!(call_until_ok(via, id, 1), round + 1, "id {id}");
        }
    }
    // c joins and takes shards from a and b; then b leaves and hands its
    // shards to a and c. Each move ends the old owner's workers, whose
    // `terminate` flushes; the new owner's workers load what was flushed.
    nodes.push(Node::on_postgres(&etcd, "c", 4, &log, &pg));
    settled(&mut nodes);
    nodes[1].ask("leave", "left", Duration::from_secs(20));
    nodes[1].wait_exit(Duration::from_secs(10));
    let mut nodes = vec![nodes.remove(0), nodes.remove(1)];
    settled(&mut nodes);
    for id in 0..IDS {
        assert_eq!(
            call_until_ok(&mut nodes[(id % 2) as usize], id, 0),
            3,
            "id {id}: its total survived every move"
        );
    }
    let all = incarnations(&log);
    let moved: Vec<&Incarnation> = all
        .values()
        .flat_map(|list| &list[..list.len() - 1])
        .collect();
    assert!(!moved.is_empty(), "no id moved");
    for i in &moved {
        assert_eq!(
            i.flush.as_deref(),
            Some("ok"),
            "{} (node {}, epoch {}) handed over its state",
            i.name,
            i.node,
            i.epoch
        );
    }
    let found = overlaps(&log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_node_paused_past_its_lease_is_refused_by_the_store_when_it_writes_on_waking() {
    let _turn = one_at_a_time();
    let (_pg, _etcd, log, mut nodes) = cluster(&["a", "b", "c"]);
    let on_c: Vec<u64> = (0..IDS)
        .filter(|id| nodes[0].owner_of(*id) == "c")
        .collect();
    assert!(!on_c.is_empty(), "c owns no id of 0..{IDS}");
    // c's workers hold changes they have not written.
    for id in &on_c {
        assert_eq!(call_until_ok(&mut nodes[0], *id, 1), 1, "id {id}");
    }
    nodes[2].signal("STOP");
    std::thread::sleep(TTL * 2);
    // c's shards have new owners, whose workers write at a newer epoch.
    for id in &on_c {
        let mut written = None;
        wait_until(Duration::from_secs(30), "a write on the new owner", || {
            written = nodes[0].write(*id, 10).ok();
            written.is_some()
        });
        assert_eq!(written, Some(10), "id {id}: c's change was never written");
    }
    nodes[2].signal("CONT");
    // On waking, c fences itself and its workers flush what they held: the
    // store refuses every such write, since it carries c's older epoch.
    let c_incarnations = |log: &Path| -> Vec<Incarnation> {
        incarnations(log)
            .into_values()
            .flatten()
            .filter(|i| i.node == "c" && on_c.contains(&i.id))
            .collect()
    };
    wait_until(Duration::from_secs(30), "c's workers to flush", || {
        let list = c_incarnations(&log);
        !list.is_empty() && list.iter().all(|i| i.flush.is_some())
    });
    for i in c_incarnations(&log) {
        assert_eq!(
            i.flush.as_deref(),
            Some("fenced"),
            "{} (epoch {}) wrote after its lease had passed",
            i.name,
            i.epoch
        );
    }
    for id in &on_c {
        assert_eq!(
            call_until_ok(&mut nodes[0], *id, 0),
            10,
            "id {id}: the new owner's state stands"
        );
    }
    let found = overlaps(&log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
