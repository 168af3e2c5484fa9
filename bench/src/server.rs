//! The real `trailbook serve` binary, started as a user would: its own process, free loopback ports
//! (read back from its `--ready-file`), configuration through the documented environment variables,
//! stopped with SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Context, Error, Result};

/// A running `trailbook serve`.
pub struct Serve {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:<port>` of the REST command API.
    pub base: String,
}

/// The `subcommand` of [`Serve::start`] for `trailbook serve` with its job workers (plain `"serve"` runs
/// it with `--no-workers`).
pub const WITH_WORKERS: &str = "serve with workers";

impl Serve {
    /// Starts `bin <subcommand>` (`serve`, or `command-api` alone) on `database_url` with every port chosen by the kernel, rate limiting off and
    /// the given JWT secret, and waits until `/readyz` answers 200. Its log goes to `log`.
    pub async fn start(
        bin: &Path,
        subcommand: &str,
        database_url: &str,
        data_dir: &Path,
        jwt_secret: &str,
        log: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let ready_file = data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let (name, workers) = match subcommand {
            WITH_WORKERS => ("serve", &[][..]),
            // `serve` without its job workers: each booking would otherwise start the partner workflow
            // (reserve job, partner calls, callbacks, four more events), which is not the command path.
            "serve" => ("serve", &["--no-workers"][..]),
            other => (other, &[][..]),
        };
        let mut child = Command::new(bin)
            .args([
                name,
                "--command-addr",
                "127.0.0.1:0",
                "--query-addr",
                "127.0.0.1:0",
                "--partner-addr",
                "127.0.0.1:0",
            ])
            .args(workers)
            .env("DATABASE_URL", database_url)
            .env("TRAILBOOK_DATA_DIR", data_dir)
            .env("TRAILBOOK_JWT_SECRET", jwt_secret)
            .env("TRAILBOOK_RATE_LIMIT", "0")
            // The default level, whatever the caller's RUST_LOG says (that one is the harness's own);
            // TRAILBOOK_BENCH_SERVER_LOG sets the server's, e.g. `info,projector=debug`.
            .env(
                "RUST_LOG",
                std::env::var("TRAILBOOK_BENCH_SERVER_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .arg("--ready-file")
            .arg(&ready_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Usage(format!(
                    "cannot start {} ({e}); build it first with `cargo build --release -p trailbook` \
                     or point --trailbook-bin / TRAILBOOK_BIN at it",
                    bin.display()
                ))
            })?;
        let pid = child.id().context("reading the pid of trailbook serve")?;
        let base = wait_ready_file(&mut child, &ready_file, log).await?;
        let serve = Self { child, pid, base };
        serve.wait_ready().await?;
        Ok(serve)
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::step(
                    "waiting for trailbook serve",
                    "/readyz did not answer 200 within 60 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident set size of the process so far (`VmHWM`), in MB (MiB).
    pub fn peak_rss_mb(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading /proc/<pid>/status of trailbook serve")?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .context("finding VmHWM in /proc/<pid>/status")?;
        Ok(kb / 1024.0)
    }

    /// SIGTERM (graceful shutdown), then SIGKILL if it has not exited within 15 s.
    pub async fn stop(mut self) -> Result<()> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("sending SIGTERM to trailbook serve")?;
        if sent.success() {
            if let Ok(waited) =
                tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await
            {
                waited.context("waiting for trailbook serve to exit")?;
                return Ok(());
            }
        }
        tracing::warn!(
            pid = self.pid,
            "trailbook serve did not stop on SIGTERM; killing it"
        );
        self.child.kill().await.context("killing trailbook serve")?;
        Ok(())
    }
}

/// The REST base URL from `serve`'s `--ready-file`, once it is written (at most 120 s).
async fn wait_ready_file(child: &mut Child, ready_file: &Path, log: &Path) -> Result<String> {
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = tokio::fs::read_to_string(ready_file).await {
            let listening: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::step("reading the ready file of trailbook serve", e.to_string())
            })?;
            return listening["rest"]
                .as_str()
                .map(str::to_owned)
                .context("the ready file of trailbook serve names no REST address");
        }
        if child.try_wait().ok().flatten().is_some() {
            return Err(Error::step(
                "starting trailbook serve",
                format!("it exited before listening (see {})", log.display()),
            ));
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(Error::step(
                "starting trailbook serve",
                format!("no REST address within 120 s (see {})", log.display()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
