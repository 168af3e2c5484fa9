//! The global log: every event of every aggregate, in an order that never skips a committed event.
//!
//! `global_position` comes from an identity column, so it is handed out at INSERT time, not at COMMIT
//! time: a slow transaction can hold position 25 while a faster one commits 26. A reader that only
//! remembered "position > 25" would then never see 25. Instead the log is read by `(tx_id,
//! global_position)` and only below `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still
//! running: every transaction below it has finished, so nothing can still appear behind the cursor. The
//! price is that one long transaction holds the log back until it ends (visible as lag, never as a gap).

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use domain::AggregateSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{PgExecutor, Postgres};

use crate::error::{CorruptEvent, Error, Result};

/// A reader's position in the global log: the last event it has handled.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checkpoint {
    /// Transaction id (`xid8`) of the last event handled.
    pub tx_id: i64,
    /// Global position of the last event handled.
    pub position: i64,
}

/// One stored event with everything the table knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RecordedEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: StoredJson,
    pub metadata: StoredJson,
    pub global_position: i64,
    pub tx_id: i64,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The checkpoint a reader stores after handling this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.tx_id,
            position: self.global_position,
        }
    }

    /// The typed domain event, brought up to date by the aggregate's upcasters.
    pub fn decode<A: AggregateSchema>(&self) -> Result<A::Event> {
        let upcasters = A::upcasters();
        if !upcasters
            .iter()
            .any(|u| u.can_upcast(&self.event_type, &self.event_version))
        {
            // Current version: parsed from the stored text straight into the typed event.
            return self.payload.parse::<A::Event>().map_err(|e| {
                corrupt::<A>(
                    &self.aggregate_id,
                    self.sequence,
                    &self.event_type,
                    &self.event_version,
                    e,
                )
            });
        }
        let payload = self.payload.parse::<serde_json::Value>().map_err(|e| {
            corrupt::<A>(
                &self.aggregate_id,
                self.sequence,
                &self.event_type,
                &self.event_version,
                e,
            )
        })?;
        decode_event::<A>(
            &upcasters,
            &self.aggregate_id,
            self.sequence,
            &self.event_type,
            &self.event_version,
            payload,
        )
    }
}

/// A stored event's payload or metadata as the JSON text PostgreSQL sent, parsed only by whoever reads
/// it: the projector and the reactor read every event of the log, and a `serde_json::Value` tree per
/// event (a map and a string per key) was most of their CPU; [`StoredJson::parse`] goes straight to the
/// typed event.
#[derive(Clone)]
pub struct StoredJson(Box<RawValue>);

impl StoredJson {
    /// The value as JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The value parsed into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// The value as a JSON tree, for display and tests (null if it nests deeper than serde_json's
    /// recursion limit of 128, which no event of this engine does).
    pub fn to_value(&self) -> serde_json::Value {
        self.parse().unwrap_or_default()
    }

    /// The stored form of `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        // A `Value` always prints as valid JSON, so this cannot fail; null is only a formal fallback.
        Self(RawValue::from_string(value.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }
}

/// Equal when the JSON values are equal (key order and spacing aside).
impl PartialEq for StoredJson {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() || self.to_value() == other.to_value()
    }
}

impl std::fmt::Debug for StoredJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json())
    }
}

impl std::fmt::Display for StoredJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json())
    }
}

/// Serialized as the JSON value it holds, through any serializer (a raw value passes only through
/// serde_json's own).
impl Serialize for StoredJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StoredJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|value| Self::from_value(&value))
    }
}

impl sqlx::Type<Postgres> for StoredJson {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<Box<RawValue>> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<Box<RawValue>> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for StoredJson {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        <sqlx::types::Json<Box<RawValue>> as sqlx::Decode<'r, Postgres>>::decode(value)
            .map(|json| Self(json.0))
    }
}

/// Columns of [`RecordedEvent`], for queries that build one.
pub(crate) const RECORDED_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata, global_position, tx_id::text::bigint as tx_id, recorded_at";

/// Upcasts and deserializes one stored event; a failure is a [`Error::CorruptEvent`] naming the row.
pub(crate) fn decode_event<A: AggregateSchema>(
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: serde_json::Value,
) -> Result<A::Event> {
    let mut serialized = SerializedEvent::new(
        aggregate_id.to_string(),
        usize::try_from(sequence).unwrap_or_default(),
        A::TYPE.to_string(),
        event_type.to_string(),
        event_version.to_string(),
        payload,
        serde_json::Value::Null,
    );
    for upcaster in upcasters {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    serde_json::from_value(serialized.payload)
        .map_err(|e| corrupt::<A>(aggregate_id, sequence, event_type, event_version, e))
}

/// The error of a stored event that does not deserialize into `A`'s events.
fn corrupt<A: AggregateSchema>(
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    reason: impl std::fmt::Display,
) -> Error {
    Error::CorruptEvent(Box::new(CorruptEvent {
        aggregate_type: A::TYPE.to_string(),
        aggregate_id: aggregate_id.to_string(),
        sequence,
        event_type: event_type.to_string(),
        event_version: event_version.to_string(),
        reason: reason.to_string(),
    }))
}

/// Reads up to `limit` events after `after`, in log order, stopping before any transaction that may still
/// commit. Calling it again with the checkpoint of the last event returned continues without gaps.
///
/// The `order by` names `events.tx_id`: a bare `tx_id` would mean the output column (the `bigint` cast of
/// the select list), which no index provides, so every page would sort all the events after the cursor.
pub async fn read_after<'e, E: PgExecutor<'e>>(
    executor: E,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let sql = format!(
        "select {RECORDED_COLUMNS} from events
         where (tx_id, global_position) > ($1::bigint::text::xid8, $2)
           and tx_id < pg_snapshot_xmin(pg_current_snapshot())
         order by events.tx_id, events.global_position
         limit $3"
    );
    Ok(sqlx::query_as::<_, RecordedEvent>(&sql)
        .bind(after.tx_id)
        .bind(after.position)
        .bind(limit)
        .fetch_all(executor)
        .await?)
}

/// The highest global position written so far (0 for an empty log), committed or not.
pub async fn head_position<'e, E: PgExecutor<'e>>(executor: E) -> Result<i64> {
    let head: Option<i64> = sqlx::query_scalar("select max(global_position) from events")
        .fetch_one(executor)
        .await?;
    Ok(head.unwrap_or(0))
}

/// The checkpoint of the last event a reader could have read now: a reader that starts from it sees every
/// event committed later and none from before (for live feeds that do not replay history).
pub async fn tail<'e, E: PgExecutor<'e>>(executor: E) -> Result<Checkpoint> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select tx_id::text::bigint, global_position from events
         where tx_id < pg_snapshot_xmin(pg_current_snapshot())
         order by events.tx_id desc, events.global_position desc
         limit 1",
    )
    .fetch_optional(executor)
    .await?;
    Ok(row
        .map(|(tx_id, position)| Checkpoint { tx_id, position })
        .unwrap_or_default())
}
