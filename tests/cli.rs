//! End-to-end tests of the `trailbook` binary: zero-config start and stop, `history`, and the clear
//! failures promised for bad input.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::booking::{BookingCommand, Customer, PartnerReportedStatus, PartnerSource};
use domain::values::{Actor, Currency, Email, Money, Role};
use domain::Booking;
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};

fn trailbook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailbook"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("trailbook runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A data dir under target/, removed at the end of the test.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "trailbook did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With no DATABASE_URL, `serve` starts a private cluster from the system's binaries, migrates, serves
/// health routes, and on SIGTERM shuts down cleanly and stops the cluster it started.
#[tokio::test]
async fn serve_with_no_configuration_runs_on_a_private_cluster_and_stops_cleanly() {
    let data = DataDir::new();
    let ready = support::ready_file_in(&data.0);
    let mut child = Running(
        trailbook()
            .args([
                "serve",
                "--command-addr",
                "127.0.0.1:0",
                "--query-addr",
                "127.0.0.1:0",
                "--partner-addr",
                "127.0.0.1:0",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("DATABASE_URL")
            .env("TRAILBOOK_DATA_DIR", &data.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let listening = support::wait_ready(&mut child.0, &ready, Duration::from_secs(90));
    let base = listening["rest"].as_str().unwrap().to_owned();

    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let port: u16 = std::fs::read_to_string(data.0.join("pg-port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "cluster is up while serving"
    );

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for_exit(&mut child.0, Duration::from_secs(60));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "cluster stopped with serve"
    );
}

async fn scripted_booking(db: &TestDb, id: &str) -> (chrono::DateTime<Utc>, String) {
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let context = CommandContext {
        correlation_id: "corr-e2e-1".into(),
        causation_id: Some("cmd-1".into()),
        actor: Some(Actor {
            subject: "ada".into(),
            role: Role::Client,
        }),
        idempotency_key: Some("key-1".into()),
        command: Some("booking.create".into()),
        request_correlation_id: None,
    };
    let starts_at = "2026-12-01T15:00:00Z".parse().unwrap();
    let ends_at = "2026-12-03T11:00:00Z".parse().unwrap();
    let request = BookingCommand::Request {
        booking_id: id.into(),
        owner: "ada".into(),
        partner: "acme-hotels".into(),
        resource: "room-42".into(),
        starts_at,
        ends_at,
        guests: 2,
        amount: Money {
            minor: 25000,
            currency: Currency::try_from("EUR".to_string()).unwrap(),
        },
        customer: Customer {
            name: "Ada Lovelace".into(),
            email: Email::try_from("ada@example.com".to_string()).unwrap(),
        },
        at: Utc::now(),
    };
    store
        .execute::<Booking>(id, request, &(), &context, ExecuteOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let worker = CommandContext {
        actor: Some(Actor {
            subject: "partner-gateway".into(),
            role: Role::System,
        }),
        ..CommandContext::system("booking.reserve")
    };
    store
        .execute::<Booking>(
            id,
            BookingCommand::RecordReservationRequested {
                attempt: 1,
                at: Utc::now(),
            },
            &(),
            &worker,
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    store
        .execute::<Booking>(
            id,
            BookingCommand::ApplyPartnerStatus {
                reported: PartnerReportedStatus::Confirmed,
                reservation_id: Some("res-1".into()),
                source: PartnerSource::Response,
                partner_time: Utc::now(),
                reason: None,
            },
            &(),
            &worker,
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    (between, db.url.clone())
}

/// `history` prints the folded state and every event with its metadata; `--at-version` and `--as-of`
/// print the past state and only the events up to it; `--json` gives the same as JSON.
#[tokio::test]
async fn history_prints_state_events_and_the_past() {
    let db = TestDb::new().await.unwrap();
    let (between, url) = scripted_booking(&db, "bk-1").await;

    let now = run(trailbook()
        .args(["history", "booking", "bk-1"])
        .env("DATABASE_URL", &url));
    assert!(now.status.success(), "{}", text(&now.stderr));
    let out = text(&now.stdout);
    assert!(out.contains("booking bk-1: version 3 of 3"), "{out}");
    assert!(out.contains("\"status\": \"confirmed\""), "{out}");
    for needle in [
        "BookingRequested v2.0",
        "PartnerReservationRequested",
        "PartnerConfirmed",
        "by client:ada",
        "correlation corr-e2e-1",
        "causation cmd-1",
        "by system:partner-gateway",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }

    let past = run(trailbook()
        .args(["history", "booking", "bk-1", "--at-version", "1"])
        .env("DATABASE_URL", &url));
    let out = text(&past.stdout);
    assert!(
        out.contains("version 1 of 3") && out.contains("\"status\": \"requested\""),
        "{out}"
    );
    assert!(
        out.contains("(2 later events not shown)") && !out.contains("PartnerConfirmed"),
        "{out}"
    );

    let as_of = run(trailbook()
        .args([
            "history",
            "booking",
            "bk-1",
            "--as-of",
            &between.to_rfc3339(),
            "--json",
        ])
        .env("DATABASE_URL", &url));
    assert!(as_of.status.success(), "{}", text(&as_of.stderr));
    let json: serde_json::Value = serde_json::from_slice(&as_of.stdout).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["state"]["status"], "requested");
    assert_eq!(json["events"].as_array().unwrap().len(), 1);
    assert_eq!(json["events"][0]["metadata"]["actor"]["subject"], "ada");

    let beyond = run(trailbook()
        .args(["history", "booking", "bk-1", "--at-version", "9"])
        .env("DATABASE_URL", &url));
    assert_eq!(beyond.status.code(), Some(2));
    assert!(text(&beyond.stderr).contains("beyond its head"));
}

/// Unknown ids and unreadable stored events are clear one-line errors with exit code 1, never a panic.
#[tokio::test]
async fn history_reports_unknown_ids_and_unreadable_events() {
    let db = TestDb::new().await.unwrap();
    scripted_booking(&db, "bk-2").await;

    let missing = run(trailbook()
        .args(["history", "visit", "nope"])
        .env("DATABASE_URL", &db.url));
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr).trim(),
        "error: no visit with id `nope`"
    );

    sqlx::query("insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 values ('booking', 'bk-2', 4, 'BookingTeleported', '1.0', '{\"BookingTeleported\":{}}', '{}')")
        .execute(&db.pool)
        .await
        .unwrap();
    let corrupt = run(trailbook()
        .args(["history", "booking", "bk-2"])
        .env("DATABASE_URL", &db.url));
    assert_eq!(corrupt.status.code(), Some(1));
    let err = text(&corrupt.stderr);
    assert!(
        err.contains("booking/bk-2 #4")
            && err.contains("BookingTeleported")
            && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A malformed DATABASE_URL: exit code 2 and a message that does not repeat the password.
#[test]
fn malformed_database_url_exits_2_without_the_password() {
    let out = run(trailbook()
        .args(["migrate"])
        .env("DATABASE_URL", "postgres://app:hunter2@db:notaport/x"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: invalid database URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// An unreachable database: exit code 1 and a message naming host, port and database, not the password.
#[test]
fn unreachable_database_is_a_clear_error() {
    let out = run(trailbook()
        .args(["migrate"])
        .env("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/trail"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1/trail as app"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// `trailbook jobs`: an empty list on a fresh database, and replaying an unknown job is a one-line error
/// with exit code 2.
#[tokio::test]
async fn jobs_lists_and_refuses_to_replay_an_unknown_job() {
    let db = TestDb::new().await.unwrap();
    let list = run(trailbook()
        .args(["jobs", "list"])
        .env("DATABASE_URL", &db.url));
    let replay = run(trailbook()
        .args(["jobs", "replay", "999"])
        .env("DATABASE_URL", &db.url));

    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).starts_with("      ID  KIND"),
        "{}",
        text(&list.stdout)
    );
    assert_eq!(replay.status.code(), Some(2));
    assert_eq!(text(&replay.stderr).trim(), "error: job 999 not found");
}

/// `trailbook bookings resolve` settles a stuck booking with the operator as actor; a status it cannot
/// be resolved to, or a word that is no status, is a one-line error with exit code 2.
#[tokio::test]
async fn bookings_resolve_settles_a_stuck_booking_as_the_operator() {
    let db = TestDb::new().await.unwrap();
    let request = BookingCommand::Request {
        booking_id: "b-stuck".into(),
        owner: "ada".into(),
        partner: "acme-hotels".into(),
        resource: "room-7".into(),
        starts_at: "2027-02-01T15:00:00Z".parse().unwrap(),
        ends_at: "2027-02-03T11:00:00Z".parse().unwrap(),
        guests: 2,
        amount: Money {
            minor: 25000,
            currency: Currency::try_from("EUR".to_string()).unwrap(),
        },
        customer: Customer {
            name: "Ada Lovelace".into(),
            email: Email::try_from("ada@example.com".to_string()).unwrap(),
        },
        at: Utc::now(),
    };
    EventStore::new(db.pool.clone(), StoreConfig::default())
        .execute::<Booking>(
            "b-stuck",
            request,
            &(),
            &CommandContext::system("booking.create"),
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
    let resolve = |status: &str| {
        run(trailbook()
            .args(["bookings", "resolve", "b-stuck", "--status", status])
            .args([
                "--reason",
                "partner holds nothing (phoned)",
                "--operator",
                "olga",
            ])
            .env("DATABASE_URL", &db.url))
    };

    let word = resolve("gone");
    let resolved = resolve("failed");
    let again = resolve("cancelled");

    assert_eq!(word.status.code(), Some(2), "{}", text(&word.stderr));
    assert!(
        text(&word.stderr).contains("--status `gone`"),
        "{}",
        text(&word.stderr)
    );
    assert!(resolved.status.success(), "{}", text(&resolved.stderr));
    assert!(
        text(&resolved.stdout).contains("is failed"),
        "{}",
        text(&resolved.stdout)
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
    assert_eq!(text(&again.stderr).trim().lines().count(), 1);
    let actor: String = sqlx::query_scalar(
        "select metadata->'actor'->>'subject' from events
         where aggregate_id = 'b-stuck' and event_type = 'BookingResolved'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(actor, "olga");
}

/// `trailbook partner-sim` serves reservations idempotently by our booking id, and refuses a fault flag
/// outside 0..1 with exit code 2.
#[tokio::test]
async fn the_partner_simulator_runs_alone_and_checks_its_flags() {
    let data = DataDir::new();
    let ready = support::ready_file_in(&data.0);
    let mut child = Running(
        trailbook()
            .args(["partner-sim", "--addr", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .env("TRAILBOOK_DATA_DIR", &data.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let listening = support::wait_ready(&mut child.0, &ready, Duration::from_secs(30));
    let base = listening["partner_simulator"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let body = serde_json::json!({"partner": "acme", "resource": "r-1",
        "starts_at": "2026-12-01T15:00:00Z", "ends_at": "2026-12-03T11:00:00Z"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r: serde_json::Value = http
            .post(format!("{base}/v1/reservations"))
            .header("Idempotency-Key", "booking-1")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["reservation_id"].clone());
    }
    let found: serde_json::Value = http
        .get(format!("{base}/v1/reservations?client_reference=booking-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bad = run(trailbook().args(["partner-sim", "--rate-5xx", "1.5"]));

    assert!(ids[0].is_string(), "{ids:?}");
    assert_eq!(ids[0], ids[1], "one reservation per booking id");
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not a probability"),
        "{}",
        text(&bad.stderr)
    );
}

/// A token secret shorter than 32 bytes stops `serve` and `token` at once with exit code 2 and a
/// one-line message naming the setting, never the secret; a subject a token may not carry, or a
/// lifetime over a week, is refused the same way.
#[tokio::test]
async fn short_token_secrets_and_bad_token_requests_exit_2() {
    let dir = DataDir::new();
    let db = TestDb::new().await.unwrap();
    for args in [
        &["token", "--role", "client", "--subject", "ada"][..],
        &[
            "serve",
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
        ][..],
    ] {
        let out = run(trailbook()
            .args(args)
            .env("TRAILBOOK_DATA_DIR", &dir.0)
            .env("DATABASE_URL", &db.url)
            .env("TRAILBOOK_JWT_SECRET", "hunter2-too-short"));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(err.contains("TRAILBOOK_JWT_SECRET"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let long = "a-long-enough-secret-0123456789abcdef";
    for args in [
        &["token", "--role", "client", "--subject", " "][..],
        &[
            "token",
            "--role",
            "client",
            "--subject",
            "ada",
            "--ttl-hours",
            "8760",
        ][..],
    ] {
        let out = run(trailbook()
            .args(args)
            .env("TRAILBOOK_DATA_DIR", &dir.0)
            .env("TRAILBOOK_JWT_SECRET", long));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
