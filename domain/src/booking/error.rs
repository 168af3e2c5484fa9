//! Why a booking command was refused.

use super::status::BookingStatus;

/// A booking command was refused; no event was written. Each variant says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// No booking has this id. The caller should check the id (REST: 404).
    #[error("booking not found")]
    NotFound,
    /// A booking with this id already exists. The caller should use a new id, or read the existing booking
    /// (REST: 409; an idempotent retry is answered from the idempotency key before reaching the aggregate).
    #[error("booking already exists")]
    AlreadyExists,
    /// The booking's current status does not allow this command. The caller should read the booking and
    /// decide again; repeating the command will not help (REST: 422).
    #[error("cannot {action} a booking that is {from}")]
    InvalidTransition {
        /// The status the booking was in.
        from: BookingStatus,
        /// What was attempted, phrased to follow "cannot".
        action: &'static str,
    },
    /// `ends_at` is not after `starts_at`. The caller should send a non-empty period (REST: 422).
    #[error("ends_at must be after starts_at")]
    InvalidPeriod,
    /// A field breaks a rule. The caller should correct that field (REST: 422, naming the field).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as named in the command.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A partner confirmation came without a reservation id. The caller (the partner gateway) should treat
    /// the answer as malformed and reconcile with a lookup instead.
    #[error("a partner confirmation must carry the partner's reservation id")]
    MissingReservationId,
}

impl BookingError {
    /// Whether the booking does not exist (REST: 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }

    /// Shorthand for [`BookingError::Invalid`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
