//! Where each projection stands: position, head, lag in events and seconds, leader; and the gauges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgPool};

use crate::error::Result;
use crate::leader::{lock_key, LEADER_CLASS};
use crate::projection::NAMES;
use store::conn::Guarded;

/// How far one projection is behind the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Global position of the last event applied (0: none yet). The log is applied in `(tx_id,
    /// global_position)` order, so positions below this one may still be pending: use
    /// [`reached`] to ask about a given event.
    pub position: i64,
    /// The highest global position of a committed event.
    pub head_position: i64,
    /// Committed events not applied yet: counted exactly up to [`LAG_COUNT_LIMIT`]; beyond it, estimated
    /// as `head_position - position` (an upper bound: positions of rolled-back inserts are gaps).
    pub lag_events: i64,
    /// Age of the oldest committed event not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// `recorded_at` of the last event applied.
    pub last_event_at: Option<DateTime<Utc>>,
    /// The instance (see [`crate::Config::instance`]) whose runner leads the projection, if any runs.
    pub leader: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    name: String,
    position: i64,
    head_position: i64,
    lag_events: i64,
    lag_seconds: f64,
    updated_at: DateTime<Utc>,
    last_event_at: Option<DateTime<Utc>>,
}

/// How many pending events [`status`] counts exactly. Counting is O(lag): without a bound, the gauge refresh
/// of a runner catching up on a million events counted them all every few seconds (3-4 s of a core each
/// time in the benchmark), slowing the very catch-up it reported on.
pub const LAG_COUNT_LIMIT: i64 = 10_000;

/// The status of every projection, in the order of [`NAMES`] (then any other checkpoint, by name).
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>> {
    // The planner cannot know how far along each checkpoint is, so it may estimate a third of the log
    // per projection and compile the query with JIT, which costs far more than counting a bounded lag.
    let mut conn = Guarded::acquire(pool).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("set local jit = off").execute(&mut *tx).await?;
    let rows: Vec<StatusRow> = sqlx::query_as(
        "select c.name, c.position, c.updated_at, c.last_event_at,
                h.head as head_position,
                case when l.n >= $2 then greatest(l.n, h.head - c.position) else l.n end as lag_events,
                coalesce(greatest(extract(epoch from now() - o.oldest), 0), 0)::float8 as lag_seconds
         from projection_checkpoints c
         cross join (select coalesce(max(global_position), 0) as head from events) h
         cross join lateral (
             select count(*) as n from (
                 select 1 from events e
                 where (e.tx_id, e.global_position) > (c.tx_id::text::xid8, c.position)
                 limit $2) pending
         ) l
         left join lateral (
             select e.recorded_at as oldest from events e
             where (e.tx_id, e.global_position) > (c.tx_id::text::xid8, c.position)
             order by e.tx_id, e.global_position
             limit 1
         ) o on true
         order by array_position($1::text[], c.name), c.name",
    )
    .bind(NAMES)
    .bind(LAG_COUNT_LIMIT)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    conn.release();
    let mut leaders = leaders(pool).await?;
    Ok(rows
        .into_iter()
        .map(|row| ProjectionStatus {
            leader: leaders.remove(&row.name),
            name: row.name,
            position: row.position,
            head_position: row.head_position,
            lag_events: row.lag_events,
            lag_seconds: row.lag_seconds,
            updated_at: row.updated_at,
            last_event_at: row.last_event_at,
        })
        .collect())
}

/// Which instance leads each projection that has a leader (from the advisory locks and the
/// `application_name` of the sessions holding them).
pub async fn leaders(pool: &PgPool) -> Result<HashMap<String, String>> {
    let keys: Vec<i64> = NAMES.iter().map(|n| i64::from(lock_key(n))).collect();
    let held: Vec<(i64, String)> = sqlx::query_as(
        "select l.objid::text::bigint, coalesce(a.application_name, '')
         from pg_locks l
         left join pg_stat_activity a on a.pid = l.pid
         where l.locktype = 'advisory' and l.granted and l.objsubid = 2
           and l.database = (select oid from pg_database where datname = current_database())
           and l.classid = $1::bigint::oid and l.objid = any($2::bigint[]::oid[])",
    )
    .bind(i64::from(LEADER_CLASS))
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let prefix = "trailbook-projector ";
    Ok(held
        .into_iter()
        .filter_map(|(key, app)| {
            let name = NAMES.iter().find(|n| i64::from(lock_key(n)) == key)?;
            let instance = app.strip_prefix(prefix).unwrap_or(&app).to_owned();
            Some(((*name).to_owned(), instance))
        })
        .collect())
}

/// The global position of the last event projection `name` applied (0 before its first batch, and for a
/// name without a checkpoint): the position its read model reflects.
pub async fn position(pool: &PgPool, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select coalesce((select position from projection_checkpoints where name = $1), 0)",
    )
    .bind(name)
    .fetch_one(pool)
    .await?)
}

/// Whether projection `name` has applied the event at global position `position` (read-your-writes: a
/// client that wrote at `position` waits, bounded, until this is true). False while that event is not
/// committed, and for a position no committed event has.
pub async fn reached(pool: &PgPool, name: &str, position: i64) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (
             select 1 from events e
             join projection_checkpoints c on c.name = $1
             where e.global_position = $2
               and (e.tx_id, e.global_position) <= (c.tx_id::text::xid8, c.position))",
    )
    .bind(name)
    .bind(position)
    .fetch_one(pool)
    .await?)
}

/// Sets the projection gauges (`trailbook_projection_position`, `_head_position`, `_lag_events`,
/// `_lag_seconds`, labelled by `projection`) from `statuses`.
pub fn publish_metrics(statuses: &[ProjectionStatus]) {
    for s in statuses {
        let name = s.name.clone();
        metrics::gauge!("trailbook_projection_position", "projection" => name.clone())
            .set(s.position as f64);
        metrics::gauge!("trailbook_projection_head_position", "projection" => name.clone())
            .set(s.head_position as f64);
        metrics::gauge!("trailbook_projection_lag_events", "projection" => name.clone())
            .set(s.lag_events as f64);
        metrics::gauge!("trailbook_projection_lag_seconds", "projection" => name)
            .set(s.lag_seconds);
    }
}
