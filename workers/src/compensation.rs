//! Compensation under rate limits (seed 003): give back what a booking no longer needs (a partner
//! reservation, a captured payment) without hammering a partner or provider that is already struggling.
//!
//! `partner.compensate` (a declined payment), `partner.release` (a booking cancelled, failed or resolved
//! on our side) and `payment.refund` (a cancelled paid booking) run on their own queue (`compensation`,
//! small concurrency). Before each call the handler takes a token from the counterpart's [`TokenBucket`]
//! (waiting up to a bound, else retrying later) and asks its [`CircuitBreaker`]: while it is open (after
//! `failure_threshold` consecutive 5xx/timeouts) no call is made and the job retries after the open period;
//! after it, one probe goes through (half-open); the probe's success closes the breaker, its failure or a
//! 429 reopens it, and a probe that never reports back (its job died) is replaced after `probe_timeout`.
//! A 429 reschedules the job after the `Retry-After`. A cancel answer counts as "released" only when it
//! says the partner holds nothing (2xx, or a status of the partner's `released_statuses`, 404/410 by
//! default); any other 4xx is a failure with its reason, retried and finally dead-lettered, never
//! silently done. When the last attempt of a compensation or refund fails, `FailCompensation` /
//! `RecordRefund(Failed)` is recorded (the booking shows `compensation_failed` / `refund_failed` with the
//! reason) and the job is dead-lettered, which the dead-letter metric alerts on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use domain::booking::{BookingCommand, BookingStatus, RefundOutcome};
use domain::Booking;
use store::EventStore;

use crate::booking_flow::{CallOutcome, PartnerClient};
use crate::jobs::Job;
use crate::partners::Partners;
use crate::reactor::kinds;
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

/// A circuit breaker: opens after `threshold` consecutive failures for `open_for`, then lets one probe,
/// and another one if the first has not reported back within `probe_timeout`.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    probe_timeout: Duration,
    failures: u32,
    state: BreakerState,
    /// When the probe in flight went out (while half-open).
    probe_since: Option<Instant>,
}

impl CircuitBreaker {
    /// A breaker whose probe may take as long as it stays open.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self::with_probe_timeout(threshold, open_for, open_for)
    }

    pub fn with_probe_timeout(threshold: u32, open_for: Duration, probe_timeout: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            probe_timeout,
            failures: 0,
            state: BreakerState::Closed,
            probe_since: None,
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
                self.probe_since = Some(now);
                Ok(())
            }
            BreakerState::Open { until } => Err(until.saturating_duration_since(now)),
            BreakerState::HalfOpen => {
                let since = self.probe_since.unwrap_or(now);
                let due = since + self.probe_timeout;
                if now >= due {
                    // The probe never reported back (its job died or hangs): let another one go.
                    self.probe_since = Some(now);
                    Ok(())
                } else {
                    Err(due.saturating_duration_since(now))
                }
            }
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.probe_since = None;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.state == BreakerState::HalfOpen || self.failures >= self.threshold {
            self.open(now);
        }
    }

    /// A 429: the counterpart protects itself. Not a failure while closed; but a half-open probe that
    /// gets one shows it has not recovered, so the breaker opens again.
    pub fn on_rate_limited(&mut self, now: Instant) {
        if self.state == BreakerState::HalfOpen {
            self.open(now);
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.open_for,
        };
        self.probe_since = None;
        metrics::counter!("trailbook_partner_breaker_opened_total").increment(1);
    }
}

/// Limits of compensation calls, per partner (or provider).
#[derive(Debug, Clone, Copy)]
pub struct CompensationLimits {
    pub bucket_capacity: u32,
    pub per_second: f64,
    /// Longest in-handler wait for a token before rescheduling the job instead.
    pub max_token_wait: Duration,
    pub failure_threshold: u32,
    pub open_for: Duration,
    /// How long a half-open probe may stay out before another is let through.
    pub probe_timeout: Duration,
}

impl Default for CompensationLimits {
    fn default() -> Self {
        Self {
            bucket_capacity: 5,
            per_second: 2.0,
            max_token_wait: Duration::from_secs(2),
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Guard {
    bucket: TokenBucket,
    breaker: CircuitBreaker,
}

/// The guard key of the payment provider (partners are keyed by name).
const PAYMENT_PROVIDER: &str = "payment-provider";

/// Runs `partner.compensate`, `partner.release` and `payment.refund`: every call that gives something
/// back goes through the counterpart's token bucket and breaker. One instance per process (clones share
/// the buckets and breakers; register a clone for each kind).
#[derive(Clone)]
pub struct CompensateHandler {
    pub store: EventStore,
    partners: Partners,
    /// Overrides every partner's own limits (tests); `None`: each partner's configured limits.
    limits: Option<CompensationLimits>,
    guards: Arc<Mutex<HashMap<String, Guard>>>,
}

impl CompensateHandler {
    /// The handler with each partner's configured limits, or `limits` for all when given.
    pub fn new(store: EventStore, partners: Partners, limits: Option<CompensationLimits>) -> Self {
        Self {
            store,
            partners,
            limits,
            guards: Arc::default(),
        }
    }

    fn with_guard<T>(
        &self,
        key: &str,
        limits: CompensationLimits,
        f: impl FnOnce(&mut Guard) -> T,
    ) -> T {
        let mut guards = match self.guards.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let limits = self.limits.unwrap_or(limits);
        let guard = guards.entry(key.to_owned()).or_insert_with(|| Guard {
            bucket: TokenBucket::new(limits.bucket_capacity, limits.per_second, Instant::now()),
            breaker: CircuitBreaker::with_probe_timeout(
                limits.failure_threshold,
                limits.open_for,
                limits.probe_timeout,
            ),
        });
        f(guard)
    }

    /// Waits (bounded) for a token of `key`'s bucket.
    async fn take_token(&self, key: &str, limits: CompensationLimits) -> Result<(), HandlerError> {
        let limits = self.limits.unwrap_or(limits);
        let deadline = Instant::now() + limits.max_token_wait;
        loop {
            match self.with_guard(key, limits, |g| g.bucket.try_take(Instant::now())) {
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

    /// On the last attempt (or a permanent error) `give_up` is recorded and the job dead-letters.
    async fn give_up_if_last(
        &self,
        id: &str,
        job: &Job,
        error: HandlerError,
        give_up: impl FnOnce(String) -> BookingCommand,
    ) -> HandlerError {
        let permanent = matches!(error, HandlerError::Permanent(_));
        if !permanent && job.attempts < job.max_attempts {
            return error;
        }
        let reason = format!("gave up after {} attempts: {error}", job.attempts);
        match self.execute(id, give_up(reason.clone()), job).await {
            Ok(()) => HandlerError::Permanent(reason),
            Err(e) => e,
        }
    }

    fn client(&self, booking: &Booking) -> Result<&PartnerClient, HandlerError> {
        self.partners.get(&booking.partner).ok_or_else(|| {
            HandlerError::Permanent(format!("partner `{}` is not configured", booking.partner))
        })
    }

    /// Lets one call to `key` go out: refused while its breaker is open, waits (bounded) for a token.
    async fn admit(&self, key: &str, limits: CompensationLimits) -> Result<(), HandlerError> {
        if let Err(wait) = self.with_guard(key, limits, |g| g.breaker.allow(Instant::now())) {
            return Err(HandlerError::RetryAfter {
                after: wait,
                message: "circuit breaker open for this partner".to_owned(),
            });
        }
        if let Err(e) = self.take_token(key, limits).await {
            // The half-open probe (if this was it) did not go out: let the next one try.
            self.with_guard(key, limits, |g| {
                if g.breaker.state() == BreakerState::HalfOpen {
                    g.breaker.on_failure(Instant::now());
                }
            });
            return Err(e);
        }
        metrics::counter!("trailbook_compensation_calls_total", "partner" => key.to_owned())
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
        .bind([kinds::PARTNER_RESERVE, kinds::PARTNER_RECONCILE])
        .fetch_one(self.store.pool())
        .await
        .map_err(|e| HandlerError::Retry(format!("cannot look for reservation attempts: {e}")))
    }

    /// Sorts a failed call into the job's error, feeding the breaker.
    fn call_failed<T>(
        &self,
        key: &str,
        limits: CompensationLimits,
        outcome: CallOutcome<T>,
        what: &str,
    ) -> HandlerError {
        match outcome {
            // 429 is the partner protecting itself, not a failure of it; a half-open probe reopens.
            CallOutcome::RateLimited(after) => {
                self.with_guard(key, limits, |g| g.breaker.on_rate_limited(Instant::now()));
                HandlerError::RetryAfter {
                    after,
                    message: format!("rate limited the {what}"),
                }
            }
            CallOutcome::Unknown(reason) => {
                self.with_guard(key, limits, |g| g.breaker.on_failure(Instant::now()));
                HandlerError::Retry(format!("the {what} failed: {reason}"))
            }
            CallOutcome::Refused { status, reason } => {
                // The partner is up and answering: the breaker is not at fault.
                self.with_guard(key, limits, |g| g.breaker.on_success());
                HandlerError::Permanent(format!("the {what} was refused ({status}): {reason}"))
            }
            CallOutcome::Answered(_) => {
                HandlerError::Retry(format!("unexpected answer to the {what}"))
            }
        }
    }

    /// Cancels `reservation_id` at the booking's partner: `Ok` once the partner holds nothing (2xx, or an
    /// "already gone" status of its configuration).
    async fn cancel_at_partner(
        &self,
        booking: &Booking,
        reservation_id: &str,
        correlation: &str,
    ) -> Result<(), HandlerError> {
        let client = self.client(booking)?;
        let (key, limits) = (booking.partner.as_str(), client.limits());
        self.admit(key, limits).await?;
        match client.cancel(reservation_id, correlation).await {
            CallOutcome::Answered(_) => {
                self.with_guard(key, limits, |g| g.breaker.on_success());
                Ok(())
            }
            CallOutcome::Refused { status, .. } if client.means_released(status) => {
                self.with_guard(key, limits, |g| g.breaker.on_success());
                tracing::info!(
                    reservation_id,
                    status,
                    "partner holds no such reservation any more"
                );
                Ok(())
            }
            other => Err(self.call_failed(key, limits, other, "cancellation")),
        }
    }

    /// `partner.release`: a booking cancelled, failed or resolved on our side gives its partner
    /// reservation back. Without a known reservation id (the booking ended before the partner answered)
    /// the partner is asked by client reference (the booking id). Recorded as `PartnerReservationReleased`.
    async fn release(&self, job: &Job, id: &str) -> Result<(), HandlerError> {
        let booking = write_back::load::<Booking>(&self.store, id).await?;
        if !booking.status.releases_reservation() || booking.reservation_released {
            return Ok(());
        }
        let correlation = write_back::correlation_id(job);
        let held = match booking.reservation_id.clone() {
            Some(reservation_id) => Some(reservation_id),
            None => {
                // A reservation attempt still in flight could create what the lookup does not see yet:
                // wait until it has settled (it stops by itself, the booking no longer waiting).
                if self.attempt_in_flight(id).await? {
                    return Err(HandlerError::Retry(
                        "a reservation attempt for this booking is still in flight".to_owned(),
                    ));
                }
                let client = self.client(&booking)?;
                let (key, limits) = (booking.partner.as_str(), client.limits());
                self.admit(key, limits).await?;
                match client.lookup(id, &correlation).await {
                    CallOutcome::Answered(found) => {
                        self.with_guard(key, limits, |g| g.breaker.on_success());
                        found
                            .filter(|r| r.status == "confirmed")
                            .map(|r| r.reservation_id)
                    }
                    other => return Err(self.call_failed(key, limits, other, "lookup")),
                }
            }
        };
        if let Some(reservation_id) = &held {
            self.cancel_at_partner(&booking, reservation_id, &correlation)
                .await?;
        }
        tracing::info!(booking_id = %id, reservation_id = ?held, "partner reservation given back");
        let command = BookingCommand::RecordReservationReleased {
            reservation_id: held,
        };
        self.execute(id, command, job).await
    }

    /// `partner.compensate`: a declined payment cancels the partner reservation.
    async fn compensate(&self, job: &Job, id: &str) -> Result<(), HandlerError> {
        let booking = write_back::load::<Booking>(&self.store, id).await?;
        if booking.status != BookingStatus::Compensating {
            return Ok(());
        }
        let Some(reservation_id) = booking.reservation_id.clone() else {
            // Nothing was reserved: nothing to release.
            return self
                .execute(id, BookingCommand::CompleteCompensation, job)
                .await;
        };
        let correlation = write_back::correlation_id(job);
        match self
            .cancel_at_partner(&booking, &reservation_id, &correlation)
            .await
        {
            Ok(()) => {
                tracing::info!(booking_id = %id, reservation_id = %reservation_id, at = %Utc::now(), "partner reservation released");
                self.execute(id, BookingCommand::CompleteCompensation, job)
                    .await
            }
            Err(HandlerError::RetryAfter { after, message }) if job.attempts < job.max_attempts => {
                Err(HandlerError::RetryAfter { after, message })
            }
            Err(error) => Err(self
                .give_up_if_last(id, job, error, |reason| BookingCommand::FailCompensation {
                    reason,
                })
                .await),
        }
    }

    /// `payment.refund`: the payment of a cancelled paid booking goes back to the customer, through the
    /// provider's bucket and breaker. The provider refunds a payment at most once, so a retry after an
    /// unknown outcome is safe.
    async fn refund(&self, job: &Job, id: &str) -> Result<(), HandlerError> {
        let booking = write_back::load::<Booking>(&self.store, id).await?;
        if booking.status != BookingStatus::Refunding {
            return Ok(());
        }
        let Some(payment_id) = booking.payment_id.clone() else {
            return Err(self
                .give_up_if_last(
                    id,
                    job,
                    HandlerError::Permanent("the booking has no payment to refund".into()),
                    |reason| BookingCommand::RecordRefund {
                        outcome: RefundOutcome::Failed { reason },
                    },
                )
                .await);
        };
        let limits = CompensationLimits::default();
        let correlation = write_back::correlation_id(job);
        let result = match self.admit(PAYMENT_PROVIDER, limits).await {
            Err(e) => Err(e),
            Ok(()) => {
                let key = format!("refund-{id}");
                match self
                    .partners
                    .payments()
                    .refund(&payment_id, &key, &correlation)
                    .await
                {
                    CallOutcome::Answered(refund) => {
                        self.with_guard(PAYMENT_PROVIDER, limits, |g| g.breaker.on_success());
                        Ok(refund.refund_id)
                    }
                    other => Err(self.call_failed(PAYMENT_PROVIDER, limits, other, "refund")),
                }
            }
        };
        match result {
            Ok(refund_id) => {
                let outcome = RefundOutcome::Refunded { refund_id };
                self.execute(id, BookingCommand::RecordRefund { outcome }, job)
                    .await
            }
            Err(HandlerError::RetryAfter { after, message }) if job.attempts < job.max_attempts => {
                Err(HandlerError::RetryAfter { after, message })
            }
            Err(error) => Err(self
                .give_up_if_last(id, job, error, |reason| BookingCommand::RecordRefund {
                    outcome: RefundOutcome::Failed { reason },
                })
                .await),
        }
    }
}

#[async_trait]
impl Handler for CompensateHandler {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let id = write_back::payload_str(job, "booking_id")?;
        match job.kind.as_str() {
            kinds::PARTNER_RELEASE => self.release(job, &id).await,
            kinds::PAYMENT_REFUND => self.refund(job, &id).await,
            _ => self.compensate(job, &id).await,
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

    /// A half-open probe that gets a 429 reopens the breaker (the partner has not recovered), and a probe
    /// that never reports back is replaced by another after the probe timeout: the breaker cannot stay
    /// half-open for good.
    #[test]
    fn breaker_reopens_on_a_rate_limited_probe_and_replaces_a_lost_one() {
        let t0 = Instant::now();
        let mut cb =
            CircuitBreaker::with_probe_timeout(1, Duration::from_secs(5), Duration::from_secs(3));
        cb.on_failure(t0);
        let t1 = t0 + Duration::from_secs(5);
        assert!(cb.allow(t1).is_ok());
        cb.on_rate_limited(t1);
        assert!(
            matches!(cb.state(), BreakerState::Open { .. }),
            "429 on the probe reopens"
        );
        assert!(cb.allow(t1 + Duration::from_secs(1)).is_err());

        let t2 = t1 + Duration::from_secs(5);
        assert!(cb.allow(t2).is_ok(), "a new probe after the open period");
        assert!(
            cb.allow(t2 + Duration::from_secs(1)).is_err(),
            "one probe at a time"
        );
        assert!(
            cb.allow(t2 + Duration::from_secs(3)).is_ok(),
            "the lost probe is replaced after the probe timeout"
        );
        // While closed, a 429 is not a failure.
        cb.on_success();
        cb.on_rate_limited(t2);
        assert_eq!(cb.state(), BreakerState::Closed);
    }
}
