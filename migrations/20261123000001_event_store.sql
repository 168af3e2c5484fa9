-- The event store: one append-only table of immutable, versioned events, plus snapshots (a pure cache).

-- events: the source of truth. The first seven columns are the postgres-es (cqrs-es 0.5) layout, so its
-- repository can read and append to this table; the rest are ours.
create table events (
    aggregate_type  text   not null,
    aggregate_id    text   not null,
    -- per-aggregate version, 1-based, gap-free; the primary key makes a stale writer fail (optimistic concurrency)
    sequence        bigint not null check (sequence >= 1),
    event_type      text   not null,
    event_version   text   not null,
    payload         jsonb  not null,
    -- event id, correlation and causation ids, actor, idempotency key, service version
    metadata        jsonb  not null,
    -- total order of insertion across all aggregates; NOT commit order (see tx_id)
    global_position bigint generated always as identity,
    -- the writing transaction: readers of the global log only deliver events of transactions older than the
    -- oldest one still running (pg_snapshot_xmin), so a slow transaction can never be skipped
    tx_id           xid8   not null default pg_current_xact_id(),
    -- transaction start time; all events of one command share it
    recorded_at     timestamptz not null default now(),
    constraint events_pkey primary key (aggregate_type, aggregate_id, sequence),
    constraint events_global_position_key unique (global_position)
);
comment on table events is 'Append-only event log; UPDATE, DELETE and TRUNCATE are refused by trigger.';

-- the global log reader's cursor: (tx_id, global_position) > checkpoint, ordered the same way
create index events_tx_position_idx on events (tx_id, global_position);

-- time travel "as of T" per aggregate and audits by time
create index events_recorded_at_idx on events (recorded_at);

create function events_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'events are append-only: % is not allowed on %', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger events_append_only_rows
    before update or delete on events
    for each row execute function events_refuse_change();

create trigger events_append_only_truncate
    before truncate on events
    for each statement execute function events_refuse_change();

-- snapshots: a cache of fold(events 1..sequence). Several per aggregate are kept, so time travel to any
-- version starts from the nearest older one. A row whose state_version differs from the aggregate's current
-- STATE_VERSION, or that no longer deserializes, is ignored; deleting any row is always safe.
create table snapshots (
    aggregate_type text        not null,
    aggregate_id   text        not null,
    sequence       bigint      not null check (sequence >= 1),
    state_version  integer     not null,
    state          jsonb       not null,
    -- global position of the event at `sequence` (what a no-op command reports as its position)
    global_position bigint,
    created_at     timestamptz not null default now(),
    constraint snapshots_pkey primary key (aggregate_type, aggregate_id, sequence)
);
comment on table snapshots is 'Cache of folded aggregate state at a sequence; safe to delete.';
