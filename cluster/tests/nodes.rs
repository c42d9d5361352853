//! Three `cluster-node` processes on 127.0.0.x against an etcd of the
//! test's own: calls by id from every node, membership changes under load,
//! and faults (SIGKILL, SIGSTOP beyond the lease, etcd stopped), each checked
//! for overlapping incarnations of an id.

mod common;

use common::*;
use std::time::Duration;

const IDS: u64 = 40;

fn three_nodes(etcd: &Etcd, log: &std::path::Path) -> Vec<Node> {
    vec![
        Node::start(etcd, "a", 2, log),
        Node::start(etcd, "b", 3, log),
        Node::start(etcd, "c", 4, log),
    ]
}

/// Waits until every node sees all three members own shards (each answers
/// `count` with a total, which needs every member reachable).
fn settled(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        wait_until(Duration::from_secs(20), "the cluster to settle", || {
            node.ask("count", "count ", Duration::from_secs(10))
                .split_whitespace()
                .nth(1)
                != Some("err")
        });
    }
}

fn assert_no_overlap(log: &std::path::Path) {
    let found = overlaps(log);
    assert!(
        found.is_empty(),
        "{} overlapping incarnations:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn calls_by_id_from_every_node_reach_one_worker_per_id() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    for round in 1..=3u64 {
        for node in nodes.iter_mut() {
            for id in 0..IDS {
                node.call(id, 1)
                    .unwrap_or_else(|e| panic!("{} calling {id}: {e}", node.name));
            }
        }
        // Every node's calls reached the same worker of each id: its
        // count is the number of calls made to it so far.
        for id in 0..IDS {
            assert_eq!(
                nodes[(id % 3) as usize].call(id, 0),
                Ok(3 * round),
                "id {id}"
            );
        }
    }
    for node in nodes.iter_mut() {
        let count = node.ask("count", "count ", Duration::from_secs(10));
        assert_eq!(
            count.split_whitespace().nth(2),
            Some(IDS.to_string().as_str()),
            "{count}"
        );
    }
    let owners: std::collections::BTreeSet<String> = (0..IDS)
        .map(|id| {
            nodes[0].ask(
                &format!("owner {id}"),
                &format!("owner {id} "),
                Duration::from_secs(10),
            )
        })
        .map(|line| {
            line.split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(owners.len(), 3, "ids spread over every node: {owners:?}");
    assert_no_overlap(&log);
}
