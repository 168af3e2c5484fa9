//! The event store of trailbook, on PostgreSQL.
//!
//! Owns the database: connection pools, the embedded migrations, the append-only `events` table and its
//! command path (load, handle, append with optimistic concurrency and bounded retries), snapshots (a pure
//! cache), time travel, the global log reader and the log consumer built on it, and the private
//! PostgreSQL cluster used when no `DATABASE_URL` is given. It knows nothing about HTTP or GraphQL.
//!
//! # Layout
//! - `claims`: the booking time-slot claim, the Booking's write rule (see [`WriteRules`]).
//! - `commit`: group commit: concurrent appends share one transaction and one multi-row statement per
//!   table, each command keeping its own outcome; [`Writes`] is what a hook asks to write beside the events.
//! - `conn`: [`conn::Guarded`], a pooled connection closed instead of reused when a transaction is cancelled.
//! - `db`: connecting (with password-free errors) and migrating.
//! - `event_store`: [`EventStore`]: the command path, loading, snapshots, time travel, history.
//! - `log`: the global log reader, which never skips an event of a slow transaction.
//! - `consumer`: the log consumer of the projector, the reactor and the live feed:
//!   [`consumer::LogFollower`] (wake, poll or stop; batches; retries) and [`consumer::Checkpoints`] (a
//!   named checkpoint locked and advanced in the batch's transaction).
//! - `notify`: [`notify::CommitNotifier`], a NOTIFY to the log's readers after commits, coalesced; and
//!   [`notify::while_listening`], the LISTEN side that wakes them.
//! - `backoff`: [`Backoff`], the one retry schedule (exponential, bounded, jittered).
//! - `metadata`: what is stored with every event (correlation, causation, actor).
//! - `sql`: the text of the command path's writes (append, slot claim, idempotency record), shared with
//!   the command API and the bench.
//! - `embedded`: the private PostgreSQL cluster under the data dir.
//! - `testing` (feature `testing`, for tests and the bench only): a fresh database per test, pre-written
//!   event logs for measuring the projector.
//! - `error`: [`Error`] and [`CommandError`].
#![forbid(unsafe_code)]

pub mod backoff;
pub mod claims;
pub mod commit;
pub mod conn;
pub mod consumer;
pub mod db;
pub mod embedded;
pub mod error;
pub mod event_store;
pub mod log;
pub mod metadata;
pub mod notify;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::Backoff;
pub use commit::{GroupCommit, KeyRecord, Writes};
pub use error::{CommandError, Error, HookError, Result};
pub use event_store::{
    Appended, Change, CommitHook, Committed, EventStore, Execute, ExecuteOptions, Loaded, NoHook,
    StoreConfig, WriteRules,
};
pub use log::{Checkpoint, RecordedEvent, StoredJson};
pub use metadata::{CommandContext, EventMetadata};
