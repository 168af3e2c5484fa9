//! The Booking state, its transition rules (`handle`) and how each event changes it (`apply`).
//!
//! `handle` first decides, from the current state alone, which events a command produces (`decide`, pure and
//! synchronous), then writes them through the `EventSink`, which applies each one. The state is never mutated
//! any other way, so a booking folded from its events equals the one the handler saw.
//!
//! The status and value types the state holds live in `super::status`; the tests in `super::tests`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::{BookingCommand, PaymentOutcome, RefundOutcome};
use super::error::BookingError;
use super::events::{BookingEvent, IgnoredReason, PartnerReportedStatus, PartnerSource};
use super::status::{BookingStatus, Customer};
use super::upcasters::BookingRequestedV1ToV2;
use crate::schema::AggregateSchema;
use crate::values::{check_text, Money, MAX_NAME_CHARS, MAX_REASON_CHARS};

/// Most guests a booking may have.
pub const MAX_GUESTS: u32 = 100;

/// The state of one booking, folded from its events. `Default` is "no such booking".
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    /// The booking id; empty until `BookingRequested`.
    pub id: String,
    /// The subject of the client who created it.
    pub owner: String,
    /// Where the booking is in its life.
    pub status: BookingStatus,
    /// The partner holding the resource.
    pub partner: String,
    /// The partner's resource.
    pub resource: String,
    /// Start of the booked period.
    pub starts_at: DateTime<Utc>,
    /// End of the booked period.
    pub ends_at: DateTime<Utc>,
    /// Number of guests.
    pub guests: u32,
    /// The price; `None` only before `BookingRequested`.
    pub amount: Option<Money>,
    /// Who the booking is for; `None` only before `BookingRequested`.
    pub customer: Option<Customer>,
    /// The partner's reservation id, once confirmed.
    pub reservation_id: Option<String>,
    /// The payment id, once paid.
    pub payment_id: Option<String>,
    /// Reservation attempts made (every `PartnerReservationRequested`, retries included).
    pub partner_attempts: u32,
    /// Partner reports recorded but not applied (duplicate, stale, out of order).
    pub ignored_callbacks: u32,
    /// The partner's timestamp of the last applied partner status (confirmation or rejection).
    pub last_partner_status_at: Option<DateTime<Utc>>,
    /// Why the booking was cancelled.
    pub cancel_reason: Option<String>,
    /// Why the booking was rejected, failed, had its payment declined, could not be compensated or
    /// refunded, or (while `payment_pending`) why its payment is not settled yet.
    pub failure_reason: Option<String>,
    /// After a cancellation: the partner reservation has been released (or the partner held none).
    #[serde(default)]
    pub reservation_released: bool,
    /// The payment provider's idempotency key of this booking's payment, once requested.
    #[serde(default)]
    pub payment_key: Option<String>,
    /// The payment-method token handed to the provider (never a card number in production).
    #[serde(default)]
    pub payment_method: Option<String>,
    /// Payment attempts whose outcome was unknown (timeouts, 5xx).
    #[serde(default)]
    pub payment_unknown_attempts: u32,
    /// The provider declined the payment.
    #[serde(default)]
    pub payment_declined: bool,
    /// The provider's refund id, once refunded.
    #[serde(default)]
    pub refund_id: Option<String>,
}

impl Booking {
    /// Whether a booking has been requested under this id.
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// Whether the booking exists and reached a final status (Paid, Rejected, Failed, Cancelled,
    /// CompensationFailed).
    pub fn is_final(&self) -> bool {
        self.exists() && self.status.is_final()
    }

    /// Whether the booking exists and claims its resource's time slot (Requested, PartnerPending, Confirmed,
    /// Paid, Compensating).
    pub fn holds_slot(&self) -> bool {
        self.exists() && self.status.holds_slot()
    }

    /// The events `command` produces from the current state, or why it is refused. Pure: no I/O, no clock.
    fn decide(&self, command: BookingCommand) -> Result<Vec<BookingEvent>, BookingError> {
        use BookingCommand as C;
        use BookingEvent as E;

        if !matches!(command, C::Request { .. }) && !self.exists() {
            return Err(BookingError::NotFound);
        }
        let from = self.status;
        let refuse = |action| Err(BookingError::InvalidTransition { from, action });

        match command {
            C::Request {
                booking_id,
                owner,
                partner,
                resource,
                starts_at,
                ends_at,
                guests,
                amount,
                customer,
                at,
            } => {
                if self.exists() {
                    return Err(BookingError::AlreadyExists);
                }
                require_text("booking_id", &booking_id, MAX_NAME_CHARS)?;
                require_text("owner", &owner, MAX_NAME_CHARS)?;
                if ends_at <= starts_at {
                    return Err(BookingError::InvalidPeriod);
                }
                if !(1..=MAX_GUESTS).contains(&guests) {
                    return Err(BookingError::invalid(
                        "guests",
                        format!("must be between 1 and {MAX_GUESTS}"),
                    ));
                }
                if amount.minor <= 0 {
                    return Err(BookingError::invalid("amount", "must be positive"));
                }
                require_text("partner", &partner, MAX_NAME_CHARS)?;
                require_text("resource", &resource, MAX_NAME_CHARS)?;
                require_text("customer.name", &customer.name, MAX_NAME_CHARS)?;
                Ok(vec![E::BookingRequested {
                    booking_id,
                    owner,
                    partner,
                    resource,
                    starts_at,
                    ends_at,
                    guests,
                    amount,
                    customer,
                    at,
                }])
            }

            C::RecordReservationRequested { attempt, at } => match from {
                BookingStatus::Requested | BookingStatus::PartnerPending => {
                    Ok(vec![E::PartnerReservationRequested { attempt, at }])
                }
                _ => refuse("request a partner reservation for"),
            },

            C::RecordReservationOutcomeUnknown { attempt, reason } => match from {
                BookingStatus::PartnerPending => Ok(vec![E::PartnerReservationOutcomeUnknown {
                    attempt,
                    reason,
                }]),
                _ => refuse("record an unknown reservation outcome for"),
            },

            C::ApplyPartnerStatus {
                reported,
                reservation_id,
                source,
                partner_time,
                reason,
            } => self.decide_partner_status(reported, reservation_id, source, partner_time, reason),

            C::RequestPayment {
                payment_key,
                method,
                at,
            } => match from {
                BookingStatus::Confirmed => {
                    require_text("payment_key", &payment_key, MAX_NAME_CHARS)?;
                    require_text("card", &method, MAX_NAME_CHARS)?;
                    let amount = self.amount.clone().ok_or(BookingError::NotFound)?;
                    Ok(vec![E::PaymentRequested {
                        payment_key,
                        method,
                        amount,
                        at,
                    }])
                }
                // A repeated request (a client retry) while the payment runs or after it succeeded.
                BookingStatus::PaymentPending | BookingStatus::Paid => Ok(vec![]),
                _ => refuse("pay for"),
            },

            C::RecordPaymentOutcomeUnknown { attempt, reason } => match from {
                BookingStatus::PaymentPending => {
                    Ok(vec![E::PaymentOutcomeUnknown { attempt, reason }])
                }
                // Settled meanwhile by another path (a webhook): nothing to record.
                _ if self.payment_key.is_some() => Ok(vec![]),
                _ => refuse("record an unknown payment outcome for"),
            },

            C::RecordPayment { outcome } => match (from, outcome) {
                (
                    BookingStatus::Confirmed | BookingStatus::PaymentPending,
                    PaymentOutcome::Captured { payment_id },
                ) => {
                    require_text("payment_id", &payment_id, MAX_NAME_CHARS)?;
                    // Present whenever the booking exists; NotFound covers a state that was never requested.
                    let amount = self.amount.clone().ok_or(BookingError::NotFound)?;
                    Ok(vec![E::PaymentCaptured { payment_id, amount }])
                }
                (
                    BookingStatus::Confirmed | BookingStatus::PaymentPending,
                    PaymentOutcome::Declined { reason },
                ) => Ok(vec![
                    E::PaymentDeclined { reason },
                    E::CompensationStarted {
                        reservation_id: self.reservation_id.clone(),
                    },
                ]),
                // The same answer again (a duplicate or late webhook, a retried job): nothing changes.
                (_, PaymentOutcome::Captured { payment_id })
                    if self.payment_id.as_deref() == Some(payment_id.as_str()) =>
                {
                    Ok(vec![])
                }
                (_, PaymentOutcome::Declined { .. }) if self.payment_declined => Ok(vec![]),
                _ => refuse("record a payment for"),
            },

            C::RecordRefund { outcome } => match (from, outcome) {
                (BookingStatus::Refunding, RefundOutcome::Refunded { refund_id }) => {
                    require_text("refund_id", &refund_id, MAX_NAME_CHARS)?;
                    Ok(vec![E::RefundCompleted { refund_id }])
                }
                (BookingStatus::Refunding, RefundOutcome::Failed { reason }) => {
                    Ok(vec![E::RefundFailed { reason }])
                }
                (BookingStatus::Refunded, RefundOutcome::Refunded { refund_id })
                    if self.refund_id.as_deref() == Some(refund_id.as_str()) =>
                {
                    Ok(vec![])
                }
                (BookingStatus::Refunded, RefundOutcome::Failed { .. })
                | (BookingStatus::RefundFailed, RefundOutcome::Failed { .. }) => Ok(vec![]),
                _ => refuse("record a refund for"),
            },

            C::Resolve { status, reason } => {
                require_text("reason", &reason, MAX_REASON_CHARS)?;
                use BookingStatus as S;
                let allowed = match from {
                    S::Requested | S::PartnerPending => matches!(status, S::Failed | S::Cancelled),
                    // The provider holds no charge (checked by the operator): the booking is off.
                    S::PaymentPending => status == S::Cancelled,
                    S::Compensating | S::CompensationFailed => status == S::Cancelled,
                    S::Refunding | S::RefundFailed => status == S::Refunded,
                    _ => false,
                };
                if !allowed {
                    return Err(BookingError::invalid(
                        "status",
                        format!("a {from} booking cannot be resolved as {status}"),
                    ));
                }
                Ok(vec![E::BookingResolved { status, reason }])
            }

            C::CompleteCompensation => match from {
                BookingStatus::Compensating => Ok(vec![E::CompensationCompleted {}]),
                BookingStatus::Cancelled => Ok(vec![]),
                _ => refuse("complete compensation for"),
            },

            C::FailCompensation { reason } => match from {
                BookingStatus::Compensating => Ok(vec![E::CompensationFailed { reason }]),
                BookingStatus::CompensationFailed => Ok(vec![]),
                _ => refuse("fail compensation for"),
            },

            C::Fail { reason } => match from {
                BookingStatus::Requested | BookingStatus::PartnerPending => {
                    Ok(vec![E::BookingFailed { reason }])
                }
                BookingStatus::Failed => Ok(vec![]),
                _ => refuse("fail"),
            },

            C::RecordReservationReleased { reservation_id } => match from {
                s if s.releases_reservation() && self.reservation_released => Ok(vec![]),
                s if s.releases_reservation() => {
                    if let Some(id) = &reservation_id {
                        require_text("reservation_id", id, MAX_NAME_CHARS)?;
                    }
                    Ok(vec![E::PartnerReservationReleased { reservation_id }])
                }
                _ => refuse("record a released reservation for"),
            },

            C::Cancel { reason, at } => {
                require_text("reason", &reason, MAX_REASON_CHARS)?;
                match from {
                    BookingStatus::Requested
                    | BookingStatus::PartnerPending
                    | BookingStatus::Confirmed => Ok(vec![E::BookingCancelled {
                        reason,
                        reservation_id: self.reservation_id.clone(),
                        at,
                    }]),
                    // A paid booking is cancelled and its payment refunded.
                    BookingStatus::Paid => {
                        let payment_id = self.payment_id.clone().ok_or(BookingError::NotFound)?;
                        let amount = self.amount.clone().ok_or(BookingError::NotFound)?;
                        Ok(vec![
                            E::BookingCancelled {
                                reason,
                                reservation_id: self.reservation_id.clone(),
                                at,
                            },
                            E::RefundStarted { payment_id, amount },
                        ])
                    }
                    BookingStatus::Cancelled
                    | BookingStatus::Refunding
                    | BookingStatus::Refunded
                    | BookingStatus::RefundFailed => Ok(vec![]),
                    _ => refuse("cancel"),
                }
            }
        }
    }

    /// A partner answer moves a waiting booking to Confirmed or Rejected; any other answer is recorded as
    /// ignored (never an error, never a status change), so late and repeated callbacks are harmless.
    fn decide_partner_status(
        &self,
        reported: PartnerReportedStatus,
        reservation_id: Option<String>,
        source: PartnerSource,
        partner_time: DateTime<Utc>,
        reason: Option<String>,
    ) -> Result<Vec<BookingEvent>, BookingError> {
        let ignored = |reservation_id, why| {
            Ok(vec![BookingEvent::PartnerCallbackIgnored {
                reported,
                reservation_id,
                source,
                partner_time,
                reason: why,
            }])
        };
        if self
            .last_partner_status_at
            .is_some_and(|last| partner_time < last)
        {
            return ignored(reservation_id, IgnoredReason::Stale);
        }
        let duplicate = matches!(
            (reported, self.status),
            (PartnerReportedStatus::Confirmed, BookingStatus::Confirmed)
                | (PartnerReportedStatus::Rejected, BookingStatus::Rejected)
                | (PartnerReportedStatus::Cancelled, BookingStatus::Cancelled)
        );
        if duplicate {
            return ignored(reservation_id, IgnoredReason::Duplicate);
        }

        match (self.status.awaits_partner(), reported) {
            (true, PartnerReportedStatus::Confirmed) => {
                let reservation_id = reservation_id
                    .filter(|id| !id.trim().is_empty())
                    .ok_or(BookingError::MissingReservationId)?;
                Ok(vec![BookingEvent::PartnerConfirmed {
                    reservation_id,
                    source,
                    partner_time,
                }])
            }
            (true, PartnerReportedStatus::Rejected) => Ok(vec![BookingEvent::PartnerRejected {
                reason,
                source,
                partner_time,
            }]),
            // We only cancel on our side, so a partner cancellation never moves a booking; and once a booking
            // stopped waiting for the partner, no partner answer can move it any more.
            (true, PartnerReportedStatus::Cancelled) | (false, _) => {
                ignored(reservation_id, IgnoredReason::OutOfOrder)
            }
        }
    }
}

/// A required text field, as a booking error naming the field.
fn require_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), BookingError> {
    check_text(value, max_chars).map_err(|reason| BookingError::invalid(field, reason))
}

impl Aggregate for Booking {
    const TYPE: &'static str = "booking";
    type Command = BookingCommand;
    type Event = BookingEvent;
    type Error = BookingError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use BookingEvent as E;
        match event {
            E::BookingRequested {
                booking_id,
                owner,
                partner,
                resource,
                starts_at,
                ends_at,
                guests,
                amount,
                customer,
                at: _,
            } => {
                self.id = booking_id;
                self.owner = owner;
                self.status = BookingStatus::Requested;
                self.partner = partner;
                self.resource = resource;
                self.starts_at = starts_at;
                self.ends_at = ends_at;
                self.guests = guests;
                self.amount = Some(amount);
                self.customer = Some(customer);
            }
            E::PartnerReservationRequested { .. } => {
                // Deliberately not idempotent: applying an event twice (a snapshot bug) shows up here.
                self.partner_attempts = self.partner_attempts.saturating_add(1);
                self.status = BookingStatus::PartnerPending;
            }
            E::PartnerReservationOutcomeUnknown { .. } => {}
            E::PartnerConfirmed {
                reservation_id,
                partner_time,
                ..
            } => {
                self.status = BookingStatus::Confirmed;
                self.reservation_id = Some(reservation_id);
                self.last_partner_status_at = Some(partner_time);
            }
            E::PartnerRejected {
                reason,
                partner_time,
                ..
            } => {
                self.status = BookingStatus::Rejected;
                self.failure_reason = reason;
                self.last_partner_status_at = Some(partner_time);
            }
            E::PartnerCallbackIgnored { .. } => {
                self.ignored_callbacks = self.ignored_callbacks.saturating_add(1);
            }
            E::PaymentRequested {
                payment_key,
                method,
                ..
            } => {
                self.status = BookingStatus::PaymentPending;
                self.payment_key = Some(payment_key);
                self.payment_method = Some(method);
            }
            E::PaymentOutcomeUnknown { reason, .. } => {
                self.payment_unknown_attempts = self.payment_unknown_attempts.saturating_add(1);
                // Why the payment is not settled yet (shown while it is stuck).
                self.failure_reason = Some(format!("payment outcome unknown: {reason}"));
            }
            E::PaymentCaptured { payment_id, .. } => {
                self.status = BookingStatus::Paid;
                self.payment_id = Some(payment_id);
                self.failure_reason = None;
            }
            E::PaymentDeclined { reason } => {
                self.failure_reason = Some(reason);
                self.payment_declined = true;
            }
            E::RefundStarted { .. } => self.status = BookingStatus::Refunding,
            E::RefundCompleted { refund_id } => {
                self.status = BookingStatus::Refunded;
                self.refund_id = Some(refund_id);
            }
            E::RefundFailed { reason } => {
                self.status = BookingStatus::RefundFailed;
                self.failure_reason = Some(reason);
            }
            E::BookingResolved { status, reason } => {
                self.status = status;
                match status {
                    BookingStatus::Cancelled => self.cancel_reason = Some(reason),
                    _ => self.failure_reason = Some(reason),
                }
            }
            E::CompensationStarted { .. } => {
                self.status = BookingStatus::Compensating;
            }
            E::CompensationCompleted {} => {
                self.status = BookingStatus::Cancelled;
                self.cancel_reason = Some("payment declined".to_owned());
            }
            E::CompensationFailed { reason } => {
                self.status = BookingStatus::CompensationFailed;
                self.failure_reason = Some(reason);
            }
            E::BookingFailed { reason } => {
                self.status = BookingStatus::Failed;
                self.failure_reason = Some(reason);
            }
            E::BookingCancelled { reason, .. } => {
                self.status = BookingStatus::Cancelled;
                self.cancel_reason = Some(reason);
            }
            E::PartnerReservationReleased { .. } => self.reservation_released = true,
        }
    }
}

impl AggregateSchema for Booking {
    /// 2: payment, refund and resolution fields and statuses.
    const STATE_VERSION: i32 = 2;

    fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
        vec![Box::new(BookingRequestedV1ToV2)]
    }
}
