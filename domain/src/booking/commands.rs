//! What callers may ask a booking to do. Commands are imperative; each is accepted or refused as a whole.
//!
//! Commands that need the current time carry it (`at`), so handlers stay deterministic and testable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::{PartnerReportedStatus, PartnerSource};
use super::status::{BookingStatus, Customer};
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
    /// The client pays a confirmed booking: the payment is handed to the payment provider (a job), whose
    /// outcome arrives later as `RecordPayment`. Repeating it while the payment is pending or after it
    /// was captured is a no-op.
    RequestPayment {
        /// The provider's idempotency key for this payment (derived from the booking, so a retried
        /// request can never charge twice).
        payment_key: String,
        /// The payment-method token handed to the provider.
        method: String,
        /// When the payment was requested.
        at: DateTime<Utc>,
    },
    /// A payment call timed out or broke off: the outcome is unknown (never "failed"); the payment job
    /// settles it by asking the provider, never by charging again.
    RecordPaymentOutcomeUnknown {
        /// The job attempt whose outcome is unknown.
        attempt: u32,
        /// What happened (timeout, 5xx, ...).
        reason: String,
    },
    /// The payment provider answered (its response, a webhook or a lookup). A repeated answer
    /// (a duplicate or late webhook) is a no-op.
    RecordPayment {
        /// Captured or declined.
        outcome: PaymentOutcome,
    },
    /// The payment provider answered a refund (of a cancelled paid booking).
    RecordRefund {
        /// Refunded, or given up.
        outcome: RefundOutcome,
    },
    /// An operator settles a booking that no automatic path can settle any more (stuck waiting for a
    /// partner, or compensation / refund given up), after checking with the partner or provider.
    Resolve {
        /// The status the booking ends in: `failed` or `cancelled` from a status waiting for the partner,
        /// `cancelled` from `payment_pending` (no charge) or a compensating one, `refunded` from a
        /// refunding one.
        status: BookingStatus,
        /// Why, for the history; required.
        reason: String,
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

/// The answer of the payment provider to a refund.
///
/// JSON: `{"refunded":{"refund_id":"re-1"}}` or `{"failed":{"reason":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOutcome {
    /// The money went back to the customer.
    Refunded {
        /// The provider's refund id.
        refund_id: String,
    },
    /// Refunding gave up (retries exhausted or refused); a human must resolve it.
    Failed {
        /// Why.
        reason: String,
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
