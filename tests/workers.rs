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

/// Polls booking `id` until it reaches `status` (30 s at most).
async fn wait_status(s: &Server, id: &str, owner: &str, status: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let r = s.get(&format!("/v1/bookings/{id}"), &s.client(owner)).await;
        if r.body["status"] == status {
            return r.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "booking {id} still {} after 30 s, expected {status}; events {:?}",
            r.body["status"],
            s.event_types("booking", id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Payments through the provider in `trailbook serve`, with every webhook sent twice: a good card ends
/// `paid` with one capture, a declined one is compensated to `cancelled` and its room can be booked
/// again, and cancelling the paid booking refunds it once. Operators resolve only stuck bookings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pays_declines_and_refunds_through_the_provider_with_duplicate_webhooks() {
    // Arrange
    let s = Server::serve().await;
    let sim = s.partner.clone().unwrap();
    s.http
        .put(format!("{sim}/control/faults"))
        .json(&json!({"duplicate_callbacks": 1.0}))
        .send()
        .await
        .unwrap();
    let paid = s
        .create_booking("kim", "pay-1", &booking_body("room-pay-1", 10))
        .await;
    let paid = paid.body["booking_id"].as_str().unwrap().to_string();
    let declined = s
        .create_booking("kim", "pay-2", &booking_body("room-pay-2", 10))
        .await;
    let declined = declined.body["booking_id"].as_str().unwrap().to_string();
    wait_status(&s, &paid, "kim", "confirmed").await;
    wait_status(&s, &declined, "kim", "confirmed").await;

    // Act
    let kim = s.client("kim");
    let good = s
        .post(
            &format!("/v1/bookings/{paid}/payment"),
            &kim,
            &json!({"card": "4242424242424242"}),
            &[],
        )
        .await;
    let bad = s
        .post(
            &format!("/v1/bookings/{declined}/payment"),
            &kim,
            &json!({"card": "4000000000000002"}),
            &[],
        )
        .await;
    wait_status(&s, &paid, "kim", "paid").await;
    wait_status(&s, &declined, "kim", "cancelled").await;
    let rebooked = s
        .create_booking("kim", "pay-3", &booking_body("room-pay-2", 10))
        .await;
    let not_stuck = s
        .post(
            &format!("/v1/bookings/{paid}/resolve"),
            &s.operator(),
            &json!({"status": "cancelled", "reason": "test"}),
            &[],
        )
        .await;
    let by_client = s
        .post(
            &format!("/v1/bookings/{paid}/resolve"),
            &kim,
            &json!({"status": "cancelled", "reason": "test"}),
            &[],
        )
        .await;
    let cancel = s
        .post(
            &format!("/v1/bookings/{paid}/cancel"),
            &kim,
            &json!({"reason": "plans changed"}),
            &[],
        )
        .await;
    wait_status(&s, &paid, "kim", "refunded").await;

    // Assert
    assert_eq!(
        (good.status, good.body["status"].as_str()),
        (202, Some("payment_pending"))
    );
    assert_eq!(bad.status, 202, "{:?}", bad.body);
    assert_eq!(
        rebooked.status, 202,
        "the room was not given back: {:?}",
        rebooked.body
    );
    not_stuck.assert_problem(422);
    by_client.assert_problem(403);
    assert_eq!(
        (cancel.status, cancel.body["status"].as_str()),
        (200, Some("refunding"))
    );
    let events = s.event_types("booking", &paid).await;
    for (kind, times) in [
        ("PaymentRequested", 1),
        ("PaymentCaptured", 1),
        ("RefundStarted", 1),
        ("RefundCompleted", 1),
    ] {
        assert_eq!(
            events.iter().filter(|e| *e == kind).count(),
            times,
            "{kind}: {events:?}"
        );
    }
    let ledger: serde_json::Value = s
        .http
        .get(format!("{sim}/control/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["charged_minor"], 25_000, "{ledger}");
    assert_eq!(ledger["refunded_minor"], 25_000, "{ledger}");
    let stats: serde_json::Value = s
        .http
        .get(format!("{sim}/control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["webhooks_sent"].as_u64().unwrap() >= 6, "{stats}");
}

/// With a partners file, a booking for a partner it does not list is refused at the door (422 naming
/// `partner`); a listed one is accepted. A partner with its own callback secret moves its bookings only
/// with callbacks that name it and carry its signature: the shared secret, another partner or an
/// unlisted one cannot. A partners file that does not parse stops the start with one line naming the
/// problem and exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partners_file_decides_which_partners_bookings_may_name() {
    let dir = std::env::temp_dir().join(format!("trailbook-partners-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("partners.toml");
    std::fs::write(
        &good,
        "[partners.acme-hotels]\nbase_url = \"https://api.acme.example\"\napi_key = \"k\"\n\
         callback_secret = \"acme-callback-secret-0123\"\n\
         [partners.globex-inns]\nbase_url = \"https://api.globex.example\"\n",
    )
    .unwrap();
    let s = Server::start_with(&[("TRAILBOOK_PARTNERS", good.to_str().unwrap())]).await;

    let mut unknown = booking_body("room-p1", 5);
    unknown["partner"] = json!("nobody-inn");
    let refused = s.create_booking("kim", "p-1", &unknown).await;
    let accepted = s
        .create_booking("kim", "p-2", &booking_body("room-p1", 5))
        .await;

    refused.assert_problem(422);
    assert_eq!(refused.body["field"], "partner");
    assert_eq!(accepted.status, 202);

    let id = accepted.body["booking_id"].as_str().unwrap().to_string();
    let callback = |partner: Option<&str>, secret: &str| {
        let mut body = json!({"callback_id": format!("cb-{partner:?}-{secret}"), "booking_id": id,
            "reservation_id": "res-1", "status": "confirmed", "occurred_at": chrono::Utc::now()});
        if let Some(p) = partner {
            body["partner"] = json!(p);
        }
        let raw = serde_json::to_vec(&body).unwrap();
        let signature =
            command_api::callbacks::sign(secret.as_bytes(), chrono::Utc::now().timestamp(), &raw);
        s.http
            .post(s.url("/v1/partner/callbacks"))
            .header("content-type", "application/json")
            .header("x-trailbook-signature", signature)
            .body(raw)
            .send()
    };
    let shared = callback(None, support::PARTNER_SECRET).await.unwrap();
    let named_shared = callback(Some("acme-hotels"), support::PARTNER_SECRET)
        .await
        .unwrap();
    let other = callback(Some("globex-inns"), support::PARTNER_SECRET)
        .await
        .unwrap();
    let unlisted = callback(Some("nobody-inn"), support::PARTNER_SECRET)
        .await
        .unwrap();
    let own = callback(Some("acme-hotels"), "acme-callback-secret-0123")
        .await
        .unwrap();
    assert_eq!(
        shared.status(),
        404,
        "the shared secret moved a booking of acme"
    );
    assert_eq!(named_shared.status(), 401);
    assert_eq!(other.status(), 404, "globex moved a booking of acme");
    assert_eq!(unlisted.status(), 401);
    assert_eq!(own.status(), 200);
    assert_eq!(
        s.event_types("booking", &id).await,
        ["BookingRequested", "PartnerConfirmed"]
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[partners.acme-hotels]\nbase_url = \"ftp://nope\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trailbook"))
        .args(["command-api", "--command-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", &s.db.url)
        .env("TRAILBOOK_PARTNERS", &bad)
        .env("TRAILBOOK_JWT_SECRET", support::JWT_SECRET)
        .env("TRAILBOOK_PARTNER_SECRET", support::PARTNER_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("partners.acme-hotels.base_url"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
