//! Logging set-up and the shutdown signal of every trailbook process.

use tracing_subscriber::EnvFilter;

/// Logs to stderr: `info` for long-running services, `warn` for one-shot commands (so their output stays
/// readable), overridable with `RUST_LOG`; JSON lines when `TRAILBOOK_LOG_FORMAT=json`.
pub fn init(service: bool) {
    let default = if service { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("TRAILBOOK_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: logging not initialised: {e}");
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not on the first poll: a process that already answers requests must not die of
    // the default action of a SIGTERM that arrives before the task awaiting this future first runs
    // (seen in CI: serve killed by an early SIGTERM, its private cluster left running).
    #[cfg(unix)]
    let (terminate, interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |registered: std::io::Result<tokio::signal::unix::Signal>, name: &str| {
                let name = name.to_owned();
                async move {
                    match registered {
                        Ok(mut signal) => {
                            signal.recv().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for {name}");
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wait(terminate, "SIGTERM") => {},
                () = wait(interrupt, "SIGINT") => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    }
}
