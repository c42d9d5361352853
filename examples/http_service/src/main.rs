//! An HTTP service with one worker per user id, on tokio.
//!
//! `POST /users/{id}/visits` counts a visit of user `id` and answers with
//! the user's count so far. Each user's count lives in that user's worker,
//! started on the user's first request and found again by the id on every
//! later one; the workers run as tasks on the service's own tokio runtime
//! (`Executor::Tokio`).
//!
//! The program puts itself under a bounded load — 32 clients, each making
//! 200 requests over its own keep-alive TCP connection to the service's
//! loopback port — prints what it measured, then shuts down gracefully: the
//! server finishes its requests in flight, then every worker's `terminate`
//! runs, and the program checks that none was missed.
//!
//! ```sh
//! cargo run -p http_service            # from the repository's root
//! cargo run -p http_service --release  # figures worth comparing
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the workers report, for the figures and the final check.
#[derive(Default)]
struct Stats {
    started: AtomicU64,
    terminated: AtomicU64,
    /// Visits counted by the workers that ended.
    visits: AtomicU64,
}

/// One user's session: the user's visits.
struct Session {
    visits: u64,
    stats: Arc<Stats>,
}

/// Count a visit; the reply is the user's count so far.
struct Visit;

impl Worker for Session {
    type Id = u64; // the user id
    type Args = Arc<Stats>;
    type Request = Visit;
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_user: &u64, stats: Arc<Stats>, _: &Context<Self>) -> Result<Self, Self::Error> {
        // A real service loads the user's state here. The worker is a task
        // on the service's tokio runtime, so tokio-based clients (sqlx,
        // reqwest, tonic) can be awaited here as in any handler.
        stats.started.fetch_add(1, Ordering::Relaxed);
        Ok(Session { visits: 0, stats })
    }

    async fn handle_call(&mut self, _: Visit, _: &mut Context<Self>) -> u64 {
        self.visits += 1;
        self.visits
    }

    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        // ...and saves it here.
        self.stats.visits.fetch_add(self.visits, Ordering::Relaxed);
        self.stats.terminated.fetch_add(1, Ordering::Relaxed);
    }
}

/// The handlers' state: cheap to clone (two `Arc`s).
#[derive(Clone)]
struct App {
    sessions: GenRegistry<Session>,
    stats: Arc<Stats>,
}

/// `POST /users/{id}/visits`.
async fn visit(State(app): State<App>, Path(user): Path<u64>) -> Result<String, StatusCode> {
    let session = app
        .sessions
        .lookup_or_start(user, app.stats.clone())
        .await
        .map_err(status)?;
    let visits = session.call(Visit).await.map_err(status)?;
    Ok(visits.to_string())
}

/// The HTTP status of a registry error.
fn status(error: Error<Session>) -> StatusCode {
    match error {
        Error::RegistryStopped => StatusCode::SERVICE_UNAVAILABLE,
        Error::StartTimeout(_) | Error::CallTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

const CLIENTS: u64 = 32;
const REQUESTS_PER_CLIENT: u64 = 200;
const USERS: u64 = 1_000;
/// The whole load must end within this, or the program fails.
const LOAD_DEADLINE: Duration = Duration::from_secs(120);

/// One client: a keep-alive connection, `REQUESTS_PER_CLIENT` requests in a
/// row over it; the latency of each.
async fn client(addr: SocketAddr, client: u64) -> Result<Vec<Duration>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; it ends when `sender` is dropped, and its
    // errors surface in `send_request`.
    tokio::spawn(connection);

    let mut latencies = Vec::with_capacity(REQUESTS_PER_CLIENT as usize);
    for i in 0..REQUESTS_PER_CLIENT {
        // 7919 is prime to USERS: every client's requests go round all users.
        let user = (client * REQUESTS_PER_CLIENT + i) * 7919 % USERS;
        let request = Request::post(format!("/users/{user}/visits"))
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        latencies.push(sent.elapsed());
        if status != StatusCode::OK {
            return Err(format!("POST /users/{user}/visits: {status}").into());
        }
    }
    Ok(latencies)
}

/// Runs every client at once; the latencies of all their requests.
async fn load(addr: SocketAddr) -> Result<Vec<Duration>, BoxError> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(addr, c)))
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let stats = Arc::new(Stats::default());
    // The workers are tasks on this runtime, beside the server's.
    let sessions = GenRegistry::<Session>::new(
        Options::default().executor(Executor::Tokio(tokio::runtime::Handle::current())),
    )?;
    let app = Router::new()
        .route("/users/{id}/visits", post(visit))
        .with_state(App {
            sessions: sessions.clone(),
            stats: stats.clone(),
        });

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    // A real service waits for ctrl-c or SIGTERM (`tokio::signal`) instead.
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    println!("load: {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests over {USERS} users");
    let began = Instant::now();
    let mut latencies = tokio::time::timeout(LOAD_DEADLINE, load(addr)).await??;
    let elapsed = began.elapsed();
    latencies.sort_unstable();
    println!(
        "{} requests in {:.2} s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        millis(percentile(&latencies, 50)),
        millis(percentile(&latencies, 99)),
    );
    println!("workers started: {}", stats.started.load(Ordering::Relaxed));

    // Graceful shutdown, in this order: the server stops accepting and
    // finishes the requests in flight, then every worker runs `terminate`.
    let _ = stop.send(());
    server.await??;
    sessions.shutdown().await;

    let started = stats.started.load(Ordering::Relaxed);
    let terminated = stats.terminated.load(Ordering::Relaxed);
    let visits = stats.visits.load(Ordering::Relaxed);
    println!("shut down: {terminated} terminate(s) run, {visits} visits saved");
    assert_eq!(terminated, started, "a worker ended without its terminate");
    assert_eq!(visits, CLIENTS * REQUESTS_PER_CLIENT, "a visit was lost");
    Ok(())
}
