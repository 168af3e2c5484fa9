//! The REST command API over real HTTP against the real binary and real PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use domain::values::Role;
use futures_util::future::join_all;
use serde_json::{json, Value};
use support::{booking_body, visit_body, Server};

/// Create answers 202 with the contract's body and a Location that serves the folded state with ETag.
#[tokio::test]
async fn a_booking_is_created_read_and_cancelled() {
    let s = Server::start().await;
    let ada = s.client("ada");
    let created = s
        .create_booking("ada", "k-1", &booking_body("room-1", 1))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(created.body["status"], "requested");
    assert_eq!(created.body["version"], 1);
    assert!(created.body["position"].as_i64().unwrap() > 0);
    let location = created.header("location").unwrap().to_string();
    assert_eq!(location, format!("/v1/bookings/{id}"));

    let read = s.get(&location, &ada).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("etag"), Some("\"1\""));
    assert_eq!(read.body["status"], "requested");
    let unchanged = s
        .get_with(&location, &ada, &[("If-None-Match", "\"1\"")])
        .await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some("\"1\""));
    assert_eq!(
        read.body["amount"],
        json!({"minor": 25000, "currency": "EUR"})
    );

    let cancelled = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "plans changed"}),
            &[],
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(
        cancelled.body,
        json!({"booking_id": id, "status": "cancelled", "version": 2, "position": cancelled.body["position"]})
    );
    let again = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "again"}),
            &[],
        )
        .await;
    assert_eq!(
        (again.status, again.body["version"].as_u64()),
        (200, Some(2)),
        "cancelling twice changes nothing"
    );
}

/// The same key and body give the same answer; the same key with another body is 422.
#[tokio::test]
async fn idempotency_key_replays_the_answer_and_refuses_another_body() {
    let s = Server::start().await;
    let first = s
        .create_booking("ada", "key-A", &booking_body("room-2", 1))
        .await;
    let second = s
        .create_booking("ada", "key-A", &booking_body("room-2", 1))
        .await;
    assert_eq!((first.status, second.status), (202, 202));
    assert_eq!(first.body, second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("location"), second.header("location"));

    let other = s
        .create_booking("ada", "key-A", &booking_body("room-3", 1))
        .await;
    other.assert_problem(422);
    assert_eq!(other.body["code"], "idempotency_key_reused");

    // Keys are per client: another client's identical key is a different booking.
    let bob = s
        .create_booking("bob", "key-A", &booking_body("room-4", 1))
        .await;
    assert_eq!(bob.status, 202);
    assert_ne!(bob.body["booking_id"], first.body["booking_id"]);
}

/// 50 concurrent creates with one key: exactly one booking, 50 identical answers.
#[tokio::test]
async fn fifty_concurrent_creates_with_one_key_make_one_booking() {
    let s = Server::start().await;
    let body = booking_body("room-5", 3);
    let replies = join_all((0..50).map(|_| s.create_booking("ada", "same-key", &body))).await;
    for r in &replies {
        assert_eq!(r.status, 202, "{:?}", r.body);
        assert_eq!(r.body, replies[0].body);
    }
    let bookings: i64 = sqlx::query_scalar(
        "select count(distinct aggregate_id) from events where aggregate_type = 'booking'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(bookings, 1);
    let id = replies[0].body["booking_id"].as_str().unwrap();
    assert_eq!(s.event_types("booking", id).await, ["BookingRequested"]);
}

/// A 409 `slot_taken` names the booking holding the slot only to a caller who may see it: another client
/// learns that the room is taken, not which booking (nor whose) holds it; the holder's owner and operators
/// see its id.
#[tokio::test]
async fn a_taken_slot_names_its_booking_only_to_those_who_may_see_it() {
    let s = Server::start().await;
    let held = s
        .create_booking("ada", "k-ada", &booking_body("room-7", 10))
        .await;
    assert_eq!(held.status, 202, "{:?}", held.body);
    let holder = held.body["booking_id"].as_str().unwrap().to_owned();

    let bob = s
        .create_booking("bob", "k-bob", &booking_body("room-7", 10))
        .await;
    bob.assert_problem(409);
    assert_eq!(bob.body["code"], "slot_taken");
    assert!(bob.body.get("conflicting_id").is_none(), "{:?}", bob.body);
    assert!(
        !bob.body.to_string().contains(&holder),
        "bob's answer names ada's booking: {}",
        bob.body
    );

    let ada = s
        .create_booking("ada", "k-ada-2", &booking_body("room-7", 10))
        .await;
    ada.assert_problem(409);
    assert_eq!(ada.body["conflicting_id"], holder.as_str());
}

/// 30 concurrent overlapping requests for one room: exactly one wins; the others get 409 naming it. After
/// the winner is cancelled the slot is free again.
#[tokio::test]
async fn overlapping_bookings_of_one_resource_cannot_both_exist() {
    let s = Server::start().await;
    let s = &s;
    let replies = join_all((0..30).map(|i| {
        let body = booking_body("room-9", 10 + (i % 2));
        let key = format!("k-{i}");
        async move { s.create_booking("ada", &key, &body).await }
    }))
    .await;
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 202).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let winner = winners[0].body["booking_id"].as_str().unwrap().to_string();
    for r in replies.iter().filter(|r| r.status != 202) {
        r.assert_problem(409);
        assert_eq!(r.body["code"], "slot_taken");
        assert_eq!(
            r.body["conflicting_id"],
            winner.as_str(),
            "ada may see her own booking"
        );
    }
    // an adjacent, non-overlapping period is fine ([12th 15:00, 14th 11:00) vs [10th, 12th 11:00) / [11th, 13th 11:00))
    assert_eq!(
        s.create_booking("ada", "k-later", &booking_body("room-9", 14))
            .await
            .status,
        202
    );

    s.post(
        &format!("/v1/bookings/{winner}/cancel"),
        &s.client("ada"),
        &json!({"reason": "freeing"}),
        &[],
    )
    .await;
    assert_eq!(
        s.create_booking("ada", "k-after", &booking_body("room-9", 10))
            .await
            .status,
        202
    );
}

async fn confirmed_booking(s: &Server, owner: &str, key: &str, room: &str) -> String {
    let created = s.create_booking(owner, key, &booking_body(room, 20)).await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let cb = s
        .callback(
            &json!({"callback_id": format!("cb-{id}"), "booking_id": id, "reservation_id": "res-1",
                          "status": "confirmed", "occurred_at": chrono::Utc::now()}),
        )
        .await;
    assert_eq!(
        (cb.status, cb.body["status"].as_str()),
        (200, Some("confirmed")),
        "{:?}",
        cb.body
    );
    id
}

/// 20 concurrent cancels and payments on one booking end in one consistent state with exactly one more
/// event: no lost update, no duplicate, no 5xx. (A payment hands the booking to the provider: once it
/// runs, a cancel is refused until the outcome is in; once cancelled, a payment is refused.)
#[tokio::test]
async fn concurrent_cancels_and_payments_end_consistently() {
    let s = Server::start().await;
    let id = confirmed_booking(&s, "ada", "k-race", "room-20").await;
    let ada = s.client("ada");
    let s = &s;
    let replies = join_all((0..20).map(|i| {
        let (path, body) = if i % 2 == 0 {
            (
                format!("/v1/bookings/{id}/cancel"),
                json!({"reason": "race"}),
            )
        } else {
            (
                format!("/v1/bookings/{id}/payment"),
                json!({"card": "4242424242424242"}),
            )
        };
        let ada = ada.clone();
        async move { s.post(&path, &ada, &body, &[]).await }
    }))
    .await;
    for r in &replies {
        assert!(
            r.status == 200 || r.status == 202 || r.status == 422,
            "{} {:?}",
            r.status,
            r.body
        );
    }
    let events = s.event_types("booking", &id).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let last = events[2].as_str();
    assert!(
        last == "PaymentRequested" || last == "BookingCancelled",
        "{events:?}"
    );
    let state = s.get(&format!("/v1/bookings/{id}"), &ada).await;
    let expected = if last == "PaymentRequested" {
        "payment_pending"
    } else {
        "cancelled"
    };
    assert_eq!(state.body["status"], expected);
    assert_eq!(state.body["version"], 3);
}

/// A payment is handed to the payment provider: 202 `payment_pending` (the outcome arrives as events,
/// see the workers' tests), and a card that is not a card number is refused naming the field.
#[tokio::test]
async fn a_payment_is_handed_to_the_provider_and_a_bad_card_is_refused() {
    let s = Server::start().await;
    let id = confirmed_booking(&s, "ada", "k-decline", "room-21").await;
    let r = s
        .post(
            &format!("/v1/bookings/{id}/payment"),
            &s.client("ada"),
            &json!({"card": "4000000000000002"}),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("payment_pending")),
        "{:?}",
        r.body
    );
    assert_eq!(
        s.event_types("booking", &id)
            .await
            .last()
            .map(String::as_str),
        Some("PaymentRequested")
    );
    let bad = s
        .post(
            &format!("/v1/bookings/{id}/payment"),
            &s.client("ada"),
            &json!({"card": "1234"}),
            &[],
        )
        .await;
    bad.assert_problem(422);
    assert_eq!(bad.body["field"], "card");
}

/// `If-Match` with a stale version is 412 carrying the current version; the current one passes.
#[tokio::test]
async fn stale_if_match_is_412() {
    let s = Server::start().await;
    let id = confirmed_booking(&s, "ada", "k-412", "room-22").await;
    let ada = s.client("ada");
    let stale = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "x"}),
            &[("If-Match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412);
    assert_eq!(stale.body["current_version"], 2);
    let fresh = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "x"}),
            &[("If-Match", "2")],
        )
        .await;
    assert_eq!(fresh.status, 200);
    let garbage = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "x"}),
            &[("If-Match", "abc")],
        )
        .await;
    garbage.assert_problem(400);
}

/// Every auth case: no token, bad token, wrong role, someone else's booking (404, not 403), operator
/// rights, operator-only routes.
#[tokio::test]
async fn authentication_and_roles_are_enforced() {
    let s = Server::start().await;
    let created = s
        .create_booking("ada", "k-auth", &booking_body("room-30", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let path = format!("/v1/bookings/{id}");

    let none = support::Reply::from(s.http.get(s.url(&path)).send().await.unwrap()).await;
    none.assert_problem(401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    s.get(&path, "not-a-token").await.assert_problem(401);
    let forged = service_kit::Tokens::new(b"other-secret-0123456789abcdef-0123456789")
        .unwrap()
        .issue(Role::Operator, "mallory", chrono::Duration::hours(1))
        .unwrap();
    s.get(&path, &forged).await.assert_problem(401);

    let bob = s.client("bob");
    let hidden = s.get(&path, &bob).await;
    hidden.assert_problem(404);
    s.post(
        &format!("{path}/cancel"),
        &bob,
        &json!({"reason": "mine now"}),
        &[],
    )
    .await
    .assert_problem(404);
    s.get("/v1/bookings/does-not-exist", &bob)
        .await
        .assert_problem(404);

    let support_token = s.token(Role::Support, "sam");
    assert_eq!(s.get(&path, &support_token).await.status, 200);
    s.post(
        "/v1/bookings",
        &support_token,
        &booking_body("room-31", 1),
        &[("Idempotency-Key", "k")],
    )
    .await
    .assert_problem(403);
    s.get(&path, &s.token(Role::Partner, "acme"))
        .await
        .assert_problem(403);

    let op = s.operator();
    assert_eq!(s.get(&path, &op).await.status, 200);
    assert_eq!(
        s.post(
            &format!("{path}/cancel"),
            &op,
            &json!({"reason": "ops"}),
            &[]
        )
        .await
        .status,
        200
    );

    s.post("/v1/jobs/j-1/replay", &bob, &json!({}), &[])
        .await
        .assert_problem(403);
    s.post("/v1/projections/bookings/rebuild", &bob, &json!({}), &[])
        .await
        .assert_problem(403);
    s.post("/v1/jobs/j-1/replay", &op, &json!({}), &[])
        .await
        .assert_problem(400);
    s.post("/v1/jobs/999/replay", &op, &json!({}), &[])
        .await
        .assert_problem(404);
}

/// Partner callbacks: unsigned, badly signed and stale ones are 401; a valid one confirms; a duplicate
/// and a late rejection are accepted, change nothing, and are recorded in the history.
#[tokio::test]
async fn partner_callbacks_are_verified_and_never_move_a_booking_backwards() {
    let s = Server::start().await;
    let created = s
        .create_booking("ada", "k-cb", &booking_body("room-40", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let now = chrono::Utc::now();
    let confirm = json!({"callback_id": "cb-1", "booking_id": id, "reservation_id": "res-9", "status": "confirmed", "occurred_at": now});

    let raw = serde_json::to_vec(&confirm).unwrap();
    let unsigned = support::Reply::from(
        s.http
            .post(s.url("/v1/partner/callbacks"))
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    unsigned.assert_problem(401);
    let wrong = command_api::callbacks::sign(b"not-the-secret", now.timestamp(), &raw);
    let bad = support::Reply::from(
        s.http
            .post(s.url("/v1/partner/callbacks"))
            .header("x-trailbook-signature", wrong)
            .body(raw.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    bad.assert_problem(401);
    let old = command_api::callbacks::sign(
        support::PARTNER_SECRET.as_bytes(),
        now.timestamp() - 600,
        &raw,
    );
    let stale = support::Reply::from(
        s.http
            .post(s.url("/v1/partner/callbacks"))
            .header("x-trailbook-signature", old)
            .body(raw.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    stale.assert_problem(401);

    let applied = s.callback(&confirm).await;
    assert_eq!(
        (
            applied.status,
            applied.body["applied"].as_bool(),
            applied.body["status"].as_str()
        ),
        (200, Some(true), Some("confirmed"))
    );
    let duplicate = s.callback(&confirm).await;
    assert_eq!(
        (duplicate.status, duplicate.body["applied"].as_bool()),
        (200, Some(false))
    );
    let late = s
        .callback(&json!({"callback_id": "cb-0", "booking_id": id, "status": "rejected", "occurred_at": now + chrono::Duration::seconds(1), "reason": "sold out"}))
        .await;
    assert_eq!(
        (
            late.status,
            late.body["applied"].as_bool(),
            late.body["status"].as_str()
        ),
        (200, Some(false), Some("confirmed"))
    );
    assert_eq!(
        s.event_types("booking", &id).await,
        [
            "BookingRequested",
            "PartnerConfirmed",
            "PartnerCallbackIgnored",
            "PartnerCallbackIgnored"
        ]
    );
    let unknown = s.callback(&json!({"callback_id": "cb-x", "booking_id": "nope", "status": "confirmed", "reservation_id": "r", "occurred_at": now})).await;
    unknown.assert_problem(404);
}

/// The care workflow end to end, with its refusals: staff-only steps, and no cancelling a completed visit.
#[tokio::test]
async fn a_visit_runs_through_the_care_workflow() {
    let s = Server::start().await;
    let ada = s.client("ada");
    let op = s.operator();
    let created = s
        .post(
            "/v1/visits",
            &ada,
            &visit_body(),
            &[("Idempotency-Key", "v-1")],
        )
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["visit_id"].as_str().unwrap().to_string();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/visits/{id}").as_str())
    );
    assert_eq!(created.body["status"], "scheduled");

    s.post(&format!("/v1/visits/{id}/check-in"), &ada, &json!({}), &[])
        .await
        .assert_problem(403);
    for (step, status) in [("check-in", "checked_in"), ("start", "in_consultation")] {
        let r = s
            .post(&format!("/v1/visits/{id}/{step}"), &op, &json!({}), &[])
            .await;
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (200, Some(status)),
            "{step}: {:?}",
            r.body
        );
    }
    let done = s
        .post(
            &format!("/v1/visits/{id}/complete"),
            &op,
            &json!({"summary": "Common cold.", "diagnosis_codes": ["J06.9"]}),
            &[],
        )
        .await;
    assert_eq!(done.body["status"], "completed");
    let cancel = s
        .post(
            &format!("/v1/visits/{id}/cancel"),
            &ada,
            &json!({"reason": "too late"}),
            &[],
        )
        .await;
    cancel.assert_problem(422);
    let view = s.get(&format!("/v1/visits/{id}"), &ada).await;
    assert_eq!(
        (
            view.body["report_status"].as_str(),
            view.body["email_status"].as_str()
        ),
        (Some("pending"), Some("pending"))
    );

    let other = s
        .post(
            "/v1/visits",
            &ada,
            &visit_body(),
            &[("Idempotency-Key", "v-2")],
        )
        .await;
    let other_id = other.body["visit_id"].as_str().unwrap();
    let no_show = s
        .post(
            &format!("/v1/visits/{other_id}/no-show"),
            &op,
            &json!({}),
            &[],
        )
        .await;
    assert_eq!(no_show.body["status"], "no_show");
    let bad_codes = s.post("/v1/visits", &ada, &json!({"patient": {"id": "p", "name": "n", "email": "not-an-email"}, "clinician": "c", "scheduled_at": "2026-12-01T09:30:00Z"}), &[("Idempotency-Key", "v-3")]).await;
    bad_codes.assert_problem(422);
    assert_eq!(bad_codes.body["field"], "patient.email");
}

/// Bad input is 400/413/415/422 with a message naming the field; never 500.
#[tokio::test]
async fn bad_input_gets_a_clear_problem_naming_the_field() {
    let s = Server::start().await;
    let ada = s.client("ada");
    let post_raw = |body: Vec<u8>, content_type: &'static str, key: Option<&'static str>| {
        let mut req = s
            .http
            .post(s.url("/v1/bookings"))
            .bearer_auth(&ada)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move { support::Reply::from(req.send().await.unwrap()).await }
    };

    post_raw(b"{not json".to_vec(), "application/json", Some("k"))
        .await
        .assert_problem(400);
    post_raw(b"{}".to_vec(), "text/plain", Some("k"))
        .await
        .assert_problem(415);
    post_raw(
        serde_json::to_vec(&booking_body("r", 1)).unwrap(),
        "application/json",
        None,
    )
    .await
    .assert_problem(400);

    let mut unknown = booking_body("r", 1);
    unknown["colour"] = json!("blue");
    let r = post_raw(
        serde_json::to_vec(&unknown).unwrap(),
        "application/json",
        Some("k1"),
    )
    .await;
    r.assert_problem(400);
    assert!(
        r.body["detail"].as_str().unwrap().contains("colour"),
        "{:?}",
        r.body
    );

    let mut wrong_type = booking_body("r", 1);
    wrong_type["guests"] = json!("two");
    let r = post_raw(
        serde_json::to_vec(&wrong_type).unwrap(),
        "application/json",
        Some("k2"),
    )
    .await;
    r.assert_problem(400);
    assert_eq!(r.body["field"], "guests");

    let mut negative = booking_body("r", 1);
    negative["amount"]["minor"] = json!(-5);
    let r = post_raw(
        serde_json::to_vec(&negative).unwrap(),
        "application/json",
        Some("k3"),
    )
    .await;
    r.assert_problem(422);
    assert!(
        r.body["detail"].as_str().unwrap().contains("amount"),
        "{:?}",
        r.body
    );

    let mut far = booking_body("r", 1);
    far["starts_at"] = json!("99999-01-01T00:00:00Z");
    let r = post_raw(
        serde_json::to_vec(&far).unwrap(),
        "application/json",
        Some("k4"),
    )
    .await;
    r.assert_problem(422);
    assert_eq!(r.body["field"], "starts_at");

    let mut distant = booking_body("r", 1);
    distant["starts_at"] = json!("2999-01-01T00:00:00Z");
    distant["ends_at"] = json!("2999-01-02T00:00:00Z");
    let r = post_raw(
        serde_json::to_vec(&distant).unwrap(),
        "application/json",
        Some("k5"),
    )
    .await;
    r.assert_problem(422);

    // A 10 MB string: refused from its Content-Length before the body is sent (Expect: 100-continue).
    let (status, head) = oversized_post(&s.base, &ada, 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("application/problem+json"),
        "{head}"
    );

    let mut reversed = booking_body("r", 1);
    reversed["ends_at"] = json!("2026-11-30T00:00:00Z");
    let r = post_raw(
        serde_json::to_vec(&reversed).unwrap(),
        "application/json",
        Some("k7"),
    )
    .await;
    r.assert_problem(422);
    assert_eq!(r.body["field"], "ends_at");

    let r = support::Reply::from(s.http.get(s.url("/v1/nothing-here")).send().await.unwrap()).await;
    r.assert_problem(404);
}

/// The correlation id is accepted, echoed, and stored with the actor and causation on every event.
#[tokio::test]
async fn correlation_ids_reach_the_event_metadata() {
    let s = Server::start().await;
    let r = s
        .post(
            "/v1/bookings",
            &s.client("ada"),
            &booking_body("room-50", 1),
            &[("Idempotency-Key", "k"), ("X-Correlation-Id", "trace-123")],
        )
        .await;
    assert_eq!(r.header("x-correlation-id"), Some("trace-123"));
    let id = r.body["booking_id"].as_str().unwrap();
    let meta: Value = sqlx::query_scalar("select metadata from events where aggregate_id = $1")
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(meta["correlation_id"], "trace-123");
    assert_eq!(meta["actor"], json!({"subject": "ada", "role": "client"}));
    assert_eq!(meta["idempotency_key"], "k");
    assert!(meta["causation_id"].as_str().unwrap().starts_with("cmd-"));
    let generated = s.get("/v1/bookings/x", &s.client("ada")).await;
    assert!(generated
        .header("x-correlation-id")
        .is_some_and(|v| !v.is_empty()));
}

/// Past the per-token burst, requests get 429 with Retry-After; the default lets a burst of hundreds pass.
#[tokio::test]
async fn rate_limiting_answers_429_with_retry_after() {
    let s = Server::start_with(&[("TRAILBOOK_RATE_LIMIT", "1")]).await;
    let ada = s.client("ada");
    let replies = join_all((0..1100).map(|_| s.get("/v1/bookings/none", &ada))).await;
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "no 429 after 1100 requests at 1/s");
    limited[0].assert_problem(429);
    assert!(
        limited[0]
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(
        replies.iter().filter(|r| r.status == 404).count() >= 1000,
        "the burst of 1000 passes"
    );
    assert_eq!(
        s.get("/v1/bookings/none", &s.client("bob")).await.status,
        404,
        "buckets are per token"
    );

    let default = Server::start().await;
    let ada = default.client("ada");
    let replies = join_all((0..600).map(|_| default.get("/v1/bookings/none", &ada))).await;
    assert!(replies.iter().all(|r| r.status == 404));
}

/// Health, readiness, Prometheus metrics, and an OpenAPI document that lists every route.
#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let s = Server::start().await;
    s.create_booking("ada", "k", &booking_body("room-60", 1))
        .await;
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trailbook_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("trailbook_commands_total"), "{metrics}");
    let api: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let paths = api["paths"].as_object().unwrap();
    for path in [
        "/v1/bookings",
        "/v1/bookings/{id}",
        "/v1/bookings/{id}/cancel",
        "/v1/bookings/{id}/payment",
        "/v1/partner/callbacks",
        "/v1/visits",
        "/v1/visits/{id}",
        "/v1/visits/{id}/check-in",
        "/v1/visits/{id}/start",
        "/v1/visits/{id}/complete",
        "/v1/visits/{id}/cancel",
        "/v1/visits/{id}/no-show",
        "/v1/jobs/{id}/replay",
        "/v1/projections/{name}/rebuild",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let mut operation_ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let total = operation_ids.len();
    operation_ids.sort_unstable();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), total, "operationIds must be unique");
}

/// Sends headers announcing a `len`-byte JSON body with `Expect: 100-continue` and returns the status
/// and head of the answer (sending the body only if the server asks for it).
async fn oversized_post(base: &str, token: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/bookings HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: big\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    (status, answer)
}

/// When the database stops accepting connections, commands and readiness answer 503 with Retry-After,
/// and liveness stays 200.
#[tokio::test]
async fn an_unavailable_database_is_503_with_retry_after() {
    let s = Server::start().await;
    let ada = s.client("ada");
    assert_eq!(
        s.create_booking("ada", "before", &booking_body("room-70", 1))
            .await
            .status,
        202
    );
    let name = s.db.name().to_string();
    let admin_url = s.db.url.replace(&format!("/{name}"), "/postgres");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!(
        "alter database \"{name}\" allow_connections false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();

    let down = s
        .create_booking("ada", "during", &booking_body("room-71", 1))
        .await;
    down.assert_problem(503);
    assert!(down.header("retry-after").is_some());
    let read = s.get("/v1/bookings/anything", &ada).await;
    read.assert_problem(503);
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );

    sqlx::query(&format!("alter database \"{name}\" allow_connections true"))
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        s.create_booking("ada", "after", &booking_body("room-72", 1))
            .await
            .status,
        202,
        "recovers by itself"
    );
}

/// An expired key is forgotten: its stored answer is no longer replayed, and reusing it is refused with
/// a message saying so (the derived booking id still exists), never a second booking.
#[tokio::test]
async fn expired_idempotency_keys_are_not_replayed_and_cannot_create_twice() {
    let s = Server::start().await;
    let first = s
        .create_booking("ada", "old-key", &booking_body("room-80", 1))
        .await;
    assert_eq!(first.status, 202);
    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let again = s
        .create_booking("ada", "old-key", &booking_body("room-80", 1))
        .await;
    again.assert_problem(422);
    assert!(
        again.body["detail"].as_str().unwrap().contains("expired"),
        "{:?}",
        again.body
    );
    let bookings: i64 = sqlx::query_scalar("select count(distinct aggregate_id) from events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(bookings, 1);
}

/// Text PostgreSQL cannot store (a NUL character) is the client's error, in a body or in a path, never a
/// 500 (found by the fuzz test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_as_bad_input() {
    let s = Server::start().await;
    let ada = s.client("ada");
    let created = s
        .create_booking("ada", "nul-1", &booking_body("room-nul", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();

    let body = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &ada,
            &json!({"reason": "bad\u{0}reason"}),
            &[],
        )
        .await;
    let nested = s
        .create_booking("ada", "nul-2", &{
            let mut b = booking_body("room-nul-2", 5);
            b["customer"]["name"] = json!("A\u{0}da");
            b
        })
        .await;
    let path = s.get("/v1/bookings/a%00b", &ada).await;

    body.assert_problem(422);
    assert_eq!(body.body["field"], "reason", "{:?}", body.body);
    nested.assert_problem(422);
    assert_eq!(nested.body["field"], "customer.name", "{:?}", nested.body);
    assert!(path.status == 404 || path.status == 422, "{:?}", path);
    assert_ne!(path.status, 500);
}

/// SIGKILL of the server while sixteen clients create bookings (rooms of their own, one room they all
/// fight over, keys sent again): every create answered 202 before the kill is stored whole (its event, its
/// claim, its key's record naming it), and nothing is stored in part (no claim or record without events,
/// no requested booking without its claim), whatever batch the kill cut through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_acknowledged_before_a_sigkill_are_all_stored_whole() {
    // Arrange
    let mut server = Server::start_with(&[("TRAILBOOK_RATE_LIMIT", "0")]).await;
    let url = server.url("/v1/bookings");
    let token = server.client("crash-client");

    // Act: load, then kill -9 in the middle of it.
    let mut tasks = Vec::new();
    for client in 0..16_u32 {
        let (http, url, token) = (server.http.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut key_n = 0;
            for n in 0_u32.. {
                // Every fifth request repeats the previous key (a client retrying), with its body.
                if n % 5 != 4 {
                    key_n = n;
                }
                let key = format!("crash-{client}-{key_n}");
                let body = if key_n % 3 == 0 {
                    booking_body("crash-shared", 1 + (key_n * 7 + client) % 20)
                } else {
                    booking_body(&format!("crash-{client}-{key_n}"), 3)
                };
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&body)
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                let status = response.status().as_u16();
                let Ok(answer) = response.json::<Value>().await else {
                    break;
                };
                match status {
                    202 => {
                        acknowledged.push((key, answer["booking_id"].as_str().unwrap().to_owned()))
                    }
                    409 => assert_eq!(answer["code"], "slot_taken", "{answer}"),
                    other => panic!("unexpected {other}: {answer}"),
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    server.kill();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }

    // Assert: every acknowledged create is there whole...
    assert!(
        acknowledged.len() > 50,
        "only {} creates before the kill",
        acknowledged.len()
    );
    let pool = &server.db.pool;
    for (key, id) in &acknowledged {
        let (events, claims, owner): (i64, i64, Option<String>) = sqlx::query_as(
            "select (select count(*) from events where aggregate_type = 'booking' and aggregate_id = $1),
                    (select count(*) from resource_claims where booking_id = $1),
                    (select aggregate_id from idempotency_keys where idempotency_key = $2)",
        )
        .bind(id)
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(
            (events, claims, owner.as_deref()),
            (1, 1, Some(id.as_str())),
            "{key}"
        );
    }
    // ...and nothing is there in part.
    let (lone_claims, lone_records, unclaimed): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from resource_claims c where not exists
                    (select 1 from events e where e.aggregate_id = c.booking_id)),
                (select count(*) from idempotency_keys k where not exists
                    (select 1 from events e where e.aggregate_id = k.aggregate_id)),
                (select count(distinct e.aggregate_id) from events e where e.aggregate_type = 'booking'
                    and not exists (select 1 from resource_claims c where c.booking_id = e.aggregate_id))",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((lone_claims, lone_records, unclaimed), (0, 0, 0));
}

/// Every command on an existing aggregate takes an `Idempotency-Key`: concurrent and later retries with
/// the key get the first answer (`Idempotent-Replayed: true`) and write nothing more, where a retry
/// without one is refused by the new state (422). The key reused with another route, aggregate or body,
/// or first used by a create (of either kind), is 422 `idempotency_key_reused`, never a 409 "retry".
#[tokio::test(flavor = "multi_thread")]
async fn every_command_is_idempotent_by_key() {
    let s = Server::start().await;
    let op = s.operator();
    let ada = s.client("ada");
    let created = s.create_visit("ada", "v-1").await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["visit_id"].as_str().unwrap().to_string();

    let steps = [
        ("check-in", json!({})),
        ("start", json!({})),
        (
            "complete",
            json!({"summary": "Common cold.", "diagnosis_codes": ["J06.9"]}),
        ),
    ];
    for (step, body) in &steps {
        let path = format!("/v1/visits/{id}/{step}");
        let key = format!("step-{step}");
        let headers = [("Idempotency-Key", key.as_str())];
        let replies = join_all((0..4).map(|_| s.post(&path, &op, body, &headers))).await;
        let first = &replies[0];
        for r in &replies {
            assert_eq!(r.status, 200, "{step}: {:?}", r.body);
            assert_eq!(r.body, first.body, "{step}: every retry gets one answer");
        }
        let fresh = replies
            .iter()
            .filter(|r| r.header("idempotent-replayed").is_none())
            .count();
        assert_eq!(fresh, 1, "{step}: exactly one request ran the command");

        let again = s.post(&path, &op, body, &headers).await;
        assert_eq!((again.status, &again.body), (200, &first.body), "{step}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        s.post(&path, &op, body, &[]).await.assert_problem(422);
    }
    assert_eq!(
        s.event_types("visit", &id).await.len(),
        1 + steps.len(),
        "one event per command, however often it was retried"
    );

    // The key of check-in, reused: on another route, on another visit, with another body.
    let other = s.create_visit("ada", "v-2").await;
    let other_id = other.body["visit_id"].as_str().unwrap().to_string();
    for (path, body) in [
        (format!("/v1/visits/{id}/start"), json!({})),
        (format!("/v1/visits/{other_id}/check-in"), json!({})),
    ] {
        let r = s
            .post(&path, &op, &body, &[("Idempotency-Key", "step-check-in")])
            .await;
        r.assert_problem(422);
        assert_eq!(r.body["code"], "idempotency_key_reused", "{path}");
    }
    let r = s
        .post(
            &format!("/v1/visits/{id}/complete"),
            &op,
            &json!({"summary": "Something else."}),
            &[("Idempotency-Key", "step-complete")],
        )
        .await;
    assert_eq!(r.body["code"], "idempotency_key_reused", "{:?}", r.body);

    // A create's key on a command, and a booking's key on a visit create.
    let r = s
        .post(
            &format!("/v1/visits/{other_id}/cancel"),
            &ada,
            &json!({}),
            &[("Idempotency-Key", "v-1")],
        )
        .await;
    assert_eq!(r.body["code"], "idempotency_key_reused", "{:?}", r.body);
    let booked = s
        .create_booking("ada", "shared-key", &booking_body("r-1", 1))
        .await;
    assert_eq!(booked.status, 202, "{:?}", booked.body);
    let r = s
        .post(
            "/v1/visits",
            &ada,
            &visit_body(),
            &[("Idempotency-Key", "shared-key")],
        )
        .await;
    r.assert_problem(422);
    assert_eq!(r.body["code"], "idempotency_key_reused", "{:?}", r.body);

    // A booking cancel with a key, retried.
    let booking = booked.body["booking_id"].as_str().unwrap();
    let path = format!("/v1/bookings/{booking}/cancel");
    let body = json!({"reason": "plans changed"});
    let headers = [("Idempotency-Key", "cancel-1")];
    let first = s.post(&path, &ada, &body, &headers).await;
    let written = s.event_types("booking", booking).await;
    let again = s.post(&path, &ada, &body, &headers).await;
    assert_eq!((first.status, again.status), (200, 200), "{:?}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.event_types("booking", booking).await, written);
}

/// Budgets follow who a request verifiably is. Junk tokens (each a new `Authorization` header) and
/// unsigned callbacks share their address's budget instead of buying fresh buckets; once it is spent
/// they get 429 with `Retry-After`, while a verified client and a partner whose signature checks out
/// keep their own budgets (a verified subject's own limit: `rate_limiting_answers_429_with_retry_after`).
#[tokio::test(flavor = "multi_thread")]
async fn limits_follow_who_a_request_verifiably_is() {
    let s = Server::start_with(&[
        ("TRAILBOOK_ANONYMOUS_RATE_LIMIT", "2"),
        ("TRAILBOOK_RATE_LIMIT", "5"),
    ])
    .await;
    let count_429 = |replies: &[support::Reply]| replies.iter().filter(|r| r.status == 429).count();

    let mut junk = Vec::new();
    for i in 0..30 {
        junk.push(s.get("/v1/bookings/nope", &format!("junk-token-{i}")).await);
    }
    assert!(
        count_429(&junk) >= 20,
        "fresh junk tokens bought fresh buckets"
    );
    let refused = junk.iter().find(|r| r.status == 429).unwrap();
    refused.assert_problem(429);
    assert_eq!(refused.body["code"], "rate_limited");
    assert!(refused.header("retry-after").is_some());

    let mut unsigned = Vec::new();
    for i in 0..10 {
        let r = s
            .http
            .post(s.url("/v1/partner/callbacks"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"callback_id":"forged-{i}"}}"#))
            .send()
            .await
            .unwrap();
        unsigned.push(support::Reply::from(r).await);
    }
    assert_eq!(count_429(&unsigned), 10, "the address's budget is spent");

    // A verified client and a signed callback pass all the same.
    let created = s
        .create_booking("bob", "b-1", &booking_body("r-1", 1))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["booking_id"].as_str().unwrap();
    let now = chrono::Utc::now();
    let confirmed = s
        .callback(
            &json!({"callback_id": "cb-1", "booking_id": id, "reservation_id": "res-1",
            "status": "confirmed", "occurred_at": now}),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
}

/// At `RUST_LOG=trace` (every span and event of every crate), a create, a signed callback, a
/// GraphQL query and a refused forgery leave neither secret nor any token or signature in the log.
#[tokio::test(flavor = "multi_thread")]
async fn the_most_verbose_log_holds_no_secret_or_token() {
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trace-{}.log", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let s = Server::start_logging(
        "serve",
        &[("RUST_LOG", "trace"), ("TRAILBOOK_LOG_FORMAT", "json")],
        std::process::Stdio::from(log),
    )
    .await;
    let ada = s.client("ada");
    let created = s
        .create_booking("ada", "trace-1", &booking_body("r-t", 1))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let id = created.body["booking_id"].as_str().unwrap();
    let callback = json!({"callback_id": "cb-trace", "booking_id": id, "reservation_id": "res-t",
        "status": "confirmed", "occurred_at": chrono::Utc::now()});
    let raw = serde_json::to_vec(&callback).unwrap();
    let signature = command_api::callbacks::sign(
        support::PARTNER_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        &raw,
    );
    let answered = s
        .http
        .post(s.url("/v1/partner/callbacks"))
        .header("content-type", "application/json")
        .header("x-trailbook-signature", &signature)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let board = s
        .graphql(Some(&ada), "{ booking(id: \"x\") { id } }", json!({}))
        .await;
    assert!(board.get("data").is_some(), "{board}");
    s.get("/v1/bookings/x", &format!("{ada}x"))
        .await
        .assert_problem(401);
    // Let the workers log their part (reservation, callbacks) too.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(s);

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.lines().count() > 100,
        "RUST_LOG=trace logged almost nothing"
    );
    let (token_body, token_signature) = ada.rsplit_once('.').unwrap();
    let forbidden = [
        ("the JWT secret", support::JWT_SECRET.to_string()),
        ("the partner secret", support::PARTNER_SECRET.to_string()),
        ("a bearer token", ada.clone()),
        ("a token's payload and header", token_body.to_string()),
        ("a token's signature", token_signature.to_string()),
        ("a callback signature", signature.clone()),
    ];
    for (what, secret) in forbidden {
        assert!(
            !text.contains(&secret),
            "{what} is in the log: {}",
            log_path.display()
        );
    }
    let _ = std::fs::remove_file(&log_path);
}

/// Once migrations ran, `serve` works as the runtime role: every connection it holds is
/// `trailbook_app`, which reads and appends the log but cannot update, delete or truncate it, alter
/// it, or disable or drop its append-only triggers (nor touch the audit log so).
#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_role_cannot_edit_the_log() {
    let s = Server::serve().await;
    let created = s
        .create_booking("ada", "role-1", &booking_body("r-role", 1))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    // The test's own pool (as the owner) is closed: what is left of application `trailbook` is serve's.
    s.db.pool.close().await;
    let owner = sqlx::PgPool::connect(&s.db.url).await.unwrap();
    let users: Vec<String> = sqlx::query_scalar(
        "select distinct usename::text from pg_stat_activity
         where datname = current_database() and application_name = 'trailbook'
           and pid <> pg_backend_pid()",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(users, ["trailbook_app"], "serve's connections");

    let mut conn = owner.acquire().await.unwrap();
    sqlx::query("set role trailbook_app")
        .execute(&mut *conn)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(events > 0);
    for statement in [
        "alter table events disable trigger events_append_only_rows",
        "alter table events disable trigger all",
        "drop trigger events_append_only_rows on events",
        "alter table events drop column metadata",
        "update events set event_type = 'Forged'",
        "delete from events",
        "truncate events",
        "update audit_log set subject = 'x'",
        "truncate audit_log",
        "drop table events",
    ] {
        let refused = sqlx::query(statement)
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {refused}");
    }
}
