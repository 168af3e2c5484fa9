//! Durable jobs and side effects: the partner gateway, saga compensation, notifications, documents,
//! reconciliation, and the partner simulator used by tests and demos.
//!
//! Will enqueue jobs from the global log (the log is the outbox), claim them with `FOR UPDATE SKIP
//! LOCKED` under a lease, retry with backoff and jitter, and dead-letter after N attempts. Not built yet:
//! see the workers issue.
#![forbid(unsafe_code)]
