//! Starts the real `trailbook` binary on a fresh database and talks HTTP to it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use domain::values::Role;
use serde_json::{json, Value};
use service_kit::Tokens;
use store::testing::TestDb;

pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef-0123456789";
pub const PARTNER_SECRET: &str = "e2e-partner-secret";

/// A running `trailbook command-api` on its own database; killed on drop.
pub struct Server {
    pub base: String,
    /// `http://…/graphql` when the process runs the query API.
    pub graphql: Option<String>,
    /// The in-process partner simulator of `serve` (when it runs one).
    pub partner: Option<String>,
    pub db: TestDb,
    pub http: reqwest::Client,
    tokens: Tokens,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_part("command-api", env).await
    }

    /// `trailbook serve`: REST with the projector in the same process.
    pub async fn serve() -> Self {
        Self::start_part("serve", &[]).await
    }

    /// Starts `trailbook <part>` (`command-api` or `serve`) on a fresh database.
    pub async fn start_part(part: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logging(part, env, Stdio::inherit()).await
    }

    /// `start_part` with the process's log (stderr) going to `stderr`.
    pub async fn start_logging(part: &str, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let db = TestDb::new().await.unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailbook"));
        cmd.args([part, "--command-addr", "127.0.0.1:0"])
            .args([
                "--query-addr",
                "127.0.0.1:0",
                "--partner-addr",
                "127.0.0.1:0",
            ])
            .env("DATABASE_URL", &db.url)
            .env("TRAILBOOK_JWT_SECRET", JWT_SECRET)
            .env("TRAILBOOK_PARTNER_SECRET", PARTNER_SECRET)
            .env("TRAILBOOK_DATA_DIR", env!("CARGO_TARGET_TMPDIR"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let ready_file = ready_file_in(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
        cmd.arg("--ready-file").arg(&ready_file);
        let mut child = cmd.spawn().unwrap();
        let listening = wait_ready(&mut child, &ready_file, Duration::from_secs(60));
        let url = |name: &str| listening[name].as_str().map(str::to_owned);
        let (base, graphql, partner) = (
            url("rest").unwrap_or_default(),
            url("graphql"),
            url("partner_simulator"),
        );
        Self {
            base,
            graphql,
            partner,
            db,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            tokens: Tokens::new(JWT_SECRET.as_bytes()).unwrap(),
            child,
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; `None` if it did not.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn token(&self, role: Role, subject: &str) -> String {
        self.tokens
            .issue(role, subject, chrono::Duration::hours(1))
            .unwrap()
    }

    /// A token valid for `ttl` only.
    pub fn token_for(&self, role: Role, subject: &str, ttl: chrono::Duration) -> String {
        self.tokens.issue(role, subject, ttl).unwrap()
    }

    pub fn client(&self, subject: &str) -> String {
        self.token(Role::Client, subject)
    }

    pub fn operator(&self) -> String {
        self.token(Role::Operator, "op-1")
    }

    /// POSTs a GraphQL query (with `variables`) as `token`; returns the whole answer.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let url = self
            .graphql
            .as_deref()
            .expect("this server runs the query API");
        let mut req = self
            .http
            .post(url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON with a bearer token and optional extra headers; returns status, headers, body.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.post(self.url(path)).bearer_auth(token).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.get_with(path, token, &[]).await
    }

    /// `get` with extra request headers.
    pub async fn get_with(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.get(self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// Creates a booking for `owner` and returns its id.
    pub async fn create_booking(&self, owner: &str, key: &str, body: &Value) -> Reply {
        self.post(
            "/v1/bookings",
            &self.client(owner),
            body,
            &[("Idempotency-Key", key)],
        )
        .await
    }

    /// Schedules the contract's example visit for `owner`.
    pub async fn create_visit(&self, owner: &str, key: &str) -> Reply {
        self.post(
            "/v1/visits",
            &self.client(owner),
            &visit_body(),
            &[("Idempotency-Key", key)],
        )
        .await
    }

    /// Sends a partner callback signed with the partner secret.
    pub async fn callback(&self, body: &Value) -> Reply {
        let raw = serde_json::to_vec(body).unwrap();
        let signature = command_api::callbacks::sign(
            PARTNER_SECRET.as_bytes(),
            chrono::Utc::now().timestamp(),
            &raw,
        );
        Reply::from(
            self.http
                .post(self.url("/v1/partner/callbacks"))
                .header("content-type", "application/json")
                .header("x-trailbook-signature", signature)
                .body(raw)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Event types of an aggregate's history, in order.
    pub async fn event_types(&self, aggregate_type: &str, id: &str) -> Vec<String> {
        sqlx::query_scalar("select event_type from events where aggregate_type = $1 and aggregate_id = $2 order by sequence")
            .bind(aggregate_type)
            .bind(id)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 7807 body with this status.
    pub fn assert_problem(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{:?}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["title"].is_string() && self.body["detail"].is_string(),
            "{:?}",
            self.body
        );
        self
    }
}

/// The contract's example booking, for `room` and `[day, day+2)` of December 2026.
/// A fresh path for a `--ready-file` under `dir`.
pub fn ready_file_in(dir: &Path) -> PathBuf {
    dir.join(format!("ready-{}.json", uuid::Uuid::new_v4().simple()))
}

/// Waits up to `limit` for `child` to write its `--ready-file` (the URLs it listens on, as JSON) and
/// returns it; panics if the process exits first or the time runs out.
pub fn wait_ready(child: &mut Child, path: &Path, limit: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let _ = std::fs::remove_file(path);
            return serde_json::from_str(&text).unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("trailbook exited ({status}) before it was listening");
        }
        assert!(
            started.elapsed() < limit,
            "trailbook wrote no ready file within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn booking_body(room: &str, day: u32) -> Value {
    json!({
        "partner": "acme-hotels",
        "resource": room,
        "starts_at": format!("2026-12-{day:02}T15:00:00Z"),
        "ends_at": format!("2026-12-{:02}T11:00:00Z", day + 2),
        "guests": 2,
        "amount": {"minor": 25000, "currency": "EUR"},
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"}
    })
}

pub fn visit_body() -> Value {
    json!({
        "patient": {"id": "p-1", "name": "Grace Hopper", "email": "grace@example.com"},
        "clinician": "dr-grey",
        "scheduled_at": "2026-12-01T09:30:00Z"
    })
}
