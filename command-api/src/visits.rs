//! Visit routes (the care workflow): schedule (idempotent), check in, start, complete, cancel, no-show,
//! and the strongly consistent read.

use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::values::{Email, Role};
use domain::visit::{Patient, VisitCommand};
use domain::Visit;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::Json;
use crate::openapi;
use crate::resource::{CommandRequest, CreateRequest, ReadRequest};

/// Body of `POST /v1/visits`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"patient": {"id": "p-1", "name": "Grace Hopper", "email": "grace@example.com"},
    "clinician": "dr-grey", "scheduled_at": "2026-12-01T09:30:00Z"}))]
pub struct CreateVisit {
    pub patient: PatientBody,
    /// The clinician seeing the patient, e.g. `dr-grey`.
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub clinician: String,
    /// When the visit is planned (RFC 3339, years 2000 to 2099).
    #[serde(deserialize_with = "openapi::instant")]
    #[schema(schema_with = openapi::instant_schema)]
    pub scheduled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub id: String,
    #[serde(deserialize_with = "openapi::name")]
    #[schema(schema_with = openapi::name_schema)]
    pub name: String,
    #[serde(deserialize_with = "openapi::email")]
    #[schema(schema_with = openapi::email_schema)]
    pub email: String,
}

/// Body of `POST /v1/visits/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"summary": "Upper respiratory infection; rest and fluids.", "diagnosis_codes": ["J06.9"]}))]
pub struct CompleteVisit {
    #[serde(deserialize_with = "openapi::summary")]
    #[schema(schema_with = openapi::summary_schema)]
    pub summary: String,
    /// ICD-10 codes, e.g. `J06.9`.
    #[serde(default)]
    #[serde(deserialize_with = "openapi::diagnosis_codes")]
    #[schema(schema_with = openapi::diagnosis_codes_schema)]
    pub diagnosis_codes: Vec<String>,
}

/// Body of `POST /v1/visits/{id}/cancel` (optional: an empty body is allowed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelVisit {
    #[serde(default)]
    #[serde(deserialize_with = "openapi::optional_reason")]
    #[schema(schema_with = openapi::optional_reason_schema)]
    pub reason: Option<String>,
}

/// What every visit command answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VisitAccepted {
    pub visit_id: String,
    pub status: String,
    pub version: u64,
    pub position: Option<i64>,
}

/// Schedule a visit. Idempotent by `Idempotency-Key`.
#[utoipa::path(operation_id = "create_visit", post, path = "/v1/visits", tag = "visits",
    request_body = CreateVisit,
    params(("Idempotency-Key" = String, Header, description = "required; the same key and body give the same answer")),
    responses((status = 202, body = VisitAccepted, headers(("Location" = String))), (status = 400), (status = 401), (status = 422)),
    security(("bearer" = [])))]
pub async fn create(
    request: CreateRequest,
    Json(body): Json<CreateVisit>,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Client, Role::Operator], "schedule visits")?;
    request
        .create::<Visit, _>(body, CreateVisit::into_command)
        .await
}

impl CreateVisit {
    fn into_command(self, visit_id: &str, owner: &str) -> Result<VisitCommand, ApiError> {
        let email = Email::parse(&self.patient.email)
            .map_err(|e| ApiError::invalid_field("patient.email", e.to_string()))?;
        Ok(VisitCommand::Schedule {
            visit_id: visit_id.to_string(),
            owner: owner.to_string(),
            patient: Patient {
                id: self.patient.id,
                name: self.patient.name,
                email,
            },
            clinician: self.clinician,
            scheduled_at: self.scheduled_at,
            at: Utc::now(),
        })
    }
}

/// Staff-only workflow steps.
const STAFF: &[Role] = &[Role::Operator];

/// Check the patient in (operator).
#[utoipa::path(operation_id = "check_in_visit", post, path = "/v1/visits/{id}/check-in", tag = "visits",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = VisitAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn check_in(request: CommandRequest) -> Result<Response, ApiError> {
    let request = request.allow(STAFF, "check patients in")?;
    request
        .run::<Visit, _>(
            "visit.check_in",
            &(),
            VisitCommand::CheckIn { at: Utc::now() },
        )
        .await
}

/// Start the consultation (operator).
#[utoipa::path(operation_id = "start_visit", post, path = "/v1/visits/{id}/start", tag = "visits",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = VisitAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn start(request: CommandRequest) -> Result<Response, ApiError> {
    let request = request.allow(STAFF, "start consultations")?;
    request
        .run::<Visit, _>(
            "visit.start",
            &(),
            VisitCommand::StartConsultation { at: Utc::now() },
        )
        .await
}

/// Complete the visit (operator); the report and e-mail follow as jobs.
#[utoipa::path(operation_id = "complete_visit", post, path = "/v1/visits/{id}/complete", tag = "visits",
    request_body = CompleteVisit,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = VisitAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn complete(
    request: CommandRequest,
    Json(body): Json<CompleteVisit>,
) -> Result<Response, ApiError> {
    let request = request.allow(STAFF, "complete visits")?;
    let command = VisitCommand::Complete {
        summary: body.summary.clone(),
        diagnosis_codes: body.diagnosis_codes.clone(),
        at: Utc::now(),
    };
    request
        .run::<Visit, _>("visit.complete", &body, command)
        .await
}

/// Cancel the visit (the owner or an operator). A completed visit cannot be cancelled (422).
#[utoipa::path(operation_id = "cancel_visit", post, path = "/v1/visits/{id}/cancel", tag = "visits",
    request_body = CancelVisit,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = VisitAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn cancel(
    request: CommandRequest,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request = request.allow(&[Role::Client, Role::Operator], "cancel visits")?;
    let body: CancelVisit = if body.iter().all(u8::is_ascii_whitespace) {
        CancelVisit::default()
    } else {
        crate::extract::parse(&body)?
    };
    let command = VisitCommand::Cancel {
        reason: body.reason.clone().unwrap_or_else(|| "cancelled".into()),
        at: Utc::now(),
    };
    request
        .run::<Visit, _>("visit.cancel", &body, command)
        .await
}

/// Mark the patient as not having come (operator).
#[utoipa::path(operation_id = "mark_visit_no_show", post, path = "/v1/visits/{id}/no-show", tag = "visits",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = VisitAccepted), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn no_show(request: CommandRequest) -> Result<Response, ApiError> {
    let request = request.allow(STAFF, "mark no-shows")?;
    request
        .run::<Visit, _>(
            "visit.no_show",
            &(),
            VisitCommand::MarkNoShow { at: Utc::now() },
        )
        .await
}

/// The visit's current state, folded from the event store. `ETag` is the version.
#[utoipa::path(operation_id = "get_visit", get, path = "/v1/visits/{id}", tag = "visits",
    params(("id" = String, Path), ("If-None-Match" = Option<String>, Header, description = "an `ETag` seen before: 304 while the version is the same")),
    responses((status = 200, description = "the visit", body = crate::resource::Read<Visit>, headers(("ETag" = String, description = "the version, quoted"))),
        (status = 304, description = "not modified since the `ETag` given"), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(request: ReadRequest) -> Result<Response, ApiError> {
    request
        .allow(
            &[Role::Client, Role::Operator, Role::Support],
            "read visits",
        )?
        .read::<Visit>()
        .await
}
