//! The booking flow's partner side: reserve at the partner, record the outcome, reconcile unknown outcomes.
//!
//! - `partner.reserve` ([`ReserveHandler`]): records the attempt (`RecordReservationRequested`), calls
//!   `POST /v1/reservations` with the booking id as `Idempotency-Key`, and records the answer
//!   (`ApplyPartnerStatus`, source `response`). A timeout, a broken connection or a 5xx is *unknown*, never
//!   failed: it is recorded (`RecordReservationOutcomeUnknown`) and the reactor enqueues a
//!   `partner.reconcile` job for that event. A 429 retries after the partner's `Retry-After`.
//! - `partner.reconcile` ([`ReconcileHandler`]): asks `GET /v1/reservations?client_reference=<booking id>`
//!   and records what the partner holds (source `lookup`). If the partner holds nothing, it reserves again:
//!   the idempotency key makes that safe, so a retry never creates a second reservation.
//!
//! Both handlers load the booking first and do nothing unless it is still waiting for the partner, so a job
//! that runs again (after a crash or a lost outcome) is harmless.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::booking::{BookingCommand, BookingStatus, PartnerReportedStatus, PartnerSource};
use domain::Booking;
use serde::Deserialize;
use serde_json::json;
use store::{CommandContext, EventStore};

use crate::error::{Error, Result};
use crate::jobs::Job;
use crate::worker::{Handler, HandlerError};
use crate::write_back;

/// A client of the partner API.
#[derive(Debug, Clone)]
pub struct PartnerClient {
    http: reqwest::Client,
    base_url: String,
}

/// What the partner said about a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartnerReservation {
    pub reservation_id: String,
    pub status: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// How a partner call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome<T> {
    Answered(T),
    /// Timeout, broken connection or 5xx: the partner may or may not have done it.
    Unknown(String),
    /// 429: come back after this long.
    RateLimited(Duration),
    /// 4xx other than 429: retrying the same request cannot help.
    Refused(String),
}

impl PartnerClient {
    /// A client of the partner at `base_url` (e.g. `http://127.0.0.1:8090`) with a per-call `timeout`.
    pub fn new(base_url: impl Into<String>, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build the partner HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        })
    }

    /// `POST /v1/reservations` with `Idempotency-Key: <booking id>`.
    pub async fn reserve(
        &self,
        booking_id: &str,
        resource: &str,
    ) -> CallOutcome<PartnerReservation> {
        let request = self
            .http
            .post(format!("{}/v1/reservations", self.base_url))
            .header("Idempotency-Key", booking_id)
            .json(&json!({ "resource": resource }));
        outcome(request.send().await).await
    }

    /// `POST /v1/reservations/{id}/cancel`. A 404 (no such reservation) comes back as `Refused`.
    pub async fn cancel(&self, reservation_id: &str) -> CallOutcome<PartnerReservation> {
        let request = self.http.post(format!(
            "{}/v1/reservations/{reservation_id}/cancel",
            self.base_url
        ));
        outcome(request.send().await).await
    }

    /// `GET /v1/reservations?client_reference=<booking id>`: the reservation, if the partner holds one.
    pub async fn lookup(&self, booking_id: &str) -> CallOutcome<Option<PartnerReservation>> {
        let request = self
            .http
            .get(format!("{}/v1/reservations", self.base_url))
            .query(&[("client_reference", booking_id)]);
        match outcome::<Vec<PartnerReservation>>(request.send().await).await {
            CallOutcome::Answered(mut found) => CallOutcome::Answered(found.pop()),
            CallOutcome::Unknown(e) => CallOutcome::Unknown(e),
            CallOutcome::RateLimited(d) => CallOutcome::RateLimited(d),
            CallOutcome::Refused(e) => CallOutcome::Refused(e),
        }
    }
}

async fn outcome<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> CallOutcome<T> {
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return CallOutcome::Unknown("partner timed out".to_owned()),
        Err(e) => return CallOutcome::Unknown(format!("partner unreachable: {e}")),
    };
    let status = response.status();
    if status.as_u16() == 429 {
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        return CallOutcome::RateLimited(Duration::from_secs(after.min(3600)));
    }
    if status.is_server_error() {
        return CallOutcome::Unknown(format!("partner answered {status}"));
    }
    if status.is_client_error() {
        return CallOutcome::Refused(format!("partner answered {status}"));
    }
    match response.json::<T>().await {
        Ok(body) => CallOutcome::Answered(body),
        Err(e) if e.is_timeout() => CallOutcome::Unknown("partner timed out".to_owned()),
        Err(e) => CallOutcome::Unknown(format!("unreadable partner answer: {e}")),
    }
}

fn booking_id(job: &Job) -> std::result::Result<String, HandlerError> {
    write_back::payload_str(job, "booking_id")
}

fn reported(status: &str) -> Option<PartnerReportedStatus> {
    match status {
        "confirmed" => Some(PartnerReportedStatus::Confirmed),
        "rejected" => Some(PartnerReportedStatus::Rejected),
        "cancelled" => Some(PartnerReportedStatus::Cancelled),
        _ => None,
    }
}

async fn execute(
    store: &EventStore,
    id: &str,
    command: BookingCommand,
    context: &CommandContext,
) -> std::result::Result<(), HandlerError> {
    write_back::execute::<Booking>(store, id, command, context).await
}

async fn load(store: &EventStore, id: &str) -> std::result::Result<Booking, HandlerError> {
    write_back::load::<Booking>(store, id).await
}

async fn record_answer(
    store: &EventStore,
    id: &str,
    answer: PartnerReservation,
    source: PartnerSource,
    context: &CommandContext,
) -> std::result::Result<(), HandlerError> {
    let Some(reported) = reported(&answer.status) else {
        return Err(HandlerError::Retry(format!(
            "partner reported an unknown status `{}`",
            answer.status
        )));
    };
    let command = BookingCommand::ApplyPartnerStatus {
        reported,
        reservation_id: Some(answer.reservation_id),
        source,
        partner_time: answer.created_at.unwrap_or_else(Utc::now),
        reason: None,
    };
    execute(store, id, command, context).await
}

fn waiting_for_partner(booking: &Booking) -> bool {
    matches!(
        booking.status,
        BookingStatus::Requested | BookingStatus::PartnerPending
    )
}

/// Runs `partner.reserve`.
pub struct ReserveHandler {
    pub store: EventStore,
    pub partner: PartnerClient,
}

/// A refusal to record a partner outcome because the booking has moved on (a callback confirmed it while
/// our call timed out, and the customer paid) is not a failure of the job: the outcome was settled by
/// another path. Anything else stands.
async fn unless_settled_elsewhere(
    store: &EventStore,
    id: &str,
    result: std::result::Result<(), HandlerError>,
) -> std::result::Result<(), HandlerError> {
    let Err(HandlerError::Permanent(reason)) = &result else {
        return result;
    };
    match load(store, id).await {
        Ok(booking) if booking.exists() && !waiting_for_partner(&booking) => {
            tracing::info!(booking_id = %id, status = ?booking.status, refused = %reason,
                "partner outcome already settled by another path; nothing to record");
            Ok(())
        }
        _ => result,
    }
}

#[async_trait]
impl Handler for ReserveHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = booking_id(job)?;
        let result = self.reserve(job, &id).await;
        unless_settled_elsewhere(&self.store, &id, result).await
    }
}

impl ReserveHandler {
    async fn reserve(&self, job: &Job, id: &str) -> std::result::Result<(), HandlerError> {
        let id = id.to_owned();
        let context = write_back::context(job);
        let booking = load(&self.store, &id).await?;
        if !waiting_for_partner(&booking) {
            return Ok(());
        }
        let attempt = booking.partner_attempts.saturating_add(1);
        let requested = BookingCommand::RecordReservationRequested {
            attempt,
            at: Utc::now(),
        };
        execute(&self.store, &id, requested, &context).await?;
        match self.partner.reserve(&id, &booking.resource).await {
            CallOutcome::Answered(answer) => {
                record_answer(&self.store, &id, answer, PartnerSource::Response, &context).await
            }
            CallOutcome::Unknown(reason) => {
                tracing::warn!(booking_id = %id, attempt, reason = %reason, "reservation outcome unknown; reconciliation will settle it");
                let unknown = BookingCommand::RecordReservationOutcomeUnknown { attempt, reason };
                execute(&self.store, &id, unknown, &context).await
            }
            CallOutcome::RateLimited(after) => Err(HandlerError::RetryAfter {
                after,
                message: "partner rate limited the reservation".to_owned(),
            }),
            CallOutcome::Refused(reason) => Err(HandlerError::Permanent(reason)),
        }
    }
}

/// Runs `partner.reconcile`.
pub struct ReconcileHandler {
    pub store: EventStore,
    pub partner: PartnerClient,
}

#[async_trait]
impl Handler for ReconcileHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = booking_id(job)?;
        let result = self.reconcile(job, &id).await;
        unless_settled_elsewhere(&self.store, &id, result).await
    }
}

impl ReconcileHandler {
    async fn reconcile(&self, job: &Job, id: &str) -> std::result::Result<(), HandlerError> {
        let id = id.to_owned();
        let context = write_back::context(job);
        let booking = load(&self.store, &id).await?;
        if !waiting_for_partner(&booking) {
            return Ok(());
        }
        let found = match self.partner.lookup(&id).await {
            CallOutcome::Answered(found) => found,
            CallOutcome::Unknown(reason) => return Err(HandlerError::Retry(reason)),
            CallOutcome::RateLimited(after) => {
                return Err(HandlerError::RetryAfter {
                    after,
                    message: "partner rate limited the lookup".to_owned(),
                })
            }
            CallOutcome::Refused(reason) => return Err(HandlerError::Permanent(reason)),
        };
        match found {
            Some(answer) => {
                record_answer(&self.store, &id, answer, PartnerSource::Lookup, &context).await
            }
            // The partner holds nothing: reserve again (same idempotency key, so never twice).
            None => match self.partner.reserve(&id, &booking.resource).await {
                CallOutcome::Answered(answer) => {
                    record_answer(&self.store, &id, answer, PartnerSource::Response, &context).await
                }
                CallOutcome::Unknown(reason) => Err(HandlerError::Retry(reason)),
                CallOutcome::RateLimited(after) => Err(HandlerError::RetryAfter {
                    after,
                    message: "partner rate limited the reservation".to_owned(),
                }),
                CallOutcome::Refused(reason) => Err(HandlerError::Permanent(reason)),
            },
        }
    }
}
