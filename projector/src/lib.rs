//! The projector: read models and status views built from the global event log, durably and exactly once.
//!
//! It depends on `domain` (read models fold events with the aggregates' own `apply`) and `store` (the
//! global log reader and its upcasting `RecordedEvent::decode`), never on the APIs or the workers. It does
//! not use cqrs-es's in-process queries, which lose events on a crash (at-most-once).
//!
//! Each projection owns its tables and a checkpoint; a runner applies the log to it in batches, writing the
//! rows and the checkpoint in one transaction, so every event is applied once and none is skipped, however
//! runners die or race. Any number of processes may run [`run`]: one leads each projection (advisory lock)
//! and the others stand by to take over. [`rebuild`] builds a projection afresh beside the live tables and
//! swaps them in atomically. [`status`] reports position and lag.
//!
//! The read side reads through [`catalog`]: every read-model table and the projection that writes it, the
//! one trait an aggregate implements for the read side ([`ReadModel`]), and the reads of one row, of
//! filtered pages and of freshness that the query API makes.
//!
//! # Layout
//! - `catalog`: the read-model tables, [`ReadModel`], and reading rows and pages ([`catalog::ListQuery`]).
//! - `projection`: the [`Projection`] trait, [`Target`] (live or rebuild tables), the registry ([`NAMES`]),
//!   and the one batch implementation every projection plugs its writer into.
//! - `fold`: rows holding an aggregate's folded state; one load and one upsert per batch.
//! - `bookings`, `visits`, `status_board`, `timeline`: what each of the four projections writes (`rm_*`
//!   tables).
//! - `runner`: [`run`], batches, leadership loop, wake-ups, retries.
//! - `leader`: advisory locks on dedicated connections.
//! - `rebuild`: [`rebuild`] into fresh tables and the atomic swap; [`rebuild_status`].
//! - `status`: [`status`], [`position`], [`reached`] (read-your-writes), the Prometheus gauges.
//! - `board`: reading the status board: counts and stuck items ([`StuckRule`]).
//! - `cli`: a progress bar for rebuilds and a status table, for `trailbook projections`.
//! - `error`: [`Error`].
#![forbid(unsafe_code)]

pub mod board;
mod bookings;
pub mod catalog;
pub mod cli;
pub mod error;
mod fold;
mod leader;
pub mod projection;
pub mod rebuild;
pub mod runner;
mod shared_read;
pub mod status;
mod status_board;
mod timeline;
mod visits;

pub use board::{board, Board, StatusCount, StuckItem, StuckRule};
pub use catalog::ReadModel;
pub use error::{Error, Result};
pub use projection::{projection, Projection, Target, NAMES};
pub use rebuild::{
    rebuild, rebuild_status, rebuild_with, start_rebuild, RebuildConfig, RebuildProgress,
    RebuildReport, RebuildStatus,
};
pub use runner::{apply_next_batch, run, run_projections, Config, CHANNEL};
pub use status::{
    leaders, position, publish_metrics, reached, status, ProjectionStatus, LAG_COUNT_LIMIT,
};
