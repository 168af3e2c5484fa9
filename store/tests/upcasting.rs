//! Events written by an older trailbook load through the aggregate's upcasters.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use domain::booking::{BookingCommand, BookingStatus};
use domain::Booking;
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};

/// A `BookingRequested` row stored at version 1.0 (flat amount and customer fields) loads as the current
/// event, folds into a usable booking, and the booking accepts new commands on top of it.
#[tokio::test]
async fn stored_v1_booking_requested_rows_load_and_accept_new_commands() {
    let db = TestDb::new().await.unwrap();
    sqlx::query(
        r#"insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
           values ('booking', 'b-old', 1, 'BookingRequested', '1.0',
                   '{"BookingRequested":{"booking_id":"b-old","owner":"ada","partner":"acme-hotels","resource":"room-42","starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-03T11:00:00Z","guests":2,"amount_minor":25000,"currency":"EUR","customer_name":"Ada","customer_email":"ada@example.com","at":"2026-11-01T10:00:00Z"}}',
                   '{}')"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());

    let loaded = store.load::<Booking>("b-old").await.unwrap();
    assert_eq!(loaded.version, 1);
    let booking = &loaded.state;
    assert_eq!(booking.status, BookingStatus::Requested);
    let amount = booking.amount.as_ref().unwrap();
    assert_eq!((amount.minor, amount.currency.as_str()), (25000, "EUR"));
    assert_eq!(
        booking.customer.as_ref().unwrap().email.as_str(),
        "ada@example.com"
    );

    let decoded = store.history("booking", "b-old").await.unwrap()[0]
        .decode::<Booking>()
        .unwrap();
    assert!(matches!(
        decoded,
        domain::booking::BookingEvent::BookingRequested { .. }
    ));

    let cancelled = store
        .execute::<Booking>(
            "b-old",
            BookingCommand::Cancel {
                reason: "changed plans".into(),
                at: chrono::Utc::now(),
            },
            &(),
            &CommandContext::system("booking.cancel"),
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (cancelled.version, cancelled.state.status),
        (2, BookingStatus::Cancelled)
    );
}
