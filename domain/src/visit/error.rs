//! Why a visit command was refused.

use super::status::VisitStatus;

/// A visit command was refused; no event was written. Each variant says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisitError {
    /// No visit has this id. The caller should check the id (REST: 404).
    #[error("visit not found")]
    NotFound,
    /// A visit with this id already exists. The caller should use a new id or read the existing visit
    /// (REST: 409).
    #[error("visit already exists")]
    AlreadyExists,
    /// The visit's current status does not allow this command (e.g. cancelling a completed visit). The caller
    /// should read the visit and decide again; repeating the command will not help (REST: 422).
    #[error("cannot {action} a visit that is {from}")]
    InvalidTransition {
        /// The status the visit was in.
        from: VisitStatus,
        /// What was attempted, phrased to follow "cannot".
        action: &'static str,
    },
    /// A field breaks a rule. The caller should correct that field (REST: 422, naming the field).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as named in the command.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A sent report was recorded before the report was generated. The caller (the e-mail job) should wait
    /// for `ReportGenerated` and retry later.
    #[error("the visit report has not been generated yet")]
    ReportNotGenerated,
}

impl VisitError {
    /// Whether the visit does not exist (REST: 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }

    /// Shorthand for [`VisitError::Invalid`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
