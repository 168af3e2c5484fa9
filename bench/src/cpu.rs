//! CPU time of the processes of a run, from `/proc/<pid>/stat`: this harness (the load generator, plus
//! the command path itself in the in-process workloads), the trailbook server, and every `postgres`
//! process on the machine (on a private cluster, only the run's own).

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU time used so far, in clock ticks.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub bench: u64,
    pub server: Option<u64>,
    /// Per `postgres` process, so a backend that exits during a phase (a stopped server's pool) does
    /// not subtract its whole life's CPU time from the phase.
    pub postgres: HashMap<u32, u64>,
}

/// utime + stime of one `/proc/<pid>/stat` line, and the command name.
fn parse(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the command: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn ticks_of(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&stat).map(|(_, t)| t)
}

fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, ticks) = parse(&stat)?;
            (comm == "postgres").then_some((pid, ticks))
        })
        .collect()
}

pub fn now(server_pid: Option<u32>) -> Cpu {
    Cpu {
        bench: ticks_of("self").unwrap_or_default(),
        server: server_pid.and_then(|pid| ticks_of(&pid.to_string())),
        postgres: postgres_ticks(),
    }
}

/// Microseconds of CPU per operation between two readings: (harness, server, postgres).
pub fn per_op(before: &Cpu, after: &Cpu, ops: u64) -> (f64, Option<f64>, f64) {
    let us = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e6 / ops.max(1) as f64;
    (
        us(after.bench.saturating_sub(before.bench)),
        match (before.server, after.server) {
            (Some(b), Some(a)) => Some(us(a.saturating_sub(b))),
            _ => None,
        },
        us(after
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0)))
            .sum()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are summed, and a command name with spaces and parentheses is handled.
    #[test]
    fn parses_a_stat_line() {
        let line = "123 (post gres) S 1 123 123 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse(line), Some(("post gres", 100)));
    }
}
