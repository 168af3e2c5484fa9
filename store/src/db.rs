//! Connecting to PostgreSQL and running the embedded migrations.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::embedded::EmbeddedPostgres;
use crate::error::{Error, Result};

/// The migrations of `migrations/`, embedded into the binary at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How the pool is sized and how long callers wait for a connection.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a `postgres://` URL; the error names the URL with its password replaced by `***`.
pub fn parse_url(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
        url: redact_url(url),
        reason: e.to_string().replace(url, &redact_url(url)),
    })
}

/// `host:port/database as user`, for messages (never the password).
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)"),
        options.get_username()
    )
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// Opens a bounded pool and checks that the server answers. Fails with a clear, password-free error.
pub async fn connect(url: &str, config: &PoolConfig) -> Result<PgPool> {
    let options = parse_url(url)?.application_name("trailbook");
    let target = describe(&options);
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect { target, source })
}

/// Applies pending migrations (safe to run from several processes at once: sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The role every trailbook process works as once migrations ran (`Database::into_runtime`): it may
/// read and append events but not update, delete or truncate them, nor alter `events` or `audit_log`
/// or disable their append-only triggers (only their owner, the migration role, may).
pub const RUNTIME_ROLE: &str = "trailbook_app";

/// The read models the runtime role owns: a rebuild creates copies of them and swaps them in, which
/// takes their owner. They are derived from the log and can always be rebuilt.
const RUNTIME_OWNED: [&str; 5] = [
    "rm_bookings",
    "rm_visits",
    "rm_status_items",
    "rm_status_counts",
    "rm_timeline",
];

/// Tables the runtime role may only read and append to.
const APPEND_ONLY: [&str; 2] = ["events", "audit_log"];

/// The database a trailbook process works on: the server of `DATABASE_URL`, or the private cluster of
/// the data dir (started if it is not already running).
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
    /// How the owner connected (holds its password: never printed).
    owner_url: String,
    config: PoolConfig,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("owner", &redact_url(&self.owner_url))
            .field("embedded", &self.embedded)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to `url`, or, without one, starts (or reuses) the private cluster under `data_dir`.
    pub async fn open(url: Option<&str>, data_dir: &Path, config: &PoolConfig) -> Result<Self> {
        match url {
            Some(url) => Ok(Self {
                pool: connect(url, config).await?,
                embedded: None,
                owner_url: url.to_string(),
                config: config.clone(),
            }),
            None => {
                let embedded = EmbeddedPostgres::start(data_dir).await?;
                let url = embedded.url("postgres");
                match connect(&url, config).await {
                    Ok(pool) => Ok(Self {
                        pool,
                        embedded: Some(embedded),
                        owner_url: url,
                        config: config.clone(),
                    }),
                    Err(e) => {
                        let _ = embedded.stop().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Drops to [`RUNTIME_ROLE`]: makes sure the role exists with the grants of this database (as the
    /// connected owner, after migrations), then replaces the pool with one connected as that role. Its
    /// password is derived from the owner's URL, so every process given the same URL agrees on it
    /// without storing it. An owner that may not create roles, or a server that does not let the role
    /// in, keeps the owner's pool, with a warning.
    pub async fn into_runtime(mut self) -> Result<Self> {
        let password = runtime_password(&self.owner_url);
        if let Err(e) = grant_runtime(&self.pool, &password).await {
            tracing::warn!(
                error = %e,
                "cannot set up the runtime role {RUNTIME_ROLE}; running as the migration role, \
                 which could alter the log (give it CREATEROLE, see README)"
            );
            return Ok(self);
        }
        let options = parse_url(&self.owner_url)?
            .username(RUNTIME_ROLE)
            .password(&password)
            .application_name("trailbook");
        let target = describe(&options);
        let runtime = match PgPoolOptions::new()
            .max_connections(self.config.max_connections)
            .acquire_timeout(self.config.acquire_timeout)
            .connect_with(options)
            .await
        {
            Ok(runtime) => runtime,
            Err(e) => {
                // E.g. pg_hba.conf admits only named roles: say so, keep working as the owner.
                tracing::warn!(error = %e, %target, "cannot connect as the runtime role; running as the migration role");
                return Ok(self);
            }
        };
        let owner = std::mem::replace(&mut self.pool, runtime);
        owner.close().await;
        Ok(self)
    }

    /// The port of the private cluster, when one is used.
    pub fn embedded_port(&self) -> Option<u16> {
        self.embedded.as_ref().map(EmbeddedPostgres::port)
    }

    /// Closes the pool and stops the private cluster if this process started it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(embedded) = self.embedded {
            if let Err(e) = embedded.stop().await {
                tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
            }
        }
    }
}

/// The runtime role's password: a hash of the owner's credentials and server (the URL without its
/// database: the role is one for the whole cluster), the same in every process given them. Who can
/// read that URL can connect as the owner anyway.
fn runtime_password(owner_url: &str) -> String {
    use sha2::{Digest, Sha256};
    let authority = owner_url
        .find("://")
        .map(|start| {
            let rest = &owner_url[start + 3..];
            &owner_url[..start + 3 + rest.find(['/', '?']).unwrap_or(rest.len())]
        })
        .unwrap_or(owner_url);
    let mut hasher = Sha256::new();
    hasher.update(b"trailbook runtime role\n");
    hasher.update(authority.as_bytes());
    hex::encode(hasher.finalize())
}

/// Creates [`RUNTIME_ROLE`] if missing (or sets its password when it cannot log in with it) and grants
/// it what the processes need on this database. Role statements touch the shared catalogs, which
/// processes on other databases of the cluster may change at the same moment: retried.
async fn grant_runtime(owner: &PgPool, password: &str) -> Result<()> {
    let mut attempt = 0;
    loop {
        match try_grant_runtime(owner, password).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && is_concurrent_catalog_change(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// "tuple concurrently updated" (XX000), a duplicate role or membership created at the same moment.
fn is_concurrent_catalog_change(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(code.as_ref(), "XX000" | "42710" | "23505" | "40P01"))
}

async fn try_grant_runtime(owner: &PgPool, password: &str) -> std::result::Result<(), sqlx::Error> {
    let quoted = password.replace('\'', "''");
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
            .bind(RUNTIME_ROLE)
            .fetch_one(owner)
            .await?;
    if !exists {
        sqlx::query(&format!(
            "create role {RUNTIME_ROLE} login nosuperuser nocreatedb nocreaterole noinherit password '{quoted}'"
        ))
        .execute(owner)
        .await?;
    } else {
        // Only when it differs would a change be needed, and no one can read it: set it (cheap).
        sqlx::query(&format!("alter role {RUNTIME_ROLE} password '{quoted}'"))
            .execute(owner)
            .await?;
    }
    let (me, superuser): (String, bool) = sqlx::query_as(
        "select current_user::text, rolsuper from pg_roles where rolname = current_user",
    )
    .fetch_one(owner)
    .await?;
    if !superuser {
        // To hand it the read models and still alter them in later migrations.
        sqlx::query(&format!(
            "grant {RUNTIME_ROLE} to \"{}\"",
            me.replace('"', "\"\"")
        ))
        .execute(owner)
        .await?;
    }
    let mut tx = owner.begin().await?;
    // Several processes of one database start at once: one grants at a time.
    sqlx::query("select pg_advisory_xact_lock(7201612071)")
        .execute(&mut *tx)
        .await?;
    let database: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(&mut *tx)
        .await?;
    let statements = [
        format!(
            "grant connect, temporary on database \"{}\" to {RUNTIME_ROLE}",
            database.replace('"', "\"\"")
        ),
        format!("grant usage, create on schema public to {RUNTIME_ROLE}"),
        format!(
            "grant select, insert, update, delete on all tables in schema public to {RUNTIME_ROLE}"
        ),
        format!("grant usage, select on all sequences in schema public to {RUNTIME_ROLE}"),
        format!(
            "revoke update, delete, truncate, references, trigger on {} from {RUNTIME_ROLE}",
            APPEND_ONLY.join(", ")
        ),
        format!("revoke insert, update, delete, truncate on _sqlx_migrations from {RUNTIME_ROLE}"),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    for table in RUNTIME_OWNED {
        sqlx::query(&format!(
            "alter table if exists {table} owner to {RUNTIME_ROLE}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password never survives into messages.
    /// One password per server and owner, whatever the database.
    #[test]
    fn the_runtime_password_ignores_the_database() {
        let a = runtime_password("postgres://app:pw@db:5432/one?sslmode=disable");
        assert_eq!(a, runtime_password("postgres://app:pw@db:5432/two"));
        assert_ne!(a, runtime_password("postgres://app:other@db:5432/one"));
        assert!(!a.contains("pw"));
    }

    #[test]
    fn redact_url_hides_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example:5432/trail"),
            "postgres://app:***@db.example:5432/trail"
        );
        assert_eq!(
            redact_url("postgres://app@db/trail"),
            "postgres://app@db/trail"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/d?x=1"),
            "postgres://u:***@h/d?x=1"
        );
    }

    /// A malformed URL is a typed error that names the URL without its password.
    #[test]
    fn malformed_url_is_a_clear_error() {
        let err = parse_url("postgres://u:topsecret@host:notaport/db").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("invalid database URL"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
    }
}
