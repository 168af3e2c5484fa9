-- Durable jobs of the workers (see workers/src/jobs.rs and docs/adr/0006-jobs.md).
--
-- Reactors read the global log and insert jobs in the same transaction that moves their checkpoint (the log
-- is the outbox). Workers claim jobs with `for update skip locked` under a lease, record every attempt in
-- job_attempts, retry with exponential backoff and jitter, and dead-letter a job after max_attempts. An
-- operator may replay a failed or dead job.

-- jobs: one row per unit of side-effect work, unique by dedupe_key.
create table jobs (
    id            bigint      generated always as identity,
    -- what runs it (a handler name such as `partner.reserve`)
    kind          text        not null,
    -- which worker pool claims it; each queue has its own bounded concurrency
    queue         text        not null default 'default',
    -- enqueueing twice with one key gives the same job (reactors re-reading an event, retries)
    dedupe_key    text        not null,
    payload       jsonb       not null,
    -- queued: waiting; running: claimed under a lease; succeeded; failed: retry scheduled at run_at;
    -- dead: gave up after max_attempts (or a permanent error), waits for an operator replay
    state         text        not null default 'queued'
                  check (state in ('queued', 'running', 'succeeded', 'failed', 'dead')),
    -- attempts since the job was enqueued or last replayed (the claim increments it; it fences stale workers)
    attempts      integer     not null default 0,
    max_attempts  integer     not null default 10 check (max_attempts >= 1),
    -- not claimed before this time (backoff schedules the next attempt here)
    run_at        timestamptz not null default now(),
    -- the worker holding the lease while running, and when the lease expires
    locked_by     text,
    lease_until   timestamptz,
    last_error    text,
    -- how often an operator replayed it
    replays       integer     not null default 0,
    -- how often an enqueue hit the dedupe key of this job (a reactor re-reading its log would show here)
    dedupe_hits   integer     not null default 0,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    finished_at   timestamptz,
    constraint jobs_pkey primary key (id),
    constraint jobs_dedupe_key_key unique (dedupe_key)
);
comment on table jobs is 'Durable side-effect jobs: enqueued by reactors with their checkpoint, claimed under a lease.';

-- the claim query: ready jobs of one queue in run_at order
create index jobs_queue_run_at_idx on jobs (queue, run_at) where state in ('queued', 'failed');
comment on index jobs_queue_run_at_idx is 'Claim: ready jobs of a queue, oldest first.';
-- the reclaimer: running jobs whose lease expired (their worker died)
create index jobs_lease_until_idx on jobs (lease_until) where state = 'running';
comment on index jobs_lease_until_idx is 'Reclaim: running jobs by lease expiry.';
-- operators and the status board: jobs by state
create index jobs_state_updated_at_idx on jobs (state, updated_at);
comment on index jobs_state_updated_at_idx is 'Listing jobs by state (dead letters, failures).';

-- job_attempts: the execution log, one row per attempt, never deleted.
create table job_attempts (
    id           bigint      generated always as identity,
    job_id       bigint      not null,
    -- jobs.attempts at the claim (restarts at 1 after a replay; see replay_generation)
    attempt      integer     not null,
    -- jobs.replays at the claim: attempts of one replay generation share it
    replay_generation integer not null default 0,
    worker_id    text        not null,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    -- running, succeeded, failed (retry scheduled), dead, lease_expired (the worker vanished)
    outcome      text        not null default 'running'
                 check (outcome in ('running', 'succeeded', 'failed', 'dead', 'lease_expired')),
    error        text,
    constraint job_attempts_pkey primary key (id),
    constraint job_attempts_job_id_fkey foreign key (job_id) references jobs (id)
);
comment on table job_attempts is 'Execution log: every attempt of every job with its start, end, outcome and error.';
create index job_attempts_job_id_idx on job_attempts (job_id, id);
comment on index job_attempts_job_id_idx is 'A job''s attempts in order.';

-- reactor_checkpoints: how far each reactor has read the global log (like projection_checkpoints). The reactor
-- locks its row at the start of every batch and moves it in the transaction that inserts the batch's jobs.
create table reactor_checkpoints (
    name        text        not null,
    tx_id       bigint      not null default 0,
    position    bigint      not null default 0,
    updated_at  timestamptz not null default now(),
    constraint reactor_checkpoints_pkey primary key (name)
);
comment on table reactor_checkpoints is 'Per reactor: the last (tx_id, global_position) of the log turned into jobs.';

insert into reactor_checkpoints (name) values ('jobs');
