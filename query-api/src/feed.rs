//! Live updates: one task per process follows the global log and broadcasts what changed; GraphQL
//! subscriptions (`bookingChanged`, `visitChanged`, `statusBoardChanged`) filter it.
//!
//! The task is a [`Consumer`] driven by the store's [`LogFollower`], without a checkpoint: live feeds do
//! not replay history, so its cursor lives in memory. It reads the log only while someone subscribes
//! (otherwise it just keeps its cursor at the tail), with the same never-skip reader as the projector
//! (`store::log::read_after`). It wakes on the `trailbook_events` NOTIFY that writers send after their
//! commits ([`while_listening`]), and polls as a fallback.

use std::time::Duration;

use async_graphql::{Context, Subscription, ID};
use domain::values::Role;
use futures_util::stream::{Stream, StreamExt};
use sqlx::PgPool;
use store::backoff::Backoff;
use store::consumer::{Consumer, LogFollower, Pace, Stop};
use store::notify::{while_listening, Wake};
use store::{log, Checkpoint};
use tokio::sync::broadcast;

use crate::auth;
use crate::error::{QueryError, Result};
use crate::query::read_board;
use crate::read::{fold, At, Readable};
use crate::types::{Booking, StatusBoard, Visit};
use crate::QueryState;

/// One committed event, as much as subscribers need to know.
#[derive(Debug, Clone)]
pub struct Change {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
}

/// The broadcast side of the feed.
#[derive(Debug, Clone)]
pub struct Feed {
    sender: broadcast::Sender<Change>,
}

impl Feed {
    /// Starts following the log on the current runtime; the task ends when the last `Feed` is dropped.
    pub fn spawn(pool: PgPool, poll: Duration) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let weak = sender.downgrade();
        tokio::spawn(follow(pool, weak, poll));
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// Events read in one go while subscribers listen.
const BATCH: i64 = 500;

async fn follow(pool: PgPool, sender: broadcast::WeakSender<Change>, poll: Duration) {
    // Reading never fails the batch (a failed read is logged and retried at the next wake-up or poll), so
    // the backoff is never used.
    let pace = Pace::fixed(
        BATCH,
        poll,
        Backoff {
            base: poll,
            max: poll,
        },
    );
    let wake = Wake::default();
    let mut follower = LogFollower::new(pace, Stop::never()).woken_by(wake.clone());
    let mut feed = Follow {
        pool: &pool,
        sender,
        cursor: None,
    };
    while_listening(&pool, &[wake], follower.run(&mut feed)).await;
}

/// The live feed's reader: its cursor, and the broadcast side it feeds while it has subscribers.
struct Follow<'a> {
    pool: &'a PgPool,
    sender: broadcast::WeakSender<Change>,
    cursor: Option<Checkpoint>,
}

impl Consumer for Follow<'_> {
    type Error = std::convert::Infallible;

    async fn batch(&mut self, limit: i64) -> Result<usize, Self::Error> {
        let Some(sender) = self.sender.upgrade() else {
            return Ok(0);
        };
        if sender.receiver_count() == 0 || self.cursor.is_none() {
            // Nobody listens: keep the cursor at the tail without reading events. The tail is taken
            // before the count is checked, so a subscriber that arrives later folds its first state after
            // that tail, and every event after the tail still reaches it.
            if let Ok(tail) = log::tail(self.pool).await {
                if sender.receiver_count() == 0 || self.cursor.is_none() {
                    self.cursor = Some(tail);
                }
            }
        }
        let Some(after) = self.cursor.filter(|_| sender.receiver_count() > 0) else {
            return Ok(0);
        };
        let events = match log::read_after(self.pool, after, limit).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, "live feed could not read the log");
                return Ok(0);
            }
        };
        for e in &events {
            let _ = sender.send(Change {
                aggregate_type: e.aggregate_type.clone(),
                aggregate_id: e.aggregate_id.clone(),
                sequence: e.sequence,
                position: e.global_position,
            });
        }
        if let Some(last) = events.last() {
            self.cursor = Some(last.checkpoint());
        }
        Ok(events.len())
    }

    /// The feed ends with the last [`Feed`].
    async fn keep_going(&mut self) -> bool {
        self.sender.strong_count() > 0
    }

    fn failed(&mut self, error: &Self::Error, _failures: u32) {
        match *error {}
    }
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The booking now, then again after each change (clients: their own; operator, support: any).
    async fn booking_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Booking>> {
        changes::<domain::Booking>(ctx, id.to_string()).await
    }

    /// The visit now, then again after each change.
    async fn visit_changed(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = Visit>> {
        changes::<domain::Visit>(ctx, id.to_string()).await
    }

    /// The status board now, then again after changes (at most every half second; operator, support).
    async fn status_board_changed(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = StatusBoard>> {
        auth::require(
            ctx,
            &[Role::Operator, Role::Support],
            "read the status board",
        )?;
        let state = ctx.data::<QueryState>()?.clone();
        let receiver = state.feed.subscribe();
        let first = read_board(&state).await?;
        let updates =
            futures_util::stream::unfold((receiver, state), |(mut rx, state)| async move {
                loop {
                    match rx.recv().await {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                    // Let a burst settle and the projector apply it, then read once.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    while rx.try_recv().is_ok() {}
                    match read_board(&state).await {
                        Ok(board) => return Some((board, (rx, state))),
                        Err(e) => tracing::debug!(error = ?e, "status board update skipped"),
                    }
                }
            });
        Ok(futures_util::stream::once(async move { first }).chain(updates))
    }
}

async fn changes<A: Readable>(
    ctx: &Context<'_>,
    id: String,
) -> Result<impl Stream<Item = crate::types::Stamped<A>>> {
    let scope = auth::scope(ctx)?.map(str::to_owned);
    let state = ctx.data::<QueryState>()?.clone();
    let receiver = state.feed.subscribe();
    let visible = |s: &crate::types::Stamped<A>| {
        scope
            .as_deref()
            .is_none_or(|subject| s.state.owner() == subject)
    };
    let Some(first) = fold::<A>(&state.store, &id, At::Head)
        .await?
        .filter(visible)
    else {
        return Err(QueryError::bad_input("id", format!("no {} with id `{id}`", A::TYPE)).into());
    };
    let last = first.version;
    let updates = futures_util::stream::unfold(
        (receiver, state, id, last),
        |(mut rx, state, id, mut last)| async move {
            loop {
                let change = match rx.recv().await {
                    Ok(change) => Some(change),
                    // Fell behind: read the current state instead of each missed change.
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                if let Some(change) = &change {
                    if change.aggregate_type != A::TYPE
                        || change.aggregate_id != id
                        || change.sequence <= last
                    {
                        continue;
                    }
                }
                let at = match change {
                    Some(change) => At::Version(change.sequence as u64),
                    None => At::Head,
                };
                match fold::<A>(&state.store, &id, at).await {
                    Ok(Some(stamped)) if stamped.version > last => {
                        last = stamped.version;
                        return Some((stamped, (rx, state, id, last)));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = ?e, "subscription update skipped"),
                }
            }
        },
    );
    Ok(futures_util::stream::once(async move { first }).chain(updates))
}
