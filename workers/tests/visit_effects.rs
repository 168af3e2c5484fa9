//! The side effects of a completed visit: real PostgreSQL, the real reactor and worker, reports and e-mails
//! written under a temporary data dir.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use domain::values::Email;
use domain::visit::{Patient, SideEffectStatus, VisitCommand};
use domain::Visit;
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};
use workers::mail::{FileMailer, MailError, Mailer, OutgoingMail};
use workers::reactor::{self, kinds};
use workers::report::{self, DocumentStore};
use workers::visit_effects::{ReportHandler, SendHandler};
use workers::{Backoff, Handler, JobState, QueueConfig, Worker, WorkerConfig};

/// A mail provider that can fail on demand: counts what reached the real (file) transport.
struct Provider {
    inner: FileMailer,
    delivered: AtomicU32,
    /// Report a timeout after the next successful send, once.
    timeout_after_next_success: AtomicBool,
    /// Refuse every message (a permanent 5xx).
    reject: AtomicBool,
}

#[async_trait]
impl Mailer for Provider {
    fn transport(&self) -> &'static str {
        "file"
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        if self.reject.load(Ordering::SeqCst) {
            return Err(MailError::Rejected("550 mailbox unavailable".to_owned()));
        }
        self.inner.send(mail).await?;
        self.delivered.fetch_add(1, Ordering::SeqCst);
        if self
            .timeout_after_next_success
            .swap(false, Ordering::SeqCst)
        {
            return Err(MailError::Unknown("mail provider timed out".to_owned()));
        }
        Ok(())
    }

    async fn delivered(&self, message_id: &str) -> Result<Option<bool>, MailError> {
        self.inner.delivered(message_id).await
    }
}

struct Clinic {
    db: TestDb,
    store: EventStore,
    dir: PathBuf,
    provider: Arc<Provider>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Clinic {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(name: &str) -> Clinic {
    start_with(name, true).await
}

/// A clinic; with `run` the reactor and a worker run in the background.
async fn start_with(name: &str, run: bool) -> Clinic {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let dir = std::env::temp_dir().join(format!(
        "trailbook-visit-effects-{name}-{}",
        uuid::Uuid::now_v7()
    ));
    let documents = DocumentStore::new(dir.join("reports"));
    let provider = Arc::new(Provider {
        inner: FileMailer::new(dir.join("mail")),
        delivered: AtomicU32::new(0),
        timeout_after_next_success: AtomicBool::new(false),
        reject: AtomicBool::new(false),
    });
    let worker = Worker::new(
        db.pool.clone(),
        WorkerConfig {
            worker_id: "clinic".to_owned(),
            queues: vec![QueueConfig::new("documents", 2)],
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            reclaim_interval: Duration::from_millis(200),
            backoff: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_millis(200),
            },
        },
    )
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
            store: store.clone(),
            pool: db.pool.clone(),
            documents,
            mailer: provider.clone(),
            from: "trailbook <reports@trailbook.local>".parse().unwrap(),
        },
    );
    let mut stops = Vec::new();
    if !run {
        return Clinic {
            db,
            store,
            dir,
            provider,
            _stops: stops,
        };
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    stops.push(stop);
    tokio::spawn(reactor::run(
        db.pool.clone(),
        reactor::ReactorConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Clinic {
        db,
        store,
        dir,
        provider,
        _stops: stops,
    }
}

impl Clinic {
    async fn execute(&self, id: &str, command: VisitCommand) {
        self.store
            .execute::<Visit>(
                id,
                command,
                &(),
                &CommandContext::default(),
                ExecuteOptions::default(),
            )
            .await
            .unwrap();
    }

    /// Schedules, checks in, consults and completes visit `id`.
    async fn complete(&self, id: &str) {
        let at = Utc::now();
        self.execute(
            id,
            VisitCommand::Schedule {
                visit_id: id.to_owned(),
                owner: "clinic".to_owned(),
                patient: Patient {
                    id: "p-1".to_owned(),
                    name: "Grace Hopper".to_owned(),
                    email: Email::parse("grace@example.com").unwrap(),
                },
                clinician: "dr-grey".to_owned(),
                scheduled_at: "2026-12-01T09:30:00Z".parse().unwrap(),
                at,
            },
        )
        .await;
        self.execute(id, VisitCommand::CheckIn { at }).await;
        self.execute(id, VisitCommand::StartConsultation { at })
            .await;
        self.execute(
            id,
            VisitCommand::Complete {
                summary: "Mild upper respiratory infection. Rest and fluids.".to_owned(),
                diagnosis_codes: vec!["J06.9".to_owned()],
                at,
            },
        )
        .await;
    }

    async fn visit(&self, id: &str) -> Visit {
        self.store.load::<Visit>(id).await.unwrap().state
    }

    async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Visit) -> bool) -> Visit {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let visit = self.visit(id).await;
            if done(&visit) {
                return visit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "visit {id}: waited for {what}; report {:?}, e-mail {:?}, events {:?}",
                visit.report_status,
                visit.email_status,
                self.event_types(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "select event_type from events where aggregate_id = $1 order by sequence",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    fn count(&self, events: &[String], kind: &str) -> usize {
        events.iter().filter(|e| *e == kind).count()
    }

    fn mail_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("mail"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// The job of `kind` (running reactor batches until it is enqueued), as a worker would claim it.
    async fn job(&self, kind: &str) -> workers::Job {
        let filter = workers::JobFilter {
            kind: Some(kind.to_owned()),
            ..workers::JobFilter::default()
        };
        // The log hides events behind transactions still open anywhere on the server (other tests).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            reactor::run_batch(&self.db.pool, 100).await.unwrap();
            let found = workers::jobs::list(&self.db.pool, &filter).await.unwrap();
            if let Some(job) = found.into_iter().next() {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {kind} job");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn notification(&self) -> (String, i32, String) {
        sqlx::query_as("select state, attempts, message_id from notifications")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// Completed → a real PDF is stored with the hash in `ReportGenerated`, then one e-mail with it attached.
#[tokio::test]
async fn a_completed_visit_gets_its_report_generated_and_emailed_once() {
    let clinic = start("happy").await;
    clinic.complete("v-1").await;

    let visit = clinic
        .wait_until("v-1", "the e-mail", |v| {
            v.email_status == SideEffectStatus::Done
        })
        .await;

    assert_eq!(visit.report_status, SideEffectStatus::Done);
    let pdf = std::fs::read(clinic.dir.join("reports").join("v-1.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(
        visit.report_sha256.as_deref(),
        Some(report::sha256_hex(&pdf).as_str())
    );
    let files = clinic.mail_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    let message_id = visit.message_id.clone().unwrap();
    assert!(eml.contains(&format!("Message-ID: {message_id}")), "{eml}");
    assert!(
        eml.contains("To: \"Grace Hopper\" <grace@example.com>"),
        "{eml}"
    );
    assert!(eml.contains("application/pdf"));
    assert_eq!(clinic.provider.delivered.load(Ordering::SeqCst), 1);
    assert_eq!(
        clinic.notification().await,
        ("sent".to_owned(), 1, message_id)
    );
    let events = clinic.event_types("v-1").await;
    assert_eq!(clinic.count(&events, "ReportGenerated"), 1, "{events:?}");
    assert_eq!(clinic.count(&events, "ReportSent"), 1, "{events:?}");
}

/// Seed 001: the provider accepts the e-mail but the call times out. The retry finds the message delivered
/// and does not send it again: one e-mail, the failed attempt and the success both on the record.
#[tokio::test]
async fn a_provider_timeout_after_success_then_a_retry_sends_one_email() {
    let clinic = start("timeout").await;
    clinic
        .provider
        .timeout_after_next_success
        .store(true, Ordering::SeqCst);
    clinic.complete("v-2").await;

    clinic
        .wait_until("v-2", "the e-mail", |v| {
            v.email_status == SideEffectStatus::Done
        })
        .await;

    assert_eq!(
        clinic.provider.delivered.load(Ordering::SeqCst),
        1,
        "the retry must not send a second e-mail"
    );
    assert_eq!(clinic.mail_files().len(), 1);
    let (state, attempts, _) = clinic.notification().await;
    assert_eq!((state.as_str(), attempts), ("sent", 2));
    let events = clinic.event_types("v-2").await;
    assert_eq!(clinic.count(&events, "ReportEmailFailed"), 1, "{events:?}");
    assert_eq!(clinic.count(&events, "ReportSent"), 1, "{events:?}");
}

/// A provider that refuses the message: the job dead-letters at once, the visit shows the e-mail failed,
/// and an operator replay after the cause is fixed sends it.
#[tokio::test]
async fn a_refused_email_is_dead_lettered_visible_and_replayable() {
    let clinic = start("refused").await;
    clinic.provider.reject.store(true, Ordering::SeqCst);
    clinic.complete("v-3").await;

    clinic
        .wait_until("v-3", "the e-mail to fail", |v| {
            v.email_status == SideEffectStatus::Failed
        })
        .await;
    let job = workers::jobs::list(
        &clinic.db.pool,
        &workers::JobFilter {
            state: Some(JobState::Dead),
            ..workers::JobFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(job.len(), 1, "{job:?}");
    assert_eq!(job[0].kind, kinds::REPORT_SEND);
    assert!(job[0].last_error.as_deref().unwrap_or("").contains("550"));
    assert_eq!(clinic.provider.delivered.load(Ordering::SeqCst), 0);

    clinic.provider.reject.store(false, Ordering::SeqCst);
    workers::jobs::replay(&clinic.db.pool, job[0].id)
        .await
        .unwrap();
    clinic
        .wait_until("v-3", "the e-mail after replay", |v| {
            v.email_status == SideEffectStatus::Done
        })
        .await;
    assert_eq!(clinic.provider.delivered.load(Ordering::SeqCst), 1);
}

/// A report lost from disk after `ReportGenerated` (a restored data dir, a crash): the e-mail job
/// regenerates it, gets the same bytes (the hash in the event matches) and sends it; running the report job
/// again records nothing new. Handlers are called directly here, one after the other.
#[tokio::test]
async fn a_lost_report_is_regenerated_identically_and_generation_runs_again_harmlessly() {
    let clinic = start_with("lost", false).await;
    clinic.complete("v-4").await;
    let documents = DocumentStore::new(clinic.dir.join("reports"));
    let generate = ReportHandler {
        store: clinic.store.clone(),
        documents: documents.clone(),
    };
    let send = SendHandler {
        store: clinic.store.clone(),
        pool: clinic.db.pool.clone(),
        documents,
        mailer: clinic.provider.clone(),
        from: "trailbook <reports@trailbook.local>".parse().unwrap(),
    };

    let job = clinic.job(kinds::REPORT_GENERATE).await;
    generate.handle(&job).await.unwrap();
    let path = clinic.dir.join("reports").join("v-4.pdf");
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    send.handle(&clinic.job(kinds::REPORT_SEND).await)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        original,
        "regenerated byte for byte"
    );
    assert_eq!(clinic.provider.delivered.load(Ordering::SeqCst), 1);

    generate.handle(&job).await.unwrap();
    send.handle(&clinic.job(kinds::REPORT_SEND).await)
        .await
        .unwrap();
    let events = clinic.event_types("v-4").await;
    assert_eq!(clinic.count(&events, "ReportGenerated"), 1, "{events:?}");
    assert_eq!(clinic.count(&events, "ReportSent"), 1, "{events:?}");
    assert_eq!(clinic.provider.delivered.load(Ordering::SeqCst), 1);
}
