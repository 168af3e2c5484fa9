//! The private PostgreSQL cluster against the real server binaries: first start, reuse across restarts,
//! concurrent starts, and the root fallback for a data directory the `postgres` user cannot reach.
//!
//! Every cluster lives under `target/tmp-embedded/<random>`; a [`Cleanup`] guard stops the server and
//! removes the directories even when an assertion fails, so no `postgres` process outlives the tests.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};
use store::embedded::EmbeddedPostgres;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh directory under `target/tmp-embedded/`, with the given mode.
fn fresh_dir(mode: u32) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir")
        .join("tmp-embedded");
    let dir = root.join(Alphanumeric.sample_string(&mut rand::rng(), 12));
    std::fs::create_dir_all(&dir).expect("the target dir is writable");
    // create_dir_all's mode depends on the umask; the tests depend on the exact mode.
    for d in [&root, &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("we own it");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("we own it");
    dir
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Stops the clusters it is given (when their `postmaster.pid` is still there) and removes its paths on
/// drop, so that a failed assertion leaves no server running.
#[derive(Default)]
struct Cleanup {
    clusters: Vec<PathBuf>,
    paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cluster in &self.clusters {
            if !cluster.join("postmaster.pid").exists() {
                continue;
            }
            let mut command = if running_as_root() {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--", "pg_ctl"]);
                command
            } else {
                std::process::Command::new("pg_ctl")
            };
            let _ = command
                .args(["stop", "-m", "immediate", "-D"])
                .arg(cluster)
                .current_dir("/")
                .output();
        }
        for path in &self.paths {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
    }
}

async fn select_one(pg: &EmbeddedPostgres) -> Result<i32, sqlx::Error> {
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await?;
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await?;
    pool.close().await;
    Ok(one)
}

/// A fresh data dir gets an initialised cluster that accepts connections; after a stop, a second start
/// reuses it (no new `initdb`: same password, and the table made before is still there), and the
/// password file is private.
#[tokio::test]
async fn a_cluster_is_initialised_once_and_keeps_its_data_across_restarts() -> TestResult {
    // Arrange
    let data_dir = fresh_dir(0o755);
    let mut cleanup = Cleanup {
        clusters: vec![data_dir.join("pg")],
        paths: vec![data_dir.clone()],
    };

    // Act: first start, write something, stop.
    let pg = EmbeddedPostgres::start(&data_dir).await?;
    assert!(pg.started_here());
    // Inside the data dir, unless the `postgres` user cannot reach it (e.g. a checkout below a 0700
    // `mktemp -d` directory while running as root): then the documented fallback root holds it.
    if pg.cluster_dir().starts_with("/var/lib/trailbook/clusters") {
        cleanup.clusters.push(pg.cluster_dir().to_owned());
    } else {
        assert_eq!(pg.cluster_dir(), data_dir.canonicalize()?.join("pg"));
    }
    assert_eq!(select_one(&pg).await?, 1);
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await?;
    sqlx::query("create table remembered (note text)")
        .execute(&pool)
        .await?;
    sqlx::query("insert into remembered values ('still here')")
        .execute(&pool)
        .await?;
    pool.close().await;
    let first_port = pg.port();
    let password = std::fs::read_to_string(data_dir.join("pg-password"))?;
    pg.stop().await?;
    assert!(
        !data_dir.join("pg/postmaster.pid").exists(),
        "stop stops the server"
    );

    // Act: second start.
    let pg = EmbeddedPostgres::start(&data_dir).await?;

    // Assert
    assert!(pg.started_here());
    assert_eq!(
        std::fs::read_to_string(data_dir.join("pg-password"))?,
        password
    );
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await?;
    let note: String = sqlx::query_scalar("select note from remembered")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    assert_eq!(note, "still here");
    assert_eq!(
        std::fs::read_to_string(data_dir.join("pg-port"))?.trim(),
        pg.port().to_string()
    );
    assert_eq!(pg.port(), first_port, "the remembered port was free");
    let mode = std::fs::metadata(data_dir.join("pg-password"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !data_dir.join("pg.pwfile").exists(),
        "initdb's password file is deleted"
    );
    pg.stop().await?;
    assert!(!data_dir.join("pg/postmaster.pid").exists());

    cleanup.clusters.clear();
    Ok(())
}

/// Two processes (here: tasks) starting the same cluster at once both get a working URL to the same
/// server, and exactly one of them started it; the other's `stop` leaves it running.
#[tokio::test]
async fn concurrent_starts_share_one_server_started_once() -> TestResult {
    // Arrange
    let data_dir = fresh_dir(0o755);
    let _cleanup = Cleanup {
        clusters: vec![data_dir.join("pg")],
        paths: vec![data_dir.clone()],
    };

    // Act
    let (a, b) = tokio::join!(
        EmbeddedPostgres::start(&data_dir),
        EmbeddedPostgres::start(&data_dir)
    );
    let (a, b) = (a?, b?);

    // Assert
    assert_eq!(
        [a.started_here(), b.started_here()]
            .iter()
            .filter(|s| **s)
            .count(),
        1
    );
    assert_eq!(a.port(), b.port());
    assert_eq!(select_one(&a).await?, 1);
    assert_eq!(select_one(&b).await?, 1);

    let (owner, guest) = if a.started_here() { (a, b) } else { (b, a) };
    let port = guest.port();
    guest.stop().await?;
    assert_eq!(select_one(&owner).await?, 1, "the guest's stop is a no-op");
    owner.stop().await?;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the owner's stop stops the server"
    );
    Ok(())
}

/// As root, a data dir under a 0700 directory cannot be reached by the `postgres` user, so the cluster
/// goes to `/var/lib/trailbook/clusters/<hash>` instead, and still works. (Skipped when not root.)
#[tokio::test]
async fn an_unreachable_data_dir_gets_a_fallback_cluster_when_root() -> TestResult {
    if !running_as_root() {
        return Ok(());
    }
    // Arrange
    let private = fresh_dir(0o700);
    let data_dir = private.join("data");
    let mut cleanup = Cleanup {
        clusters: Vec::new(),
        paths: vec![private.clone()],
    };

    // Act
    let started = EmbeddedPostgres::start(&data_dir).await;
    if let Ok(pg) = &started {
        let cluster = pg.cluster_dir().to_owned();
        cleanup.paths.push(cluster.with_extension("log"));
        cleanup.paths.push(cluster.clone());
        cleanup.clusters.push(cluster);
    }
    let pg = started?;

    // Assert
    let cluster = pg.cluster_dir().to_owned();
    assert!(
        cluster.starts_with("/var/lib/trailbook/clusters"),
        "{}",
        cluster.display()
    );
    let name = cluster.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert_eq!(name.len(), 16);
    assert!(name.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(pg.started_here());
    assert_eq!(select_one(&pg).await?, 1);
    assert!(
        data_dir.join("pg-password").exists(),
        "secrets stay in the data dir"
    );
    pg.stop().await?;
    assert!(!cluster.join("postmaster.pid").exists());
    Ok(())
}

/// The password shows in the URL (which callers must not log) but never in `Debug` output.
#[tokio::test]
async fn debug_output_hides_the_password() -> TestResult {
    // Arrange
    let data_dir = fresh_dir(0o755);
    let _cleanup = Cleanup {
        clusters: vec![data_dir.join("pg")],
        paths: vec![data_dir.clone()],
    };
    let pg = EmbeddedPostgres::start(&data_dir).await?;
    let password = std::fs::read_to_string(data_dir.join("pg-password"))?;

    // Act
    let debug = format!("{pg:?}");
    let url = pg.url("trailbook");

    // Assert
    assert!(!debug.contains(&password));
    assert_eq!(
        url,
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/trailbook",
            pg.port()
        )
    );
    pg.stop().await?;
    Ok(())
}
