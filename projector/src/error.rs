//! The projector's error type.

/// Errors of the projector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No projection has this name. Use one of [`crate::NAMES`].
    #[error(
        "unknown projection `{0}`; the projections are bookings, visits, status_board and timeline"
    )]
    UnknownProjection(String),

    /// An event could not be applied to a read model. Nothing of its batch was written and the checkpoint
    /// stays before it; the runner logs this and retries with backoff, and never skips the event. A
    /// persistent one needs a fix (an upcaster, a repaired row) and then resolves by itself.
    #[error(
        "projection {projection}: cannot apply {aggregate_type}/{aggregate_id} #{sequence} (global position {position}): {reason}"
    )]
    Apply {
        projection: &'static str,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        position: i64,
        reason: String,
    },

    /// Another rebuild of this projection is running (in this or another process). Wait for it to finish.
    #[error("a rebuild of projection {0} is already running")]
    RebuildInProgress(&'static str),

    /// The rebuilt tables could not be swapped in because readers kept the live tables locked for the
    /// whole lock timeout, several times. The live tables are unchanged; run the rebuild again later.
    #[error("projection {0}: could not swap in the rebuilt tables (readers held them locked); try again")]
    SwapTimedOut(&'static str),

    /// An index of a live table has a definition the rebuild cannot copy (it was changed by hand). The live
    /// tables are unchanged.
    #[error("cannot rebuild: index {index} has an unexpected definition: {definition}")]
    IndexDefinition { index: String, definition: String },

    /// A stuck-item rule does not parse. The message says what the expected shape is.
    #[error("invalid stuck rule `{rule}`: {reason}")]
    InvalidRule { rule: String, reason: String },

    /// A read-model row could not be serialized or read back (a bug, or a row edited by hand).
    #[error("projection {projection}: bad read-model row: {source}")]
    Row {
        projection: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The event store failed (reading the log, decoding an event).
    #[error(transparent)]
    Store(#[from] store::Error),

    /// A query failed. Connection failures are transient: runners retry with backoff.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// `Result` with the projector's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
