//! The partner simulator: a fake partner API with fault injection, for tests and demos.
//!
//! - `POST /v1/reservations` (header `Idempotency-Key` = our booking id, body `{"resource",...}`) →
//!   `{"reservation_id","status"}`. Idempotent by client reference: the same booking id always gets the
//!   same reservation.
//! - `GET /v1/reservations?client_reference=<booking id>` → an array with that reservation (never two).
//! - `POST /v1/reservations/{id}/cancel` → the reservation, `status: cancelled` (idempotent).
//! - `POST /v1/payments {"card","amount"}` → `{"payment_id","status"}`; card `4000000000000002` declines.
//! - `PUT /control/faults` (a [`Faults`] JSON), `GET /control/faults`, `GET /control/stats`.
//!
//! After a reservation is created, its status (`confirmed`; `rejected` when the resource name contains
//! `reject`) is sent to the callback URL, signed like every partner callback:
//! `X-Trailbook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! Faults (each a probability in 0..1, except `latency_ms`): `latency_ms` delays every answer;
//! `rate_429` answers `429` with `Retry-After` before doing anything; `rate_5xx` answers `503` before doing
//! anything; `timeout_after_success` does the work and then holds the answer for
//! [`SimConfig::timeout_hold`], so the client times out although the reservation exists;
//! `duplicate_callbacks` sends a callback twice (same `callback_id`); `late_callbacks` delays the callback
//! by [`SimConfig::late_callback_delay`] and then also sends a stale `rejected` dated before it
//! (out of order).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The card number the simulator declines.
pub const DECLINED_CARD: &str = "4000000000000002";
/// The signature header of callbacks.
pub const SIGNATURE_HEADER: &str = "x-trailbook-signature";

/// Injected faults. Probabilities are in `0..=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every answer, in milliseconds.
    pub latency_ms: u64,
    /// Do the work, then never answer in time.
    pub timeout_after_success: f64,
    /// Answer `429 Too Many Requests` with `Retry-After`.
    pub rate_429: f64,
    /// Answer `503 Service Unavailable`.
    pub rate_5xx: f64,
    /// Send a callback twice.
    pub duplicate_callbacks: f64,
    /// Send a callback late, followed by a stale one (out of order).
    pub late_callbacks: f64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every fault at a moderate level (`--chaos`).
    pub fn chaos() -> Self {
        Self {
            latency_ms: 50,
            timeout_after_success: 0.1,
            rate_429: 0.1,
            rate_5xx: 0.05,
            duplicate_callbacks: 0.2,
            late_callbacks: 0.1,
        }
    }

    /// Checks every probability is in `0..=1`.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("timeout_after_success", self.timeout_after_success),
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("duplicate_callbacks", self.duplicate_callbacks),
            ("late_callbacks", self.late_callbacks),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Invalid(format!("{name} must be between 0 and 1")));
            }
        }
        Ok(())
    }
}

/// The simulator's configuration (the CLI builds it from flags).
#[derive(Clone)]
pub struct SimConfig {
    /// Where callbacks go (`None`: no callbacks), e.g. `http://127.0.0.1:8080/v1/partner/callbacks`.
    pub callback_url: Option<String>,
    /// HMAC secret of callbacks (`TRAILBOOK_PARTNER_SECRET`). Never logged.
    pub secret: Vec<u8>,
    pub faults: Faults,
    /// How long `timeout_after_success` holds an answer.
    pub timeout_hold: Duration,
    /// How late a late callback comes.
    pub late_callback_delay: Duration,
    /// `Retry-After` seconds of a `429`.
    pub retry_after_secs: u64,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("callback_url", &self.callback_url)
            .field("secret", &"[redacted]")
            .field("faults", &self.faults)
            .field("timeout_hold", &self.timeout_hold)
            .field("late_callback_delay", &self.late_callback_delay)
            .field("retry_after_secs", &self.retry_after_secs)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            callback_url: Some(DEFAULT_CALLBACK_URL.to_owned()),
            secret: Vec::new(),
            faults: Faults::none(),
            timeout_hold: Duration::from_secs(30),
            late_callback_delay: Duration::from_secs(3),
            retry_after_secs: 1,
        }
    }
}

/// The default of `--callback-url`.
pub const DEFAULT_CALLBACK_URL: &str = "http://127.0.0.1:8080/v1/partner/callbacks";

/// A reservation at the simulated partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    /// Our booking id.
    pub client_reference: String,
    pub resource: String,
    /// `confirmed`, `rejected` or `cancelled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// Request counters (`GET /control/stats`), for tests and demos.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub reservations_created: u64,
    pub reservation_requests: u64,
    pub cancel_requests: u64,
    pub payment_requests: u64,
    pub throttled_429: u64,
    pub failed_5xx: u64,
    pub held_timeouts: u64,
    pub callbacks_sent: u64,
    pub callbacks_failed: u64,
}

#[derive(Default)]
struct Inner {
    by_reference: HashMap<String, Reservation>,
    /// reservation id → client reference
    by_id: HashMap<String, String>,
    stats: Stats,
}

/// Shared state of the simulator.
#[derive(Clone)]
pub struct SimState {
    config: Arc<Mutex<SimConfig>>,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

impl SimState {
    pub fn new(config: SimConfig) -> Result<Self> {
        config.faults.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            config: Arc::new(Mutex::new(config)),
            inner: Arc::new(Mutex::new(Inner::default())),
            http,
        })
    }

    fn config(&self) -> SimConfig {
        match self.config.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn with_inner<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.with_inner(|i| i.stats.clone())
    }
}

/// The simulator's routes.
pub fn app(state: SimState) -> Router {
    Router::new()
        .route("/v1/reservations", post(create_reservation).get(lookup))
        .route("/v1/reservations/{id}/cancel", post(cancel_reservation))
        .route("/v1/payments", post(payment))
        .route("/control/faults", put(set_faults).get(get_faults))
        .route("/control/stats", get(stats))
        .with_state(state)
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = SimState::new(config)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "partner simulator listening");
    // Prepared once, shared by every connection (see `trailbook serve`).
    axum::serve(listener, app(state).into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn chance(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

/// Applies latency, 429 and 5xx faults; `Some(response)` means answer with it and do nothing else.
async fn inject_front_faults(state: &SimState) -> Option<Response> {
    let config = state.config();
    state.with_inner(|i| i.stats.requests += 1);
    if config.faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.faults.latency_ms)).await;
    }
    if chance(config.faults.rate_429) {
        state.with_inner(|i| i.stats.throttled_429 += 1);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "rate limited"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&config.retry_after_secs.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        return Some(response);
    }
    if chance(config.faults.rate_5xx) {
        state.with_inner(|i| i.stats.failed_5xx += 1);
        return Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "partner unavailable"})),
            )
                .into_response(),
        );
    }
    None
}

/// After the work is done: maybe hold the answer so the client times out.
async fn maybe_hold(state: &SimState) {
    let config = state.config();
    if chance(config.faults.timeout_after_success) {
        state.with_inner(|i| i.stats.held_timeouts += 1);
        tokio::time::sleep(config.timeout_hold).await;
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

#[derive(Debug, Deserialize)]
struct CreateReservation {
    #[serde(default)]
    resource: String,
}

async fn create_reservation(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Option<Json<CreateReservation>>,
) -> Response {
    state.with_inner(|i| i.stats.reservation_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(reference) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
    else {
        return bad_request("the Idempotency-Key header (our booking id) is required");
    };
    let resource = body.map(|Json(b)| b.resource).unwrap_or_default();
    let (reservation, created) = state.with_inner(|inner| {
        if let Some(existing) = inner.by_reference.get(&reference) {
            return (existing.clone(), false);
        }
        let status = if resource.contains("reject") {
            "rejected"
        } else {
            "confirmed"
        };
        let reservation = Reservation {
            reservation_id: format!("res-{}", uuid::Uuid::now_v7().simple()),
            client_reference: reference.clone(),
            resource,
            status: status.to_owned(),
            created_at: Utc::now(),
        };
        inner
            .by_id
            .insert(reservation.reservation_id.clone(), reference.clone());
        inner
            .by_reference
            .insert(reference.clone(), reservation.clone());
        inner.stats.reservations_created += 1;
        (reservation, true)
    });
    if created {
        send_callbacks(&state, &reservation);
    }
    maybe_hold(&state).await;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "reservation_id": reservation.reservation_id,
            "status": reservation.status,
        })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LookupQuery {
    client_reference: Option<String>,
}

async fn lookup(State(state): State<SimState>, Query(query): Query<LookupQuery>) -> Response {
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(reference) = query.client_reference else {
        return bad_request("the client_reference query parameter is required");
    };
    let found: Vec<Reservation> = state.with_inner(|i| {
        i.by_reference
            .get(&reference)
            .cloned()
            .into_iter()
            .collect()
    });
    Json(found).into_response()
}

async fn cancel_reservation(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.with_inner(|i| i.stats.cancel_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let cancelled = state.with_inner(|inner| {
        let reference = inner.by_id.get(&id)?.clone();
        let reservation = inner.by_reference.get_mut(&reference)?;
        reservation.status = "cancelled".to_owned();
        Some(reservation.clone())
    });
    let Some(reservation) = cancelled else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown reservation"})),
        )
            .into_response();
    };
    maybe_hold(&state).await;
    Json(json!({
        "reservation_id": reservation.reservation_id,
        "status": reservation.status,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct PaymentRequest {
    card: String,
    #[serde(default)]
    amount: serde_json::Value,
}

async fn payment(
    State(state): State<SimState>,
    body: std::result::Result<Json<PaymentRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    state.with_inner(|i| i.stats.payment_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Ok(Json(request)) = body else {
        return bad_request("expected {\"card\",\"amount\"}");
    };
    let declined = request.card == DECLINED_CARD;
    let status = if declined { "declined" } else { "captured" };
    maybe_hold(&state).await;
    let code = if declined {
        StatusCode::PAYMENT_REQUIRED
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "payment_id": format!("pay-{}", uuid::Uuid::now_v7().simple()),
            "status": status,
            "amount": request.amount,
            "reason": if declined { Some("card declined") } else { None },
        })),
    )
        .into_response()
}

async fn set_faults(
    State(state): State<SimState>,
    body: std::result::Result<Json<Faults>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let faults = match body {
        Ok(Json(faults)) => faults,
        Err(e) => return bad_request(&e.body_text()),
    };
    if let Err(e) = faults.validate() {
        return bad_request(&e.to_string());
    }
    match state.config.lock() {
        Ok(mut c) => c.faults = faults,
        Err(poisoned) => poisoned.into_inner().faults = faults,
    }
    tracing::info!(?faults, "partner simulator faults changed");
    Json(faults).into_response()
}

async fn get_faults(State(state): State<SimState>) -> Response {
    Json(state.config().faults).into_response()
}

async fn stats(State(state): State<SimState>) -> Response {
    Json(state.stats()).into_response()
}

/// A partner callback body (the shape `/v1/partner/callbacks` accepts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub callback_id: String,
    pub booking_id: String,
    pub reservation_id: Option<String>,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this branch cannot run.
        Err(_) => Vec::new(),
    };
    format!("t={timestamp},v1={}", hex::encode(mac))
}

fn send_callbacks(state: &SimState, reservation: &Reservation) {
    let config = state.config();
    let Some(url) = config.callback_url.clone() else {
        return;
    };
    let callback = Callback {
        callback_id: format!("cb-{}", uuid::Uuid::now_v7().simple()),
        booking_id: reservation.client_reference.clone(),
        reservation_id: Some(reservation.reservation_id.clone()),
        status: reservation.status.clone(),
        occurred_at: reservation.created_at,
        reason: (reservation.status == "rejected").then(|| "resource unavailable".to_owned()),
    };
    let duplicate = chance(config.faults.duplicate_callbacks);
    let late = chance(config.faults.late_callbacks);
    let state = state.clone();
    tokio::spawn(async move {
        if late {
            tokio::time::sleep(config.late_callback_delay).await;
        }
        deliver(&state, &url, &config.secret, &callback).await;
        if duplicate {
            deliver(&state, &url, &config.secret, &callback).await;
        }
        if late && callback.status == "confirmed" {
            // An out-of-order report: a rejection dated before the confirmation, arriving after it.
            let stale = Callback {
                callback_id: format!("cb-{}", uuid::Uuid::now_v7().simple()),
                status: "rejected".to_owned(),
                occurred_at: callback.occurred_at - chrono::Duration::seconds(1),
                reason: Some("stale availability".to_owned()),
                ..callback.clone()
            };
            deliver(&state, &url, &config.secret, &stale).await;
        }
    });
}

/// Posts one callback, retrying a few times with backoff on network errors and 5xx.
async fn deliver(state: &SimState, url: &str, secret: &[u8], callback: &Callback) {
    let Ok(body) = serde_json::to_vec(callback) else {
        return;
    };
    let backoff = crate::Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    for attempt in 1..=5u32 {
        let signature = sign(secret, Utc::now().timestamp(), &body);
        let result = state
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response)
                if response.status().is_success() || response.status().is_client_error() =>
            {
                if response.status().is_client_error() {
                    tracing::warn!(status = %response.status(), booking_id = %callback.booking_id, "callback refused");
                }
                state.with_inner(|i| i.stats.callbacks_sent += 1);
                return;
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), attempt, "callback failed; retrying");
            }
            Err(e) => tracing::debug!(error = %e, attempt, "callback failed; retrying"),
        }
        tokio::time::sleep(backoff.delay(attempt)).await;
    }
    state.with_inner(|i| i.stats.callbacks_failed += 1);
    tracing::warn!(booking_id = %callback.booking_id, "callback not delivered after 5 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature matches the command API's scheme: HMAC of "t.body".
    #[test]
    fn signature_binds_time_and_body() {
        let a = sign(b"k", 100, b"{}");
        assert!(a.starts_with("t=100,v1="));
        assert_ne!(a, sign(b"k", 101, b"{}"));
        assert_ne!(a, sign(b"k", 100, b"{ }"));
        assert_ne!(a, sign(b"j", 100, b"{}"));
    }

    /// Probabilities outside 0..1 are refused.
    #[test]
    fn faults_validate_probabilities() {
        assert!(Faults::chaos().validate().is_ok());
        let bad = Faults {
            rate_429: 1.5,
            ..Faults::none()
        };
        assert!(bad.validate().is_err());
    }
}
