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
    let owners: std::collections::BTreeSet<String> =
        (0..IDS).map(|id| nodes[0].owner_of(id)).collect();
    assert_eq!(owners.len(), 3, "ids spread over every node: {owners:?}");
    assert_no_overlap(&log);
}

/// Calls every id once from `node`, until each succeeds (bounded).
fn warm(node: &mut Node) {
    for id in 0..IDS {
        wait_until(Duration::from_secs(20), "a warm-up call to succeed", || {
            node.call(id, 1).is_ok()
        });
    }
}

/// Every call of a load answered within its timeout (5 s), with slack for
/// the answer to be printed.
fn assert_answered_in_time(load: &Load) {
    assert!(
        load.max_ms <= 6_000,
        "a call took {} ms: {load:?}",
        load.max_ms
    );
    assert!(load.ok > 0, "no call succeeded: {load:?}");
}

/// Some id ran on two nodes one after the other: the fault did move work.
fn assert_moved(log: &std::path::Path) {
    let moved = incarnations(log).values().any(|list| {
        list.iter()
            .map(|i| &i.node)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    });
    assert!(moved, "no id moved to another node");
}

#[test]
fn a_node_joining_and_a_node_leaving_under_load_move_shards_without_overlap() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = vec![
        Node::start(&etcd, "a", 2, &log),
        Node::start(&etcd, "b", 3, &log),
    ];
    settled(&mut nodes);
    warm(&mut nodes[0]);
    nodes[0].send("load 40 8000 4");
    std::thread::sleep(Duration::from_secs(1));
    nodes.push(Node::start(&etcd, "c", 4, &log));
    std::thread::sleep(Duration::from_secs(2));
    nodes[1].ask("leave", "left", Duration::from_secs(20));
    nodes[1].wait_exit(Duration::from_secs(10));
    let load = parse_load(&nodes[0].expect("load ", Duration::from_secs(30)));
    assert_answered_in_time(&load);
    // A move waits for the requests already delivered to its shard; one
    // still queued on a worker being stopped comes back unread and is
    // retried on the new owner, as is one that reached a node no longer
    // serving the shard. So no request fails for never being delivered, and
    // none of those delivered is cut off.
    assert_eq!(load.undelivered, 0, "{load:?}");
    assert_eq!(load.err, 0, "{load:?}");
    assert_moved(&log);
    assert_no_overlap(&log);
}

#[test]
fn a_killed_node_s_ids_are_served_again_after_about_one_lease_ttl() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    warm(&mut nodes[0]);
    nodes[0].send("load 40 9000 4");
    std::thread::sleep(Duration::from_secs(1));
    nodes[2].signal("KILL");
    let killed = std::time::Instant::now();
    let load = parse_load(&nodes[0].expect("load ", Duration::from_secs(30)));
    assert_answered_in_time(&load);
    // After the load, every id answers again, from both survivors.
    for node in &mut nodes[..2] {
        for id in 0..IDS {
            node.call(id, 0)
                .unwrap_or_else(|e| panic!("{} calling {id} after the kill: {e}", node.name));
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(30));
    assert_moved(&log);
    assert_no_overlap(&log);
}

#[test]
fn a_node_paused_beyond_its_lease_fences_itself_and_no_incarnations_overlap() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    warm(&mut nodes[0]);
    warm(&mut nodes[2]);
    // Load from the node that will be paused too: it holds requests in
    // flight across the pause.
    // Many callers on c: while some wait out calls to shards they can no
    // longer reach, others keep calling c's own shards.
    nodes[2].send("load 40 12000 32");
    nodes[0].send("load 40 12000 4");
    std::thread::sleep(Duration::from_secs(1));
    nodes[2].signal("STOP");
    std::thread::sleep(TTL * 2);
    nodes[2].signal("CONT");
    let load = parse_load(&nodes[0].expect("load ", Duration::from_secs(40)));
    assert_answered_in_time(&load);
    let paused = parse_load(&nodes[2].expect("load ", Duration::from_secs(40)));
    assert!(paused.ok > 0, "{paused:?}");
    // The paused node fenced itself, took a new lease, and serves again.
    wait_until(
        Duration::from_secs(30),
        "the paused node to serve again",
        || nodes[2].call(0, 0).is_ok(),
    );
    assert_moved(&log);
    assert_no_overlap(&log);
}

#[test]
fn with_etcd_stopped_nodes_fence_and_after_its_restart_every_id_is_served_again() {
    let _turn = one_at_a_time();
    let mut etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = three_nodes(&etcd, &log);
    settled(&mut nodes);
    warm(&mut nodes[0]);
    etcd.stop();
    // Past the fence deadline (TTL − margin after the last renewal), every
    // node has stopped its workers: a call gets an error within its timeout.
    // The nodes are called at once, since each call waits out its timeout.
    std::thread::sleep(TTL);
    let started = std::time::Instant::now();
    for node in nodes.iter_mut() {
        node.send_call(1, 1);
    }
    for node in nodes.iter_mut() {
        assert!(
            node.call_answer(1).is_err(),
            "{} served without etcd",
            node.name
        );
        assert!(started.elapsed() < Duration::from_secs(8));
    }
    // Every worker was stopped (its terminate ran) by the fence.
    let running: Vec<String> = incarnations(&log)
        .values()
        .flatten()
        .filter(|i| !i.ended && !i.ended_fenced)
        .map(|i| i.name.clone())
        .collect();
    assert!(
        running.is_empty(),
        "still running without etcd: {running:?}"
    );
    etcd.restart();
    for node in nodes.iter_mut() {
        for id in 0..IDS {
            wait_until(
                Duration::from_secs(30),
                "ids to be served after etcd's restart",
                || node.call(id, 1).is_ok(),
            );
        }
    }
    assert_no_overlap(&log);
}

#[test]
fn a_node_cut_off_from_etcd_stops_serving_and_its_ids_move_without_overlap() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let proxy = Proxy::start(5, &etcd);
    let mut nodes = vec![
        Node::start(&etcd, "a", 2, &log),
        Node::start(&etcd, "b", 3, &log),
        Node::start_via(&proxy.url, "c", 4, &log, &[]),
    ];
    settled(&mut nodes);
    warm(&mut nodes[0]);
    warm(&mut nodes[2]);
    nodes[0].send("load 40 12000 4");
    // Many callers on c: while some wait out calls to shards they can no
    // longer reach, others keep calling c's own shards.
    nodes[2].send("load 40 12000 32");
    std::thread::sleep(Duration::from_secs(1));
    proxy.cut();
    std::thread::sleep(TTL * 2);
    // Meanwhile c has fenced itself and a and b have claimed its shards
    // (assert_moved below); c's calls to its own shards failed in time.
    proxy.heal();
    let load = parse_load(&nodes[0].expect("load ", Duration::from_secs(40)));
    assert_answered_in_time(&load);
    let cut_off = parse_load(&nodes[2].expect("load ", Duration::from_secs(40)));
    assert!(cut_off.max_ms <= 6_000, "{cut_off:?}");
    wait_until(
        Duration::from_secs(30),
        "the cut-off node to serve again",
        || nodes[2].ask("served", "served ", Duration::from_secs(10)) != "served 0",
    );
    for id in 0..IDS {
        wait_until(Duration::from_secs(20), "every id served from c", || {
            nodes[2].call(id, 0).is_ok()
        });
    }
    assert_moved(&log);
    assert_no_overlap(&log);
}

/// The partition test runs in a network namespace of its own (`unshare -rn`,
/// an unprivileged user and network namespace with only a loopback
/// interface), where nftables rules can drop traffic by address without
/// touching the machine's network.
#[test]
fn a_node_partitioned_from_etcd_and_its_peers_fences_itself_and_no_incarnations_overlap() {
    let _turn = one_at_a_time();
    let exe = std::env::current_exe().expect("the test binary");
    let status = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args([
            "partition_inside_its_own_network_namespace",
            "--exact",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .status()
        .expect("unshare runs (util-linux)");
    assert!(
        status.success(),
        "the partition test failed inside its namespace"
    );
}

fn nft(rules: &str) {
    let status = std::process::Command::new("nft")
        .arg(rules)
        .status()
        .expect("nft runs (nftables)");
    assert!(status.success(), "nft {rules}");
}

#[test]
#[ignore = "run by the test above, inside its own network namespace"]
fn partition_inside_its_own_network_namespace() {
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes = vec![
        Node::start(&etcd, "a", 2, &log),
        Node::start(&etcd, "b", 3, &log),
        Node::start_via(&etcd.url_on(6), "c", 4, &log, &[]),
    ];
    settled(&mut nodes);
    warm(&mut nodes[0]);
    warm(&mut nodes[2]);
    nodes[0].send("load 40 12000 4");
    // Many callers on c: while some wait out calls to shards they can no
    // longer reach, others keep calling c's own shards.
    nodes[2].send("load 40 12000 32");
    std::thread::sleep(Duration::from_secs(1));
    // c (127.0.0.4, and its way to etcd, 127.0.0.6) is cut off from
    // everyone: every packet to or from it is dropped.
    nft("add table inet partition");
    nft("add chain inet partition out { type filter hook output priority 0; }");
    for host in ["127.0.0.4", "127.0.0.6"] {
        nft(&format!("add rule inet partition out ip saddr {host} drop"));
        nft(&format!("add rule inet partition out ip daddr {host} drop"));
    }
    std::thread::sleep(TTL * 2);
    nft("delete table inet partition");
    let load = parse_load(&nodes[0].expect("load ", Duration::from_secs(40)));
    assert_answered_in_time(&load);
    let cut_off = parse_load(&nodes[2].expect("load ", Duration::from_secs(40)));
    assert!(cut_off.max_ms <= 6_000, "{cut_off:?}");
    for id in 0..IDS {
        wait_until(
            Duration::from_secs(30),
            "every id served from c after the partition",
            || nodes[2].call(id, 0).is_ok(),
        );
    }
    assert_moved(&log);
    assert_no_overlap(&log);
}
