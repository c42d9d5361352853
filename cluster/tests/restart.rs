//! Restarting nodes: a node killed with SIGKILL and started again at once
//! under its name, and a rolling restart of every node under load.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IDS: u64 = 40;

fn three_nodes(etcd: &Etcd, log: &Path) -> Vec<Node> {
    vec![
        Node::start(etcd, "a", 2, log),
        Node::start(etcd, "b", 3, log),
        Node::start(etcd, "c", 4, log),
    ]
}

/// Calls every id from `node` until the call succeeds (bounded); the number
/// of calls that succeeded.
fn every_id_answers(node: &mut Node) -> u64 {
    for id in 0..IDS {
        wait_until(Duration::from_secs(20), "every id to answer", || {
            node.call(id, 1).is_ok()
        });
    }
    IDS
}

fn assert_no_overlap(log: &Path) {
    let found = overlaps(log);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn wall_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The times (wall-clock nanoseconds) at which each id's worker handled a
/// call, as the incarnation log tells it.
fn handled(log: &Path) -> BTreeMap<u64, Vec<u128>> {
    let mut by_id: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let ["call", id, _, t] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            let (id, t) = (id.parse().expect("an id"), t.parse().expect("a time"));
            by_id.entry(id).or_default().push(t);
        }
    }
    for times in by_id.values_mut() {
        times.sort();
    }
    by_id
}

#[test]
fn a_node_killed_and_started_again_at_once_under_its_name_joins() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    every_id_answers(&mut nodes[2]);
    nodes[2].signal("KILL");
    nodes[2].wait_exit(Duration::from_secs(10));
    // Its lease is still in etcd: the new process waits it out rather than
    // failing with NameTaken (`start` fails the test on a `failed` line).
    let started = Instant::now();
    nodes[2] = Node::start(&etcd, "c", 4, &log);
    println!(
        "the restarted node joined after {} ms (lease TTL {} ms)",
        started.elapsed().as_millis(),
        TTL.as_millis()
    );
    settled(&mut nodes);
    wait_until(
        Duration::from_secs(20),
        "the restarted node to serve shards",
        || nodes[2].ask("served", "served ", Duration::from_secs(10)) != "served 0",
    );
    every_id_answers(&mut nodes[2]);
    assert_no_overlap(&log);
}

#[test]
fn a_rolling_restart_under_load_handles_no_request_twice_and_every_call_ends_in_time() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    let mut succeeded = 0;
    for node in nodes.iter_mut() {
        succeeded += every_id_answers(node);
    }
    let (mut failed, mut longest_call_ms) = (0, 0);
    let mut windows = Vec::new();
    for restarting in 0..nodes.len() {
        // The other two nodes call every id while this one restarts.
        let callers: Vec<usize> = (0..nodes.len()).filter(|n| *n != restarting).collect();
        let window_start = wall_nanos();
        for &n in &callers {
            nodes[n].send("load 40 6000 4");
        }
        std::thread::sleep(Duration::from_millis(500));
        let (name, host) = (nodes[restarting].name.clone(), restarting as u8 + 2);
        nodes[restarting].ask("leave", "left", Duration::from_secs(20));
        nodes[restarting].wait_exit(Duration::from_secs(10));
        nodes[restarting] = Node::start(&etcd, &name, host, &log);
        for &n in &callers {
            let load = parse_load(&nodes[n].expect("load ", Duration::from_secs(40)));
            println!("restarting {name}: {} calling: {load:?}", nodes[n].name);
            succeeded += load.ok;
            failed += load.err;
            longest_call_ms = longest_call_ms.max(load.max_ms);
        }
        windows.push((window_start, wall_nanos()));
        settled(&mut nodes);
    }
    for node in nodes.iter_mut() {
        succeeded += every_id_answers(node);
    }
    // Each call that succeeded was handled once, each that failed at most
    // once: more handled calls than calls would be a request handled twice.
    let handled_calls: u64 = handled(&log).values().map(|t| t.len() as u64).sum();
    // The longest any id went without a handled call while the load ran.
    let mut unavailable_ms = 0;
    for times in handled(&log).values() {
        for (start, end) in &windows {
            let inside: Vec<u128> = times
                .iter()
                .copied()
                .filter(|t| t >= start && t <= end)
                .collect();
            for pair in inside.windows(2) {
                unavailable_ms = unavailable_ms.max(((pair[1] - pair[0]) / 1_000_000) as u64);
            }
        }
    }
    println!(
        "rolling restart: {succeeded} calls succeeded, {failed} failed, {handled_calls} handled; \
         longest call {longest_call_ms} ms; longest an id went unanswered {unavailable_ms} ms"
    );
    assert!(
        succeeded <= handled_calls && handled_calls <= succeeded + failed,
        "{handled_calls} handled for {succeeded} succeeded and {failed} failed calls"
    );
    // Every call ended within its timeout (5 s), with slack for printing.
    assert!(longest_call_ms <= 6_000, "a call took {longest_call_ms} ms");
    assert!(
        failed * 100 <= succeeded,
        "{failed} failed calls for {succeeded} that succeeded"
    );
    assert!(
        unavailable_ms <= 6_000,
        "an id went {unavailable_ms} ms unanswered"
    );
    assert_no_overlap(&log);
}
