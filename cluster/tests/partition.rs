//! A node its peers cannot reach while etcd still sees it (an asymmetric
//! partition): voted out by a majority of the live members, it fences
//! itself and its shards move; a node that only one peer cannot reach is
//! never voted out.
//!
//! Each test runs in a network namespace of its own (`unshare -rn`, an
//! unprivileged user and network namespace with only a loopback interface),
//! where nftables rules drop traffic between node addresses without
//! touching the machine's network. etcd listens on 127.0.0.1, which no rule
//! touches.

mod common;

use common::*;
use std::time::{Duration, Instant};

const IDS: u64 = 40;

/// Runs the ignored test `name` of this binary inside a network namespace
/// of its own.
fn in_own_network_namespace(name: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let status = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .status()
        .expect("unshare runs (util-linux)");
    assert!(status.success(), "{name} failed inside its namespace");
}

fn nft(rules: &str) {
    let status = std::process::Command::new("nft")
        .arg(rules)
        .status()
        .expect("nft runs (nftables)");
    assert!(status.success(), "nft {rules}");
}

/// Drops every packet between `node` and each of `peers` (127.0.0.x
/// addresses), both ways.
fn cut(node: &str, peers: &[&str]) {
    nft("add table inet partition");
    nft("add chain inet partition out { type filter hook output priority 0; }");
    for peer in peers {
        nft(&format!(
            "add rule inet partition out ip saddr {node} ip daddr {peer} drop"
        ));
        nft(&format!(
            "add rule inet partition out ip saddr {peer} ip daddr {node} drop"
        ));
    }
}

fn heal() {
    nft("delete table inet partition");
}

fn start_three(etcd: &Etcd, log: &std::path::Path) -> Vec<Node> {
    let mut nodes = vec![
        Node::start(etcd, "a", 2, log),
        Node::start(etcd, "b", 3, log),
        Node::start(etcd, "c", 4, log),
    ];
    settled(&mut nodes);
    for node in nodes.iter_mut() {
        for id in 0..IDS {
            wait_until(Duration::from_secs(20), "a warm-up call", || {
                node.call(id, 1).is_ok()
            });
        }
    }
    nodes
}

fn served(node: &mut Node) -> u32 {
    node.ask("served", "served ", Duration::from_secs(10))
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of shards")
}

fn assert_no_overlap(log: &std::path::Path) {
    let found = overlaps(log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_node_its_peers_cannot_reach_is_voted_out_and_its_shards_move() {
    let _turn = one_at_a_time();
    in_own_network_namespace("voted_out_inside_its_own_network_namespace");
}

#[test]
fn a_node_that_one_peer_cannot_reach_is_not_voted_out() {
    let _turn = one_at_a_time();
    in_own_network_namespace("one_link_cut_inside_its_own_network_namespace");
}

#[test]
fn a_voted_out_node_killed_and_started_again_elsewhere_is_not_held_out_by_the_old_votes() {
    let _turn = one_at_a_time();
    in_own_network_namespace("restarted_after_a_vote_inside_its_own_network_namespace");
}

#[test]
#[ignore = "run by a test above, inside its own network namespace"]
fn voted_out_inside_its_own_network_namespace() {
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = start_three(&etcd, &log);
    // The ids c serves, as a sees them.
    let on_c: Vec<u64> = (0..IDS)
        .filter(|id| nodes[0].owner_of(*id) == "c")
        .collect();
    assert!(!on_c.is_empty(), "c serves some of the ids");
    nodes[1].send("load 40 15000 4");
    std::thread::sleep(Duration::from_millis(500));
    cut("127.0.0.4", &["127.0.0.2", "127.0.0.3"]);
    let cut_at = Instant::now();
    // c still renews its lease: only its peers' votes take its shards.
    for id in &on_c {
        wait_until(Duration::from_secs(30), "c's ids to answer from a", || {
            nodes[0].call(*id, 0).is_ok()
        });
    }
    let moved_after = cut_at.elapsed();
    println!(
        "c's {} ids answer again from a {} ms after the cut (suspicion period {} ms + lease TTL {} ms would be {} ms)",
        on_c.len(),
        moved_after.as_millis(),
        TTL.as_millis(),
        TTL.as_millis(),
        (2 * TTL).as_millis()
    );
    assert_eq!(
        served(&mut nodes[2]),
        0,
        "c was voted out and serves nothing"
    );
    let load = parse_load(&nodes[1].expect("load ", Duration::from_secs(40)));
    println!("b's load across the cut: {load:?}");
    assert!(load.max_ms <= 6_000, "{load:?}");
    assert!(load.ok > 0, "{load:?}");
    // Voted out, c stays out while the cut lasts.
    std::thread::sleep(TTL);
    assert_eq!(
        served(&mut nodes[2]),
        0,
        "c stays out while its peers cannot reach it"
    );
    heal();
    wait_until(
        Duration::from_secs(30),
        "c to serve again after the cut",
        || served(&mut nodes[2]) > 0,
    );
    for id in 0..IDS {
        wait_until(Duration::from_secs(20), "every id from c", || {
            nodes[2].call(id, 0).is_ok()
        });
    }
    assert_no_overlap(&log);
}

#[test]
#[ignore = "run by a test above, inside its own network namespace"]
fn one_link_cut_inside_its_own_network_namespace() {
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = start_three(&etcd, &log);
    cut("127.0.0.4", &["127.0.0.3"]);
    // Three suspicion periods: long enough for b and c to report each
    // other; one report each is no majority.
    let until = Instant::now() + 3 * TTL;
    while Instant::now() < until {
        for node in nodes.iter_mut() {
            let shards = served(node);
            assert!(shards > 0, "{} was voted out by one peer", node.name);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    heal();
    for node in nodes.iter_mut() {
        assert!(served(node) > 0, "{} serves", node.name);
    }
    // a reaches everyone: every id answers from a throughout.
    for id in 0..IDS {
        nodes[0]
            .call(id, 0)
            .unwrap_or_else(|e| panic!("id {id} from a: {e}"));
    }
    assert_no_overlap(&log);
}

#[test]
#[ignore = "run by a test above, inside its own network namespace"]
fn restarted_after_a_vote_inside_its_own_network_namespace() {
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = start_three(&etcd, &log);
    cut("127.0.0.4", &["127.0.0.2", "127.0.0.3"]);
    wait_until(Duration::from_secs(30), "c to be voted out", || {
        served(&mut nodes[2]) == 0
    });
    // Killed while out: a and b's reports of its address stand, and
    // nothing will ever answer there again.
    nodes[2].signal("KILL");
    nodes[2].wait_exit(Duration::from_secs(10));
    heal();
    // Started again on another port: the old votes are not against it.
    nodes[2] = Node::start(&etcd, "c", 4, &log);
    wait_until(Duration::from_secs(30), "the new c to serve", || {
        served(&mut nodes[2]) > 0
    });
    let until = Instant::now() + 2 * TTL;
    while Instant::now() < until {
        assert!(served(&mut nodes[2]) > 0, "the new c was voted out");
        std::thread::sleep(Duration::from_millis(250));
    }
    for id in 0..IDS {
        wait_until(Duration::from_secs(20), "every id from c", || {
            nodes[2].call(id, 0).is_ok()
        });
    }
    assert_no_overlap(&log);
}
