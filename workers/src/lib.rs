//! Durable jobs and side effects: the job queue, the worker loop, and the reactor that turns the global log
//! into jobs.
//!
//! Depends on `store` (global log reader and consumer, guarded connections, backoff) and never on the API
//! crates, nor on the partner simulator (the `simulator` crate, which only its tests use). The job queue is
//! our own, on two tables (`jobs`, `job_attempts`): see `docs/adr/0006-jobs.md` for why no job crate.
//!
//! # Layout
//! - `compensation`: `partner.compensate`, `partner.release` and `payment.refund`, with a token bucket and
//!   a circuit breaker per partner (and for the payment provider).
//! - `jobs`: enqueue (in the caller's transaction, idempotent by dedupe key), claim under a lease with
//!   `for update skip locked`, complete, fail with backoff, dead letters, operator replay, listing.
//! - `booking_flow`: the `partner.reserve`, `partner.reconcile` and `booking.deadline` handlers and the
//!   partner client.
//! - `partners`: the partners file, a client per partner (credentials, timeouts, limits), rustls.
//! - `payments`: the payment provider's client and the `payment.capture` handler.
//! - `visit_effects`: `report.generate` and `report.send`, with the notification log.
//! - `report`: the deterministic PDF report and the document store under the data dir.
//! - `mail`: the report e-mail and its transports (files by Message-ID, SMTP, fault injection).
//! - `write_back`: how handlers record outcomes on aggregates (context, errors sorted into retry/permanent).
//! - `worker`: the worker loop: handlers by kind, bounded concurrency per queue, lease reclaim, shutdown.
//! - `reactor`: reads the global log and enqueues jobs, checkpoint and jobs in one transaction.
//! - `service`: [`service::run`], the reactor and workers with every handler, for the CLI.
//! - `error`: [`Error`].
#![forbid(unsafe_code)]

pub mod booking_flow;
pub mod compensation;
pub mod error;
pub mod jobs;
pub mod mail;
pub mod partners;
pub mod payments;
pub mod reactor;
pub mod report;
pub mod service;
pub mod visit_effects;
pub mod worker;
pub mod write_back;

pub use error::{Error, Result};
pub use jobs::{Claimed, Job, JobAttempt, JobDetail, JobFilter, JobSpec, JobState};
pub use store::backoff::Backoff;
pub use worker::{Handler, HandlerError, QueueConfig, Worker, WorkerConfig};
