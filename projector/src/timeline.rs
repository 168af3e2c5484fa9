//! Projection `timeline`: how many events of each type each aggregate type recorded per UTC day
//! (`rm_timeline`), for dashboards. Counts every event of the log, whatever its aggregate type.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::PgConnection;
use store::RecordedEvent;

use crate::error::Result;
use crate::projection::{Projection, Target};

/// The `timeline` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeline;

const TABLE: &str = "rm_timeline";

#[async_trait]
impl Projection for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        target: Target,
        events: &[RecordedEvent],
    ) -> Result<()> {
        let mut counts: BTreeMap<(NaiveDate, &str, &str), i64> = BTreeMap::new();
        for event in events {
            let key = (
                event.recorded_at.date_naive(),
                event.aggregate_type.as_str(),
                event.event_type.as_str(),
            );
            *counts.entry(key).or_default() += 1;
        }
        if counts.is_empty() {
            return Ok(());
        }
        let (mut days, mut types, mut event_types, mut ns) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((day, aggregate_type, event_type), n) in counts {
            days.push(day);
            types.push(aggregate_type);
            event_types.push(event_type);
            ns.push(n);
        }
        let table = target.table(TABLE);
        sqlx::query(&format!(
            "insert into {table} as t (day, aggregate_type, event_type, count)
             select * from unnest($1::date[], $2::text[], $3::text[], $4::bigint[])
             on conflict (day, aggregate_type, event_type) do update set count = t.count + excluded.count"
        ))
        .bind(days)
        .bind(types)
        .bind(event_types)
        .bind(ns)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
