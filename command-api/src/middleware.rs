//! Cross-cutting layers: correlation ids, request metrics, rate limiting per verified caller or client
//! address, and the limit on requests in flight.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::Charge;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::{CorrelationId, CORRELATION_HEADER};
use crate::AppState;

/// Picks the correlation id (given or new), makes it visible to handlers and returns it on the response.
pub async fn correlation(mut request: Request, next: Next) -> Response {
    let id = CorrelationId::from_headers(request.headers());
    request.extensions_mut().insert(id.clone());
    // `instrument`, never `span.enter()` across the `.await`: an entered guard stays entered on the
    // worker thread while the request is suspended, so other tasks there (the commit notifier, sqlx
    // streams) run "inside" it and clone it after it closed: tracing-subscriber panics, and a panic
    // inside the panic hook's span handling overflowed the stack and killed `serve` under load
    // (found by the benchmark's lag run).
    let span = tracing::info_span!("request", correlation_id = %id.0);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Counts requests and records their latency by route, method and status.
pub async fn metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("trailbook_http_requests_total", &labels).increment(1);
    metrics::histogram!("trailbook_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The client's address: the TCP peer (`ConnectInfo`), or unspecified when the server runs without it
/// (in-process tests). Proxies' `X-Forwarded-For` is not trusted: any client can write it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        Self(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// Routes every limit lets through: probes and scrapes must answer when the server is busiest.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
}

/// The bound on requests handled at once.
#[derive(Debug)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
}

impl InFlight {
    /// At most `limit` requests at once, a request beyond them waiting up to `wait` for a slot. `None`
    /// when `limit` is 0 (no bound).
    pub fn new(limit: usize, wait: Duration) -> Option<Arc<Self>> {
        (limit > 0).then(|| {
            Arc::new(Self {
                slots: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
                limit,
                wait,
            })
        })
    }
}

/// Handles at most `max_in_flight` requests at once; one beyond them waits up to `in_flight_wait` for a
/// slot (before its body is read), then gets 503 `overloaded` with `Retry-After: 1`.
///
/// Without a bound, a server past its capacity takes every request it is sent: each waits for a
/// database connection holding its body, its parsed command and its handler's state, so memory and
/// latency grow with the number of clients (the benchmark offering 3,000 creates/s with 1,024 in
/// flight: lag p99 1.7 s without the bound, 0.3 s with it, at the same throughput). A request waiting
/// here holds only its headers. Commands are safe to retry with their `Idempotency-Key`.
pub async fn in_flight(
    State(bound): State<Option<Arc<InFlight>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(bound) = bound else {
        return next.run(request).await;
    };
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let slot = match bound.slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) => tokio::time::timeout(bound.wait, bound.slots.clone().acquire_owned())
            .await
            .ok()
            // Err: closed, which never happens (the semaphore is never closed).
            .and_then(Result::ok),
    };
    match slot {
        Some(_slot) => next.run(request).await,
        None => {
            metrics::counter!("trailbook_http_overloaded_total").increment(1);
            ApiError::Overloaded { limit: bound.limit }.into_response()
        }
    }
}

/// Routes that authenticate by signature (partner callbacks, payment webhooks): their handlers charge
/// the verified partner, or the address for a bad signature ([`charge_signed`]).
fn signed(path: &str) -> bool {
    path.starts_with("/v1/partner/") || path.starts_with("/v1/payments/")
}

/// Answers 429 with `Retry-After` once the caller's budget is spent (see `service_kit::limits`): a
/// verified token's subject, else the client address. Health and metrics routes are exempt; signed
/// routes are charged by their handlers once the signature is checked.
pub async fn rate_limit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if exempt(path) || signed(path) {
        return next.run(request).await;
    }
    let actor = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| state.tokens.actor(h).ok());
    let charged = match &actor {
        Some(actor) => state.limits.check(Charge::Verified(actor)),
        None => state
            .limits
            .check(Charge::Address(ClientAddress::of(request.extensions()).0)),
    };
    match charged {
        Ok(()) => {
            // Handed to the `Caller` extractor, which then need not verify the token again.
            if let Some(actor) = actor {
                request.extensions_mut().insert(crate::auth::Caller(actor));
            }
            next.run(request).await
        }
        Err(retry_after) => ApiError::RateLimited { retry_after }.into_response(),
    }
}

/// Charges a signed request: the partner whose signature `verified` holds, or, when it failed, the
/// client address, whose spent budget turns the 401 into a 429.
pub fn charge_signed<T>(
    state: &AppState,
    address: ClientAddress,
    partner: &str,
    verified: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let charged = match &verified {
        Ok(_) => state.limits.check(Charge::Partner(partner)),
        Err(_) => state.limits.check(Charge::Address(address.0)),
    };
    match charged {
        Ok(()) => verified,
        Err(retry_after) => Err(ApiError::RateLimited { retry_after }),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// While a request waits inside a handler, its span is not the current span of the thread that
    /// polled it: other tasks on that thread must not run inside it.
    #[test]
    fn a_suspended_request_leaves_no_span_entered_on_its_thread() {
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        let (_release, held) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/", held_until(held))
            .layer(axum::middleware::from_fn(correlation));
        let request = get_request("/");
        let mut call = pin!(app.oneshot(request));
        let mut cx = Context::from_waker(Waker::noop());

        assert!(matches!(call.as_mut().poll(&mut cx), Poll::Pending));

        let current = tracing::Span::current();
        assert!(
            current.metadata().is_none(),
            "the request span is still entered: {:?}",
            current.metadata().map(|m| m.name())
        );
    }

    /// A GET route whose first request waits until `held` is released (or dropped); later ones answer
    /// at once.
    fn held_until(held: tokio::sync::oneshot::Receiver<()>) -> axum::routing::MethodRouter {
        let held = Arc::new(std::sync::Mutex::new(Some(held)));
        get(move || {
            let held = held.lock().ok().and_then(|mut h| h.take());
            async move {
                if let Some(held) = held {
                    let _ = held.await;
                }
                "done"
            }
        })
    }

    fn get_request(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap_or_default()
    }

    /// With one slot taken, a second request waits `in_flight_wait`, then gets 503 `overloaded` with
    /// Retry-After; probes pass; once the slot is free, requests pass again.
    #[tokio::test]
    async fn requests_beyond_the_bound_wait_then_get_503() {
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let bound = InFlight::new(1, Duration::from_millis(50));
        let app = Router::new()
            .route("/slow", held_until(held))
            .route("/fast", get(|| async { "fast" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(bound, in_flight));

        let slow = tokio::spawn(app.clone().oneshot(get_request("/slow")));
        // Let the slow request take the slot.
        tokio::time::sleep(Duration::from_millis(20)).await;

        let started = Instant::now();
        let refused = app.clone().oneshot(get_request("/fast")).await;
        let refused = refused.unwrap_or_else(|never| match never {});
        assert_eq!(
            refused.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "refused before waiting"
        );
        assert_eq!(
            refused
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(problem["code"], "overloaded", "{problem}");

        let probe = app.clone().oneshot(get_request("/healthz")).await;
        let probe = probe.unwrap_or_else(|never| match never {});
        assert_eq!(probe.status(), axum::http::StatusCode::OK);

        let _ = release.send(());
        let slow = slow.await.ok().and_then(Result::ok).map(|r| r.status());
        assert_eq!(slow, Some(axum::http::StatusCode::OK));
        let after = app.oneshot(get_request("/fast")).await;
        let after = after.unwrap_or_else(|never| match never {});
        assert_eq!(after.status(), axum::http::StatusCode::OK);
    }
}
