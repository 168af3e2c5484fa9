//! `trailbook`: the command-line entry point. Wiring only: parse the command line, set up logging, open
//! the database, and hand over to the crates that do the work.
#![forbid(unsafe_code)]

mod history;
mod projections;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use domain::values::Role;
use store::db::{Database, PoolConfig};
use store::{EventStore, StoreConfig};

const JWT_SECRET_ENV: &str = "TRAILBOOK_JWT_SECRET";
const PARTNER_SECRET_ENV: &str = "TRAILBOOK_PARTNER_SECRET";
/// How long the parts of a process get to finish after SIGTERM before they are aborted.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// An event-sourced CQRS engine for booking and care-workflow systems, on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "trailbook", version, about)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the data lives.
#[derive(Debug, Args)]
struct DbArgs {
    /// PostgreSQL URL. Without it, trailbook starts (or reuses) a private cluster under the data dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Directory for trailbook's own files (the private PostgreSQL cluster, secrets, documents).
    #[arg(
        long,
        env = "TRAILBOOK_DATA_DIR",
        default_value = ".trailbook",
        global = true
    )]
    data_dir: PathBuf,

    /// Largest number of database connections this process opens.
    #[arg(
        long,
        env = "TRAILBOOK_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    db_max_connections: u32,

    /// Write a snapshot whenever a stream crosses a multiple of this many events (0 disables them).
    #[arg(
        long,
        env = "TRAILBOOK_SNAPSHOT_EVERY",
        default_value_t = 50,
        global = true
    )]
    snapshot_every: u64,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // `command-api` is the contract's subcommand name
enum Command {
    /// Run everything in one process: REST, GraphQL, projector and workers.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print an aggregate's state and its events, now or at a past version or time.
    History(HistoryArgs),
    /// Run only the REST command service.
    CommandApi(ServeArgs),
    /// Run only the GraphQL query service.
    QueryApi(ServeArgs),
    /// Run only the projector (any number may run: one leads each projection, the others stand by).
    Projector,
    /// Run only the job workers (reactor and handlers; any number may run).
    Workers(WorkersArgs),
    /// Run the partner simulator (reservations, payments and callbacks, with injectable faults).
    PartnerSim(PartnerSimArgs),
    /// Show each projection's position and lag, or rebuild one.
    Projections(ProjectionsArgs),
    /// List jobs, or replay a failed or dead one.
    Jobs(JobsArgs),
    /// Operator actions on bookings: resolve one that no automatic path can settle.
    Bookings(BookingsArgs),
    /// Print a bearer token for development use (signed with the configured secret).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address of the REST command API.
    #[arg(long, env = "TRAILBOOK_COMMAND_ADDR", default_value = "127.0.0.1:8080")]
    command_addr: SocketAddr,
    /// Address of the GraphQL query API.
    #[arg(long, env = "TRAILBOOK_QUERY_ADDR", default_value = "127.0.0.1:8081")]
    query_addr: SocketAddr,
    /// Address of the in-process partner simulator (when TRAILBOOK_PARTNER_URL is not set).
    #[arg(long, env = "TRAILBOOK_PARTNER_ADDR", default_value = "127.0.0.1:8090")]
    partner_addr: SocketAddr,
    /// Base URL of the real partner API; without it `serve` runs the partner simulator in-process.
    #[arg(long, env = "TRAILBOOK_PARTNER_URL")]
    partner_url: Option<String>,
    #[command(flatten)]
    partners: PartnersArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    mail: MailArgs,
    /// Run no job workers (and no partner simulator) in this process: for deployments that run
    /// `trailbook workers` separately, and for benchmarks of the command path and the projector.
    #[arg(long, env = "TRAILBOOK_NO_WORKERS")]
    no_workers: bool,
}

/// Which partners exist and how to reach them.
#[derive(Debug, Args)]
struct PartnersArgs {
    /// TOML file naming every partner a booking may name (base URL, credentials, timeouts, rate limit,
    /// breaker) and the payment provider; see README. Without it every partner name goes to the
    /// partner simulator (or TRAILBOOK_PARTNER_URL), which also takes the payments.
    #[arg(long, env = "TRAILBOOK_PARTNERS")]
    partners: Option<PathBuf>,
}

impl PartnersArgs {
    /// The parsed partners file, or exit 2 naming what is wrong with it.
    fn load(&self) -> Result<Option<workers::partners::PartnersFile>, Failure> {
        self.partners
            .as_deref()
            .map(workers::partners::PartnersFile::load)
            .transpose()
            .map_err(|e| Failure::usage(format!("TRAILBOOK_PARTNERS: {}", error_chain(&e))))
    }
}

/// How report e-mails are sent (workers).
#[derive(Debug, Args)]
struct MailArgs {
    /// SMTP relay URL (`smtp://`, `smtps://`, `?tls=required` for STARTTLS); without it e-mails are
    /// written as .eml files under <data dir>/mail.
    #[arg(long, env = "TRAILBOOK_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The From mailbox of report e-mails.
    #[arg(
        long,
        env = "TRAILBOOK_MAIL_FROM",
        default_value = "trailbook <reports@trailbook.local>"
    )]
    mail_from: String,
    /// Fault injection for demos: probability that a successful send reports a timeout.
    #[arg(long, env = "TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS", default_value_t = 0.0, value_parser = probability)]
    mail_timeout_after_success: f64,
}

/// Settings of the GraphQL query API.
#[derive(Debug, Args)]
struct QueryArgs {
    /// Longest wait, in milliseconds, for a query's `minPosition` before it answers NOT_YET_CONSISTENT.
    #[arg(long, env = "TRAILBOOK_MIN_POSITION_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    min_position_timeout_ms: u64,
    /// Largest page (`first`) of a GraphQL list.
    #[arg(long, env = "TRAILBOOK_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    max_page_size: i64,
    /// When the status board calls an item stuck: comma-separated `<type>:<status>[:report_<s>|:email_<s>]=<age>`
    /// rules, e.g. `booking:partner_pending=5m,visit:completed:report_pending=10m` (unset: those defaults).
    #[arg(long, env = "TRAILBOOK_STUCK_RULES")]
    stuck_rules: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenRole {
    Client,
    Operator,
    Support,
    Partner,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The role the token grants.
    #[arg(long)]
    role: TokenRole,
    /// Who the token speaks for (a client id, an operator's name).
    #[arg(long)]
    subject: String,
    /// How long the token is valid, in hours.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    ttl_hours: u32,
}

/// Settings of the REST command API.
#[derive(Debug, Args)]
struct ApiArgs {
    /// Requests per second per bearer token (bursts of up to max(2×, 1000) pass); 0 disables limiting.
    #[arg(long, env = "TRAILBOOK_RATE_LIMIT", default_value_t = 500)]
    rate_limit: u32,
    /// Most requests the command API handles at once; one more waits up to 2 s for a slot, then gets
    /// 503 `overloaded` with Retry-After (bounds memory and latency past capacity); 0 disables the bound.
    #[arg(long, env = "TRAILBOOK_MAX_IN_FLIGHT", default_value_t = 128)]
    max_in_flight: usize,
    /// How long an Idempotency-Key is remembered, in hours.
    #[arg(long, env = "TRAILBOOK_IDEMPOTENCY_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    idempotency_ttl_hours: u32,
}

#[derive(Debug, Args)]
struct ProjectionsArgs {
    #[command(subcommand)]
    action: Option<ProjectionsAction>,
}

#[derive(Debug, Subcommand)]
enum ProjectionsAction {
    /// Each projection's position, the head of the log, lag in events and seconds, and its leader
    /// (the default).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build a projection afresh from the whole log beside the live tables, then swap it in atomically.
    Rebuild {
        /// bookings, visits, status_board or timeline.
        name: String,
    },
}

#[derive(Debug, Args)]
struct PartnerSimArgs {
    /// Where the simulator listens.
    #[arg(long, env = "TRAILBOOK_PARTNER_ADDR", default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// Where it sends signed status callbacks.
    #[arg(long, default_value = simulator::DEFAULT_CALLBACK_URL)]
    callback_url: String,
    /// Where it sends signed payment webhooks.
    #[arg(long, default_value = simulator::DEFAULT_PAYMENT_WEBHOOK_URL)]
    payment_webhook_url: String,
    #[command(flatten)]
    faults: FaultArgs,
}

/// Faults the partner simulator injects (probabilities in 0..1). They can be changed while it runs with
/// `PUT /control/faults` and a JSON object of the same snake_case names.
#[derive(Debug, Args)]
struct FaultArgs {
    /// Every fault at a moderate level; the flags below override single ones.
    #[arg(long)]
    chaos: bool,
    /// Milliseconds added to every answer.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Do the work, then answer too late for the caller.
    #[arg(long, value_parser = probability)]
    timeout_after_success: Option<f64>,
    /// Answer 429 with Retry-After.
    #[arg(long = "rate-429", value_parser = probability)]
    rate_429: Option<f64>,
    /// Answer 503.
    #[arg(long = "rate-5xx", value_parser = probability)]
    rate_5xx: Option<f64>,
    /// Send a callback twice.
    #[arg(long, value_parser = probability)]
    duplicate_callbacks: Option<f64>,
    /// Send a callback late, after a stale one.
    #[arg(long, value_parser = probability)]
    late_callbacks: Option<f64>,
}

impl FaultArgs {
    fn faults(&self) -> simulator::Faults {
        let base = if self.chaos {
            simulator::Faults::chaos()
        } else {
            simulator::Faults::none()
        };
        simulator::Faults {
            latency_ms: self.latency_ms.unwrap_or(base.latency_ms),
            timeout_after_success: self
                .timeout_after_success
                .unwrap_or(base.timeout_after_success),
            rate_429: self.rate_429.unwrap_or(base.rate_429),
            rate_5xx: self.rate_5xx.unwrap_or(base.rate_5xx),
            duplicate_callbacks: self.duplicate_callbacks.unwrap_or(base.duplicate_callbacks),
            late_callbacks: self.late_callbacks.unwrap_or(base.late_callbacks),
            ..base
        }
    }
}

fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability between 0 and 1")),
    }
}

#[derive(Debug, Args)]
struct WorkersArgs {
    /// Base URL of the partner API (the simulator by default).
    #[arg(
        long,
        env = "TRAILBOOK_PARTNER_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    partner_url: String,
    #[command(flatten)]
    partners: PartnersArgs,
    #[command(flatten)]
    mail: MailArgs,
}

#[derive(Debug, Args)]
struct JobsArgs {
    #[command(subcommand)]
    action: Option<JobsAction>,
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// The newest jobs (the default), optionally of one state.
    List {
        /// queued, running, succeeded, failed or dead.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// Put a failed or dead job back in its queue with a fresh set of attempts.
    Replay {
        /// The job's id.
        id: i64,
    },
}

#[derive(Debug, Args)]
struct BookingsArgs {
    #[command(subcommand)]
    action: BookingsAction,
}

#[derive(Debug, Subcommand)]
enum BookingsAction {
    /// Settle a stuck booking by hand (recorded as `BookingResolved`, with you as the actor): `failed` or
    /// `cancelled` for one waiting for its partner, `cancelled` for payment_pending (no charge) or a
    /// compensation that is stuck or gave up, `refunded` for a refund that is.
    Resolve {
        /// The booking's id.
        id: String,
        /// The status it ends in: failed, cancelled or refunded.
        #[arg(long)]
        status: String,
        /// What you checked, for the history.
        #[arg(long)]
        reason: String,
        /// Who you are (the event's actor).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AggregateKind {
    Booking,
    Visit,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    /// Which kind of aggregate.
    kind: AggregateKind,
    /// Its id.
    id: String,
    /// Show the state as it was at this time (RFC 3339, e.g. 2026-12-01T09:30:00Z).
    #[arg(long, conflicts_with = "at_version")]
    as_of: Option<DateTime<Utc>>,
    /// Show the state right after this version (event sequence number, from 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    at_version: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A failure with the exit code it deserves: 2 for what the user must fix, 1 for everything else.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Self {
        let code = match &e {
            store::Error::InvalidUrl { .. } => 2,
            store::Error::Embedded(store::embedded::EmbeddedError::NoBinaries) => 2,
            _ => 1,
        };
        Self {
            code,
            message: error_chain(&e),
        }
    }
}

/// Prints `text` and a newline to stdout. A closed pipe (`trailbook history … | head`) is not an error.
fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure {
            code: 1,
            message: format!("cannot write to standard output: {e}"),
        }),
    }
}

/// The error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    command_api::error::chain(e)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(matches!(
        cli.command,
        Command::Serve(_)
            | Command::CommandApi(_)
            | Command::QueryApi(_)
            | Command::Projector
            | Command::Workers(_)
            | Command::PartnerSim(_)
    ));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => {
            let parts = Parts {
                workers: !args.no_workers,
                ..Parts::ALL
            };
            serve(&cli.db, &args, parts).await
        }
        Command::CommandApi(args) => serve(&cli.db, &args, Parts::COMMAND_API).await,
        Command::Projector => run_projector(&cli.db).await,
        Command::Projections(args) => {
            with_migrated_db(&cli.db, |db| async move {
                let result = projections::run(&db.pool, args.action).await;
                (db, result)
            })
            .await
        }
        Command::Migrate => {
            let db = open(&cli.db).await?;
            let result = store::db::migrate(&db.pool).await;
            db.close().await;
            result?;
            emit("migrations applied")
        }
        Command::History(args) => {
            let db = open(&cli.db).await?;
            let store = EventStore::new(db.pool.clone(), store_config(&cli.db));
            let result = history::print(&store, &args).await;
            db.close().await;
            result
        }
        Command::QueryApi(args) => serve(&cli.db, &args, Parts::QUERY_API).await,
        Command::Workers(args) => run_workers(&cli.db, &args).await,
        Command::PartnerSim(args) => partner_sim(&cli.db, &args).await,
        Command::Jobs(args) => {
            with_migrated_db(&cli.db, |db| async move {
                let result = jobs_command(&db.pool, args.action).await;
                (db, result)
            })
            .await
        }
        Command::Bookings(args) => {
            let config = store_config(&cli.db);
            with_migrated_db(&cli.db, |db| async move {
                let store = EventStore::new(db.pool.clone(), config);
                let result = bookings_command(&store, args.action).await;
                (db, result)
            })
            .await
        }
        Command::Token(args) => {
            let secret = command_api::secrets::load_or_create(
                JWT_SECRET_ENV,
                &cli.db.data_dir,
                "jwt-secret",
            )
            .map_err(|e| Failure {
                code: 1,
                message: error_chain(&e),
            })?;
            let role = match args.role {
                TokenRole::Client => Role::Client,
                TokenRole::Operator => Role::Operator,
                TokenRole::Support => Role::Support,
                TokenRole::Partner => Role::Partner,
            };
            if args.subject.trim().is_empty() || args.subject.len() > 200 {
                return Err(Failure::usage("--subject must be 1 to 200 characters"));
            }
            let token = command_api::Tokens::new(&secret)
                .issue(
                    role,
                    args.subject.trim(),
                    chrono::Duration::hours(i64::from(args.ttl_hours)),
                )
                .map_err(|e| Failure {
                    code: 1,
                    message: format!("cannot sign the token: {e}"),
                })?;
            emit(&token)
        }
    }
}

fn store_config(args: &DbArgs) -> StoreConfig {
    StoreConfig {
        snapshot_every: args.snapshot_every,
        ..StoreConfig::default()
    }
}

async fn open(args: &DbArgs) -> Result<Database, Failure> {
    let url = args.database_url.as_deref().filter(|u| !u.is_empty());
    let config = PoolConfig {
        max_connections: args.db_max_connections.max(1),
        ..PoolConfig::default()
    };
    Ok(Database::open(url, &args.data_dir, &config).await?)
}

/// Which parts of trailbook a process runs.
#[derive(Debug, Clone, Copy)]
struct Parts {
    command_api: bool,
    query_api: bool,
    projector: bool,
    /// The job workers, and the partner simulator unless a partner URL is given.
    workers: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        command_api: true,
        query_api: true,
        projector: true,
        workers: true,
    };
    const COMMAND_API: Parts = Parts {
        command_api: true,
        query_api: false,
        projector: false,
        workers: false,
    };
    const QUERY_API: Parts = Parts {
        command_api: false,
        query_api: true,
        projector: false,
        workers: false,
    };
}

/// Opens and migrates the database, runs `work` with it, and closes it (stopping a private cluster).
async fn with_migrated_db<F, Fut>(db_args: &DbArgs, work: F) -> Result<(), Failure>
where
    F: FnOnce(Database) -> Fut,
    Fut: std::future::Future<Output = (Database, Result<(), Failure>)>,
{
    let db = open(db_args).await?;
    if let Err(e) = store::db::migrate(&db.pool).await {
        db.close().await;
        return Err(e.into());
    }
    match db.embedded_port() {
        Some(port) => {
            tracing::info!(port, data_dir = %db_args.data_dir.display(), "using the private PostgreSQL cluster")
        }
        None => tracing::info!("using DATABASE_URL"),
    }
    let (db, result) = work(db).await;
    db.close().await;
    tracing::info!("stopped");
    result
}

async fn serve(db_args: &DbArgs, args: &ServeArgs, parts: Parts) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        let result = serve_until_signal(&db, db_args, args, parts).await;
        (db, result)
    })
    .await
}

async fn run_projector(db_args: &DbArgs) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        tracing::info!("projector running");
        let result = projector::run(
            db.pool.clone(),
            projector::Config::default(),
            telemetry::shutdown_signal(),
        )
        .await
        .map_err(|e| Failure {
            code: 1,
            message: error_chain(&e),
        });
        (db, result)
    })
    .await
}

/// One stop for every part of a process: the first of a signal or a part failing.
#[derive(Clone)]
struct Stop(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    fn new() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::channel(false).0))
    }

    fn stop(&self) {
        self.0.send_replace(true);
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

async fn serve_until_signal(
    db: &Database,
    db_args: &DbArgs,
    args: &ServeArgs,
    parts: Parts,
) -> Result<(), Failure> {
    // Listening from here on, before any server answers (see `shutdown_signal`).
    let signal = telemetry::shutdown_signal();
    let secret_failure = |e: command_api::secrets::SecretError| Failure {
        code: 1,
        message: error_chain(&e),
    };
    let jwt_secret =
        command_api::secrets::load_or_create(JWT_SECRET_ENV, &db_args.data_dir, "jwt-secret")
            .map_err(secret_failure)?;
    let tokens = command_api::Tokens::new(&jwt_secret);
    let store = EventStore::new(db.pool.clone(), store_config(db_args))
        .with_notifier(store::notify::CommitNotifier::spawn(db.pool.clone()));
    let partners = args.partners.load()?;
    let stop = Stop::new();
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<Result<(), String>>)> = Vec::new();

    // Bind every listener before starting anything, so a taken port fails the start cleanly.
    let command = if parts.command_api {
        let partner_secret = command_api::secrets::load_or_create(
            PARTNER_SECRET_ENV,
            &db_args.data_dir,
            "partner-secret",
        )
        .map_err(secret_failure)?;
        let state = command_api::AppState::new(
            store.clone(),
            tokens.clone(),
            &partner_secret,
            command_api::Config {
                idempotency_ttl: chrono::Duration::hours(i64::from(args.api.idempotency_ttl_hours)),
                rate_limit: args.api.rate_limit,
                max_in_flight: args.api.max_in_flight,
                partners: partners.as_ref().map(|file| {
                    std::sync::Arc::new(file.partners.iter().fold(
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
            },
        );
        Some((bind(args.command_addr, "--command-addr").await?, state))
    } else {
        None
    };
    let query = if parts.query_api {
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
            stuck_rules,
            ..query_api::Config::default()
        };
        Some((bind(args.query_addr, "--query-addr").await?, config))
    } else {
        None
    };

    let partner = if parts.workers && args.partner_url.is_none() {
        Some(bind(args.partner_addr, "--partner-addr").await?)
    } else {
        None
    };
    let command_local = match &command {
        Some((listener, _)) => Some(local_addr(listener)?),
        None => None,
    };

    if let (Some((listener, state)), Some(local)) = (command, command_local) {
        tracing::info!(url = %format!("http://{local}"), "REST command API listening");
        println!("trailbook REST:    http://{local}");
        let purger = tokio::spawn(purge_idempotency_keys(db.pool.clone()));
        let stopped = stop.stopped();
        tasks.push((
            "REST server",
            tokio::spawn(async move {
                // `into_make_service`: the router is prepared once and shared by every connection;
                // a bare `Router` is cloned and re-prepared per connection (about 75 KB each: 1,000
                // keep-alive clients took 75 MB).
                let served = axum::serve(listener, command_api::app(state).into_make_service())
                    .with_graceful_shutdown(stopped)
                    .await;
                purger.abort();
                served.map_err(|e| e.to_string())
            }),
        ));
    }
    if let Some((listener, config)) = query {
        let local = local_addr(&listener)?;
        tracing::info!(url = %format!("http://{local}/graphql"), "GraphQL query API listening");
        println!("trailbook GraphQL: http://{local}/graphql");
        let app = query_api::app(query_api::schema(store.clone(), config), tokens.clone());
        let stopped = stop.stopped();
        tasks.push((
            "GraphQL server",
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(stopped)
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
    }
    if parts.workers {
        let partner_url = match (partner, &args.partner_url) {
            (Some(listener), _) => {
                let local = local_addr(&listener)?;
                println!("trailbook partner simulator: http://{local}");
                let secret = command_api::secrets::load_or_create(
                    PARTNER_SECRET_ENV,
                    &db_args.data_dir,
                    "partner-secret",
                )
                .map_err(secret_failure)?;
                let config = simulator::SimConfig {
                    callback_url: command_local
                        .map(|addr| format!("http://{addr}/v1/partner/callbacks")),
                    payment_webhook_url: command_local
                        .map(|addr| format!("http://{addr}/v1/payments/webhooks")),
                    secret: secret.to_vec(),
                    ..simulator::SimConfig::default()
                };
                let stopped = stop.stopped();
                tasks.push((
                    "partner simulator",
                    tokio::spawn(async move {
                        simulator::serve(listener, config, stopped)
                            .await
                            .map_err(|e| error_chain(&e))
                    }),
                ));
                format!("http://{local}")
            }
            (None, Some(url)) => url.clone(),
            (None, None) => workers::service::ServiceConfig::default().partner_url,
        };
        let pool = db.pool.clone();
        let config = service_config(db_args, partner_url, partners, &args.mail)?;
        let stopped = stop.stopped();
        tasks.push((
            "workers",
            tokio::spawn(async move {
                workers::service::run(pool, config, stopped)
                    .await
                    .map_err(|e| error_chain(&e))
            }),
        ));
    }
    if parts.projector {
        let pool = db.pool.clone();
        let stopped = stop.stopped();
        tasks.push((
            "projector",
            tokio::spawn(async move {
                projector::run(pool, projector::Config::default(), stopped)
                    .await
                    .map_err(|e| error_chain(&e))
            }),
        ));
    }

    // The first of a signal or a part ending stops every part.
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            signal.await;
            stop.stop();
        })
    };
    // Open WebSockets (GraphQL subscriptions) and slow clients would hold a graceful shutdown forever:
    // parts still running 10 s after the stop are aborted.
    let aborts: Vec<_> = tasks.iter().map(|(_, task)| task.abort_handle()).collect();
    let watchdog = {
        let stopped = stop.stopped();
        tokio::spawn(async move {
            stopped.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!("parts still running after the shutdown grace period; aborting them");
            for abort in aborts {
                abort.abort();
            }
        })
    };
    let mut failures = Vec::new();
    let mut pending: futures_util::stream::FuturesUnordered<_> = tasks
        .into_iter()
        .map(|(name, task)| async move { (name, task.await) })
        .collect();
    while let Some((name, outcome)) = futures_util::StreamExt::next(&mut pending).await {
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
        false => Err(Failure {
            code: 1,
            message: failures.join("; "),
        }),
    }
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
        .map_err(|e| Failure::usage(error_chain(&e)))?;
    Ok(config)
}

/// `trailbook workers`: the reactor and the job handlers alone, until SIGTERM.
async fn run_workers(db_args: &DbArgs, args: &WorkersArgs) -> Result<(), Failure> {
    with_migrated_db(db_args, |db| async move {
        tracing::info!(partner_url = %args.partner_url, "workers running");
        let partners = match args.partners.load() {
            Ok(partners) => partners,
            Err(e) => return (db, Err(e)),
        };
        let config = match service_config(db_args, args.partner_url.clone(), partners, &args.mail) {
            Ok(config) => config,
            Err(e) => return (db, Err(e)),
        };
        let result = workers::service::run(db.pool.clone(), config, telemetry::shutdown_signal())
            .await
            .map_err(|e| Failure {
                code: 1,
                message: error_chain(&e),
            });
        (db, result)
    })
    .await
}

/// `trailbook jobs [list | replay <id>]`.
async fn jobs_command(pool: &sqlx::PgPool, action: Option<JobsAction>) -> Result<(), Failure> {
    let failure = |e: workers::Error| Failure {
        code: match e {
            workers::Error::JobNotFound(_) | workers::Error::NotReplayable { .. } => 2,
            _ => 1,
        },
        message: error_chain(&e),
    };
    match action.unwrap_or(JobsAction::List {
        state: None,
        limit: 50,
    }) {
        JobsAction::List { state, limit } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(workers::JobState::parse(s).ok_or_else(|| {
                    Failure::usage(format!(
                        "--state `{s}`: use queued, running, succeeded, failed or dead"
                    ))
                })?),
            };
            let jobs = workers::jobs::list(
                pool,
                &workers::JobFilter {
                    state,
                    limit: Some(limit),
                    ..workers::JobFilter::default()
                },
            )
            .await
            .map_err(failure)?;
            let mut out = format!(
                "{:>8}  {:<20} {:<13} {:<10} {:>8}  {:<25}  {}\n",
                "ID", "KIND", "QUEUE", "STATE", "ATTEMPTS", "RUN_AT", "LAST_ERROR"
            );
            for job in &jobs {
                out.push_str(&format!(
                    "{:>8}  {:<20} {:<13} {:<10} {:>4}/{:<3}  {:<25}  {}\n",
                    job.id,
                    job.kind,
                    job.queue,
                    job.state,
                    job.attempts,
                    job.max_attempts,
                    job.run_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    job.last_error.as_deref().unwrap_or("-")
                ));
            }
            emit(out.trim_end())
        }
        JobsAction::Replay { id } => {
            let job = workers::jobs::replay(pool, id).await.map_err(failure)?;
            emit(&format!(
                "job {} ({}) is queued again with {} attempts",
                job.id, job.kind, job.max_attempts
            ))
        }
    }
}

/// `trailbook bookings resolve <id> --status <s> --reason <r>`.
async fn bookings_command(store: &EventStore, action: BookingsAction) -> Result<(), Failure> {
    let BookingsAction::Resolve {
        id,
        status,
        reason,
        operator,
    } = action;
    let status = domain::booking::BookingStatus::parse(&status).ok_or_else(|| {
        Failure::usage(format!(
            "--status `{status}`: use failed, cancelled or refunded"
        ))
    })?;
    let context = store::CommandContext {
        actor: Some(domain::values::Actor::new(operator.trim(), Role::Operator)),
        ..store::CommandContext::system("booking.resolve")
    };
    let command = domain::booking::BookingCommand::Resolve { status, reason };
    let done = store
        .execute::<domain::Booking>(
            &id,
            command,
            &(),
            &context,
            store::ExecuteOptions::default(),
        )
        .await
        .map_err(|e| Failure {
            code: match &e {
                store::CommandError::Rejected(_) => 2,
                _ => 1,
            },
            message: format!("booking {id}: {}", error_chain(&e)),
        })?;
    emit(&format!(
        "booking {id} is {} (version {})",
        done.state.status, done.version
    ))
}

/// `trailbook partner-sim`: the simulator alone, until SIGTERM.
async fn partner_sim(db_args: &DbArgs, args: &PartnerSimArgs) -> Result<(), Failure> {
    let secret = command_api::secrets::load_or_create(
        PARTNER_SECRET_ENV,
        &db_args.data_dir,
        "partner-secret",
    )
    .map_err(|e| Failure {
        code: 1,
        message: error_chain(&e),
    })?;
    let listener = bind(args.addr, "--addr").await?;
    let local = local_addr(&listener)?;
    println!("trailbook partner simulator: http://{local}");
    let config = simulator::SimConfig {
        callback_url: Some(args.callback_url.clone()),
        payment_webhook_url: Some(args.payment_webhook_url.clone()),
        secret: secret.to_vec(),
        faults: args.faults.faults(),
        ..simulator::SimConfig::default()
    };
    simulator::serve(listener, config, telemetry::shutdown_signal())
        .await
        .map_err(|e| Failure {
            code: 1,
            message: error_chain(&e),
        })
}

/// Deletes expired idempotency keys every ten minutes.
async fn purge_idempotency_keys(pool: sqlx::PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        match command_api::idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
        }
    }
}
