//! The harness's one error type: a failed step and its cause chain, or bad usage.

use std::fmt::Display;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step of the run failed (the message names the step, then the cause chain). Exit code 1.
    #[error("{step}: {cause}")]
    Step { step: String, cause: String },
    /// Something the user must fix (a flag, a missing binary). Exit code 2.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn step(step: impl Into<String>, cause: impl Display) -> Self {
        Self::Step {
            step: step.into(),
            cause: cause.to_string(),
        }
    }
}

/// The error and its sources, joined by `: `.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// `.context("what was being done")` on any fallible result.
pub trait Context<T> {
    fn context(self, step: &str) -> Result<T>;
    fn with_context(self, step: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error> Context<T> for std::result::Result<T, E> {
    fn context(self, step: &str) -> Result<T> {
        self.map_err(|e| Error::step(step, chain(&e)))
    }

    fn with_context(self, step: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::step(step(), chain(&e)))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, step: &str) -> Result<T> {
        self.ok_or_else(|| Error::step(step, "nothing there"))
    }

    fn with_context(self, step: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::step(step(), "nothing there"))
    }
}
