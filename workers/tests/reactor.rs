//! The reactor against real PostgreSQL: the global log turned into jobs, exactly once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::Rng;
use store::testing::TestDb;
use workers::jobs;
use workers::reactor;

/// Appends `(aggregate_type, aggregate_id, event_type)` events, one transaction per chunk of 5.
async fn append(pool: &sqlx::PgPool, events: &[(&str, String, &str)]) {
    for chunk in events.chunks(5) {
        let mut tx = pool.begin().await.unwrap();
        for (aggregate_type, id, event_type) in chunk {
            sqlx::query(
                "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 values ($1, $2, coalesce((select max(sequence) from events where aggregate_type = $1 and aggregate_id = $2), 0) + 1,
                         $3, '1.0', '{}', '{}')",
            )
            .bind(aggregate_type)
            .bind(id)
            .bind(event_type)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// Two reactors killed again and again at random points (their tasks aborted mid-batch) still enqueue
/// each job exactly once: no job lost, no batch applied twice (no dedupe hit), checkpoint at the end.
#[tokio::test]
async fn reactor_enqueue_and_checkpoint_are_atomic_under_kills() {
    let db = TestDb::new().await.unwrap();
    let mut events = Vec::new();
    for i in 0..40 {
        events.push(("booking", format!("b-{i}"), "BookingRequested"));
        events.push(("booking", format!("b-{i}"), "PartnerReservationRequested"));
    }
    for i in 0..20 {
        events.push(("visit", format!("v-{i}"), "VisitScheduled"));
        events.push(("visit", format!("v-{i}"), "VisitCompleted"));
    }
    append(&db.pool, &events).await;

    let mut kills = 0;
    for _ in 0..200 {
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let pool = db.pool.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if reactor::run_batch(&pool, 7).await.unwrap() == 0 {
                        return;
                    }
                }
            }));
        }
        let wait = rand::rng().random_range(0..4000u64);
        tokio::time::sleep(Duration::from_micros(wait)).await;
        for task in tasks {
            if !task.is_finished() {
                kills += 1;
            }
            task.abort();
            let _ = task.await;
        }
    }
    while reactor::run_batch(&db.pool, 7).await.unwrap() > 0 {}

    assert!(kills > 0, "the test never killed a reactor mid-run");
    let all = jobs::list(
        &db.pool,
        &jobs::JobFilter {
            limit: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        all.len(),
        100,
        "two jobs per BookingRequested (reserve, deadline), one per VisitCompleted"
    );
    assert!(
        all.iter().all(|j| j.dedupe_hits == 0),
        "a batch was enqueued twice"
    );
    for i in 0..40 {
        assert!(all
            .iter()
            .any(|j| j.dedupe_key == format!("partner.reserve:b-{i}") && j.queue == "partner"));
        assert!(all
            .iter()
            .any(|j| j.dedupe_key == format!("booking.deadline:b-{i}")
                && j.run_at > j.created_at + chrono::Duration::minutes(10)));
    }
    for i in 0..20 {
        assert!(all
            .iter()
            .any(|j| j.dedupe_key == format!("report.generate:v-{i}") && j.queue == "documents"));
    }
    let head = store::log::tail(&db.pool).await.unwrap();
    assert_eq!(reactor::checkpoint(&db.pool).await.unwrap(), head);
}

/// Events appended after the reactor caught up are picked up by the running loop, and shutdown returns.
#[tokio::test]
async fn running_reactor_picks_up_new_events_and_stops_on_shutdown() {
    let db = TestDb::new().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(reactor::run(
        db.pool.clone(),
        reactor::ReactorConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    append(
        &db.pool,
        &[("booking", "b-1".to_owned(), "BookingRequested")],
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = jobs::list(
            &db.pool,
            &jobs::JobFilter {
                kind: Some("partner.reserve".to_owned()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .len();
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no job enqueued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
