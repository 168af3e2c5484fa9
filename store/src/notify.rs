//! Waking the log's readers (projector runners, the live feed) soon after events commit.
//!
//! Readers LISTEN on [`CHANNEL`] ([`while_listening`], one connection per process, whatever the number of
//! readers it wakes) and poll as a fallback. A NOTIFY from inside the append transaction
//! would serialize every append's commit behind PostgreSQL's database-wide notify lock (measured: 2.5x to
//! 8x fewer appends per second at 4 to 16 clients), so writers never do that. Instead an [`EventStore`]
//! given a [`CommitNotifier`] pokes it after each commit, and the notifier's task sends one NOTIFY per
//! burst of commits, outside any append transaction: while one NOTIFY is on its way, and for
//! [`MIN_INTERVAL`] after it, every further commit folds into the next one.
//!
//! [`EventStore`]: crate::EventStore

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

/// The channel log readers LISTEN on. The payload is empty: a notification only means "look again".
pub const CHANNEL: &str = "trailbook_events";

/// The shortest time between two NOTIFYs. Each is a transaction with an id for PostgreSQL and a wake-up
/// for every listener; readers batch for longer than this anyway (the projector starts a live batch at
/// most every 25 ms), so more frequent wake-ups only cost CPU.
pub const MIN_INTERVAL: Duration = Duration::from_millis(5);

/// Sends coalesced NOTIFYs on [`CHANNEL`] from a background task, which ends when the last clone of the
/// notifier is dropped.
#[derive(Debug, Clone)]
pub struct CommitNotifier {
    poke: mpsc::Sender<()>,
}

impl CommitNotifier {
    /// Starts the notifying task on the current tokio runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let (poke, mut poked) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while poked.recv().await.is_some() {
                let sent = Instant::now();
                // pg_notify takes a transaction id, so its commit would wait for a WAL flush: a
                // wake-up is not worth one (a lost one costs a poll interval).
                if let Err(e) = sqlx::query(
                    "select set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
                )
                .bind(CHANNEL)
                .execute(&pool)
                .await
                {
                    // Best effort: readers poll anyway, so a lost wake-up only costs a poll interval.
                    tracing::debug!(error = %e, "could not notify log readers");
                }
                // Commits meanwhile leave one wake-up pending, sent after the pause.
                tokio::time::sleep(MIN_INTERVAL.saturating_sub(sent.elapsed())).await;
            }
        });
        Self { poke }
    }

    /// Events committed: the readers will be told (once per burst).
    pub fn committed(&self) {
        // A full channel already holds a pending wake-up, which covers this commit too.
        let _ = self.poke.try_send(());
    }
}

/// A log reader's wake-up: [`while_listening`] sets it on every NOTIFY on [`CHANNEL`], and a
/// [`LogFollower`](crate::consumer::LogFollower) waits on it. A wake-up that comes while nobody waits is
/// kept (one), so a NOTIFY during a batch makes the next wait return at once.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Wakes the reader (now, or at its next wait).
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Completes at the next wake-up (at once if one is pending).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Runs `work` to its end while forwarding every NOTIFY on [`CHANNEL`] to each of `wakes`, on one
/// connection of its own (outside the pool). Best effort: readers poll anyway, so while LISTEN cannot
/// connect they are only woken later; a lost connection is re-established and wakes everyone once (a
/// NOTIFY may have been missed meanwhile).
pub async fn while_listening<F: Future>(pool: &PgPool, wakes: &[Wake], work: F) -> F::Output {
    tokio::pin!(work);
    tokio::select! {
        biased;
        output = &mut work => output,
        never = listen(pool, wakes) => match never {},
    }
}

/// The LISTEN loop of [`while_listening`]; never returns.
async fn listen(pool: &PgPool, wakes: &[Wake]) -> std::convert::Infallible {
    let wake_all = || wakes.iter().for_each(Wake::wake);
    let mut listener: Option<PgListener> = None;
    loop {
        let active = match &mut listener {
            Some(listener) => listener,
            None => match connect_listener(pool).await {
                Ok(connected) => listener.insert(connected),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot LISTEN; relying on polling for now");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            },
        };
        match active.try_recv().await {
            Ok(Some(_)) => wake_all(),
            // The connection was lost; the next try_recv reconnects. Wake readers to look meanwhile.
            Ok(None) => wake_all(),
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection failed; reconnecting");
                listener = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn connect_listener(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
