//! Rebuilds build a projection from position zero into fresh tables and swap them in atomically.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_read_models_match_fold, assert_timeline_matches_log, board_counts, config, dump,
    read_model_relations, true_status_counts, wait_caught_up, write, Projector,
};
use projector::{RebuildConfig, RebuildProgress, NAMES};
use store::testing::TestDb;
use store::{EventStore, StoreConfig};

const TABLES: [&str; 5] = [
    "rm_bookings",
    "rm_visits",
    "rm_status_items",
    "rm_status_counts",
    "rm_timeline",
];

async fn dump_all(pool: &sqlx::PgPool) -> Vec<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for table in TABLES {
        all.push(dump(pool, table).await);
    }
    all
}

async fn events(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Rebuilding each projection from position zero gives exactly the rows the live runner had built,
/// reports its progress up to the head, keeps table comments and index names, and leaves no `_rebuild`
/// or `_old` table behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_gives_the_same_tables_as_the_live_projection() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 15, 15, 400 + w)))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let projector = Projector::spawn(db.pool.clone(), config("live"));
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    projector.stop().await;
    let live = dump_all(&db.pool).await;
    let relations = read_model_relations(&db.pool).await;
    let total = events(&db.pool).await;

    // Act
    let mut reports = Vec::new();
    let mut progress = Vec::new();
    for name in NAMES {
        let seen: Mutex<Vec<RebuildProgress>> = Mutex::new(Vec::new());
        let config = RebuildConfig {
            batch_size: 100,
            ..RebuildConfig::default()
        };
        let report =
            projector::rebuild_with(&db.pool, name, &config, |p| seen.lock().unwrap().push(p))
                .await
                .unwrap();
        reports.push(report);
        progress.push(seen.into_inner().unwrap());
    }

    // Assert
    assert_eq!(dump_all(&db.pool).await, live);
    assert_eq!(read_model_relations(&db.pool).await, relations);
    for (report, seen) in reports.iter().zip(&progress) {
        assert_eq!(report.events_applied, u64::try_from(total).unwrap());
        assert!(seen.len() > 1, "progress after every batch: {seen:?}");
        let last = seen.last().unwrap();
        assert_eq!(last.events_applied, report.events_applied);
        assert!(last.position <= last.head_position && last.head_position > 0);
        let status = projector::rebuild_status(&db.pool, report.name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.status, "swapped");
        assert_eq!(status.events_applied, total);
    }
    let comment: Option<String> =
        sqlx::query_scalar("select obj_description('rm_bookings'::regclass, 'pg_class')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        comment.as_deref(),
        Some("Read model of bookings (projection bookings): one row per booking.")
    );
    let statuses = projector::status(&db.pool).await.unwrap();
    assert!(statuses.iter().all(|s| s.lag_events == 0), "{statuses:?}");
}

/// Rebuilding while writers write and the live runner runs: queries keep reading the complete live
/// tables (row counts never drop, as they would on a half-built table), and after the swaps the read
/// models equal the fold of the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_while_writers_write_swaps_in_a_complete_model() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let projector = Projector::spawn(db.pool.clone(), config("live"));
    for writer in (0..4)
        .map(|w| tokio::spawn(write(store.clone(), format!("a{w}"), 10, 10, 500 + w)))
        .collect::<Vec<_>>()
    {
        writer.await.unwrap();
    }
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write(store.clone(), format!("b{w}"), 15, 15, 600 + w)))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (pool, done) = (db.pool.clone(), done.clone());
        async move {
            let mut last = (0i64, 0i64, 0i64);
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let now: (i64, i64, i64) = sqlx::query_as(
                    "select (select count(*) from rm_bookings), (select count(*) from rm_visits),
                            (select coalesce(sum(count), 0)::bigint from rm_timeline)",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert!(
                    now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2,
                    "a query saw fewer rows than before: {last:?} then {now:?}"
                );
                last = now;
                reads += 1;
            }
            reads
        }
    });

    // Act
    for name in NAMES {
        projector::rebuild(&db.pool, name, |_| {}).await.unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    projector.stop().await;

    // Assert
    assert!(reads > 10, "the reader ran {reads} times");
    assert_read_models_match_fold(&store).await;
    assert_eq!(
        board_counts(&db.pool).await,
        true_status_counts(&store).await
    );
    assert_timeline_matches_log(&db.pool).await;
    let leftovers: Vec<String> = read_model_relations(&db.pool)
        .await
        .into_iter()
        .filter(|r| r.contains("_rebuild") || r.contains("_old"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A second rebuild of a projection that is being rebuilt is refused; a rebuild killed halfway is
/// reported as abandoned, leaves the live tables untouched, and the next rebuild cleans up and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_runs_alone_and_a_killed_one_leaves_the_live_model_intact() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    for writer in (0..4)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 15, 15, 700 + w)))
        .collect::<Vec<_>>()
    {
        writer.await.unwrap();
    }
    let projector = Projector::spawn(db.pool.clone(), config("live"));
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    projector.stop().await;
    let live = dump(&db.pool, "rm_timeline").await;
    let slow = RebuildConfig {
        batch_size: 1,
        ..RebuildConfig::default()
    };

    // Act
    let started = Arc::new(tokio::sync::Notify::new());
    let first = tokio::spawn({
        let (pool, slow, started) = (db.pool.clone(), slow.clone(), started.clone());
        async move { projector::rebuild_with(&pool, "timeline", &slow, |_| started.notify_one()).await }
    });
    started.notified().await;
    let second = projector::rebuild(&db.pool, "timeline", |_| {}).await;
    let running = projector::rebuild_status(&db.pool, "timeline")
        .await
        .unwrap()
        .unwrap();
    first.abort();
    let _ = first.await;
    let abandoned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = projector::rebuild_status(&db.pool, "timeline")
                .await
                .unwrap()
                .unwrap();
            if status.status == "abandoned" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let during = dump(&db.pool, "rm_timeline").await;
    let leftover = read_model_relations(&db.pool).await;
    let again = projector::rebuild(&db.pool, "timeline", |_| {})
        .await
        .unwrap();

    // Assert
    assert!(
        matches!(second, Err(projector::Error::RebuildInProgress("timeline"))),
        "{second:?}"
    );
    assert_eq!(running.status, "running");
    assert!(abandoned.events_applied > 0 && abandoned.finished_at.is_none());
    assert_eq!(
        during, live,
        "the live table is untouched by a killed rebuild"
    );
    assert!(leftover.contains(&"rm_timeline_rebuild".to_owned()));
    assert_eq!(
        again.events_applied,
        u64::try_from(events(&db.pool).await).unwrap()
    );
    assert_eq!(dump(&db.pool, "rm_timeline").await, live);
    assert!(!read_model_relations(&db.pool)
        .await
        .iter()
        .any(|r| r.contains("_rebuild")));
}

/// Rebuilding a projection that does not exist is a clear error.
#[tokio::test]
async fn rebuilding_an_unknown_projection_is_refused() {
    let db = TestDb::new().await.unwrap();
    let outcome = projector::rebuild(&db.pool, "nope", |_| {}).await;
    assert!(matches!(outcome, Err(projector::Error::UnknownProjection(n)) if n == "nope"));
}
