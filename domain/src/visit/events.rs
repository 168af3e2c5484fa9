//! What happened to a visit. All visit events are version "1.0".
//!
//! # Stored JSON
//! Externally tagged by variant name, e.g.
//! `{"VisitCompleted":{"summary":"...","diagnosis_codes":["J06.9"],"at":"2026-12-01T10:00:00Z"}}`.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::status::Patient;

/// An event of the [`Visit`](super::Visit) aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VisitEvent {
    /// A visit was scheduled.
    VisitScheduled {
        /// The visit id (the aggregate id).
        visit_id: String,
        /// The subject of the client who created it.
        owner: String,
        /// Who the visit is for.
        patient: Patient,
        /// The clinician.
        clinician: String,
        /// When the visit is planned.
        scheduled_at: DateTime<Utc>,
        /// When it was scheduled.
        at: DateTime<Utc>,
    },
    /// The patient checked in.
    PatientCheckedIn {
        /// When.
        at: DateTime<Utc>,
    },
    /// The consultation started.
    ConsultationStarted {
        /// When.
        at: DateTime<Utc>,
    },
    /// The consultation ended; the report and e-mail are now pending.
    VisitCompleted {
        /// The clinician's summary.
        summary: String,
        /// ICD-10 codes.
        diagnosis_codes: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The visit was cancelled.
    VisitCancelled {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The patient did not come.
    VisitMarkedNoShow {
        /// When it was recorded.
        at: DateTime<Utc>,
    },
    /// The visit report was generated.
    ReportGenerated {
        /// Where the document is stored.
        document_id: String,
        /// SHA-256 of the document.
        sha256: String,
        /// Size of the document.
        bytes: u64,
    },
    /// A report generation attempt failed.
    ReportGenerationFailed {
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// No more attempts will be made.
        final_attempt: bool,
    },
    /// The report was e-mailed to the patient.
    ReportSent {
        /// The mail provider's message id.
        message_id: String,
    },
    /// An attempt to e-mail the report failed.
    ReportEmailFailed {
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// No more attempts will be made.
        final_attempt: bool,
    },
}

impl DomainEvent for VisitEvent {
    fn event_type(&self) -> String {
        match self {
            Self::VisitScheduled { .. } => "VisitScheduled",
            Self::PatientCheckedIn { .. } => "PatientCheckedIn",
            Self::ConsultationStarted { .. } => "ConsultationStarted",
            Self::VisitCompleted { .. } => "VisitCompleted",
            Self::VisitCancelled { .. } => "VisitCancelled",
            Self::VisitMarkedNoShow { .. } => "VisitMarkedNoShow",
            Self::ReportGenerated { .. } => "ReportGenerated",
            Self::ReportGenerationFailed { .. } => "ReportGenerationFailed",
            Self::ReportSent { .. } => "ReportSent",
            Self::ReportEmailFailed { .. } => "ReportEmailFailed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
