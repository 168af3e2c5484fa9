//! One read of the log for all the runners of a process.
//!
//! Every projection reads the same log. While they catch up, the runners of one process start from the
//! same checkpoint and grow their batches the same way, so they ask for the same events, one after the
//! other: without sharing, the log would be read (and every payload decoded) once per projection. A
//! runner that reads a batch leaves it here; the next runner asking for at least as many events after the
//! same checkpoint takes it instead of querying.
//!
//! # Why a cached batch is exactly what a fresh read would return
//! [`store::log::read_after`] returns, in `(tx_id, global_position)` order, the first events after the
//! checkpoint whose transaction id is below the reading snapshot's `xmin`. Every transaction below that
//! `xmin` had ended when the batch was read, so every event a later read could add belongs to a
//! transaction at or above it, and sorts after the whole batch. A later read after the same checkpoint
//! therefore starts with the same events in the same order: a cached batch of `n` events answers every
//! request for at most `n` of them. Events are never updated or deleted. A batch shorter than a request
//! is not used (a fresh read may find more), so sharing never shortens a batch.
//!
//! The cache keeps only full batches (the catch-up case), is bounded by events held (not entries), and
//! drops an entry once every other runner of the process has taken it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sqlx::PgConnection;
use store::log::read_after;
use store::{Checkpoint, RecordedEvent};

use crate::error::Result;

/// Most events held at once (payloads and metadata as JSON text: a few MB per thousand events; `serve`'s memory target is
/// 150 MB in all).
const MAX_EVENTS: usize = 8_000;

struct Entry {
    after: Checkpoint,
    events: Arc<Vec<RecordedEvent>>,
    /// How many runners have taken it besides the one that read it.
    taken: usize,
}

/// Batches of the log recently read by this process's runners.
pub(crate) struct SharedReads {
    /// How many other runners may take an entry (runners in the process − 1).
    sharers: usize,
    entries: Mutex<VecDeque<Entry>>,
}

/// A batch of events: the first `len` of a (possibly longer) shared read.
pub(crate) struct Batch {
    events: Arc<Vec<RecordedEvent>>,
    len: usize,
}

impl Batch {
    pub(crate) fn events(&self) -> &[RecordedEvent] {
        &self.events[..self.len]
    }
}

impl SharedReads {
    /// A cache for `runners` runners (with fewer than two, nothing is ever kept).
    pub(crate) fn new(runners: usize) -> Self {
        Self {
            sharers: runners.saturating_sub(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Up to `limit` events after `after`: from the cache when another runner read at least that many
    /// from the same checkpoint, otherwise from the log through `conn` (and then kept for the others).
    pub(crate) async fn read(
        &self,
        conn: &mut PgConnection,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Batch> {
        let wanted = usize::try_from(limit).unwrap_or(0);
        if let Some(batch) = self.take(after, wanted) {
            metrics::counter!("trailbook_projection_shared_reads_total").increment(1);
            return Ok(batch);
        }
        let events = Arc::new(read_after(&mut *conn, after, limit).await?);
        let len = events.len();
        // Only a full batch can answer another runner (a short one is never used, see above): live
        // batches, nearly always short, are not kept at all.
        if len == wanted {
            self.keep(after, events.clone());
        }
        Ok(Batch { events, len })
    }

    fn take(&self, after: Checkpoint, wanted: usize) -> Option<Batch> {
        if self.sharers == 0 || wanted == 0 {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        let index = entries
            .iter()
            .position(|e| e.after == after && e.events.len() >= wanted)?;
        let entry = entries.get_mut(index)?;
        entry.taken += 1;
        let events = entry.events.clone();
        if entry.taken >= self.sharers {
            entries.remove(index);
        }
        Some(Batch {
            events,
            len: wanted,
        })
    }

    fn keep(&self, after: Checkpoint, events: Arc<Vec<RecordedEvent>>) {
        if self.sharers == 0 || events.is_empty() || events.len() > MAX_EVENTS {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // A longer read from the same checkpoint replaces a shorter one.
        entries.retain(|e| e.after != after);
        entries.push_back(Entry {
            after,
            events,
            taken: 0,
        });
        let mut held: usize = entries.iter().map(|e| e.events.len()).sum();
        while held > MAX_EVENTS {
            match entries.pop_front() {
                Some(oldest) => held -= oldest.events.len(),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries
            .lock()
            .map(|e| e.iter().map(|e| e.events.len()).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> Arc<Vec<RecordedEvent>> {
        let event = RecordedEvent {
            aggregate_type: "booking".into(),
            aggregate_id: "b-1".into(),
            sequence: 1,
            event_type: "BookingRequested".into(),
            event_version: "1.0".into(),
            payload: store::StoredJson::from_value(&serde_json::Value::Null),
            metadata: store::StoredJson::from_value(&serde_json::Value::Null),
            global_position: 1,
            tx_id: 1,
            recorded_at: chrono::Utc::now(),
        };
        Arc::new(vec![event; n])
    }

    const AT: Checkpoint = Checkpoint {
        tx_id: 5,
        position: 10,
    };

    /// A kept batch answers requests for as many events or fewer, from the same checkpoint only, and is
    /// dropped once every other runner took it.
    #[test]
    fn a_batch_is_shared_with_every_other_runner_once() {
        let cache = SharedReads::new(3);
        cache.keep(AT, events(100));
        assert!(cache.take(AT, 101).is_none(), "a shorter read is not used");
        assert!(cache.take(Checkpoint::default(), 10).is_none());
        assert_eq!(cache.take(AT, 40).map(|b| b.events().len()), Some(40));
        assert_eq!(cache.take(AT, 100).map(|b| b.events().len()), Some(100));
        assert!(cache.take(AT, 1).is_none(), "both other runners took it");
        assert_eq!(cache.held(), 0);
    }

    /// The cache never holds more than its bound, dropping the oldest batches first; a lone runner keeps
    /// nothing.
    #[test]
    fn the_cache_is_bounded() {
        let cache = SharedReads::new(4);
        for position in 0..40 {
            let at = Checkpoint {
                tx_id: position,
                position,
            };
            cache.keep(at, events(1000));
        }
        assert!(cache.held() <= MAX_EVENTS);
        assert!(cache
            .take(
                Checkpoint {
                    tx_id: 39,
                    position: 39
                },
                1000
            )
            .is_some());
        assert!(cache.take(AT, 1).is_none());

        let alone = SharedReads::new(1);
        alone.keep(AT, events(10));
        assert_eq!(alone.held(), 0);
    }
}
