//! The parts of one process as supervised tasks: the first of a signal or a part ending stops every
//! part; parts still running [`SHUTDOWN_GRACE`] after the stop are aborted; the failures are reported
//! together.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the parts of a process get to finish after SIGTERM before they are aborted.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// One stop for every part of a process.
#[derive(Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Stop {
    fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the process is stopping.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// The running parts of a process.
pub struct Supervisor {
    stop: Stop,
    tasks: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            stop: Stop::new(),
            tasks: Vec::new(),
        }
    }

    /// A future that resolves when the process stops, for a part's graceful shutdown.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stop.stopped()
    }

    /// Runs part `name` as a task; its `Err` is the process's failure.
    pub fn spawn(
        &mut self,
        name: &'static str,
        part: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        self.tasks.push((name, tokio::spawn(part)));
    }

    /// Waits for every part: the first of `signal` or a part ending stops them all. `Err` joins the
    /// failures of the parts that failed.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let Self { stop, tasks } = self;
        let on_signal = {
            let stop = stop.clone();
            tokio::spawn(async move {
                signal.await;
                stop.stop();
            })
        };
        // Open WebSockets (GraphQL subscriptions) and slow clients would hold a graceful shutdown
        // forever: parts still running after the grace period are aborted.
        let aborts: Vec<_> = tasks.iter().map(|(_, task)| task.abort_handle()).collect();
        let watchdog = {
            let stopped = stop.stopped();
            tokio::spawn(async move {
                stopped.await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                tracing::warn!(
                    "parts still running after the shutdown grace period; aborting them"
                );
                for abort in aborts {
                    abort.abort();
                }
            })
        };
        let mut failures = Vec::new();
        let mut pending: FuturesUnordered<_> = tasks
            .into_iter()
            .map(|(name, task)| async move { (name, task.await) })
            .collect();
        while let Some((name, outcome)) = pending.next().await {
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("the {name} failed: {e}")),
                Err(e) if e.is_cancelled() => {
                    tracing::warn!(part = name, "aborted after the shutdown grace period");
                    None
                }
                Err(e) => Some(format!("the {name} task failed: {e}")),
            };
            if let Some(failure) = failure {
                tracing::error!(error = %failure, "stopping");
                failures.push(failure);
            }
            stop.stop();
        }
        on_signal.abort();
        watchdog.abort();
        match failures.is_empty() {
            true => Ok(()),
            false => Err(failures.join("; ")),
        }
    }
}
