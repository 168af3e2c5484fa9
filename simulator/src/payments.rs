//! The payment provider's routes: charge (one ledger entry per idempotency key), look up, refund (at most
//! once per payment).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::delivery::{new_webhook_id, send_payment_webhook, PaymentWebhook};
use crate::server::{
    bad_request, error, header_value, inject_front_faults, maybe_hold, replayed, unprocessable,
};
use crate::state::{Payment, Refund, SimState};
use crate::CORRELATION_HEADER;

/// `/v1/payments` and its refund route.
pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/v1/payments", post(create_payment).get(lookup_payments))
        .route("/v1/payments/{payment_id}/refund", post(refund_payment))
}

/// The card number the simulator declines.
pub const DECLINED_CARD: &str = "4000000000000002";

/// No `Debug`: it holds the full card number.
#[derive(Deserialize)]
struct PaymentRequest {
    card: String,
    #[serde(default)]
    amount: Value,
    #[serde(default)]
    client_reference: Option<String>,
}

/// An amount is absent (`null`) or `{"minor": <integer ≥ 0>, "currency": "<code>"}`.
fn check_amount(amount: &Value) -> std::result::Result<(), &'static str> {
    if amount.is_null() {
        return Ok(());
    }
    let minor_ok = amount
        .get("minor")
        .and_then(Value::as_i64)
        .is_some_and(|m| m >= 0);
    let currency_ok = amount
        .get("currency")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if minor_ok && currency_ok {
        Ok(())
    } else {
        Err("amount must be {\"minor\": <integer >= 0>, \"currency\": \"<code>\"}")
    }
}

/// The last 4 characters of a card (all of it when shorter).
fn last4(card: &str) -> String {
    let skip = card.chars().count().saturating_sub(4);
    card.chars().skip(skip).collect()
}

fn payment_answer(payment: &Payment, replay: bool) -> Response {
    let code = if payment.is_captured() {
        StatusCode::OK
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    let response = (code, Json(payment)).into_response();
    if replay {
        replayed(response)
    } else {
        response
    }
}

async fn create_payment(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: std::result::Result<Json<PaymentRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    state.with_inner(|i| i.stats.payment_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(key) = header_value(&headers, "idempotency-key") else {
        return bad_request("the Idempotency-Key header is required");
    };
    let Ok(Json(request)) = body else {
        return bad_request("expected {\"card\",\"amount\",\"client_reference\"}");
    };
    if let Err(message) = check_amount(&request.amount) {
        return unprocessable(message);
    }
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let (payment, created) = state.with_inner(|inner| {
        if let Some(existing) = inner
            .payment_by_key
            .get(&key)
            .and_then(|&n| inner.payments.get(n))
        {
            return (existing.clone(), false);
        }
        let declined = request.card == DECLINED_CARD;
        let payment = Payment {
            payment_id: format!("pay-{}", uuid::Uuid::now_v7().simple()),
            status: if declined { "declined" } else { "captured" }.to_owned(),
            amount: request.amount,
            client_reference: request.client_reference,
            idempotency_key: key.clone(),
            reason: declined.then(|| "card declined".to_owned()),
            card_last4: last4(&request.card),
            correlation_id,
            created_at: Utc::now(),
        };
        let n = inner.payments.len();
        inner.payment_by_key.insert(key.clone(), n);
        inner.payment_by_id.insert(payment.payment_id.clone(), n);
        inner.payments.push(payment.clone());
        if declined {
            inner.stats.payments_declined += 1;
        } else {
            inner.stats.payments_captured += 1;
        }
        (payment, true)
    });
    if created {
        let event = if payment.is_captured() {
            "payment.captured"
        } else {
            "payment.declined"
        };
        send_payment_webhook(
            &state,
            PaymentWebhook {
                webhook_id: new_webhook_id(),
                event: event.to_owned(),
                payment_id: payment.payment_id.clone(),
                refund_id: None,
                client_reference: payment.client_reference.clone(),
                idempotency_key: payment.idempotency_key.clone(),
                status: payment.status.clone(),
                amount: payment.amount.clone(),
                occurred_at: payment.created_at,
                reason: payment.reason.clone(),
            },
            payment.correlation_id.clone(),
        );
    }
    maybe_hold(&state).await;
    payment_answer(&payment, !created)
}

#[derive(Debug, Deserialize)]
struct PaymentQuery {
    idempotency_key: Option<String>,
    client_reference: Option<String>,
}

async fn lookup_payments(
    State(state): State<SimState>,
    Query(query): Query<PaymentQuery>,
) -> Response {
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let key = query.idempotency_key.filter(|k| !k.is_empty());
    let reference = query.client_reference.filter(|r| !r.is_empty());
    if key.is_none() && reference.is_none() {
        return bad_request(
            "the idempotency_key or client_reference query parameter (or both) is required",
        );
    }
    let found: Vec<Payment> = state.with_inner(|i| {
        i.payments
            .iter()
            .filter(|p| key.as_ref().is_none_or(|k| &p.idempotency_key == k))
            .filter(|p| {
                reference
                    .as_ref()
                    .is_none_or(|r| p.client_reference.as_ref() == Some(r))
            })
            .cloned()
            .collect()
    });
    Json(found).into_response()
}

async fn refund_payment(
    State(state): State<SimState>,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.with_inner(|i| i.stats.refund_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let key = header_value(&headers, "idempotency-key");
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let outcome = state.with_inner(|inner| {
        let Some(payment) = inner
            .payment_by_id
            .get(&payment_id)
            .and_then(|&n| inner.payments.get(n))
        else {
            return Err((StatusCode::NOT_FOUND, "unknown payment"));
        };
        if let Some(existing) = inner
            .refund_by_payment
            .get(&payment_id)
            .and_then(|&n| inner.refunds.get(n))
        {
            return Ok((existing.clone(), payment.idempotency_key.clone(), false));
        }
        if !payment.is_captured() {
            return Err((
                StatusCode::CONFLICT,
                "the payment was declined: nothing to refund",
            ));
        }
        let refund = Refund {
            refund_id: format!("ref-{}", uuid::Uuid::now_v7().simple()),
            payment_id: payment.payment_id.clone(),
            status: "refunded".to_owned(),
            amount: payment.amount.clone(),
            client_reference: payment.client_reference.clone(),
            idempotency_key: key,
            correlation_id,
            created_at: Utc::now(),
        };
        let payment_key = payment.idempotency_key.clone();
        inner
            .refund_by_payment
            .insert(payment_id.clone(), inner.refunds.len());
        inner.refunds.push(refund.clone());
        inner.stats.refunds += 1;
        Ok((refund, payment_key, true))
    });
    let (refund, payment_key, created) = match outcome {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    if created {
        send_payment_webhook(
            &state,
            PaymentWebhook {
                webhook_id: new_webhook_id(),
                event: "refund.succeeded".to_owned(),
                payment_id: refund.payment_id.clone(),
                refund_id: Some(refund.refund_id.clone()),
                client_reference: refund.client_reference.clone(),
                idempotency_key: payment_key,
                status: refund.status.clone(),
                amount: refund.amount.clone(),
                occurred_at: refund.created_at,
                reason: None,
            },
            refund.correlation_id.clone(),
        );
    }
    maybe_hold(&state).await;
    let response = Json(&refund).into_response();
    if created {
        response
    } else {
        replayed(response)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Only the last 4 characters of a card are kept.
    #[test]
    fn card_last4_keeps_only_the_tail() {
        assert_eq!(last4("4242424242424242"), "4242");
        assert_eq!(last4(DECLINED_CARD), "0002");
        assert_eq!(last4("12"), "12");
    }

    /// Amounts are absent or `{"minor" >= 0, "currency"}`.
    #[test]
    fn amounts_are_checked() {
        assert!(check_amount(&Value::Null).is_ok());
        assert!(check_amount(&json!({"minor": 25000, "currency": "EUR"})).is_ok());
        assert!(check_amount(&json!({"minor": -1, "currency": "EUR"})).is_err());
        assert!(check_amount(&json!({"minor": 1})).is_err());
        assert!(check_amount(&json!(12)).is_err());
    }
}
