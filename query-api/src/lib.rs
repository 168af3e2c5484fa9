//! The GraphQL query service (reads, and the operator's one action, `resolveBooking`): read models, time
//! travel, audit history, the operations board, and live subscriptions, at `/graphql` (GraphiQL on `GET /graphql`, WebSocket subscriptions on the same path).
//!
//! It reads the projector's read models for everyday queries, through the projector's catalog
//! (`projector::catalog`: rows, pages and checkpoints, with no SQL of its own on those tables), and folds
//! the event store where the answer must be exact (`consistency: STRONG`, `asOf`, `atVersion`), so support
//! sees the truth even while a read model is behind or being rebuilt. `minPosition` gives read-your-writes: it waits, bounded, until the
//! read model has applied the caller's write.
//!
//! # Layout
//! - `http`: the axum routes, bearer tokens into the request, error codes on validation failures.
//! - `query`: the query root and its connections; `jobs`: jobs and their execution log; `feed`: the live
//!   feed and the subscription root.
//! - `mutation`: operator actions (`resolveBooking`), the same commands as REST.
//! - `read`: folding one aggregate; one read-model row or a page of them, as answers; list cursors.
//! - `types`: the GraphQL object types; `auth`: who may read what; `error`: [`error::QueryError`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod feed;
mod http;
pub mod jobs;
pub mod mutation;
pub mod query;
pub mod read;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Schema;
use store::EventStore;

pub use http::app;

/// The schema type of the query API.
pub type QuerySchema = Schema<query::QueryRoot, mutation::MutationRoot, feed::SubscriptionRoot>;

/// Settings of the query API.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest wait for `minPosition` before answering `NOT_YET_CONSISTENT`.
    pub min_position_timeout: Duration,
    /// Most `minPosition` waits one subject may hold at once (more: `TOO_MANY_WAITS`).
    pub max_waits_per_subject: usize,
    /// Requests per second per verified subject (0: unlimited); see `service_kit::limits`.
    pub rate_limit: u32,
    /// Requests per second per client address for requests without a valid token (0: unlimited).
    pub anonymous_rate_limit: u32,
    /// Largest `first` of a list.
    pub max_page_size: i64,
    /// Deepest selection accepted.
    pub max_depth: usize,
    /// Largest complexity accepted (a field costs 1; a list costs `first` times its selection).
    pub max_complexity: usize,
    /// Which items the status board lists as stuck.
    pub stuck_rules: Vec<projector::StuckRule>,
    /// How often the live feed polls the log when no NOTIFY arrives.
    pub feed_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_position_timeout: Duration::from_secs(5),
            max_waits_per_subject: 4,
            rate_limit: 500,
            anonymous_rate_limit: 20,
            max_page_size: 100,
            max_depth: 15,
            max_complexity: 5000,
            stuck_rules: projector::StuckRule::defaults(),
            feed_poll: Duration::from_millis(250),
        }
    }
}

/// What every resolver can reach (put into the schema's data).
#[derive(Debug, Clone)]
pub struct QueryState {
    pub store: EventStore,
    pub config: Arc<Config>,
    pub feed: feed::Feed,
}

/// The schema with its limits and shared state. Must be called inside a tokio runtime (it starts the live
/// feed's task).
/// `limits` are the budgets the HTTP layer charges too (`app`); the schema holds them for the cap on
/// `minPosition` waits.
pub fn schema(store: EventStore, config: Config, limits: Arc<service_kit::Limits>) -> QuerySchema {
    let feed = feed::Feed::spawn(store.pool().clone(), config.feed_poll);
    let (depth, complexity) = (config.max_depth, config.max_complexity);
    let state = QueryState {
        store,
        config: Arc::new(config),
        feed,
    };
    Schema::build(
        query::QueryRoot::default(),
        mutation::MutationRoot,
        feed::SubscriptionRoot,
    )
    .data(state)
    .data(limits)
    .limit_depth(depth)
    .limit_complexity(complexity)
    .finish()
}

/// The schema in SDL, as checked into the repository as `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        query::QueryRoot::default(),
        mutation::MutationRoot,
        feed::SubscriptionRoot,
    )
    .finish()
    .sdl()
}
