//! Every error of the command API becomes an RFC 7807 `application/problem+json` response here, and only
//! here. Server errors get a generic body with an error id; their cause chain is logged once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use store::CommandError;

/// The member of a 409 naming the other aggregate involved (the booking holding a slot). Only callers who
/// may access that aggregate see it (`resource::for_caller`).
pub const CONFLICTING_ID: &str = "conflicting_id";

/// An error answer of the command API. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (syntax, wrong type, unknown field, missing header).
    #[error("{detail}")]
    BadRequest {
        detail: String,
        field: Option<String>,
    },
    /// 401: no token, or an invalid or expired one; or a bad callback signature.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such aggregate (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// 409: a conflict the caller may resolve by reloading or choosing differently.
    #[error("{detail}")]
    Conflict {
        code: &'static str,
        detail: String,
        extra: Map<String, Value>,
    },
    /// 405: the route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 412: `If-Match` names a version that is no longer current.
    #[error("expected version {expected} but the current version is {current}")]
    PreconditionFailed { expected: u64, current: u64 },
    /// 413: the body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but refused by a rule (invalid value, illegal transition, reused key).
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    /// 429: too many requests for this token; retry after the given seconds.
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 503: the server already handles as many requests as it is configured to; retry shortly.
    #[error("the server is at its limit of {limit} requests in flight; retry in a second")]
    Overloaded { limit: usize },
    /// 503: the database is unreachable or overloaded; retry later.
    #[error("the database is unavailable; retry later")]
    Unavailable,
    /// 500: a bug or an unexpected failure; details only in the log.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            field: None,
        }
    }

    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            code: "invalid_value",
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    /// The other aggregate a 409 names (`conflicting_id`: the booking holding a slot), if any.
    pub(crate) fn conflicting_id(&self) -> Option<&str> {
        match self {
            Self::Conflict { extra, .. } => extra.get(CONFLICTING_ID).and_then(Value::as_str),
            _ => None,
        }
    }

    /// The same answer without naming the other aggregate (for a caller who may not see it).
    pub(crate) fn without_conflicting_id(mut self) -> Self {
        if let Self::Conflict { extra, .. } = &mut self {
            extra.remove(CONFLICTING_ID);
        }
        self
    }

    /// Names the aggregate in a 404, whether it does not exist or is not the caller's (same answer).
    pub fn for_aggregate(self, kind: &str, id: &str) -> Self {
        match self {
            Self::NotFound(_) => Self::NotFound(format!("no {kind} with id `{id}`")),
            other => other,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict { code, .. } | Self::Unprocessable { code, .. } => code,
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PreconditionFailed { .. } => "stale_version",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::Unavailable => "database_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// The body of every error answer (RFC 7807 `application/problem+json`), as sent: the OpenAPI document's
/// `Problem` schema is generated from this type.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:trailbook:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// A stable machine-readable code (`invalid_value`, `slot_taken`, `rule_violated`, …).
    pub code: &'static str,
    /// The body field or header at fault (400, 422).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The aggregate's current version (409 `concurrent_update`, 412).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// The booking holding the slot (409 `slot_taken`), only to a caller who may see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicting_id: Option<String>,
    /// The id to quote when reporting a 500 (its cause is in the log under it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let mut problem = Problem {
            kind: format!("urn:trailbook:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            code,
            field: None,
            current_version: None,
            conflicting_id: None,
            error_id: None,
        };
        let mut headers = Vec::new();
        match &self {
            Self::Internal(source) => {
                let error_id = uuid::Uuid::now_v7().to_string();
                tracing::error!(%error_id, error = %chain(source.as_ref()), "request failed");
                problem.detail =
                    "an internal error occurred; quote the error id when reporting it".into();
                problem.error_id = Some(error_id);
            }
            Self::BadRequest { field, .. } | Self::Unprocessable { field, .. } => {
                problem.field.clone_from(field);
            }
            Self::Conflict { extra, .. } => {
                problem.current_version = extra.get("current_version").and_then(Value::as_u64);
                problem.conflicting_id = extra
                    .get(CONFLICTING_ID)
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            Self::PreconditionFailed { current, .. } => problem.current_version = Some(*current),
            Self::RateLimited { retry_after } => {
                headers.push((header::RETRY_AFTER, retry_after.to_string()));
            }
            Self::Overloaded { .. } => headers.push((header::RETRY_AFTER, "1".to_string())),
            Self::Unavailable => headers.push((header::RETRY_AFTER, "5".to_string())),
            Self::Unauthorized(_) => {
                headers.push((header::WWW_AUTHENTICATE, "Bearer".to_string()));
            }
            _ => {}
        }
        let mut response = (status, axum::Json(problem)).into_response();
        let response_headers = response.headers_mut();
        response_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response_headers.insert(name, value);
            }
        }
        response
    }
}

pub use service_kit::chain;

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            Self::Unavailable
        } else if e.is_unstorable_text() {
            Self::Unprocessable {
                code: "invalid_value",
                detail: "text must not contain the NUL character (\\u0000)".into(),
                field: None,
            }
        } else {
            Self::internal(e)
        }
    }
}

/// How a domain error maps to HTTP (implemented by each aggregate's error type).
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    fn into_api(self) -> ApiError;
}

impl DomainError for domain::booking::BookingError {
    fn into_api(self) -> ApiError {
        use domain::booking::BookingError as E;
        match self {
            E::NotFound => ApiError::NotFound(self.to_string()),
            E::Invalid { field, .. } => ApiError::invalid_field(field, self.to_string()),
            E::InvalidPeriod => ApiError::invalid_field("ends_at", self.to_string()),
            E::AlreadyExists => ApiError::Conflict {
                code: "already_exists",
                detail: self.to_string(),
                extra: Map::new(),
            },
            E::InvalidTransition { .. } | E::MissingReservationId => ApiError::Unprocessable {
                code: "rule_violated",
                detail: self.to_string(),
                field: None,
            },
        }
    }
}

impl DomainError for domain::visit::VisitError {
    fn into_api(self) -> ApiError {
        use domain::visit::VisitError as E;
        match self {
            E::NotFound => ApiError::NotFound(self.to_string()),
            E::Invalid { field, .. } => ApiError::invalid_field(field, self.to_string()),
            E::AlreadyExists => ApiError::Conflict {
                code: "already_exists",
                detail: self.to_string(),
                extra: Map::new(),
            },
            E::InvalidTransition { .. } | E::ReportNotGenerated => ApiError::Unprocessable {
                code: "rule_violated",
                detail: self.to_string(),
                field: None,
            },
        }
    }
}

impl<E: DomainError> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => e.into_api(),
            CommandError::Conflict { current_version } => {
                metrics::counter!("trailbook_command_conflicts_total").increment(1);
                let mut extra = Map::new();
                extra.insert("current_version".into(), json!(current_version));
                ApiError::Conflict {
                    code: "concurrent_update",
                    detail: format!(
                        "the aggregate kept changing under this command; its current version is {current_version}, retry"
                    ),
                    extra,
                }
            }
            CommandError::NotVisible => ApiError::NotFound("not found".into()),
            CommandError::Stale { expected, current } => {
                ApiError::PreconditionFailed { expected, current }
            }
            CommandError::Refused(store::HookError::Refused {
                code,
                message,
                related_id,
            }) => {
                let mut extra = Map::new();
                if let Some(other) = related_id {
                    extra.insert(CONFLICTING_ID.into(), json!(other));
                }
                ApiError::Conflict {
                    code,
                    detail: message,
                    extra,
                }
            }
            CommandError::Refused(store::HookError::Database(e)) => {
                ApiError::from(store::Error::Database(e))
            }
            CommandError::Store(e) => ApiError::from(e),
        }
    }
}
