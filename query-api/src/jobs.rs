//! Jobs for operators: `jobs` (keyset pages by id), `job(id)` with its execution log, `deadLetters`.

use async_graphql::{Context, Enum, Json, Object, SimpleObject, ID};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use domain::values::Role;

use crate::auth;
use crate::error::{QueryError, Result};
use crate::types::PageInfo;
use crate::QueryState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "workers::jobs::JobState")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Failed; a retry is scheduled at `runAt`.
    Failed,
    /// Gave up after its last attempt; an operator may replay it.
    Dead,
}

/// A durable side-effect job.
pub struct Job(pub workers::jobs::Job);

#[Object]
impl Job {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The handler that runs it, e.g. `partner.reserve`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn queue(&self) -> &str {
        &self.0.queue
    }
    async fn dedupe_key(&self) -> &str {
        &self.0.dedupe_key
    }
    async fn state(&self) -> Option<JobState> {
        self.0.job_state().map(Into::into)
    }
    async fn payload(&self) -> Json<&serde_json::Value> {
        Json(&self.0.payload)
    }
    /// Attempts since it was enqueued or last replayed.
    async fn attempt_count(&self) -> i32 {
        self.0.attempts
    }
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// Not claimed before this time (the next retry of a failed job).
    async fn run_at(&self) -> DateTime<Utc> {
        self.0.run_at
    }
    async fn locked_by(&self) -> Option<&str> {
        self.0.locked_by.as_deref()
    }
    async fn lease_until(&self) -> Option<DateTime<Utc>> {
        self.0.lease_until
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// How often an operator replayed it.
    async fn replays(&self) -> i32 {
        self.0.replays
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// The execution log: every attempt, oldest first.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<JobAttempt>> {
        let state = ctx.data::<QueryState>()?;
        Ok(workers::jobs::attempts(state.store.pool(), self.0.id)
            .await
            .map_err(job_error)?
            .into_iter()
            .map(JobAttempt)
            .collect())
    }
}

/// One attempt of a job: an entry of the execution log that `workers` keeps.
pub struct JobAttempt(pub workers::jobs::JobAttempt);

/// One attempt of a job.
#[Object]
impl JobAttempt {
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    /// Attempts of one operator replay share it (0 before any replay).
    async fn replay_generation(&self) -> i32 {
        self.0.replay_generation
    }
    async fn worker_id(&self) -> &str {
        &self.0.worker_id
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// running, succeeded, failed, dead or lease_expired.
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
}

/// Jobs in one queue and state.
#[derive(Debug, Clone, SimpleObject)]
pub struct JobCount {
    pub queue: String,
    pub state: String,
    pub count: i64,
}

pub struct JobEdge(Job);

#[Object]
impl JobEdge {
    async fn cursor(&self) -> String {
        encode(self.0 .0.id)
    }
    async fn node(&self) -> &Job {
        &self.0
    }
}

pub struct JobConnection {
    edges: Vec<JobEdge>,
    has_next_page: bool,
    has_previous_page: bool,
}

#[Object]
impl JobConnection {
    async fn edges(&self) -> &[JobEdge] {
        &self.edges
    }
    async fn nodes(&self) -> Vec<&Job> {
        self.edges.iter().map(|e| &e.0).collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
            start_cursor: self.edges.first().map(|e| encode(e.0 .0.id)),
            end_cursor: self.edges.last().map(|e| encode(e.0 .0.id)),
        }
    }
}

fn encode(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("job|{id}"))
}

fn decode(cursor: &str) -> Result<i64, QueryError> {
    let bad = || QueryError::bad_input("after", "`after` is not a cursor returned by `jobs`");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    String::from_utf8(bytes)
        .ok()
        .and_then(|t| t.strip_prefix("job|")?.parse().ok())
        .ok_or_else(bad)
}

pub(crate) fn job_error(e: workers::Error) -> QueryError {
    match e {
        workers::Error::Database(e) => e.into(),
        workers::Error::Store(e) => e.into(),
        other => QueryError::internal(&other),
    }
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// Jobs, newest first (operator, support).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        state: Option<JobState>,
        kind: Option<String>,
        queue: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<JobConnection> {
        auth::require(ctx, &[Role::Operator, Role::Support], "read jobs")?;
        let ctx_state = ctx.data::<QueryState>()?;
        let first = crate::query::page_size(ctx_state, first)?;
        let before_id = after.as_deref().map(decode).transpose()?;
        let mut jobs = workers::jobs::list(
            ctx_state.store.pool(),
            &workers::jobs::JobFilter {
                state: state.map(Into::into),
                queue,
                kind,
                before_id,
                limit: Some(first + 1),
            },
        )
        .await
        .map_err(job_error)?;
        let has_next_page = jobs.len() as i64 > first;
        jobs.truncate(first as usize);
        Ok(JobConnection {
            edges: jobs.into_iter().map(|j| JobEdge(Job(j))).collect(),
            has_next_page,
            has_previous_page: before_id.is_some(),
        })
    }

    /// One job with its execution log (operator, support).
    async fn job(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Job>> {
        auth::require(ctx, &[Role::Operator, Role::Support], "read jobs")?;
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let state = ctx.data::<QueryState>()?;
        Ok(workers::jobs::job(state.store.pool(), id)
            .await
            .map_err(job_error)?
            .map(|detail| Job(detail.job)))
    }

    /// Dead jobs waiting for an operator, newest first (operator, support).
    async fn dead_letters(&self, ctx: &Context<'_>, first: Option<i32>) -> Result<Vec<Job>> {
        auth::require(ctx, &[Role::Operator, Role::Support], "read jobs")?;
        let state = ctx.data::<QueryState>()?;
        let first = crate::query::page_size(state, first)?;
        Ok(workers::jobs::dead_letters(state.store.pool(), first)
            .await
            .map_err(job_error)?
            .into_iter()
            .map(Job)
            .collect())
    }
}
