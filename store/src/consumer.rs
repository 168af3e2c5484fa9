//! The log consumer: how every reader of the global log (projector runners, the reactor, the live feed)
//! follows it, in parts that each reader takes as it needs them.
//!
//! - [`LogFollower`] drives a [`Consumer`]: its batches back to back while they come back full (growing
//!   them up to [`Pace::max_batch_size`]), then a wait for a wake-up ([`Wake`], set by a NOTIFY), a poll
//!   tick or [`Stop`], a cheap look ([`Consumer::has_pending`]) before the next batch, and the
//!   [`Backoff`] between the retries of a failing batch. The consumer's batch reads the log after its
//!   position with [`crate::log::read_after`], which never skips an event of a slow transaction.
//! - [`Checkpoints`] is the checkpointed mode: a named row that a batch locks (`select ... for update`),
//!   reads after and advances in its own transaction, so what the batch writes and the checkpoint commit
//!   together or not at all. The row lock is also the fence between two consumers of one name: the second
//!   one's batch waits for the first one's commit and then reads the checkpoint it left. A reader that
//!   needs no durable position (the live feed) keeps its cursor in memory instead.
//! - [`Stop`] and [`until_shutdown`]: a graceful shutdown signal shared by a consumer's loops.
//!
//! # Layout
//! - [`Stop`], [`until_shutdown`]: stopping.
//! - [`Pace`], [`Consumer`], [`LogFollower`]: the loop.
//! - [`Checkpoints`]: named checkpoints, locked and advanced in a batch's transaction.

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgExecutor};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::log::{Checkpoint, RecordedEvent};
use crate::notify::Wake;

/// A stop signal, set once (by [`until_shutdown`]) and seen by every clone.
#[derive(Debug, Clone)]
pub struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    /// A signal that is never set, for a consumer that ends some other way (the live feed ends with its
    /// last subscriber handle).
    pub fn never() -> Self {
        Self(None)
    }

    /// Whether stop was signalled (or its sender is gone, which can only mean the same).
    pub fn is_stopped(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|stop| *stop.borrow() || stop.has_changed().is_err())
    }

    /// Completes once stop is signalled (at once if it was).
    pub async fn stopped(&mut self) {
        match &mut self.0 {
            // An error means the sender is gone: stopped too.
            Some(stop) => drop(stop.wait_for(|stopped| *stopped).await),
            None => std::future::pending().await,
        }
    }

    /// Sleeps for `duration`, or less if stop is signalled meanwhile (not at all if it was).
    pub async fn sleep(&mut self, duration: Duration) {
        if self.is_stopped() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.stopped() => {}
        }
    }
}

/// Runs `work` with a [`Stop`] that is set when `shutdown` completes, and returns what `work` returns:
/// after a shutdown, once `work` has finished what it was doing (the batches in flight) and returned.
pub async fn until_shutdown<F: Future>(
    shutdown: impl Future<Output = ()>,
    work: impl FnOnce(Stop) -> F,
) -> F::Output {
    let (stop_tx, stop) = watch::channel(false);
    let work = work(Stop(Some(stop)));
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            work.await
        }
        output = &mut work => output,
    }
}

/// How a [`LogFollower`] paces its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Events per batch when (nearly) caught up.
    pub batch_size: i64,
    /// Most events per batch while catching up: after every full batch the next one doubles, up to this;
    /// the first short (or failed) batch returns to `batch_size`. Equal to `batch_size`: no growth.
    pub max_batch_size: i64,
    /// How often an idle follower looks for new events when nothing wakes it.
    pub poll_interval: Duration,
    /// After a look finds new events, how long to let more arrive before the batch (zero: at once).
    pub coalesce: Duration,
    /// The shortest time from the start of one batch after a wait to the start of the next (the wait
    /// after a look is stretched to it), so a steady stream of commits makes fewer, fuller batches.
    pub min_batch_interval: Duration,
    /// The delays between the retries of a failing batch.
    pub backoff: Backoff,
}

impl Pace {
    /// Fixed batches of `batch_size`, a poll every `poll_interval`, a batch as soon as a look finds
    /// something, and `backoff` between retries.
    pub fn fixed(batch_size: i64, poll_interval: Duration, backoff: Backoff) -> Self {
        Self {
            batch_size,
            max_batch_size: batch_size,
            poll_interval,
            coalesce: Duration::ZERO,
            min_batch_interval: Duration::ZERO,
            backoff,
        }
    }
}

/// A reader of the global log, as a [`LogFollower`] drives it.
///
/// Methods return `Send` futures so that a follower's loop can run on a spawned task.
pub trait Consumer {
    /// Why a batch failed.
    type Error;

    /// Reads up to `limit` events after this consumer's position and handles them, moving the position
    /// past them; returns how many it handled (0: nothing to read). A failed batch must leave the position
    /// where it was.
    fn batch(&mut self, limit: i64) -> impl Future<Output = Result<usize, Self::Error>> + Send;

    /// Whether a batch would find events now: a cheap look (no lock, no transaction id) after a wake-up,
    /// so that an idle consumer does not open a batch transaction for nothing. An error is not reported
    /// here: the batch that follows reports it. By default: always look with a batch.
    fn has_pending(&mut self) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        async { Ok(true) }
    }

    /// Whether to go on, asked before every batch and after every wait (false ends
    /// [`LogFollower::run`]: a leader that lost its lock, a feed whose subscribers are all gone).
    fn keep_going(&mut self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// The batch failed, the `failures`-th time in a row: log it. [`Consumer::keep_going`] is asked next,
    /// then the follower waits its backoff and retries.
    fn failed(&mut self, error: &Self::Error, failures: u32);
}

/// Follows the global log for one [`Consumer`]: wakes on a NOTIFY, a poll tick or stop.
#[derive(Debug, Clone)]
pub struct LogFollower {
    pace: Pace,
    wake: Option<Wake>,
    stop: Stop,
}

impl LogFollower {
    /// A follower that polls every [`Pace::poll_interval`] and ends on `stop`.
    pub fn new(pace: Pace, stop: Stop) -> Self {
        Self {
            pace,
            wake: None,
            stop,
        }
    }

    /// Also wakes on `wake` (set by [`crate::notify::while_listening`] on each NOTIFY).
    pub fn woken_by(mut self, wake: Wake) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Runs `consumer`'s batches until stop is signalled or [`Consumer::keep_going`] says no.
    ///
    /// A stop lets the batch in flight finish; it ends a wait or a backoff at once.
    pub async fn run<C: Consumer>(&mut self, consumer: &mut C) {
        let base = self.pace.batch_size.max(1);
        let max = self.pace.max_batch_size.max(base);
        let mut size = base;
        let mut failures: u32 = 0;
        loop {
            if self.stop.is_stopped() || !consumer.keep_going().await {
                return;
            }
            let started = Instant::now();
            match consumer.batch(size).await {
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
                    consumer.failed(&e, failures);
                    if !consumer.keep_going().await {
                        return;
                    }
                    self.stop.sleep(self.pace.backoff.delay(failures)).await;
                    continue;
                }
            }
            // Caught up: wait for a wake-up, then look before opening a batch.
            loop {
                self.wait().await;
                if self.stop.is_stopped() || !consumer.keep_going().await {
                    return;
                }
                match consumer.has_pending().await {
                    Ok(false) => {}
                    Ok(true) => {
                        let wait = self.pace.coalesce.max(
                            self.pace
                                .min_batch_interval
                                .saturating_sub(started.elapsed()),
                        );
                        if !wait.is_zero() {
                            self.stop.sleep(wait).await;
                        }
                        break;
                    }
                    // Let the batch report it (with backoff).
                    Err(_) => break,
                }
            }
        }
    }

    /// Waits for a wake-up, a poll tick or stop, whichever comes first.
    pub async fn wait(&mut self) {
        let Self { pace, wake, stop } = self;
        let woken = async {
            match wake {
                Some(wake) => wake.woken().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(pace.poll_interval) => {}
            () = stop.stopped() => {}
        }
    }
}

/// A table of named checkpoints: columns `name` (the key), `tx_id` and `position` (the [`Checkpoint`]),
/// `updated_at`, and optionally `last_event_at` (the `recorded_at` of the last event handled).
///
/// Its methods return [`sqlx::Result`]: they only run queries, and callers tell database errors apart
/// (a lock timeout, a lost connection) as they do for their own statements in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    table: &'static str,
    event_time: bool,
}

impl Checkpoints {
    /// The checkpoints in `table` (a name from the migrations, never from input).
    pub const fn new(table: &'static str) -> Self {
        Self {
            table,
            event_time: false,
        }
    }

    /// Advancing also sets `last_event_at`.
    pub const fn with_event_time(mut self) -> Self {
        self.event_time = true;
        self
    }

    /// Locks `name`'s checkpoint for the rest of `conn`'s transaction and returns it (creating the row
    /// for a name that has none yet). A second transaction locking it waits for this one to end and then
    /// reads what it committed (READ COMMITTED re-reads a row it waited for).
    pub async fn lock(&self, conn: &mut PgConnection, name: &str) -> sqlx::Result<Checkpoint> {
        let table = self.table;
        let select = format!("select tx_id, position from {table} where name = $1 for update");
        if let Some((tx_id, position)) = sqlx::query_as::<_, (i64, i64)>(&select)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
        {
            return Ok(Checkpoint { tx_id, position });
        }
        sqlx::query(&format!(
            "insert into {table} (name) values ($1) on conflict do nothing"
        ))
        .bind(name)
        .execute(&mut *conn)
        .await?;
        let (tx_id, position) = sqlx::query_as::<_, (i64, i64)>(&select)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        Ok(Checkpoint { tx_id, position })
    }

    /// Moves `name`'s checkpoint from `from` (locked by this transaction with [`Checkpoints::lock`]) to
    /// `last`, in the same transaction as whatever the batch wrote.
    pub async fn advance(
        &self,
        conn: &mut PgConnection,
        name: &str,
        from: Checkpoint,
        last: &RecordedEvent,
    ) -> sqlx::Result<()> {
        let table = self.table;
        let event_time = if self.event_time {
            "last_event_at = $6, "
        } else {
            ""
        };
        let updated = sqlx::query(&format!(
            "update {table}
             set tx_id = $2, position = $3, {event_time}updated_at = now()
             where name = $1 and tx_id = $4 and position = $5"
        ))
        .bind(name)
        .bind(last.tx_id)
        .bind(last.global_position)
        .bind(from.tx_id)
        .bind(from.position)
        .bind(last.recorded_at)
        .execute(&mut *conn)
        .await?;
        // Cannot happen while the row is locked by this transaction; checked anyway, so a broken fence
        // fails the batch instead of handling it twice.
        if updated.rows_affected() != 1 {
            return Err(sqlx::Error::RowNotFound);
        }
        Ok(())
    }

    /// `name`'s checkpoint as last committed (the start of the log for a name without one).
    pub async fn get<'e, E: PgExecutor<'e>>(
        &self,
        executor: E,
        name: &str,
    ) -> sqlx::Result<Checkpoint> {
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "select tx_id, position from {} where name = $1",
            self.table
        ))
        .bind(name)
        .fetch_optional(executor)
        .await?;
        Ok(row
            .map(|(tx_id, position)| Checkpoint { tx_id, position })
            .unwrap_or_default())
    }

    /// Whether the log has events after `name`'s checkpoint that a batch could read now (a plain read:
    /// no lock, no transaction id; about 0.1 ms). A name without a row reads from the start.
    ///
    /// Shaped like [`crate::log::read_after`] on purpose: with `order by ... limit 1` the planner walks
    /// the `(tx_id, global_position)` index from the checkpoint. An `exists (...)` or a join to the
    /// checkpoint row makes it scan the whole table instead (it cannot know how far along the checkpoint
    /// is).
    pub async fn has_pending<'e, E: PgExecutor<'e>>(
        &self,
        executor: E,
        name: &str,
    ) -> sqlx::Result<bool> {
        let table = self.table;
        let found: Option<i32> = sqlx::query_scalar(&format!(
            "select 1 from events e
             where (e.tx_id, e.global_position) > (
                       coalesce((select tx_id from {table} where name = $1), 0)::text::xid8,
                       coalesce((select position from {table} where name = $1), 0))
               and e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
             order by e.tx_id, e.global_position
             limit 1"
        ))
        .bind(name)
        .fetch_optional(executor)
        .await?;
        Ok(found.is_some())
    }
}
