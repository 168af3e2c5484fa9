//! Projector workloads: catch-up over a pre-written log, rebuild, and live lag while commands arrive.

use std::time::{Duration, Instant};

use chrono::Utc;
use cqrs_es::DomainEvent;
use domain::booking::{BookingEvent, Customer, PartnerSource};
use domain::values::{Currency, Email, Money};
use domain::visit::{Patient, VisitEvent};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::commands::LastWrite;
use crate::error::{Context, Error, Result};
use crate::load::micros;

type Row = (&'static str, String, String, Value);

/// The events of booking `i` (4) and visit `i` (6), like `projector/tests/throughput.rs`.
fn histories(i: usize) -> Result<[Vec<Row>; 2]> {
    let now = Utc::now();
    let booking_id = format!("b-{i}");
    let visit_id = format!("v-{i}");
    let eur = Currency::parse("EUR").context("parsing EUR")?;
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
                email: Email::parse("ada@example.com").context("parsing an e-mail")?,
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
                email: Email::parse("grace@example.com").context("parsing an e-mail")?,
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
    let mut bookings = Vec::new();
    for e in booking {
        let t = e.event_type();
        bookings.push((
            "booking",
            booking_id.clone(),
            t,
            serde_json::to_value(e).context("serializing an event")?,
        ));
    }
    let mut visits = Vec::new();
    for e in visit {
        let t = e.event_type();
        visits.push((
            "visit",
            visit_id.clone(),
            t,
            serde_json::to_value(e).context("serializing an event")?,
        ));
    }
    Ok([bookings, visits])
}

/// How the events of one aggregate lie in the pre-written log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Like live traffic: pair `i` starts at slot `i`, and its `k`-th events follow at slot `i + k * gap`
    /// (10 events per slot), so consecutive events of one aggregate are about `10 * gap` events apart.
    Live { gap: usize },
    /// The worst case for batching: round `r` holds the `r`-th event of every stream, so the events of
    /// one aggregate are a whole round apart and nearly every event of a batch touches another row.
    RoundRobin,
}

impl Shape {
    pub fn describe(self) -> String {
        match self {
            Shape::Live { gap } => format!(
                "live-like log: an aggregate's next event ~{} events later",
                gap * 10
            ),
            Shape::RoundRobin => {
                "worst case: an aggregate's next event a whole round later (every event of a batch on another row)"
                    .to_owned()
            }
        }
    }
}

/// Writes `pairs` bookings (4 events) and visits (6 events) laid out as `shape` says, in transactions of
/// 5,000 events. Returns the number of events.
pub async fn prewrite(pool: &PgPool, pairs: usize, shape: Shape) -> Result<u64> {
    let mut written = 0u64;
    let mut rows: Vec<(Row, i64)> = Vec::with_capacity(5000);
    let mut flush = |rows: &mut Vec<(Row, i64)>| {
        let chunk = std::mem::take(rows);
        written += chunk.len() as u64;
        chunk
    };
    match shape {
        Shape::RoundRobin => {
            // Round r holds the r-th event of every stream; pairs are built in slices to bound memory.
            let slice = 20_000usize;
            for round in 0..6usize {
                let mut start = 0;
                while start < pairs {
                    let end = (start + slice).min(pairs);
                    for i in start..end {
                        for stream in histories(i)? {
                            if let Some(event) = stream.into_iter().nth(round) {
                                rows.push((event, i64::try_from(round).unwrap_or(0) + 1));
                                if rows.len() == 5000 {
                                    insert_chunk(pool, &flush(&mut rows)).await?;
                                }
                            }
                        }
                    }
                    start = end;
                }
            }
        }
        Shape::Live { gap } => {
            // Streams are built when their first event is due and dropped after their last one.
            let gap = gap.max(1);
            let mut open: std::collections::BTreeMap<usize, [Vec<Row>; 2]> = Default::default();
            for slot in 0..pairs + 5 * gap {
                if slot < pairs {
                    open.insert(slot, histories(slot)?);
                }
                for round in 0..6usize {
                    let Some(i) = slot.checked_sub(round * gap).filter(|i| *i < pairs) else {
                        continue;
                    };
                    let Some(streams) = open.get(&i) else {
                        continue;
                    };
                    for stream in streams {
                        if let Some(event) = stream.get(round) {
                            rows.push((event.clone(), i64::try_from(round).unwrap_or(0) + 1));
                        }
                    }
                    if round == 5 {
                        open.remove(&i);
                    }
                }
                if rows.len() >= 5000 {
                    insert_chunk(pool, &flush(&mut rows)).await?;
                }
            }
        }
    }
    if !rows.is_empty() {
        insert_chunk(pool, &flush(&mut rows)).await?;
    }
    Ok(written)
}

/// Empties the projector database: its schema is dropped and migrated again (the event log refuses
/// `TRUNCATE`, as it should).
pub async fn reset(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql("drop schema public cascade; create schema public;")
        .execute(pool)
        .await
        .context("emptying the projector database")?;
    store::db::migrate(pool)
        .await
        .context("migrating the projector database again")?;
    Ok(())
}

async fn insert_chunk(pool: &PgPool, chunk: &[(Row, i64)]) -> Result<()> {
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
    .await
    .context("pre-writing the log")?;
    Ok(())
}

/// Runs all four projections in this process (`projector::run_projections`, default config, as
/// `serve` does) until every checkpoint reaches the head of the log; returns the time that took.
pub async fn catch_up(pool: &PgPool, limit: Duration) -> Result<Duration> {
    let head = head(pool).await?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let runner_pool = pool.clone();
    let started = Instant::now();
    let runner = tokio::spawn(async move {
        projector::run_projections(
            runner_pool,
            &projector::NAMES,
            projector::Config::default(),
            async move {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            },
        )
        .await
    });
    let outcome = wait_for_head(pool, head, started, limit).await;
    let _ = stop_tx.send(true);
    match runner.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::step("the projector", e)),
        Err(e) => return Err(Error::step("the projector task", e)),
    }
    outcome
}

/// The head of the log (its highest global position).
pub async fn head(pool: &PgPool) -> Result<i64> {
    sqlx::query_scalar("select coalesce(max(global_position), 0) from events")
        .fetch_one(pool)
        .await
        .context("reading the head of the log")
}

/// Waits until every projection's checkpoint reaches `head`; returns the time since `started`, or an
/// error once that exceeds `limit`.
pub async fn wait_for_head(
    pool: &PgPool,
    head: i64,
    started: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let slowest: i64 = sqlx::query_scalar(
            "select coalesce(min(position), 0) from projection_checkpoints where name = any($1)",
        )
        .bind(&projector::NAMES[..])
        .fetch_one(pool)
        .await
        .context("polling the checkpoints")?;
        if slowest >= head {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(Error::step(
                "projector catch-up",
                format!("not caught up within {limit:?} (slowest at {slowest} of {head})"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `projector::rebuild` of `bookings` from position zero (fresh tables, then the swap).
pub async fn rebuild(pool: &PgPool) -> Result<Duration> {
    let started = Instant::now();
    projector::rebuild(pool, "bookings", |_| {})
        .await
        .map_err(|e| Error::step("rebuilding bookings", e))?;
    Ok(started.elapsed())
}

/// Until `stop`, takes the newest committed write, polls `projector::reached("bookings", position)`
/// every millisecond until the read model has it, and records the time since its answer arrived.
pub async fn sample_lag(
    pool: PgPool,
    last: LastWrite,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u64>, u64) {
    let mut lags = Vec::new();
    let mut timeouts = 0;
    while !*stop.borrow() {
        let next = last.lock().ok().and_then(|mut guard| guard.take());
        let Some((position, answered)) = next else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        loop {
            match projector::reached(&pool, "bookings", position).await {
                Ok(true) => {
                    lags.push(micros(answered.elapsed()));
                    break;
                }
                Ok(false) if answered.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => {
                    timeouts += 1;
                    break;
                }
            }
        }
    }
    (lags, timeouts)
}
