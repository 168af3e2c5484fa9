//! Given/when/then tests of the [`Booking`] aggregate, each named for the rule it proves, refusals included.
//! Most start from a canned history (`history(status)`, a shortest event list that leaves a booking in
//! `status`) and check the events a command records or the error it is refused with, and the state the
//! events fold to.
//!
//! # Layout
//! - Fixtures: commands, events and histories shared by the tests; `given(status)` starts a test from a
//!   booking in `status`.
//! - Test helpers are right: every canned history folds to its status.
//! - Request: validation of a new booking.
//! - Partner reservation attempts: attempts, retries and unknown outcomes.
//! - Partner answers: confirmations, rejections, and the duplicate, stale and out-of-order reports that are
//!   recorded but not applied.
//! - Payment: captured and declined payments of a confirmed booking.
//! - Compensation: releasing the reservation after a declined payment, and after a cancellation.
//! - Fail, Cancel: the waiting booking that fails, and cancellation with its no-op and refusals.
//! - Payment through the provider, refunds, operator resolution.
//! - State, statuses and serialization: the folded state, the status sets and names, the stored JSON.

use chrono::{DateTime, Utc};
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::json;

use super::{
    Booking, BookingCommand, BookingError, BookingEvent, BookingStatus, Customer, IgnoredReason,
    PartnerReportedStatus, PartnerSource, PaymentOutcome, RefundOutcome,
};
use crate::values::{Currency, Email, Money};

// ---- Fixtures ---------------------------------------------------------------------------------------------

type E = BookingEvent;
/// Changes one field of a command.
type Edit = fn(&mut C);
type C = BookingCommand;

fn framework() -> TestFramework<Booking> {
    TestFramework::with(())
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().expect("test timestamps are valid RFC 3339")
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").expect("valid code"))
}

fn ada() -> Customer {
    Customer {
        name: "Ada Lovelace".to_owned(),
        email: Email::parse("ada@example.com").expect("valid address"),
    }
}

fn request() -> C {
    C::Request {
        booking_id: "b-1".to_owned(),
        owner: "user-1".to_owned(),
        partner: "acme-hotels".to_owned(),
        resource: "room-42".to_owned(),
        starts_at: time("2026-12-01T15:00:00Z"),
        ends_at: time("2026-12-03T11:00:00Z"),
        guests: 2,
        amount: eur(25000),
        customer: ada(),
        at: time("2026-11-01T10:00:00Z"),
    }
}

/// `request()` with one field changed by `change`.
fn request_with(change: impl FnOnce(&mut C)) -> C {
    let mut command = request();
    change(&mut command);
    command
}

fn requested() -> E {
    E::BookingRequested {
        booking_id: "b-1".to_owned(),
        owner: "user-1".to_owned(),
        partner: "acme-hotels".to_owned(),
        resource: "room-42".to_owned(),
        starts_at: time("2026-12-01T15:00:00Z"),
        ends_at: time("2026-12-03T11:00:00Z"),
        guests: 2,
        amount: eur(25000),
        customer: ada(),
        at: time("2026-11-01T10:00:00Z"),
    }
}

fn attempt(n: u32) -> E {
    E::PartnerReservationRequested {
        attempt: n,
        at: time("2026-11-01T10:00:01Z"),
    }
}

/// The partner's timestamp of the confirmation in `history(Confirmed)`.
const CONFIRMED_AT: &str = "2026-11-01T10:01:00Z";

fn confirmed() -> E {
    E::PartnerConfirmed {
        reservation_id: "r-1".to_owned(),
        source: PartnerSource::Response,
        partner_time: time(CONFIRMED_AT),
    }
}

fn payment_requested() -> E {
    E::PaymentRequested {
        payment_key: "key-1".to_owned(),
        method: "4242424242424242".to_owned(),
        amount: eur(25000),
        at: time("2026-11-01T10:02:00Z"),
    }
}

fn cancelled(reservation_id: Option<&str>) -> E {
    E::BookingCancelled {
        reason: "plans changed".to_owned(),
        reservation_id: reservation_id.map(str::to_owned),
        at: time("2026-11-02T09:00:00Z"),
    }
}

fn payment_captured() -> E {
    E::PaymentCaptured {
        payment_id: "pay-1".to_owned(),
        amount: eur(25000),
    }
}

/// What a declined payment records: the decline, then the start of compensation.
fn declined_and_compensating() -> Vec<E> {
    vec![
        E::PaymentDeclined {
            reason: "card declined".to_owned(),
        },
        E::CompensationStarted {
            reservation_id: Some("r-1".to_owned()),
        },
    ]
}

fn refund_started() -> E {
    E::RefundStarted {
        payment_id: "pay-1".to_owned(),
        amount: eur(25000),
    }
}

/// A shortest history that leaves a booking in `status`.
fn history(status: BookingStatus) -> Vec<E> {
    use BookingStatus as S;
    let pending = vec![requested(), attempt(1)];
    let confirmed_ = [pending.clone(), vec![confirmed()]].concat();
    let compensating = [confirmed_.clone(), declined_and_compensating()].concat();
    let paid = [
        confirmed_.clone(),
        vec![payment_requested(), payment_captured()],
    ]
    .concat();
    let refunding = [paid.clone(), vec![cancelled(Some("r-1")), refund_started()]].concat();
    match status {
        S::Requested => vec![requested()],
        S::PartnerPending => pending,
        S::Confirmed => confirmed_,
        S::PaymentPending => [confirmed_, vec![payment_requested()]].concat(),
        S::Paid => paid,
        S::Refunding => refunding,
        S::Refunded => [
            refunding,
            vec![E::RefundCompleted {
                refund_id: "re-1".to_owned(),
            }],
        ]
        .concat(),
        S::RefundFailed => [
            refunding,
            vec![E::RefundFailed {
                reason: "provider refused".to_owned(),
            }],
        ]
        .concat(),
        S::Rejected => [
            pending,
            vec![E::PartnerRejected {
                reason: Some("sold out".to_owned()),
                source: PartnerSource::Response,
                partner_time: time(CONFIRMED_AT),
            }],
        ]
        .concat(),
        S::Failed => [
            pending,
            vec![E::BookingFailed {
                reason: "retries exhausted".to_owned(),
            }],
        ]
        .concat(),
        S::Cancelled => [confirmed_, vec![cancelled(Some("r-1"))]].concat(),
        S::Compensating => compensating,
        S::CompensationFailed => [
            compensating,
            vec![E::CompensationFailed {
                reason: "partner unreachable".to_owned(),
            }],
        ]
        .concat(),
    }
}

/// The test framework for a booking in `status`, reached through `history(status)`.
fn given(status: BookingStatus) -> AggregateTestExecutor<Booking> {
    framework().given(history(status))
}

/// The test framework for an id under which no booking exists yet.
fn given_no_booking() -> AggregateTestExecutor<Booking> {
    framework().given_no_previous_events()
}

fn fold(events: Vec<E>) -> Booking {
    let mut booking = Booking::default();
    for event in events {
        booking.apply(event);
    }
    booking
}

fn partner_report(
    reported: PartnerReportedStatus,
    reservation_id: Option<&str>,
    partner_time: &str,
) -> C {
    C::ApplyPartnerStatus {
        reported,
        reservation_id: reservation_id.map(str::to_owned),
        source: PartnerSource::Callback,
        partner_time: time(partner_time),
        reason: None,
    }
}

fn ignored(
    reported: PartnerReportedStatus,
    reservation_id: Option<&str>,
    partner_time: &str,
    reason: IgnoredReason,
) -> E {
    E::PartnerCallbackIgnored {
        reported,
        reservation_id: reservation_id.map(str::to_owned),
        source: PartnerSource::Callback,
        partner_time: time(partner_time),
        reason,
    }
}

fn refused(from: BookingStatus, action: &'static str) -> BookingError {
    BookingError::InvalidTransition { from, action }
}

fn cancel(reason: &str) -> C {
    C::Cancel {
        reason: reason.to_owned(),
        at: time("2026-11-02T09:00:00Z"),
    }
}

fn fail(reason: &str) -> C {
    C::Fail {
        reason: reason.to_owned(),
    }
}

fn fail_compensation(reason: &str) -> C {
    C::FailCompensation {
        reason: reason.to_owned(),
    }
}

fn request_payment() -> C {
    C::RequestPayment {
        payment_key: "key-1".to_owned(),
        method: "4242424242424242".to_owned(),
        at: time("2026-11-01T10:02:00Z"),
    }
}

fn captured(payment_id: &str) -> C {
    C::RecordPayment {
        outcome: PaymentOutcome::Captured {
            payment_id: payment_id.to_owned(),
        },
    }
}

fn declined() -> C {
    C::RecordPayment {
        outcome: PaymentOutcome::Declined {
            reason: "card declined".to_owned(),
        },
    }
}

// ---- test helpers are right -------------------------------------------------------------------------------

/// Each canned history really ends in the status it is named after (the other tests rely on it).
#[test]
fn each_canned_history_folds_to_its_status() {
    for status in BookingStatus::ALL {
        assert_eq!(fold(history(status)).status, status);
    }
}

// ---- Request ----------------------------------------------------------------------------------------------

/// A valid request on a new id records `BookingRequested` with all the request's data.
#[test]
fn request_on_a_new_booking_records_booking_requested() {
    given_no_booking()
        .when(request())
        .then_expect_events(vec![requested()]);
}

/// The same request through the async path (as the store runs it) gives the same event.
#[tokio::test]
async fn request_through_the_async_handler_records_booking_requested() {
    given_no_booking()
        .when_async(request())
        .await
        .then_expect_events(vec![requested()]);
}

/// A booking id can be requested only once.
#[test]
fn request_on_an_existing_booking_is_refused_as_already_exists() {
    framework()
        .given(vec![requested()])
        .when(request())
        .then_expect_error(BookingError::AlreadyExists);
}

/// A period must not be empty or reversed.
#[test]
fn request_whose_end_is_not_after_its_start_is_refused() {
    for ends_at in ["2026-12-01T15:00:00Z", "2026-12-01T14:59:59Z"] {
        given_no_booking()
            .when(request_with(|c| {
                if let C::Request { ends_at: end, .. } = c {
                    *end = time(ends_at);
                }
            }))
            .then_expect_error_message("ends_at must be after starts_at");
    }
}

/// Guests must be within 1..=100; both bounds are accepted.
#[test]
fn request_with_guests_outside_one_to_one_hundred_is_refused() {
    for guests in [0, 101, u32::MAX] {
        given_no_booking()
            .when(request_with(|c| {
                if let C::Request { guests: g, .. } = c {
                    *g = guests;
                }
            }))
            .then_expect_error_message("invalid guests: must be between 1 and 100");
    }
    for guests in [1, 100] {
        let result = given_no_booking()
            .when(request_with(|c| {
                if let C::Request { guests: g, .. } = c {
                    *g = guests;
                }
            }))
            .inspect_result();
        assert!(
            matches!(result.as_deref(), Ok([E::BookingRequested { .. }])),
            "{guests}"
        );
    }
}

/// A booking must cost something: zero and negative amounts are refused.
#[test]
fn request_with_a_non_positive_amount_is_refused() {
    for minor in [0, -1, i64::MIN] {
        given_no_booking()
            .when(request_with(|c| {
                if let C::Request { amount, .. } = c {
                    *amount = eur(minor);
                }
            }))
            .then_expect_error_message("invalid amount: must be positive");
    }
}

/// Partner, resource and customer name are required; blank (whitespace only) counts as empty.
#[test]
fn request_with_a_blank_partner_resource_or_customer_name_is_refused() {
    let cases: [(&str, Edit); 3] = [
        ("partner", |c| {
            if let C::Request { partner, .. } = c {
                *partner = " ".to_owned();
            }
        }),
        ("resource", |c| {
            if let C::Request { resource, .. } = c {
                resource.clear();
            }
        }),
        ("customer.name", |c| {
            if let C::Request { customer, .. } = c {
                customer.name = "\t".to_owned();
            }
        }),
    ];
    for (field, change) in cases {
        given_no_booking()
            .when(request_with(change))
            .then_expect_error(BookingError::invalid(field, "must not be empty"));
    }
}

/// The booking id and owner are required too (an empty id would leave the booking "not existing").
#[test]
fn request_with_a_blank_booking_id_or_owner_is_refused() {
    given_no_booking()
        .when(request_with(|c| {
            if let C::Request { booking_id, .. } = c {
                booking_id.clear();
            }
        }))
        .then_expect_error_message("invalid booking_id: must not be empty");
    given_no_booking()
        .when(request_with(|c| {
            if let C::Request { owner, .. } = c {
                owner.clear();
            }
        }))
        .then_expect_error_message("invalid owner: must not be empty");
}

/// Names longer than 200 characters are refused.
#[test]
fn request_with_an_overlong_resource_is_refused() {
    given_no_booking()
        .when(request_with(|c| {
            if let C::Request { resource, .. } = c {
                *resource = "r".repeat(201);
            }
        }))
        .then_expect_error_message("invalid resource: must be at most 200 characters");
}

/// Every command but Request needs an existing booking, and says NotFound otherwise.
#[test]
fn commands_on_a_missing_booking_are_refused_as_not_found() {
    let commands = vec![
        C::RecordReservationRequested {
            attempt: 1,
            at: time("2026-11-01T10:00:00Z"),
        },
        C::RecordReservationOutcomeUnknown {
            attempt: 1,
            reason: "timeout".to_owned(),
        },
        partner_report(PartnerReportedStatus::Confirmed, Some("r-1"), CONFIRMED_AT),
        captured("pay-1"),
        C::CompleteCompensation,
        fail_compensation("x"),
        fail("x"),
        cancel("plans changed"),
    ];
    for command in commands {
        let result = given_no_booking().when(command).inspect_result();
        assert!(
            result.as_ref().is_err_and(BookingError::is_not_found),
            "{result:?}"
        );
    }
    assert_eq!(BookingError::NotFound.to_string(), "booking not found");
}

// ---- Partner reservation attempts -------------------------------------------------------------------------

/// The first reservation attempt moves a requested booking to PartnerPending.
#[test]
fn first_reservation_attempt_moves_a_requested_booking_to_partner_pending() {
    given(BookingStatus::Requested)
        .when(C::RecordReservationRequested {
            attempt: 1,
            at: time("2026-11-01T10:00:01Z"),
        })
        .then_expect_events(vec![attempt(1)]);
    assert_eq!(
        fold(history(BookingStatus::PartnerPending)).status,
        BookingStatus::PartnerPending
    );
}

/// A retry is recorded too, and the booking stays PartnerPending.
#[test]
fn reservation_retry_is_recorded_and_keeps_the_booking_pending() {
    given(BookingStatus::PartnerPending)
        .when(C::RecordReservationRequested {
            attempt: 2,
            at: time("2026-11-01T10:00:01Z"),
        })
        .then_expect_events(vec![attempt(2)]);
}

/// Once the partner answered or the booking ended, no more reservation attempts are accepted.
#[test]
fn reservation_attempt_after_the_booking_left_the_waiting_states_is_refused() {
    for status in BookingStatus::ALL
        .into_iter()
        .filter(|s| !s.awaits_partner())
    {
        given(status)
            .when(C::RecordReservationRequested {
                attempt: 2,
                at: time("2026-11-01T10:05:00Z"),
            })
            .then_expect_error(refused(status, "request a partner reservation for"));
    }
    given(BookingStatus::Confirmed)
        .when(C::RecordReservationRequested {
            attempt: 2,
            at: time("2026-11-01T10:05:00Z"),
        })
        .then_expect_error_message(
            "cannot request a partner reservation for a booking that is confirmed",
        );
}

/// `partner_attempts` counts every attempt, retries included (deliberately not idempotent, so a double
/// apply would show).
#[test]
fn partner_attempts_counts_every_reservation_attempt() {
    let booking = fold(vec![requested(), attempt(1), attempt(2), attempt(3)]);
    assert_eq!(booking.partner_attempts, 3);
    assert_eq!(booking.status, BookingStatus::PartnerPending);
}

/// A timeout is recorded as an unknown outcome; the booking stays pending (never "failed").
#[test]
fn unknown_reservation_outcome_is_recorded_and_keeps_the_booking_pending() {
    let unknown = E::PartnerReservationOutcomeUnknown {
        attempt: 1,
        reason: "timeout after 5s".to_owned(),
    };
    given(BookingStatus::PartnerPending)
        .when(C::RecordReservationOutcomeUnknown {
            attempt: 1,
            reason: "timeout after 5s".to_owned(),
        })
        .then_expect_events(vec![unknown.clone()]);
    let booking = fold([history(BookingStatus::PartnerPending), vec![unknown]].concat());
    assert_eq!(booking.status, BookingStatus::PartnerPending);
}

/// An unknown outcome only makes sense while an attempt is outstanding.
#[test]
fn unknown_reservation_outcome_outside_partner_pending_is_refused() {
    for status in BookingStatus::ALL
        .into_iter()
        .filter(|s| *s != BookingStatus::PartnerPending)
    {
        given(status)
            .when(C::RecordReservationOutcomeUnknown {
                attempt: 1,
                reason: "timeout".to_owned(),
            })
            .then_expect_error(refused(status, "record an unknown reservation outcome for"));
    }
}

// ---- Partner answers --------------------------------------------------------------------------------------

/// A confirmation confirms a pending booking and remembers the reservation id and partner time.
#[test]
fn partner_confirmation_confirms_a_pending_booking() {
    given(BookingStatus::PartnerPending)
        .when(C::ApplyPartnerStatus {
            reported: PartnerReportedStatus::Confirmed,
            reservation_id: Some("r-1".to_owned()),
            source: PartnerSource::Response,
            partner_time: time(CONFIRMED_AT),
            reason: None,
        })
        .then_expect_events(vec![confirmed()]);
    let booking = fold(history(BookingStatus::Confirmed));
    assert_eq!(booking.reservation_id.as_deref(), Some("r-1"));
    assert_eq!(booking.last_partner_status_at, Some(time(CONFIRMED_AT)));
}

/// A confirmation may arrive before we recorded our attempt (a fast callback); it still confirms.
#[test]
fn partner_confirmation_of_a_requested_booking_confirms_it() {
    given(BookingStatus::Requested)
        .when(partner_report(
            PartnerReportedStatus::Confirmed,
            Some("r-1"),
            CONFIRMED_AT,
        ))
        .then_expect_events(vec![E::PartnerConfirmed {
            reservation_id: "r-1".to_owned(),
            source: PartnerSource::Callback,
            partner_time: time(CONFIRMED_AT),
        }]);
}

/// A confirmation without a (non-blank) reservation id is refused: we could never cancel it.
#[test]
fn partner_confirmation_without_a_reservation_id_is_refused() {
    for reservation_id in [None, Some(""), Some("  ")] {
        given(BookingStatus::PartnerPending)
            .when(partner_report(
                PartnerReportedStatus::Confirmed,
                reservation_id,
                CONFIRMED_AT,
            ))
            .then_expect_error_message(
                "a partner confirmation must carry the partner's reservation id",
            );
    }
}

/// A rejection rejects a pending booking and keeps the partner's reason.
#[test]
fn partner_rejection_rejects_a_pending_booking() {
    given(BookingStatus::PartnerPending)
        .when(C::ApplyPartnerStatus {
            reported: PartnerReportedStatus::Rejected,
            reservation_id: None,
            source: PartnerSource::Lookup,
            partner_time: time(CONFIRMED_AT),
            reason: Some("sold out".to_owned()),
        })
        .then_expect_events(vec![E::PartnerRejected {
            reason: Some("sold out".to_owned()),
            source: PartnerSource::Lookup,
            partner_time: time(CONFIRMED_AT),
        }]);
    let booking = fold(history(BookingStatus::Rejected));
    assert_eq!(booking.failure_reason.as_deref(), Some("sold out"));
    assert!(booking.is_final() && !booking.holds_slot());
}

/// A repeated confirmation is recorded as a duplicate and changes nothing.
#[test]
fn duplicate_confirmation_is_ignored_and_recorded() {
    given(BookingStatus::Confirmed)
        .when(partner_report(
            PartnerReportedStatus::Confirmed,
            Some("r-1"),
            CONFIRMED_AT,
        ))
        .then_expect_events(vec![ignored(
            PartnerReportedStatus::Confirmed,
            Some("r-1"),
            CONFIRMED_AT,
            IgnoredReason::Duplicate,
        )]);
}

/// A repeated rejection is recorded as a duplicate.
#[test]
fn duplicate_rejection_is_ignored_and_recorded() {
    given(BookingStatus::Rejected)
        .when(partner_report(
            PartnerReportedStatus::Rejected,
            None,
            CONFIRMED_AT,
        ))
        .then_expect_events(vec![ignored(
            PartnerReportedStatus::Rejected,
            None,
            CONFIRMED_AT,
            IgnoredReason::Duplicate,
        )]);
}

/// A report older (by partner time) than the applied status is stale, whatever it says.
#[test]
fn report_older_than_the_applied_partner_status_is_ignored_as_stale() {
    let older = "2026-11-01T10:00:30Z";
    for reported in [
        PartnerReportedStatus::Rejected,
        PartnerReportedStatus::Confirmed,
        PartnerReportedStatus::Cancelled,
    ] {
        given(BookingStatus::Confirmed)
            .when(partner_report(reported, None, older))
            .then_expect_events(vec![ignored(reported, None, older, IgnoredReason::Stale)]);
    }
}

/// A newer rejection after the confirmation cannot undo it: recorded as out of order, still confirmed.
#[test]
fn late_rejection_after_confirmation_is_ignored_and_recorded() {
    let later = "2026-11-01T10:02:00Z";
    given(BookingStatus::Confirmed)
        .when(partner_report(PartnerReportedStatus::Rejected, None, later))
        .then_expect_events(vec![ignored(
            PartnerReportedStatus::Rejected,
            None,
            later,
            IgnoredReason::OutOfOrder,
        )]);
}

/// After our cancellation, a partner confirmation, rejection or cancellation moves nothing; a confirmation
/// keeps its reservation id in the history (that reservation still has to be released).
#[test]
fn any_partner_report_after_our_cancellation_is_ignored_and_recorded() {
    let later = "2026-11-03T00:00:00Z";
    let cases = [
        (
            PartnerReportedStatus::Confirmed,
            Some("r-2"),
            IgnoredReason::OutOfOrder,
        ),
        (
            PartnerReportedStatus::Rejected,
            None,
            IgnoredReason::OutOfOrder,
        ),
        (
            PartnerReportedStatus::Cancelled,
            Some("r-1"),
            IgnoredReason::Duplicate,
        ),
    ];
    for (reported, reservation_id, why) in cases {
        given(BookingStatus::Cancelled)
            .when(partner_report(reported, reservation_id, later))
            .then_expect_events(vec![ignored(reported, reservation_id, later, why)]);
    }
    // Also when we cancelled before the partner ever answered (no applied partner time to be stale to).
    framework()
        .given(vec![requested(), attempt(1), cancelled(None)])
        .when(partner_report(
            PartnerReportedStatus::Confirmed,
            Some("r-9"),
            CONFIRMED_AT,
        ))
        .then_expect_events(vec![ignored(
            PartnerReportedStatus::Confirmed,
            Some("r-9"),
            CONFIRMED_AT,
            IgnoredReason::OutOfOrder,
        )]);
}

/// We only cancel on our side: a partner cancellation of a confirmed or paid booking is out of order.
#[test]
fn partner_cancellation_of_a_confirmed_or_paid_booking_is_ignored_as_out_of_order() {
    let later = "2026-11-05T00:00:00Z";
    for status in [BookingStatus::Confirmed, BookingStatus::Paid] {
        given(status)
            .when(partner_report(
                PartnerReportedStatus::Cancelled,
                Some("r-1"),
                later,
            ))
            .then_expect_events(vec![ignored(
                PartnerReportedStatus::Cancelled,
                Some("r-1"),
                later,
                IgnoredReason::OutOfOrder,
            )]);
    }
}

/// A partner cancellation of a booking still waiting for the partner is recorded but moves nothing
/// (the partner gateway settles it through retries or `Fail`).
#[test]
fn partner_cancellation_of_a_waiting_booking_is_ignored_as_out_of_order() {
    for status in [BookingStatus::Requested, BookingStatus::PartnerPending] {
        given(status)
            .when(partner_report(
                PartnerReportedStatus::Cancelled,
                None,
                CONFIRMED_AT,
            ))
            .then_expect_events(vec![ignored(
                PartnerReportedStatus::Cancelled,
                None,
                CONFIRMED_AT,
                IgnoredReason::OutOfOrder,
            )]);
    }
}

/// Reports reaching a booking past confirmation (paid, compensating, rejected, failed, ...) are recorded
/// as out of order, and are never errors.
#[test]
fn newer_reports_after_the_booking_left_the_waiting_states_are_ignored_as_out_of_order() {
    let later = "2026-11-09T00:00:00Z";
    let cases = [
        (BookingStatus::Paid, PartnerReportedStatus::Confirmed),
        (BookingStatus::Paid, PartnerReportedStatus::Rejected),
        (
            BookingStatus::Compensating,
            PartnerReportedStatus::Confirmed,
        ),
        (
            BookingStatus::CompensationFailed,
            PartnerReportedStatus::Rejected,
        ),
        (BookingStatus::Rejected, PartnerReportedStatus::Confirmed),
        (BookingStatus::Failed, PartnerReportedStatus::Confirmed),
        (BookingStatus::Failed, PartnerReportedStatus::Rejected),
    ];
    for (status, reported) in cases {
        given(status)
            .when(partner_report(reported, Some("r-1"), later))
            .then_expect_events(vec![ignored(
                reported,
                Some("r-1"),
                later,
                IgnoredReason::OutOfOrder,
            )]);
    }
}

/// Ignored reports are counted and change neither the status nor the applied partner time.
#[test]
fn ignored_reports_are_counted_and_change_nothing_else() {
    let before = fold(history(BookingStatus::Confirmed));
    let after = fold(
        [
            history(BookingStatus::Confirmed),
            vec![
                ignored(
                    PartnerReportedStatus::Rejected,
                    None,
                    "2026-11-09T00:00:00Z",
                    IgnoredReason::OutOfOrder,
                ),
                ignored(
                    PartnerReportedStatus::Confirmed,
                    Some("r-1"),
                    CONFIRMED_AT,
                    IgnoredReason::Duplicate,
                ),
            ],
        ]
        .concat(),
    );
    assert_eq!(after.ignored_callbacks, 2);
    assert_eq!(
        Booking {
            ignored_callbacks: 0,
            ..after
        },
        before
    );
}

// ---- Payment ----------------------------------------------------------------------------------------------

/// A captured payment pays a confirmed booking, for the booking's amount.
#[test]
fn captured_payment_pays_a_confirmed_booking() {
    given(BookingStatus::Confirmed)
        .when(captured("pay-1"))
        .then_expect_events(vec![payment_captured()]);
    let booking = fold(history(BookingStatus::Paid));
    assert_eq!(booking.payment_id.as_deref(), Some("pay-1"));
    assert!(booking.is_final() && booking.holds_slot());
}

/// A declined payment records the decline and starts compensation for the partner reservation.
#[test]
fn declined_payment_starts_compensation() {
    given(BookingStatus::Confirmed)
        .when(declined())
        .then_expect_events(declined_and_compensating());
    let booking = fold(history(BookingStatus::Compensating));
    assert_eq!(booking.status, BookingStatus::Compensating);
    assert_eq!(booking.failure_reason.as_deref(), Some("card declined"));
    assert!(!booking.is_final() && booking.holds_slot());
}

/// The same capture again (a retried payment call) is a no-op.
#[test]
fn repeated_capture_with_the_same_payment_id_is_a_no_op() {
    given(BookingStatus::Paid)
        .when(captured("pay-1"))
        .then_expect_events(vec![]);
}

/// A paid booking refuses a different capture and a decline.
#[test]
fn other_payment_outcomes_on_a_paid_booking_are_refused() {
    for command in [captured("pay-2"), declined()] {
        given(BookingStatus::Paid)
            .when(command)
            .then_expect_error_message("cannot record a payment for a booking that is paid");
    }
}

/// Payment is only possible once confirmed.
#[test]
fn payment_outside_confirmed_is_refused() {
    for status in BookingStatus::ALL
        .into_iter()
        .filter(|s| !matches!(s, BookingStatus::Confirmed | BookingStatus::PaymentPending))
    {
        let booking = fold(history(status));
        for command in [captured("pay-1"), declined()] {
            // The same answer as the one already recorded is a no-op (a duplicate webhook).
            let repeated = match &command {
                C::RecordPayment {
                    outcome: PaymentOutcome::Captured { payment_id },
                } => booking.payment_id.as_deref() == Some(payment_id.as_str()),
                _ => booking.payment_declined,
            };
            let expectation = given(status).when(command);
            if repeated {
                expectation.then_expect_events(vec![]);
            } else {
                expectation.then_expect_error(refused(status, "record a payment for"));
            }
        }
    }
}

/// A capture must name its payment.
#[test]
fn capture_with_a_blank_payment_id_is_refused() {
    given(BookingStatus::Confirmed)
        .when(captured(""))
        .then_expect_error_message("invalid payment_id: must not be empty");
}

// ---- Compensation -----------------------------------------------------------------------------------------

/// After a cancellation the release of the partner reservation is recorded once; before, never.
#[test]
fn a_cancelled_booking_records_its_released_reservation_once() {
    let released = |id: Option<&str>| C::RecordReservationReleased {
        reservation_id: id.map(str::to_owned),
    };
    given(BookingStatus::Cancelled)
        .when(released(Some("res-1")))
        .then_expect_events(vec![E::PartnerReservationReleased {
            reservation_id: Some("res-1".to_owned()),
        }]);
    given(BookingStatus::Cancelled)
        .and(vec![E::PartnerReservationReleased {
            reservation_id: None,
        }])
        .when(released(Some("res-1")))
        .then_expect_events(vec![]);
    for status in [BookingStatus::Confirmed, BookingStatus::Paid] {
        let result = given(status).when(released(None)).inspect_result();
        assert!(
            matches!(result, Err(BookingError::InvalidTransition { .. })),
            "{status:?}: {result:?}"
        );
    }
}

/// Releasing the reservation after a declined payment cancels the booking.
#[test]
fn completed_compensation_cancels_the_booking() {
    given(BookingStatus::Compensating)
        .when(C::CompleteCompensation)
        .then_expect_events(vec![E::CompensationCompleted {}]);
    let booking = fold(
        [
            history(BookingStatus::Compensating),
            vec![E::CompensationCompleted {}],
        ]
        .concat(),
    );
    assert_eq!(booking.status, BookingStatus::Cancelled);
    assert!(!booking.holds_slot());
}

/// Giving up on compensation leaves the booking for a human.
#[test]
fn failed_compensation_needs_manual_resolution() {
    given(BookingStatus::Compensating)
        .when(fail_compensation("partner unreachable"))
        .then_expect_events(vec![E::CompensationFailed {
            reason: "partner unreachable".to_owned(),
        }]);
    let booking = fold(history(BookingStatus::CompensationFailed));
    assert_eq!(
        booking.failure_reason.as_deref(),
        Some("partner unreachable")
    );
    assert!(booking.is_final() && !booking.holds_slot());
}

/// Repeating the outcome of a compensation that already ended (a retried job) is a no-op.
#[test]
fn repeated_compensation_outcome_is_a_no_op() {
    given(BookingStatus::Compensating)
        .and(vec![E::CompensationCompleted {}])
        .when(C::CompleteCompensation)
        .then_expect_events(vec![]);
    given(BookingStatus::CompensationFailed)
        .when(fail_compensation("partner unreachable"))
        .then_expect_events(vec![]);
}

/// Compensation outcomes are refused when no compensation is running.
#[test]
fn compensation_outcomes_outside_compensating_are_refused() {
    use BookingStatus as S;
    for status in [
        S::Requested,
        S::PartnerPending,
        S::Confirmed,
        S::Paid,
        S::Rejected,
        S::Failed,
    ] {
        given(status)
            .when(C::CompleteCompensation)
            .then_expect_error(refused(status, "complete compensation for"));
    }
    for status in [
        S::Requested,
        S::PartnerPending,
        S::Confirmed,
        S::Paid,
        S::Rejected,
        S::Failed,
        S::Cancelled,
    ] {
        given(status)
            .when(fail_compensation("x"))
            .then_expect_error(refused(status, "fail compensation for"));
    }
    given(S::CompensationFailed)
        .when(C::CompleteCompensation)
        .then_expect_error_message(
            "cannot complete compensation for a booking that is compensation_failed",
        );
}

// ---- Fail -------------------------------------------------------------------------------------------------

/// A booking still waiting for the partner can fail (permanent refusal, retries exhausted).
#[test]
fn waiting_booking_can_fail() {
    for status in [BookingStatus::Requested, BookingStatus::PartnerPending] {
        given(status)
            .when(fail("retries exhausted"))
            .then_expect_events(vec![E::BookingFailed {
                reason: "retries exhausted".to_owned(),
            }]);
    }
    let booking = fold(history(BookingStatus::Failed));
    assert_eq!(booking.failure_reason.as_deref(), Some("retries exhausted"));
    assert!(booking.is_final() && !booking.holds_slot());
}

/// Failing a failed booking again (a retried job) is a no-op.
#[test]
fn repeated_failure_is_a_no_op() {
    given(BookingStatus::Failed)
        .when(fail("retries exhausted"))
        .then_expect_events(vec![]);
}

/// A booking the partner already answered for cannot fail.
#[test]
fn failure_after_the_partner_answered_is_refused() {
    use BookingStatus as S;
    for status in [
        S::Confirmed,
        S::Paid,
        S::Rejected,
        S::Cancelled,
        S::Compensating,
        S::CompensationFailed,
    ] {
        given(status)
            .when(fail("x"))
            .then_expect_error(refused(status, "fail"));
    }
}

// ---- Cancel -----------------------------------------------------------------------------------------------

/// Requested, pending and confirmed bookings can be cancelled; the reservation to release is named.
#[test]
fn cancel_from_requested_pending_or_confirmed_records_the_cancellation() {
    let cases = [
        (BookingStatus::Requested, None),
        (BookingStatus::PartnerPending, None),
        (BookingStatus::Confirmed, Some("r-1")),
    ];
    for (status, reservation_id) in cases {
        given(status)
            .when(cancel("plans changed"))
            .then_expect_events(vec![cancelled(reservation_id)]);
    }
    let booking = fold(history(BookingStatus::Cancelled));
    assert_eq!(booking.cancel_reason.as_deref(), Some("plans changed"));
    assert!(booking.is_final() && !booking.holds_slot());
}

/// Cancelling a cancelled booking succeeds without events, so a retried cancel is safe.
#[test]
fn cancel_of_a_cancelled_booking_is_a_no_op() {
    given(BookingStatus::Cancelled)
        .when(cancel("plans changed"))
        .then_expect_events(vec![]);
}

/// Bookings whose payment runs, and rejected, failed and compensating ones, cannot be cancelled.
#[test]
fn cancel_while_paying_or_after_a_final_outcome_is_refused() {
    use BookingStatus as S;
    for status in [
        S::PaymentPending,
        S::Rejected,
        S::Failed,
        S::Compensating,
        S::CompensationFailed,
    ] {
        given(status)
            .when(cancel("plans changed"))
            .then_expect_error_message(&format!("cannot cancel a booking that is {status}"));
    }
}

/// The reason is required and at most 500 characters (500 is accepted).
#[test]
fn cancel_with_a_blank_or_overlong_reason_is_refused() {
    given(BookingStatus::Confirmed)
        .when(cancel("  "))
        .then_expect_error_message("invalid reason: must not be empty");
    given(BookingStatus::Confirmed)
        .when(cancel(&"x".repeat(501)))
        .then_expect_error_message("invalid reason: must be at most 500 characters");
    let result = given(BookingStatus::Confirmed)
        .when(cancel(&"x".repeat(500)))
        .inspect_result();
    assert!(matches!(
        result.as_deref(),
        Ok([E::BookingCancelled { .. }])
    ));
}

// ---- Payment through the provider, refunds, operator resolution -------------------------------------------

/// Paying a confirmed booking hands the payment to the provider: PaymentPending, still holding the
/// slot; asking again while it runs or after it succeeded changes nothing.
#[test]
fn payment_request_makes_a_confirmed_booking_payment_pending() {
    given(BookingStatus::Confirmed)
        .when(request_payment())
        .then_expect_events(vec![payment_requested()]);
    let booking = fold(history(BookingStatus::PaymentPending));
    assert_eq!(booking.payment_key.as_deref(), Some("key-1"));
    assert!(booking.holds_slot() && !booking.is_final());
    for status in [BookingStatus::PaymentPending, BookingStatus::Paid] {
        given(status)
            .when(request_payment())
            .then_expect_events(vec![]);
    }
    for status in [
        BookingStatus::PartnerPending,
        BookingStatus::Compensating,
        BookingStatus::Cancelled,
    ] {
        given(status)
            .when(request_payment())
            .then_expect_error(refused(status, "pay for"));
    }
}

/// The provider's answer settles a pending payment: captured pays it, declined starts compensation;
/// the same answer again (a duplicate webhook) is a no-op.
#[test]
fn provider_answer_settles_a_pending_payment_once() {
    given(BookingStatus::PaymentPending)
        .when(captured("pay-1"))
        .then_expect_events(vec![payment_captured()]);
    given(BookingStatus::PaymentPending)
        .when(declined())
        .then_expect_events(declined_and_compensating());
    for status in [
        BookingStatus::Compensating,
        BookingStatus::CompensationFailed,
    ] {
        given(status).when(declined()).then_expect_events(vec![]);
    }
    for status in [BookingStatus::Paid, BookingStatus::Refunded] {
        given(status)
            .when(captured("pay-1"))
            .then_expect_events(vec![]);
    }
    given(BookingStatus::Paid)
        .when(captured("pay-2"))
        .then_expect_error(refused(BookingStatus::Paid, "record a payment for"));
}

/// An unknown outcome is recorded while the payment is pending and ignored once it settled.
#[test]
fn unknown_payment_outcome_is_recorded_only_while_pending() {
    let unknown = || C::RecordPaymentOutcomeUnknown {
        attempt: 1,
        reason: "provider timed out".to_owned(),
    };
    given(BookingStatus::PaymentPending)
        .when(unknown())
        .then_expect_events(vec![E::PaymentOutcomeUnknown {
            attempt: 1,
            reason: "provider timed out".to_owned(),
        }]);
    given(BookingStatus::Paid)
        .when(unknown())
        .then_expect_events(vec![]);
    // While stuck the booking says why; once captured it does not any more.
    let unknown_event = E::PaymentOutcomeUnknown {
        attempt: 1,
        reason: "provider timed out".to_owned(),
    };
    let stuck = fold(
        [
            history(BookingStatus::PaymentPending),
            vec![unknown_event.clone()],
        ]
        .concat(),
    );
    assert_eq!(
        stuck.failure_reason.as_deref(),
        Some("payment outcome unknown: provider timed out")
    );
    let paid = fold(
        [
            history(BookingStatus::PaymentPending),
            vec![unknown_event, payment_captured()],
        ]
        .concat(),
    );
    assert_eq!(paid.failure_reason, None);
}

/// Cancelling a paid booking cancels it and starts the refund; the slot is free at once.
#[test]
fn cancelling_a_paid_booking_starts_its_refund() {
    given(BookingStatus::Paid)
        .when(cancel("plans changed"))
        .then_expect_events(vec![cancelled(Some("r-1")), refund_started()]);
    let booking = fold(history(BookingStatus::Refunding));
    assert!(!booking.holds_slot() && !booking.is_final());
    given(BookingStatus::PaymentPending)
        .when(cancel("plans changed"))
        .then_expect_error(refused(BookingStatus::PaymentPending, "cancel"));
    for status in [BookingStatus::Refunding, BookingStatus::Refunded] {
        given(status)
            .when(cancel("again"))
            .then_expect_events(vec![]);
    }
}

/// The provider's refund answer ends a refunding booking; repeating it is a no-op.
#[test]
fn refund_outcome_ends_a_refunding_booking() {
    let refunded = |id: &str| C::RecordRefund {
        outcome: RefundOutcome::Refunded {
            refund_id: id.to_owned(),
        },
    };
    given(BookingStatus::Refunding)
        .when(refunded("re-1"))
        .then_expect_events(vec![E::RefundCompleted {
            refund_id: "re-1".to_owned(),
        }]);
    given(BookingStatus::Refunded)
        .when(refunded("re-1"))
        .then_expect_events(vec![]);
    given(BookingStatus::Refunding)
        .when(C::RecordRefund {
            outcome: RefundOutcome::Failed {
                reason: "provider refused".to_owned(),
            },
        })
        .then_expect_events(vec![E::RefundFailed {
            reason: "provider refused".to_owned(),
        }]);
    let booking = fold(history(BookingStatus::Refunded));
    assert!(booking.is_final() && !booking.holds_slot());
    assert_eq!(booking.refund_id.as_deref(), Some("re-1"));
    given(BookingStatus::Paid)
        .when(refunded("re-1"))
        .then_expect_error(refused(BookingStatus::Paid, "record a refund for"));
}

/// An operator resolves only what no automatic path can settle, to the statuses that make sense.
#[test]
fn operator_resolution_is_limited_to_stuck_statuses() {
    use BookingStatus as S;
    let resolve = |status| C::Resolve {
        status,
        reason: "checked with the partner by phone".to_owned(),
    };
    for (from, to) in [
        (S::Requested, S::Failed),
        (S::PartnerPending, S::Failed),
        (S::PartnerPending, S::Cancelled),
        (S::PaymentPending, S::Cancelled),
        (S::Compensating, S::Cancelled),
        (S::CompensationFailed, S::Cancelled),
        (S::Refunding, S::Refunded),
        (S::RefundFailed, S::Refunded),
    ] {
        given(from)
            .when(resolve(to))
            .then_expect_events(vec![E::BookingResolved {
                status: to,
                reason: "checked with the partner by phone".to_owned(),
            }]);
        let booking = fold(
            [
                history(from),
                vec![E::BookingResolved {
                    status: to,
                    reason: "x".to_owned(),
                }],
            ]
            .concat(),
        );
        assert_eq!(booking.status, to);
        assert!(!booking.holds_slot());
    }
    for (from, to) in [
        (S::Confirmed, S::Failed),
        (S::Paid, S::Cancelled),
        (S::PartnerPending, S::Paid),
        (S::Refunding, S::Cancelled),
    ] {
        let result = given(from).when(resolve(to)).inspect_result();
        assert!(
            matches!(
                result,
                Err(BookingError::Invalid {
                    field: "status",
                    ..
                })
            ),
            "{from} -> {to}: {result:?}"
        );
    }
}

/// After a cancellation, failure or refund the reservation can be recorded as released, once.
#[test]
fn reservation_release_is_recorded_after_every_status_that_gives_it_back() {
    use BookingStatus as S;
    for status in S::ALL {
        let result = given(status)
            .when(C::RecordReservationReleased {
                reservation_id: Some("r-1".to_owned()),
            })
            .inspect_result();
        assert_eq!(
            result.is_ok(),
            status.releases_reservation(),
            "{status}: {result:?}"
        );
    }
}

// ---- State, statuses and serialization --------------------------------------------------------------------

/// Folding a request fills in every field readers use; a default booking does not exist.
#[test]
fn requested_booking_state_holds_the_request() {
    assert!(!Booking::default().exists());
    assert!(!Booking::default().holds_slot() && !Booking::default().is_final());
    let booking = fold(vec![requested()]);
    assert!(booking.exists());
    assert_eq!(booking.id, "b-1");
    assert_eq!(booking.owner, "user-1");
    assert_eq!(booking.status, BookingStatus::Requested);
    assert_eq!(
        (booking.partner.as_str(), booking.resource.as_str()),
        ("acme-hotels", "room-42")
    );
    assert_eq!(booking.starts_at, time("2026-12-01T15:00:00Z"));
    assert_eq!(booking.ends_at, time("2026-12-03T11:00:00Z"));
    assert_eq!(booking.guests, 2);
    assert_eq!(booking.amount, Some(eur(25000)));
    assert_eq!(booking.customer, Some(ada()));
    assert!(booking.holds_slot() && !booking.is_final());
}

/// Final and slot-holding statuses are exactly the documented sets.
#[test]
fn final_and_slot_holding_statuses_are_the_documented_sets() {
    use BookingStatus as S;
    let finals: Vec<_> = S::ALL.into_iter().filter(S::is_final).collect();
    assert_eq!(
        finals,
        [
            S::Paid,
            S::Rejected,
            S::Failed,
            S::Cancelled,
            S::CompensationFailed,
            S::Refunded,
            S::RefundFailed
        ]
    );
    let holding: Vec<_> = S::ALL.into_iter().filter(S::holds_slot).collect();
    assert_eq!(
        holding,
        [
            S::Requested,
            S::PartnerPending,
            S::Confirmed,
            S::PaymentPending,
            S::Paid,
            S::Compensating
        ]
    );
    for status in S::ALL {
        assert_eq!(S::parse(status.as_str()), Some(status));
        assert_eq!(fold(history(status)).status, status, "history of {status}");
    }
}

/// `as_str` is the REST/serde name of each status.
#[test]
fn status_names_match_their_json() {
    for status in BookingStatus::ALL {
        assert_eq!(
            serde_json::to_value(status).expect("serializes"),
            json!(status.as_str())
        );
    }
    assert_eq!(
        BookingStatus::CompensationFailed.as_str(),
        "compensation_failed"
    );
    assert_eq!(BookingStatus::default(), BookingStatus::Requested);
}

/// `BookingRequested` is stored in the documented 2.0 JSON shape and reads back equal.
#[test]
fn booking_requested_serializes_to_the_documented_json() {
    let value = serde_json::to_value(requested()).expect("serializes");
    assert_eq!(
        value,
        json!({"BookingRequested": {
            "booking_id": "b-1", "owner": "user-1", "partner": "acme-hotels", "resource": "room-42",
            "starts_at": "2026-12-01T15:00:00Z", "ends_at": "2026-12-03T11:00:00Z", "guests": 2,
            "amount": {"minor": 25000, "currency": "EUR"},
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "at": "2026-11-01T10:00:00Z"
        }})
    );
    assert_eq!(
        serde_json::from_value::<E>(value).expect("deserializes"),
        requested()
    );
}

/// An ignored callback is stored with snake_case vocabulary, and a unit-like event as an empty object.
#[test]
fn ignored_callback_and_compensation_events_serialize_to_the_documented_json() {
    let event = ignored(
        PartnerReportedStatus::Rejected,
        None,
        "2026-11-01T10:05:00Z",
        IgnoredReason::OutOfOrder,
    );
    let value = serde_json::to_value(&event).expect("serializes");
    assert_eq!(
        value,
        json!({"PartnerCallbackIgnored": {"reported": "rejected", "reservation_id": null,
            "source": "callback", "partner_time": "2026-11-01T10:05:00Z", "reason": "out_of_order"}})
    );
    assert_eq!(
        serde_json::from_value::<E>(value).expect("deserializes"),
        event
    );
    assert_eq!(
        serde_json::to_value(E::CompensationCompleted {}).expect("serializes"),
        json!({"CompensationCompleted": {}})
    );
}

/// Every event in every canned history survives a JSON round trip, and the booking state does too
/// (snapshots store it as JSON).
#[test]
fn every_event_and_the_state_round_trip_through_json() {
    for status in BookingStatus::ALL {
        for event in history(status) {
            let json = serde_json::to_string(&event).expect("serializes");
            assert_eq!(
                serde_json::from_str::<E>(&json).expect("deserializes"),
                event
            );
        }
        let state = fold(history(status));
        let json = serde_json::to_string(&state).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Booking>(&json).expect("deserializes"),
            state
        );
    }
}

/// Event types are the variant names; only `BookingRequested` is at version 2.0.
#[test]
fn event_types_are_variant_names_and_only_booking_requested_is_version_2() {
    assert_eq!(requested().event_type(), "BookingRequested");
    assert_eq!(requested().event_version(), "2.0");
    let value = serde_json::to_value(E::CompensationCompleted {}).expect("serializes");
    assert!(value.get("CompensationCompleted").is_some());
    for status in BookingStatus::ALL {
        for event in history(status).into_iter().skip(1) {
            let tag = serde_json::to_value(&event).expect("serializes");
            assert!(tag.get(event.event_type()).is_some(), "{event:?}");
            assert_eq!(event.event_version(), "1.0", "{event:?}");
        }
    }
}
