//! The long-running commands: `serve` (every part in one process), `command-api`, `query-api`,
//! `projector`, `workers` and `partner-sim`. Each binds its listeners first (a taken port fails the
//! start, exit 2), announces where it listens (stdout, and the `--ready-file` for scripts and tests),
//! then runs its parts under one [`Supervisor`] until SIGTERM.
//!
//! # Layout
//! - [`Parts`]: which parts a process runs.
//! - `serve`: the REST and GraphQL servers, the simulator, workers and projector of one process.
//! - `run_projector`, `run_workers`, `partner_sim`: the single-part commands.
//! - [`Listening`]: the addresses a process announces.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use service_kit::{chain, secrets, telemetry};
use store::db::Database;
use store::EventStore;

use crate::cli::{DbArgs, MailArgs, PartnerSimArgs, ServeArgs, WorkersArgs};
use crate::db::{store_config, with_migrated_db};
use crate::supervisor::Supervisor;
use crate::{Failure, PARTNER_SECRET_ENV};

/// Which parts of trailbook a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub command_api: bool,
    pub query_api: bool,
    pub projector: bool,
    /// The job workers, and the partner simulator unless a partner URL is given.
    pub workers: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        command_api: true,
        query_api: true,
        projector: true,
        workers: true,
    };
    pub const COMMAND_API: Parts = Parts {
        command_api: true,
        query_api: false,
        projector: false,
        workers: false,
    };
    pub const QUERY_API: Parts = Parts {
        command_api: false,
        query_api: true,
        projector: false,
        workers: false,
    };
}

/// Where a process listens, as written to `--ready-file` (JSON) once every listener is bound.
#[derive(Debug, Default, Serialize)]
pub struct Listening {
    /// The REST command API's base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest: Option<String>,
    /// The GraphQL endpoint's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql: Option<String>,
    /// The partner simulator's base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_simulator: Option<String>,
}

impl Listening {
    /// Prints the URLs for people and, with `ready_file`, writes them as JSON (atomically: a reader
    /// sees the whole file or none).
    fn announce(&self, ready_file: Option<&Path>) -> Result<(), Failure> {
        for (label, url) in [
            ("REST:   ", &self.rest),
            ("GraphQL:", &self.graphql),
            ("partner simulator:", &self.partner_simulator),
        ] {
            if let Some(url) = url {
                tracing::info!(%url, "{} listening", label.trim_end_matches([':', ' ']));
                crate::emit(&format!("trailbook {label} {url}"))?;
            }
        }
        let Some(path) = ready_file else {
            return Ok(());
        };
        let fail = |e: std::io::Error| {
            Failure::other(format!(
                "cannot write the ready file {}: {e}",
                path.display()
            ))
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, json).map_err(fail)?;
        std::fs::rename(&partial, path).map_err(fail)
    }
}

/// `trailbook serve`, `command-api`, `query-api`: the given parts until SIGTERM.
pub async fn serve(db_args: &DbArgs, args: &ServeArgs, parts: Parts) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        let result = serve_until_signal(&db, db_args, args, parts).await;
        (db, result)
    })
    .await
}

fn secret(env: &'static str, db_args: &DbArgs, file: &str) -> Result<Vec<u8>, Failure> {
    secrets::load_or_create(env, &db_args.data_dir, file).map_err(|e| Failure::other(chain(&e)))
}

async fn serve_until_signal(
    db: &Database,
    db_args: &DbArgs,
    args: &ServeArgs,
    parts: Parts,
) -> Result<(), Failure> {
    // Listening from here on, before any server answers (see `shutdown_signal`).
    let signal = telemetry::shutdown_signal();
    let tokens = crate::tokens(&db_args.data_dir)?;
    let store = EventStore::new(db.pool.clone(), store_config(db_args))
        .with_notifier(store::notify::CommitNotifier::spawn(db.pool.clone()));
    let partners = args.partners.load()?;

    // Bind every listener before starting anything, so a taken port fails the start cleanly.
    let command = match parts.command_api {
        true => Some(bind(args.command_addr, "--command-addr").await?),
        false => None,
    };
    let query = match parts.query_api {
        true => Some(bind(args.query_addr, "--query-addr").await?),
        false => None,
    };
    let partner = match parts.workers && args.partner_url.is_none() {
        true => Some(bind(args.partner_addr, "--partner-addr").await?),
        false => None,
    };
    let command_local = command.as_ref().map(local_addr).transpose()?;
    let listening = Listening {
        rest: command_local.map(|local| format!("http://{local}")),
        graphql: query
            .as_ref()
            .map(local_addr)
            .transpose()?
            .map(|local| format!("http://{local}/graphql")),
        partner_simulator: partner
            .as_ref()
            .map(local_addr)
            .transpose()?
            .map(|local| format!("http://{local}")),
    };

    let mut parts_running = Supervisor::new();
    if let Some(listener) = command {
        let partner_secret = secret(PARTNER_SECRET_ENV, db_args, "partner-secret")?;
        let config = command_api::Config {
            idempotency_ttl: chrono::Duration::hours(i64::from(args.api.idempotency_ttl_hours)),
            rate_limit: args.api.rate_limit,
            anonymous_rate_limit: args.api.anonymous_rate_limit,
            max_in_flight: args.api.max_in_flight,
            partners: partners.as_ref().map(|file| {
                Arc::new(file.partners.iter().fold(
                    command_api::PartnerDirectory::default(),
                    |directory, (name, settings)| {
                        directory.with(
                            name.clone(),
                            settings.callback_secret.as_deref().map(str::as_bytes),
                        )
                    },
                ))
            }),
            ..command_api::Config::default()
        };
        let state =
            command_api::AppState::new(store.clone(), tokens.clone(), &partner_secret, config);
        let purger = tokio::spawn(command_api::idempotency::purge_periodically(
            db.pool.clone(),
        ));
        let stopped = parts_running.stopped();
        parts_running.spawn("REST server", async move {
            // `into_make_service`: the router is prepared once and shared by every connection; a bare
            // `Router` is cloned and re-prepared per connection (about 75 KB each: 1,000 keep-alive
            // clients took 75 MB).
            // With the peer address: unverified requests are charged to it (`service_kit::limits`).
            let app = command_api::app(state).into_make_service_with_connect_info::<SocketAddr>();
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
            purger.abort();
            served.map_err(|e| e.to_string())
        });
    }
    if let Some(listener) = query {
        let stuck_rules = match args.query.stuck_rules.as_deref() {
            Some(list) => projector::StuckRule::parse_list(list)
                .map_err(|e| Failure::usage(format!("TRAILBOOK_STUCK_RULES: {e}")))?,
            None => projector::StuckRule::defaults(),
        };
        let config = query_api::Config {
            min_position_timeout: std::time::Duration::from_millis(
                args.query.min_position_timeout_ms,
            ),
            max_page_size: args.query.max_page_size,
            max_waits_per_subject: args.query.max_waits_per_subject as usize,
            rate_limit: args.api.rate_limit,
            anonymous_rate_limit: args.api.anonymous_rate_limit,
            stuck_rules,
            ..query_api::Config::default()
        };
        let limits = service_kit::Limits::new(
            config.rate_limit,
            config.anonymous_rate_limit,
            config.max_waits_per_subject,
        );
        let schema = query_api::schema(store.clone(), config, limits.clone());
        let app = query_api::app(schema, tokens.clone(), limits);
        let stopped = parts_running.stopped();
        parts_running.spawn("GraphQL server", async move {
            // With the peer address: unverified requests are charged to it (`service_kit::limits`).
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|e| e.to_string())
        });
    }
    if parts.workers {
        let partner_url = match (partner, &args.partner_url) {
            (Some(listener), _) => {
                let url = listening.partner_simulator.clone().unwrap_or_default();
                let config = simulator::SimConfig {
                    callback_url: command_local
                        .map(|addr| format!("http://{addr}/v1/partner/callbacks")),
                    payment_webhook_url: command_local
                        .map(|addr| format!("http://{addr}/v1/payments/webhooks")),
                    secret: secret(PARTNER_SECRET_ENV, db_args, "partner-secret")?,
                    ..simulator::SimConfig::default()
                };
                let stopped = parts_running.stopped();
                parts_running.spawn("partner simulator", async move {
                    simulator::serve(listener, config, stopped)
                        .await
                        .map_err(|e| chain(&e))
                });
                url
            }
            (None, Some(url)) => url.clone(),
            (None, None) => workers::service::ServiceConfig::default().partner_url,
        };
        let pool = db.pool.clone();
        let config = service_config(db_args, partner_url, partners, &args.mail)?;
        let stopped = parts_running.stopped();
        parts_running.spawn("workers", async move {
            workers::service::run(pool, config, stopped)
                .await
                .map_err(|e| chain(&e))
        });
    }
    if parts.projector {
        let pool = db.pool.clone();
        let stopped = parts_running.stopped();
        parts_running.spawn("projector", async move {
            projector::run(pool, projector::Config::default(), stopped)
                .await
                .map_err(|e| chain(&e))
        });
    }
    listening.announce(args.ready_file.as_deref())?;
    parts_running.run(signal).await.map_err(Failure::other)
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {addr} ({flag}): {e}")))
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Failure> {
    listener
        .local_addr()
        .map_err(|e| Failure::usage(format!("cannot read the listening address: {e}")))
}

/// The workers' configuration, checked (mail settings) so that a mistake is exit 2 before anything runs.
fn service_config(
    db_args: &DbArgs,
    partner_url: String,
    partners: Option<workers::partners::PartnersFile>,
    mail: &MailArgs,
) -> Result<workers::service::ServiceConfig, Failure> {
    let config = workers::service::ServiceConfig {
        partner_url,
        partners,
        store: store_config(db_args),
        data_dir: db_args.data_dir.clone(),
        mail: workers::service::MailConfig {
            smtp_url: mail.smtp_url.clone(),
            from: mail.mail_from.clone(),
            timeout_after_success: mail.mail_timeout_after_success,
            ..workers::service::MailConfig::default()
        },
        ..workers::service::ServiceConfig::default()
    };
    config
        .mail
        .from_mailbox()
        .and_then(|_| config.mail.mailer(&config.data_dir))
        .map_err(|e| Failure::usage(chain(&e)))?;
    Ok(config)
}

/// `trailbook projector`: every projection's runner, until SIGTERM.
pub async fn run_projector(db_args: &DbArgs) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        tracing::info!("projector running");
        let result = projector::run(
            db.pool.clone(),
            projector::Config::default(),
            telemetry::shutdown_signal(),
        )
        .await
        .map_err(|e| Failure::other(chain(&e)));
        (db, result)
    })
    .await
}

/// `trailbook workers`: the reactor and the job handlers alone, until SIGTERM.
pub async fn run_workers(db_args: &DbArgs, args: &WorkersArgs) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        tracing::info!(partner_url = %args.partner_url, "workers running");
        let config = args.partners.load().and_then(|partners| {
            service_config(db_args, args.partner_url.clone(), partners, &args.mail)
        });
        let config = match config {
            Ok(config) => config,
            Err(e) => return (db, Err(e)),
        };
        let result = workers::service::run(db.pool.clone(), config, telemetry::shutdown_signal())
            .await
            .map_err(|e| Failure::other(chain(&e)));
        (db, result)
    })
    .await
}

/// `trailbook partner-sim`: the simulator alone, until SIGTERM.
pub async fn partner_sim(db_args: &DbArgs, args: &PartnerSimArgs) -> Result<(), Failure> {
    let secret = secret(PARTNER_SECRET_ENV, db_args, "partner-secret")?;
    let listener = bind(args.addr, "--addr").await?;
    let listening = Listening {
        partner_simulator: Some(format!("http://{}", local_addr(&listener)?)),
        ..Listening::default()
    };
    let config = simulator::SimConfig {
        callback_url: Some(args.callback_url.clone()),
        payment_webhook_url: Some(args.payment_webhook_url.clone()),
        secret,
        faults: args.faults.faults(),
        ..simulator::SimConfig::default()
    };
    listening.announce(args.ready_file.as_deref())?;
    simulator::serve(listener, config, telemetry::shutdown_signal())
        .await
        .map_err(|e| Failure::other(chain(&e)))
}
