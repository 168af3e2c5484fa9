//! Partner connectors: which partners exist, how to reach each one, and the payment provider.
//!
//! A partners file (TOML, named by `TRAILBOOK_PARTNERS`) lists every partner a booking may name:
//!
//! ```toml
//! [partners.acme-hotels]
//! base_url = "https://api.acme-hotels.example/"
//! api_key = "…"                 # sent as `Authorization: Bearer …` on every call (optional)
//! timeout_ms = 5000             # per call (default 5000)
//! released_statuses = [404, 410] # cancel answers that mean "already gone" (default 404, 410)
//! rate_limit = { capacity = 5, per_second = 2.0 }       # releases and compensations (default)
//! breaker = { failures = 5, open_secs = 10, probe_timeout_secs = 30 }  # (default)
//! callback_secret = "…"         # its own HMAC secret of callbacks (optional, ≥ 16 bytes)
//!
//! [payments]                    # the payment provider (default: the partner simulator's payments)
//! base_url = "https://payments.example/"
//! api_key = "…"
//! timeout_ms = 10000
//! ```
//!
//! Without a file every partner name goes to one base URL (the built-in simulator of `trailbook serve`,
//! or `TRAILBOOK_PARTNER_URL`), which also serves payments: `serve` works out of the box. With a file, a
//! booking for a partner it does not list is refused at the door (422 naming `partner`). Secrets (API
//! keys) are never printed: `Debug` shows only whether one is set.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::booking_flow::PartnerClient;
use crate::compensation::CompensationLimits;
use crate::error::{Error, Result};
use crate::payments::PaymentClient;

/// The `rate_limit` table of a partner: its token bucket for releases and compensations.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed at once.
    pub capacity: u32,
    /// Refill, calls per second.
    pub per_second: f64,
}

/// The `breaker` table of a partner.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures (timeouts, 5xx) that open it.
    pub failures: u32,
    /// How long it stays open, in seconds.
    pub open_secs: u64,
    /// How long a half-open probe may take before another is let through, in seconds.
    #[serde(default = "default_probe_timeout_secs")]
    pub probe_timeout_secs: u64,
}

fn default_probe_timeout_secs() -> u64 {
    30
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_released() -> Vec<u16> {
    vec![404, 410]
}

/// One partner's entry of the partners file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSettings {
    /// Base URL of the partner's reservation API (`http` or `https`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_key>` on every call.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-call timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Answers to a cancel that mean the partner holds nothing any more.
    #[serde(default = "default_released")]
    pub released_statuses: Vec<u16>,
    /// The token bucket of releases and compensations.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The circuit breaker of releases and compensations.
    #[serde(default)]
    pub breaker: Option<Breaker>,
    /// HMAC secret of this partner's status callbacks (at least 16 bytes). With it, a callback must name
    /// the partner and be signed with this secret, and it moves only this partner's bookings; without it
    /// the partner signs with the shared `TRAILBOOK_PARTNER_SECRET`.
    #[serde(default)]
    pub callback_secret: Option<String>,
}

impl std::fmt::Debug for PartnerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("released_statuses", &self.released_statuses)
            .field("rate_limit", &self.rate_limit)
            .field("breaker", &self.breaker)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl PartnerSettings {
    /// Settings for `base_url` with every default.
    pub fn at(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            timeout_ms: default_timeout_ms(),
            released_statuses: default_released(),
            rate_limit: None,
            breaker: None,
            callback_secret: None,
        }
    }

    /// The compensation limits these settings ask for (defaults where unset).
    pub fn limits(&self) -> CompensationLimits {
        let mut limits = CompensationLimits::default();
        if let Some(rate) = self.rate_limit {
            limits.bucket_capacity = rate.capacity;
            limits.per_second = rate.per_second;
        }
        if let Some(breaker) = self.breaker {
            limits.failure_threshold = breaker.failures;
            limits.open_for = Duration::from_secs(breaker.open_secs);
            limits.probe_timeout = Duration::from_secs(breaker.probe_timeout_secs);
        }
        limits
    }
}

/// The `[payments]` table: the payment provider.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Base URL of the provider's payment API.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_key>` on every call.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-call timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The partners file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnersFile {
    /// Every partner a booking may name, by name.
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerSettings>,
    /// The payment provider.
    #[serde(default)]
    pub payments: Option<ProviderSettings>,
}

impl PartnersFile {
    /// Parses and checks a partners file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: Self =
            toml::from_str(text).map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        if file.partners.is_empty() {
            return Err(Error::Invalid(format!(
                "{origin}: lists no [partners.<name>]"
            )));
        }
        for (name, settings) in &file.partners {
            check_url(&settings.base_url)
                .map_err(|e| Error::Invalid(format!("{origin}: partners.{name}.base_url: {e}")))?;
            if settings
                .callback_secret
                .as_ref()
                .is_some_and(|s| s.len() < 16)
            {
                return Err(Error::Invalid(format!(
                    "{origin}: partners.{name}.callback_secret must be at least 16 bytes"
                )));
            }
        }
        if let Some(payments) = &file.payments {
            check_url(&payments.base_url)
                .map_err(|e| Error::Invalid(format!("{origin}: payments.base_url: {e}")))?;
        }
        Ok(file)
    }

    /// Reads and parses the partners file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the partners file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("`{url}`: scheme {other} is not http or https")),
    }
}

/// The partner connectors of a process: a client per partner, and the payment provider's client.
#[derive(Debug, Clone)]
pub struct Partners {
    by_name: Arc<BTreeMap<String, PartnerClient>>,
    /// Serves every partner name when no partners file is given.
    fallback: Option<PartnerClient>,
    payments: PaymentClient,
}

impl Partners {
    /// Every partner name and the payments at one base URL (the simulator, or `TRAILBOOK_PARTNER_URL`).
    pub fn single(base_url: &str, timeout: Duration) -> Result<Self> {
        let settings = PartnerSettings {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ..PartnerSettings::at(base_url)
        };
        Ok(Self {
            by_name: Arc::default(),
            fallback: Some(PartnerClient::new("*", &settings)?),
            payments: PaymentClient::new(&ProviderSettings {
                base_url: base_url.to_owned(),
                api_key: None,
                timeout_ms: settings.timeout_ms,
            })?,
        })
    }

    /// The partners of a partners file; payments go to `[payments]`, else to `default_payments`.
    pub fn from_file(file: &PartnersFile, default_payments: &str) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for (name, settings) in &file.partners {
            by_name.insert(name.clone(), PartnerClient::new(name, settings)?);
        }
        let payments = match &file.payments {
            Some(settings) => PaymentClient::new(settings)?,
            None => PaymentClient::new(&ProviderSettings {
                base_url: default_payments.to_owned(),
                api_key: None,
                timeout_ms: default_timeout_ms(),
            })?,
        };
        Ok(Self {
            by_name: Arc::new(by_name),
            fallback: None,
            payments,
        })
    }

    /// The client of `partner`, or `None` when no such partner is configured.
    pub fn get(&self, partner: &str) -> Option<&PartnerClient> {
        self.by_name.get(partner).or(self.fallback.as_ref())
    }

    /// The configured partner names, or `None` when every name is accepted (no partners file).
    pub fn names(&self) -> Option<Vec<String>> {
        self.fallback
            .is_none()
            .then(|| self.by_name.keys().cloned().collect())
    }

    /// The payment provider's client.
    pub fn payments(&self) -> &PaymentClient {
        &self.payments
    }
}

/// A reqwest client with rustls (so `https` partners work), a per-call timeout, and the API key as a
/// default `Authorization` header marked sensitive (never shown by reqwest's `Debug`).
pub(crate) fn http_client(timeout: Duration, api_key: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| Error::Invalid("an api_key holds characters a header cannot".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build an HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partners file with every field parses; defaults fill what is left out; the key stays hidden.
    #[test]
    fn partners_file_parses_with_defaults_and_hides_keys() {
        let file = PartnersFile::parse(
            r#"
            [partners.acme-hotels]
            base_url = "https://api.acme.example/"
            api_key = "s3cret-key"
            rate_limit = { capacity = 3, per_second = 1.5 }
            breaker = { failures = 4, open_secs = 20 }

            [partners.blue-inn]
            base_url = "http://127.0.0.1:9000"
            released_statuses = [404]
            callback_secret = "blue-inn-callback-secret"

            [payments]
            base_url = "https://pay.example"
            "#,
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let acme = &file.partners["acme-hotels"];
        assert_eq!(acme.timeout_ms, 5000);
        assert_eq!(acme.released_statuses, vec![404, 410]);
        let limits = acme.limits();
        assert_eq!((limits.bucket_capacity, limits.failure_threshold), (3, 4));
        assert_eq!(limits.probe_timeout, Duration::from_secs(30));
        assert!(!format!("{file:?}").contains("s3cret-key"));
        assert!(!format!("{file:?}").contains("blue-inn-callback-secret"));
        let partners =
            Partners::from_file(&file, "http://127.0.0.1:8090").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            partners.names(),
            Some(vec!["acme-hotels".to_owned(), "blue-inn".to_owned()])
        );
        assert!(partners.get("acme-hotels").is_some());
        assert!(partners.get("nobody").is_none());
        assert!(!format!("{partners:?}").contains("s3cret-key"));
    }

    /// Mistakes are refused with the file, table and field named.
    #[test]
    fn partners_file_mistakes_name_the_field() {
        let message = |text: &str| match PartnersFile::parse(text, "p.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(message("").contains("lists no"));
        assert!(message("[partners.a]\nbase_url = \"ftp://x\"").contains("partners.a.base_url"));
        assert!(message("[partners.a]\nbase_url = \"http://x\"\ncolour = 1").contains("colour"));
        assert!(
            message("[partners.a]\nbase_url = \"http://x\"\ncallback_secret = \"short\"")
                .contains("partners.a.callback_secret")
        );
    }

    /// Without a file every partner name is served by the one base URL.
    #[test]
    fn without_a_file_every_partner_goes_to_the_one_url() {
        let partners = Partners::single("http://127.0.0.1:8090", Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(partners.names().is_none());
        assert!(partners.get("anyone").is_some());
    }
}
