//! What a projection is, the one way a batch is applied to any of them, and the registry of the four.
//!
//! A projection module supplies only what differs between projections: how a batch changes its tables
//! (a [`Writer`], over the rows it folds or counts). Its name and its tables (from [`crate::catalog`]) are
//! entries of the registry, and [`Projection`], which the runner and rebuilds drive, is implemented once,
//! over every entry; so are folding rows ([`Batch::fold`]) and adding to counters ([`Batch::add_counts`]).

use async_trait::async_trait;
use serde::Serialize;
use sqlx::PgConnection;
use store::RecordedEvent;

use crate::bookings::BookingRow;
use crate::catalog::{self, Table};
use crate::error::{Error, Result};
use crate::fold::{fold_batch, upsert_rows, Changed, FoldedRow, PerAggregate};
use crate::status_board::StatusBoard;
use crate::timeline::Timeline;
use crate::visits::VisitRow;

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

/// A batch of the log being applied to one projection's tables, inside the batch's transaction.
pub(crate) struct Batch<'a> {
    pub conn: &'a mut PgConnection,
    /// The projection's name, for errors and logs.
    pub projection: &'static str,
    pub target: Target,
    pub events: &'a [RecordedEvent],
}

impl Batch<'_> {
    /// Folds the events of `R::Aggregate` into their rows of `R::TABLE` and writes every changed row back
    /// in one statement; returns those rows, each with the status it had before.
    pub async fn fold<R: FoldedRow>(&mut self) -> Result<Vec<Changed<R>>> {
        let table = self.target.table(R::TABLE.name);
        let changed = fold_batch::<R>(self.conn, self.projection, &table, self.events).await?;
        let rows: Vec<&R> = changed.iter().map(|c| &c.row).collect();
        upsert_rows(self.conn, self.projection, &table, R::TABLE.key, &rows).await?;
        Ok(changed)
    }

    /// Adds `rows` to the counters of `table` in one statement. A row serializes as the table's key
    /// columns and a `count`: the amount to add (a row new to the table starts at it).
    pub async fn add_counts<R: Serialize>(&mut self, table: Table, rows: &[R]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let projection = self.projection;
        let json =
            serde_json::to_string(rows).map_err(|source| Error::Row { projection, source })?;
        let name = self.target.table(table.name);
        sqlx::query(&format!(
            "insert into {name} as t
             select * from json_populate_recordset(null::{name}, $1::text::json)
             on conflict ({}) do update set count = t.count + excluded.count",
            table.key.join(", ")
        ))
        .bind(json)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

/// How a batch changes a projection's tables: all that a projection module writes.
#[async_trait]
pub(crate) trait Writer: Send + Sync + 'static {
    /// Applies `batch.events`, in order, to the tables of `batch.target`.
    async fn write(&self, batch: Batch<'_>) -> Result<()>;
}

/// An entry of the registry.
struct Registered {
    name: &'static str,
    tables: &'static [&'static str],
    writer: &'static dyn Writer,
}

#[async_trait]
impl Projection for Registered {
    fn name(&self) -> &'static str {
        self.name
    }

    fn tables(&self) -> &'static [&'static str] {
        self.tables
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        target: Target,
        events: &[RecordedEvent],
    ) -> Result<()> {
        let batch = Batch {
            conn,
            projection: self.name,
            target,
            events,
        };
        self.writer.write(batch).await
    }
}

/// The four projections, in the order of [`NAMES`].
static REGISTRY: [Registered; 4] = [
    Registered {
        name: "bookings",
        tables: &[catalog::BOOKINGS.name],
        writer: &PerAggregate::<BookingRow>::NEW,
    },
    Registered {
        name: "visits",
        tables: &[catalog::VISITS.name],
        writer: &PerAggregate::<VisitRow>::NEW,
    },
    Registered {
        name: "status_board",
        tables: &[catalog::STATUS_ITEMS.name, catalog::STATUS_COUNTS.name],
        writer: &StatusBoard,
    },
    Registered {
        name: "timeline",
        tables: &[catalog::TIMELINE.name],
        writer: &Timeline,
    },
];

/// The projection called `name`.
pub fn projection(name: &str) -> Result<&'static dyn Projection> {
    match REGISTRY.iter().find(|p| p.name == name) {
        Some(found) => Ok(found),
        None => Err(Error::UnknownProjection(name.to_owned())),
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
