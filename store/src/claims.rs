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

use crate::commit::{Claim, Writes};
use crate::error::HookError;
use crate::event_store::{Change, CommitHook};

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

impl CommitHook<Booking> for BookingClaims {
    fn writes(&self, change: &Change<'_, Booking>, writes: &mut Writes) -> Result<(), HookError> {
        match (change.before.holds_slot(), change.after.holds_slot()) {
            (false, true) => {
                let booking = change.after;
                writes.claim = Some(Claim {
                    partner: booking.partner.clone(),
                    resource: booking.resource.clone(),
                    starts_at: booking.starts_at,
                    ends_at: booking.ends_at,
                });
            }
            (true, false) => writes.release = true,
            _ => {}
        }
        Ok(())
    }
}

/// The refusal of a claim that overlaps the live claim of `holder` (when known).
pub(crate) fn slot_taken(partner: &str, resource: &str, holder: Option<String>) -> HookError {
    HookError::Refused {
        code: SLOT_TAKEN,
        // The holder is another aggregate, maybe another client's: only `related_id` names it, and the
        // API shows it only to callers who may see that booking.
        message: format!("{resource} of {partner} is already booked for an overlapping period"),
        related_id: holder,
    }
}
