//! Rebuilding a projection from position zero into fresh tables, then swapping them in atomically.
//!
//! 1. Take the projection's rebuild lock (an advisory lock: one rebuild per projection at a time).
//! 2. Create `<table>_rebuild` for each of its tables (`like <table> including all`: same columns,
//!    indexes, defaults, comments), drop the copies' secondary indexes (not the primary key or unique
//!    ones, which the upserts and the model's rules need), and record the rebuild in
//!    `projection_rebuilds`.
//! 3. Apply the whole log to the copies in batches, with the projection's own `apply_batch` and a cursor of
//!    the rebuild's own, while the live runner keeps the live tables current and queries keep reading them.
//!    Then build the secondary indexes again, each in one pass over the filled table (a sort), instead of
//!    one insert into every index for every row written.
//! 4. Once a batch comes back short (caught up), swap in one transaction: lock the live checkpoint row
//!    (this pauses the live runner between two of its batches), apply what was written meanwhile, rename
//!    live → `_old` and `_rebuild` → live, drop `_old`, rename the indexes back, and set the live
//!    checkpoint to the rebuild's. Readers see the old tables until the commit and the new ones after it,
//!    never a half-built model. A reader holding the old tables longer than `swap_lock_timeout` makes the
//!    swap roll back and retry, so a rebuild never queues every query behind it for long.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use store::log::{head_position, read_after};
use store::Checkpoint;

use crate::error::{Error, Result};
use crate::leader::{default_instance, AdvisoryLock, REBUILD_CLASS};
use crate::projection::{projection, Projection, Target};
use crate::runner::lock_checkpoint;
use store::conn::Guarded;

/// How a rebuild runs.
#[derive(Debug, Clone)]
pub struct RebuildConfig {
    /// Most events applied per transaction while catching up.
    pub batch_size: i64,
    /// How long the swap waits for readers to release the live tables before rolling back to retry.
    pub swap_lock_timeout: Duration,
    /// How many times the swap is tried.
    pub swap_attempts: u32,
}

impl Default for RebuildConfig {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            swap_lock_timeout: Duration::from_secs(2),
            swap_attempts: 5,
        }
    }
}

/// Progress of a rebuild, passed to the progress callback after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebuildProgress {
    /// Global position of the last event applied to the new tables.
    pub position: i64,
    /// The highest global position in the log right now (the "total").
    pub head_position: i64,
    /// Events applied to the new tables so far.
    pub events_applied: u64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub name: &'static str,
    /// Events applied to the new tables (the whole log up to the swap).
    pub events_applied: u64,
    /// The checkpoint the live projection continues from.
    pub position: i64,
    pub elapsed: Duration,
}

/// The last rebuild of a projection, as recorded in `projection_rebuilds`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RebuildStatus {
    pub name: String,
    /// `running`, `swapped` (done), `failed`, or `abandoned` (recorded as running, but its process died).
    pub status: String,
    pub position: i64,
    pub head_position: i64,
    pub events_applied: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
}

/// Rebuilds projection `name` with the default [`RebuildConfig`]; `progress` is called after every batch.
pub async fn rebuild(
    pool: &PgPool,
    name: &str,
    progress: impl Fn(RebuildProgress) + Send + Sync,
) -> Result<RebuildReport> {
    rebuild_with(pool, name, &RebuildConfig::default(), progress).await
}

/// Rebuilds projection `name`: fresh tables from position zero, swapped in atomically when caught up.
#[tracing::instrument(skip(pool, config, progress))]
pub async fn rebuild_with(
    pool: &PgPool,
    name: &str,
    config: &RebuildConfig,
    progress: impl Fn(RebuildProgress) + Send + Sync,
) -> Result<RebuildReport> {
    let started = begin(pool, name).await?;
    started.finish(pool, config, &progress).await
}

/// Starts a rebuild of projection `name` in the background and returns once it holds the rebuild lock
/// and has recorded itself as running (so [`rebuild_status`] reports it at once). Refused with
/// [`Error::RebuildInProgress`] when another one runs. Follow it with [`rebuild_status`].
pub async fn start_rebuild(
    pool: PgPool,
    name: &str,
    config: RebuildConfig,
) -> Result<tokio::task::JoinHandle<Result<RebuildReport>>> {
    let started = begin(&pool, name).await?;
    Ok(tokio::spawn(async move {
        started.finish(&pool, &config, &|_| {}).await
    }))
}

/// A rebuild that holds its lock and has prepared its tables.
struct Started {
    projection: &'static dyn Projection,
    lock: AdvisoryLock,
    at: Instant,
}

/// Takes the rebuild lock of projection `name` and prepares the fresh tables.
async fn begin(pool: &PgPool, name: &str) -> Result<Started> {
    let projection = projection(name)?;
    let name = projection.name();
    let at = Instant::now();
    let mut lock = AdvisoryLock::new(pool.clone(), &default_instance(), REBUILD_CLASS, name);
    if !lock.try_acquire().await? {
        return Err(Error::RebuildInProgress(name));
    }
    if let Err(e) = prepare(pool, projection).await {
        failed(pool, projection, &e).await;
        lock.release().await;
        return Err(e);
    }
    tracing::info!(projection = name, "rebuilding from position zero");
    Ok(Started {
        projection,
        lock,
        at,
    })
}

impl Started {
    /// Catches up, swaps, and releases the lock; a failure is recorded and leaves the live tables as
    /// they were.
    async fn finish(
        mut self,
        pool: &PgPool,
        config: &RebuildConfig,
        progress: &(impl Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport> {
        let outcome = run_rebuild(pool, self.projection, config, progress, self.at).await;
        if let Err(e) = &outcome {
            failed(pool, self.projection, e).await;
        }
        self.lock.release().await;
        outcome
    }
}

/// Logs a failed rebuild and records it (best effort).
async fn failed(pool: &PgPool, projection: &dyn Projection, e: &Error) {
    let name = projection.name();
    tracing::error!(projection = name, error = %e, "rebuild failed; the live tables are unchanged");
    if let Err(cleanup) = fail(pool, projection, e).await {
        tracing::warn!(projection = name, error = %cleanup, "could not record the failed rebuild");
    }
}

async fn run_rebuild(
    pool: &PgPool,
    projection: &'static dyn Projection,
    config: &RebuildConfig,
    progress: &(impl Fn(RebuildProgress) + Send + Sync),
    started: Instant,
) -> Result<RebuildReport> {
    let name = projection.name();
    let mut cursor = Checkpoint::default();
    let mut applied: u64 = 0;
    loop {
        let mut conn = Guarded::acquire(pool).await?;
        let mut tx = conn.begin().await?;
        // The copies are thrown away if anything goes wrong: no batch needs to wait for the flush.
        sqlx::query("set local synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let events = read_after(&mut *tx, cursor, config.batch_size).await?;
        let head = head_position(&mut *tx).await?;
        if let Some(last) = events.last() {
            projection
                .apply_batch(&mut tx, Target::REBUILD, &events)
                .await?;
            cursor = last.checkpoint();
            applied += events.len() as u64;
        }
        record_progress(&mut tx, name, cursor, head, applied).await?;
        tx.commit().await?;
        conn.release();
        progress(RebuildProgress {
            position: cursor.position,
            head_position: head,
            events_applied: applied,
        });
        if i64::try_from(events.len()).unwrap_or(i64::MAX) < config.batch_size {
            break;
        }
    }
    create_deferred_indexes(pool, projection).await?;

    for attempt in 1..=config.swap_attempts {
        match swap(pool, projection, config, cursor, applied).await {
            Ok((position, head, total)) => {
                progress(RebuildProgress {
                    position,
                    head_position: head,
                    events_applied: total,
                });
                let report = RebuildReport {
                    name,
                    events_applied: total,
                    position,
                    elapsed: started.elapsed(),
                };
                tracing::info!(
                    projection = name,
                    events = total,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "rebuild swapped in"
                );
                return Ok(report);
            }
            Err(e) if is_lock_timeout(&e) && attempt < config.swap_attempts => {
                tracing::warn!(
                    projection = name,
                    attempt,
                    "readers hold the live tables; retrying the swap"
                );
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(e) if is_lock_timeout(&e) => return Err(Error::SwapTimedOut(name)),
            Err(e) => return Err(e),
        }
    }
    Err(Error::SwapTimedOut(name))
}

/// Drops leftovers of an earlier rebuild, creates the empty copies, and records a running rebuild.
async fn prepare(pool: &PgPool, projection: &dyn Projection) -> Result<()> {
    let mut conn = Guarded::acquire(pool).await?;
    let mut tx = conn.begin().await?;
    for base in projection.tables() {
        let copy = Target::REBUILD.table(base);
        sqlx::query(&format!("drop table if exists {copy}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("create table {copy} (like {base} including all)"))
            .execute(&mut *tx)
            .await?;
        // `like` copies column and index comments but not the table's own.
        sqlx::query(&format!(
            "do $$ begin
                 execute format('comment on table {copy} is %L', obj_description('{base}'::regclass, 'pg_class'));
             end $$"
        ))
        .execute(&mut *tx)
        .await?;
        for (_, copy_index) in deferred_indexes(&mut tx, base).await? {
            sqlx::query(&format!("drop index if exists \"{copy_index}\""))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(
        "insert into projection_rebuilds (name, status) values ($1, 'running')
         on conflict (name) do update set status = 'running', tx_id = 0, position = 0, head_position = 0,
             events_applied = 0, started_at = now(), updated_at = now(), finished_at = null, error = null",
    )
    .bind(projection.name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    conn.release();
    Ok(())
}

/// The secondary indexes of live table `base` that a rebuild builds only once its copy is filled: every
/// index that is neither the primary key nor unique, named `<base>_…` (as all of the migrations' are),
/// with the name its copy on `<base>_rebuild` has (`like … including all` names it `<base>_rebuild_…`,
/// and the swap renames it back).
async fn deferred_indexes(conn: &mut PgConnection, base: &str) -> Result<Vec<(String, String)>> {
    let copy = Target::REBUILD.table(base);
    let names: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_index i join pg_class c on c.oid = i.indexrelid
         where i.indrelid = $1::regclass and not i.indisprimary and not i.indisunique
         order by c.relname",
    )
    .bind(base)
    .fetch_all(&mut *conn)
    .await?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(base)?.to_owned();
            rest.starts_with('_')
                .then(|| (name.clone(), format!("{copy}{rest}")))
        })
        .collect())
}

/// Builds on the filled copies the secondary indexes [`prepare`] dropped, with the live indexes'
/// definitions; one transaction per table.
async fn create_deferred_indexes(pool: &PgPool, projection: &dyn Projection) -> Result<()> {
    for base in projection.tables() {
        let copy = Target::REBUILD.table(base);
        let mut conn = Guarded::acquire(pool).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("set local maintenance_work_mem = '64MB'")
            .execute(&mut *tx)
            .await?;
        for (live_index, copy_index) in deferred_indexes(&mut tx, base).await? {
            // `CREATE INDEX <name> ON <table> USING …`: keep the method, columns and any predicate.
            let definition: String = sqlx::query_scalar("select pg_get_indexdef($1::regclass)")
                .bind(&live_index)
                .fetch_one(&mut *tx)
                .await?;
            let Some(using) = definition.find(" USING ") else {
                return Err(Error::IndexDefinition {
                    index: live_index,
                    definition,
                });
            };
            sqlx::query(&format!(
                "create index if not exists \"{copy_index}\" on {copy}{}",
                &definition[using..]
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        conn.release();
    }
    Ok(())
}

async fn record_progress(
    conn: &mut PgConnection,
    name: &str,
    cursor: Checkpoint,
    head: i64,
    applied: u64,
) -> Result<()> {
    sqlx::query(
        "update projection_rebuilds
         set tx_id = $2, position = $3, head_position = $4, events_applied = $5, updated_at = now()
         where name = $1",
    )
    .bind(name)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .bind(head)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The swap transaction. Returns the checkpoint position the live projection continues from, the head
/// of the log at the swap, and the total of events applied.
async fn swap(
    pool: &PgPool,
    projection: &dyn Projection,
    config: &RebuildConfig,
    mut cursor: Checkpoint,
    mut applied: u64,
) -> Result<(i64, i64, u64)> {
    let name = projection.name();
    let mut conn = Guarded::acquire(pool).await?;
    let mut tx = conn.begin().await?;
    sqlx::query(&format!(
        "set local lock_timeout = '{}ms'",
        config.swap_lock_timeout.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    // Pauses the live runner: its next batch waits for this row, then re-reads the checkpoint set below.
    lock_checkpoint(&mut tx, name).await?;
    let mut last_event_at = None;
    loop {
        let events = read_after(&mut *tx, cursor, config.batch_size).await?;
        let Some(last) = events.last() else { break };
        projection
            .apply_batch(&mut tx, Target::REBUILD, &events)
            .await?;
        cursor = last.checkpoint();
        last_event_at = Some(last.recorded_at);
        applied += events.len() as u64;
        if i64::try_from(events.len()).unwrap_or(i64::MAX) < config.batch_size {
            break;
        }
    }
    if last_event_at.is_none() {
        last_event_at =
            sqlx::query_scalar("select recorded_at from events where global_position = $1")
                .bind(cursor.position)
                .fetch_optional(&mut *tx)
                .await?;
    }

    for base in projection.tables() {
        let copy = Target::REBUILD.table(base);
        let old = format!("{base}_old");
        for statement in [
            format!("alter table {base} rename to {old}"),
            format!("alter table {copy} rename to {base}"),
            format!("drop table {old}"),
        ] {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        // The copies' indexes were named after `<table>_rebuild`: give them the live names back.
        let indexes: Vec<String> = sqlx::query_scalar(
            "select c.relname::text from pg_index i join pg_class c on c.oid = i.indexrelid
             where i.indrelid = $1::regclass",
        )
        .bind(*base)
        .fetch_all(&mut *tx)
        .await?;
        for index in indexes.into_iter().filter(|i| i.starts_with(&copy)) {
            let renamed = format!("{base}{}", &index[copy.len()..]);
            sqlx::query(&format!("alter index \"{index}\" rename to \"{renamed}\""))
                .execute(&mut *tx)
                .await?;
        }
    }

    sqlx::query(
        "update projection_checkpoints
         set tx_id = $2, position = $3, last_event_at = $4, updated_at = now()
         where name = $1",
    )
    .bind(name)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .bind(last_event_at)
    .execute(&mut *tx)
    .await?;
    let head = head_position(&mut *tx).await?;
    record_progress(&mut tx, name, cursor, head, applied).await?;
    sqlx::query(
        "update projection_rebuilds set status = 'swapped', finished_at = now() where name = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    conn.release();
    Ok((cursor.position, head, applied))
}

fn is_lock_timeout(error: &Error) -> bool {
    match error {
        Error::Database(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            // lock_not_available (lock_timeout), or a deadlock with a reader: both roll back cleanly.
            .is_some_and(|code| code == "55P03" || code == "40P01"),
        _ => false,
    }
}

/// Records a failed rebuild and drops its copies (best effort: a later rebuild drops them anyway).
async fn fail(pool: &PgPool, projection: &dyn Projection, error: &Error) -> Result<()> {
    for base in projection.tables() {
        sqlx::query(&format!(
            "drop table if exists {}",
            Target::REBUILD.table(base)
        ))
        .execute(pool)
        .await?;
    }
    sqlx::query(
        "update projection_rebuilds set status = 'failed', error = $2, finished_at = now(), updated_at = now()
         where name = $1",
    )
    .bind(projection.name())
    .bind(error.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// The last rebuild of projection `name`, if it was ever rebuilt. A rebuild recorded as running whose
/// process no longer holds the rebuild lock is reported as `abandoned`.
pub async fn rebuild_status(pool: &PgPool, name: &str) -> Result<Option<RebuildStatus>> {
    let name = projection(name)?.name();
    Ok(sqlx::query_as(
        "select r.name,
                case when r.status = 'running' and not exists (
                         select 1 from pg_locks l
                         where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                           and l.database = (select oid from pg_database where datname = current_database())
                           and l.classid = $2::bigint::oid and l.objid = $3::bigint::oid)
                     then 'abandoned' else r.status end as status,
                r.position, r.head_position, r.events_applied, r.started_at, r.updated_at, r.finished_at,
                r.error
         from projection_rebuilds r where r.name = $1",
    )
    .bind(name)
    .bind(i64::from(REBUILD_CLASS))
    .bind(i64::from(crate::leader::lock_key(name)))
    .fetch_optional(pool)
    .await?)
}
