//! The partner simulator over real HTTP on a local port.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use workers::partner_sim::{self, Faults, SimConfig};

struct Sim {
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(partner_sim::serve(listener, config, async {
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
            .json(&json!({"card": card, "amount": {"minor": 100, "currency": "EUR"}}))
            .send()
    };
    let declined: Value = pay(partner_sim::DECLINED_CARD)
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
                    .get(partner_sim::SIGNATURE_HEADER)
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
        assert_eq!(sig, &partner_sim::sign(b"s3cret", t, body));
        assert_ne!(sig, &partner_sim::sign(b"other", t, body));
    }
}
