//! The results: rows, ratios to the baselines of the same run, the stdout table, `--json`, and
//! `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::db::Settings;
use crate::error::{Context, Result};
use crate::load::Measured;

/// One figure. The first seven fields are the issue's JSON contract; the rest add context.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub clients: u32,
    pub ops_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The row this one is compared with (`<workload>@<clients>` or a variant), if any.
    pub baseline: Option<String>,
    /// Throughput ratio (ops/s ÷ baseline ops/s), or for loads and time travel the p50 latency ratio
    /// (p50 ÷ baseline p50): see `ratio_kind`.
    pub ratio: Option<f64>,
    /// `throughput` or `p50_latency`.
    pub ratio_kind: Option<&'static str>,
    /// Which flavour of the workload (stream, projection set, ...).
    pub variant: Option<String>,
    pub max_ms: Option<f64>,
    /// A single value where ops/s says nothing (MB of RSS, seconds of rebuild, max events applied).
    pub value: Option<f64>,
    pub unit: Option<&'static str>,
    /// Write transactions (transaction ids assigned on the whole server) per successful operation.
    pub write_tx_per_op: Option<f64>,
    /// WAL bytes written (whole server) per successful operation.
    pub wal_bytes_per_op: Option<f64>,
    /// CPU time per successful operation, in microseconds.
    pub cpu_us_per_op: Option<CpuPerOp>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// CPU microseconds per operation: this harness (load generator, and the command path itself when
/// in-process), the trailbook server process (HTTP workloads), every `postgres` process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerOp {
    pub harness: f64,
    pub server: Option<f64>,
    pub postgres: f64,
}

fn cpu(row: &Row) -> String {
    row.cpu_us_per_op.map_or_else(String::new, |c| {
        format!(
            "{:.0}/{}/{:.0}",
            c.harness,
            c.server
                .map_or_else(|| "–".to_owned(), |s| format!("{s:.0}")),
            c.postgres
        )
    })
}

impl Row {
    pub fn new(workload: &'static str, clients: u32) -> Self {
        Self {
            workload,
            clients,
            ops_per_s: None,
            p50_ms: None,
            p99_ms: None,
            baseline: None,
            ratio: None,
            ratio_kind: None,
            variant: None,
            max_ms: None,
            value: None,
            unit: None,
            write_tx_per_op: None,
            wal_bytes_per_op: None,
            cpu_us_per_op: None,
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn measured(workload: &'static str, clients: u32, m: &Measured) -> Self {
        Self {
            ops_per_s: Some(m.ops_per_s()),
            p50_ms: m.percentile_ms(50.0),
            p99_ms: m.percentile_ms(99.0),
            max_ms: m.max_ms(),
            ops: m.ops,
            errors: m.errors,
            first_error: m.first_error.clone(),
            ..Self::new(workload, clients)
        }
    }

    pub fn variant(mut self, variant: impl Into<String>) -> Self {
        self.variant = Some(variant.into());
        self
    }

    /// Server-side costs per operation: write transactions, WAL bytes, CPU µs (harness, server, postgres).
    pub fn costs(
        mut self,
        write_tx: Option<f64>,
        wal_bytes: Option<f64>,
        cpu_us: (f64, Option<f64>, f64),
    ) -> Self {
        self.write_tx_per_op = write_tx;
        self.wal_bytes_per_op = wal_bytes;
        self.cpu_us_per_op = Some(CpuPerOp {
            harness: cpu_us.0,
            server: cpu_us.1,
            postgres: cpu_us.2,
        });
        self
    }

    pub fn value(mut self, value: f64, unit: &'static str) -> Self {
        self.value = Some(value);
        self.unit = Some(unit);
        self
    }
}

/// Everything about a run that BENCHMARKS.md states besides the rows.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// `git describe --always --dirty` where the harness ran.
    pub revision: String,
    pub quick: bool,
    pub command: String,
    pub date: String,
    pub duration_s: f64,
    pub nproc: usize,
    pub memory: String,
    pub cpu: String,
    pub load_before: String,
    pub server: String,
    pub settings: Settings,
    pub window_s: f64,
    pub warmup_s: f64,
    /// Windows per point of a command workload (the median one is reported).
    pub repeats: u32,
    pub lag_rate: f64,
    pub projector_events: u64,
    pub stream_length: u64,
    pub snapshot_every: u64,
}

/// Adds the comparison rows: http and inproc against raw_sql, http against stock_cqrs_es, per clients;
/// the store-only in-process variant against stock cqrs-es; the one-statement raw variant against raw_sql.
pub fn add_ratios(rows: &mut Vec<Row>) {
    let snapshot: Vec<Row> = rows.clone();
    let find = |workload: &str, clients: u32| {
        snapshot
            .iter()
            .find(|r| {
                r.workload == workload
                    && r.clients == clients
                    && r.variant.is_none()
                    && r.baseline.is_none()
            })
            .and_then(|r| r.ops_per_s)
    };
    let mut extra = Vec::new();
    for row in rows.iter_mut() {
        let baselines: &[&str] = match (row.workload, row.variant.is_some()) {
            ("http_create", _) => &["raw_sql", "stock_cqrs_es"],
            ("inproc_create", false) => &["raw_sql", "stock_cqrs_es"],
            ("inproc_create", true) => &["stock_cqrs_es"],
            ("raw_sql", true) => &["raw_sql"],
            _ => continue,
        };
        for (i, baseline) in baselines.iter().enumerate() {
            let ratio = match (row.ops_per_s, find(baseline, row.clients)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let label = Some(format!("{baseline}@{}", row.clients));
            if i == 0 {
                row.baseline = label;
                row.ratio = ratio;
                row.ratio_kind = Some("throughput");
            } else {
                let mut copy = row.clone();
                copy.baseline = label;
                copy.ratio = ratio;
                copy.ratio_kind = Some("throughput");
                extra.push(copy);
            }
        }
    }
    rows.extend(extra);
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

fn ops(v: Option<f64>) -> String {
    v.map_or_else(
        || "–".to_owned(),
        |v| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        },
    )
}

fn ratio(row: &Row) -> String {
    match (row.ratio, row.ratio_kind) {
        (Some(r), Some("p50_latency")) => format!("{r:.2}× latency"),
        (Some(r), _) => format!("{r:.2}×"),
        (None, _) => "–".to_owned(),
    }
}

fn value(row: &Row) -> String {
    match (row.value, row.unit) {
        (Some(v), Some(unit)) => format!("{v:.1} {unit}"),
        _ => String::new(),
    }
}

/// The table printed on stdout.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<46} {:>3} {:>9} {:>8} {:>8} {:>8} {:<17} {:>14} {:>12} {:>6} {:>7} {:>15} {:>4}",
        "workload",
        "variant",
        "c",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "baseline",
        "ratio",
        "value",
        "tx/op",
        "WAL/op",
        "CPU us/op h/s/pg",
        "err"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<18} {:<46} {:>3} {:>9} {:>8} {:>8} {:>8} {:<17} {:>14} {:>12} {:>6} {:>7} {:>15} {:>4}",
            r.workload,
            r.variant.as_deref().unwrap_or(""),
            r.clients,
            ops(r.ops_per_s),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            num(r.max_ms, 1),
            r.baseline.as_deref().unwrap_or(""),
            ratio(r),
            value(r),
            num(r.write_tx_per_op, 2),
            num(r.wal_bytes_per_op, 0),
            cpu(r),
            r.errors
        );
    }
    out
}

pub fn write_json(path: &Path, rows: &[Row]) -> Result<()> {
    let text = serde_json::to_string_pretty(rows).context("serializing the results")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Marks the start of hand-written notes in BENCHMARKS.md, which a new run keeps.
pub const NOTES_MARKER: &str =
    "<!-- hand-written notes below: kept when the harness rewrites this file -->";

/// One target, as measured.
pub struct Target {
    pub what: &'static str,
    pub goal: &'static str,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn write_markdown(path: &Path, info: &RunInfo, rows: &[Row], targets: &[Target]) -> Result<()> {
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| old.find(NOTES_MARKER).map(|at| old[at..].to_owned()));
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    if info.quick {
        let _ = writeln!(
            md,
            "> **Quick run (`--quick`): short windows ({:.1} s per point after {:.2} s of warm-up), a small \
             projector log, on a 2-core machine shared with other work (compiles and test runs) while it \
             ran. These figures are noisy and only show the shape; a full run is pending.**\n",
            info.window_s, info.warmup_s
        );
    } else {
        let _ = writeln!(
            md,
            "Full run: each point of a command workload is the median of {} windows of {:.0} s, each after \
             {:.0} s of warm-up.\n",
            info.repeats, info.window_s, info.warmup_s
        );
    }
    let _ = writeln!(
        md,
        "Produced by the harness in `bench/` (issue 8); every ratio compares two figures of this same run, \
         so machine noise largely cancels in it. Reproduce with:\n\n```sh\ncargo build --release -p trailbook\n\
         cargo run --release -p trailbook-bench -- {}[--json results.json]\n```\n",
        if info.quick { "--quick " } else { "" }
    );
    let _ = writeln!(md, "## This run\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| date (UTC) | {} (took {:.0} s) |",
        info.date, info.duration_s
    );
    let _ = writeln!(md, "| command | `{}` |", info.command);
    let _ = writeln!(
        md,
        "| tree | `{}` (the `trailbook` binary and the harness are built from the tree as it was at their \
         build) |",
        info.revision
    );
    let _ = writeln!(md, "| CPU | {} × {} |", info.nproc, info.cpu);
    let _ = writeln!(md, "| memory | {} |", info.memory);
    let _ = writeln!(md, "| load average before the run | {} |", info.load_before);
    let _ = writeln!(
        md,
        "| PostgreSQL | {} on {} |",
        info.settings.version, info.server
    );
    let _ = writeln!(
        md,
        "| durability | fsync = {}, synchronous_commit = {}, full_page_writes = {}, wal_sync_method = {} |",
        info.settings.fsync,
        info.settings.synchronous_commit,
        info.settings.full_page_writes,
        info.settings.wal_sync_method
    );
    let _ = writeln!(
        md,
        "| other settings | shared_buffers = {}, max_connections = {} |",
        info.settings.shared_buffers, info.settings.max_connections
    );
    let _ = writeln!(
        md,
        "| sizes | windows {:.1} s (+{:.2} s warm-up), the median of {} per command point; projector log {} \
         events; long stream {} events, snapshot every {}; live lag at {:.0} commands/s |\n",
        info.window_s,
        info.warmup_s,
        info.repeats,
        info.projector_events,
        info.stream_length,
        info.snapshot_every,
        info.lag_rate
    );

    let _ = writeln!(
        md,
        "## Targets (issue 17; load, time travel and lag from issue 8)\n"
    );
    let _ = writeln!(md, "| target | goal | measured | |\n|---|---|---|---|");
    for t in targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "n/a",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what, t.goal, t.measured, mark
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## Figures\n");
    let _ = writeln!(
        md,
        "`c` = concurrent clients. Ratios: throughput ÷ the baseline's throughput at the same `c`, except \
         where marked \"latency\" (p50 ÷ the baseline's p50). Rows with a baseline appear once per baseline.\n"
    );
    let _ = writeln!(
        md,
        "| workload | variant | c | ops/s | p50 ms | p99 ms | max ms | baseline | ratio | value | write tx/op | WAL B/op | CPU µs/op harness/server/pg | errors |\n\
         |---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.variant.as_deref().unwrap_or(""),
            r.clients,
            ops(r.ops_per_s),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            num(r.max_ms, 1),
            r.baseline.as_deref().unwrap_or(""),
            ratio(r),
            value(r),
            num(r.write_tx_per_op, 2),
            num(r.wal_bytes_per_op, 0),
            cpu(r),
            r.errors
        );
    }
    let errors: Vec<&Row> = rows.iter().filter(|r| r.first_error.is_some()).collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nFirst error of each workload that had one:\n");
        for r in errors {
            let _ = writeln!(
                md,
                "- {} (c={}): {}",
                r.workload,
                r.clients,
                r.first_error.as_deref().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(md, "\n{}", include_str!("method.md"));
    match kept {
        Some(notes) => md.push_str(&notes),
        None => {
            let _ = writeln!(md, "{NOTES_MARKER}");
        }
    }
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}
