//! Event metadata: who did what, why, and as part of which request.

use domain::values::Actor;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the caller knows about a command; copied onto every event the command produces.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandContext {
    /// Groups everything done for one user request or workflow (from `X-Correlation-Id`, or new).
    pub correlation_id: String,
    /// What caused this command: the request's command id, or the id of the triggering event.
    pub causation_id: Option<String>,
    /// Who issued the command.
    pub actor: Option<Actor>,
    /// The client's idempotency key, when the command was a create.
    pub idempotency_key: Option<String>,
    /// The command's name, e.g. `booking.cancel`.
    pub command: Option<String>,
    /// The correlation id of the request that issued this command, when it differs from the stream's
    /// (set by the store, see [`CommandContext::joining`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_correlation_id: Option<String>,
}

impl CommandContext {
    /// A context with a fresh correlation id and no actor: for internal and test use.
    pub fn system(command: &str) -> Self {
        Self {
            correlation_id: Uuid::now_v7().to_string(),
            causation_id: None,
            actor: None,
            idempotency_key: None,
            command: Some(command.to_string()),
            request_correlation_id: None,
        }
    }

    /// This context joined to a stream whose first event has `stream_correlation`: the events carry the
    /// stream's correlation id, and the caller's own (when different) as `request_correlation_id`.
    pub fn joining(&self, stream_correlation: Option<&str>) -> std::borrow::Cow<'_, Self> {
        match stream_correlation {
            Some(stream) if stream != self.correlation_id => {
                let mut joined = self.clone();
                joined.request_correlation_id = Some(std::mem::replace(
                    &mut joined.correlation_id,
                    stream.to_owned(),
                ));
                std::borrow::Cow::Owned(joined)
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

/// The metadata stored with each event (the `metadata` jsonb column).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventMetadata {
    /// Unique id of this event (UUID v7: time-ordered).
    pub event_id: Uuid,
    #[serde(flatten)]
    pub context: CommandContext,
    /// Version of trailbook that wrote the event.
    pub service_version: String,
}

impl EventMetadata {
    pub(crate) fn new(context: &CommandContext) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            context: context.clone(),
            service_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
