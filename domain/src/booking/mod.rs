//! The Booking aggregate: a reservation of a partner's resource (a room, a table, a seat) for a period.
//!
//! Our booking state is the source of truth; the partner is an unreliable remote system. Every interaction with
//! it (each reservation attempt, each timeout, each answer, each ignored stale or duplicate callback) is an
//! event, so the history explains every status.
//!
//! ```text
//! Requested ──> PartnerPending ──> Confirmed ──> Paid
//!     │              │  ^ retry        │ └──payment declined──> Compensating ──> Cancelled
//!     │              │  └──┘           │                             └────────> CompensationFailed (manual)
//!     ├──────────────┴──> Rejected / Failed
//!     └──────────────┴─────────────────┴──> Cancelled
//! ```
//!
//! # Layout
//! - `commands`: [`BookingCommand`] and the partner/payment vocabulary it carries.
//! - `events`: [`BookingEvent`] (versioned) and the ignored-callback vocabulary.
//! - `error`: [`BookingError`].
//! - `aggregate`: the [`Booking`] state, its transition rules and its `apply`.
//! - `upcasters`: [`upcasters::BookingRequestedV1ToV2`], for events written by older trailbook versions.

mod aggregate;
mod commands;
mod error;
mod events;
pub mod upcasters;

pub use aggregate::{Booking, BookingStatus, Customer};
pub use commands::{BookingCommand, PaymentOutcome};
pub use error::BookingError;
pub use events::{BookingEvent, IgnoredReason, PartnerReportedStatus, PartnerSource};
