//! Catch-up throughput of the projector over a pre-written log (a measurement, not a check: ignored by
//! default). Run with
//! `cargo test -p projector --release --test throughput -- --ignored --nocapture`.
//! The log interleaves the events of thousands of aggregates, so nearly every event of a batch touches a
//! different row: the worst case for the load-fold-upsert batches (`store::testing::prewrite::round_robin`,
//! which the bench's worst case writes too).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use projector::NAMES;
use store::testing::{prewrite, TestDb};

/// Clears the read models and checkpoints (for measuring again from zero).
async fn reset(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "truncate rm_bookings, rm_visits, rm_status_items, rm_status_counts, rm_timeline;
         update projection_checkpoints set tx_id = 0, position = 0, last_event_at = null",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// Prints the events per second of each projection alone (one runner, batches of 500), of all four runners
/// of one process at once, and of a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly, preferably with --release"]
async fn catch_up_throughput_over_a_prewritten_log() {
    let db = TestDb::new().await.unwrap();
    let pairs: usize = std::env::var("PAIRS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let events = prewrite::round_robin(&db.pool, pairs).await.unwrap();
    println!("{events} events ({pairs} bookings x 4 + {pairs} visits x 6), interleaved");

    for name in NAMES {
        let projection = projector::projection(name).unwrap();
        let start = Instant::now();
        while projector::apply_next_batch(&db.pool, projection, 500)
            .await
            .unwrap()
            > 0
        {}
        let elapsed = start.elapsed();
        println!(
            "{name:<13} alone: {:>8.0} events/s ({elapsed:.2?})",
            rate(events, elapsed)
        );
    }
    common::assert_timeline_matches_log(&db.pool).await;

    reset(&db.pool).await;
    let start = Instant::now();
    let runner = common::Projector::spawn(db.pool.clone(), {
        let mut config = common::config("bench");
        config.batch_size = 500;
        config
    });
    common::wait_caught_up(&db.pool, &NAMES, Duration::from_secs(600)).await;
    let elapsed = start.elapsed();
    runner.stop().await;
    println!(
        "all four at once: {:>8.0} events/s per projection, {:.0} event applications/s in total ({elapsed:.2?})",
        rate(events, elapsed),
        rate(events * 4, elapsed)
    );

    let start = Instant::now();
    projector::rebuild(&db.pool, "bookings", |_| {})
        .await
        .unwrap();
    let elapsed = start.elapsed();
    println!(
        "rebuild of bookings: {:>8.0} events/s ({elapsed:.2?})",
        rate(events, elapsed)
    );
}
