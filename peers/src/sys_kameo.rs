//! kameo 0.22, used as its docs show: an `Actor` with a `Message<Ping>`
//! handler, registered in kameo's local registry with `ActorRef::register`,
//! found with `ActorRef::lookup`, asked with `ask`, stopped with
//! `stop_gracefully` + `wait_for_shutdown`.
//!
//! A start prepares the actor (`Actor::prepare`), registers its ref, and only
//! spawns it if the name was free: the documented `spawn` then `register`
//! would run `on_start` for every racer of W11 and leave the losers to stop.

use crate::common::{Config, state_of};
use crate::tokio_rt::{Names, Peer};
use kameo::actor::{Actor, ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::message::{Context, Message};
use std::sync::atomic::{AtomicU64, Ordering};

static INITS: AtomicU64 = AtomicU64::new(0);

pub struct Pinger {
    state: u64,
}

impl Actor for Pinger {
    type Args = u64;
    type Error = Infallible;

    async fn on_start(state: u64, _me: ActorRef<Self>) -> Result<Self, Infallible> {
        INITS.fetch_add(1, Ordering::Relaxed);
        Ok(Pinger { state })
    }
}

pub struct Ping(pub u64);

impl Message<Ping> for Pinger {
    type Reply = u64;

    async fn handle(&mut self, Ping(x): Ping, _ctx: &mut Context<Self, u64>) -> u64 {
        x + self.state
    }
}

pub struct Kameo {
    names: Names,
}

impl Kameo {
    /// The peer with the names of `n` ids and a W9 pool of `pool`.
    pub fn new(n: usize, pool: usize) -> Kameo {
        Kameo {
            names: Names::new(n, pool),
        }
    }
}

impl Peer for Kameo {
    type Handle = ActorRef<Pinger>;
    const NAME: &'static str = "kameo";

    fn lookup(&self, id: u64) -> Option<ActorRef<Pinger>> {
        ActorRef::<Pinger>::lookup(self.names.get(id))
            .ok()
            .flatten()
    }

    async fn start(&self, id: u64) -> Option<ActorRef<Pinger>> {
        let prepared = Pinger::prepare();
        let h = prepared.actor_ref().clone();
        if h.register(self.names.get(id).to_owned()).is_err() {
            return None;
        }
        prepared.spawn(state_of(id));
        // Like the other systems, a start returns once init ran.
        h.wait_for_startup().await;
        Some(h)
    }

    async fn call(h: &ActorRef<Pinger>, x: u64) -> Option<u64> {
        h.ask(Ping(x)).await.ok()
    }

    async fn stop(&self, id: u64) -> bool {
        match self.lookup(id) {
            Some(h) => {
                if h.stop_gracefully().await.is_err() {
                    return false;
                }
                // The actor unregisters itself before its shutdown result is set.
                h.wait_for_shutdown().await;
                true
            }
            None => false,
        }
    }

    fn count(&self) -> usize {
        kameo::registry::ACTOR_REGISTRY
            .lock()
            .expect("kameo registry poisoned")
            .len()
    }

    fn to_list(&self) -> Vec<(String, ActorRef<Pinger>)> {
        let mut reg = kameo::registry::ACTOR_REGISTRY
            .lock()
            .expect("kameo registry poisoned");
        let names: Vec<String> = reg.names().map(|n| n.to_string()).collect();
        names
            .into_iter()
            .filter_map(|name| {
                let h = reg.get::<Pinger, str>(name.as_str()).ok().flatten()?;
                Some((name, h))
            })
            .collect()
    }

    fn inits(&self) -> u64 {
        INITS.load(Ordering::Relaxed)
    }
}

pub fn run(cfg: &Config, out: &crate::common::Out) {
    crate::tokio_rt::run_peer(cfg, out, |cfg| Kameo::new(cfg.n, cfg.pool));
}
