//! The job queue on PostgreSQL: `jobs` (one row per job) and `job_attempts` (the execution log).
//!
//! # States
//! `queued` → (claim) `running` → `succeeded`, or `failed` (retry scheduled at `run_at`, claimed again
//! later) or `dead` (after `max_attempts`, or a permanent error). An operator [`replay`] puts a failed or
//! dead job back to `queued` with its attempt count reset to 0 (so it gets `max_attempts` fresh attempts);
//! the execution log keeps every earlier attempt, and `replays` / `replay_generation` tell them apart.
//!
//! # Claim and lease
//! [`claim`] is one statement: it picks ready jobs with `for update skip locked` (two workers never get one
//! job), marks them `running` with `locked_by` and `lease_until`, increments `attempts` and opens their
//! attempt rows. A worker that dies leaves its job `running`; once the lease expires [`reclaim_expired`]
//! closes that attempt as `lease_expired` and makes the job ready again (or dead if it has no attempts
//! left). [`complete`] and [`fail`] only act while the job is still `running` under the same worker and
//! attempt number (the fence): a worker whose lease expired and whose job was claimed again cannot
//! overwrite the newer attempt's outcome.
//!
//! Every function here is a single statement (or runs in the caller's transaction), so a cancelled call
//! cannot leave a connection inside an open transaction.

use std::collections::hash_map::{Entry, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, PgPool};
use store::backoff::Backoff;

use crate::error::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Failed; a retry is scheduled at `run_at`.
    Failed,
    /// Gave up; waits for an operator replay.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The handler that runs it, e.g. `partner.reserve`.
    pub kind: String,
    /// Enqueueing again with the same key returns the existing job.
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    /// The worker pool that claims it.
    pub queue: String,
    /// Attempts before the job is dead.
    pub max_attempts: i32,
    /// Not before this time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
}

impl JobSpec {
    /// A job on the `default` queue with 10 attempts, to run now.
    pub fn new(
        kind: impl Into<String>,
        dedupe_key: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            kind: kind.into(),
            dedupe_key: dedupe_key.into(),
            payload,
            queue: "default".to_owned(),
            max_attempts: 10,
            run_at: None,
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.kind.is_empty() || self.dedupe_key.is_empty() || self.queue.is_empty() {
            return Err(Error::Invalid(
                "a job needs a kind, a dedupe key and a queue".to_owned(),
            ));
        }
        if self.max_attempts < 1 {
            return Err(Error::Invalid("max_attempts must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    /// One of [`JobState`]'s names.
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub replays: i32,
    pub dedupe_hits: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// The parsed state (`None` only if the row holds an unknown name).
    pub fn job_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }
}

/// One entry of the execution log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct JobAttempt {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i32,
    pub replay_generation: i32,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, succeeded, failed, dead or lease_expired.
    pub outcome: String,
    pub error: Option<String>,
}

/// A job with its execution log, oldest attempt first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: Job,
    pub attempts: Vec<JobAttempt>,
}

/// A job claimed by a worker: the fence for [`complete`] and [`fail`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub job: Job,
    pub worker_id: String,
}

/// Which jobs [`list`] returns (all fields optional), newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// Jobs with an id below this one (keyset paging).
    pub before_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

const JOB_COLUMNS: &str =
    "id, kind, queue, dedupe_key, payload, state, attempts, max_attempts, run_at, \
     locked_by, lease_until, last_error, replays, dedupe_hits, created_at, updated_at, finished_at";

/// The outcome of [`enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when a job with this dedupe key already existed (it is returned unchanged).
    pub inserted: bool,
}

/// Enqueues `spec` on `executor` (usually the caller's transaction, so the job commits with the caller's
/// writes or not at all). Idempotent by dedupe key: a second call returns the existing job's id with
/// `inserted = false` and counts the hit in `dedupe_hits`.
pub async fn enqueue<'e, E: PgExecutor<'e>>(executor: E, spec: &JobSpec) -> Result<Enqueued> {
    let mut enqueued = enqueue_all(executor, std::slice::from_ref(spec)).await?;
    enqueued
        .pop()
        .ok_or(Error::Database(sqlx::Error::RowNotFound))
}

/// Enqueues every job of `specs` in one statement, answering in their order; like [`enqueue`] one by
/// one: the first spec of a dedupe key inserts its job (unless the key exists), every later one (in
/// `specs` or already stored) is a hit on it.
pub async fn enqueue_all<'e, E: PgExecutor<'e>>(
    executor: E,
    specs: &[JobSpec],
) -> Result<Vec<Enqueued>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    // One row per dedupe key (an upsert may not touch a row twice), carrying its repeats in the batch.
    // Only the first spec of a key can be the one that inserts it (`first_of_key`, in `specs` order).
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
    let mut rows: Vec<(&JobSpec, i32)> = Vec::with_capacity(specs.len());
    let mut first_of_key: Vec<bool> = Vec::with_capacity(specs.len());
    for spec in specs {
        spec.validate()?;
        let is_first = match first.entry(spec.dedupe_key.as_str()) {
            Entry::Occupied(row) => {
                rows[*row.get()].1 += 1;
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(rows.len());
                rows.push((spec, 0));
                true
            }
        };
        first_of_key.push(is_first);
    }
    let payloads = rows
        .iter()
        .map(|(spec, _)| serde_json::to_string(&spec.payload))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("a job payload does not serialize: {e}")))?;
    let column = |f: fn(&JobSpec) -> &str| rows.iter().map(|(s, _)| f(s)).collect::<Vec<_>>();
    let answers: Vec<(String, i64, bool)> = sqlx::query_as(
        "insert into jobs (kind, queue, dedupe_key, payload, max_attempts, run_at, dedupe_hits)
         select kind, queue, dedupe_key, payload::jsonb, max_attempts, coalesce(run_at, now()), repeats
         from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::timestamptz[],
                     $7::int4[])
              as t(kind, queue, dedupe_key, payload, max_attempts, run_at, repeats)
         on conflict (dedupe_key) do update
             set dedupe_hits = jobs.dedupe_hits + excluded.dedupe_hits + 1
         returning dedupe_key, id, (xmax = 0) as inserted",
    )
    .bind(column(|s| &s.kind))
    .bind(column(|s| &s.queue))
    .bind(column(|s| &s.dedupe_key))
    .bind(payloads)
    .bind(rows.iter().map(|(s, _)| s.max_attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|(s, _)| s.run_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, repeats)| *repeats).collect::<Vec<_>>())
    .fetch_all(executor)
    .await?;
    let by_key: HashMap<&str, (i64, bool)> = answers
        .iter()
        .map(|(key, id, inserted)| (key.as_str(), (*id, *inserted)))
        .collect();
    let mut enqueued = Vec::with_capacity(specs.len());
    for (spec, first) in specs.iter().zip(first_of_key) {
        let &(id, inserted) = by_key
            .get(spec.dedupe_key.as_str())
            .ok_or(Error::Database(sqlx::Error::RowNotFound))?;
        let inserted = inserted && first;
        if inserted {
            metrics::counter!("trailbook_jobs_enqueued_total", "kind" => spec.kind.clone())
                .increment(1);
        }
        enqueued.push(Enqueued { id, inserted });
    }
    Ok(enqueued)
}

/// Claims up to `limit` ready jobs of `queue` whose kind is in `kinds` (empty: any kind) for `worker_id`,
/// under a lease of `lease`. Two concurrent claims never return the same job.
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    kinds: &[String],
    worker_id: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let sql = format!(
        "with next as (
             select id from jobs
             where queue = $1 and state in ('queued', 'failed') and run_at <= now()
               and (cardinality($2::text[]) = 0 or kind = any($2))
             order by run_at, id
             limit $5
             for update skip locked
         ), claimed as (
             update jobs j
             set state = 'running', attempts = j.attempts + 1, locked_by = $3,
                 lease_until = now() + $4 * interval '1 millisecond', updated_at = now()
             from next where j.id = next.id
             returning j.*
         ), logged as (
             insert into job_attempts (job_id, attempt, replay_generation, worker_id)
             select id, attempts, replays, locked_by from claimed
         )
         select {JOB_COLUMNS} from claimed order by run_at, id"
    );
    let jobs: Vec<Job> = sqlx::query_as(&sql)
        .bind(queue)
        .bind(kinds)
        .bind(worker_id)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(jobs
        .into_iter()
        .map(|job| Claimed {
            job,
            worker_id: worker_id.to_owned(),
        })
        .collect())
}

/// Marks a claimed job succeeded. Returns false when the claim is stale (its lease expired and the job was
/// reclaimed): nothing is changed then.
pub async fn complete(pool: &PgPool, claimed: &Claimed) -> Result<bool> {
    let done: Option<String> = sqlx::query_scalar(
        "with done as (
             update jobs set state = 'succeeded', locked_by = null, lease_until = null,
                 updated_at = now(), finished_at = now(), last_error = null
             where id = $1 and state = 'running' and locked_by = $2 and attempts = $3
             returning id, kind
         ), logged as (
             update job_attempts a set outcome = 'succeeded', finished_at = now()
             from done where a.job_id = done.id and a.attempt = $3 and a.worker_id = $2
               and a.outcome = 'running'
         )
         select kind from done",
    )
    .bind(claimed.job.id)
    .bind(&claimed.worker_id)
    .bind(claimed.job.attempts)
    .fetch_optional(pool)
    .await?;
    if let Some(kind) = &done {
        metrics::counter!("trailbook_jobs_total", "kind" => kind.clone(), "outcome" => "succeeded")
            .increment(1);
    }
    Ok(done.is_some())
}

/// What [`fail`] did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// A retry is scheduled at this time.
    RetryAt(DateTime<Utc>),
    /// No attempts left (or a permanent error): the job is dead.
    Dead,
    /// The claim was stale; nothing changed.
    Stale,
}

/// Records a failed attempt of a claimed job: a retry after `retry_in` (usually [`Backoff::delay`]) while
/// attempts remain and the error is not `permanent`, otherwise dead.
pub async fn fail(
    pool: &PgPool,
    claimed: &Claimed,
    error: &str,
    retry_in: Duration,
    permanent: bool,
) -> Result<FailOutcome> {
    let retry_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
    let error = truncate(error, 4000);
    let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "with done as (
             update jobs set
                 state = case when $5 or attempts >= max_attempts then 'dead' else 'failed' end,
                 run_at = case when $5 or attempts >= max_attempts then run_at
                               else now() + $4 * interval '1 millisecond' end,
                 finished_at = case when $5 or attempts >= max_attempts then now() end,
                 locked_by = null, lease_until = null, last_error = $6, updated_at = now()
             where id = $1 and state = 'running' and locked_by = $2 and attempts = $3
             returning id, kind, state, run_at
         ), logged as (
             update job_attempts a set outcome = done.state, finished_at = now(), error = $6
             from done where a.job_id = done.id and a.attempt = $3 and a.worker_id = $2
               and a.outcome = 'running'
         )
         select kind, state, run_at from done",
    )
    .bind(claimed.job.id)
    .bind(&claimed.worker_id)
    .bind(claimed.job.attempts)
    .bind(retry_ms)
    .bind(permanent)
    .bind(&error)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => FailOutcome::Stale,
        Some((kind, state, run_at)) => {
            if state == "dead" {
                tracing::error!(job_id = claimed.job.id, kind = %kind, error = %error, "job dead-lettered");
                metrics::counter!("trailbook_jobs_total", "kind" => kind.clone(), "outcome" => "dead")
                    .increment(1);
                metrics::counter!("trailbook_job_dead_letters_total", "kind" => kind).increment(1);
                FailOutcome::Dead
            } else {
                metrics::counter!("trailbook_jobs_total", "kind" => kind, "outcome" => "failed")
                    .increment(1);
                FailOutcome::RetryAt(run_at)
            }
        }
    })
}

/// Makes jobs whose worker vanished (lease expired while `running`) ready again, or dead when they have
/// no attempts left, closing their open attempt as `lease_expired`. Returns how many were reclaimed.
pub async fn reclaim_expired(pool: &PgPool, backoff: &Backoff) -> Result<u64> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "with expired as (
             select id from jobs where state = 'running' and lease_until < now()
             for update skip locked
         ), done as (
             update jobs j set
                 state = case when j.attempts >= j.max_attempts then 'dead' else 'failed' end,
                 run_at = now() + $1 * interval '1 millisecond',
                 finished_at = case when j.attempts >= j.max_attempts then now() end,
                 last_error = 'lease expired (worker stopped or timed out)',
                 locked_by = null, lease_until = null, updated_at = now()
             from expired where j.id = expired.id
             returning j.id, j.kind, j.state, j.attempts
         ), logged as (
             update job_attempts a set outcome = 'lease_expired', finished_at = now(),
                 error = 'lease expired'
             from done where a.job_id = done.id and a.attempt = done.attempts and a.outcome = 'running'
         )
         select id, kind, state from done",
    )
    .bind(i64::try_from(backoff.delay(1).as_millis()).unwrap_or(0))
    .fetch_all(pool)
    .await?;
    for (id, kind, state) in &rows {
        tracing::warn!(job_id = id, kind = %kind, state = %state, "reclaimed a job whose lease expired");
        metrics::counter!("trailbook_jobs_total", "kind" => kind.clone(), "outcome" => "lease_expired")
            .increment(1);
        if state == "dead" {
            metrics::counter!("trailbook_job_dead_letters_total", "kind" => kind.clone())
                .increment(1);
        }
    }
    Ok(rows.len() as u64)
}

/// Operator replay: a failed or dead job goes back to `queued`, to run now with its attempts reset to 0
/// (the execution log keeps the earlier attempts; `replays` counts replays). Anything else is
/// [`Error::NotReplayable`]; an unknown id is [`Error::JobNotFound`].
pub async fn replay(pool: &PgPool, id: i64) -> Result<Job> {
    let sql = format!(
        "update jobs set state = 'queued', attempts = 0, run_at = now(), replays = replays + 1,
             finished_at = null, updated_at = now()
         where id = $1 and state in ('failed', 'dead')
         returning {JOB_COLUMNS}"
    );
    if let Some(job) = sqlx::query_as::<_, Job>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
    {
        tracing::info!(job_id = id, kind = %job.kind, "job replayed by an operator");
        metrics::counter!("trailbook_jobs_replayed_total", "kind" => job.kind.clone()).increment(1);
        return Ok(job);
    }
    let state: Option<String> = sqlx::query_scalar("select state from jobs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match state {
        None => Err(Error::JobNotFound(id)),
        Some(state) => Err(Error::NotReplayable { id, state }),
    }
}

/// Jobs matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &JobFilter) -> Result<Vec<Job>> {
    let sql = format!(
        "select {JOB_COLUMNS} from jobs
         where ($1::text is null or state = $1)
           and ($2::text is null or queue = $2)
           and ($3::text is null or kind = $3)
           and ($4::bigint is null or id < $4)
         order by id desc
         limit $5"
    );
    Ok(sqlx::query_as(&sql)
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.queue.as_deref())
        .bind(filter.kind.as_deref())
        .bind(filter.before_id)
        .bind(filter.limit.unwrap_or(100).clamp(1, 1000))
        .fetch_all(pool)
        .await?)
}

/// One job with its execution log, or `None`.
pub async fn job(pool: &PgPool, id: i64) -> Result<Option<JobDetail>> {
    let sql = format!("select {JOB_COLUMNS} from jobs where id = $1");
    let Some(job) = sqlx::query_as::<_, Job>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let attempts = attempts(pool, id).await?;
    Ok(Some(JobDetail { job, attempts }))
}

/// The execution log of one job, oldest first.
pub async fn attempts(pool: &PgPool, job_id: i64) -> Result<Vec<JobAttempt>> {
    Ok(sqlx::query_as(
        "select id, job_id, attempt, replay_generation, worker_id, started_at, finished_at, outcome, error
         from job_attempts where job_id = $1 order by id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?)
}

/// Dead jobs (the dead-letter queue), newest first.
pub async fn dead_letters(pool: &PgPool, limit: i64) -> Result<Vec<Job>> {
    list(
        pool,
        &JobFilter {
            state: Some(JobState::Dead),
            limit: Some(limit),
            ..JobFilter::default()
        },
    )
    .await
}

/// Job counts by queue and state (for the status board and the gauges).
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "select queue, state, count(*) from jobs group by queue, state order by 1, 2",
    )
    .fetch_all(pool)
    .await?)
}

/// Refreshes the gauges `trailbook_jobs{queue,state}` and `trailbook_job_dead_letters` (alert on > 0).
pub async fn publish_gauges(pool: &PgPool) -> Result<()> {
    let mut dead = 0i64;
    for (queue, state, n) in counts(pool).await? {
        if state == "dead" {
            dead += n;
        }
        metrics::gauge!("trailbook_jobs", "queue" => queue, "state" => state).set(n as f64);
    }
    metrics::gauge!("trailbook_job_dead_letters").set(dead as f64);
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Enqueues on a plain connection (for callers outside a transaction).
pub async fn enqueue_on(conn: &mut PgConnection, spec: &JobSpec) -> Result<Enqueued> {
    enqueue(&mut *conn, spec).await
}
