//! The phone-number blacklist from GenRegistry's README, in Rust.
//!
//! Every recipient number has its own blacklist worker, started on first use
//! and found again by the number. Placing a call asks the recipient's worker
//! whether the sender is allowed.
//!
//! Run it with `cargo run --example phone_blacklist`.

use gen_registry::{Context, Error, GenRegistry, Options, Worker};
use std::collections::HashSet;

/// The blacklist rules of one phone number.
struct Blacklist {
    owner: String,
    blocked: HashSet<String>,
}

enum Request {
    /// Is a call from this number allowed?
    Allow(String),
    /// Block calls from this number.
    Block(String),
}

impl Worker for Blacklist {
    type Id = String; // the normalized phone number
    type Args = ();
    type Request = Request;
    type Reply = bool;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(number: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        // A real system would load the saved rules here.
        println!("  [blacklist {number}] started");
        Ok(Blacklist {
            owner: number.clone(),
            blocked: HashSet::new(),
        })
    }

    async fn handle_call(&mut self, request: Request, _: &mut Context<Self>) -> bool {
        match request {
            Request::Allow(sender) => !self.blocked.contains(&sender),
            Request::Block(sender) => self.blocked.insert(sender),
        }
    }

    async fn terminate(&mut self, reason: &gen_registry::ExitReason, _: &mut Context<Self>) {
        println!(
            "  [blacklist {}] {} ({} rule(s) would be saved here)",
            self.owner,
            reason,
            self.blocked.len()
        );
    }
}

/// Normalizes a phone number: digits only, with a leading '+'.
fn normalize(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

async fn place_call(
    blacklists: &GenRegistry<Blacklist>,
    sender: &str,
    recipient: &str,
) -> Result<bool, Error<Blacklist>> {
    let blacklist = blacklists.lookup_or_start(normalize(recipient), ()).await?;
    blacklist.call(Request::Allow(normalize(sender))).await
}

async fn block(
    blacklists: &GenRegistry<Blacklist>,
    owner: &str,
    sender: &str,
) -> Result<(), Error<Blacklist>> {
    let blacklist = blacklists.lookup_or_start(normalize(owner), ()).await?;
    blacklist.call(Request::Block(normalize(sender))).await?;
    Ok(())
}

async fn demo() -> Result<(), Error<Blacklist>> {
    let blacklists = GenRegistry::<Blacklist>::new(Options::default())?;
    let (alice, bob, spammer) = ("+1 (555) 010-0001", "+1 555 010 0002", "+1-555-010-9999");

    println!("alice blocks the spammer:");
    block(&blacklists, alice, spammer).await?;

    for (from, to) in [(bob, alice), (spammer, alice), (spammer, bob)] {
        let verdict = if place_call(&blacklists, from, to).await? {
            "placed"
        } else {
            "rejected"
        };
        println!("call {from} -> {to}: {verdict}");
    }

    println!("{} blacklist worker(s) running", blacklists.count());
    let found = blacklists.lookup(&normalize(alice))?;
    println!("alice's worker found again by her number: {:?}", found.id());

    println!("bob's blacklist is stopped:");
    blacklists.stop(&normalize(bob)).await?;
    println!("{} blacklist worker(s) running", blacklists.count());

    println!("shutting down:");
    blacklists.shutdown().await;
    println!("{} blacklist worker(s) running", blacklists.count());
    Ok(())
}

fn main() {
    if let Err(e) = futures::executor::block_on(demo()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
