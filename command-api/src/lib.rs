//! The REST command service (writes): bookings, visits, partner callbacks, operator actions.
//!
//! Depends on `domain` and `store`, never on the query API, projector or workers. Today it serves the
//! health routes; the command routes of DESIGN.md "REST" are the command-API issue.
//!
//! # Layout
//! - `health`: `/healthz` (the process is up) and `/readyz` (the database answers).
#![forbid(unsafe_code)]

mod health;

use axum::routing::get;
use axum::Router;
use store::EventStore;
use tower_http::trace::TraceLayer;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: EventStore,
}

/// The command API's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
