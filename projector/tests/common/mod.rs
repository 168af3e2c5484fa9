//! Shared by the projector tests: real Booking and Visit workloads through the event store, a projector
//! run as a task that can be stopped or killed, and the truth a read model must equal (a fold of the log).
#![allow(dead_code)] // each test file uses a different part
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::booking::{
    BookingCommand, BookingEvent, BookingStatus, Customer, PartnerReportedStatus, PartnerSource,
    PaymentOutcome,
};
use domain::values::{Currency, Email, Money};
use domain::visit::{Patient, VisitCommand, VisitEvent, VisitStatus};
use domain::{AggregateSchema, Booking, Visit};
use projector::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{PgConnection, PgPool};
use store::{CommandContext, CommandError, EventStore, ExecuteOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A runner configuration for tests: small batches, quick polls and takeovers, no gauges.
pub fn config(instance: &str) -> Config {
    Config {
        batch_size: 100,
        max_batch_size: 400,
        poll_interval: Duration::from_millis(20),
        coalesce: Duration::from_millis(2),
        min_batch_interval: Duration::from_millis(5),
        leader_retry: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        metrics_interval: Duration::ZERO,
        listen: false,
        instance: instance.to_owned(),
    }
}

/// A projector running as a task: [`Projector::kill`] aborts it like a killed process, [`Projector::stop`]
/// shuts it down gracefully.
pub struct Projector {
    handle: JoinHandle<projector::Result<()>>,
    stop: oneshot::Sender<()>,
}

impl Projector {
    pub fn spawn(pool: PgPool, config: Config) -> Self {
        Self::spawn_only(pool, &projector::NAMES, config)
    }

    pub fn spawn_only(pool: PgPool, names: &[&'static str], config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let names: Vec<&'static str> = names.to_vec();
        let handle = tokio::spawn(async move {
            projector::run_projections(pool, &names, config, async {
                let _ = stopped.await;
            })
            .await
        });
        Self { handle, stop }
    }

    /// Aborts the task wherever it is (mid-batch, mid-commit, waiting), like `kill -9`.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Asks for shutdown and waits until the batches in flight are done.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the projector stops within 30 s")
            .expect("the projector task does not panic")
            .expect("the projector stops without error");
    }
}

fn context(command: &str) -> CommandContext {
    CommandContext::system(command)
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap())
}

/// Runs one command; a business refusal is not an error here (the walk just tried an impossible step).
async fn exec<A>(store: &EventStore, id: &str, command: A::Command, new_stream: bool) -> Option<A>
where
    A: store::WriteRules<Services = ()>,
    A::Command: Clone,
{
    let options = ExecuteOptions {
        new_stream,
        ..ExecuteOptions::default()
    };
    match store
        .execute::<A>(id, command, &(), &context("test"), options)
        .await
    {
        Ok(committed) => Some(committed.state),
        Err(CommandError::Rejected(_)) => None,
        Err(e) => panic!("command on {id} failed: {e}"),
    }
}

fn request(id: &str, rng: &mut StdRng) -> BookingCommand {
    let starts_at = now() + chrono::Duration::days(rng.random_range(1..300));
    BookingCommand::Request {
        booking_id: id.to_owned(),
        owner: format!("user-{}", rng.random_range(0..5)),
        partner: ["acme-hotels", "globex-inns", "initech-rooms"][rng.random_range(0..3)].to_owned(),
        // A room of its own: the slot rule refuses overlapping stays of one room.
        resource: format!("room-{}-{id}", rng.random_range(1..50)),
        starts_at,
        ends_at: starts_at + chrono::Duration::days(2),
        guests: rng.random_range(1..5),
        amount: eur(rng.random_range(1000..90000)),
        customer: Customer {
            name: "Ada Lovelace".to_owned(),
            email: Email::parse("ada@example.com").unwrap(),
        },
        at: now(),
    }
}

fn partner(reported: PartnerReportedStatus, reservation: Option<&str>) -> BookingCommand {
    BookingCommand::ApplyPartnerStatus {
        reported,
        reservation_id: reservation.map(str::to_owned),
        source: PartnerSource::Callback,
        partner_time: now(),
        reason: None,
    }
}

/// Requests booking `id` and walks it through up to `steps` random transitions of its life.
pub async fn drive_booking(store: &EventStore, id: &str, rng: &mut StdRng, steps: usize) {
    let Some(mut state) = exec::<Booking>(store, id, request(id, rng), true).await else {
        panic!("request of {id} refused");
    };
    let mut attempt = 0;
    for _ in 0..steps {
        use BookingStatus as S;
        let pick = rng.random_range(0..100);
        let command = match state.status {
            S::Requested if pick < 80 => {
                attempt += 1;
                BookingCommand::RecordReservationRequested { attempt, at: now() }
            }
            S::Requested if pick < 90 => BookingCommand::Fail {
                reason: "no partner".into(),
            },
            S::PartnerPending if pick < 45 => {
                partner(PartnerReportedStatus::Confirmed, Some("r-1"))
            }
            S::PartnerPending if pick < 55 => partner(PartnerReportedStatus::Rejected, None),
            S::PartnerPending if pick < 70 => BookingCommand::RecordReservationOutcomeUnknown {
                attempt,
                reason: "timeout".into(),
            },
            S::PartnerPending if pick < 85 => {
                attempt += 1;
                BookingCommand::RecordReservationRequested { attempt, at: now() }
            }
            S::Confirmed if pick < 50 => BookingCommand::RecordPayment {
                outcome: PaymentOutcome::Captured {
                    payment_id: format!("pay-{id}"),
                },
            },
            S::Confirmed if pick < 75 => BookingCommand::RecordPayment {
                outcome: PaymentOutcome::Declined {
                    reason: "card declined".into(),
                },
            },
            S::Confirmed if pick < 85 => partner(PartnerReportedStatus::Confirmed, Some("r-1")),
            S::Compensating if pick < 70 => BookingCommand::CompleteCompensation,
            S::Compensating if pick < 90 => BookingCommand::FailCompensation {
                reason: "partner down".into(),
            },
            S::Compensating => return,
            s if s.is_final() && pick < 20 => partner(PartnerReportedStatus::Cancelled, None),
            s if s.is_final() => return,
            _ => BookingCommand::Cancel {
                reason: "plans changed".into(),
                at: now(),
            },
        };
        if let Some(next) = exec::<Booking>(store, id, command, false).await {
            state = next;
        }
    }
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn schedule(id: &str, rng: &mut StdRng) -> VisitCommand {
    VisitCommand::Schedule {
        visit_id: id.to_owned(),
        owner: format!("user-{}", rng.random_range(0..5)),
        patient: Patient {
            id: format!("p-{}", rng.random_range(0..100)),
            name: "Grace Hopper".to_owned(),
            email: Email::parse("grace@example.com").unwrap(),
        },
        clinician: ["dr-grey", "dr-house"][rng.random_range(0..2)].to_owned(),
        scheduled_at: now() + chrono::Duration::days(rng.random_range(1..30)),
        at: now(),
    }
}

/// Schedules visit `id` and walks it through up to `steps` random transitions and side effects.
pub async fn drive_visit(store: &EventStore, id: &str, rng: &mut StdRng, steps: usize) {
    use domain::visit::SideEffectStatus as Fx;
    let Some(mut state) = exec::<Visit>(store, id, schedule(id, rng), true).await else {
        panic!("schedule of {id} refused");
    };
    for attempt in 1..=u32::try_from(steps).unwrap() {
        use VisitStatus as S;
        let pick = rng.random_range(0..100);
        let command = match state.status {
            S::Scheduled if pick < 75 => VisitCommand::CheckIn { at: now() },
            S::Scheduled if pick < 90 => VisitCommand::Cancel {
                reason: "sick".into(),
                at: now(),
            },
            S::Scheduled => VisitCommand::MarkNoShow { at: now() },
            S::CheckedIn if pick < 85 => VisitCommand::StartConsultation { at: now() },
            S::CheckedIn => VisitCommand::Cancel {
                reason: "left".into(),
                at: now(),
            },
            S::InConsultation => VisitCommand::Complete {
                summary: "fine".into(),
                diagnosis_codes: vec!["J06.9".into()],
                at: now(),
            },
            S::Completed if state.report_status != Fx::Done && pick < 55 => {
                VisitCommand::RecordReportGenerated {
                    document_id: format!("doc-{id}"),
                    sha256: SHA.into(),
                    bytes: 1234,
                }
            }
            S::Completed if state.report_status != Fx::Done && pick < 80 => {
                VisitCommand::RecordReportFailed {
                    attempt,
                    error: "renderer down".into(),
                    final_attempt: pick < 65,
                }
            }
            S::Completed if state.report_status == Fx::Done && pick < 60 => {
                VisitCommand::RecordReportSent {
                    message_id: format!("msg-{id}"),
                }
            }
            S::Completed if state.report_status == Fx::Done && pick < 85 => {
                VisitCommand::RecordEmailFailed {
                    attempt,
                    error: "smtp".into(),
                    final_attempt: pick < 70,
                }
            }
            _ => return,
        };
        if let Some(next) = exec::<Visit>(store, id, command, false).await {
            state = next;
        }
    }
}

/// Writer `writer` creates `bookings` bookings and `visits` visits (ids prefixed with `prefix`), each
/// walked through a random number of steps. Deterministic per seed.
pub async fn write(store: EventStore, prefix: String, bookings: usize, visits: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..bookings.max(visits) {
        if i < bookings {
            let steps = rng.random_range(0..7);
            drive_booking(&store, &format!("{prefix}-b{i}"), &mut rng, steps).await;
        }
        if i < visits {
            let steps = rng.random_range(0..8);
            drive_visit(&store, &format!("{prefix}-v{i}"), &mut rng, steps).await;
        }
    }
}

/// Inserts, by hand inside `tx`, a booking stored at event version 1.0 (flat amount and customer: the
/// upcaster must run) followed by a reservation attempt, and a scheduled visit. For slow-transaction tests.
pub async fn insert_by_hand(tx: &mut PgConnection, booking_id: &str, visit_id: &str) {
    let requested = serde_json::json!({"BookingRequested": {
        "booking_id": booking_id, "owner": "user-slow", "partner": "acme-hotels", "resource": "room-1",
        "starts_at": "2026-12-01T15:00:00Z", "ends_at": "2026-12-03T11:00:00Z", "guests": 2,
        "amount_minor": 25000, "currency": "EUR", "customer_name": "Ada",
        "customer_email": "ada@example.com", "at": "2026-11-01T10:00:00Z"}});
    let attempt = serde_json::to_value(BookingEvent::PartnerReservationRequested {
        attempt: 1,
        at: now(),
    })
    .unwrap();
    let scheduled = serde_json::to_value(VisitEvent::VisitScheduled {
        visit_id: visit_id.to_owned(),
        owner: "user-slow".to_owned(),
        patient: Patient {
            id: "p-slow".into(),
            name: "Slow".into(),
            email: Email::parse("slow@example.com").unwrap(),
        },
        clinician: "dr-grey".into(),
        scheduled_at: now(),
        at: now(),
    })
    .unwrap();
    let rows = [
        (
            "booking",
            booking_id,
            1,
            "BookingRequested",
            "1.0",
            requested,
        ),
        (
            "booking",
            booking_id,
            2,
            "PartnerReservationRequested",
            "1.0",
            attempt,
        ),
        ("visit", visit_id, 1, "VisitScheduled", "1.0", scheduled),
    ];
    for (aggregate_type, id, sequence, event_type, version, payload) in rows {
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             values ($1, $2, $3, $4, $5, $6, '{}')",
        )
        .bind(aggregate_type)
        .bind(id)
        .bind(sequence as i64)
        .bind(event_type)
        .bind(version)
        .bind(payload)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
}

/// Waits until the named projections have applied every committed event (at most `limit`). The log is
/// read below the cluster-wide xmin, so other tests' open transactions may hold it back for a while.
pub async fn wait_caught_up(pool: &PgPool, names: &[&str], limit: Duration) {
    let start = Instant::now();
    loop {
        let statuses = projector::status(pool).await.unwrap();
        let behind: Vec<_> = statuses
            .iter()
            .filter(|s| names.contains(&s.name.as_str()) && s.lag_events > 0)
            .map(|s| (s.name.clone(), s.lag_events))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "projections still behind after {limit:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Ids of every aggregate of `aggregate_type` in the log.
pub async fn ids(pool: &PgPool, aggregate_type: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select distinct aggregate_id from events where aggregate_type = $1 order by 1",
    )
    .bind(aggregate_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every read-model row of `rm_bookings` and `rm_visits` equals the state the event store folds for its
/// aggregate (state and version), and there is exactly one row per aggregate.
pub async fn assert_read_models_match_fold(store: &EventStore) {
    let pool = store.pool();
    compare::<Booking>(store, "rm_bookings", "booking_id").await;
    compare::<Visit>(store, "rm_visits", "visit_id").await;
    let items: i64 = sqlx::query_scalar("select count(*) from rm_status_items")
        .fetch_one(pool)
        .await
        .unwrap();
    let aggregates: i64 =
        sqlx::query_scalar("select count(distinct (aggregate_type, aggregate_id)) from events")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(items, aggregates, "one status item per aggregate");
}

async fn compare<A>(store: &EventStore, table: &str, key: &str)
where
    A: AggregateSchema + PartialEq + std::fmt::Debug,
{
    let pool = store.pool();
    let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(&format!(
        "select {key}, version, state from {table} order by 1"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    let mut rows: BTreeMap<String, (i64, serde_json::Value)> = rows
        .into_iter()
        .map(|(id, version, state)| (id, (version, state)))
        .collect();
    let expected = ids(pool, <A as cqrs_es::Aggregate>::TYPE).await;
    assert!(!expected.is_empty());
    for id in &expected {
        let (version, state) = rows
            .remove(id)
            .unwrap_or_else(|| panic!("{table} has no row for {id}"));
        let folded = store.load_at_version::<A>(id, u64::MAX >> 1).await.unwrap();
        assert_eq!(
            u64::try_from(version).unwrap(),
            folded.version,
            "version of {id}"
        );
        let state: A = serde_json::from_value(state).unwrap();
        assert_eq!(state, folded.state, "state of {id}");
    }
    assert!(rows.is_empty(), "{table} has rows without events: {rows:?}");
}

/// (aggregate type, status) → how many aggregates are in it, from folding every aggregate.
pub async fn true_status_counts(store: &EventStore) -> BTreeMap<(String, String), i64> {
    let mut counts = BTreeMap::new();
    for id in ids(store.pool(), "booking").await {
        let status = store.load::<Booking>(&id).await.unwrap().state.status;
        *counts
            .entry(("booking".to_owned(), status.as_str().to_owned()))
            .or_default() += 1;
    }
    for id in ids(store.pool(), "visit").await {
        let status = store.load::<Visit>(&id).await.unwrap().state.status;
        *counts
            .entry(("visit".to_owned(), status.as_str().to_owned()))
            .or_default() += 1;
    }
    counts
}

/// The status board's counts (non-zero ones).
pub async fn board_counts(pool: &PgPool) -> BTreeMap<(String, String), i64> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select aggregate_type, status, count from rm_status_counts where count <> 0",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(t, s, n)| ((t, s), n)).collect()
}

/// rm_timeline holds, per UTC day, aggregate type and event type, exactly the number of events in the log.
pub async fn assert_timeline_matches_log(pool: &PgPool) {
    let truth: Vec<(chrono::NaiveDate, String, String, i64)> = sqlx::query_as(
        "select (recorded_at at time zone 'utc')::date, aggregate_type, event_type, count(*)
         from events group by 1, 2, 3 order by 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let timeline: Vec<(chrono::NaiveDate, String, String, i64)> = sqlx::query_as(
        "select day, aggregate_type, event_type, count from rm_timeline order by 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(timeline, truth);
}

/// Every row of `table`, as JSON, in key order (for comparing two builds of a projection).
pub async fn dump(pool: &PgPool, table: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t order by 1"))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The read-model tables by name, and their indexes by name and definition.
pub async fn read_model_relations(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select relname::text || case when relkind = 'i' then ': ' || pg_get_indexdef(oid) else '' end
         from pg_class
         where relname like 'rm\\_%' and relkind in ('r', 'i') order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}
