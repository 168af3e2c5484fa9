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
