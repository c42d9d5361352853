//! Seeing inside a cluster of node processes: each node's health snapshot
//! and its `/metrics`, checked against the calls the test sent.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("the metrics listener accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nhost: {addr}\r\n\r\n").expect("a request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the whole response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .expect("a body")
}

/// The sum of every sample of metric `name` (any labels) in `text`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A node's `stats` answer as (shards, running, lease_ms).
fn stats(node: &mut Node) -> (u64, u64, Option<u64>) {
    let line = node.ask("stats", "stats ", Duration::from_secs(10));
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [
            "stats",
            "shards",
            s,
            "running",
            r,
            "queued",
            _,
            "lease_ms",
            l,
        ] => (
            s.parse().expect("a number"),
            r.parse().expect("a number"),
            l.parse().ok(),
        ),
        _ => panic!("{line}"),
    }
}

fn metrics_address(node: &mut Node) -> String {
    let line = node.ask("metrics", "metrics ", Duration::from_secs(10));
    line.split_whitespace()
        .nth(1)
        .expect("an address")
        .to_string()
}

const SHARDS: u64 = 32; // the node binary's default

#[test]
fn each_node_reports_its_shards_and_counts_the_calls_it_forwarded_and_served() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = log_path(&dir);
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut nodes = [
        Node::start_with(&etcd, "a", 1, &log, &metrics),
        Node::start_with(&etcd, "b", 2, &log, &metrics),
    ];
    settled(&mut nodes);
    wait_until(
        Duration::from_secs(20),
        "every shard served, by both nodes",
        || {
            let (a, b) = (stats(&mut nodes[0]).0, stats(&mut nodes[1]).0);
            a > 0 && b > 0 && a + b == SHARDS
        },
    );
    let [a, b] = &mut nodes;
    let (a_at, b_at) = (metrics_address(a), metrics_address(b));
    let (a_before, b_before) = (scrape(&a_at), scrape(&b_at));

    const CALLS: u64 = 200;
    for id in 0..CALLS {
        assert_eq!(a.call(id, 1), Ok(1), "call {id}");
    }

    let (a_after, b_after) = (scrape(&a_at), scrape(&b_at));
    let delta = |before: &str, after: &str, name: &str| sum(after, name) - sum(before, name);
    let forwarded = delta(
        &a_before,
        &a_after,
        "gen_registry_cluster_requests_forwarded_total",
    );
    let served = delta(
        &b_before,
        &b_after,
        "gen_registry_cluster_requests_served_total",
    );
    let a_calls = delta(&a_before, &a_after, "gen_registry_calls_total");
    let b_calls = delta(&b_before, &b_after, "gen_registry_calls_total");
    // Every request a sent to b, b answered; every call reached one worker.
    assert_eq!(forwarded, served, "a forwarded, b served");
    assert_eq!(a_calls + b_calls, CALLS as f64, "calls queued on a and b");
    assert!(a_calls > 0.0 && b_calls > 0.0, "a: {a_calls}, b: {b_calls}");
    assert!(b_calls <= forwarded, "b queued {b_calls} of {forwarded}");
    assert_eq!(
        delta(
            &a_before,
            &a_after,
            "gen_registry_cluster_not_delivered_total"
        ),
        0.0
    );

    // The shard gauges and the snapshots agree, and cover every shard.
    let (a_shards, a_running, a_lease) = stats(a);
    let (b_shards, b_running, b_lease) = stats(b);
    assert_eq!(a_shards + b_shards, SHARDS);
    assert_eq!(
        sum(&a_after, "gen_registry_cluster_shards_served"),
        a_shards as f64
    );
    assert_eq!(
        sum(&b_after, "gen_registry_cluster_shards_served"),
        b_shards as f64
    );
    // One worker per id called, on the node whose registry queued its call.
    assert_eq!(a_running + b_running, CALLS);
    assert_eq!(a_running as f64, a_calls);
    assert_eq!(b_running as f64, b_calls);
    // Both hold their lease, renewed since they joined.
    let safe = (TTL - Duration::from_millis(MARGIN_MS)).as_millis() as u64;
    for (lease, text) in [(a_lease, &a_after), (b_lease, &b_after)] {
        let left = lease.expect("not fenced");
        assert!(left > 0 && left <= safe, "lease left {left} ms of {safe}");
        assert!(sum(text, "gen_registry_cluster_lease_renewals_total") > 0.0);
        assert!(text.contains("gen_registry_cluster_lease_renewal_failures_total"));
    }
}

#[test]
fn a_node_cut_off_from_etcd_shows_its_failed_renewals_and_its_fence() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = log_path(&dir);
    let proxy = Proxy::start(5, &etcd);
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut nodes = [
        Node::start_with(&etcd, "a", 1, &log, &metrics),
        Node::start_via(&proxy.url, "b", 2, &log, &metrics),
    ];
    settled(&mut nodes);
    let [_, b] = &mut nodes;
    let b_at = metrics_address(b);
    wait_until(Duration::from_secs(20), "b serves shards", || {
        stats(b).0 > 0
    });
    let failures = |text: &str| sum(text, "gen_registry_cluster_lease_renewal_failures_total");
    let renewals = |text: &str| sum(text, "gen_registry_cluster_lease_renewals_total");
    let before = scrape(&b_at);
    assert_eq!(failures(&before), 0.0);

    proxy.cut();
    // Past its fence deadline b serves nothing, and says so.
    wait_until(Duration::from_secs(20), "b fenced", || {
        let (shards, running, lease) = stats(b);
        shards == 0 && running == 0 && lease.is_none()
    });
    let fenced = scrape(&b_at);
    assert!(failures(&fenced) > 0.0, "no failed renewal counted");
    assert_eq!(sum(&fenced, "gen_registry_cluster_shards_served"), 0.0);

    proxy.heal();
    // With etcd back, b takes a new lease, renews it and serves again.
    let mut healed = String::new();
    wait_until(
        Duration::from_secs(30),
        "b renewing and serving again",
        || {
            healed = scrape(&b_at);
            let (shards, _, lease) = stats(b);
            shards > 0
                && lease.is_some()
                && renewals(&healed) > renewals(&fenced)
                && sum(&healed, "gen_registry_cluster_shards_served") > 0.0
        },
    );
}
