//! Pooled connections that are safe to cancel in the middle of a transaction.
//!
//! sqlx 0.8 returns a connection to the pool even when the future using it was dropped mid-transaction,
//! and one case is not rolled back: a future dropped while `BEGIN` is in flight leaves the connection
//! inside an open transaction (the rollback guard of `PgTransactionManager::begin` checks a depth that is
//! still 0). The next borrower's autocommit statements then run in that transaction and are lost. A runner
//! is cancelled exactly like that when its task is aborted, and a request handler when its client hangs up,
//! so transactions use a [`Guarded`] connection: unless
//! [`Guarded::release`] is reached, the connection is closed instead of reused, and PostgreSQL rolls back
//! whatever it was doing and releases its locks.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// A pooled connection that is closed, not returned to the pool, if dropped before [`Guarded::release`].
pub struct Guarded {
    conn: PoolConnection<Postgres>,
    armed: bool,
}

impl Guarded {
    pub async fn acquire(pool: &PgPool) -> sqlx::Result<Self> {
        Ok(Self {
            conn: pool.acquire().await?,
            armed: true,
        })
    }

    /// The work finished cleanly (committed or rolled back): the connection may go back to the pool.
    pub fn release(mut self) {
        self.armed = false;
    }
}

impl Deref for Guarded {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.armed {
            self.conn.close_on_drop();
        }
    }
}
