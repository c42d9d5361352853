//! Many calls in flight at once on the shared connections between node
//! processes, over plain TCP and over TLS: every call gets its own answer
//! (each new id is called once, adding the id, and must answer the id).
//! On this small machine a node may fence itself for a moment under the
//! load (its lease renewals late): a worker then answers "fenced", and a
//! call may fail; neither is a wrong answer, and most calls succeed.

mod common;

use common::certs::Ca;
use common::*;
use std::time::Duration;

fn field(line: &str, name: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == name).expect(name);
    words[at + 1].parse().expect(name)
}

/// Three nodes each call 6,000 new ids, 256 at a time, all at once: about
/// two thirds of them live on the other nodes.
fn every_call_gets_its_own_answer(flags: impl Fn(&Etcd, u8) -> Vec<String>) {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut nodes: Vec<Node> = [("a", 2), ("b", 3), ("c", 4)]
        .iter()
        .map(|(name, host)| {
            let flags = flags(&etcd, *host);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Node::start_with(&etcd, name, *host, &log, &flags)
        })
        .collect();
    wait_until(Duration::from_secs(30), "every shard served", || {
        let served: Vec<u64> = nodes
            .iter_mut()
            .map(|n| {
                field(
                    &n.ask("served", "served ", Duration::from_secs(10)),
                    "served",
                )
            })
            .collect();
        served.iter().all(|s| *s > 0) && served.iter().sum::<u64>() == 32
    });
    for (n, node) in nodes.iter_mut().enumerate() {
        node.send(&format!("check {} 6000 256", 1_000_000 * (n + 1)));
    }
    for node in nodes.iter_mut() {
        let line = node.expect("check ", Duration::from_secs(120));
        assert_eq!(field(&line, "wrong"), 0, "{}: {line}", node.name);
        assert!(field(&line, "ok") >= 5000, "{}: {line}", node.name);
        let answered = field(&line, "ok") + field(&line, "fenced") + field(&line, "err");
        assert_eq!(answered, 6000, "{}: {line}", node.name);
    }
}

#[test]
fn every_call_of_many_in_flight_gets_its_own_answer_over_plain_tcp() {
    every_call_gets_its_own_answer(|_, _| Vec::new());
}

#[test]
fn every_call_of_many_in_flight_gets_its_own_answer_over_tls() {
    let ca = Ca::new("cluster CA");
    every_call_gets_its_own_answer(|etcd, host| ca.node_files(&ca, etcd.dir.path(), host, false));
}
