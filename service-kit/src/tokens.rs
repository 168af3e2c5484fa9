//! Bearer tokens (HS256 JWT) with a role and a subject, and the role rules both APIs apply: who may
//! see an aggregate, who may act.
//!
//! A token is accepted only if every one of these holds: HS256 (the algorithm is pinned), a `kid` naming
//! one of the active keys, a valid signature, `iss` = [`ISSUER`] and `aud` = [`AUDIENCE`], `exp` in the
//! future and at most [`MAX_LIFETIME_HOURS`] after `iat`, a public role (never `system`), and a subject of
//! 1 to [`MAX_SUBJECT_CHARS`] characters without control characters. Keys are at least
//! [`MIN_SECRET_BYTES`] long; several may be active at once, for rotation (README, "Tokens").

use chrono::{DateTime, Utc};
use domain::values::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The issuer every token names.
pub const ISSUER: &str = "trailbook";
/// The audience every token names: both APIs.
pub const AUDIENCE: &str = "trailbook-api";
/// Shortest accepted signing secret (HS256 wants a key as long as its hash).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest lifetime a token may have (`exp - iat`).
pub const MAX_LIFETIME_HOURS: i64 = 24 * 7;
/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: a client id, an operator's name, a partner id.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
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
    #[error("the bearer token names no active key (`kid`)")]
    UnknownKey,
    #[error("the bearer token was not issued by trailbook for its APIs (`iss`, `aud`)")]
    WrongIssuer,
    #[error("the bearer token lives longer than {MAX_LIFETIME_HOURS} hours")]
    TooLong,
    #[error("the bearer token's role is not one a token may carry")]
    Role,
}

/// Why keys could not be set up (start-up; the text names the setting, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a token secret must be at least {MIN_SECRET_BYTES} bytes; {which} has {len}")]
    TooShort { which: String, len: usize },
}

/// One signing key and its id (the first 16 hex digits of the secret's SHA-256).
#[derive(Clone)]
struct Key {
    id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8], which: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort {
                which: which.to_string(),
                len: secret.len(),
            });
        }
        let digest = hex::encode(Sha256::digest(secret));
        Ok(Self {
            id: digest[..16].to_string(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }
}

/// Signs with the current key and checks with any active one. `Debug` hides the keys.
#[derive(Clone)]
pub struct Tokens {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(***)")
    }
}

/// Whether `subject` may be a token's subject.
fn valid_subject(subject: &str) -> bool {
    !subject.trim().is_empty()
        && subject.chars().count() <= MAX_SUBJECT_CHARS
        && !subject.chars().any(char::is_control)
}

impl Tokens {
    /// Signs and checks with `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        Self::rotating(secret, &[])
    }

    /// Signs with `current`; checks with it and with each of `previous` (keys being rotated out:
    /// tokens they signed stay valid until they expire).
    pub fn rotating(current: &[u8], previous: &[&[u8]]) -> Result<Self, KeyError> {
        Ok(Self {
            current: Key::new(current, "the current secret")?,
            previous: previous
                .iter()
                .enumerate()
                .map(|(i, secret)| Key::new(secret, &format!("previous secret {}", i + 1)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A token for `subject` with `role`, valid for `ttl` (at most [`MAX_LIFETIME_HOURS`]; a negative
    /// `ttl` gives an expired token, for tests).
    pub fn issue(
        &self,
        role: Role,
        subject: &str,
        ttl: chrono::Duration,
    ) -> Result<String, TokenError> {
        if role == Role::System {
            return Err(TokenError::Role);
        }
        if !valid_subject(subject) {
            return Err(TokenError::NoSubject);
        }
        if ttl > chrono::Duration::hours(MAX_LIFETIME_HOURS) {
            return Err(TokenError::TooLong);
        }
        let now = Utc::now().timestamp();
        let (iat, exp) = match ttl.num_seconds() {
            secs if secs < 0 => (now + secs - 60, now + secs),
            secs => (now, now + secs),
        };
        let claims = Claims {
            sub: subject.to_string(),
            role,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.id.clone());
        jsonwebtoken::encode(&header, &claims, &self.current.encoding)
            .map_err(|_| TokenError::Malformed)
    }

    /// Checks everything the module docs list but the subject.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenError::WrongIssuer
                    }
                    _ => TokenError::Malformed,
                }
            })?;
        if claims.exp - claims.iat > MAX_LIFETIME_HOURS * 3600 {
            return Err(TokenError::TooLong);
        }
        if claims.role == Role::System {
            return Err(TokenError::Role);
        }
        Ok(claims)
    }

    /// The actor of an `Authorization` header value (`Bearer <token>`), and when its token expires.
    pub fn actor_until(&self, authorization: &str) -> Result<(Actor, DateTime<Utc>), TokenError> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::NotBearer)?;
        let claims = self.verify(token)?;
        if !valid_subject(&claims.sub) {
            return Err(TokenError::NoSubject);
        }
        let expires = DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Malformed)?;
        Ok((
            Actor {
                subject: claims.sub,
                role: claims.role,
            },
            expires,
        ))
    }

    /// The actor of an `Authorization` header value: `Bearer <token>` with a valid token.
    pub fn actor(&self, authorization: &str) -> Result<Actor, TokenError> {
        self.actor_until(authorization).map(|(actor, _)| actor)
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

    const ONE: &[u8] = b"secret-one-0123456789abcdef-0123456789";
    const TWO: &[u8] = b"secret-two-0123456789abcdef-0123456789";

    /// A token round-trips; another secret or an expired token is refused with a clear reason.
    #[test]
    fn tokens_verify_only_with_the_same_secret_and_before_expiry() {
        let tokens = Tokens::new(ONE).unwrap();
        let token = tokens
            .issue(Role::Client, "ada", chrono::Duration::hours(1))
            .unwrap();
        let claims = tokens.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ada", Role::Client));
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            (ISSUER, AUDIENCE)
        );

        let other = Tokens::new(TWO).unwrap();
        assert_eq!(other.verify(&token).unwrap_err(), TokenError::UnknownKey);

        let expired = tokens
            .issue(Role::Client, "ada", chrono::Duration::hours(-1))
            .unwrap();
        assert_eq!(tokens.verify(&expired).unwrap_err(), TokenError::Expired);
        assert!(tokens.verify("not.a.token").is_err());
    }

    /// A short secret is refused, naming which; the text never holds the secret.
    #[test]
    fn short_secrets_are_refused() {
        let err = Tokens::new(b"short").unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("short\""));
        let err = Tokens::rotating(ONE, &[b"tiny"]).unwrap_err();
        assert!(err.to_string().contains("previous secret 1"), "{err}");
    }

    /// Rotation: tokens of a previous key still verify; new ones are signed with the current key.
    #[test]
    fn a_previous_key_still_verifies_its_tokens() {
        let old = Tokens::new(ONE).unwrap();
        let token = old
            .issue(Role::Support, "sam", chrono::Duration::hours(1))
            .unwrap();
        let rotated = Tokens::rotating(TWO, &[ONE]).unwrap();
        assert_eq!(rotated.verify(&token).unwrap().sub, "sam");
        let fresh = rotated
            .issue(Role::Support, "sam", chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(old.verify(&fresh).unwrap_err(), TokenError::UnknownKey);
        assert!(Tokens::new(TWO).unwrap().verify(&fresh).is_ok());
    }

    /// Tokens signed with the right key but the wrong issuer, audience, lifetime or role are refused.
    #[test]
    fn claims_beyond_the_signature_are_checked() {
        let tokens = Tokens::new(ONE).unwrap();
        let sign = |claims: serde_json::Value| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(tokens.current.id.clone());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(ONE)).unwrap()
        };
        let now = Utc::now().timestamp();
        let base = serde_json::json!({"sub": "ada", "role": "client", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 60});
        assert!(tokens.verify(&sign(base.clone())).is_ok());
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = base.clone();
            claims[key] = value;
            tokens.verify(&sign(claims)).unwrap_err()
        };
        assert_eq!(with("iss", "someone".into()), TokenError::WrongIssuer);
        assert_eq!(with("aud", "elsewhere".into()), TokenError::WrongIssuer);
        assert_eq!(
            with("exp", (now + 400 * 24 * 3600).into()),
            TokenError::TooLong
        );
        assert_eq!(with("role", "system".into()), TokenError::Role);
        let mut no_kid = Header::new(Algorithm::HS256);
        no_kid.kid = None;
        let unnamed = jsonwebtoken::encode(&no_kid, &base, &EncodingKey::from_secret(ONE)).unwrap();
        assert_eq!(tokens.verify(&unnamed).unwrap_err(), TokenError::UnknownKey);
        assert_eq!(
            tokens
                .issue(Role::System, "worker", chrono::Duration::hours(1))
                .unwrap_err(),
            TokenError::Role
        );
        assert_eq!(
            tokens
                .issue(Role::Client, "ada", chrono::Duration::days(365))
                .unwrap_err(),
            TokenError::TooLong
        );
    }

    /// The header must be `Bearer <token>`; the subject must be usable.
    #[test]
    fn actor_needs_a_bearer_header_and_a_subject() {
        let tokens = Tokens::new(ONE).unwrap();
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
        for subject in [" ", "", "a\nb", &"x".repeat(201)] {
            assert_eq!(
                tokens
                    .issue(Role::Client, subject, chrono::Duration::hours(1))
                    .unwrap_err(),
                TokenError::NoSubject,
                "{subject:?}"
            );
        }
    }
}
