//! The GraphQL query service (reads): read models, time travel, audit history, operations board.
//!
//! Will depend on `domain` and `store` only; it reads read-model tables written by the projector and folds
//! the event store for time travel and `consistency: STRONG`. Not built yet: see the query-API issue.
#![forbid(unsafe_code)]
