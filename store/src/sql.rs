//! The text of the command path's writes, one copy of each statement: the store's committer runs them
//! for one command or for a batch (see [`crate::commit`]), and the bench sends them raw, one command per
//! transaction, to measure the command path against bare SQL. Every statement takes arrays, one entry per
//! row, so one text serves one command and many.
//!
//! Each constant lists its parameters in bind order.

/// The event columns of an append, as arrays with one entry per event: `$1` aggregate type and `$2`
/// aggregate id (`text[]`), `$3` sequence (`bigint[]`), `$4` event type and `$5` event version
/// (`text[]`), `$6` payload and `$7` metadata (JSON text, `text[]`, parsed into `jsonb` by the insert).
/// The events may belong to several commands.
macro_rules! insert_events {
    ($on_conflict:literal) => {
        concat!(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    select t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload::jsonb, t.metadata::jsonb
    from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
         as t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    ",
            $on_conflict,
            "
    returning aggregate_type, aggregate_id, sequence, global_position"
        )
    };
}

/// One multi-row INSERT of events (see `insert_events!` for the parameters); returns
/// `(aggregate_type, aggregate_id, sequence, global_position)` of each. The events' primary key refuses
/// the whole statement when a sequence is taken (another writer won the race).
pub const APPEND_EVENTS: &str = insert_events!("");

/// [`APPEND_EVENTS`] for a batch: an event whose sequence is taken is skipped instead, so the batch
/// sees which commands lost their race from what is returned.
pub const APPEND_EVENTS_UNLESS_TAKEN: &str =
    insert_events!("on conflict (aggregate_type, aggregate_id, sequence) do nothing");

/// Claims, one row per booking: `$1` booking id, `$2` partner, `$3` resource (`text[]`), `$4` start and
/// `$5` end (`timestamptz[]`) of `[start, end)`. Writes no row for a claim that overlaps a live one or
/// whose booking holds one already (`ON CONFLICT DO NOTHING` covers the exclusion constraint too, and
/// waits for a concurrent claimer to finish); returns the booking id of each claim written.
pub const CLAIM_SLOTS: &str = "insert into resource_claims (booking_id, partner, resource, period)
         select t.booking_id, t.partner, t.resource, tstzrange(t.starts_at, t.ends_at, '[)')
         from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
              as t(booking_id, partner, resource, starts_at, ends_at)
         on conflict do nothing
         returning booking_id";

/// For claims that [`CLAIM_SLOTS`] did not write (same parameters): `(booking id, holder)`, the holder
/// being the booking itself when it holds a claim already, else a booking holding an overlapping one.
pub const CLAIM_HOLDERS: &str = "select t.booking_id, h.booking_id
         from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
              as t(booking_id, partner, resource, starts_at, ends_at)
         cross join lateral (
             select c.booking_id from resource_claims c
             where c.booking_id = t.booking_id
                or (c.partner = t.partner and c.resource = t.resource
                    and c.period && tstzrange(t.starts_at, t.ends_at, '[)'))
             order by c.booking_id = t.booking_id desc
             limit 1
         ) h";

/// Releases the claims of the bookings `$1` (`text[]`).
pub const RELEASE_SLOTS: &str = "delete from resource_claims where booking_id = any($1)";

/// Records the answers (status 202) of idempotent creates, one row per create: `$1` scope (the client),
/// `$2` idempotency key, `$3` request hash, `$4` aggregate type, `$5` aggregate id (`text[]`), `$6`
/// response (`jsonb[]`), `$7` time to live in seconds (`float8[]`). An expired record of the same key is
/// replaced; a live one is left alone and no row is written (a concurrent request holds the key).
/// Returns `(scope, idempotency_key)` of each record written.
pub const RECORD_IDEMPOTENCY_KEYS: &str = "insert into idempotency_keys
                 (scope, idempotency_key, request_hash, aggregate_type, aggregate_id, status_code, response, expires_at)
             select t.scope, t.key, t.request_hash, t.aggregate_type, t.aggregate_id, 202, t.response,
                    now() + make_interval(secs => t.ttl)
             from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::float8[])
                  as t(scope, key, request_hash, aggregate_type, aggregate_id, response, ttl)
             on conflict (scope, idempotency_key) do update
                 set request_hash = excluded.request_hash, aggregate_type = excluded.aggregate_type,
                     aggregate_id = excluded.aggregate_id, status_code = excluded.status_code,
                     response = excluded.response, created_at = now(), expires_at = excluded.expires_at
                 where idempotency_keys.expires_at <= now()
             returning scope, idempotency_key";

/// A whole batch (or one command) in one autocommitted statement, for when nothing is released: the
/// claims, the events and the idempotency records of [`CLAIM_SLOTS`], [`APPEND_EVENTS`] and
/// [`RECORD_IDEMPOTENCY_KEYS`] as plain inserts, so any taken slot, sequence or key (even an expired
/// one) refuses the whole statement and the committer falls back to its transaction, which sorts out
/// who gets which outcome. Each record's `position` field is filled in with its command's last
/// position, which only the insert of the events knows.
///
/// `$1`–`$7` the events (as in `insert_events!`), `$8`–`$12` the claims (as in [`CLAIM_SLOTS`]),
/// `$13`–`$19` the records (as in [`RECORD_IDEMPOTENCY_KEYS`]). Returns what [`APPEND_EVENTS`] returns.
pub const COMMIT_IN_ONE_STATEMENT: &str = "
    with claims as (
        insert into resource_claims (booking_id, partner, resource, period)
        select t.booking_id, t.partner, t.resource, tstzrange(t.starts_at, t.ends_at, '[)')
        from unnest($8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])
             as t(booking_id, partner, resource, starts_at, ends_at)
        returning 1
    ), appended as (
        insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        select t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload::jsonb, t.metadata::jsonb
        from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
             as t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        returning aggregate_type, aggregate_id, sequence, global_position
    ), records as (
        insert into idempotency_keys
            (scope, idempotency_key, request_hash, aggregate_type, aggregate_id, status_code, response, expires_at)
        select t.scope, t.key, t.request_hash, t.aggregate_type, t.aggregate_id, 202,
               jsonb_set(t.response, '{position}', to_jsonb(p.position)), now() + make_interval(secs => t.ttl)
        from unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::float8[])
             as t(scope, key, request_hash, aggregate_type, aggregate_id, response, ttl)
        join (select aggregate_type, aggregate_id, max(global_position) as position
              from appended group by aggregate_type, aggregate_id) p
          on p.aggregate_type = t.aggregate_type and p.aggregate_id = t.aggregate_id
        returning 1
    )
    select aggregate_type, aggregate_id, sequence, global_position from appended";
