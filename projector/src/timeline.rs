//! Projection `timeline`: how many events of each type each aggregate type recorded per UTC day
//! (`rm_timeline`), for dashboards. Counts every event of the log, whatever its aggregate type.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog;
use crate::error::Result;
use crate::projection::{Batch, Writer};

/// The `timeline` projection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeline;

/// A change to a row of `rm_timeline` (field names are the column names).
#[derive(Serialize)]
struct DayCount<'a> {
    day: NaiveDate,
    aggregate_type: &'a str,
    event_type: &'a str,
    count: i64,
}

#[async_trait]
impl Writer for Timeline {
    async fn write(&self, mut batch: Batch<'_>) -> Result<()> {
        let events = batch.events;
        let mut counts: BTreeMap<(NaiveDate, &str, &str), i64> = BTreeMap::new();
        for event in events {
            let key = (
                event.recorded_at.date_naive(),
                event.aggregate_type.as_str(),
                event.event_type.as_str(),
            );
            *counts.entry(key).or_default() += 1;
        }
        let rows: Vec<DayCount<'_>> = counts
            .into_iter()
            .map(|((day, aggregate_type, event_type), count)| DayCount {
                day,
                aggregate_type,
                event_type,
                count,
            })
            .collect();
        batch.add_counts(catalog::TIMELINE, &rows).await
    }
}
