//! What happened to a booking. Events are facts in the past tense and are never changed once stored; a new
//! shape gets a new `event_version` and an upcaster (see [`super::upcasters`]).
//!
//! # Stored JSON
//! Externally tagged by variant name, fields in snake_case, times in RFC 3339, e.g. (version 2.0):
//! ```json
//! {"BookingRequested":{"booking_id":"b-1","owner":"user-1","partner":"acme-hotels","resource":"room-42",
//!   "starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-03T11:00:00Z","guests":2,
//!   "amount":{"minor":25000,"currency":"EUR"},"customer":{"name":"Ada Lovelace","email":"ada@example.com"},
//!   "at":"2026-11-01T10:00:00Z"}}
//! ```
//! and `{"PartnerCallbackIgnored":{"reported":"rejected","reservation_id":null,"source":"callback",
//! "partner_time":"2026-11-01T10:05:00Z","reason":"out_of_order"}}`.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::status::{BookingStatus, Customer};
use crate::values::Money;

/// An event of the [`Booking`](super::Booking) aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BookingEvent {
    /// A client requested a booking (version 2.0: `amount` and `customer` are nested objects).
    BookingRequested {
        /// The booking id (the aggregate id).
        booking_id: String,
        /// The subject of the client who created it.
        owner: String,
        /// The partner holding the resource.
        partner: String,
        /// The partner's resource.
        resource: String,
        /// Start of the booked period.
        starts_at: DateTime<Utc>,
        /// End of the booked period.
        ends_at: DateTime<Utc>,
        /// Number of guests.
        guests: u32,
        /// The price.
        amount: Money,
        /// Who the booking is for.
        customer: Customer,
        /// When the request was received.
        at: DateTime<Utc>,
    },
    /// A reservation request to the partner started (every attempt, retries included).
    PartnerReservationRequested {
        /// 1 for the first attempt, then 2, 3, ...
        attempt: u32,
        /// When the attempt started.
        at: DateTime<Utc>,
    },
    /// A reservation attempt ended without an answer; the partner may or may not hold a reservation.
    PartnerReservationOutcomeUnknown {
        /// The attempt whose outcome is unknown.
        attempt: u32,
        /// What happened (timeout, connection reset, ...).
        reason: String,
    },
    /// The partner confirmed the reservation.
    PartnerConfirmed {
        /// The partner's reservation id.
        reservation_id: String,
        /// How the confirmation reached us.
        source: PartnerSource,
        /// The partner's timestamp for the confirmation.
        partner_time: DateTime<Utc>,
    },
    /// The partner rejected the reservation.
    PartnerRejected {
        /// The partner's explanation, if it gave one.
        reason: Option<String>,
        /// How the rejection reached us.
        source: PartnerSource,
        /// The partner's timestamp for the rejection.
        partner_time: DateTime<Utc>,
    },
    /// A partner report arrived that does not move the booking forward; it is recorded, not applied.
    PartnerCallbackIgnored {
        /// What the partner reported.
        reported: PartnerReportedStatus,
        /// The reservation id the partner sent, if any (a confirmation of a cancelled booking names the
        /// reservation that still has to be released).
        reservation_id: Option<String>,
        /// How the report reached us.
        source: PartnerSource,
        /// The partner's timestamp for the report.
        partner_time: DateTime<Utc>,
        /// Why it was ignored.
        reason: IgnoredReason,
    },
    /// The client asked to pay; the payment is handed to the payment provider.
    PaymentRequested {
        /// The provider's idempotency key for this payment.
        payment_key: String,
        /// The payment-method token handed to the provider.
        method: String,
        /// The amount to charge (the booking's amount).
        amount: Money,
        /// When the payment was requested.
        at: DateTime<Utc>,
    },
    /// A payment attempt ended without an answer; the provider may or may not have charged.
    PaymentOutcomeUnknown {
        /// The attempt whose outcome is unknown.
        attempt: u32,
        /// What happened (timeout, 5xx, ...).
        reason: String,
    },
    /// The payment was captured; the booking is paid.
    PaymentCaptured {
        /// The provider's payment id.
        payment_id: String,
        /// The amount captured (the booking's amount).
        amount: Money,
    },
    /// The payment was declined; compensation follows.
    PaymentDeclined {
        /// The provider's reason.
        reason: String,
    },
    /// Releasing the partner reservation of a booking whose payment was declined started.
    CompensationStarted {
        /// The partner reservation to cancel.
        reservation_id: Option<String>,
    },
    /// The partner reservation was released; the booking is cancelled.
    CompensationCompleted {},
    /// Releasing the partner reservation gave up; a human must resolve it.
    CompensationFailed {
        /// Why compensation gave up.
        reason: String,
    },
    /// The booking could not be made (partner refused permanently, or retries were exhausted).
    BookingFailed {
        /// Why.
        reason: String,
    },
    /// The partner reservation of a cancelled booking was cancelled at the partner (or it held none).
    PartnerReservationReleased {
        /// The released reservation; `None` when the partner held none.
        reservation_id: Option<String>,
    },
    /// A paid booking was cancelled: its payment is being refunded.
    RefundStarted {
        /// The provider's payment id to refund.
        payment_id: String,
        /// The amount to refund.
        amount: Money,
    },
    /// The payment was refunded.
    RefundCompleted {
        /// The provider's refund id.
        refund_id: String,
    },
    /// Refunding gave up; a human must resolve it.
    RefundFailed {
        /// Why.
        reason: String,
    },
    /// An operator settled the booking by hand (the operator is the event's actor).
    BookingResolved {
        /// The status the booking ends in.
        status: BookingStatus,
        /// Why.
        reason: String,
    },
    /// The booking was cancelled on our side.
    BookingCancelled {
        /// Why (given by the canceller).
        reason: String,
        /// The partner reservation to release, if one was confirmed.
        reservation_id: Option<String>,
        /// When the cancellation was requested.
        at: DateTime<Utc>,
    },
}

impl BookingEvent {
    /// Current version of `BookingRequested` (2.0 nests `amount` and `customer`).
    pub const BOOKING_REQUESTED_VERSION: &'static str = "2.0";
}

impl DomainEvent for BookingEvent {
    fn event_type(&self) -> String {
        match self {
            Self::BookingRequested { .. } => "BookingRequested",
            Self::PartnerReservationRequested { .. } => "PartnerReservationRequested",
            Self::PartnerReservationOutcomeUnknown { .. } => "PartnerReservationOutcomeUnknown",
            Self::PartnerConfirmed { .. } => "PartnerConfirmed",
            Self::PartnerRejected { .. } => "PartnerRejected",
            Self::PartnerCallbackIgnored { .. } => "PartnerCallbackIgnored",
            Self::PaymentRequested { .. } => "PaymentRequested",
            Self::PaymentOutcomeUnknown { .. } => "PaymentOutcomeUnknown",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::PaymentDeclined { .. } => "PaymentDeclined",
            Self::CompensationStarted { .. } => "CompensationStarted",
            Self::CompensationCompleted {} => "CompensationCompleted",
            Self::CompensationFailed { .. } => "CompensationFailed",
            Self::BookingFailed { .. } => "BookingFailed",
            Self::BookingCancelled { .. } => "BookingCancelled",
            Self::RefundStarted { .. } => "RefundStarted",
            Self::RefundCompleted { .. } => "RefundCompleted",
            Self::RefundFailed { .. } => "RefundFailed",
            Self::BookingResolved { .. } => "BookingResolved",
            Self::PartnerReservationReleased { .. } => "PartnerReservationReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::BookingRequested { .. } => Self::BOOKING_REQUESTED_VERSION,
            _ => "1.0",
        }
        .to_owned()
    }
}

/// The reservation status a partner reports. JSON: snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerReportedStatus {
    /// The partner holds the reservation.
    Confirmed,
    /// The partner refused the reservation.
    Rejected,
    /// The partner no longer holds the reservation.
    Cancelled,
}

impl PartnerReportedStatus {
    /// The snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a partner answer reached us. JSON: snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerSource {
    /// The response to our reservation request.
    Response,
    /// A signed callback from the partner.
    Callback,
    /// A reconciliation lookup we made.
    Lookup,
}

impl PartnerSource {
    /// The snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Callback => "callback",
            Self::Lookup => "lookup",
        }
    }
}

/// Why a partner report was recorded but not applied. JSON: snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoredReason {
    /// The booking already has the reported status.
    Duplicate,
    /// The report is older than the partner status already applied.
    Stale,
    /// The booking has moved past the point where this report could apply.
    OutOfOrder,
}

impl IgnoredReason {
    /// The snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::OutOfOrder => "out_of_order",
        }
    }
}
