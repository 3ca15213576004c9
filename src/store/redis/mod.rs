//! The production token store: Redis through a shared multiplexed connection, taken
//! from a bb8 pool.
//!
//! One hash per user, `<prefix>:{<sku>:<openid>}` (`{…}` is a Redis Cluster hash tag):
//! each field is a token's SHA-256 (32 raw bytes), each value
//! `<expires at ms>|<issued at ms>|<device>`. The hash expires with its longest-lived
//! token; expired fields are dropped whenever the user's tokens are written or listed.
//! Validation is one `HGET`, its expiry checked against this machine's clock.
//!
//! One hash per user rather than one key per token halves the memory per token (230
//! bytes for a user with one token, 92 with ten; a key per token plus a sorted-set
//! index took 460) and makes every operation on a user's tokens a single-key
//! Lua script: atomic, and valid on Redis Cluster. Nothing uses `KEYS` or `SCAN`, and
//! Redis never sees a token.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bb8_redis::bb8;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Script, aio::MultiplexedConnection};
use tokio::time::{Instant, timeout_at};

use self::connection::{ConnectFailures, Connection, Manager};
use super::{IssueOptions, Issued, StoreError, TokenInfo, TokenStore};
use crate::{
    config::Sku,
    store::now_millis,
    token::{ParsedToken, Token, TokenHash},
};

mod connection;

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "mpauthx";
/// The default bound on opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on one store operation, pool checkout included.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of multiplexed connections.
pub const DEFAULT_POOL_SIZE: u32 = 4;

/// Keeps tokens in Redis (standalone), shared by every instance of the application.
///
/// Requests share one multiplexed connection, so concurrent requests pipeline onto the
/// same socket instead of queueing for one each (the load benchmark in BENCHMARKS.md
/// found one socket cheaper per request, for the server and for Redis, than several).
/// The connection comes from a pool; one that fails or times out is retired, and the
/// next request takes a fresh one from the pool. Checkout itself sends nothing to Redis.
/// Every operation is bounded by the command timeout, so an outage turns into a prompt
/// [`StoreError`] (and a 503 from [`MpAuthLayer`](crate::MpAuthLayer)).
///
/// ```no_run
/// use std::time::Duration;
/// use mpauthx::RedisTokenStore;
///
/// # async fn run() -> Result<(), mpauthx::StoreError> {
/// let store = RedisTokenStore::builder("redis://127.0.0.1:6379/")
///     .with_key_prefix("myapp")
///     .with_command_timeout(Duration::from_millis(500))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: bb8::Pool<Manager>,
    failures: ConnectFailures,
    prefix: Box<str>,
    connect_timeout: Duration,
    command_timeout: Duration,
    scripts: Scripts,
    /// The connection requests use while it works, taken from the pool: one multiplexed
    /// socket pipelines concurrent requests best, and using it skips the pool's lock.
    /// A broken one is left to the pool, which replaces it at the next checkout.
    current: Mutex<Option<Connection>>,
}

struct Scripts {
    issue: Script,
    rotate: Script,
    revoke: Script,
    revoke_all: Script,
    list: Script,
}

impl Scripts {
    fn new() -> Self {
        const COMMON: &str = include_str!("common.lua");
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            issue: with_common(include_str!("issue.lua")),
            rotate: with_common(include_str!("rotate.lua")),
            revoke: with_common(include_str!("revoke.lua")),
            revoke_all: with_common(include_str!("revoke_all.lua")),
            list: with_common(include_str!("list.lua")),
        }
    }
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.pool.state();
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.inner.prefix)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("command_timeout", &self.inner.command_timeout)
            .field("connections", &state.connections)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`RedisTokenStore`]; [`build`](Self::build) connects.
pub struct RedisTokenStoreBuilder {
    url: String,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    pool_size: u32,
}

impl std::fmt::Debug for RedisTokenStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisTokenStoreBuilder")
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl RedisTokenStoreBuilder {
    /// Prefixes every key, so several applications can share one Redis.
    /// Default: `mpauthx`. It must not contain `{` or `}`, which would break the
    /// per-user hash tags.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bounds opening a connection. Default: 1 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds one store operation, waiting for a connection included. Default: 1 s.
    ///
    /// It is also how long a request waits before a Redis outage turns into a 503.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many multiplexed connections the pool may hold (each serves many requests at
    /// once). Requests use one at a time, until it breaks; the others stand by as its
    /// replacement. Default: 4.
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Connects and checks that Redis answers.
    pub async fn build(self) -> Result<RedisTokenStore, StoreError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreError::InvalidConfig(
                "key prefix must be non-empty and free of '{' and '}'",
            ));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(StoreError::InvalidConfig("timeouts must be non-zero"));
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| StoreError::InvalidConfig("invalid Redis URL"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let failures = ConnectFailures::default();
        let pool = bb8::Pool::builder()
            .max_size(self.pool_size)
            .min_idle(Some(1))
            // Cheap: the manager only looks at the connection's broken mark.
            .test_on_check_out(true)
            .connection_timeout(self.connect_timeout)
            // Fail fast while Redis is down rather than retrying up to the timeout.
            .retry_connection(false)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(Manager::new(client, config));
        let store = RedisTokenStore {
            inner: Arc::new(Inner {
                pool,
                failures,
                prefix: self.prefix.into_boxed_str(),
                connect_timeout: self.connect_timeout,
                command_timeout: self.command_timeout,
                scripts: Scripts::new(),
                current: Mutex::new(None),
            }),
        };
        store.ping().await?;
        Ok(store)
    }
}

impl RedisTokenStore {
    /// Settings for a store at `url` (`redis://[:password@]host:port/db`, or
    /// `rediss://` with TLS support enabled in `redis`).
    pub fn builder(url: impl Into<String>) -> RedisTokenStoreBuilder {
        RedisTokenStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// Connects with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).build().await
    }

    /// Sends a `PING`, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}

impl RedisTokenStore {
    /// Runs a single-key Lua script on the store's connection, within the command
    /// timeout. Crate-internal: the login throttle keeps its counters beside the tokens.
    pub(crate) async fn invoke_script<R>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> Result<R, StoreError>
    where
        R: redis::FromRedisValue + Send,
    {
        self.inner
            .run(|mut c| async move {
                let mut invocation = script.key(key);
                for arg in args {
                    invocation.arg(*arg);
                }
                invocation.invoke_async::<R>(&mut c).await
            })
            .await
    }

    /// This store's key prefix.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
    /// Runs one operation on a shared connection within the command timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.command_timeout;
        let conn = match self.current_connection() {
            Some(conn) => conn,
            None => {
                let conn = self.checkout(deadline).await?;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                conn
            }
        };
        match timeout_at(deadline, op(conn.redis.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() {
                    conn.mark_broken();
                }
                Err(self.error(e))
            }
            Err(_) => {
                // A connection that stops answering may be half-open; start afresh.
                conn.mark_broken();
                Err(StoreError::Timeout(self.command_timeout))
            }
        }
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

    /// A working connection from the pool, which opens one when needed.
    async fn checkout(&self, deadline: Instant) -> Result<Connection, StoreError> {
        let connect_failed = self.failures.notified();
        tokio::select! {
            biased;
            got = timeout_at(deadline, self.pool.get()) => match got {
                // Clone the handle and return the pooled slot at once: requests share it.
                Ok(Ok(pooled)) => Ok(pooled.clone()),
                Ok(Err(bb8::RunError::User(e))) => Err(self.error(e)),
                Ok(Err(bb8::RunError::TimedOut)) | Err(_) => {
                    Err(StoreError::Timeout(self.command_timeout))
                }
            },
            () = connect_failed => {
                let e = self.failures.last().expect("set before notifying");
                Err(self.error(e))
            }
        }
    }

    fn error(&self, e: RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.command_timeout)
        } else {
            StoreError::Unavailable(Box::new(e))
        }
    }

    /// `<prefix>:{<sku>:<openid>}`: all of one user's tokens.
    fn user_key(&self, sku: &str, open_id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + sku.len() + open_id.len() + 4);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(sku);
        key.push(':');
        key.push_str(open_id);
        key.push('}');
        key
    }
}

/// A stored `<expires at ms>|<issued at ms>|<device>` value.
struct Value {
    expires_at_ms: u64,
    issued_at_ms: u64,
    device: Option<String>,
}

impl Value {
    fn parse(value: &str) -> Result<Self, StoreError> {
        let mut parts = value.splitn(3, '|');
        let mut number = || {
            parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or(StoreError::Protocol("token value without its times"))
        };
        let (expires_at_ms, issued_at_ms) = (number()?, number()?);
        let device = parts.next().filter(|d| !d.is_empty()).map(str::to_owned);
        Ok(Self {
            expires_at_ms,
            issued_at_ms,
            device,
        })
    }

    /// The expiry alone, without allocating: the validation path.
    fn expires_at_ms(value: &[u8]) -> Option<u64> {
        let end = value.iter().position(|&b| b == b'|')?;
        std::str::from_utf8(&value[..end]).ok()?.parse().ok()
    }
}

impl TokenStore for RedisTokenStore {
    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<TokenInfo, StoreError>> + Send {
        let hash = token.hash();
        let key = self.inner.user_key(token.sku(), token.open_id());
        let device = options.device().map(str::to_owned);
        let ttl = options.ttl_millis();
        let max = options.max_tokens_per_user();
        async move {
            let (issued_at_ms, expires_at_ms) = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .issue
                        .key(&key)
                        .arg(&hash.as_bytes()[..])
                        .arg(ttl)
                        .arg(max)
                        .arg(device.as_deref().unwrap_or(""))
                        .invoke_async::<(u64, u64)>(&mut c)
                        .await
                })
                .await?;
            Ok(TokenInfo {
                hash,
                issued_at_ms,
                expires_at_ms,
                device: options.device().map(str::to_owned),
            })
        }
    }

    fn validate(
        &self,
        token: &ParsedToken<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        let inner = Arc::clone(&self.inner);
        async move {
            let value = inner
                .run(|mut c| async move {
                    redis::cmd("HGET")
                        .arg(&key)
                        .arg(&hash.as_bytes()[..])
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                })
                .await?;
            Ok(value
                .as_deref()
                .and_then(Value::expires_at_ms)
                .is_some_and(|expires| expires > now_millis()))
        }
    }

    fn revoke_hash(
        &self,
        sku: &str,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.inner.user_key(sku, open_id);
        let hash = *hash;
        async move {
            self.inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .revoke
                        .key(&key)
                        .arg(&hash.as_bytes()[..])
                        .invoke_async::<bool>(&mut c)
                        .await
                })
                .await
        }
    }

    fn revoke_all(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let key = self.inner.user_key(sku.as_str(), open_id);
        async move {
            self.inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .revoke_all
                        .key(&key)
                        .invoke_async::<usize>(&mut c)
                        .await
                })
                .await
        }
    }

    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
        let key = self.inner.user_key(sku.as_str(), open_id);
        async move {
            let pairs = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .list
                        .key(&key)
                        .invoke_async::<Vec<(Vec<u8>, String)>>(&mut c)
                        .await
                })
                .await?;
            pairs
                .into_iter()
                .map(|(field, value)| {
                    let bytes: [u8; 32] = field
                        .try_into()
                        .map_err(|_| StoreError::Protocol("token hash is not 32 bytes"))?;
                    let value = Value::parse(&value)?;
                    Ok(TokenInfo {
                        hash: TokenHash::from_bytes(bytes),
                        issued_at_ms: value.issued_at_ms,
                        expires_at_ms: value.expires_at_ms,
                        device: value.device,
                    })
                })
                .collect()
        }
    }

    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send {
        let successor = Token::successor_of(token);
        let old_hash = token.hash();
        let key = self.inner.user_key(token.sku(), token.open_id());
        let ttl = options.ttl_millis();
        let max = options.max_tokens_per_user();
        async move {
            let successor = successor.map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            let new_hash = successor.hash();
            let reply = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .rotate
                        .key(&key)
                        .arg(&old_hash.as_bytes()[..])
                        .arg(&new_hash.as_bytes()[..])
                        .arg(ttl)
                        .arg(max)
                        .invoke_async::<Option<(u64, u64, String)>>(&mut c)
                        .await
                })
                .await?;
            Ok(reply.map(|(issued_at_ms, expires_at_ms, device)| Issued {
                token: successor,
                info: TokenInfo {
                    hash: new_hash,
                    issued_at_ms,
                    expires_at_ms,
                    device: (!device.is_empty()).then_some(device),
                },
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_into_times_and_device() {
        let value = Value::parse("20|17|").unwrap();
        assert_eq!(
            (value.expires_at_ms, value.issued_at_ms, value.device),
            (20, 17, None)
        );
        let value = Value::parse("20|17|a|b").unwrap();
        assert_eq!(value.device.as_deref(), Some("a|b"));
        assert!(Value::parse("17").is_err());
        assert!(Value::parse("x|1|d").is_err());
        assert_eq!(Value::expires_at_ms(b"20|17|d"), Some(20));
        assert_eq!(Value::expires_at_ms(b"20"), None);
        assert_eq!(Value::expires_at_ms(b"x|1|"), None);
    }
}
