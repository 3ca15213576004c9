//! The production token store: Redis through a bb8 pool of multiplexed connections.
//!
//! Layout, with `{…}` a Redis Cluster hash tag so that one user's keys share a slot:
//!
//! - `<prefix>:{<sku>:<openid>}:t:<token id>` → `<issued at ms>|<device>`, with the
//!   token's TTL. Validation is one `EXISTS` on this key.
//! - `<prefix>:{<sku>:<openid>}:u` → sorted set of the user's token ids scored by
//!   expiry, for the device limit, listing and logout everywhere.
//!
//! Issue, rotate and revoke are Lua scripts, so each is atomic; none uses `KEYS` or
//! `SCAN`. The token id is the base64url SHA-256 of the token: Redis never sees a token.

use std::{future::Future, sync::Arc, time::Duration};

use bb8_redis::bb8;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Script, aio::MultiplexedConnection};
use tokio::time::{Instant, timeout_at};

use self::connection::{ConnectFailures, Connection, Manager};
use super::{IssueOptions, Issued, StoreError, TokenInfo, TokenStore};
use crate::{
    config::Sku,
    token::{ParsedToken, TOKEN_ID_LEN, Token, TokenHash},
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
/// Requests share a few multiplexed connections: an operation borrows a connection from
/// the pool only long enough to clone its handle, so concurrent requests pipeline onto
/// the same sockets instead of queueing for one each. A connection that fails or times
/// out is replaced on its next checkout; checkout itself sends nothing to Redis.
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
            revoke: Script::new(include_str!("revoke.lua")),
            revoke_all: Script::new(include_str!("revoke_all.lua")),
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

    /// How many multiplexed connections to keep (each serves many requests at once).
    /// Default: 4.
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

impl Inner {
    /// Runs one operation on a shared connection within the command timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.command_timeout;
        let connect_failed = self.failures.notified();
        let conn: Connection = tokio::select! {
            biased;
            got = timeout_at(deadline, self.pool.get()) => match got {
                // Clone the handle and return the pooled slot at once: requests share it.
                Ok(Ok(pooled)) => pooled.clone(),
                Ok(Err(bb8::RunError::User(e))) => return Err(self.error(e)),
                Ok(Err(bb8::RunError::TimedOut)) | Err(_) => {
                    return Err(StoreError::Timeout(self.command_timeout));
                }
            },
            () = connect_failed => {
                let e = self.failures.last().expect("set before notifying");
                return Err(self.error(e));
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

    fn error(&self, e: RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.command_timeout)
        } else {
            StoreError::Unavailable(Box::new(e))
        }
    }

    /// `<prefix>:{<sku>:<openid>}:` — everything of one user shares this tag.
    fn user_tag(&self, sku: &str, open_id: &str) -> String {
        // Room for the longest key built from it: `t:` and a token id.
        let mut tag =
            String::with_capacity(self.prefix.len() + sku.len() + open_id.len() + 7 + TOKEN_ID_LEN);
        tag.push_str(&self.prefix);
        tag.push_str(":{");
        tag.push_str(sku);
        tag.push(':');
        tag.push_str(open_id);
        tag.push_str("}:");
        tag
    }

    fn token_prefix(&self, sku: &str, open_id: &str) -> String {
        let mut prefix = self.user_tag(sku, open_id);
        prefix.push_str("t:");
        prefix
    }

    fn index_key(&self, sku: &str, open_id: &str) -> String {
        let mut key = self.user_tag(sku, open_id);
        key.push('u');
        key
    }
}

fn token_key(token_prefix: &str, hash: &TokenHash) -> String {
    let mut key = String::with_capacity(token_prefix.len() + TOKEN_ID_LEN);
    key.push_str(token_prefix);
    key.push_str(hash.id().as_str());
    key
}

/// Splits a stored `<issued at ms>|<device>` value.
fn parse_value(value: &str) -> Result<(u64, Option<String>), StoreError> {
    let (issued, device) = value
        .split_once('|')
        .ok_or(StoreError::Protocol("token value without '|'"))?;
    let issued = issued
        .parse()
        .map_err(|_| StoreError::Protocol("token value with a bad timestamp"))?;
    Ok((issued, (!device.is_empty()).then(|| device.to_owned())))
}

impl TokenStore for RedisTokenStore {
    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<TokenInfo, StoreError>> + Send {
        let hash = token.hash();
        let prefix = self.inner.token_prefix(token.sku(), token.open_id());
        let index = self.inner.index_key(token.sku(), token.open_id());
        let device = options.device().map(str::to_owned);
        let ttl = options.ttl_millis();
        let max = options.max_tokens_per_user();
        async move {
            let key = token_key(&prefix, &hash);
            let (issued_at_ms, expires_at_ms) = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .issue
                        .key(&key)
                        .key(&index)
                        .arg(&prefix)
                        .arg(hash.id().as_str())
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
        // One allocation: the tag has room for the token id.
        let mut key = self.inner.token_prefix(token.sku(), token.open_id());
        key.push_str(token.hash().id().as_str());
        let inner = Arc::clone(&self.inner);
        async move {
            inner
                .run(|mut c| async move {
                    redis::cmd("EXISTS")
                        .arg(&key)
                        .query_async::<bool>(&mut c)
                        .await
                })
                .await
        }
    }

    fn revoke_hash(
        &self,
        sku: &str,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = token_key(&self.inner.token_prefix(sku, open_id), hash);
        let index = self.inner.index_key(sku, open_id);
        let id = hash.id();
        async move {
            self.inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .revoke
                        .key(&key)
                        .key(&index)
                        .arg(id.as_str())
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
        let prefix = self.inner.token_prefix(sku.as_str(), open_id);
        let index = self.inner.index_key(sku.as_str(), open_id);
        async move {
            self.inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .revoke_all
                        .key(&index)
                        .arg(&prefix)
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
        let prefix = self.inner.token_prefix(sku.as_str(), open_id);
        let index = self.inner.index_key(sku.as_str(), open_id);
        async move {
            let flat = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .list
                        .key(&index)
                        .arg(&prefix)
                        .invoke_async::<Vec<String>>(&mut c)
                        .await
                })
                .await?;
            flat.chunks(3)
                .map(|entry| {
                    let [id, expires, value] = entry else {
                        return Err(StoreError::Protocol("list reply not in triples"));
                    };
                    let hash =
                        TokenHash::from_id(id).ok_or(StoreError::Protocol("bad token id"))?;
                    let expires_at_ms = expires
                        .parse::<f64>()
                        .map_err(|_| StoreError::Protocol("bad expiry score"))?
                        as u64;
                    let (issued_at_ms, device) = parse_value(value)?;
                    Ok(TokenInfo {
                        hash,
                        issued_at_ms,
                        expires_at_ms,
                        device,
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
        let prefix = self.inner.token_prefix(token.sku(), token.open_id());
        let index = self.inner.index_key(token.sku(), token.open_id());
        let ttl = options.ttl_millis();
        let max = options.max_tokens_per_user();
        async move {
            let successor = successor.map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            let new_hash = successor.hash();
            let old_key = token_key(&prefix, &old_hash);
            let new_key = token_key(&prefix, &new_hash);
            let reply = self
                .inner
                .run(|mut c| async move {
                    self.inner
                        .scripts
                        .rotate
                        .key(&old_key)
                        .key(&index)
                        .key(&new_key)
                        .arg(&prefix)
                        .arg(old_hash.id().as_str())
                        .arg(new_hash.id().as_str())
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
    fn values_split_at_the_first_bar() {
        assert_eq!(parse_value("17|").unwrap(), (17, None));
        assert_eq!(parse_value("17|a|b").unwrap(), (17, Some("a|b".to_owned())));
        assert!(parse_value("17").is_err());
        assert!(parse_value("x|d").is_err());
    }
}
