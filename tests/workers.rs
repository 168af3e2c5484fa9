//! The workers inside `trailbook serve`: a booking goes to `confirmed` through the in-process partner
//! simulator; jobs and their execution log are visible over GraphQL; a dead job is replayed over REST.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use domain::values::Role;
use serde_json::json;
use support::{booking_body, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_confirms_a_booking_and_operators_see_and_replay_jobs() {
    // Arrange
    let s = Server::serve().await;
    let created = s
        .create_booking("kim", "w-1", &booking_body("room-w1", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let operator = s.operator();

    // Act 1: the booking goes all the way to confirmed, with no help.
    let started = Instant::now();
    let booking = loop {
        let r = s.get(&format!("/v1/bookings/{id}"), &s.client("kim")).await;
        if r.body["status"] == "confirmed" {
            break r.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {} after 30 s",
            r.body["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Act 2: a job no handler serves, failed for good by hand, is a dead letter an operator replays.
    let spec = workers::JobSpec::new("test.never", "test-never-1", json!({"why": "test"}))
        .queue("test")
        .max_attempts(1);
    let enqueued = workers::jobs::enqueue(&s.db.pool, &spec).await.unwrap();
    let claimed = workers::jobs::claim(
        &s.db.pool,
        "test",
        &["test.never".to_owned()],
        "test-worker",
        Duration::from_secs(30),
        1,
    )
    .await
    .unwrap();
    workers::jobs::fail(&s.db.pool, &claimed[0], "boom", Duration::ZERO, false)
        .await
        .unwrap();
    let jobs_query = "query($id: ID!) {
        reserve: jobs(kind: \"partner.reserve\", state: SUCCEEDED) { nodes { kind state attempts { outcome } } }
        dead: deadLetters { id kind state lastError attempts { attempt outcome error workerId } }
        job(id: $id) { state attemptCount maxAttempts }
        statusBoard { jobs { queue state count } } }";
    let before = s
        .graphql(
            Some(&operator),
            jobs_query,
            json!({"id": enqueued.id.to_string()}),
        )
        .await;
    let client_replay = s
        .post(
            &format!("/v1/jobs/{}/replay", enqueued.id),
            &s.client("kim"),
            &json!({}),
            &[],
        )
        .await;
    let replayed = s
        .post(
            &format!("/v1/jobs/{}/replay", enqueued.id),
            &operator,
            &json!({}),
            &[],
        )
        .await;
    let again = s
        .post(
            &format!("/v1/jobs/{}/replay", enqueued.id),
            &operator,
            &json!({}),
            &[],
        )
        .await;
    let after = s
        .graphql(
            Some(&s.token(Role::Support, "sue")),
            jobs_query,
            json!({"id": enqueued.id.to_string()}),
        )
        .await;

    // Assert
    assert_eq!(booking["status"], "confirmed");
    assert!(booking["reservation_id"].is_string(), "{booking}");
    let reserve = before["data"]["reserve"]["nodes"].as_array().unwrap();
    assert!(
        reserve
            .iter()
            .any(|j| j["attempts"][0]["outcome"] == "succeeded"),
        "{before}"
    );
    let dead = before["data"]["dead"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{before}");
    assert_eq!(dead[0]["kind"], "test.never");
    assert_eq!(dead[0]["lastError"], "boom");
    assert_eq!(
        dead[0]["attempts"],
        json!([{"attempt": 1, "outcome": "dead", "error": "boom", "workerId": "test-worker"}])
    );
    let board_jobs = before["data"]["statusBoard"]["jobs"].as_array().unwrap();
    assert!(
        board_jobs.contains(&json!({"queue": "test", "state": "dead", "count": 1})),
        "{before}"
    );
    client_replay.assert_problem(403);
    assert_eq!(replayed.status, 200, "{:?}", replayed.body);
    assert_eq!(replayed.body["state"], "queued");
    assert_eq!(replayed.body["replays"], 1);
    again.assert_problem(409);
    assert_eq!(after["data"]["dead"], json!([]), "{after}");
    assert_eq!(after["data"]["job"]["state"], "QUEUED");
    assert_eq!(after["data"]["job"]["attemptCount"], 0);
}

/// A visit completed through `trailbook serve` gets its PDF report and its e-mail with no help: both files
/// land in the data dir, the e-mail carries the Message-ID recorded on the visit, and the history shows
/// the side effects as events caused by the completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_and_emails_the_report_of_a_completed_visit() {
    // Arrange
    let data_dir = std::env::temp_dir().join(format!("trailbook-e2e-{}", uuid::Uuid::now_v7()));
    let data = data_dir.to_str().unwrap().to_owned();
    let s = Server::start_part("serve", &[("TRAILBOOK_DATA_DIR", &data)]).await;
    let op = s.operator();
    let created = s
        .post(
            "/v1/visits",
            &op,
            &support::visit_body(),
            &[("Idempotency-Key", "w-visit-1")],
        )
        .await;
    let id = created.body["visit_id"].as_str().unwrap().to_string();

    // Act
    for (step, body) in [
        ("check-in", json!({})),
        ("start", json!({})),
        (
            "complete",
            json!({"summary": "Common cold. Rest.", "diagnosis_codes": ["J06.9"]}),
        ),
    ] {
        let r = s
            .post(&format!("/v1/visits/{id}/{step}"), &op, &body, &[])
            .await;
        assert_eq!(r.status, 200, "{step}: {:?}", r.body);
    }
    let started = Instant::now();
    let visit = loop {
        let r = s.get(&format!("/v1/visits/{id}"), &op).await;
        if r.body["email_status"] == "done" {
            break r.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "report {} / e-mail {} after 30 s",
            r.body["report_status"],
            r.body["email_status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert
    assert_eq!(visit["report_status"], "done");
    let pdf = std::fs::read(data_dir.join("reports").join(format!("{id}.pdf"))).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let mails: Vec<_> = std::fs::read_dir(data_dir.join("mail"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    let message_id: String =
        sqlx::query_scalar("select message_id from notifications where aggregate_id = $1")
            .bind(&id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(mails[0].contains(&format!("Message-ID: {message_id}")));
    assert!(mails[0].contains("grace@example.com"));
    let events = s.event_types("visit", &id).await;
    assert_eq!(
        &events[events.len() - 3..],
        ["VisitCompleted", "ReportGenerated", "ReportSent"]
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `serve --no-workers` (for deployments running `trailbook workers` apart): commands and reads work, no
/// job is enqueued or run here, so a booking waits in `requested` for a workers process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_workers_leaves_side_effects_to_a_workers_process() {
    let s = Server::start_part("serve", &[("TRAILBOOK_NO_WORKERS", "true")]).await;
    let created = s
        .create_booking("kim", "w-nw-1", &booking_body("room-nw", 1))
        .await;
    assert_eq!(created.status, 202);
    let id = created.body["booking_id"].as_str().unwrap().to_string();

    tokio::time::sleep(Duration::from_millis(1500)).await;

    let booking = s.get(&format!("/v1/bookings/{id}"), &s.client("kim")).await;
    assert_eq!(booking.body["status"], "requested");
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no reactor runs in this process");
}
