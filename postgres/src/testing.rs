//! A real PostgreSQL server for tests and benches (feature `testing`),
//! started from Debian's `postgresql` package: `initdb` into a temporary
//! directory, the server on a free loopback port with its socket in that
//! directory, stopped and removed when the [`Server`] is dropped.
//!
//! Run as root, the server runs as the `postgres` system user the package
//! creates (PostgreSQL refuses to run as root); otherwise as the current
//! user. The binaries are found under `/usr/lib/postgresql/*/bin` (the
//! newest version), or in the directory `GEN_REGISTRY_PG_BIN` names.
//!
//! ```no_run
//! use gen_registry_postgres::testing::Server;
//! let server = Server::start().unwrap();
//! let url = server.url(); // postgresql://postgres@127.0.0.1:PORT/postgres
//! # let _ = url;
//! server.kill().unwrap(); // SIGKILL, the server and its backends: a crash
//! server.restart().unwrap(); // recovers from its write-ahead log
//! ```

use parking_lot::Mutex;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before it is a failure.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A PostgreSQL server of its own, in a temporary directory; stopped and
/// removed on drop. See the [module](self) documentation.
pub struct Server {
    bin: PathBuf,
    // Dropped after the server stops (see `Drop`).
    dir: Option<tempfile::TempDir>,
    port: u16,
    /// The user and group the server runs as, when started by root.
    user: Option<(u32, u32)>,
    postmaster: Mutex<Option<Child>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates a database cluster in a temporary directory and starts its
    /// server on a free loopback port; returns once it accepts connections,
    /// or an error (with the end of the server's log) after 60 s.
    ///
    /// ```no_run
    /// let server = gen_registry_postgres::testing::Server::start().unwrap();
    /// assert!(server.url().starts_with("postgresql://"));
    /// ```
    pub fn start() -> Result<Server, String> {
        let bin = binaries()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("gen_registry_pg_")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| {
                format!("handing {} to the postgres user: {e}", dir.path().display())
            })?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            // The cluster's own files need not survive a crash of the
            // machine: a test's server lives as long as the test.
            .arg("--no-sync")
            .current_dir(dir.path())
            .stdin(Stdio::null());
        as_user(&mut initdb, user);
        let out = initdb
            .output()
            .map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut server = Server {
            bin,
            dir: Some(dir),
            port: 0,
            user,
            postmaster: Mutex::new(None),
        };
        // A port free a moment ago may be taken by the time the server
        // binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A connection string for the server's `postgres` database, as the
    /// `postgres` superuser (trusted on loopback: no password).
    ///
    /// ```no_run
    /// let server = gen_registry_postgres::testing::Server::start().unwrap();
    /// let postgres = gen_registry_postgres::Postgres::new(&server.url()).unwrap();
    /// # let _ = postgres;
    /// ```
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port the server listens on (the same after a restart).
    ///
    /// ```no_run
    /// let server = gen_registry_postgres::testing::Server::start().unwrap();
    /// assert_ne!(server.port(), 0);
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and all its backends with SIGKILL, as a crash
    /// would; returns once the server process is gone. Nothing is flushed:
    /// what was committed is in the write-ahead log, which
    /// [`restart`](Self::restart) replays.
    ///
    /// ```no_run
    /// let server = gen_registry_postgres::testing::Server::start().unwrap();
    /// server.kill().unwrap();
    /// server.restart().unwrap();
    /// ```
    pub fn kill(&self) -> Result<(), String> {
        let mut postmaster = self.postmaster.lock();
        if let Some(mut child) = postmaster.take() {
            // The server leads a process group of its own: its backends too.
            signal("KILL", &format!("-{}", child.id()))?;
            child
                .wait()
                .map_err(|e| format!("waiting for the killed server: {e}"))?;
        }
        Ok(())
    }

    /// Starts the server again (after [`kill`](Self::kill)) on the same
    /// port and data; returns once it accepts connections again.
    ///
    /// ```no_run
    /// let server = gen_registry_postgres::testing::Server::start().unwrap();
    /// server.restart().unwrap(); // a running server is killed first
    /// ```
    pub fn restart(&self) -> Result<(), String> {
        self.kill()?;
        self.launch()
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the server")
            .path()
    }

    /// Starts the server process and waits until it is ready.
    fn launch(&self) -> Result<(), String> {
        let dir = self.dir();
        let log_path = dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("the server's log {}: {e}", log_path.display()))?;
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| format!("the server's log: {e}"))?,
            )
            .stderr(log)
            .process_group(0);
        as_user(&mut command, self.user);
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.join("postgres").display()))?;
        let pid = child.id();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the server on port {} exited ({status}) while starting: {}",
                    self.port,
                    tail(&log_path)
                ));
            }
            if ready(&dir.join("data/postmaster.pid"), pid) {
                *self.postmaster.lock() = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = signal("KILL", &format!("-{pid}"));
                let _ = child.wait();
                return Err(format!(
                    "the server on port {} was not ready within {START_DEADLINE:?}: {}",
                    self.port,
                    tail(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.lock().take() {
            // An immediate shutdown: the server ends its backends and
            // releases its shared memory; SIGKILL if it takes too long.
            let _ = signal("QUIT", &child.id().to_string());
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = signal("KILL", &format!("-{}", child.id()));
            let _ = child.wait();
        }
        drop(self.dir.take());
    }
}

/// Whether the server whose postmaster is `pid` says it is ready: the
/// eighth line of its `postmaster.pid` (PostgreSQL 10 and later).
fn ready(pid_file: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a process group).
fn signal(signal: &str, target: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {target} failed ({status})"))
    }
}

/// The directory of `initdb` and `postgres`.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("GEN_REGISTRY_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|e| {
        format!(
            "no PostgreSQL under /usr/lib/postgresql ({e}): install Debian's postgresql package"
        )
    })?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| {
            "no initdb under /usr/lib/postgresql/*/bin: install Debian's postgresql package"
                .to_owned()
        })
}

/// The `postgres` system user's uid and gid when running as root (the
/// server refuses root), `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| format!("who am I (/proc/self): {e}"))?
        .uid();
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            "running as root, and there is no postgres user to run the server as \
             (Debian's postgresql package creates it)"
                .to_owned()
        })
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("a free port: {e}"))
}
