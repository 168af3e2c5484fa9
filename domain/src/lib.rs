//! The pure domain of trailbook: the `Booking` and `Visit` aggregates, their commands, versioned events,
//! typed errors, transition rules and event upcasters.
//!
//! This crate does no I/O: it depends on neither sqlx nor axum. Aggregates implement `cqrs_es::Aggregate`
//! and change state only through `EventSink::write` (never by mutating `self` in `handle`), so a state
//! rebuilt from events always equals the state a command handler saw.
//!
//! # Layout
//! - `schema`: [`AggregateSchema`], what the store needs to know about an aggregate beyond `cqrs_es`.
//! - `values`: validated value types shared by both aggregates (`Money`, `Currency`, `Email`, `Actor`).
//! - `booking`: the Booking aggregate (a reservation made through an external partner).
//! - `visit`: the Visit aggregate (a medical care workflow with side effects recorded back as events).
//!
//! Both aggregate modules have the same files: `status` (the status and value types, importing nothing else
//! of its aggregate), `commands`, `events` and `error` (which build on `status`), `aggregate` (the state, its
//! `handle` and `apply`) and, in test builds, `tests` (given/when/then); `booking` also has `upcasters`.
#![forbid(unsafe_code)]

pub mod booking;
pub mod schema;
pub mod values;
pub mod visit;

pub use booking::Booking;
pub use schema::AggregateSchema;
pub use visit::Visit;
