//! What every trailbook service needs, below all of them: the command API, the query API, the workers
//! and the binary use it; it uses only `domain` (for roles and actors).
//!
//! # Layout
//! - `tokens`: bearer tokens (HS256 JWT) and the role rules of who may see what.
//! - `secrets`: secrets from the environment or created once in the data dir.
//! - `telemetry`: logging set-up and the shutdown signal.
//! - `metrics`: the process-wide Prometheus recorder.
//! - `limits`: request budgets per verified caller, per client address, and waits per subject.
//! - `error`: [`error::chain`], an error with its causes on one line.
#![forbid(unsafe_code)]

pub mod error;
pub mod limits;
pub mod metrics;
pub mod secrets;
pub mod telemetry;
pub mod tokens;

pub use error::chain;
pub use limits::{Charge, Limits};
pub use tokens::{Claims, TokenError, Tokens};
