//! How a command fails: a one-line message and the exit code it deserves, and stdout writes that a closed
//! pipe does not fail.

use service_kit::chain;

/// A failure with the exit code it deserves: 2 for what the user must fix, 1 for everything else.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// What the user must fix (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Anything else (exit code 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Self {
        let code = match &e {
            store::Error::InvalidUrl { .. } => 2,
            store::Error::Embedded(store::embedded::EmbeddedError::NoBinaries) => 2,
            _ => 1,
        };
        Self {
            code,
            message: chain(&e),
        }
    }
}

/// Prints `text` and a newline to stdout. A closed pipe (`trailbook history … | head`) is not an error.
pub fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::other(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}
