//! Signed deliveries: partner callbacks and payment webhooks, duplicated or late when the faults say so,
//! retried on network errors and 5xx.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::config::chance;
use crate::state::{Reservation, SimState, Stats};
use crate::CORRELATION_HEADER;

/// The signature header of callbacks and webhooks.
pub const SIGNATURE_HEADER: &str = "x-trailbook-signature";

/// A partner callback body (the shape `/v1/partner/callbacks` accepts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub callback_id: String,
    pub booking_id: String,
    pub reservation_id: Option<String>,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// A payment provider webhook body, sent to [`SimConfig::payment_webhook_url`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentWebhook {
    /// `wh-<uuid>`; a duplicated webhook keeps it.
    pub webhook_id: String,
    /// `payment.captured`, `payment.declined` or `refund.succeeded`.
    pub event: String,
    pub payment_id: String,
    /// Set on `refund.succeeded`.
    pub refund_id: Option<String>,
    /// The payment's client reference (our booking id), if it had one.
    pub client_reference: Option<String>,
    /// The payment's idempotency key (also on `refund.succeeded`).
    pub idempotency_key: String,
    /// `captured`, `declined` or `refunded`.
    pub status: String,
    /// The payment's (or refund's) amount.
    pub amount: Value,
    /// When the payment or refund was recorded.
    pub occurred_at: DateTime<Utc>,
    /// `"card declined"` on `payment.declined`, else `null`.
    pub reason: Option<String>,
}

pub(crate) fn new_webhook_id() -> String {
    format!("wh-{}", uuid::Uuid::now_v7().simple())
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this branch cannot run.
        Err(_) => Vec::new(),
    };
    format!("t={timestamp},v1={}", hex::encode(mac))
}

pub(crate) fn send_callbacks(state: &SimState, reservation: &Reservation) {
    let config = state.config();
    let Some(url) = config.callback_url.clone() else {
        return;
    };
    let callback = Callback {
        callback_id: format!("cb-{}", uuid::Uuid::now_v7().simple()),
        booking_id: reservation.client_reference.clone(),
        reservation_id: Some(reservation.reservation_id.clone()),
        status: reservation.status.clone(),
        occurred_at: reservation.created_at,
        reason: (reservation.status == "rejected").then(|| "resource unavailable".to_owned()),
    };
    let correlation_id = reservation.correlation_id.clone();
    let duplicate = chance(config.faults.duplicate_callbacks);
    let late = chance(config.faults.late_callbacks);
    let state = state.clone();
    tokio::spawn(async move {
        let target = Target {
            kind: Kind::Callback,
            url: &url,
            secret: &config.secret,
            correlation_id: correlation_id.as_deref(),
            subject: &callback.booking_id,
        };
        if late {
            tokio::time::sleep(config.late_callback_delay).await;
        }
        deliver(&state, &target, &callback).await;
        if duplicate {
            deliver(&state, &target, &callback).await;
        }
        if late && callback.status == "confirmed" {
            // An out-of-order report: a rejection dated before the confirmation, arriving after it.
            let stale = Callback {
                callback_id: format!("cb-{}", uuid::Uuid::now_v7().simple()),
                status: "rejected".to_owned(),
                occurred_at: callback.occurred_at - chrono::Duration::seconds(1),
                reason: Some("stale availability".to_owned()),
                ..callback.clone()
            };
            deliver(&state, &target, &stale).await;
        }
    });
}

pub(crate) fn send_payment_webhook(
    state: &SimState,
    webhook: PaymentWebhook,
    correlation_id: Option<String>,
) {
    let config = state.config();
    let Some(url) = config.payment_webhook_url.clone() else {
        return;
    };
    let duplicate = chance(config.faults.duplicate_callbacks);
    let late = chance(config.faults.late_callbacks);
    let state = state.clone();
    tokio::spawn(async move {
        let target = Target {
            kind: Kind::Webhook,
            url: &url,
            secret: &config.secret,
            correlation_id: correlation_id.as_deref(),
            subject: &webhook.payment_id,
        };
        if late {
            tokio::time::sleep(config.late_callback_delay).await;
        }
        deliver(&state, &target, &webhook).await;
        if duplicate {
            deliver(&state, &target, &webhook).await;
        }
    });
}

/// Which counters a delivery updates.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Callback,
    Webhook,
}

/// Where and how one signed body goes.
struct Target<'a> {
    kind: Kind,
    url: &'a str,
    secret: &'a [u8],
    correlation_id: Option<&'a str>,
    /// For logs: the booking id (callbacks) or payment id (webhooks).
    subject: &'a str,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Callback => "callback",
            Kind::Webhook => "payment webhook",
        }
    }

    fn count(self, stats: &mut Stats, delivered: bool) {
        match (self, delivered) {
            (Kind::Callback, true) => stats.callbacks_sent += 1,
            (Kind::Callback, false) => stats.callbacks_failed += 1,
            (Kind::Webhook, true) => stats.webhooks_sent += 1,
            (Kind::Webhook, false) => stats.webhooks_failed += 1,
        }
    }
}

/// Posts one signed body, retrying a few times with backoff on network errors and 5xx.
async fn deliver<T: Serialize>(state: &SimState, target: &Target<'_>, payload: &T) {
    let kind = target.kind.name();
    let Ok(body) = serde_json::to_vec(payload) else {
        return;
    };
    let backoff = workers::Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    for attempt in 1..=5u32 {
        let signature = sign(target.secret, Utc::now().timestamp(), &body);
        let mut request = state
            .http
            .post(target.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature);
        if let Some(correlation_id) = target.correlation_id {
            request = request.header(CORRELATION_HEADER, correlation_id);
        }
        let result = request.body(body.clone()).send().await;
        match result {
            Ok(response)
                if response.status().is_success() || response.status().is_client_error() =>
            {
                if response.status().is_client_error() {
                    tracing::warn!(status = %response.status(), subject = %target.subject, "{kind} refused");
                }
                state.with_inner(|i| target.kind.count(&mut i.stats, true));
                return;
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), attempt, "{kind} failed; retrying");
            }
            Err(e) => tracing::debug!(error = %e, attempt, "{kind} failed; retrying"),
        }
        tokio::time::sleep(backoff.delay(attempt)).await;
    }
    state.with_inner(|i| target.kind.count(&mut i.stats, false));
    tracing::warn!(subject = %target.subject, "{kind} not delivered after 5 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature matches the command API's scheme: HMAC of "t.body".
    #[test]
    fn signature_binds_time_and_body() {
        let a = sign(b"k", 100, b"{}");
        assert!(a.starts_with("t=100,v1="));
        assert_ne!(a, sign(b"k", 101, b"{}"));
        assert_ne!(a, sign(b"k", 100, b"{ }"));
        assert_ne!(a, sign(b"j", 100, b"{}"));
    }
}
