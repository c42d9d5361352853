//! The RPC server: answers peers' requests for the shards this node serves.
//!
//! A peer completes TLS (if the node uses it) and proves the cluster secret
//! before anything it sends is read, then sends requests, many at once, on
//! its connection: each is answered by a task of its own, and its answer
//! written under its request id as soon as it is ready. A request reaches a
//! worker only if this node serves the shard at the epoch the peer named,
//! and only for an id that hashes to that shard; otherwise the answer is
//! "not owner", and the peer refreshes its view and retries elsewhere.

use crate::hash::shard_of;
use crate::node::Node;
use crate::wire::{self, CONNECTION, FrameError, HANDSHAKE, Io, Request, Response, decode, encode};
use crate::{ClusterError, ClusterWorker, trace};
use gen_registry::Error;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tracing::{Instrument, Span};

/// The most requests of one connection being answered at a time; the
/// connection's next frames are read once one of them is done.
const IN_FLIGHT: usize = 4096;

/// Accepts peers' connections: each one completes TLS (if the node uses
/// it) and proves the cluster secret, then sends requests.
pub(crate) async fn serve<W: ClusterWorker>(node: Arc<Node<W>>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            match authenticate(&node, stream).await {
                Ok(stream) => answer_all(node, stream).await,
                // Closed before it said anything: a health check or a port
                // scan, not a peer; nothing an operator needs to see.
                Err(e) if closed_early(&e) => tracing::debug!(
                    node = %node.config.name,
                    %peer,
                    error = %e,
                    "a connection closed during the handshake"
                ),
                Err(e) => tracing::warn!(
                    node = %node.config.name,
                    %peer,
                    error = %e,
                    "refused a connection from a peer"
                ),
            }
        });
    }
}

/// Whether a failed handshake is only the other side closing (or resetting)
/// the connection before it completed: no refusal, no timeout.
fn closed_early(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// TLS (if the node uses it), then the cluster secret.
async fn authenticate<W: ClusterWorker>(
    node: &Node<W>,
    stream: TcpStream,
) -> std::io::Result<Box<dyn Io>> {
    let _ = stream.set_nodelay(true);
    let mut stream: Box<dyn Io> = match &node.config.tls {
        Some(tls) => {
            Box::new(timeout(HANDSHAKE, tls.accept(stream)).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS timed out")
            })??)
        }
        None => Box::new(stream),
    };
    wire::accept(&mut stream, &node.config.secret, HANDSHAKE).await?;
    Ok(stream)
}

/// Reads a peer's requests and answers each as soon as it can, until the
/// peer closes the connection or sends a broken frame; the answers of the
/// requests read before then are all written.
async fn answer_all<W: ClusterWorker>(node: Arc<Node<W>>, stream: Box<dyn Io>) {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let (answers, mut frames) = mpsc::unbounded_channel();
    let writing = tokio::spawn(async move {
        let _ = wire::write_frames(&mut writer, &mut frames).await;
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let max = node.config.max_frame;
    loop {
        let (id, request) = match wire::read_frame::<(u64, Request)>(&mut reader, max).await {
            Ok(framed) => framed,
            Err(FrameError::Io(_)) => break,
            Err(e) => {
                if let Ok(f) = wire::frame(&(CONNECTION, Response::Failed(e.to_string()))) {
                    let _ = answers.send(f);
                }
                break;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let node = node.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let response = node.answer(request).await;
            let _ = answers.send(answer_frame(id, response, max));
            drop(slot);
        });
    }
    drop(answers);
    let _ = writing.await;
}

/// The frame of the answer to request `id`; an error instead of an answer
/// the peer would refuse as too large.
fn answer_frame(id: u64, response: Response, max: usize) -> Vec<u8> {
    let too_large = |n: usize| {
        Response::Failed(format!(
            "a reply of {n} bytes exceeds the frame limit of {max}"
        ))
    };
    match wire::frame(&(id, &response)) {
        Ok(f) if f.len() - 4 <= max => f,
        Ok(f) => wire::frame(&(id, too_large(f.len() - 4))).unwrap_or_default(),
        Err(e) => wire::frame(&(id, Response::Failed(e.to_string()))).unwrap_or_default(),
    }
}

impl<W: ClusterWorker> Node<W> {
    /// Answers one request from a peer.
    async fn answer(&self, request: Request) -> Response {
        self.metrics.served.increment(1);
        let span = match &request {
            Request::Call { shard, trace, .. } => trace::serving("call", *shard, trace.as_deref()),
            Request::Cast { shard, trace, .. } => trace::serving("cast", *shard, trace.as_deref()),
            Request::Stop { shard, trace, .. } => trace::serving("stop", *shard, trace.as_deref()),
            Request::Count => Span::none(),
        };
        match span.is_disabled() {
            true => self.deliver(request).await,
            false => self.deliver(request).instrument(span).await,
        }
    }

    /// Delivers one request from a peer to the registry of its shard.
    async fn deliver(&self, request: Request) -> Response {
        match request {
            Request::Call {
                shard,
                epoch,
                id,
                args,
                request,
                timeout_ms,
                trace: _,
            } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let (id, args, request) =
                    match self.decode_addressed::<W::Request>(shard, &id, &args, &request) {
                        Ok(d) => d,
                        Err(e) => return Response::Failed(e.to_string()),
                    };
                let _slot = match self.admit(&registry, &id) {
                    Ok(slot) => slot,
                    Err(e) => return respond(e),
                };
                let within = Duration::from_millis(timeout_ms).min(self.config.call_timeout);
                match timeout(within, registry.call(id.clone(), args, request)).await {
                    Ok(Ok(reply)) => match encode(&reply) {
                        Ok(bytes) => Response::Reply(bytes),
                        Err(e) => Response::Failed(e.to_string()),
                    },
                    Ok(Err(e)) => self.failed(&id, e),
                    Err(_) => timed_out(within),
                }
            }
            Request::Cast {
                shard,
                epoch,
                id,
                args,
                message,
                trace: _,
            } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let (id, args, message) =
                    match self.decode_addressed::<W::Message>(shard, &id, &args, &message) {
                        Ok(d) => d,
                        Err(e) => return Response::Failed(e.to_string()),
                    };
                let _slot = match self.admit(&registry, &id) {
                    Ok(slot) => slot,
                    Err(e) => return respond(e),
                };
                let cast = registry.cast(id.clone(), args, message);
                match timeout(self.config.call_timeout, cast).await {
                    Ok(Ok(())) => Response::Done,
                    Ok(Err(e)) => self.failed(&id, e),
                    Err(_) => timed_out(self.config.call_timeout),
                }
            }
            Request::Stop {
                shard, epoch, id, ..
            } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let id = match self.decode_id(shard, &id) {
                    Ok(id) => id,
                    Err(e) => return Response::Failed(e.to_string()),
                };
                match timeout(self.config.call_timeout, registry.stop(&id)).await {
                    Ok(Ok(())) => Response::Done,
                    Ok(Err(e)) => self.failed(&id, e),
                    Err(_) => timed_out(self.config.call_timeout),
                }
            }
            Request::Count => Response::Count(self.local_count() as u64),
        }
    }

    /// The answer for a local registry's error on `id`: the one the caller
    /// turns back into the error a local caller would get.
    fn failed(&self, id: &W::Id, e: Error<W>) -> Response {
        match e {
            Error::RegistryStopped => Response::NotOwner,
            Error::NotDelivered => Response::NotDelivered,
            e => respond(self.worker_error(id, e)),
        }
    }

    /// The id, the args and the payload (a request or a message) of an
    /// operation a peer sent for one id of `shard`.
    fn decode_addressed<P: DeserializeOwned>(
        &self,
        shard: u32,
        id: &[u8],
        args: &[u8],
        payload: &[u8],
    ) -> Result<(W::Id, W::Args, P), ClusterError> {
        Ok((self.decode_id(shard, id)?, decode(args)?, decode(payload)?))
    }

    /// Decodes an id sent for `shard`, refusing one from another shard: a
    /// peer must not start a worker in a shard its id does not hash to.
    fn decode_id(&self, shard: u32, bytes: &[u8]) -> Result<W::Id, ClusterError> {
        if shard_of(bytes, self.shards) != shard {
            return Err(ClusterError::Codec(format!(
                "the id does not hash to shard {shard}"
            )));
        }
        decode(bytes)
    }
}

/// The answer that the caller turns back into `e`.
fn respond(e: ClusterError) -> Response {
    match e {
        ClusterError::NotFound => Response::NotFound,
        ClusterError::Timeout(d) => timed_out(d),
        ClusterError::Worker(failure) => Response::Worker(failure),
        other => Response::Failed(other.to_string()),
    }
}

fn timed_out(after: Duration) -> Response {
    Response::Timeout(after.as_millis() as u64)
}
