//! Everything a worker process runs, wired: the reactor and the worker loop with every handler built so
//! far. This is what `trailbook workers` and `trailbook serve` call.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use store::consumer::{until_shutdown, Stop};
use store::{EventStore, StoreConfig};

use crate::booking_flow::{DeadlineHandler, ReconcileHandler, ReserveHandler};
use crate::compensation::{CompensateHandler, CompensationLimits};
use crate::error::{Error, Result};
use crate::mail::{FaultyMailer, FileMailer, Mailer, SmtpMailer};
use crate::partners::{Partners, PartnersFile};
use crate::payments::CaptureHandler;
use crate::reactor::{self, kinds, ReactorConfig};
use crate::report::DocumentStore;
use crate::visit_effects::{ReportHandler, SendHandler};
use crate::worker::{Worker, WorkerConfig};

/// Configuration of a worker process.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub worker: WorkerConfig,
    pub reactor: ReactorConfig,
    /// Run the reactor in this process (any number of processes may; batches are serialised).
    pub run_reactor: bool,
    /// Base URL of the partner API when no partners file is given, e.g. `http://127.0.0.1:8090`
    /// (`TRAILBOOK_PARTNER_URL`): every partner and the payments go there. With a file, the payments
    /// go there unless the file has a `[payments]` table.
    pub partner_url: String,
    /// The partners file (`TRAILBOOK_PARTNERS`): every partner a booking may name, how to reach it.
    pub partners: Option<PartnersFile>,
    /// Per-call timeout of partner calls without a partners file; a timeout is an unknown outcome,
    /// settled by reconciliation.
    pub partner_timeout: Duration,
    /// Limits of every partner's compensations and releases, overriding the partners file (tests).
    pub compensation: Option<CompensationLimits>,
    pub store: StoreConfig,
    /// Reports go to `<data dir>/reports`, e-mails (file transport) to `<data dir>/mail`.
    pub data_dir: PathBuf,
    pub mail: MailConfig,
}

/// How report e-mails are sent.
#[derive(Clone)]
pub struct MailConfig {
    /// SMTP relay URL (`TRAILBOOK_SMTP_URL`); `None` writes `.eml` files under the data dir. Holds a
    /// password: never logged (this type's `Debug` hides it).
    pub smtp_url: Option<String>,
    /// The `From` mailbox (`TRAILBOOK_MAIL_FROM`).
    pub from: String,
    /// Per-send timeout of SMTP.
    pub timeout: Duration,
    /// Fault injection for demos and the chaos script (`TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS`, 0..1).
    pub timeout_after_success: f64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "trailbook <reports@trailbook.local>".to_owned(),
            timeout: Duration::from_secs(30),
            timeout_after_success: 0.0,
        }
    }
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("timeout_after_success", &self.timeout_after_success)
            .finish()
    }
}

impl MailConfig {
    /// The mailer this configuration asks for, writing files under `data_dir/mail` without SMTP.
    pub fn mailer(&self, data_dir: &std::path::Path) -> Result<Arc<dyn Mailer>> {
        if !(0.0..=1.0).contains(&self.timeout_after_success) {
            return Err(Error::Invalid(
                "TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS must be between 0 and 1".to_owned(),
            ));
        }
        let base: Arc<dyn Mailer> = match &self.smtp_url {
            Some(url) => Arc::new(SmtpMailer::from_url(url, self.timeout).map_err(Error::Invalid)?),
            None => Arc::new(FileMailer::new(data_dir.join("mail"))),
        };
        Ok(if self.timeout_after_success > 0.0 {
            Arc::new(FaultyMailer {
                inner: base,
                timeout_after_success: self.timeout_after_success,
            })
        } else {
            base
        })
    }

    /// The `From` mailbox, or why it is not one.
    pub fn from_mailbox(&self) -> Result<lettre::message::Mailbox> {
        self.from
            .parse()
            .map_err(|e| Error::Invalid(format!("TRAILBOOK_MAIL_FROM `{}`: {e}", self.from)))
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            worker: WorkerConfig::default(),
            reactor: ReactorConfig::default(),
            run_reactor: true,
            partner_url: "http://127.0.0.1:8090".to_owned(),
            partners: None,
            partner_timeout: Duration::from_secs(5),
            compensation: None,
            store: StoreConfig::default(),
            data_dir: PathBuf::from(".trailbook"),
            mail: MailConfig::default(),
        }
    }
}

/// Runs the reactor and the workers until `shutdown` completes, then lets jobs in flight finish.
/// Fails at once (before any job runs) when the mail settings are invalid.
pub async fn run(
    pool: PgPool,
    config: ServiceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let store = EventStore::new(pool.clone(), config.store.clone());
    let partners = match &config.partners {
        Some(file) => Partners::from_file(file, &config.partner_url)?,
        None => Partners::single(&config.partner_url, config.partner_timeout)?,
    };
    let mailer = config.mail.mailer(&config.data_dir)?;
    let from = config.mail.from_mailbox()?;
    let documents = DocumentStore::new(config.data_dir.join("reports"));
    let compensation = CompensateHandler::new(store.clone(), partners.clone(), config.compensation);
    let worker = Worker::new(pool.clone(), config.worker.clone())
        .register(
            kinds::PARTNER_RESERVE,
            ReserveHandler {
                store: store.clone(),
                partners: partners.clone(),
            },
        )
        .register(
            kinds::PARTNER_RECONCILE,
            ReconcileHandler {
                store: store.clone(),
                partners: partners.clone(),
            },
        )
        .register(
            kinds::BOOKING_DEADLINE,
            DeadlineHandler {
                store: store.clone(),
                deadline: config.reactor.partner_deadline,
            },
        )
        .register(
            kinds::PAYMENT_CAPTURE,
            CaptureHandler {
                store: store.clone(),
                provider: partners.payments().clone(),
            },
        )
        .register(kinds::PARTNER_COMPENSATE, compensation.clone())
        .register(kinds::PARTNER_RELEASE, compensation.clone())
        .register(kinds::PAYMENT_REFUND, compensation)
        .register(
            kinds::REPORT_GENERATE,
            ReportHandler {
                store: store.clone(),
                documents: documents.clone(),
            },
        )
        .register(
            kinds::REPORT_SEND,
            SendHandler {
                store,
                pool: pool.clone(),
                documents,
                mailer,
                from,
            },
        );
    until_shutdown(shutdown, |stop| async move {
        let stopped = |mut stop: Stop| async move { stop.stopped().await };
        let reactor = async {
            if config.run_reactor {
                reactor::run(pool.clone(), config.reactor.clone(), stopped(stop.clone())).await
            } else {
                Ok(())
            }
        };
        let (a, b) = tokio::join!(reactor, worker.run(stopped(stop.clone())));
        a.and(b)
    })
    .await
}
