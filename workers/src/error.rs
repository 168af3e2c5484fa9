//! The one error type of the workers crate.

/// What went wrong in the workers crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed or is unreachable: retry later (loops back off on their own).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event store failed (reading the global log): retry later.
    #[error("event store error: {0}")]
    Store(#[from] store::Error),
    /// No job has this id: tell the operator (404).
    #[error("job {0} not found")]
    JobNotFound(i64),
    /// Only failed or dead jobs can be replayed: tell the operator (409).
    #[error("job {id} is {state}; only failed or dead jobs can be replayed")]
    NotReplayable { id: i64, state: String },
    /// A job spec or configuration value is invalid: fix the caller.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Binding or serving a socket failed: check the address.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
