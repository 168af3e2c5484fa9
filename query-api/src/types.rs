//! The GraphQL types: bookings and visits (from a read model or folded from the event store, same
//! shape), history events, the status board, projections, the audit log.

use async_graphql::{ComplexObject, Enum, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};

/// Where an answer's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Source {
    /// The projector's read model (eventually consistent: see `minPosition`).
    ReadModel,
    /// Folded from the event store for this request (exact: `consistency: STRONG`, `asOf`, `atVersion`).
    EventStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AggregateType {
    Booking,
    Visit,
}

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booking => "booking",
            Self::Visit => "visit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "booking" => Some(Self::Booking),
            "visit" => Some(Self::Visit),
            _ => None,
        }
    }
}

/// `EVENTUAL` reads the read model; `STRONG` folds the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Enum)]
pub enum Consistency {
    #[default]
    Eventual,
    Strong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::booking::BookingStatus")]
pub enum BookingStatus {
    Requested,
    PartnerPending,
    Confirmed,
    PaymentPending,
    Paid,
    Rejected,
    Failed,
    Cancelled,
    Compensating,
    CompensationFailed,
    Refunding,
    Refunded,
    RefundFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::visit::VisitStatus")]
pub enum VisitStatus {
    Scheduled,
    CheckedIn,
    InConsultation,
    Completed,
    Cancelled,
    NoShow,
}

/// Progress of a visit's side effect (report, e-mail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::visit::SideEffectStatus")]
pub enum SideEffectStatus {
    NotRequired,
    Pending,
    Done,
    Failed,
}

/// An amount in minor units of an ISO 4217 currency.
#[derive(Debug, Clone, SimpleObject)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Person {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Patient {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// An aggregate's state with where and when it stands.
#[derive(Debug, Clone)]
pub struct Stamped<S> {
    pub state: S,
    /// Sequence of the last event applied.
    pub version: i64,
    /// Global position of the last event applied, when known.
    pub position: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub source: Source,
}

pub type Booking = Stamped<domain::Booking>;
pub type Visit = Stamped<domain::Visit>;

/// A booking made through a partner.
#[Object(name = "Booking")]
impl Stamped<domain::Booking> {
    async fn id(&self) -> &str {
        &self.state.id
    }
    async fn status(&self) -> BookingStatus {
        self.state.status.into()
    }
    /// Sequence of the last event applied (the REST `ETag`).
    async fn version(&self) -> i64 {
        self.version
    }
    /// Global position of the last event applied.
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn source(&self) -> Source {
        self.source
    }
    /// The client who made it.
    async fn owner(&self) -> &str {
        &self.state.owner
    }
    async fn partner(&self) -> &str {
        &self.state.partner
    }
    async fn resource(&self) -> &str {
        &self.state.resource
    }
    async fn starts_at(&self) -> DateTime<Utc> {
        self.state.starts_at
    }
    async fn ends_at(&self) -> DateTime<Utc> {
        self.state.ends_at
    }
    async fn guests(&self) -> u32 {
        self.state.guests
    }
    async fn amount(&self) -> Option<Money> {
        self.state.amount.as_ref().map(|m| Money {
            minor: m.minor,
            currency: m.currency.as_str().to_owned(),
        })
    }
    async fn customer(&self) -> Option<Person> {
        self.state.customer.as_ref().map(|c| Person {
            name: c.name.clone(),
            email: c.email.as_str().to_owned(),
        })
    }
    /// The partner's reservation id, once confirmed.
    async fn reservation_id(&self) -> Option<&str> {
        self.state.reservation_id.as_deref()
    }
    async fn payment_id(&self) -> Option<&str> {
        self.state.payment_id.as_deref()
    }
    /// Reservation attempts made, retries included.
    async fn partner_attempts(&self) -> u32 {
        self.state.partner_attempts
    }
    /// Partner reports recorded but not applied (duplicate, stale, out of order).
    async fn ignored_callbacks(&self) -> u32 {
        self.state.ignored_callbacks
    }
    async fn cancel_reason(&self) -> Option<&str> {
        self.state.cancel_reason.as_deref()
    }
    /// Why it was rejected, failed, declined or could not be compensated.
    async fn failure_reason(&self) -> Option<&str> {
        self.state.failure_reason.as_deref()
    }
    /// When its first event was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// When its last event (of this version) was recorded.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

/// A visit of the care workflow, with its side effects.
#[Object(name = "Visit")]
impl Stamped<domain::Visit> {
    async fn id(&self) -> &str {
        &self.state.id
    }
    async fn status(&self) -> VisitStatus {
        self.state.status.into()
    }
    async fn version(&self) -> i64 {
        self.version
    }
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn source(&self) -> Source {
        self.source
    }
    async fn owner(&self) -> &str {
        &self.state.owner
    }
    async fn clinician(&self) -> &str {
        &self.state.clinician
    }
    async fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.state.scheduled_at
    }
    async fn patient(&self) -> Option<Patient> {
        self.state.patient.as_ref().map(|p| Patient {
            id: p.id.clone(),
            name: p.name.clone(),
            email: p.email.as_str().to_owned(),
        })
    }
    async fn summary(&self) -> Option<&str> {
        self.state.summary.as_deref()
    }
    async fn diagnosis_codes(&self) -> &[String] {
        &self.state.diagnosis_codes
    }
    async fn report_status(&self) -> SideEffectStatus {
        self.state.report_status.into()
    }
    async fn email_status(&self) -> SideEffectStatus {
        self.state.email_status.into()
    }
    /// SHA-256 of the generated PDF report.
    async fn report_sha256(&self) -> Option<&str> {
        self.state.report_sha256.as_deref()
    }
    async fn report_attempts(&self) -> u32 {
        self.state.report_attempts
    }
    async fn email_attempts(&self) -> u32 {
        self.state.email_attempts
    }
    async fn cancel_reason(&self) -> Option<&str> {
        self.state.cancel_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

/// One stored event, with who did it and why.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct HistoryEvent {
    pub sequence: i64,
    pub global_position: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The event as stored (before upcasting).
    pub payload: Json<serde_json::Value>,
    /// Event id, correlation and causation ids, actor, idempotency key, service version.
    pub metadata: Json<serde_json::Value>,
}

#[ComplexObject]
impl HistoryEvent {
    /// `metadata.actor.subject`: who did it.
    async fn actor(&self) -> Option<String> {
        let actor = self.metadata.0.get("actor")?;
        let subject = actor.get("subject")?.as_str()?;
        let role = actor.get("role").and_then(|r| r.as_str()).unwrap_or("?");
        Some(format!("{subject} ({role})"))
    }
    async fn correlation_id(&self) -> Option<String> {
        text(&self.metadata.0, "correlation_id")
    }
    async fn causation_id(&self) -> Option<String> {
        text(&self.metadata.0, "causation_id")
    }
}

fn text(json: &serde_json::Value, key: &str) -> Option<String> {
    json.get(key)?.as_str().map(str::to_owned)
}

impl From<store::RecordedEvent> for HistoryEvent {
    fn from(e: store::RecordedEvent) -> Self {
        Self {
            sequence: e.sequence,
            global_position: e.global_position,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            payload: Json(e.payload.to_value()),
            metadata: Json(e.metadata.to_value()),
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct StatusCount {
    pub aggregate_type: AggregateType,
    /// The status, in the REST spelling (`partner_pending`).
    pub status: String,
    pub count: i64,
}

/// An item in a non-final status for longer than its rule allows.
#[derive(Debug, Clone, SimpleObject)]
pub struct StuckItem {
    pub aggregate_type: AggregateType,
    pub id: String,
    pub status: String,
    pub since: DateTime<Utc>,
    pub age_seconds: f64,
    pub report_status: Option<String>,
    pub email_status: Option<String>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct StatusBoard {
    pub counts: Vec<StatusCount>,
    /// Longest stuck first.
    pub stuck: Vec<StuckItem>,
    /// The position the board reflects (the status_board projection's checkpoint).
    pub position: i64,
    /// Jobs by queue and state (a `dead` count above zero needs an operator).
    pub jobs: Vec<crate::jobs::JobCount>,
}

impl StatusBoard {
    pub fn from_board(
        board: projector::Board,
        position: i64,
        jobs: Vec<crate::jobs::JobCount>,
    ) -> Self {
        Self {
            counts: board
                .counts
                .into_iter()
                .filter_map(|c| {
                    Some(StatusCount {
                        aggregate_type: AggregateType::parse(&c.aggregate_type)?,
                        status: c.status,
                        count: c.count,
                    })
                })
                .collect(),
            stuck: board
                .stuck
                .into_iter()
                .filter_map(|s| {
                    Some(StuckItem {
                        aggregate_type: AggregateType::parse(&s.aggregate_type)?,
                        id: s.aggregate_id,
                        status: s.status,
                        since: s.since,
                        age_seconds: s.age_seconds,
                        report_status: s.report_status,
                        email_status: s.email_status,
                    })
                })
                .collect(),
            position,
            jobs,
        }
    }
}

/// A projection's position and lag.
#[derive(Debug, Clone, SimpleObject)]
pub struct Projection {
    pub name: String,
    pub position: i64,
    pub head_position: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    /// The projector instance leading it, if one runs.
    pub leader: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
}

impl From<projector::ProjectionStatus> for Projection {
    fn from(s: projector::ProjectionStatus) -> Self {
        Self {
            name: s.name,
            position: s.position,
            head_position: s.head_position,
            lag_events: s.lag_events,
            lag_seconds: s.lag_seconds,
            leader: s.leader,
            last_event_at: s.last_event_at,
        }
    }
}

/// One read of history or of a past state.
#[derive(Debug, Clone, SimpleObject)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub role: String,
    /// `history` or `time_travel`.
    pub action: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The arguments of the read.
    pub detail: Json<serde_json::Value>,
    pub correlation_id: Option<String>,
}

/// Relay page information.
#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// A row of `audit_log`.
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub role: String,
    pub action: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub detail: serde_json::Value,
    pub correlation_id: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: r.at,
            subject: r.subject,
            role: r.role,
            action: r.action,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            detail: Json(r.detail),
            correlation_id: r.correlation_id,
        }
    }
}
