//! The caller of a request: its bearer token checked with [`service_kit::Tokens`], and the role rules
//! of [`service_kit::tokens`] as the REST routes apply them.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use domain::values::{Actor, Role};

use crate::error::ApiError;
use crate::AppState;

pub use service_kit::{Claims, Tokens};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl Caller {
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    pub fn role(&self) -> Role {
        self.0.role
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiError> {
        service_kit::tokens::require(&self.0, roles, action).map_err(ApiError::Forbidden)
    }

    /// Whether the caller may see and act on an aggregate owned by `owner`: clients only their own,
    /// staff roles all. Callers answer 404 (not 403) otherwise, so ids of others are not revealed.
    pub fn may_access(&self, owner: &str) -> bool {
        service_kit::tokens::may_access(&self.0, owner)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The rate limiter verified the token already (to charge its subject): no second HMAC.
        if let Some(Caller(actor)) = parts.extensions.get::<Caller>() {
            return Ok(Self(actor.clone()));
        }
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("an `Authorization: Bearer <token>` header is required".into())
        })?;
        let text = value.to_str().unwrap_or_default();
        let actor = state
            .tokens
            .actor(text)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        Ok(Self(actor))
    }
}
