//! The RPC client: requests to a peer and their answers, many at once over
//! one authenticated connection per peer, kept between requests.
//!
//! Each request gets an id on its connection; a task per connection writes
//! the frames waiting at a time in one write, and another reads the
//! answers and hands each to the request of its id. Whether a failed
//! request may be sent again depends on where it failed, and [`RpcFail`]
//! says which: only a request that never left is safe to send twice.

use crate::Config;
use crate::tls::{self, Tls};
use crate::wire::{self, CONNECTION, HANDSHAKE, Io, Request, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Why an RPC failed.
pub(crate) enum RpcFail {
    /// The request never left: safe to send again.
    NotSent,
    /// The peer refused this node, or this node the peer, while connecting
    /// (a certificate that does not check, another cluster secret): the
    /// request never left, and sending it again would meet the same fate.
    Refused(String),
    /// The request cannot be sent: its frame exceeds the limit.
    Invalid(String),
    /// It was sent; it may have been handled.
    Sent(String),
    /// No answer within the time given; it may have been handled.
    Timeout,
}

/// An open connection's queue of frames for its writing task, and the
/// requests waiting for their answers.
struct Open {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    waiting: HashMap<u64, oneshot::Sender<Response>>,
}

/// One connection to a peer, shared by every request to it.
struct Conn {
    /// Open, or failed for the reason given. Failing drops the queue, so the
    /// writing task writes what it holds, then closes its side.
    state: Mutex<Result<Open, String>>,
    next: AtomicU64,
}

impl Conn {
    fn open(&self) -> bool {
        self.state.lock().is_ok()
    }

    /// Fails every waiting request and any later one: the connection is
    /// broken, or closed.
    fn fail(&self, why: String) {
        let mut state = self.state.lock();
        if state.is_ok() {
            *state = Err(why);
        }
    }

    fn why(&self) -> String {
        match &*self.state.lock() {
            Err(why) => why.clone(),
            Ok(_) => "the connection closed".into(),
        }
    }

    /// Sends `request`; its answer arrives on the receiver. `NotSent` if
    /// the connection has failed, before the request left.
    fn send(
        &self,
        request: &Request,
        max: usize,
    ) -> Result<(u64, oneshot::Receiver<Response>), RpcFail> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let frame = wire::frame(&(id, request)).map_err(|e| RpcFail::Invalid(e.to_string()))?;
        // A frame the peer would refuse would close the connection under
        // every other request on it.
        if frame.len() - 4 > max {
            return Err(RpcFail::Invalid(format!(
                "a request of {} bytes exceeds the frame limit of {max}",
                frame.len() - 4
            )));
        }
        let (answer, receiver) = oneshot::channel();
        let Ok(open) = &mut *self.state.lock() else {
            return Err(RpcFail::NotSent);
        };
        if open.queue.send(frame).is_err() {
            return Err(RpcFail::NotSent);
        }
        open.waiting.insert(id, answer);
        Ok((id, receiver))
    }

    fn forget(&self, id: u64) {
        if let Ok(open) = &mut *self.state.lock() {
            open.waiting.remove(&id);
        }
    }

    /// Hands each answer read from `stream` to its request, until the
    /// connection fails.
    async fn read_answers(&self, mut stream: impl tokio::io::AsyncRead + Unpin, max: usize) {
        loop {
            match wire::read_frame::<(u64, Response)>(&mut stream, max).await {
                Ok((CONNECTION, Response::Failed(why))) => {
                    return self.fail(format!("the peer closed the connection: {why}"));
                }
                Ok((id, response)) => {
                    let answer = match &mut *self.state.lock() {
                        Ok(open) => open.waiting.remove(&id),
                        Err(_) => None,
                    };
                    if let Some(answer) = answer {
                        let _ = answer.send(response);
                    }
                }
                Err(e) => return self.fail(e.to_string()),
            }
        }
    }
}

/// This node's connections to its peers.
pub(crate) struct Peers {
    secret: Vec<u8>,
    tls: Option<Tls>,
    /// The address this node listens on: its connections come from it.
    listen: IpAddr,
    max_frame: usize,
    /// The connection to each peer, by address.
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// Taken while connecting to a peer, so that requests arriving together
    /// share one new connection; one per peer, so that a peer slow to
    /// answer delays no connection to another.
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Peers {
    pub(crate) fn new(config: &Config) -> Self {
        Peers {
            secret: config.secret.clone(),
            tls: config.tls.clone(),
            listen: config.listen.ip(),
            max_frame: config.max_frame,
            conns: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
        }
    }

    /// Sends one request to the node at `address` and waits for its answer.
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
            let conn = self.conn(address).await?;
            sending.store(true, Ordering::Relaxed);
            let (id, answer) = conn.send(request, self.max_frame)?;
            let _forget = Forget(&conn, id);
            answer.await.map_err(|_| RpcFail::Sent(conn.why()))
        };
        match timeout(within, run).await {
            Ok(outcome) => outcome,
            Err(_) if sending.load(Ordering::Relaxed) => Err(RpcFail::Timeout),
            Err(_) => Err(RpcFail::NotSent),
        }
    }

    /// Closes every connection.
    pub(crate) fn close(&self) {
        for (_, conn) in self.conns.lock().drain() {
            conn.fail("this node closed its connections".into());
        }
    }

    /// The open connection to `address`, made if there is none.
    async fn conn(&self, address: &str) -> Result<Arc<Conn>, RpcFail> {
        if let Some(conn) = self.open_conn(address) {
            return Ok(conn);
        }
        let dialing = self
            .dialing
            .lock()
            .entry(address.into())
            .or_default()
            .clone();
        let _dialing = dialing.lock().await;
        if let Some(conn) = self.open_conn(address) {
            return Ok(conn);
        }
        let stream = self.connect(address).await.map_err(|e| {
            if tls::is_refusal(&e) || e.kind() == io::ErrorKind::PermissionDenied {
                RpcFail::Refused(format!("{address}: {e}"))
            } else {
                RpcFail::NotSent
            }
        })?;
        let (reader, mut writer) = tokio::io::split(stream);
        let (queue, mut frames) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            state: Mutex::new(Ok(Open {
                queue,
                waiting: HashMap::new(),
            })),
            next: AtomicU64::new(CONNECTION + 1),
        });
        let reading = conn.clone();
        let max = self.max_frame;
        tokio::spawn(async move {
            reading.read_answers(BufReader::new(reader), max).await;
        });
        let writing = Arc::downgrade(&conn);
        tokio::spawn(async move {
            if let Err(e) = wire::write_frames(&mut writer, &mut frames).await
                && let Some(conn) = writing.upgrade()
            {
                conn.fail(e.to_string());
            }
        });
        self.conns.lock().insert(address.to_string(), conn.clone());
        Ok(conn)
    }

    fn open_conn(&self, address: &str) -> Option<Arc<Conn>> {
        self.conns.lock().get(address).filter(|c| c.open()).cloned()
    }

    /// A connection to `address`, through TLS if this node uses it, on
    /// which both sides proved the cluster secret.
    async fn connect(&self, address: &str) -> io::Result<Box<dyn Io>> {
        let tcp = self.dial(address).await?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Io> = match &self.tls {
            Some(tls) => Box::new(
                timeout(HANDSHAKE, tls.connect(address, tcp))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS timed out"))??,
            ),
            None => Box::new(tcp),
        };
        wire::connect(&mut stream, &self.secret, HANDSHAKE).await?;
        Ok(stream)
    }

    /// A TCP connection to `address` from this node's own listening address
    /// (if it listens on one address), so that its peers, and firewall
    /// rules, see it come from the node it is.
    async fn dial(&self, address: &str) -> io::Result<TcpStream> {
        let to = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
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
}

/// Drops a request's place among the waiting ones once its caller stops
/// waiting (after a timeout; a no-op once its answer was handed over).
struct Forget<'a>(&'a Conn, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}
