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
use domain::{Booking, Visit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use store::RecordedEvent;

use crate::catalog::{self, ReadModel, Table};
use crate::error::Result;
use crate::fold::{folded_row_fields, Changed, EventOf, FoldedRow};
use crate::projection::{Batch, Writer};

/// The `status_board` projection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatusBoard;

#[async_trait]
impl Writer for StatusBoard {
    async fn write(&self, mut batch: Batch<'_>) -> Result<()> {
        let mut deltas = BTreeMap::new();
        count_changes(&batch.fold::<Item<Booking>>().await?, &mut deltas);
        count_changes(&batch.fold::<Item<Visit>>().await?, &mut deltas);
        let counts: Vec<StatusCount> = deltas
            .into_iter()
            .filter(|(_, count)| *count != 0)
            .map(|((aggregate_type, status), count)| StatusCount {
                aggregate_type,
                status,
                count,
            })
            .collect();
        batch.add_counts(catalog::STATUS_COUNTS, &counts).await
    }
}

/// A change to a row of `rm_status_counts` (field names are the column names).
#[derive(Serialize)]
struct StatusCount {
    aggregate_type: String,
    status: String,
    count: i64,
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

impl<A: ReadModel> FoldedRow for Item<A> {
    type Aggregate = A;
    const TABLE: Table = catalog::STATUS_ITEMS;

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

    folded_row_fields!(aggregate_id);

    fn apply(&mut self, event: EventOf<A>, recorded: &RecordedEvent) {
        let before = (self.version > 0).then(|| self.state.status_name());
        self.state.apply(event);
        if before != Some(self.state.status_name()) {
            self.since = recorded.recorded_at;
        }
    }

    fn finish(&mut self) {
        self.status = self.state.status_name().to_owned();
        let (report, email) = self.state.side_effects();
        self.report_status = report.map(str::to_owned);
        self.email_status = email.map(str::to_owned);
        self.state_version = A::STATE_VERSION;
    }
}
