//! Random and mutated JSON thrown at every write route: the API may refuse, but never answers 5xx.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use support::{booking_body, visit_body, Server};

fn random_scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random_range(-3i64..300)),
        4 => json!(rng.random::<f64>() * 1e12),
        5 => json!(""),
        6 => json!("x".repeat(rng.random_range(1..5000))),
        7 => json!(
            [
                "2026-12-01T15:00:00Z",
                "99999-01-01T00:00:00Z",
                "1900-01-01T00:00:00Z",
                "not a date",
                "EUR",
                "eur",
                "4242424242424242",
                "a@b.c",
                "\u{0}\u{ffff}"
            ][rng.random_range(0..9)]
        ),
        _ => json!(u64::MAX),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    if depth == 0 || rng.random_bool(0.5) {
        return random_scalar(rng);
    }
    if rng.random_bool(0.5) {
        Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        )
    } else {
        let keys = [
            "partner",
            "resource",
            "starts_at",
            "ends_at",
            "guests",
            "amount",
            "minor",
            "currency",
            "customer",
            "name",
            "email",
            "reason",
            "card",
            "summary",
            "diagnosis_codes",
            "patient",
            "id",
            "clinician",
            "scheduled_at",
            "status",
            "booking_id",
            "zzz",
        ];
        let mut map = Map::new();
        for _ in 0..rng.random_range(0..6) {
            map.insert(
                keys[rng.random_range(0..keys.len())].to_string(),
                random_value(rng, depth - 1),
            );
        }
        Value::Object(map)
    }
}

/// Replaces, removes or adds one field somewhere in a valid body.
fn mutate(rng: &mut StdRng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.random_range(0..keys.len())];
            match rng.random_range(0..4) {
                0 => {
                    map.remove(key);
                }
                1 => {
                    map.insert(key.clone(), random_value(rng, 2));
                }
                2 => {
                    map.insert("unexpected".into(), random_scalar(rng));
                }
                _ => {
                    if let Some(inner) = map.get_mut(key) {
                        mutate(rng, inner);
                    }
                }
            }
        }
        other => *other = random_value(rng, 2),
    }
}

fn bodies(rng: &mut StdRng, valid: &Value, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                random_value(rng, 3)
            } else {
                let mut body = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    mutate(rng, &mut body);
                }
                body
            }
        })
        .collect()
}

/// No route answers 5xx to random or mutated JSON.
#[tokio::test]
async fn random_json_never_gets_a_server_error() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let s = Server::start_with(&[("TRAILBOOK_RATE_LIMIT", "0")]).await;
    let ada = s.client("ada");
    let op = s.operator();
    let booking = s
        .create_booking("ada", "base", &booking_body("room-f", 1))
        .await;
    let bid = booking.body["booking_id"].as_str().unwrap().to_string();
    let visit = s
        .post(
            "/v1/visits",
            &ada,
            &visit_body(),
            &[("Idempotency-Key", "base-visit")],
        )
        .await;
    let vid = visit.body["visit_id"].as_str().unwrap().to_string();

    let routes: Vec<(String, String, Value)> = vec![
        (
            "/v1/bookings".into(),
            ada.clone(),
            booking_body("room-g", 5),
        ),
        (
            format!("/v1/bookings/{bid}/cancel"),
            ada.clone(),
            json!({"reason": "x"}),
        ),
        (
            format!("/v1/bookings/{bid}/payment"),
            ada.clone(),
            json!({"card": "4242424242424242"}),
        ),
        ("/v1/visits".into(), ada.clone(), visit_body()),
        (
            format!("/v1/visits/{vid}/complete"),
            op.clone(),
            json!({"summary": "ok", "diagnosis_codes": ["J06.9"]}),
        ),
        (
            format!("/v1/visits/{vid}/cancel"),
            ada.clone(),
            json!({"reason": "x"}),
        ),
        (format!("/v1/visits/{vid}/check-in"), op.clone(), json!({})),
    ];
    let mut failures = Vec::new();
    let s = &s;
    for (r, (path, token, valid)) in routes.iter().enumerate() {
        let cases = bodies(&mut rng, valid, 120);
        let replies = join_all(cases.iter().enumerate().map(|(i, body)| {
            let key = format!("fuzz-{r}-{i}");
            async move {
                (
                    body,
                    s.post(path, token, body, &[("Idempotency-Key", key.as_str())])
                        .await,
                )
            }
        }))
        .await;
        for (body, reply) in replies {
            if reply.status >= 500 {
                failures.push(format!(
                    "{path} {} {body} -> {:?}",
                    reply.status, reply.body
                ));
            }
        }
    }
    let callbacks = bodies(
        &mut rng,
        &json!({"callback_id": "c", "booking_id": bid, "reservation_id": "r", "status": "confirmed", "occurred_at": chrono::Utc::now()}),
        120,
    );
    for body in &callbacks {
        let reply = s.callback(body).await;
        if reply.status >= 500 {
            failures.push(format!(
                "callback {} {body} -> {:?}",
                reply.status, reply.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} server errors, first: {}",
        failures.len(),
        failures[0]
    );
}
