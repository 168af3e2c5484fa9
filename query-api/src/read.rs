//! Reading one aggregate: from its read model, through the projector's catalog ([`projector::catalog`]),
//! or folded from the event store (now, at a version, or as of a time); pages of the read models, and
//! the cursors that name their positions.
//!
//! This module runs no SQL: the read models, their checkpoints and the log are read through the projector
//! and the store.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use projector::catalog::{self, Cursor, ListQuery, Stored};
use projector::ReadModel;
use store::EventStore;

use crate::error::QueryError;
use crate::types::{Source, Stamped};

/// What the query API needs to know about an aggregate type: the projector's [`ReadModel`], under the
/// name the subscriptions use.
pub use projector::ReadModel as Readable;

/// Where in its history to fold an aggregate.
#[derive(Debug, Clone, Copy)]
pub enum At {
    Head,
    Version(u64),
    Time(DateTime<Utc>),
}

/// The state folded from the event store, or `None` if the aggregate did not exist at that point.
pub async fn fold<A: ReadModel>(
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
    let Some(stamps) = catalog::stamps::<A>(store.pool(), id, version).await? else {
        return Ok(None);
    };
    Ok(Some(Stamped {
        state: loaded.state,
        version,
        position: loaded.position.or(stamps.position),
        created_at: stamps.created_at,
        updated_at: stamps.updated_at,
        source: Source::EventStore,
    }))
}

/// A read-model row as an answer; a row whose state does not decode (an older state shape mid-rebuild) is
/// folded from the event store instead.
async fn stamped<A: ReadModel>(
    store: &EventStore,
    row: Stored<A>,
) -> Result<Option<Stamped<A>>, QueryError> {
    match row.state {
        Ok(state) => Ok(Some(Stamped {
            state,
            version: row.version,
            position: Some(row.position),
            created_at: row.created_at,
            updated_at: row.updated_at,
            source: Source::ReadModel,
        })),
        Err(e) => {
            tracing::warn!(aggregate_type = A::TYPE, aggregate_id = row.id.as_str(), error = %e,
                "read-model row does not decode; folding the event store instead");
            fold::<A>(store, &row.id, At::Head).await
        }
    }
}

/// The aggregate from its read model (see [`stamped`] for a row that does not decode).
pub async fn from_read_model<A: ReadModel>(
    store: &EventStore,
    id: &str,
) -> Result<Option<Stamped<A>>, QueryError> {
    match catalog::row::<A>(store.pool(), id).await? {
        None => Ok(None),
        Some(row) => stamped(store, row).await,
    }
}

/// One page of a list: its items with their cursors, and whether another page follows.
pub struct Page<A> {
    pub items: Vec<(Cursor, Stamped<A>)>,
    pub has_next_page: bool,
}

/// One page of `query` (see [`stamped`] for a row that does not decode).
pub async fn page<A: ReadModel>(
    store: &EventStore,
    query: &ListQuery<A>,
) -> Result<Page<A>, QueryError> {
    let page = query.page(store.pool()).await?;
    let mut items = Vec::with_capacity(page.rows.len());
    for row in page.rows {
        let cursor = Cursor {
            created_at: row.created_at,
            id: row.id.clone(),
        };
        if let Some(stamped) = stamped(store, row).await? {
            items.push((cursor, stamped));
        }
    }
    Ok(Page {
        items,
        has_next_page: page.has_next_page,
    })
}

/// `cursor` as the opaque text lists hand out.
pub fn encode_cursor(cursor: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        cursor.created_at.timestamp_micros(),
        cursor.id
    ))
}

/// The cursor a list handed out as `text`.
pub fn decode_cursor(text: &str) -> Result<Cursor, QueryError> {
    let bad = || QueryError::bad_input("after", "`after` is not a cursor returned by this list");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok(Cursor {
        created_at,
        id: id.to_owned(),
    })
}
