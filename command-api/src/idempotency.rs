//! Idempotent creates and commands (seed 001, "retry and idempotency").
//!
//! The aggregate id of a create is derived from (client, `Idempotency-Key`), so N concurrent requests with
//! one key race for the same event stream and its primary key lets exactly one win. The winner records the
//! request's hash and its response in `idempotency_keys` inside the same transaction as its events; every
//! other request (concurrent or later) finds that record and gets the same answer, or 422 if its body
//! differs.
//!
//! A command on an existing aggregate (check-in, cancel, payment, …) may carry an `Idempotency-Key` too
//! ([`Keyed`]): its record is looked up first (a retry must not run the command again, which its new
//! state would refuse), written in the command's transaction otherwise, and looked up once more when the
//! command fails (a concurrent request with the key may have won). Its hash covers the route, the
//! aggregate id and the body, so the key reused anywhere else (another route, aggregate or body, or a
//! create) is 422 `idempotency_key_reused`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use store::{
    Appended, Change, CommandError, CommitHook, ExecuteOptions, HookError, KeyRecord, Writes,
};

use crate::auth::Caller;
use crate::error::{ApiError, DomainError};
use crate::resource::Resource;
use crate::{context, AppState};

/// A stored answer to a create.
#[derive(Debug, Clone)]
pub struct Stored {
    pub request_hash: String,
    pub aggregate_id: String,
    pub status_code: StatusCode,
    pub response: Value,
}

/// Namespace of derived aggregate ids (a fixed random UUID).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8f1c_52d4_0b8e_4c57_9a1e_3f6d_2b7a_c410);

/// The aggregate id a create with this client and key gets.
pub fn derive_id(kind: &str, scope: &str, key: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, format!("{kind}\n{scope}\n{key}").as_bytes()).to_string()
}

/// The hash that tells "the same request again" from "another request with a reused key".
pub fn request_hash(route: &str, body: &Value) -> String {
    // serde_json's Map is ordered by key, so the serialization is canonical.
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// The stored answer for this client and key, unless it expired.
pub async fn lookup(pool: &PgPool, scope: &str, key: &str) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<(String, String, i32, Value)> = sqlx::query_as(
        "select request_hash, aggregate_id, status_code, response from idempotency_keys
         where scope = $1 and idempotency_key = $2 and expires_at > now()",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(request_hash, aggregate_id, code, response)| Stored {
            request_hash,
            aggregate_id,
            status_code: u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::ACCEPTED),
            response,
        }),
    )
}

/// Deletes expired keys; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("delete from idempotency_keys where expires_at <= now()")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Deletes expired keys every ten minutes, for as long as the command API runs.
pub async fn purge_periodically(pool: PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        match purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
        }
    }
}

/// Records the create's answer in the append transaction.
pub struct Record<F> {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub ttl: chrono::Duration,
    /// Builds the response body from the committed state (stored as its JSON).
    pub response: F,
}

impl<A, F, R> CommitHook<A> for Record<F>
where
    A: cqrs_es::Aggregate + Clone + 'static,
    F: Fn(&A, Appended) -> R + Clone + Send + Sync + 'static,
    R: Serialize,
{
    fn writes(&self, change: &Change<'_, A>, writes: &mut Writes) -> Result<(), HookError> {
        let (answer, after) = (self.response.clone(), change.after.clone());
        writes.record(KeyRecord {
            scope: self.scope.clone(),
            key: self.key.clone(),
            request_hash: self.request_hash.clone(),
            ttl: self.ttl,
            response: Box::new(move |at| serde_json::to_value(answer(&after, at))),
            // The answer of a create (`Resource::Accepted`) carries the command's `position`.
            position_in_answer: true,
        });
        Ok(())
    }
}

/// One idempotent create: who asks, with which key, for which derived aggregate id.
#[derive(Debug)]
pub struct Create {
    pub id: String,
    kind: &'static str,
    scope: String,
    key: String,
    hash: String,
    context: store::CommandContext,
}

impl Create {
    /// Derives the aggregate id and the request hash from the caller, the key and the parsed body.
    pub fn new<B: Serialize>(
        caller: &Caller,
        correlation: String,
        key: String,
        kind: &'static str,
        route: &str,
        body: &B,
    ) -> Result<Self, ApiError> {
        let canonical = serde_json::to_value(body).map_err(ApiError::internal)?;
        let scope = caller.subject().to_string();
        let mut context = context(caller, correlation, &format!("{kind}.create"));
        context.idempotency_key = Some(key.clone());
        Ok(Self {
            id: derive_id(kind, &scope, &key),
            hash: request_hash(route, &canonical),
            kind,
            scope,
            key,
            context,
        })
    }
}

/// Runs a create once per (client, key): a stored answer is replayed (422 if the body differs); otherwise
/// the command runs with the key's record in one transaction (after the aggregate's write rules, which
/// the store runs); a lost race replays the winner's answer.
pub async fn create<A>(
    state: &AppState,
    request: Create,
    command: A::Command,
) -> Result<Response, ApiError>
where
    A: Resource,
    A::Command: Clone,
    A::Error: DomainError,
{
    let pool = state.store.pool();
    let command_name = format!("{}.create", request.kind);
    // No lookup of the key first: the id derives from the key, so a used key makes the append conflict
    // (the stream exists) and only then is the stored answer read. One round trip less for every new
    // request; a repeated one pays a refused append instead.
    let id = request.id.clone();
    let record = Record {
        scope: request.scope.clone(),
        key: request.key.clone(),
        request_hash: request.hash.clone(),
        ttl: state.config.idempotency_ttl,
        response: {
            let id = request.id.clone();
            move |a: &A, at: Appended| a.answer(&id, at.version, Some(at.position))
        },
    };
    let options = ExecuteOptions {
        new_stream: true,
        ..ExecuteOptions::default()
    };
    let result = state
        .store
        .execute::<A>(&id, command, &(), &request.context, options)
        .with_hook(&record)
        .await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(CommandError::Rejected(e)) if A::already_exists(e) => "repeated",
        Err(_) => "refused",
    };
    metrics::counter!("trailbook_commands_total", "command" => command_name, "outcome" => outcome)
        .increment(1);
    match result {
        Ok(done) => Ok(created_response(
            StatusCode::ACCEPTED,
            axum::Json(done.state.answer(&id, done.version, done.position)),
            done.version,
            request.kind,
            &id,
            false,
        )),
        Err(CommandError::Rejected(e)) if A::already_exists(&e) => {
            // This key was used before (a retry, or another request with it won the race), or it expired
            // long ago.
            match lookup(pool, &request.scope, &request.key).await.map_err(store::Error::from)? {
                Some(stored) => replay(stored, &request.hash, request.kind),
                None => Err(ApiError::Unprocessable {
                    code: "idempotency_key_reused",
                    detail: format!(
                        "this Idempotency-Key was already used for {} {id} and has expired; use a new key",
                        request.kind
                    ),
                    field: Some("Idempotency-Key".into()),
                }),
            }
        }
        Err(CommandError::Refused(
            refusal @ HookError::Refused {
                code: "idempotency_key_in_use",
                ..
            },
        )) => {
            // The key's record belongs to another create of this client: another kind (a booking's key
            // reused for a visit) or another route. Its answer was committed before this refusal
            // (the record's key is unique), so it is there to compare with: 422, never "retry".
            match lookup(pool, &request.scope, &request.key)
                .await
                .map_err(store::Error::from)?
            {
                Some(stored) => replay(stored, &request.hash, request.kind),
                None => Err(ApiError::from(CommandError::<A::Error>::Refused(refusal))),
            }
        }
        Err(e) => Err(ApiError::from(e)),
    }
}

fn replay(stored: Stored, hash: &str, kind: &str) -> Result<Response, ApiError> {
    replay_as(stored, hash, Some(kind))
}

/// A stored answer again (`Location` for a create's, whose `kind` is given), or 422 for another request.
fn replay_as(stored: Stored, hash: &str, created: Option<&str>) -> Result<Response, ApiError> {
    if stored.request_hash != hash {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            detail: "this Idempotency-Key was already used with a different request body".into(),
            field: Some("Idempotency-Key".into()),
        });
    }
    metrics::counter!("trailbook_idempotent_replays_total").increment(1);
    let version = stored
        .response
        .get("version")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    Ok(match created {
        Some(kind) => created_response(
            stored.status_code,
            axum::Json(stored.response),
            version,
            kind,
            &stored.aggregate_id,
            true,
        ),
        None => {
            let mut response = (StatusCode::OK, axum::Json(stored.response)).into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
                headers.insert(header::ETAG, v);
            }
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    })
}

/// An `Idempotency-Key` on a command: whose it is and what request it stands for.
#[derive(Debug, Clone)]
pub struct Keyed {
    scope: String,
    key: String,
    hash: String,
}

impl Keyed {
    /// The key of `caller` for command `name` on aggregate `id` with `body`.
    pub fn new<B: Serialize>(
        caller: &Caller,
        key: String,
        name: &str,
        id: &str,
        body: &B,
    ) -> Result<Self, ApiError> {
        let canonical = serde_json::to_value(body).map_err(ApiError::internal)?;
        Ok(Self {
            scope: caller.subject().to_string(),
            hash: request_hash(&format!("{name} {id}"), &canonical),
            key,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The answer this key already has: the same request's (a replay, 200 with `Idempotent-Replayed`),
    /// 422 for another request, `None` if the key is new (or expired).
    pub async fn answered(&self, pool: &PgPool) -> Result<Option<Response>, ApiError> {
        match lookup(pool, &self.scope, &self.key)
            .await
            .map_err(store::Error::from)?
        {
            Some(stored) => replay_as(stored, &self.hash, None).map(Some),
            None => Ok(None),
        }
    }

    /// The record that stores the command's answer in its transaction.
    pub fn record<A>(
        &self,
        ttl: chrono::Duration,
        id: &str,
    ) -> Record<impl Fn(&A, Appended) -> A::Accepted + Clone + Send + Sync + 'static>
    where
        A: Resource,
        A::Command: Clone,
        A::Error: DomainError,
    {
        let id = id.to_string();
        Record {
            scope: self.scope.clone(),
            key: self.key.clone(),
            request_hash: self.hash.clone(),
            ttl,
            response: move |a: &A, at: Appended| a.answer(&id, at.version, Some(at.position)),
        }
    }
}

/// The answer of a create with `Location`, `ETag` and, for a replay, `Idempotent-Replayed: true`.
fn created_response(
    status: StatusCode,
    body: impl IntoResponse,
    version: u64,
    kind: &str,
    id: &str,
    replayed: bool,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/{kind}s/{id}")) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
