//! A pool of multiplexed connections to one Redis server, and the shared connection
//! taken from it that requests use while it works.
//!
//! Checkout sends nothing to Redis: a connection that failed at the transport level,
//! timed out or (behind Sentinel) turned read-only is marked broken, and the pool,
//! which tests only that mark, replaces it at the next checkout.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bb8_redis::bb8;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use tokio::time::{Instant, timeout_at};

use super::connection::{ConnectFailures, Connection, Manager, Source};
use crate::store::StoreError;

/// What every pool of a store shares.
#[derive(Clone, Copy)]
pub(super) struct PoolSettings {
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) pool_size: u32,
}

impl PoolSettings {
    /// A pool of connections to `source`; connects nothing yet.
    pub(super) fn pool(&self, source: Source, follows_sentinel: bool) -> Pooled {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let failures = ConnectFailures::default();
        let source = Arc::new(source);
        let pool = bb8::Pool::builder()
            .max_size(self.pool_size)
            .min_idle(Some(1))
            // Cheap: the manager only looks at the connection's broken mark.
            .test_on_check_out(true)
            .connection_timeout(self.connect_timeout)
            // Fail fast while Redis is down rather than retrying up to the timeout.
            .retry_connection(false)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(Manager::new(Arc::clone(&source), config.clone()));
        Pooled {
            source,
            pool,
            failures,
            current: Mutex::new(None),
            follows_sentinel,
            config,
            command_timeout: self.command_timeout,
        }
    }
}

/// The connections to one server: a pool, and the connection taken from it that
/// requests share.
pub(super) struct Pooled {
    pool: bb8::Pool<Manager>,
    /// Where its connections go, for connections of another kind (the validation
    /// cache's tracking connection).
    pub(super) source: Arc<Source>,
    failures: ConnectFailures,
    /// The connection requests use while it works, taken from the pool: one multiplexed
    /// socket pipelines concurrent requests best, and using it skips the pool's lock.
    /// A broken one is left to the pool, which replaces it at the next checkout.
    current: Mutex<Option<Connection>>,
    /// Behind Sentinel: a `READONLY` reply means the server was demoted, so the
    /// connection is retired and its replacement asks the Sentinels again.
    follows_sentinel: bool,
    /// How this pool's connections are opened.
    pub(super) config: AsyncConnectionConfig,
    /// The bound on one store operation, pool checkout included.
    pub(super) command_timeout: Duration,
}

impl Pooled {
    /// Whether the connections go to the primary the Sentinels name.
    pub(super) fn follows_sentinel(&self) -> bool {
        self.follows_sentinel
    }

    /// How many connections the pool holds.
    pub(super) fn connections(&self) -> u32 {
        self.pool.state().connections
    }

    /// The current connection, unless there is none or it broke.
    fn current_connection(&self) -> Option<Connection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|conn| !conn.is_broken())
            .cloned()
    }

    /// Runs one operation on this pool's shared connection by `deadline`. The outer
    /// error is the store's (no connection, or no answer in time); the inner one is
    /// Redis's answer. A connection that failed at the transport level, timed out or
    /// (behind Sentinel) turned read-only is retired.
    pub(super) async fn run<T, F, Fut>(
        &self,
        deadline: Instant,
        op: F,
    ) -> Result<RedisResult<T>, StoreError>
    where
        F: FnOnce(OpConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = match self.current_connection() {
            Some(conn) => conn,
            None => {
                let conn = self.checkout(deadline).await?;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                conn
            }
        };
        match timeout_at(deadline, op(OpConnection::shared(conn.redis.clone()))).await {
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error()
                    || e.is_io_error()
                    || e.is_timeout()
                    || (self.follows_sentinel && is_read_only(&e))
                {
                    conn.mark_broken();
                }
                Ok(Err(e))
            }
            Err(_) => {
                // A connection that stops answering may be half-open; start afresh.
                conn.mark_broken();
                Err(StoreError::Timeout(self.command_timeout))
            }
        }
    }

    /// A working connection from the pool, which opens one when needed.
    async fn checkout(&self, deadline: Instant) -> Result<Connection, StoreError> {
        let connect_failed = self.failures.notified();
        tokio::select! {
            biased;
            got = timeout_at(deadline, self.pool.get()) => match got {
                // Clone the handle and return the pooled slot at once: requests share it.
                Ok(Ok(pooled)) => Ok(pooled.clone()),
                Ok(Err(bb8::RunError::User(e))) => Err(store_error(e, self.command_timeout)),
                Ok(Err(bb8::RunError::TimedOut)) | Err(_) => {
                    Err(StoreError::Timeout(self.command_timeout))
                }
            },
            () = connect_failed => {
                let e = self.failures.last().expect("set before notifying");
                Err(store_error(e, self.command_timeout))
            }
        }
    }
}

/// The connection an operation sends its commands on: a pool's shared connection, or,
/// after an `ASK` redirection, a private one to the importing node.
pub(super) struct OpConnection {
    redis: MultiplexedConnection,
    /// Whether each command goes after an `ASKING` of its own. The importing node serves
    /// the slot only to the command right after `ASKING`, and an operation may send
    /// more than one: a script that node never loaded answers `NOSCRIPT`, and redis-rs
    /// then sends `SCRIPT LOAD` and the script again.
    asking: bool,
}

impl OpConnection {
    /// A pool's shared connection: commands go as they are.
    fn shared(redis: MultiplexedConnection) -> Self {
        Self {
            redis,
            asking: false,
        }
    }

    /// A private connection to the node an `ASK` named: `ASKING` before every command.
    /// Private, so that no other request's command slips between the two.
    pub(super) fn asking(redis: MultiplexedConnection) -> Self {
        Self {
            redis,
            asking: true,
        }
    }
}

impl ConnectionLike for OpConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if !self.asking {
            return self.redis.req_packed_command(cmd);
        }
        Box::pin(async move {
            redis::cmd("ASKING")
                .query_async::<()>(&mut self.redis)
                .await?;
            self.redis.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if !self.asking {
            return self.redis.req_packed_commands(pipeline, offset, count);
        }
        // One `ASKING` would cover only the pipeline's first command; the store sends
        // no pipelines.
        Box::pin(async {
            Err(RedisError::from((
                ErrorKind::Client,
                "pipelines cannot follow an ASK redirection",
            )))
        })
    }

    fn get_db(&self) -> i64 {
        self.redis.get_db()
    }
}

/// Whether Redis refused a write because the server is now a replica.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || e.to_string().contains("READONLY")
}

/// A Redis failure as the store reports it: "try again later", in either form.
pub(super) fn store_error(e: RedisError, command_timeout: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(command_timeout)
    } else {
        StoreError::Unavailable(Box::new(e))
    }
}
