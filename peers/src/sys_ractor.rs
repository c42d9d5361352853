//! ractor 0.16, used as its docs show: an `Actor` spawned with a name
//! (`Actor::spawn(Some(name), ..)` registers it in ractor's global registry,
//! before `pre_start` runs, and refuses a taken name), found again with
//! `ActorRef::where_is(name)`, asked with `call!`, stopped with
//! `stop_and_wait`.

use crate::common::{Config, state_of};
use crate::tokio_rt::{Names, Peer};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicU64, Ordering};

static INITS: AtomicU64 = AtomicU64::new(0);

pub enum PingMsg {
    Ping(u64, RpcReplyPort<u64>),
}

pub struct Pinger;

impl Actor for Pinger {
    type Msg = PingMsg;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(
        &self,
        _me: ActorRef<PingMsg>,
        state: u64,
    ) -> Result<u64, ActorProcessingErr> {
        INITS.fetch_add(1, Ordering::Relaxed);
        Ok(state)
    }

    async fn handle(
        &self,
        _me: ActorRef<PingMsg>,
        msg: PingMsg,
        state: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PingMsg::Ping(x, reply) => {
                let _ = reply.send(x + *state);
            }
        }
        Ok(())
    }
}

pub struct Ractor {
    names: Names,
}

impl Ractor {
    /// The peer with the names of `n` ids and a W9 pool of `pool`.
    pub fn new(n: usize, pool: usize) -> Ractor {
        Ractor {
            names: Names::new(n, pool),
        }
    }
}

impl Peer for Ractor {
    type Handle = ActorRef<PingMsg>;
    const NAME: &'static str = "ractor";

    fn lookup(&self, id: u64) -> Option<ActorRef<PingMsg>> {
        ActorRef::<PingMsg>::where_is(self.names.get(id))
    }

    async fn start(&self, id: u64) -> Option<ActorRef<PingMsg>> {
        // `spawn` returns once `pre_start` ran; the JoinHandle is detached.
        match Actor::spawn(Some(self.names.get(id).to_owned()), Pinger, state_of(id)).await {
            Ok((h, _join)) => Some(h),
            Err(_) => None,
        }
    }

    async fn call(h: &ActorRef<PingMsg>, x: u64) -> Option<u64> {
        ractor::call!(h, PingMsg::Ping, x).ok()
    }

    async fn stop(&self, id: u64) -> bool {
        match self.lookup(id) {
            // Returns after the actor exited; it left the registry before that.
            Some(h) => h.stop_and_wait(None, None).await.is_ok(),
            None => false,
        }
    }

    fn count(&self) -> usize {
        // The registry's only size query builds a Vec of every name.
        ractor::registry::registered().len()
    }

    fn to_list(&self) -> Vec<(String, ActorRef<PingMsg>)> {
        // Names only come out of the registry; each handle is a second lookup.
        ractor::registry::registered()
            .into_iter()
            .filter_map(|name| {
                let h = ActorRef::<PingMsg>::where_is(&name)?;
                Some((name, h))
            })
            .collect()
    }

    fn inits(&self) -> u64 {
        INITS.load(Ordering::Relaxed)
    }
}

pub fn run(cfg: &Config, out: &crate::common::Out) {
    crate::tokio_rt::run_peer(cfg, out, |cfg| Ractor::new(cfg.n, cfg.pool));
}
