//! Reading one aggregate: from its read model, or folded from the event store (now, at a version, or as
//! of a time), and lists over the read models with keyset pagination.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use domain::AggregateSchema;
use serde::de::DeserializeOwned;
use sqlx::{PgPool, Postgres, QueryBuilder};
use store::EventStore;

use crate::error::QueryError;
use crate::types::{Source, Stamped};

/// What the query API needs to know about an aggregate type.
pub trait Readable: AggregateSchema + DeserializeOwned + Send + Sync + 'static {
    /// Its read-model table, id column and projection.
    const TABLE: &'static str;
    const ID_COLUMN: &'static str;
    const PROJECTION: &'static str;
    fn owner(&self) -> &str;
    fn exists(&self) -> bool;
}

impl Readable for domain::Booking {
    const TABLE: &'static str = "rm_bookings";
    const ID_COLUMN: &'static str = "booking_id";
    const PROJECTION: &'static str = "bookings";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn exists(&self) -> bool {
        domain::Booking::exists(self)
    }
}

impl Readable for domain::Visit {
    const TABLE: &'static str = "rm_visits";
    const ID_COLUMN: &'static str = "visit_id";
    const PROJECTION: &'static str = "visits";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn exists(&self) -> bool {
        domain::Visit::exists(self)
    }
}

/// Where in its history to fold an aggregate.
#[derive(Debug, Clone, Copy)]
pub enum At {
    Head,
    Version(u64),
    Time(DateTime<Utc>),
}

/// The state folded from the event store, or `None` if the aggregate did not exist at that point.
pub async fn fold<A: Readable>(
    store: &EventStore,
    id: &str,
    at: At,
) -> Result<Option<Stamped<A>>, QueryError> {
    let loaded = match at {
        At::Head => store.load::<A>(id).await?,
        At::Version(v) => store.load_at_version::<A>(id, v).await?,
        At::Time(t) => store.load_as_of::<A>(id, t).await?,
    };
    if loaded.version == 0 || !loaded.state.exists() {
        return Ok(None);
    }
    let version = i64::try_from(loaded.version).unwrap_or(i64::MAX);
    let times: (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<i64>) = sqlx::query_as(
        "select min(recorded_at) filter (where sequence = 1),
                max(recorded_at) filter (where sequence = $3),
                max(global_position) filter (where sequence = $3)
         from events where aggregate_type = $1 and aggregate_id = $2 and sequence in (1, $3)",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(version)
    .fetch_one(store.pool())
    .await?;
    let (Some(created_at), Some(updated_at)) = (times.0, times.1) else {
        return Ok(None);
    };
    Ok(Some(Stamped {
        state: loaded.state,
        version,
        position: loaded.position.or(times.2),
        created_at,
        updated_at,
        source: Source::EventStore,
    }))
}

#[derive(sqlx::FromRow)]
struct Row {
    state: serde_json::Value,
    version: i64,
    last_position: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn stamped<A: Readable>(self, id: &str) -> Option<Stamped<A>> {
        match serde_json::from_value::<A>(self.state) {
            Ok(state) => Some(Stamped {
                state,
                version: self.version,
                position: Some(self.last_position),
                created_at: self.created_at,
                updated_at: self.updated_at,
                source: Source::ReadModel,
            }),
            Err(e) => {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id = id, error = %e,
                    "read-model row does not decode; folding the event store instead");
                None
            }
        }
    }
}

/// The aggregate from its read model; a row that does not decode (an older state shape mid-rebuild) is
/// folded from the event store instead.
pub async fn from_read_model<A: Readable>(
    store: &EventStore,
    id: &str,
) -> Result<Option<Stamped<A>>, QueryError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "select state, version, last_position, created_at, updated_at from {} where {} = $1",
        A::TABLE,
        A::ID_COLUMN
    ))
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    match row {
        None => Ok(None),
        Some(row) => match row.stamped::<A>(id) {
            Some(stamped) => Ok(Some(stamped)),
            None => fold::<A>(store, id, At::Head).await,
        },
    }
}

/// A position in a list: the `(created_at, id)` of the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(text: &str) -> Result<Self, QueryError> {
        let bad =
            || QueryError::bad_input("after", "`after` is not a cursor returned by this list");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (micros, id) = text.split_once('|').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// A filtered, paginated list over a read model, newest first. Only the conditions given are put into
/// the SQL, so each combination gets a plan that uses the matching `(column, created_at, id)` index.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub table: &'static str,
    pub id_column: &'static str,
    /// `(column, value)` equality filters, e.g. `("status", "confirmed")`, `("owner", "ada")`.
    pub equals: Vec<(&'static str, String)>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub after: Option<Cursor>,
    /// Items per page.
    pub first: i64,
}

/// One page of rows.
pub struct Page<A> {
    pub items: Vec<(Cursor, Stamped<A>)>,
    pub has_next_page: bool,
}

impl ListQuery {
    fn push_filters<'a>(&'a self, qb: &mut QueryBuilder<'a, Postgres>, with_cursor: bool) {
        qb.push(" where true");
        for (column, value) in &self.equals {
            qb.push(format!(" and {column} = "));
            qb.push_bind(value.as_str());
        }
        if let Some(from) = self.created_from {
            qb.push(" and created_at >= ").push_bind(from);
        }
        if let Some(to) = self.created_to {
            qb.push(" and created_at < ").push_bind(to);
        }
        if let (true, Some(after)) = (with_cursor, &self.after) {
            qb.push(format!(" and (created_at, {}) < (", self.id_column))
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id.as_str())
                .push(")");
        }
    }

    fn page_builder(&self, prefix: &str) -> QueryBuilder<'_, Postgres> {
        let mut qb = QueryBuilder::new(format!(
            "{prefix}select {id} as id, state, version, last_position, created_at, updated_at from {table}",
            id = self.id_column,
            table = self.table
        ));
        self.push_filters(&mut qb, true);
        qb.push(format!(
            " order by created_at desc, {} desc limit ",
            self.id_column
        ))
        .push_bind(self.first + 1);
        qb
    }

    /// One page, and whether another follows.
    pub async fn page<A: Readable>(&self, store: &EventStore) -> Result<Page<A>, QueryError> {
        #[derive(sqlx::FromRow)]
        struct ListRow {
            id: String,
            #[sqlx(flatten)]
            row: Row,
        }
        let rows: Vec<ListRow> = self
            .page_builder("")
            .build_query_as()
            .fetch_all(store.pool())
            .await?;
        let has_next_page = rows.len() as i64 > self.first;
        let mut items = Vec::with_capacity(rows.len());
        for ListRow { id, row } in rows.into_iter().take(self.first as usize) {
            let cursor = Cursor {
                created_at: row.created_at,
                id: id.clone(),
            };
            let stamped = match row.stamped::<A>(&id) {
                Some(s) => Some(s),
                None => fold::<A>(store, &id, At::Head).await?,
            };
            if let Some(stamped) = stamped {
                items.push((cursor, stamped));
            }
        }
        Ok(Page {
            items,
            has_next_page,
        })
    }

    /// How many items match the filters (all pages).
    pub async fn count(&self, pool: &PgPool) -> Result<i64, QueryError> {
        let mut qb = QueryBuilder::new(format!("select count(*) from {}", self.table));
        self.push_filters(&mut qb, false);
        Ok(qb.build_query_scalar().fetch_one(pool).await?)
    }

    /// `EXPLAIN (FORMAT JSON)` of the page query, for tests that check the plan uses an index.
    pub async fn explain(&self, pool: &PgPool) -> Result<serde_json::Value, QueryError> {
        Ok(self
            .page_builder("explain (format json) ")
            .build_query_scalar()
            .fetch_one(pool)
            .await?)
    }
}
