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
//! - `booking.deadline` ([`DeadlineHandler`]): a booking still waiting for its partner when its deadline
//!   passes becomes `failed` with that reason.
//!
//! Every handler loads the booking first and does nothing unless it is still waiting for the partner, so a
//! job that runs again (after a crash or a lost outcome) is harmless. When a reserve or reconcile job will
//! not run again (a 4xx from the partner, or its last attempt), the booking fails with the reason, so no
//! booking waits for good. Every call carries the saga's correlation id (`X-Correlation-Id`) and the
//! partner's credentials.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::booking::{BookingCommand, PartnerReportedStatus, PartnerSource};
use domain::Booking;
use serde::Deserialize;
use serde_json::json;
use store::{CommandContext, EventStore};

use crate::compensation::CompensationLimits;
use crate::error::Result;
use crate::jobs::Job;
use crate::partners::{http_client, PartnerSettings, Partners};
use crate::worker::{Handler, HandlerError};
use crate::write_back;

/// A client of one partner's API.
#[derive(Debug, Clone)]
pub struct PartnerClient {
    name: String,
    http: reqwest::Client,
    base_url: String,
    released: Vec<u16>,
    limits: CompensationLimits,
}

/// What the partner said about a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartnerReservation {
    pub reservation_id: String,
    pub status: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// How a partner (or payment provider) call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome<T> {
    Answered(T),
    /// Timeout, broken connection or 5xx: the other side may or may not have done it.
    Unknown(String),
    /// 429: come back after this long.
    RateLimited(Duration),
    /// 4xx other than 429: retrying the same request cannot help.
    Refused {
        status: u16,
        reason: String,
    },
}

impl<T> CallOutcome<T> {
    /// The same outcome with the answer changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CallOutcome<U> {
        match self {
            CallOutcome::Answered(t) => CallOutcome::Answered(f(t)),
            CallOutcome::Unknown(e) => CallOutcome::Unknown(e),
            CallOutcome::RateLimited(d) => CallOutcome::RateLimited(d),
            CallOutcome::Refused { status, reason } => CallOutcome::Refused { status, reason },
        }
    }
}

/// The header that carries the saga's correlation id on every outgoing call.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

impl PartnerClient {
    /// A client of partner `name` with its `settings` (credentials, timeout, limits).
    pub fn new(name: &str, settings: &PartnerSettings) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            http: http_client(
                Duration::from_millis(settings.timeout_ms),
                settings.api_key.as_deref(),
            )?,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            released: settings.released_statuses.clone(),
            limits: settings.limits(),
        })
    }

    /// A client of the partner at `base_url` (e.g. `http://127.0.0.1:8090`), every other setting default
    /// but the per-call `timeout`.
    pub fn at(base_url: impl Into<String>, timeout: Duration) -> Result<Self> {
        let settings = PartnerSettings {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ..PartnerSettings::at(base_url)
        };
        Self::new("*", &settings)
    }

    /// The partner's name (`*` for the one client of every partner).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits of releases and compensations at this partner.
    pub fn limits(&self) -> CompensationLimits {
        self.limits
    }

    /// Whether a cancel answered with HTTP `status` means the partner holds nothing any more.
    pub fn means_released(&self, status: u16) -> bool {
        self.released.contains(&status)
    }

    /// `POST /v1/reservations` with `Idempotency-Key: <booking id>`: resource, period, guests and our
    /// booking id as client reference.
    pub async fn reserve(
        &self,
        booking: &Booking,
        correlation: &str,
    ) -> CallOutcome<PartnerReservation> {
        let request = self
            .http
            .post(format!("{}/v1/reservations", self.base_url))
            .header("Idempotency-Key", &booking.id)
            .header(CORRELATION_HEADER, correlation)
            .json(&json!({
                "resource": booking.resource,
                "starts_at": booking.starts_at,
                "ends_at": booking.ends_at,
                "guests": booking.guests,
                "client_reference": booking.id,
            }));
        outcome(request.send().await).await
    }

    /// `POST /v1/reservations/{id}/cancel`.
    pub async fn cancel(
        &self,
        reservation_id: &str,
        correlation: &str,
    ) -> CallOutcome<PartnerReservation> {
        let request = self
            .http
            .post(format!(
                "{}/v1/reservations/{reservation_id}/cancel",
                self.base_url
            ))
            .header(CORRELATION_HEADER, correlation);
        outcome(request.send().await).await
    }

    /// `GET /v1/reservations?client_reference=<booking id>`: the reservation, if the partner holds one.
    pub async fn lookup(
        &self,
        booking_id: &str,
        correlation: &str,
    ) -> CallOutcome<Option<PartnerReservation>> {
        let request = self
            .http
            .get(format!("{}/v1/reservations", self.base_url))
            .header(CORRELATION_HEADER, correlation)
            .query(&[("client_reference", booking_id)]);
        outcome::<Vec<PartnerReservation>>(request.send().await)
            .await
            .map(|mut found| found.pop())
    }
}

/// Sorts an HTTP answer: 2xx parsed as `T`, 429 with its `Retry-After`, other 4xx refused, 5xx and
/// transport failures unknown.
pub(crate) async fn outcome<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> CallOutcome<T> {
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return CallOutcome::Unknown("timed out".to_owned()),
        Err(e) => return CallOutcome::Unknown(format!("unreachable: {e}")),
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
        return CallOutcome::Unknown(format!("answered {status}"));
    }
    if status.is_client_error() {
        return CallOutcome::Refused {
            status: status.as_u16(),
            reason: format!("answered {status}"),
        };
    }
    match response.json::<T>().await {
        Ok(body) => CallOutcome::Answered(body),
        Err(e) if e.is_timeout() => CallOutcome::Unknown("timed out".to_owned()),
        Err(e) => CallOutcome::Unknown(format!("unreadable answer: {e}")),
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
    booking.exists() && booking.status.awaits_partner()
}

/// The partner client of `booking`, or a permanent error when its partner is not configured (it was
/// accepted under another configuration).
fn client_of<'a>(
    partners: &'a Partners,
    booking: &Booking,
) -> std::result::Result<&'a PartnerClient, HandlerError> {
    partners.get(&booking.partner).ok_or_else(|| {
        HandlerError::Permanent(format!("partner `{}` is not configured", booking.partner))
    })
}

/// The partner answered 4xx: it refuses the request itself, so the booking fails with that reason.
fn refused(status: u16, reason: &str, what: &str) -> HandlerError {
    HandlerError::Permanent(format!(
        "the partner refused the {what} ({status}): {reason}"
    ))
}

/// Runs `partner.reserve`.
pub struct ReserveHandler {
    pub store: EventStore,
    pub partners: Partners,
}

/// A refusal to record a partner outcome because the booking has moved on (a callback confirmed it while
/// our call timed out, and the customer paid) is not a failure of the job: the outcome was settled by
/// another path. Anything else stands, and when the job will not run again (a permanent error, or its
/// last attempt) a booking still waiting for its partner fails with the reason: every booking ends.
async fn settle(
    store: &EventStore,
    job: &Job,
    id: &str,
    result: std::result::Result<(), HandlerError>,
) -> std::result::Result<(), HandlerError> {
    let Err(error) = result else {
        return result;
    };
    let booking = load(store, id).await?;
    if booking.exists() && !waiting_for_partner(&booking) {
        if let HandlerError::Permanent(reason) = &error {
            tracing::info!(booking_id = %id, status = ?booking.status, refused = %reason,
                "partner outcome already settled by another path; nothing to record");
            return Ok(());
        }
        return Err(error);
    }
    let last = matches!(error, HandlerError::Permanent(_)) || job.attempts >= job.max_attempts;
    if !last || !booking.exists() {
        return Err(error);
    }
    let reason = format!(
        "the partner gave no usable answer after {} attempts: {error}",
        job.attempts
    );
    tracing::warn!(booking_id = %id, reason = %reason, "booking failed: the partner flow gave up");
    execute(
        store,
        id,
        BookingCommand::Fail {
            reason: reason.clone(),
        },
        &write_back::context(job),
    )
    .await?;
    Err(HandlerError::Permanent(reason))
}

#[async_trait]
impl Handler for ReserveHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = booking_id(job)?;
        let result = self.reserve(job, &id).await;
        settle(&self.store, job, &id, result).await
    }
}

impl ReserveHandler {
    async fn reserve(&self, job: &Job, id: &str) -> std::result::Result<(), HandlerError> {
        let context = write_back::context(job);
        let booking = load(&self.store, id).await?;
        if !waiting_for_partner(&booking) {
            return Ok(());
        }
        let partner = client_of(&self.partners, &booking)?;
        let attempt = booking.partner_attempts.saturating_add(1);
        let requested = BookingCommand::RecordReservationRequested {
            attempt,
            at: Utc::now(),
        };
        execute(&self.store, id, requested, &context).await?;
        match partner.reserve(&booking, &context.correlation_id).await {
            CallOutcome::Answered(answer) => {
                record_answer(&self.store, id, answer, PartnerSource::Response, &context).await
            }
            CallOutcome::Unknown(reason) => {
                tracing::warn!(booking_id = %id, attempt, reason = %reason, "reservation outcome unknown; reconciliation will settle it");
                let unknown = BookingCommand::RecordReservationOutcomeUnknown { attempt, reason };
                execute(&self.store, id, unknown, &context).await
            }
            CallOutcome::RateLimited(after) => Err(HandlerError::RetryAfter {
                after,
                message: "partner rate limited the reservation".to_owned(),
            }),
            CallOutcome::Refused { status, reason } => Err(refused(status, &reason, "reservation")),
        }
    }
}

/// Runs `partner.reconcile`.
pub struct ReconcileHandler {
    pub store: EventStore,
    pub partners: Partners,
}

#[async_trait]
impl Handler for ReconcileHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = booking_id(job)?;
        let result = self.reconcile(job, &id).await;
        settle(&self.store, job, &id, result).await
    }
}

impl ReconcileHandler {
    async fn reconcile(&self, job: &Job, id: &str) -> std::result::Result<(), HandlerError> {
        let context = write_back::context(job);
        let correlation = context.correlation_id.as_str();
        let booking = load(&self.store, id).await?;
        if !waiting_for_partner(&booking) {
            return Ok(());
        }
        let partner = client_of(&self.partners, &booking)?;
        let found = match partner.lookup(id, correlation).await {
            CallOutcome::Answered(found) => found,
            CallOutcome::Unknown(reason) => return Err(HandlerError::Retry(reason)),
            CallOutcome::RateLimited(after) => {
                return Err(HandlerError::RetryAfter {
                    after,
                    message: "partner rate limited the lookup".to_owned(),
                })
            }
            CallOutcome::Refused { status, reason } => {
                return Err(refused(status, &reason, "lookup"))
            }
        };
        match found {
            Some(answer) => {
                record_answer(&self.store, id, answer, PartnerSource::Lookup, &context).await
            }
            // The partner holds nothing: reserve again (same idempotency key, so never twice).
            None => match partner.reserve(&booking, correlation).await {
                CallOutcome::Answered(answer) => {
                    record_answer(&self.store, id, answer, PartnerSource::Response, &context).await
                }
                CallOutcome::Unknown(reason) => Err(HandlerError::Retry(reason)),
                CallOutcome::RateLimited(after) => Err(HandlerError::RetryAfter {
                    after,
                    message: "partner rate limited the reservation".to_owned(),
                }),
                CallOutcome::Refused { status, reason } => {
                    Err(refused(status, &reason, "reservation"))
                }
            },
        }
    }
}

/// Runs `booking.deadline`: a booking still waiting for its partner when its deadline passes fails with
/// that reason (its slot is released in the same transaction, and the reactor starts a release in case
/// the partner holds something after all). A booking that moved on is left alone.
pub struct DeadlineHandler {
    pub store: EventStore,
    /// The deadline, for the reason text.
    pub deadline: Duration,
}

#[async_trait]
impl Handler for DeadlineHandler {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError> {
        let id = booking_id(job)?;
        let booking = load(&self.store, &id).await?;
        if !waiting_for_partner(&booking) {
            return Ok(());
        }
        let reason = format!(
            "the partner did not confirm within {:?} of the request",
            self.deadline
        );
        tracing::warn!(booking_id = %id, status = %booking.status, "booking deadline passed; failing it");
        let command = BookingCommand::Fail { reason };
        // Settled by another path between the load and the command: nothing to do.
        write_back::execute_unless_settled::<Booking>(
            &self.store,
            &id,
            command,
            &write_back::context(job),
            waiting_for_partner,
        )
        .await
    }
}
