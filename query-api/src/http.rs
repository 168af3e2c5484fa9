//! The HTTP side: `POST /graphql` (queries), `GET /graphql` (GraphiQL, or a WebSocket upgrade for
//! subscriptions), `/healthz`, `/readyz`, `/metrics`, and the bearer token of each request.

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::{Data, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State, WebSocketUpgrade,
};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use service_kit::{Charge, Limits};
use tower_http::trace::TraceLayer;

use crate::auth::{Correlation, Viewer};
use crate::QuerySchema;

/// Largest request body accepted (a query with its variables).
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
struct HttpState {
    schema: QuerySchema,
    tokens: service_kit::Tokens,
    limits: Arc<Limits>,
}

/// The query API's router: `/graphql`, `/healthz`, `/readyz`, `/metrics`. Every query and subscription
/// is charged to its verified caller, or to its client address without a valid token (`limits`).
pub fn app(schema: QuerySchema, tokens: service_kit::Tokens, limits: Arc<Limits>) -> Router {
    Router::new()
        .route("/graphql", get(graphiql_or_websocket).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(HttpState {
            schema,
            tokens,
            limits,
        })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The client's TCP address (`ConnectInfo`), or unspecified without it.
fn client_address(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Charges a request to `viewer` (verified) or the client address; a spent budget gives the refusal
/// to send: HTTP 429 with `Retry-After` and a GraphQL error `RATE_LIMITED`.
fn refused(limits: &Limits, viewer: Option<&Viewer>, extensions: &Extensions) -> Option<Response> {
    let charged = match viewer {
        Some(Viewer::Known(actor)) => limits.check(Charge::Verified(actor)),
        _ => limits.check(Charge::Address(client_address(extensions))),
    };
    charged.err().map(|retry_after| {
        let body = serde_json::json!({"errors": [{
            "message": format!("rate limit exceeded; retry in {retry_after} s"),
            "extensions": {"code": "RATE_LIMITED"}
        }]});
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(body),
        )
            .into_response()
    })
}

async fn graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    extensions: Extensions,
    request: GraphQLRequest,
) -> Response {
    let viewer = Viewer::from_header(&state.tokens, authorization(&headers));
    if let Some(refusal) = refused(&state.limits, Some(&viewer), &extensions) {
        return refusal;
    }
    let mut request = request.into_inner().data(viewer);
    if let Some(id) = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        request = request.data(Correlation(id.to_owned()));
    }
    let mut response = state.schema.execute(request).await;
    for error in &mut response.errors {
        add_code(error);
    }
    metrics::counter!("trailbook_graphql_requests_total",
        "outcome" => if response.errors.is_empty() { "ok" } else { "error" })
    .increment(1);
    GraphQLResponse::from(response).into_response()
}

/// Gives every error a code in `extensions.code`: ours set it already; the parser's and validator's
/// (depth, complexity, unknown fields) get one here.
fn add_code(error: &mut ServerError) {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some());
    if has_code {
        return;
    }
    let message = error.message.to_ascii_lowercase();
    let code = if message.contains("nested too deep") {
        "QUERY_TOO_DEEP"
    } else if message.contains("too complex") {
        "QUERY_TOO_COMPLEX"
    } else if error.message.trim_start().starts_with("-->") {
        // pest's syntax errors start with the position: ` --> 1:12`
        "GRAPHQL_PARSE_FAILED"
    } else if error.path.is_empty() {
        "GRAPHQL_VALIDATION_FAILED"
    } else {
        "BAD_USER_INPUT"
    };
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
}

async fn graphiql_or_websocket(State(state): State<HttpState>, request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .title("trailbook")
                .finish(),
        )
        .into_response();
    }
    let (mut parts, _body) = request.into_parts();
    let header_value = authorization(&parts.headers).map(str::to_owned);
    let header_viewer = header_value
        .as_deref()
        .map(|h| Viewer::from_header(&state.tokens, Some(h)));
    if let Some(refusal) = refused(&state.limits, header_viewer.as_ref(), &parts.extensions) {
        return refusal;
    }
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let schema = state.schema.clone();
    let tokens = state.tokens.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| async move {
            // The connection lives no longer than its token: `expires` learns the token's expiry
            // at connection_init, and the connection is closed then.
            let (expires_at, expires) = tokio::sync::oneshot::channel::<DateTime<Utc>>();
            let serve = GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload: serde_json::Value| async move {
                    // A browser cannot set headers on a WebSocket: the token comes in the
                    // connection_init payload ({"Authorization": "Bearer …"}) unless the upgrade had one.
                    let from_payload = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_owned));
                    let used = from_payload.as_deref().or(header_value.as_deref());
                    if let Some((_, at)) = used.and_then(|v| tokens.actor_until(v).ok()) {
                        let _ = expires_at.send(at);
                    }
                    let viewer = match (header_viewer, from_payload) {
                        (_, Some(value)) => Viewer::from_header(&tokens, Some(&value)),
                        (Some(viewer), None) => viewer,
                        (None, None) => Viewer::from_header(&tokens, None),
                    };
                    let mut data = Data::default();
                    data.insert(viewer);
                    Ok(data)
                })
                .serve();
            let expired = async move {
                match expires.await {
                    Ok(at) => {
                        let left = (at - Utc::now()).to_std().unwrap_or_default();
                        tokio::time::sleep(left).await;
                    }
                    // No valid token: nothing to wait for (its subscriptions are refused anyway).
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = serve => {}
                () = expired => {
                    metrics::counter!("trailbook_subscriptions_expired_total").increment(1);
                    tracing::debug!("closed a WebSocket connection whose token expired");
                }
            }
        })
}

/// Prometheus metrics of this process (the same registry as the command API's `/metrics`).
async fn metrics() -> Response {
    let body = service_kit::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let Ok(query_state) = state.schema.data::<crate::QueryState>().ok_or(()) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    match sqlx::query("select 1")
        .execute(query_state.store.pool())
        .await
    {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response(),
    }
}
