//! The visit vocabulary that the state, the commands, the events and the errors all speak: where a visit
//! is in its life ([`VisitStatus`]), how far each side effect of a completed visit got
//! ([`SideEffectStatus`]), and who the visit is for ([`Patient`]).
//!
//! This module imports nothing else from `visit`, so `commands`, `events`, `error` and `aggregate` can all
//! build on it without importing one another in a circle.

use serde::{Deserialize, Serialize};

use crate::values::Email;

/// Who a visit is for. JSON: `{"id":"p-1","name":"...","email":"..."}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// The patient's id in the clinic's records.
    pub id: String,
    /// The patient's name.
    pub name: String,
    /// Where the visit report is sent.
    pub email: Email,
}

/// Where a visit is in its life. JSON and REST: snake_case (`"in_consultation"`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Planned.
    #[default]
    Scheduled,
    /// The patient arrived.
    CheckedIn,
    /// The clinician is seeing the patient.
    InConsultation,
    /// Done (final); the report and e-mail may still be pending.
    Completed,
    /// Cancelled (final).
    Cancelled,
    /// The patient did not come (final).
    NoShow,
}

impl VisitStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Scheduled,
        Self::CheckedIn,
        Self::InConsultation,
        Self::Completed,
        Self::Cancelled,
        Self::NoShow,
    ];

    /// The snake_case name, as in JSON and REST.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::CheckedIn => "checked_in",
            Self::InConsultation => "in_consultation",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::NoShow => "no_show",
        }
    }

    /// No further status change is expected (Completed, Cancelled, NoShow).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::NoShow)
    }
}

impl std::fmt::Display for VisitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a side effect run after a visit completed. JSON: snake_case.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffectStatus {
    /// Not needed (the visit has not completed).
    #[default]
    NotRequired,
    /// To do, or being retried.
    Pending,
    /// Done.
    Done,
    /// Given up after the final attempt; an operator may replay the job.
    Failed,
}

impl SideEffectStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::NotRequired, Self::Pending, Self::Done, Self::Failed];

    /// The snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotRequired => "not_required",
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for SideEffectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
