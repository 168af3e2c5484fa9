//! The partner's reservation routes: create (idempotent by our booking id), look up, cancel.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::delivery::send_callbacks;
use crate::server::{
    bad_request, error, header_value, inject_front_faults, maybe_hold, unprocessable,
};
use crate::state::{Reservation, SimState};
use crate::CORRELATION_HEADER;

/// `/v1/reservations` and its cancel route.
pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/v1/reservations", post(create_reservation).get(lookup))
        .route("/v1/reservations/{id}/cancel", post(cancel_reservation))
}

#[derive(Debug, Default, Deserialize)]
struct CreateReservation {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    guests: Option<u32>,
    #[serde(default)]
    client_reference: Option<String>,
}

/// An empty body is `{}`; malformed JSON is a 400, a field of the wrong type a 422.
fn parse_reservation(body: &[u8]) -> std::result::Result<CreateReservation, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateReservation::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, format!("invalid reservation body: {e}"))
    })
}

async fn create_reservation(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.with_inner(|i| i.stats.reservation_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(reference) = header_value(&headers, "idempotency-key") else {
        return bad_request("the Idempotency-Key header (our booking id) is required");
    };
    let request = match parse_reservation(&body) {
        Ok(request) => request,
        Err((status, message)) => return error(status, &message),
    };
    if request
        .client_reference
        .as_deref()
        .is_some_and(|r| r != reference)
    {
        return unprocessable("client_reference differs from the Idempotency-Key header");
    }
    if let (Some(starts), Some(ends)) = (request.starts_at, request.ends_at) {
        if ends <= starts {
            return unprocessable("ends_at must be after starts_at");
        }
    }
    let correlation_id = header_value(&headers, CORRELATION_HEADER);
    let (reservation, created) = state.with_inner(|inner| {
        if let Some(existing) = inner.by_reference.get(&reference) {
            return (existing.clone(), false);
        }
        let status = if request.resource.contains("reject") {
            "rejected"
        } else {
            "confirmed"
        };
        let reservation = Reservation {
            reservation_id: format!("res-{}", uuid::Uuid::now_v7().simple()),
            client_reference: reference.clone(),
            resource: request.resource,
            status: status.to_owned(),
            starts_at: request.starts_at,
            ends_at: request.ends_at,
            guests: request.guests,
            correlation_id,
            created_at: Utc::now(),
        };
        inner
            .by_id
            .insert(reservation.reservation_id.clone(), reference.clone());
        inner
            .by_reference
            .insert(reference.clone(), reservation.clone());
        inner.stats.reservations_created += 1;
        (reservation, true)
    });
    if created {
        send_callbacks(&state, &reservation);
    }
    maybe_hold(&state).await;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "reservation_id": reservation.reservation_id,
            "status": reservation.status,
        })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LookupQuery {
    client_reference: Option<String>,
}

async fn lookup(State(state): State<SimState>, Query(query): Query<LookupQuery>) -> Response {
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let Some(reference) = query.client_reference else {
        return bad_request("the client_reference query parameter is required");
    };
    let found: Vec<Reservation> = state.with_inner(|i| {
        i.by_reference
            .get(&reference)
            .cloned()
            .into_iter()
            .collect()
    });
    Json(found).into_response()
}

async fn cancel_reservation(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.with_inner(|i| i.stats.cancel_requests += 1);
    if let Some(response) = inject_front_faults(&state).await {
        return response;
    }
    let refusal = state.config().faults.cancel_status;
    if refusal != 0 {
        state.with_inner(|i| i.stats.cancels_refused += 1);
        let status = StatusCode::from_u16(refusal).unwrap_or(StatusCode::CONFLICT);
        let message = match refusal {
            409 => "the reservation can no longer be cancelled",
            410 => "the reservation is gone",
            _ => "the partner refused the cancel",
        };
        return (
            status,
            Json(json!({ "error": message, "reservation_id": id })),
        )
            .into_response();
    }
    let cancelled = state.with_inner(|inner| {
        let reference = inner.by_id.get(&id)?.clone();
        let reservation = inner.by_reference.get_mut(&reference)?;
        reservation.status = "cancelled".to_owned();
        Some(reservation.clone())
    });
    let Some(reservation) = cancelled else {
        return error(StatusCode::NOT_FOUND, "unknown reservation");
    };
    maybe_hold(&state).await;
    Json(json!({
        "reservation_id": reservation.reservation_id,
        "status": reservation.status,
    }))
    .into_response()
}
