-- What the command API needs beside the events: idempotency records and resource time-slot claims.

-- idempotency_keys: one row per (client, Idempotency-Key). Written in the same transaction as the events of
-- the create it answers, so a key is recorded if and only if its command committed. A retry with the same
-- key and body gets `response` back; another body gets 422.
create table idempotency_keys (
    -- who may reuse the key: the token's subject (keys of different clients never collide)
    scope          text        not null,
    idempotency_key text       not null,
    -- sha256 of the canonical request (method, route and body as parsed)
    request_hash   text        not null,
    aggregate_type text        not null,
    aggregate_id   text        not null,
    status_code    integer     not null,
    response       jsonb       not null,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    constraint idempotency_keys_pkey primary key (scope, idempotency_key)
);
comment on table idempotency_keys is 'Stored answers of creates, by client and Idempotency-Key; expired rows are purged.';

-- purging expired keys scans by expiry
create index idempotency_keys_expires_at_idx on idempotency_keys (expires_at);

-- btree_gist lets one exclusion constraint combine equality on text with overlap on ranges
create extension if not exists btree_gist;

-- resource_claims: a live booking's hold on [starts_at, ends_at) of one partner resource. Inserted in the
-- transaction that records BookingRequested, deleted in the one that moves the booking to a status that no
-- longer holds the slot (cancelled, rejected, failed). The exclusion constraint makes two overlapping live
-- bookings impossible, whatever the interleaving of requests.
create table resource_claims (
    booking_id text      not null,
    partner    text      not null,
    resource   text      not null,
    period     tstzrange not null,
    constraint resource_claims_pkey primary key (booking_id),
    constraint resource_claims_no_overlap exclude using gist (partner with =, resource with =, period with &&)
);
comment on table resource_claims is 'Time slots held by live bookings; the exclusion constraint prevents double booking.';
