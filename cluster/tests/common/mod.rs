//! The multi-process harness: an etcd of the test's own (a free loopback
//! port, its own data directory, killed on drop), `cluster-node` processes
//! on 127.0.0.x driven over their standard input and output, and the checker
//! that reads the incarnation log.
//!
//! Every wait has a deadline; every process is killed when its handle drops.

#![allow(dead_code)]

pub mod certs;
pub mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const SECRET: &str = "the test cluster's shared secret";
/// The lease TTL the nodes run with, and their fence margin.
pub const TTL: Duration = Duration::from_secs(3);
pub const MARGIN_MS: u64 = 1000;

/// Tests of one binary take turns: each runs an etcd and several nodes on a
/// small machine, and the fault tests depend on timely lease renewals.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The configuration of a node joined in the test's own process, on
/// 127.0.0.`host`, with the harness's lease and 16 shards.
pub fn config(etcd: &Etcd, name: &str, host: u8) -> gen_registry_cluster::Config {
    gen_registry_cluster::Config::new(name, [etcd.url()], SECRET)
        .listen(format!("127.0.0.{host}:0").parse().expect("an address"))
        .lease_ttl(TTL)
        .fence_margin(Duration::from_millis(MARGIN_MS))
        .shards(16)
}

/// The runtime the nodes of an in-process test run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Waits until `check` holds, or panics with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts an etcd on a free loopback port, with its own data directory.
    pub fn start() -> Etcd {
        let which = Command::new("etcd").arg("--version").output();
        assert!(
            which.is_ok_and(|o| o.status.success()),
            "etcd is not on PATH: install it (Debian: apt-get install etcd-server)"
        );
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.run();
        etcd
    }

    pub fn url(&self) -> String {
        self.url_on(1)
    }

    /// etcd also listens on 127.0.0.6: a node given that address can be cut
    /// off from etcd by address alone.
    pub fn url_on(&self, host: u8) -> String {
        format!("http://127.0.0.{host}:{}", self.client_port)
    }

    fn run(&mut self) {
        let client = self.url();
        let listen = format!("{client},{}", self.url_on(6));
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &listen,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("test={peer}"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.client_port);
        wait_until(Duration::from_secs(20), "etcd to listen", || {
            std::net::TcpStream::connect(&address).is_ok()
        });
    }

    /// Stops etcd (SIGKILL: the harshest stop) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Node {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pub address: String,
}

impl Node {
    /// Starts `cluster-node` named `name` on 127.0.0.`host`, and waits until
    /// it has joined.
    pub fn start(etcd: &Etcd, name: &str, host: u8, log: &Path) -> Node {
        Node::start_with(etcd, name, host, log, &[])
    }

    pub fn start_with(etcd: &Etcd, name: &str, host: u8, log: &Path, extra: &[&str]) -> Node {
        Node::start_via(&etcd.url(), name, host, log, extra)
    }

    /// A node on 16 shards whose probes keep their totals in `pg`'s
    /// PostgreSQL (persisted state, written on request and on every end).
    pub fn on_postgres(
        etcd: &Etcd,
        name: &str,
        host: u8,
        log: &Path,
        pg: &gen_registry_postgres::testing::Server,
    ) -> Node {
        Node::start_with(
            etcd,
            name,
            host,
            log,
            &["--pg", &pg.url(), "--shards", "16"],
        )
    }

    /// Starts a node that reaches etcd at `etcd_url` (a [`Proxy`]'s).
    pub fn start_via(etcd_url: &str, name: &str, host: u8, log: &Path, extra: &[&str]) -> Node {
        let program = Path::new(env!("CARGO_BIN_EXE_cluster-node"));
        Node::start_program(program, etcd_url, name, host, log, extra)
    }

    /// Starts the node program at `program` (another build of
    /// `cluster-node`).
    pub fn start_program(
        program: &Path,
        etcd_url: &str,
        name: &str,
        host: u8,
        log: &Path,
        extra: &[&str],
    ) -> Node {
        let mut child = Command::new(program)
            .args(["--etcd", etcd_url, "--name", name, "--secret", SECRET])
            .args(["--listen", &format!("127.0.0.{host}:0")])
            .arg("--log")
            .arg(log)
            .args([
                "--ttl",
                &TTL.as_secs().to_string(),
                "--margin-ms",
                &MARGIN_MS.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cluster-node starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            name: name.to_string(),
            child,
            stdin,
            lines,
            address: String::new(),
        };
        let ready = node.expect("ready", Duration::from_secs(30));
        node.address = ready
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        node
    }

    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the node reads its commands");
        self.stdin.flush().expect("the node reads its commands");
    }

    /// The next line starting with `prefix`, skipping others.
    pub fn expect(&mut self, prefix: &str, within: Duration) -> String {
        self.expect_line(prefix, within, |line| line.starts_with(prefix))
    }

    /// The next line containing `part` (a warning of the node), skipping
    /// others.
    pub fn expect_containing(&mut self, part: &str, within: Duration) -> String {
        self.expect_line(part, within, |line| line.contains(part))
    }

    fn expect_line(
        &mut self,
        prefix: &str,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) if line.starts_with("failed") => panic!("{} failed: {line}", self.name),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {prefix:?} within {within:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{} exited before {prefix:?}", self.name)
                }
            }
        }
    }

    /// The next line the node prints, whatever it is: `None` when none came
    /// within `within` or the process has exited (its output closed).
    pub fn next_line(&mut self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Sends a command and returns its answer.
    pub fn ask(&mut self, command: &str, answer: &str, within: Duration) -> String {
        self.send(command);
        self.expect(answer, within)
    }

    /// The name of the node serving `id`'s shard, as this node sees it
    /// (`owner ID`); empty if none does.
    pub fn owner_of(&mut self, id: u64) -> String {
        let line = self.ask(
            &format!("owner {id}"),
            &format!("owner {id} "),
            Duration::from_secs(10),
        );
        line.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }

    /// An id whose shard `owner` serves, as this node sees it.
    pub fn id_owned_by(&mut self, owner: &str) -> u64 {
        (0..10_000u64)
            .find(|id| self.owner_of(*id) == owner)
            .unwrap_or_else(|| panic!("{owner} serves none of the ids below 10,000"))
    }

    /// `call ID ADD`: `Ok(total)` or `Err(line)`.
    pub fn call(&mut self, id: u64, add: u64) -> Result<u64, String> {
        self.send_call(id, add);
        self.call_answer(id)
    }

    /// Sends `call ID ADD` without waiting: several nodes can be called at
    /// once, and their answers read with [`Node::call_answer`].
    pub fn send_call(&mut self, id: u64, add: u64) {
        self.send(&format!("call {id} {add}"));
    }

    /// The answer to the call of `id` sent last: `Ok(total)` or `Err(line)`.
    pub fn call_answer(&mut self, id: u64) -> Result<u64, String> {
        self.answer("call", id)
    }

    /// `write ID ADD` (a call whose worker writes its persisted total before
    /// answering): `Ok(total)` or `Err(line)`.
    pub fn write(&mut self, id: u64, add: u64) -> Result<u64, String> {
        self.send(&format!("write {id} {add}"));
        self.answer("write", id)
    }

    fn answer(&mut self, verb: &str, id: u64) -> Result<u64, String> {
        let line = self.expect(&format!("{verb} {id} "), Duration::from_secs(15));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [_, _, "ok", total] => Ok(total.parse().expect("a number")),
            _ => Err(line),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    pub fn wait_exit(&mut self, within: Duration) {
        wait_until(within, "the node to exit", || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node answers `count` with a total, which needs every
/// member reachable: the cluster has settled.
pub fn settled(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        wait_until(Duration::from_secs(20), "the cluster to settle", || {
            node.ask("count", "count ", Duration::from_secs(10))
                .split_whitespace()
                .nth(1)
                != Some("err")
        });
    }
}

/// The summary of a `load` command.
#[derive(Debug)]
pub struct Load {
    pub ok: u64,
    pub err: u64,
    /// Of the errors, requests no worker took (`ClusterError::NotDelivered`).
    pub undelivered: u64,
    pub max_ms: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub first_err: String,
}

pub fn parse_load(line: &str) -> Load {
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("{name} in {line}"));
        words[at + 1]
    };
    let number = |name: &str| {
        field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} in {line}"))
    };
    Load {
        ok: number("ok"),
        err: number("err"),
        undelivered: number("undelivered"),
        max_ms: number("max_ms"),
        p50_us: number("p50_us"),
        p99_us: number("p99_us"),
        first_err: field("first_err").to_string(),
    }
}

/// One incarnation as the log tells it.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub id: u64,
    pub name: String,
    pub node: String,
    pub epoch: i64,
    pub start: u128,
    /// The last thing it did while it held its shard.
    pub last: u128,
    pub ended: bool,
    /// Its `terminate` ran after its node had fenced itself.
    pub ended_fenced: bool,
    /// How the flush of its persisted state in `terminate` went: `ok`,
    /// `fenced` or `error` (nodes with a store only).
    pub flush: Option<String>,
}

/// Reads the log: every incarnation, by id.
pub fn incarnations(log: &Path) -> BTreeMap<u64, Vec<Incarnation>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut by_name: HashMap<String, Incarnation> = HashMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["start", id, inc, node, epoch, t] => {
                let t = t.parse().expect("a time");
                by_name.insert(
                    inc.to_string(),
                    Incarnation {
                        id: id.parse().expect("an id"),
                        name: inc.to_string(),
                        node: node.to_string(),
                        epoch: epoch.parse().expect("an epoch"),
                        start: t,
                        last: t,
                        ended: false,
                        ended_fenced: false,
                        flush: None,
                    },
                );
            }
            ["call", _, inc, t] | ["end", _, inc, t] => {
                let t: u128 = t.parse().expect("a time");
                let i = by_name
                    .get_mut(*inc)
                    .unwrap_or_else(|| panic!("{inc} logged before its start"));
                i.last = i.last.max(t);
                i.ended |= w[0] == "end";
            }
            // An incarnation whose `init` ran after its node had lost the
            // epoch logs no start: it never served (every call it gets is
            // refused, unlogged), and only its fenced end and its flush
            // appear. It cannot overlap anyone, so it is not counted.
            ["endfenced", _, inc, _] => {
                if let Some(i) = by_name.get_mut(*inc) {
                    i.ended_fenced = true;
                }
            }
            ["flush", _, inc, outcome, _] => {
                if let Some(i) = by_name.get_mut(*inc) {
                    i.flush = Some(outcome.to_string());
                }
            }
            _ => panic!("unreadable log line {line:?}"),
        }
    }
    let mut by_id: BTreeMap<u64, Vec<Incarnation>> = BTreeMap::new();
    for i in by_name.into_values() {
        by_id.entry(i.id).or_default().push(i);
    }
    for list in by_id.values_mut() {
        list.sort_by_key(|i| i.start);
    }
    by_id
}

/// Every pair of incarnations of one id whose lives overlap, and every
/// later-starting incarnation with an older epoch than an earlier one's.
pub fn overlaps(log: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (id, list) in incarnations(log) {
        for pair in list.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.start < a.last {
                found.push(format!(
                    "id {id}: {} (node {}, epoch {}) lived until {} but {} (node {}, epoch {}) started at {}",
                    a.name, a.node, a.epoch, a.last, b.name, b.node, b.epoch, b.start
                ));
            }
            if b.epoch < a.epoch {
                found.push(format!(
                    "id {id}: {} has epoch {} after {}'s {}",
                    b.name, b.epoch, a.name, a.epoch
                ));
            }
        }
    }
    found
}

pub fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("incarnations.log")
}

/// A TCP proxy on `127.0.0.x` in front of etcd for one node, which the test
/// can cut (every byte in either direction is dropped, as in a partition:
/// nothing is refused or reset) and heal (the stale connections are closed,
/// new ones are forwarded again).
pub struct Proxy {
    pub url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(host: u8, etcd: &Etcd) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(format!("127.0.0.{host}:0")).expect("the proxy binds");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let target = etcd.url().trim_start_matches("http://").to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let cut = cut2.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = std::io::Read::read(&mut from, &mut buf) {
                            if !cut.load(Ordering::Acquire) && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                let mut open = open2.lock().unwrap_or_else(|p| p.into_inner());
                open.push(client);
                open.push(server);
            }
        });
        Proxy { url, cut, open }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn heal(&self) {
        for stream in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.cut.store(false, std::sync::atomic::Ordering::Release);
    }
}
