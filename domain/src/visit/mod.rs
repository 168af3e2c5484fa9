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
//! - `status`: [`VisitStatus`], [`SideEffectStatus`] and [`Patient`], the vocabulary every other module here
//!   builds on (it imports none of them).
//! - `commands`: [`VisitCommand`].
//! - `events`: [`VisitEvent`].
//! - `error`: [`VisitError`].
//! - `aggregate`: the [`Visit`] state, its transition rules and its `apply`.
//! - `tests` (test builds only): the given/when/then tests of the aggregate, one per rule.

mod aggregate;
mod commands;
mod error;
mod events;
mod status;

#[cfg(test)]
mod tests;

pub use aggregate::{Visit, MAX_DIAGNOSIS_CODES, MAX_SUMMARY_CHARS};
pub use commands::VisitCommand;
pub use error::VisitError;
pub use events::VisitEvent;
pub use status::{Patient, SideEffectStatus, VisitStatus};
