//! Booking routes: create (idempotent), cancel, payment, and the strongly consistent read.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::booking::{BookingCommand, BookingStatus, Customer};
use domain::values::{Currency, Email, Money, Role};
use domain::Booking;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::Json;
use crate::idempotency;
use crate::openapi;
use crate::resource::{CommandRequest, CreateRequest, ReadRequest};

/// Body of `POST /v1/bookings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"partner": "acme-hotels", "resource": "room-42",
    "starts_at": "2026-12-01T15:00:00Z", "ends_at": "2026-12-03T11:00:00Z", "guests": 2,
    "amount": {"minor": 25000, "currency": "EUR"},
    "customer": {"name": "Ada Lovelace", "email": "ada@example.com"}}))]
pub struct CreateBooking {
    /// The partner holding the resource, e.g. `acme-hotels` (one of the configured partners when the
    /// server has a partners file).
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub partner: String,
    /// The partner's resource, e.g. `room-42`.
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub resource: String,
    /// Start of the stay (RFC 3339, years 2000 to 2099).
    #[serde(deserialize_with = "openapi::instant")]
    #[schema(schema_with = openapi::instant_schema)]
    pub starts_at: DateTime<Utc>,
    /// End of the stay (RFC 3339, years 2000 to 2099), after `starts_at` (else 422).
    #[serde(deserialize_with = "openapi::instant")]
    #[schema(schema_with = openapi::instant_schema)]
    pub ends_at: DateTime<Utc>,
    /// 1 to 100.
    #[serde(deserialize_with = "openapi::guests")]
    #[schema(schema_with = openapi::guests_schema)]
    pub guests: u32,
    pub amount: AmountBody,
    pub customer: CustomerBody,
}

/// Money in integer minor units (cents) and an ISO 4217 currency code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    /// Positive.
    #[serde(deserialize_with = "openapi::minor_units")]
    #[schema(schema_with = openapi::minor_units_schema)]
    pub minor: i64,
    #[serde(deserialize_with = "openapi::currency")]
    #[schema(schema_with = openapi::currency_schema)]
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub name: String,
    #[serde(deserialize_with = "openapi::email")]
    #[schema(schema_with = openapi::email_schema)]
    pub email: String,
}

/// Body of `POST /v1/bookings/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "plans changed"}))]
pub struct CancelBooking {
    #[serde(deserialize_with = "openapi::reason")]
    #[schema(schema_with = openapi::reason_schema)]
    pub reason: String,
}

/// Body of `POST /v1/bookings/{id}/payment`: the payment-method token handed to the payment provider (for
/// the built-in simulator a test card number; it declines `4000000000000002`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"card": "4242 4242 4242 4242"}))]
pub struct Payment {
    #[serde(deserialize_with = "openapi::card")]
    #[schema(schema_with = openapi::card_schema)]
    pub card: String,
}

/// What every booking command answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingAccepted {
    pub booking_id: String,
    /// Status after the command (snake_case).
    pub status: String,
    /// Version after the command (the `ETag` / `If-Match` value).
    pub version: u64,
    /// Global log position of the command's last event, for read-your-writes (`minPosition`).
    pub position: Option<i64>,
}

impl CreateBooking {
    fn into_command(self, booking_id: &str, owner: &str) -> Result<BookingCommand, ApiError> {
        let currency = Currency::parse(&self.amount.currency)
            .map_err(|e| ApiError::invalid_field("amount.currency", e.to_string()))?;
        let email = Email::parse(&self.customer.email)
            .map_err(|e| ApiError::invalid_field("customer.email", e.to_string()))?;
        Ok(BookingCommand::Request {
            booking_id: booking_id.to_string(),
            owner: owner.to_string(),
            partner: self.partner,
            resource: self.resource,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            guests: self.guests,
            amount: Money::new(self.amount.minor, currency),
            customer: Customer {
                name: self.customer.name,
                email,
            },
            at: Utc::now(),
        })
    }
}

/// Request a booking. Idempotent by `Idempotency-Key`: the same key and body return the same answer.
#[utoipa::path(operation_id = "create_booking", post, path = "/v1/bookings", tag = "bookings",
    request_body = CreateBooking,
    params(("Idempotency-Key" = String, Header, description = "required; the same key and body give the same answer")),
    responses(
        (status = 202, description = "accepted", body = BookingAccepted, headers(("Location" = String))),
        (status = 400, description = "malformed"), (status = 401, description = "no or bad token"),
        (status = 409, description = "the resource is already booked for an overlapping period"),
        (status = 422, description = "a rule is violated (e.g. a partner that is not configured), or the key was used with another body"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    request: CreateRequest,
    Json(body): Json<CreateBooking>,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Client, Role::Operator], "create bookings")?;
    if let Some(partners) = &request.state().config.partners {
        if !partners.contains(&body.partner) {
            return Err(ApiError::invalid_field(
                "partner",
                format!(
                    "`partner` must be a configured partner; `{}` is not",
                    body.partner
                ),
            ));
        }
    }
    request
        .create::<Booking, _>(body, CreateBooking::into_command)
        .await
}

/// Cancel a booking (the owner or an operator). Cancelling a cancelled booking changes nothing.
#[utoipa::path(operation_id = "cancel_booking", post, path = "/v1/bookings/{id}/cancel", tag = "bookings",
    request_body = CancelBooking,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 200, body = BookingAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn cancel(
    request: CommandRequest,
    Json(body): Json<CancelBooking>,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Client, Role::Operator], "cancel bookings")?;
    let command = BookingCommand::Cancel {
        reason: body.reason.clone(),
        at: Utc::now(),
    };
    request
        .run::<Booking, _>("booking.cancel", &body, command)
        .await
}

/// Pay for a confirmed booking: the payment-method token goes to the payment provider as a job, and the
/// outcome arrives as events (`paid`, or a decline that starts compensation). Answers 202 with status
/// `payment_pending`; repeating it while the payment runs, or after it succeeded, changes nothing.
#[utoipa::path(operation_id = "pay_for_booking", post, path = "/v1/bookings/{id}/payment", tag = "bookings",
    request_body = Payment,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 202, body = BookingAccepted, description = "handed to the payment provider"),
        (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn payment(
    request: CommandRequest,
    Json(body): Json<Payment>,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Client, Role::Operator], "pay for bookings")?;
    let card = body.card.replace([' ', '-'], "");
    if !(12..=19).contains(&card.len()) || !card.bytes().all(|b| b.is_ascii_digit()) || !luhn(&card)
    {
        return Err(ApiError::invalid_field(
            "card",
            "`card` must be a valid card number (12 to 19 digits)",
        ));
    }
    // Derived from the booking: the provider's idempotency key, so no retry can charge twice.
    let payment_key = format!(
        "pay_{}",
        idempotency::derive_id("payment", request.id(), "capture")
    );
    let command = BookingCommand::RequestPayment {
        payment_key,
        method: card,
        at: Utc::now(),
    };
    let mut response = request
        .run::<Booking, _>("booking.payment", &body, command)
        .await?;
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// Body of `POST /v1/bookings/{id}/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "cancelled", "reason": "the partner confirmed by phone that it holds nothing"}))]
pub struct ResolveBooking {
    /// The status the booking ends in: `failed` or `cancelled` for one stuck waiting for its partner,
    /// `cancelled` for one whose compensation is stuck or gave up, `refunded` for one whose refund is.
    #[serde(deserialize_with = "resolve_status")]
    #[schema(schema_with = resolve_status_schema)]
    pub status: String,
    /// Why (what the operator checked), for the history.
    #[serde(deserialize_with = "openapi::reason")]
    #[schema(schema_with = openapi::reason_schema)]
    pub reason: String,
}

/// Settle a booking that no automatic path can settle any more (operator), after checking with the
/// partner or the payment provider. Recorded as `BookingResolved` with the operator as actor; a slot it
/// held is released and a partner reservation it may hold is given back.
#[utoipa::path(operation_id = "resolve_booking", post, path = "/v1/bookings/{id}/resolve", tag = "bookings",
    request_body = ResolveBooking,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 200, body = BookingAccepted), (status = 401), (status = 403), (status = 404),
        (status = 412), (status = 422, description = "the booking cannot be resolved to that status")),
    security(("bearer" = [])))]
pub async fn resolve(
    request: CommandRequest,
    Json(body): Json<ResolveBooking>,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Operator], "resolve bookings")?;
    let status = BookingStatus::parse(&body.status).ok_or_else(|| {
        ApiError::invalid_field("status", "`status` must be failed, cancelled or refunded")
    })?;
    let command = BookingCommand::Resolve {
        status,
        reason: body.reason.clone(),
    };
    request
        .run::<Booking, _>("booking.resolve", &body, command)
        .await
}

/// The statuses `resolve` can end a booking in.
const RESOLVED: [&str; 3] = ["failed", "cancelled", "refunded"];

fn resolve_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let status = String::deserialize(d)?;
    if RESOLVED.contains(&status.as_str()) {
        Ok(status)
    } else {
        Err(serde::de::Error::custom(
            "must be failed, cancelled or refunded",
        ))
    }
}

fn resolve_status_schema() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(RESOLVED))
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The booking's current state, folded from the event store (strongly consistent). `ETag` is the version.
#[utoipa::path(operation_id = "get_booking", get, path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = String, Path), ("If-None-Match" = Option<String>, Header, description = "an `ETag` seen before: 304 while the version is the same")),
    responses((status = 200, description = "the booking", body = crate::resource::Read<Booking>, headers(("ETag" = String, description = "the version, quoted"))),
        (status = 304, description = "not modified since the `ETag` given"), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(request: ReadRequest) -> Result<Response, ApiError> {
    request
        .allow(
            &[Role::Client, Role::Operator, Role::Support],
            "read bookings",
        )?
        .read::<Booking>()
        .await
}

#[cfg(test)]
mod tests {
    use super::luhn;

    #[test]
    fn luhn_accepts_test_cards_and_refuses_typos() {
        assert!(luhn("4242424242424242"));
        assert!(luhn("4000000000000002"));
        assert!(!luhn("4242424242424241"));
    }
}
