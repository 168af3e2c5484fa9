//! Leadership: at most one active runner per projection across all processes, by a session-level advisory
//! lock held on a dedicated connection.
//!
//! The lock lives as long as the connection's session. A process that dies (killed, crashed, aborted task)
//! drops its connection, PostgreSQL ends the session and releases the lock, and a standby's next attempt
//! (every `leader_retry`) takes over. TCP keepalives on the lock connection make PostgreSQL notice a peer
//! that vanished without closing its socket (a dead host) within seconds rather than hours.
//!
//! The lock only keeps standbys idle. Correctness does not depend on it: every batch locks the projection's
//! checkpoint row first, so even two runners that both believed they lead could never apply the same
//! events twice or skip any (see `runner`).

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};

use crate::error::Result;

/// Advisory lock class (first key) of projection leadership: "tbpr".
pub(crate) const LEADER_CLASS: i32 = 0x7462_7072;
/// Advisory lock class of rebuilds: "tbrb". One rebuild per projection at a time.
pub(crate) const REBUILD_CLASS: i32 = 0x7462_7262;

/// The second key of a projection's advisory locks: a stable hash of its name (FNV-1a, 31 bits, so it
/// reads the same as an `oid` in `pg_locks`).
pub(crate) fn lock_key(name: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::try_from(hash & 0x7fff_ffff).unwrap_or_default()
}

/// `application_name` of this instance's lock connections (so `pg_stat_activity` and [`crate::status`]
/// show who leads), at most 63 bytes.
pub(crate) fn application_name(instance: &str) -> String {
    let mut name = format!("trailbook-projector {instance}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The instance id of this process, for `application_name`: host, pid and a random suffix.
pub(crate) fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let suffix: u32 = rand::random::<u32>() & 0xffff;
    format!("{host}:{}:{suffix:04x}", std::process::id())
}

/// Opens a connection of its own (outside the pool, so dropping it really ends the session).
pub(crate) async fn dedicated_connection(pool: &PgPool, instance: &str) -> Result<PgConnection> {
    let options = (*pool.connect_options())
        .clone()
        .application_name(&application_name(instance))
        .options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
        ]);
    let timeout = pool.options().get_acquire_timeout();
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
    }
}

/// A session-level advisory lock `(class, key)` on a dedicated connection.
pub(crate) struct AdvisoryLock {
    pool: PgPool,
    instance: String,
    class: i32,
    key: i32,
    conn: Option<PgConnection>,
    held: bool,
}

impl AdvisoryLock {
    pub(crate) fn new(pool: PgPool, instance: &str, class: i32, name: &str) -> Self {
        Self {
            pool,
            instance: instance.to_owned(),
            class,
            key: lock_key(name),
            conn: None,
            held: false,
        }
    }

    /// Takes the lock if nobody holds it; `Ok(false)` when another session does.
    pub(crate) async fn try_acquire(&mut self) -> Result<bool> {
        if self.held {
            return Ok(true);
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(dedicated_connection(&self.pool, &self.instance).await?),
        };
        let attempt = sqlx::query_scalar::<_, bool>("select pg_try_advisory_lock($1, $2)")
            .bind(self.class)
            .bind(self.key)
            .fetch_one(conn)
            .await;
        match attempt {
            Ok(held) => {
                self.held = held;
                Ok(held)
            }
            Err(e) => {
                self.conn = None;
                Err(e.into())
            }
        }
    }

    /// Whether the lock is still held: its connection still answers. A broken connection has lost the lock
    /// (its session is gone), and is dropped.
    pub(crate) async fn is_held(&mut self) -> bool {
        if !self.held {
            return false;
        }
        let alive = match &mut self.conn {
            Some(conn) => matches!(
                tokio::time::timeout(Duration::from_secs(5), conn.ping()).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        if !alive {
            self.conn = None;
            self.held = false;
        }
        alive
    }

    /// Releases the lock and closes the connection.
    pub(crate) async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if self.held {
                let _ = sqlx::query("select pg_advisory_unlock($1, $2)")
                    .bind(self.class)
                    .bind(self.key)
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
        }
        self.held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lock keys are stable, positive and distinct for the four projections.
    #[test]
    fn lock_keys_are_stable_positive_and_distinct() {
        let keys: Vec<i32> = crate::NAMES.iter().map(|n| lock_key(n)).collect();
        assert!(keys.iter().all(|k| *k >= 0));
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(lock_key("bookings"), lock_key("bookings"));
    }

    /// Application names fit PostgreSQL's 63-byte limit.
    #[test]
    fn application_names_fit_postgres_limit() {
        let long = "x".repeat(200);
        assert_eq!(application_name(&long).len(), 63);
        assert_eq!(application_name("a"), "trailbook-projector a");
    }
}
