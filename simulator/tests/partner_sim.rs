//! The partner simulator over real HTTP on a local port.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use simulator::{Faults, SimConfig};

struct Sim {
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(simulator::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Sim {
        base,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

fn quiet() -> SimConfig {
    SimConfig {
        callback_url: None,
        payment_webhook_url: None,
        ..SimConfig::default()
    }
}

impl Sim {
    async fn reserve(&self, booking: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/reservations", self.base))
            .header("Idempotency-Key", booking)
            .json(&json!({"resource": "room-42"}))
            .send()
            .await
            .unwrap()
    }

    async fn lookup(&self, booking: &str) -> Vec<Value> {
        self.http
            .get(format!(
                "{}/v1/reservations?client_reference={booking}",
                self.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn pay(&self, key: &str, card: &str, booking: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/payments", self.base))
            .header("Idempotency-Key", key)
            .json(&json!({
                "card": card,
                "amount": {"minor": 25000, "currency": "EUR"},
                "client_reference": booking,
            }))
            .send()
            .await
            .unwrap()
    }

    async fn refund(&self, payment_id: &str, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/payments/{payment_id}/refund", self.base))
            .header("Idempotency-Key", key)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn ledger(&self) -> Value {
        self.get("/control/ledger").await
    }

    async fn stats(&self) -> Value {
        self.get("/control/stats").await
    }

    async fn faults(&self, faults: Value) -> reqwest::Response {
        self.http
            .put(format!("{}/control/faults", self.base))
            .json(&faults)
            .send()
            .await
            .unwrap()
    }
}

/// Creating a reservation twice (and twenty times at once) with one booking id gives one reservation, and
/// the lookup by client reference never returns two.
#[tokio::test]
async fn create_is_idempotent_and_lookup_never_returns_two() {
    let sim = Arc::new(start(quiet()).await);
    let first: Value = sim.reserve("b-1").await.json().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let sim = sim.clone();
        tasks.push(tokio::spawn(async move {
            sim.reserve("b-1").await.json::<Value>().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap()["reservation_id"], first["reservation_id"]);
    }

    let found = sim.lookup("b-1").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["reservation_id"], first["reservation_id"]);
    assert_eq!(first["status"], "confirmed");
    assert!(sim.lookup("b-unknown").await.is_empty());
    let stats: Value = sim
        .http
        .get(format!("{}/control/stats", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["reservations_created"], 1);

    let cancelled: Value = sim
        .http
        .post(format!(
            "{}/v1/reservations/{}/cancel",
            sim.base,
            first["reservation_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
}

/// With `rate_429 = 1` every call is refused with 429 and a Retry-After header, and nothing is created.
#[tokio::test]
async fn injected_429_carries_retry_after_and_creates_nothing() {
    let sim = start(quiet()).await;
    assert!(sim
        .faults(json!({"rate_429": 1.0}))
        .await
        .status()
        .is_success());

    let response = sim.reserve("b-2").await;

    assert_eq!(response.status(), 429);
    let retry_after = response
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    sim.faults(json!({})).await;
    assert!(sim.lookup("b-2").await.is_empty());
}

/// `timeout_after_success` creates the reservation and then holds the answer: the client times out, yet
/// the lookup finds exactly one reservation (and a retry gets that same one).
#[tokio::test]
async fn timeout_after_success_creates_the_reservation_but_the_client_times_out() {
    let sim = start(SimConfig {
        timeout_hold: Duration::from_secs(5),
        ..quiet()
    })
    .await;
    sim.faults(json!({"timeout_after_success": 1.0})).await;

    let result = sim
        .http
        .post(format!("{}/v1/reservations", sim.base))
        .header("Idempotency-Key", "b-3")
        .json(&json!({"resource": "room-1"}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;

    assert!(result.unwrap_err().is_timeout());
    sim.faults(json!({})).await;
    let found = sim.lookup("b-3").await;
    assert_eq!(found.len(), 1);
    let retry: Value = sim.reserve("b-3").await.json().await.unwrap();
    assert_eq!(retry["reservation_id"], found[0]["reservation_id"]);
}

/// Faults refuse unknown names and probabilities outside 0..1; `chaos()` is accepted as it is.
#[tokio::test]
async fn fault_control_validates_its_input() {
    let sim = start(quiet()).await;
    assert_eq!(sim.faults(json!({"rate_429": 2.0})).await.status(), 400);
    assert_eq!(
        sim.faults(json!({"rate_four_two_nine": 0.5}))
            .await
            .status(),
        400
    );
    let chaos = serde_json::to_value(Faults::chaos()).unwrap();
    assert!(sim.faults(chaos.clone()).await.status().is_success());
    let now: Value = sim
        .http
        .get(format!("{}/control/faults", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now, chaos);
    for name in [
        "latency_ms",
        "timeout_after_success",
        "rate_429",
        "rate_5xx",
        "duplicate_callbacks",
        "late_callbacks",
    ] {
        assert!(now.get(name).is_some(), "{name} missing");
    }
}

/// The test card declines; another card is captured.
#[tokio::test]
async fn payment_outcome_follows_the_card() {
    let sim = start(quiet()).await;
    let pay = |card: &'static str| {
        sim.http
            .post(format!("{}/v1/payments", sim.base))
            .header("Idempotency-Key", format!("pay-{card}"))
            .json(&json!({"card": card, "amount": {"minor": 100, "currency": "EUR"}}))
            .send()
    };
    let declined: Value = pay(simulator::DECLINED_CARD)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let captured: Value = pay("4242424242424242").await.unwrap().json().await.unwrap();
    assert_eq!(declined["status"], "declined");
    assert_eq!(captured["status"], "captured");
}

/// Callbacks are signed with the shared secret (HMAC of "t.body"), and `duplicate_callbacks = 1` delivers
/// the same callback id twice.
#[tokio::test]
async fn callbacks_are_signed_and_duplicated_on_demand() {
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let sig = headers
                    .get(simulator::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let sim = start(SimConfig {
        callback_url: Some(url),
        secret: b"s3cret".to_vec(),
        faults: Faults {
            duplicate_callbacks: 1.0,
            ..Faults::none()
        },
        ..SimConfig::default()
    })
    .await;

    sim.reserve("b-4").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while received.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "callbacks not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let bodies: Vec<Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(bodies[0]["callback_id"], bodies[1]["callback_id"]);
    assert_eq!(bodies[0]["booking_id"], "b-4");
    assert_eq!(bodies[0]["status"], "confirmed");
    for (sig, body) in &got {
        let t: i64 = sig
            .split(',')
            .next()
            .unwrap()
            .trim_start_matches("t=")
            .parse()
            .unwrap();
        assert_eq!(sig, &simulator::sign(b"s3cret", t, body));
        assert_ne!(sig, &simulator::sign(b"other", t, body));
    }
}

/// What a tiny receiver got: signature, correlation header and body of each request.
type Received = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// A local receiver recording every POST to `/cb` and `/wh`; returns its base URL.
async fn receiver(callbacks: Received, webhooks: Received) -> String {
    fn record(sink: &Received, headers: &HeaderMap, body: &Bytes) {
        let sig = headers
            .get(simulator::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let correlation = headers
            .get("x-correlation-id")
            .map(|v| v.to_str().unwrap().to_owned());
        // The raw body rides along under `_raw`, for the signature check.
        let mut value: Value = serde_json::from_slice(body).unwrap();
        value["_raw"] = Value::String(String::from_utf8(body.to_vec()).unwrap());
        sink.lock().unwrap().push((sig, correlation, value));
    }
    let app = axum::Router::new()
        .route(
            "/cb",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = callbacks.clone();
                async move {
                    record(&sink, &headers, &body);
                    "ok"
                }
            }),
        )
        .route(
            "/wh",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = webhooks.clone();
                async move {
                    record(&sink, &headers, &body);
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn wait_for(sink: &Received, n: usize) -> Vec<(String, Option<String>, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sink.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} delivered",
            sink.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.lock().unwrap().clone()
}

fn assert_signed(secret: &[u8], sig: &str, raw: &Value) {
    let body = raw["_raw"].as_str().unwrap().as_bytes();
    let t: i64 = sig
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=")
        .parse()
        .unwrap();
    assert_eq!(sig, simulator::sign(secret, t, body));
    assert_ne!(sig, simulator::sign(b"other", t, body));
}

/// Twenty concurrent payments and a later one with one idempotency key charge once: every answer has the
/// same payment id, and the ledger holds one captured entry (last 4 card digits only).
#[tokio::test]
async fn a_repeated_payment_with_one_key_charges_once() {
    let sim = Arc::new(start(quiet()).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let sim = sim.clone();
        tasks.push(tokio::spawn(async move {
            let response = sim.pay("k-1", "4242424242424242", "b-10").await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let again = sim.pay("k-1", "4242424242424242", "b-10").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();

    for answer in &answers {
        assert_eq!(answer["payment_id"], again["payment_id"]);
    }
    assert_eq!(again["status"], "captured");
    assert_eq!(again["idempotency_key"], "k-1");
    assert_eq!(again["client_reference"], "b-10");
    assert_eq!(again["amount"], json!({"minor": 25000, "currency": "EUR"}));
    assert_eq!(again["reason"], Value::Null);
    let ledger = sim.ledger().await;
    assert_eq!(ledger["payments"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["payments"][0]["payment_id"], again["payment_id"]);
    assert_eq!(ledger["payments"][0]["card_last4"], "4242");
    assert_eq!(ledger["charged_minor"], 25000);
    assert!(!ledger.to_string().contains("4242424242424242"));
    let stats = sim.stats().await;
    assert_eq!(stats["payments_captured"], 1);
    assert_eq!(stats["payment_requests"], 21);
}

/// The declined card answers 402 with the reason, leaves one declined ledger entry and charges nothing;
/// a replay of its key gives the same declined entry.
#[tokio::test]
async fn a_declined_card_gives_402_and_a_declined_entry_and_is_not_charged() {
    let sim = start(quiet()).await;
    let response = sim.pay("k-2", simulator::DECLINED_CARD, "b-11").await;
    assert_eq!(response.status(), 402);
    let declined: Value = response.json().await.unwrap();
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["reason"], "card declined");
    let replay = sim.pay("k-2", simulator::DECLINED_CARD, "b-11").await;
    assert_eq!(replay.status(), 402);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["payment_id"],
        declined["payment_id"]
    );

    let ledger = sim.ledger().await;
    assert_eq!(ledger["payments"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["payments"][0]["status"], "declined");
    assert_eq!(ledger["payments"][0]["card_last4"], "0002");
    assert_eq!(ledger["charged_minor"], 0);
    let stats = sim.stats().await;
    assert_eq!(stats["payments_declined"], 1);
    assert_eq!(stats["payments_captured"], 0);
}

/// A payment without an Idempotency-Key is refused with 400, a bad amount with 422, and front faults
/// (429 with Retry-After, 503) refuse before charging anything; the lookup needs a filter.
#[tokio::test]
async fn refused_payment_requests_charge_nothing() {
    let sim = start(quiet()).await;
    let no_key = sim
        .http
        .post(format!("{}/v1/payments", sim.base))
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400);
    let bad_amount = sim
        .http
        .post(format!("{}/v1/payments", sim.base))
        .header("Idempotency-Key", "k-bad")
        .json(&json!({"card": "4242424242424242", "amount": {"minor": -5, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_amount.status(), 422);
    sim.faults(json!({"rate_429": 1.0})).await;
    let throttled = sim.pay("k-3", "4242424242424242", "b-12").await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().get("retry-after").is_some());
    sim.faults(json!({"rate_5xx": 1.0})).await;
    assert_eq!(
        sim.pay("k-3", "4242424242424242", "b-12").await.status(),
        503
    );
    sim.faults(json!({})).await;

    let ledger = sim.ledger().await;
    assert!(ledger["payments"].as_array().unwrap().is_empty());
    assert_eq!(ledger["charged_minor"], 0);
    let lookup = sim
        .http
        .get(format!("{}/v1/payments", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 400);
}

/// `timeout_after_success` records the charge and then holds the answer: the client times out, yet the
/// lookup by key (and by booking id) finds the one charge, and a retry with the key gets that same one.
#[tokio::test]
async fn timeout_after_success_on_a_payment_records_the_charge_and_the_lookup_finds_it() {
    let sim = start(SimConfig {
        timeout_hold: Duration::from_secs(5),
        ..quiet()
    })
    .await;
    sim.faults(json!({"timeout_after_success": 1.0})).await;

    let result = sim
        .http
        .post(format!("{}/v1/payments", sim.base))
        .header("Idempotency-Key", "k-4")
        .json(&json!({"card": "4242424242424242", "amount": {"minor": 25000, "currency": "EUR"}, "client_reference": "b-13"}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;

    assert!(result.unwrap_err().is_timeout());
    sim.faults(json!({})).await;
    let by_key: Vec<Value> = sim
        .http
        .get(format!("{}/v1/payments", sim.base))
        .query(&[("idempotency_key", "k-4")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0]["status"], "captured");
    let by_booking: Vec<Value> = sim
        .http
        .get(format!("{}/v1/payments", sim.base))
        .query(&[("client_reference", "b-13")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_booking, by_key);
    let nothing: Vec<Value> = sim
        .http
        .get(format!("{}/v1/payments?idempotency_key=k-none", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(nothing.is_empty());
    let retry: Value = sim
        .pay("k-4", "4242424242424242", "b-13")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retry["payment_id"], by_key[0]["payment_id"]);
    assert_eq!(sim.ledger().await["charged_minor"], 25000);
    assert_eq!(sim.stats().await["held_timeouts"], 1);
}

/// Refunding a payment twice (with different keys) refunds it once: the second answer is the same
/// refund, and the ledger holds one refund of the full amount.
#[tokio::test]
async fn refunding_twice_refunds_once() {
    let sim = start(quiet()).await;
    let payment: Value = sim
        .pay("k-5", "4242424242424242", "b-14")
        .await
        .json()
        .await
        .unwrap();
    let payment_id = payment["payment_id"].as_str().unwrap();

    let first = sim.refund(payment_id, "r-1").await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let second = sim.refund(payment_id, "r-2").await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();

    assert_eq!(first["refund_id"], second["refund_id"]);
    assert_eq!(first["payment_id"], payment["payment_id"]);
    assert_eq!(first["status"], "refunded");
    assert_eq!(first["amount"], json!({"minor": 25000, "currency": "EUR"}));
    assert_eq!(first["client_reference"], "b-14");
    let ledger = sim.ledger().await;
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["refunded_minor"], 25000);
    assert_eq!(ledger["charged_minor"], 25000);
    assert_eq!(sim.stats().await["refunds"], 1);
}

/// A refund of an unknown payment is 404 and of a declined payment (nothing charged) 409, both JSON
/// errors, and neither refunds anything.
#[tokio::test]
async fn refund_of_an_unknown_payment_is_404_and_of_a_declined_one_409() {
    let sim = start(quiet()).await;
    let unknown = sim.refund("pay-nope", "r-3").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["error"].is_string());
    let declined: Value = sim
        .pay("k-6", simulator::DECLINED_CARD, "b-15")
        .await
        .json()
        .await
        .unwrap();
    let conflict = sim
        .refund(declined["payment_id"].as_str().unwrap(), "r-4")
        .await;
    assert_eq!(conflict.status(), 409);
    assert!(conflict.json::<Value>().await.unwrap()["error"].is_string());
    let ledger = sim.ledger().await;
    assert!(ledger["refunds"].as_array().unwrap().is_empty());
    assert_eq!(ledger["refunded_minor"], 0);
}

/// Payment webhooks (capture, refund) and partner callbacks are signed with the shared secret, carry the
/// X-Correlation-Id of the request that caused them, and `duplicate_callbacks = 1` sends each twice with
/// one id.
#[tokio::test]
async fn webhooks_are_signed_carry_the_correlation_id_and_are_duplicated_on_demand() {
    let callbacks: Received = Arc::default();
    let webhooks: Received = Arc::default();
    let base = receiver(callbacks.clone(), webhooks.clone()).await;
    let sim = start(SimConfig {
        callback_url: Some(format!("{base}/cb")),
        payment_webhook_url: Some(format!("{base}/wh")),
        secret: b"s3cret".to_vec(),
        faults: Faults {
            duplicate_callbacks: 1.0,
            ..Faults::none()
        },
        ..SimConfig::default()
    })
    .await;

    sim.http
        .post(format!("{}/v1/reservations", sim.base))
        .header("Idempotency-Key", "b-16")
        .header("X-Correlation-Id", "corr-res")
        .json(&json!({"resource": "room-7"}))
        .send()
        .await
        .unwrap();
    let payment: Value = sim
        .http
        .post(format!("{}/v1/payments", sim.base))
        .header("Idempotency-Key", "k-7")
        .header("X-Correlation-Id", "corr-pay")
        .json(&json!({"card": "4242424242424242", "amount": {"minor": 25000, "currency": "EUR"}, "client_reference": "b-16"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got = wait_for(&webhooks, 2).await;
    let refund: Value = sim
        .http
        .post(format!(
            "{}/v1/payments/{}/refund",
            sim.base,
            payment["payment_id"].as_str().unwrap()
        ))
        .header("X-Correlation-Id", "corr-refund")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(got[0].2["webhook_id"], got[1].2["webhook_id"]);
    let captured = &got[0].2;
    assert_eq!(captured["event"], "payment.captured");
    assert_eq!(captured["payment_id"], payment["payment_id"]);
    assert_eq!(captured["refund_id"], Value::Null);
    assert_eq!(captured["client_reference"], "b-16");
    assert_eq!(captured["idempotency_key"], "k-7");
    assert_eq!(captured["status"], "captured");
    assert_eq!(
        captured["amount"],
        json!({"minor": 25000, "currency": "EUR"})
    );
    assert!(captured["occurred_at"].is_string());
    assert_eq!(got[0].1.as_deref(), Some("corr-pay"));

    let got = wait_for(&webhooks, 4).await;
    assert_eq!(got[2].2["webhook_id"], got[3].2["webhook_id"]);
    assert_ne!(got[2].2["webhook_id"], got[0].2["webhook_id"]);
    let refunded = &got[2].2;
    assert_eq!(refunded["event"], "refund.succeeded");
    assert_eq!(refunded["refund_id"], refund["refund_id"]);
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["idempotency_key"], "k-7");
    assert_eq!(got[2].1.as_deref(), Some("corr-refund"));
    for (sig, _, body) in &got {
        assert_signed(b"s3cret", sig, body);
    }

    let cbs = wait_for(&callbacks, 2).await;
    assert_eq!(cbs[0].2["booking_id"], "b-16");
    for (sig, correlation, body) in &cbs {
        assert_eq!(correlation.as_deref(), Some("corr-res"));
        assert_signed(b"s3cret", sig, body);
    }
    let ledger = sim.ledger().await;
    assert_eq!(ledger["reservations"][0]["correlation_id"], "corr-res");
    assert_eq!(ledger["payments"][0]["correlation_id"], "corr-pay");
    assert_eq!(ledger["refunds"][0]["correlation_id"], "corr-refund");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.stats().await["webhooks_sent"] != 4 {
        assert!(tokio::time::Instant::now() < deadline, "webhooks_sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A declined payment sends a `payment.declined` webhook with the reason; no correlation header when the
/// request had none.
#[tokio::test]
async fn a_declined_payment_sends_a_declined_webhook() {
    let webhooks: Received = Arc::default();
    let base = receiver(Arc::default(), webhooks.clone()).await;
    let sim = start(SimConfig {
        callback_url: None,
        payment_webhook_url: Some(format!("{base}/wh")),
        ..SimConfig::default()
    })
    .await;

    sim.pay("k-8", simulator::DECLINED_CARD, "b-17").await;

    let got = wait_for(&webhooks, 1).await;
    assert_eq!(got[0].2["event"], "payment.declined");
    assert_eq!(got[0].2["status"], "declined");
    assert_eq!(got[0].2["reason"], "card declined");
    assert_eq!(got[0].1, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(webhooks.lock().unwrap().len(), 1);
}

/// With an API key, a `/v1` request without the bearer token (or with a wrong one) is refused with 401
/// before any fault, and counted; one with the token is served; `/control` needs no token.
#[tokio::test]
async fn api_key_refuses_a_request_without_the_bearer_token_and_accepts_one_with_it() {
    let sim = start(SimConfig {
        api_key: Some("sk_test_123".to_owned()),
        ..quiet()
    })
    .await;
    assert!(sim
        .faults(json!({"rate_5xx": 1.0}))
        .await
        .status()
        .is_success());
    let without = sim.reserve("b-18").await;
    assert_eq!(without.status(), 401);
    assert!(without.json::<Value>().await.unwrap()["error"].is_string());
    sim.faults(json!({})).await;
    let wrong = sim
        .http
        .post(format!("{}/v1/payments", sim.base))
        .bearer_auth("sk_test_124")
        .header("Idempotency-Key", "k-9")
        .json(&json!({"card": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let with = sim
        .http
        .post(format!("{}/v1/reservations", sim.base))
        .bearer_auth("sk_test_123")
        .header("Idempotency-Key", "b-18")
        .json(&json!({"resource": "room-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 201);
    let stats = sim.stats().await;
    assert_eq!(stats["unauthorized"], 2);
    assert_eq!(stats["failed_5xx"], 0);
    assert_eq!(stats["reservations_created"], 1);
    assert!(sim.ledger().await["payments"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// `cancel_status: 409` (and 410) makes the cancel answer that status with a JSON error while the
/// reservation stays confirmed; `cancel_status` outside 400..=599 is refused by the control route.
#[tokio::test]
async fn cancel_status_refuses_the_cancel_and_the_reservation_stays_confirmed() {
    let sim = start(quiet()).await;
    let created: Value = sim.reserve("b-19").await.json().await.unwrap();
    let cancel = || {
        sim.http
            .post(format!(
                "{}/v1/reservations/{}/cancel",
                sim.base,
                created["reservation_id"].as_str().unwrap()
            ))
            .send()
    };
    assert_eq!(
        sim.faults(json!({"cancel_status": 200})).await.status(),
        400
    );
    assert_eq!(
        sim.faults(json!({"cancel_status": 600})).await.status(),
        400
    );

    for status in [409, 410] {
        sim.faults(json!({ "cancel_status": status })).await;
        let refused = cancel().await.unwrap();
        assert_eq!(refused.status(), status);
        assert!(refused.json::<Value>().await.unwrap()["error"].is_string());
        assert_eq!(sim.lookup("b-19").await[0]["status"], "confirmed");
    }
    assert_eq!(sim.stats().await["cancels_refused"], 2);

    sim.faults(json!({})).await;
    let cancelled: Value = cancel().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
}

/// The reservation body's period, guests and client reference are stored and shown in the lookup and the
/// ledger; a client reference that differs from the key, or a reversed period, is refused with 422.
#[tokio::test]
async fn reservation_body_fields_are_stored_and_shown_in_the_ledger() {
    let sim = start(quiet()).await;
    let created = sim
        .http
        .post(format!("{}/v1/reservations", sim.base))
        .header("Idempotency-Key", "b-20")
        .header("X-Correlation-Id", "corr-20")
        .json(&json!({
            "resource": "room-9",
            "starts_at": "2026-12-01T15:00:00Z",
            "ends_at": "2026-12-03T11:00:00Z",
            "guests": 2,
            "client_reference": "b-20",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mismatch = sim
        .http
        .post(format!("{}/v1/reservations", sim.base))
        .header("Idempotency-Key", "b-21")
        .json(&json!({"resource": "room-9", "client_reference": "b-other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), 422);
    let reversed = sim
        .http
        .post(format!("{}/v1/reservations", sim.base))
        .header("Idempotency-Key", "b-22")
        .json(&json!({"starts_at": "2026-12-03T11:00:00Z", "ends_at": "2026-12-01T15:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reversed.status(), 422);

    let ledger = sim.ledger().await;
    let reservations = ledger["reservations"].as_array().unwrap();
    assert_eq!(reservations.len(), 1);
    let stored = &reservations[0];
    assert_eq!(stored["client_reference"], "b-20");
    assert_eq!(stored["resource"], "room-9");
    assert_eq!(stored["starts_at"], "2026-12-01T15:00:00Z");
    assert_eq!(stored["ends_at"], "2026-12-03T11:00:00Z");
    assert_eq!(stored["guests"], 2);
    assert_eq!(stored["correlation_id"], "corr-20");
    assert_eq!(sim.lookup("b-20").await[0], *stored);
    assert!(sim.lookup("b-21").await.is_empty());
}
