//! Catch-up throughput of the projector over a pre-written log (a measurement, not a check: ignored by
//! default). Run with
//! `cargo test -p projector --release --test throughput -- --ignored --nocapture`.
//! The log interleaves the events of thousands of aggregates, so nearly every event of a batch touches a
//! different row: the worst case for the load-fold-upsert batches.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::booking::{BookingEvent, Customer, PartnerSource};
use domain::values::{Currency, Email, Money};
use domain::visit::{Patient, VisitEvent};
use projector::NAMES;
use serde_json::{json, Value};
use store::testing::TestDb;

/// The events of booking `i` (4) and visit `i` (6), as (type, id, event type, payload).
fn histories(i: usize) -> Vec<Vec<(&'static str, String, String, Value)>> {
    let now = Utc::now();
    let booking_id = format!("b-{i}");
    let visit_id = format!("v-{i}");
    let booking = [
        BookingEvent::BookingRequested {
            booking_id: booking_id.clone(),
            owner: format!("user-{}", i % 50),
            partner: ["acme-hotels", "globex-inns"][i % 2].to_owned(),
            resource: format!("room-{i}"),
            starts_at: now,
            ends_at: now + chrono::Duration::days(2),
            guests: 2,
            amount: Money::new(25000, Currency::parse("EUR").unwrap()),
            customer: Customer {
                name: "Ada Lovelace".into(),
                email: Email::parse("ada@example.com").unwrap(),
            },
            at: now,
        },
        BookingEvent::PartnerReservationRequested {
            attempt: 1,
            at: now,
        },
        BookingEvent::PartnerConfirmed {
            reservation_id: format!("r-{i}"),
            source: PartnerSource::Response,
            partner_time: now,
        },
        BookingEvent::PaymentCaptured {
            payment_id: format!("pay-{i}"),
            amount: Money::new(25000, Currency::parse("EUR").unwrap()),
        },
    ];
    let visit = [
        VisitEvent::VisitScheduled {
            visit_id: visit_id.clone(),
            owner: format!("user-{}", i % 50),
            patient: Patient {
                id: format!("p-{i}"),
                name: "Grace Hopper".into(),
                email: Email::parse("grace@example.com").unwrap(),
            },
            clinician: "dr-grey".into(),
            scheduled_at: now,
            at: now,
        },
        VisitEvent::PatientCheckedIn { at: now },
        VisitEvent::ConsultationStarted { at: now },
        VisitEvent::VisitCompleted {
            summary: "fine".into(),
            diagnosis_codes: vec!["J06.9".into()],
            at: now,
        },
        VisitEvent::ReportGenerated {
            document_id: format!("doc-{i}"),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            bytes: 1234,
        },
        VisitEvent::ReportSent {
            message_id: format!("msg-{i}"),
        },
    ];
    use cqrs_es::DomainEvent;
    vec![
        booking
            .into_iter()
            .map(|e| {
                let t = e.event_type();
                (
                    "booking",
                    booking_id.clone(),
                    t,
                    serde_json::to_value(e).unwrap(),
                )
            })
            .collect(),
        visit
            .into_iter()
            .map(|e| {
                let t = e.event_type();
                (
                    "visit",
                    visit_id.clone(),
                    t,
                    serde_json::to_value(e).unwrap(),
                )
            })
            .collect(),
    ]
}

/// Writes `pairs` bookings and visits (10 events per pair), interleaved across aggregates, in chunks.
async fn prewrite(pool: &sqlx::PgPool, pairs: usize) -> i64 {
    let streams: Vec<Vec<_>> = (0..pairs).flat_map(histories).collect();
    let mut rows = Vec::new();
    for round in 0..6 {
        for stream in &streams {
            if let Some(event) = stream.get(round) {
                rows.push((event.clone(), i64::try_from(round).unwrap() + 1));
            }
        }
    }
    for chunk in rows.chunks(5000) {
        let (mut types, mut ids, mut seqs, mut event_types, mut versions, mut payloads, mut metas) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((aggregate_type, id, event_type, payload), sequence) in chunk {
            types.push(*aggregate_type);
            ids.push(id.clone());
            seqs.push(*sequence);
            versions.push(if event_type == "BookingRequested" {
                "2.0"
            } else {
                "1.0"
            });
            event_types.push(event_type.clone());
            payloads.push(payload.clone());
            metas.push(
                json!({"event_id": uuid::Uuid::now_v7(), "correlation_id": "bench",
                              "command": "bench", "service_version": "0.1.0"}),
            );
        }
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             select * from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&seqs)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metas)
        .execute(pool)
        .await
        .unwrap();
    }
    i64::try_from(rows.len()).unwrap()
}

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

fn rate(events: i64, elapsed: Duration) -> f64 {
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
    let events = prewrite(&db.pool, pairs).await;
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
