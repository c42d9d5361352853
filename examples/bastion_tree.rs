//! A registry inside a Bastion supervision tree, with a worker that crashes
//! and is restarted.
//!
//! One Bastion supervisor holds two children groups: the registry of
//! `Session` workers (the modern child spec, one line) and a plain Bastion
//! child that uses the registry from its exec. A session panics on a bad
//! request; the registry restarts it with exponential back-off, keeping its
//! id, its queued mail and every handle to it. `Spec::stop_bastion` stops
//! Bastion and returns once every session has run its `terminate` (Bastion's
//! own `stop` and `block_until_stopped` return before that).
//!
//! Run it with `cargo run --example bastion_tree`.

use bastion::prelude::*;
use gen_registry::{
    BackOff, Context, Event, ExitReason, GenRegistry, Options, RestartPolicy, Spec, Worker,
};
use std::time::Duration;

/// A user's session: counts the pages the user viewed.
struct Session {
    views: u32,
}

enum Request {
    View,
    /// A request the session cannot handle: it panics.
    Corrupt,
}

impl Worker for Session {
    type Id = u64; // the user id
    type Args = ();
    type Request = Request;
    type Reply = u32;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(user: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        println!("  [session {user}] init");
        Ok(Session { views: 0 })
    }

    async fn handle_call(&mut self, request: Request, _: &mut Context<Self>) -> u32 {
        match request {
            Request::View => {
                self.views += 1;
                self.views
            }
            Request::Corrupt => panic!("corrupt request"),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        println!(
            "  [session {}] terminate after {} views: {reason}",
            ctx.id(),
            self.views
        );
    }
}

fn main() {
    // Crashed sessions restart after 10 ms, 20 ms, 40 ms, … at most 1 s; every
    // registry event is printed.
    let options = Options::default()
        .restart(RestartPolicy::Always)
        .back_off(BackOff::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
        })
        .observe(|event: &Event<'_, Session>| println!("  event: {event}"));
    let spec = match GenRegistry::<Session>::child_spec(options) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("cannot build the registry's spec: {e}");
            std::process::exit(1);
        }
    };

    Bastion::init();
    Bastion::supervisor(|sp| {
        sp.children(spec).children(|c| {
            // A Bastion child that uses the registry: it finds it by worker type.
            c.with_exec(|_ctx: BastionContext| async move {
                let sessions = GenRegistry::<Session>::whereis().map_err(|_| ())?;
                let session = sessions.lookup_or_start(7, ()).await.map_err(|_| ())?;
                let views = session.call(Request::View).await.map_err(|_| ())?;
                println!("  [bastion child] user 7 has viewed {views} page(s)");
                Ok(())
            })
        })
    })
    .expect("Bastion accepts the supervisor");
    Bastion::start();

    let sessions = GenRegistry::<Session>::whereis().expect("published by its spec");
    bastion::run!(async {
        println!("1. a session serves requests");
        let alice = sessions.lookup_or_start(1, ()).await.expect("start");
        for _ in 0..3 {
            alice.call(Request::View).await.expect("view");
        }

        println!("2. a bad request crashes it; its caller gets the error");
        match alice.call(Request::Corrupt).await {
            Err(e) => println!("  caller sees: {e}"),
            Ok(_) => unreachable!("the session panics"),
        }

        println!("3. the same handle reaches the restarted session (fresh state)");
        let views = alice
            .call(Request::View)
            .await
            .expect("served by the new incarnation");
        println!("  views after the restart: {views}");
        assert_eq!(sessions.lookup(&1).expect("still registered"), alice);
    });

    println!("4. stopping Bastion stops every session, each running its terminate");
    Spec::stop_bastion();
    println!(
        "  registry stopped: {}, sessions left: {}",
        sessions.is_stopped(),
        sessions.count()
    );
}
