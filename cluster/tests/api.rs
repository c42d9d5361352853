//! The cluster's API in one process, on an etcd of the test's own: every
//! operation by id, the errors for bad input, and what leaving does.

mod common;

use common::*;
use gen_registry::{Context, Options, Worker};
use gen_registry_cluster::doc_support::Adder;
use gen_registry_cluster::{Cluster, ClusterError, Config, Failure, etcd_client};
use std::time::Duration;

/// Waits until `a` and `b` serve every one of the 16 shards between them,
/// and `b` serves some.
async fn spread<W: gen_registry_cluster::ClusterWorker>(a: &Cluster<W>, b: &Cluster<W>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (0..16).filter(|s| a.serves(*s) || b.serves(*s)).count() < 16
        || (0..16).all(|s| !b.serves(s))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the shards were not spread"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nodes a and b, on 127.0.0.2 and 127.0.0.3 (each one's config passed
/// through `tune`, each registry made with `options()`), once both serve
/// shards.
async fn two_nodes<W: gen_registry_cluster::ClusterWorker>(
    etcd: &Etcd,
    tune: impl Fn(Config) -> Config,
    options: impl Fn() -> Options<W>,
) -> (Cluster<W>, Cluster<W>) {
    let a = Cluster::join(tune(config(etcd, "a", 2)), options())
        .await
        .expect("a joins");
    let b = Cluster::join(tune(config(etcd, "b", 3)), options())
        .await
        .expect("b joins");
    spread(&a, &b).await;
    (a, b)
}

#[test]
fn every_operation_by_id_reaches_the_one_worker_of_the_id_on_either_node() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        // Both see both members before the first call of the test.
        let (a, b) = two_nodes::<Adder>(&etcd, |c| c, Options::default).await;
        for id in 0..20u64 {
            assert_eq!(
                a.call(id, 100, 1).await.expect("a call"),
                101,
                "id {id} started with 100"
            );
            assert_eq!(
                b.call(id, 999, 1).await.expect("a call"),
                102,
                "id {id}: the same worker from b"
            );
            b.cast(id, 0, 10).await.expect("a cast");
            assert_eq!(
                a.call(id, 0, 0).await.expect("a call"),
                112,
                "id {id}: the cast reached it"
            );
            let owner = a
                .owner(&id)
                .await
                .expect("an owner")
                .expect("someone owns it");
            let on = if owner.node == "a" { &a } else { &b };
            assert!(on.serves(a.shard_of(&id).expect("a shard")));
        }
        let count = a.count().await.expect("a count");
        assert_eq!(count.workers, 20);
        assert_eq!(count.answered, ["a", "b"]);
        assert!(count.is_complete());
        assert_eq!(a.local_count() + b.local_count(), 20);
        for id in 0..20u64 {
            let by = if id % 2 == 0 { &a } else { &b };
            by.stop(&id).await.expect("a stop");
            assert!(
                matches!(by.stop(&id).await, Err(ClusterError::NotFound)),
                "id {id} stopped once"
            );
        }
        assert_eq!(b.count().await.expect("a count").workers, 0);
        b.leave().await;
        assert!(matches!(b.call(1, 0, 0).await, Err(ClusterError::Left)));
        assert!(matches!(b.count().await, Err(ClusterError::Left)));
        // a serves every shard once b has gone.
        assert_eq!(a.call(1, 5, 0).await.expect("a call after b left"), 5);
        a.leave().await;
    });
}

#[test]
fn joining_with_a_taken_name_another_shard_count_or_a_bad_config_fails_with_a_clear_error() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Cluster::<Adder>::join(config(&etcd, "a", 2), Options::default())
            .await
            .expect("a joins");
        let twin = Cluster::<Adder>::join(config(&etcd, "a", 3), Options::default()).await;
        assert!(
            matches!(twin, Err(ClusterError::NameTaken(ref n)) if n == "a"),
            "{:?}",
            twin.err()
        );
        let other =
            Cluster::<Adder>::join(config(&etcd, "b", 3).shards(32), Options::default()).await;
        assert!(
            matches!(
                other,
                Err(ClusterError::ShardCountMismatch {
                    stored: 16,
                    configured: 32
                })
            ),
            "{:?}",
            other.err()
        );
        for bad in [
            config(&etcd, "", 3),
            config(&etcd, "a/b", 3),
            Config::new("c", ["http://127.0.0.1:1"], "short"),
            config(&etcd, "c", 3).lease_ttl(Duration::from_millis(2500)),
            config(&etcd, "c", 3).fence_margin(TTL),
            config(&etcd, "c", 3).shards(0),
        ] {
            let joined = Cluster::<Adder>::join(bad, Options::default()).await;
            assert!(
                matches!(joined, Err(ClusterError::Config(_))),
                "{:?}",
                joined.err()
            );
        }
        let named =
            Cluster::<Adder>::join(config(&etcd, "d", 3), Options::default().name("adders")).await;
        assert!(
            matches!(named, Err(ClusterError::Config(_))),
            "{:?}",
            named.err()
        );
        let nowhere = Cluster::<Adder>::join(
            Config::new("e", ["http://127.0.0.1:1"], SECRET)
                .lease_ttl(TTL)
                .fence_margin(Duration::from_secs(1)),
            Options::default(),
        )
        .await;
        assert!(
            matches!(nowhere, Err(ClusterError::Etcd(_))),
            "{:?}",
            nowhere.err()
        );
        a.leave().await;
    });
}

/// The error a `Picky` worker's `init` fails with: a serde type of its own.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Refusal {
    Multiple(u64),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Refuses to start for ids that are multiples of 3; panics on a request
/// of 0, answers any other with itself.
struct Picky;

impl Worker for Picky {
    type Id = u64;
    type Args = ();
    type Request = u64;
    type Reply = u64;
    type Message = ();
    type Error = Refusal;

    async fn init(id: &u64, _: (), _: &Context<Self>) -> Result<Self, Refusal> {
        match id % 3 {
            0 => Err(Refusal::Multiple(*id)),
            _ => Ok(Picky),
        }
    }

    async fn handle_call(&mut self, request: u64, _: &mut Context<Self>) -> u64 {
        assert!(request != 0, "a request of zero");
        request
    }
}

#[test]
fn a_worker_failure_reaches_the_caller_typed_and_naming_the_node_and_the_id_from_either_node() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let (a, b) = two_nodes::<Picky>(&etcd, |c| c, Options::default).await;
        let (a, b) = (a.send_init_errors(), b.send_init_errors());
        let (mut remote, mut local) = (0, 0);
        for id in 1..40u64 {
            let owner = a.owner(&id).await.expect("an owner").expect("owned");
            match owner.node.as_str() {
                "a" => local += 1,
                _ => remote += 1,
            }
            let failure = match a.call(id, (), 0).await {
                Err(ClusterError::Worker(failure)) => failure,
                other => panic!("id {id}: {other:?}"),
            };
            assert_eq!(failure.node, owner.node, "id {id}");
            assert_eq!(failure.id, id.to_string());
            match id % 3 {
                0 => {
                    assert!(
                        matches!(&failure.failure, Failure::Init { message, .. } if *message == format!("Multiple({id})")),
                        "{failure:?}"
                    );
                    assert_eq!(failure.init_error::<Refusal>(), Some(Refusal::Multiple(id)));
                }
                _ => {
                    assert!(
                        matches!(&failure.failure, Failure::HandlerPanicked(m) if m.contains("a request of zero")),
                        "{failure:?}"
                    );
                    assert_eq!(failure.init_error::<Refusal>(), None);
                }
            }
        }
        assert!(local > 0 && remote > 0, "{local} local, {remote} remote ids");
        b.leave().await;
        a.leave().await;
    });
}

#[test]
fn a_count_names_the_members_that_did_not_answer_and_counts_the_others() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let (a, b) = two_nodes::<Adder>(&etcd, |c| c, Options::default).await;
        for id in 0..10u64 {
            a.call(id, 0, 1).await.expect("a call");
        }
        assert_eq!(b.count().await.expect("a count").workers, 10);
        // Two members that never answer: one accepts connections and says
        // nothing, the other's address refuses them.
        let silent = std::net::TcpListener::bind("127.0.0.5:0").expect("a listener");
        let refused = std::net::TcpListener::bind("127.0.0.5:0").expect("a listener");
        let refused_at = refused.local_addr().expect("an address").to_string();
        drop(refused);
        let mut etcd_client = etcd_client::Client::connect([etcd.url()], None)
            .await
            .expect("etcd");
        let members = "gen_registry_cluster/members/";
        etcd_client
            .put(
                format!("{members}silent"),
                silent.local_addr().expect("an address").to_string(),
                None,
            )
            .await
            .expect("a put");
        etcd_client
            .put(format!("{members}gone"), refused_at, None)
            .await
            .expect("a put");
        let count = b.count().await.expect("a count");
        // The ghosts are members, so a and b hand them some shards, and stop
        // those shards' workers: some of the 10 may be gone.
        assert!(count.workers <= 10, "{count:?}");
        assert_eq!(count.answered, ["a", "b"]);
        assert_eq!(count.unanswered, ["gone", "silent"]);
        assert!(!count.is_complete());
        for ghost in ["silent", "gone"] {
            etcd_client
                .delete(format!("{members}{ghost}"), None)
                .await
                .expect("a delete");
        }
        assert!(b.count().await.expect("a count").is_complete());
        b.leave().await;
        a.leave().await;
    });
}

#[test]
fn a_node_s_worker_limit_holds_over_all_its_shards_and_refuses_starts_beyond_it() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        // Each shard's registry alone would allow 2 workers: 16 shards
        // would allow 32. The node's limit is 3, over all its shards.
        let options = || Options::default().max_workers(2);
        let (a, b) = two_nodes::<Adder>(&etcd, |c| c.max_workers(3), options).await;
        let (mut started, mut refused) = (Vec::new(), 0);
        for id in 0..40u64 {
            match a.call(id, 0, 1).await {
                Ok(_) => started.push(id),
                Err(ClusterError::Worker(failure)) => {
                    assert_eq!(failure.failure, Failure::AtCapacity(3), "{failure}");
                    let owner = a.owner(&id).await.expect("an owner").expect("owned");
                    assert_eq!(failure.node, owner.node);
                    refused += 1;
                }
                Err(e) => panic!("id {id}: {e}"),
            }
        }
        assert_eq!(started.len(), 6, "3 on each node: {started:?}");
        assert_eq!(refused, 34);
        assert_eq!((a.local_count(), b.local_count()), (3, 3));
        // Calls to running workers go on; a stopped one makes room on its
        // node, and only there.
        for id in &started {
            assert_eq!(b.call(*id, 0, 1).await.expect("a running worker"), 2);
        }
        let freed = started[0];
        let freed_on = a
            .owner(&freed)
            .await
            .expect("an owner")
            .expect("owned")
            .node;
        a.stop(&freed).await.expect("a stop");
        let mut restarted = None;
        for id in 0..40u64 {
            if started.contains(&id) {
                continue;
            }
            if b.call(id, 0, 1).await.is_ok() {
                restarted = Some(id);
                break;
            }
        }
        let restarted = restarted.expect("room for one more worker");
        let on = a
            .owner(&restarted)
            .await
            .expect("an owner")
            .expect("owned")
            .node;
        assert_eq!(on, freed_on);
        assert_eq!(a.count().await.expect("a count").workers, 6);
        b.leave().await;
        a.leave().await;
    });
}

#[test]
fn concurrent_starts_never_take_a_node_beyond_its_worker_limit() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Cluster::<Adder>::join(config(&etcd, "a", 2).max_workers(5), Options::default())
            .await
            .expect("a joins");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !(0..16).all(|s| a.serves(s)) {
            assert!(std::time::Instant::now() < deadline, "a serves every shard");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for round in 0..5u64 {
            let mut calls = tokio::task::JoinSet::new();
            for id in 0..200u64 {
                let a = a.clone();
                calls.spawn(async move { a.call(round * 1000 + id, 0, 1).await.is_ok() });
            }
            let mut started = 0;
            while let Some(ok) = calls.join_next().await {
                started += usize::from(ok.expect("a call task"));
            }
            assert!(
                (1..=5).contains(&started),
                "round {round}: {started} started"
            );
            assert!(a.local_count() <= 5, "round {round}: {}", a.local_count());
            for id in 0..200u64 {
                let _ = a.stop(&(round * 1000 + id)).await;
            }
        }
        a.leave().await;
    });
}
