//! The check an operator's dashboard makes: a real Prometheus server (from
//! Debian's `prometheus` package) scrapes the service's `/metrics` on
//! loopback, and its HTTP API is asked for the registry's counters.

use crate::{BoxError, get_text};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to start, scrape and answer.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs Prometheus against the service at `target` until its API reports
/// each of `expected` (a counter of the registry named `registry`, and its
/// value). Without the `prometheus` binary, says so and returns.
pub async fn check(
    target: SocketAddr,
    registry: &str,
    expected: &[(&str, f64)],
) -> Result<(), BoxError> {
    let Some(binary) = on_path("prometheus") else {
        println!(
            "prometheus: not installed (Debian's `prometheus` package); \
             the check through a real Prometheus server is skipped"
        );
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("http_service-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = Server::start(&binary, &dir, target)?;
    let result = wait_for(server.addr, registry, expected).await;
    let log = server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|e| format!("{e}; Prometheus' log ends with:\n{log}").into())
}

/// Asks Prometheus for each counter until all have their expected value.
async fn wait_for(
    prometheus: SocketAddr,
    registry: &str,
    expected: &[(&str, f64)],
) -> Result<(), BoxError> {
    let began = Instant::now();
    loop {
        let mut seen = Vec::new();
        for (metric, _) in expected {
            let query = format!("{metric}{{registry=\"{registry}\"}}");
            seen.push(query_value(prometheus, &query).await.ok().flatten());
        }
        let all = expected
            .iter()
            .zip(&seen)
            .all(|((_, want), got)| *got == Some(*want));
        if all {
            println!(
                "prometheus {prometheus} scraped the service; its API answers {}",
                expected
                    .iter()
                    .map(|(metric, value)| format!("{metric}{{registry=\"{registry}\"}} = {value}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(());
        }
        if began.elapsed() > DEADLINE {
            return Err(format!(
                "Prometheus did not report {expected:?} within {DEADLINE:?}: it reported {seen:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of an instant query's single series; `None` while there is
/// none yet.
async fn query_value(prometheus: SocketAddr, query: &str) -> Result<Option<f64>, BoxError> {
    let path = format!("/api/v1/query?query={}", percent_encoded(query));
    let answer: serde_json::Value = serde_json::from_str(&get_text(prometheus, &path).await?)?;
    let value = &answer["data"]["result"][0]["value"][1];
    Ok(value.as_str().and_then(|v| v.parse().ok()))
}

/// `s` as a URL's query value: every byte but letters, digits and `-_.~`
/// percent-encoded.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of `program` in `$PATH`, if it is there.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// A Prometheus server of this run, stopped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts Prometheus on a free loopback port, its data in `dir`,
    /// scraping `target` every second.
    fn start(binary: &Path, dir: &Path, target: SocketAddr) -> Result<Server, BoxError> {
        // A port the system hands out, free once this listener is closed.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n\
                 scrape_configs:\n  - job_name: http_service\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )?;
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Server { child, addr, log })
    }

    /// Stops the server; the end of its log.
    fn stop(mut self) -> String {
        self.kill();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
