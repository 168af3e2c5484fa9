//! Projection `bookings`: one `rm_bookings` row per booking, with its status, partner, amount, customer,
//! the time it reached each status, and its folded state.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::booking::{BookingEvent, BookingStatus};
use domain::{AggregateSchema, Booking};
use serde::{Deserialize, Serialize};
use store::RecordedEvent;

use crate::catalog::{self, Table};
use crate::fold::{folded_row_fields, FoldedRow};

/// A row of `rm_bookings` (field names are the column names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BookingRow {
    booking_id: String,
    owner: String,
    status: String,
    partner: String,
    resource: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    guests: u32,
    amount_minor: Option<i64>,
    currency: Option<String>,
    customer_name: Option<String>,
    customer_email: Option<String>,
    reservation_id: Option<String>,
    payment_id: Option<String>,
    partner_attempts: u32,
    requested_at: Option<DateTime<Utc>>,
    partner_pending_at: Option<DateTime<Utc>>,
    confirmed_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    rejected_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    compensating_at: Option<DateTime<Utc>>,
    compensation_failed_at: Option<DateTime<Utc>>,
    payment_pending_at: Option<DateTime<Utc>>,
    refunding_at: Option<DateTime<Utc>>,
    refunded_at: Option<DateTime<Utc>>,
    refund_failed_at: Option<DateTime<Utc>>,
    status_since: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    last_position: i64,
    state_version: i32,
    state: Booking,
}

impl BookingRow {
    /// The milestone column of `status`.
    fn milestone(&mut self, status: BookingStatus) -> &mut Option<DateTime<Utc>> {
        match status {
            BookingStatus::Requested => &mut self.requested_at,
            BookingStatus::PartnerPending => &mut self.partner_pending_at,
            BookingStatus::Confirmed => &mut self.confirmed_at,
            BookingStatus::Paid => &mut self.paid_at,
            BookingStatus::Rejected => &mut self.rejected_at,
            BookingStatus::Failed => &mut self.failed_at,
            BookingStatus::Cancelled => &mut self.cancelled_at,
            BookingStatus::Compensating => &mut self.compensating_at,
            BookingStatus::CompensationFailed => &mut self.compensation_failed_at,
            BookingStatus::PaymentPending => &mut self.payment_pending_at,
            BookingStatus::Refunding => &mut self.refunding_at,
            BookingStatus::Refunded => &mut self.refunded_at,
            BookingStatus::RefundFailed => &mut self.refund_failed_at,
        }
    }
}

impl FoldedRow for BookingRow {
    type Aggregate = Booking;
    const TABLE: Table = catalog::BOOKINGS;

    fn new(id: &str) -> Self {
        Self {
            booking_id: id.to_owned(),
            status: BookingStatus::default().as_str().to_owned(),
            state_version: Booking::STATE_VERSION,
            ..Self::default()
        }
    }

    folded_row_fields!(booking_id, timestamps);

    fn apply(&mut self, event: BookingEvent, recorded: &RecordedEvent) {
        let at = recorded.recorded_at;
        let before = (self.version > 0).then_some(self.state.status);
        self.state.apply(event);
        let after = self.state.status;
        if before != Some(after) {
            self.status_since = at;
            self.milestone(after).get_or_insert(at);
        }
    }

    fn finish(&mut self) {
        let state = &self.state;
        self.owner.clone_from(&state.owner);
        self.status = state.status.as_str().to_owned();
        self.partner.clone_from(&state.partner);
        self.resource.clone_from(&state.resource);
        self.starts_at = state.starts_at;
        self.ends_at = state.ends_at;
        self.guests = state.guests;
        self.amount_minor = state.amount.as_ref().map(|a| a.minor);
        self.currency = state.amount.as_ref().map(|a| a.currency.to_string());
        self.customer_name = state.customer.as_ref().map(|c| c.name.clone());
        self.customer_email = state.customer.as_ref().map(|c| c.email.to_string());
        self.reservation_id.clone_from(&state.reservation_id);
        self.payment_id.clone_from(&state.payment_id);
        self.partner_attempts = state.partner_attempts;
        self.state_version = Booking::STATE_VERSION;
    }
}
