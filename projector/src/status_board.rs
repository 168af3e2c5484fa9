//! Projection `status_board`: the current status of every booking and visit and since when
//! (`rm_status_items`), and how many are in each status (`rm_status_counts`, kept incrementally in the same
//! transaction). Which items are stuck is a query over `rm_status_items`: see [`crate::board`].
//!
//! Each item keeps its aggregate's folded state, so statuses come from the domain's own `apply` rather than
//! from a second, hand-kept mapping of events to statuses that could drift from it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{AggregateSchema, Booking, Visit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use store::RecordedEvent;

use crate::error::Result;
use crate::fold::{fold_batch, upsert_rows, Changed, EventOf, FoldedRow};
use crate::projection::{Projection, Target};

/// The `status_board` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusBoard;

const ITEMS: &str = "rm_status_items";
const COUNTS: &str = "rm_status_counts";

#[async_trait]
impl Projection for StatusBoard {
    fn name(&self) -> &'static str {
        "status_board"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[ITEMS, COUNTS]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        target: Target,
        events: &[RecordedEvent],
    ) -> Result<()> {
        let items = target.table(ITEMS);
        let mut deltas = BTreeMap::new();
        let bookings = fold_batch::<Item<Booking>>(conn, self.name(), &items, events).await?;
        count_changes(&bookings, &mut deltas);
        let visits = fold_batch::<Item<Visit>>(conn, self.name(), &items, events).await?;
        count_changes(&visits, &mut deltas);

        let key = ["aggregate_type", "aggregate_id"];
        let bookings: Vec<_> = bookings.into_iter().map(|c| c.row).collect();
        upsert_rows(conn, self.name(), &items, &key, &bookings).await?;
        let visits: Vec<_> = visits.into_iter().map(|c| c.row).collect();
        upsert_rows(conn, self.name(), &items, &key, &visits).await?;
        write_counts(conn, &target.table(COUNTS), deltas).await
    }
}

/// Adds to `deltas` the net status moves of `changed`: -1 for the status an item left, +1 for the one it is
/// in now (only the first and last status of a batch matter).
fn count_changes<R: FoldedRow>(
    changed: &[Changed<R>],
    deltas: &mut BTreeMap<(String, String), i64>,
) {
    let aggregate_type = <R::Aggregate as Aggregate>::TYPE;
    for change in changed {
        let after = change.row.status();
        if change.before.as_deref() == Some(after) {
            continue;
        }
        if let Some(before) = &change.before {
            *deltas
                .entry((aggregate_type.to_owned(), before.clone()))
                .or_default() -= 1;
        }
        *deltas
            .entry((aggregate_type.to_owned(), after.to_owned()))
            .or_default() += 1;
    }
}

/// Adds `deltas` to the counts in one statement.
async fn write_counts(
    conn: &mut PgConnection,
    table: &str,
    deltas: BTreeMap<(String, String), i64>,
) -> Result<()> {
    let (mut types, mut statuses, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for ((aggregate_type, status), delta) in deltas {
        if delta != 0 {
            types.push(aggregate_type);
            statuses.push(status);
            counts.push(delta);
        }
    }
    if types.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "insert into {table} as c (aggregate_type, status, count)
         select * from unnest($1::text[], $2::text[], $3::bigint[])
         on conflict (aggregate_type, status) do update set count = c.count + excluded.count"
    ))
    .bind(types)
    .bind(statuses)
    .bind(counts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the board needs to know about an aggregate's state.
pub(crate) trait BoardAggregate: AggregateSchema {
    /// The status, as stored (snake_case).
    fn status_name(&self) -> &'static str;
    /// Progress of the report and of the e-mail, for aggregates that have such side effects.
    fn side_effects(&self) -> (Option<&'static str>, Option<&'static str>);
}

impl BoardAggregate for Booking {
    fn status_name(&self) -> &'static str {
        self.status.as_str()
    }

    fn side_effects(&self) -> (Option<&'static str>, Option<&'static str>) {
        (None, None)
    }
}

impl BoardAggregate for Visit {
    fn status_name(&self) -> &'static str {
        self.status.as_str()
    }

    fn side_effects(&self) -> (Option<&'static str>, Option<&'static str>) {
        (
            Some(self.report_status.as_str()),
            Some(self.email_status.as_str()),
        )
    }
}

/// A row of `rm_status_items` (field names are the column names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
pub(crate) struct Item<A> {
    aggregate_type: String,
    aggregate_id: String,
    status: String,
    since: DateTime<Utc>,
    report_status: Option<String>,
    email_status: Option<String>,
    version: i64,
    last_position: i64,
    state_version: i32,
    state: A,
}

impl<A: BoardAggregate> FoldedRow for Item<A> {
    type Aggregate = A;
    const ID_COLUMN: &'static str = "aggregate_id";
    const TYPED: bool = true;

    fn new(id: &str) -> Self {
        let state = A::default();
        Self {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: id.to_owned(),
            status: state.status_name().to_owned(),
            since: DateTime::<Utc>::default(),
            report_status: None,
            email_status: None,
            version: 0,
            last_position: 0,
            state_version: A::STATE_VERSION,
            state,
        }
    }

    fn id(&self) -> &str {
        &self.aggregate_id
    }

    fn state_version(&self) -> i32 {
        self.state_version
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn status(&self) -> &str {
        &self.status
    }

    fn apply(&mut self, event: EventOf<A>, recorded: &RecordedEvent) {
        let before = (self.version > 0).then(|| self.state.status_name());
        self.state.apply(event);
        if before != Some(self.state.status_name()) {
            self.since = recorded.recorded_at;
        }
        self.version = recorded.sequence;
        self.last_position = recorded.global_position;
    }

    fn finish(&mut self) {
        self.status = self.state.status_name().to_owned();
        let (report, email) = self.state.side_effects();
        self.report_status = report.map(str::to_owned);
        self.email_status = email.map(str::to_owned);
        self.state_version = A::STATE_VERSION;
    }
}
