//! Durable reminders on a real PostgreSQL server, through the store's
//! `Backend` methods: set and replace, cancel, fired one-shot and periodic
//! reminders, fencing by epoch, and the due query (ordered, limited, read
//! through its index).

mod common;

use common::*;
use gen_registry::state::{Backend, Key, Refusal, Reminder, ReminderWrite};
use gen_registry_postgres::Postgres;

fn key(id: u8) -> Key {
    Key {
        kind: "rule",
        id: vec![id],
    }
}

fn reminder(id: u8, name: &str, due_ms: u64, epoch: u64) -> Reminder {
    Reminder {
        key: key(id),
        name: name.into(),
        partition: 0,
        due_ms,
        period_ms: None,
        message: name.as_bytes().to_vec(),
        epoch,
    }
}

fn cancel(id: u8, name: &str, epoch: u64) -> ReminderWrite {
    ReminderWrite::Cancel {
        key: key(id),
        name: name.into(),
        epoch,
    }
}

fn fired(id: u8, name: &str, due_ms: u64, next_due_ms: Option<u64>, epoch: u64) -> ReminderWrite {
    ReminderWrite::Fired {
        key: key(id),
        name: name.into(),
        due_ms,
        message: name.as_bytes().to_vec(),
        next_due_ms,
        epoch,
    }
}

async fn remind(postgres: &Postgres, writes: Vec<ReminderWrite>) -> Vec<Result<bool, Refusal>> {
    postgres.remind(writes).await.expect("the batch")
}

/// The reminders of worker `id`, as (name, due time, epoch).
async fn held(postgres: &Postgres, id: u8) -> Vec<(String, u64, u64)> {
    let all = postgres.reminders_of(key(id)).await.unwrap();
    all.into_iter()
        .map(|r| (r.name, r.due_ms, r.epoch))
        .collect()
}

#[test]
fn a_reminder_set_again_is_replaced_and_a_cancel_says_whether_it_found_one() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let set = |due| ReminderWrite::Set(reminder(1, "expire", due, 0));
        assert_eq!(remind(&postgres, vec![set(100)]).await, [Ok(true)]);
        assert_eq!(remind(&postgres, vec![set(200)]).await, [Ok(true)]);
        let other = ReminderWrite::Set(reminder(1, "audit", 50, 0));
        assert_eq!(remind(&postgres, vec![other]).await, [Ok(true)]);
        // By name; the replaced one is gone.
        assert_eq!(
            held(&postgres, 1).await,
            [("audit".into(), 50, 0), ("expire".into(), 200, 0)]
        );
        let full = postgres.reminders_of(key(1)).await.unwrap();
        assert_eq!(full[1], reminder(1, "expire", 200, 0));
        assert_eq!(
            remind(
                &postgres,
                vec![
                    cancel(1, "expire", 0),
                    cancel(1, "expire", 0),
                    cancel(2, "x", 0)
                ]
            )
            .await,
            [Ok(true), Ok(false), Ok(false)]
        );
        assert_eq!(held(&postgres, 1).await, [("audit".into(), 50, 0)]);
        assert!(held(&postgres, 2).await.is_empty());
    });
}

#[test]
fn a_fired_one_shot_reminder_is_removed_and_a_periodic_one_moves_on() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let mut periodic = reminder(1, "tick", 1_000, 0);
        periodic.period_ms = Some(500);
        let once = reminder(1, "once", 1_000, 0);
        let set = vec![
            ReminderWrite::Set(periodic.clone()),
            ReminderWrite::Set(once),
        ];
        assert_eq!(remind(&postgres, set).await, [Ok(true), Ok(true)]);
        let fire = vec![
            fired(1, "tick", 1_000, Some(1_500), 0),
            fired(1, "once", 1_000, None, 0),
        ];
        assert_eq!(remind(&postgres, fire).await, [Ok(true), Ok(true)]);
        let now = postgres.reminders_of(key(1)).await.unwrap();
        periodic.due_ms = 1_500;
        assert_eq!(
            now,
            [periodic],
            "the periodic one is due again, its period kept"
        );
        // Delivered again for the same due time (at least once): nothing to do.
        assert_eq!(
            remind(
                &postgres,
                vec![
                    fired(1, "tick", 1_000, Some(1_500), 0),
                    fired(1, "once", 1_000, None, 0)
                ]
            )
            .await,
            [Ok(false), Ok(false)]
        );
    });
}

#[test]
fn a_reminder_fired_after_it_was_set_again_keeps_the_new_one() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let set = |due| ReminderWrite::Set(reminder(1, "expire", due, 0));
        remind(&postgres, vec![set(100)]).await;
        // Read as due at 100; meanwhile the worker moves it to 300.
        let due = postgres.due("rule", 0, 100, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        remind(&postgres, vec![set(300)]).await;
        assert_eq!(
            remind(&postgres, vec![fired(1, "expire", 100, None, 0)]).await,
            [Ok(false)]
        );
        assert_eq!(held(&postgres, 1).await, [("expire".into(), 300, 0)]);
        // Cancelled meanwhile: the delivery finds nothing, and sets nothing.
        remind(&postgres, vec![cancel(1, "expire", 0)]).await;
        assert_eq!(
            remind(&postgres, vec![fired(1, "expire", 300, Some(400), 0)]).await,
            [Ok(false)]
        );
        assert!(held(&postgres, 1).await.is_empty());
    });
}

#[test]
fn a_reminder_write_from_an_older_epoch_is_fenced_and_the_rest_of_its_batch_applies() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        remind(
            &postgres,
            vec![ReminderWrite::Set(reminder(1, "expire", 100, 2))],
        )
        .await;
        let outcomes = remind(
            &postgres,
            vec![
                ReminderWrite::Set(reminder(1, "expire", 999, 1)),
                cancel(1, "expire", 1),
                fired(1, "expire", 100, None, 1),
                // Another reminder of the same worker has its own epoch.
                ReminderWrite::Set(reminder(1, "audit", 50, 1)),
            ],
        )
        .await;
        let fenced = Err(Refusal::Fenced { last: 2 });
        assert_eq!(outcomes, [fenced, fenced, fenced, Ok(true)]);
        assert_eq!(
            held(&postgres, 1).await,
            [("audit".into(), 50, 1), ("expire".into(), 100, 2)]
        );
        // The new owner fires it: it moves, and keeps the writer's epoch.
        assert_eq!(
            remind(&postgres, vec![fired(1, "expire", 100, Some(200), 3)]).await,
            [Ok(true)]
        );
        assert_eq!(held(&postgres, 1).await[1], ("expire".into(), 200, 3));
    });
}

#[test]
fn a_due_time_past_what_the_store_keeps_fails_the_batch_and_nothing_of_it_applies() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let batch = vec![
            ReminderWrite::Set(reminder(1, "fine", 100, 0)),
            ReminderWrite::Set(reminder(1, "far", u64::MAX, 0)),
        ];
        let e = postgres.remind(batch).await.unwrap_err();
        assert!(e.contains("due time") && e.contains("i64::MAX"), "{e}");
        assert!(e.contains(postgres.server()), "{e}");
        assert!(held(&postgres, 1).await.is_empty());
    });
}

#[test]
fn due_reminders_come_earliest_first_at_most_the_limit_of_one_kind_and_partition() {
    let server = server();
    let postgres = backend(&server);
    run(60, async move {
        let mut writes = Vec::new();
        // Ten reminders due at 1,000 .. 10,000 in a shuffled order, and
        // others that are not due, or of another partition or kind.
        for (i, due) in [7u64, 3, 9, 1, 5, 10, 2, 8, 4, 6].into_iter().enumerate() {
            writes.push(ReminderWrite::Set(reminder(i as u8, "r", due * 1_000, 0)));
        }
        writes.push(ReminderWrite::Set(reminder(20, "late", 50_000, 0)));
        let mut elsewhere = reminder(21, "r", 10, 0);
        elsewhere.partition = 1;
        writes.push(ReminderWrite::Set(elsewhere));
        let mut other_kind = reminder(22, "r", 10, 0);
        other_kind.key.kind = "other";
        writes.push(ReminderWrite::Set(other_kind));
        remind(&postgres, writes).await;

        let dues = |limit| {
            let postgres = postgres.clone();
            async move {
                let due = postgres.due("rule", 0, 10_000, limit).await.unwrap();
                due.into_iter().map(|r| r.due_ms).collect::<Vec<_>>()
            }
        };
        assert_eq!(dues(3).await, [1_000, 2_000, 3_000]);
        let all: Vec<u64> = (1..=10).map(|n| n * 1_000).collect();
        assert_eq!(dues(100).await, all);
        assert!(dues(0).await.is_empty());
        let until_the_end = postgres.due("rule", 0, u64::MAX, 100).await.unwrap();
        assert_eq!(until_the_end.len(), 11);
        let first = &postgres.due("rule", 0, 10_000, 1).await.unwrap()[0];
        assert_eq!(first, &reminder(3, "r", 1_000, 0));
        let partition_one = postgres.due("rule", 1, 10_000, 10).await.unwrap();
        assert_eq!(partition_one.len(), 1);
        assert_eq!(partition_one[0].partition, 1);
    });
}

#[test]
fn the_due_query_reads_through_its_index() {
    let server = server();
    let postgres = backend(&server);
    let runtime = tokio_runtime();
    let handle = runtime.handle().clone();
    run(120, async move {
        // 20,000 reminders over 4 partitions, a minute apart.
        for batch in 0..20u64 {
            let writes = (0..1_000u64)
                .map(|i| {
                    let n = batch * 1_000 + i;
                    let mut r = reminder(0, &format!("r{n}"), 1_800_000_000_000 + n * 60_000, 0);
                    r.key.id = n.to_be_bytes().to_vec();
                    r.partition = (n % 4) as u32;
                    ReminderWrite::Set(r)
                })
                .collect();
            remind(&postgres, writes).await;
        }
        let client = client(&server, &handle).await;
        client
            .batch_execute("ANALYZE gen_registry_reminders")
            .await
            .unwrap();
        // The store's due statement, with the values a scheduler passes.
        let plan = client
            .query(
                "EXPLAIN SELECT id, name, partition, due_ms, period_ms, message, epoch FROM gen_registry_reminders
                 WHERE kind = 'rule' AND partition = 2 AND due_ms <= 1800000600000
                 ORDER BY due_ms LIMIT 100",
                &[],
            )
            .await
            .unwrap();
        let plan: Vec<String> = plan.iter().map(|row| row.get(0)).collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using gen_registry_reminders_due on gen_registry_reminders"),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{plan}");
        // Kind, partition and due time all bound the index range: no row
        // is read only to be filtered out.
        assert!(!plan.contains("Filter"), "{plan}");
        assert!(
            !plan.contains("Sort"),
            "ordered by the index itself:\n{plan}"
        );
        let due = postgres
            .due("rule", 2, 1_800_000_600_000, 100)
            .await
            .unwrap();
        assert_eq!(due.len(), 3); // n = 2, 6, 10
    });
}
