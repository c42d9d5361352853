//! The node-to-node protocol from outside: a peer must prove the cluster
//! secret before anything it sends reaches a worker, and broken frames get
//! an error without harming the node. The frames are built here from the
//! protocol's description (postcard, 4-byte big-endian length prefix; a
//! request is `(request id, Request)`, its answer `(request id, Response)`),
//! not with the crate's own code.

mod common;

use common::protocol::{Request, Response};
use common::*;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
enum Handshake {
    Challenge([u8; 32]),
    Prove { nonce: [u8; 32], mac: Vec<u8> },
    Welcome { mac: Vec<u8> },
    Refused,
}

fn write_raw(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(body.len() as u32).to_be_bytes())?;
    stream.write_all(body)
}

fn write<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    write_raw(stream, &postcard::to_stdvec(value).expect("encodes"))
}

fn read<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Connects and answers the challenge with `secret`; the server's answer.
fn handshake(address: &str, secret: &[u8]) -> (TcpStream, Handshake) {
    let mut stream = TcpStream::connect(address).expect("the node listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let Handshake::Challenge(theirs) = read(&mut stream).expect("a challenge") else {
        panic!("expected a challenge");
    };
    let ours = [7u8; 32];
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(b"gen_registry_cluster client");
    mac.update(&theirs);
    mac.update(&ours);
    write(
        &mut stream,
        &Handshake::Prove {
            nonce: ours,
            mac: mac.finalize().into_bytes().to_vec(),
        },
    )
    .expect("the proof is sent");
    let answer = read(&mut stream).unwrap_or(Handshake::Refused);
    (stream, answer)
}

/// A call of `add` to worker `id`, addressed to its owner's shard and epoch.
fn call_frame(node: &mut Node, id: u64, add: u64) -> Request {
    let shard = node.ask(
        &format!("shard {id}"),
        &format!("shard {id} "),
        Duration::from_secs(10),
    );
    let owner = node.ask(
        &format!("owner {id}"),
        &format!("owner {id} "),
        Duration::from_secs(10),
    );
    Request::Call {
        shard: shard
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .expect("a shard"),
        epoch: owner
            .split_whitespace()
            .nth(3)
            .and_then(|s| s.parse().ok())
            .expect("an epoch"),
        id: postcard::to_stdvec(&id).expect("encodes"),
        args: postcard::to_stdvec(&()).expect("encodes"),
        // The node's `Ask::Add(add, false)`: postcard writes an enum as its
        // variant's index (0, one byte) followed by its fields.
        request: postcard::to_stdvec(&(0u32, add, false)).expect("encodes"),
        timeout_ms: 5_000,
        trace: None,
    }
}

fn starts_of(log: &std::path::Path, id: u64) -> usize {
    incarnations(log).get(&id).map_or(0, Vec::len)
}

#[test]
fn a_peer_without_the_cluster_secret_is_refused_and_its_requests_reach_no_worker() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut node = Node::start(&etcd, "a", 2, &log);
    let address = node.address.clone();

    // A connection opened and closed without a word (a health check, a
    // port scan) is no refused peer: no warning.
    for _ in 0..5 {
        drop(TcpStream::connect(&address).expect("the node listens"));
    }

    // With the wrong secret: refused, and the request sent anyway is
    // never answered (the connection is closed).
    let (mut stream, answer) = handshake(&address, b"not the cluster's secret");
    assert!(matches!(answer, Handshake::Refused));
    // The node's first warning is about this peer.
    let warning = node.expect_containing("refused a connection", Duration::from_secs(10));
    assert!(warning.contains("wrong cluster secret"), "{warning}");
    let _ = write(&mut stream, &(1u64, call_frame(&mut node, 5, 1000)));
    assert!(
        read::<(u64, Response)>(&mut stream).is_err(),
        "a refused peer got an answer"
    );

    // Skipping the handshake altogether: no answer either.
    let mut stream = TcpStream::connect(&address).expect("the node listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let _ = write(&mut stream, &(1u64, call_frame(&mut node, 5, 1000)));
    let _ = read::<Handshake>(&mut stream);
    assert!(
        read::<(u64, Response)>(&mut stream).is_err(),
        "a peer that skipped the handshake got an answer"
    );

    assert_eq!(starts_of(&log, 5), 0, "a refused request started a worker");
    // The worker starts fresh on the first authenticated call: 1000 was
    // never added.
    assert_eq!(node.call(5, 1), Ok(1));

    // The same frames with the secret: they do reach the worker.
    let (mut stream, answer) = handshake(&address, SECRET.as_bytes());
    assert!(matches!(answer, Handshake::Welcome { .. }));
    write(&mut stream, &(1u64, call_frame(&mut node, 5, 1))).expect("sent");
    let (1, Response::Reply(bytes)) = read::<(u64, Response)>(&mut stream).expect("an answer")
    else {
        panic!("expected a reply to request 1");
    };
    assert_eq!(
        postcard::from_bytes::<Result<u64, String>>(&bytes).expect("decodes"),
        Ok(2)
    );
}

#[test]
fn oversized_and_malformed_frames_get_an_error_and_the_node_keeps_serving() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut node = Node::start(&etcd, "a", 2, &log);
    let address = node.address.clone();

    let (mut stream, _) = handshake(&address, SECRET.as_bytes());
    stream.write_all(&u32::MAX.to_be_bytes()).expect("sent");
    match read::<(u64, Response)>(&mut stream) {
        Ok((0, Response::Failed(why))) => assert!(why.contains("exceeds"), "{why}"),
        other => panic!("expected an error for an oversized frame, got {other:?}"),
    }

    let (mut stream, _) = handshake(&address, SECRET.as_bytes());
    write_raw(&mut stream, &[0xff; 16]).expect("sent");
    match read::<(u64, Response)>(&mut stream) {
        Ok((0, Response::Failed(why))) => assert!(why.contains("malformed"), "{why}"),
        other => panic!("expected an error for a malformed frame, got {other:?}"),
    }

    // A well-formed frame whose id is garbage for its worker type.
    let (mut stream, _) = handshake(&address, SECRET.as_bytes());
    let Request::Call { shard, epoch, .. } = call_frame(&mut node, 9, 1);
    let bad = Request::Call {
        shard,
        epoch,
        id: vec![0xff; 12],
        args: vec![],
        request: vec![],
        timeout_ms: 100,
        trace: None,
    };
    write(&mut stream, &(7u64, bad)).expect("sent");
    assert!(matches!(
        read::<(u64, Response)>(&mut stream),
        Ok((7, Response::Failed(_) | Response::NotOwner))
    ));

    assert_eq!(node.call(9, 1), Ok(1), "the node still serves");
    let (mut stream, _) = handshake(&address, SECRET.as_bytes());
    write(&mut stream, &(1u64, call_frame(&mut node, 9, 1))).expect("sent");
    assert!(matches!(
        read::<(u64, Response)>(&mut stream),
        Ok((1, Response::Reply(_)))
    ));
}

#[test]
fn requests_sent_together_on_one_connection_are_each_answered_under_their_own_id() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    let log = log_path(&etcd.dir);
    let mut node = Node::start(&etcd, "a", 2, &log);
    let address = node.address.clone();

    // Twenty calls to ten workers (two each, adding 1 then 10), in one
    // write, under request ids that say which call each is.
    let mut bytes = Vec::new();
    for id in 0..10u64 {
        for (n, add) in [1u64, 10].into_iter().enumerate() {
            let frame = postcard::to_stdvec(&(100 * id + n as u64, call_frame(&mut node, id, add)))
                .expect("encodes");
            bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&frame);
        }
    }
    let (mut stream, _) = handshake(&address, SECRET.as_bytes());
    stream.write_all(&bytes).expect("sent");

    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let (request, response) = read::<(u64, Response)>(&mut stream).expect("an answer");
        let Response::Reply(reply) = response else {
            panic!("request {request}: expected a reply, got {response:?}");
        };
        let total: Result<u64, String> = postcard::from_bytes(&reply).expect("decodes");
        assert!(
            answers.insert(request, total).is_none(),
            "request {request} answered twice"
        );
    }
    // Each worker's two calls ran one after the other, in either order: the
    // answer to each is its own add, or the sum if it ran second.
    for id in 0..10u64 {
        let first = &answers[&(100 * id)];
        let second = &answers[&(100 * id + 1)];
        assert!(
            matches!((first, second), (Ok(1), Ok(11)) | (Ok(11), Ok(10))),
            "worker {id}: the call adding 1 got {first:?}, the one adding 10 got {second:?}"
        );
    }
}
