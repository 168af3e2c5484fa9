//! What the routes need to know about an aggregate, and the one command path both aggregates share.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use domain::booking::BookingError;
use domain::visit::VisitError;
use domain::{Booking, Visit};
use serde_json::{json, Value};
use store::ExecuteOptions;

use crate::auth::Caller;
use crate::error::{ApiError, DomainError};
use crate::extract::IfMatch;
use crate::{context, AppState};

/// An aggregate served over REST.
pub trait Resource: store::WriteRules<Services = ()>
where
    Self::Command: Clone,
    Self::Error: DomainError,
{
    /// `booking` or `visit`: the path segment (plural), the `<kind>_id` answer field, messages.
    const KIND: &'static str;
    /// The client who owns it.
    fn owner(&self) -> &str;
    /// Its status, snake_case.
    fn status(&self) -> &'static str;
    /// Whether a create failed only because the aggregate exists.
    fn already_exists(error: &Self::Error) -> bool;

    /// The answer of every command: `{"<kind>_id", "status", "version", "position"}`.
    fn answer(&self, id: &str, version: u64, position: Option<i64>) -> Value {
        json!({
            format!("{}_id", Self::KIND): id,
            "status": self.status(),
            "version": version,
            "position": position,
        })
    }
}

impl Resource for Booking {
    const KIND: &'static str = "booking";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn status(&self) -> &'static str {
        self.status.as_str()
    }
    fn already_exists(error: &BookingError) -> bool {
        matches!(error, BookingError::AlreadyExists)
    }
}

impl Resource for Visit {
    const KIND: &'static str = "visit";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn status(&self) -> &'static str {
        self.status.as_str()
    }
    fn already_exists(error: &VisitError) -> bool {
        matches!(error, VisitError::AlreadyExists)
    }
}

/// Runs a command on an existing aggregate the caller may access (others' ids answer 404), with
/// `If-Match`, and answers 200 with the new version as `ETag`. The aggregate's write rules (e.g. the
/// booking's slot claim) run inside the store, whatever the command.
pub async fn run<A>(
    state: &AppState,
    caller: &Caller,
    correlation: String,
    id: &str,
    name: &'static str,
    command: A::Command,
    if_match: IfMatch,
) -> Result<Response, ApiError>
where
    A: Resource,
    A::Command: Clone,
    A::Error: DomainError,
{
    let ctx = context(caller, correlation, name);
    let options = ExecuteOptions {
        expected_version: if_match.0,
        ..ExecuteOptions::default()
    };
    let result = state
        .store
        .execute::<A>(id, command, &(), &ctx, options)
        .visible_if(|a: &A| caller.may_access(a.owner()))
        .await;
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "refused"
    };
    metrics::counter!("trailbook_commands_total", "command" => name, "outcome" => outcome)
        .increment(1);
    let done = result.map_err(|e| ApiError::from(e).for_aggregate(A::KIND, id))?;
    let etag = format!("\"{}\"", done.version);
    Ok((
        [(header::ETAG, etag)],
        axum::Json(done.state.answer(id, done.version, done.position)),
    )
        .into_response())
}
