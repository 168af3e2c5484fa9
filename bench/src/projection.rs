//! Projector workloads: catch-up over a pre-written log, rebuild, and live lag while commands arrive.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use store::testing::prewrite::{self, Row};
use tokio::sync::watch;

use crate::commands::LastWrite;
use crate::error::{Context, Error, Result};
use crate::load::micros;

/// How the events of one aggregate lie in the pre-written log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Like live traffic: pair `i` starts at slot `i`, and its `k`-th events follow at slot `i + k * gap`
    /// (10 events per slot), so consecutive events of one aggregate are about `10 * gap` events apart.
    Live { gap: usize },
    /// The worst case for batching: round `r` holds the `r`-th event of every stream, so the events of
    /// one aggregate are a whole round apart and nearly every event of a batch touches another row.
    RoundRobin,
}

impl Shape {
    pub fn describe(self) -> String {
        match self {
            Shape::Live { gap } => format!(
                "live-like log: an aggregate's next event ~{} events later",
                gap * 10
            ),
            Shape::RoundRobin => {
                "worst case: an aggregate's next event a whole round later (every event of a batch on another row)"
                    .to_owned()
            }
        }
    }
}

/// Writes `pairs` bookings (4 events) and visits (6 events) laid out as `shape` says, in transactions of
/// 5,000 events (`store::testing::prewrite`). Returns the number of events.
pub async fn prewrite(pool: &PgPool, pairs: usize, shape: Shape) -> Result<u64> {
    let gap = match shape {
        Shape::RoundRobin => {
            return prewrite::round_robin(pool, pairs)
                .await
                .context("pre-writing the log");
        }
        Shape::Live { gap } => gap.max(1),
    };
    let mut written = 0u64;
    let mut rows: Vec<(Row, i64)> = Vec::with_capacity(prewrite::CHUNK);
    // Streams are built when their first event is due and dropped after their last one.
    let mut open: std::collections::BTreeMap<usize, [Vec<Row>; 2]> = Default::default();
    for slot in 0..pairs + 5 * gap {
        if slot < pairs {
            open.insert(
                slot,
                prewrite::histories(slot).context("pre-writing the log")?,
            );
        }
        for round in 0..6usize {
            let Some(i) = slot.checked_sub(round * gap).filter(|i| *i < pairs) else {
                continue;
            };
            let Some(streams) = open.get(&i) else {
                continue;
            };
            for stream in streams {
                if let Some(event) = stream.get(round) {
                    rows.push((event.clone(), i64::try_from(round).unwrap_or(0) + 1));
                }
            }
            if round == 5 {
                open.remove(&i);
            }
        }
        if rows.len() >= prewrite::CHUNK {
            prewrite::insert(pool, &rows)
                .await
                .context("pre-writing the log")?;
            written += rows.len() as u64;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        prewrite::insert(pool, &rows)
            .await
            .context("pre-writing the log")?;
        written += rows.len() as u64;
    }
    Ok(written)
}

/// Empties the projector database: its schema is dropped and migrated again (the event log refuses
/// `TRUNCATE`, as it should).
pub async fn reset(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql("drop schema public cascade; create schema public;")
        .execute(pool)
        .await
        .context("emptying the projector database")?;
    store::db::migrate(pool)
        .await
        .context("migrating the projector database again")?;
    Ok(())
}

/// Runs all four projections in this process (`projector::run_projections`, default config, as
/// `serve` does) until every checkpoint reaches the head of the log; returns the time that took.
pub async fn catch_up(pool: &PgPool, limit: Duration) -> Result<Duration> {
    let head = head(pool).await?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let runner_pool = pool.clone();
    let started = Instant::now();
    let runner = tokio::spawn(async move {
        projector::run_projections(
            runner_pool,
            &projector::NAMES,
            projector::Config::default(),
            async move {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            },
        )
        .await
    });
    let outcome = wait_for_head(pool, head, started, limit).await;
    let _ = stop_tx.send(true);
    match runner.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::step("the projector", e)),
        Err(e) => return Err(Error::step("the projector task", e)),
    }
    outcome
}

/// The head of the log: the last event in the log's order, `(tx_id, global_position)` (not the highest
/// position: positions are handed out at INSERT, so a later transaction can hold a lower one).
#[derive(Debug, Clone, Copy)]
pub struct Head {
    tx_id: i64,
    position: i64,
}

pub async fn head(pool: &PgPool) -> Result<Head> {
    let last: Option<(i64, i64)> = sqlx::query_as(
        "select tx_id::text::bigint, global_position from events
         order by tx_id desc, global_position desc limit 1",
    )
    .fetch_optional(pool)
    .await
    .context("reading the head of the log")?;
    let (tx_id, position) = last.unwrap_or_default();
    Ok(Head { tx_id, position })
}

/// Waits until every projection's checkpoint reaches `head`; returns the time since `started`, or an
/// error once that exceeds `limit`.
pub async fn wait_for_head(
    pool: &PgPool,
    head: Head,
    started: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let (reached, slowest): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where (tx_id, position) >= ($2, $3)), coalesce(min(position), 0)
             from projection_checkpoints where name = any($1)",
        )
        .bind(&projector::NAMES[..])
        .bind(head.tx_id)
        .bind(head.position)
        .fetch_one(pool)
        .await
        .context("polling the checkpoints")?;
        if head.position == 0 || reached as usize == projector::NAMES.len() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(Error::step(
                "projector catch-up",
                format!(
                    "not caught up within {limit:?} (slowest at position {slowest}; the log ends at {})",
                    head.position
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `projector::rebuild` of `bookings` from position zero (fresh tables, then the swap).
pub async fn rebuild(pool: &PgPool) -> Result<Duration> {
    let started = Instant::now();
    projector::rebuild(pool, "bookings", |_| {})
        .await
        .map_err(|e| Error::step("rebuilding bookings", e))?;
    Ok(started.elapsed())
}

/// Until `stop`, takes the newest committed write, polls `projector::reached("bookings", position)`
/// every millisecond until the read model has it, and records the time since its answer arrived.
pub async fn sample_lag(
    pool: PgPool,
    last: LastWrite,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u64>, u64) {
    let mut lags = Vec::new();
    let mut timeouts = 0;
    while !*stop.borrow() {
        let next = last.lock().ok().and_then(|mut guard| guard.take());
        let Some((position, answered)) = next else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        loop {
            match projector::reached(&pool, "bookings", position).await {
                Ok(true) => {
                    lags.push(micros(answered.elapsed()));
                    break;
                }
                Ok(false) if answered.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => {
                    timeouts += 1;
                    break;
                }
            }
        }
    }
    (lags, timeouts)
}
