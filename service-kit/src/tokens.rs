//! Bearer tokens (HS256 JWT) with a role and a subject, and the role rules both APIs apply: who may
//! see an aggregate, who may act.

use domain::values::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: a client id, an operator's name, a partner id.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// Why a bearer token was not accepted; the text is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token's signature is invalid")]
    BadSignature,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token has no valid subject")]
    NoSubject,
}

/// Signs and checks tokens with one shared secret. `Debug` hides the keys.
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
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    _ => TokenError::Malformed,
                }
            })
    }

    /// The actor of an `Authorization` header value: `Bearer <token>` with a valid token whose subject
    /// is non-empty and at most 200 bytes.
    pub fn actor(&self, authorization: &str) -> Result<Actor, TokenError> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::NotBearer)?;
        let claims = self.verify(token)?;
        if claims.sub.trim().is_empty() || claims.sub.len() > 200 {
            return Err(TokenError::NoSubject);
        }
        Ok(Actor {
            subject: claims.sub,
            role: claims.role,
        })
    }
}

/// Whether `actor` may see and act on an aggregate owned by `owner`: clients only their own, staff
/// roles all, partners none. Callers answer "not found" otherwise, so ids of others are not revealed.
pub fn may_access(actor: &Actor, owner: &str) -> bool {
    match actor.role {
        Role::Client => actor.subject == owner,
        Role::Operator | Role::Support | Role::System => true,
        Role::Partner => false,
    }
}

/// `Err` with "the <role> role may not <action>" unless `actor` has one of `roles`.
pub fn require(actor: &Actor, roles: &[Role], action: &str) -> Result<(), String> {
    if roles.contains(&actor.role) {
        Ok(())
    } else {
        Err(format!("the {} role may not {action}", actor.role.as_str()))
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

    /// The header must be `Bearer <token>`; the subject must be usable.
    #[test]
    fn actor_needs_a_bearer_header_and_a_subject() {
        let tokens = Tokens::new(b"secret-one");
        let token = tokens
            .issue(Role::Operator, "grace", chrono::Duration::hours(1))
            .unwrap();
        let actor = tokens.actor(&format!("Bearer {token}")).unwrap();
        assert_eq!(
            (actor.subject.as_str(), actor.role),
            ("grace", Role::Operator)
        );
        assert_eq!(tokens.actor(&token).unwrap_err(), TokenError::NotBearer);
        assert_eq!(tokens.actor("Bearer  ").unwrap_err(), TokenError::NotBearer);
        let blank = tokens
            .issue(Role::Client, " ", chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(
            tokens.actor(&format!("Bearer {blank}")).unwrap_err(),
            TokenError::NoSubject
        );
    }
}
