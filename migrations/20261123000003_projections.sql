-- Read models built by the projector from the global event log, and the projector's bookkeeping.
--
-- Every read-model table is owned by exactly one projection and written only by that projection's active
-- runner, in the same transaction that moves the projection's checkpoint: a row reflects exactly the events
-- up to the checkpoint, never one twice and never one skipped. Rebuilds copy each table's shape with
-- `create table <name>_rebuild (like <name> including all)` and swap names at the end, so index names here
-- follow PostgreSQL's default naming (`<table>_<columns>_idx`, `<table>_pkey`): the copies get the same names
-- with `_rebuild` in them, and the swap renames them back.
--
-- No NOTIFY trigger on `events`: PostgreSQL serializes the commits of all transactions that issued NOTIFY
-- (a database-wide lock held until the commit is flushed), which cut concurrent appends by 2.5x (4 clients)
-- to 8x (16 clients) on our machine. Runners poll a cheap "anything new?" query instead, and still LISTEN on
-- `trailbook_events`, so anyone may wake them early with a NOTIFY outside the append transaction.

-- projection_checkpoints: how far each projection has applied the global log. The runner locks its row
-- (select ... for update) at the start of every batch, which is what makes two runners unable to apply the
-- same batch, and updates it in the batch's transaction.
create table projection_checkpoints (
    name          text        not null,
    -- transaction id (xid8 as a number) and global position of the last event applied: the log cursor
    tx_id         bigint      not null default 0,
    position      bigint      not null default 0,
    updated_at    timestamptz not null default now(),
    -- recorded_at of the last event applied (null before the first)
    last_event_at timestamptz,
    constraint projection_checkpoints_pkey primary key (name)
);
comment on table projection_checkpoints is 'Per projection: the last (tx_id, global_position) of the log applied to its read model.';

insert into projection_checkpoints (name)
values ('bookings'), ('visits'), ('status_board'), ('timeline');

-- projection_rebuilds: the last rebuild of each projection, for `trailbook projections` and the REST route.
create table projection_rebuilds (
    name           text        not null,
    -- running, swapped (done: the rebuilt tables are live) or failed (see error)
    status         text        not null check (status in ('running', 'swapped', 'failed')),
    -- the rebuild's own cursor in the log, from zero
    tx_id          bigint      not null default 0,
    position       bigint      not null default 0,
    -- highest global position when the rebuild last looked (the "total" of its progress)
    head_position  bigint      not null default 0,
    events_applied bigint      not null default 0,
    started_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    finished_at    timestamptz,
    error          text,
    constraint projection_rebuilds_pkey primary key (name)
);
comment on table projection_rebuilds is 'Progress and outcome of the last rebuild of each projection.';

-- rm_bookings (projection `bookings`): one row per booking, its state folded from its events.
create table rm_bookings (
    booking_id             text        not null,
    owner                  text        not null,
    status                 text        not null,
    partner                text        not null,
    resource               text        not null,
    starts_at              timestamptz not null,
    ends_at                timestamptz not null,
    guests                 integer     not null,
    amount_minor           bigint,
    currency               text,
    customer_name          text,
    customer_email         text,
    reservation_id         text,
    payment_id             text,
    partner_attempts       integer     not null,
    -- when the booking first entered each status (recorded_at of the event that moved it there)
    requested_at           timestamptz,
    partner_pending_at     timestamptz,
    confirmed_at           timestamptz,
    paid_at                timestamptz,
    rejected_at            timestamptz,
    failed_at              timestamptz,
    cancelled_at           timestamptz,
    compensating_at        timestamptz,
    compensation_failed_at timestamptz,
    -- when the booking entered its current status
    status_since           timestamptz not null,
    -- recorded_at of the first and of the last event
    created_at             timestamptz not null,
    updated_at             timestamptz not null,
    -- sequence and global position of the last event applied
    version                bigint      not null,
    last_position          bigint      not null,
    -- the aggregate's state (serde JSON of domain::Booking) and the shape version it was written with:
    -- the next event is applied to it, and a row of another state_version is refolded from the log first
    state_version          integer     not null,
    state                  jsonb       not null,
    constraint rm_bookings_pkey primary key (booking_id)
);
comment on table rm_bookings is 'Read model of bookings (projection bookings): one row per booking.';

-- keyset pagination over all bookings, newest or oldest first: (created_at, booking_id) > cursor
create index rm_bookings_created_at_booking_id_idx on rm_bookings (created_at, booking_id);
comment on index rm_bookings_created_at_booking_id_idx is 'Keyset pagination of bookings by creation time.';
-- filter by status, paginated the same way
create index rm_bookings_status_created_at_booking_id_idx on rm_bookings (status, created_at, booking_id);
comment on index rm_bookings_status_created_at_booking_id_idx is 'Bookings of one status, paginated by creation time.';
-- filter by partner, paginated the same way
create index rm_bookings_partner_created_at_booking_id_idx on rm_bookings (partner, created_at, booking_id);
comment on index rm_bookings_partner_created_at_booking_id_idx is 'Bookings of one partner, paginated by creation time.';
-- a client lists its own bookings
create index rm_bookings_owner_created_at_booking_id_idx on rm_bookings (owner, created_at, booking_id);
comment on index rm_bookings_owner_created_at_booking_id_idx is 'Bookings of one client, paginated by creation time.';

-- rm_visits (projection `visits`): one row per visit of the care workflow, with its side effects.
create table rm_visits (
    visit_id            text        not null,
    owner               text        not null,
    status              text        not null,
    clinician           text        not null,
    patient_id          text,
    patient_name        text,
    -- the planned time of the visit (not a milestone)
    scheduled_at        timestamptz,
    -- side effects after completion: not_required, pending, done, failed
    report_status       text        not null,
    email_status        text        not null,
    report_attempts     integer     not null,
    email_attempts      integer     not null,
    -- when the visit first entered each status, and when its side effects finished
    checked_in_at       timestamptz,
    started_at          timestamptz,
    completed_at        timestamptz,
    cancelled_at        timestamptz,
    no_show_at          timestamptz,
    report_generated_at timestamptz,
    email_sent_at       timestamptz,
    status_since        timestamptz not null,
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    version             bigint      not null,
    last_position       bigint      not null,
    -- serde JSON of domain::Visit, as for rm_bookings
    state_version       integer     not null,
    state               jsonb       not null,
    constraint rm_visits_pkey primary key (visit_id)
);
comment on table rm_visits is 'Read model of visits (projection visits): one row per visit, with report and e-mail status.';

-- keyset pagination over all visits
create index rm_visits_created_at_visit_id_idx on rm_visits (created_at, visit_id);
comment on index rm_visits_created_at_visit_id_idx is 'Keyset pagination of visits by creation time.';
-- filter by status
create index rm_visits_status_created_at_visit_id_idx on rm_visits (status, created_at, visit_id);
comment on index rm_visits_status_created_at_visit_id_idx is 'Visits of one status, paginated by creation time.';
-- a clinician's agenda
create index rm_visits_clinician_scheduled_at_visit_id_idx on rm_visits (clinician, scheduled_at, visit_id);
comment on index rm_visits_clinician_scheduled_at_visit_id_idx is 'Visits of one clinician by planned time.';
-- a client lists its own visits
create index rm_visits_owner_created_at_visit_id_idx on rm_visits (owner, created_at, visit_id);
comment on index rm_visits_owner_created_at_visit_id_idx is 'Visits of one client, paginated by creation time.';

-- rm_status_items (projection `status_board`): the current status of every booking and visit and since when,
-- the source of the counts and of the "stuck" query (since < now() - threshold, per status).
create table rm_status_items (
    aggregate_type text        not null,
    aggregate_id   text        not null,
    status         text        not null,
    -- when the aggregate entered its current status
    since          timestamptz not null,
    -- visits only: side effects of a completed visit (not_required, pending, done, failed)
    report_status  text,
    email_status   text,
    version        bigint      not null,
    last_position  bigint      not null,
    -- the aggregate's folded state, so the next event is applied by the domain's own `apply`
    state_version  integer     not null,
    state          jsonb       not null,
    constraint rm_status_items_pkey primary key (aggregate_type, aggregate_id)
);
comment on table rm_status_items is 'Status board (projection status_board): current status of each aggregate and since when.';

-- the stuck query: one status of one aggregate type, oldest first
create index rm_status_items_aggregate_type_status_since_idx on rm_status_items (aggregate_type, status, since);
comment on index rm_status_items_aggregate_type_status_since_idx is 'Stuck items: a status entered longer ago than its threshold.';

-- rm_status_counts (projection `status_board`): how many aggregates are in each status, kept incrementally in
-- the same transaction as rm_status_items.
create table rm_status_counts (
    aggregate_type text   not null,
    status         text   not null,
    count          bigint not null,
    constraint rm_status_counts_pkey primary key (aggregate_type, status)
);
comment on table rm_status_counts is 'Status board (projection status_board): number of aggregates per type and status.';

-- rm_timeline (projection `timeline`): events per UTC day, aggregate type and event type, for dashboards.
create table rm_timeline (
    day            date   not null,
    aggregate_type text   not null,
    event_type     text   not null,
    count          bigint not null,
    constraint rm_timeline_pkey primary key (day, aggregate_type, event_type)
);
comment on table rm_timeline is 'Timeline (projection timeline): events per UTC day of recorded_at, aggregate type and event type.';
