//! `trailbook` as a library: the command line ([`Cli`]) and what each subcommand runs ([`run`]). The
//! binary (`src/main.rs`) only parses, sets up logging and the runtime, and turns a [`Failure`] into
//! an exit code. Everything here is wiring: the work is done by the crates below.
//!
//! # Layout
//! - `cli`: every subcommand and flag (clap).
//! - `serve`: the long-running commands (`serve`, `command-api`, `query-api`, `projector`, `workers`,
//!   `partner-sim`) and the `--ready-file`; `supervisor`: the parts of one process.
//! - `db`: opening, migrating and closing the database of a command.
//! - `history`, `projections`, `commands`: the one-shot commands (`history`, `projections`, `jobs`,
//!   `bookings`, `token`).
//! - `failure`: [`Failure`] (message and exit code) and [`emit`].
#![forbid(unsafe_code)]

pub mod cli;
mod commands;
mod db;
mod failure;
mod history;
mod projections;
mod serve;
mod supervisor;

pub use cli::Cli;
pub use failure::{emit, Failure};
pub use serve::Listening;

use cli::Command;
use db::{open, store_config, with_migrated_db};
use serve::Parts;
use store::EventStore;

/// The environment variable of the bearer tokens' secret (else `<data dir>/jwt-secret`).
pub const JWT_SECRET_ENV: &str = "TRAILBOOK_JWT_SECRET";
/// The environment variable of secrets being rotated out, comma-separated: tokens they signed are still
/// accepted until they expire; new tokens are signed with `TRAILBOOK_JWT_SECRET` (README, "Tokens").
pub const JWT_PREVIOUS_SECRETS_ENV: &str = "TRAILBOOK_JWT_PREVIOUS_SECRETS";

/// The token keys: the current secret (environment or data dir) and the previous ones being rotated
/// out. A secret shorter than 32 bytes is refused with exit code 2, naming the setting.
pub(crate) fn tokens(data_dir: &std::path::Path) -> Result<service_kit::Tokens, Failure> {
    let current = service_kit::secrets::load_or_create(JWT_SECRET_ENV, data_dir, "jwt-secret")
        .map_err(|e| Failure::other(service_kit::chain(&e)))?;
    let previous = std::env::var(JWT_PREVIOUS_SECRETS_ENV).unwrap_or_default();
    let previous: Vec<&[u8]> = previous
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::as_bytes)
        .collect();
    service_kit::Tokens::rotating(&current, &previous).map_err(|e| {
        Failure::usage(format!(
            "{e} ({JWT_SECRET_ENV} / {JWT_PREVIOUS_SECRETS_ENV}); generate one with `openssl rand -hex 32`"
        ))
    })
}

/// The environment variable of the partner callbacks' shared secret (else `<data dir>/partner-secret`).
pub const PARTNER_SECRET_ENV: &str = "TRAILBOOK_PARTNER_SECRET";

/// Runs the parsed command line to its end (for the long-running commands: until SIGTERM).
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let db = &cli.db;
    match cli.command {
        Command::Serve(args) => {
            let parts = Parts {
                workers: !args.no_workers,
                ..Parts::ALL
            };
            serve::serve(db, &args, parts).await
        }
        Command::CommandApi(args) => serve::serve(db, &args, Parts::COMMAND_API).await,
        Command::QueryApi(args) => serve::serve(db, &args, Parts::QUERY_API).await,
        Command::Projector => serve::run_projector(db).await,
        Command::Workers(args) => serve::run_workers(db, &args).await,
        Command::PartnerSim(args) => serve::partner_sim(db, &args).await,
        Command::Migrate => {
            let opened = open(db).await?;
            let result = store::db::migrate(&opened.pool).await;
            opened.close().await;
            result?;
            emit("migrations applied")
        }
        Command::History(args) => {
            let opened = open(db).await?;
            let store = EventStore::new(opened.pool.clone(), store_config(db));
            let result = history::print(&store, &args).await;
            opened.close().await;
            result
        }
        Command::Projections(args) => {
            with_migrated_db(db, |opened| async move {
                let result = projections::run(&opened.pool, args.action).await;
                (opened, result)
            })
            .await
        }
        Command::Jobs(args) => {
            with_migrated_db(db, |opened| async move {
                let result = commands::jobs(&opened.pool, args.action).await;
                (opened, result)
            })
            .await
        }
        Command::Bookings(args) => {
            let config = store_config(db);
            with_migrated_db(db, |opened| async move {
                let store = EventStore::new(opened.pool.clone(), config);
                let result = commands::bookings(&store, args.action).await;
                (opened, result)
            })
            .await
        }
        Command::Token(args) => commands::token(&db.data_dir, &args),
    }
}
