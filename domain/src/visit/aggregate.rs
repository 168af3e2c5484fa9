//! The Visit state, its transition rules (`handle`) and how each event changes it (`apply`).
//!
//! As for bookings, `handle` decides the events from the current state (`decide`, pure) and writes them
//! through the `EventSink`; the state changes only in `apply`.
//!
//! The status and value types the state holds live in `super::status`; the tests in `super::tests`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::VisitCommand;
use super::error::VisitError;
use super::events::VisitEvent;
use super::status::{Patient, SideEffectStatus, VisitStatus};
use crate::schema::AggregateSchema;
use crate::values::{check_text, MAX_NAME_CHARS, MAX_REASON_CHARS};

/// Longest accepted visit summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 10_000;
/// Most diagnosis codes on one visit.
pub const MAX_DIAGNOSIS_CODES: usize = 20;

/// The state of one visit, folded from its events. `Default` is "no such visit".
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    /// The visit id; empty until `VisitScheduled`.
    pub id: String,
    /// The subject of the client who created it.
    pub owner: String,
    /// Where the visit is in its life.
    pub status: VisitStatus,
    /// Who the visit is for; `None` only before `VisitScheduled`.
    pub patient: Option<Patient>,
    /// The clinician.
    pub clinician: String,
    /// When the visit is planned; `None` only before `VisitScheduled`.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The clinician's summary, once completed.
    pub summary: Option<String>,
    /// ICD-10 codes, once completed.
    pub diagnosis_codes: Vec<String>,
    /// Progress of the PDF report.
    pub report_status: SideEffectStatus,
    /// Progress of the e-mail to the patient.
    pub email_status: SideEffectStatus,
    /// SHA-256 of the generated report.
    pub report_sha256: Option<String>,
    /// Where the generated report is stored (the e-mail job attaches it).
    pub report_document_id: Option<String>,
    /// Failed report generation attempts.
    pub report_attempts: u32,
    /// Failed e-mail attempts.
    pub email_attempts: u32,
    /// The mail provider's message id of the sent report.
    pub message_id: Option<String>,
    /// Why the visit was cancelled.
    pub cancel_reason: Option<String>,
}

impl Visit {
    /// Whether a visit has been scheduled under this id.
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// Whether the visit exists and reached a final status (Completed, Cancelled, NoShow).
    pub fn is_final(&self) -> bool {
        self.exists() && self.status.is_final()
    }

    /// The events `command` produces from the current state, or why it is refused. Pure: no I/O, no clock.
    fn decide(&self, command: VisitCommand) -> Result<Vec<VisitEvent>, VisitError> {
        use VisitCommand as C;
        use VisitEvent as E;

        if !matches!(command, C::Schedule { .. }) && !self.exists() {
            return Err(VisitError::NotFound);
        }
        let from = self.status;
        let refuse = |action| Err(VisitError::InvalidTransition { from, action });
        let completed = from == VisitStatus::Completed;

        match command {
            C::Schedule {
                visit_id,
                owner,
                patient,
                clinician,
                scheduled_at,
                at,
            } => {
                if self.exists() {
                    return Err(VisitError::AlreadyExists);
                }
                require_text("visit_id", &visit_id, MAX_NAME_CHARS)?;
                require_text("owner", &owner, MAX_NAME_CHARS)?;
                require_text("patient.id", &patient.id, MAX_NAME_CHARS)?;
                require_text("patient.name", &patient.name, MAX_NAME_CHARS)?;
                require_text("clinician", &clinician, MAX_NAME_CHARS)?;
                Ok(vec![E::VisitScheduled {
                    visit_id,
                    owner,
                    patient,
                    clinician,
                    scheduled_at,
                    at,
                }])
            }

            C::CheckIn { at } => match from {
                VisitStatus::Scheduled => Ok(vec![E::PatientCheckedIn { at }]),
                _ => refuse("check in"),
            },

            C::StartConsultation { at } => match from {
                VisitStatus::CheckedIn => Ok(vec![E::ConsultationStarted { at }]),
                _ => refuse("start a consultation for"),
            },

            C::Complete {
                summary,
                diagnosis_codes,
                at,
            } => {
                require_text("summary", &summary, MAX_SUMMARY_CHARS)?;
                check_diagnosis_codes(&diagnosis_codes)?;
                match from {
                    VisitStatus::InConsultation => Ok(vec![E::VisitCompleted {
                        summary,
                        diagnosis_codes,
                        at,
                    }]),
                    _ => refuse("complete"),
                }
            }

            C::Cancel { reason, at } => {
                require_text("reason", &reason, MAX_REASON_CHARS)?;
                match from {
                    VisitStatus::Scheduled | VisitStatus::CheckedIn => {
                        Ok(vec![E::VisitCancelled { reason, at }])
                    }
                    VisitStatus::Cancelled => Ok(vec![]),
                    _ => refuse("cancel"),
                }
            }

            C::MarkNoShow { at } => match from {
                VisitStatus::Scheduled => Ok(vec![E::VisitMarkedNoShow { at }]),
                _ => refuse("record a no-show for"),
            },

            C::RecordReportGenerated {
                document_id,
                sha256,
                bytes,
            } => {
                if !completed {
                    return refuse("record a generated report for");
                }
                require_text("document_id", &document_id, MAX_NAME_CHARS)?;
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(VisitError::invalid(
                        "sha256",
                        "must be 64 hexadecimal digits",
                    ));
                }
                let same_report = self.report_status == SideEffectStatus::Done
                    && self.report_sha256.as_deref() == Some(sha256.as_str());
                if same_report {
                    return Ok(vec![]);
                }
                Ok(vec![E::ReportGenerated {
                    document_id,
                    sha256,
                    bytes,
                }])
            }

            C::RecordReportFailed {
                attempt,
                error,
                final_attempt,
            } => {
                if !completed {
                    return refuse("record a report failure for");
                }
                // A late failure after a success changes nothing: the report exists.
                if self.report_status == SideEffectStatus::Done {
                    return Ok(vec![]);
                }
                Ok(vec![E::ReportGenerationFailed {
                    attempt,
                    error,
                    final_attempt,
                }])
            }

            C::RecordReportSent { message_id } => {
                if !completed {
                    return refuse("record a sent report for");
                }
                if self.report_status != SideEffectStatus::Done {
                    return Err(VisitError::ReportNotGenerated);
                }
                require_text("message_id", &message_id, MAX_NAME_CHARS)?;
                let same_message = self.email_status == SideEffectStatus::Done
                    && self.message_id.as_deref() == Some(message_id.as_str());
                if same_message {
                    return Ok(vec![]);
                }
                Ok(vec![E::ReportSent { message_id }])
            }

            C::RecordEmailFailed {
                attempt,
                error,
                final_attempt,
            } => {
                if !completed {
                    return refuse("record an e-mail failure for");
                }
                // A late failure after a success changes nothing: the patient has the e-mail.
                if self.email_status == SideEffectStatus::Done {
                    return Ok(vec![]);
                }
                Ok(vec![E::ReportEmailFailed {
                    attempt,
                    error,
                    final_attempt,
                }])
            }
        }
    }
}

/// A required text field, as a visit error naming the field.
fn require_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), VisitError> {
    check_text(value, max_chars).map_err(|reason| VisitError::invalid(field, reason))
}

/// At most 20 codes, each shaped like ICD-10. The error names the position, not the code (medical data).
fn check_diagnosis_codes(codes: &[String]) -> Result<(), VisitError> {
    if codes.len() > MAX_DIAGNOSIS_CODES {
        return Err(VisitError::invalid(
            "diagnosis_codes",
            format!("at most {MAX_DIAGNOSIS_CODES} codes are allowed"),
        ));
    }
    match codes.iter().position(|code| !is_icd10_shaped(code)) {
        Some(index) => Err(VisitError::invalid(
            "diagnosis_codes",
            format!("code at position {index} is not an ICD-10 code like \"J06.9\""),
        )),
        None => Ok(()),
    }
}

/// One uppercase letter, two digits, then optionally '.' and 1–4 alphanumerics (`J06`, `J06.9`, `S72.001A`).
fn is_icd10_shaped(code: &str) -> bool {
    let [letter, tens, units, rest @ ..] = code.as_bytes() else {
        return false;
    };
    if !(letter.is_ascii_uppercase() && tens.is_ascii_digit() && units.is_ascii_digit()) {
        return false;
    }
    match rest {
        [] => true,
        [b'.', tail @ ..] => {
            (1..=4).contains(&tail.len()) && tail.iter().all(u8::is_ascii_alphanumeric)
        }
        _ => false,
    }
}

impl Aggregate for Visit {
    const TYPE: &'static str = "visit";
    type Command = VisitCommand;
    type Event = VisitEvent;
    type Error = VisitError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use VisitEvent as E;
        let after_failure = |final_attempt| {
            if final_attempt {
                SideEffectStatus::Failed
            } else {
                SideEffectStatus::Pending
            }
        };
        match event {
            E::VisitScheduled {
                visit_id,
                owner,
                patient,
                clinician,
                scheduled_at,
                at: _,
            } => {
                self.id = visit_id;
                self.owner = owner;
                self.status = VisitStatus::Scheduled;
                self.patient = Some(patient);
                self.clinician = clinician;
                self.scheduled_at = Some(scheduled_at);
            }
            E::PatientCheckedIn { .. } => self.status = VisitStatus::CheckedIn,
            E::ConsultationStarted { .. } => self.status = VisitStatus::InConsultation,
            E::VisitCompleted {
                summary,
                diagnosis_codes,
                ..
            } => {
                self.status = VisitStatus::Completed;
                self.summary = Some(summary);
                self.diagnosis_codes = diagnosis_codes;
                self.report_status = SideEffectStatus::Pending;
                self.email_status = SideEffectStatus::Pending;
            }
            E::VisitCancelled { reason, .. } => {
                self.status = VisitStatus::Cancelled;
                self.cancel_reason = Some(reason);
            }
            E::VisitMarkedNoShow { .. } => self.status = VisitStatus::NoShow,
            E::ReportGenerated {
                document_id,
                sha256,
                ..
            } => {
                self.report_status = SideEffectStatus::Done;
                self.report_sha256 = Some(sha256);
                self.report_document_id = Some(document_id);
            }
            E::ReportGenerationFailed { final_attempt, .. } => {
                self.report_attempts = self.report_attempts.saturating_add(1);
                self.report_status = after_failure(final_attempt);
            }
            E::ReportSent { message_id } => {
                self.email_status = SideEffectStatus::Done;
                self.message_id = Some(message_id);
            }
            E::ReportEmailFailed { final_attempt, .. } => {
                self.email_attempts = self.email_attempts.saturating_add(1);
                self.email_status = after_failure(final_attempt);
            }
        }
    }
}

impl AggregateSchema for Visit {
    const STATE_VERSION: i32 = 1;

    fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
        vec![]
    }
}
