//! A fresh, migrated database per test ([`TestDb`]), on the server of `DATABASE_URL` or on a private
//! cluster.
//!
//! Tests never share state: each [`TestDb`] is a new database named `tbtest_<unix seconds>_<random>`,
//! dropped when the value is dropped. Databases left behind by a crashed run are dropped by the next run
//! once they are an hour old. Without `DATABASE_URL` the tests start (once, and then reuse) a private
//! PostgreSQL cluster under `$TMPDIR/trailbook-test`.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::db::{self, PoolConfig};
use crate::embedded::EmbeddedPostgres;
use crate::error::{Error, Result};

/// How to reach the test server: a URL for its maintenance database, plus how to build one per database.
#[derive(Debug, Clone)]
struct Server {
    /// URL with `{db}` where the database name goes.
    template: String,
}

impl Server {
    fn url(&self, database: &str) -> String {
        self.template.replace("{db}", database)
    }
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> Result<&'static Server> {
    SERVER
        .get_or_try_init(|| async {
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => {
                    db::parse_url(&url)?;
                    Server {
                        template: replace_database(&url),
                    }
                }
                _ => {
                    let dir = std::env::temp_dir().join("trailbook-test");
                    let pg = EmbeddedPostgres::start(&dir).await?;
                    Server {
                        template: pg.url("{db}"),
                    }
                }
            };
            drop_stale_databases(&server).await?;
            Ok::<_, Error>(server)
        })
        .await
}

/// Swaps the database path segment of `url` for the `{db}` placeholder.
fn replace_database(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{base}/{{db}}{query}")
}

async fn drop_stale_databases(server: &Server) -> Result<()> {
    let mut admin = PgConnection::connect(&server.url("postgres")).await?;
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'tbtest\\_%'")
            .fetch_all(&mut admin)
            .await?;
    let cutoff = unix_now().saturating_sub(3600);
    for name in names {
        let created = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if created < cutoff {
            let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                .execute(&mut admin)
                .await;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh, migrated database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    /// Full connection URL (for starting a `trailbook` process against this database).
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> Result<Self> {
        let db = Self::empty().await?;
        db::migrate(&db.pool).await?;
        Ok(db)
    }

    /// Creates a new database without running migrations.
    pub async fn empty() -> Result<Self> {
        let server = server().await?;
        let name = format!("tbtest_{}_{}", unix_now(), uuid::Uuid::new_v4().simple());
        let admin_url = server.url("postgres");
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await?;
        let url = server.url(&name);
        let pool = db::connect(
            &url,
            &PoolConfig {
                max_connections: 20,
                ..PoolConfig::default()
            },
        )
        .await?;
        Ok(Self {
            pool,
            url,
            name,
            admin_url,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with its own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replace_database_keeps_credentials_and_query() {
        assert_eq!(
            replace_database("postgres://u:p@h:5432/app?sslmode=disable"),
            "postgres://u:p@h:5432/{db}?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432/{db}"
        );
    }
}
