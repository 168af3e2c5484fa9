//! Sending e-mail: the message (lettre's builder), the transports, and the fault injection used by demos.
//!
//! A [`Mailer`] sends one formatted message and, where the transport can tell, answers whether a message
//! id was already delivered. That second question is what lets the e-mail job settle an unknown outcome
//! (the provider timed out after it may have accepted the message) without sending twice:
//!
//! - [`FileMailer`] (the default) writes `<data dir>/mail/<message id>.eml`, atomically. It names files by
//!   Message-ID rather than by a random UUID as lettre's own file transport does, so it can answer
//!   "delivered?" and a repeated send overwrites the same file with the same bytes.
//! - [`SmtpMailer`] relays through SMTP (`TRAILBOOK_SMTP_URL`, e.g. `smtps://user:pass@host`). SMTP cannot
//!   be asked about a message, so after an unknown outcome the job sends again with the same Message-ID;
//!   receiving systems use it to drop the duplicate. The URL holds a password: it is never logged.
//! - [`FaultyMailer`] wraps another and reports a timeout after a successful send with probability `p`
//!   (`TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS`), the failure of seed 001 that must not become two e-mails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::report::{safe_file_stem, write_atomically};

/// Why a send did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The provider may or may not have the message (timeout, broken connection, 4xx): try again.
    #[error("{0}")]
    Unknown(String),
    /// The provider refused the message for good (5xx, invalid address): retrying cannot help.
    #[error("{0}")]
    Rejected(String),
}

/// One e-mail, ready to send.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    /// `<...@...>`, deterministic for what it sends.
    pub message_id: String,
    pub message: Message,
}

/// A way to deliver e-mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// A short name for logs and the notification log (`file`, `smtp`).
    fn transport(&self) -> &'static str;

    /// Sends the message.
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError>;

    /// Whether a message with this id was delivered: `Some(answer)`, or `None` when the transport cannot
    /// tell (then the caller sends again and relies on the Message-ID downstream).
    async fn delivered(&self, message_id: &str) -> Result<Option<bool>, MailError>;
}

/// What goes into a report e-mail.
#[derive(Debug, Clone)]
pub struct ReportMail<'a> {
    pub message_id: &'a str,
    pub from: &'a Mailbox,
    pub to_name: &'a str,
    pub to_address: &'a str,
    pub visit_id: &'a str,
    pub pdf: Vec<u8>,
    /// The `Date` header: the first attempt's time, so every attempt formats the same bytes.
    pub date: SystemTime,
}

/// Builds the report e-mail: a short text and the PDF attached. Deterministic for the same input (the
/// MIME boundary derives from the Message-ID). An address lettre cannot parse is `Rejected`.
pub fn report_mail(mail: ReportMail<'_>) -> Result<OutgoingMail, MailError> {
    let to_address = mail
        .to_address
        .parse()
        .map_err(|e| MailError::Rejected(format!("recipient address refused: {e}")))?;
    let pdf_type = ContentType::parse("application/pdf")
        .map_err(|e| MailError::Rejected(format!("content type: {e}")))?;
    let boundary = format!(
        "report-{}",
        crate::report::sha256_hex(mail.message_id.as_bytes())
    );
    let text = format!(
        "Hello {},\n\nthe report of your visit {} is attached.\n\nThis message was sent automatically; \
         please do not reply.\n",
        mail.to_name, mail.visit_id
    );
    let message = Message::builder()
        .message_id(Some(mail.message_id.to_owned()))
        .from(mail.from.clone())
        .to(Mailbox::new(Some(mail.to_name.to_owned()), to_address))
        .subject(format!("Your visit report ({})", mail.visit_id))
        .date(mail.date)
        .multipart(
            MultiPart::mixed()
                .boundary(boundary)
                .singlepart(SinglePart::plain(text))
                .singlepart(
                    Attachment::new(format!(
                        "visit-report-{}.pdf",
                        safe_file_stem(mail.visit_id)
                    ))
                    .body(mail.pdf, pdf_type),
                ),
        )
        .map_err(|e| MailError::Rejected(format!("cannot build the e-mail: {e}")))?;
    Ok(OutgoingMail {
        message_id: mail.message_id.to_owned(),
        message,
    })
}

/// Counts a message the transport took (`trailbook_mail_delivered_total`): what the provider received,
/// including sends whose success the caller never heard of. Compare with `trailbook_emails_sent_total`.
fn delivered(transport: &'static str) {
    metrics::counter!("trailbook_mail_delivered_total", "transport" => transport).increment(1);
}

/// Writes each message to `<dir>/<message id>.eml`.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file a message id is written to.
    pub fn path_of(&self, message_id: &str) -> PathBuf {
        let id = message_id.trim_start_matches('<').trim_end_matches('>');
        self.dir.join(format!("{}.eml", safe_file_stem(id)))
    }
}

#[async_trait]
impl Mailer for FileMailer {
    fn transport(&self) -> &'static str {
        "file"
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        write_atomically(self.path_of(&mail.message_id), mail.message.formatted())
            .await
            .map_err(|e| MailError::Unknown(format!("cannot write the e-mail file: {e}")))?;
        delivered("file");
        Ok(())
    }

    async fn delivered(&self, message_id: &str) -> Result<Option<bool>, MailError> {
        tokio::fs::try_exists(self.path_of(message_id))
            .await
            .map(Some)
            .map_err(|e| MailError::Unknown(format!("cannot look for the e-mail file: {e}")))
    }
}

/// Relays through an SMTP server.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds credentials: never print it.
        f.write_str("SmtpMailer")
    }
}

impl SmtpMailer {
    /// A mailer for `url` (`smtp://`, `smtps://`, with `?tls=required` for STARTTLS), each call bounded by
    /// `timeout`. The error never repeats the URL, which may hold a password.
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, String> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| "TRAILBOOK_SMTP_URL is not a valid smtp:// or smtps:// URL".to_owned())?;
        Ok(Self {
            transport: builder.timeout(Some(timeout)).build(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn transport(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        match self.transport.send(mail.message.clone()).await {
            Ok(_) => {
                delivered("smtp");
                Ok(())
            }
            Err(e) if e.is_permanent() => Err(MailError::Rejected(format!("SMTP refused: {e}"))),
            Err(e) if e.is_timeout() => Err(MailError::Unknown("SMTP timed out".to_owned())),
            Err(e) => Err(MailError::Unknown(format!("SMTP failed: {e}"))),
        }
    }

    async fn delivered(&self, _message_id: &str) -> Result<Option<bool>, MailError> {
        Ok(None)
    }
}

/// Reports a timeout after a successful send with probability `timeout_after_success`.
pub struct FaultyMailer {
    pub inner: Arc<dyn Mailer>,
    pub timeout_after_success: f64,
}

#[async_trait]
impl Mailer for FaultyMailer {
    fn transport(&self) -> &'static str {
        self.inner.transport()
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        self.inner.send(mail).await?;
        if rand::random::<f64>() < self.timeout_after_success {
            return Err(MailError::Unknown(
                "mail provider timed out (injected after success)".to_owned(),
            ));
        }
        Ok(())
    }

    async fn delivered(&self, message_id: &str) -> Result<Option<bool>, MailError> {
        self.inner.delivered(message_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(id: &str, to: &str) -> Result<OutgoingMail, MailError> {
        let from: Mailbox = "trailbook <reports@trailbook.local>"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        report_mail(ReportMail {
            message_id: id,
            from: &from,
            to_name: "Grace Hopper",
            to_address: to,
            visit_id: "v-1",
            pdf: b"%PDF-1.7 test".to_vec(),
            date: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        })
    }

    #[test]
    fn the_same_mail_formats_to_the_same_bytes() {
        let a = mail("<report.v-1.abc@trailbook>", "grace@example.com")
            .unwrap_or_else(|e| panic!("{e}"));
        let b = mail("<report.v-1.abc@trailbook>", "grace@example.com")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.message.formatted(), b.message.formatted());
        let text = String::from_utf8_lossy(&a.message.formatted()).into_owned();
        assert!(
            text.contains("Message-ID: <report.v-1.abc@trailbook>"),
            "{text}"
        );
        assert!(text.contains("application/pdf"), "{text}");
    }

    #[test]
    fn an_address_lettre_refuses_is_permanent() {
        assert!(matches!(
            mail("<x@trailbook>", "not an address"),
            Err(MailError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn the_file_mailer_knows_what_it_delivered() {
        let dir = std::env::temp_dir().join(format!("trailbook-mail-{}", uuid::Uuid::now_v7()));
        let mailer = FileMailer::new(&dir);
        let m = mail("<report.v-1.abc@trailbook>", "grace@example.com")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mailer.delivered(&m.message_id).await, Ok(Some(false)));
        mailer.send(&m).await.unwrap_or_else(|e| panic!("{e}"));
        mailer.send(&m).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mailer.delivered(&m.message_id).await, Ok(Some(true)));
        let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files, 1, "a repeated send overwrites the same file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_smtp_url_does_not_echo_the_password() {
        let e = SmtpMailer::from_url("bogus://user:hunter2@host", Duration::from_secs(1))
            .err()
            .unwrap_or_default();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
