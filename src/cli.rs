//! The command line: every subcommand and flag of `trailbook`, parsed by clap. What a flag means is said
//! here once, for `--help`; the modules that act on them take these structs.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use service_kit::chain;

use crate::Failure;

/// An event-sourced CQRS engine for booking and care-workflow systems, on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "trailbook", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL URL. Without it, trailbook starts (or reuses) a private cluster under the data dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for trailbook's own files (the private PostgreSQL cluster, secrets, documents).
    #[arg(
        long,
        env = "TRAILBOOK_DATA_DIR",
        default_value = ".trailbook",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Largest number of database connections this process opens.
    #[arg(
        long,
        env = "TRAILBOOK_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Write a snapshot whenever a stream crosses a multiple of this many events (0 disables them).
    #[arg(
        long,
        env = "TRAILBOOK_SNAPSHOT_EVERY",
        default_value_t = 50,
        global = true
    )]
    pub snapshot_every: u64,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // `command-api` is the contract's subcommand name
pub enum Command {
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
pub struct ServeArgs {
    /// Address of the REST command API.
    #[arg(long, env = "TRAILBOOK_COMMAND_ADDR", default_value = "127.0.0.1:8080")]
    pub command_addr: SocketAddr,
    /// Address of the GraphQL query API.
    #[arg(long, env = "TRAILBOOK_QUERY_ADDR", default_value = "127.0.0.1:8081")]
    pub query_addr: SocketAddr,
    /// Address of the in-process partner simulator (when TRAILBOOK_PARTNER_URL is not set).
    #[arg(long, env = "TRAILBOOK_PARTNER_ADDR", default_value = "127.0.0.1:8090")]
    pub partner_addr: SocketAddr,
    /// Base URL of the real partner API; without it `serve` runs the partner simulator in-process.
    #[arg(long, env = "TRAILBOOK_PARTNER_URL")]
    pub partner_url: Option<String>,
    #[command(flatten)]
    pub partners: PartnersArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub mail: MailArgs,
    /// Run no job workers (and no partner simulator) in this process: for deployments that run
    /// `trailbook workers` separately, and for benchmarks of the command path and the projector.
    #[arg(long, env = "TRAILBOOK_NO_WORKERS")]
    pub no_workers: bool,
    /// Once every listener is bound, write the URLs it listens on to this file as JSON
    /// (`{"rest": …, "graphql": …, "partner_simulator": …}`), for scripts and tests that pass port 0.
    #[arg(long, env = "TRAILBOOK_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Which partners exist and how to reach them.
#[derive(Debug, Args)]
pub struct PartnersArgs {
    /// TOML file naming every partner a booking may name (base URL, credentials, timeouts, rate limit,
    /// breaker) and the payment provider; see README. Without it every partner name goes to the
    /// partner simulator (or TRAILBOOK_PARTNER_URL), which also takes the payments.
    #[arg(long, env = "TRAILBOOK_PARTNERS")]
    pub partners: Option<PathBuf>,
}

impl PartnersArgs {
    /// The parsed partners file, or exit 2 naming what is wrong with it.
    pub fn load(&self) -> Result<Option<workers::partners::PartnersFile>, Failure> {
        self.partners
            .as_deref()
            .map(workers::partners::PartnersFile::load)
            .transpose()
            .map_err(|e| Failure::usage(format!("TRAILBOOK_PARTNERS: {}", chain(&e))))
    }
}

/// How report e-mails are sent (workers).
#[derive(Debug, Args)]
pub struct MailArgs {
    /// SMTP relay URL (`smtp://`, `smtps://`, `?tls=required` for STARTTLS); without it e-mails are
    /// written as .eml files under <data dir>/mail.
    #[arg(long, env = "TRAILBOOK_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From mailbox of report e-mails.
    #[arg(
        long,
        env = "TRAILBOOK_MAIL_FROM",
        default_value = "trailbook <reports@trailbook.local>"
    )]
    pub mail_from: String,
    /// Fault injection for demos: probability that a successful send reports a timeout.
    #[arg(long, env = "TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS", default_value_t = 0.0, value_parser = probability)]
    pub mail_timeout_after_success: f64,
}

/// Settings of the GraphQL query API.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Longest wait, in milliseconds, for a query's `minPosition` before it answers NOT_YET_CONSISTENT.
    #[arg(long, env = "TRAILBOOK_MIN_POSITION_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub min_position_timeout_ms: u64,
    /// Most queries with `minPosition` one caller may have waiting at once (more: TOO_MANY_WAITS).
    #[arg(long, env = "TRAILBOOK_MAX_WAITS_PER_SUBJECT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_waits_per_subject: u32,
    /// Largest page (`first`) of a GraphQL list.
    #[arg(long, env = "TRAILBOOK_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub max_page_size: i64,
    /// When the status board calls an item stuck: comma-separated `<type>:<status>[:report_<s>|:email_<s>]=<age>`
    /// rules, e.g. `booking:partner_pending=5m,visit:completed:report_pending=10m` (unset: those defaults).
    #[arg(long, env = "TRAILBOOK_STUCK_RULES")]
    pub stuck_rules: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenRole {
    Client,
    Operator,
    Support,
    Partner,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The role the token grants.
    #[arg(long)]
    pub role: TokenRole,
    /// Who the token speaks for (a client id, an operator's name).
    #[arg(long)]
    pub subject: String,
    /// How long the token is valid, in hours (at most a week: longer tokens are refused).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=168))]
    pub ttl_hours: u32,
}

/// Settings of the REST command API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Requests per second per verified caller, REST and GraphQL (the token's subject, or the partner
    /// whose signature a callback carries; bursts of twice that pass); 0 disables limiting.
    #[arg(long, env = "TRAILBOOK_RATE_LIMIT", default_value_t = 500)]
    pub rate_limit: u32,
    /// Requests per second per client address for requests that verify as no one (no token, an
    /// invalid or expired one, a bad signature; bursts of twice that pass); 0 disables the limit.
    #[arg(long, env = "TRAILBOOK_ANONYMOUS_RATE_LIMIT", default_value_t = 20)]
    pub anonymous_rate_limit: u32,
    /// Most requests the command API handles at once; one more waits up to 2 s for a slot, then gets
    /// 503 `overloaded` with Retry-After (bounds memory and latency past capacity); 0 disables the bound.
    #[arg(long, env = "TRAILBOOK_MAX_IN_FLIGHT", default_value_t = 128)]
    pub max_in_flight: usize,
    /// How long an Idempotency-Key is remembered, in hours.
    #[arg(long, env = "TRAILBOOK_IDEMPOTENCY_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub idempotency_ttl_hours: u32,
}

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    #[command(subcommand)]
    pub action: Option<ProjectionsAction>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsAction {
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
pub struct PartnerSimArgs {
    /// Where the simulator listens.
    #[arg(long, env = "TRAILBOOK_PARTNER_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// Where it sends signed status callbacks.
    #[arg(long, default_value = simulator::DEFAULT_CALLBACK_URL)]
    pub callback_url: String,
    /// Where it sends signed payment webhooks.
    #[arg(long, default_value = simulator::DEFAULT_PAYMENT_WEBHOOK_URL)]
    pub payment_webhook_url: String,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Once every listener is bound, write the URLs it listens on to this file as JSON
    /// (`{"rest": …, "graphql": …, "partner_simulator": …}`), for scripts and tests that pass port 0.
    #[arg(long, env = "TRAILBOOK_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Faults the partner simulator injects (probabilities in 0..1). They can be changed while it runs with
/// `PUT /control/faults` and a JSON object of the same snake_case names.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Every fault at a moderate level; the flags below override single ones.
    #[arg(long)]
    pub chaos: bool,
    /// Milliseconds added to every answer.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Do the work, then answer too late for the caller.
    #[arg(long, value_parser = probability)]
    pub timeout_after_success: Option<f64>,
    /// Answer 429 with Retry-After.
    #[arg(long = "rate-429", value_parser = probability)]
    rate_429: Option<f64>,
    /// Answer 503.
    #[arg(long = "rate-5xx", value_parser = probability)]
    rate_5xx: Option<f64>,
    /// Send a callback twice.
    #[arg(long, value_parser = probability)]
    pub duplicate_callbacks: Option<f64>,
    /// Send a callback late, after a stale one.
    #[arg(long, value_parser = probability)]
    pub late_callbacks: Option<f64>,
}

impl FaultArgs {
    pub fn faults(&self) -> simulator::Faults {
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
pub struct WorkersArgs {
    /// Base URL of the partner API (the simulator by default).
    #[arg(
        long,
        env = "TRAILBOOK_PARTNER_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub partner_url: String,
    #[command(flatten)]
    pub partners: PartnersArgs,
    #[command(flatten)]
    pub mail: MailArgs,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub action: Option<JobsAction>,
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
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
pub struct BookingsArgs {
    #[command(subcommand)]
    pub action: BookingsAction,
}

#[derive(Debug, Subcommand)]
pub enum BookingsAction {
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
pub enum AggregateKind {
    Booking,
    Visit,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Which kind of aggregate.
    pub kind: AggregateKind,
    /// Its id.
    pub id: String,
    /// Show the state as it was at this time (RFC 3339, e.g. 2026-12-01T09:30:00Z).
    #[arg(long, conflicts_with = "at_version")]
    pub as_of: Option<DateTime<Utc>>,
    /// Show the state right after this version (event sequence number, from 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub at_version: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Whether the command runs until stopped (and logs at `info`), rather than once.
    pub fn is_service(&self) -> bool {
        matches!(
            self.command,
            Command::Serve(_)
                | Command::CommandApi(_)
                | Command::QueryApi(_)
                | Command::Projector
                | Command::Workers(_)
                | Command::PartnerSim(_)
        )
    }
}
