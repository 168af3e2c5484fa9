//! Given/when/then tests of the [`Visit`] aggregate, each named for the rule it proves, refusals included.
//! Most start from a canned history (`history(status)`, a shortest event list that leaves a visit in
//! `status`) and check the events a command records or the error it is refused with, and the state the
//! events fold to.
//!
//! # Layout
//! - Fixtures: commands, events and histories shared by the tests (`given(status)` starts a test from a
//!   visit in `status`), and the test that every canned history folds to its status.
//! - Schedule: validation of a new visit.
//! - Status transitions: check-in, consultation, completion, cancellation and no-show, with their refusals.
//! - Side effects: the report and the e-mail of a completed visit, their retries and late outcomes.
//! - Statuses and serialization: the status names and sets, the stored JSON, the schema.

use chrono::{DateTime, Utc};
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::json;

use super::{Patient, SideEffectStatus, Visit, VisitCommand, VisitError, VisitEvent, VisitStatus};
use crate::schema::AggregateSchema;
use crate::values::Email;

// ---- Fixtures ---------------------------------------------------------------------------------------------

type E = VisitEvent;
/// Changes one field of a command.
type Edit = fn(&mut C);
type C = VisitCommand;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const OTHER_SHA: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

fn framework() -> TestFramework<Visit> {
    TestFramework::with(())
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().expect("test timestamps are valid RFC 3339")
}

fn at() -> DateTime<Utc> {
    time("2026-12-01T09:31:00Z")
}

fn patient() -> Patient {
    Patient {
        id: "p-1".to_owned(),
        name: "Grace Hopper".to_owned(),
        email: Email::parse("grace@example.com").expect("valid address"),
    }
}

fn schedule() -> C {
    C::Schedule {
        visit_id: "v-1".to_owned(),
        owner: "user-1".to_owned(),
        patient: patient(),
        clinician: "dr-grey".to_owned(),
        scheduled_at: time("2026-12-01T09:30:00Z"),
        at: time("2026-11-20T08:00:00Z"),
    }
}

fn scheduled() -> E {
    E::VisitScheduled {
        visit_id: "v-1".to_owned(),
        owner: "user-1".to_owned(),
        patient: patient(),
        clinician: "dr-grey".to_owned(),
        scheduled_at: time("2026-12-01T09:30:00Z"),
        at: time("2026-11-20T08:00:00Z"),
    }
}

fn complete(summary: &str, codes: &[&str]) -> C {
    C::Complete {
        summary: summary.to_owned(),
        diagnosis_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
        at: at(),
    }
}

fn completed() -> E {
    E::VisitCompleted {
        summary: "Common cold.".to_owned(),
        diagnosis_codes: vec!["J06.9".to_owned()],
        at: at(),
    }
}

fn report_generated(sha256: &str) -> E {
    E::ReportGenerated {
        document_id: "doc-1".to_owned(),
        sha256: sha256.to_owned(),
        bytes: 2048,
    }
}

fn record_report(sha256: &str) -> C {
    C::RecordReportGenerated {
        document_id: "doc-1".to_owned(),
        sha256: sha256.to_owned(),
        bytes: 2048,
    }
}

fn cancel(reason: &str) -> C {
    C::Cancel {
        reason: reason.to_owned(),
        at: at(),
    }
}

fn cancelled() -> E {
    E::VisitCancelled {
        reason: "patient ill".to_owned(),
        at: at(),
    }
}

fn record_sent(message_id: &str) -> C {
    C::RecordReportSent {
        message_id: message_id.to_owned(),
    }
}

fn report_sent() -> E {
    E::ReportSent {
        message_id: "m-1".to_owned(),
    }
}

/// A shortest history that leaves a visit in `status`.
fn history(status: VisitStatus) -> Vec<E> {
    use VisitStatus as S;
    let checked_in = vec![scheduled(), E::PatientCheckedIn { at: at() }];
    let in_consultation = [
        checked_in.clone(),
        vec![E::ConsultationStarted { at: at() }],
    ]
    .concat();
    match status {
        S::Scheduled => vec![scheduled()],
        S::CheckedIn => checked_in,
        S::InConsultation => in_consultation,
        S::Completed => [in_consultation, vec![completed()]].concat(),
        S::Cancelled => vec![scheduled(), cancelled()],
        S::NoShow => vec![scheduled(), E::VisitMarkedNoShow { at: at() }],
    }
}

/// The test framework for a visit in `status`, reached through `history(status)`.
fn given(status: VisitStatus) -> AggregateTestExecutor<Visit> {
    framework().given(history(status))
}

/// The test framework for an id under which no visit exists yet.
fn given_no_visit() -> AggregateTestExecutor<Visit> {
    framework().given_no_previous_events()
}

/// Every status but `except`, in lifecycle order.
fn all_but(except: VisitStatus) -> impl Iterator<Item = VisitStatus> {
    VisitStatus::ALL.into_iter().filter(move |s| *s != except)
}

/// The completed history plus `more`.
fn completed_and(more: Vec<E>) -> Vec<E> {
    [history(VisitStatus::Completed), more].concat()
}

fn fold(events: Vec<E>) -> Visit {
    let mut visit = Visit::default();
    for event in events {
        visit.apply(event);
    }
    visit
}

fn refused(from: VisitStatus, action: &'static str) -> VisitError {
    VisitError::InvalidTransition { from, action }
}

fn report_failed(attempt: u32, final_attempt: bool) -> E {
    E::ReportGenerationFailed {
        attempt,
        error: "renderer crashed".to_owned(),
        final_attempt,
    }
}

fn email_failed(attempt: u32, final_attempt: bool) -> E {
    E::ReportEmailFailed {
        attempt,
        error: "smtp 451".to_owned(),
        final_attempt,
    }
}

/// Each canned history really ends in the status it is named after (the other tests rely on it).
#[test]
fn each_canned_history_folds_to_its_status() {
    for status in VisitStatus::ALL {
        assert_eq!(fold(history(status)).status, status);
    }
}

// ---- Schedule ---------------------------------------------------------------------------------------------

/// A valid schedule on a new id records `VisitScheduled`; the state holds patient, clinician and time.
#[test]
fn schedule_on_a_new_visit_records_visit_scheduled() {
    given_no_visit()
        .when(schedule())
        .then_expect_events(vec![scheduled()]);
    let visit = fold(vec![scheduled()]);
    assert!(visit.exists() && !visit.is_final());
    assert_eq!(visit.patient, Some(patient()));
    assert_eq!(visit.clinician, "dr-grey");
    assert_eq!(visit.scheduled_at, Some(time("2026-12-01T09:30:00Z")));
    assert_eq!(visit.report_status, SideEffectStatus::NotRequired);
}

/// The same schedule through the async path (as the store runs it) gives the same event.
#[tokio::test]
async fn schedule_through_the_async_handler_records_visit_scheduled() {
    given_no_visit()
        .when_async(schedule())
        .await
        .then_expect_events(vec![scheduled()]);
}

/// A visit id can be scheduled only once.
#[test]
fn schedule_on_an_existing_visit_is_refused_as_already_exists() {
    framework()
        .given(vec![scheduled()])
        .when(schedule())
        .then_expect_error_message("visit already exists");
}

/// Patient id, patient name and clinician are required.
#[test]
fn schedule_with_a_blank_patient_id_name_or_clinician_is_refused() {
    let cases: [(&str, Edit); 5] = [
        ("patient.id", |c| {
            if let C::Schedule { patient, .. } = c {
                patient.id.clear();
            }
        }),
        ("patient.name", |c| {
            if let C::Schedule { patient, .. } = c {
                patient.name = "  ".to_owned();
            }
        }),
        ("clinician", |c| {
            if let C::Schedule { clinician, .. } = c {
                clinician.clear();
            }
        }),
        ("visit_id", |c| {
            if let C::Schedule { visit_id, .. } = c {
                visit_id.clear();
            }
        }),
        ("owner", |c| {
            if let C::Schedule { owner, .. } = c {
                owner.clear();
            }
        }),
    ];
    for (field, change) in cases {
        let mut command = schedule();
        change(&mut command);
        given_no_visit()
            .when(command)
            .then_expect_error_message(&format!("invalid {field}: must not be empty"));
    }
}

/// Every command but Schedule needs an existing visit.
#[test]
fn commands_on_a_missing_visit_are_refused_as_not_found() {
    let commands = vec![
        C::CheckIn { at: at() },
        C::StartConsultation { at: at() },
        complete("Common cold.", &["J06.9"]),
        cancel("x"),
        C::MarkNoShow { at: at() },
        record_report(SHA),
        C::RecordReportFailed {
            attempt: 1,
            error: "x".to_owned(),
            final_attempt: false,
        },
        record_sent("m-1"),
        C::RecordEmailFailed {
            attempt: 1,
            error: "x".to_owned(),
            final_attempt: false,
        },
    ];
    for command in commands {
        let result = given_no_visit().when(command).inspect_result();
        assert!(
            result.as_ref().is_err_and(VisitError::is_not_found),
            "{result:?}"
        );
    }
}

// ---- Status transitions -----------------------------------------------------------------------------------

/// Scheduled → CheckedIn → InConsultation, one event each.
#[test]
fn check_in_then_start_consultation_move_the_visit_forward() {
    given(VisitStatus::Scheduled)
        .when(C::CheckIn { at: at() })
        .then_expect_events(vec![E::PatientCheckedIn { at: at() }]);
    given(VisitStatus::CheckedIn)
        .when(C::StartConsultation { at: at() })
        .then_expect_events(vec![E::ConsultationStarted { at: at() }]);
}

/// Check-in is only possible from Scheduled.
#[test]
fn check_in_outside_scheduled_is_refused() {
    for status in all_but(VisitStatus::Scheduled) {
        given(status)
            .when(C::CheckIn { at: at() })
            .then_expect_error(refused(status, "check in"));
    }
}

/// A consultation can only start after check-in.
#[test]
fn start_consultation_outside_checked_in_is_refused() {
    for status in all_but(VisitStatus::CheckedIn) {
        given(status)
            .when(C::StartConsultation { at: at() })
            .then_expect_error(refused(status, "start a consultation for"));
    }
    given(VisitStatus::Scheduled)
        .when(C::StartConsultation { at: at() })
        .then_expect_error_message("cannot start a consultation for a visit that is scheduled");
}

/// Completing records summary and codes and makes the report and the e-mail pending.
#[test]
fn complete_records_the_outcome_and_makes_side_effects_pending() {
    given(VisitStatus::InConsultation)
        .when(complete("Common cold.", &["J06.9"]))
        .then_expect_events(vec![completed()]);
    let visit = fold(history(VisitStatus::Completed));
    assert_eq!(visit.summary.as_deref(), Some("Common cold."));
    assert_eq!(visit.diagnosis_codes, ["J06.9"]);
    assert_eq!(visit.report_status, SideEffectStatus::Pending);
    assert_eq!(visit.email_status, SideEffectStatus::Pending);
    assert!(visit.is_final());
}

/// Completion is only possible during the consultation.
#[test]
fn complete_outside_in_consultation_is_refused() {
    for status in all_but(VisitStatus::InConsultation) {
        given(status)
            .when(complete("Common cold.", &["J06.9"]))
            .then_expect_error(refused(status, "complete"));
    }
}

/// The summary is required and at most 10 000 characters.
#[test]
fn complete_with_a_blank_or_overlong_summary_is_refused() {
    given(VisitStatus::InConsultation)
        .when(complete(" ", &[]))
        .then_expect_error_message("invalid summary: must not be empty");
    given(VisitStatus::InConsultation)
        .when(complete(&"s".repeat(10_001), &[]))
        .then_expect_error_message("invalid summary: must be at most 10000 characters");
    let result = given(VisitStatus::InConsultation)
        .when(complete(&"s".repeat(10_000), &[]))
        .inspect_result();
    assert!(matches!(result.as_deref(), Ok([E::VisitCompleted { .. }])));
}

/// ICD-10 shaped codes are accepted: letter, two digits, optional '.' and 1–4 alphanumerics.
#[test]
fn complete_accepts_icd10_shaped_codes() {
    let codes = ["J06.9", "J06", "S72.001A", "Z00.00", "A00.1b"];
    let result = given(VisitStatus::InConsultation)
        .when(complete("ok", &codes))
        .inspect_result();
    assert!(
        matches!(result.as_deref(), Ok([E::VisitCompleted { .. }])),
        "{result:?}"
    );
}

/// Codes of another shape are refused, naming their position (not the code itself).
#[test]
fn complete_with_a_malformed_diagnosis_code_is_refused() {
    for bad in [
        "j06.9",
        "J6.9",
        "J069",
        "J06.",
        "J06.12345",
        "JJ6.9",
        "J06-9",
        "",
        "J06.9 ",
        "Ü06.9",
        "J0٣",
    ] {
        given(VisitStatus::InConsultation)
            .when(complete("ok", &["J06.9", bad]))
            .then_expect_error_message(
                "invalid diagnosis_codes: code at position 1 is not an ICD-10 code like \"J06.9\"",
            );
    }
}

/// At most 20 codes (20 pass, 21 fail).
#[test]
fn complete_with_more_than_twenty_codes_is_refused() {
    let twenty = ["J06.9"; 20];
    let result = given(VisitStatus::InConsultation)
        .when(complete("ok", &twenty))
        .inspect_result();
    assert!(result.is_ok());
    given(VisitStatus::InConsultation)
        .when(complete("ok", &["J06.9"; 21]))
        .then_expect_error_message("invalid diagnosis_codes: at most 20 codes are allowed");
}

/// Scheduled and checked-in visits can be cancelled.
#[test]
fn cancel_from_scheduled_or_checked_in_records_the_cancellation() {
    for status in [VisitStatus::Scheduled, VisitStatus::CheckedIn] {
        given(status)
            .when(cancel("patient ill"))
            .then_expect_events(vec![cancelled()]);
    }
    let visit = fold(history(VisitStatus::Cancelled));
    assert_eq!(visit.cancel_reason.as_deref(), Some("patient ill"));
    assert!(visit.is_final());
}

/// Cancelling a cancelled visit succeeds without events (safe under retries).
#[test]
fn cancel_of_a_cancelled_visit_is_a_no_op() {
    given(VisitStatus::Cancelled)
        .when(cancel("patient ill"))
        .then_expect_events(vec![]);
}

/// A completed visit (the contract's 422 case), a no-show, or a running consultation cannot be cancelled.
#[test]
fn cancel_of_a_completed_no_show_or_running_visit_is_refused() {
    for status in [
        VisitStatus::Completed,
        VisitStatus::NoShow,
        VisitStatus::InConsultation,
    ] {
        given(status)
            .when(cancel("patient ill"))
            .then_expect_error(refused(status, "cancel"));
    }
    given(VisitStatus::Completed)
        .when(cancel("patient ill"))
        .then_expect_error_message("cannot cancel a visit that is completed");
}

/// The cancellation reason is required and at most 500 characters.
#[test]
fn cancel_with_a_blank_or_overlong_reason_is_refused() {
    for (reason, message) in [
        (String::new(), "invalid reason: must not be empty"),
        (
            "r".repeat(501),
            "invalid reason: must be at most 500 characters",
        ),
    ] {
        given(VisitStatus::Scheduled)
            .when(C::Cancel { reason, at: at() })
            .then_expect_error_message(message);
    }
}

/// A scheduled visit can be marked as a no-show.
#[test]
fn no_show_of_a_scheduled_visit_is_recorded() {
    given(VisitStatus::Scheduled)
        .when(C::MarkNoShow { at: at() })
        .then_expect_events(vec![E::VisitMarkedNoShow { at: at() }]);
    assert!(fold(history(VisitStatus::NoShow)).is_final());
}

/// Only a scheduled visit can be a no-show (the patient cannot be absent once checked in).
#[test]
fn no_show_outside_scheduled_is_refused() {
    for status in all_but(VisitStatus::Scheduled) {
        given(status)
            .when(C::MarkNoShow { at: at() })
            .then_expect_error(refused(status, "record a no-show for"));
    }
}

// ---- Side effects -----------------------------------------------------------------------------------------

/// A generated report is recorded and marks the report done.
#[test]
fn generated_report_is_recorded_and_marks_the_report_done() {
    given(VisitStatus::Completed)
        .when(record_report(SHA))
        .then_expect_events(vec![report_generated(SHA)]);
    let visit = fold(completed_and(vec![report_generated(SHA)]));
    assert_eq!(visit.report_status, SideEffectStatus::Done);
    assert_eq!(visit.report_sha256.as_deref(), Some(SHA));
    assert_eq!(visit.report_document_id.as_deref(), Some("doc-1"));
}

/// The same report again (a retried job) is a no-op; a different one (a replayed job) is recorded.
#[test]
fn same_report_again_is_a_no_op_and_a_regenerated_one_is_recorded() {
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(record_report(SHA))
        .then_expect_events(vec![]);
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(record_report(OTHER_SHA))
        .then_expect_events(vec![report_generated(OTHER_SHA)]);
}

/// A report can be generated after a final failure (an operator replayed the job).
#[test]
fn report_generated_after_a_final_failure_is_recorded() {
    framework()
        .given(completed_and(vec![report_failed(3, true)]))
        .when(record_report(SHA))
        .then_expect_events(vec![report_generated(SHA)]);
}

/// Reports exist only for completed visits.
#[test]
fn side_effects_of_a_visit_that_is_not_completed_are_refused() {
    for status in all_but(VisitStatus::Completed) {
        let cases = [
            (record_report(SHA), "record a generated report for"),
            (
                C::RecordReportFailed {
                    attempt: 1,
                    error: "x".to_owned(),
                    final_attempt: false,
                },
                "record a report failure for",
            ),
            (record_sent("m-1"), "record a sent report for"),
            (
                C::RecordEmailFailed {
                    attempt: 1,
                    error: "x".to_owned(),
                    final_attempt: false,
                },
                "record an e-mail failure for",
            ),
        ];
        for (command, action) in cases {
            given(status)
                .when(command)
                .then_expect_error(refused(status, action));
        }
    }
}

/// A report must name its document and carry a 64-hex-digit SHA-256.
#[test]
fn generated_report_with_a_bad_document_id_or_digest_is_refused() {
    given(VisitStatus::Completed)
        .when(C::RecordReportGenerated {
            document_id: String::new(),
            sha256: SHA.to_owned(),
            bytes: 1,
        })
        .then_expect_error_message("invalid document_id: must not be empty");
    for sha in [
        "",
        "abc",
        &SHA[1..],
        &format!("{}g", &SHA[1..]),
        &format!("{SHA}0"),
    ] {
        given(VisitStatus::Completed)
            .when(record_report(sha))
            .then_expect_error_message("invalid sha256: must be 64 hexadecimal digits");
    }
}

/// A failed attempt counts and keeps the report pending, unless it was the final attempt.
#[test]
fn report_failures_count_attempts_and_fail_only_on_the_final_one() {
    given(VisitStatus::Completed)
        .when(C::RecordReportFailed {
            attempt: 1,
            error: "renderer crashed".to_owned(),
            final_attempt: false,
        })
        .then_expect_events(vec![report_failed(1, false)]);
    let retrying = fold(completed_and(vec![
        report_failed(1, false),
        report_failed(2, false),
    ]));
    assert_eq!(
        (retrying.report_attempts, retrying.report_status),
        (2, SideEffectStatus::Pending)
    );
    let failed = fold(completed_and(vec![
        report_failed(1, false),
        report_failed(2, true),
    ]));
    assert_eq!(
        (failed.report_attempts, failed.report_status),
        (2, SideEffectStatus::Failed)
    );
}

/// A late failure after the report was generated changes nothing.
#[test]
fn report_failure_after_the_report_was_generated_is_a_no_op() {
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(C::RecordReportFailed {
            attempt: 2,
            error: "late".to_owned(),
            final_attempt: true,
        })
        .then_expect_events(vec![]);
}

/// Sending the generated report is recorded and marks the e-mail done.
#[test]
fn sent_report_is_recorded_and_marks_the_email_done() {
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(record_sent("m-1"))
        .then_expect_events(vec![report_sent()]);
    let visit = fold(completed_and(vec![report_generated(SHA), report_sent()]));
    assert_eq!(visit.email_status, SideEffectStatus::Done);
    assert_eq!(visit.message_id.as_deref(), Some("m-1"));
}

/// The same message id again (a retried job) is a no-op.
#[test]
fn same_sent_report_again_is_a_no_op() {
    framework()
        .given(completed_and(vec![report_generated(SHA), report_sent()]))
        .when(record_sent("m-1"))
        .then_expect_events(vec![]);
}

/// A report cannot have been sent before it was generated, and a send must name its message.
#[test]
fn sent_report_before_generation_or_without_message_id_is_refused() {
    for before in [vec![], vec![report_failed(1, true)]] {
        framework()
            .given(completed_and(before))
            .when(record_sent("m-1"))
            .then_expect_error(VisitError::ReportNotGenerated);
    }
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(record_sent(" "))
        .then_expect_error_message("invalid message_id: must not be empty");
}

/// E-mail failures count attempts; only the final one marks the e-mail failed.
#[test]
fn email_failures_count_attempts_and_fail_only_on_the_final_one() {
    framework()
        .given(completed_and(vec![report_generated(SHA)]))
        .when(C::RecordEmailFailed {
            attempt: 1,
            error: "smtp 451".to_owned(),
            final_attempt: false,
        })
        .then_expect_events(vec![email_failed(1, false)]);
    let retrying = fold(completed_and(vec![
        report_generated(SHA),
        email_failed(1, false),
    ]));
    assert_eq!(
        (retrying.email_attempts, retrying.email_status),
        (1, SideEffectStatus::Pending)
    );
    let failed = fold(completed_and(vec![
        report_generated(SHA),
        email_failed(1, false),
        email_failed(2, true),
    ]));
    assert_eq!(
        (failed.email_attempts, failed.email_status),
        (2, SideEffectStatus::Failed)
    );
    assert_eq!(failed.report_status, SideEffectStatus::Done);
}

/// A late e-mail failure after the report was sent changes nothing.
#[test]
fn email_failure_after_the_report_was_sent_is_a_no_op() {
    framework()
        .given(completed_and(vec![report_generated(SHA), report_sent()]))
        .when(C::RecordEmailFailed {
            attempt: 2,
            error: "late".to_owned(),
            final_attempt: false,
        })
        .then_expect_events(vec![]);
}

// ---- Statuses and serialization ---------------------------------------------------------------------------

/// `as_str` is the REST/serde name of each status; final statuses are Completed, Cancelled, NoShow.
#[test]
fn status_names_match_their_json_and_finals_are_documented() {
    for status in VisitStatus::ALL {
        assert_eq!(
            serde_json::to_value(status).expect("serializes"),
            json!(status.as_str())
        );
    }
    for status in SideEffectStatus::ALL {
        assert_eq!(
            serde_json::to_value(status).expect("serializes"),
            json!(status.as_str())
        );
    }
    let finals: Vec<_> = VisitStatus::ALL
        .into_iter()
        .filter(VisitStatus::is_final)
        .collect();
    assert_eq!(
        finals,
        [
            VisitStatus::Completed,
            VisitStatus::Cancelled,
            VisitStatus::NoShow
        ]
    );
    assert_eq!(SideEffectStatus::default(), SideEffectStatus::NotRequired);
    assert!(!Visit::default().exists() && !Visit::default().is_final());
}

/// `VisitCompleted` is stored in the documented JSON shape, and every event is version 1.0 and tagged
/// with its type.
#[test]
fn visit_events_serialize_to_the_documented_json() {
    assert_eq!(
        serde_json::to_value(completed()).expect("serializes"),
        json!({"VisitCompleted": {"summary": "Common cold.", "diagnosis_codes": ["J06.9"],
            "at": "2026-12-01T09:31:00Z"}})
    );
    let all = completed_and(vec![
        report_failed(1, false),
        report_generated(SHA),
        email_failed(1, false),
        report_sent(),
    ]);
    let all = [
        all,
        history(VisitStatus::Cancelled),
        history(VisitStatus::NoShow),
    ]
    .concat();
    for event in all {
        let value = serde_json::to_value(&event).expect("serializes");
        assert!(value.get(event.event_type()).is_some(), "{event:?}");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(
            serde_json::from_value::<E>(value).expect("deserializes"),
            event
        );
    }
    let state = fold(completed_and(vec![report_generated(SHA)]));
    let json = serde_json::to_string(&state).expect("serializes");
    assert_eq!(
        serde_json::from_str::<Visit>(&json).expect("deserializes"),
        state
    );
}

/// Visits have no upcasters yet.
#[test]
fn visit_schema_has_no_upcasters() {
    assert!(Visit::upcasters().is_empty());
}
