//! The Booking aggregate: a reservation of a partner's resource (a room, a table, a seat) for a period.
//!
//! Our booking state is the source of truth; the partner is an unreliable remote system. Every interaction with
//! it (each reservation attempt, each timeout, each answer, each ignored stale or duplicate callback) is an
//! event, so the history explains every status.
//!
//! ```text
//! Requested ──> PartnerPending ──> Confirmed ──> PaymentPending ──captured──> Paid ──cancel──> Refunding ──> Refunded
//!     │              │  ^ retry        │                │                                       └──> RefundFailed (manual)
//!     │              │  └──┘           │                └──declined──> Compensating ──> Cancelled
//!     │              │                 │                                    └────────> CompensationFailed (manual)
//!     ├──────────────┴──> Rejected / Failed (partner refused, retries exhausted, deadline passed)
//!     └──────────────┴─────────────────┴──> Cancelled
//! ```
//! An operator can settle a booking no automatic path can settle any more (`Resolve`): a waiting one to
//! failed or cancelled, a compensating one to cancelled, a refunding one to refunded.
//!
//! # Layout
//! - `status`: [`BookingStatus`] and [`Customer`], the vocabulary every other module here builds on (it
//!   imports none of them).
//! - `commands`: [`BookingCommand`] and the partner/payment vocabulary it carries.
//! - `events`: [`BookingEvent`] (versioned) and the ignored-callback vocabulary.
//! - `error`: [`BookingError`].
//! - `aggregate`: the [`Booking`] state, its transition rules and its `apply`.
//! - `upcasters`: [`upcasters::BookingRequestedV1ToV2`], for events written by older trailbook versions.
//! - `tests` (test builds only): the given/when/then tests of the aggregate, one per rule.

mod aggregate;
mod commands;
mod error;
mod events;
mod status;
pub mod upcasters;

#[cfg(test)]
mod tests;

pub use aggregate::{Booking, MAX_GUESTS};
pub use commands::{BookingCommand, PaymentOutcome, RefundOutcome};
pub use error::BookingError;
pub use events::{BookingEvent, IgnoredReason, PartnerReportedStatus, PartnerSource};
pub use status::{BookingStatus, Customer};
