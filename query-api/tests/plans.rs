//! The list queries use an index for every filter, in the order the page needs, at a scale where a
//! sequential scan and a sort would be the planner's choice without one.
#![allow(clippy::unwrap_used)]

use query_api::read::{Cursor, ListQuery};
use serde_json::Value;
use store::testing::TestDb;

/// Every node of a plan, depth first.
fn nodes(plan: &Value, out: &mut Vec<String>) {
    if let Some(kind) = plan["Node Type"].as_str() {
        out.push(kind.to_owned());
    }
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

#[tokio::test]
async fn every_list_filter_walks_an_index_without_sorting() {
    // Arrange: 200,000 bookings and 100,000 visits spread over owners, statuses, partners, clinicians.
    let db = TestDb::new().await.unwrap();
    sqlx::query(
        "insert into rm_bookings (booking_id, owner, status, partner, resource, starts_at, ends_at, guests,
             amount_minor, currency, customer_name, customer_email, partner_attempts, status_since,
             created_at, updated_at, version, last_position, state_version, state)
         select 'b-' || i, 'client-' || (i % 1000),
                (array['requested','partner_pending','confirmed','paid','cancelled'])[1 + i % 5],
                'partner-' || (i % 50), 'room-' || i, now(), now() + interval '1 day', 2, 100, 'EUR', 'C',
                'c' || (i % 5000) || '@example.com', 0, now(),
                timestamp '2026-01-01' + i * interval '1 minute', now(), 1, i, 1, '{}'
         from generate_series(1, 200000) as i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into rm_visits (visit_id, owner, status, clinician, report_status, email_status,
             report_attempts, email_attempts, status_since, created_at, updated_at, version, last_position,
             state_version, state)
         select 'v-' || i, 'client-' || (i % 1000),
                (array['scheduled','checked_in','completed'])[1 + i % 3], 'dr-' || (i % 40),
                'not_required', 'not_required', 0, 0, now(),
                timestamp '2026-01-01' + i * interval '1 minute', now(), 1, i, 1, '{}'
         from generate_series(1, 100000) as i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("analyze rm_bookings")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("analyze rm_visits")
        .execute(&db.pool)
        .await
        .unwrap();
    let cursor = Cursor {
        created_at: chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .to_utc(),
        id: "b-1".into(),
    };
    let bookings = |equals: Vec<(&'static str, &str)>, after: Option<Cursor>| ListQuery {
        table: "rm_bookings",
        id_column: "booking_id",
        equals: equals.into_iter().map(|(c, v)| (c, v.to_owned())).collect(),
        after,
        first: 20,
        ..ListQuery::default()
    };
    let visits = |equals: Vec<(&'static str, &str)>| ListQuery {
        table: "rm_visits",
        id_column: "visit_id",
        equals: equals.into_iter().map(|(c, v)| (c, v.to_owned())).collect(),
        first: 20,
        ..ListQuery::default()
    };
    let cases = [
        ("all bookings", bookings(vec![], None)),
        (
            "all bookings, second page",
            bookings(vec![], Some(cursor.clone())),
        ),
        (
            "a client's bookings",
            bookings(vec![("owner", "client-7")], None),
        ),
        (
            "by status",
            bookings(vec![("status", "paid")], Some(cursor)),
        ),
        ("by partner", bookings(vec![("partner", "partner-3")], None)),
        (
            "by customer",
            bookings(vec![("customer_email", "c42@example.com")], None),
        ),
        ("all visits", visits(vec![])),
        ("by clinician", visits(vec![("clinician", "dr-3")])),
        (
            "a client's visits by status",
            visits(vec![("owner", "client-9"), ("status", "completed")]),
        ),
    ];

    // Act + Assert
    for (name, query) in cases {
        let explained = query.explain(&db.pool).await.unwrap();
        let mut kinds = Vec::new();
        nodes(&explained[0]["Plan"], &mut kinds);
        assert!(
            kinds.iter().any(|k| k.contains("Index")),
            "{name}: no index in {kinds:?}"
        );
        assert!(
            !kinds.iter().any(|k| k == "Seq Scan" || k == "Sort"),
            "{name}: {kinds:?}"
        );
    }
}
