//! An HTTP service with one worker per user id, on tokio.
//!
//! `POST /users/{id}/visits` counts a visit of user `id` and answers with
//! the user's count so far. Each user's count lives in that user's worker,
//! started on the user's first request and found again by the id on every
//! later one; the workers run as tasks on the service's own tokio runtime
//! (`Executor::Tokio`).
//!
//! What operators look at: `GET /metrics` serves the registry's metrics
//! in Prometheus' text format (through `metrics-exporter-prometheus`, the
//! recorder installed before the registry is created), and `GET /health`
//! the registry's health snapshot (`GenRegistry::stats`) as JSON.
//!
//! The program puts itself under a bounded load — 32 clients, each making
//! 200 requests over its own keep-alive TCP connection to the service's
//! loopback port — prints what it measured, then scrapes `/metrics` and
//! `/health` and checks the counters against the load it sent: one start
//! per distinct user, one call per request. If Debian's `prometheus` is
//! installed, it also runs a real Prometheus server on loopback that
//! scrapes the service, and asks Prometheus' HTTP API for the same
//! counters, as a dashboard would (without it, it says so and skips only
//! that part). Then it shuts down gracefully: the server finishes its
//! requests in flight, then every worker's `terminate` runs, and the
//! program checks that none was missed.
//!
//! ```sh
//! cargo run -p http_service            # from the repository's root
//! cargo run -p http_service --release  # figures worth comparing
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

mod prometheus;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The registry's name: the `registry` label of its metrics.
const REGISTRY: &str = "sessions";

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

/// The handlers' state: cheap to clone (three `Arc`s).
#[derive(Clone)]
struct App {
    sessions: GenRegistry<Session>,
    stats: Arc<Stats>,
    metrics: PrometheusHandle,
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

/// `GET /metrics`: every metric of the process, in Prometheus' text format.
async fn render_metrics(State(app): State<App>) -> String {
    app.metrics.render()
}

/// `GET /health`: the registry's health snapshot, as JSON.
async fn health(State(app): State<App>) -> ([(header::HeaderName, &'static str); 1], String) {
    let s = app.sessions.stats();
    let resident = s.resident.map_or("null".to_owned(), |n| n.to_string());
    let body = format!(
        r#"{{"starting":{},"running":{},"in_back_off":{},"stopping":{},"queued":{},"oldest_wait_seconds":{},"resident":{}}}"#,
        s.starting,
        s.running,
        s.in_back_off,
        s.stopping,
        s.queued,
        s.oldest_wait.as_secs_f64(),
        resident
    );
    ([(header::CONTENT_TYPE, "application/json")], body)
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

/// An HTTP/1 connection to `addr`, kept alive.
async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; it ends when `sender` is dropped, and its
    // errors surface in `send_request`.
    tokio::spawn(connection);
    Ok(sender)
}

/// `GET http://{addr}{path}`: the body, if the status is 200.
async fn get_text(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let mut sender = connect(addr).await?;
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8(body.to_vec())?;
    if status != StatusCode::OK {
        return Err(format!("GET {path}: {status}: {body}").into());
    }
    Ok(body)
}

/// The value of the sample `series` (a metric's name and labels, as
/// Prometheus' text format writes them) in a `/metrics` page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// One client: a keep-alive connection, `REQUESTS_PER_CLIENT` requests in a
/// row over it; the latency of each.
async fn client(addr: SocketAddr, client: u64) -> Result<Vec<Duration>, BoxError> {
    let mut sender = connect(addr).await?;

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
    // The recorder first: a registry resolves its metrics when it is made.
    // Buckets (in seconds) make the histograms Prometheus histograms, which
    // `histogram_quantile` aggregates across instances.
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0])?
        .install_recorder()?;
    // The exporter's histograms need their upkeep now and then.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let stats = Arc::new(Stats::default());
    // The workers are tasks on this runtime, beside the server's.
    let sessions = GenRegistry::<Session>::new(
        Options::default()
            .name(REGISTRY)
            .executor(Executor::Tokio(tokio::runtime::Handle::current())),
    )?;
    let app = Router::new()
        .route("/users/{id}/visits", post(visit))
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .with_state(App {
            sessions: sessions.clone(),
            stats: stats.clone(),
            metrics,
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

    // What an operator sees: the service's own pages, then Prometheus.
    let requests = CLIENTS * REQUESTS_PER_CLIENT;
    let page = get_text(addr, "/metrics").await?;
    let series = |name: &str| format!("{name}{{registry=\"{REGISTRY}\"}}");
    let starts = sample(&page, &series("gen_registry_starts_total"));
    let calls = sample(&page, &series("gen_registry_calls_total"));
    let live = sample(&page, &series("gen_registry_workers"));
    println!("/metrics: {starts:?} starts, {calls:?} calls, {live:?} live workers");
    assert_eq!(starts, Some(USERS as f64), "one start per distinct user");
    assert_eq!(calls, Some(requests as f64), "one call per request");
    let health = get_text(addr, "/health").await?;
    println!("/health: {health}");
    assert!(
        health.contains(&format!(r#""running":{USERS},"#)),
        "every user's worker runs"
    );
    let expected = [
        ("gen_registry_starts_total", USERS as f64),
        ("gen_registry_calls_total", requests as f64),
    ];
    prometheus::check(addr, REGISTRY, &expected).await?;

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
