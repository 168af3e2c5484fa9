//! Partner status callbacks, authenticated by an HMAC-SHA256 signature instead of a bearer token.
//!
//! Header `X-Trailbook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. A bad
//! signature or a timestamp more than 5 minutes away is 401. The secret is the shared partner secret,
//! or, for a callback naming a `partner` that has its own `callback_secret` in the partners file, that
//! one; a callback moves only bookings of the partner that signed it (others answer 404). A valid callback that would not move the
//! booking forward (duplicate, stale, out of order) is accepted and recorded in the booking's history as
//! ignored, so replaying a callback is harmless.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::booking::{BookingCommand, BookingEvent, PartnerReportedStatus, PartnerSource};
use domain::values::{Actor, Role};
use domain::Booking;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use store::{CommandContext, ExecuteOptions};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{parse, CorrelationId};
use crate::middleware::{charge_signed, ClientAddress};
use crate::AppState;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-trailbook-signature";

/// How far a callback's timestamp may be from our clock.
pub const TOLERANCE_SECONDS: i64 = 300;

/// A partner's report about one reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerCallback {
    /// The partner's id for this callback delivery (duplicates share it).
    pub callback_id: String,
    /// Our booking id (the partner's client reference).
    pub booking_id: String,
    pub reservation_id: Option<String>,
    /// `confirmed`, `rejected` or `cancelled`.
    #[schema(value_type = String)]
    pub status: PartnerReportedStatus,
    /// When the partner reached this status (its clock).
    pub occurred_at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The partner sending it (as named in the partners file). Required for a partner with its own
    /// callback secret: the callback is then checked with that secret and moves only its bookings.
    #[serde(default)]
    pub partner: Option<String>,
}

/// The answer to a callback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackAccepted {
    pub booking_id: String,
    pub status: String,
    pub version: u64,
    pub position: Option<i64>,
    /// False when the callback was recorded as ignored (duplicate, stale or out of order).
    pub applied: bool,
}

/// `t=...,v1=...` for `body` signed with `secret` at `timestamp` (used by the partner simulator and tests).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would simply never match.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks the signature header against the raw body, in constant time.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::Unauthorized(format!("the `{SIGNATURE_HEADER}` header is required"))
    })?;
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => signature = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(ApiError::Unauthorized(format!(
            "`{SIGNATURE_HEADER}` must be `t=<unix seconds>,v1=<hex>`"
        )));
    };
    if (now.timestamp() - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(ApiError::Unauthorized(
            "the callback's timestamp is more than 5 minutes off; refusing a possible replay"
                .into(),
        ));
    }
    let Ok(mut expected) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Err(ApiError::Unauthorized(
            "the callback signature is invalid".into(),
        ));
    };
    expected.update(timestamp.to_string().as_bytes());
    expected.update(b".");
    expected.update(body);
    expected
        .verify_slice(&signature)
        .map_err(|_| ApiError::Unauthorized("the callback signature is invalid".into()))
}

/// The body of a signed request (partner callback, payment webhook), parsed once its signature under
/// `secret` holds.
pub(crate) fn signed<T: serde::de::DeserializeOwned>(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    verify(secret, signature, body, Utc::now())?;
    parse(body)
}

/// The partner a callback says it comes from, read before the signature is checked (only to choose the
/// secret to check it with; nothing else is trusted until then).
#[derive(Deserialize)]
struct Sender {
    #[serde(default)]
    partner: Option<String>,
}

/// The secret a callback from `partner` (or from an unnamed sender) must be signed with: the partner's
/// own, else the shared one. A partner the partners file does not list cannot sign anything.
fn callback_secret<'a>(state: &'a AppState, partner: Option<&str>) -> Result<&'a [u8], ApiError> {
    match (&state.config.partners, partner) {
        (Some(directory), Some(name)) if !directory.contains(name) => Err(ApiError::Unauthorized(
            "the callback's partner is not configured".into(),
        )),
        (Some(directory), Some(name)) => Ok(directory
            .callback_secret(name)
            .unwrap_or(state.partner_secret.expose_secret())),
        _ => Ok(state.partner_secret.expose_secret()),
    }
}

/// Receive a partner status callback (HMAC-signed).
#[utoipa::path(operation_id = "receive_partner_callback", post, path = "/v1/partner/callbacks", tag = "partner",
    request_body = PartnerCallback,
    params(("X-Trailbook-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    responses((status = 200, body = CallbackAccepted), (status = 400), (status = 401), (status = 404)))]
pub async fn receive(
    State(state): State<AppState>,
    CorrelationId(correlation): CorrelationId,
    address: ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sender = serde_json::from_slice::<Sender>(&body)
        .ok()
        .and_then(|s| s.partner);
    let verified = callback_secret(&state, sender.as_deref())
        .and_then(|secret| signed::<PartnerCallback>(secret, &headers, &body));
    let signer = sender.as_deref().unwrap_or("shared-secret");
    let callback = charge_signed(&state, address, signer, verified)?;
    let context = CommandContext {
        correlation_id: correlation,
        causation_id: Some(format!("partner-callback:{}", callback.callback_id)),
        actor: Some(Actor {
            subject: "partner".into(),
            role: Role::Partner,
        }),
        idempotency_key: None,
        command: Some("booking.partner_callback".into()),
        request_correlation_id: None,
    };
    let command = BookingCommand::ApplyPartnerStatus {
        reported: callback.status,
        reservation_id: callback.reservation_id,
        source: PartnerSource::Callback,
        partner_time: callback.occurred_at,
        reason: callback.reason,
    };
    let moved = |events: &[BookingEvent]| {
        !events
            .iter()
            .all(|e| matches!(e, BookingEvent::PartnerCallbackIgnored { .. }))
    };
    // A callback moves only a booking of the partner that signed it: a named partner its own bookings;
    // the shared secret only bookings whose partner has no secret of its own. Others answer 404.
    let directory = state.config.partners.clone();
    let signer = callback.partner.clone();
    let may_move = move |booking: &Booking| match (&signer, &directory) {
        (Some(partner), _) => booking.partner == *partner,
        (None, Some(directory)) => directory.callback_secret(&booking.partner).is_none(),
        (None, None) => true,
    };
    apply_report(
        &state,
        callback.booking_id,
        command,
        &context,
        "trailbook_partner_callbacks_total",
        moved,
        may_move,
    )
    .await
}

/// Runs a partner's or payment provider's report on booking `id` (404 unless `may_move` allows the
/// booking) and answers whether it moved the booking (`moved` decides from the events written),
/// counting the outcome in `counter`.
pub(crate) async fn apply_report(
    state: &AppState,
    id: String,
    command: BookingCommand,
    context: &CommandContext,
    counter: &'static str,
    moved: impl Fn(&[BookingEvent]) -> bool,
    may_move: impl Fn(&Booking) -> bool + Send + Sync,
) -> Result<Response, ApiError> {
    let done = state
        .store
        .execute::<Booking>(&id, command, &(), context, ExecuteOptions::default())
        .visible_if(may_move)
        .await
        // A partner or provider is never told which booking (maybe another partner's) holds a slot.
        .map_err(|e| {
            ApiError::from(e)
                .for_aggregate("booking", &id)
                .without_conflicting_id()
        })?;
    let applied = moved(&done.events);
    let outcome = if applied { "applied" } else { "ignored" };
    metrics::counter!(counter, "outcome" => outcome).increment(1);
    Ok(axum::Json(CallbackAccepted {
        booking_id: id,
        status: done.state.status.as_str().to_string(),
        version: done.version,
        position: done.position,
        applied,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature made with the secret verifies; another secret, a changed body or an old timestamp do not.
    #[test]
    fn signatures_bind_secret_body_and_time() {
        let now = Utc::now();
        let body = br#"{"callback_id":"c1"}"#;
        let header = sign(b"s3cret", now.timestamp(), body);
        assert!(verify(b"s3cret", Some(&header), body, now).is_ok());
        assert!(verify(b"other", Some(&header), body, now).is_err());
        assert!(verify(b"s3cret", Some(&header), br#"{"callback_id":"c2"}"#, now).is_err());
        let old = sign(b"s3cret", now.timestamp() - 301, body);
        assert!(verify(b"s3cret", Some(&old), body, now)
            .unwrap_err()
            .to_string()
            .contains("5 minutes"));
        assert!(verify(b"s3cret", None, body, now).is_err());
        assert!(verify(b"s3cret", Some("garbage"), body, now).is_err());
    }
}
