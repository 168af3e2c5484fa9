//! The reactor: turns events of the global log into jobs, exactly once.
//!
//! The global log is the outbox. One batch is one transaction, exactly like a projector batch: lock the
//! reactor's row in `reactor_checkpoints` ([`store::consumer::Checkpoints::lock`], `select ... for
//! update`), read up to `batch_size` events after it with [`store::log::read_after`] (never skipping an
//! event of a slow transaction), enqueue the jobs of those events (all in one statement,
//! [`jobs::enqueue_all`]), move the checkpoint, commit. Jobs and
//! checkpoint commit together or not at all, so a reactor killed anywhere leaves either the old checkpoint
//! and no jobs of the batch, or the new checkpoint and all of them. The row lock is the fence between two
//! reactors (any number may run); the dedupe key of every job is a second line of defence and counts any
//! hit in `jobs.dedupe_hits`.
//!
//! [`run`] drives the batches with the store's [`LogFollower`]: back to back while they come back full,
//! then a poll every `poll_interval` that looks without locking before the next batch, and the
//! [`Backoff`] between the retries of a failing one.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgPool};
use store::backoff::Backoff;
use store::conn::Guarded;
use store::consumer::{until_shutdown, Checkpoints, Consumer, LogFollower, Pace};
use store::log::read_after;
use store::{Checkpoint, RecordedEvent};

use crate::error::{Error, Result};
use crate::jobs::{self, JobSpec};

/// The name of the reactor's checkpoint row.
pub const REACTOR: &str = "jobs";

/// The reactors' checkpoints.
const CHECKPOINTS: Checkpoints = Checkpoints::new("reactor_checkpoints");

/// Job kinds the reactor enqueues.
pub mod kinds {
    /// Reserve the booking at its partner (booking id as the partner's idempotency key).
    pub const PARTNER_RESERVE: &str = "partner.reserve";
    /// Settle an unknown reservation outcome by asking the partner.
    pub const PARTNER_RECONCILE: &str = "partner.reconcile";
    /// Cancel the partner reservation after a payment failure (its own queue, rate limited).
    pub const PARTNER_COMPENSATE: &str = "partner.compensate";
    /// Release (cancel) the partner reservation of a booking cancelled, failed or resolved on our side
    /// (compensation queue).
    pub const PARTNER_RELEASE: &str = "partner.release";
    /// Ends a booking still waiting for its partner when its deadline passes (`failed`, slot released).
    pub const BOOKING_DEADLINE: &str = "booking.deadline";
    /// Charge the booking's payment at the payment provider (the payment key as its idempotency key).
    pub const PAYMENT_CAPTURE: &str = "payment.capture";
    /// Refund the payment of a cancelled paid booking (compensation queue).
    pub const PAYMENT_REFUND: &str = "payment.refund";
    /// Generate the PDF report of a completed visit.
    pub const REPORT_GENERATE: &str = "report.generate";
    /// E-mail the report to the patient.
    pub const REPORT_SEND: &str = "report.send";
}

/// How the reactor behaves.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    pub batch_size: i64,
    /// How often an idle reactor looks for new events.
    pub poll_interval: Duration,
    /// Retry schedule of a failing batch.
    pub backoff: Backoff,
    /// How long a booking may wait for its partner (from its request) before it fails with that reason.
    pub partner_deadline: Duration,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
            partner_deadline: Duration::from_secs(15 * 60),
        }
    }
}

/// What a job keeps of its event's metadata (missing keys are null in the job's `cause`).
#[derive(Default, serde::Deserialize)]
struct Cause {
    event_id: Option<serde_json::Value>,
    correlation_id: Option<serde_json::Value>,
}

/// The jobs one event calls for (none for most events). Each job's payload names its cause: the event's
/// coordinates, its event id (the causation of what the job writes) and its correlation id (the saga's
/// thread, sent on every partner and provider call).
pub fn jobs_for(event: &RecordedEvent, config: &ReactorConfig) -> Vec<JobSpec> {
    let id = &event.aggregate_id;
    // Built only for the few events that call for a job (most events of the log call for none), and
    // once for an event that calls for several.
    let built = std::cell::OnceCell::new();
    let cause = || {
        built
            .get_or_init(|| {
                let meta = event.metadata.parse::<Cause>().unwrap_or_default();
                json!({
                    "aggregate_type": event.aggregate_type,
                    "aggregate_id": id,
                    "sequence": event.sequence,
                    "event_type": event.event_type,
                    "global_position": event.global_position,
                    "event_id": meta.event_id,
                    "correlation_id": meta.correlation_id,
                })
            })
            .clone()
    };
    let job = |kind: &str, dedupe: String, queue: &str| {
        JobSpec::new(kind, dedupe, json!({ "booking_id": id, "cause": cause() })).queue(queue)
    };
    let release = || {
        vec![job(
            kinds::PARTNER_RELEASE,
            format!("{}:{id}", kinds::PARTNER_RELEASE),
            "compensation",
        )
        .max_attempts(20)]
    };
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("booking", "BookingRequested") => {
            let deadline = chrono::Duration::from_std(config.partner_deadline)
                .unwrap_or(chrono::Duration::MAX);
            let mut expire = job(
                kinds::BOOKING_DEADLINE,
                format!("{}:{id}", kinds::BOOKING_DEADLINE),
                "partner",
            );
            expire.run_at = event.recorded_at.checked_add_signed(deadline);
            vec![
                job(
                    kinds::PARTNER_RESERVE,
                    format!("{}:{id}", kinds::PARTNER_RESERVE),
                    "partner",
                ),
                expire,
            ]
        }
        ("booking", "PartnerReservationOutcomeUnknown") => vec![job(
            kinds::PARTNER_RECONCILE,
            format!("{}:{id}:{}", kinds::PARTNER_RECONCILE, event.sequence),
            "partner",
        )],
        ("booking", "CompensationStarted") => vec![job(
            kinds::PARTNER_COMPENSATE,
            format!("{}:{id}", kinds::PARTNER_COMPENSATE),
            "compensation",
        )
        .max_attempts(20)],
        ("booking", "BookingCancelled" | "BookingFailed") => release(),
        ("booking", "BookingResolved") => {
            let payload = event.payload.to_value();
            let status = payload
                .pointer("/BookingResolved/status")
                .and_then(|s| s.as_str());
            match status {
                Some("failed" | "cancelled") => release(),
                _ => Vec::new(),
            }
        }
        ("booking", "PaymentRequested") => vec![job(
            kinds::PAYMENT_CAPTURE,
            format!("{}:{id}", kinds::PAYMENT_CAPTURE),
            "payment",
        )
        .max_attempts(12)],
        ("booking", "RefundStarted") => vec![job(
            kinds::PAYMENT_REFUND,
            format!("{}:{id}", kinds::PAYMENT_REFUND),
            "compensation",
        )
        .max_attempts(20)],
        ("visit", "VisitCompleted") => vec![JobSpec::new(
            kinds::REPORT_GENERATE,
            format!("{}:{id}", kinds::REPORT_GENERATE),
            json!({ "visit_id": id, "cause": cause() }),
        )
        .queue("documents")],
        ("visit", "ReportGenerated") => vec![JobSpec::new(
            kinds::REPORT_SEND,
            // one e-mail per generated report version
            format!("{}:{id}:{}", kinds::REPORT_SEND, event.sequence),
            json!({ "visit_id": id, "cause": cause() }),
        )
        .queue("documents")],
        _ => Vec::new(),
    }
}

/// Runs one batch: reads events after the checkpoint, enqueues their jobs and moves the checkpoint, in one
/// transaction. Returns how many events it handled (0: nothing new).
pub async fn run_batch(pool: &PgPool, batch_size: i64) -> Result<usize> {
    let config = ReactorConfig {
        batch_size,
        ..ReactorConfig::default()
    };
    run_configured_batch(pool, &config).await
}

/// [`run_batch`] with every setting of `config` (batch size, deadlines).
#[tracing::instrument(skip_all)]
pub async fn run_configured_batch(pool: &PgPool, config: &ReactorConfig) -> Result<usize> {
    let batch_size = config.batch_size;
    let mut conn = Guarded::acquire(pool).await?;
    let mut tx = conn.begin().await?;
    let checkpoint = CHECKPOINTS.lock(&mut tx, REACTOR).await?;
    let events = read_after(&mut *tx, checkpoint, batch_size).await?;
    let Some(last) = events.last() else {
        tx.rollback().await?;
        conn.release();
        return Ok(0);
    };
    // Every job of the batch in one statement (one round trip, however many events call for jobs).
    let specs: Vec<JobSpec> = events.iter().flat_map(|e| jobs_for(e, config)).collect();
    let answers = jobs::enqueue_all(&mut *tx, &specs).await?;
    let mut enqueued = 0usize;
    for (spec, answer) in specs.iter().zip(&answers) {
        if answer.inserted {
            enqueued += 1;
        } else {
            tracing::warn!(dedupe_key = %spec.dedupe_key, job = answer.id, "job already enqueued");
        }
    }
    CHECKPOINTS
        .advance(&mut tx, REACTOR, checkpoint, last)
        .await?;
    tx.commit().await?;
    conn.release();
    tracing::debug!(events = events.len(), enqueued, "reactor batch committed");
    metrics::counter!("trailbook_reactor_events_total").increment(events.len() as u64);
    Ok(events.len())
}

/// The reactor's checkpoint.
pub async fn checkpoint(pool: &PgPool) -> Result<Checkpoint> {
    Ok(CHECKPOINTS.get(pool, REACTOR).await?)
}

/// Runs batches until `shutdown` completes; a failing batch is rolled back, logged and retried with
/// backoff. Any number of reactors may run at once (the checkpoint row lock serialises their batches).
pub async fn run(
    pool: PgPool,
    config: ReactorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let pace = Pace::fixed(config.batch_size, config.poll_interval, config.backoff);
    let mut reactor = Reactor {
        pool: &pool,
        config: &config,
    };
    until_shutdown(shutdown, |stop| async move {
        LogFollower::new(pace, stop).run(&mut reactor).await;
    })
    .await;
    Ok(())
}

/// A running reactor: the [`Consumer`] of its checkpoint.
struct Reactor<'a> {
    pool: &'a PgPool,
    config: &'a ReactorConfig,
}

impl Consumer for Reactor<'_> {
    type Error = Error;

    async fn batch(&mut self, limit: i64) -> Result<usize> {
        let config = ReactorConfig {
            batch_size: limit,
            ..self.config.clone()
        };
        run_configured_batch(self.pool, &config).await
    }

    /// Idle: look without locking before the next batch, since the batch's row lock takes a transaction
    /// id and so a flushed commit, ten times a second for nothing.
    async fn has_pending(&mut self) -> Result<bool> {
        Ok(CHECKPOINTS.has_pending(self.pool, REACTOR).await?)
    }

    fn failed(&mut self, error: &Error, failures: u32) {
        tracing::error!(error = %error, failures, "reactor batch failed; checkpoint unchanged, retrying");
        metrics::counter!("trailbook_reactor_batch_failures_total").increment(1);
    }
}
