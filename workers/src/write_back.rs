//! How handlers record outcomes on aggregates: the command context of a job, executing a command with its
//! errors sorted into retry or permanent, and loading the current state.

use domain::values::{Actor, Role};
use domain::AggregateSchema;
use store::{CommandContext, CommandError, EventStore, ExecuteOptions, WriteRules};

use crate::jobs::Job;
use crate::worker::HandlerError;

/// The metadata of events a job writes: in the correlation of the event that enqueued it (the saga's
/// thread), caused by that event (its event id), by the `workers` operator. A job without a recorded
/// cause (enqueued by hand) gets `job-<id>`; the store then joins it to the stream's own thread.
pub fn context(job: &Job) -> CommandContext {
    CommandContext {
        correlation_id: correlation_id(job),
        causation_id: job
            .payload
            .pointer("/cause/event_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| {
                job.payload
                    .pointer("/cause/global_position")
                    .map(|p| format!("event-{p}"))
            }),
        actor: Some(Actor::new("workers", Role::Operator)),
        idempotency_key: None,
        command: Some(job.kind.clone()),
        request_correlation_id: None,
    }
}

/// The correlation id a job works under: its cause's, else `job-<id>`. Sent to partners and providers
/// as `X-Correlation-Id`.
pub fn correlation_id(job: &Job) -> String {
    job.payload
        .pointer("/cause/correlation_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("job-{}", job.id))
}

/// Executes `command`; a refusal by the aggregate is permanent, anything else (database, conflicts after
/// the store's own retries) is retried.
pub async fn execute<A>(
    store: &EventStore,
    id: &str,
    command: A::Command,
    context: &CommandContext,
) -> Result<(), HandlerError>
where
    A: WriteRules<Services = ()>,
    A::Command: Clone,
{
    match store
        .execute::<A>(id, command, &(), context, ExecuteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(CommandError::Rejected(e)) => Err(HandlerError::Permanent(e.to_string())),
        Err(e) => Err(HandlerError::Retry(e.to_string())),
    }
}

/// Executes `command` for an outcome that is only due while `still_due` holds of the aggregate: a
/// refusal after which a reload shows it no longer holds (another path, such as a webhook or a callback,
/// settled it meanwhile) is success, not a failure of the job.
pub async fn execute_unless_settled<A>(
    store: &EventStore,
    id: &str,
    command: A::Command,
    context: &CommandContext,
    still_due: impl Fn(&A) -> bool,
) -> Result<(), HandlerError>
where
    A: WriteRules<Services = ()>,
    A::Command: Clone,
{
    match execute::<A>(store, id, command, context).await {
        Err(HandlerError::Permanent(reason)) => {
            if still_due(&load::<A>(store, id).await?) {
                Err(HandlerError::Permanent(reason))
            } else {
                Ok(())
            }
        }
        other => other,
    }
}

/// The current state of `id` (the default state when there is no such stream).
pub async fn load<A: AggregateSchema>(store: &EventStore, id: &str) -> Result<A, HandlerError> {
    store
        .load::<A>(id)
        .await
        .map(|l| l.state)
        .map_err(|e| HandlerError::Retry(e.to_string()))
}

/// The string field `name` of the job's payload.
pub fn payload_str(job: &Job, name: &str) -> Result<String, HandlerError> {
    job.payload
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| HandlerError::Permanent(format!("payload has no {name}")))
}
