//! The projection runner: applies the global log to each projection, batch by batch, exactly once.
//!
//! # One batch
//! In one transaction: lock the projection's checkpoint row ([`Checkpoints::lock`], `select ... for
//! update`), read up to `batch_size` events after it with [`store::log::read_after`] (by `(tx_id,
//! global_position)`, below `pg_snapshot_xmin`, so no event of a slow transaction is ever skipped), apply
//! them, move the checkpoint to the last one ([`Checkpoints::advance`]), commit. Read-model rows and
//! checkpoint commit together or not at all, so a runner that dies anywhere (before, during or after the
//! commit) leaves either the old checkpoint with the old rows or the new checkpoint with the new rows, and
//! the next runner continues from there.
//!
//! The row lock is the fence: a second runner's batch waits on it, and under READ COMMITTED re-reads the
//! checkpoint the first one committed, so it continues after the first runner's events instead of applying
//! them again. The advisory lock of `leader` only keeps standbys from queueing up on it.
//!
//! # Waking up
//! A leader is a [`Consumer`] driven by the store's [`LogFollower`]: it runs batches back to back while
//! they come back full, doubling the batch each time up to `max_batch_size` (catch-up); otherwise it
//! returns to `batch_size` and waits for a NOTIFY on [`CHANNEL`] (one LISTEN connection per process wakes
//! every runner), a poll tick (`poll_interval`) or shutdown, then asks cheaply whether its projection has
//! anything to read before opening a batch transaction. Writers do not NOTIFY from inside their append
//! transaction: PostgreSQL serializes the commits of notifying transactions (see the migration).
//!
//! # Failures
//! A failing batch (database down, an event that does not decode) is rolled back, logged with the
//! projection, aggregate id and sequence, and retried with the store's jittered exponential [`Backoff`];
//! the checkpoint never moves past an event that was not applied. A leader pings its lock connection at
//! most every two seconds and right after a failed batch, and steps down when the lock is gone.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use store::backoff::Backoff;
use store::conn::Guarded;
use store::consumer::{until_shutdown, Checkpoints, Consumer, LogFollower, Pace, Stop};
use store::notify::{while_listening, Wake};
use store::Checkpoint;

use crate::error::{Error, Result};
use crate::leader::{default_instance, AdvisoryLock, LEADER_CLASS};
use crate::projection::{projection, Projection, Target, NAMES};
use crate::shared_read::SharedReads;
use crate::status::{publish_metrics, status};

/// The channel runners LISTEN on: a `NOTIFY trailbook_events` (outside any append transaction, e.g. from a
/// [`store::notify::CommitNotifier`]) wakes them before their next poll.
pub use store::notify::CHANNEL;

/// How runners behave.
#[derive(Debug, Clone)]
pub struct Config {
    /// Events applied in one transaction when the projection is (nearly) caught up.
    pub batch_size: i64,
    /// Most events applied in one transaction while catching up: after every full batch the next one
    /// doubles, up to this; the first short batch returns to `batch_size`. A bigger batch folds more
    /// events of one aggregate into one row write and spreads a transaction's fixed cost over more events;
    /// a small one keeps live batches short.
    pub max_batch_size: i64,
    /// How often an idle leader looks for new events (a NOTIFY on [`CHANNEL`] wakes it sooner).
    pub poll_interval: Duration,
    /// After a wake-up finds new events, how long to let more arrive before applying them: one batch
    /// then carries a burst of commits instead of a transaction per commit (zero: apply at once).
    pub coalesce: Duration,
    /// Under a steady stream of commits, the shortest time from the start of one live batch to the start
    /// of the next (the wait after a wake-up is stretched to it): batches then carry more events each
    /// and cost the database fewer transactions per command, for at most this much added lag.
    pub min_batch_interval: Duration,
    /// How often a standby tries to take over the lead of a projection.
    pub leader_retry: Duration,
    /// Longest wait between retries of a failing batch.
    pub max_backoff: Duration,
    /// How often the lag gauges are refreshed from the database (zero: never).
    pub metrics_interval: Duration,
    /// LISTEN on [`CHANNEL`] (one connection per process).
    pub listen: bool,
    /// Names this process in `pg_stat_activity` (its lock connections' `application_name`) and in
    /// [`crate::ProjectionStatus::leader`].
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_batch_size: 4000,
            poll_interval: Duration::from_millis(100),
            coalesce: Duration::from_millis(10),
            min_batch_interval: Duration::from_millis(25),
            leader_retry: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(5),
            listen: true,
            instance: default_instance(),
        }
    }
}

/// Runs all projections until `shutdown` completes, then finishes the batches in flight and returns.
///
/// Any number of processes may run this against one database: each projection is applied by one of them
/// at a time, and another takes over within about `leader_retry` when it dies.
pub async fn run(pool: PgPool, config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_projections(pool, &NAMES, config, shutdown).await
}

/// Like [`run`], for the projections named in `names` only.
///
/// Everything runs inside the returned future (no detached tasks): dropping or aborting it stops every
/// runner at once, like a killed process, and its connections close.
pub async fn run_projections(
    pool: PgPool,
    names: &[&str],
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let projections = names
        .iter()
        .map(|name| projection(name))
        .collect::<Result<Vec<_>>>()?;
    let reads = Arc::new(SharedReads::new(projections.len()));
    let runners: Vec<Runner> = projections
        .into_iter()
        .map(|projection| Runner {
            pool: pool.clone(),
            projection,
            config: config.clone(),
            wake: Wake::default(),
            reads: reads.clone(),
        })
        .collect();
    let wakes: Vec<Wake> = runners.iter().map(|r| r.wake.clone()).collect();
    let shutdown = async {
        shutdown.await;
        tracing::info!("projector stopping");
    };
    let (pool, config, runners, wakes) = (&pool, &config, &runners, &wakes);
    until_shutdown(shutdown, |stop| async move {
        let work = async {
            tokio::join!(
                futures_util::future::join_all(runners.iter().map(|r| r.run(stop.clone()))),
                refresh_metrics(pool, config, stop.clone()),
            );
        };
        // One LISTEN connection per process wakes all its runners (best effort: they poll anyway).
        if config.listen {
            while_listening(pool, wakes, work).await;
        } else {
            work.await;
        }
    })
    .await;
    Ok(())
}

/// The runner of one projection in this process: a standby until it takes the lead.
struct Runner {
    pool: PgPool,
    projection: &'static dyn Projection,
    config: Config,
    wake: Wake,
    /// The log batches this process's runners read, shared between them.
    reads: Arc<SharedReads>,
}

impl Runner {
    async fn run(&self, mut stop: Stop) {
        let name = self.projection.name();
        let instance = self.config.instance.as_str();
        let mut lock = AdvisoryLock::new(self.pool.clone(), instance, LEADER_CLASS, name);
        let mut standby_logged = false;
        while !stop.is_stopped() {
            match lock.try_acquire().await {
                Ok(true) => {
                    tracing::info!(projection = name, instance, "leading the projection");
                    metrics::gauge!("trailbook_projection_leader", "projection" => name).set(1.0);
                    self.lead(&mut lock, stop.clone()).await;
                    metrics::gauge!("trailbook_projection_leader", "projection" => name).set(0.0);
                    if !stop.is_stopped() {
                        tracing::warn!(
                            projection = name,
                            instance,
                            "lost the lock connection; no longer leading"
                        );
                    }
                    standby_logged = false;
                }
                Ok(false) if !standby_logged => {
                    tracing::info!(
                        projection = name,
                        instance,
                        "another process leads the projection; standing by"
                    );
                    standby_logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    projection = name,
                    error = %e,
                    "cannot reach the database to take the lead; retrying"
                ),
            }
            stop.sleep(self.config.leader_retry).await;
        }
        lock.release().await;
    }

    /// Applies batches while this process holds the lead; returns on shutdown or when the lock is lost.
    async fn lead(&self, lock: &mut AdvisoryLock, stop: Stop) {
        let pace = Pace {
            batch_size: self.config.batch_size,
            max_batch_size: self.config.max_batch_size,
            poll_interval: self.config.poll_interval,
            coalesce: self.config.coalesce,
            min_batch_interval: self.config.min_batch_interval,
            backoff: batch_backoff(self.config.max_backoff),
        };
        let mut leading = Leading {
            runner: self,
            lock,
            checked: Some(Instant::now()),
        };
        LogFollower::new(pace, stop)
            .woken_by(self.wake.clone())
            .run(&mut leading)
            .await;
    }
}

/// The retry schedule of a failing batch: up to 100 ms × 2^failures, at most `max`.
fn batch_backoff(max: Duration) -> Backoff {
    Backoff {
        base: Duration::from_millis(200),
        max,
    }
}

/// A runner while it leads: the [`Consumer`] of its projection.
struct Leading<'a> {
    runner: &'a Runner,
    lock: &'a mut AdvisoryLock,
    /// When the lock was last seen held (`None`: look at the next chance).
    checked: Option<Instant>,
}

impl Consumer for Leading<'_> {
    type Error = Error;

    async fn batch(&mut self, limit: i64) -> Result<usize> {
        let runner = self.runner;
        apply_batch(&runner.pool, runner.projection, limit, &runner.reads).await
    }

    async fn has_pending(&mut self) -> Result<bool> {
        let runner = self.runner;
        Ok(CHECKPOINTS
            .has_pending(&runner.pool, runner.projection.name())
            .await?)
    }

    /// Whether the lock is still held: its connection is pinged at most every two seconds (and right
    /// after a failed batch), so a process that lost it stops within about that.
    async fn keep_going(&mut self) -> bool {
        const LOCK_CHECK: Duration = Duration::from_secs(2);
        if self.checked.is_some_and(|at| at.elapsed() < LOCK_CHECK) {
            return true;
        }
        self.checked = Some(Instant::now());
        self.lock.is_held().await
    }

    fn failed(&mut self, error: &Error, failures: u32) {
        let name = self.runner.projection.name();
        log_batch_error(name, error, failures);
        metrics::counter!("trailbook_projection_batch_failures_total", "projection" => name)
            .increment(1);
        self.checked = None;
    }
}

fn log_batch_error(projection: &'static str, error: &Error, failures: u32) {
    match error {
        Error::Apply {
            aggregate_type,
            aggregate_id,
            sequence,
            position,
            ..
        } => tracing::error!(
            projection,
            aggregate_type = %aggregate_type,
            aggregate_id = %aggregate_id,
            sequence,
            position,
            failures,
            error = %error,
            "projection batch failed; checkpoint unchanged, retrying"
        ),
        _ => tracing::error!(
            projection,
            failures,
            error = %error,
            "projection batch failed; checkpoint unchanged, retrying"
        ),
    }
}

/// Applies the next batch of the log to `projection`'s live tables in one transaction and moves its
/// checkpoint. Returns how many events were applied (0: nothing to read).
pub async fn apply_next_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
) -> Result<usize> {
    // A cache for one runner keeps nothing: every batch is read from the log.
    apply_batch(pool, projection, batch_size, &SharedReads::new(1)).await
}

/// [`apply_next_batch`], reading the log through `reads` (shared with the process's other runners).
#[tracing::instrument(level = "debug", skip_all, fields(projection = projection.name()))]
async fn apply_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
    reads: &SharedReads,
) -> Result<usize> {
    let name = projection.name();
    let started = Instant::now();
    let mut conn = Guarded::acquire(pool).await?;
    let mut tx = conn.begin().await?;
    // A read model is derived data: a batch lost in a crash (rows and checkpoint together, never one
    // without the other) is applied again from the log, so its commit need not wait for the disk flush.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let checkpoint = lock_checkpoint(&mut tx, name).await?;
    let batch = reads.read(&mut tx, checkpoint, batch_size).await?;
    let events = batch.events();
    let Some(last) = events.last() else {
        tx.rollback().await?;
        conn.release();
        return Ok(0);
    };
    projection
        .apply_batch(&mut tx, Target::LIVE, events)
        .await?;
    CHECKPOINTS.advance(&mut tx, name, checkpoint, last).await?;
    tx.commit().await?;
    conn.release();

    let applied = events.len();
    let took = started.elapsed();
    tracing::debug!(
        applied,
        position = last.global_position,
        took_ms = took.as_secs_f64() * 1000.0,
        "applied a batch"
    );
    metrics::histogram!("trailbook_projection_batch_seconds", "projection" => name)
        .record(took.as_secs_f64());
    metrics::counter!("trailbook_projection_events_applied_total", "projection" => name)
        .increment(u64::try_from(applied).unwrap_or_default());
    Ok(applied)
}

/// The projections' checkpoints: one row per projection, with the time of the last event applied.
pub(crate) const CHECKPOINTS: Checkpoints =
    Checkpoints::new("projection_checkpoints").with_event_time();

/// Locks `name`'s checkpoint row for the rest of the transaction and returns it (creating the row for a
/// projection that has none yet).
pub(crate) async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> Result<Checkpoint> {
    Ok(CHECKPOINTS.lock(conn, name).await?)
}

/// Refreshes the lag gauges every `metrics_interval` until stopped.
async fn refresh_metrics(pool: &PgPool, config: &Config, mut stop: Stop) {
    if config.metrics_interval.is_zero() {
        return;
    }
    while !stop.is_stopped() {
        match status(pool).await {
            Ok(statuses) => publish_metrics(&statuses),
            Err(e) => tracing::debug!(error = %e, "cannot refresh projection lag gauges"),
        }
        stop.sleep(config.metrics_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff grows with failures and never exceeds its cap.
    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        let backoff = |failures| batch_backoff(max).delay(failures);
        assert!(backoff(1) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(100));
        for failures in [10, 20, 1000] {
            let wait = backoff(failures);
            assert!(wait <= max && wait >= max / 2, "{wait:?}");
        }
    }
}
