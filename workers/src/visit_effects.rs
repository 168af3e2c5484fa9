//! The side effects of a completed visit: the PDF report and the e-mail that sends it to the patient.
//!
//! - `report.generate` ([`ReportHandler`]), enqueued for `VisitCompleted`: renders the report
//!   ([`crate::report::render`], deterministic), stores it under the data dir and records
//!   `ReportGenerated` with its SHA-256. Running again gives the same bytes and hash, which the visit
//!   treats as a no-op, so a retry after a crash between the file and the event is harmless.
//! - `report.send` ([`SendHandler`]), enqueued for `ReportGenerated`: e-mails the stored report with a
//!   Message-ID derived from the visit and the report hash, and records `ReportSent`. The notification log
//!   (`notifications`) makes it send at most once per Message-ID where the transport can tell: the row is
//!   `sending` before the provider is called and `sent` after; an attempt that finds `sending` asks the
//!   transport whether the earlier one arrived before it sends again; one that finds `sent` only records
//!   the event the earlier attempt did not.
//!
//! Every failed attempt is recorded on the visit (`ReportGenerationFailed`, `ReportEmailFailed`, with
//! `final_attempt` on the last), so the status board shows "completed, report failed" while the job is
//! visibly dead-lettered and replayable.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::visit::{SideEffectStatus, VisitCommand, VisitStatus};
use domain::Visit;
use lettre::message::Mailbox;
use sqlx::PgPool;
use store::{CommandContext, EventStore};

use crate::jobs::Job;
use crate::mail::{self, MailError, Mailer, ReportMail};
use crate::report::{self, DocumentStore};
use crate::worker::{Handler, HandlerError};
use crate::write_back;

/// The kind of the report e-mail in the notification log.
pub const REPORT_EMAIL: &str = "visit.report";

/// Runs `report.generate`.
pub struct ReportHandler {
    pub store: EventStore,
    pub documents: DocumentStore,
}

/// Runs `report.send`.
pub struct SendHandler {
    pub store: EventStore,
    pub pool: PgPool,
    pub documents: DocumentStore,
    pub mailer: Arc<dyn Mailer>,
    pub from: Mailbox,
}

/// The Message-ID of a visit's report e-mail: the same for every attempt at the same report.
pub fn report_message_id(visit_id: &str, sha256: &str) -> String {
    let visit = report::safe_file_stem(visit_id);
    let short = sha256.get(..16).unwrap_or(sha256);
    format!("<report.{visit}.{short}@trailbook>")
}

fn is_last(job: &Job, error: &HandlerError) -> bool {
    matches!(error, HandlerError::Permanent(_)) || job.attempts >= job.max_attempts
}

async fn completed_visit(store: &EventStore, job: &Job) -> Result<(String, Visit), HandlerError> {
    let id = write_back::payload_str(job, "visit_id")?;
    let visit = write_back::load::<Visit>(store, &id).await?;
    if !visit.exists() {
        return Err(HandlerError::Permanent(format!("no visit `{id}`")));
    }
    if visit.status != VisitStatus::Completed {
        return Err(HandlerError::Permanent(format!(
            "visit `{id}` is {}, not completed",
            visit.status
        )));
    }
    Ok((id, visit))
}

/// Records a failed attempt on the visit (`failed(attempt, error, final_attempt)` builds the command);
/// nothing when `result` is a success. A failure to record is logged: the job's own error stands.
async fn record_failure(
    store: &EventStore,
    job: &Job,
    id: &str,
    context: &CommandContext,
    result: &Result<(), HandlerError>,
    failed: impl FnOnce(u32, String, bool) -> VisitCommand,
) {
    let Err(error) = result else {
        return;
    };
    let command = failed(
        u32::try_from(job.attempts).unwrap_or(0),
        error.to_string(),
        is_last(job, error),
    );
    if let Err(e) = write_back::execute::<Visit>(store, id, command, context).await {
        tracing::warn!(visit_id = %id, error = %e, "could not record a failed side effect on the visit");
    }
}

#[async_trait]
impl Handler for ReportHandler {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let (id, visit) = completed_visit(&self.store, job).await?;
        if visit.report_status == SideEffectStatus::Done {
            return Ok(());
        }
        let context = write_back::context(job);
        let result = self.generate(&id, &visit, &context).await;
        record_failure(
            &self.store,
            job,
            &id,
            &context,
            &result,
            |attempt, error, final_attempt| VisitCommand::RecordReportFailed {
                attempt,
                error,
                final_attempt,
            },
        )
        .await;
        result
    }
}

impl ReportHandler {
    async fn generate(
        &self,
        id: &str,
        visit: &Visit,
        context: &CommandContext,
    ) -> Result<(), HandlerError> {
        let pdf = report::render(visit);
        let sha256 = report::sha256_hex(&pdf);
        let bytes = u64::try_from(pdf.len()).unwrap_or(u64::MAX);
        let document_id = DocumentStore::document_id(id);
        self.documents
            .put(&document_id, pdf)
            .await
            .map_err(|e| HandlerError::Retry(format!("cannot store the report: {e}")))?;
        metrics::counter!("trailbook_reports_generated_total").increment(1);
        let command = VisitCommand::RecordReportGenerated {
            document_id,
            sha256,
            bytes,
        };
        write_back::execute::<Visit>(&self.store, id, command, context).await
    }
}

#[async_trait]
impl Handler for SendHandler {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let (id, visit) = completed_visit(&self.store, job).await?;
        if visit.email_status == SideEffectStatus::Done {
            return Ok(());
        }
        let context = write_back::context(job);
        let result = self.send(&id, &visit, &context).await;
        record_failure(
            &self.store,
            job,
            &id,
            &context,
            &result,
            |attempt, error, final_attempt| VisitCommand::RecordEmailFailed {
                attempt,
                error,
                final_attempt,
            },
        )
        .await;
        result
    }
}

/// What the notification log says about a message at the start of an attempt.
struct Notification {
    state: String,
    attempts: i32,
    created_at: DateTime<Utc>,
}

impl SendHandler {
    async fn send(
        &self,
        id: &str,
        visit: &Visit,
        context: &CommandContext,
    ) -> Result<(), HandlerError> {
        let (Some(sha256), Some(document_id)) = (&visit.report_sha256, &visit.report_document_id)
        else {
            return Err(HandlerError::Retry(
                "the report is not generated yet".to_owned(),
            ));
        };
        let Some(patient) = &visit.patient else {
            return Err(HandlerError::Permanent(
                "the visit has no patient".to_owned(),
            ));
        };
        let message_id = report_message_id(id, sha256);
        let note = self
            .begin(&message_id, id, patient.email.as_str())
            .await
            .map_err(|e| HandlerError::Retry(format!("notification log: {e}")))?;
        let record_sent = || async {
            let command = VisitCommand::RecordReportSent {
                message_id: message_id.clone(),
            };
            write_back::execute::<Visit>(&self.store, id, command, context).await
        };
        if note.state == "sent" {
            return record_sent().await;
        }
        if note.attempts > 1 {
            // An earlier attempt's outcome is unknown: ask before sending again.
            match self.mailer.delivered(&message_id).await {
                Ok(Some(true)) => {
                    tracing::info!(visit_id = %id, message_id = %message_id, "earlier attempt delivered the e-mail; not sending again");
                    self.mark_sent(&message_id).await?;
                    return record_sent().await;
                }
                Ok(Some(false)) => {}
                Ok(None) => tracing::warn!(visit_id = %id, message_id = %message_id,
                    transport = self.mailer.transport(),
                    "earlier attempt's outcome unknown and the transport cannot tell; sending again with the same Message-ID"),
                Err(e) => return Err(self.unsent(&message_id, e).await),
            }
        }
        let pdf = self.report_bytes(document_id, sha256, visit).await?;
        let outgoing = mail::report_mail(ReportMail {
            message_id: &message_id,
            from: &self.from,
            to_name: &patient.name,
            to_address: patient.email.as_str(),
            visit_id: id,
            pdf,
            date: note.created_at.into(),
        })
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        if let Err(e) = self.mailer.send(&outgoing).await {
            return Err(self.unsent(&message_id, e).await);
        }
        metrics::counter!("trailbook_emails_sent_total", "transport" => self.mailer.transport())
            .increment(1);
        self.mark_sent(&message_id).await?;
        record_sent().await
    }

    /// The stored report, checked against the hash in the event; regenerated (and stored again) when the
    /// file is missing, which gives the same bytes for the same visit.
    async fn report_bytes(
        &self,
        document_id: &str,
        sha256: &str,
        visit: &Visit,
    ) -> Result<Vec<u8>, HandlerError> {
        let stored = self
            .documents
            .get(document_id)
            .await
            .map_err(|e| HandlerError::Retry(format!("cannot read the report: {e}")))?;
        if let Some(bytes) = stored {
            if report::sha256_hex(&bytes) == sha256 {
                return Ok(bytes);
            }
        }
        let bytes = report::render(visit);
        if report::sha256_hex(&bytes) != sha256 {
            return Err(HandlerError::Permanent(format!(
                "report `{document_id}` is missing or changed and regenerating it gives a different document"
            )));
        }
        self.documents
            .put(document_id, bytes.clone())
            .await
            .map_err(|e| HandlerError::Retry(format!("cannot store the report: {e}")))?;
        Ok(bytes)
    }

    /// Opens or continues the notification log row of `message_id`, counting this attempt.
    async fn begin(
        &self,
        message_id: &str,
        visit_id: &str,
        recipient: &str,
    ) -> sqlx::Result<Notification> {
        let (state, attempts, created_at): (String, i32, DateTime<Utc>) = sqlx::query_as(
            "insert into notifications (message_id, aggregate_type, aggregate_id, kind, recipient, transport)
             values ($1, 'visit', $2, $3, $4, $5)
             on conflict (message_id) do update
                 set attempts = notifications.attempts + (notifications.state = 'sending')::int
             returning state, attempts, created_at",
        )
        .bind(message_id)
        .bind(visit_id)
        .bind(REPORT_EMAIL)
        .bind(recipient)
        .bind(self.mailer.transport())
        .fetch_one(&self.pool)
        .await?;
        Ok(Notification {
            state,
            attempts,
            created_at,
        })
    }

    async fn mark_sent(&self, message_id: &str) -> Result<(), HandlerError> {
        sqlx::query(
            "update notifications set state = 'sent', sent_at = coalesce(sent_at, now()), last_error = null
             where message_id = $1",
        )
        .bind(message_id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| HandlerError::Retry(format!("notification log: {e}")))
    }

    /// Notes why an attempt did not send and turns it into the job's error.
    async fn unsent(&self, message_id: &str, error: MailError) -> HandlerError {
        if let Err(e) =
            sqlx::query("update notifications set last_error = $2 where message_id = $1")
                .bind(message_id)
                .bind(error.to_string())
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "could not note a failed e-mail in the notification log");
        }
        match error {
            MailError::Unknown(e) => HandlerError::Retry(e),
            MailError::Rejected(e) => HandlerError::Permanent(e),
        }
    }
}
