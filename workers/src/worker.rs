//! The worker loop: claims jobs per queue with bounded concurrency and runs their handlers by kind.
//!
//! Each queue has its own loop and semaphore (`concurrency` permits): a slow partner on the compensation
//! queue cannot starve report generation. A loop claims only when a permit is free and only kinds it has a
//! handler for, so jobs of kinds no process handles stay visibly `queued`. A handler runs under a timeout
//! slightly shorter than the lease, so a live worker never outlives its lease; a worker that dies (process
//! killed, task aborted) leaves its jobs `running` until the lease expires, when the reclaimer of any
//! worker process makes them ready again.
//!
//! Shutdown: claiming stops at once; jobs in flight run to their end (bounded by the lease timeout) and
//! their outcome is recorded before [`Worker::run`] returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use store::backoff::Backoff;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::Result;
use crate::jobs::{self, Claimed, FailOutcome, Job};

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Transient: retry with backoff while attempts remain.
    #[error("{0}")]
    Retry(String),
    /// Transient, and the other side said when to come back (e.g. `429 Retry-After`): retry after at
    /// least this long.
    #[error("{message} (retry after {after:?})")]
    RetryAfter { after: Duration, message: String },
    /// Retrying cannot help: dead-letter now.
    #[error("{0}")]
    Permanent(String),
}

/// Runs jobs of one kind. Must be idempotent: a job may run again after a crash or a lost outcome.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, job: &Job) -> std::result::Result<(), HandlerError>;
}

/// One queue's worker pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    /// Jobs of this queue running at once in this process.
    pub concurrency: usize,
}

impl QueueConfig {
    pub fn new(name: impl Into<String>, concurrency: usize) -> Self {
        Self {
            name: name.into(),
            concurrency: concurrency.max(1),
        }
    }
}

/// How a worker process behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this worker in `locked_by` and the execution log.
    pub worker_id: String,
    pub queues: Vec<QueueConfig>,
    /// How long a claim is held; a handler is stopped shortly before it ends.
    pub lease: Duration,
    /// How often an idle queue looks for ready jobs.
    pub poll_interval: Duration,
    /// How often expired leases are reclaimed (and gauges refreshed).
    pub reclaim_interval: Duration,
    /// Retry schedule of failed jobs.
    pub backoff: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            queues: vec![
                QueueConfig::new("default", 4),
                QueueConfig::new("partner", 8),
                QueueConfig::new("payment", 4),
                QueueConfig::new("compensation", 2),
                QueueConfig::new("documents", 2),
            ],
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            reclaim_interval: Duration::from_secs(5),
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(600),
            },
        }
    }
}

/// `host:pid:random`, unique per process.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// A worker process: handlers by kind, run over the configured queues.
pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Worker {
    pub fn new(pool: PgPool, config: WorkerConfig) -> Self {
        Self {
            pool,
            config,
            handlers: HashMap::new(),
        }
    }

    /// Registers the handler of `kind` (replacing an earlier one).
    pub fn register(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Runs until `shutdown` completes, then lets jobs in flight finish and returns.
    ///
    /// Everything runs inside the returned future: dropping or aborting it stops every job at once (like a
    /// killed process); their leases then expire and another worker runs them again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        let this = Arc::new(self);
        let kinds: Vec<String> = this.handlers.keys().cloned().collect();
        let work = async {
            let queues = this
                .config
                .queues
                .iter()
                .map(|q| this.run_queue(q.clone(), kinds.clone(), stop.clone()));
            tokio::join!(
                futures_util::future::join_all(queues),
                this.reclaim_loop(stop.clone())
            );
        };
        tokio::pin!(work);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!(worker_id = %this.config.worker_id, "workers stopping; finishing jobs in flight");
                let _ = stop_tx.send(true);
                work.await;
            }
            () = &mut work => {}
        }
        Ok(())
    }

    async fn run_queue(
        self: &Arc<Self>,
        queue: QueueConfig,
        kinds: Vec<String>,
        mut stop: watch::Receiver<bool>,
    ) {
        let permits = Arc::new(Semaphore::new(queue.concurrency));
        let mut running: JoinSet<()> = JoinSet::new();
        let mut failures: u32 = 0;
        loop {
            while running.try_join_next().is_some() {}
            if *stop.borrow() {
                break;
            }
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let claimed = jobs::claim(
                &self.pool,
                &queue.name,
                &kinds,
                &self.config.worker_id,
                self.config.lease,
                i64::try_from(free).unwrap_or(1),
            )
            .await;
            let claimed = match claimed {
                Ok(claimed) => {
                    failures = 0;
                    claimed
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(queue = %queue.name, error = %e, failures, "claiming jobs failed; backing off");
                    let wait = Backoff {
                        base: Duration::from_millis(200),
                        max: Duration::from_secs(30),
                    }
                    .delay(failures);
                    sleep_or_stop(wait, &mut stop).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                sleep_or_stop(self.config.poll_interval, &mut stop).await;
                continue;
            }
            for job in claimed {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Cannot happen (we claimed at most `free`); the lease brings the job back if it did.
                    tracing::warn!(job_id = job.job.id, "no free slot for a claimed job");
                    continue;
                };
                let this = Arc::clone(self);
                running.spawn(async move {
                    this.execute(job).await;
                    drop(permit);
                });
            }
        }
        // Graceful: finish what runs.
        while running.join_next().await.is_some() {}
    }

    #[tracing::instrument(skip_all, fields(job_id = claimed.job.id, kind = %claimed.job.kind, attempt = claimed.job.attempts))]
    async fn execute(&self, claimed: Claimed) {
        let Some(handler) = self.handlers.get(&claimed.job.kind).cloned() else {
            self.record_failure(
                &claimed,
                HandlerError::Permanent("no handler for this kind".into()),
            )
            .await;
            return;
        };
        // Stop the handler before the lease ends, so no other worker runs the job while we still do.
        let budget = self
            .config
            .lease
            .saturating_sub(self.config.lease / 10)
            .max(Duration::from_millis(10));
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(budget, handler.handle(&claimed.job)).await;
        metrics::histogram!("trailbook_job_duration_seconds", "kind" => claimed.job.kind.clone())
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(())) => match jobs::complete(&self.pool, &claimed).await {
                Ok(true) => tracing::debug!("job succeeded"),
                Ok(false) => {
                    tracing::warn!("job finished after its claim went stale; outcome not recorded")
                }
                // The lease will expire and the job run again: handlers are idempotent.
                Err(e) => tracing::error!(error = %e, "could not record a job's success"),
            },
            Ok(Err(e)) => self.record_failure(&claimed, e).await,
            Err(_) => {
                self.record_failure(
                    &claimed,
                    HandlerError::Retry(format!("timed out after {budget:?}")),
                )
                .await;
            }
        }
    }

    async fn record_failure(&self, claimed: &Claimed, error: HandlerError) {
        let retry = u32::try_from(claimed.job.attempts).unwrap_or(1).max(1);
        let (delay, permanent) = match &error {
            HandlerError::Retry(_) => (self.config.backoff.delay(retry), false),
            HandlerError::RetryAfter { after, .. } => {
                (self.config.backoff.delay(retry).max(*after), false)
            }
            HandlerError::Permanent(_) => (Duration::ZERO, true),
        };
        match jobs::fail(&self.pool, claimed, &error.to_string(), delay, permanent).await {
            Ok(FailOutcome::RetryAt(at)) => {
                tracing::warn!(error = %error, retry_at = %at, "job failed; retry scheduled");
            }
            Ok(FailOutcome::Dead) => {}
            Ok(FailOutcome::Stale) => {
                tracing::warn!(error = %error, "job failed after its claim went stale");
            }
            Err(e) => tracing::error!(error = %e, "could not record a job's failure"),
        }
    }

    async fn reclaim_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = jobs::reclaim_expired(&self.pool, &self.config.backoff).await {
                tracing::warn!(error = %e, "reclaiming expired leases failed");
            }
            if let Err(e) = jobs::publish_gauges(&self.pool).await {
                tracing::debug!(error = %e, "refreshing job gauges failed");
            }
            sleep_or_stop(self.config.reclaim_interval, &mut stop).await;
        }
    }
}

async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.changed() => {}
    }
}
