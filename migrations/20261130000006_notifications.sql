-- The notification log of the e-mail job (workers/src/visit_effects.rs): one row per e-mail, keyed by its
-- deterministic Message-ID. A send attempt marks the row `sending` before it talks to the provider and `sent`
-- after; a later attempt that finds `sending` knows the earlier outcome is unknown and asks the transport
-- whether the message arrived before it sends again, so a provider timeout after success is not a second
-- e-mail. `sent` rows are never sent again.
create table notifications (
    message_id    text        primary key,
    -- what the e-mail is about
    aggregate_type text       not null,
    aggregate_id  text        not null,
    kind          text        not null,
    recipient     text        not null,
    -- how it was sent (`file`, `smtp`)
    transport     text        not null,
    state         text        not null default 'sending' check (state in ('sending', 'sent')),
    -- send attempts so far
    attempts      integer     not null default 1,
    last_error    text,
    created_at    timestamptz not null default now(),
    sent_at       timestamptz
);

create index notifications_aggregate on notifications (aggregate_type, aggregate_id);
