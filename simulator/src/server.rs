//! The routes and the server: the API key check, the faults applied before any work, the control routes.

use std::future::Future;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{chance, Faults, SimConfig};
use crate::error::Result;
use crate::state::SimState;
use crate::{payments, reservations};

/// Set to `true` on a payment or refund answer that replays an existing entry.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The simulator's routes.
pub fn app(state: SimState) -> Router {
    let v1 = Router::new()
        .merge(reservations::routes())
        .merge(payments::routes())
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
pub(crate) async fn inject_front_faults(state: &SimState) -> Option<Response> {
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
pub(crate) async fn maybe_hold(state: &SimState) {
    let config = state.config();
    if chance(config.faults.timeout_after_success) {
        state.with_inner(|i| i.stats.held_timeouts += 1);
        tokio::time::sleep(config.timeout_hold).await;
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(crate) fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn unprocessable(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A non-empty header value.
pub(crate) fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Marks an answer as the replay of an existing entry.
pub(crate) fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
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
    state.set_faults(faults);
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
