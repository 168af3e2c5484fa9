//! A pre-written event log for measuring the projector: booking `i` (4 events) and visit `i` (6 events)
//! per pair, written straight into `events` in statements of 5,000 rows, without the command path.
//!
//! [`round_robin`] lays it out as the worst case for the projector's batches: round `r` holds the `r`-th
//! event of every stream, so the events of one aggregate are a whole round apart and nearly every event
//! of a batch touches another row. [`histories`] and [`insert`] let a caller lay out other shapes (the
//! bench's live-like log).

use cqrs_es::DomainEvent;
use domain::booking::{BookingEvent, Customer, PartnerSource};
use domain::values::{Currency, Email, Money, ValueError};
use domain::visit::{Patient, VisitEvent};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Why the log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fixed value of the generated events did not parse (a change of the domain's value rules).
    #[error("building the events: {0}")]
    Value(#[from] ValueError),
    /// An event could not be serialized (a bug in the domain types).
    #[error("serializing an event: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The INSERT failed: check the database is migrated and empty of these streams.
    #[error("pre-writing the log: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many rows one INSERT writes.
pub const CHUNK: usize = 5000;

/// One event of the log, before its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `booking` or `visit`.
    pub aggregate_type: &'static str,
    /// `b-<i>` or `v-<i>`.
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: Value,
}

/// The events of booking `i` (4) and visit `i` (6), each stream in order.
pub fn histories(i: usize) -> Result<[Vec<Row>; 2]> {
    let now = chrono::Utc::now();
    let booking_id = format!("b-{i}");
    let visit_id = format!("v-{i}");
    let eur = Currency::parse("EUR")?;
    let booking = [
        BookingEvent::BookingRequested {
            booking_id: booking_id.clone(),
            owner: format!("user-{}", i % 50),
            partner: ["acme-hotels", "globex-inns"][i % 2].to_owned(),
            resource: format!("room-{i}"),
            starts_at: now,
            ends_at: now + chrono::Duration::days(2),
            guests: 2,
            amount: Money::new(25000, eur.clone()),
            customer: Customer {
                name: "Ada Lovelace".into(),
                email: Email::parse("ada@example.com")?,
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
            amount: Money::new(25000, eur),
        },
    ];
    let visit = [
        VisitEvent::VisitScheduled {
            visit_id: visit_id.clone(),
            owner: format!("user-{}", i % 50),
            patient: Patient {
                id: format!("p-{i}"),
                name: "Grace Hopper".into(),
                email: Email::parse("grace@example.com")?,
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
    Ok([
        rows("booking", &booking_id, booking)?,
        rows("visit", &visit_id, visit)?,
    ])
}

fn rows<E: DomainEvent>(
    aggregate_type: &'static str,
    aggregate_id: &str,
    events: impl IntoIterator<Item = E>,
) -> Result<Vec<Row>> {
    events
        .into_iter()
        .map(|e| {
            Ok(Row {
                aggregate_type,
                aggregate_id: aggregate_id.to_owned(),
                event_type: e.event_type(),
                payload: serde_json::to_value(e)?,
            })
        })
        .collect()
}

/// Inserts `rows` (each event with its sequence number) in one statement.
pub async fn insert(pool: &PgPool, rows: &[(Row, i64)]) -> Result<()> {
    let (mut types, mut ids, mut seqs, mut event_types, mut versions, mut payloads, mut metas) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (row, sequence) in rows {
        types.push(row.aggregate_type);
        ids.push(row.aggregate_id.clone());
        seqs.push(*sequence);
        versions.push(if row.event_type == "BookingRequested" {
            "2.0"
        } else {
            "1.0"
        });
        event_types.push(row.event_type.clone());
        payloads.push(row.payload.clone());
        metas.push(
            json!({"event_id": uuid::Uuid::now_v7(), "correlation_id": "bench",
            "command": "bench.prewrite", "service_version": env!("CARGO_PKG_VERSION")}),
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
    .await?;
    Ok(())
}

/// Writes `pairs` bookings and visits as the worst case: round `r` (0 to 5) holds the `r`-th event of
/// every stream, pairs in order, the booking before the visit. Returns the number of events.
pub async fn round_robin(pool: &PgPool, pairs: usize) -> Result<u64> {
    // Pairs are built in slices, so memory stays bounded however many there are.
    const SLICE: usize = 20_000;
    let mut written = 0u64;
    let mut rows: Vec<(Row, i64)> = Vec::with_capacity(CHUNK);
    for round in 0..6usize {
        let sequence = i64::try_from(round).unwrap_or(0) + 1;
        let mut start = 0;
        while start < pairs {
            let end = (start + SLICE).min(pairs);
            for i in start..end {
                for stream in histories(i)? {
                    if let Some(event) = stream.into_iter().nth(round) {
                        rows.push((event, sequence));
                        if rows.len() == CHUNK {
                            insert(pool, &rows).await?;
                            written += rows.len() as u64;
                            rows.clear();
                        }
                    }
                }
            }
            start = end;
        }
    }
    if !rows.is_empty() {
        insert(pool, &rows).await?;
        written += rows.len() as u64;
    }
    Ok(written)
}
