//! Pooled, shared Redis connections that know when they are broken.
//!
//! `bb8_redis::RedisConnectionManager` pings on every checkout (a second round trip per
//! request) and never reports a multiplexed connection as broken, so after a Redis
//! restart a pool without that ping hands out dead connections forever. This manager
//! instead marks a connection broken when a command on it fails at the transport level
//! or times out, and checkout tests only that mark, which costs no round trip.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bb8_redis::bb8;
use redis::{AsyncConnectionConfig, Client, RedisError, aio::MultiplexedConnection};

/// A multiplexed connection plus the mark shared by all its clones.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) redis: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl Connection {
    /// Retires the connection: the pool drops it at its next checkout.
    pub(super) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

/// Opens connections with bounded connect and response times.
pub(super) struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password.
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

impl Manager {
    pub(super) fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self { client, config }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let redis = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Connection {
            redis,
            broken: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), RedisError> {
        if conn.broken.load(Ordering::Relaxed) {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "connection marked broken",
            )))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}
