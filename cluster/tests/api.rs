//! The cluster's API in one process, on an etcd of the test's own: every
//! operation by id, the errors for bad input, and what leaving does.

mod common;

use common::*;
use gen_registry::Options;
use gen_registry_cluster::doc_support::Adder;
use gen_registry_cluster::{Cluster, ClusterError, Config};
use std::time::Duration;

#[test]
fn every_operation_by_id_reaches_the_one_worker_of_the_id_on_either_node() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Cluster::<Adder>::join(config(&etcd, "a", 2), Options::default())
            .await
            .expect("a joins");
        let b = Cluster::<Adder>::join(config(&etcd, "b", 3), Options::default())
            .await
            .expect("b joins");
        // Both see both members before the first call of the test.
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
        assert_eq!(a.count().await.expect("a count"), 20);
        assert_eq!(a.local_count() + b.local_count(), 20);
        for id in 0..20u64 {
            let by = if id % 2 == 0 { &a } else { &b };
            by.stop(&id).await.expect("a stop");
            assert!(
                matches!(by.stop(&id).await, Err(ClusterError::NotFound)),
                "id {id} stopped once"
            );
        }
        assert_eq!(b.count().await.expect("a count"), 0);
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
