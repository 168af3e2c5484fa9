//! Request extractors whose rejections are problem+json with a message naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// Largest accepted request body, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body. Malformed JSON, wrong types and unknown fields are 400 naming the field's path; a body over
/// [`BODY_LIMIT`] is 413; a non-JSON content type is 415.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        // Refuse a declared oversize body before reading any of it: a client that sent
        // `Expect: 100-continue` (curl does for large bodies) then never has to send it.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge { limit: BODY_LIMIT })?;
        parse(&bytes).map(Json)
    }
}

/// Deserializes JSON, naming the path of the offending field on failure. Text with a NUL character is
/// refused (422): PostgreSQL cannot store it in `jsonb` or `text`, so it could never be recorded.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(path) = nul_path(&value, String::new()) {
                let shown = if path.is_empty() {
                    "the body".to_string()
                } else {
                    format!("`{path}`")
                };
                return Err(ApiError::Unprocessable {
                    code: "invalid_value",
                    detail: format!("{shown} must not contain the NUL character (\\u0000)"),
                    field: Some(path),
                });
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = strip_position(&inner.to_string());
        if reason.starts_with(crate::openapi::BROKEN_RULE) {
            ApiError::Unprocessable {
                code: "invalid_value",
                detail: format!("`{path}` {reason}"),
                field: Some(path),
            }
        } else if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON body: {reason}"))
        } else {
            ApiError::BadRequest {
                detail: format!("invalid value for `{path}`: {reason}"),
                field: Some(path),
            }
        }
    })?;
    de.end().map_err(|_| {
        ApiError::bad_request("invalid JSON body: trailing characters after the value")
    })?;
    Ok(value)
}

/// The path of the first string (or key) holding a NUL character.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(key))
            } else {
                nul_path(item, join(key))
            }
        }),
        _ => None,
    }
}

/// serde_json appends " at line L column C"; keep the message short and stable.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The required `Idempotency-Key` header: 1 to 200 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::BadRequest {
                detail: "the `Idempotency-Key` header is required on creates".into(),
                field: Some("Idempotency-Key".into()),
            })?;
        let key = value.to_str().unwrap_or_default().trim();
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest {
                detail: "`Idempotency-Key` must be 1 to 200 visible ASCII characters".into(),
                field: Some("Idempotency-Key".into()),
            });
        }
        Ok(Self(key.to_string()))
    }
}

/// The optional `If-Match` header: the version the caller expects (`3` or `"3"`).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        parse_version(value.as_bytes())
            .map(|v| Self(Some(v)))
            .ok_or_else(|| ApiError::BadRequest {
                detail: "`If-Match` must be a version number, e.g. `3` or `\"3\"`".into(),
                field: Some("If-Match".into()),
            })
    }
}

/// A version as `If-Match` carries it: `3`, `"3"`, `W/"3"` or `W/3` (1 to 19 digits, so it fits a
/// `u64`); exactly `openapi::IF_MATCH_PATTERN`.
fn parse_version(value: &[u8]) -> Option<u64> {
    let value = value.strip_prefix(b"W/").unwrap_or(value);
    let digits = match value {
        [b'"', inner @ .., b'"'] => inner,
        bare => bare,
    };
    if !(1..=19).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The request's correlation id: `X-Correlation-Id` when given (≤ 128 visible ASCII), else a new UUID v7.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

pub const CORRELATION_HEADER: &str = "x-correlation-id";

impl CorrelationId {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let given = headers
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
        Self(given.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The middleware has already chosen one and stored it; fall back to the header for safety.
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| Self::from_headers(&parts.headers)))
    }
}
