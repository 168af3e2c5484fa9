//! Operator routes, metrics, the OpenAPI document and the fallbacks.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use domain::values::Role;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Replay a dead-lettered job (operator). Available once the workers land.
#[utoipa::path(post, path = "/v1/jobs/{id}/replay", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 401), (status = 403), (status = 501, description = "the workers are not built yet")),
    security(("bearer" = [])))]
pub async fn replay_job(caller: Caller, Path(_id): Path<String>) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator], "replay jobs")?;
    Err(ApiError::NotImplemented(
        "job replay arrives with the workers".into(),
    ))
}

/// Rebuild a projection (operator). Available once the projector lands.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path)),
    responses((status = 401), (status = 403), (status = 501, description = "the projector is not built yet")),
    security(("bearer" = [])))]
pub async fn rebuild_projection(
    caller: Caller,
    Path(_name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator], "rebuild projections")?;
    Err(ApiError::NotImplemented(
        "projection rebuilds arrive with the projector".into(),
    ))
}

/// Prometheus metrics.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub async fn openapi_json(api: Arc<utoipa::openapi::OpenApi>) -> Response {
    axum::Json(api.as_ref().clone()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not accept that method".into())
}
