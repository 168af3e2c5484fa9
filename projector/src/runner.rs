//! The projection runner: applies the global log to each projection, batch by batch, exactly once.
//!
//! # One batch
//! In one transaction: lock the projection's checkpoint row (`select ... for update`), read up to
//! `batch_size` events after it with [`store::log::read_after`] (by `(tx_id, global_position)`, below
//! `pg_snapshot_xmin`, so no event of a slow transaction is ever skipped), apply them, move the checkpoint
//! to the last one, commit. Read-model rows and checkpoint commit together or not at all, so a runner that
//! dies anywhere (before, during or after the commit) leaves either the old checkpoint with the old rows
//! or the new checkpoint with the new rows, and the next runner continues from there.
//!
//! The row lock is the fence: a second runner's batch waits on it, and under READ COMMITTED re-reads the
//! checkpoint the first one committed, so it continues after the first runner's events instead of applying
//! them again. The advisory lock of `leader` only keeps standbys from queueing up on it.
//!
//! # Waking up
//! A leader runs batches back to back while they come back full, doubling the batch each time up to
//! `max_batch_size` (catch-up); otherwise it returns to `batch_size` and waits for a NOTIFY on
//! [`CHANNEL`], a poll tick (`poll_interval`) or shutdown, then asks cheaply whether its projection has
//! anything to read before opening a batch transaction. Writers do not NOTIFY from inside their append
//! transaction: PostgreSQL serializes the commits of notifying transactions (see the migration).
//!
//! # Failures
//! A failing batch (database down, an event that does not decode) is rolled back, logged with the
//! projection, aggregate id and sequence, and retried with jittered exponential backoff; the checkpoint
//! never moves past an event that was not applied.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use store::{Checkpoint, RecordedEvent};
use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};
use crate::leader::{default_instance, AdvisoryLock, LEADER_CLASS};
use crate::projection::{projection, Projection, Target, NAMES};
use crate::shared_read::SharedReads;
use crate::status::{publish_metrics, status};
use store::conn::Guarded;

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
    let (stop_tx, stop) = watch::channel(false);
    let reads = Arc::new(SharedReads::new(projections.len()));
    let runners: Vec<Runner> = projections
        .into_iter()
        .map(|projection| Runner {
            pool: pool.clone(),
            projection,
            config: config.clone(),
            wake: Arc::new(Notify::new()),
            reads: reads.clone(),
        })
        .collect();
    let wakes: Vec<Arc<Notify>> = runners.iter().map(|r| r.wake.clone()).collect();

    let work = async {
        tokio::join!(
            futures_util::future::join_all(runners.iter().map(|r| r.run(stop.clone()))),
            listen(&pool, &config, &wakes, stop.clone()),
            refresh_metrics(&pool, &config, stop.clone()),
        );
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            tracing::info!("projector stopping");
            let _ = stop_tx.send(true);
            work.await;
        }
        () = &mut work => {}
    }
    Ok(())
}

/// The runner of one projection in this process: a standby until it takes the lead.
struct Runner {
    pool: PgPool,
    projection: &'static dyn Projection,
    config: Config,
    wake: Arc<Notify>,
    /// The log batches this process's runners read, shared between them.
    reads: Arc<SharedReads>,
}

impl Runner {
    async fn run(&self, mut stop: watch::Receiver<bool>) {
        let name = self.projection.name();
        let instance = self.config.instance.as_str();
        let mut lock = AdvisoryLock::new(self.pool.clone(), instance, LEADER_CLASS, name);
        let mut standby_logged = false;
        while !is_stopped(&stop) {
            match lock.try_acquire().await {
                Ok(true) => {
                    tracing::info!(projection = name, instance, "leading the projection");
                    metrics::gauge!("trailbook_projection_leader", "projection" => name).set(1.0);
                    self.lead(&mut lock, &mut stop).await;
                    metrics::gauge!("trailbook_projection_leader", "projection" => name).set(0.0);
                    if !is_stopped(&stop) {
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
            if !is_stopped(&stop) {
                sleep_or_stop(self.config.leader_retry, &mut stop).await;
            }
        }
        lock.release().await;
    }

    /// Applies batches while this process holds the lead; returns on shutdown or when the lock is lost.
    async fn lead(&self, lock: &mut AdvisoryLock, stop: &mut watch::Receiver<bool>) {
        const LOCK_CHECK: Duration = Duration::from_secs(2);
        let name = self.projection.name();
        let mut failures: u32 = 0;
        let mut checked = Instant::now();
        let base = self.config.batch_size.max(1);
        let max = self.config.max_batch_size.max(base);
        let mut size = base;
        let mut started;
        loop {
            if is_stopped(stop) {
                return;
            }
            if checked.elapsed() >= LOCK_CHECK {
                if !lock.is_held().await {
                    return;
                }
                checked = Instant::now();
            }
            started = Instant::now();
            match apply_batch(&self.pool, self.projection, size, &self.reads).await {
                Ok(n) => {
                    failures = 0;
                    if i64::try_from(n).unwrap_or(i64::MAX) >= size {
                        size = size.saturating_mul(2).min(max);
                        continue;
                    }
                    size = base;
                }
                Err(e) => {
                    // Retry small: a batch that failed for its size (a statement too big, a timeout)
                    // must not fail the same way forever.
                    size = base;
                    failures = failures.saturating_add(1);
                    log_batch_error(name, &e, failures);
                    metrics::counter!("trailbook_projection_batch_failures_total", "projection" => name)
                        .increment(1);
                    if !lock.is_held().await {
                        return;
                    }
                    checked = Instant::now();
                    sleep_or_stop(backoff(failures, self.config.max_backoff), stop).await;
                    continue;
                }
            }
            // Caught up: wait for a wake-up, then look before opening a transaction.
            loop {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = stop.changed() => {}
                }
                if is_stopped(stop) {
                    return;
                }
                if checked.elapsed() >= LOCK_CHECK {
                    if !lock.is_held().await {
                        return;
                    }
                    checked = Instant::now();
                }
                match has_pending(&self.pool, name).await {
                    Ok(false) => {}
                    Ok(true) => {
                        let wait = self.config.coalesce.max(
                            self.config
                                .min_batch_interval
                                .saturating_sub(started.elapsed()),
                        );
                        if !wait.is_zero() {
                            sleep_or_stop(wait, stop).await;
                        }
                        break;
                    }
                    // On error, let the batch report it (with backoff).
                    Err(_) => break,
                }
            }
        }
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
    save_checkpoint(&mut tx, name, checkpoint, last).await?;
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

/// Locks `name`'s checkpoint row for the rest of the transaction and returns it (creating the row for a
/// projection that has none yet).
pub(crate) async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> Result<Checkpoint> {
    let select = "select tx_id, position from projection_checkpoints where name = $1 for update";
    if let Some((tx_id, position)) = sqlx::query_as::<_, (i64, i64)>(select)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(Checkpoint { tx_id, position });
    }
    sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let (tx_id, position) = sqlx::query_as::<_, (i64, i64)>(select)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Checkpoint { tx_id, position })
}

/// Moves `name`'s checkpoint from `from` (locked by this transaction) to `last`.
pub(crate) async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    from: Checkpoint,
    last: &RecordedEvent,
) -> Result<()> {
    let updated = sqlx::query(
        "update projection_checkpoints
         set tx_id = $2, position = $3, last_event_at = $4, updated_at = now()
         where name = $1 and tx_id = $5 and position = $6",
    )
    .bind(name)
    .bind(last.tx_id)
    .bind(last.global_position)
    .bind(last.recorded_at)
    .bind(from.tx_id)
    .bind(from.position)
    .execute(&mut *conn)
    .await?;
    // Cannot happen while the row is locked by this transaction; checked anyway, so a broken fence fails
    // the batch instead of applying it twice.
    if updated.rows_affected() != 1 {
        return Err(sqlx::Error::RowNotFound.into());
    }
    Ok(())
}

/// Whether the log has events after `name`'s checkpoint that a batch could read now (a plain read: no
/// lock, no transaction id; about 0.1 ms).
///
/// Shaped like `read_after` on purpose: with `order by ... limit 1` the planner walks the
/// `(tx_id, global_position)` index from the checkpoint. An `exists (...)` or a join to the checkpoint row
/// makes it scan the whole table instead (it cannot know how far along the checkpoint is).
pub(crate) async fn has_pending(pool: &PgPool, name: &str) -> Result<bool> {
    let found: Option<i32> = sqlx::query_scalar(
        "select 1 from events e
         where (e.tx_id, e.global_position) > (
                   (select tx_id from projection_checkpoints where name = $1)::text::xid8,
                   (select position from projection_checkpoints where name = $1))
           and e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
         order by e.tx_id, e.global_position
         limit 1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Forwards NOTIFYs on [`CHANNEL`] to every runner until stopped. Best effort: runners poll anyway.
async fn listen(
    pool: &PgPool,
    config: &Config,
    wakes: &[Arc<Notify>],
    mut stop: watch::Receiver<bool>,
) {
    if !config.listen {
        return;
    }
    let mut listener: Option<PgListener> = None;
    while !is_stopped(&stop) {
        let active = match &mut listener {
            Some(listener) => listener,
            None => match connect_listener(pool).await {
                Ok(connected) => listener.insert(connected),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot LISTEN; relying on polling for now");
                    sleep_or_stop(Duration::from_secs(5), &mut stop).await;
                    continue;
                }
            },
        };
        tokio::select! {
            received = active.try_recv() => match received {
                Ok(Some(_)) => wakes.iter().for_each(|w| w.notify_one()),
                // The connection was lost; the next try_recv reconnects. Wake runners to look meanwhile.
                Ok(None) => wakes.iter().for_each(|w| w.notify_one()),
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection failed; reconnecting");
                    listener = None;
                    sleep_or_stop(Duration::from_secs(1), &mut stop).await;
                }
            },
            _ = stop.changed() => {}
        }
    }
}

async fn connect_listener(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Refreshes the lag gauges every `metrics_interval` until stopped.
async fn refresh_metrics(pool: &PgPool, config: &Config, mut stop: watch::Receiver<bool>) {
    if config.metrics_interval.is_zero() {
        return;
    }
    while !is_stopped(&stop) {
        match status(pool).await {
            Ok(statuses) => publish_metrics(&statuses),
            Err(e) => tracing::debug!(error = %e, "cannot refresh projection lag gauges"),
        }
        sleep_or_stop(config.metrics_interval, &mut stop).await;
    }
}

fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Sleeps for `duration`, or less if a stop is signalled (or its sender is gone).
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) {
    if is_stopped(stop) {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.changed() => {}
    }
}

/// Jittered exponential backoff after `failures` consecutive failures: up to 100 ms × 2^failures, capped.
fn backoff(failures: u32, max: Duration) -> Duration {
    let cap = Duration::from_millis(100u64 << failures.min(16)).min(max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff grows with failures and never exceeds its cap.
    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        assert!(backoff(1, max) <= Duration::from_millis(200));
        assert!(backoff(1, max) >= Duration::from_millis(100));
        for failures in [10, 20, 1000] {
            let wait = backoff(failures, max);
            assert!(wait <= max && wait >= max / 2, "{wait:?}");
        }
    }
}
