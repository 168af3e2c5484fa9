//! The list queries use an index for every filter, in the order the page needs, at a scale where a
//! sequential scan and a sort would be the planner's choice without one.
#![allow(clippy::unwrap_used)]

use domain::{Booking, Visit};
use projector::catalog::{Column, Cursor, ListQuery};
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
    let equals = |equals: Vec<(Column, &str)>| -> Vec<(Column, String)> {
        equals.into_iter().map(|(c, v)| (c, v.to_owned())).collect()
    };
    let bookings = |filters: Vec<(Column, &str)>, after: Option<Cursor>| {
        let mut query = ListQuery::<Booking>::new(20);
        query.equals = equals(filters);
        query.after = after;
        query
    };
    let visits = |filters: Vec<(Column, &str)>| {
        let mut query = ListQuery::<Visit>::new(20);
        query.equals = equals(filters);
        query
    };
    let booking_cases = [
        ("all bookings", bookings(vec![], None)),
        (
            "all bookings, second page",
            bookings(vec![], Some(cursor.clone())),
        ),
        (
            "a client's bookings",
            bookings(vec![(Column::Owner, "client-7")], None),
        ),
        (
            "by status",
            bookings(vec![(Column::Status, "paid")], Some(cursor)),
        ),
        (
            "by partner",
            bookings(vec![(Column::Partner, "partner-3")], None),
        ),
        (
            "by customer",
            bookings(vec![(Column::CustomerEmail, "c42@example.com")], None),
        ),
    ];
    let visit_cases = [
        ("all visits", visits(vec![])),
        ("by clinician", visits(vec![(Column::Clinician, "dr-3")])),
        (
            "a client's visits by status",
            visits(vec![
                (Column::Owner, "client-9"),
                (Column::Status, "completed"),
            ]),
        ),
    ];

    // Act
    let mut plans = Vec::new();
    for (name, query) in booking_cases {
        plans.push((name, query.explain(&db.pool).await.unwrap()));
    }
    for (name, query) in visit_cases {
        plans.push((name, query.explain(&db.pool).await.unwrap()));
    }

    // Assert
    for (name, explained) in plans {
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
