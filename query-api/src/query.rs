//! The query root: bookings, visits, time travel, history, the status board, projections, the audit log.

use std::time::{Duration, Instant};

use async_graphql::{Context, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use domain::values::Role;
use projector::catalog::{self, Column, Cursor, ListQuery};
use projector::ReadModel;
use serde_json::json;

use crate::auth::{self, Correlation};
use crate::error::{QueryError, Result};
use crate::read::{decode_cursor, encode_cursor, fold, from_read_model, page, At};
use crate::types::{
    AggregateType, AuditEntry, Booking, BookingStatus, Consistency, PageInfo, Projection,
    StatusBoard, Visit, VisitStatus,
};
use crate::QueryState;

/// The query root: the reads of this module merged with the jobs of [`crate::jobs`].
#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(CoreQuery, crate::jobs::JobsQuery);

#[derive(Default)]
pub struct CoreQuery;

/// Which bookings to list; every field narrows the list.
#[derive(Debug, Default, InputObject)]
pub struct BookingFilter {
    pub status: Option<BookingStatus>,
    pub partner: Option<String>,
    /// The customer's e-mail address, exactly as given at booking.
    pub customer: Option<String>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_to: Option<DateTime<Utc>>,
}

/// Which visits to list; every field narrows the list.
#[derive(Debug, Default, InputObject)]
pub struct VisitFilter {
    pub status: Option<VisitStatus>,
    pub clinician: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

#[Object]
impl CoreQuery {
    /// One booking: from the read model (`EVENTUAL`, after `minPosition` if given), or folded from the
    /// event store (`STRONG`, or as it was at `atVersion` / `asOf`; those reads are audited). Null when it
    /// does not exist (then) or is not the caller's.
    #[allow(clippy::too_many_arguments)]
    async fn booking(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<DateTime<Utc>>,
        at_version: Option<i64>,
        #[graphql(default_with = "Some(Consistency::Eventual)")] consistency: Option<Consistency>,
        min_position: Option<i64>,
    ) -> Result<Option<Booking>> {
        one::<domain::Booking>(ctx, &id, as_of, at_version, consistency, min_position).await
    }

    /// One visit; arguments as for `booking`.
    #[allow(clippy::too_many_arguments)]
    async fn visit(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<DateTime<Utc>>,
        at_version: Option<i64>,
        #[graphql(default_with = "Some(Consistency::Eventual)")] consistency: Option<Consistency>,
        min_position: Option<i64>,
    ) -> Result<Option<Visit>> {
        one::<domain::Visit>(ctx, &id, as_of, at_version, consistency, min_position).await
    }

    /// Bookings, newest first (clients see their own). `first` is at most the page cap (default 100).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn bookings(
        &self,
        ctx: &Context<'_>,
        filter: Option<BookingFilter>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> Result<BookingConnection> {
        let filter = filter.unwrap_or_default();
        let mut equals = Vec::new();
        if let Some(status) = filter.status {
            equals.push((
                Column::Status,
                domain::booking::BookingStatus::from(status)
                    .as_str()
                    .to_owned(),
            ));
        }
        if let Some(partner) = filter.partner {
            equals.push((Column::Partner, partner));
        }
        if let Some(customer) = filter.customer {
            equals.push((Column::CustomerEmail, customer.trim().to_owned()));
        }
        list::<domain::Booking>(
            ctx,
            equals,
            (filter.created_from, filter.created_to),
            first,
            after,
            min_position,
        )
        .await
    }

    /// Visits, newest first (clients see their own).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn visits(
        &self,
        ctx: &Context<'_>,
        filter: Option<VisitFilter>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> Result<VisitConnection> {
        let filter = filter.unwrap_or_default();
        let mut equals = Vec::new();
        if let Some(status) = filter.status {
            equals.push((
                Column::Status,
                domain::visit::VisitStatus::from(status).as_str().to_owned(),
            ));
        }
        if let Some(clinician) = filter.clinician {
            equals.push((Column::Clinician, clinician));
        }
        list::<domain::Visit>(
            ctx,
            equals,
            (filter.created_from, filter.created_to),
            first,
            after,
            min_position,
        )
        .await
    }

    /// Every stored event of one booking or visit, oldest first, with who did it and why (support only;
    /// audited). `from` and `to` bound the sequence numbers (inclusive).
    async fn history(
        &self,
        ctx: &Context<'_>,
        aggregate_type: AggregateType,
        id: ID,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<crate::types::HistoryEvent>> {
        let actor = auth::require(ctx, &[Role::Support], "read event history")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(QueryError::bad_input("from", "`from` is after `to`").into());
            }
        }
        let state = ctx.data::<QueryState>()?;
        audit(
            ctx,
            actor,
            "history",
            aggregate_type.as_str(),
            &id,
            json!({"from": from, "to": to}),
        )
        .await?;
        let events = state
            .store
            .history(aggregate_type.as_str(), &id)
            .await
            .map_err(QueryError::from)?;
        Ok(events
            .into_iter()
            .filter(|e| from.is_none_or(|f| e.sequence >= f) && to.is_none_or(|t| e.sequence <= t))
            .map(Into::into)
            .collect())
    }

    /// Counts by status and the items stuck longer than their rule allows (operator, support).
    async fn status_board(
        &self,
        ctx: &Context<'_>,
        min_position: Option<i64>,
    ) -> Result<StatusBoard> {
        auth::require(
            ctx,
            &[Role::Operator, Role::Support],
            "read the status board",
        )?;
        wait_for(ctx, catalog::STATUS_ITEMS.projection, min_position).await?;
        let state = ctx.data::<QueryState>()?;
        read_board(state).await.map_err(Into::into)
    }

    /// Each projection's position, the head of the log, and the lag (operator, support).
    async fn projections(&self, ctx: &Context<'_>) -> Result<Vec<Projection>> {
        auth::require(
            ctx,
            &[Role::Operator, Role::Support],
            "read projection status",
        )?;
        let state = ctx.data::<QueryState>()?;
        Ok(projector::status(state.store.pool())
            .await
            .map_err(QueryError::from)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Who read which history or past state, newest first (support only). Narrow it to one aggregate
    /// with `aggregateType` and `id`.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        aggregate_type: Option<AggregateType>,
        id: Option<ID>,
        first: Option<i32>,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEntry>> {
        auth::require(ctx, &[Role::Support], "read the audit log")?;
        let state = ctx.data::<QueryState>()?;
        let first = page_size(state, first)?;
        let rows: Vec<crate::types::AuditRow> = sqlx::query_as(
            "select id, at, subject, role, action, aggregate_type, aggregate_id, detail, correlation_id
             from audit_log
             where ($1::text is null or aggregate_type = $1)
               and ($2::text is null or aggregate_id = $2)
               and ($3::bigint is null or id < $3)
             order by id desc limit $4",
        )
        .bind(aggregate_type.map(AggregateType::as_str))
        .bind(id.as_deref())
        .bind(before_id)
        .bind(first)
        .fetch_all(state.store.pool())
        .await
        .map_err(QueryError::from)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

pub(crate) async fn read_board(state: &QueryState) -> Result<StatusBoard, QueryError> {
    let pool = state.store.pool();
    let position = projector::position(pool, catalog::STATUS_ITEMS.projection).await?;
    let board = projector::board(pool, &state.config.stuck_rules, Utc::now(), 200).await?;
    let jobs = workers::jobs::counts(pool)
        .await
        .map_err(crate::jobs::job_error)?
        .into_iter()
        .map(|(queue, state, count)| crate::jobs::JobCount {
            queue,
            state,
            count,
        })
        .collect();
    Ok(StatusBoard::from_board(board, position, jobs))
}

/// The body of `booking` and `visit`.
async fn one<A: ReadModel>(
    ctx: &Context<'_>,
    id: &str,
    as_of: Option<DateTime<Utc>>,
    at_version: Option<i64>,
    consistency: Option<Consistency>,
    min_position: Option<i64>,
) -> Result<Option<crate::types::Stamped<A>>> {
    let scope = auth::scope(ctx)?;
    let state = ctx.data::<QueryState>()?;
    let at = match (as_of, at_version) {
        (Some(_), Some(_)) => {
            return Err(
                QueryError::bad_input("atVersion", "give `asOf` or `atVersion`, not both").into(),
            )
        }
        (None, Some(v)) if v < 1 => {
            return Err(QueryError::bad_input("atVersion", "`atVersion` starts at 1").into())
        }
        (None, Some(v)) => Some(At::Version(v as u64)),
        (Some(t), None) => Some(At::Time(t)),
        (None, None) => None,
    };
    let found = match at {
        Some(at) => {
            let actor = auth::actor(ctx)?;
            audit(
                ctx,
                actor,
                "time_travel",
                A::TYPE,
                id,
                json!({"as_of": as_of, "at_version": at_version}),
            )
            .await?;
            fold::<A>(&state.store, id, at).await?
        }
        None if consistency.unwrap_or_default() == Consistency::Strong => {
            fold::<A>(&state.store, id, At::Head).await?
        }
        None => {
            wait_for(ctx, A::TABLE.projection, min_position).await?;
            from_read_model::<A>(&state.store, id).await?
        }
    };
    Ok(found.filter(|s| scope.is_none_or(|subject| s.state.owner() == subject)))
}

pub(crate) fn page_size(state: &QueryState, first: Option<i32>) -> Result<i64, QueryError> {
    let cap = state.config.max_page_size;
    match first {
        None => Ok(20.min(cap)),
        Some(n) if n < 1 || i64::from(n) > cap => Err(QueryError::bad_input(
            "first",
            format!("`first` must be between 1 and {cap}"),
        )),
        Some(n) => Ok(i64::from(n)),
    }
}

/// The body of `bookings` and `visits`: the caller's scope and the filters into a [`ListQuery`], the
/// wait for `minPosition`, and one page of the read model.
async fn list<A: ReadModel>(
    ctx: &Context<'_>,
    mut equals: Vec<(Column, String)>,
    (created_from, created_to): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    first: Option<i32>,
    after: Option<String>,
    min_position: Option<i64>,
) -> Result<Connection<A>> {
    let scope = auth::scope(ctx)?;
    let state = ctx.data::<QueryState>()?;
    if let Some(subject) = scope {
        equals.push((Column::Owner, subject.to_owned()));
    }
    let mut query = ListQuery::new(page_size(state, first)?);
    query.equals = equals;
    query.created_from = created_from;
    query.created_to = created_to;
    query.after = after.as_deref().map(decode_cursor).transpose()?;
    wait_for(ctx, A::TABLE.projection, min_position).await?;
    let page = page(&state.store, &query).await?;
    Ok(Connection {
        query,
        items: page.items,
        has_next_page: page.has_next_page,
    })
}

/// Waits, bounded, until projection `name` has applied the event at `position` (read-your-writes).
async fn wait_for(
    ctx: &Context<'_>,
    name: &'static str,
    position: Option<i64>,
) -> Result<(), QueryError> {
    let Some(position) = position else {
        return Ok(());
    };
    if position < 0 {
        return Err(QueryError::bad_input(
            "minPosition",
            "`minPosition` is a global position (0 or more)",
        ));
    }
    if position == 0 {
        return Ok(());
    }
    let state = ctx
        .data::<QueryState>()
        .map_err(|e| QueryError::Internal(e.message))?;
    // A wait holds a task and polls the database for up to the timeout: capped per subject.
    let _wait = match ctx.data_opt::<std::sync::Arc<service_kit::Limits>>() {
        Some(limits) => {
            let subject = crate::auth::actor(ctx)?;
            let key = format!("{}:{}", subject.role.as_str(), subject.subject);
            Some(limits.wait(&key).ok_or(QueryError::TooManyWaits {
                limit: state.config.max_waits_per_subject,
            })?)
        }
        None => None,
    };
    let limit = state.config.min_position_timeout;
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if projector::reached(state.store.pool(), name, position).await? {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(QueryError::NotYetConsistent {
                projection: name,
                position,
                waited_ms: limit.as_millis() as u64,
            });
        }
        tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Records a read of history or of a past state in the audit log before it happens.
async fn audit(
    ctx: &Context<'_>,
    actor: &domain::values::Actor,
    action: &str,
    aggregate_type: &str,
    id: &str,
    detail: serde_json::Value,
) -> Result<(), QueryError> {
    let state = ctx
        .data::<QueryState>()
        .map_err(|e| QueryError::Internal(e.message))?;
    let correlation = ctx.data_opt::<Correlation>().map(|c| c.0.clone());
    sqlx::query(
        "insert into audit_log (subject, role, action, aggregate_type, aggregate_id, detail, correlation_id)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&actor.subject)
    .bind(actor.role.as_str())
    .bind(action)
    .bind(aggregate_type)
    .bind(id)
    .bind(detail)
    .bind(correlation)
    .execute(state.store.pool())
    .await?;
    Ok(())
}

/// A Relay connection over a read model.
pub struct Connection<A> {
    query: ListQuery<A>,
    items: Vec<(Cursor, crate::types::Stamped<A>)>,
    has_next_page: bool,
}

impl<A> Connection<A> {
    fn info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            // A page asked for with a cursor has pages before it.
            has_previous_page: self.query.after.is_some(),
            start_cursor: self.items.first().map(|(c, _)| encode_cursor(c)),
            end_cursor: self.items.last().map(|(c, _)| encode_cursor(c)),
        }
    }
}

pub type BookingConnection = Connection<domain::Booking>;
pub type VisitConnection = Connection<domain::Visit>;

/// One item of a page and its cursor.
pub struct Edge<'a, A>(&'a (Cursor, crate::types::Stamped<A>));

/// The GraphQL objects of a connection and its edges over one aggregate type (`Connection<Booking>` is
/// `BookingConnection` with `BookingEdge`s, and so on).
macro_rules! connection_objects {
    ($aggregate:ty, $connection:literal, $edge:literal) => {
        #[Object(name = $connection)]
        impl Connection<$aggregate> {
            /// How many items match the filter, over all pages.
            async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
                let state = ctx.data::<QueryState>()?;
                Ok(self
                    .query
                    .count(state.store.pool())
                    .await
                    .map_err(QueryError::from)?)
            }
            async fn edges(&self) -> Vec<Edge<'_, $aggregate>> {
                self.items.iter().map(Edge).collect()
            }
            /// The items without their cursors.
            async fn nodes(&self) -> Vec<&crate::types::Stamped<$aggregate>> {
                self.items.iter().map(|(_, item)| item).collect()
            }
            async fn page_info(&self) -> PageInfo {
                self.info()
            }
        }

        #[Object(name = $edge)]
        impl Edge<'_, $aggregate> {
            async fn cursor(&self) -> String {
                encode_cursor(&self.0 .0)
            }
            async fn node(&self) -> &crate::types::Stamped<$aggregate> {
                &self.0 .1
            }
        }
    };
}

connection_objects!(domain::Booking, "BookingConnection", "BookingEdge");
connection_objects!(domain::Visit, "VisitConnection", "VisitEdge");
