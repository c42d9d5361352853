//! Stopping Bastion with `Spec::stop_bastion`: when it returns, every worker
//! of every registry Bastion ran has run its `terminate`. In a test binary of
//! its own, because stopping Bastion is final for the process.

mod common;

use bastion::prelude::*;
use common::*;
use gen_registry::{GenRegistry, Spec};

/// Starts `n` workers (ids `0..n`) in `registry`.
fn start_workers(registry: &GenRegistry<Probe>, log: &std::sync::Arc<Log>, n: u64) {
    let (registry, log) = (registry.clone(), log.clone());
    run(60, async move {
        for id in 0..n {
            registry.start(id, Args::new(&log)).await.unwrap();
        }
    });
}

#[test]
fn stop_bastion_returns_once_every_worker_of_every_spec_has_run_terminate() {
    Bastion::init();
    Bastion::start();
    let (stopped_by_bastion, stopped_with_supervisor, never_supervised) =
        (Log::new(), Log::new(), Log::new());

    let spec =
        GenRegistry::<Probe>::child_spec(observed(&stopped_by_bastion).name("bastion")).unwrap();
    Bastion::supervisor(|sp| sp.children(spec)).unwrap();
    let spec =
        GenRegistry::<Probe>::child_spec(observed(&stopped_with_supervisor).name("sup")).unwrap();
    let supervisor = Bastion::supervisor(|sp| sp.children(spec)).unwrap();
    // Built and used, but never given to a supervisor.
    let unused =
        GenRegistry::<Probe>::child_spec(observed(&never_supervised).name("unused")).unwrap();

    let bastion = GenRegistry::<Probe>::whereis_named("bastion").unwrap();
    start_workers(&bastion, &stopped_by_bastion, 2_000);
    start_workers(
        &GenRegistry::<Probe>::whereis_named("sup").unwrap(),
        &stopped_with_supervisor,
        500,
    );
    start_workers(
        &GenRegistry::<Probe>::whereis_named("unused").unwrap(),
        &never_supervised,
        10,
    );

    supervisor.stop().unwrap();
    Spec::stop_bastion();
    let terminates = (
        stopped_by_bastion.terminates(),
        stopped_with_supervisor.terminates(),
        never_supervised.terminates(),
    );
    println!("terminates after stop_bastion: {terminates:?}");
    assert_eq!(terminates, (2_000, 500, 10));
    assert!(bastion.is_stopped());
    assert_eq!(stopped_by_bastion.live(), 0);
    drop(unused);
    // A second call finds Bastion stopped and nothing left to wait for.
    Spec::stop_bastion();
}
