//! The partner side of the booking flow: real PostgreSQL, real event store, the simulator on a local port.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use domain::booking::{BookingCommand, BookingStatus, Customer};
use domain::values::{Currency, Email, Money};
use domain::Booking;
use serde_json::{json, Value};
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};
use workers::booking_flow::{PartnerClient, ReconcileHandler, ReserveHandler};
use workers::compensation::{CompensateHandler, CompensationLimits};
use workers::partner_sim::{self, SimConfig};
use workers::reactor::{self, kinds};
use workers::{Backoff, QueueConfig, Worker, WorkerConfig};

struct Flow {
    db: TestDb,
    store: EventStore,
    sim: String,
    http: reqwest::Client,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn start(faults: Value) -> Flow {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = format!("http://{}", listener.local_addr().unwrap());
    let mut stops = Vec::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(partner_sim::serve(
        listener,
        SimConfig {
            callback_url: None,
            timeout_hold: Duration::from_secs(5),
            ..SimConfig::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    http.put(format!("{sim}/control/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();

    let partner = PartnerClient::new(&sim, Duration::from_millis(300)).unwrap();
    let worker = Worker::new(
        db.pool.clone(),
        WorkerConfig {
            worker_id: "flow".to_owned(),
            queues: vec![
                QueueConfig::new("partner", 2),
                QueueConfig::new("compensation", 2),
            ],
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            reclaim_interval: Duration::from_millis(200),
            backoff: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        },
    )
    .register(
        kinds::PARTNER_RESERVE,
        ReserveHandler {
            store: store.clone(),
            partner: partner.clone(),
        },
    )
    .register(
        kinds::PARTNER_RECONCILE,
        ReconcileHandler {
            store: store.clone(),
            partner: partner.clone(),
        },
    )
    .register(
        kinds::PARTNER_COMPENSATE,
        CompensateHandler::new(
            store.clone(),
            partner,
            CompensationLimits {
                bucket_capacity: 2,
                per_second: 2.0,
                max_token_wait: Duration::from_millis(100),
                failure_threshold: 3,
                open_for: Duration::from_secs(1),
            },
        ),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(reactor::run(
        db.pool.clone(),
        reactor::ReactorConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Flow {
        db,
        store,
        sim,
        http,
        _stops: stops,
    }
}

impl Flow {
    async fn request(&self, id: &str) {
        let command = BookingCommand::Request {
            booking_id: id.to_owned(),
            owner: "user-1".to_owned(),
            partner: "acme-hotels".to_owned(),
            resource: "room-42".to_owned(),
            starts_at: "2026-12-01T15:00:00Z".parse().unwrap(),
            ends_at: "2026-12-03T11:00:00Z".parse().unwrap(),
            guests: 2,
            amount: Money::new(25_000, Currency::parse("EUR").unwrap()),
            customer: Customer {
                name: "Ada Lovelace".to_owned(),
                email: Email::parse("ada@example.com").unwrap(),
            },
            at: Utc::now(),
        };
        self.store
            .execute::<Booking>(
                id,
                command,
                &(),
                &CommandContext::default(),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    async fn wait_for(&self, id: &str, status: BookingStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let booking = self.store.load::<Booking>(id).await.unwrap().state;
            if booking.status == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "booking {id} is {:?}, expected {status:?}; events {:?}",
                booking.status,
                self.event_types(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "select event_type from events where aggregate_id = $1 order by sequence",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/control/stats", self.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Without faults: reserve, the partner's answer confirms the booking, one reservation.
#[tokio::test]
async fn booking_is_confirmed_by_the_partner_response() {
    let flow = start(json!({})).await;
    flow.request("b-1").await;

    flow.wait_for("b-1", BookingStatus::Confirmed).await;

    assert_eq!(flow.stats().await["reservations_created"], 1);
    assert_eq!(
        flow.event_types("b-1").await,
        vec![
            "BookingRequested",
            "PartnerReservationRequested",
            "PartnerConfirmed"
        ]
    );
}

/// The partner creates the reservation but our call times out: the outcome is recorded as unknown (not
/// failed), reconciliation finds the reservation by lookup and confirms the booking, and the partner
/// holds exactly one reservation.
#[tokio::test]
async fn timeout_after_success_is_reconciled_to_one_confirmed_reservation() {
    let flow = start(json!({"timeout_after_success": 1.0})).await;
    flow.request("b-2").await;

    flow.wait_for("b-2", BookingStatus::Confirmed).await;

    assert_eq!(flow.stats().await["reservations_created"], 1);
    let events = flow.event_types("b-2").await;
    assert!(
        events.contains(&"PartnerReservationOutcomeUnknown".to_owned()),
        "{events:?}"
    );
    assert!(!events.contains(&"BookingFailed".to_owned()), "{events:?}");
    let reconciles = workers::jobs::list(
        &flow.db.pool,
        &workers::JobFilter {
            kind: Some(kinds::PARTNER_RECONCILE.to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(reconciles.len(), 1);
    assert_eq!(reconciles[0].state, "succeeded");
}

/// A partner answering 429 makes the job wait at least Retry-After (recorded as a failed attempt with a
/// retry scheduled); once the partner recovers the booking is confirmed with one reservation.
#[tokio::test]
async fn rate_limited_reservation_retries_after_the_partner_recovers() {
    let flow = start(json!({"rate_429": 1.0})).await;
    flow.request("b-3").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let jobs = workers::jobs::list(&flow.db.pool, &workers::JobFilter::default())
            .await
            .unwrap();
        if let Some(job) = jobs.into_iter().find(|j| j.state == "failed") {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rate-limited attempt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(job
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("rate limited"));
    assert!(
        job.run_at >= job.updated_at + chrono::Duration::milliseconds(900),
        "Retry-After not honoured"
    );

    flow.http
        .put(format!("{}/control/faults", flow.sim))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    flow.wait_for("b-3", BookingStatus::Confirmed).await;

    assert_eq!(flow.stats().await["reservations_created"], 1);
}

/// Ten compensations against a partner that answers 429 to everything: the partner sees no more
/// cancellation calls than the token bucket allows (2 at once, then 2/s), and once it recovers every
/// compensation finishes (all bookings cancelled, every reservation released, nothing dead or lost).
#[tokio::test]
async fn compensation_under_constant_429_respects_the_bucket_and_finishes_after_recovery() {
    let flow = start(json!({})).await;
    let ids: Vec<String> = (0..10).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        flow.request(id).await;
    }
    for id in &ids {
        flow.wait_for(id, BookingStatus::Confirmed).await;
    }
    flow.http
        .put(format!("{}/control/faults", flow.sim))
        .json(&json!({"rate_429": 1.0}))
        .send()
        .await
        .unwrap();
    let before = flow.stats().await["cancel_requests"].as_u64().unwrap();
    let started = std::time::Instant::now();
    for id in &ids {
        let declined = BookingCommand::RecordPayment {
            outcome: domain::booking::PaymentOutcome::Declined {
                reason: "card declined".to_owned(),
            },
        };
        flow.store
            .execute::<Booking>(
                id,
                declined,
                &(),
                &CommandContext::default(),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = flow.stats().await["cancel_requests"].as_u64().unwrap() - before;
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 2.0 + 2.0 * elapsed;
    assert!(calls >= 2, "compensation never called the partner");
    assert!(
        (calls as f64) <= allowed + 1.0,
        "{calls} calls in {elapsed:.1}s; the bucket allows {allowed:.1}"
    );

    flow.http
        .put(format!("{}/control/faults", flow.sim))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    for id in &ids {
        flow.wait_for(id, BookingStatus::Cancelled).await;
    }
    let dead = workers::jobs::dead_letters(&flow.db.pool, 100)
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    for id in &ids {
        let found: Vec<Value> = flow
            .http
            .get(format!(
                "{}/v1/reservations?client_reference={id}",
                flow.sim
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["status"], "cancelled");
    }
}

/// `service::run` (what the CLI calls) wires reactor and handlers: a booking gets confirmed, and the
/// service returns after shutdown.
#[tokio::test]
async fn service_run_confirms_a_booking_and_stops_on_shutdown() {
    let db = TestDb::new().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(partner_sim::serve(
        listener,
        SimConfig {
            callback_url: None,
            ..SimConfig::default()
        },
        std::future::pending(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(workers::service::run(
        db.pool.clone(),
        workers::service::ServiceConfig {
            partner_url: sim,
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let flow = Flow {
        store: EventStore::new(db.pool.clone(), StoreConfig::default()),
        db,
        sim: String::new(),
        http: reqwest::Client::new(),
        _stops: Vec::new(),
    };

    flow.request("s-1").await;
    flow.wait_for("s-1", BookingStatus::Confirmed).await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
