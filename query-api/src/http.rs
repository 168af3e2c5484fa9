//! The HTTP side: `POST /graphql` (queries), `GET /graphql` (GraphiQL, or a WebSocket upgrade for
//! subscriptions), `/healthz`, `/readyz`, `/metrics`, and the bearer token of each request.

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::{Data, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::auth::{Correlation, Viewer};
use crate::QuerySchema;

/// Largest request body accepted (a query with its variables).
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
struct HttpState {
    schema: QuerySchema,
    tokens: service_kit::Tokens,
}

/// The query API's router: `/graphql`, `/healthz`, `/readyz`, `/metrics`.
pub fn app(schema: QuerySchema, tokens: service_kit::Tokens) -> Router {
    Router::new()
        .route("/graphql", get(graphiql_or_websocket).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(HttpState { schema, tokens })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let viewer = Viewer::from_header(&state.tokens, authorization(&headers));
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
    response.into()
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
    let header_viewer =
        authorization(&parts.headers).map(|h| Viewer::from_header(&state.tokens, Some(h)));
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
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload: serde_json::Value| async move {
                    // A browser cannot set headers on a WebSocket: the token comes in the
                    // connection_init payload ({"Authorization": "Bearer …"}) unless the upgrade had one.
                    let from_payload = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_owned));
                    let viewer = match (header_viewer, from_payload) {
                        (_, Some(value)) => Viewer::from_header(&tokens, Some(&value)),
                        (Some(viewer), None) => viewer,
                        (None, None) => Viewer::from_header(&tokens, None),
                    };
                    let mut data = Data::default();
                    data.insert(viewer);
                    Ok(data)
                })
                .serve()
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
