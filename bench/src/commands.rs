//! The create-booking workloads: one command (a new booking of a unique resource with a unique
//! `Idempotency-Key`) sent five ways, from the whole HTTP path down to the bare INSERT.
//!
//! What the command path issues for one create (command-api `idempotency::create`: the Booking's write
//! rule, the slot claim of `store::claims`, which the store always runs, plus the key's record;
//! `ExecuteOptions::new_stream`, so no load):
//! 1. `select ... from idempotency_keys` (the stored answer, if any) on the pool;
//! 2. `BEGIN`; the multi-row `insert into events ... unnest(...) returning global_position`;
//!    `insert into resource_claims ... on conflict do nothing`; `insert into idempotency_keys ... on
//!    conflict ... do update ... where expired`; `COMMIT` (five round trips on one connection);
//! 3. after the commit, a poke of the `CommitNotifier`, which sends one `pg_notify` per burst of commits
//!    on another connection (in `serve`; the in-process workload has it too, raw SQL does not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use command_api::bookings::{AmountBody, CreateBooking, CustomerBody};
use command_api::idempotency::{self, Record};
use command_api::resource::Resource;
use cqrs_es::DomainEvent;
use domain::booking::{BookingCommand, BookingEvent, Customer};
use domain::values::{Actor, Currency, Email, Money, Role};
use domain::Booking;
use serde_json::{json, Value};
use sqlx::{Connection, PgPool};
use store::{sql, Appended, CommandContext, EventMetadata, EventStore, ExecuteOptions};
use uuid::Uuid;

use crate::error::{chain, Context, Error, Result};

/// The client every workload acts as (the token subject, and so the idempotency scope).
pub const CLIENT: &str = "bench-client";
const ROUTE: &str = "POST /v1/bookings";

/// Unique request numbers: `<run nonce>-<workload>-<n>`.
pub struct Seq {
    prefix: String,
    next: AtomicU64,
}

impl Seq {
    pub fn new(nonce: &str, workload: &str) -> Arc<Self> {
        Arc::new(Self {
            prefix: format!("{nonce}-{workload}"),
            next: AtomicU64::new(0),
        })
    }

    pub fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap_or_default()
}

/// The body of `POST /v1/bookings` for request `n`: its own resource, so no claim ever conflicts.
pub fn body(n: &str) -> CreateBooking {
    CreateBooking {
        partner: "acme-hotels".into(),
        resource: format!("room-{n}"),
        starts_at: at("2027-03-01T15:00:00Z"),
        ends_at: at("2027-03-03T11:00:00Z"),
        guests: 2,
        amount: AmountBody {
            minor: 25000,
            currency: "EUR".into(),
        },
        customer: CustomerBody {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        },
    }
}

/// What command-api's `CreateBooking::into_command` makes of the body.
fn command(id: &str, body: CreateBooking) -> Result<BookingCommand> {
    let currency = Currency::parse(&body.amount.currency).context("parsing the currency")?;
    let email = Email::parse(&body.customer.email).context("parsing the e-mail")?;
    Ok(BookingCommand::Request {
        booking_id: id.to_owned(),
        owner: CLIENT.to_owned(),
        partner: body.partner,
        resource: body.resource,
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        guests: body.guests,
        amount: Money::new(body.amount.minor, currency),
        customer: Customer {
            name: body.customer.name,
            email,
        },
        at: Utc::now(),
    })
}

/// The event the command produces, as the raw workloads write it.
fn requested_event(id: &str, body: &CreateBooking) -> Result<BookingEvent> {
    let currency = Currency::parse(&body.amount.currency).context("parsing the currency")?;
    Ok(BookingEvent::BookingRequested {
        booking_id: id.to_owned(),
        owner: CLIENT.to_owned(),
        partner: body.partner.clone(),
        resource: body.resource.clone(),
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        guests: body.guests,
        amount: Money::new(body.amount.minor, currency),
        customer: Customer {
            name: body.customer.name.clone(),
            email: Email::parse(&body.customer.email).context("parsing the e-mail")?,
        },
        at: Utc::now(),
    })
}

fn context(key: &str) -> CommandContext {
    CommandContext {
        correlation_id: Uuid::now_v7().to_string(),
        causation_id: Some(format!("cmd-{}", Uuid::now_v7())),
        actor: Some(Actor {
            subject: CLIENT.to_owned(),
            role: Role::Client,
        }),
        idempotency_key: Some(key.to_owned()),
        command: Some("booking.create".to_owned()),
        request_correlation_id: None,
    }
}

/// The newest committed command of a fixed-rate run: its global position and when its answer arrived.
pub type LastWrite = Arc<Mutex<Option<(i64, Instant)>>>;

/// `http_create`: one `POST /v1/bookings` through the real server; 202 expected.
pub async fn http_create(
    client: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
    seq: Arc<Seq>,
    last: Option<LastWrite>,
) -> Result<()> {
    let n = seq.next();
    let response = client
        .post(format!("{base}/v1/bookings"))
        .bearer_auth(&*token)
        .header("Idempotency-Key", format!("key-{n}"))
        .json(&body(&n))
        .send()
        .await
        .context("POST /v1/bookings")?;
    let status = response.status();
    let answer: Value = response.json().await.context("reading the answer")?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(Error::step(
            "POST /v1/bookings",
            format!("status {status}: {answer}"),
        ));
    }
    if let (Some(last), Some(position)) = (last, answer.get("position").and_then(Value::as_i64)) {
        if let Ok(mut guard) = last.lock() {
            *guard = Some((position, Instant::now()));
        }
    }
    Ok(())
}

/// `inproc_create`: what command-api's create handler does after parsing and authenticating, in this
/// process: `execute` with the key's record as its hook, after the slot claim the store runs itself (the
/// key is looked up only when
/// the append finds the stream taken, which a new key never does).
pub async fn inproc_create(store: EventStore, seq: Arc<Seq>) -> Result<()> {
    let n = seq.next();
    let key = format!("key-{n}");
    let body = body(&n);
    let id = idempotency::derive_id("booking", CLIENT, &key);
    let canonical = serde_json::to_value(&body).context("serializing the body")?;
    let record = Record {
        scope: CLIENT.to_owned(),
        key: key.clone(),
        request_hash: idempotency::request_hash(ROUTE, &canonical),
        ttl: chrono::Duration::hours(24),
        response: {
            let id = id.clone();
            move |a: &Booking, at: Appended| a.answer(&id, at.version, Some(at.position))
        },
    };
    let options = ExecuteOptions {
        new_stream: true,
        ..ExecuteOptions::default()
    };
    let done = store
        .execute::<Booking>(&id, command(&id, body)?, &(), &context(&key), options)
        .with_hook(&record)
        .await
        .map_err(|e| Error::step("execute", chain(&e)))?;
    // The handler renders the answer too.
    let _answer = done.state.answer(&id, done.version, done.position);
    Ok(())
}

/// What the raw workloads write for one create: the rows the command path would write, built the same way.
struct RawCreate {
    key: String,
    body: CreateBooking,
    id: String,
    hash: String,
    event: BookingEvent,
    payload: Value,
    metadata: Value,
}

impl RawCreate {
    fn next(seq: &Seq) -> Result<Self> {
        let n = seq.next();
        let key = format!("key-{n}");
        let body = body(&n);
        let id = idempotency::derive_id("booking", CLIENT, &key);
        let canonical = serde_json::to_value(&body).context("serializing the body")?;
        let hash = idempotency::request_hash(ROUTE, &canonical);
        let event = requested_event(&id, &body)?;
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            context: context(&key),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let payload = serde_json::to_value(&event).context("serializing the event")?;
        let metadata = serde_json::to_value(&metadata).context("serializing the metadata")?;
        Ok(Self {
            key,
            body,
            id,
            hash,
            event,
            payload,
            metadata,
        })
    }
}

/// `raw_sql`: the same statements (the store's own text, `store::sql`), rows and transaction shape as the
/// command path, sent directly.
pub async fn raw_sql(pool: PgPool, seq: Arc<Seq>) -> Result<()> {
    let RawCreate {
        key,
        body,
        id,
        hash,
        event,
        payload,
        metadata,
    } = RawCreate::next(&seq)?;

    let mut conn = pool.acquire().await.context("raw acquire")?;
    let mut tx = conn.begin().await.context("raw begin")?;
    let _claimed: Vec<String> = sqlx::query_scalar(sql::CLAIM_SLOTS)
        .bind([&id])
        .bind([&body.partner])
        .bind([&body.resource])
        .bind([body.starts_at])
        .bind([body.ends_at])
        .fetch_all(&mut *tx)
        .await
        .context("raw claim")?;
    let positions: Vec<(String, String, i64, i64)> = sqlx::query_as(sql::APPEND_EVENTS)
        .bind(["booking"])
        .bind([&id])
        .bind([1_i64])
        .bind([event.event_type()])
        .bind([event.event_version()])
        .bind([payload.to_string()])
        .bind([metadata.to_string()])
        .fetch_all(&mut *tx)
        .await
        .context("raw append")?;
    let position = positions.into_iter().map(|p| p.3).max().unwrap_or_default();
    let response =
        json!({"booking_id": id, "status": "requested", "version": 1, "position": position});
    let _recorded: Vec<(String, String)> = sqlx::query_as(sql::RECORD_IDEMPOTENCY_KEYS)
        .bind([CLIENT])
        .bind([&key])
        .bind([&hash])
        .bind(["booking"])
        .bind([&id])
        .bind([response])
        .bind([24.0 * 3600.0_f64])
        .fetch_all(&mut *tx)
        .await
        .context("raw idempotency record")?;
    tx.commit().await.context("raw commit")?;
    Ok(())
}

/// A valid `BookingRequested` payload and metadata, reused by `raw_ceiling` (only the id differs).
pub fn ceiling_template() -> Result<(Value, Value)> {
    let body = body("ceiling");
    let event = requested_event("ceiling", &body)?;
    let metadata = EventMetadata {
        event_id: Uuid::now_v7(),
        context: context("ceiling"),
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    Ok((
        serde_json::to_value(event).context("serializing the event")?,
        serde_json::to_value(metadata).context("serializing the metadata")?,
    ))
}

/// `raw_ceiling`: one autocommitted one-row INSERT into `events` (one round trip, one WAL flush).
pub async fn raw_ceiling(pool: PgPool, seq: Arc<Seq>, template: Arc<(Value, Value)>) -> Result<()> {
    let id = format!("ceiling-{}", seq.next());
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         values ($1, $2, 1, $3, $4, $5, $6)",
    )
    .bind("booking")
    .bind(&id)
    .bind("BookingRequested")
    .bind("2.0")
    .bind(&template.0)
    .bind(&template.1)
    .execute(&pool)
    .await
    .context("ceiling insert")?;
    Ok(())
}

/// The stock library: `postgres_es::postgres_cqrs` over the same `Booking` aggregate, no queries, no
/// idempotency record, no claim, no metadata (what a user of the library gets out of the box).
pub type StockCqrs = postgres_es::PostgresCqrs<Booking>;

pub fn stock(pool: PgPool) -> Arc<StockCqrs> {
    Arc::new(postgres_es::postgres_cqrs::<Booking>(pool, vec![], ()))
}

/// `stock_cqrs_es`: `CqrsFramework::execute` of the create (load = an empty SELECT, BEGIN, one INSERT per
/// event, COMMIT).
pub async fn stock_cqrs_es(cqrs: Arc<StockCqrs>, seq: Arc<Seq>) -> Result<()> {
    let n = seq.next();
    let id = idempotency::derive_id("booking", CLIENT, &format!("stock-{n}"));
    let command = command(&id, body(&n))?;
    cqrs.execute(&id, command)
        .await
        .map_err(|e| Error::step("postgres_cqrs execute", e.to_string()))
}

/// `inproc_create`, store only: `EventStore::execute` of the same command with no hook of the caller's
/// (no idempotency record, no lookup). The Booking's write rule still claims the slot (no writer can
/// skip it), so this is the append plus the claim in one transaction; stock cqrs-es writes neither.
pub async fn inproc_store_only(store: EventStore, seq: Arc<Seq>) -> Result<()> {
    let n = seq.next();
    let key = format!("key-{n}");
    let id = idempotency::derive_id("booking", CLIENT, &key);
    let options = ExecuteOptions {
        new_stream: true,
        ..ExecuteOptions::default()
    };
    store
        .execute::<Booking>(&id, command(&id, body(&n))?, &(), &context(&key), options)
        .await
        .map_err(|e| Error::step("execute", chain(&e)))?;
    Ok(())
}

/// The three inserts of the command path as one autocommitted statement (data-modifying CTEs).
const ONE_STATEMENT_SQL: &str = "
    with e as (
        insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        select $1, $2, t.sequence, t.event_type, t.event_version, t.payload, t.metadata
        from unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
             as t(sequence, event_type, event_version, payload, metadata)
        returning global_position
    ), c as (
        insert into resource_claims (booking_id, partner, resource, period)
        values ($2, $8, $9, tstzrange($10, $11, '[)'))
        on conflict do nothing
        returning 1
    ), k as (
        insert into idempotency_keys
            (scope, idempotency_key, request_hash, aggregate_type, aggregate_id, status_code, response, expires_at)
        select $12, $13, $14, $1, $2, 202,
               jsonb_build_object('booking_id', $2::text, 'status', 'requested', 'version', 1,
                                  'position', max(e.global_position)),
               now() + $15
        from e
        on conflict (scope, idempotency_key) do update
            set request_hash = excluded.request_hash, aggregate_type = excluded.aggregate_type,
                aggregate_id = excluded.aggregate_id, status_code = excluded.status_code,
                response = excluded.response, created_at = now(), expires_at = excluded.expires_at
            where idempotency_keys.expires_at <= now()
        returning 1
    )
    select (select max(global_position) from e), (select count(*) from c), (select count(*) from k)";

/// `raw_sql`, one statement: the same rows as the command path in one round trip.
pub async fn raw_one_statement(pool: PgPool, seq: Arc<Seq>) -> Result<()> {
    let RawCreate {
        key,
        body,
        id,
        hash,
        event,
        payload,
        metadata,
    } = RawCreate::next(&seq)?;
    let (position, claims, keys): (Option<i64>, i64, i64) = sqlx::query_as(ONE_STATEMENT_SQL)
        .bind("booking")
        .bind(&id)
        .bind(vec![1_i64])
        .bind(vec![event.event_type()])
        .bind(vec![event.event_version()])
        .bind(vec![payload])
        .bind(vec![metadata])
        .bind(&body.partner)
        .bind(&body.resource)
        .bind(body.starts_at)
        .bind(body.ends_at)
        .bind(CLIENT)
        .bind(&key)
        .bind(&hash)
        .bind(chrono::Duration::hours(24))
        .fetch_one(&pool)
        .await
        .context("one-statement create")?;
    if position.is_none() || claims != 1 || keys != 1 {
        return Err(Error::step(
            "one-statement create",
            format!("wrote position {position:?}, {claims} claims, {keys} keys"),
        ));
    }
    Ok(())
}
