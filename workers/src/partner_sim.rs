//! The partner simulator: a fake partner API and payment provider with fault injection and ledgers, for
//! tests, demos and the chaos script.
//!
//! Partner (reservations):
//! - `POST /v1/reservations` (header `Idempotency-Key` = our booking id; optional `X-Correlation-Id`; optional
//!   body `{"resource","starts_at","ends_at","guests","client_reference"}`) → `201` (created) or `200`
//!   (replay) `{"reservation_id","status"}`. Idempotent by client reference: the same booking id always gets
//!   the same reservation. `400` without the key or with malformed JSON; `422` when the body's
//!   `client_reference` differs from the key, when `ends_at` is not after `starts_at`, or on a field of the
//!   wrong type.
//! - `GET /v1/reservations?client_reference=<booking id>` → an array with that [`Reservation`] (never two).
//! - `POST /v1/reservations/{id}/cancel` → `{"reservation_id","status":"cancelled"}` (idempotent); `404`
//!   for an unknown id.
//!
//! Payment provider:
//! - `POST /v1/payments` (header `Idempotency-Key` required, `400` without; optional `X-Correlation-Id`;
//!   body `{"card","amount":{"minor","currency"},"client_reference"}`, `amount` and `client_reference`
//!   optional) → the [`Payment`]: `200` when captured, `402` when declined (card [`DECLINED_CARD`]). The
//!   first request with a key creates one ledger entry; every later one with that key answers the same
//!   entry (with `Idempotent-Replayed: true`) and charges nothing.
//! - `GET /v1/payments?idempotency_key=<key>&client_reference=<booking id>` (either or both) → an array of
//!   matching [`Payment`]s, oldest first (never two for one key).
//! - `POST /v1/payments/{payment_id}/refund` (optional `Idempotency-Key`, `X-Correlation-Id`) → `200` the
//!   [`Refund`]. A payment is refunded at most once: a later call (any key) answers the same refund
//!   (`Idempotent-Replayed: true`). `404` for an unknown payment, `409` for a declined one.
//!
//! Control (never needs the API key): `PUT /control/faults` (a [`Faults`] JSON), `GET /control/faults`,
//! `GET /control/stats` ([`Stats`]), `GET /control/ledger` ([`Ledger`]).
//!
//! When [`SimConfig::api_key`] is set, every `/v1/...` request needs `Authorization: Bearer <key>`, else
//! `401` before any fault or work. Every error answer is JSON `{"error": "..."}`.
//!
//! After a reservation is created, its status (`confirmed`; `rejected` when the resource name contains
//! `reject`) is sent as a [`Callback`] to [`SimConfig::callback_url`]; after a payment (captured or
//! declined) or a refund is created, a [`PaymentWebhook`] goes to [`SimConfig::payment_webhook_url`]. Both
//! are signed alike: `X-Trailbook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, and carry
//! the `X-Correlation-Id` of the request that caused them, if it had one. Deliveries are retried on network
//! errors and 5xx (5 attempts).
//!
//! Faults (each a probability in 0..1, except `latency_ms` and `cancel_status`): `latency_ms` delays every
//! answer; `rate_429` answers `429` with `Retry-After` before doing anything; `rate_5xx` answers `503` before
//! doing anything; `timeout_after_success` does the work (reservation, charge, refund, cancel) and then holds
//! the answer for [`SimConfig::timeout_hold`], so the client times out although the work is done;
//! `duplicate_callbacks` sends a callback or webhook twice (same id); `late_callbacks` delays a callback or
//! webhook by [`SimConfig::late_callback_delay`], and a late `confirmed` callback is followed by a stale
//! `rejected` one dated before it (out of order); `cancel_status` (0 = off, else 400..=599) makes every
//! cancel answer that status and change nothing (after the front faults).
//!
//! The full card number is never stored nor logged: the ledger keeps its last 4 characters.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The card number the simulator declines.
pub const DECLINED_CARD: &str = "4000000000000002";
/// The signature header of callbacks and webhooks.
pub const SIGNATURE_HEADER: &str = "x-trailbook-signature";
/// The correlation header read from requests and sent on the callbacks and webhooks they cause.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Set to `true` on a payment or refund answer that replays an existing entry.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Injected faults. Probabilities are in `0..=1`; `cancel_status` is `0` (off) or an HTTP status in
/// `400..=599`.
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
    /// Send a callback or webhook twice.
    pub duplicate_callbacks: f64,
    /// Send a callback or webhook late (a late confirmation is followed by a stale rejection).
    pub late_callbacks: f64,
    /// When non-zero, every cancel answers this status and changes nothing.
    pub cancel_status: u16,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every probabilistic fault at a moderate level (`--chaos`); cancels are not refused.
    pub fn chaos() -> Self {
        Self {
            latency_ms: 50,
            timeout_after_success: 0.1,
            rate_429: 0.1,
            rate_5xx: 0.05,
            duplicate_callbacks: 0.2,
            late_callbacks: 0.1,
            cancel_status: 0,
        }
    }

    /// Checks every probability is in `0..=1` and `cancel_status` is `0` or in `400..=599`.
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
        if self.cancel_status != 0 && !(400..=599).contains(&self.cancel_status) {
            return Err(Error::Invalid(
                "cancel_status must be 0 (off) or between 400 and 599".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The simulator's configuration (the CLI builds it from flags).
#[derive(Clone)]
pub struct SimConfig {
    /// Where callbacks go (`None`: no callbacks), e.g. `http://127.0.0.1:8080/v1/partner/callbacks`.
    pub callback_url: Option<String>,
    /// Where payment webhooks go (`None`: no webhooks); default [`DEFAULT_PAYMENT_WEBHOOK_URL`].
    pub payment_webhook_url: Option<String>,
    /// HMAC secret of callbacks and webhooks (`TRAILBOOK_PARTNER_SECRET`). Never logged.
    pub secret: Vec<u8>,
    /// When set, every `/v1/...` request needs `Authorization: Bearer <api_key>`. Never logged.
    pub api_key: Option<String>,
    /// The faults at start (`PUT /control/faults` changes them).
    pub faults: Faults,
    /// How long `timeout_after_success` holds an answer.
    pub timeout_hold: Duration,
    /// How late a late callback or webhook comes.
    pub late_callback_delay: Duration,
    /// `Retry-After` seconds of a `429`.
    pub retry_after_secs: u64,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("callback_url", &self.callback_url)
            .field("payment_webhook_url", &self.payment_webhook_url)
            .field("secret", &"[redacted]")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
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
            payment_webhook_url: Some(DEFAULT_PAYMENT_WEBHOOK_URL.to_owned()),
            secret: Vec::new(),
            api_key: None,
            faults: Faults::none(),
            timeout_hold: Duration::from_secs(30),
            late_callback_delay: Duration::from_secs(3),
            retry_after_secs: 1,
        }
    }
}

/// The default of `--callback-url`.
pub const DEFAULT_CALLBACK_URL: &str = "http://127.0.0.1:8080/v1/partner/callbacks";
/// The default of [`SimConfig::payment_webhook_url`].
pub const DEFAULT_PAYMENT_WEBHOOK_URL: &str = "http://127.0.0.1:8080/v1/payments/webhooks";

/// A reservation at the simulated partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The partner's id, `res-<uuid>`.
    pub reservation_id: String,
    /// Our booking id.
    pub client_reference: String,
    /// What is reserved (`""` when the request named nothing).
    pub resource: String,
    /// `confirmed`, `rejected` or `cancelled`.
    pub status: String,
    /// Start of the reserved period, if the request gave one.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the reserved period, if the request gave one.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Number of guests, if the request gave one.
    #[serde(default)]
    pub guests: Option<u32>,
    /// The `X-Correlation-Id` of the creating request.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// When the partner created it.
    pub created_at: DateTime<Utc>,
}

/// A payment attempt at the simulated provider (captured or declined): one per idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's id, `pay-<uuid>`.
    pub payment_id: String,
    /// `captured` or `declined`.
    pub status: String,
    /// The amount as requested (`{"minor","currency"}`, or `null` when none was given).
    pub amount: Value,
    /// Our booking id, if the request gave one.
    pub client_reference: Option<String>,
    /// The `Idempotency-Key` of the creating request.
    pub idempotency_key: String,
    /// `null` when captured, `"card declined"` when declined.
    pub reason: Option<String>,
    /// The last 4 characters of the card (the full number is never kept).
    pub card_last4: String,
    /// The `X-Correlation-Id` of the creating request.
    pub correlation_id: Option<String>,
    /// When the provider recorded it.
    pub created_at: DateTime<Utc>,
}

impl Payment {
    /// Whether money was taken.
    pub fn is_captured(&self) -> bool {
        self.status == "captured"
    }
}

/// A refund of a captured payment: at most one per payment, always of the full amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The provider's id, `ref-<uuid>`.
    pub refund_id: String,
    /// The refunded payment.
    pub payment_id: String,
    /// Always `refunded`.
    pub status: String,
    /// The payment's amount.
    pub amount: Value,
    /// The payment's client reference.
    pub client_reference: Option<String>,
    /// The `Idempotency-Key` of the creating request, if it had one.
    pub idempotency_key: Option<String>,
    /// The `X-Correlation-Id` of the creating request.
    pub correlation_id: Option<String>,
    /// When the provider recorded it.
    pub created_at: DateTime<Utc>,
}

/// Everything the simulator holds (`GET /control/ledger`), for tests to count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Every reservation, oldest first.
    pub reservations: Vec<Reservation>,
    /// Every payment attempt (captured or declined), oldest first.
    pub payments: Vec<Payment>,
    /// Every refund, oldest first.
    pub refunds: Vec<Refund>,
    /// Sum of the captured payments' `amount.minor`.
    pub charged_minor: i64,
    /// Sum of the refunds' `amount.minor`.
    pub refunded_minor: i64,
}

/// Request counters (`GET /control/stats`), for tests and demos.
///
/// `requests` counts the `/v1` requests that passed the API key check; `unauthorized` those that did not
/// (they count nowhere else). Partner callbacks count in `callbacks_*`, payment webhooks in `webhooks_*`;
/// a delivery counts as sent once the receiver answered 2xx or 4xx.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub unauthorized: u64,
    pub reservations_created: u64,
    pub reservation_requests: u64,
    pub cancel_requests: u64,
    /// Cancels refused by the `cancel_status` fault.
    pub cancels_refused: u64,
    pub payment_requests: u64,
    /// Payment entries created as captured (replays do not count).
    pub payments_captured: u64,
    /// Payment entries created as declined (replays do not count).
    pub payments_declined: u64,
    pub refund_requests: u64,
    /// Refunds created (replays do not count).
    pub refunds: u64,
    pub throttled_429: u64,
    pub failed_5xx: u64,
    pub held_timeouts: u64,
    pub callbacks_sent: u64,
    pub callbacks_failed: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
}

#[derive(Default)]
struct Inner {
    by_reference: HashMap<String, Reservation>,
    /// reservation id → client reference
    by_id: HashMap<String, String>,
    /// In creation order.
    payments: Vec<Payment>,
    /// idempotency key → index in `payments`
    payment_by_key: HashMap<String, usize>,
    /// payment id → index in `payments`
    payment_by_id: HashMap<String, usize>,
    /// In creation order.
    refunds: Vec<Refund>,
    /// payment id → index in `refunds`
    refund_by_payment: HashMap<String, usize>,
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
    /// Checks the configuration (faults, a non-empty API key) and builds the state.
    pub fn new(config: SimConfig) -> Result<Self> {
        config.faults.validate()?;
        if config.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Invalid(
                "the partner simulator's API key must not be empty".to_owned(),
            ));
        }
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

    /// Every reservation, payment and refund, with the charged and refunded totals.
    pub fn ledger(&self) -> Ledger {
        self.with_inner(|i| {
            let mut reservations: Vec<Reservation> = i.by_reference.values().cloned().collect();
            reservations.sort_by(|a, b| {
                (a.created_at, &a.reservation_id).cmp(&(b.created_at, &b.reservation_id))
            });
            let charged_minor = i
                .payments
                .iter()
                .filter(|p| p.is_captured())
                .map(|p| minor(&p.amount))
                .sum();
            let refunded_minor = i.refunds.iter().map(|r| minor(&r.amount)).sum();
            Ledger {
                reservations,
                payments: i.payments.clone(),
                refunds: i.refunds.clone(),
                charged_minor,
                refunded_minor,
            }
        })
    }
}

/// `amount.minor`, or 0 when the amount has none.
fn minor(amount: &Value) -> i64 {
    amount.get("minor").and_then(Value::as_i64).unwrap_or(0)
}

/// The simulator's routes.
pub fn app(state: SimState) -> Router {
    let v1 = Router::new()
        .route("/v1/reservations", post(create_reservation).get(lookup))
        .route("/v1/reservations/{id}/cancel", post(cancel_reservation))
        .route("/v1/payments", post(create_payment).get(lookup_payments))
        .route("/v1/payments/{payment_id}/refund", post(refund_payment))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/control/faults", put(set_faults).get(get_faults))
        .route("/control/stats", get(stats))
        .route("/control/ledger", get(ledger))
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

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses `/v1` requests without `Authorization: Bearer <api_key>` when a key is configured.
async fn require_api_key(State(state): State<SimState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.config().api_key else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_some_and(|token| same_secret(token.as_bytes(), expected.as_bytes())) {
        return next.run(request).await;
    }
    state.with_inner(|i| i.stats.unauthorized += 1);
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "a valid Authorization: Bearer <api key> header is required",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
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
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
        if let Ok(v) = HeaderValue::from_str(&config.retry_after_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Some(response);
    }
    if chance(config.faults.rate_5xx) {
        state.with_inner(|i| i.stats.failed_5xx += 1);
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "partner unavailable",
        ));
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

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn unprocessable(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A non-empty header value.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Marks an answer as the replay of an existing entry.
fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[derive(Debug, Default, Deserialize)]
struct CreateReservation {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    guests: Option<u32>,
    #[serde(default)]
    client_reference: Option<String>,
}

/// An empty body is `{}`; malformed JSON is a 400, a field of the wrong type a 422.
fn parse_reservation(body: &[u8]) -> std::result::Result<CreateReservation, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateReservation::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, format!("invalid reservation body: {e}"))
    })
}

async fn create_reservation(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.with_inner(|i| i.stats.reservation_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(reference) = header_value(&headers, "idempotency-key") else {
        return bad_request("the Idempotency-Key header (our booking id) is required");
    };
    let request = match parse_reservation(&body) {
        Ok(request) => request,
        Err((status, message)) => return error(status, &message),
    };
    if request
        .client_reference
        .as_deref()
        .is_some_and(|r| r != reference)
    {
        return unprocessable("client_reference differs from the Idempotency-Key header");
    }
    if let (Some(starts), Some(ends)) = (request.starts_at, request.ends_at) {
        if ends <= starts {
            return unprocessable("ends_at must be after starts_at");
        }
    }
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let (reservation, created) = state.with_inner(|inner| {
        if let Some(existing) = inner.by_reference.get(&reference) {
            return (existing.clone(), false);
        }
        let status = if request.resource.contains("reject") {
            "rejected"
        } else {
            "confirmed"
        };
        let reservation = Reservation {
            reservation_id: format!("res-{}", uuid::Uuid::now_v7().simple()),
            client_reference: reference.clone(),
            resource: request.resource,
            status: status.to_owned(),
            starts_at: request.starts_at,
            ends_at: request.ends_at,
            guests: request.guests,
            correlation_id,
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
    let refusal = state.config().faults.cancel_status;
    if refusal != 0 {
        state.with_inner(|i| i.stats.cancels_refused += 1);
        let status = StatusCode::from_u16(refusal).unwrap_or(StatusCode::CONFLICT);
        let message = match refusal {
            409 => "the reservation can no longer be cancelled",
            410 => "the reservation is gone",
            _ => "the partner refused the cancel",
        };
        return (
            status,
            Json(json!({ "error": message, "reservation_id": id })),
        )
            .into_response();
    }
    let cancelled = state.with_inner(|inner| {
        let reference = inner.by_id.get(&id)?.clone();
        let reservation = inner.by_reference.get_mut(&reference)?;
        reservation.status = "cancelled".to_owned();
        Some(reservation.clone())
    });
    let Some(reservation) = cancelled else {
        return error(StatusCode::NOT_FOUND, "unknown reservation");
    };
    maybe_hold(&state).await;
    Json(json!({
        "reservation_id": reservation.reservation_id,
        "status": reservation.status,
    }))
    .into_response()
}

/// No `Debug`: it holds the full card number.
#[derive(Deserialize)]
struct PaymentRequest {
    card: String,
    #[serde(default)]
    amount: Value,
    #[serde(default)]
    client_reference: Option<String>,
}

/// An amount is absent (`null`) or `{"minor": <integer ≥ 0>, "currency": "<code>"}`.
fn check_amount(amount: &Value) -> std::result::Result<(), &'static str> {
    if amount.is_null() {
        return Ok(());
    }
    let minor_ok = amount
        .get("minor")
        .and_then(Value::as_i64)
        .is_some_and(|m| m >= 0);
    let currency_ok = amount
        .get("currency")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if minor_ok && currency_ok {
        Ok(())
    } else {
        Err("amount must be {\"minor\": <integer >= 0>, \"currency\": \"<code>\"}")
    }
}

/// The last 4 characters of a card (all of it when shorter).
fn last4(card: &str) -> String {
    let skip = card.chars().count().saturating_sub(4);
    card.chars().skip(skip).collect()
}

fn payment_answer(payment: &Payment, replay: bool) -> Response {
    let code = if payment.is_captured() {
        StatusCode::OK
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    let response = (code, Json(payment)).into_response();
    if replay {
        replayed(response)
    } else {
        response
    }
}

async fn create_payment(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: std::result::Result<Json<PaymentRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    state.with_inner(|i| i.stats.payment_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(key) = header_value(&headers, "idempotency-key") else {
        return bad_request("the Idempotency-Key header is required");
    };
    let Ok(Json(request)) = body else {
        return bad_request("expected {\"card\",\"amount\",\"client_reference\"}");
    };
    if let Err(message) = check_amount(&request.amount) {
        return unprocessable(message);
    }
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let (payment, created) = state.with_inner(|inner| {
        if let Some(existing) = inner
            .payment_by_key
            .get(&key)
            .and_then(|&n| inner.payments.get(n))
        {
            return (existing.clone(), false);
        }
        let declined = request.card == DECLINED_CARD;
        let payment = Payment {
            payment_id: format!("pay-{}", uuid::Uuid::now_v7().simple()),
            status: if declined { "declined" } else { "captured" }.to_owned(),
            amount: request.amount,
            client_reference: request.client_reference,
            idempotency_key: key.clone(),
            reason: declined.then(|| "card declined".to_owned()),
            card_last4: last4(&request.card),
            correlation_id,
            created_at: Utc::now(),
        };
        let n = inner.payments.len();
        inner.payment_by_key.insert(key.clone(), n);
        inner.payment_by_id.insert(payment.payment_id.clone(), n);
        inner.payments.push(payment.clone());
        if declined {
            inner.stats.payments_declined += 1;
        } else {
            inner.stats.payments_captured += 1;
        }
        (payment, true)
    });
    if created {
        let event = if payment.is_captured() {
            "payment.captured"
        } else {
            "payment.declined"
        };
        send_payment_webhook(
            &state,
            PaymentWebhook {
                webhook_id: new_webhook_id(),
                event: event.to_owned(),
                payment_id: payment.payment_id.clone(),
                refund_id: None,
                client_reference: payment.client_reference.clone(),
                idempotency_key: payment.idempotency_key.clone(),
                status: payment.status.clone(),
                amount: payment.amount.clone(),
                occurred_at: payment.created_at,
                reason: payment.reason.clone(),
            },
            payment.correlation_id.clone(),
        );
    }
    maybe_hold(&state).await;
    payment_answer(&payment, !created)
}

#[derive(Debug, Deserialize)]
struct PaymentQuery {
    idempotency_key: Option<String>,
    client_reference: Option<String>,
}

async fn lookup_payments(
    State(state): State<SimState>,
    Query(query): Query<PaymentQuery>,
) -> Response {
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let key = query.idempotency_key.filter(|k| !k.is_empty());
    let reference = query.client_reference.filter(|r| !r.is_empty());
    if key.is_none() && reference.is_none() {
        return bad_request(
            "the idempotency_key or client_reference query parameter (or both) is required",
        );
    }
    let found: Vec<Payment> = state.with_inner(|i| {
        i.payments
            .iter()
            .filter(|p| key.as_ref().is_none_or(|k| &p.idempotency_key == k))
            .filter(|p| {
                reference
                    .as_ref()
                    .is_none_or(|r| p.client_reference.as_ref() == Some(r))
            })
            .cloned()
            .collect()
    });
    Json(found).into_response()
}

async fn refund_payment(
    State(state): State<SimState>,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.with_inner(|i| i.stats.refund_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let key = header_value(&headers, "idempotency-key");
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let outcome = state.with_inner(|inner| {
        let Some(payment) = inner
            .payment_by_id
            .get(&payment_id)
            .and_then(|&n| inner.payments.get(n))
        else {
            return Err((StatusCode::NOT_FOUND, "unknown payment"));
        };
        if let Some(existing) = inner
            .refund_by_payment
            .get(&payment_id)
            .and_then(|&n| inner.refunds.get(n))
        {
            return Ok((existing.clone(), payment.idempotency_key.clone(), false));
        }
        if !payment.is_captured() {
            return Err((
                StatusCode::CONFLICT,
                "the payment was declined: nothing to refund",
            ));
        }
        let refund = Refund {
            refund_id: format!("ref-{}", uuid::Uuid::now_v7().simple()),
            payment_id: payment.payment_id.clone(),
            status: "refunded".to_owned(),
            amount: payment.amount.clone(),
            client_reference: payment.client_reference.clone(),
            idempotency_key: key,
            correlation_id,
            created_at: Utc::now(),
        };
        let payment_key = payment.idempotency_key.clone();
        inner
            .refund_by_payment
            .insert(payment_id.clone(), inner.refunds.len());
        inner.refunds.push(refund.clone());
        inner.stats.refunds += 1;
        Ok((refund, payment_key, true))
    });
    let (refund, payment_key, created) = match outcome {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    if created {
        send_payment_webhook(
            &state,
            PaymentWebhook {
                webhook_id: new_webhook_id(),
                event: "refund.succeeded".to_owned(),
                payment_id: refund.payment_id.clone(),
                refund_id: Some(refund.refund_id.clone()),
                client_reference: refund.client_reference.clone(),
                idempotency_key: payment_key,
                status: refund.status.clone(),
                amount: refund.amount.clone(),
                occurred_at: refund.created_at,
                reason: None,
            },
            refund.correlation_id.clone(),
        );
    }
    maybe_hold(&state).await;
    let response = Json(&refund).into_response();
    if created {
        response
    } else {
        replayed(response)
    }
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

async fn ledger(State(state): State<SimState>) -> Response {
    Json(state.ledger()).into_response()
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

/// A payment provider webhook body, sent to [`SimConfig::payment_webhook_url`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentWebhook {
    /// `wh-<uuid>`; a duplicated webhook keeps it.
    pub webhook_id: String,
    /// `payment.captured`, `payment.declined` or `refund.succeeded`.
    pub event: String,
    pub payment_id: String,
    /// Set on `refund.succeeded`.
    pub refund_id: Option<String>,
    /// The payment's client reference (our booking id), if it had one.
    pub client_reference: Option<String>,
    /// The payment's idempotency key (also on `refund.succeeded`).
    pub idempotency_key: String,
    /// `captured`, `declined` or `refunded`.
    pub status: String,
    /// The payment's (or refund's) amount.
    pub amount: Value,
    /// When the payment or refund was recorded.
    pub occurred_at: DateTime<Utc>,
    /// `"card declined"` on `payment.declined`, else `null`.
    pub reason: Option<String>,
}

fn new_webhook_id() -> String {
    format!("wh-{}", uuid::Uuid::now_v7().simple())
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
    let correlation_id = reservation.correlation_id.clone();
    let duplicate = chance(config.faults.duplicate_callbacks);
    let late = chance(config.faults.late_callbacks);
    let state = state.clone();
    tokio::spawn(async move {
        let target = Target {
            kind: Kind::Callback,
            url: &url,
            secret: &config.secret,
            correlation_id: correlation_id.as_deref(),
            subject: &callback.booking_id,
        };
        if late {
            tokio::time::sleep(config.late_callback_delay).await;
        }
        deliver(&state, &target, &callback).await;
        if duplicate {
            deliver(&state, &target, &callback).await;
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
            deliver(&state, &target, &stale).await;
        }
    });
}

fn send_payment_webhook(state: &SimState, webhook: PaymentWebhook, correlation_id: Option<String>) {
    let config = state.config();
    let Some(url) = config.payment_webhook_url.clone() else {
        return;
    };
    let duplicate = chance(config.faults.duplicate_callbacks);
    let late = chance(config.faults.late_callbacks);
    let state = state.clone();
    tokio::spawn(async move {
        let target = Target {
            kind: Kind::Webhook,
            url: &url,
            secret: &config.secret,
            correlation_id: correlation_id.as_deref(),
            subject: &webhook.payment_id,
        };
        if late {
            tokio::time::sleep(config.late_callback_delay).await;
        }
        deliver(&state, &target, &webhook).await;
        if duplicate {
            deliver(&state, &target, &webhook).await;
        }
    });
}

/// Which counters a delivery updates.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Callback,
    Webhook,
}

/// Where and how one signed body goes.
struct Target<'a> {
    kind: Kind,
    url: &'a str,
    secret: &'a [u8],
    correlation_id: Option<&'a str>,
    /// For logs: the booking id (callbacks) or payment id (webhooks).
    subject: &'a str,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Callback => "callback",
            Kind::Webhook => "payment webhook",
        }
    }

    fn count(self, stats: &mut Stats, delivered: bool) {
        match (self, delivered) {
            (Kind::Callback, true) => stats.callbacks_sent += 1,
            (Kind::Callback, false) => stats.callbacks_failed += 1,
            (Kind::Webhook, true) => stats.webhooks_sent += 1,
            (Kind::Webhook, false) => stats.webhooks_failed += 1,
        }
    }
}

/// Posts one signed body, retrying a few times with backoff on network errors and 5xx.
async fn deliver<T: Serialize>(state: &SimState, target: &Target<'_>, payload: &T) {
    let kind = target.kind.name();
    let Ok(body) = serde_json::to_vec(payload) else {
        return;
    };
    let backoff = crate::Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    for attempt in 1..=5u32 {
        let signature = sign(target.secret, Utc::now().timestamp(), &body);
        let mut request = state
            .http
            .post(target.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature);
        if let Some(correlation_id) = target.correlation_id {
            request = request.header(CORRELATION_HEADER, correlation_id);
        }
        let result = request.body(body.clone()).send().await;
        match result {
            Ok(response)
                if response.status().is_success() || response.status().is_client_error() =>
            {
                if response.status().is_client_error() {
                    tracing::warn!(status = %response.status(), subject = %target.subject, "{kind} refused");
                }
                state.with_inner(|i| target.kind.count(&mut i.stats, true));
                return;
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), attempt, "{kind} failed; retrying");
            }
            Err(e) => tracing::debug!(error = %e, attempt, "{kind} failed; retrying"),
        }
        tokio::time::sleep(backoff.delay(attempt)).await;
    }
    state.with_inner(|i| target.kind.count(&mut i.stats, false));
    tracing::warn!(subject = %target.subject, "{kind} not delivered after 5 attempts");
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

    /// `cancel_status` is off (0) or an error status in 400..=599; anything else is refused.
    #[test]
    fn faults_validate_the_cancel_status() {
        for ok in [0, 400, 409, 410, 599] {
            let faults = Faults {
                cancel_status: ok,
                ..Faults::none()
            };
            assert!(faults.validate().is_ok(), "{ok}");
        }
        for bad in [1, 200, 399, 600] {
            let faults = Faults {
                cancel_status: bad,
                ..Faults::none()
            };
            assert!(faults.validate().is_err(), "{bad}");
        }
    }

    /// Only the last 4 characters of a card are kept.
    #[test]
    fn card_last4_keeps_only_the_tail() {
        assert_eq!(last4("4242424242424242"), "4242");
        assert_eq!(last4(DECLINED_CARD), "0002");
        assert_eq!(last4("12"), "12");
    }

    /// Amounts are absent or `{"minor" >= 0, "currency"}`.
    #[test]
    fn amounts_are_checked() {
        assert!(check_amount(&Value::Null).is_ok());
        assert!(check_amount(&json!({"minor": 25000, "currency": "EUR"})).is_ok());
        assert!(check_amount(&json!({"minor": -1, "currency": "EUR"})).is_err());
        assert!(check_amount(&json!({"minor": 1})).is_err());
        assert!(check_amount(&json!(12)).is_err());
    }

    /// The debug output shows neither the secret nor the API key.
    #[test]
    fn debug_output_redacts_the_secret_and_the_api_key() {
        let config = SimConfig {
            secret: b"hunter2-secret".to_vec(),
            api_key: Some("sk_live_abcdef".to_owned()),
            ..SimConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk_live_abcdef"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("[redacted]"));
    }

    /// An empty API key is a configuration error, not a lock on every route.
    #[test]
    fn an_empty_api_key_is_refused() {
        let config = SimConfig {
            api_key: Some(String::new()),
            ..SimConfig::default()
        };
        assert!(SimState::new(config).is_err());
    }

    /// Only captured payments count as charged; refunds count as refunded.
    #[test]
    fn ledger_totals_count_captures_and_refunds() {
        let state = SimState::new(SimConfig::default()).unwrap();
        let payment = |id: &str, status: &str, minor: i64| Payment {
            payment_id: id.to_owned(),
            status: status.to_owned(),
            amount: json!({"minor": minor, "currency": "EUR"}),
            client_reference: None,
            idempotency_key: id.to_owned(),
            reason: None,
            card_last4: "4242".to_owned(),
            correlation_id: None,
            created_at: Utc::now(),
        };
        state.with_inner(|i| {
            i.payments.push(payment("a", "captured", 100));
            i.payments.push(payment("b", "declined", 50));
            i.refunds.push(Refund {
                refund_id: "r".to_owned(),
                payment_id: "a".to_owned(),
                status: "refunded".to_owned(),
                amount: json!({"minor": 100, "currency": "EUR"}),
                client_reference: None,
                idempotency_key: None,
                correlation_id: None,
                created_at: Utc::now(),
            });
        });
        let ledger = state.ledger();
        assert_eq!(ledger.charged_minor, 100);
        assert_eq!(ledger.refunded_minor, 100);
        assert_eq!(ledger.payments.len(), 2);
    }
}
