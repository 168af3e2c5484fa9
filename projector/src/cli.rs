//! Helpers for the `trailbook projections` commands: a progress bar for rebuilds and a status table.

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::error::Result;
use crate::rebuild::{rebuild, RebuildReport};
use crate::status::ProjectionStatus;

/// Rebuilds projection `name` with a progress bar (global position over head position) on stderr. The bar
/// hides itself when stderr is not a terminal.
pub async fn rebuild_with_progress_bar(pool: &PgPool, name: &str) -> Result<RebuildReport> {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("rebuilding {name}"));
    let outcome = rebuild(pool, name, |p| {
        let head = u64::try_from(p.head_position).unwrap_or_default();
        bar.set_length(head);
        bar.set_position(u64::try_from(p.position).unwrap_or_default().min(head));
    })
    .await;
    match &outcome {
        Ok(report) => {
            bar.set_position(bar.length().unwrap_or_default());
            bar.finish_with_message(format!(
                "rebuilt {name}: {} events in {:.1} s",
                report.events_applied,
                report.elapsed.as_secs_f64()
            ));
        }
        Err(_) => bar.abandon_with_message(format!("rebuild of {name} failed")),
    }
    outcome
}

/// The statuses as an aligned text table (name, position, head, lag in events and seconds, leader).
pub fn status_table(statuses: &[ProjectionStatus]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>12} {:>12} {:>12}  {}\n",
        "PROJECTION", "POSITION", "HEAD", "LAG_EVENTS", "LAG_SECONDS", "LEADER"
    );
    for s in statuses {
        let _ = writeln!(
            out,
            "{:<14} {:>12} {:>12} {:>12} {:>12.1}  {}",
            s.name,
            s.position,
            s.head_position,
            s.lag_events,
            s.lag_seconds,
            s.leader.as_deref().unwrap_or("-")
        );
    }
    out
}
