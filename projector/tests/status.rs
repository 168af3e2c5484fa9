//! Status, lag, the status board's stuck items, and what happens to an event that cannot be applied.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{config, wait_caught_up, write, Projector};
use projector::{StuckRule, NAMES};
use store::testing::TestDb;
use store::{EventStore, StoreConfig};

/// Before any runner ran, every projection lags by the whole log with a positive age and position 0;
/// once caught up, lag is zero in events and seconds, every event's position is reached, the leader is
/// named, and the status table shows it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_lag_before_running_and_none_once_caught_up() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    write(store.clone(), "s".to_owned(), 5, 5, 1).await;
    let (events, head): (i64, i64) =
        sqlx::query_as("select count(*), max(global_position) from events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Act
    let before = projector::status(&db.pool).await.unwrap();
    let reached_before = projector::reached(&db.pool, "bookings", head)
        .await
        .unwrap();
    let projector = Projector::spawn(db.pool.clone(), config("status-test"));
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    let after = projector::status(&db.pool).await.unwrap();
    let positions: Vec<i64> = sqlx::query_scalar("select global_position from events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut all_reached = true;
    for name in NAMES {
        for position in &positions {
            all_reached &= projector::reached(&db.pool, name, *position).await.unwrap();
        }
    }
    let table = projector::cli::status_table(&after);
    projector::publish_metrics(&after);
    projector.stop().await;

    // Assert
    let names: Vec<&str> = before.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, NAMES);
    for s in &before {
        assert_eq!(
            (s.position, s.lag_events, s.head_position),
            (0, events, head),
            "{s:?}"
        );
        assert!(s.lag_seconds > 0.0, "{s:?}");
        assert_eq!(s.last_event_at, None);
    }
    assert!(!reached_before);
    for s in &after {
        assert_eq!((s.lag_events, s.lag_seconds), (0, 0.0), "{s:?}");
        assert_eq!(s.head_position, head);
        assert!(s.position > 0 && s.last_event_at.is_some(), "{s:?}");
        assert_eq!(s.leader.as_deref(), Some("status-test"));
    }
    assert!(all_reached);
    assert!(!projector::reached(&db.pool, "bookings", head + 1000)
        .await
        .unwrap());
    assert!(table.starts_with("PROJECTION"), "{table}");
    assert!(
        table.contains("status_board") && table.contains("status-test"),
        "{table}"
    );
}

/// Items stay off the stuck list until their status is older than the rule's threshold; then bookings
/// waiting for the partner and completed visits whose report is pending show up, oldest first; counts
/// are by type and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lists_items_stuck_longer_than_their_threshold() {
    // Arrange: bookings left partner_pending and confirmed, a completed visit with its report pending.
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    common::drive_booking(&store, "b-requested", &mut rng, 0).await;
    let pending = store
        .execute::<domain::Booking>(
            "b-requested",
            domain::booking::BookingCommand::RecordReservationRequested {
                attempt: 1,
                at: Utc::now(),
            },
            &(),
            &store::CommandContext::system("test"),
            store::ExecuteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        pending.state.status,
        domain::booking::BookingStatus::PartnerPending
    );
    common::drive_visit(&store, "v-done", &mut rng, 0).await;
    for command in [
        domain::visit::VisitCommand::CheckIn { at: Utc::now() },
        domain::visit::VisitCommand::StartConsultation { at: Utc::now() },
        domain::visit::VisitCommand::Complete {
            summary: "ok".into(),
            diagnosis_codes: vec![],
            at: Utc::now(),
        },
    ] {
        store
            .execute::<domain::Visit>(
                "v-done",
                command,
                &(),
                &store::CommandContext::system("test"),
                store::ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }
    common::drive_visit(&store, "v-scheduled", &mut rng, 0).await;
    let projector = Projector::spawn(db.pool.clone(), config("board"));
    wait_caught_up(&db.pool, &NAMES, Duration::from_secs(60)).await;
    projector.stop().await;

    // Act
    let rules = StuckRule::defaults();
    let now = projector::board(&db.pool, &rules, Utc::now(), 100)
        .await
        .unwrap();
    let later = projector::board(
        &db.pool,
        &rules,
        Utc::now() + chrono::Duration::minutes(11),
        100,
    )
    .await
    .unwrap();
    let only_bookings = projector::board(
        &db.pool,
        &StuckRule::parse_list("booking:partner_pending=5m").unwrap(),
        Utc::now() + chrono::Duration::minutes(6),
        100,
    )
    .await
    .unwrap();

    // Assert
    assert!(now.stuck.is_empty(), "{:?}", now.stuck);
    let stuck: Vec<(&str, &str, &str)> = later
        .stuck
        .iter()
        .map(|s| {
            (
                s.aggregate_type.as_str(),
                s.aggregate_id.as_str(),
                s.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        stuck,
        [
            ("booking", "b-requested", "partner_pending"),
            ("visit", "v-done", "completed")
        ]
    );
    assert_eq!(later.stuck[1].report_status.as_deref(), Some("pending"));
    assert!(later.stuck.iter().all(|s| s.age_seconds > 600.0));
    assert_eq!(only_bookings.stuck.len(), 1);
    let counts: Vec<(&str, &str, i64)> = later
        .counts
        .iter()
        .map(|c| (c.aggregate_type.as_str(), c.status.as_str(), c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("booking", "partner_pending", 1),
            ("visit", "completed", 1),
            ("visit", "scheduled", 1)
        ]
    );
}

/// An event that cannot be decoded stops only the projections that decode it (bookings, status_board):
/// they keep their checkpoint before it, never skipping it, and report the lag; visits and the timeline,
/// which do not decode booking payloads, move on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_holds_its_projections_back_instead_of_being_skipped() {
    // Arrange
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    write(store.clone(), "ok".to_owned(), 3, 0, 1).await;
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         values ('booking', 'broken', 1, 'BookingRequested', '9.0', '{\"Nonsense\":{}}', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    write(store.clone(), "later".to_owned(), 3, 0, 2).await;
    let broken: i64 =
        sqlx::query_scalar("select global_position from events where aggregate_id = 'broken'")
            .fetch_one(&db.pool)
            .await
            .unwrap();

    // Act
    let projector = Projector::spawn(db.pool.clone(), config("stuck"));
    wait_caught_up(&db.pool, &["timeline", "visits"], Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses = projector::status(&db.pool).await.unwrap();
    projector.stop().await;

    // Assert
    for s in &statuses {
        match s.name.as_str() {
            // Neither decodes booking events: the visits projection skips other aggregate types.
            "timeline" | "visits" => assert_eq!(s.lag_events, 0, "{s:?}"),
            _ => {
                assert!(s.position < broken, "{s:?}");
                assert!(s.lag_events > 1, "{s:?}");
            }
        }
    }
    let later_rows: i64 =
        sqlx::query_scalar("select count(*) from rm_bookings where booking_id like 'later-%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(later_rows, 0, "nothing after the broken event was applied");
}

/// A lag beyond `LAG_COUNT_LIMIT` is not counted event by event (that made the gauge refresh cost seconds
/// during a long catch-up): it is estimated from the positions, and the age still comes from the oldest
/// pending event.
#[tokio::test]
async fn a_long_lag_is_estimated_from_positions_not_counted() {
    let db = TestDb::new().await.unwrap();
    let n = projector::LAG_COUNT_LIMIT + 50;
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
         select 'other', 'o-' || g, 1, 'Noise', '1.0', '{}'::jsonb, '{}'::jsonb, now() - interval '1 hour'
         from generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();

    let statuses = projector::status(&db.pool).await.unwrap();

    assert!(!statuses.is_empty());
    for s in statuses {
        assert_eq!((s.position, s.head_position), (0, n), "{s:?}");
        assert_eq!(s.lag_events, n, "{s:?}");
        assert!(s.lag_seconds >= 3_500.0, "{s:?}");
    }
}
