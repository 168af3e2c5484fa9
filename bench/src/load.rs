//! Load drivers: closed loop (N clients, each sending its next request when the last one answered) and
//! open loop (a fixed arrival rate), both measuring per-operation latency.
//!
//! An operation counts when it started after the warm-up and finished before the end of the window, so
//! throughput is `counted / window` and no partial operation at either edge skews it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::error::Result;

/// What one load phase measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Operations that started and finished inside the window.
    pub ops: u64,
    /// Operations that failed (anywhere in the run, warm-up included).
    pub errors: u64,
    /// Operations that succeeded anywhere in the run, warm-up and edges included (for per-operation
    /// costs measured around the whole run).
    pub all_ok: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Length of the measuring window.
    pub window: Duration,
    /// Latency of every counted operation, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl Measured {
    pub fn ops_per_s(&self) -> f64 {
        if self.window.is_zero() {
            return 0.0;
        }
        self.ops as f64 / self.window.as_secs_f64()
    }

    /// The `p`-th percentile (0..=100) of the latencies, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile_ms(&self.latencies_us, p)
    }

    pub fn max_ms(&self) -> Option<f64> {
        self.latencies_us.iter().max().map(|us| *us as f64 / 1000.0)
    }

    fn merge(&mut self, other: Measured) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.all_ok += other.all_ok;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Nearest-rank percentile of unsorted microsecond samples, in milliseconds.
pub fn percentile_ms(samples_us: &[u64], p: f64) -> Option<f64> {
    if samples_us.is_empty() {
        return None;
    }
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index] as f64 / 1000.0)
}

/// `clients` concurrent loops of `op` for `warmup` (not counted) then `window` (counted).
pub async fn closed_loop<F, Fut>(
    clients: usize,
    warmup: Duration,
    window: Duration,
    op: F,
) -> Measured
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let begin = Instant::now();
    let start = begin + warmup;
    let end = start + window;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut mine = Measured::default();
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let outcome = op().await;
                    let t1 = Instant::now();
                    if outcome.is_ok() {
                        mine.all_ok += 1;
                    }
                    match outcome {
                        Ok(()) if t0 >= start && t1 <= end => {
                            mine.ops += 1;
                            mine.latencies_us.push(micros(t1 - t0));
                        }
                        Ok(()) => {}
                        Err(e) => {
                            mine.errors += 1;
                            if mine.first_error.is_none() {
                                mine.first_error = Some(e.to_string());
                            }
                            // A failing target should not be hammered in a tight loop.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut total = Measured {
        window,
        ..Measured::default()
    };
    for task in tasks {
        match task.await {
            Ok(part) => total.merge(part),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total
}

/// `op` started at a fixed `rate` per second for `window` (whether or not earlier ones finished), with at
/// most `max_in_flight` outstanding; when that bound is hit the rate drops, which the result shows.
pub async fn open_loop<F, Fut>(rate: f64, window: Duration, max_in_flight: usize, op: F) -> Measured
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let end = start + window;
    let mut tasks = Vec::new();
    loop {
        ticker.tick().await;
        if Instant::now() >= end {
            break;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let outcome = op().await;
            (outcome, micros(t0.elapsed()))
        }));
    }
    let mut total = Measured {
        window,
        ..Measured::default()
    };
    for task in tasks {
        match task.await {
            Ok((Ok(()), us)) => {
                total.ops += 1;
                total.all_ok += 1;
                total.latencies_us.push(us);
            }
            Ok((Err(e), _)) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest rank: p50 of 1..=100 is 50, p99 is 99, p100 the maximum; no samples, no percentile.
    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&samples, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&samples, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&samples, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }
}
