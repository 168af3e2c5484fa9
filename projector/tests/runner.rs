//! The runner applies every committed event exactly once: with slow transactions committing late, when it
//! is killed at random moments, and when several runners compete for the same projection.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    assert_read_models_match_fold, assert_timeline_matches_log, board_counts, config,
    insert_by_hand, true_status_counts, wait_caught_up, write, Projector,
};
use projector::NAMES;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::db::PoolConfig;
use store::testing::TestDb;
use store::{EventStore, StoreConfig};

/// Waits (bounded) until `check` holds for the current leaders.
async fn wait_for_leaders(
    pool: &sqlx::PgPool,
    limit: Duration,
    check: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> std::collections::HashMap<String, String> {
    let start = Instant::now();
    loop {
        let leaders = projector::leaders(pool).await.unwrap();
        if check(&leaders) {
            return leaders;
        }
        assert!(
            start.elapsed() < limit,
            "leaders not as expected after {limit:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No skip: concurrent writers run real commands while transactions inserted by hand stay open and commit
/// after later ones (one of them rolls back). The read models end equal, row by row, to the time-travel
/// fold of every aggregate; the board counts and the timeline equal the truth; the stored v1 events were
/// upcast on the way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_equal_the_fold_of_the_log_although_slow_transactions_commit_late() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let projector = Projector::spawn(db.pool.clone(), config("single"));

    // Act
    let writers: Vec<_> = (0..6)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 12, 12, w)))
        .collect();
    let pool = db.pool.clone();
    let slow = tokio::spawn(async move {
        for i in 0..3 {
            let mut tx = pool.begin().await.unwrap();
            insert_by_hand(&mut tx, &format!("slow-b{i}"), &format!("slow-v{i}")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.commit().await.unwrap();
        }
        let mut tx = pool.begin().await.unwrap();
        insert_by_hand(&mut tx, "gone-b", "gone-v").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.rollback().await.unwrap();
    });
    for writer in writers {
        writer.await.unwrap();
    }
    slow.await.unwrap();
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    projector.stop().await;

    // Assert
    assert_read_models_match_fold(&store).await;
    assert_eq!(
        board_counts(&db.pool).await,
        true_status_counts(&store).await
    );
    assert_timeline_matches_log(&db.pool).await;
    let slow: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "select booking_id, status, amount_minor from rm_bookings where booking_id like 'slow-%' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        slow,
        (0..3)
            .map(|i| (
                format!("slow-b{i}"),
                "partner_pending".to_owned(),
                Some(25000)
            ))
            .collect::<Vec<_>>(),
        "late commits are applied, through the v1 → v2 upcaster"
    );
}

/// Exactly once: the projector is killed (its task aborted) at random moments, mid-batch or mid-commit,
/// while thousands of events are written, and restarted each time. The status board's counts equal the
/// true counts folded from the log, the timeline equals `count(*)` of the events, and every row equals
/// its fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_projector_at_random_moments_neither_loses_nor_repeats_an_event() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let mut crashy = config("crashy");
    crashy.batch_size = 40;
    let writers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 40, 40, 100 + w)))
        .collect();

    // Act
    let mut rng = StdRng::seed_from_u64(7);
    let mut kills = 0;
    while kills < 8 || !writers.iter().all(|w| w.is_finished()) {
        let projector = Projector::spawn(db.pool.clone(), crashy.clone());
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..150))).await;
        projector.kill().await;
        kills += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let projector = Projector::spawn(db.pool.clone(), crashy);
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    projector.stop().await;

    // Assert
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(events >= 2000, "only {events} events were written");
    assert!(kills >= 8);
    assert_eq!(
        board_counts(&db.pool).await,
        true_status_counts(&store).await
    );
    assert_timeline_matches_log(&db.pool).await;
    assert_read_models_match_fold(&store).await;
}

/// Two projector processes (separate pools) run at once: each projection has exactly one leader; killing
/// the leader of a projection hands it to the other process within seconds; the end state is exact, so no
/// batch was applied twice or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projector_processes_share_the_work_and_one_takes_over_when_the_other_dies() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let other_pool = store::db::connect(
        &db.url,
        &PoolConfig {
            max_connections: 8,
            ..PoolConfig::default()
        },
    )
    .await
    .unwrap();
    let writers: Vec<_> = (0..6)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 20, 20, 200 + w)))
        .collect();
    let mut a = Some(Projector::spawn(db.pool.clone(), config("a")));
    let mut b = Some(Projector::spawn(other_pool.clone(), config("b")));

    // Act: one leader per projection, then kill the leader of the timeline.
    let leaders = wait_for_leaders(&db.pool, Duration::from_secs(10), |l| {
        l.len() == NAMES.len()
    })
    .await;
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks
         where locktype = 'advisory' and granted and classid = 1952608370::oid
           and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let victim = leaders["timeline"].clone();
    let survivor = if victim == "a" { "b" } else { "a" };
    let killed_at = Instant::now();
    if victim == "a" {
        a.take().unwrap().kill().await;
    } else {
        b.take().unwrap().kill().await;
    }
    wait_for_leaders(&db.pool, Duration::from_secs(10), |l| {
        l.len() == NAMES.len() && l.values().all(|v| v == survivor)
    })
    .await;
    let takeover = killed_at.elapsed();
    for writer in writers {
        writer.await.unwrap();
    }
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    for projector in [a, b].into_iter().flatten() {
        projector.stop().await;
    }

    // Assert
    assert!(
        leaders.values().all(|l| l == "a" || l == "b"),
        "{leaders:?}"
    );
    assert_eq!(held, 4, "exactly one advisory lock per projection");
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    assert_timeline_matches_log(&db.pool).await;
    assert_eq!(
        board_counts(&db.pool).await,
        true_status_counts(&store).await
    );
    assert_read_models_match_fold(&store).await;
}

/// The checkpoint row lock alone fences runners: many tasks applying batches of the same projections at
/// once, with no leadership at all, still apply each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_without_leadership_still_apply_each_event_once() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write(store.clone(), format!("w{w}"), 10, 10, 300 + w)))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    // Act
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let pool = db.pool.clone();
            let name = NAMES[i % NAMES.len()];
            tokio::spawn(async move {
                let projection = projector::projection(name).unwrap();
                let mut applied = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let n = projector::apply_next_batch(&pool, projection, 7)
                        .await
                        .unwrap();
                    applied.push(n);
                    let caught_up = projector::status(&pool)
                        .await
                        .unwrap()
                        .iter()
                        .any(|s| s.name == name && s.lag_events == 0);
                    if caught_up || Instant::now() > deadline {
                        return (name, applied);
                    }
                }
            })
        })
        .collect();
    let mut batches = 0;
    let mut names = HashSet::new();
    for racer in racers {
        let (name, applied) = racer.await.unwrap();
        names.insert(name);
        batches += applied.iter().filter(|n| **n > 0).count();
    }
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(10)).await;

    // Assert
    assert_eq!(names.len(), NAMES.len());
    assert!(batches > 12, "the racers applied {batches} batches");
    assert_timeline_matches_log(&db.pool).await;
    assert_eq!(
        board_counts(&db.pool).await,
        true_status_counts(&store).await
    );
    assert_read_models_match_fold(&store).await;
}

/// A NOTIFY on the projector's channel wakes an idle leader long before its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_wakes_an_idle_runner_before_its_next_poll() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let mut sleepy = config("sleepy");
    sleepy.poll_interval = Duration::from_secs(30);
    sleepy.listen = true;
    let projector = Projector::spawn_only(db.pool.clone(), &["timeline"], sleepy);
    wait_for_leaders(&db.pool, Duration::from_secs(10), |l| {
        l.contains_key("timeline")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    write(store.clone(), "n".to_owned(), 2, 0, 1).await;
    // Notified again every 200 ms: another test's open transaction (xmin is cluster-wide) may hide the
    // events from the first look.
    let start = Instant::now();
    loop {
        sqlx::query("select pg_notify($1, '')")
            .bind(projector::CHANNEL)
            .execute(&db.pool)
            .await
            .unwrap();
        let lag = projector::status(&db.pool).await.unwrap()[3].lag_events;
        if lag == 0 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let woke = start.elapsed();
    projector.stop().await;

    // Assert
    assert!(woke < Duration::from_secs(10), "woke after {woke:?}");
    assert_timeline_matches_log(&db.pool).await;
}
