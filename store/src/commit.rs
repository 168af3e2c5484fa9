//! Group commit: the appends of concurrent commands share one transaction and one multi-row statement
//! per table (see `docs/adr/0010-group-commit.md`).
//!
//! A command reaches this module as a [`Prepared`] append: its events serialized, and the [`Writes`]
//! its hooks asked for beside them (a slot claim or release, an idempotency record). Two committer
//! tasks take what is queued; one that finds a single append commits it alone, so a lone client waits
//! for nobody, and one that finds many (because the other is busy committing) commits them together.
//! Either way, a batch is written in the cheapest form that is still exact:
//!
//! - **one autocommitted statement** when nothing is released: claims, events and records as plain
//!   inserts in data-modifying CTEs, each record's `position` filled in from the events' insert. Any
//!   taken slot, sequence or key refuses the whole statement (nothing is written) and the batch goes on
//!   to the transaction below, which sorts out who gets which outcome. This is the path of an
//!   uncontended create: one round trip.
//! - **a transaction of one statement per table** otherwise:
//!   1. claims, `INSERT … ON CONFLICT DO NOTHING` (rows sorted, so two batches never wait on each
//!      other in a cycle); a claim that wrote no row is refused (`slot_taken`), or is a stale read when
//!      the booking itself already holds a claim (a conflict: the command is re-run);
//!   2. events, `INSERT … ON CONFLICT DO NOTHING`; a command none of whose events went in lost the race
//!      for its stream (a conflict); one whose events went in only in part makes the batch roll back and
//!      run again without it;
//!   3. one `DELETE` for the releases and for the claims of commands that lost their stream race;
//!   4. idempotency records, `INSERT … ON CONFLICT DO UPDATE … WHERE expired`; a live key held by
//!      another request makes the batch run again without that command;
//!   5. `COMMIT`, then every command gets its own outcome.
//!
//! Nothing is answered before the commit, a command dropped from a batch never reaches the database, and
//! any other failure of a batch (a deadlock, a check constraint) runs its commands again one by one, so
//! each gets its own error and none is failed by another's. A crash mid-batch commits nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::claims;
use crate::conn::Guarded;
use crate::error::{Error, HookError};
use crate::event_store::Appended;
use crate::notify::CommitNotifier;
use crate::sql;

/// The rows a command writes beside its events, in their transaction. Hooks fill it in
/// ([`crate::CommitHook::writes`]); only the store's own write rules can claim or release a slot.
#[derive(Debug, Default)]
pub struct Writes {
    pub(crate) claim: Option<Claim>,
    pub(crate) release: bool,
    pub(crate) record: Option<KeyRecord>,
}

impl Writes {
    /// Records the answer of an idempotent create under its client and key, in the append transaction.
    /// A live record of the same key (another request holds it) refuses the command with
    /// `idempotency_key_in_use`; an expired one is replaced.
    pub fn record(&mut self, record: KeyRecord) {
        self.record = Some(record);
    }

    /// Whether anything is written beside the events.
    fn any(&self) -> bool {
        self.claim.is_some() || self.release || self.record.is_some()
    }
}

/// A booking's claim on `[starts_at, ends_at)` of one partner resource.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub partner: String,
    pub resource: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// Builds the stored answer of a create once its events have a place in the log.
pub type Answer = Box<dyn Fn(Appended) -> Result<Value, serde_json::Error> + Send + Sync>;

/// The answer of an idempotent create, stored under (`scope`, `key`) with the command's aggregate.
pub struct KeyRecord {
    /// The client the key belongs to.
    pub scope: String,
    pub key: String,
    /// Tells a repeat of the request from another request with the same key.
    pub request_hash: String,
    /// How long the answer is kept.
    pub ttl: chrono::Duration,
    /// The answer (status 202), built from where the events landed.
    pub response: Answer,
    /// The answer is a JSON object whose `position` field is the command's last global position: the
    /// store may then write it in the same statement as the events, filling that field in itself (one
    /// round trip instead of a transaction's five).
    pub position_in_answer: bool,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// One command's append, ready for a batch.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// The stream's version the command was decided on.
    pub from_version: u64,
    pub event_types: Vec<String>,
    pub event_versions: Vec<String>,
    /// Each event's payload and metadata, as JSON text (no `Value` tree is built: the database parses
    /// them into `jsonb` once).
    pub payloads: Vec<String>,
    pub metadata: Vec<String>,
    pub writes: Writes,
}

impl Prepared {
    fn appended(&self, position: i64) -> Appended {
        Appended {
            version: self.from_version + self.payloads.len() as u64,
            position,
        }
    }

    fn sequence(&self, i: usize) -> i64 {
        i64::try_from(self.from_version + 1 + i as u64).unwrap_or(i64::MAX)
    }
}

/// How one append ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed.
    Appended(Appended),
    /// Another writer appended to the stream first: nothing was written; run the command again.
    Conflict,
    /// A write beside the events refused the command: nothing was written.
    Refused(HookError),
    /// The store failed: nothing was written.
    Failed(Error),
}

/// Tuning of group commit.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Committer tasks (batches in flight at once). Batches form only while all of them are busy.
    pub committers: usize,
    /// Most appends in one batch.
    pub max_batch: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            committers: 2,
            max_batch: 64,
        }
    }
}

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<Outcome>,
}

/// The queue of appends and the committer tasks draining it.
#[derive(Debug)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.prepared.fmt(f)
    }
}

impl Committer {
    /// Spawns the committer tasks on the current runtime; they end when the last sender is dropped.
    pub fn start(pool: PgPool, notifier: Option<CommitNotifier>, tuning: GroupCommit) -> Self {
        let (queue, receiver) = mpsc::channel::<Job>(tuning.max_batch.max(1) * 16);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..tuning.committers.max(1) {
            let (pool, notifier, receiver) = (pool.clone(), notifier.clone(), receiver.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, tuning.max_batch.max(1)).await {
                    if commit(&pool, batch).await {
                        if let Some(notifier) = &notifier {
                            notifier.committed();
                        }
                    }
                }
            });
        }
        Self { queue }
    }

    /// Appends `prepared`, alone or in a batch, and waits for its commit.
    pub async fn append(&self, prepared: Prepared) -> Outcome {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Job { prepared, reply }).await.is_err() {
            return Outcome::Failed(Error::Stopped);
        }
        answer.await.unwrap_or(Outcome::Failed(Error::Stopped))
    }
}

/// Waits for one job, then takes whatever else is queued, up to `max`.
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Job>>, max: usize) -> Option<Vec<Job>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    metrics::histogram!("trailbook_commit_batch_size").record(batch.len() as f64);
    Some(batch)
}

/// Commits `jobs` and answers each; true when anything was committed.
async fn commit(pool: &PgPool, mut jobs: Vec<Job>) -> bool {
    loop {
        let prepared: Vec<&Prepared> = jobs.iter().map(|j| &j.prepared).collect();
        match run(pool, &prepared).await {
            Ok(outcomes) => {
                let any = outcomes.iter().any(|o| matches!(o, Outcome::Appended(_)));
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
                return any;
            }
            Err(Batch::Without(mut dropped)) => {
                // Answer the dropped commands (nothing of theirs was written) and run the rest again.
                dropped.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
                for (i, outcome) in dropped {
                    let _ = jobs.swap_remove(i).reply.send(outcome);
                }
                if jobs.is_empty() {
                    return false;
                }
            }
            Err(Batch::Failed(e)) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Outcome::Failed(e));
                }
                return false;
            }
            Err(Batch::Failed(e)) => {
                tracing::debug!(error = %e, size = jobs.len(), "batch failed; committing its appends one by one");
                let mut any = false;
                for job in jobs {
                    any |= Box::pin(commit(pool, vec![job])).await;
                }
                return any;
            }
        }
    }
}

/// Why a batch did not commit as it was.
enum Batch {
    /// These commands must leave the batch with these outcomes; the others are run again.
    Without(Vec<(usize, Outcome)>),
    /// The batch failed as a whole.
    Failed(Error),
}

impl From<sqlx::Error> for Batch {
    fn from(e: sqlx::Error) -> Self {
        Batch::Failed(Error::Database(e))
    }
}

/// Runs one batch; `Ok` holds an outcome per command, in order.
async fn run(pool: &PgPool, jobs: &[&Prepared]) -> Result<Vec<Outcome>, Batch> {
    let mut outcomes = one_per_stream(jobs);
    if jobs
        .iter()
        .all(|job| !job.writes.any() && job.payloads.len() == 1)
    {
        // Nothing beside the events and one event per command: each command's row goes in whole or
        // not at all, so one autocommitted statement that skips taken sequences is the whole batch.
        append(pool, jobs, &mut outcomes).await?;
        return Ok(finish(outcomes));
    }
    match in_one_statement(pool, jobs, &mut outcomes).await {
        Some(Ok(())) => return Ok(finish(outcomes)),
        // One command whose stream was taken: nothing of it was written.
        Some(Err(e)) if jobs.len() == 1 && is_stream_conflict(&e) => {
            return Ok(vec![Outcome::Conflict]);
        }
        Some(Err(e)) => {
            metrics::counter!("trailbook_commit_fallbacks_total").increment(1);
            tracing::debug!(error = %e, size = jobs.len(), "batch refused as one statement; committing it step by step");
        }
        None => {}
    }
    let mut conn = Guarded::acquire(pool).await?;
    let outcome = async {
        let mut tx = conn.begin().await?;
        let outcomes = write(&mut tx, jobs).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
    .await;
    conn.release();
    outcome
}

/// Commits the open commands of a batch in one autocommitted statement of plain inserts
/// ([`sql::COMMIT_IN_ONE_STATEMENT`]), which any taken slot, sequence or key refuses whole. `None` when
/// the batch cannot be written that way (a release, an answer whose position the store may not fill in);
/// `Some(Err)` when the statement was refused and nothing was written.
async fn in_one_statement(
    pool: &PgPool,
    jobs: &[&Prepared],
    outcomes: &mut [Option<Outcome>],
) -> Option<Result<(), sqlx::Error>> {
    // Rows in stream and slot order, as in the transaction, so two batches never wait in a cycle.
    let mut open: Vec<&Prepared> = (0..jobs.len())
        .filter(|&i| outcomes[i].is_none())
        .map(|i| jobs[i])
        .collect();
    open.sort_by(|a, b| {
        (a.aggregate_type, &a.aggregate_id).cmp(&(b.aggregate_type, &b.aggregate_id))
    });
    let mut claims = Vec::new();
    let mut records = KeyRows::default();
    for (k, job) in open.iter().enumerate() {
        if job.writes.release {
            return None;
        }
        if let Some(claim) = &job.writes.claim {
            claims.push((k, claim));
        }
        if let Some(record) = &job.writes.record {
            if !record.position_in_answer {
                return None;
            }
            // The position is filled in by the statement.
            let response = (record.response)(job.appended(0)).ok()?;
            records.push(job, record, response);
        }
    }
    claims.sort_by(|(_, a), (_, b)| by_slot(a, b));
    let query = EventRows::of(&open).insert(sql::COMMIT_IN_ONE_STATEMENT);
    let query = records.bind(ClaimRows::of(&open, &claims).bind(query));
    let rows = match query.fetch_all(pool).await {
        Ok(rows) => rows,
        Err(e) => return Some(Err(e)),
    };
    let mut last: HashMap<(&str, &str), i64> = HashMap::new();
    for (t, id, _, position) in &rows {
        let at = last.entry((t.as_str(), id.as_str())).or_default();
        *at = (*at).max(*position);
    }
    for (i, job) in jobs.iter().enumerate() {
        if outcomes[i].is_none() {
            // Plain inserts wrote every row or none; a command missing here would only be re-run.
            outcomes[i] = Some(
                match last.get(&(job.aggregate_type, job.aggregate_id.as_str())) {
                    Some(position) => Outcome::Appended(job.appended(*position)),
                    None => Outcome::Conflict,
                },
            );
        }
    }
    Some(Ok(()))
}

/// At most one command per stream in a batch: a second one was decided on the state the first
/// replaces, so it runs again after this batch (`Some(Conflict)`); the others are still open (`None`).
fn one_per_stream(jobs: &[&Prepared]) -> Vec<Option<Outcome>> {
    let mut streams = HashSet::new();
    jobs.iter()
        .map(|job| {
            (!streams.insert((job.aggregate_type, job.aggregate_id.as_str())))
                .then_some(Outcome::Conflict)
        })
        .collect()
}

/// The outcomes of a batch that commits (none is left open).
fn finish(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Conflict))
        .collect()
}

/// Inserts the events of the commands still open, skipping taken sequences, and settles each: appended,
/// or a lost race (returned). A command whose events went in only in part makes the batch run again
/// without it.
async fn append<'e, E: PgExecutor<'e>>(
    executor: E,
    jobs: &[&Prepared],
    outcomes: &mut [Option<Outcome>],
) -> Result<Vec<usize>, Batch> {
    let mut writers: Vec<usize> = (0..jobs.len()).filter(|&i| outcomes[i].is_none()).collect();
    if writers.is_empty() {
        return Ok(Vec::new());
    }
    // In stream order, so two batches never wait on each other's rows in a cycle.
    writers.sort_by(|&a, &b| {
        (jobs[a].aggregate_type, &jobs[a].aggregate_id)
            .cmp(&(jobs[b].aggregate_type, &jobs[b].aggregate_id))
    });
    let batch: Vec<&Prepared> = writers.iter().map(|&i| jobs[i]).collect();
    let rows = EventRows::of(&batch)
        .insert(sql::APPEND_EVENTS_UNLESS_TAKEN)
        .fetch_all(executor)
        .await?;
    let landed: HashMap<(&str, &str, i64), i64> = rows
        .iter()
        .map(|(t, id, sequence, position)| ((t.as_str(), id.as_str(), *sequence), *position))
        .collect();
    let mut lost_race = Vec::new();
    let mut partial = Vec::new();
    for i in writers {
        let job = jobs[i];
        let positions: Vec<i64> = (0..job.payloads.len())
            .filter_map(|k| {
                let key = (
                    job.aggregate_type,
                    job.aggregate_id.as_str(),
                    job.sequence(k),
                );
                landed.get(&key).copied()
            })
            .collect();
        outcomes[i] = Some(if positions.len() == job.payloads.len() {
            Outcome::Appended(job.appended(positions.into_iter().max().unwrap_or_default()))
        } else if positions.is_empty() {
            lost_race.push(i);
            Outcome::Conflict
        } else {
            // Some of its events went in, after another writer's: only a rollback takes them out.
            partial.push((i, Outcome::Conflict));
            Outcome::Conflict
        });
    }
    if partial.is_empty() {
        Ok(lost_race)
    } else {
        Err(Batch::Without(partial))
    }
}

fn is_stream_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some("23505") && d.constraint() == Some("events_pkey")
    })
}

/// The statements of a batch, in its transaction.
async fn write(tx: &mut PgConnection, jobs: &[&Prepared]) -> Result<Vec<Outcome>, Batch> {
    let mut outcomes = one_per_stream(jobs);

    // 1. Claims, in slot order.
    let mut claimers: Vec<(usize, &Claim)> = jobs
        .iter()
        .enumerate()
        .filter(|(i, _)| outcomes[*i].is_none())
        .filter_map(|(i, job)| job.writes.claim.as_ref().map(|c| (i, c)))
        .collect();
    claimers.sort_by(|(_, a), (_, b)| by_slot(a, b));
    let mut claimed = HashSet::new();
    let mut refused_by: Vec<(usize, String)> = Vec::new();
    if !claimers.is_empty() {
        let won: HashSet<String> = ClaimRows::of(jobs, &claimers)
            .query::<(String,)>(sql::CLAIM_SLOTS)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        let (got, lost): (Vec<_>, Vec<_>) = claimers
            .into_iter()
            .partition(|(i, _)| won.contains(&jobs[*i].aggregate_id));
        claimed = got.into_iter().map(|(i, _)| i).collect();
        if !lost.is_empty() {
            let holders: HashMap<String, String> = ClaimRows::of(jobs, &lost)
                .query::<(String, String)>(sql::CLAIM_HOLDERS)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            for (i, claim) in lost {
                let id = &jobs[i].aggregate_id;
                let holder = holders.get(id).cloned();
                outcomes[i] = Some(if holder.as_ref() == Some(id) {
                    // The booking already holds a claim: the command was decided on a stale state.
                    Outcome::Conflict
                } else {
                    if let Some(holder) = &holder {
                        refused_by.push((i, holder.clone()));
                    }
                    Outcome::Refused(claims::slot_taken(&claim.partner, &claim.resource, holder))
                });
            }
        }
    }

    // 2. Events.
    let lost_race = append(&mut *tx, jobs, &mut outcomes).await?;
    // The claims of commands that lost the race for their stream go; a claim refused because of one of
    // them was refused for nothing, so that command runs again.
    let released: HashSet<&str> = lost_race
        .iter()
        .filter(|i| claimed.contains(*i))
        .map(|&i| jobs[i].aggregate_id.as_str())
        .collect();
    for (i, holder) in &refused_by {
        if released.contains(holder.as_str()) {
            outcomes[*i] = Some(Outcome::Conflict);
        }
    }

    // 3. Releases, and those claims.
    let mut deleted: Vec<&str> = released.into_iter().collect();
    deleted.extend(
        jobs.iter()
            .zip(&outcomes)
            .filter(|(job, outcome)| {
                job.writes.release && matches!(outcome, Some(Outcome::Appended(_)))
            })
            .map(|(job, _)| job.aggregate_id.as_str()),
    );
    if !deleted.is_empty() {
        deleted.sort_unstable();
        sqlx::query(sql::RELEASE_SLOTS)
            .bind(deleted)
            .execute(&mut *tx)
            .await?;
    }

    // 4. Idempotency records.
    let mut records = KeyRows::default();
    let mut recorded = Vec::new();
    let mut unanswerable = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (Some(record), Some(Outcome::Appended(at))) = (&job.writes.record, &outcomes[i]) else {
            continue;
        };
        match (record.response)(*at) {
            Ok(response) => {
                records.push(job, record, response);
                recorded.push((i, record));
            }
            Err(source) => {
                let what = "stored answer";
                unanswerable.push((i, Outcome::Failed(Error::Serialize { what, source })));
            }
        }
    }
    if !unanswerable.is_empty() {
        return Err(Batch::Without(unanswerable));
    }
    if !recorded.is_empty() {
        let written: HashSet<(String, String)> = records
            .insert()
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let in_use: Vec<(usize, Outcome)> = recorded
            .into_iter()
            .filter(|(_, r)| !written.contains(&(r.scope.clone(), r.key.clone())))
            .map(|(i, _)| (i, Outcome::Refused(key_in_use())))
            .collect();
        if !in_use.is_empty() {
            return Err(Batch::Without(in_use));
        }
    }

    Ok(finish(outcomes))
}

/// The refusal of a create whose key is held by a live record of another request.
fn key_in_use() -> HookError {
    HookError::Refused {
        code: "idempotency_key_in_use",
        message: "this Idempotency-Key is being used by another request; retry to get its answer"
            .into(),
        related_id: None,
    }
}

/// The order claims are written in.
fn by_slot(a: &Claim, b: &Claim) -> std::cmp::Ordering {
    (&a.partner, &a.resource, a.starts_at).cmp(&(&b.partner, &b.resource, b.starts_at))
}

/// The claim columns of some jobs, as arrays.
struct ClaimRows {
    bookings: Vec<String>,
    partners: Vec<String>,
    resources: Vec<String>,
    starts: Vec<DateTime<Utc>>,
    ends: Vec<DateTime<Utc>>,
}

impl ClaimRows {
    fn of(jobs: &[&Prepared], claims: &[(usize, &Claim)]) -> Self {
        Self {
            bookings: claims
                .iter()
                .map(|(i, _)| jobs[*i].aggregate_id.clone())
                .collect(),
            partners: claims.iter().map(|(_, c)| c.partner.clone()).collect(),
            resources: claims.iter().map(|(_, c)| c.resource.clone()).collect(),
            starts: claims.iter().map(|(_, c)| c.starts_at).collect(),
            ends: claims.iter().map(|(_, c)| c.ends_at).collect(),
        }
    }

    fn query<O>(self, statement: &str) -> QueryAs<'_, Postgres, O, PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        self.bind(sqlx::query_as(statement))
    }

    /// Binds the five claim arrays as the next parameters of `query`.
    fn bind<'q, O>(
        self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(self.bookings)
            .bind(self.partners)
            .bind(self.resources)
            .bind(self.starts)
            .bind(self.ends)
    }
}

/// The event columns of some jobs, as arrays borrowed from them.
struct EventRows<'a> {
    types: Vec<&'static str>,
    ids: Vec<&'a str>,
    sequences: Vec<i64>,
    event_types: Vec<&'a str>,
    event_versions: Vec<&'a str>,
    payloads: Vec<&'a str>,
    metadata: Vec<&'a str>,
}

impl<'a> EventRows<'a> {
    fn of(jobs: &[&'a Prepared]) -> Self {
        let n = jobs.iter().map(|j| j.payloads.len()).sum();
        let mut rows = Self {
            types: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            sequences: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            event_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for job in jobs {
            for k in 0..job.payloads.len() {
                rows.types.push(job.aggregate_type);
                rows.ids.push(&job.aggregate_id);
                rows.sequences.push(job.sequence(k));
            }
            rows.event_types
                .extend(job.event_types.iter().map(String::as_str));
            rows.event_versions
                .extend(job.event_versions.iter().map(String::as_str));
            rows.payloads
                .extend(job.payloads.iter().map(String::as_str));
            rows.metadata
                .extend(job.metadata.iter().map(String::as_str));
        }
        rows
    }

    fn insert<'q>(
        self,
        statement: &'q str,
    ) -> QueryAs<'q, Postgres, (String, String, i64, i64), PgArguments>
    where
        'a: 'q,
    {
        sqlx::query_as(statement)
            .bind(self.types)
            .bind(self.ids)
            .bind(self.sequences)
            .bind(self.event_types)
            .bind(self.event_versions)
            .bind(self.payloads)
            .bind(self.metadata)
    }
}

/// The idempotency record columns of some jobs, as arrays.
#[derive(Default)]
struct KeyRows {
    scopes: Vec<String>,
    keys: Vec<String>,
    hashes: Vec<String>,
    types: Vec<&'static str>,
    ids: Vec<String>,
    responses: Vec<Value>,
    ttls: Vec<f64>,
}

impl KeyRows {
    fn push(&mut self, job: &Prepared, record: &KeyRecord, response: Value) {
        self.scopes.push(record.scope.clone());
        self.keys.push(record.key.clone());
        self.hashes.push(record.request_hash.clone());
        self.types.push(job.aggregate_type);
        self.ids.push(job.aggregate_id.clone());
        self.responses.push(response);
        self.ttls
            .push(record.ttl.num_milliseconds() as f64 / 1000.0);
    }

    fn insert(self) -> QueryAs<'static, Postgres, (String, String), PgArguments> {
        self.bind(sqlx::query_as(sql::RECORD_IDEMPOTENCY_KEYS))
    }

    /// Binds the seven record arrays as the next parameters of `query`.
    fn bind<'q, O>(
        self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(self.scopes)
            .bind(self.keys)
            .bind(self.hashes)
            .bind(self.types)
            .bind(self.ids)
            .bind(self.responses)
            .bind(self.ttls)
    }
}
