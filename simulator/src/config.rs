//! The simulator's configuration and the faults it injects.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Injected faults. Probabilities are in `0..=1`; `cancel_status` is `0` (off) or an HTTP status in
/// `400..=599`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every answer, in milliseconds.
    pub latency_ms: u64,
    /// Do the work, then never answer in time.
    pub timeout_after_success: f64,
    /// Answer `429 Too Many Requests` with `Retry-After`.
    pub rate_429: f64,
    /// Answer `503 Service Unavailable`.
    pub rate_5xx: f64,
    /// Send a callback or webhook twice.
    pub duplicate_callbacks: f64,
    /// Send a callback or webhook late (a late confirmation is followed by a stale rejection).
    pub late_callbacks: f64,
    /// When non-zero, every cancel answers this status and changes nothing.
    pub cancel_status: u16,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every probabilistic fault at a moderate level (`--chaos`); cancels are not refused.
    pub fn chaos() -> Self {
        Self {
            latency_ms: 50,
            timeout_after_success: 0.1,
            rate_429: 0.1,
            rate_5xx: 0.05,
            duplicate_callbacks: 0.2,
            late_callbacks: 0.1,
            cancel_status: 0,
        }
    }

    /// Checks every probability is in `0..=1` and `cancel_status` is `0` or in `400..=599`.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("timeout_after_success", self.timeout_after_success),
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("duplicate_callbacks", self.duplicate_callbacks),
            ("late_callbacks", self.late_callbacks),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Invalid(format!("{name} must be between 0 and 1")));
            }
        }
        if self.cancel_status != 0 && !(400..=599).contains(&self.cancel_status) {
            return Err(Error::Invalid(
                "cancel_status must be 0 (off) or between 400 and 599".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The simulator's configuration (the CLI builds it from flags).
#[derive(Clone)]
pub struct SimConfig {
    /// Where callbacks go (`None`: no callbacks), e.g. `http://127.0.0.1:8080/v1/partner/callbacks`.
    pub callback_url: Option<String>,
    /// Where payment webhooks go (`None`: no webhooks); default [`DEFAULT_PAYMENT_WEBHOOK_URL`].
    pub payment_webhook_url: Option<String>,
    /// HMAC secret of callbacks and webhooks (`TRAILBOOK_PARTNER_SECRET`). Never logged.
    pub secret: Vec<u8>,
    /// When set, every `/v1/...` request needs `Authorization: Bearer <api_key>`. Never logged.
    pub api_key: Option<String>,
    /// The faults at start (`PUT /control/faults` changes them).
    pub faults: Faults,
    /// How long `timeout_after_success` holds an answer.
    pub timeout_hold: Duration,
    /// How late a late callback or webhook comes.
    pub late_callback_delay: Duration,
    /// `Retry-After` seconds of a `429`.
    pub retry_after_secs: u64,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("callback_url", &self.callback_url)
            .field("payment_webhook_url", &self.payment_webhook_url)
            .field("secret", &"[redacted]")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("faults", &self.faults)
            .field("timeout_hold", &self.timeout_hold)
            .field("late_callback_delay", &self.late_callback_delay)
            .field("retry_after_secs", &self.retry_after_secs)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            callback_url: Some(DEFAULT_CALLBACK_URL.to_owned()),
            payment_webhook_url: Some(DEFAULT_PAYMENT_WEBHOOK_URL.to_owned()),
            secret: Vec::new(),
            api_key: None,
            faults: Faults::none(),
            timeout_hold: Duration::from_secs(30),
            late_callback_delay: Duration::from_secs(3),
            retry_after_secs: 1,
        }
    }
}

/// The default of `--callback-url`.
pub const DEFAULT_CALLBACK_URL: &str = "http://127.0.0.1:8080/v1/partner/callbacks";
/// The default of [`SimConfig::payment_webhook_url`].
pub const DEFAULT_PAYMENT_WEBHOOK_URL: &str = "http://127.0.0.1:8080/v1/payments/webhooks";

/// True with probability `p`.
pub(crate) fn chance(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities outside 0..1 are refused.
    #[test]
    fn faults_validate_probabilities() {
        assert!(Faults::chaos().validate().is_ok());
        let bad = Faults {
            rate_429: 1.5,
            ..Faults::none()
        };
        assert!(bad.validate().is_err());
    }

    /// `cancel_status` is off (0) or an error status in 400..=599; anything else is refused.
    #[test]
    fn faults_validate_the_cancel_status() {
        for ok in [0, 400, 409, 410, 599] {
            let faults = Faults {
                cancel_status: ok,
                ..Faults::none()
            };
            assert!(faults.validate().is_ok(), "{ok}");
        }
        for bad in [1, 200, 399, 600] {
            let faults = Faults {
                cancel_status: bad,
                ..Faults::none()
            };
            assert!(faults.validate().is_err(), "{bad}");
        }
    }

    /// The debug output shows neither the secret nor the API key.
    #[test]
    fn debug_output_redacts_the_secret_and_the_api_key() {
        let config = SimConfig {
            secret: b"hunter2-secret".to_vec(),
            api_key: Some("sk_live_abcdef".to_owned()),
            ..SimConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk_live_abcdef"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("[redacted]"));
    }
}
