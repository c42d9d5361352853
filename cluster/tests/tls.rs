//! TLS between nodes, on node processes and an etcd of the test's own, with
//! certificates made for each test: a cluster whose certificates come from
//! its CA serves calls across nodes; a node whose certificate comes from
//! another CA, or has expired, is refused both when it dials and when it is
//! dialed, with an error naming the cause on both sides.

mod common;

use common::certs::Ca;
use common::*;
use std::time::Duration;

fn start(etcd: &Etcd, name: &str, host: u8, tls: &[String]) -> Node {
    let extra: Vec<&str> = tls.iter().map(String::as_str).collect();
    Node::start_with(etcd, name, host, &log_path(&etcd.dir), &extra)
}

fn served(node: &mut Node) -> u64 {
    let line = node.ask("served", "served ", Duration::from_secs(10));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// Waits until the cluster's 32 shards are all served by `nodes`, each
/// serving some.
fn settled(nodes: &mut [&mut Node]) {
    wait_until(Duration::from_secs(30), "every shard served", || {
        let counts: Vec<u64> = nodes.iter_mut().map(|n| served(n)).collect();
        counts.iter().all(|c| *c > 0) && counts.iter().sum::<u64>() == 32
    });
}

#[test]
fn a_cluster_over_tls_serves_calls_across_its_nodes() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let ca = Ca::new("cluster CA");
    let mut a = start(
        &etcd,
        "a",
        2,
        &ca.node_files(&ca, etcd.dir.path(), 2, false),
    );
    let mut b = start(
        &etcd,
        "b",
        3,
        &ca.node_files(&ca, etcd.dir.path(), 3, false),
    );
    settled(&mut [&mut a, &mut b]);

    let on_b = a.id_owned_by("b");
    let on_a = b.id_owned_by("a");
    assert_eq!(a.call(on_b, 2), Ok(2));
    assert_eq!(b.call(on_b, 3), Ok(5));
    assert_eq!(b.call(on_a, 7), Ok(7));
    assert_eq!(a.call(on_a, 1), Ok(8));
    // Many ids at once, half of them remote from either node.
    for id in 100..140 {
        a.send_call(id, 1);
    }
    for _ in 100..140 {
        let line = a.expect("call ", Duration::from_secs(20));
        assert!(line.contains(" ok 1"), "{line}");
    }
}

/// `from` calls `id`, which `to` serves: the call fails with a refusal that
/// says `cause`, and `to` warns that it refused `from`'s connection.
fn refused_both_ways(from: &mut Node, to: &mut Node, id: u64, cause: &str, theirs: &str) {
    let error = from.call(id, 1).expect_err("a refused call");
    assert!(error.contains("refused"), "{error}");
    assert!(error.contains(cause), "{error}");
    let warning = to.expect_containing("refused a connection", Duration::from_secs(10));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(theirs), "{warning}");
}

#[test]
fn a_node_whose_certificate_comes_from_another_ca_is_refused_with_a_clear_error_on_both_sides() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let ca = Ca::new("cluster CA");
    let other = Ca::new("another CA");
    let dir = etcd.dir.path();
    let mut a = start(&etcd, "a", 2, &ca.node_files(&ca, dir, 2, false));
    // It trusts the cluster's CA, but its own certificate is another CA's.
    let mut x = start(&etcd, "x", 3, &other.node_files(&ca, dir, 3, false));
    settled(&mut [&mut a, &mut x]);

    // x dials a: a finds x's certificate from an unknown issuer, and x
    // hears a's refusal (a TLS alert: unknown CA).
    let on_a = x.id_owned_by("a");
    refused_both_ways(&mut x, &mut a, on_a, "alert", "UnknownIssuer");
    // a dials x: a finds x's certificate from an unknown issuer.
    let on_x = a.id_owned_by("x");
    refused_both_ways(&mut a, &mut x, on_x, "UnknownIssuer", "alert");
    // Neither call reached a worker.
    let started = incarnations(&log_path(&etcd.dir));
    assert!(!started.contains_key(&on_a) && !started.contains_key(&on_x));
}

#[test]
fn a_node_with_an_expired_certificate_is_refused_with_a_clear_error_on_both_sides() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let ca = Ca::new("cluster CA");
    let dir = etcd.dir.path();
    let mut a = start(&etcd, "a", 2, &ca.node_files(&ca, dir, 2, false));
    let mut old = start(&etcd, "old", 3, &ca.node_files(&ca, dir, 3, true));
    settled(&mut [&mut a, &mut old]);

    let on_a = old.id_owned_by("a");
    refused_both_ways(&mut old, &mut a, on_a, "alert", "expired");
    let on_old = a.id_owned_by("old");
    refused_both_ways(&mut a, &mut old, on_old, "expired", "alert");
}
