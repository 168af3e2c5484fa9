//! Payment provider webhooks, authenticated like partner callbacks (HMAC-SHA256 of `"<t>.<body>"` in
//! `X-Trailbook-Signature`, timestamp within 5 minutes).
//!
//! A webhook reports what the provider did with a booking's payment or refund. It goes through the same
//! command as the payment job's own answer (`RecordPayment`, `RecordRefund`), so whichever arrives first
//! moves the booking and the other is a no-op: a duplicate or late webhook never moves a booking twice.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::booking::{BookingCommand, BookingEvent, PaymentOutcome, RefundOutcome};
use domain::values::{Actor, Role};
use domain::Booking;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use store::CommandContext;
use utoipa::ToSchema;

use crate::callbacks::{apply_report, signed, CallbackAccepted};
use crate::error::ApiError;
use crate::extract::CorrelationId;
use crate::middleware::{charge_signed, ClientAddress};
use crate::AppState;

/// What the payment provider reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentWebhook {
    /// The provider's id of this delivery (duplicates share it).
    pub webhook_id: String,
    /// `payment.captured`, `payment.declined` or `refund.succeeded`.
    pub event: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// The provider's refund id (`refund.succeeded`).
    #[serde(default)]
    pub refund_id: Option<String>,
    /// Our booking id.
    pub client_reference: Option<String>,
    /// The idempotency key we sent with the payment: must be the booking's.
    pub idempotency_key: String,
    /// When the provider did it.
    pub occurred_at: DateTime<Utc>,
    /// The provider's reason (declines).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Receive a payment provider webhook (HMAC-signed).
#[utoipa::path(operation_id = "receive_payment_webhook", post, path = "/v1/payments/webhooks", tag = "partner",
    request_body = PaymentWebhook,
    params(("X-Trailbook-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    responses((status = 200, body = CallbackAccepted), (status = 400), (status = 401), (status = 404),
        (status = 422, description = "the webhook does not match the booking's payment")))]
pub async fn webhook(
    State(state): State<AppState>,
    CorrelationId(correlation): CorrelationId,
    address: ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let verified = signed(state.partner_secret.expose_secret(), &headers, &body);
    let hook: PaymentWebhook = charge_signed(&state, address, "payment-provider", verified)?;
    let id = hook
        .client_reference
        .clone()
        .ok_or_else(|| ApiError::invalid_field("client_reference", "the booking id is required"))?;
    let command = match hook.event.as_str() {
        "payment.captured" => BookingCommand::RecordPayment {
            outcome: PaymentOutcome::Captured {
                payment_id: hook.payment_id.clone(),
            },
        },
        "payment.declined" => BookingCommand::RecordPayment {
            outcome: PaymentOutcome::Declined {
                reason: hook.reason.clone().unwrap_or_else(|| "declined".to_owned()),
            },
        },
        "refund.succeeded" => BookingCommand::RecordRefund {
            outcome: RefundOutcome::Refunded {
                refund_id: hook.refund_id.clone().ok_or_else(|| {
                    ApiError::invalid_field("refund_id", "a refund webhook names its refund")
                })?,
            },
        },
        other => {
            return Err(ApiError::invalid_field(
                "event",
                format!("unknown webhook event `{other}`"),
            ))
        }
    };
    let booking = state.store.load::<Booking>(&id).await?;
    if booking.version == 0 {
        return Err(ApiError::NotFound(format!("no booking with id `{id}`")));
    }
    if booking.state.payment_key.as_deref() != Some(hook.idempotency_key.as_str()) {
        return Err(ApiError::invalid_field(
            "idempotency_key",
            "the webhook is not about this booking's payment",
        ));
    }
    let context = CommandContext {
        correlation_id: correlation,
        causation_id: Some(format!("payment-webhook:{}", hook.webhook_id)),
        actor: Some(Actor {
            subject: "payment-provider".into(),
            role: Role::Partner,
        }),
        command: Some(format!("booking.{}", hook.event)),
        ..CommandContext::default()
    };
    apply_report(
        &state,
        id,
        command,
        &context,
        "trailbook_payment_webhooks_total",
        |events: &[BookingEvent]| !events.is_empty(),
        |_: &Booking| true,
    )
    .await
}
