//! Operator actions over GraphQL (for dashboards and the console), the same commands as the REST routes,
//! through the same store path and its write rules.

use async_graphql::{Context, Object, Result, ID};
use domain::booking::BookingCommand;
use domain::values::Role;
use store::{CommandContext, CommandError, ExecuteOptions};

use crate::auth;
use crate::error::QueryError;
use crate::read::{fold, At};
use crate::types::{Booking, BookingStatus};
use crate::QueryState;

/// The mutation root.
#[derive(Debug, Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Settle a booking that no automatic path can settle any more (operator), after checking with the
    /// partner or the payment provider: `FAILED` or `CANCELLED` for one waiting for its partner,
    /// `CANCELLED` for `PAYMENT_PENDING` without a charge or a stuck compensation, `REFUNDED` for a stuck
    /// refund. Recorded as `BookingResolved` with the operator as actor; a slot it held is released and a
    /// partner reservation it may hold is given back. Answers the booking folded from the event store.
    async fn resolve_booking(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: BookingStatus,
        reason: String,
    ) -> Result<Booking> {
        let actor = auth::require(ctx, &[Role::Operator], "resolve bookings")?;
        let state = ctx.data::<QueryState>()?;
        let context = CommandContext {
            actor: Some(actor.clone()),
            ..CommandContext::system("booking.resolve")
        };
        let command = BookingCommand::Resolve {
            status: status.into(),
            reason,
        };
        let done = state
            .store
            .execute::<domain::Booking>(&id, command, &(), &context, ExecuteOptions::default())
            .await;
        match done {
            Ok(_) => {}
            Err(CommandError::Rejected(e)) if e.is_not_found() => {
                return Err(
                    QueryError::bad_input("id", format!("no booking with id `{}`", *id)).into(),
                )
            }
            Err(CommandError::Rejected(e)) => {
                return Err(QueryError::bad_input("status", e.to_string()).into())
            }
            Err(CommandError::Store(e)) => return Err(QueryError::from(e).into()),
            Err(e) => return Err(QueryError::internal(&e).into()),
        }
        fold::<domain::Booking>(&state.store, &id, At::Head)
            .await?
            .ok_or_else(|| QueryError::bad_input("id", "no such booking").into())
    }
}
