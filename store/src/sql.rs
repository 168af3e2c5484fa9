//! The text of the command path's writes, one copy of each statement: the store runs the append and the
//! slot claim, the command API runs the idempotency record in the append transaction (a `CommitHook`),
//! and the bench sends all three raw to measure the command path against bare SQL.
//!
//! Each constant lists its parameters in bind order.

/// One multi-row INSERT for all events of a command; returns the `global_position` of each event.
///
/// `$1` aggregate type, `$2` aggregate id, then one array entry per event: `$3` sequence (`bigint[]`),
/// `$4` event type and `$5` event version (`text[]`), `$6` payload and `$7` metadata (`jsonb[]`).
pub const APPEND_EVENTS: &str = "
    insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    select $1, $2, t.sequence, t.event_type, t.event_version, t.payload, t.metadata
    from unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
         as t(sequence, event_type, event_version, payload, metadata)
    returning global_position";

/// Claims `[$4, $5)` of resource `$3` at partner `$2` for booking `$1`; writes no row when an overlapping
/// claim exists. `ON CONFLICT DO NOTHING` also covers exclusion constraints; it waits for a concurrent
/// claimer to finish.
pub const CLAIM_SLOT: &str = "insert into resource_claims (booking_id, partner, resource, period)
         values ($1, $2, $3, tstzrange($4, $5, '[)'))
         on conflict do nothing";

/// Records the answer (status 202) of an idempotent create under (scope, key).
///
/// `$1` scope (the client), `$2` idempotency key, `$3` request hash, `$4` aggregate type, `$5` aggregate
/// id, `$6` response (`jsonb`), `$7` time to live (`interval`). An expired record of the same key is
/// replaced; a live one is left alone and no row is written (a concurrent request holds the key).
pub const RECORD_IDEMPOTENCY_KEY: &str = "insert into idempotency_keys
                 (scope, idempotency_key, request_hash, aggregate_type, aggregate_id, status_code, response, expires_at)
             values ($1, $2, $3, $4, $5, 202, $6, now() + $7)
             on conflict (scope, idempotency_key) do update
                 set request_hash = excluded.request_hash, aggregate_type = excluded.aggregate_type,
                     aggregate_id = excluded.aggregate_id, status_code = excluded.status_code,
                     response = excluded.response, created_at = now(), expires_at = excluded.expires_at
                 where idempotency_keys.expires_at <= now()";
