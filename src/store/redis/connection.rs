//! Pooled, shared Redis connections that know when they are broken.
//!
//! `bb8_redis::RedisConnectionManager` pings on every checkout (a second round trip per
//! request) and never reports a multiplexed connection as broken, so after a Redis
//! restart a pool without that ping hands out dead connections forever. This manager
//! instead marks a connection broken when a command on it fails at the transport level
//! or times out, and checkout tests only that mark, which costs no round trip.
//!
//! Behind Sentinel, opening a connection first asks the Sentinels for the current
//! primary, so the connection that replaces one broken by a failover reaches the new
//! primary.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bb8_redis::bb8;
use redis::{
    AsyncConnectionConfig, Client, RedisError, aio::MultiplexedConnection, sentinel::SentinelClient,
};
use tokio::sync::{Notify, futures::Notified};

const MARKED_BROKEN: &str = "connection marked broken";

/// At most one warning about failed connects per this many milliseconds.
const WARN_EVERY_MS: u64 = 5_000;

/// Failed connection attempts, told to the requests waiting on the pool.
///
/// bb8 hands connect errors only to its error sink and lets `Pool::get` wait out the
/// whole timeout; with this sink a waiting request learns at once that Redis refused,
/// and why.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnectFailures(Arc<FailureState>);

#[derive(Debug, Default)]
struct FailureState {
    notify: Notify,
    last: Mutex<Option<RedisError>>,
    warned_at_ms: AtomicU64,
}

impl ConnectFailures {
    /// Resolves at the next failed connect after this call.
    pub(super) fn notified(&self) -> Notified<'_> {
        self.0.notify.notified()
    }

    /// The most recent connect error.
    pub(super) fn last(&self) -> Option<RedisError> {
        self.0
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl bb8::ErrorSink<RedisError> for ConnectFailures {
    fn sink(&self, error: RedisError) {
        // bb8 also sinks failed checkout checks: a retired connection is no failure to
        // connect, and the pool goes on to open a fresh one.
        if error.to_string().contains(MARKED_BROKEN) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let warned = self.0.warned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(warned) >= WARN_EVERY_MS
            && self
                .0
                .warned_at_ms
                .compare_exchange(warned, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, "cannot connect to Redis");
        }
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        self.0.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// A multiplexed connection plus the mark shared by all its clones.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) redis: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl Connection {
    /// Whether the connection was retired.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Retires the connection: the pool drops it at its next checkout.
    pub(super) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

/// Opens connections with bounded connect and response times.
pub(super) struct Manager {
    source: Arc<Source>,
    config: AsyncConnectionConfig,
}

/// Where new connections go.
pub(super) enum Source {
    /// Always the same Redis.
    Client(Client),
    /// Whichever server the Sentinels name primary at the time of connecting.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Source {
    /// The client of the server to connect to now: behind Sentinel, the primary the
    /// Sentinels name (which checks that it says so with ROLE: during a failover it may
    /// be down, or not yet promoted).
    pub(super) async fn client(&self) -> Result<Client, RedisError> {
        match self {
            Self::Client(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password.
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

impl Manager {
    pub(super) fn new(source: Arc<Source>, config: AsyncConnectionConfig) -> Self {
        Self { source, config }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let redis = self
            .source
            .client()
            .await?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Connection {
            redis,
            broken: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), RedisError> {
        if conn.broken.load(Ordering::Relaxed) {
            Err(RedisError::from((redis::ErrorKind::Io, MARKED_BROKEN)))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}
