//! Operator routes, metrics, the OpenAPI document and the fallbacks.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::values::Role;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// A replayed job (`POST /v1/jobs/{id}/replay`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedJob {
    pub id: i64,
    /// The handler that runs it, e.g. `partner.reserve`.
    pub kind: String,
    pub queue: String,
    /// `queued`: it runs again as soon as a worker of its queue is free.
    pub state: String,
    /// Attempts it now has before it is dead again.
    pub max_attempts: i32,
    /// How often an operator replayed it, this time included.
    pub replays: i32,
    pub last_error: Option<String>,
}

/// Put a failed or dead job back in its queue with a fresh set of attempts (operator). Every earlier
/// attempt stays in the job's execution log.
#[utoipa::path(post, path = "/v1/jobs/{id}/replay", tag = "operations",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 200, body = ReplayedJob, description = "queued again"),
        (status = 400, description = "the id is not a number"),
        (status = 401), (status = 403),
        (status = 404, description = "no such job"),
        (status = 409, description = "the job is not failed or dead")),
    security(("bearer" = [])))]
pub async fn replay_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReplayedJob>, ApiError> {
    caller.require(&[Role::Operator], "replay jobs")?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("job id `{id}` is not a number")))?;
    let job = workers::jobs::replay(state.store.pool(), id)
        .await
        .map_err(|e| match e {
            workers::Error::JobNotFound(_) => ApiError::NotFound(e.to_string()),
            workers::Error::NotReplayable { .. } => ApiError::Conflict {
                code: "not_replayable",
                detail: e.to_string(),
                extra: serde_json::Map::new(),
            },
            workers::Error::Database(e) => store::Error::from(e).into(),
            workers::Error::Store(e) => e.into(),
            other => ApiError::internal(other),
        })?;
    tracing::info!(job_id = id, kind = %job.kind, operator = %caller.0.subject, "job replayed");
    Ok(Json(ReplayedJob {
        id: job.id,
        kind: job.kind,
        queue: job.queue,
        state: job.state,
        max_attempts: job.max_attempts,
        replays: job.replays,
        last_error: job.last_error,
    }))
}

/// Where a projection's rebuild stands (`GET`/`POST /v1/projections/{name}/rebuild`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildView {
    /// The projection.
    pub name: String,
    /// `running`, `swapped` (done: the rebuilt tables serve), `failed`, or `abandoned` (its process died;
    /// the live tables are unchanged).
    pub status: String,
    /// Global position of the last event applied to the new tables.
    pub position: i64,
    /// The head of the log when the position was recorded: progress is `position` / `head_position`.
    pub head_position: i64,
    /// Events applied to the new tables so far.
    pub events_applied: i64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl From<projector::RebuildStatus> for RebuildView {
    fn from(s: projector::RebuildStatus) -> Self {
        Self {
            name: s.name,
            status: s.status,
            position: s.position,
            head_position: s.head_position,
            events_applied: s.events_applied,
            started_at: s.started_at,
            updated_at: s.updated_at,
            finished_at: s.finished_at,
            error: s.error,
        }
    }
}

/// One projection's position and lag (`GET /v1/projections`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    pub name: String,
    /// Global position of the last event applied.
    pub position: i64,
    /// Highest global position of a committed event.
    pub head_position: i64,
    /// Committed events not applied yet.
    pub lag_events: i64,
    /// Age of the oldest event not applied yet, in seconds.
    pub lag_seconds: f64,
    /// The projector instance leading this projection, if one runs.
    pub leader: Option<String>,
}

fn projector_error(e: projector::Error) -> ApiError {
    match e {
        projector::Error::UnknownProjection(_) => ApiError::NotFound(e.to_string()),
        projector::Error::RebuildInProgress(_) => ApiError::Conflict {
            code: "rebuild_in_progress",
            detail: e.to_string(),
            extra: serde_json::Map::new(),
        },
        projector::Error::Store(e) => e.into(),
        projector::Error::Database(e) => store::Error::from(e).into(),
        other => ApiError::internal(other),
    }
}

async fn rebuild_view(state: &AppState, name: &str) -> Result<Option<RebuildView>, ApiError> {
    Ok(projector::rebuild_status(state.store.pool(), name)
        .await
        .map_err(projector_error)?
        .map(RebuildView::from))
}

/// Rebuild a projection from position zero into fresh tables, swapped in atomically when caught up
/// (operator). Answers at once with 202; follow the progress at the `Location`.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path, description = "bookings, visits, status_board or timeline")),
    responses(
        (status = 202, body = RebuildView, description = "the rebuild runs; progress at the Location"),
        (status = 401), (status = 403),
        (status = 404, description = "no such projection"),
        (status = 409, description = "a rebuild of this projection is already running")),
    security(("bearer" = [])))]
pub async fn rebuild_projection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator], "rebuild projections")?;
    projector::start_rebuild(
        state.store.pool().clone(),
        &name,
        projector::RebuildConfig::default(),
    )
    .await
    .map_err(projector_error)?;
    tracing::info!(projection = %name, operator = %caller.0.subject, "projection rebuild started");
    let view = rebuild_view(&state, &name).await?;
    let location = format!("/v1/projections/{name}/rebuild");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// The last rebuild of a projection: status and progress (operator, support).
#[utoipa::path(get, path = "/v1/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path)),
    responses((status = 200, body = RebuildView), (status = 401), (status = 403),
        (status = 404, description = "no such projection, or never rebuilt")),
    security(("bearer" = [])))]
pub async fn rebuild_progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RebuildView>, ApiError> {
    caller.require(&[Role::Operator, Role::Support], "see projection rebuilds")?;
    rebuild_view(&state, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("projection {name} was never rebuilt")))
}

/// Each projection's position, the head of the log and the lag (operator, support).
#[utoipa::path(get, path = "/v1/projections", tag = "operations",
    responses((status = 200, body = [ProjectionView]), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn projections(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ProjectionView>>, ApiError> {
    caller.require(&[Role::Operator, Role::Support], "see projections")?;
    let statuses = projector::status(state.store.pool())
        .await
        .map_err(projector_error)?;
    Ok(Json(
        statuses
            .into_iter()
            .map(|s| ProjectionView {
                name: s.name,
                position: s.position,
                head_position: s.head_position,
                lag_events: s.lag_events,
                lag_seconds: s.lag_seconds,
                leader: s.leader,
            })
            .collect(),
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

pub async fn openapi_json(api: Arc<serde_json::Value>) -> Response {
    axum::Json(api.as_ref()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not accept that method".into())
}
