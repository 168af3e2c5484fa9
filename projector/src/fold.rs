//! Read-model rows that carry an aggregate's folded state, and how a batch updates them; [`PerAggregate`],
//! the projections that are nothing but such rows (`bookings`, `visits`).
//!
//! A batch costs the same few round trips whatever its size: one query loads every row the batch touches
//! (`row_to_json(t)`, parsed into the row struct with serde), the events are applied in memory by the
//! domain's own `Aggregate::apply`, and one statement writes every changed row back
//! (`json_populate_recordset` of a JSON array, upserted on the key). The row structs' field names are the
//! column names. Rows travel as JSON text both ways, never as `jsonb` or `serde_json::Value`: building
//! either sorts and copies every key of every row, which was most of a batch's CPU (measured with `perf`
//! during catch-up).

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;

use async_trait::async_trait;
use cqrs_es::Aggregate;
use domain::AggregateSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use store::RecordedEvent;

use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::projection::{Batch, Writer};

/// The event type of aggregate `A`.
pub(crate) type EventOf<A> = <A as Aggregate>::Event;

/// A read-model row holding the state of one aggregate, folded from its events.
///
/// Its serialized form (field name = column name) must contain `state`, `state_version` and `version`.
pub(crate) trait FoldedRow: Serialize + DeserializeOwned + Send + Sync + 'static {
    type Aggregate: AggregateSchema;

    /// The table of these rows, from the catalog; its key is the upsert's conflict target.
    const TABLE: Table;

    /// Column holding the aggregate id: the last of the key.
    const ID_COLUMN: &'static str = Self::TABLE.key[Self::TABLE.key.len() - 1];

    /// The table holds several aggregate types, told apart by an `aggregate_type` column: the key is
    /// `(aggregate_type, ID_COLUMN)`.
    const TYPED: bool = Self::TABLE.key.len() > 1;

    /// The row of an aggregate no event has been applied to yet.
    fn new(id: &str) -> Self;

    /// The aggregate id (the `ID_COLUMN`).
    fn id(&self) -> &str;

    /// The shape of `state` as stored (`AggregateSchema::STATE_VERSION` when it was written).
    fn state_version(&self) -> i32;

    /// Sequence of the last event applied (0 for a new row).
    fn version(&self) -> i64;

    /// The status column, as stored.
    fn status(&self) -> &str;

    /// Applies the next event of the aggregate: the state through the domain's `apply`, then the row's own
    /// columns (milestones) from the event's log coordinates. The row's version is still the previous one.
    fn apply(&mut self, event: EventOf<Self::Aggregate>, recorded: &RecordedEvent);

    /// Moves the row's log columns (version, position, update times) to `recorded`, just applied.
    fn advance(&mut self, recorded: &RecordedEvent);

    /// Brings the columns copied from the state up to date (once per batch, after the last `apply`).
    fn finish(&mut self);
}

/// The [`FoldedRow`] items that only read or move a row's bookkeeping columns (`id`, `state_version`,
/// `version`, `status`, and `advance`), for a row struct whose fields are named after its columns. `$id` is
/// the field holding the aggregate id; `timestamps` adds `created_at` (set by the first event) and
/// `updated_at`, which the rows of a per-aggregate read model keep.
macro_rules! folded_row_fields {
    ($id:ident) => {
        folded_row_fields!(@read $id);

        fn advance(&mut self, recorded: &store::RecordedEvent) {
            self.version = recorded.sequence;
            self.last_position = recorded.global_position;
        }
    };
    ($id:ident, timestamps) => {
        folded_row_fields!(@read $id);

        fn advance(&mut self, recorded: &store::RecordedEvent) {
            if self.version == 0 {
                self.created_at = recorded.recorded_at;
            }
            self.updated_at = recorded.recorded_at;
            self.version = recorded.sequence;
            self.last_position = recorded.global_position;
        }
    };
    (@read $id:ident) => {
        fn id(&self) -> &str {
            &self.$id
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
    };
}
pub(crate) use folded_row_fields;

/// A projection of one [`FoldedRow`] per aggregate in one table: `bookings`, `visits`.
pub(crate) struct PerAggregate<R>(PhantomData<fn() -> R>);

impl<R> PerAggregate<R> {
    pub(crate) const NEW: Self = Self(PhantomData);
}

#[async_trait]
impl<R: FoldedRow> Writer for PerAggregate<R> {
    async fn write(&self, mut batch: Batch<'_>) -> Result<()> {
        batch.fold::<R>().await.map(drop)
    }
}

/// A row changed by a batch, with the status it had before (`None`: the row is new).
pub(crate) struct Changed<R> {
    pub before: Option<String>,
    pub row: R,
}

/// Applies the events of `R::Aggregate` among `events` to their rows in `table`, returning every row the
/// batch changed, in id order. Nothing is written.
///
/// An event whose sequence the row already has is skipped (it was applied before: this only happens if a
/// checkpoint was moved back by hand); a gap in sequences is an error, never skipped over.
pub(crate) async fn fold_batch<R: FoldedRow>(
    conn: &mut PgConnection,
    projection: &'static str,
    table: &str,
    events: &[RecordedEvent],
) -> Result<Vec<Changed<R>>> {
    let aggregate_type = <R::Aggregate as Aggregate>::TYPE;
    let mine: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.aggregate_type == aggregate_type)
        .collect();
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = mine.iter().map(|e| e.aggregate_id.clone()).collect();
    ids.sort();
    ids.dedup();

    let loaded = load_rows::<R>(conn, projection, table, &ids).await?;
    let mut rows: BTreeMap<String, Changed<R>> = loaded
        .into_iter()
        .map(|(id, row)| {
            let before = Some(row.status().to_owned());
            (id, Changed { before, row })
        })
        .collect();
    let mut touched: Vec<String> = Vec::with_capacity(ids.len());

    for recorded in mine {
        let entry = rows
            .entry(recorded.aggregate_id.clone())
            .or_insert_with(|| Changed {
                before: None,
                row: R::new(&recorded.aggregate_id),
            });
        let version = entry.row.version();
        if recorded.sequence <= version {
            tracing::warn!(
                projection,
                aggregate_type,
                aggregate_id = %recorded.aggregate_id,
                sequence = recorded.sequence,
                version,
                "event already applied to the read model; skipping it"
            );
            continue;
        }
        if recorded.sequence != version + 1 {
            return Err(apply_error(
                projection,
                recorded,
                format!(
                    "the read model is at version {version}: sequence {} must come first",
                    version + 1
                ),
            ));
        }
        let event = recorded
            .decode::<R::Aggregate>()
            .map_err(|e| apply_error(projection, recorded, e.to_string()))?;
        entry.row.apply(event, recorded);
        entry.row.advance(recorded);
        touched.push(recorded.aggregate_id.clone());
    }

    touched.sort();
    touched.dedup();
    let mut changed = Vec::with_capacity(touched.len());
    for id in touched {
        if let Some(mut entry) = rows.remove(&id) {
            entry.row.finish();
            changed.push(entry);
        }
    }
    Ok(changed)
}

fn apply_error(projection: &'static str, recorded: &RecordedEvent, reason: String) -> Error {
    Error::Apply {
        projection,
        aggregate_type: recorded.aggregate_type.clone(),
        aggregate_id: recorded.aggregate_id.clone(),
        sequence: recorded.sequence,
        position: recorded.global_position,
        reason,
    }
}

/// Loads the rows of `ids` in one query. A row written under another state shape (`state_version`), or
/// whose state no longer deserializes, gets its state refolded from the log up to its version first.
async fn load_rows<R: FoldedRow>(
    conn: &mut PgConnection,
    projection: &'static str,
    table: &str,
    ids: &[String],
) -> Result<HashMap<String, R>> {
    let aggregate_type = <R::Aggregate as Aggregate>::TYPE;
    let id_column = R::ID_COLUMN;
    // A join with the unnested ids, not `id = any($1)`: under a generic plan (sqlx prepares statements)
    // `any` over a parameter array is a linear scan of the array per row, and a catch-up batch of 8,000
    // events asked for 4,000 ids: 2.5 s per load, measured in the benchmark.
    // As JSON text, parsed straight into the row struct: no `serde_json::Value` tree in between.
    // `row_to_json` writes the text directly; `to_jsonb` would first build (and key-sort) a jsonb value.
    let texts: Vec<String> = if R::TYPED {
        sqlx::query_scalar(&format!(
            "select row_to_json(t)::text from unnest($1::text[]) as ids(id)
             join {table} t on t.aggregate_type = $2 and t.{id_column} = ids.id"
        ))
        .bind(ids)
        .bind(aggregate_type)
        .fetch_all(&mut *conn)
        .await?
    } else {
        sqlx::query_scalar(&format!(
            "select row_to_json(t)::text from unnest($1::text[]) as ids(id)
             join {table} t on t.{id_column} = ids.id"
        ))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
    };

    let mut rows = HashMap::with_capacity(texts.len());
    for text in texts {
        let row = match serde_json::from_str::<R>(&text) {
            Ok(row) if row.state_version() == R::Aggregate::STATE_VERSION => row,
            _ => refolded_row::<R>(conn, projection, &text).await?,
        };
        rows.insert(row.id().to_owned(), row);
    }
    Ok(rows)
}

/// The row stored as `text` (JSON of the whole row) with its state refolded from the log: its state was
/// written under another shape (`state_version`) or no longer deserializes.
async fn refolded_row<R: FoldedRow>(
    conn: &mut PgConnection,
    projection: &'static str,
    text: &str,
) -> Result<R> {
    let aggregate_type = <R::Aggregate as Aggregate>::TYPE;
    let mut value: Value =
        serde_json::from_str(text).map_err(|source| Error::Row { projection, source })?;
    let id = value
        .get(R::ID_COLUMN)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let version = value.get("version").and_then(Value::as_i64).unwrap_or(0);
    tracing::info!(
        projection,
        aggregate_type,
        aggregate_id = %id,
        version,
        "read-model state has an old shape; refolding it from the log"
    );
    let state = refold::<R::Aggregate>(conn, &id, version).await?;
    if let Value::Object(map) = &mut value {
        map.insert(
            "state".to_owned(),
            serde_json::to_value(state).map_err(|source| Error::Row { projection, source })?,
        );
        map.insert(
            "state_version".to_owned(),
            Value::from(R::Aggregate::STATE_VERSION),
        );
    }
    serde_json::from_value::<R>(value).map_err(|source| Error::Row { projection, source })
}

/// The state of aggregate `id` after its events 1..=`version`, folded from the log.
async fn refold<A: AggregateSchema>(conn: &mut PgConnection, id: &str, version: i64) -> Result<A> {
    let events: Vec<RecordedEvent> = sqlx::query_as(
        "select aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                global_position, tx_id::text::bigint as tx_id, recorded_at
         from events where aggregate_type = $1 and aggregate_id = $2 and sequence <= $3
         order by sequence",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let mut state = A::default();
    for event in &events {
        state.apply(event.decode::<A>()?);
    }
    Ok(state)
}

/// Inserts or replaces `rows` in `table` in one statement; `key` lists the primary-key columns.
pub(crate) async fn upsert_rows<R: Serialize>(
    conn: &mut PgConnection,
    projection: &'static str,
    table: &str,
    key: &[&str],
    rows: &[R],
) -> Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // The column names: the keys of one row (struct fields serialize in the same order for every row).
    let Value::Object(first) =
        serde_json::to_value(first).map_err(|source| Error::Row { projection, source })?
    else {
        return Ok(());
    };
    let updates = first
        .keys()
        .filter(|column| !key.contains(&column.as_str()))
        .map(|column| format!("\"{column}\" = excluded.\"{column}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Serialized straight to JSON text: no `serde_json::Value` tree per row. `json_populate_recordset`
    // reads the text as it is; the jsonb variant would first convert every row (sorting its keys).
    let json = serde_json::to_string(rows).map_err(|source| Error::Row { projection, source })?;
    let sql = format!(
        "insert into {table}
         select * from json_populate_recordset(null::{table}, $1::text::json)
         on conflict ({}) do update set {updates}",
        key.join(", ")
    );
    sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
    Ok(())
}
