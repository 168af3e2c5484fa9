//! `trailbook projections [status | rebuild <name>]`.

use sqlx::PgPool;

use service_kit::chain;

use crate::cli::ProjectionsAction;
use crate::{emit, Failure};

pub async fn run(pool: &PgPool, action: Option<ProjectionsAction>) -> Result<(), Failure> {
    match action.unwrap_or(ProjectionsAction::Status { json: false }) {
        ProjectionsAction::Status { json } => {
            let statuses = projector::status(pool).await.map_err(failure)?;
            if json {
                let text = serde_json::to_string_pretty(&statuses)
                    .map_err(|e| Failure::other(format!("cannot print the status as JSON: {e}")))?;
                emit(&text)
            } else {
                emit(projector::cli::status_table(&statuses).trim_end())
            }
        }
        ProjectionsAction::Rebuild { name } => {
            let report = projector::cli::rebuild_with_progress_bar(pool, &name)
                .await
                .map_err(failure)?;
            let seconds = report.elapsed.as_secs_f64();
            let rate = if seconds > 0.0 {
                report.events_applied as f64 / seconds
            } else {
                0.0
            };
            emit(&format!(
                "rebuilt {}: {} events in {seconds:.1} s ({rate:.0} events/s); live from position {}",
                report.name, report.events_applied, report.position
            ))
        }
    }
}

/// Unknown names and a rebuild already running are the user's to fix (exit 2); the rest is ours (1).
fn failure(e: projector::Error) -> Failure {
    let code = match e {
        projector::Error::UnknownProjection(_) | projector::Error::RebuildInProgress(_) => 2,
        _ => 1,
    };
    Failure {
        code,
        message: chain(&e),
    }
}
