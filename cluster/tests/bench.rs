//! The cluster figures of BENCHMARKS.md, measured on node processes and an
//! etcd of the test's own. Ignored by `cargo test`; run:
//!
//! `cargo test --release -p gen_registry_cluster --test bench -- --ignored --nocapture`
//!
//! With `OLD_NODE=/path/to/cluster-node` (a build of another version), the
//! starts and the one-at-a-time remote call are also measured on a cluster
//! of that program, in the same run. Figures are printed, never asserted: they depend on the
//! machine.

mod common;

use common::certs::Ca;
use common::protocol::{Request, Response};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Calls in flight at once, in the remote-call figures and their floor.
const IN_FLIGHT: u64 = 64;
/// Calls made in each remote-call figure.
const CALLS: u64 = 200_000;

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

/// Three nodes of `program`, under the etcd prefix `prefix`, with `extra`
/// flags for the node on 127.0.0.`host`; once every shard is served.
fn cluster_of(
    etcd: &Etcd,
    program: &Path,
    prefix: &str,
    extra: impl Fn(u8) -> Vec<String>,
) -> Vec<Node> {
    let log = Path::new("/dev/null");
    let mut nodes: Vec<Node> = [("a", 2), ("b", 3), ("c", 4)]
        .iter()
        .map(|(n, h)| {
            let mut flags = vec!["--shards".to_string(), "64".into(), "--prefix".into()];
            flags.push(prefix.into());
            flags.extend(extra(*h));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Node::start_program(program, &etcd.url(), n, *h, log, &flags)
        })
        .collect();
    wait_until(Duration::from_secs(30), "every shard served", || {
        nodes.iter_mut().map(served).sum::<u64>() == 64
    });
    nodes
}

/// Starts per second: every node starts its own range of `per_node` new
/// ids from `from` on, 64 callers per node, all nodes at once.
fn starts(nodes: &mut [Node], from: u64, per_node: u64) -> (u64, f64) {
    let started = Instant::now();
    for (n, node) in nodes.iter_mut().enumerate() {
        node.send(&format!(
            "starts {} {per_node} 64",
            from + n as u64 * per_node
        ));
    }
    let mut ok = 0;
    for node in nodes.iter_mut() {
        let line = node.expect("starts ", Duration::from_secs(600));
        ok += field(&line, "ok");
    }
    (ok, ok as f64 / started.elapsed().as_secs_f64())
}

/// Calls per second from node a to ids of the other nodes' shards,
/// `IN_FLIGHT` at a time.
fn remote_calls(nodes: &mut [Node]) -> f64 {
    let line = nodes[0].ask(
        &format!("remote 300 {CALLS} {IN_FLIGHT}"),
        "remote ",
        Duration::from_secs(600),
    );
    assert_eq!(field(&line, "err"), 0, "{line}");
    field(&line, "ok") as f64 * 1000.0 / field(&line, "millis").max(1) as f64
}

/// The floor of the remote-call figure: a bare tokio client and server
/// exchanging the same frames over loopback (a call frame, a reply frame),
/// `IN_FLIGHT` connections each with one call at a time, on two runtimes
/// of two threads (a node's runtime); calls per second.
fn floor() -> f64 {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    };
    let (server, client) = (runtime(), runtime());
    let listener = server
        .block_on(TcpListener::bind("127.0.0.5:0"))
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    server.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (reader, mut writer) = stream.into_split();
                let mut reader = BufReader::new(reader);
                while let Ok((id, Request::Call { request, .. })) =
                    read_frame::<(u64, Request)>(&mut reader).await
                {
                    let add: u64 = postcard::from_bytes(&request).unwrap_or(0);
                    let reply = postcard::to_stdvec(&Some(add)).expect("encodes");
                    let answer = frame(&(id, Response::Reply(reply)));
                    if writer.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let started = Instant::now();
    client.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..IN_FLIGHT {
            tasks.spawn(async move {
                let mut stream = TcpStream::connect(address).await.expect("connects");
                let _ = stream.set_nodelay(true);
                let mut n = task;
                while n < CALLS {
                    let call = Request::Call {
                        shard: 7,
                        epoch: 1,
                        id: postcard::to_stdvec(&n).expect("encodes"),
                        args: postcard::to_stdvec(&()).expect("encodes"),
                        request: postcard::to_stdvec(&1u64).expect("encodes"),
                        timeout_ms: 5_000,
                        trace: None,
                    };
                    stream.write_all(&frame(&(n, call))).await.expect("sent");
                    let (id, _) = read_frame::<(u64, Response)>(&mut stream)
                        .await
                        .expect("an answer");
                    assert_eq!(id, n);
                    n += IN_FLIGHT;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    CALLS as f64 / started.elapsed().as_secs_f64()
}

fn frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(value).expect("encodes");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The remote call's latency, one call at a time: p50 and p99 in µs.
fn remote_latency(nodes: &mut [Node]) -> (u64, u64) {
    let probe = nodes[0].ask("probe 300 20000", "probe ", Duration::from_secs(300));
    (
        field(&probe, "remote_p50_us"),
        field(&probe, "remote_p99_us"),
    )
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

    let floor = floor();
    println!("floor: bare tokio frames over loopback, {IN_FLIGHT} in flight: {floor:.0} calls/s");
    let plain = remote_calls(&mut nodes);
    println!(
        "calls by id to remote shards, {IN_FLIGHT} in flight: {plain:.0} calls/s = {:.2}x the floor",
        plain / floor
    );

    // Starts per second: every node starts its own range of new ids at once.
    let (ok, rate) = starts(&mut nodes, 1_000_000, 100_000 / 3);
    println!("starts across 3 nodes: {ok} new ids = {rate:.0} starts/s (64 callers per node)");
    let count = nodes[0].ask("count", "count ", Duration::from_secs(30));
    println!("live workers: {count}");

    // The same over TLS, on a cluster of its own (another etcd prefix).
    let ca = Ca::new("bench CA");
    let program = Path::new(env!("CARGO_BIN_EXE_cluster-node"));
    let mut tls = cluster_of(&etcd, program, "tls", |host| {
        ca.node_files(&ca, etcd.dir.path(), host, false)
    });
    let (p50, p99) = remote_latency(&mut tls);
    let (plain_p50, plain_p99) = remote_latency(&mut nodes);
    println!(
        "remote call, one at a time: TLS p50 {p50} us p99 {p99} us; plain TCP p50 {plain_p50} us p99 {plain_p99} us"
    );
    let over_tls = remote_calls(&mut tls);
    println!(
        "calls by id to remote shards over TLS, {IN_FLIGHT} in flight: {over_tls:.0} calls/s = {:.2}x plain TCP",
        over_tls / plain
    );
    let (ok, tls_rate) = starts(&mut tls, 1_000_000, 100_000 / 3);
    println!(
        "starts across 3 nodes over TLS: {ok} new ids = {tls_rate:.0} starts/s = {:.2}x plain TCP",
        tls_rate / rate
    );
    drop(tls);

    // Another build of the node, if given: the same starts, and the remote
    // call one at a time (it may not know the `remote` command).
    if let Some(old) = std::env::var_os("OLD_NODE") {
        let mut old = cluster_of(&etcd, Path::new(&old), "old", |_| Vec::new());
        let (old_p50, old_p99) = remote_latency(&mut old);
        let (ok, old_rate) = starts(&mut old, 1_000_000, 100_000 / 3);
        println!(
            "OLD_NODE: remote call p50 {old_p50} us p99 {old_p99} us; starts across 3 nodes: {ok} new ids = {old_rate:.0} starts/s (this build: {:.2}x)",
            rate / old_rate
        );
    }

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
