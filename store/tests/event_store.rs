//! The event store against real PostgreSQL: snapshots, concurrency, commit hooks, time travel, and the
//! refusals and fallbacks on bad stored data.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;

use common::{fold, Counter, CounterCommand, Gate};
use store::testing::TestDb;
use store::{
    CommandContext, CommandError, CommitHook, EventStore, ExecuteOptions, HookError, StoreConfig,
};
use tokio::sync::Barrier;

fn store_with(db: &TestDb, snapshot_every: u64, retries: u32) -> EventStore {
    EventStore::new(
        db.pool.clone(),
        StoreConfig {
            snapshot_every,
            max_conflict_retries: retries,
            ..StoreConfig::default()
        },
    )
}

async fn add(store: &EventStore, id: &str, ns: &[i64]) -> store::Committed<Counter> {
    store
        .execute::<Counter>(
            id,
            CounterCommand::Add(ns.to_vec()),
            &Gate::default(),
            &CommandContext::system("counter.add"),
            ExecuteOptions::default(),
        )
        .await
        .expect("command commits")
}

/// A stream whose `apply` is not idempotent loads identically with and without snapshots, at the head and
/// at every past version, across many snapshot boundaries and multi-event commits.
#[tokio::test]
async fn snapshots_never_change_the_loaded_state() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 4, 5);
    let batches: Vec<Vec<i64>> = (1..=25)
        .map(|i| (0..(i % 3 + 1)).map(|j| i * 10 + j).collect())
        .collect();
    for batch in &batches {
        add(&store, "c-1", batch).await;
    }

    let history = store.history("counter", "c-1").await.unwrap();
    let truth = fold(&history);
    let snapshots: i64 =
        sqlx::query_scalar("select count(*) from snapshots where aggregate_id = 'c-1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(snapshots >= 10, "expected many snapshots, got {snapshots}");

    let head = store.load::<Counter>("c-1").await.unwrap();
    assert_eq!(head.state, truth);
    assert_eq!(head.version, history.len() as u64);
    assert_eq!(
        truth.applied,
        history.len() as u64,
        "each event applied exactly once"
    );
    assert!(head.snapshot.is_some(), "head load starts from a snapshot");

    for v in 1..=history.len() {
        let past = store
            .load_at_version::<Counter>("c-1", v as u64)
            .await
            .unwrap();
        assert_eq!(past.state, fold(&history[..v]), "state at version {v}");
        assert_eq!(past.version, v as u64);
        // a snapshot is written whenever a commit crosses a multiple of 4; a commit holds at most 3 events
        assert!(
            past.applied <= 6,
            "version {v} folded {} events",
            past.applied
        );
    }
}

/// A snapshot row that no longer deserializes, or that was written for another state version, is ignored:
/// the load folds from events and gives the right answer.
#[tokio::test]
async fn corrupt_or_outdated_snapshots_are_ignored() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 2, 5);
    for i in 0..6 {
        add(&store, "c-2", &[i]).await;
    }
    let truth = fold(&store.history("counter", "c-2").await.unwrap());

    sqlx::query("update snapshots set state = '{\"total\":\"not a number\"}' where aggregate_id = 'c-2' and sequence = 6")
        .execute(&db.pool)
        .await
        .unwrap();
    let loaded = store.load::<Counter>("c-2").await.unwrap();
    assert_eq!(loaded.state, truth);
    assert_eq!(loaded.snapshot, None, "the corrupt snapshot was not used");

    sqlx::query("update snapshots set state_version = 99 where aggregate_id = 'c-2'")
        .execute(&db.pool)
        .await
        .unwrap();
    let loaded = store.load::<Counter>("c-2").await.unwrap();
    assert_eq!(loaded.state, truth);
    assert_eq!(loaded.snapshot, None);
}

/// Every command returns the new version and the global position of its last event.
#[tokio::test]
async fn a_commit_returns_its_version_and_global_position() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    let first = add(&store, "a", &[1, 2]).await;
    let second = add(&store, "b", &[3]).await;
    let third = add(&store, "a", &[4]).await;
    assert_eq!((first.version, second.version, third.version), (2, 1, 3));
    let max: i64 = sqlx::query_scalar("select max(global_position) from events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(third.position, Some(max));
    assert!(first.position < second.position && second.position < third.position);

    let noop = store
        .execute::<Counter>(
            "a",
            CounterCommand::Nothing,
            &Gate::default(),
            &CommandContext::system("noop"),
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(noop.version, 3);
    assert!(noop.events.is_empty());
    assert_eq!(
        noop.position, third.position,
        "a no-op reports the aggregate's last position"
    );
}

/// Concurrent commands on one aggregate all land exactly once: conflicts are retried internally, no
/// update is lost and no event is duplicated.
#[tokio::test]
async fn concurrent_commands_are_retried_and_none_is_lost() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 3, 20);
    add(&store, "hot", &[0]).await;
    let mut tasks = Vec::new();
    for i in 1..=16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { add(&store, "hot", &[i]).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = store.load::<Counter>("hot").await.unwrap();
    assert_eq!(loaded.version, 17);
    assert_eq!(loaded.state.total, (0..=16).sum::<i64>());
    let mut adds = loaded.state.adds.clone();
    adds.sort();
    assert_eq!(adds, (0..=16).collect::<Vec<_>>());
}

/// When retries run out, the caller gets a typed conflict carrying the current version, and only the
/// winner's events are stored.
#[tokio::test]
async fn conflict_after_retries_is_a_typed_error() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 0);
    let gate = Arc::new(Gate {
        barrier: Some(Arc::new(Barrier::new(2))),
        hold: 2,
        ..Gate::default()
    });
    let run = |n: i64| {
        let store = store.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            store
                .execute::<Counter>(
                    "race",
                    CounterCommand::Add(vec![n]),
                    &gate,
                    &CommandContext::system("add"),
                    ExecuteOptions::default(),
                )
                .await
        })
    };
    let (a, b) = (run(1), run(2));
    let results = [a.await.unwrap(), b.await.unwrap()];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one wins: {results:?}");
    let conflict = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(conflict, CommandError::Conflict { current_version: 1 }),
        "{conflict:?}"
    );
    assert_eq!(store.history("counter", "race").await.unwrap().len(), 1);
}

/// `If-Match` semantics: a stale expected version is refused with the current version.
#[tokio::test]
async fn stale_expected_version_is_refused() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    add(&store, "s", &[1, 1]).await;
    let err = store
        .execute::<Counter>(
            "s",
            CounterCommand::Add(vec![1]),
            &Gate::default(),
            &CommandContext::system("add"),
            ExecuteOptions {
                expected_version: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Stale {
                expected: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    let ok = store
        .execute::<Counter>(
            "s",
            CounterCommand::Add(vec![1]),
            &Gate::default(),
            &CommandContext::system("add"),
            ExecuteOptions {
                expected_version: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.version, 3);
}

/// A wrong `new_stream` guess costs one retry and never a wrong state.
#[tokio::test]
async fn a_wrong_new_stream_hint_is_harmless() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    add(&store, "n", &[5]).await;
    let out = store
        .execute::<Counter>(
            "n",
            CounterCommand::AddBelow { n: 1, limit: 5 },
            &Gate::default(),
            &CommandContext::system("add"),
            ExecuteOptions {
                new_stream: true,
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(out, Err(CommandError::Rejected(common::LimitReached))),
        "rule checked on the real state: {out:?}"
    );
    assert_eq!(store.load::<Counter>("n").await.unwrap().version, 1);
}

/// Records an idempotency answer under `key` beside the events: the side write a caller's hook asks for.
struct KeyHook {
    key: String,
}

impl CommitHook<Counter> for KeyHook {
    fn writes(
        &self,
        _change: &store::Change<'_, Counter>,
        writes: &mut store::Writes,
    ) -> Result<(), HookError> {
        writes.record(store::KeyRecord {
            scope: "test".into(),
            key: self.key.clone(),
            request_hash: "hash".into(),
            ttl: chrono::Duration::hours(1),
            response: Box::new(|at| Ok(serde_json::json!({ "version": at.version }))),
            position_in_answer: false,
        });
        Ok(())
    }
}

/// The hook's row and the events commit together or not at all: a refused record leaves no events.
#[tokio::test]
async fn commit_hook_rows_are_atomic_with_the_events() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    let hook = KeyHook {
        key: "room-1".into(),
    };
    let gate = Gate::default();
    let context = CommandContext::system("claim");
    let run = |id: &'static str| {
        store
            .execute::<Counter>(
                id,
                CounterCommand::Add(vec![1]),
                &gate,
                &context,
                ExecuteOptions::default(),
            )
            .with_hook(&hook)
    };
    run("first").await.unwrap();
    let err = run("second").await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Refused(HookError::Refused {
                code: "idempotency_key_in_use",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(
        store.history("counter", "second").await.unwrap().is_empty(),
        "refused record left no events"
    );
    let (owner, response): (String, serde_json::Value) = sqlx::query_as(
        "select aggregate_id, response from idempotency_keys where idempotency_key = 'room-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (owner.as_str(), response),
        ("first", serde_json::json!({"version": 1}))
    );
}

/// "As of T" gives the state with every event recorded up to T and none after.
#[tokio::test]
async fn load_as_of_time_returns_the_earlier_state() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 1, 5);
    add(&store, "t", &[1]).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    add(&store, "t", &[2]).await;

    let then = store.load_as_of::<Counter>("t", between).await.unwrap();
    assert_eq!((then.version, then.state.total), (1, 1));
    let before = store
        .load_as_of::<Counter>("t", between - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(before.version, 0, "did not exist yet");
    let now = store
        .load_as_of::<Counter>("t", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!((now.version, now.state.total), (2, 3));
}

/// An event type the aggregate does not know is a clear error naming the row, not a panic.
#[tokio::test]
async fn unknown_event_type_in_the_table_is_a_clear_error() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    add(&store, "u", &[1]).await;
    sqlx::query("insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 values ('counter', 'u', 2, 'Exploded', '1.0', '{\"Exploded\":{}}', '{}')")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = store.load::<Counter>("u").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("counter/u #2") && text.contains("Exploded"),
        "{text}"
    );
}

/// The events table is append-only for real: UPDATE, DELETE and TRUNCATE are refused by the database.
#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    add(&store, "x", &[1]).await;
    for sql in [
        "update events set payload = '{}'",
        "delete from events",
        "truncate events",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.history("counter", "x").await.unwrap().len(), 1);
}

/// Events carry the command's correlation, causation, actor and a fresh UUID v7 event id each.
#[tokio::test]
async fn events_carry_metadata() {
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    let context = CommandContext {
        correlation_id: "corr-1".into(),
        causation_id: Some("cmd-9".into()),
        actor: Some(domain::values::Actor {
            subject: "ada".into(),
            role: domain::values::Role::Client,
        }),
        idempotency_key: Some("key-1".into()),
        command: Some("counter.add".into()),
        request_correlation_id: None,
    };
    store
        .execute::<Counter>(
            "m",
            CounterCommand::Add(vec![1, 2]),
            &Gate::default(),
            &context,
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    let history = store.history("counter", "m").await.unwrap();
    let metas: Vec<store::EventMetadata> = history
        .iter()
        .map(|e| e.metadata.parse().unwrap())
        .collect();
    assert_eq!(metas[0].context, context);
    assert_ne!(metas[0].event_id, metas[1].event_id);
    assert_eq!(metas[0].event_id.get_version_num(), 7);
}

/// The table stays readable by postgres-es 0.5 (its repository can load what we append).
#[tokio::test]
async fn postgres_es_can_read_our_events() {
    use cqrs_es::persist::PersistedEventRepository;
    let db = TestDb::new().await.unwrap();
    let store = store_with(&db, 0, 5);
    add(&store, "compat", &[7, 8]).await;
    let repo = postgres_es::PostgresEventRepository::new(db.pool.clone());
    let events = repo.get_events::<Counter>("compat").await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].sequence, 2);
}

/// A store with a commit notifier wakes LISTENers on `trailbook_events` after its commits (at most once per
/// commit, bursts fold together); a store without one sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_notify_the_log_readers_after_the_fact() {
    let db = TestDb::new().await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen(store::notify::CHANNEL).await.unwrap();
    let quiet = store_with(&db, 0, 5);
    let loud =
        store_with(&db, 0, 5).with_notifier(store::notify::CommitNotifier::spawn(db.pool.clone()));

    add(&quiet, "c-quiet", &[1]).await;
    let without =
        tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
    let commits: Vec<_> = (0..20)
        .map(|i| {
            let store = loud.clone();
            tokio::spawn(async move { add(&store, &format!("c-{i}"), &[i]).await })
        })
        .collect();
    for commit in commits {
        commit.await.unwrap();
    }
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv()).await;
    let mut more = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await
    {
        more += 1;
    }

    assert!(
        without.is_err(),
        "a store without a notifier sent {without:?}"
    );
    let first = first.expect("a notification arrives").unwrap();
    assert_eq!(first.channel(), "trailbook_events");
    let total = 1 + more;
    assert!(total <= 20, "{total} notifications for 20 commits");
}

/// Commands with a commit hook cancelled at random moments (a client hanging up drops the handler's
/// future) never leave their connection inside a transaction: the next command on that connection, an
/// autocommit append, is visible to others at once; records and events commit together or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_commands_leave_no_connection_inside_a_transaction() {
    use rand::Rng;
    let db = TestDb::new().await.unwrap();
    // One connection, so the command after a cancelled one runs on the very same connection.
    let pool = store::db::connect(
        &db.url,
        &store::db::PoolConfig {
            max_connections: 1,
            ..store::db::PoolConfig::default()
        },
    )
    .await
    .unwrap();
    let store = EventStore::new(
        pool.clone(),
        StoreConfig {
            snapshot_every: 0,
            max_conflict_retries: 5,
            ..StoreConfig::default()
        },
    );
    let mut invisible = Vec::new();

    for i in 0..300 {
        let wait = std::time::Duration::from_micros(rand::rng().random_range(0..1500));
        let hook = KeyHook {
            key: format!("key-{i}"),
        };
        let cancelled = store.clone();
        let _ = tokio::time::timeout(wait, async move {
            cancelled
                .execute::<Counter>(
                    &format!("c-{i}"),
                    CounterCommand::Add(vec![1]),
                    &Gate::default(),
                    &CommandContext::system("claim"),
                    ExecuteOptions::default(),
                )
                .with_hook(&hook)
                .await
        })
        .await;
        let plain = format!("plain-{i}");
        add(&store, &plain, &[1]).await;
        let seen: i64 = sqlx::query_scalar("select count(*) from events where aggregate_id = $1")
            .bind(&plain)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if seen != 1 {
            invisible.push(plain);
        }
    }
    let orphans: i64 = sqlx::query_scalar(
        "select count(*) from idempotency_keys k
         where not exists (select 1 from events e where e.aggregate_id = k.aggregate_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let unclaimed: i64 = sqlx::query_scalar(
        "select count(distinct e.aggregate_id) from events e
         where e.aggregate_id like 'c-%'
           and not exists (select 1 from idempotency_keys k where k.aggregate_id = e.aggregate_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let committed: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    assert!(
        invisible.is_empty(),
        "{} autocommit appends ran inside a transaction left open by a cancelled command",
        invisible.len()
    );
    assert_eq!((orphans, unclaimed), (0, 0));
    assert!(committed > 0, "some commands must have committed");
    assert!(committed < 300, "some commands must have been cancelled");
}

/// Racing appends of one to four events each, from two stores (two committers, as two processes), on
/// three streams: batches whose commands partly lose their race roll back and run again without them.
/// Afterwards every stream is gap-free, and its events are exactly those of the commands told they
/// committed, at the versions and positions they were told: nothing acknowledged is lost, nothing
/// refused is written, nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_multi_event_appends_keep_exactly_the_acknowledged_events() {
    use rand::Rng;
    let db = TestDb::new().await.unwrap();
    let config = StoreConfig {
        snapshot_every: 7,
        max_conflict_retries: 2,
        group_commit: store::GroupCommit {
            committers: 2,
            max_batch: 64,
        },
    };
    let stores = [
        EventStore::new(db.pool.clone(), config.clone()),
        EventStore::new(db.pool.clone(), config),
    ];
    let mut tasks = Vec::new();
    for client in 0..16_i64 {
        let store = stores[client as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut told = Vec::new();
            for n in 0..25_i64 {
                let (stream, len) = {
                    let mut rng = rand::rng();
                    (rng.random_range(0..3), rng.random_range(1..5))
                };
                let ns: Vec<i64> = (0..len).map(|k| client * 10_000 + n * 10 + k).collect();
                let out = store
                    .execute::<Counter>(
                        &format!("s{stream}"),
                        CounterCommand::Add(ns.clone()),
                        &Gate::default(),
                        &CommandContext::system("race"),
                        ExecuteOptions::default(),
                    )
                    .await;
                match out {
                    Ok(done) => told.push((format!("s{stream}"), ns, done.version, done.position)),
                    Err(CommandError::Conflict { .. }) => {}
                    Err(other) => panic!("unexpected outcome {other:?}"),
                }
            }
            told
        }));
    }
    let mut told = Vec::new();
    for task in tasks {
        told.extend(task.await.unwrap());
    }
    assert!(!told.is_empty());
    for stream in ["s0", "s1", "s2"] {
        let history = stores[0].history("counter", stream).await.unwrap();
        let sequences: Vec<i64> = history.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=history.len() as i64).collect::<Vec<_>>(),
            "{stream} has gaps"
        );
        let mut expected: Vec<i64> = told
            .iter()
            .filter(|t| t.0 == stream)
            .flat_map(|t| t.1.clone())
            .collect();
        let mut stored: Vec<i64> = history
            .iter()
            .map(|e| e.payload.to_value()["Added"]["n"].as_i64().unwrap())
            .collect();
        expected.sort_unstable();
        stored.sort_unstable();
        assert_eq!(
            stored, expected,
            "{stream}: stored events are not the acknowledged ones"
        );
        for (_, ns, version, position) in told.iter().filter(|t| t.0 == stream) {
            let last = &history[usize::try_from(*version).unwrap() - 1];
            assert_eq!(Some(last.global_position), *position);
            assert_eq!(
                last.payload.to_value()["Added"]["n"].as_i64(),
                ns.last().copied()
            );
        }
    }
}
