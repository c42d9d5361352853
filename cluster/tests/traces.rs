//! A trace across node processes: the span a node serves a peer's request
//! in has the caller's span as its parent, in the caller's trace.

mod common;

use common::*;
use std::time::Duration;

/// A span a node recorded: its name, trace id, span id and parent's id.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    name: String,
    trace: String,
    id: String,
    parent: String,
}

/// The spans `node` has recorded so far.
fn spans(node: &mut Node) -> Vec<Recorded> {
    node.send("spans");
    let mut spans = Vec::new();
    loop {
        let line = node.expect("span", Duration::from_secs(10));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["span", name, trace, id, parent] => spans.push(Recorded {
                name: name.to_string(),
                trace: trace.to_string(),
                id: id.to_string(),
                parent: parent.to_string(),
            }),
            ["spans", n] => {
                assert_eq!(n.parse::<usize>().ok(), Some(spans.len()), "{line}");
                return spans;
            }
            _ => panic!("{line}"),
        }
    }
}

#[test]
fn a_remote_call_is_served_in_a_span_under_the_callers_span() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = log_path(&dir);
    let record = ["--spans", "on"];
    let mut nodes = [
        Node::start_with(&etcd, "a", 1, &log, &record),
        Node::start_with(&etcd, "b", 2, &log, &record),
    ];
    settled(&mut nodes);
    let [a, b] = &mut nodes;
    let remote = a.id_owned_by("b");
    let local = a.id_owned_by("a");
    // One call at a time: the remote call's request span ends first.
    assert_eq!(a.call(remote, 1), Ok(1));
    assert_eq!(a.call(local, 1), Ok(1));

    // A span is recorded when it ends, just after its call answered.
    let named = |node: &mut Node, name: &str, least: usize| {
        let mut found = Vec::new();
        wait_until(Duration::from_secs(10), name, || {
            found = spans(node).into_iter().filter(|s| s.name == name).collect();
            found.len() >= least
        });
        found
    };
    let requests = named(a, "request", 2);
    let [remote_request, local_request] = requests.as_slice() else {
        panic!("two request spans: {requests:?}");
    };
    assert_ne!(remote_request.trace, local_request.trace);
    // b served the remote call (more than once only if an attempt reached
    // no worker) in spans that are children of a's request span, in its
    // trace; the local call crossed nothing.
    let served = named(b, "call", 1);
    for call in &served {
        assert_eq!(
            call.parent, remote_request.id,
            "{call:?} under {remote_request:?}"
        );
        assert_eq!(
            call.trace, remote_request.trace,
            "{call:?} in {remote_request:?}"
        );
    }
}
