//! Everything a worker process runs, wired: the reactor and the worker loop with every handler built so
//! far. This is what `trailbook workers` and `trailbook serve` call.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use store::{EventStore, StoreConfig};
use tokio::sync::watch;

use crate::booking_flow::{PartnerClient, ReconcileHandler, ReserveHandler};
use crate::compensation::{CompensateHandler, CompensationLimits};
use crate::error::Result;
use crate::reactor::{self, kinds, ReactorConfig};
use crate::worker::{Worker, WorkerConfig};

/// Configuration of a worker process.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub worker: WorkerConfig,
    pub reactor: ReactorConfig,
    /// Run the reactor in this process (any number of processes may; batches are serialised).
    pub run_reactor: bool,
    /// Base URL of the partner API, e.g. `http://127.0.0.1:8090` (`TRAILBOOK_PARTNER_URL`).
    pub partner_url: String,
    /// Per-call timeout of partner calls; a timeout is an unknown outcome, settled by reconciliation.
    pub partner_timeout: Duration,
    pub compensation: CompensationLimits,
    pub store: StoreConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            worker: WorkerConfig::default(),
            reactor: ReactorConfig::default(),
            run_reactor: true,
            partner_url: "http://127.0.0.1:8090".to_owned(),
            partner_timeout: Duration::from_secs(5),
            compensation: CompensationLimits::default(),
            store: StoreConfig::default(),
        }
    }
}

/// Runs the reactor and the workers until `shutdown` completes, then lets jobs in flight finish.
///
/// Kinds without a handler yet (`report.generate`, `report.send`) stay `queued`, visible to operators.
pub async fn run(
    pool: PgPool,
    config: ServiceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let store = EventStore::new(pool.clone(), config.store.clone());
    let partner = PartnerClient::new(&config.partner_url, config.partner_timeout)?;
    let worker = Worker::new(pool.clone(), config.worker.clone())
        .register(
            kinds::PARTNER_RESERVE,
            ReserveHandler {
                store: store.clone(),
                partner: partner.clone(),
            },
        )
        .register(
            kinds::PARTNER_RECONCILE,
            ReconcileHandler {
                store: store.clone(),
                partner: partner.clone(),
            },
        )
        .register(
            kinds::PARTNER_COMPENSATE,
            CompensateHandler::new(store, partner, config.compensation),
        );
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let work = async {
        let reactor = async {
            if config.run_reactor {
                reactor::run(pool.clone(), config.reactor.clone(), stopped(stop.clone())).await
            } else {
                Ok(())
            }
        };
        let (a, b) = tokio::join!(reactor, worker.run(stopped(stop.clone())));
        a.and(b)
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            work.await
        }
        result = &mut work => result,
    }
}
