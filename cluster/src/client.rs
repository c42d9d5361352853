//! The RPC client: one request to a peer and its answer, over an
//! authenticated connection kept in a pool between requests.
//!
//! A connection carries one request at a time. Whether a failed request may
//! be sent again depends on where it failed, and [`RpcFail`] says which:
//! only a request that never left is safe to send twice.

use crate::Config;
use crate::wire::{self, HANDSHAKE, Request, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Idle connections kept per peer.
const POOL: usize = 64;

/// Why an RPC failed.
pub(crate) enum RpcFail {
    /// The request never left: safe to send again.
    NotSent,
    /// It was sent; it may have been handled.
    Sent(String),
    /// No answer within the time given; it may have been handled.
    Timeout,
}

/// This node's connections to its peers.
pub(crate) struct Peers {
    secret: Vec<u8>,
    /// The address this node listens on: its connections come from it.
    listen: IpAddr,
    max_frame: usize,
    /// Idle connections by peer address.
    pool: Mutex<HashMap<String, Vec<TcpStream>>>,
}

impl Peers {
    pub(crate) fn new(config: &Config) -> Self {
        Peers {
            secret: config.secret.clone(),
            listen: config.listen.ip(),
            max_frame: config.max_frame,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// Sends one request to the node at `address` and reads its answer.
    pub(crate) async fn rpc(
        &self,
        address: &str,
        request: &Request,
        within: Duration,
    ) -> Result<Response, RpcFail> {
        // Set once the request starts to leave: a timeout before that
        // (dialing, the handshake) sent nothing.
        let sending = AtomicBool::new(false);
        let run = async {
            let mut stream = match self.checkout(address) {
                Some(s) => s,
                None => {
                    let mut s = self.dial(address).await.map_err(|_| RpcFail::NotSent)?;
                    let _ = s.set_nodelay(true);
                    wire::connect(&mut s, &self.secret, HANDSHAKE)
                        .await
                        .map_err(|_| RpcFail::NotSent)?;
                    s
                }
            };
            sending.store(true, Ordering::Relaxed);
            wire::write_frame(&mut stream, request)
                .await
                .map_err(|e| RpcFail::Sent(e.to_string()))?;
            let response = wire::read_frame::<Response>(&mut stream, self.max_frame)
                .await
                .map_err(|e| RpcFail::Sent(e.to_string()))?;
            let mut pool = self.pool.lock();
            let idle = pool.entry(address.to_string()).or_default();
            if idle.len() < POOL {
                idle.push(stream);
            }
            Ok(response)
        };
        match timeout(within, run).await {
            Ok(outcome) => outcome,
            Err(_) if sending.load(Ordering::Relaxed) => Err(RpcFail::Timeout),
            Err(_) => Err(RpcFail::NotSent),
        }
    }

    /// Closes every idle connection.
    pub(crate) fn close(&self) {
        self.pool.lock().clear();
    }

    /// A connection to `address` from this node's own listening address (if
    /// it listens on one address), so that its peers, and firewall rules,
    /// see it come from the node it is.
    async fn dial(&self, address: &str) -> std::io::Result<TcpStream> {
        let to = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        let socket = if to.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let own = self.listen;
        if !own.is_unspecified() && own.is_ipv4() == to.is_ipv4() {
            socket.bind(SocketAddr::new(own, 0))?;
        }
        socket.connect(to).await
    }

    /// An idle connection to `address` that the peer has not closed.
    fn checkout(&self, address: &str) -> Option<TcpStream> {
        let mut pool = self.pool.lock();
        let idle = pool.get_mut(address)?;
        while let Some(stream) = idle.pop() {
            // Nothing is due on an idle connection: readable means closed
            // (or broken), and it would fail a request sent on it after
            // the request had left.
            match stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }
}
