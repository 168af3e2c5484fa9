//! What callers may ask a visit to do. Commands that need the current time carry it (`at`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::status::Patient;

/// A command for the [`Visit`](super::Visit) aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VisitCommand {
    /// Schedule a new visit. Refused if it exists or the patient id, patient name or clinician is blank.
    Schedule {
        /// The new visit's id (the aggregate id).
        visit_id: String,
        /// The subject of the client creating it.
        owner: String,
        /// Who the visit is for.
        patient: Patient,
        /// The clinician seeing the patient, e.g. `dr-grey`.
        clinician: String,
        /// When the visit is planned.
        scheduled_at: DateTime<Utc>,
        /// When the request was received.
        at: DateTime<Utc>,
    },
    /// The patient arrived (from Scheduled).
    CheckIn {
        /// When.
        at: DateTime<Utc>,
    },
    /// The clinician started the consultation (from CheckedIn).
    StartConsultation {
        /// When.
        at: DateTime<Utc>,
    },
    /// The consultation ended (from InConsultation); the report and e-mail become pending.
    Complete {
        /// The clinician's summary; required, at most 10 000 characters.
        summary: String,
        /// ICD-10 codes such as `J06.9`; at most 20.
        diagnosis_codes: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Cancel the visit (from Scheduled or CheckedIn). Cancelling a cancelled visit is a no-op.
    Cancel {
        /// Why; required, at most 500 characters.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The patient did not come (from Scheduled).
    MarkNoShow {
        /// When.
        at: DateTime<Utc>,
    },
    /// The report job produced the PDF. The same `sha256` again is a no-op.
    RecordReportGenerated {
        /// Where the document is stored.
        document_id: String,
        /// SHA-256 of the document, 64 hex digits.
        sha256: String,
        /// Size of the document.
        bytes: u64,
    },
    /// A report job attempt failed. Ignored (no-op) once a report was generated.
    RecordReportFailed {
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// No more attempts will be made: the report is Failed rather than still Pending.
        final_attempt: bool,
    },
    /// The report was e-mailed to the patient. The same `message_id` again is a no-op.
    RecordReportSent {
        /// The mail provider's message id.
        message_id: String,
    },
    /// An e-mail job attempt failed. Ignored (no-op) once the report was sent.
    RecordEmailFailed {
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// No more attempts will be made: the e-mail is Failed rather than still Pending.
        final_attempt: bool,
    },
}
