//! One long-lived aggregate: a visit whose report keeps failing, so its stream grows to 10k events.
//! Loading its head with and without snapshots against a 10-event stream, time travel to random
//! versions, and commands appended to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use cqrs_es::{Aggregate, DomainEvent};
use domain::values::Email;
use domain::visit::{Patient, VisitCommand, VisitEvent};
use domain::Visit;
use rand::Rng;
use serde_json::json;
use store::{CommandContext, EventStore, ExecuteOptions};

use crate::error::{chain, Context, Error, Result};

/// The three streams of the workload.
#[derive(Debug, Clone)]
pub struct Streams {
    /// `length` events, a snapshot every `snapshot_every` of them (as the store writes them).
    pub snapshotted: String,
    /// The same `length` events, no snapshot.
    pub bare: String,
    /// 10 events, no snapshot: the baseline.
    pub short: String,
    pub length: u64,
}

/// Event `sequence` (from 1) of a visit whose report fails forever after the consultation.
fn event(id: &str, sequence: u64) -> Result<VisitEvent> {
    let now = Utc::now();
    Ok(match sequence {
        1 => VisitEvent::VisitScheduled {
            visit_id: id.to_owned(),
            owner: crate::commands::CLIENT.to_owned(),
            patient: Patient {
                id: "p-1".into(),
                name: "Grace Hopper".into(),
                email: Email::parse("grace@example.com").context("parsing the e-mail")?,
            },
            clinician: "dr-grey".into(),
            scheduled_at: now,
            at: now,
        },
        2 => VisitEvent::PatientCheckedIn { at: now },
        3 => VisitEvent::ConsultationStarted { at: now },
        4 => VisitEvent::VisitCompleted {
            summary: "fine".into(),
            diagnosis_codes: vec!["J06.9".into()],
            at: now,
        },
        n => VisitEvent::ReportGenerationFailed {
            attempt: u32::try_from(n - 4).unwrap_or(u32::MAX),
            error: "renderer timed out".into(),
            final_attempt: false,
        },
    })
}

/// Writes a stream of `length` events in chunks, returning its global positions in sequence order, and
/// (when `snapshot_every` > 0) the snapshots the store would have written.
async fn write_stream(
    store: &EventStore,
    id: &str,
    length: u64,
    snapshot_every: u64,
) -> Result<()> {
    let pool = store.pool();
    let mut state = Visit::default();
    let mut sequence = 1;
    while sequence <= length {
        let end = (sequence + 4999).min(length);
        let (mut seqs, mut types, mut payloads, mut metas) = (vec![], vec![], vec![], vec![]);
        let mut events = Vec::new();
        for s in sequence..=end {
            let e = event(id, s)?;
            seqs.push(i64::try_from(s).unwrap_or(i64::MAX));
            types.push(e.event_type());
            payloads.push(serde_json::to_value(&e).context("serializing an event")?);
            metas.push(
                json!({"event_id": uuid::Uuid::now_v7(), "correlation_id": "bench",
                "command": "bench.prewrite", "service_version": env!("CARGO_PKG_VERSION")}),
            );
            events.push(e);
        }
        let positions: Vec<(i64, i64)> = sqlx::query_as(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             select 'visit', $1, t.s, t.ty, '1.0', t.p, t.m
             from unnest($2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[]) as t(s, ty, p, m)
             returning sequence, global_position",
        )
        .bind(id)
        .bind(&seqs)
        .bind(&types)
        .bind(&payloads)
        .bind(&metas)
        .fetch_all(pool)
        .await
        .context("writing a long stream")?;
        let mut positions = positions;
        positions.sort_unstable();
        for (e, (s, position)) in events.into_iter().zip(positions) {
            state.apply(e);
            let s = u64::try_from(s).unwrap_or_default();
            if snapshot_every > 0 && s % snapshot_every == 0 {
                store
                    .write_snapshot(id, s, position, &state)
                    .await
                    .context("writing a snapshot")?;
            }
        }
        sequence = end + 1;
    }
    Ok(())
}

/// Writes the three streams.
pub async fn build(store: &EventStore, nonce: &str, length: u64) -> Result<Streams> {
    let streams = Streams {
        snapshotted: format!("visit-long-snap-{nonce}"),
        bare: format!("visit-long-bare-{nonce}"),
        short: format!("visit-short-{nonce}"),
        length,
    };
    let every = store.config().snapshot_every;
    write_stream(store, &streams.snapshotted, length, every).await?;
    write_stream(store, &streams.bare, length, 0).await?;
    write_stream(store, &streams.short, 10, 0).await?;
    Ok(streams)
}

/// Loads the head of `id`, checking it has `expected` events.
pub async fn load_head(store: EventStore, id: Arc<str>, expected: u64) -> Result<()> {
    let loaded = store
        .load::<Visit>(&id)
        .await
        .context("loading a stream head")?;
    if loaded.version < expected {
        return Err(Error::step(
            "loading a stream head",
            format!("version {} < {expected}", loaded.version),
        ));
    }
    Ok(())
}

/// Loads `id` at a random version in `1..=length`, recording the most events one load applied.
pub async fn time_travel(
    store: EventStore,
    id: Arc<str>,
    length: u64,
    max_applied: Arc<AtomicUsize>,
) -> Result<()> {
    let version = rand::rng().random_range(1..=length);
    let loaded = store
        .load_at_version::<Visit>(&id, version)
        .await
        .context("loading a past version")?;
    if loaded.version != version {
        return Err(Error::step(
            "time travel",
            format!("asked for version {version}, got {}", loaded.version),
        ));
    }
    max_applied.fetch_max(loaded.applied, Ordering::Relaxed);
    Ok(())
}

/// One more failed report attempt recorded on `id` (load, handle, append of one event).
pub async fn append_command(store: EventStore, id: Arc<str>) -> Result<()> {
    let command = VisitCommand::RecordReportFailed {
        attempt: rand::rng().random_range(1..=u32::MAX),
        error: "renderer timed out".into(),
        final_attempt: false,
    };
    store
        .execute::<Visit>(
            &id,
            command,
            &(),
            &CommandContext::system("visit.record_report_failed"),
            ExecuteOptions::default(),
        )
        .await
        .map_err(|e| Error::step("appending to a long stream", chain(&e)))?;
    Ok(())
}
