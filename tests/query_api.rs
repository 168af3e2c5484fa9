//! The GraphQL query API over HTTP and WebSocket against `trailbook serve`: time travel, read-your-writes,
//! pagination, auth, limits, audit, subscriptions.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use domain::values::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{booking_body, visit_body, Server};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BOOKING: &str = "query($id: ID!, $v: Int, $t: DateTime, $c: Consistency, $p: Int) {
    booking(id: $id, atVersion: $v, asOf: $t, consistency: $c, minPosition: $p) {
        id status version position source createdAt updatedAt } }";
const VISIT: &str = "query($id: ID!, $v: Int, $t: DateTime) {
    visit(id: $id, atVersion: $v, asOf: $t) { id status version reportStatus emailStatus summary updatedAt } }";

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {answer}"))
}

/// After a scripted visit, every past version from `atVersion` is the state the command API answered at
/// that step; `asOf` between two events gives the earlier one; both reads are in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_returns_every_past_version_and_is_audited() {
    // Arrange: schedule, check in, start, complete; remember each answer.
    let s = Server::serve().await;
    let ada = s.client("ada");
    let op = s.operator();
    let created = s
        .post(
            "/v1/visits",
            &ada,
            &visit_body(),
            &[("Idempotency-Key", "tt-1")],
        )
        .await;
    let id = created.body["visit_id"].as_str().unwrap().to_string();
    let mut steps = vec![(1, "SCHEDULED".to_string())];
    for (path, body) in [
        ("check-in", json!({})),
        ("start", json!({})),
        (
            "complete",
            json!({"summary": "Common cold.", "diagnosis_codes": ["J06.9"]}),
        ),
    ] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = s
            .post(&format!("/v1/visits/{id}/{path}"), &op, &body, &[])
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        steps.push((
            r.body["version"].as_i64().unwrap(),
            r.body["status"].as_str().unwrap().to_uppercase(),
        ));
    }

    // Act
    let mut versions = Vec::new();
    for (version, _) in &steps {
        versions.push(
            s.graphql(Some(&ada), VISIT, json!({"id": id, "v": version}))
                .await,
        );
    }
    let v2 = &versions[1]["data"]["visit"];
    let v3_at = versions[2]["data"]["visit"]["updatedAt"].as_str().unwrap();
    let between =
        chrono::DateTime::parse_from_rfc3339(v3_at).unwrap() - chrono::Duration::microseconds(1);
    let as_of = s
        .graphql(
            Some(&ada),
            VISIT,
            json!({"id": id, "t": between.to_rfc3339()}),
        )
        .await;
    let before_it_existed = s
        .graphql(
            Some(&ada),
            VISIT,
            json!({"id": id, "t": "2000-01-01T00:00:00Z"}),
        )
        .await;
    let beyond = s
        .graphql(Some(&ada), VISIT, json!({"id": id, "v": 99}))
        .await;
    let both = s
        .graphql(
            Some(&ada),
            VISIT,
            json!({"id": id, "v": 1, "t": "2030-01-01T00:00:00Z"}),
        )
        .await;
    let audit = s
        .graphql(
            Some(&s.token(Role::Support, "sue")),
            "query($id: ID!) { auditLog(aggregateType: VISIT, id: $id) { subject role action detail } }",
            json!({"id": id}),
        )
        .await;

    // Assert
    for ((version, status), answer) in steps.iter().zip(&versions) {
        let visit = &answer["data"]["visit"];
        assert_eq!(visit["version"], *version, "{answer}");
        assert_eq!(visit["status"], *status, "{answer}");
    }
    assert_eq!(versions[3]["data"]["visit"]["summary"], "Common cold.");
    assert_eq!(versions[3]["data"]["visit"]["reportStatus"], "PENDING");
    assert!(versions[2]["data"]["visit"]["summary"].is_null());
    assert_eq!(
        as_of["data"]["visit"], *v2,
        "asOf just before event 3 is version 2"
    );
    assert!(
        before_it_existed["data"]["visit"].is_null(),
        "{before_it_existed}"
    );
    assert_eq!(
        beyond["data"]["visit"]["version"], 4,
        "a version beyond the head is the head"
    );
    assert_eq!(code(&both), "BAD_USER_INPUT");
    let entries = audit["data"]["auditLog"].as_array().unwrap();
    assert_eq!(entries.len(), steps.len() + 3, "{audit}");
    assert!(entries
        .iter()
        .all(|e| e["subject"] == "ada" && e["action"] == "time_travel"));
}

/// Command → position → query with `minPosition` sees the write, every time, over 200 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_reads_your_own_writes_every_time() {
    let s = Server::serve().await;
    let bob = s.client("bob");
    let mut misses = Vec::new();
    for i in 0..200 {
        let created = s
            .create_booking(
                "bob",
                &format!("ryw-{i}"),
                &booking_body(&format!("r-{i}"), 1),
            )
            .await;
        let id = created.body["booking_id"].as_str().unwrap().to_string();
        let position = created.body["position"].as_i64().unwrap();
        let answer = s
            .graphql(Some(&bob), BOOKING, json!({"id": id, "p": position}))
            .await;
        let booking = &answer["data"]["booking"];
        if booking["id"] != id.as_str() || booking["source"] != "READ_MODEL" {
            misses.push(answer);
        }
    }
    assert!(
        misses.is_empty(),
        "{} misses, first: {}",
        misses.len(),
        misses[0]
    );
}

/// Lists page by cursor with no repeats or gaps, count and filter; strong reads fold the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_page_by_cursor_and_filter() {
    // Arrange: 7 of carol's bookings (2 cancelled), 1 of dave's.
    let s = Server::serve().await;
    let carol = s.client("carol");
    let mut ids = Vec::new();
    let mut last = 0;
    for i in 0..7 {
        let r = s
            .create_booking(
                "carol",
                &format!("p-{i}"),
                &booking_body(&format!("room-{i}"), 1),
            )
            .await;
        ids.push(r.body["booking_id"].as_str().unwrap().to_string());
        last = r.body["position"].as_i64().unwrap();
    }
    for id in &ids[..2] {
        let r = s
            .post(
                &format!("/v1/bookings/{id}/cancel"),
                &carol,
                &json!({"reason": "x"}),
                &[],
            )
            .await;
        last = r.body["position"].as_i64().unwrap();
    }
    let dave = s
        .create_booking("dave", "d-1", &booking_body("room-d", 1))
        .await;
    let page_query =
        "query($after: String, $p: Int) { bookings(first: 3, after: $after, minPosition: $p) {
        totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";

    // Act
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let answer = s
            .graphql(Some(&carol), page_query, json!({"after": after, "p": last}))
            .await;
        let conn = &answer["data"]["bookings"];
        assert_eq!(conn["totalCount"], 7, "{answer}");
        for edge in conn["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_string());
        }
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    let cancelled = s
        .graphql(
            Some(&carol),
            "{ bookings(filter: {status: CANCELLED, partner: \"acme-hotels\", customer: \"ada@example.com\"}) { totalCount nodes { id status } } }",
            json!({}),
        )
        .await;
    let everyone = s
        .graphql(
            Some(&s.operator()),
            "query($p: Int) { bookings(minPosition: $p) { totalCount } }",
            json!({"p": dave.body["position"]}),
        )
        .await;
    let strong = s
        .graphql(Some(&carol), BOOKING, json!({"id": ids[0], "c": "STRONG"}))
        .await;
    let bad_cursor = s
        .graphql(Some(&carol), page_query, json!({"after": "not-a-cursor"}))
        .await;

    // Assert
    assert_eq!(pages, 3);
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");
    assert_eq!(
        cancelled["data"]["bookings"]["totalCount"], 2,
        "{cancelled}"
    );
    assert_eq!(
        everyone["data"]["bookings"]["totalCount"], 8,
        "operators see all"
    );
    assert_eq!(strong["data"]["booking"]["source"], "EVENT_STORE");
    assert_eq!(strong["data"]["booking"]["status"], "CANCELLED");
    assert_eq!(code(&bad_cursor), "BAD_USER_INPUT");
}

/// Tokens and roles decide what is readable; too-deep, too-complex and too-large queries are refused with
/// a code; others' bookings are invisible; support reads history with who did what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_limits_are_enforced() {
    let s = Server::start_part("serve", &[("TRAILBOOK_MIN_POSITION_TIMEOUT_MS", "300")]).await;
    let created = s
        .create_booking("erin", "a-1", &booking_body("room-a", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let strong = json!({"id": id, "c": "STRONG"});
    let history = "query($id: ID!) { history(aggregateType: BOOKING, id: $id) {
        sequence globalPosition eventType eventVersion recordedAt payload metadata actor correlationId causationId } }";
    // `ofType` nests without end: 16 levels, beyond the depth limit of 15.
    let deep = format!(
        "{{ __schema {{ types {{ {}name{} }} }} }}",
        "ofType { ".repeat(16),
        " }".repeat(16)
    );
    let wide: String = (0..10)
        .map(|i| format!("a{i}: bookings(first: 100) {{ edges {{ node {{ id status version partner resource guests owner startsAt endsAt createdAt updatedAt }} }} }} "))
        .collect();

    let anonymous = s.graphql(None, BOOKING, strong.clone()).await;
    let forged = s
        .graphql(Some("not.a.token"), BOOKING, strong.clone())
        .await;
    let other_client = s
        .graphql(Some(&s.client("frank")), BOOKING, strong.clone())
        .await;
    let partner = s
        .graphql(
            Some(&s.token(Role::Partner, "acme")),
            BOOKING,
            strong.clone(),
        )
        .await;
    let client_history = s
        .graphql(Some(&s.client("erin")), history, json!({"id": id}))
        .await;
    let operator_history = s
        .graphql(Some(&s.operator()), history, json!({"id": id}))
        .await;
    let support_history = s
        .graphql(
            Some(&s.token(Role::Support, "sue")),
            history,
            json!({"id": id}),
        )
        .await;
    let client_board = s
        .graphql(
            Some(&s.client("erin")),
            "{ statusBoard { counts { status } } }",
            json!({}),
        )
        .await;
    let too_deep = s.graphql(Some(&s.operator()), &deep, json!({})).await;
    let too_complex = s
        .graphql(Some(&s.operator()), &format!("{{ {wide} }}"), json!({}))
        .await;
    let too_large = s
        .graphql(
            Some(&s.operator()),
            "{ bookings(first: 101) { totalCount } }",
            json!({}),
        )
        .await;
    let unknown_field = s
        .graphql(Some(&s.operator()), "{ bookings { nope } }", json!({}))
        .await;
    let syntax = s
        .graphql(Some(&s.operator()), "{ bookings ", json!({}))
        .await;
    let never = s
        .graphql(
            Some(&s.client("erin")),
            BOOKING,
            json!({"id": id, "p": created.body["position"].as_i64().unwrap() + 1000}),
        )
        .await;

    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    assert_eq!(code(&forged), "UNAUTHENTICATED");
    assert!(other_client["data"]["booking"].is_null(), "{other_client}");
    assert!(other_client["errors"].is_null(), "{other_client}");
    assert_eq!(code(&partner), "FORBIDDEN");
    assert_eq!(code(&client_history), "FORBIDDEN");
    assert_eq!(code(&operator_history), "FORBIDDEN");
    let events = support_history["data"]["history"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{support_history}");
    assert_eq!(events[0]["eventType"], "BookingRequested");
    assert_eq!(events[0]["actor"], "erin (client)");
    assert!(events[0]["correlationId"].is_string());
    assert!(events[0]["causationId"].is_string());
    assert_eq!(events[0]["metadata"]["idempotency_key"], "a-1");
    assert_eq!(code(&client_board), "FORBIDDEN");
    assert_eq!(code(&too_deep), "QUERY_TOO_DEEP");
    assert_eq!(code(&too_complex), "QUERY_TOO_COMPLEX");
    assert_eq!(code(&too_large), "BAD_USER_INPUT");
    assert_eq!(too_large["errors"][0]["extensions"]["argument"], "first");
    assert_eq!(code(&unknown_field), "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(code(&syntax), "GRAPHQL_PARSE_FAILED");
    assert_eq!(code(&never), "NOT_YET_CONSISTENT");
}

/// `bookingChanged` over WebSocket (graphql-transport-ws) sends the booking now, then its new state after
/// a cancel; the token comes in `connection_init`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_changed_streams_each_new_state_over_websocket() {
    let s = Server::serve().await;
    let created = s
        .create_booking("gina", "ws-1", &booking_body("room-ws", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let (mut ws, ack) = subscribe(
        &s,
        &s.client("gina"),
        "subscription($id: ID!) { bookingChanged(id: $id) { status version } }",
        json!({"id": id}),
    )
    .await;
    let first = next(&mut ws).await;
    let cancel = s
        .post(
            &format!("/v1/bookings/{id}/cancel"),
            &s.client("gina"),
            &json!({"reason": "x"}),
            &[],
        )
        .await;
    // The workers may move the booking (partner_pending, confirmed) before or after the cancel: read
    // each new state until the cancelled one, versions only growing.
    let mut versions = vec![first["payload"]["data"]["bookingChanged"]["version"]
        .as_i64()
        .unwrap()];
    let second = loop {
        let message = next(&mut ws).await;
        let changed = &message["payload"]["data"]["bookingChanged"];
        versions.push(changed["version"].as_i64().unwrap());
        if changed["status"] == "CANCELLED" {
            break message;
        }
    };

    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    assert_eq!(first["type"], "next", "{first}");
    assert_eq!(
        first["payload"]["data"]["bookingChanged"],
        json!({"status": "REQUESTED", "version": 1})
    );
    assert_eq!(cancel.status, 200);
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(
        second["payload"]["data"]["bookingChanged"]["status"],
        "CANCELLED"
    );
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws connection as `token`, waits for the ack, and subscribes with `query`.
async fn subscribe(s: &Server, token: &str, query: &str, variables: Value) -> (Socket, Message) {
    let url = s.graphql.as_deref().unwrap().replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "connection_init",
        "payload": {"Authorization": format!("Bearer {token}")}})))
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an ack within 10 s")
        .unwrap()
        .unwrap();
    ws.send(send(json!({"id": "1", "type": "subscribe",
        "payload": {"query": query, "variables": variables}})))
        .await
        .unwrap();
    (ws, ack)
}

/// The next message that is not the `connection_ack`.
async fn next(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] != "connection_ack" {
                return v;
            }
        }
    }
}

/// `GET /graphql` is the GraphiQL page; health, readiness and metrics are served beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served() {
    let s = Server::serve().await;
    let page = s
        .http
        .get(s.graphql.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(
        text.contains("graphiql"),
        "{}",
        &text[..200.min(text.len())]
    );
}

/// The status board lists a booking stuck longer than its rule (`TRAILBOOK_STUCK_RULES`) with its age
/// (its partner never answers), and counts it; the counts follow a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_board_lists_stuck_items_by_configured_rule() {
    let s = Server::start_part(
        "serve",
        &[
            (
                "TRAILBOOK_STUCK_RULES",
                "booking:requested=1s,booking:partner_pending=1s",
            ),
            // Nobody answers there: the live booking waits for its partner.
            ("TRAILBOOK_PARTNER_URL", "http://127.0.0.1:9"),
        ],
    )
    .await;
    let stuck = s
        .create_booking("hal", "st-1", &booking_body("room-s1", 1))
        .await;
    let gone = s
        .create_booking("hal", "st-2", &booking_body("room-s2", 1))
        .await;
    let cancelled = s
        .post(
            &format!(
                "/v1/bookings/{}/cancel",
                gone.body["booking_id"].as_str().unwrap()
            ),
            &s.client("hal"),
            &json!({"reason": "x"}),
            &[],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let board = s
        .graphql(
            Some(&s.token(Role::Support, "sue")),
            "query($p: Int) { statusBoard(minPosition: $p) {
                counts { aggregateType status count } stuck { aggregateType id status ageSeconds } } }",
            json!({"p": cancelled.body["position"]}),
        )
        .await;

    let board = &board["data"]["statusBoard"];
    let counts = board["counts"].as_array().unwrap();
    assert!(
        counts.contains(&json!({"aggregateType": "BOOKING", "status": "cancelled", "count": 1})),
        "{board}"
    );
    let total: i64 = counts.iter().map(|c| c["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 2, "{board}");
    let items = board["stuck"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{board}");
    assert_eq!(items[0]["id"], stuck.body["booking_id"]);
    assert!(
        items[0]["status"] == "requested" || items[0]["status"] == "partner_pending",
        "{board}"
    );
    assert!(items[0]["ageSeconds"].as_f64().unwrap() >= 1.0, "{board}");
}

/// An open subscription does not keep `serve` from stopping: SIGTERM ends it within the grace period,
/// with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_despite_an_open_subscription() {
    let mut s = Server::serve().await;
    let created = s
        .create_booking("ivy", "sig-1", &booking_body("room-sig", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let (mut ws, _ack) = subscribe(
        &s,
        &s.client("ivy"),
        "subscription($id: ID!) { bookingChanged(id: $id) { status } }",
        json!({"id": id}),
    )
    .await;
    let first = next(&mut ws).await;

    let status = tokio::task::block_in_place(|| s.terminate(Duration::from_secs(30)));

    assert_eq!(first["type"], "next", "{first}");
    let status = status.expect("serve exits within 30 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// An id with a NUL character is bad input, not an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_an_argument_is_bad_input() {
    let s = Server::serve().await;
    let answer = s
        .graphql(
            Some(&s.operator()),
            "query($id: ID!) { booking(id: $id, consistency: STRONG) { id } }",
            json!({"id": "a\u{0}b"}),
        )
        .await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
}

/// An operator resolves a booking stuck waiting for its partner over GraphQL: it becomes `FAILED` with
/// the operator as the event's actor, its room is free again; a client may not, and a booking that is
/// not stuck cannot be resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resolve_a_stuck_booking_over_graphql() {
    // Arrange: no workers, so the booking waits in `requested`.
    let s = Server::start_part("serve", &[("TRAILBOOK_NO_WORKERS", "true")]).await;
    let created = s
        .create_booking("gus", "res-1", &booking_body("room-res", 3))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let mutation = "mutation($id: ID!, $status: BookingStatus!) {
        resolveBooking(id: $id, status: $status, reason: \"partner holds nothing (phoned)\") { status version } }";

    // Act
    let by_client = s
        .graphql(
            Some(&s.client("gus")),
            mutation,
            json!({"id": id, "status": "FAILED"}),
        )
        .await;
    let resolved = s
        .graphql(
            Some(&s.operator()),
            mutation,
            json!({"id": id, "status": "FAILED"}),
        )
        .await;
    let again = s
        .graphql(
            Some(&s.operator()),
            mutation,
            json!({"id": id, "status": "CANCELLED"}),
        )
        .await;
    let rebooked = s
        .create_booking("gus", "res-2", &booking_body("room-res", 3))
        .await;

    // Assert
    assert_eq!(
        by_client["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{by_client}"
    );
    assert_eq!(
        resolved["data"]["resolveBooking"]["status"], "FAILED",
        "{resolved}"
    );
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{again}"
    );
    assert_eq!(rebooked.status, 202, "{:?}", rebooked.body);
    let history = s.event_types("booking", &id).await;
    assert_eq!(history.last().map(String::as_str), Some("BookingResolved"));
}

/// The GraphQL API charges the same budgets as REST: queries with junk tokens share their address's
/// budget (429, `RATE_LIMITED`, `Retry-After`) while a verified caller passes; and one subject may hold
/// only so many `minPosition` waits at once (`TOO_MANY_WAITS`), which leaves other subjects alone.
#[tokio::test(flavor = "multi_thread")]
async fn graphql_limits_follow_the_caller_and_cap_its_waits() {
    let s = Server::start_part(
        "serve",
        &[
            ("TRAILBOOK_ANONYMOUS_RATE_LIMIT", "2"),
            ("TRAILBOOK_MAX_WAITS_PER_SUBJECT", "1"),
            ("TRAILBOOK_MIN_POSITION_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let url = s.graphql.clone().unwrap();
    let query = json!({"query": "{ statusBoard { counts { status count } } }"});
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..20 {
        let r = s
            .http
            .post(&url)
            .bearer_auth(format!("junk-{i}"))
            .json(&query)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            let retry_after = r.headers().get("retry-after").cloned();
            limited = Some((retry_after, r.json::<Value>().await.unwrap()));
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 12,
        "{statuses:?}"
    );
    let (retry_after, body) = limited.unwrap();
    assert!(retry_after.is_some());
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let op = s.operator();
    let board = s
        .graphql(Some(&op), query["query"].as_str().unwrap(), json!({}))
        .await;
    assert!(board["errors"].is_null(), "{board}");

    // Three waits for a position no read model will reach: one waits its timeout, two are refused.
    let wait = "{ bookings(first: 1, minPosition: 999999999) { totalCount } }";
    let answers =
        futures_util::future::join_all((0..3).map(|_| s.graphql(Some(&op), wait, json!({})))).await;
    let codes: Vec<&str> = answers
        .iter()
        .map(|a| {
            a["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("none")
        })
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == "TOO_MANY_WAITS").count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == "NOT_YET_CONSISTENT").count(),
        1,
        "{codes:?}"
    );
    let support = s.token(Role::Support, "sam");
    let theirs = s.graphql(Some(&support), wait, json!({})).await;
    assert_eq!(
        theirs["errors"][0]["extensions"]["code"], "NOT_YET_CONSISTENT",
        "another subject's wait is not refused: {theirs}"
    );
}

/// A subscription lives no longer than its token: the connection is closed when the token expires,
/// not left streaming to someone whose access ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_closed_when_its_token_expires() {
    let s = Server::serve().await;
    let created = s
        .create_booking("hana", "ws-exp", &booking_body("room-exp", 1))
        .await;
    let id = created.body["booking_id"].as_str().unwrap().to_string();
    let token = s.token_for(Role::Client, "hana", chrono::Duration::seconds(3));
    let started = std::time::Instant::now();
    let (mut ws, _ack) = subscribe(
        &s,
        &token,
        "subscription($id: ID!) { bookingChanged(id: $id) { status version } }",
        json!({"id": id}),
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection outlived its token by 17 s");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the token expired"
    );
}
