//! The database of a command: open it (a private cluster when no URL is given), migrate it, close it.

use std::future::Future;

use store::db::{Database, PoolConfig};
use store::StoreConfig;

use crate::cli::DbArgs;
use crate::Failure;

pub fn store_config(args: &DbArgs) -> StoreConfig {
    StoreConfig {
        snapshot_every: args.snapshot_every,
        ..StoreConfig::default()
    }
}

pub async fn open(args: &DbArgs) -> Result<Database, Failure> {
    let url = args.database_url.as_deref().filter(|u| !u.is_empty());
    let config = PoolConfig {
        max_connections: args.db_max_connections.max(1),
        ..PoolConfig::default()
    };
    Ok(Database::open(url, &args.data_dir, &config).await?)
}

/// Opens and migrates the database, runs `work` with it, and closes it (stopping a private cluster).
pub async fn with_migrated_db<F, Fut>(db_args: &DbArgs, work: F) -> Result<(), Failure>
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = (Database, Result<(), Failure>)>,
{
    let db = open(db_args).await?;
    if let Err(e) = store::db::migrate(&db.pool).await {
        db.close().await;
        return Err(e.into());
    }
    // Migrations ran as the owner; everything else runs as the runtime role, which cannot edit the log.
    let db = db.into_runtime().await?;
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
