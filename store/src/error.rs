//! The store's error types.

/// Errors of the event store and its database plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL does not parse. Fix `DATABASE_URL` (the message never repeats the password).
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// PostgreSQL could not be reached. Check that the server runs and the URL names the right host.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },

    /// Running the embedded migrations failed; the database is left at the last applied migration.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A query failed. Transient (connection) failures are worth retrying later: see [`Error::is_unavailable`].
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A stored event cannot be turned back into a domain event (unknown type, or a payload that no
    /// upcaster brings to the current shape). Nothing was changed; the stream needs an upcaster or repair.
    #[error(transparent)]
    CorruptEvent(Box<CorruptEvent>),

    /// An event or state could not be serialized to JSON (a bug in the domain types).
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The committer of the store's appends is gone (its runtime is shutting down); nothing was written.
    #[error("the event store is shutting down; nothing was written")]
    Stopped,

    /// The private PostgreSQL cluster could not be started.
    #[error(transparent)]
    Embedded(#[from] crate::embedded::EmbeddedError),
}

impl Error {
    /// True when the database is unreachable or overloaded rather than the request being wrong: callers
    /// should answer "try again later" (HTTP 503 with Retry-After).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Stopped => true,
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| is_unavailable_code(&c))
            }
            _ => false,
        }
    }

    /// True when PostgreSQL refused a value the caller sent: text with a NUL character (22021 in a
    /// `text` parameter, 22P05 inside `jsonb`). Callers should answer "bad input", not "internal error".
    pub fn is_unstorable_text(&self) -> bool {
        match self {
            Error::Database(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "22021" || c == "22P05"),
            _ => false,
        }
    }
}

/// SQLSTATEs that mean "the database cannot serve us now" rather than "this request is wrong": connection
/// failures (08), insufficient resources such as too many connections (53), operator intervention such as
/// a shutdown or a terminated backend (57P), a database not accepting connections (55000), a database
/// that does not exist (3D000) and refused credentials (28).
fn is_unavailable_code(code: &str) -> bool {
    ["08", "53", "57P", "28"]
        .iter()
        .any(|p| code.starts_with(p))
        || matches!(code, "55000" | "3D000")
}

/// Which stored event could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error(
    "stored event {aggregate_type}/{aggregate_id} #{sequence} ({event_type} v{event_version}) cannot be read: {reason}"
)]
pub struct CorruptEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub reason: String,
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule). Show the message to the caller (HTTP 422/404).
    #[error(transparent)]
    Rejected(E),

    /// Other writers kept winning the race for this aggregate, even after the bounded internal retries.
    /// The caller may retry later (HTTP 409).
    #[error("concurrent update of the aggregate; its current version is {current_version}")]
    Conflict { current_version: u64 },

    /// The caller's expected version (`If-Match`) is not the current one: reload and decide again (HTTP 412).
    #[error("expected version {expected} but the aggregate is at version {current}")]
    Stale { expected: u64, current: u64 },

    /// The caller may not see this aggregate: answer as if it did not exist (HTTP 404).
    #[error("no such aggregate")]
    NotVisible,

    /// A statement of the commit hook refused the commit (e.g. the resource's time slot is taken).
    #[error(transparent)]
    Refused(HookError),

    /// The store failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] Error),
}

/// A commit hook's refusal, or its database failure.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A business invariant spanning aggregates is violated; `code` is machine-readable, `message` for
    /// people, `related_id` the other aggregate involved (e.g. the booking holding the slot), if known.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        related_id: Option<String>,
    },

    /// The hook's statement failed for another reason.
    #[error("database error in commit hook: {0}")]
    Database(#[from] sqlx::Error),
}
