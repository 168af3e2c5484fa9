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
use crate::resource::{check_date, CommandRequest, CreateRequest, ReadRequest};

/// Body of `POST /v1/bookings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    /// The partner holding the resource, e.g. `acme-hotels`.
    pub partner: String,
    /// The partner's resource, e.g. `room-42`.
    pub resource: String,
    /// Start of the stay (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// End of the stay (RFC 3339), after `starts_at`.
    pub ends_at: DateTime<Utc>,
    /// 1 to 100.
    pub guests: u32,
    pub amount: AmountBody,
    pub customer: CustomerBody,
}

/// Money in integer minor units (cents) and an ISO 4217 currency code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    pub minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    pub name: String,
    pub email: String,
}

/// Body of `POST /v1/bookings/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBooking {
    pub reason: String,
}

/// Body of `POST /v1/bookings/{id}/payment`: the payment-method token handed to the payment provider (for
/// the built-in simulator a test card number; it declines `4000000000000002`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Payment {
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
        check_date("starts_at", self.starts_at)?;
        check_date("ends_at", self.ends_at)?;
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
        reason: body.reason,
        at: Utc::now(),
    };
    request.run::<Booking>("booking.cancel", command).await
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
    let mut response = request.run::<Booking>("booking.payment", command).await?;
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// Body of `POST /v1/bookings/{id}/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBooking {
    /// The status the booking ends in: `failed` or `cancelled` for one stuck waiting for its partner,
    /// `cancelled` for one whose compensation is stuck or gave up, `refunded` for one whose refund is.
    pub status: String,
    /// Why (what the operator checked), for the history.
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
        reason: body.reason,
    };
    request.run::<Booking>("booking.resolve", command).await
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
    params(("id" = String, Path)),
    responses((status = 200, description = "the booking"), (status = 404)),
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
