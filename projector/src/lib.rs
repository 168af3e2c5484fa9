//! The projector: read models and status views built from the global event log.
//!
//! Will read the log through `store::log` by `(tx_id, global_position)` below `pg_snapshot_xmin`, write
//! read-model rows and its checkpoint in one transaction per batch, and hold one active runner per
//! projection across processes. Not built yet: see the projector issue.
#![forbid(unsafe_code)]
