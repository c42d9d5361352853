//! The cluster figures of BENCHMARKS.md, measured on node processes and an
//! etcd of the test's own. Ignored by `cargo test`; run:
//!
//! `cargo test --release -p gen_registry_cluster --test bench -- --ignored --nocapture`
//!
//! Figures are printed, never asserted: they depend on the machine.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn field(line: &str, name: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == name)
        .unwrap_or_else(|| panic!("{name} in {line}"));
    words[at + 1]
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {line}"))
}

fn quiet_nodes(etcd: &Etcd, names: &[(&str, u8)], shards: &str) -> Vec<Node> {
    let log = std::path::Path::new("/dev/null");
    names
        .iter()
        .map(|(n, h)| Node::start_with(etcd, n, *h, log, &["--shards", shards]))
        .collect()
}

fn served(node: &mut Node) -> u64 {
    field(
        &node.ask("served", "served ", Duration::from_secs(10)),
        "served",
    )
}

#[test]
#[ignore]
fn figures() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let mut nodes = quiet_nodes(&etcd, &[("a", 2), ("b", 3), ("c", 4)], "64");
    wait_until(Duration::from_secs(30), "every shard served", || {
        nodes.iter_mut().map(served).sum::<u64>() == 64
    });

    // Call by id, one call at a time: a local shard, and a remote one.
    let probe = nodes[0].ask("probe 300 20000", "probe ", Duration::from_secs(300));
    println!("call by id (one at a time, 20000 calls each): {probe}");

    // Starts per second: every node starts its own range of new ids at once.
    let per_node = 100_000 / 3;
    let started = Instant::now();
    for (n, node) in nodes.iter_mut().enumerate() {
        node.send(&format!(
            "starts {} {per_node} 64",
            1_000_000 + n as u64 * per_node
        ));
    }
    let mut ok = 0;
    for node in nodes.iter_mut() {
        let line = node.expect("starts ", Duration::from_secs(600));
        ok += field(&line, "ok");
    }
    let elapsed = started.elapsed();
    println!(
        "starts across 3 nodes: {ok} new ids in {:.2} s = {:.0} starts/s (64 callers per node)",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    let count = nodes[0].ask("count", "count ", Duration::from_secs(30));
    println!("live workers: {count}");

    // Rebalancing: a fourth node joins with those ~100,000 ids live.
    let joined = Instant::now();
    let mut d = quiet_nodes(&etcd, &[("d", 5)], "64").remove(0);
    let ready = joined.elapsed();
    wait_until(Duration::from_secs(120), "the fourth node's shards", || {
        served(&mut d) > 0 && nodes.iter_mut().map(served).sum::<u64>() + served(&mut d) == 64
    });
    println!(
        "rebalancing when a 4th node joins with {ok} live ids: node ready after {:.0} ms, every shard served again after {:.0} ms ({} shards moved to it)",
        ready.as_secs_f64() * 1000.0,
        joined.elapsed().as_secs_f64() * 1000.0,
        served(&mut d)
    );
    nodes.push(d);

    // Failover: an id of node c, called from a after c is killed.
    let victim = (0..1000u64)
        .find(|id| {
            let line = nodes[0].ask(
                &format!("owner {id}"),
                &format!("owner {id} "),
                Duration::from_secs(10),
            );
            line.split_whitespace().nth(2) == Some("c")
        })
        .expect("c owns some id");
    nodes[0].call(victim, 0).expect("a warm call");
    nodes[2].signal("KILL");
    let killed = Instant::now();
    wait_until(Duration::from_secs(60), "the id to be served again", || {
        nodes[0].call(victim, 0).is_ok()
    });
    println!(
        "failover after SIGKILL (lease TTL {:?}, fence margin {MARGIN_MS} ms): id {victim} answered again after {:.0} ms",
        TTL,
        killed.elapsed().as_secs_f64() * 1000.0
    );
}
