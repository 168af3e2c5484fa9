//! What callers may ask a booking to do. Commands are imperative; each is accepted or refused as a whole.
//!
//! Commands that need the current time carry it (`at`), so handlers stay deterministic and testable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Customer;
use super::events::{PartnerReportedStatus, PartnerSource};
use crate::values::Money;

/// A command for the [`Booking`](super::Booking) aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BookingCommand {
    /// A client asks for a booking. Refused if the booking exists, the period is empty or reversed, guests are
    /// not in 1..=100, the amount is not positive, or a name is blank.
    Request {
        /// The new booking's id (the aggregate id).
        booking_id: String,
        /// The subject of the client creating it.
        owner: String,
        /// The partner holding the resource, e.g. `acme-hotels`.
        partner: String,
        /// The partner's resource, e.g. `room-42`.
        resource: String,
        /// Start of the booked period.
        starts_at: DateTime<Utc>,
        /// End of the booked period; must be after `starts_at`.
        ends_at: DateTime<Utc>,
        /// Number of guests, 1..=100.
        guests: u32,
        /// The price; `minor` must be positive.
        amount: Money,
        /// Who the booking is for.
        customer: Customer,
        /// When the request was received.
        at: DateTime<Utc>,
    },
    /// The partner gateway is about to ask the partner for a reservation (first attempt or a retry).
    RecordReservationRequested {
        /// 1 for the first attempt, then 2, 3, ...
        attempt: u32,
        /// When the attempt started.
        at: DateTime<Utc>,
    },
    /// A reservation call timed out or broke off: the outcome is unknown (never "failed"), reconciliation
    /// will ask the partner.
    RecordReservationOutcomeUnknown {
        /// The attempt whose outcome is unknown.
        attempt: u32,
        /// What happened (timeout, connection reset, 5xx, ...).
        reason: String,
    },
    /// A partner answer arrived: a direct response, a signed callback, or a reconciliation lookup.
    ApplyPartnerStatus {
        /// What the partner says the reservation's status is.
        reported: PartnerReportedStatus,
        /// The partner's reservation id; required for a confirmation.
        reservation_id: Option<String>,
        /// How the answer reached us.
        source: PartnerSource,
        /// The partner's own timestamp for this status (used to detect stale reports).
        partner_time: DateTime<Utc>,
        /// The partner's explanation, if any (e.g. why it rejected).
        reason: Option<String>,
    },
    /// The payment provider answered for a confirmed booking.
    RecordPayment {
        /// Captured or declined.
        outcome: PaymentOutcome,
    },
    /// The partner reservation of a booking whose payment was declined has been cancelled.
    CompleteCompensation,
    /// Cancelling the partner reservation of a booking whose payment was declined gave up (needs a human).
    FailCompensation {
        /// Why compensation gave up.
        reason: String,
    },
    /// The partner permanently refused, or the reservation retries are exhausted.
    Fail {
        /// Why the booking failed.
        reason: String,
    },
    /// The partner reservation of a cancelled booking was released (cancelled at the partner), or the
    /// partner holds none (`reservation_id` `None`). Recording it again is a no-op.
    RecordReservationReleased {
        /// The partner reservation that was cancelled, if the partner held one.
        reservation_id: Option<String>,
    },
    /// The client (or an operator) cancels the booking. Cancelling a cancelled booking is a no-op.
    Cancel {
        /// Why; required, at most 500 characters.
        reason: String,
        /// When the cancellation was requested.
        at: DateTime<Utc>,
    },
}

/// The answer of the payment provider.
///
/// JSON: `{"captured":{"payment_id":"pay-1"}}` or `{"declined":{"reason":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// The money was taken.
    Captured {
        /// The provider's payment id (used to recognise a repeated capture).
        payment_id: String,
    },
    /// The provider refused the payment.
    Declined {
        /// The provider's reason.
        reason: String,
    },
}
