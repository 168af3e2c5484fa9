//! The read-model catalog: every table the projections write, the projection (and so the checkpoint) that
//! writes each, and the reads other crates make of them. A read model is declared here and nowhere else:
//! the projections take their table names from it, and the query API reads through it.
//!
//! What the query API reads, and where:
//! - one aggregate's row: [`row`]; lists, filtered and keyset-paginated: [`ListQuery`];
//! - how fresh a read model is: [`crate::reached`] (read-your-writes), [`crate::position`] (its checkpoint),
//!   [`crate::status`] (position and lag of every projection);
//! - the status board: [`crate::board`];
//! - when a state folded from the event store was created and last updated: [`stamps`].
//!
//! The tables with one row per aggregate (`rm_bookings`, `rm_visits`) share a shape: the aggregate id (the
//! table's key), the folded `state`, `version` (sequence of the last event applied), `last_position`,
//! `created_at` and `updated_at`, plus columns copied from the state for filtering. [`ReadModel`] ties an
//! aggregate type to its table.

use chrono::{DateTime, Utc};
use domain::{AggregateSchema, Booking, Visit};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::error::Result;

/// A read-model table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The live table's name (a rebuild fills `<name>_rebuild` and swaps it in).
    pub name: &'static str,
    /// The projection that writes it: the name of its checkpoint in `projection_checkpoints`.
    pub projection: &'static str,
    /// The primary-key columns.
    pub key: &'static [&'static str],
}

/// One row per booking (projection `bookings`).
pub const BOOKINGS: Table = Table {
    name: "rm_bookings",
    projection: "bookings",
    key: &["booking_id"],
};

/// One row per visit (projection `visits`).
pub const VISITS: Table = Table {
    name: "rm_visits",
    projection: "visits",
    key: &["visit_id"],
};

/// The current status of every booking and visit, and since when (projection `status_board`).
pub const STATUS_ITEMS: Table = Table {
    name: "rm_status_items",
    projection: "status_board",
    key: &["aggregate_type", "aggregate_id"],
};

/// How many aggregates of each type are in each status (projection `status_board`).
pub const STATUS_COUNTS: Table = Table {
    name: "rm_status_counts",
    projection: "status_board",
    key: &["aggregate_type", "status"],
};

/// Events per UTC day, aggregate type and event type (projection `timeline`).
pub const TIMELINE: Table = Table {
    name: "rm_timeline",
    projection: "timeline",
    key: &["day", "aggregate_type", "event_type"],
};

/// Every read-model table, in the order of [`crate::NAMES`].
pub const TABLES: [Table; 5] = [BOOKINGS, VISITS, STATUS_ITEMS, STATUS_COUNTS, TIMELINE];

/// An aggregate type as the read side sees it: the one trait an aggregate implements for the projector and
/// the query API. Its read model is [`ReadModel::TABLE`], one row per aggregate keyed by its id; the status
/// board holds its status and side effects.
pub trait ReadModel: AggregateSchema + Send + Sync + 'static {
    /// Its table of one row per aggregate.
    const TABLE: Table;
    /// The column holding the aggregate id (the table's key).
    const ID_COLUMN: &'static str = Self::TABLE.key[0];

    /// Who it belongs to (clients read only their own).
    fn owner(&self) -> &str;
    /// Whether it exists (a fold of no events, or of another type's, gives one that does not).
    fn exists(&self) -> bool;
    /// Its status, as stored (snake_case).
    fn status_name(&self) -> &'static str;
    /// Progress of the report and of the e-mail, for aggregates that have such side effects.
    fn side_effects(&self) -> (Option<&'static str>, Option<&'static str>);
}

impl ReadModel for Booking {
    const TABLE: Table = BOOKINGS;

    fn owner(&self) -> &str {
        &self.owner
    }

    fn exists(&self) -> bool {
        Booking::exists(self)
    }

    fn status_name(&self) -> &'static str {
        self.status.as_str()
    }

    fn side_effects(&self) -> (Option<&'static str>, Option<&'static str>) {
        (None, None)
    }
}

impl ReadModel for Visit {
    const TABLE: Table = VISITS;

    fn owner(&self) -> &str {
        &self.owner
    }

    fn exists(&self) -> bool {
        Visit::exists(self)
    }

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

/// One aggregate's row, as stored.
#[derive(Debug)]
pub struct Stored<A> {
    /// The aggregate id.
    pub id: String,
    /// The folded state; an error when it does not decode (written under an older state shape, before a
    /// rebuild caught up): fold the event store instead.
    pub state: Result<A, serde_json::Error>,
    /// Sequence of the last event applied.
    pub version: i64,
    /// Global position of the last event applied.
    pub position: i64,
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    id: String,
    state: Value,
    version: i64,
    last_position: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl StoredRow {
    fn decode<A: ReadModel>(self) -> Stored<A> {
        Stored {
            state: serde_json::from_value(self.state),
            id: self.id,
            version: self.version,
            position: self.last_position,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The `select` list of [`Stored`] rows of `A`'s table.
fn stored_columns<A: ReadModel>() -> String {
    format!(
        "select {} as id, state, version, last_position, created_at, updated_at from {}",
        A::ID_COLUMN,
        A::TABLE.name
    )
}

/// The row of aggregate `id` in its read model, if the projection has applied any of its events.
pub async fn row<A: ReadModel>(pool: &PgPool, id: &str) -> Result<Option<Stored<A>>> {
    let sql = format!("{} where {} = $1", stored_columns::<A>(), A::ID_COLUMN);
    let row: Option<StoredRow> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.map(StoredRow::decode))
}

/// A column lists filter on by equality. Each has an index `(column, created_at, id)` on the tables that
/// have it, so a page of a filtered list is an index walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Bookings and visits: who it belongs to.
    Owner,
    /// Bookings and visits: the status, as stored (snake_case).
    Status,
    /// Bookings: the partner.
    Partner,
    /// Bookings: the customer's e-mail address.
    CustomerEmail,
    /// Visits: the clinician.
    Clinician,
}

impl Column {
    /// The column's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Status => "status",
            Self::Partner => "partner",
            Self::CustomerEmail => "customer_email",
            Self::Clinician => "clinician",
        }
    }
}

/// A position in a list: the `(created_at, id)` of the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// A filtered, paginated list over the read model of `A`, newest first. Only the conditions given are put
/// into the SQL, so each combination gets a plan that uses the matching `(column, created_at, id)` index.
#[derive(Debug, Clone)]
pub struct ListQuery<A> {
    /// Equality filters, e.g. `(Column::Status, "confirmed")`.
    pub equals: Vec<(Column, String)>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// Where the previous page ended.
    pub after: Option<Cursor>,
    /// Items per page.
    pub first: i64,
    read_model: std::marker::PhantomData<fn() -> A>,
}

/// One page of rows.
#[derive(Debug)]
pub struct Page<A> {
    pub rows: Vec<Stored<A>>,
    pub has_next_page: bool,
}

impl<A: ReadModel> ListQuery<A> {
    /// The first page of `first` items, unfiltered.
    pub fn new(first: i64) -> Self {
        Self {
            equals: Vec::new(),
            created_from: None,
            created_to: None,
            after: None,
            first,
            read_model: std::marker::PhantomData,
        }
    }

    fn push_filters<'a>(&'a self, qb: &mut QueryBuilder<'a, Postgres>, with_cursor: bool) {
        qb.push(" where true");
        for (column, value) in &self.equals {
            qb.push(format!(" and {} = ", column.as_str()));
            qb.push_bind(value.as_str());
        }
        if let Some(from) = self.created_from {
            qb.push(" and created_at >= ").push_bind(from);
        }
        if let Some(to) = self.created_to {
            qb.push(" and created_at < ").push_bind(to);
        }
        if let (true, Some(after)) = (with_cursor, &self.after) {
            qb.push(format!(" and (created_at, {}) < (", A::ID_COLUMN))
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id.as_str())
                .push(")");
        }
    }

    fn page_builder(&self, prefix: &str) -> QueryBuilder<'_, Postgres> {
        let mut qb = QueryBuilder::new(format!("{prefix}{}", stored_columns::<A>()));
        self.push_filters(&mut qb, true);
        qb.push(format!(
            " order by created_at desc, {} desc limit ",
            A::ID_COLUMN
        ))
        .push_bind(self.first + 1);
        qb
    }

    /// One page, and whether another follows.
    pub async fn page(&self, pool: &PgPool) -> Result<Page<A>> {
        let rows: Vec<StoredRow> = self
            .page_builder("")
            .build_query_as()
            .fetch_all(pool)
            .await?;
        let has_next_page = rows.len() as i64 > self.first;
        Ok(Page {
            rows: rows
                .into_iter()
                .take(self.first as usize)
                .map(StoredRow::decode)
                .collect(),
            has_next_page,
        })
    }

    /// How many items match the filters (all pages).
    pub async fn count(&self, pool: &PgPool) -> Result<i64> {
        let mut qb = QueryBuilder::new(format!("select count(*) from {}", A::TABLE.name));
        self.push_filters(&mut qb, false);
        Ok(qb.build_query_scalar().fetch_one(pool).await?)
    }

    /// `EXPLAIN (FORMAT JSON)` of the page query, for tests that check the plan uses an index.
    pub async fn explain(&self, pool: &PgPool) -> Result<Value> {
        Ok(self
            .page_builder("explain (format json) ")
            .build_query_scalar()
            .fetch_one(pool)
            .await?)
    }
}

/// When an aggregate was created and last updated, as of one of its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When its event `version` was recorded.
    pub updated_at: DateTime<Utc>,
    /// The global position of its event `version`.
    pub position: Option<i64>,
}

/// The [`Stamps`] of aggregate `id` of type `A` at `version`, from the log: what a state folded from the
/// event store lacks to look like a read-model row. `None` when its first event or event `version` is not
/// in the log.
pub async fn stamps<A: ReadModel>(pool: &PgPool, id: &str, version: i64) -> Result<Option<Stamps>> {
    let times: (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<i64>) = sqlx::query_as(
        "select min(recorded_at) filter (where sequence = 1),
                max(recorded_at) filter (where sequence = $3),
                max(global_position) filter (where sequence = $3)
         from events where aggregate_type = $1 and aggregate_id = $2 and sequence in (1, $3)",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(version)
    .fetch_one(pool)
    .await?;
    let (Some(created_at), Some(updated_at)) = (times.0, times.1) else {
        return Ok(None);
    };
    Ok(Some(Stamps {
        created_at,
        updated_at,
        position: times.2,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{projection, NAMES};

    /// Every table belongs to a registered projection that lists it, and every projection's tables are
    /// in the catalog under its name: the catalog and the registry cannot drift apart.
    #[test]
    fn the_catalog_and_the_projections_list_the_same_tables() {
        for table in TABLES {
            let owner = projection(table.projection).map(|p| p.tables());
            assert!(
                owner.is_ok_and(|tables| tables.contains(&table.name)),
                "{table:?}"
            );
        }
        for name in NAMES {
            let tables = projection(name).map(|p| p.tables()).unwrap_or_default();
            assert!(!tables.is_empty(), "{name}");
            for table in tables {
                assert!(
                    TABLES
                        .iter()
                        .any(|t| t.name == *table && t.projection == name),
                    "{name}: {table}"
                );
            }
        }
    }

    /// The per-aggregate read models are keyed by their id column.
    #[test]
    fn per_aggregate_read_models_are_keyed_by_their_id() {
        assert_eq!(Booking::ID_COLUMN, "booking_id");
        assert_eq!(Visit::ID_COLUMN, "visit_id");
        assert_eq!(<Booking as ReadModel>::TABLE.projection, "bookings");
        assert_eq!(<Visit as ReadModel>::TABLE.projection, "visits");
    }
}
