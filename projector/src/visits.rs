//! Projection `visits`: one `rm_visits` row per visit, with its status, clinician, patient, the progress
//! of its side effects (report and e-mail: not_required, pending, done, failed), the time it reached each
//! status, and its folded state.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::visit::{SideEffectStatus, VisitEvent, VisitStatus};
use domain::{AggregateSchema, Visit};
use serde::{Deserialize, Serialize};
use store::RecordedEvent;

use crate::catalog::{self, Table};
use crate::fold::{folded_row_fields, FoldedRow};

/// A row of `rm_visits` (field names are the column names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct VisitRow {
    visit_id: String,
    owner: String,
    status: String,
    clinician: String,
    patient_id: Option<String>,
    patient_name: Option<String>,
    scheduled_at: Option<DateTime<Utc>>,
    report_status: String,
    email_status: String,
    report_attempts: u32,
    email_attempts: u32,
    checked_in_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    no_show_at: Option<DateTime<Utc>>,
    report_generated_at: Option<DateTime<Utc>>,
    email_sent_at: Option<DateTime<Utc>>,
    status_since: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    last_position: i64,
    state_version: i32,
    state: Visit,
}

impl VisitRow {
    /// The milestone column of `status` (Scheduled has none: that is `created_at`).
    fn milestone(&mut self, status: VisitStatus) -> Option<&mut Option<DateTime<Utc>>> {
        match status {
            VisitStatus::Scheduled => None,
            VisitStatus::CheckedIn => Some(&mut self.checked_in_at),
            VisitStatus::InConsultation => Some(&mut self.started_at),
            VisitStatus::Completed => Some(&mut self.completed_at),
            VisitStatus::Cancelled => Some(&mut self.cancelled_at),
            VisitStatus::NoShow => Some(&mut self.no_show_at),
        }
    }
}

impl FoldedRow for VisitRow {
    type Aggregate = Visit;
    const TABLE: Table = catalog::VISITS;

    fn new(id: &str) -> Self {
        Self {
            visit_id: id.to_owned(),
            status: VisitStatus::default().as_str().to_owned(),
            report_status: SideEffectStatus::default().as_str().to_owned(),
            email_status: SideEffectStatus::default().as_str().to_owned(),
            state_version: Visit::STATE_VERSION,
            ..Self::default()
        }
    }

    folded_row_fields!(visit_id, timestamps);

    fn apply(&mut self, event: VisitEvent, recorded: &RecordedEvent) {
        let at = recorded.recorded_at;
        let before = (self.version > 0).then_some(self.state.status);
        let (report_before, email_before) = (self.state.report_status, self.state.email_status);
        self.state.apply(event);
        let after = self.state.status;
        if before != Some(after) {
            self.status_since = at;
            if let Some(milestone) = self.milestone(after) {
                milestone.get_or_insert(at);
            }
        }
        let done = SideEffectStatus::Done;
        if report_before != done && self.state.report_status == done {
            self.report_generated_at.get_or_insert(at);
        }
        if email_before != done && self.state.email_status == done {
            self.email_sent_at.get_or_insert(at);
        }
    }

    fn finish(&mut self) {
        let state = &self.state;
        self.owner.clone_from(&state.owner);
        self.status = state.status.as_str().to_owned();
        self.clinician.clone_from(&state.clinician);
        self.patient_id = state.patient.as_ref().map(|p| p.id.clone());
        self.patient_name = state.patient.as_ref().map(|p| p.name.clone());
        self.scheduled_at = state.scheduled_at;
        self.report_status = state.report_status.as_str().to_owned();
        self.email_status = state.email_status.as_str().to_owned();
        self.report_attempts = state.report_attempts;
        self.email_attempts = state.email_attempts;
        self.state_version = Visit::STATE_VERSION;
    }
}
