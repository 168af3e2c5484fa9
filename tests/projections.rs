//! The projector as users reach it: in-process under `trailbook serve`, as separate `trailbook projector`
//! processes, through `trailbook projections` and the REST routes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use domain::values::Role;
use serde_json::Value;
use support::{booking_body, Server};

fn trailbook(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailbook"));
    cmd.env("DATABASE_URL", db_url)
        .env("TRAILBOOK_DATA_DIR", env!("CARGO_TARGET_TMPDIR"))
        .env("RUST_LOG", "warn");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `trailbook projections status --json`.
fn status(db_url: &str) -> Vec<Value> {
    let out = run(trailbook(db_url).args(["projections", "status", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the CLI status until `done` holds for every projection.
fn wait_status(db_url: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let statuses = status(db_url);
        if statuses.len() == 4 && statuses.iter().all(&done) {
            return statuses;
        }
        assert!(start.elapsed() < limit, "not reached: {statuses:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn create_bookings(server: &Server, owner: &str, n: u32) {
    for i in 0..n {
        let reply = server
            .create_booking(
                owner,
                &format!("{owner}-{i}"),
                &booking_body(&format!("{owner}-room-{i}"), 1),
            )
            .await;
        assert!(reply.status < 300, "{:?}", reply.body);
    }
}

/// Waits (30 s at most) until every event of this database is in the readable part of the global log:
/// below the cluster's `pg_snapshot_xmin`. Another test's transaction on the same server holds that
/// back for a moment (lag, never a gap), and a rebuild started then reports fewer events.
async fn wait_log_readable(server: &Server) {
    let started = std::time::Instant::now();
    loop {
        let hidden = count(
            server,
            "select count(*) from events where tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .await;
        if hidden == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{hidden} events stay behind the cluster's xmin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(server: &Server, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&server.db.pool)
        .await
        .unwrap()
}

/// `serve` projects in-process: the read model catches up with the log, lag is reported on REST, and an
/// operator's rebuild runs in the background with its progress at the `Location` until it is swapped in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_projects_in_process_and_rebuilds_on_an_operators_request() {
    // Arrange
    let server = Server::serve().await;
    create_bookings(&server, "c1", 20).await;
    let operator = server.operator();
    let head: i64 = count(&server, "select max(global_position) from events").await;

    // Act: wait until every projection has applied the log.
    let start = Instant::now();
    let statuses = loop {
        let reply = server.get("/v1/projections", &operator).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let list = reply.body.as_array().unwrap().clone();
        // The workers keep writing for a moment (the partner confirms each booking): wait until every
        // projection has applied the bookings' last event. Compared in the log's order, not by position:
        // a later transaction can hold lower positions (group commit takes its tx id at the claims).
        let mut reached = list.len() == 4;
        for p in &list {
            let name = p["name"].as_str().unwrap();
            reached &= p["lag_events"] == 0
                && projector::reached(&server.db.pool, name, head)
                    .await
                    .unwrap();
        }
        if reached {
            break list;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client_rebuild = server
        .post(
            "/v1/projections/bookings/rebuild",
            &server.client("c1"),
            &Value::Null,
            &[],
        )
        .await;
    let unknown = server
        .post("/v1/projections/nope/rebuild", &operator, &Value::Null, &[])
        .await;
    let never = server
        .get("/v1/projections/timeline/rebuild", &operator)
        .await;
    let started = server
        .post(
            "/v1/projections/bookings/rebuild",
            &operator,
            &Value::Null,
            &[],
        )
        .await;
    let location = started.header("location").unwrap().to_string();
    let start = Instant::now();
    let finished = loop {
        let reply = server
            .get(&location, &server.token(Role::Support, "s-1"))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        if reply.body["status"] != "running" {
            break reply.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Assert
    for p in &statuses {
        assert!(p["head_position"].as_i64().unwrap() >= head, "{p:?}");
        assert_eq!(p["lag_events"], 0, "{p:?}");
        assert!(p["leader"].is_string(), "{p:?}");
    }
    client_rebuild.assert_problem(403);
    unknown.assert_problem(404);
    never.assert_problem(404);
    assert_eq!(started.status, 202, "{:?}", started.body);
    assert_eq!(location, "/v1/projections/bookings/rebuild");
    assert_eq!(started.body["status"], "running");
    assert_eq!(finished["status"], "swapped", "{finished:?}");
    assert!(
        finished["events_applied"].as_i64().unwrap() >= 20,
        "{finished:?}"
    );
    assert!(
        finished["position"].as_i64().unwrap() >= head,
        "{finished:?}"
    );
    assert_eq!(count(&server, "select count(*) from rm_bookings").await, 20);
    assert_eq!(
        count(&server, "select count(*) from pg_tables where tablename like '%\\_rebuild' or tablename like '%\\_old'").await,
        0,
        "no leftover tables after the swap"
    );
}

/// `trailbook projections rebuild` rebuilds beside a running writer and reports what it did; a wrong name
/// is a one-line error with exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_command_rebuilds_and_reports_status() {
    // Arrange
    let server = Server::start().await;
    create_bookings(&server, "c2", 10).await;
    wait_log_readable(&server).await;
    let url = server.db.url.clone();

    // Act
    let before = status(&url);
    let rebuilt = run(trailbook(&url).args(["projections", "rebuild", "bookings"]));
    let after = status(&url);
    let table = run(trailbook(&url).args(["projections"]));
    let unknown = run(trailbook(&url).args(["projections", "rebuild", "bookingz"]));

    // Assert: nothing runs the projector here, so only the rebuilt projection moved.
    let bookings = |list: &[Value]| {
        list.iter()
            .find(|p| p["name"] == "bookings")
            .unwrap()
            .clone()
    };
    assert_eq!(bookings(&before)["position"], 0);
    assert_eq!(bookings(&before)["lag_events"], 10);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));
    assert!(
        text(&rebuilt.stdout).starts_with("rebuilt bookings: 10 events"),
        "{}",
        text(&rebuilt.stdout)
    );
    assert_eq!(bookings(&after)["lag_events"], 0);
    assert_eq!(
        bookings(&after)["position"],
        bookings(&after)["head_position"]
    );
    let visits = after.iter().find(|p| p["name"] == "visits").unwrap();
    assert_eq!(visits["lag_events"], 10);
    assert_eq!(count(&server, "select count(*) from rm_bookings").await, 10);
    let table = text(&table.stdout);
    assert!(table.starts_with("PROJECTION"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_eq!(unknown.status.code(), Some(2));
    let err = text(&unknown.stderr);
    assert!(err.contains("unknown projection `bookingz`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

struct Projector(Child);

impl Projector {
    fn start(db_url: &str) -> Self {
        Self(
            trailbook(db_url)
                .arg("projector")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid in a leader's instance name (`host:pid:nonce`).
fn leader_pid(status: &Value) -> Option<u32> {
    status["leader"].as_str()?.split(':').nth(1)?.parse().ok()
}

/// Two `trailbook projector` processes: each projection has one leader; SIGKILL the process leading the
/// bookings and the other takes over within seconds and finishes the log with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_projector_process_takes_over_when_the_leader_is_killed() {
    // Arrange
    let server = Server::start().await;
    let url = server.db.url.clone();
    create_bookings(&server, "c3", 10).await;
    let mut a = Projector::start(&url);
    let mut b = Projector::start(&url);
    let pids = [a.pid(), b.pid()];
    let led = wait_status(&url, Duration::from_secs(30), |p| {
        leader_pid(p).is_some_and(|pid| pids.contains(&pid)) && p["lag_events"] == 0
    });

    // Act: kill whichever leads the bookings, then write more.
    let victim = leader_pid(led.iter().find(|p| p["name"] == "bookings").unwrap()).unwrap();
    let survivor = if victim == a.pid() { b.pid() } else { a.pid() };
    if victim == a.pid() {
        a.kill();
    } else {
        b.kill();
    }
    let killed_at = Instant::now();
    create_bookings(&server, "c4", 10).await;
    let after = wait_status(&url, Duration::from_secs(30), |p| {
        leader_pid(p) == Some(survivor) && p["lag_events"] == 0
    });
    let takeover = killed_at.elapsed();

    // Assert
    assert!(takeover < Duration::from_secs(10), "took {takeover:?}");
    for p in &after {
        assert_eq!(p["position"], p["head_position"], "{p:?}");
    }
    assert_eq!(count(&server, "select count(*) from rm_bookings").await, 20);
    let counted: i64 = count(
        &server,
        "select coalesce(sum(count), 0)::bigint from rm_status_counts where aggregate_type = 'booking'",
    )
    .await;
    assert_eq!(counted, 20, "status board counts each booking once");
    let per_day: i64 = count(
        &server,
        "select coalesce(sum(count), 0)::bigint from rm_timeline",
    )
    .await;
    let events: i64 = count(&server, "select count(*) from events").await;
    assert_eq!(per_day, events, "the timeline counts each event once");
}
