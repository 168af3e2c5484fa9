//! The Visit aggregate: a medical care workflow.
//!
//! ```text
//! Scheduled ──> CheckedIn ──> InConsultation ──> Completed   (then: report Pending → Done | Failed,
//!   │  │            │                                          e-mail Pending → Done | Failed)
//!   │  └────────────┴──> Cancelled
//!   └──> NoShow
//! ```
//!
//! The status transition commits first; side effects (the PDF report, the e-mail to the patient) run
//! afterwards as jobs and are recorded back as events, so a status view can say "completed, report failed".
//!
//! # Layout
//! - `commands`: [`VisitCommand`].
//! - `events`: [`VisitEvent`].
//! - `error`: [`VisitError`].
//! - `aggregate`: the [`Visit`] state, its transition rules and its `apply`.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Patient, SideEffectStatus, Visit, VisitStatus};
pub use commands::VisitCommand;
pub use error::VisitError;
pub use events::VisitEvent;
