//! Payments through a payment provider: the client and the `payment.capture` job.
//!
//! `POST /v1/bookings/{id}/payment` records `PaymentRequested` (status `payment_pending`) with a payment
//! key derived from the booking; the reactor turns it into a `payment.capture` job. The job charges the
//! provider with that key as its `Idempotency-Key`, so the provider never charges one booking twice:
//!
//! - captured → `PaymentCaptured` (`paid`); declined → `PaymentDeclined` + `CompensationStarted`
//!   (the partner reservation is released, then `cancelled`); a 400/422 refusal of the request is a
//!   decline with the provider's reason (the payment cannot go through as sent), while other 4xx (our
//!   credentials, say) dead-letter the job and leave the booking visibly `payment_pending`;
//! - a timeout, a broken connection or a 5xx is *unknown*, never "failed" and never a reason to charge
//!   again: it is recorded (`PaymentOutcomeUnknown`) and the job retries, and every retry first asks the
//!   provider by the key (`GET /v1/payments?idempotency_key=`) and records what it holds; only when the
//!   provider holds nothing is the charge sent again (with the same key, so still at most once);
//! - a 429 retries after `Retry-After`.
//!
//! The provider's webhooks (`POST /v1/payments/webhooks` of the command API) carry the same outcome; the
//! aggregate takes whichever arrives first and treats the other as a no-op. Refunds (`payment.refund`)
//! run on the compensation queue (`crate::compensation`).

use std::time::Duration;

use async_trait::async_trait;
use domain::booking::{BookingCommand, BookingStatus, PaymentOutcome};
use domain::values::Money;
use domain::Booking;
use serde::Deserialize;
use serde_json::json;
use store::EventStore;

use crate::booking_flow::{outcome, CallOutcome, CORRELATION_HEADER};
use crate::error::Result;
use crate::jobs::Job;
use crate::partners::{http_client, ProviderSettings};
use crate::worker::{Handler, HandlerError};
use crate::write_back;

/// What the provider says about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderPayment {
    pub payment_id: String,
    /// `captured` or `declined`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What the provider says about a refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderRefund {
    pub refund_id: String,
    pub payment_id: String,
}

/// A client of the payment provider's API.
#[derive(Debug, Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    base_url: String,
}

impl PaymentClient {
    pub fn new(settings: &ProviderSettings) -> Result<Self> {
        Ok(Self {
            http: http_client(
                Duration::from_millis(settings.timeout_ms),
                settings.api_key.as_deref(),
            )?,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `POST /v1/payments` with `Idempotency-Key: <key>`. A decline (402 with the payment) is an answer.
    pub async fn charge(
        &self,
        key: &str,
        method: &str,
        amount: &Money,
        booking_id: &str,
        correlation: &str,
    ) -> CallOutcome<ProviderPayment> {
        let sent = self
            .http
            .post(format!("{}/v1/payments", self.base_url))
            .header("Idempotency-Key", key)
            .header(CORRELATION_HEADER, correlation)
            .json(&json!({
                "card": method,
                "amount": amount,
                "client_reference": booking_id,
            }))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().as_u16() == 402 => {
                match response.json::<ProviderPayment>().await {
                    Ok(payment) => CallOutcome::Answered(payment),
                    Err(e) => CallOutcome::Unknown(format!("unreadable decline: {e}")),
                }
            }
            other => outcome(other).await,
        }
    }

    /// `GET /v1/payments?idempotency_key=<key>`: the payment made with this key, if any.
    pub async fn lookup(
        &self,
        key: &str,
        correlation: &str,
    ) -> CallOutcome<Option<ProviderPayment>> {
        let request = self
            .http
            .get(format!("{}/v1/payments", self.base_url))
            .header(CORRELATION_HEADER, correlation)
            .query(&[("idempotency_key", key)]);
        outcome::<Vec<ProviderPayment>>(request.send().await)
            .await
            .map(|mut found| found.pop())
    }

    /// `POST /v1/payments/{id}/refund` (the provider refunds a payment at most once).
    pub async fn refund(
        &self,
        payment_id: &str,
        key: &str,
        correlation: &str,
    ) -> CallOutcome<ProviderRefund> {
        let request = self
            .http
            .post(format!("{}/v1/payments/{payment_id}/refund", self.base_url))
            .header("Idempotency-Key", key)
            .header(CORRELATION_HEADER, correlation);
        outcome(request.send().await).await
    }
}

/// Runs `payment.capture`.
pub struct CaptureHandler {
    pub store: EventStore,
    pub provider: PaymentClient,
}

#[async_trait]
impl Handler for CaptureHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = write_back::payload_str(job, "booking_id")?;
        let context = write_back::context(job);
        let booking = write_back::load::<Booking>(&self.store, &id).await?;
        if booking.status != BookingStatus::PaymentPending {
            return Ok(());
        }
        let (Some(key), Some(method), Some(amount)) = (
            booking.payment_key.as_deref(),
            booking.payment_method.as_deref(),
            booking.amount.as_ref(),
        ) else {
            return Err(HandlerError::Permanent(
                "the pending payment has no key, method or amount".to_owned(),
            ));
        };
        let correlation = context.correlation_id.as_str();
        // After an unknown outcome, ask before charging (the key makes a charge safe anyway).
        let known = if job.attempts > 1 || booking.payment_unknown_attempts > 0 {
            match self.provider.lookup(key, correlation).await {
                CallOutcome::Answered(found) => found,
                other => return Err(failed(other, "payment lookup")),
            }
        } else {
            None
        };
        let answer = match known {
            Some(payment) => payment,
            None => match self
                .provider
                .charge(key, method, amount, &id, correlation)
                .await
            {
                CallOutcome::Answered(payment) => payment,
                CallOutcome::Unknown(reason) => {
                    tracing::warn!(booking_id = %id, reason = %reason, "payment outcome unknown; the next attempt asks the provider");
                    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
                    let unknown = BookingCommand::RecordPaymentOutcomeUnknown {
                        attempt,
                        reason: reason.clone(),
                    };
                    write_back::execute::<Booking>(&self.store, &id, unknown, &context).await?;
                    return Err(HandlerError::Retry(format!(
                        "payment outcome unknown: {reason}"
                    )));
                }
                // The provider refuses this payment as sent: the customer's payment did not go through.
                CallOutcome::Refused { status, reason } if matches!(status, 400 | 422) => {
                    ProviderPayment {
                        payment_id: String::new(),
                        status: "declined".to_owned(),
                        reason: Some(format!(
                            "the provider refused the payment ({status}): {reason}"
                        )),
                    }
                }
                other => return Err(failed(other, "payment")),
            },
        };
        let outcome = match answer.status.as_str() {
            "captured" => PaymentOutcome::Captured {
                payment_id: answer.payment_id,
            },
            "declined" => PaymentOutcome::Declined {
                reason: answer.reason.unwrap_or_else(|| "declined".to_owned()),
            },
            other => {
                return Err(HandlerError::Retry(format!(
                    "the provider reported an unknown payment status `{other}`"
                )))
            }
        };
        // A webhook settled it first with the same outcome (a no-op), or another outcome won.
        write_back::execute_unless_settled::<Booking>(
            &self.store,
            &id,
            BookingCommand::RecordPayment { outcome },
            &context,
            |b: &Booking| b.status == BookingStatus::PaymentPending,
        )
        .await
    }
}

/// A failed provider call as the job's error (transient ones retry, honouring `Retry-After`).
fn failed<T>(outcome: CallOutcome<T>, what: &str) -> HandlerError {
    match outcome {
        CallOutcome::RateLimited(after) => HandlerError::RetryAfter {
            after,
            message: format!("the provider rate limited the {what}"),
        },
        CallOutcome::Unknown(reason) => HandlerError::Retry(format!("the {what} failed: {reason}")),
        CallOutcome::Refused { status, reason } => HandlerError::Permanent(format!(
            "the provider refused the {what} ({status}): {reason}"
        )),
        CallOutcome::Answered(_) => HandlerError::Retry(format!("unexpected answer to the {what}")),
    }
}
