//! The booking vocabulary that the state, the commands, the events and the errors all speak: where a
//! booking is in its life ([`BookingStatus`], with what each status means for the resource's slot and for
//! the partner's reservation) and who it is for ([`Customer`]).
//!
//! This module imports nothing else from `booking`, so `commands`, `events`, `error` and `aggregate` can
//! all build on it without importing one another in a circle.

use serde::{Deserialize, Serialize};

use crate::values::Email;

/// Who a booking is for. JSON: `{"name":"Ada Lovelace","email":"ada@example.com"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The customer's name, as given.
    pub name: String,
    /// The customer's e-mail address.
    pub email: Email,
}

/// Where a booking is in its life. JSON and REST: snake_case (`"partner_pending"`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// Accepted by us; the partner has not been asked yet.
    #[default]
    Requested,
    /// At least one reservation attempt was made; the partner's answer is outstanding.
    PartnerPending,
    /// The partner holds the reservation; payment is outstanding.
    Confirmed,
    /// A payment was handed to the payment provider; its outcome is outstanding.
    PaymentPending,
    /// Paid (final).
    Paid,
    /// The partner refused (final).
    Rejected,
    /// The booking could not be made (final).
    Failed,
    /// Cancelled by us, or compensated after a declined payment (final).
    Cancelled,
    /// The payment was declined; the partner reservation is being released.
    Compensating,
    /// Releasing the partner reservation gave up; a human must resolve it (final).
    CompensationFailed,
    /// A paid booking was cancelled; the payment is being refunded (the slot is free again).
    Refunding,
    /// A paid booking was cancelled and its payment refunded (final).
    Refunded,
    /// Refunding the payment of a cancelled booking gave up; a human must resolve it (final).
    RefundFailed,
}

impl BookingStatus {
    /// Every status, in lifecycle order (for status boards and exhaustive tests).
    pub const ALL: [Self; 13] = [
        Self::Requested,
        Self::PartnerPending,
        Self::Confirmed,
        Self::PaymentPending,
        Self::Paid,
        Self::Rejected,
        Self::Failed,
        Self::Cancelled,
        Self::Compensating,
        Self::CompensationFailed,
        Self::Refunding,
        Self::Refunded,
        Self::RefundFailed,
    ];

    /// The snake_case name, as in JSON and REST.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::PartnerPending => "partner_pending",
            Self::Confirmed => "confirmed",
            Self::PaymentPending => "payment_pending",
            Self::Paid => "paid",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Compensating => "compensating",
            Self::CompensationFailed => "compensation_failed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
            Self::RefundFailed => "refund_failed",
        }
    }

    /// The status named `name` (snake_case, as in JSON and REST).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// No further status change is expected without a person (Paid, Rejected, Failed, Cancelled,
    /// CompensationFailed, Refunded, RefundFailed). A paid booking can still be cancelled (refunded).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Paid
                | Self::Rejected
                | Self::Failed
                | Self::Cancelled
                | Self::CompensationFailed
                | Self::Refunded
                | Self::RefundFailed
        )
    }

    /// The resource's time slot is claimed by a booking in this status. The store's write rules derive
    /// the claim from this alone: a command that moves a booking into one of these statuses claims the
    /// slot in its transaction, one that moves it out releases it.
    pub fn holds_slot(&self) -> bool {
        matches!(
            self,
            Self::Requested
                | Self::PartnerPending
                | Self::Confirmed
                | Self::PaymentPending
                | Self::Paid
                | Self::Compensating
        )
    }

    /// After a cancellation or failure on our side the partner may still hold a reservation that must
    /// be given back (`partner.release`): Cancelled, Failed, Refunding, Refunded, RefundFailed.
    pub fn releases_reservation(&self) -> bool {
        matches!(
            self,
            Self::Cancelled | Self::Failed | Self::Refunding | Self::Refunded | Self::RefundFailed
        )
    }

    /// Waiting for the partner's answer (Requested or PartnerPending).
    pub fn awaits_partner(&self) -> bool {
        matches!(self, Self::Requested | Self::PartnerPending)
    }
}

impl std::fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
