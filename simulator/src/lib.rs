//! The partner simulator: a fake partner API and payment provider with fault injection and ledgers, for
//! tests, demos and the chaos script. A tool beside the product: the `trailbook` binary runs it
//! (`trailbook partner-sim`, and `trailbook serve` when no partner URL is given) and tests start it; no
//! library crate of the product depends on it.
//!
//! It uses `workers` for the correlation header both sides of the wire share and for its retry backoff;
//! `workers` never depends on it (only its tests do). It knows nothing of the store or the APIs.
//!
//! Partner (reservations):
//! - `POST /v1/reservations` (header `Idempotency-Key` = our booking id; optional `X-Correlation-Id`; optional
//!   body `{"resource","starts_at","ends_at","guests","client_reference"}`) → `201` (created) or `200`
//!   (replay) `{"reservation_id","status"}`. Idempotent by client reference: the same booking id always gets
//!   the same reservation. `400` without the key or with malformed JSON; `422` when the body's
//!   `client_reference` differs from the key, when `ends_at` is not after `starts_at`, or on a field of the
//!   wrong type.
//! - `GET /v1/reservations?client_reference=<booking id>` → an array with that [`Reservation`] (never two).
//! - `POST /v1/reservations/{id}/cancel` → `{"reservation_id","status":"cancelled"}` (idempotent); `404`
//!   for an unknown id.
//!
//! Payment provider:
//! - `POST /v1/payments` (header `Idempotency-Key` required, `400` without; optional `X-Correlation-Id`;
//!   body `{"card","amount":{"minor","currency"},"client_reference"}`, `amount` and `client_reference`
//!   optional) → the [`Payment`]: `200` when captured, `402` when declined (card [`DECLINED_CARD`]). The
//!   first request with a key creates one ledger entry; every later one with that key answers the same
//!   entry (with `Idempotent-Replayed: true`) and charges nothing.
//! - `GET /v1/payments?idempotency_key=<key>&client_reference=<booking id>` (either or both) → an array of
//!   matching [`Payment`]s, oldest first (never two for one key).
//! - `POST /v1/payments/{payment_id}/refund` (optional `Idempotency-Key`, `X-Correlation-Id`) → `200` the
//!   [`Refund`]. A payment is refunded at most once: a later call (any key) answers the same refund
//!   (`Idempotent-Replayed: true`). `404` for an unknown payment, `409` for a declined one.
//!
//! Control (never needs the API key): `PUT /control/faults` (a [`Faults`] JSON), `GET /control/faults`,
//! `GET /control/stats` ([`Stats`]), `GET /control/ledger` ([`Ledger`]).
//!
//! When [`SimConfig::api_key`] is set, every `/v1/...` request needs `Authorization: Bearer <key>`, else
//! `401` before any fault or work. Every error answer is JSON `{"error": "..."}`.
//!
//! After a reservation is created, its status (`confirmed`; `rejected` when the resource name contains
//! `reject`) is sent as a [`Callback`] to [`SimConfig::callback_url`]; after a payment (captured or
//! declined) or a refund is created, a [`PaymentWebhook`] goes to [`SimConfig::payment_webhook_url`]. Both
//! are signed alike: `X-Trailbook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, and carry
//! the `X-Correlation-Id` of the request that caused them, if it had one. Deliveries are retried on network
//! errors and 5xx (5 attempts).
//!
//! Faults (each a probability in 0..1, except `latency_ms` and `cancel_status`): `latency_ms` delays every
//! answer; `rate_429` answers `429` with `Retry-After` before doing anything; `rate_5xx` answers `503` before
//! doing anything; `timeout_after_success` does the work (reservation, charge, refund, cancel) and then holds
//! the answer for [`SimConfig::timeout_hold`], so the client times out although the work is done;
//! `duplicate_callbacks` sends a callback or webhook twice (same id); `late_callbacks` delays a callback or
//! webhook by [`SimConfig::late_callback_delay`], and a late `confirmed` callback is followed by a stale
//! `rejected` one dated before it (out of order); `cancel_status` (0 = off, else 400..=599) makes every
//! cancel answer that status and change nothing (after the front faults).
//!
//! The full card number is never stored nor logged: the ledger keeps its last 4 characters.
//!
//! # Layout
//! - `config`: [`SimConfig`] and the injectable [`Faults`].
//! - `state`: [`SimState`], the ledger ([`Reservation`], [`Payment`], [`Refund`], [`Ledger`]) and the
//!   counters ([`Stats`]).
//! - `server`: [`app`] and [`serve`]: the API key check, the front faults, the control routes.
//! - `reservations`: the partner's reservation routes.
//! - `payments`: the payment provider's payment and refund routes.
//! - `delivery`: the signed [`Callback`]s and [`PaymentWebhook`]s, [`sign`], retries.
//! - `error`: [`Error`].
#![forbid(unsafe_code)]

mod config;
mod delivery;
mod error;
mod payments;
mod reservations;
mod server;
mod state;

pub use config::{Faults, SimConfig, DEFAULT_CALLBACK_URL, DEFAULT_PAYMENT_WEBHOOK_URL};
pub use delivery::{sign, Callback, PaymentWebhook, SIGNATURE_HEADER};
pub use error::{Error, Result};
pub use payments::DECLINED_CARD;
pub use server::{app, serve, REPLAYED_HEADER};
pub use state::{Ledger, Payment, Refund, Reservation, SimState, Stats};
/// The correlation header read from requests and sent on the callbacks and webhooks they cause: the one
/// the workers send on every call.
pub use workers::booking_flow::CORRELATION_HEADER;
