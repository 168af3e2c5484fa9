//! Compensation under rate limits (seed 003): cancel the partner reservation of a booking whose payment
//! was declined, without hammering a partner that is already struggling.
//!
//! `partner.compensate` jobs run on their own queue (`compensation`, small concurrency). Before each call
//! the handler takes a token from the partner's [`TokenBucket`] (waiting up to a bound, else retrying
//! later), and asks the partner's [`CircuitBreaker`]: while it is open (after `failure_threshold`
//! consecutive 5xx/timeouts) no call is made and the job retries after the open period; after it, one probe
//! goes through (half-open) and its outcome closes or reopens the breaker. A 429 reschedules the job after
//! the partner's `Retry-After`. When the last attempt fails, `FailCompensation` is recorded (the booking
//! shows `compensation_failed`) and the job is dead-lettered, which the dead-letter metric alerts on.
//!
//! `partner.release` jobs (a booking cancelled on our side) give the reservation back through the same
//! bucket and breaker (`CompensateHandler::release`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use domain::booking::{BookingCommand, BookingStatus};
use domain::Booking;
use store::EventStore;

use crate::booking_flow::CallOutcome;
use crate::jobs::Job;
use crate::worker::{Handler, HandlerError};
use crate::write_back;

/// A token bucket: `capacity` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u32, per_second: f64, now: Instant) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            per_second: per_second.max(0.001),
            tokens: f64::from(capacity.max(1)),
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

/// Breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is in flight.
    HalfOpen,
}

/// A circuit breaker: opens after `threshold` consecutive failures for `open_for`, then lets one probe.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    state: BreakerState,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a call go out at `now`? `Err(wait)` while open or while the half-open probe is out.
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until } => Err(until.saturating_duration_since(now)),
            BreakerState::HalfOpen => Err(self.open_for),
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.state == BreakerState::HalfOpen || self.failures >= self.threshold {
            self.state = BreakerState::Open {
                until: now + self.open_for,
            };
            metrics::counter!("trailbook_partner_breaker_opened_total").increment(1);
        }
    }
}

/// Limits of compensation calls, per partner.
#[derive(Debug, Clone, Copy)]
pub struct CompensationLimits {
    pub bucket_capacity: u32,
    pub per_second: f64,
    /// Longest in-handler wait for a token before rescheduling the job instead.
    pub max_token_wait: Duration,
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for CompensationLimits {
    fn default() -> Self {
        Self {
            bucket_capacity: 5,
            per_second: 2.0,
            max_token_wait: Duration::from_secs(2),
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct PartnerGuard {
    bucket: TokenBucket,
    breaker: CircuitBreaker,
}

/// Runs `partner.compensate` and `partner.release`: every call that gives a reservation back goes through
/// the same token bucket and breaker per partner. One instance per process (clones share the buckets and
/// breakers; register a clone for each kind).
#[derive(Clone)]
pub struct CompensateHandler {
    pub store: EventStore,
    partner: crate::booking_flow::PartnerClient,
    limits: CompensationLimits,
    guards: Arc<Mutex<HashMap<String, PartnerGuard>>>,
}

impl CompensateHandler {
    pub fn new(
        store: EventStore,
        partner: crate::booking_flow::PartnerClient,
        limits: CompensationLimits,
    ) -> Self {
        Self {
            store,
            partner,
            limits,
            guards: Arc::default(),
        }
    }

    fn with_guard<T>(&self, partner: &str, f: impl FnOnce(&mut PartnerGuard) -> T) -> T {
        let mut guards = match self.guards.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let guard = guards
            .entry(partner.to_owned())
            .or_insert_with(|| PartnerGuard {
                bucket: TokenBucket::new(
                    self.limits.bucket_capacity,
                    self.limits.per_second,
                    Instant::now(),
                ),
                breaker: CircuitBreaker::new(self.limits.failure_threshold, self.limits.open_for),
            });
        f(guard)
    }

    /// Waits (bounded) for a token of `partner`'s bucket.
    async fn take_token(&self, partner: &str) -> Result<(), HandlerError> {
        let deadline = Instant::now() + self.limits.max_token_wait;
        loop {
            match self.with_guard(partner, |g| g.bucket.try_take(Instant::now())) {
                Ok(()) => return Ok(()),
                Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                Err(wait) => {
                    return Err(HandlerError::RetryAfter {
                        after: wait,
                        message: "compensation rate limit of this partner reached".to_owned(),
                    })
                }
            }
        }
    }

    async fn execute(
        &self,
        id: &str,
        command: BookingCommand,
        job: &Job,
    ) -> Result<(), HandlerError> {
        write_back::execute::<Booking>(&self.store, id, command, &write_back::context(job)).await
    }

    /// On the last attempt a transient failure becomes `FailCompensation` and a dead letter.
    async fn give_up_if_last(&self, id: &str, job: &Job, error: HandlerError) -> HandlerError {
        if job.attempts < job.max_attempts {
            return error;
        }
        let reason = format!("gave up after {} attempts: {error}", job.attempts);
        match self
            .execute(
                id,
                BookingCommand::FailCompensation {
                    reason: reason.clone(),
                },
                job,
            )
            .await
        {
            Ok(()) => HandlerError::Permanent(reason),
            Err(e) => e,
        }
    }
}

impl CompensateHandler {
    /// Lets one call to `partner` go out: refused while its breaker is open, waits (bounded) for a token.
    async fn admit(&self, partner: &str) -> Result<(), HandlerError> {
        if let Err(wait) = self.with_guard(partner, |g| g.breaker.allow(Instant::now())) {
            return Err(HandlerError::RetryAfter {
                after: wait,
                message: "circuit breaker open for this partner".to_owned(),
            });
        }
        if let Err(e) = self.take_token(partner).await {
            // The half-open probe (if this was it) did not go out: let the next one try.
            self.with_guard(partner, |g| {
                if g.breaker.state() == BreakerState::HalfOpen {
                    g.breaker.on_failure(Instant::now());
                }
            });
            return Err(e);
        }
        metrics::counter!("trailbook_compensation_calls_total", "partner" => partner.to_owned())
            .increment(1);
        Ok(())
    }

    /// Whether a `partner.reserve` or `partner.reconcile` job of booking `id` is queued, running or waiting
    /// for a retry.
    async fn attempt_in_flight(&self, id: &str) -> Result<bool, HandlerError> {
        sqlx::query_scalar(
            "select exists (select 1 from jobs
                 where state in ('queued', 'running', 'failed') and kind = any($2)
                   and payload->>'booking_id' = $1)",
        )
        .bind(id)
        .bind([
            crate::reactor::kinds::PARTNER_RESERVE,
            crate::reactor::kinds::PARTNER_RECONCILE,
        ])
        .fetch_one(self.store.pool())
        .await
        .map_err(|e| HandlerError::Retry(format!("cannot look for reservation attempts: {e}")))
    }

    /// Sorts a failed partner call into the job's error, feeding the breaker.
    fn call_failed<T>(&self, partner: &str, outcome: CallOutcome<T>, what: &str) -> HandlerError {
        match outcome {
            // 429 is the partner protecting itself, not a failure of it: the breaker stays as is.
            CallOutcome::RateLimited(after) => HandlerError::RetryAfter {
                after,
                message: format!("partner rate limited the {what}"),
            },
            CallOutcome::Unknown(reason) => {
                self.with_guard(partner, |g| g.breaker.on_failure(Instant::now()));
                HandlerError::Retry(reason)
            }
            CallOutcome::Refused(reason) => HandlerError::Permanent(reason),
            CallOutcome::Answered(_) => {
                HandlerError::Retry(format!("unexpected answer to the {what}"))
            }
        }
    }

    /// `partner.release`: a booking cancelled on our side gives its partner reservation back. The booking
    /// may have been cancelled before the partner answered, so without a known reservation id the partner
    /// is asked by client reference (the booking id). Recorded as `PartnerReservationReleased`.
    async fn release(&self, job: &Job, id: &str) -> Result<(), HandlerError> {
        let booking = write_back::load::<Booking>(&self.store, id).await?;
        if booking.status != BookingStatus::Cancelled || booking.reservation_released {
            return Ok(());
        }
        let held = match booking.reservation_id.clone() {
            Some(reservation_id) => Some(reservation_id),
            None => {
                // A reservation attempt still in flight could create what the lookup does not see yet:
                // wait until it has settled (it stops by itself, the booking being cancelled).
                if self.attempt_in_flight(id).await? {
                    return Err(HandlerError::Retry(
                        "a reservation attempt for this booking is still in flight".to_owned(),
                    ));
                }
                self.admit(&booking.partner).await?;
                match self.partner.lookup(id).await {
                    CallOutcome::Answered(found) => {
                        self.with_guard(&booking.partner, |g| g.breaker.on_success());
                        found
                            .filter(|r| r.status != "cancelled")
                            .map(|r| r.reservation_id)
                    }
                    other => return Err(self.call_failed(&booking.partner, other, "lookup")),
                }
            }
        };
        if let Some(reservation_id) = &held {
            self.admit(&booking.partner).await?;
            match self.partner.cancel(reservation_id).await {
                // 2xx, or 404 (the partner holds no such reservation): released either way.
                CallOutcome::Answered(_) | CallOutcome::Refused(_) => {
                    self.with_guard(&booking.partner, |g| g.breaker.on_success());
                }
                other => return Err(self.call_failed(&booking.partner, other, "cancellation")),
            }
        }
        tracing::info!(booking_id = %id, reservation_id = ?held, "partner reservation of a cancelled booking released");
        let command = BookingCommand::RecordReservationReleased {
            reservation_id: held,
        };
        write_back::execute::<Booking>(&self.store, id, command, &write_back::context(job)).await
    }
}

#[async_trait]
impl Handler for CompensateHandler {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let id = write_back::payload_str(job, "booking_id")?;
        if job.kind == crate::reactor::kinds::PARTNER_RELEASE {
            return self.release(job, &id).await;
        }
        let booking = write_back::load::<Booking>(&self.store, &id).await?;
        if booking.status != BookingStatus::Compensating {
            return Ok(());
        }
        let Some(reservation_id) = booking.reservation_id.clone() else {
            // Nothing was reserved: nothing to release.
            return self
                .execute(&id, BookingCommand::CompleteCompensation, job)
                .await;
        };
        self.admit(&booking.partner).await?;
        let result = self.partner.cancel(&reservation_id).await;
        use CallOutcome as O;
        match result {
            O::Answered(_) | O::Refused(_) => {
                // 2xx, or 404 (the partner holds no such reservation): released either way.
                self.with_guard(&booking.partner, |g| g.breaker.on_success());
                tracing::info!(booking_id = %id, reservation_id = %reservation_id, at = %Utc::now(), "partner reservation released");
                self.execute(&id, BookingCommand::CompleteCompensation, job)
                    .await
            }
            other => {
                let error = self.call_failed(&booking.partner, other, "cancellation");
                Err(self.give_up_if_last(&id, job, error).await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket gives `capacity` tokens at once, then one per refill interval.
    #[test]
    fn bucket_allows_burst_then_refill_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 1.0, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(b.try_take(t0 + Duration::from_millis(1001)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(1002)).is_err());
    }

    /// The breaker opens after the threshold, refuses while open, lets one probe through after, and a
    /// failed probe reopens it while a good one closes it.
    #[test]
    fn breaker_opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(2, Duration::from_secs(5));
        cb.on_failure(t0);
        assert!(cb.allow(t0).is_ok());
        cb.on_failure(t0);
        assert!(cb.allow(t0 + Duration::from_secs(1)).is_err());
        let t1 = t0 + Duration::from_secs(6);
        assert!(cb.allow(t1).is_ok());
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        assert!(cb.allow(t1).is_err(), "only one probe");
        cb.on_failure(t1);
        assert!(matches!(cb.state(), BreakerState::Open { .. }));
        let t2 = t1 + Duration::from_secs(6);
        assert!(cb.allow(t2).is_ok());
        cb.on_success();
        assert_eq!(cb.state(), BreakerState::Closed);
    }
}
