//! A three-node cluster on loopback: starts an etcd of its own (found on
//! PATH), joins three nodes on 127.0.0.2–4 in this process, calls ids from
//! every node, shows where they live, and has one node leave gracefully;
//! the accounts of the leaving node keep their balances, handed over
//! through the store the nodes share (one in memory here, as the nodes
//! share a process; PostgreSQL across machines, see the guide).
//!
//! Run: `cargo run -p gen_registry_cluster --example cluster`
//! (needs etcd: `apt-get install etcd-server` on Debian or Ubuntu).

use gen_registry::state::{StateError, Store, Stored};
use gen_registry::{Context, ExitReason, Options, Worker};
use gen_registry_cluster::{Cluster, Config};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The store the nodes keep balances in.
static STORE: OnceLock<Store> = OnceLock::new();

/// A bank account per id: a deposit returns the balance, and the epoch of
/// the shard it runs in, which every write of the balance carries.
struct Account {
    balance: Stored<u64>,
}

impl Worker for Account {
    type Id = String;
    type Args = ();
    type Request = u64;
    type Reply = (u64, u64);
    type Message = ();
    type Error = StateError;

    async fn init(_: &String, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
        let store = STORE.get_or_init(Store::memory);
        Ok(Account {
            balance: Stored::load_for(store, "account", ctx).await?,
        })
    }

    async fn handle_call(&mut self, deposit: u64, ctx: &mut Context<Self>) -> (u64, u64) {
        *self.balance += deposit;
        (*self.balance, ctx.epoch().unwrap_or_default())
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        let saved = self.balance.flush().await.is_ok();
        println!(
            "  account {} stops ({reason}) with balance {}{}",
            ctx.id(),
            *self.balance,
            if saved { ", saved" } else { ", NOT saved" }
        );
    }
}

/// The example's own etcd, killed when dropped.
struct Etcd {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_etcd() -> Result<(Etcd, String), Box<dyn std::error::Error>> {
    if Command::new("etcd").arg("--version").output().is_err() {
        return Err(
            "etcd was not found on PATH: install it (Debian/Ubuntu: `apt-get install etcd-server`)"
                .into(),
        );
    }
    let dir = tempfile::tempdir()?;
    let (client, peer) = (
        format!("http://127.0.0.1:{}", free_port()?),
        format!("http://127.0.0.1:{}", free_port()?),
    );
    let child = Command::new("etcd")
        .args(["--name", "example", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &client,
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
            &format!("example={peer}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let etcd = Etcd { child, _data: dir };
    let address = client.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        if Instant::now() > deadline {
            return Err("etcd did not start within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((etcd, client))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_etcd, url) = start_etcd()?;
    let secret = "the example cluster's shared secret";
    let mut nodes = Vec::new();
    for (name, host) in [("a", 2), ("b", 3), ("c", 4)] {
        let config = Config::new(name, [url.as_str()], secret)
            .listen(format!("127.0.0.{host}:0").parse()?)
            .lease_ttl(Duration::from_secs(3))
            .fence_margin(Duration::from_secs(1));
        let node = Cluster::<Account>::join(config, Options::default()).await?;
        println!("node {} listens on {}", node.name(), node.address());
        nodes.push(node);
    }

    // Every node deposits into every account: each call reaches the one
    // worker of its id, wherever it runs.
    let accounts = ["alice", "bob", "carol", "dave", "erin", "frank"];
    for node in &nodes {
        for account in accounts {
            node.call(account.to_string(), (), 10).await?;
        }
    }
    for account in accounts {
        let owner = nodes[0]
            .owner(&account.to_string())
            .await?
            .ok_or("every shard has an owner")?;
        let (balance, epoch) = nodes[1].call(account.to_string(), (), 0).await?;
        println!(
            "{account}: balance {balance} on node {} (shard epoch {epoch})",
            owner.node
        );
        assert_eq!(balance, 30);
    }
    println!("workers: {} in the cluster", nodes[0].count().await?);

    // Node c leaves: its accounts stop (terminate runs), and the others
    // take its shards; the accounts start again there on their next call.
    let c = nodes.pop().ok_or("three nodes")?;
    println!("node c leaves");
    c.leave().await;
    for account in accounts {
        let (balance, _) = nodes[0].call(account.to_string(), (), 0).await?;
        let owner = nodes[0]
            .owner(&account.to_string())
            .await?
            .ok_or("every shard has an owner")?;
        println!("{account}: balance {balance} on node {}", owner.node);
    }
    for node in nodes {
        node.leave().await;
    }
    Ok(())
}
