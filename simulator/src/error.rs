//! The one error type of the simulator.

/// What went wrong starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid (a fault probability, an empty API key): fix the flag or body.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Binding or serving the socket failed: check the address.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
