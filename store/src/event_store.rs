//! The command path, loading, snapshots and time travel.
//!
//! cqrs-es 0.5 supplies the `Aggregate` contract (`handle` through an `EventSink`, `apply`) and upcasters;
//! this module supplies everything around them that its `PersistedEventStore` gets wrong or lacks (see
//! `docs/adr/0001-own-event-store.md`): snapshots that are a pure cache, a commit that returns version and
//! global position, a one-statement append, rows beside the events in the same commit (written by the
//! group committer of `commit`, many commands at once), bounded conflict retries, and loading at a past
//! version or time.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::AggregateSchema;
use sqlx::PgPool;

use crate::backoff::Backoff;
use crate::commit::{Committer, GroupCommit, Outcome, Prepared, Writes};
use crate::error::{CommandError, Error, HookError, Result};
use crate::log::{decode_event, RecordedEvent, RECORDED_COLUMNS};
use crate::metadata::{CommandContext, EventMetadata};
use crate::notify::CommitNotifier;

/// Tuning of the event store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Write a snapshot whenever a commit crosses a multiple of this many events (0: never).
    pub snapshot_every: u64,
    /// How often a command is re-run after losing a race for its aggregate before giving up.
    pub max_conflict_retries: u32,
    /// How concurrent appends share transactions (see [`crate::commit`]).
    pub group_commit: GroupCommit,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 50,
            max_conflict_retries: 5,
            group_commit: GroupCommit::default(),
        }
    }
}

/// An aggregate folded from its snapshot and events.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// Sequence of the last event applied (0: the aggregate does not exist at this point).
    pub version: u64,
    /// Global position of the last event applied, when known.
    pub position: Option<i64>,
    /// Sequence of the snapshot the fold started from, if any.
    pub snapshot: Option<u64>,
    /// How many events were applied on top of the snapshot.
    pub applied: usize,
    /// The correlation id of the stream's first event: the thread every later event joins.
    pub correlation_id: Option<String>,
}

impl<A: Default> Loaded<A> {
    fn empty() -> Self {
        Self {
            state: A::default(),
            version: 0,
            position: None,
            snapshot: None,
            applied: 0,
            correlation_id: None,
        }
    }
}

/// The outcome of a command that committed (or was a no-op).
#[derive(Debug, Clone)]
pub struct Committed<A: Aggregate> {
    /// State after the command.
    pub state: A,
    /// Version after the command (unchanged for a no-op).
    pub version: u64,
    /// Global position of the last event written, or of the aggregate's last event for a no-op.
    pub position: Option<i64>,
    /// The events written (empty for a no-op).
    pub events: Vec<A::Event>,
}

/// Per-command options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecuteOptions {
    /// Refuse with [`CommandError::Stale`] unless the aggregate is at this version (`If-Match`).
    pub expected_version: Option<u64>,
    /// The caller believes the stream is new (e.g. an id derived from a fresh idempotency key): skip the
    /// load on the first attempt. A wrong guess costs one conflict and a normal retry, never correctness.
    pub new_stream: bool,
}

/// One command on its way to the store, from [`EventStore::execute`]: await it to run it. The
/// aggregate's [`WriteRules`] always run; a caller adds only its own hook and visibility rule.
#[must_use = "a command does nothing until it is awaited"]
pub struct Execute<'a, A: WriteRules, H, G> {
    command: Pending<'a, A>,
    hook: &'a H,
    may_access: G,
}

/// What [`EventStore::execute`] was given, whatever the caller adds.
struct Pending<'a, A: WriteRules> {
    store: &'a EventStore,
    id: &'a str,
    command: A::Command,
    services: &'a A::Services,
    context: &'a CommandContext,
    options: ExecuteOptions,
}

impl<'a, A: WriteRules, H, G> Execute<'a, A, H, G> {
    /// Runs `hook`'s statements in the append transaction too, after the aggregate's write rules.
    pub fn with_hook<H2: CommitHook<A>>(self, hook: &'a H2) -> Execute<'a, A, H2, G> {
        Execute {
            command: self.command,
            hook,
            may_access: self.may_access,
        }
    }

    /// Refuses with [`CommandError::NotVisible`] when `may_access` says the caller may not see the
    /// loaded aggregate (checked on every attempt, before `handle`; a new stream is always visible).
    pub fn visible_if<G2>(self, may_access: G2) -> Execute<'a, A, H, G2>
    where
        G2: Fn(&A) -> bool + Send + Sync,
    {
        Execute {
            command: self.command,
            hook: self.hook,
            may_access,
        }
    }
}

impl<'a, A, H, G> std::future::IntoFuture for Execute<'a, A, H, G>
where
    A: WriteRules,
    H: CommitHook<A>,
    G: Fn(&A) -> bool + Send + Sync + 'a,
{
    type Output = std::result::Result<Committed<A>, CommandError<A::Error>>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let store = self.command.store;
        Box::pin(store.run_command(self))
    }
}

/// Where the events of a command landed; passed to a [`CommitHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Version of the aggregate after the command.
    pub version: u64,
    /// Global position of the command's last event.
    pub position: i64,
}

/// What a command changed, as a [`CommitHook`] sees it.
#[derive(Debug)]
pub struct Change<'a, A: Aggregate> {
    /// The aggregate's id.
    pub aggregate_id: &'a str,
    /// The state before the command (the default state for a new stream).
    pub before: &'a A,
    /// The state after the command.
    pub after: &'a A,
    /// The events the command produced (never empty: a no-op commits nothing and runs no hook).
    pub events: &'a [A::Event],
}

/// Rows that must commit or fail together with a command's events, such as a claim on a resource's
/// time slot or the stored answer of an idempotent create. A hook does not run statements itself: it says
/// what to write ([`Writes`]), and the store writes it in the append transaction, for many commands at
/// once when they commit together (see [`crate::commit`]).
pub trait CommitHook<A: Aggregate>: Send + Sync {
    /// Adds this hook's rows for `change` to `writes`; an `Err` refuses the command (nothing is written).
    fn writes(&self, change: &Change<'_, A>, writes: &mut Writes) -> Result<(), HookError>;
}

/// The write rules of an aggregate: rows that every append of it writes in its commit, whoever the
/// writer (REST, callbacks, workers, CLI, tests). Every command path of [`EventStore`] requires this
/// trait and asks [`WriteRules::write_rules`] itself, so no caller can forget or skip them; a caller's own
/// hook (e.g. an idempotency record) adds its rows after them, to the same commit.
///
/// The store registers them for the domain's aggregates (Booking: the slot claim of
/// [`crate::claims::BookingClaims`]; Visit: none). Only the store or the aggregate's own crate can
/// implement it (Rust's orphan rule), so a writer elsewhere cannot register a weaker set.
///
/// The bounds are what a command needs to run on any task (a retried command is handled again from a
/// clone; the future of a command is `Send`): every aggregate of the domain meets them.
pub trait WriteRules:
    AggregateSchema<Command: Clone + Send + 'static, Services: Sync> + 'static
{
    /// The hook carrying the rules.
    type Rules: CommitHook<Self>;
    /// The rules every append of this aggregate runs.
    fn write_rules() -> Self::Rules;
}

impl WriteRules for domain::Visit {
    type Rules = NoHook;
    fn write_rules() -> NoHook {
        NoHook
    }
}

impl WriteRules for domain::Booking {
    type Rules = crate::claims::BookingClaims;
    fn write_rules() -> Self::Rules {
        crate::claims::BookingClaims::RULE
    }
}

/// A hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<A: Aggregate> CommitHook<A> for NoHook {
    fn writes(&self, _change: &Change<'_, A>, _writes: &mut Writes) -> Result<(), HookError> {
        Ok(())
    }
}

impl<A: Aggregate, H: CommitHook<A>> CommitHook<A> for &H {
    fn writes(&self, change: &Change<'_, A>, writes: &mut Writes) -> Result<(), HookError> {
        (**self).writes(change, writes)
    }
}

/// A hook some commands have and others not (an `Idempotency-Key` a client may send).
impl<A: Aggregate, H: CommitHook<A>> CommitHook<A> for Option<H> {
    fn writes(&self, change: &Change<'_, A>, writes: &mut Writes) -> Result<(), HookError> {
        match self {
            Some(hook) => hook.writes(change, writes),
            None => Ok(()),
        }
    }
}

/// Two hooks on one command: the first, then the second.
impl<A, H1, H2> CommitHook<A> for (H1, H2)
where
    A: Aggregate,
    H1: CommitHook<A>,
    H2: CommitHook<A>,
{
    fn writes(&self, change: &Change<'_, A>, writes: &mut Writes) -> Result<(), HookError> {
        self.0.writes(change, writes)?;
        self.1.writes(change, writes)
    }
}

/// Where a load stops.
#[derive(Debug, Clone, Copy)]
enum Upto {
    Head,
    Version(u64),
}

impl Upto {
    fn bound(self) -> i64 {
        match self {
            Upto::Head => i64::MAX,
            Upto::Version(v) => i64::try_from(v).unwrap_or(i64::MAX),
        }
    }
}

#[derive(sqlx::FromRow)]
struct FoldRow {
    /// 0 for the snapshot row, 1 for events, 2 for the stream's correlation id.
    kind: i32,
    sequence: i64,
    event_type: Option<String>,
    event_version: Option<String>,
    payload: serde_json::Value,
    global_position: Option<i64>,
}

/// Nearest usable snapshot at or below the bound, then the events after it, then the correlation id of
/// the stream's first event (kind 2), in one round trip.
const FOLD_SQL: &str = "
    with snap as (
        select sequence, state, global_position from snapshots
        where aggregate_type = $1 and aggregate_id = $2 and state_version = $3 and sequence <= $4
        order by sequence desc
        limit 1
    )
    select 0 as kind, sequence, null::text as event_type, null::text as event_version,
           state as payload, global_position
    from snap
    union all
    select 1, e.sequence, e.event_type, e.event_version, e.payload, e.global_position
    from events e
    where e.aggregate_type = $1 and e.aggregate_id = $2 and e.sequence <= $4
      and e.sequence > coalesce((select sequence from snap), 0)
    union all
    select 2, 1, null, null, coalesce(e.metadata -> 'correlation_id', 'null'::jsonb), null
    from events e
    where e.aggregate_type = $1 and e.aggregate_id = $2 and e.sequence = 1
    order by kind, sequence";

/// The event store: loads aggregates and runs commands against PostgreSQL.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    config: StoreConfig,
    notifier: Option<CommitNotifier>,
    /// Started on the first append, on the runtime of that append; shared by clones.
    committer: Arc<OnceLock<Committer>>,
}

impl EventStore {
    pub fn new(pool: PgPool, config: StoreConfig) -> Self {
        Self {
            pool,
            config,
            notifier: None,
            committer: Arc::default(),
        }
    }

    /// Wakes the log's readers after every commit, through `notifier` (see [`crate::notify`]).
    pub fn with_notifier(mut self, notifier: CommitNotifier) -> Self {
        self.notifier = Some(notifier);
        self.committer = Arc::default();
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The current state of an aggregate (version 0 and the default state when it does not exist).
    pub async fn load<A: AggregateSchema>(&self, id: &str) -> Result<Loaded<A>> {
        self.fold(id, Upto::Head).await
    }

    /// The state right after event `version` (or the head, if the stream is shorter).
    pub async fn load_at_version<A: AggregateSchema>(
        &self,
        id: &str,
        version: u64,
    ) -> Result<Loaded<A>> {
        self.fold(id, Upto::Version(version)).await
    }

    /// The state as it was at time `at`: every event recorded at or before `at`, none after.
    pub async fn load_as_of<A: AggregateSchema>(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Loaded<A>> {
        let last: Option<i64> = sqlx::query_scalar(
            "select max(sequence) from events
             where aggregate_type = $1 and aggregate_id = $2 and recorded_at <= $3",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        match last.and_then(|v| u64::try_from(v).ok()) {
            Some(version) => self.fold(id, Upto::Version(version)).await,
            None => Ok(Loaded::empty()),
        }
    }

    /// Every stored event of one aggregate, oldest first, with metadata and log coordinates.
    pub async fn history(&self, aggregate_type: &str, id: &str) -> Result<Vec<RecordedEvent>> {
        let sql = format!(
            "select {RECORDED_COLUMNS} from events
             where aggregate_type = $1 and aggregate_id = $2 order by sequence"
        );
        Ok(sqlx::query_as::<_, RecordedEvent>(&sql)
            .bind(aggregate_type)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn fold<A: AggregateSchema>(&self, id: &str, upto: Upto) -> Result<Loaded<A>> {
        match self.fold_once(id, upto, true).await? {
            Some(loaded) => Ok(loaded),
            // The snapshot did not deserialize: it is only a cache, so fold from the first event instead.
            None => Ok(self
                .fold_once(id, upto, false)
                .await?
                .unwrap_or_else(Loaded::empty)),
        }
    }

    /// Folds the aggregate; `None` when a snapshot was found but could not be used.
    async fn fold_once<A: AggregateSchema>(
        &self,
        id: &str,
        upto: Upto,
        use_snapshot: bool,
    ) -> Result<Option<Loaded<A>>> {
        let rows = sqlx::query_as::<_, FoldRow>(FOLD_SQL)
            .bind(A::TYPE)
            .bind(id)
            .bind(use_snapshot.then_some(A::STATE_VERSION))
            .bind(upto.bound())
            .fetch_all(&self.pool)
            .await?;
        let upcasters = A::upcasters();
        let mut loaded = Loaded::<A>::empty();
        for row in rows {
            if row.kind == 2 {
                loaded.correlation_id = row.payload.as_str().map(str::to_owned);
                continue;
            }
            if row.kind == 0 {
                match serde_json::from_value::<A>(row.payload) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = u64::try_from(row.sequence).unwrap_or_default();
                        loaded.position = row.global_position;
                        loaded.snapshot = Some(loaded.version);
                    }
                    Err(e) => {
                        tracing::warn!(
                            aggregate_type = A::TYPE,
                            aggregate_id = id,
                            sequence = row.sequence,
                            error = %e,
                            "ignoring a snapshot that does not deserialize; folding from events"
                        );
                        return Ok(None);
                    }
                }
                continue;
            }
            let event = decode_event::<A>(
                &upcasters,
                id,
                row.sequence,
                row.event_type.as_deref().unwrap_or_default(),
                row.event_version.as_deref().unwrap_or_default(),
                row.payload,
            )?;
            loaded.state.apply(event);
            loaded.version = u64::try_from(row.sequence).unwrap_or_default();
            loaded.position = row.global_position;
            loaded.applied += 1;
        }
        Ok(Some(loaded))
    }

    /// Runs `command` against aggregate `id` and appends the events it produces, with the aggregate's
    /// [`WriteRules`] in the same transaction: the one command path of the store, whoever the writer.
    ///
    /// Await the returned [`Execute`] as it is, or first add what a caller needs:
    /// [`Execute::with_hook`] (its own statements in the append transaction, after the write rules) and
    /// [`Execute::visible_if`] (refuse with [`CommandError::NotVisible`] when the caller may not see the
    /// loaded aggregate).
    ///
    /// On a concurrency conflict the whole command (load, handle, append) is run again, at most
    /// `max_conflict_retries` times with jittered backoff, then [`CommandError::Conflict`]. Every event
    /// of a stream carries the correlation id of the stream's first event, so one booking's saga
    /// (request, jobs, partner and provider answers, later commands) reads as one thread; a caller's
    /// differing correlation id is kept as `request_correlation_id`.
    pub fn execute<'a, A: WriteRules>(
        &'a self,
        id: &'a str,
        command: A::Command,
        services: &'a A::Services,
        context: &'a CommandContext,
        options: ExecuteOptions,
    ) -> Execute<'a, A, NoHook, fn(&A) -> bool> {
        Execute {
            command: Pending {
                store: self,
                id,
                command,
                services,
                context,
                options,
            },
            hook: &NoHook,
            may_access: |_: &A| true,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(aggregate_type = A::TYPE, aggregate_id = %run.command.id))]
    async fn run_command<A, H, G>(
        &self,
        run: Execute<'_, A, H, G>,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: WriteRules,
        A::Command: Clone,
        H: CommitHook<A>,
        G: Fn(&A) -> bool + Send + Sync,
    {
        let Execute {
            command:
                Pending {
                    id,
                    command,
                    services,
                    context,
                    options,
                    ..
                },
            hook,
            may_access,
        } = run;
        let hooks = (A::write_rules(), hook);
        let mut attempt = 0;
        loop {
            let loaded = if options.new_stream && attempt == 0 {
                Loaded::<A>::empty()
            } else {
                self.load::<A>(id).await?
            };
            if loaded.version > 0 && !may_access(&loaded.state) {
                return Err(CommandError::NotVisible);
            }
            // No aggregate yet: the command says so (404), whatever version the caller expected.
            if let Some(expected) = options.expected_version.filter(|_| loaded.version > 0) {
                if expected != loaded.version {
                    return Err(CommandError::Stale {
                        expected,
                        current: loaded.version,
                    });
                }
            }
            let from_version = loaded.version;
            let context = context.joining(loaded.correlation_id.as_deref());
            let before = loaded.state.clone();
            let mut state = loaded.state;
            let sink = EventSink::default();
            state
                .handle(command.clone(), services, &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    state,
                    version: from_version,
                    position: loaded.position,
                    events,
                });
            }
            let change = Change {
                aggregate_id: id,
                before: &before,
                after: &state,
                events: &events,
            };
            let mut writes = Writes::default();
            hooks
                .writes(&change, &mut writes)
                .map_err(CommandError::Refused)?;
            let prepared = prepare::<A>(id, from_version, &events, &context, writes)?;
            match self.committer().append(prepared).await {
                Outcome::Appended(appended) => {
                    self.maybe_snapshot(
                        id,
                        from_version,
                        appended.version,
                        appended.position,
                        &state,
                    )
                    .await;
                    return Ok(Committed {
                        state,
                        version: appended.version,
                        position: Some(appended.position),
                        events,
                    });
                }
                Outcome::Conflict if attempt < self.config.max_conflict_retries => {
                    attempt += 1;
                    tracing::debug!(attempt, "concurrency conflict; retrying the command");
                    tokio::time::sleep(CONFLICT_BACKOFF.delay(attempt)).await;
                }
                Outcome::Conflict => {
                    let current = self.load::<A>(id).await?.version;
                    return Err(CommandError::Conflict {
                        current_version: current,
                    });
                }
                Outcome::Refused(e) => return Err(CommandError::Refused(e)),
                Outcome::Failed(e) => return Err(CommandError::Store(e)),
            }
        }
    }

    /// The committer of this store's appends, started on first use.
    fn committer(&self) -> &Committer {
        self.committer.get_or_init(|| {
            Committer::start(
                self.pool.clone(),
                self.notifier.clone(),
                self.config.group_commit,
            )
        })
    }

    /// Writes a snapshot when the commit crossed a multiple of `snapshot_every`. Never fails the command:
    /// a snapshot is a cache, and a missing one only costs a longer fold.
    async fn maybe_snapshot<A: AggregateSchema>(
        &self,
        id: &str,
        from_version: u64,
        version: u64,
        position: i64,
        state: &A,
    ) {
        let every = self.config.snapshot_every;
        if every == 0 || from_version / every == version / every {
            return;
        }
        if let Err(e) = self.write_snapshot(id, version, position, state).await {
            tracing::warn!(aggregate_type = A::TYPE, aggregate_id = id, version, error = %e,
                "snapshot not written; loads fold more events until the next one");
        }
    }

    /// Stores `state` as the snapshot of `id` at `version` (idempotent).
    pub async fn write_snapshot<A: AggregateSchema>(
        &self,
        id: &str,
        version: u64,
        position: i64,
        state: &A,
    ) -> Result<()> {
        let json = serde_json::to_value(state).map_err(|source| Error::Serialize {
            what: "aggregate state",
            source,
        })?;
        sqlx::query(
            "insert into snapshots (aggregate_type, aggregate_id, sequence, state_version, state, global_position)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (aggregate_type, aggregate_id, sequence) do nothing",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(A::STATE_VERSION)
        .bind(json)
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A command's events as rows for the committer: sequences after `from_version`, payloads and metadata
/// serialized (one metadata document, the same for every event but its event id).
fn prepare<A: AggregateSchema>(
    id: &str,
    from_version: u64,
    events: &[A::Event],
    context: &CommandContext,
    writes: Writes,
) -> Result<Prepared, Error> {
    let serialize = |what| move |source| Error::Serialize { what, source };
    let mut prepared = Prepared {
        aggregate_type: A::TYPE,
        aggregate_id: id.to_owned(),
        from_version,
        event_types: Vec::with_capacity(events.len()),
        event_versions: Vec::with_capacity(events.len()),
        payloads: Vec::with_capacity(events.len()),
        metadata: Vec::with_capacity(events.len()),
        writes,
    };
    for event in events {
        prepared.event_types.push(event.event_type());
        prepared.event_versions.push(event.event_version());
        prepared
            .payloads
            .push(serde_json::to_string(event).map_err(serialize("event"))?);
        prepared.metadata.push(
            serde_json::to_string(&EventMetadata::new(context)).map_err(serialize("metadata"))?,
        );
    }
    Ok(prepared)
}

/// The waits between the re-runs of a command that lost a race: up to 2 ms × 2^attempt, at most 100 ms.
const CONFLICT_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(4),
    max: Duration::from_millis(100),
};
