//! A worker that crashes, waits out an exponential back-off, restarts with its
//! mailbox and handles intact, and is finally given up on when its restart
//! policy is spent. Every registry event is printed as it happens.
//!
//! Run it with `cargo run --example restarts`.

use gen_registry::{BackOff, Context, Error, Event, GenRegistry, Options, RestartPolicy, Worker};
use std::time::Duration;

/// A meter reading that panics on negative input.
struct Meter {
    total: u64,
}

impl Worker for Meter {
    type Id = &'static str;
    type Args = ();
    type Request = i64;
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &&'static str, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Meter { total: 0 })
    }

    async fn handle_call(&mut self, reading: i64, _: &mut Context<Self>) -> u64 {
        let reading = u64::try_from(reading).expect("a meter reading is never negative");
        self.total += reading;
        self.total
    }
}

fn main() {
    // Quiet the default panic message: the events below say what happened.
    std::panic::set_hook(Box::new(|_| {}));
    let registry = GenRegistry::<Meter>::new(
        Options::default()
            .restart(RestartPolicy::Tries {
                restarts: 3,
                within: Duration::from_secs(60),
            })
            .back_off(BackOff::Exponential {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            })
            .observe(|event: &Event<'_, Meter>| println!("  event: {event}")),
    )
    .expect("valid options");

    futures::executor::block_on(async {
        let meter = registry
            .lookup_or_start("kitchen", ())
            .await
            .expect("start");
        println!("reading 5 → total {}", meter.call(5).await.expect("call"));

        for crash in 1..=4 {
            println!("crash {crash}: a negative reading");
            match meter.call(-1).await {
                Err(Error::HandlerPanicked(why)) => println!("  caller sees the panic: {why}"),
                other => println!("  unexpected: {other:?}"),
            }
            // The same handle: served by the next incarnation, once its
            // back-off has passed (the call waits in its mailbox meanwhile).
            match meter.call(1).await {
                Ok(total) => println!("  reading 1 → total {total} (a fresh incarnation)"),
                Err(e) => println!("  after the 4th crash the worker is gone: {e}"),
            }
        }
        println!(
            "registered: {}, count: {}",
            registry.lookup(&"kitchen").is_ok(),
            registry.count()
        );
        registry.shutdown().await;
    });
}
