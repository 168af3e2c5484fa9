//! What the routes need to know about an aggregate, and the paths every aggregate route shares.
//!
//! A route handler takes one of three request extractors ([`CommandRequest`], [`CreateRequest`],
//! [`ReadRequest`]: who asks, which id, which key or version), states which roles may do it
//! ([`CommandRequest::allow`] and the like, the only way to reach the next step), builds its command from
//! the body, and hands it to the shared path: [`Allowed::run`] (a command on an existing aggregate),
//! [`Allowed::create`] (an idempotent create, in `idempotency`) or [`Allowed::read`]. The answers are
//! [`Resource::Accepted`], the types the OpenAPI document shows.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::booking::BookingError;
use domain::values::Role;
use domain::visit::VisitError;
use domain::{Booking, Visit};
use serde::Serialize;
use store::ExecuteOptions;

use crate::auth::Caller;
use crate::bookings::BookingAccepted;
use crate::error::{ApiError, DomainError};
use crate::extract::{CorrelationId, IdempotencyKey, IfMatch};
use crate::idempotency::{self, Create};
use crate::visits::VisitAccepted;
use crate::{context, AppState};

/// An aggregate served over REST.
pub trait Resource: store::WriteRules<Services = ()> + Serialize + utoipa::ToSchema
where
    Self::Command: Clone,
    Self::Error: DomainError,
{
    /// `booking` or `visit`: the path segment (plural), the `<kind>_id` answer field, messages.
    const KIND: &'static str;
    /// The body of every answer to a command on it (`{"<kind>_id", "status", "version", "position"}`).
    type Accepted: Serialize + Send + 'static;
    /// The client who owns it.
    fn owner(&self) -> &str;
    /// Whether a create failed only because the aggregate exists.
    fn already_exists(error: &Self::Error) -> bool;
    /// The answer to a command that left it in this state.
    fn answer(&self, id: &str, version: u64, position: Option<i64>) -> Self::Accepted;
}

/// The body of `GET /v1/<kind>s/{id}`: the aggregate's state, its version and the global position of
/// its last event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Read<A: utoipa::ToSchema> {
    #[serde(flatten)]
    pub state: A,
    /// The version (also the `ETag`).
    pub version: u64,
    /// Global log position of its last event, for read-your-writes (`minPosition`).
    pub position: Option<i64>,
}

impl Resource for Booking {
    const KIND: &'static str = "booking";
    type Accepted = BookingAccepted;
    fn owner(&self) -> &str {
        &self.owner
    }
    fn already_exists(error: &BookingError) -> bool {
        matches!(error, BookingError::AlreadyExists)
    }
    fn answer(&self, id: &str, version: u64, position: Option<i64>) -> BookingAccepted {
        BookingAccepted {
            booking_id: id.to_string(),
            status: self.status.as_str().to_string(),
            version,
            position,
        }
    }
}

impl Resource for Visit {
    const KIND: &'static str = "visit";
    type Accepted = VisitAccepted;
    fn owner(&self) -> &str {
        &self.owner
    }
    fn already_exists(error: &VisitError) -> bool {
        matches!(error, VisitError::AlreadyExists)
    }
    fn answer(&self, id: &str, version: u64, position: Option<i64>) -> VisitAccepted {
        VisitAccepted {
            visit_id: id.to_string(),
            status: self.status.as_str().to_string(),
            version,
            position,
        }
    }
}

/// A request for a command on an existing aggregate: who asks, the `{id}` of the path, `If-Match`, and
/// the optional `Idempotency-Key`.
pub struct CommandRequest {
    state: AppState,
    caller: Caller,
    correlation: String,
    id: String,
    if_match: IfMatch,
    key: Option<String>,
}

/// A request to create an aggregate: who asks, with which `Idempotency-Key`.
pub struct CreateRequest {
    state: AppState,
    caller: Caller,
    correlation: String,
    key: String,
}

/// A request to read an aggregate: who asks, the `{id}` of the path, `If-None-Match`.
pub struct ReadRequest {
    state: AppState,
    caller: Caller,
    id: String,
    if_none_match: Option<HeaderValue>,
}

/// A request whose caller has one of the roles its route allows: the only way to the shared paths.
pub struct Allowed<R>(R);

/// The caller, extracted first (401 before anything else is looked at), and the path's `{id}`.
async fn caller_and_id(parts: &mut Parts, state: &AppState) -> Result<(Caller, String), ApiError> {
    let caller = Caller::from_request_parts(parts, state).await?;
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest {
            detail: e.body_text(),
            field: Some("id".into()),
        })?;
    Ok((caller, id))
}

/// The request's correlation id, as the middleware chose it.
async fn correlation(parts: &mut Parts, state: &AppState) -> String {
    match CorrelationId::from_request_parts(parts, state).await {
        Ok(CorrelationId(id)) => id,
        Err(never) => match never {},
    }
}

impl FromRequestParts<AppState> for CommandRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (caller, id) = caller_and_id(parts, state).await?;
        let if_match = IfMatch::from_request_parts(parts, state).await?;
        let key = match parts.headers.contains_key("idempotency-key") {
            true => Some(IdempotencyKey::from_request_parts(parts, state).await?.0),
            false => None,
        };
        Ok(Self {
            state: state.clone(),
            caller,
            correlation: correlation(parts, state).await,
            id,
            if_match,
            key,
        })
    }
}

impl FromRequestParts<AppState> for CreateRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let IdempotencyKey(key) = IdempotencyKey::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            caller,
            correlation: correlation(parts, state).await,
            key,
        })
    }
}

impl FromRequestParts<AppState> for ReadRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (caller, id) = caller_and_id(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            caller,
            id,
            if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned(),
        })
    }
}

/// Checks the caller's role: `action` completes "only … may <action>" in the 403.
macro_rules! allow {
    ($($request:ty),*) => {$(
        impl $request {
            /// Lets the request go on if the caller has one of `roles`; else 403.
            pub fn allow(self, roles: &[Role], action: &str) -> Result<Allowed<Self>, ApiError> {
                self.caller.require(roles, action)?;
                Ok(Allowed(self))
            }
        }
    )*};
}
allow!(CommandRequest, CreateRequest, ReadRequest);

impl Allowed<CommandRequest> {
    /// The aggregate id of the path.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Runs `command` (built from `body`) on the aggregate if the caller may access it (others' ids
    /// answer 404), with `If-Match`, and answers 200 with [`Resource::Accepted`] and the new version as
    /// `ETag`. With an `Idempotency-Key`, the same key and request again get the first answer back
    /// (see [`idempotency::Keyed`]). The aggregate's write rules (e.g. the booking's slot claim) run
    /// inside the store, whatever the command.
    pub async fn run<A, B>(
        self,
        name: &'static str,
        body: &B,
        command: A::Command,
    ) -> Result<Response, ApiError>
    where
        A: Resource,
        A::Command: Clone,
        A::Error: DomainError,
        B: Serialize,
    {
        let CommandRequest {
            state,
            caller,
            correlation,
            id,
            if_match,
            key,
        } = self.0;
        let keyed = key
            .map(|key| idempotency::Keyed::new(&caller, key, name, &id, body))
            .transpose()?;
        if let Some(keyed) = &keyed {
            if let Some(answer) = keyed.answered(state.store.pool()).await? {
                return Ok(answer);
            }
        }
        let mut ctx = context(&caller, correlation, name);
        ctx.idempotency_key = keyed.as_ref().map(|k| k.key().to_string());
        let options = ExecuteOptions {
            expected_version: if_match.0,
            ..ExecuteOptions::default()
        };
        let record = keyed
            .as_ref()
            .map(|k| k.record::<A>(state.config.idempotency_ttl, &id));
        let result = state
            .store
            .execute::<A>(&id, command, &(), &ctx, options)
            .visible_if(|a: &A| caller.may_access(a.owner()))
            .with_hook(&record)
            .await;
        let outcome = if result.is_ok() {
            "accepted"
        } else {
            "refused"
        };
        metrics::counter!("trailbook_commands_total", "command" => name, "outcome" => outcome)
            .increment(1);
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                // A concurrent request with the same key may have committed first: its answer is ours.
                if let Some(keyed) = &keyed {
                    if let Some(answer) = keyed.answered(state.store.pool()).await? {
                        return Ok(answer);
                    }
                }
                let error = ApiError::from(e).for_aggregate(A::KIND, &id);
                return Err(for_caller::<A>(&state, &caller, error).await);
            }
        };
        let etag = format!("\"{}\"", done.version);
        Ok((
            [(header::ETAG, etag)],
            axum::Json(done.state.answer(&id, done.version, done.position)),
        )
            .into_response())
    }
}

impl Allowed<CreateRequest> {
    /// The caller's settings: e.g. the configured partners.
    pub fn state(&self) -> &AppState {
        &self.0.state
    }

    /// Creates an aggregate once per (caller, key) with the command `command(body, id, owner)` builds;
    /// the same key and body give the same answer (see [`idempotency::create`]).
    pub async fn create<A, B>(
        self,
        body: B,
        command: impl FnOnce(B, &str, &str) -> Result<A::Command, ApiError>,
    ) -> Result<Response, ApiError>
    where
        A: Resource,
        A::Command: Clone,
        A::Error: DomainError,
        B: Serialize,
    {
        let CreateRequest {
            state,
            caller,
            correlation,
            key,
        } = self.0;
        let route = format!("POST /v1/{}s", A::KIND);
        let request = Create::new(&caller, correlation, key, A::KIND, &route, &body)?;
        let command = command(body, &request.id, caller.subject())?;
        match idempotency::create::<A>(&state, request, command).await {
            Ok(response) => Ok(response),
            Err(error) => Err(for_caller::<A>(&state, &caller, error).await),
        }
    }
}

/// `error` as `caller` may see it: a conflict naming another aggregate of kind `A` (`conflicting_id`: the
/// booking that holds the slot) names it only to a caller who may access that aggregate (its owner, an
/// operator). Anyone else learns only that the slot is taken, just as another client's id answers 404
/// everywhere else.
async fn for_caller<A>(state: &AppState, caller: &Caller, error: ApiError) -> ApiError
where
    A: Resource,
    A::Command: Clone,
    A::Error: DomainError,
{
    let Some(other) = error.conflicting_id() else {
        return error;
    };
    let visible = match state.store.load::<A>(other).await {
        Ok(loaded) => loaded.version > 0 && caller.may_access(loaded.state.owner()),
        // Unknown is not visible: the answer keeps only what the caller may see in any case.
        Err(_) => false,
    };
    if visible {
        error
    } else {
        error.without_conflicting_id()
    }
}

impl Allowed<ReadRequest> {
    /// The aggregate's current state folded from the event store (strongly consistent), if the caller may
    /// access it (else 404), with `id`, `version` and `position`, the version as `ETag`, and 304 for a
    /// matching `If-None-Match`.
    pub async fn read<A>(self) -> Result<Response, ApiError>
    where
        A: Resource,
        A::Command: Clone,
        A::Error: DomainError,
    {
        let ReadRequest {
            state,
            caller,
            id,
            if_none_match,
        } = self.0;
        let loaded = state.store.load::<A>(&id).await?;
        if loaded.version == 0 || !caller.may_access(loaded.state.owner()) {
            return Err(ApiError::NotFound(format!("no {} with id `{id}`", A::KIND)));
        }
        let etag = format!("\"{}\"", loaded.version);
        if if_none_match
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == etag)
        {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
        }
        let body = Read {
            state: loaded.state,
            version: loaded.version,
            position: loaded.position,
        };
        Ok(([(header::ETAG, etag)], axum::Json(body)).into_response())
    }
}
