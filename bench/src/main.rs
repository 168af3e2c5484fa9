//! `trailbook-bench`: the benchmark harness of issue 8.
//!
//! Measures trailbook's command path against the raw PostgreSQL limit of the same statements and
//! against stock cqrs-es, in one run, so that the machine's noise cancels in the ratios. It starts its
//! own database (a fresh one per run, on `DATABASE_URL` or on a private cluster) and the real
//! `trailbook serve` binary, drives load over loopback, prints a table, writes `BENCHMARKS.md` and,
//! with `--json`, the figures as JSON.
//!
//! ```sh
//! cargo build --release -p trailbook
//! cargo run --release -p trailbook-bench -- --quick --json results.json
//! ```
//!
//! # Layout
//! - `load`: closed- and open-loop drivers and latency percentiles.
//! - `commands`: the create-booking workloads (HTTP, in-process, raw SQL, ceiling, stock cqrs-es).
//! - `streams`: the long visit stream: loads with and without snapshots, time travel, appends.
//! - `projection`: projector catch-up, rebuild, and live lag.
//! - `server`: starting, measuring and stopping `trailbook serve`.
//! - `db`: the PostgreSQL server, fresh databases, settings.
//! - `report`: rows, ratios, the table, JSON and BENCHMARKS.md.
//! - `error`: [`error::Error`].
#![forbid(unsafe_code)]

mod commands;
mod cpu;
mod db;
mod error;
mod load;
mod projection;
mod report;
mod server;
mod streams;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use domain::values::Role;
use rand::distr::{Alphanumeric, SampleString};
use store::{EventStore, StoreConfig};

use crate::commands::Seq;
use crate::error::{Context, Error, Result};
use crate::load::{closed_loop, open_loop, Measured};
use crate::report::{Row, RunInfo, Target};

/// Benchmarks trailbook against raw PostgreSQL and stock cqrs-es, in one run.
#[derive(Debug, Parser)]
#[command(name = "trailbook-bench")]
struct Args {
    /// Short windows and a small projector log: finishes in under a minute (noisy: for development).
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these phases (comma-separated; default: all). A partial run prints its table but writes
    /// no Markdown report unless --markdown is given.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Where to write the Markdown report (default: BENCHMARKS.md for a run of every phase).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The `trailbook` binary to start (default: `trailbook` next to this executable, i.e. the one
    /// `cargo build --release -p trailbook` built into the same target directory).
    #[arg(long, env = "TRAILBOOK_BIN")]
    trailbook_bin: Option<PathBuf>,
    /// PostgreSQL server to create the run's fresh databases on (the role needs CREATEDB). Without it,
    /// a private cluster is started under --data-dir with the system's PostgreSQL binaries.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory for the private cluster, serve's data dir and logs (default: `trailbook-bench` in the
    /// target directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Events of the projector log (default: 1,000,000; 20,000 with --quick). Rounded to tens.
    #[arg(long)]
    projector_events: Option<u64>,
    /// Fixed command rate of the live-lag run (commands per second).
    #[arg(long, default_value_t = 1000.0)]
    lag_rate: f64,
    /// Windows measured back to back for each point of the command workloads; the median one is
    /// reported (default: 3, 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=15))]
    repeats: Option<u32>,
}

/// The phases of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// `http_create` through `trailbook serve`, the live lag, and serve's peak RSS.
    Serve,
    /// `http_create` through `trailbook command-api` alone.
    CommandApi,
    /// `http_create` through default `trailbook serve` (workers on: the partner saga of every booking
    /// runs beside the creates), 16 clients.
    Saga,
    /// `inproc_create`, `raw_sql`, `raw_ceiling` and `stock_cqrs_es`.
    Inproc,
    /// `long_stream_load` and `time_travel`.
    Streams,
    /// `projector_catchup` and `rebuild`.
    Projector,
}

/// The long stream: 10k events plus the most that can follow the last snapshot (49 at the default
/// interval of 50), so the head load is the worst case, not a load that starts exactly at a snapshot.
const STREAM_LENGTH: u64 = 10_049;

/// In the projector's main log, consecutive events of one booking or visit are this many pairs (ten
/// events each) apart: about a second of traffic at 1,000 events/s, like a partner's answer or the next
/// step of a visit.
const LIVE_GAP_PAIRS: usize = 100;

/// The index in [`Plan::clients`] of the client count the targets compare at (16), and the paired
/// `raw_sql` runs at.
const COMPARED: usize = 2;

/// How long and how big each workload is.
#[derive(Debug, Clone)]
struct Plan {
    /// The client counts of every command workload; [`COMPARED`] indexes the one the targets compare.
    clients: [usize; 4],
    /// Windows per point of a command workload (the median one is reported).
    repeats: u32,
    warmup: Duration,
    window: Duration,
    lag_window: Duration,
    stream_length: u64,
    stream_window: Duration,
    append_window: Duration,
    projector_events: u64,
}

impl Plan {
    fn new(args: &Args) -> Self {
        let mut plan = if args.quick {
            Self {
                clients: [1, 4, 16, 64],
                repeats: 1,
                warmup: Duration::from_millis(250),
                window: Duration::from_millis(1000),
                lag_window: Duration::from_secs(3),
                stream_length: STREAM_LENGTH,
                stream_window: Duration::from_millis(800),
                append_window: Duration::from_millis(800),
                projector_events: 20_000,
            }
        } else {
            Self {
                clients: [1, 4, 16, 64],
                repeats: 3,
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(5),
                lag_window: Duration::from_secs(20),
                stream_length: STREAM_LENGTH,
                stream_window: Duration::from_secs(5),
                append_window: Duration::from_secs(5),
                projector_events: 1_000_000,
            }
        };
        if let Some(n) = args.projector_events {
            plan.projector_events = n.max(10);
        }
        if let Some(n) = args.repeats {
            plan.repeats = n;
        }
        plan
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trailbook-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Usage(_)) => {
            eprintln!("trailbook-bench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("trailbook-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The target directory this executable lives in (`<target>/release/trailbook-bench`).
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

fn trailbook_bin(args: &Args) -> Result<PathBuf> {
    if let Some(bin) = &args.trailbook_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe
        .parent()
        .context("locating this executable's directory")?;
    Ok(dir.join("trailbook"))
}

fn progress(text: &str) {
    eprintln!("[bench] {text}");
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::new(&args);
    let bin = trailbook_bin(&args)?;
    if !bin.exists() {
        return Err(Error::Usage(format!(
            "{} does not exist: build it with `cargo build --release -p trailbook` (same target dir), \
             or set --trailbook-bin / TRAILBOOK_BIN",
            bin.display()
        )));
    }
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => target_dir()
            .context("locating the target directory")?
            .join("trailbook-bench"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let nonce = started_at.format("%Y%m%d%H%M%S").to_string();
    let url = args.database_url.as_deref().filter(|u| !u.is_empty());

    progress("starting PostgreSQL");
    let server = db::Server::start(url, &data_dir).await?;
    let server_description = server.description.clone();
    let outcome = async {
        let settings = server.settings().await?;
        let name = format!("trailbook_bench_{nonce}");
        let projector_name = format!("{name}_projector");
        let url = server.create_database(&name).await?;
        let outcome = async {
            let projector_url = server.create_database(&projector_name).await?;
            workloads(
                &plan,
                &args.only,
                &bin,
                &data_dir,
                &nonce,
                &url,
                &projector_url,
                args.lag_rate,
            )
            .await
        }
        .await;
        for db in [&name, &projector_name] {
            if let Err(e) = server.drop_database(db).await {
                tracing::warn!(error = %e, "could not drop a benchmark database");
            }
        }
        outcome.map(|rows| (rows, settings))
    }
    .await;
    server_stop(server).await;
    let (mut rows, settings) = outcome?;
    report::add_ratios(&mut rows);

    let info = RunInfo {
        revision: revision(),
        quick: args.quick,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        duration_s: clock.elapsed().as_secs_f64(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory: meminfo(),
        cpu: cpu_model(),
        load_before,
        server: server_description,
        settings,
        window_s: plan.window.as_secs_f64(),
        repeats: plan.repeats,
        warmup_s: plan.warmup.as_secs_f64(),
        lag_rate: args.lag_rate,
        projector_events: plan.projector_events / 10 * 10,
        stream_length: plan.stream_length,
        snapshot_every: StoreConfig::default().snapshot_every,
    };
    let targets = targets(&rows, &info);
    println!("{}", report::table(&rows));
    for t in &targets {
        println!(
            "target {:<55} goal {:<28} measured {:<40} {}",
            t.what,
            t.goal,
            t.measured,
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            }
        );
    }
    let markdown = match (&args.markdown, args.only.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(PathBuf::from("BENCHMARKS.md")),
        (None, false) => None,
    };
    if let Some(path) = markdown {
        report::write_markdown(&path, &info, &rows, &targets)?;
        progress(&format!("wrote {}", path.display()));
    }
    if let Some(path) = &args.json {
        report::write_json(path, &rows)?;
        progress(&format!("wrote {}", path.display()));
    }
    progress(&format!("done in {:.0} s", clock.elapsed().as_secs_f64()));
    Ok(())
}

async fn server_stop(server: db::Server) {
    server.stop().await;
}

/// `git describe --always --dirty` of the working tree, if git is there.
fn revision() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// What the phases of a run share.
struct Ctx<'a> {
    plan: &'a Plan,
    bin: &'a Path,
    data_dir: &'a Path,
    nonce: &'a str,
    url: &'a str,
    projector_url: &'a str,
    /// The run's main database, 16 connections.
    pool: sqlx::PgPool,
    /// One connection for the server-wide probes around each phase.
    probe_pool: sqlx::PgPool,
    /// The servers' JWT secret (tokens are issued here).
    secret: String,
}

/// Every workload of the selected phases, in order; returns the rows.
#[allow(clippy::too_many_arguments)]
async fn workloads(
    plan: &Plan,
    phases: &[Phase],
    bin: &Path,
    data_dir: &Path,
    nonce: &str,
    url: &str,
    projector_url: &str,
    lag_rate: f64,
) -> Result<Vec<Row>> {
    let runs = |phase: Phase| phases.is_empty() || phases.contains(&phase);
    let cx = Ctx {
        plan,
        bin,
        data_dir,
        nonce,
        url,
        projector_url,
        pool: db::pool(url, 16).await?,
        probe_pool: db::pool(url, 1).await?,
        secret: Alphanumeric.sample_string(&mut rand::rng(), 48),
    };
    // The servers apply their own embedded migrations when they start, as they would for a user (and a
    // harness built from a newer tree must not apply migrations the server does not know); only a run
    // that starts no server migrates the database itself.
    if !runs(Phase::Serve) && !runs(Phase::CommandApi) && !runs(Phase::Saga) {
        store::db::migrate(&cx.pool)
            .await
            .context("migrating the benchmark database")?;
    }
    let mut rows = Vec::new();
    if runs(Phase::Serve) {
        serve_phase(&cx, lag_rate, &mut rows).await?;
    }
    if runs(Phase::CommandApi) {
        command_api_phase(&cx, &mut rows).await?;
    }
    if runs(Phase::Saga) {
        saga_phase(&cx, &mut rows).await?;
    }
    if runs(Phase::Inproc) {
        inproc_phase(&cx, &mut rows).await?;
    }
    if runs(Phase::Streams) {
        streams_phase(&cx, &mut rows).await?;
    }
    cx.pool.close().await;
    if runs(Phase::Projector) {
        projector_phase(&cx, &mut rows).await?;
    }
    Ok(rows)
}

/// Starts `trailbook <subcommand>` (see [`server::Serve::start`]) with its log in `log`, runs `work`
/// against it, and stops it, also when `work` failed.
async fn with_server(
    cx: &Ctx<'_>,
    subcommand: &str,
    log: &str,
    work: impl AsyncFnOnce(&server::Serve) -> Result<()>,
) -> Result<()> {
    progress(&format!("starting trailbook {subcommand}"));
    let server = server::Serve::start(
        cx.bin,
        subcommand,
        cx.url,
        &cx.data_dir.join("serve"),
        &cx.secret,
        &cx.data_dir.join(log),
    )
    .await?;
    let outcome = work(&server).await;
    progress(&format!("stopping trailbook {subcommand}"));
    let stopped = server.stop().await;
    outcome?;
    stopped
}

/// Phase 1: the whole command path over HTTP through `trailbook serve`, with serve's memory; then the
/// live lag at a fixed rate.
async fn serve_phase(cx: &Ctx<'_>, lag_rate: f64, rows: &mut Vec<Row>) -> Result<()> {
    let pool = &cx.pool;
    with_server(cx, "serve", "serve.log", async |serve| {
        let http = HttpClient::new(&cx.secret, serve)?;
        let seq = Seq::new(cx.nonce, "http");
        http_runs(cx, &http, &seq, &cx.plan.clients, serve.pid, None, rows).await;
        let rss_http = serve.peak_rss_mb()?;
        // Once serve's projector has applied what http_create wrote (so it takes no CPU from the
        // baseline), raw SQL again, right after.
        projection::wait_for_head(
            pool,
            projection::head(pool).await?,
            Instant::now(),
            Duration::from_secs(300),
        )
        .await?;
        rows.push(paired_raw_sql(cx, "serve", "`http_create` through `serve`").await);

        let capacity = rows
            .iter()
            .rev()
            .find(|r| r.workload == "http_create")
            .and_then(|r| r.ops_per_s)
            .unwrap_or(0.0);
        let lag = |rate: f64, note: &'static str| {
            let (http, seq, pool) = (http.clone(), seq.clone(), pool.clone());
            async move {
                progress(&format!("projector_lag at {rate:.0} commands/s"));
                lag_run(pool, http, seq, rate, cx.plan.lag_window, note).await
            }
        };
        rows.push(lag(lag_rate, "").await?);
        // Where the fixed rate is more than half of what serve sustains here, the commands queue and the
        // lag measures that queue; the lag at half of serve's measured capacity shows the projector's own.
        let half = (capacity / 2.0).floor();
        if half >= 1.0 && half < lag_rate {
            rows.push(lag(half, "; half of serve's capacity measured above").await?);
        }
        let rss = rss_http.max(serve.peak_rss_mb()?);
        rows.push(
            Row::new("serve_rss_mb", count(cx.plan.clients[COMPARED]))
                .variant(format!(
                    "VmHWM; {rss_http:.1} MB after http_create, {rss:.1} MB after the lag run"
                ))
                .value(rss, "MB"),
        );
        Ok(())
    })
    .await
}

/// Phase 1b: the same over HTTP to `trailbook command-api` alone: no projector, query API or partner
/// simulator in the server process, to tell the HTTP path's cost from theirs.
async fn command_api_phase(cx: &Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    with_server(cx, "command-api", "command-api.log", async |api| {
        let http = HttpClient::new(&cx.secret, api)?;
        let seq = Seq::new(cx.nonce, "http-api");
        http_runs(
            cx,
            &http,
            &seq,
            &cx.plan.clients,
            api.pid,
            Some(API_ALONE),
            rows,
        )
        .await;
        rows.push(paired_raw_sql(cx, "api", "`http_create` through `command-api`").await);
        Ok(())
    })
    .await
}

/// Phase 1c: creates through default `trailbook serve`, workers on: every booking also runs its partner
/// saga (a reserve job, calls to serve's partner simulator, its callbacks, more events and projection
/// batches) on the same two cores, as a user runs it. One point, at the compared client count.
async fn saga_phase(cx: &Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    with_server(
        cx,
        server::WITH_WORKERS,
        "serve-workers.log",
        async |serve| {
            let http = HttpClient::new(&cx.secret, serve)?;
            let seq = Seq::new(cx.nonce, "http-saga");
            let compared = [cx.plan.clients[COMPARED]];
            http_runs(cx, &http, &seq, &compared, serve.pid, Some(SAGA), rows).await;
            Ok(())
        },
    )
    .await
}

/// Phase 2: the same command in-process, as raw SQL, the one-row ceiling, and stock cqrs-es.
async fn inproc_phase(cx: &Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    let plan = cx.plan;
    let nonce = cx.nonce;
    let pool = &cx.pool;
    let probe_pool = &cx.probe_pool;
    let store = EventStore::new(pool.clone(), StoreConfig::default())
        .with_notifier(store::notify::CommitNotifier::spawn(pool.clone()));
    let seq = Seq::new(nonce, "inproc");
    for &c in &plan.clients {
        progress(&format!("inproc_create, {c} clients"));
        let (store, seq) = (store.clone(), seq.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::inproc_create(store.clone(), seq.clone())
        })
        .await;
        rows.push(Row::measured("inproc_create", count(c), &m).costs_of(per_op));
    }
    let seq = Seq::new(nonce, "store-only");
    for &c in &plan.clients {
        progress(&format!("inproc_create (store only), {c} clients"));
        let (store, seq) = (store.clone(), seq.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::inproc_store_only(store.clone(), seq.clone())
        })
        .await;
        rows.push(
            Row::measured("inproc_create", count(c), &m)
                .costs_of(per_op)
                .variant("store only: execute, no caller hook (the slot claim, no key)"),
        );
    }
    let seq = Seq::new(nonce, "raw");
    for &c in &plan.clients {
        progress(&format!("raw_sql, {c} clients"));
        let (pool, seq) = (pool.clone(), seq.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::raw_sql(pool.clone(), seq.clone())
        })
        .await;
        rows.push(Row::measured("raw_sql", count(c), &m).costs_of(per_op));
    }
    let seq = Seq::new(nonce, "raw-one");
    for &c in &plan.clients {
        progress(&format!("raw_sql (one statement), {c} clients"));
        let (pool, seq) = (pool.clone(), seq.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::raw_one_statement(pool.clone(), seq.clone())
        })
        .await;
        rows.push(
            Row::measured("raw_sql", count(c), &m)
                .costs_of(per_op)
                .variant("same rows in one statement (CTEs), no lookup"),
        );
    }
    let seq = Seq::new(nonce, "ceiling");
    let template = Arc::new(commands::ceiling_template()?);
    for &c in &plan.clients {
        progress(&format!("raw_ceiling, {c} clients"));
        let (pool, seq, template) = (pool.clone(), seq.clone(), template.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::raw_ceiling(pool.clone(), seq.clone(), template.clone())
        })
        .await;
        rows.push(Row::measured("raw_ceiling", count(c), &m).costs_of(per_op));
    }
    let seq = Seq::new(nonce, "stock");
    let cqrs = commands::stock(pool.clone());
    for &c in &plan.clients {
        progress(&format!("stock_cqrs_es, {c} clients"));
        let (cqrs, seq) = (cqrs.clone(), seq.clone());
        let (m, per_op) = point(plan, probe_pool, None, c, move || {
            commands::stock_cqrs_es(cqrs.clone(), seq.clone())
        })
        .await;
        rows.push(Row::measured("stock_cqrs_es", count(c), &m).costs_of(per_op));
    }

    Ok(())
}

/// Phase 3: the long stream: loads, time travel, appends.
async fn streams_phase(cx: &Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    let plan = cx.plan;
    let nonce = cx.nonce;
    let pool = &cx.pool;
    progress("long_stream_load and time_travel");
    let plain = EventStore::new(pool.clone(), StoreConfig::default());
    let streams = streams::build(&plain, nonce, plan.stream_length).await?;
    let snap: Arc<str> = streams.snapshotted.clone().into();
    let bare: Arc<str> = streams.bare.clone().into();
    let short: Arc<str> = streams.short.clone().into();
    let len = streams.length;
    let measure_load = |id: Arc<str>, expected: u64| {
        let store = plain.clone();
        closed_loop(1, plan.warmup / 3, plan.stream_window, move || {
            streams::load_head(store.clone(), id.clone(), expected)
        })
    };
    let base = measure_load(short.clone(), 10).await;
    let base_p50 = base.percentile_ms(50.0);
    let with_ratio = |mut row: Row, label: &str| {
        row.baseline = Some(label.to_owned());
        row.ratio = match (row.p50_ms, base_p50) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        row.ratio_kind = Some("p50_latency");
        row
    };
    rows.push(Row::measured("long_stream_load", 1, &base).variant("head of a 10-event stream"));
    let m = measure_load(snap.clone(), len).await;
    rows.push(with_ratio(
        Row::measured("long_stream_load", 1, &m)
            .variant(format!("head of {len} events, snapshots")),
        "10-event stream",
    ));
    let m = measure_load(bare.clone(), len).await;
    rows.push(with_ratio(
        Row::measured("long_stream_load", 1, &m)
            .variant(format!("head of {len} events, no snapshots")),
        "10-event stream",
    ));
    for (id, label) in [(snap.clone(), "snapshots"), (bare.clone(), "no snapshots")] {
        let max_applied = Arc::new(AtomicUsize::new(0));
        let (store, applied) = (plain.clone(), max_applied.clone());
        let m = closed_loop(1, plan.warmup / 3, plan.stream_window, move || {
            streams::time_travel(store.clone(), id.clone(), len, applied.clone())
        })
        .await;
        let most = max_applied.load(Ordering::Relaxed) as f64;
        rows.push(with_ratio(
            Row::measured("time_travel", 1, &m)
                .variant(format!(
                    "random version of {len}, {label}; value = max applied"
                ))
                .value(most, "events"),
            "10-event stream",
        ));
    }
    for (id, label, config) in [
        (snap.clone(), "snapshots", StoreConfig::default()),
        (
            bare.clone(),
            "no snapshots",
            StoreConfig {
                snapshot_every: 0,
                ..StoreConfig::default()
            },
        ),
    ] {
        let store = EventStore::new(pool.clone(), config);
        let m = closed_loop(1, plan.warmup / 3, plan.append_window, move || {
            streams::append_command(store.clone(), id.clone())
        })
        .await;
        rows.push(
            Row::measured("long_stream_load", 1, &m)
                .variant(format!("append 1 event to the {len}-event stream, {label}")),
        );
    }

    Ok(())
}

/// Phase 4: the projector over a pre-written log, in a database of its own.
async fn projector_phase(cx: &Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    let plan = cx.plan;
    let projector_url = cx.projector_url;
    let ppool = db::pool(projector_url, 16).await?;
    store::db::migrate(&ppool)
        .await
        .context("migrating the projector database")?;
    let pairs = usize::try_from(plan.projector_events / 10).unwrap_or(usize::MAX);
    let live = projection::Shape::Live {
        gap: LIVE_GAP_PAIRS,
    };
    let (row, events) = catch_up_over(&ppool, pairs, live, "").await?;
    rows.push(row);
    progress("rebuild");
    let took = projection::rebuild(&ppool).await?;
    rows.push(
        Row {
            ops_per_s: Some(events as f64 / took.as_secs_f64()),
            ops: events,
            ..Row::new("rebuild", 1)
        }
        .variant(format!("bookings, {events} events; {}", live.describe()))
        .value(took.as_secs_f64(), "s"),
    );

    // The same catch-up over the worst-case log (a fifth of the size: it is several times slower).
    projection::reset(&ppool).await?;
    let worst = projection::Shape::RoundRobin;
    let (row, _) = catch_up_over(&ppool, (pairs / 5).max(1), worst, " (worst case)").await?;
    rows.push(row);
    ppool.close().await;
    Ok(())
}

/// How the variant of `http_create` through `trailbook command-api` starts.
const API_ALONE: &str = "`trailbook command-api` alone (no projector)";
/// The variant of `http_create` through default `serve`.
const SAGA: &str = "default `serve`: workers on, the partner saga of every booking beside";

/// A harness client of a started server: keep-alive connections and one client token.
#[derive(Clone)]
struct HttpClient {
    client: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
}

impl HttpClient {
    fn new(secret: &str, server: &server::Serve) -> Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .context("building the HTTP client")?,
            base: server.base.clone().into(),
            token: command_api::Tokens::new(secret.as_bytes())
                .context("the JWT secret")?
                .issue(Role::Client, commands::CLIENT, chrono::Duration::hours(24))
                .context("issuing a token")?
                .into(),
        })
    }
}

/// `http_create` against the server process `pid` at each of `clients`, one row each.
async fn http_runs(
    cx: &Ctx<'_>,
    http: &HttpClient,
    seq: &Arc<Seq>,
    clients: &[usize],
    pid: u32,
    variant: Option<&'static str>,
    rows: &mut Vec<Row>,
) {
    for &c in clients {
        progress(&format!(
            "http_create{}, {c} clients",
            variant.map_or_else(String::new, |v| format!(" ({v})"))
        ));
        let (client, base, token, seq) = (
            http.client.clone(),
            http.base.clone(),
            http.token.clone(),
            seq.clone(),
        );
        let (m, per_op) = point(cx.plan, &cx.probe_pool, Some(pid), c, move || {
            commands::http_create(
                client.clone(),
                base.clone(),
                token.clone(),
                seq.clone(),
                None,
            )
        })
        .await;
        let row = Row::measured("http_create", count(c), &m).costs_of(per_op);
        rows.push(match variant {
            Some(v) => row.variant(v),
            None => row,
        });
    }
}

/// `raw_sql` at the most clients, measured right after the HTTP workload `after`: its ratio to the raw
/// run minutes later shows how far the machine drifted, and the HTTP/raw ratio from the two adjacent
/// windows is the one the drift moves least.
async fn paired_raw_sql(cx: &Ctx<'_>, tag: &str, after: &str) -> Row {
    let c = cx.plan.clients[COMPARED];
    progress(&format!("raw_sql, {c} clients, right after {after}"));
    let seq = Seq::new(cx.nonce, &format!("raw-paired-{tag}"));
    let pool = cx.pool.clone();
    let (m, per_op) = point(cx.plan, &cx.probe_pool, None, c, move || {
        commands::raw_sql(pool.clone(), seq.clone())
    })
    .await;
    Row::measured("raw_sql", count(c), &m)
        .costs_of(per_op)
        .variant(format!("{PAIRED}{after}"))
}

/// How the variant of a paired `raw_sql` row starts.
const PAIRED: &str = "paired: right after ";

/// Pre-writes `pairs` bookings and visits shaped as `shape`, then measures `projector_catchup` over them;
/// returns the row and the number of events.
async fn catch_up_over(
    pool: &sqlx::PgPool,
    pairs: usize,
    shape: projection::Shape,
    label: &str,
) -> Result<(Row, u64)> {
    progress(&format!(
        "pre-writing {} events ({})",
        pairs * 10,
        shape.describe()
    ));
    let events = projection::prewrite(pool, pairs, shape).await?;
    progress(&format!("projector_catchup{label}"));
    let took = projection::catch_up(pool, Duration::from_secs(900)).await?;
    let row = Row {
        ops_per_s: Some(events as f64 / took.as_secs_f64()),
        ops: events,
        ..Row::new("projector_catchup", 1)
    }
    .variant(format!(
        "all 4 projections, one process, {events} events; {}",
        shape.describe()
    ))
    .value(took.as_secs_f64(), "s");
    Ok((row, events))
}

/// The server's transaction-id counter and WAL position.
async fn probe(pool: &sqlx::PgPool) -> Option<(i64, i64)> {
    sqlx::query_as(
        "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// What one operation cost on the server, measured around a whole phase.
#[derive(Debug, Clone, Copy)]
struct PerOp {
    write_tx: Option<f64>,
    wal_bytes: Option<f64>,
    cpu_us: (f64, Option<f64>, f64),
}

/// One point of a command workload: `plan.repeats` windows of `clients` loops of `op`, back to back and
/// each probed, of which the median one (by throughput) is reported, so one noisy window cannot decide a
/// figure.
async fn point<F, Fut>(
    plan: &Plan,
    probe_pool: &sqlx::PgPool,
    server_pid: Option<u32>,
    clients: usize,
    op: F,
) -> (Measured, Option<PerOp>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut windows = Vec::new();
    for _ in 0..plan.repeats.max(1) {
        let window = closed_loop(clients, plan.warmup, plan.window, op.clone());
        windows.push(probed(probe_pool, server_pid, window).await);
    }
    median_window(windows)
}

/// The median of measured windows by throughput (the upper one of an even count), carrying the errors of
/// every window so that none is hidden by the choice.
fn median_window(mut windows: Vec<(Measured, Option<PerOp>)>) -> (Measured, Option<PerOp>) {
    let errors: u64 = windows.iter().map(|(m, _)| m.errors).sum();
    let first_error = windows.iter().find_map(|(m, _)| m.first_error.clone());
    windows.sort_by(|a, b| a.0.ops_per_s().total_cmp(&b.0.ops_per_s()));
    let middle = windows.len() / 2;
    match windows.into_iter().nth(middle) {
        Some((mut m, per_op)) => {
            m.errors = errors;
            m.first_error = m.first_error.or(first_error);
            (m, per_op)
        }
        None => (Measured::default(), None),
    }
}

/// Runs `work` and returns with it the write transactions (transaction ids assigned, server-wide), WAL
/// bytes and CPU time (harness, server process, postgres processes) per successful operation.
async fn probed(
    pool: &sqlx::PgPool,
    server_pid: Option<u32>,
    work: impl std::future::Future<Output = Measured>,
) -> (Measured, Option<PerOp>) {
    let before = probe(pool).await;
    let cpu_before = cpu::now(server_pid);
    let m = work.await;
    let cpu_after = cpu::now(server_pid);
    let after = probe(pool).await;
    if m.all_ok == 0 {
        return (m, None);
    }
    let n = m.all_ok as f64;
    let (write_tx, wal_bytes) = match (before, after) {
        (Some((x0, w0)), Some((x1, w1))) => {
            (Some((x1 - x0) as f64 / n), Some((w1 - w0) as f64 / n))
        }
        _ => (None, None),
    };
    let per_op = PerOp {
        write_tx,
        wal_bytes,
        cpu_us: cpu::per_op(&cpu_before, &cpu_after, m.all_ok),
    };
    (m, Some(per_op))
}

fn count(c: usize) -> u32 {
    u32::try_from(c).unwrap_or(u32::MAX)
}

/// One live-lag run: `http_create` at `rate` commands/s (open loop) against `serve` while a sampler
/// measures how long each newest answered command takes to reach the `bookings` read model.
async fn lag_run(
    pool: sqlx::PgPool,
    http: HttpClient,
    seq: Arc<Seq>,
    rate: f64,
    window: Duration,
    note: &str,
) -> Result<Row> {
    let last: commands::LastWrite = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(projection::sample_lag(pool, last.clone(), stop_rx));
    let m = open_loop(rate, window, 512, move || {
        commands::http_create(
            http.client.clone(),
            http.base.clone(),
            http.token.clone(),
            seq.clone(),
            Some(last.clone()),
        )
    })
    .await;
    let _ = stop_tx.send(true);
    let (lags, timeouts) = sampler
        .await
        .map_err(|e| Error::step("the lag sampler", e))?;
    let lag = Measured {
        ops: lags.len() as u64,
        all_ok: lags.len() as u64,
        errors: timeouts,
        window,
        latencies_us: lags,
        first_error: (timeouts > 0).then(|| format!("{timeouts} samples not applied within 10 s")),
    };
    let mut row = Row::measured("projector_lag", 1, &lag)
        .variant(format!(
            "bookings; {} lag samples; cmd p50 {} ms p99 {} ms{note}",
            lag.ops,
            fmt_ms(m.percentile_ms(50.0)),
            fmt_ms(m.percentile_ms(99.0))
        ))
        .value(m.ops_per_s(), "cmd/s");
    row.ops_per_s = Some(m.ops_per_s());
    row.errors += m.errors;
    if row.first_error.is_none() {
        row.first_error = m.first_error.clone();
    }
    Ok(row)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

/// The targets (issue 17; the load, time-travel and lag ones from issue 8) against this run's rows.
fn targets(rows: &[Row], info: &RunInfo) -> Vec<Target> {
    let ratio = |workload: &str, baseline: &str| {
        rows.iter()
            .find(|r| {
                r.workload == workload
                    && r.clients == 16
                    && r.variant.is_none()
                    && r.baseline.as_deref() == Some(baseline)
            })
            .and_then(|r| r.ratio)
    };
    let variant = |workload: &str, starts: &str| {
        rows.iter().find(|r| {
            r.workload == workload && r.variant.as_deref().is_some_and(|v| v.starts_with(starts))
        })
    };
    let variant_ratio = |workload: &str, starts: &str, baseline: &str| {
        rows.iter()
            .find(|r| {
                r.workload == workload
                    && r.clients == 16
                    && r.variant.as_deref().is_some_and(|v| v.starts_with(starts))
                    && r.baseline.as_deref() == Some(baseline)
            })
            .and_then(|r| r.ratio)
    };
    let at_least = |v: Option<f64>, goal: f64| v.map(|v| v >= goal);
    let at_most = |v: Option<f64>, goal: f64| v.map(|v| v <= goal);
    let x = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}×"));
    let at_clients = |workload: &str, clients: u32, baseline: &str| {
        rows.iter()
            .find(|r| {
                r.workload == workload
                    && r.clients == clients
                    && r.variant.is_none()
                    && r.baseline.as_deref() == Some(baseline)
            })
            .and_then(|r| r.ratio)
    };
    let mut out = Vec::new();
    let r = ratio("http_create", "stock_cqrs_es@16");
    out.push(Target {
        what: "HTTP create through `serve --no-workers` vs stock cqrs-es, 16 clients",
        goal: "≥ 1.0×",
        measured: x(r),
        met: at_least(r, 1.0),
    });
    let r = at_clients("http_create", 64, "stock_cqrs_es@64");
    out.push(Target {
        what: "… 64 clients",
        goal: "≥ 1.5×",
        measured: x(r),
        met: at_least(r, 1.5),
    });
    let r = ratio("http_create", "raw_sql@16");
    out.push(Target {
        what: "HTTP create vs the raw SQL of the same statements, one command per transaction, 16 clients",
        goal: "≥ 1.2×",
        measured: x(r),
        met: at_least(r, 1.2),
    });
    // The same ratios against the raw run right after each HTTP run (adjacent windows).
    let paired = |http: Option<&Row>, after: &str| {
        let raw = rows.iter().find(|r| {
            r.workload == "raw_sql"
                && r.variant
                    .as_deref()
                    .is_some_and(|v| v.strip_prefix(PAIRED) == Some(after))
        });
        match (
            http.and_then(|r| r.ops_per_s),
            raw.and_then(|r| r.ops_per_s),
        ) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    };
    let http_serve = rows
        .iter()
        .find(|r| r.workload == "http_create" && r.clients == 16 && r.variant.is_none());
    let r = paired(http_serve, "`http_create` through `serve`");
    out.push(Target {
        what: "… paired: vs raw SQL run right after it",
        goal: "≥ 1.2×",
        measured: x(r),
        met: at_least(r, 1.2),
    });
    let r = variant_ratio("http_create", API_ALONE, "raw_sql@16");
    out.push(Target {
        what: "… the same through `command-api` alone (no projector in the process)",
        goal: "≥ 1.2×",
        measured: x(r),
        met: at_least(r, 1.2),
    });
    let p50 = rows
        .iter()
        .find(|r| r.workload == "http_create" && r.clients == 1 && r.variant.is_none())
        .and_then(|r| r.p50_ms);
    out.push(Target {
        what: "single-client HTTP create p50 (before issues 16 and 17: 1.39 ms in the full run of 2026-11-30)",
        goal: "≤ 1.39 ms",
        measured: format!("{} ms", fmt_ms(p50)),
        met: at_most(p50, 1.39),
    });
    let r = variant_ratio("http_create", SAGA, "stock_cqrs_es@16");
    out.push(Target {
        what: "default `serve` (workers on: the partner saga per create) vs stock cqrs-es, 16 clients",
        goal: "≥ 0.5×",
        measured: x(r),
        met: at_least(r, 0.5),
    });
    let r = ratio("inproc_create", "stock_cqrs_es@16");
    out.push(Target {
        what: "in-process create (claim + idempotency record) vs stock cqrs-es, 16 clients",
        goal: "≥ 2×",
        measured: x(r),
        met: at_least(r, 2.0),
    });
    let r = variant_ratio("inproc_create", "store only", "stock_cqrs_es@16");
    out.push(Target {
        what: "… the store's execute alone (the slot claim, no record) vs stock cqrs-es",
        goal: "≥ 2×",
        measured: x(r),
        met: at_least(r, 2.0),
    });
    let head = format!("head of {} events, snapshots", info.stream_length);
    let r = variant("long_stream_load", &head).and_then(|r| r.ratio);
    out.push(Target {
        what: "load 10k-event head with snapshots vs 10-event stream (p50)",
        goal: "≤ 2×",
        measured: x(r),
        met: at_most(r, 2.0),
    });
    let v = variant("time_travel", "random version").and_then(|r| r.value);
    out.push(Target {
        what: "time travel: most events applied on top of a snapshot",
        goal: "≤ snapshot interval",
        measured: v.map_or_else(
            || "–".to_owned(),
            |v| format!("{v:.0} (interval {})", info.snapshot_every),
        ),
        met: v.map(|v| v <= info.snapshot_every as f64),
    });
    let r = rows
        .iter()
        .find(|r| r.workload == "projector_catchup")
        .and_then(|r| r.ops_per_s);
    out.push(Target {
        what: "projector catch-up (all four projections in one process)",
        goal: "≥ 50,000 events/s",
        measured: r.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} events/s")),
        met: at_least(r, 50_000.0),
    });
    let lag = rows.iter().find(|r| r.workload == "projector_lag");
    let p99 = lag.and_then(|r| r.p99_ms);
    out.push(Target {
        what: "live lag p99 at 1,000 commands/s",
        goal: "≤ 100 ms",
        measured: format!(
            "{} ms at {} cmd/s",
            fmt_ms(p99),
            lag.and_then(|r| r.value)
                .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
        ),
        met: at_most(p99, 100.0),
    });
    if let Some(half) = rows.iter().find(|r| {
        r.workload == "projector_lag"
            && r.variant
                .as_deref()
                .is_some_and(|v| v.ends_with("half of serve's capacity measured above"))
    }) {
        out.push(Target {
            what: "… at half of serve's measured capacity (no queue in the server)",
            goal: "≤ 100 ms",
            measured: format!(
                "{} ms at {} cmd/s",
                fmt_ms(half.p99_ms),
                half.value
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
            ),
            met: at_most(half.p99_ms, 100.0),
        });
    }
    let rebuild = rows.iter().find(|r| r.workload == "rebuild");
    let estimate = rebuild
        .and_then(|r| r.ops_per_s)
        .map(|rate| 1_000_000.0 / rate);
    out.push(Target {
        what: "rebuild of 1M events",
        goal: "≤ 10 s",
        measured: match rebuild.map(|r| r.ops) {
            Some(n) if n >= 1_000_000 => fmt_s(rebuild.and_then(|r| r.value)),
            Some(n) => format!(
                "{} for {n} events (≈ {} for 1M, extrapolated)",
                fmt_s(rebuild.and_then(|r| r.value)),
                fmt_s(estimate)
            ),
            None => "–".to_owned(),
        },
        met: at_most(estimate, 10.0),
    });
    let rss = rows
        .iter()
        .find(|r| r.workload == "serve_rss_mb")
        .and_then(|r| r.value);
    out.push(Target {
        what: "serve peak RSS under http_create",
        goal: "≤ 150 MB",
        measured: rss.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} MB")),
        met: at_most(rss, 150.0),
    });
    out
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} s"))
}

trait CostsOf {
    fn costs_of(self, per_op: Option<PerOp>) -> Self;
}

impl CostsOf for Row {
    fn costs_of(self, per_op: Option<PerOp>) -> Self {
        match per_op {
            Some(p) => self.costs(p.write_tx, p.wal_bytes, p.cpu_us),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::median_window;
    use crate::load::Measured;
    use std::time::Duration;

    fn window(ops: u64, errors: u64) -> (Measured, Option<super::PerOp>) {
        let m = Measured {
            ops,
            errors,
            first_error: (errors > 0).then(|| format!("error after {ops}")),
            window: Duration::from_secs(1),
            ..Measured::default()
        };
        (m, None)
    }

    #[test]
    fn the_median_window_is_reported_with_every_error() {
        let (m, _) = median_window(vec![window(300, 0), window(100, 2), window(200, 1)]);
        assert_eq!(m.ops, 200);
        assert_eq!(m.errors, 3);
        assert_eq!(m.first_error.as_deref(), Some("error after 200"));
        let (m, _) = median_window(vec![window(100, 0), window(400, 0)]);
        assert_eq!(m.ops, 400, "the upper middle of an even count");
        let (m, _) = median_window(vec![window(50, 0)]);
        assert_eq!(m.ops, 50);
    }
}
