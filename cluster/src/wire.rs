//! The node-to-node protocol: length-prefixed postcard frames over TCP.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of postcard.
//! A connection (over TLS, or plain TCP in a development cluster) starts
//! with a mutual challenge-response proving that both sides hold the
//! cluster secret (HMAC-SHA256 over both sides' fresh nonces; the secret
//! never crosses the wire), then carries many requests at once: each
//! request frame is `(request id, Request)`, and its answer is
//! `(request id, Response)`, in whatever order the answers are ready.
//! Frames that are ready together are written together, in one write.
//! A frame longer than the limit, or one that does not decode, gets an
//! error frame under request id 0 and the connection is closed: its byte
//! stream can no longer be trusted, and the node goes on serving others.

use crate::ClusterError;
use crate::error::WorkerFailure;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a handshake may take before the connection is dropped.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(2);
/// The largest handshake frame: a nonce and a MAC, with room to spare.
const HANDSHAKE_FRAME: usize = 256;
const CLIENT_LABEL: &[u8] = b"gen_registry_cluster client";
const SERVER_LABEL: &[u8] = b"gen_registry_cluster server";

/// A request from one node to another. Worker types travel as postcard
/// bytes of their own, so that the frame's type does not depend on the
/// worker type and a payload that fails to decode is told apart from a
/// broken frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Call {
        shard: u32,
        epoch: i64,
        id: Vec<u8>,
        args: Vec<u8>,
        request: Vec<u8>,
        timeout_ms: u64,
        /// The caller's span, as a W3C `traceparent`, if it is traced.
        trace: Option<String>,
    },
    Cast {
        shard: u32,
        epoch: i64,
        id: Vec<u8>,
        args: Vec<u8>,
        message: Vec<u8>,
        /// As in `Call`.
        trace: Option<String>,
    },
    Stop {
        shard: u32,
        epoch: i64,
        id: Vec<u8>,
        /// As in `Call`.
        trace: Option<String>,
    },
    Count,
}

/// The answer to a [`Request`]. Every failure is typed, so the caller gets
/// the same [`ClusterError`] as from a worker of its own node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Reply(Vec<u8>),
    Done,
    Count(u64),
    /// This node does not hold that shard at that epoch: the request reached
    /// no worker; refresh the view and retry.
    NotOwner,
    NotFound,
    /// A request this node could not decode, or a reply it could not encode.
    Failed(String),
    /// Every worker of the id ended before reading the request: no handler
    /// saw it; retry.
    NotDelivered,
    /// The worker's error, with this node's name and the id.
    Worker(WorkerFailure),
    /// No answer from the worker within this many milliseconds: the request
    /// may still be handled.
    Timeout(u64),
}

/// A worker's value (an id, args, a request, a reply, a message) as the
/// bytes it travels in.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ClusterError> {
    postcard::to_stdvec(value).map_err(|e| ClusterError::Codec(e.to_string()))
}

/// A worker's value from the bytes it travelled in.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClusterError> {
    postcard::from_bytes(bytes).map_err(|e| ClusterError::Codec(e.to_string()))
}

#[derive(Serialize, Deserialize)]
enum Handshake {
    Challenge([u8; 32]),
    Prove { nonce: [u8; 32], mac: Vec<u8> },
    Welcome { mac: Vec<u8> },
    Refused,
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream ended or failed.
    Io(io::Error),
    /// The length prefix exceeds the limit; nothing of the body was read.
    TooLarge(usize),
    /// The body is not a valid frame.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "connection failed: {e}"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit"),
            FrameError::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

/// A connection's byte stream: TLS over TCP, or plain TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Io for S {}

/// The request id under which a server reports a broken frame; requests
/// are numbered from 1.
pub(crate) const CONNECTION: u64 = 0;

/// `value` as a whole frame: its length, then its postcard bytes.
pub(crate) fn frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut frame = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> io::Result<()> {
    stream.write_all(&frame(value)?).await?;
    stream.flush().await
}

/// The most frames written at once.
const BATCH: usize = 256;

/// Writes the frames of `queue` until it closes, all those waiting at a
/// time in one write, then shuts the stream's writing side down.
pub(crate) async fn write_frames(
    stream: &mut (impl AsyncWrite + Unpin),
    queue: &mut UnboundedReceiver<Vec<u8>>,
) -> io::Result<()> {
    let mut frames = Vec::with_capacity(BATCH);
    let mut buffer = Vec::new();
    while queue.recv_many(&mut frames, BATCH).await > 0 {
        buffer.clear();
        for f in frames.drain(..) {
            buffer.extend_from_slice(&f);
        }
        stream.write_all(&buffer).await?;
        stream.flush().await?;
    }
    stream.shutdown().await
}

pub(crate) async fn read_frame<T: DeserializeOwned>(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(FrameError::Io)?;
    postcard::from_bytes(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn nonce() -> io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(n)
}

fn mac(secret: &[u8], label: &[u8], first: &[u8; 32], second: &[u8; 32]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(label);
    m.update(first);
    m.update(second);
    m
}

/// A handshake frame that could not be read: the network's failure as it
/// is, anything else a refusal.
fn handshake_failed(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(e) => e,
        other => refused(&other.to_string()),
    }
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// The server's side of the handshake: `Ok` once the client proved it holds
/// `secret`. A client that does not is sent `Refused` and gets nothing else.
pub(crate) async fn accept(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    secret: &[u8],
    within: Duration,
) -> io::Result<()> {
    let run = async {
        let ours = nonce()?;
        write_frame(stream, &Handshake::Challenge(ours)).await?;
        let (theirs, proof) = match read_frame(stream, HANDSHAKE_FRAME).await {
            Ok(Handshake::Prove { nonce, mac }) => (nonce, mac),
            Ok(_) => return Err(refused("expected a proof")),
            Err(e) => return Err(handshake_failed(e)),
        };
        if mac(secret, CLIENT_LABEL, &ours, &theirs)
            .verify_slice(&proof)
            .is_err()
        {
            let _ = write_frame(stream, &Handshake::Refused).await;
            return Err(refused("wrong cluster secret"));
        }
        let answer = mac(secret, SERVER_LABEL, &theirs, &ours)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(stream, &Handshake::Welcome { mac: answer }).await
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The client's side: proves it holds `secret`, and checks that the server
/// does too.
pub(crate) async fn connect(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    secret: &[u8],
    within: Duration,
) -> io::Result<()> {
    let run = async {
        let theirs = match read_frame(stream, HANDSHAKE_FRAME).await {
            Ok(Handshake::Challenge(n)) => n,
            Ok(_) => return Err(refused("expected a challenge")),
            Err(e) => return Err(handshake_failed(e)),
        };
        let ours = nonce()?;
        let proof = mac(secret, CLIENT_LABEL, &theirs, &ours)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(
            stream,
            &Handshake::Prove {
                nonce: ours,
                mac: proof,
            },
        )
        .await?;
        match read_frame(stream, HANDSHAKE_FRAME).await {
            Ok(Handshake::Welcome { mac: answer }) => mac(secret, SERVER_LABEL, &ours, &theirs)
                .verify_slice(&answer)
                .map_err(|_| refused("the peer does not hold the cluster secret")),
            Ok(_) => Err(refused("the peer refused our cluster secret")),
            Err(e) => Err(handshake_failed(e)),
        }
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}
