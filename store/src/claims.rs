//! No double booking: a live booking holds `[starts_at, ends_at)` of its partner resource.
//!
//! The claim is a row of `resource_claims`, written by [`BookingClaims`] inside the transaction that
//! appends the booking's events, so the claim and the events commit together or not at all. The table's
//! exclusion constraint refuses a second overlapping claim whatever the interleaving of requests. Every
//! writer of booking commands (command API, workers) must use this hook, so a booking that stops holding
//! its slot (cancelled, rejected, failed) releases it in the same transaction.

use domain::booking::BookingEvent;
use domain::Booking;
use sqlx::PgConnection;

use crate::error::HookError;
use crate::event_store::{Appended, CommitHook};

/// Claims the slot when a booking is requested; releases it when the booking no longer holds it.
#[derive(Debug, Clone, Copy, Default)]
pub struct BookingClaims;

/// The machine-readable code of a refused claim.
pub const SLOT_TAKEN: &str = "slot_taken";

impl CommitHook<Booking> for BookingClaims {
    async fn before_commit(
        &self,
        tx: &mut PgConnection,
        aggregate_id: &str,
        state: &Booking,
        events: &[BookingEvent],
        _appended: Appended,
    ) -> Result<(), HookError> {
        let requested = events
            .iter()
            .any(|e| matches!(e, BookingEvent::BookingRequested { .. }));
        if requested && state.holds_slot() {
            claim(tx, aggregate_id, state).await?;
        } else if !state.holds_slot() {
            sqlx::query("delete from resource_claims where booking_id = $1")
                .bind(aggregate_id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

async fn claim(
    tx: &mut PgConnection,
    booking_id: &str,
    booking: &Booking,
) -> Result<(), HookError> {
    // ON CONFLICT DO NOTHING also covers exclusion constraints; it waits for a concurrent claimer to finish.
    let inserted = sqlx::query(
        "insert into resource_claims (booking_id, partner, resource, period)
         values ($1, $2, $3, tstzrange($4, $5, '[)'))
         on conflict do nothing",
    )
    .bind(booking_id)
    .bind(&booking.partner)
    .bind(&booking.resource)
    .bind(booking.starts_at)
    .bind(booking.ends_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    let holder: Option<String> = sqlx::query_scalar(
        "select booking_id from resource_claims
         where partner = $1 and resource = $2 and period && tstzrange($3, $4, '[)')
         limit 1",
    )
    .bind(&booking.partner)
    .bind(&booking.resource)
    .bind(booking.starts_at)
    .bind(booking.ends_at)
    .fetch_optional(&mut *tx)
    .await?;
    Err(HookError::Refused {
        code: SLOT_TAKEN,
        message: match &holder {
            Some(other) => format!(
                "{} of {} is already booked for an overlapping period by booking {other}",
                booking.resource, booking.partner
            ),
            None => format!(
                "{} of {} is already booked for an overlapping period",
                booking.resource, booking.partner
            ),
        },
        related_id: holder,
    })
}
