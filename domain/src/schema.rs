//! What the event store needs to know about an aggregate beyond `cqrs_es::Aggregate`.

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;

/// An aggregate the store can snapshot and load from events written by older versions of trailbook.
pub trait AggregateSchema: Aggregate + Clone {
    /// Version of the serialized state shape. Bump it whenever a field of the aggregate struct changes:
    /// snapshots written under another version are ignored (the state is folded from events instead).
    const STATE_VERSION: i32;

    /// Upcasters that bring stored events of this aggregate up to the current event versions.
    fn upcasters() -> Vec<Box<dyn EventUpcaster>>;
}
