//! The partner side of the booking flow: real PostgreSQL, real event store, the simulator on a local port.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use domain::booking::{BookingCommand, BookingStatus, Customer};
use domain::values::{Currency, Email, Money};
use domain::Booking;
use serde_json::{json, Value};
use simulator::SimConfig;
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};
use workers::booking_flow::{DeadlineHandler, ReconcileHandler, ReserveHandler};
use workers::compensation::{CompensateHandler, CompensationLimits};
use workers::partners::Partners;
use workers::payments::CaptureHandler;
use workers::reactor::{self, kinds};
use workers::{Backoff, Handler, QueueConfig, Worker, WorkerConfig};

struct Flow {
    db: TestDb,
    store: EventStore,
    sim: String,
    http: reqwest::Client,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn start(faults: Value) -> Flow {
    start_with(faults, reactor::ReactorConfig::default()).await
}

/// `start` with the reactor's settings (e.g. a short partner deadline).
async fn start_with(faults: Value, reactor_config: reactor::ReactorConfig) -> Flow {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = format!("http://{}", listener.local_addr().unwrap());
    let mut stops = Vec::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(simulator::serve(
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

    let partner = Partners::single(&sim, Duration::from_millis(300)).unwrap();
    let compensation = CompensateHandler::new(
        store.clone(),
        partner.clone(),
        Some(CompensationLimits {
            bucket_capacity: 2,
            per_second: 2.0,
            max_token_wait: Duration::from_millis(100),
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        }),
    );
    let worker = Worker::new(
        db.pool.clone(),
        WorkerConfig {
            worker_id: "flow".to_owned(),
            queues: vec![
                QueueConfig::new("partner", 2),
                QueueConfig::new("payment", 2),
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
            partners: partner.clone(),
        },
    )
    .register(
        kinds::PARTNER_RECONCILE,
        ReconcileHandler {
            store: store.clone(),
            partners: partner.clone(),
        },
    )
    .register(
        kinds::BOOKING_DEADLINE,
        DeadlineHandler {
            store: store.clone(),
            deadline: reactor_config.partner_deadline,
        },
    )
    .register(
        kinds::PAYMENT_CAPTURE,
        CaptureHandler {
            store: store.clone(),
            provider: partner.payments().clone(),
        },
    )
    .register(kinds::PARTNER_COMPENSATE, compensation.clone())
    .register(kinds::PARTNER_RELEASE, compensation.clone())
    .register(kinds::PAYMENT_REFUND, compensation);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(reactor::run(
        db.pool.clone(),
        reactor::ReactorConfig {
            poll_interval: Duration::from_millis(20),
            ..reactor_config
        },
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
        self.request_on(id, &format!("room-{id}"), &CommandContext::default())
            .await
            .unwrap();
    }

    /// Requests booking `id` of `room` (2026-12-01..03) in `context`; the slot rule may refuse it.
    async fn request_on(
        &self,
        id: &str,
        room: &str,
        context: &CommandContext,
    ) -> Result<(), store::CommandError<domain::booking::BookingError>> {
        let command = BookingCommand::Request {
            booking_id: id.to_owned(),
            owner: "user-1".to_owned(),
            partner: "acme-hotels".to_owned(),
            resource: room.to_owned(),
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
            .execute::<Booking>(id, command, &(), context, ExecuteOptions::default())
            .await
            .map(|_| ())
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
    tokio::spawn(simulator::serve(
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

/// Chaos run finding: the partner creates the reservation, our call times out, a callback confirms the
/// booking and the customer pays, all before the reserve job records "unknown". The refusal to record it
/// (the booking is paid) means another path settled the outcome: the job succeeds, nothing dead-letters.
#[tokio::test]
async fn an_outcome_settled_by_a_callback_while_the_call_timed_out_is_not_a_dead_letter() {
    let flow = start(json!({})).await;
    // A second database and handler of our own, so no background worker races this one.
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    flow.http
        .put(format!("{}/control/faults", flow.sim))
        .json(&json!({"timeout_after_success": 1.0}))
        .send()
        .await
        .unwrap();
    let handler = ReserveHandler {
        store: store.clone(),
        partners: Partners::single(&flow.sim, Duration::from_secs(2)).unwrap(),
    };
    let mine = Flow {
        db,
        store: store.clone(),
        sim: flow.sim.clone(),
        http: flow.http.clone(),
        _stops: Vec::new(),
    };
    mine.request("b-9").await;
    // The log hides events behind transactions still open anywhere on the server (other tests): retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        reactor::run_batch(&mine.db.pool, 100).await.unwrap();
        let jobs = workers::jobs::list(&mine.db.pool, &workers::JobFilter::default())
            .await
            .unwrap();
        if let Some(job) = jobs.into_iter().find(|j| j.kind == kinds::PARTNER_RESERVE) {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reserve job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let running = tokio::spawn(async move { handler.handle(&job).await });

    // While the partner holds the call: the callback confirms, the customer pays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !mine
        .event_types("b-9")
        .await
        .contains(&"PartnerReservationRequested".to_owned())
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for command in [
        BookingCommand::ApplyPartnerStatus {
            reported: domain::booking::PartnerReportedStatus::Confirmed,
            reservation_id: Some("res-1".to_owned()),
            source: domain::booking::PartnerSource::Callback,
            partner_time: Utc::now(),
            reason: None,
        },
        BookingCommand::RecordPayment {
            outcome: domain::booking::PaymentOutcome::Captured {
                payment_id: "pay-1".to_owned(),
            },
        },
    ] {
        store
            .execute::<Booking>(
                "b-9",
                command,
                &(),
                &CommandContext::default(),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    assert_eq!(running.await.unwrap(), Ok(()));
    let events = mine.event_types("b-9").await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("PaymentCaptured"),
        "{events:?}"
    );
    assert_eq!(
        store.load::<Booking>("b-9").await.unwrap().state.status,
        BookingStatus::Paid
    );
}

impl Flow {
    async fn cancel(&self, id: &str) {
        self.store
            .execute::<Booking>(
                id,
                BookingCommand::Cancel {
                    reason: "plans changed".to_owned(),
                    at: Utc::now(),
                },
                &(),
                &CommandContext::default(),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    async fn wait_released(&self, id: &str) -> Booking {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let booking = self.store.load::<Booking>(id).await.unwrap().state;
            if booking.reservation_released {
                return booking;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "booking {id} not released; events {:?}",
                self.event_types(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the partner holds for booking `id`.
    async fn at_partner(&self, id: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/v1/reservations", self.sim))
            .query(&[("client_reference", id)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Chaos run finding: a confirmed booking cancelled by the client must give its reservation back to the
/// partner (through the compensation queue's limits), recorded as `PartnerReservationReleased`.
#[tokio::test]
async fn cancelling_a_confirmed_booking_releases_its_partner_reservation() {
    let flow = start(json!({})).await;
    flow.request("b-10").await;
    flow.wait_for("b-10", BookingStatus::Confirmed).await;

    flow.cancel("b-10").await;
    let booking = flow.wait_released("b-10").await;

    let held = flow.at_partner("b-10").await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["status"], "cancelled");
    assert_eq!(booking.status, BookingStatus::Cancelled);
    let events = flow.event_types("b-10").await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("PartnerReservationReleased")
    );
    assert_eq!(flow.stats().await["cancel_requests"], 1);
}

/// Cancelled while the reservation call is still on its way (slow partner): the release waits for the
/// attempt to settle, finds the reservation by client reference and cancels it; nothing stays held.
#[tokio::test]
async fn cancelling_while_the_partner_is_still_answering_leaves_nothing_held() {
    // Slower than our cancel, quicker than the client's 300 ms timeout.
    let flow = start(json!({"latency_ms": 200})).await;
    flow.request("b-11").await;
    // Wait until the reserve call is out, then cancel before its answer arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !flow
        .event_types("b-11")
        .await
        .contains(&"PartnerReservationRequested".to_owned())
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flow.cancel("b-11").await;

    flow.wait_released("b-11").await;
    let held = flow.at_partner("b-11").await;
    assert!(
        held.iter().all(|r| r["status"] == "cancelled"),
        "still held at the partner: {held:?}; events {:?}",
        flow.event_types("b-11").await
    );
}

impl Flow {
    /// Runs `command` on booking `id` as a client would.
    async fn run(&self, id: &str, command: BookingCommand) {
        self.store
            .execute::<Booking>(
                id,
                command,
                &(),
                &CommandContext::system("test"),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    /// Pays booking `id` with `card` (what `POST /v1/bookings/{id}/payment` records).
    async fn pay(&self, id: &str, card: &str) {
        self.run(
            id,
            BookingCommand::RequestPayment {
                payment_key: format!("key-{id}"),
                method: card.to_owned(),
                at: Utc::now(),
            },
        )
        .await;
    }

    async fn ledger(&self) -> Value {
        self.http
            .get(format!("{}/control/ledger", self.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn faults(&self, faults: Value) {
        self.http
            .put(format!("{}/control/faults", self.sim))
            .json(&faults)
            .send()
            .await
            .unwrap();
    }

    /// Requests a second booking of `room` for the same stay: the room must be free again.
    async fn rebook(&self, id: &str, room: &str) {
        if let Err(e) = self.request_on(id, room, &CommandContext::default()).await {
            panic!("{room} cannot be booked again: {e}");
        }
    }
}

/// Seed 001's headline failure: after a declined payment the booking is compensated and cancelled by
/// the workers, and the room can be sold again for the same dates (before, its claim leaked: 409
/// `slot_taken` forever).
#[tokio::test]
async fn the_room_can_be_booked_again_after_a_declined_payment_is_compensated() {
    let flow = start(json!({})).await;
    flow.request_on("d-1", "room-77", &CommandContext::default())
        .await
        .unwrap();
    flow.wait_for("d-1", BookingStatus::Confirmed).await;

    flow.pay("d-1", simulator::DECLINED_CARD).await;
    flow.wait_for("d-1", BookingStatus::Cancelled).await;

    flow.rebook("d-2", "room-77").await;
    let events = flow.event_types("d-1").await;
    assert!(
        events.contains(&"CompensationCompleted".to_owned()),
        "{events:?}"
    );
    assert_eq!(flow.ledger().await["charged_minor"], 0);
}

/// A booking the partner rejects gives its room back (the rejection came through the workers).
#[tokio::test]
async fn the_room_can_be_booked_again_after_the_partner_rejects() {
    let flow = start(json!({})).await;
    flow.request_on("r-1", "room-reject-1", &CommandContext::default())
        .await
        .unwrap();
    flow.wait_for("r-1", BookingStatus::Rejected).await;

    flow.rebook("r-2", "room-reject-1").await;
}

/// A partner that never answers: the booking's deadline passes, it becomes `failed` with the reason,
/// the room is free again, and a release job runs in case the partner holds something after all.
#[tokio::test]
async fn a_booking_whose_partner_never_answers_fails_at_its_deadline_and_frees_the_room() {
    let flow = start_with(
        json!({"rate_5xx": 1.0}),
        reactor::ReactorConfig {
            partner_deadline: Duration::from_millis(500),
            ..reactor::ReactorConfig::default()
        },
    )
    .await;
    flow.request_on("f-1", "room-9", &CommandContext::default())
        .await
        .unwrap();

    flow.wait_for("f-1", BookingStatus::Failed).await;
    flow.rebook("f-2", "room-9").await;

    let booking = flow.store.load::<Booking>("f-1").await.unwrap().state;
    assert!(
        booking
            .failure_reason
            .as_deref()
            .unwrap_or_default()
            .contains("did not confirm within"),
        "{booking:?}"
    );
    // The partner recovers: the release finds nothing held and records it.
    flow.faults(json!({})).await;
    let released = flow.wait_released("f-1").await;
    assert_eq!(released.status, BookingStatus::Failed);
}

/// A paid booking can be cancelled: the payment is refunded once through the provider, the room is free
/// at once, and the partner reservation is given back.
#[tokio::test]
async fn cancelling_a_paid_booking_refunds_it_once_and_frees_the_room() {
    let flow = start(json!({})).await;
    flow.request_on("p-1", "room-5", &CommandContext::default())
        .await
        .unwrap();
    flow.wait_for("p-1", BookingStatus::Confirmed).await;
    flow.pay("p-1", "4242424242424242").await;
    flow.wait_for("p-1", BookingStatus::Paid).await;

    flow.cancel("p-1").await;
    flow.rebook("p-2", "room-5").await;
    flow.wait_for("p-1", BookingStatus::Refunded).await;
    flow.wait_released("p-1").await;

    let ledger = flow.ledger().await;
    assert_eq!(ledger["charged_minor"], 25_000, "{ledger}");
    assert_eq!(ledger["refunded_minor"], 25_000, "{ledger}");
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 1, "{ledger}");
    let held = flow.at_partner("p-1").await;
    assert_eq!(held[0]["status"], "cancelled");
}

/// The provider charges but our call times out: the outcome is unknown (recorded, never "failed"),
/// the retry asks the provider by the payment key instead of charging again, and the customer is
/// charged exactly once.
#[tokio::test]
async fn a_payment_that_times_out_after_success_is_charged_once() {
    let flow = start(json!({})).await;
    flow.request("t-1").await;
    flow.wait_for("t-1", BookingStatus::Confirmed).await;
    flow.faults(json!({"timeout_after_success": 1.0})).await;

    flow.pay("t-1", "4242424242424242").await;
    flow.wait_for("t-1", BookingStatus::Paid).await;

    let ledger = flow.ledger().await;
    let charges: Vec<&Value> = ledger["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "captured")
        .collect();
    assert_eq!(charges.len(), 1, "{ledger}");
    let events = flow.event_types("t-1").await;
    assert!(
        events.contains(&"PaymentOutcomeUnknown".to_owned()),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "PaymentCaptured").count(),
        1,
        "{events:?}"
    );
}

/// One thread per saga: every event of a booking that went through reserve, an unknown outcome and its
/// reconciliation, a declined payment and its compensation carries the client's correlation id, each
/// worker-written event is caused by an earlier event of the stream (its event id), and the partner and
/// the provider received the same correlation id on their calls.
#[tokio::test]
async fn one_correlation_id_runs_through_reserve_reconcile_payment_and_compensation() {
    let flow = start(json!({"timeout_after_success": 1.0})).await;
    let context = CommandContext {
        correlation_id: "corr-saga-1".to_owned(),
        causation_id: Some("cmd-1".to_owned()),
        ..CommandContext::system("booking.create")
    };
    flow.request_on("k-1", "room-k", &context).await.unwrap();
    flow.wait_for("k-1", BookingStatus::Confirmed).await;
    flow.faults(json!({})).await;
    flow.pay("k-1", simulator::DECLINED_CARD).await;
    flow.wait_for("k-1", BookingStatus::Cancelled).await;

    let history = flow.store.history("booking", "k-1").await.unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    for wanted in [
        "PartnerReservationOutcomeUnknown",
        "PaymentRequested",
        "CompensationCompleted",
    ] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    let metas: Vec<serde_json::Value> = history.iter().map(|e| e.metadata.to_value()).collect();
    let event_ids: Vec<&str> = metas
        .iter()
        .filter_map(|m| m["event_id"].as_str())
        .collect();
    for (i, (event, meta)) in history.iter().zip(&metas).enumerate() {
        assert_eq!(
            meta["correlation_id"], "corr-saga-1",
            "{} #{}: {meta}",
            event.event_type, event.sequence
        );
        if meta["actor"]["subject"] == "workers" {
            let cause = meta["causation_id"].as_str().unwrap_or_default();
            assert!(
                event_ids[..i].contains(&cause),
                "{} #{} is caused by {cause}, not an earlier event",
                event.event_type,
                event.sequence
            );
        }
    }
    let ledger = flow.ledger().await;
    let reservation = &ledger["reservations"].as_array().unwrap()[0];
    assert_eq!(reservation["correlation_id"], "corr-saga-1", "{ledger}");
    assert_eq!(
        ledger["payments"][0]["correlation_id"], "corr-saga-1",
        "{ledger}"
    );
}

/// A partner answering 409 to a cancel still holds the room: the release is a failure with that
/// reason, retried and dead-lettered, never recorded as released; a 410 (already gone) releases it.
#[tokio::test]
async fn a_409_on_cancel_is_not_a_release_but_a_410_is() {
    let flow = start(json!({})).await;
    flow.request("x-1").await;
    flow.wait_for("x-1", BookingStatus::Confirmed).await;
    flow.faults(json!({"cancel_status": 409})).await;

    flow.cancel("x-1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = workers::jobs::dead_letters(&flow.db.pool, 10)
            .await
            .unwrap();
        if let Some(job) = dead.into_iter().find(|j| j.kind == kinds::PARTNER_RELEASE) {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the release never gave up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let booking = flow.store.load::<Booking>("x-1").await.unwrap().state;
    assert!(!booking.reservation_released, "a 409 was taken as released");
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("409"),
        "{dead:?}"
    );

    flow.faults(json!({"cancel_status": 410})).await;
    workers::jobs::replay(&flow.db.pool, dead.id).await.unwrap();
    let released = flow.wait_released("x-1").await;
    assert_eq!(released.status, BookingStatus::Cancelled);
}
