//! The PostgreSQL server of a run (`DATABASE_URL`, or a private cluster started like `trailbook serve`
//! does), the fresh databases the run creates on it and drops afterwards, and its settings.

use std::path::Path;

use sqlx::PgPool;
use store::db::PoolConfig;
use store::embedded::EmbeddedPostgres;

use crate::error::{Context, Error, Result};

/// The server a run uses.
pub struct Server {
    /// URL of the server's maintenance database (contains a password for the private cluster: never printed).
    admin_url: String,
    admin: PgPool,
    embedded: Option<EmbeddedPostgres>,
    /// `DATABASE_URL` (redacted) or `private cluster under <dir>`.
    pub description: String,
}

/// What BENCHMARKS.md says about the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub version: String,
    pub fsync: String,
    pub synchronous_commit: String,
    pub full_page_writes: String,
    pub wal_sync_method: String,
    pub shared_buffers: String,
    pub max_connections: String,
}

impl Server {
    /// Connects to `url`, or starts (or reuses) the private cluster under `data_dir`.
    pub async fn start(url: Option<&str>, data_dir: &Path) -> Result<Self> {
        let (admin_url, embedded, description) = match url {
            Some(url) => (
                url.to_owned(),
                None,
                format!("DATABASE_URL ({})", store::db::redact_url(url)),
            ),
            None => {
                let embedded = EmbeddedPostgres::start(data_dir).await.with_context(|| {
                    format!(
                        "starting the private PostgreSQL cluster under {}",
                        data_dir.display()
                    )
                })?;
                let description = format!(
                    "private cluster (PostgreSQL binaries of this machine) in {}",
                    embedded.cluster_dir().display()
                );
                (embedded.url("postgres"), Some(embedded), description)
            }
        };
        let admin = store::db::connect(
            &admin_url,
            &PoolConfig {
                max_connections: 2,
                ..PoolConfig::default()
            },
        )
        .await
        .context("connecting to the PostgreSQL server")?;
        Ok(Self {
            admin_url,
            admin,
            embedded,
            description,
        })
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        check_identifier(name)?;
        sqlx::query(&format!("create database {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        url_for(&self.admin_url, name)
    }

    /// Drops database `name`, disconnecting whoever still uses it.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        check_identifier(name)?;
        sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("dropping database {name}"))?;
        Ok(())
    }

    pub async fn settings(&self) -> Result<Settings> {
        let show = |name: &'static str| {
            let pool = self.admin.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!("show {name}"))
                    .fetch_one(&pool)
                    .await
                    .with_context(|| format!("reading the server setting {name}"))
            }
        };
        Ok(Settings {
            version: show("server_version").await?,
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            full_page_writes: show("full_page_writes").await?,
            wal_sync_method: show("wal_sync_method").await?,
            shared_buffers: show("shared_buffers").await?,
            max_connections: show("max_connections").await?,
        })
    }

    /// Closes the pool and stops the private cluster if this run started it.
    pub async fn stop(self) {
        self.admin.close().await;
        if let Some(embedded) = self.embedded {
            if let Err(e) = embedded.stop().await {
                tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
            }
        }
    }
}

/// `base` with its database replaced by `database`.
pub fn url_for(base: &str, database: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| Error::Usage(format!("DATABASE_URL does not parse as a URL: {e}")))?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// Only names the harness makes itself are ever formatted into SQL.
fn check_identifier(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() < 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(Error::step(
            "naming a database",
            format!("`{name}` is not a plain identifier"),
        ))
    }
}

/// A bounded pool on `url`, like the one `trailbook serve` opens (16 connections by default).
pub async fn pool(url: &str, max_connections: u32) -> Result<PgPool> {
    store::db::connect(
        url,
        &PoolConfig {
            max_connections,
            ..PoolConfig::default()
        },
    )
    .await
    .context("connecting to the benchmark database")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database of a URL is replaced, user, password, host and port kept.
    #[test]
    fn url_for_replaces_only_the_database() {
        assert_eq!(
            url_for(
                "postgres://u:p@127.0.0.1:5432/postgres",
                "trailbook_bench_1"
            )
            .ok(),
            Some("postgres://u:p@127.0.0.1:5432/trailbook_bench_1".to_owned())
        );
        assert!(check_identifier("trailbook_bench_1").is_ok());
        assert!(check_identifier("x; drop").is_err());
    }
}
