//! What a projection is, which tables it writes, and the registry of the four projections.

use async_trait::async_trait;
use sqlx::PgConnection;
use store::RecordedEvent;

use crate::error::{Error, Result};
use crate::{bookings, status_board, timeline, visits};

/// Names of all projections, in the order `status` reports them.
pub const NAMES: [&str; 4] = ["bookings", "visits", "status_board", "timeline"];

/// Which copy of a projection's tables a batch writes: the live ones, or the fresh copies a rebuild fills
/// before swapping them in. Table names come from this fixed set, never from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    suffix: &'static str,
}

impl Target {
    /// The tables queries read.
    pub const LIVE: Target = Target { suffix: "" };
    /// The copies a rebuild writes (`<table>_rebuild`).
    pub const REBUILD: Target = Target { suffix: "_rebuild" };

    /// The name of `base` (a live table name such as `rm_bookings`) in this copy.
    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }
}

/// A read model built from the global log.
///
/// `apply_batch` receives consecutive events of the log (every aggregate type: a projection ignores what it
/// does not model) and writes its tables through `conn`, which is inside the transaction that also moves
/// the checkpoint. It must be deterministic (the same events give the same rows: rebuilds rely on it) and
/// must not commit.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name (its checkpoint row, its advisory lock, its CLI name).
    fn name(&self) -> &'static str;

    /// The live tables this projection owns; a rebuild recreates and swaps exactly these.
    fn tables(&self) -> &'static [&'static str];

    /// Applies `events`, in order, to the tables of `target`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        target: Target,
        events: &[RecordedEvent],
    ) -> Result<()>;
}

/// The projection called `name`.
pub fn projection(name: &str) -> Result<&'static dyn Projection> {
    match name {
        "bookings" => Ok(&bookings::Bookings),
        "visits" => Ok(&visits::Visits),
        "status_board" => Ok(&status_board::StatusBoard),
        "timeline" => Ok(&timeline::Timeline),
        other => Err(Error::UnknownProjection(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed name resolves to the projection of that name, and nothing else resolves.
    #[test]
    fn every_name_resolves_to_its_projection() {
        for name in NAMES {
            assert_eq!(projection(name).map(|p| p.name()).ok(), Some(name));
        }
        assert!(matches!(
            projection("nope"),
            Err(Error::UnknownProjection(_))
        ));
    }

    /// Rebuild copies are named after the live table.
    #[test]
    fn targets_name_the_live_table_or_its_rebuild_copy() {
        assert_eq!(Target::LIVE.table("rm_bookings"), "rm_bookings");
        assert_eq!(Target::REBUILD.table("rm_bookings"), "rm_bookings_rebuild");
    }
}
