//! The one-shot operator commands that are not a module of their own: `jobs`, `bookings resolve` and
//! `token`. Each prints its answer on stdout and fails with a one-line message (exit 2 for what the
//! user must fix).

use domain::values::Role;
use service_kit::chain;
use store::EventStore;

use crate::cli::{BookingsAction, JobsAction, TokenArgs, TokenRole};
use crate::{emit, Failure};

/// `trailbook jobs [list | replay <id>]`.
pub async fn jobs(pool: &sqlx::PgPool, action: Option<JobsAction>) -> Result<(), Failure> {
    let failure = |e: workers::Error| Failure {
        code: match e {
            workers::Error::JobNotFound(_) | workers::Error::NotReplayable { .. } => 2,
            _ => 1,
        },
        message: chain(&e),
    };
    match action.unwrap_or(JobsAction::List {
        state: None,
        limit: 50,
    }) {
        JobsAction::List { state, limit } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(workers::JobState::parse(s).ok_or_else(|| {
                    Failure::usage(format!(
                        "--state `{s}`: use queued, running, succeeded, failed or dead"
                    ))
                })?),
            };
            let jobs = workers::jobs::list(
                pool,
                &workers::JobFilter {
                    state,
                    limit: Some(limit),
                    ..workers::JobFilter::default()
                },
            )
            .await
            .map_err(failure)?;
            let mut out = format!(
                "{:>8}  {:<20} {:<13} {:<10} {:>8}  {:<25}  {}\n",
                "ID", "KIND", "QUEUE", "STATE", "ATTEMPTS", "RUN_AT", "LAST_ERROR"
            );
            for job in &jobs {
                out.push_str(&format!(
                    "{:>8}  {:<20} {:<13} {:<10} {:>4}/{:<3}  {:<25}  {}\n",
                    job.id,
                    job.kind,
                    job.queue,
                    job.state,
                    job.attempts,
                    job.max_attempts,
                    job.run_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    job.last_error.as_deref().unwrap_or("-")
                ));
            }
            emit(out.trim_end())
        }
        JobsAction::Replay { id } => {
            let job = workers::jobs::replay(pool, id).await.map_err(failure)?;
            emit(&format!(
                "job {} ({}) is queued again with {} attempts",
                job.id, job.kind, job.max_attempts
            ))
        }
    }
}

/// `trailbook bookings resolve <id> --status <s> --reason <r>`.
pub async fn bookings(store: &EventStore, action: BookingsAction) -> Result<(), Failure> {
    let BookingsAction::Resolve {
        id,
        status,
        reason,
        operator,
    } = action;
    let status = domain::booking::BookingStatus::parse(&status).ok_or_else(|| {
        Failure::usage(format!(
            "--status `{status}`: use failed, cancelled or refunded"
        ))
    })?;
    let context = store::CommandContext {
        actor: Some(domain::values::Actor::new(operator.trim(), Role::Operator)),
        ..store::CommandContext::system("booking.resolve")
    };
    let command = domain::booking::BookingCommand::Resolve { status, reason };
    let done = store
        .execute::<domain::Booking>(
            &id,
            command,
            &(),
            &context,
            store::ExecuteOptions::default(),
        )
        .await
        .map_err(|e| Failure {
            code: match &e {
                store::CommandError::Rejected(_) => 2,
                _ => 1,
            },
            message: format!("booking {id}: {}", chain(&e)),
        })?;
    emit(&format!(
        "booking {id} is {} (version {})",
        done.state.status, done.version
    ))
}

/// `trailbook token --role <r> --subject <s>`: a token signed with the data dir's (or the
/// environment's) secret.
pub fn token(data_dir: &std::path::Path, args: &TokenArgs) -> Result<(), Failure> {
    let role = match args.role {
        TokenRole::Client => Role::Client,
        TokenRole::Operator => Role::Operator,
        TokenRole::Support => Role::Support,
        TokenRole::Partner => Role::Partner,
    };
    let token = crate::tokens(data_dir)?
        .issue(
            role,
            &args.subject,
            chrono::Duration::hours(i64::from(args.ttl_hours)),
        )
        .map_err(|e| match e {
            service_kit::TokenError::NoSubject => Failure::usage(
                "--subject must be 1 to 200 characters, not only whitespace, no control characters",
            ),
            other => Failure::other(format!("cannot sign the token: {other}")),
        })?;
    emit(&token)
}
