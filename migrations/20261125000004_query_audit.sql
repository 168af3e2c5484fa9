-- What the query API needs beyond the projector's read models.

-- audit_log: every read of an aggregate's history or past state (time travel) through the query API: who
-- looked at what, when, and how. Support staff query it; nobody may change it (append-only, like events).
create table audit_log (
    id             bigint      generated always as identity,
    at             timestamptz not null default now(),
    -- the reader: token subject and role
    subject        text        not null,
    role           text        not null,
    -- history or time_travel
    action         text        not null check (action in ('history', 'time_travel')),
    aggregate_type text        not null,
    aggregate_id   text        not null,
    -- the arguments of the read (as_of, at_version, from, to)
    detail         jsonb       not null default '{}',
    -- the request's X-Correlation-Id, when it had one
    correlation_id text,
    constraint audit_log_pkey primary key (id)
);
comment on table audit_log is 'Who read which history or past state through the query API, and when. Append-only.';

create index audit_log_at_id_idx on audit_log (at, id);
comment on index audit_log_at_id_idx is 'Keyset pagination of the audit log, newest first.';
create index audit_log_aggregate_type_aggregate_id_at_idx on audit_log (aggregate_type, aggregate_id, at);
comment on index audit_log_aggregate_type_aggregate_id_at_idx is 'Who looked at one aggregate.';

create function audit_log_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op using errcode = 'insufficient_privilege';
end $$;
create trigger audit_log_append_only_rows
    before update or delete on audit_log
    for each row execute function audit_log_refuse_change();
create trigger audit_log_append_only_truncate
    before truncate on audit_log
    for each statement execute function audit_log_refuse_change();

-- bookings of one customer (by e-mail), paginated by creation time, for `bookings(filter: {customer})`.
-- Named as PostgreSQL would name it, so a rebuild's copy gets the matching name (see the projector's migration).
create index rm_bookings_customer_email_created_at_booking_id_idx
    on rm_bookings (customer_email, created_at, booking_id);
comment on index rm_bookings_customer_email_created_at_booking_id_idx is 'Bookings of one customer, paginated by creation time.';

-- visits of one clinician, paginated by creation time, for `visits(filter: {clinician})`.
create index rm_visits_clinician_created_at_visit_id_idx
    on rm_visits (clinician, created_at, visit_id);
comment on index rm_visits_clinician_created_at_visit_id_idx is 'Visits of one clinician, paginated by creation time.';
