//! Many ids under load: 100,000 session workers started lazily by concurrent
//! callers, each called a few times, then stopped, with a progress line and
//! the figures reached at the end.
//!
//! Run it with `cargo run --release --example load` (a debug build is about
//! ten times slower). `LOAD_IDS=1000000` changes the number of ids.

use gen_registry::{Context, GenRegistry, Options, Worker};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A session: counts its requests.
struct Session {
    hits: u32,
}

impl Worker for Session {
    type Id = u64;
    type Args = ();
    type Request = ();
    type Reply = u32;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Session { hits: 0 })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u32 {
        self.hits += 1;
        self.hits
    }
}

const DRIVERS: u64 = 64;
const CALLS_PER_ID: u32 = 3;

fn main() {
    let ids: u64 = std::env::var("LOAD_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let registry = GenRegistry::<Session>::new(Options::default()).expect("valid options");
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    // 64 drivers on Bastion's executor; each works through its share of the
    // ids: lookup_or_start, then a few calls.
    let drivers: Vec<_> = (0..DRIVERS)
        .map(|d| {
            let (registry, done, errors) = (registry.clone(), done.clone(), errors.clone());
            bastion::executor::spawn(async move {
                let mut id = d;
                while id < ids {
                    match registry.lookup_or_start(id, ()).await {
                        Ok(session) => {
                            for _ in 0..CALLS_PER_ID {
                                if session.call(()).await.is_err() {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    id += DRIVERS;
                }
            })
        })
        .collect();

    // The progress line, updated until every driver is done.
    while done.load(Ordering::Relaxed) < ids {
        let n = done.load(Ordering::Relaxed);
        print!(
            "\r{n:>9} / {ids} ids started and called, {} live workers",
            registry.count()
        );
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    futures::executor::block_on(futures::future::join_all(drivers));
    let load = started.elapsed();
    println!(
        "\r{ids:>9} / {ids} ids started and called, {} live workers",
        registry.count()
    );

    let stopping = Instant::now();
    futures::executor::block_on(registry.shutdown());
    let stop = stopping.elapsed();

    let calls = ids * u64::from(CALLS_PER_ID);
    println!(
        "starts:   {:>12.0} per second",
        ids as f64 / load.as_secs_f64()
    );
    println!(
        "calls:    {:>12.0} per second (alongside the starts)",
        calls as f64 / load.as_secs_f64()
    );
    println!(
        "shutdown: {:>12.0} workers per second",
        ids as f64 / stop.as_secs_f64()
    );
    println!("errors:   {:>12}", errors.load(Ordering::Relaxed));
    println!("left:     {:>12}", registry.count());
}
