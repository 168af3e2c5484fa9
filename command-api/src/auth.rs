//! Bearer tokens (HS256 JWT) with a role and a subject, and the rules of who may do what.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use domain::values::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: a client id, an operator's name, a partner id.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(***)")
    }
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A token for `subject` with `role`, valid for `ttl`.
    pub fn issue(
        &self,
        role: Role,
        subject: &str,
        ttl: chrono::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            role,
            iat: now,
            exp: now + ttl.num_seconds(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                ApiError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the bearer token has expired".into(),
                    ErrorKind::InvalidSignature => "the bearer token's signature is invalid".into(),
                    _ => "the bearer token is malformed".into(),
                })
            })
    }
}

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
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not {action}",
                self.0.role.as_str()
            )))
        }
    }

    /// Whether the caller may see and act on an aggregate owned by `owner`: clients only their own,
    /// staff roles all. Callers answer 404 (not 403) otherwise, so ids of others are not revealed.
    pub fn may_access(&self, owner: &str) -> bool {
        match self.0.role {
            Role::Client => self.0.subject == owner,
            Role::Operator | Role::Support | Role::System => true,
            Role::Partner => false,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("an `Authorization: Bearer <token>` header is required".into())
        })?;
        let text = value.to_str().unwrap_or_default();
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        let claims = state.tokens.verify(token)?;
        if claims.sub.trim().is_empty() || claims.sub.len() > 200 {
            return Err(ApiError::Unauthorized(
                "the bearer token has no valid subject".into(),
            ));
        }
        Ok(Self(Actor {
            subject: claims.sub,
            role: claims.role,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token round-trips; another secret or an expired token is refused with a clear reason.
    #[test]
    fn tokens_verify_only_with_the_same_secret_and_before_expiry() {
        let tokens = Tokens::new(b"secret-one");
        let token = tokens
            .issue(Role::Client, "ada", chrono::Duration::hours(1))
            .unwrap();
        let claims = tokens.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ada", Role::Client));

        let other = Tokens::new(b"secret-two");
        assert!(other
            .verify(&token)
            .unwrap_err()
            .to_string()
            .contains("signature"));

        let expired = tokens
            .issue(Role::Client, "ada", chrono::Duration::hours(-1))
            .unwrap();
        assert!(tokens
            .verify(&expired)
            .unwrap_err()
            .to_string()
            .contains("expired"));
        assert!(tokens.verify("not.a.token").is_err());
    }
}
