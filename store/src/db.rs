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

/// The database a trailbook process works on: the server of `DATABASE_URL`, or the private cluster of
/// the data dir (started if it is not already running).
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `url`, or, without one, starts (or reuses) the private cluster under `data_dir`.
    pub async fn open(url: Option<&str>, data_dir: &Path, config: &PoolConfig) -> Result<Self> {
        match url {
            Some(url) => Ok(Self {
                pool: connect(url, config).await?,
                embedded: None,
            }),
            None => {
                let embedded = EmbeddedPostgres::start(data_dir).await?;
                let url = embedded.url("postgres");
                match connect(&url, config).await {
                    Ok(pool) => Ok(Self {
                        pool,
                        embedded: Some(embedded),
                    }),
                    Err(e) => {
                        let _ = embedded.stop().await;
                        Err(e)
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The password never survives into messages.
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
