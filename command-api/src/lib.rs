//! The REST command service (writes): bookings, visits, partner callbacks, operator actions.
//!
//! Depends on `domain`, `store` and `service-kit` (tokens, secrets, metrics), and on `projector` and
//! `workers` for the operator routes (rebuild, replay); never on the query API, which stands on the
//! same floor. Every error leaves as RFC 7807 problem+json, mapped in `error` only.
//!
//! # Layout
//! - `bookings`, `visits`: the aggregate routes (create is idempotent; reads fold the event store).
//! - `callbacks`: HMAC-signed partner callbacks.
//! - `payments`: HMAC-signed payment provider webhooks.
//! - `resource`: what routes need of an aggregate ([`resource::Resource`]), the request extractors whose
//!   `allow` leads to the shared command, create and read paths.
//! - `idempotency`: `Idempotency-Key` records, derived aggregate ids, replayed answers.
//! - `auth`: the caller of a request (tokens and role rules are `service_kit`'s).
//! - `extract`: JSON body, `Idempotency-Key`, `If-Match`, correlation id extractors.
//! - `middleware`: correlation ids, request metrics, rate limiting (budgets are `service_kit::limits`).
//! - `health`, `ops`: health, readiness, metrics, OpenAPI, and operator routes.
//! - `openapi`: the field schemas and implied answers that make the OpenAPI document the truth.
//! - `error`: [`ApiError`] and the HTTP mapping.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bookings;
pub mod callbacks;
pub mod error;
pub mod extract;
mod health;
pub mod idempotency;
pub mod middleware;
pub mod openapi;
mod ops;
pub mod payments;
pub mod resource;
pub mod visits;

use secrecy::SecretSlice;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use domain::values::Actor;
use metrics_exporter_prometheus::PrometheusHandle;
use store::{CommandContext, EventStore};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, Tokens};
pub use error::ApiError;

/// Settings of the command API.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: chrono::Duration,
    /// Requests per second per verified caller (token subject, or signing partner); 0: unlimited.
    pub rate_limit: u32,
    /// Requests per second per client address for requests that verify as no one (no token, a bad
    /// one, a bad signature); 0: unlimited.
    pub anonymous_rate_limit: u32,
    /// Most requests handled at once (0: unlimited); see [`middleware::in_flight`].
    pub max_in_flight: usize,
    /// How long a request beyond `max_in_flight` waits for a slot before a 503.
    pub in_flight_wait: std::time::Duration,
    /// The partners a booking may name and their callback secrets (from the partners file); `None`: any
    /// name, every callback signed with the shared partner secret (the simulator).
    pub partners: Option<Arc<PartnerDirectory>>,
}

/// The partners of the partners file as the command API needs them: their names, and the callback
/// secret of those that have their own (wrapped: exposed only where a signature is checked). `Debug`
/// shows the names only.
#[derive(Clone, Default)]
pub struct PartnerDirectory {
    secrets: std::collections::BTreeMap<String, Option<Arc<SecretSlice<u8>>>>,
}

impl PartnerDirectory {
    /// Partner `name`, with its own callback secret if it has one.
    pub fn with(mut self, name: impl Into<String>, callback_secret: Option<&[u8]>) -> Self {
        self.secrets.insert(
            name.into(),
            callback_secret.map(|secret| Arc::new(SecretSlice::from(secret.to_vec()))),
        );
        self
    }

    /// Whether bookings may name `partner`.
    pub fn contains(&self, partner: &str) -> bool {
        self.secrets.contains_key(partner)
    }

    /// The callback secret of `partner`, if it has its own.
    pub fn callback_secret(&self, partner: &str) -> Option<&[u8]> {
        use secrecy::ExposeSecret;
        self.secrets
            .get(partner)
            .and_then(|s| s.as_deref())
            .map(|secret| secret.expose_secret())
    }
}

impl std::fmt::Debug for PartnerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.secrets.keys()).finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idempotency_ttl: chrono::Duration::hours(24),
            rate_limit: 500,
            anonymous_rate_limit: 20,
            max_in_flight: 128,
            in_flight_wait: std::time::Duration::from_secs(2),
            partners: None,
        }
    }
}

/// What every handler can reach. `Debug` shows no secret: the tokens' keys and the partner secret print
/// as redacted.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: EventStore,
    pub tokens: Tokens,
    /// The callback secret of partners without their own (and of the payment provider's webhooks).
    pub partner_secret: Arc<SecretSlice<u8>>,
    pub config: Arc<Config>,
    pub limits: Arc<service_kit::Limits>,
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    pub fn new(store: EventStore, tokens: Tokens, partner_secret: &[u8], config: Config) -> Self {
        Self {
            store,
            tokens,
            partner_secret: Arc::new(SecretSlice::from(partner_secret.to_vec())),
            limits: service_kit::Limits::new(config.rate_limit, config.anonymous_rate_limit, 0),
            config: Arc::new(config),
            metrics: service_kit::metrics::handle(),
        }
    }
}

/// The metadata context of a command issued by `caller` within request `correlation`.
pub(crate) fn context(caller: &Caller, correlation: String, command: &str) -> CommandContext {
    CommandContext {
        causation_id: Some(format!("cmd-{}", uuid::Uuid::now_v7())),
        correlation_id: correlation,
        actor: Some(Actor {
            subject: caller.0.subject.clone(),
            role: caller.0.role,
        }),
        idempotency_key: None,
        command: Some(command.to_string()),
        request_correlation_id: None,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "trailbook command API", description = "Writes: bookings, visits, partner callbacks. Errors are RFC 7807 problem+json."),
    modifiers(&BearerAuth),
    components(schemas(error::Problem)),
    tags((name = "bookings"), (name = "visits"), (name = "partner"), (name = "operations"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document generated from their annotations.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(bookings::create))
        .routes(routes!(bookings::get))
        .routes(routes!(bookings::cancel))
        .routes(routes!(bookings::payment))
        .routes(routes!(bookings::resolve))
        .routes(routes!(payments::webhook))
        .routes(routes!(callbacks::receive))
        .routes(routes!(visits::create))
        .routes(routes!(visits::get))
        .routes(routes!(visits::check_in))
        .routes(routes!(visits::start))
        .routes(routes!(visits::complete))
        .routes(routes!(visits::cancel))
        .routes(routes!(visits::no_show))
        .routes(routes!(ops::replay_job))
        .routes(routes!(ops::rebuild_projection, ops::rebuild_progress))
        .routes(routes!(ops::projections))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts()
}

/// The OpenAPI document of the command API, as served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    openapi::finish(&routes().1)
}

/// The command API's router.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes();
    let api = Arc::new(openapi::finish(&api));
    router
        .route("/openapi.json", get(move || ops::openapi_json(api.clone())))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::metrics))
        .layer(axum::middleware::from_fn_with_state(
            middleware::InFlight::new(state.config.max_in_flight, state.config.in_flight_wait),
            middleware::in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(middleware::correlation))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AppState`'s `Debug` (which a stray `{:?}` in a log line would print) shows neither the token
    /// secret nor the partner secret, in any encoding.
    #[tokio::test]
    async fn app_state_debug_shows_no_secret() {
        let Ok(pool) = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none") else {
            panic!("a lazy pool does not connect");
        };
        let store = EventStore::new(pool, store::StoreConfig::default());
        let token_secret = b"token-secret-0123456789abcdef-xyz";
        let partner_secret = b"partner-secret-0123456789abcdef-xyz";
        let Ok(tokens) = Tokens::new(token_secret) else {
            panic!("the test secret is long enough");
        };
        let state = AppState::new(store, tokens, partner_secret, Config::default());
        let printed = format!("{state:?} {state:#?}");
        for secret in [&token_secret[..], &partner_secret[..]] {
            let text = std::str::from_utf8(secret).unwrap_or_default();
            assert!(!printed.contains(text), "{printed}");
            assert!(!printed.contains(&hex::encode(secret)), "{printed}");
            assert!(!printed.contains(&format!("{secret:?}")), "{printed}");
        }
    }
}
