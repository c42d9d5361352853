//! The legacy helper: `Spec::child_spec::<W>(options)` gives a whole
//! supervisor for `Bastion::supervisor`, the counterpart of Elixir's
//! `GenRegistry.Spec.child_spec(Worker)`. Two registries of one worker type
//! live side by side under different names; a third under a taken name is
//! refused. `Spec::stop_bastion` stops both and waits for their shutdown.
//!
//! Run it with `cargo run --example legacy_spec`.

use bastion::prelude::*;
use gen_registry::{Context, GenRegistry, Options, Spec, Worker};

/// The last known position of one vehicle.
struct Tracker {
    position: (i32, i32),
}

impl Worker for Tracker {
    type Id = String; // the plate number
    type Args = ();
    type Request = (i32, i32); // a move
    type Reply = (i32, i32); // the new position
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &String, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Tracker { position: (0, 0) })
    }

    async fn handle_call(&mut self, (dx, dy): (i32, i32), _: &mut Context<Self>) -> (i32, i32) {
        self.position = (self.position.0 + dx, self.position.1 + dy);
        self.position
    }
}

fn main() -> Result<(), gen_registry::Error<Tracker>> {
    Bastion::init();
    // One line each: a whole supervisor holding one registry.
    Bastion::supervisor(Spec::child_spec::<Tracker>(
        Options::default().name("trucks"),
    )?)
    .expect("Bastion accepts the supervisor");
    Bastion::supervisor(Spec::child_spec::<Tracker>(
        Options::default().name("vans"),
    )?)
    .expect("Bastion accepts the supervisor");
    Bastion::start();

    // A third registry under a taken name is refused, with the reason.
    match Spec::child_spec::<Tracker>(Options::default().name("vans")) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => unreachable!("the name is taken"),
    }

    let result = bastion::run!(async {
        let trucks = GenRegistry::<Tracker>::whereis_named("trucks")?;
        let vans = GenRegistry::<Tracker>::whereis_named("vans")?;
        let truck = trucks.lookup_or_start("AB-123".into(), ()).await?;
        let van = vans.lookup_or_start("AB-123".into(), ()).await?;
        println!("truck AB-123 at {:?}", truck.call((3, 4)).await?);
        println!("van   AB-123 at {:?}", van.call((-1, 0)).await?);
        println!(
            "trucks: {} tracker(s), vans: {} tracker(s) — same plate, separate registries",
            trucks.count(),
            vans.count()
        );
        Ok(())
    });
    // Returns once both registries have shut down (every worker's
    // `terminate` has run); Bastion's own stop does not wait for that.
    Spec::stop_bastion();
    result
}
