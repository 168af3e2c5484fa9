//! No double booking: a live booking holds `[starts_at, ends_at)` of its partner resource.
//!
//! The claim is a row of `resource_claims`, written inside the transaction that appends the booking's
//! events, so the claim and the events commit together or not at all. The table's exclusion constraint
//! refuses a second overlapping claim whatever the interleaving of requests.
//!
//! [`BookingClaims`] is the Booking's write rule ([`crate::WriteRules`]): the store runs it on every
//! booking command of every writer, and nobody else can construct it. It derives the claim from the
//! status alone ([`domain::booking::BookingStatus::holds_slot`]): a command whose booking did not hold
//! the slot before and holds it after claims it; one that held it before and not after releases it. So
//! "a booking holds a claim iff its status holds the room" holds after every commit, whichever status a
//! future change adds, as long as the status says whether it holds the room.

use domain::Booking;
use sqlx::PgConnection;

use crate::error::HookError;
use crate::event_store::{Appended, Change, CommitHook};
use crate::sql::CLAIM_SLOT;

/// Claims the slot when a booking starts holding it; releases it when the booking stops holding it.
#[derive(Debug, Clone, Copy)]
pub struct BookingClaims {
    /// Private: only the store constructs the rule, so no caller can run it twice or on its own.
    _private: (),
}

impl BookingClaims {
    /// The one instance, used by `WriteRules for Booking`.
    pub(crate) const RULE: Self = Self { _private: () };
}

/// The machine-readable code of a refused claim.
pub const SLOT_TAKEN: &str = "slot_taken";

/// What a change does to the booking's claim.
fn transition(change: &Change<'_, Booking>) -> Option<bool> {
    match (change.before.holds_slot(), change.after.holds_slot()) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

impl CommitHook<Booking> for BookingClaims {
    fn needed(&self, change: &Change<'_, Booking>) -> bool {
        transition(change).is_some()
    }

    async fn before_commit(
        &self,
        tx: &mut PgConnection,
        change: &Change<'_, Booking>,
        _appended: Appended,
    ) -> Result<(), HookError> {
        match transition(change) {
            Some(true) => claim(tx, change.aggregate_id, change.after).await,
            Some(false) => {
                sqlx::query("delete from resource_claims where booking_id = $1")
                    .bind(change.aggregate_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

async fn claim(
    tx: &mut PgConnection,
    booking_id: &str,
    booking: &Booking,
) -> Result<(), HookError> {
    let inserted = sqlx::query(CLAIM_SLOT)
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
