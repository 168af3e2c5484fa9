//! Test support, behind the `testing` feature: only tests (from their `[dev-dependencies]`) and the bench
//! turn it on, so none of it ships in the product.
//!
//! # Layout
//! - `db`: [`TestDb`], a fresh, migrated database per test, dropped with the value.
//! - `prewrite`: a pre-written event log of bookings and visits, among them the projector's worst case
//!   ([`prewrite::round_robin`]), for the projector's throughput test and the bench.

mod db;
pub mod prewrite;

pub use db::TestDb;
