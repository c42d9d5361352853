//! What a call by id says about its request when it fails: never
//! delivered (`Error::NotDelivered`: no handler saw it, safe to send
//! again), or taken by a worker that ended before replying
//! (`Error::WorkerEnded`: it may have been handled).

use crate::common::{self, run};
use futures::channel::oneshot;
use gen_registry::doc_support::wait_until;
use gen_registry::{Context, Error, GenRegistry, Options, Worker};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The requests handlers saw, by token: how many times each.
#[derive(Default)]
struct Seen {
    handled: Mutex<HashMap<u64, usize>>,
    holding: AtomicBool,
}

impl Seen {
    fn times(&self, token: u64) -> usize {
        self.handled.lock().get(&token).copied().unwrap_or(0)
    }
}

#[derive(Clone)]
struct Args {
    seen: Arc<Seen>,
    /// Ends itself before it reads any request: `init` casts itself a stop,
    /// which is queued ahead of every request.
    end_before_reading: bool,
    /// Stops itself after every this many requests (0: never).
    stop_every: u32,
}

impl Args {
    fn new(seen: &Arc<Seen>) -> Args {
        Args {
            seen: seen.clone(),
            end_before_reading: false,
            stop_every: 0,
        }
    }
}

type Gate = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

enum Req {
    /// Handled at once.
    Take(u64),
    /// Handled, then waits for the gate before replying.
    Hold(u64, Gate),
}

struct Courier {
    args: Args,
    handled: u32,
}

impl Worker for Courier {
    type Id = u32;
    type Args = Args;
    type Request = Req;
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, args: Args, ctx: &Context<Self>) -> Result<Self, Self::Error> {
        if args.end_before_reading {
            ctx.handle().cast(()).expect("its own mailbox is open");
        }
        Ok(Courier { args, handled: 0 })
    }

    async fn handle_call(&mut self, req: Req, ctx: &mut Context<Self>) -> u64 {
        let (token, gate) = match req {
            Req::Take(token) => (token, None),
            Req::Hold(token, gate) => (token, gate.lock().take()),
        };
        *self.args.seen.handled.lock().entry(token).or_default() += 1;
        if let Some(gate) = gate {
            self.args.seen.holding.store(true, Ordering::Release);
            let _ = gate.await;
        }
        self.handled += 1;
        if self.args.stop_every > 0 && self.handled % self.args.stop_every == 0 {
            ctx.stop();
        }
        token
    }

    async fn handle_cast(&mut self, _: (), ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[test]
fn a_call_by_id_whose_workers_all_end_before_reading_it_is_not_delivered() {
    let seen = Arc::new(Seen::default());
    let registry = GenRegistry::<Courier>::new(Options::default()).unwrap();
    let mut args = Args::new(&seen);
    args.end_before_reading = true;
    let got = run(10, {
        let registry = registry.clone();
        async move { registry.call(1, args, Req::Take(7)).await }
    });
    assert!(matches!(got, Err(Error::NotDelivered)), "{got:?}");
    assert_eq!(seen.times(7), 0, "a handler saw the request");
    assert!(
        Error::<Courier>::NotDelivered
            .to_string()
            .contains("safe to send again")
    );
    run(10, async move { registry.shutdown().await });
}

#[test]
fn a_call_by_id_taken_by_a_worker_killed_before_replying_is_worker_ended() {
    let seen = Arc::new(Seen::default());
    let registry = GenRegistry::<Courier>::new(Options::default()).unwrap();
    let args = Args::new(&seen);
    let (_open, gate) = oneshot::channel();
    let gate: Gate = Arc::new(Mutex::new(Some(gate)));
    let got = run(10, {
        let (registry, seen) = (registry.clone(), seen.clone());
        async move {
            let call = {
                let registry = registry.clone();
                common::spawn(async move { registry.call(1, args, Req::Hold(9, gate)).await })
            };
            wait_until(|| seen.holding.load(Ordering::Acquire)).await;
            registry.lookup(&1).unwrap().kill();
            call.await
        }
    });
    assert!(matches!(got, Err(Error::WorkerEnded)), "{got:?}");
    assert_eq!(
        seen.times(9),
        1,
        "the handler saw it: it may have been handled"
    );
    run(10, async move { registry.shutdown().await });
}

/// Threads calling by id while the ids' workers stop themselves, are
/// stopped and are killed: each request is handled once and answered,
/// reached no worker (`NotDelivered`, and no handler saw it), or was taken
/// by a worker killed before replying (`WorkerEnded`); never handled twice.
#[test]
fn under_stops_and_kills_a_call_by_id_is_answered_not_delivered_or_worker_ended() {
    const CALLERS: u64 = 6;
    const CALLS: u64 = 2_000;
    const IDS: u32 = 6;
    let seen = Arc::new(Seen::default());
    let registry = GenRegistry::<Courier>::new(Options::default()).unwrap();
    let tokens = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (registry, seen, tokens) = (registry.clone(), seen.clone(), tokens.clone());
            std::thread::spawn(move || {
                run(120, async move {
                    let mut args = Args::new(&seen);
                    args.stop_every = 3;
                    let mut outcomes = Vec::with_capacity(CALLS as usize);
                    for n in 0..CALLS {
                        let token = tokens.fetch_add(1, Ordering::Relaxed);
                        let id = ((caller + n) % u64::from(IDS)) as u32;
                        let got = registry.call(id, args.clone(), Req::Take(token)).await;
                        outcomes.push((token, got));
                    }
                    outcomes
                })
            })
        })
        .collect();
    // Stops the ids' workers one after another, killing every eighth
    // instead, until the callers are done.
    let disrupter = {
        let (registry, done) = (registry.clone(), done.clone());
        std::thread::spawn(move || {
            run(120, async move {
                let mut n = 0u32;
                while !done.load(Ordering::Acquire) {
                    let id = n % IDS;
                    n += 1;
                    if n % 8 == 0 {
                        if let Ok(worker) = registry.lookup(&id) {
                            worker.kill();
                        }
                    } else {
                        let _ = registry.stop(&id).await;
                    }
                }
            })
        })
    };
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.join().expect("a caller panicked"));
    }
    done.store(true, Ordering::Release);
    disrupter.join().expect("the disrupter panicked");
    let (mut answered, mut not_delivered, mut ended) = (0, 0, 0);
    for (token, got) in &outcomes {
        let times = seen.times(*token);
        match got {
            Ok(reply) => {
                assert_eq!(reply, token, "another request's reply");
                assert_eq!(times, 1, "token {token} answered, handled {times} times");
                answered += 1;
            }
            Err(Error::NotDelivered) => {
                assert_eq!(
                    times, 0,
                    "token {token} not delivered, handled {times} times"
                );
                not_delivered += 1;
            }
            Err(Error::WorkerEnded) => {
                assert!(times <= 1, "token {token} handled {times} times");
                ended += 1;
            }
            Err(e) => panic!("token {token}: {e:?}"),
        }
    }
    eprintln!(
        "call by id under stops and kills: {answered} answered, {not_delivered} not delivered, {ended} taken by a killed worker, of {}",
        outcomes.len()
    );
    assert_eq!(outcomes.len() as u64, CALLERS * CALLS);
    run(30, async move { registry.shutdown().await });
}
