//! What the simulator holds: reservations, payments and refunds, and its request counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Faults, SimConfig};
use crate::error::{Error, Result};

/// A reservation at the simulated partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The partner's id, `res-<uuid>`.
    pub reservation_id: String,
    /// Our booking id.
    pub client_reference: String,
    /// What is reserved (`""` when the request named nothing).
    pub resource: String,
    /// `confirmed`, `rejected` or `cancelled`.
    pub status: String,
    /// Start of the reserved period, if the request gave one.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the reserved period, if the request gave one.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Number of guests, if the request gave one.
    #[serde(default)]
    pub guests: Option<u32>,
    /// The `X-Correlation-Id` of the creating request.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// When the partner created it.
    pub created_at: DateTime<Utc>,
}

/// A payment attempt at the simulated provider (captured or declined): one per idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's id, `pay-<uuid>`.
    pub payment_id: String,
    /// `captured` or `declined`.
    pub status: String,
    /// The amount as requested (`{"minor","currency"}`, or `null` when none was given).
    pub amount: Value,
    /// Our booking id, if the request gave one.
    pub client_reference: Option<String>,
    /// The `Idempotency-Key` of the creating request.
    pub idempotency_key: String,
    /// `null` when captured, `"card declined"` when declined.
    pub reason: Option<String>,
    /// The last 4 characters of the card (the full number is never kept).
    pub card_last4: String,
    /// The `X-Correlation-Id` of the creating request.
    pub correlation_id: Option<String>,
    /// When the provider recorded it.
    pub created_at: DateTime<Utc>,
}

impl Payment {
    /// Whether money was taken.
    pub fn is_captured(&self) -> bool {
        self.status == "captured"
    }
}

/// A refund of a captured payment: at most one per payment, always of the full amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The provider's id, `ref-<uuid>`.
    pub refund_id: String,
    /// The refunded payment.
    pub payment_id: String,
    /// Always `refunded`.
    pub status: String,
    /// The payment's amount.
    pub amount: Value,
    /// The payment's client reference.
    pub client_reference: Option<String>,
    /// The `Idempotency-Key` of the creating request, if it had one.
    pub idempotency_key: Option<String>,
    /// The `X-Correlation-Id` of the creating request.
    pub correlation_id: Option<String>,
    /// When the provider recorded it.
    pub created_at: DateTime<Utc>,
}

/// Everything the simulator holds (`GET /control/ledger`), for tests to count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Every reservation, oldest first.
    pub reservations: Vec<Reservation>,
    /// Every payment attempt (captured or declined), oldest first.
    pub payments: Vec<Payment>,
    /// Every refund, oldest first.
    pub refunds: Vec<Refund>,
    /// Sum of the captured payments' `amount.minor`.
    pub charged_minor: i64,
    /// Sum of the refunds' `amount.minor`.
    pub refunded_minor: i64,
}

/// Request counters (`GET /control/stats`), for tests and demos.
///
/// `requests` counts the `/v1` requests that passed the API key check; `unauthorized` those that did not
/// (they count nowhere else). Partner callbacks count in `callbacks_*`, payment webhooks in `webhooks_*`;
/// a delivery counts as sent once the receiver answered 2xx or 4xx.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub unauthorized: u64,
    pub reservations_created: u64,
    pub reservation_requests: u64,
    pub cancel_requests: u64,
    /// Cancels refused by the `cancel_status` fault.
    pub cancels_refused: u64,
    pub payment_requests: u64,
    /// Payment entries created as captured (replays do not count).
    pub payments_captured: u64,
    /// Payment entries created as declined (replays do not count).
    pub payments_declined: u64,
    pub refund_requests: u64,
    /// Refunds created (replays do not count).
    pub refunds: u64,
    pub throttled_429: u64,
    pub failed_5xx: u64,
    pub held_timeouts: u64,
    pub callbacks_sent: u64,
    pub callbacks_failed: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) by_reference: HashMap<String, Reservation>,
    /// reservation id → client reference
    pub(crate) by_id: HashMap<String, String>,
    /// In creation order.
    pub(crate) payments: Vec<Payment>,
    /// idempotency key → index in `payments`
    pub(crate) payment_by_key: HashMap<String, usize>,
    /// payment id → index in `payments`
    pub(crate) payment_by_id: HashMap<String, usize>,
    /// In creation order.
    pub(crate) refunds: Vec<Refund>,
    /// payment id → index in `refunds`
    pub(crate) refund_by_payment: HashMap<String, usize>,
    pub(crate) stats: Stats,
}

/// Shared state of the simulator.
#[derive(Clone)]
pub struct SimState {
    config: Arc<Mutex<SimConfig>>,
    inner: Arc<Mutex<Inner>>,
    pub(crate) http: reqwest::Client,
}

impl SimState {
    /// Checks the configuration (faults, a non-empty API key) and builds the state.
    pub fn new(config: SimConfig) -> Result<Self> {
        config.faults.validate()?;
        if config.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Invalid(
                "the partner simulator's API key must not be empty".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            config: Arc::new(Mutex::new(config)),
            inner: Arc::new(Mutex::new(Inner::default())),
            http,
        })
    }

    pub(crate) fn config(&self) -> SimConfig {
        match self.config.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the faults (`PUT /control/faults`).
    pub(crate) fn set_faults(&self, faults: Faults) {
        match self.config.lock() {
            Ok(mut c) => c.faults = faults,
            Err(poisoned) => poisoned.into_inner().faults = faults,
        }
    }

    pub(crate) fn with_inner<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.with_inner(|i| i.stats.clone())
    }

    /// Every reservation, payment and refund, with the charged and refunded totals.
    pub fn ledger(&self) -> Ledger {
        self.with_inner(|i| {
            let mut reservations: Vec<Reservation> = i.by_reference.values().cloned().collect();
            reservations.sort_by(|a, b| {
                (a.created_at, &a.reservation_id).cmp(&(b.created_at, &b.reservation_id))
            });
            let charged_minor = i
                .payments
                .iter()
                .filter(|p| p.is_captured())
                .map(|p| minor(&p.amount))
                .sum();
            let refunded_minor = i.refunds.iter().map(|r| minor(&r.amount)).sum();
            Ledger {
                reservations,
                payments: i.payments.clone(),
                refunds: i.refunds.clone(),
                charged_minor,
                refunded_minor,
            }
        })
    }
}

/// `amount.minor`, or 0 when the amount has none.
fn minor(amount: &Value) -> i64 {
    amount.get("minor").and_then(Value::as_i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An empty API key is a configuration error, not a lock on every route.
    #[test]
    fn an_empty_api_key_is_refused() {
        let config = SimConfig {
            api_key: Some(String::new()),
            ..SimConfig::default()
        };
        assert!(SimState::new(config).is_err());
    }

    /// Only captured payments count as charged; refunds count as refunded.
    #[test]
    fn ledger_totals_count_captures_and_refunds() {
        let state = SimState::new(SimConfig::default()).unwrap();
        let payment = |id: &str, status: &str, minor: i64| Payment {
            payment_id: id.to_owned(),
            status: status.to_owned(),
            amount: json!({"minor": minor, "currency": "EUR"}),
            client_reference: None,
            idempotency_key: id.to_owned(),
            reason: None,
            card_last4: "4242".to_owned(),
            correlation_id: None,
            created_at: Utc::now(),
        };
        state.with_inner(|i| {
            i.payments.push(payment("a", "captured", 100));
            i.payments.push(payment("b", "declined", 50));
            i.refunds.push(Refund {
                refund_id: "r".to_owned(),
                payment_id: "a".to_owned(),
                status: "refunded".to_owned(),
                amount: json!({"minor": 100, "currency": "EUR"}),
                client_reference: None,
                idempotency_key: None,
                correlation_id: None,
                created_at: Utc::now(),
            });
        });
        let ledger = state.ledger();
        assert_eq!(ledger.charged_minor, 100);
        assert_eq!(ledger.refunded_minor, 100);
        assert_eq!(ledger.payments.len(), 2);
    }
}
