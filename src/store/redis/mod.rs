//! The production token store: Redis through a shared multiplexed connection, taken
//! from a bb8 pool; or Redis Cluster, routed by hash slot over one such pool per
//! primary; or the primary that Redis Sentinel names, through the same pool.
//!
//! One hash per user, `<prefix>:{<sku>:<openid>}` (`{…}` is a Redis Cluster hash tag):
//! each field is a token's SHA-256 (32 raw bytes), each value
//! `<expires at ms>|<issued at ms>|<session started at ms>|<device>` (or, for a few
//! seconds after a write whose answer may have been lost, a tombstone: see
//! `common.lua`). The hash expires with its longest-lived
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
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use redis::Script;

pub use self::builder::RedisTokenStoreBuilder;
pub(crate) use self::tracking::{Invalidate, Tracker};
use self::{
    builder::Opened,
    cluster::Backend,
    record::Value,
    scripts::Scripts,
    target::{NodeAuth, Target},
};
use super::{
    IssueOptions, Issued, SignOutReason, StoreBuildError, StoreError, TokenInfo, TokenStatus,
    TokenStore, notice_millis, now_millis,
};
use crate::token::{ParsedToken, Sku, Token, TokenHash};

mod builder;
mod cluster;
mod connection;
mod pool;
mod record;
mod scripts;
mod target;
mod tracking;

/// Keeps tokens in Redis, shared by every instance of the application: one standalone
/// Redis ([`builder`](Self::builder)), a Redis Cluster
/// ([`cluster_builder`](Self::cluster_builder)), or the primary that Redis Sentinel
/// names ([`sentinel_builder`](Self::sentinel_builder)). All three behave alike.
///
/// Requests share one multiplexed connection, so concurrent requests pipeline onto the
/// same socket instead of queueing for one each (the load benchmark in BENCHMARKS.md
/// found one socket cheaper per request, for the server and for Redis, than several).
/// The connection comes from a pool; one that fails or times out is retired, and the
/// next request takes a fresh one from the pool. Checkout itself sends nothing to Redis.
/// Every operation is bounded by the command timeout, so an outage turns into a prompt
/// [`StoreError`] (and a 503 from [`MpAuthLayer`](crate::MpAuthLayer)).
///
/// On a cluster, each primary has such a pool, and each operation goes to the primary
/// serving its user's hash slot (one slot per user), following `MOVED` and `ASK`
/// redirections; a failed primary fails only its own slots. Behind Sentinel, a retired
/// connection's replacement asks the Sentinels for the current primary, so the store
/// follows a failover.
///
/// ```no_run
/// use std::time::Duration;
/// use mpauthx::RedisTokenStore;
///
/// # async fn run() -> Result<(), mpauthx::StoreBuildError> {
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
    backend: Backend,
    prefix: Box<str>,
    connect_timeout: Duration,
    command_timeout: Duration,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("RedisTokenStore");
        match &self.inner.backend {
            Backend::Pooled(pooled) => s
                .field(
                    "backend",
                    &if pooled.follows_sentinel() {
                        "sentinel"
                    } else {
                        "standalone"
                    },
                )
                .field("connections", &pooled.connections()),
            Backend::Cluster(_) => s.field("backend", &"cluster"),
        };
        s.field("prefix", &self.inner.prefix)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("command_timeout", &self.inner.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisTokenStoreBuilder {
    /// Connects and checks that Redis answers.
    pub async fn build(self) -> Result<RedisTokenStore, StoreBuildError> {
        let Opened {
            backend,
            prefix,
            connect_timeout,
            command_timeout,
        } = self.open().await?;
        let store = RedisTokenStore {
            inner: Arc::new(Inner {
                backend,
                prefix,
                connect_timeout,
                command_timeout,
                scripts: Scripts::new(),
            }),
        };
        store.ping().await?;
        Ok(store)
    }
}

impl RedisTokenStore {
    /// Settings for a store at `url`:
    ///
    /// - `redis://[[user]:password@]host:port[/db]` (or `rediss://` with TLS support
    ///   enabled in `redis`): one standalone Redis.
    /// - `redis+cluster://[[user]:password@]host:port[,host:port…]`: a Redis Cluster,
    ///   reached through any of the seed nodes listed; the credentials apply to every
    ///   node. The same as [`cluster_builder`](Self::cluster_builder).
    /// - `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/db]`:
    ///   the primary the Sentinels listed name `<master name>`; the credentials and the
    ///   database apply to the primary, the Sentinels are reached without them. The same
    ///   as [`sentinel_builder`](Self::sentinel_builder) with
    ///   [`with_primary_auth`](RedisTokenStoreBuilder::with_primary_auth).
    ///
    /// A malformed multi-node URL makes [`build`](RedisTokenStoreBuilder::build) fail
    /// with [`StoreBuildError::InvalidSettings`].
    ///
    /// ```no_run
    /// use mpauthx::RedisTokenStore;
    ///
    /// # async fn run() -> Result<(), mpauthx::StoreBuildError> {
    /// // Whichever MPAUTHX_REDIS_URL says: one node, a cluster or Sentinel.
    /// let url = std::env::var("MPAUTHX_REDIS_URL")
    ///     .unwrap_or_else(|_| "redis+cluster://10.0.0.1:7000,10.0.0.2:7000".into());
    /// let store = RedisTokenStore::builder(url).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisTokenStoreBuilder {
        RedisTokenStoreBuilder::new(Target::parse(&url.into()))
    }

    /// Settings for a store on a Redis Cluster, reached through `seeds`: the URLs
    /// (`redis://[[user]:password@]host:port`) of some of its nodes, any one of which
    /// suffices to discover the rest. Each user's tokens live in one hash slot, so
    /// every operation stays a single-key, atomic command on one node.
    ///
    /// While a primary is down, operations on its slots fail with
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] (a 503, never a 401) and
    /// the other slots keep working; once a replica is promoted, the connection learns
    /// the new slot map and the failed slots work again.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use mpauthx::RedisTokenStore;
    ///
    /// # async fn run() -> Result<(), mpauthx::StoreBuildError> {
    /// let store = RedisTokenStore::cluster_builder([
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    ///     "redis://10.0.0.3:7000",
    /// ])
    /// .with_key_prefix("myapp")
    /// .with_command_timeout(Duration::from_millis(500))
    /// .build()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster_builder<I, S>(seeds: I) -> RedisTokenStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisTokenStoreBuilder::new(Ok(Target::Cluster(
            seeds.into_iter().map(Into::into).collect(),
        )))
    }

    /// Settings for a store on the primary that the Sentinels at `sentinels`
    /// (`redis://host:port` URLs, usually port 26379) monitor as `master_name`.
    ///
    /// Each new connection asks the Sentinels which server is the primary and checks
    /// that it says so (`ROLE`). When the primary fails, operations fail with
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] (a 503, never a 401) and
    /// the broken connection is retired; once the Sentinels have promoted a replica,
    /// the next connection reaches it. Credentials for the primary go in
    /// [`with_primary_auth`](RedisTokenStoreBuilder::with_primary_auth).
    ///
    /// ```no_run
    /// use mpauthx::RedisTokenStore;
    ///
    /// # async fn run() -> Result<(), mpauthx::StoreBuildError> {
    /// let store = RedisTokenStore::sentinel_builder(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "mymaster",
    /// )
    /// .with_primary_auth(None, Some("s3cret"), 0)
    /// .build()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel_builder<I, S>(
        sentinels: I,
        master_name: impl Into<String>,
    ) -> RedisTokenStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisTokenStoreBuilder::new(Ok(Target::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master_name.into(),
            node: NodeAuth::default(),
        }))
    }

    /// Connects with default settings; `url` as in [`builder`](Self::builder).
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreBuildError> {
        Self::builder(url).build().await
    }

    /// Sends a `PING`, for health checks (on a cluster, to one node).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .backend
            .run(None, |mut c| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await
    }
}

impl RedisTokenStore {
    /// Runs a single-key Lua script on the store's connection, within the command
    /// timeout. Crate-internal: the login throttle keeps its counters beside the tokens.
    /// On a cluster the script runs on the node that holds `key`.
    pub(crate) async fn invoke_script<R>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> Result<R, StoreError>
    where
        R: redis::FromRedisValue + Send,
    {
        let args: Vec<String> = args.iter().copied().map(number).collect();
        let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
        self.invoke_script_bytes(script, key, &args).await
    }

    /// Like [`invoke_script`](Self::invoke_script), with arguments as bytes.
    pub(crate) async fn invoke_script_bytes<R>(
        &self,
        script: &Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<R, StoreError>
    where
        R: redis::FromRedisValue + Send,
    {
        scripts::eval(&self.inner.backend, script, key, args).await
    }

    /// This store's key prefix.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
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

impl TokenStore for RedisTokenStore {
    type Validation = RedisValidation;

    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Issued, StoreError>> + Send {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        async move {
            let now = now_millis();
            let expires_at_ms = now.saturating_add(options.login_ttl_millis());
            let device = options.device().unwrap_or("");
            let evicted: Option<Vec<Vec<u8>>> = scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.issue,
                &key,
                &[
                    &hash.as_bytes()[..],
                    number(now).as_bytes(),
                    number(expires_at_ms).as_bytes(),
                    number(options.max_tokens_per_user().into()).as_bytes(),
                    device.as_bytes(),
                    number(options.retry_grace_millis()).as_bytes(),
                ],
            )
            .await?;
            let info = TokenInfo {
                hash,
                issued_at_ms: now,
                expires_at_ms,
                session_started_at_ms: now,
                device: options.device().map(str::to_owned),
            };
            // The field was taken: this token was taken back (or issued) before.
            let evicted = evicted.ok_or(StoreError::Protocol(
                "the token was issued or taken back before",
            ))?;
            Ok(Issued {
                info,
                evicted: hashes(evicted)?,
            })
        }
    }

    fn undo_issue(
        &self,
        token: &ParsedToken<'_>,
    ) -> impl Future<Output = Result<Vec<TokenHash>, StoreError>> + Send {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        async move {
            let now = number(now_millis());
            let marker = number(UNDONE_MARKER_MS);
            let restored: Vec<Vec<u8>> = scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.undo,
                &key,
                &[&hash.as_bytes()[..], now.as_bytes(), marker.as_bytes()],
            )
            .await?;
            hashes(restored)
        }
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        let inner = Arc::clone(&self.inner);
        RedisValidation(Box::pin(async move {
            let key = key.as_str();
            let value = inner
                .backend
                .run(Some(key), |mut c| async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg(&hash.as_bytes()[..])
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                })
                .await?;
            Ok(value.map_or(TokenStatus::Unknown, |value| {
                Value::status(&value, now_millis())
            }))
        }))
    }

    fn sign_out(
        &self,
        sku: &Sku,
        open_id: &str,
        reason: &SignOutReason,
        notice: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let key = self.inner.user_key(sku.as_str(), open_id);
        let reason = reason.clone();
        async move {
            let now = number(now_millis());
            let notice = number(notice_millis(notice));
            scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.sign_out,
                &key,
                &[
                    now.as_bytes(),
                    notice.as_bytes(),
                    reason.as_str().as_bytes(),
                ],
            )
            .await
        }
    }

    fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.inner.user_key(sku.as_str(), open_id);
        let hash = *hash;
        async move {
            let now = number(now_millis());
            scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.revoke,
                &key,
                &[&hash.as_bytes()[..], now.as_bytes()],
            )
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
            let now = number(now_millis());
            scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.revoke_all,
                &key,
                &[now.as_bytes()],
            )
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
            let now = number(now_millis());
            let pairs: Vec<(Vec<u8>, String)> = scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.list,
                &key,
                &[now.as_bytes()],
            )
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
                        session_started_at_ms: value.started_at_ms,
                        device: value.device,
                    })
                })
                .collect()
        }
    }

    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let (old_hash, new_hash) = (token.hash(), successor.hash());
        async move {
            let now = now_millis();
            let expires_at_ms = now.saturating_add(options.ttl_millis());
            let reply: Option<Vec<Vec<u8>>> = scripts::eval(
                &self.inner.backend,
                &self.inner.scripts.rotate,
                &key,
                &[
                    &old_hash.as_bytes()[..],
                    &new_hash.as_bytes()[..],
                    number(now).as_bytes(),
                    number(expires_at_ms).as_bytes(),
                    number(options.max_tokens_per_user().into()).as_bytes(),
                    number(options.retry_grace_millis()).as_bytes(),
                    number(options.max_session_age_millis()).as_bytes(),
                ],
            )
            .await?;
            let Some(mut reply) = reply else {
                return Ok(None);
            };
            if reply.len() < 3 {
                return Err(StoreError::Protocol("rotation answered too little"));
            }
            let evicted = hashes(reply.split_off(3))?;
            let [device, started, expires] = <[Vec<u8>; 3]>::try_from(reply)
                .map_err(|_| StoreError::Protocol("rotation answered too little"))?;
            let time = |bytes: Vec<u8>| {
                String::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(StoreError::Protocol(
                        "rotation answered a time that is not one",
                    ))
            };
            let device = String::from_utf8(device)
                .map_err(|_| StoreError::Protocol("device label is not UTF-8"))?;
            let info = TokenInfo {
                hash: new_hash,
                issued_at_ms: now,
                expires_at_ms: time(expires)?,
                session_started_at_ms: time(started)?,
                device: (!device.is_empty()).then_some(device),
            };
            Ok(Some(Issued { info, evicted }))
        }
    }
}

/// How long the marker of an undone issue is kept: longer than any script can arrive
/// late (the login flow retries an undo for at most a minute).
const UNDONE_MARKER_MS: u64 = 60_000;

/// Token hashes as a script answers them: 32 raw bytes each.
fn hashes(fields: Vec<Vec<u8>>) -> Result<Vec<TokenHash>, StoreError> {
    fields
        .into_iter()
        .map(|field| {
            <[u8; 32]>::try_from(field)
                .map(TokenHash::from_bytes)
                .map_err(|_| StoreError::Protocol("token hash is not 32 bytes"))
        })
        .collect()
}

/// The future of [`RedisTokenStore`]'s `validate`.
///
/// It is boxed inside: redis-rs's futures cannot be named on stable Rust. Stores whose
/// answer is at hand ([`MemoryTokenStore`](super::MemoryTokenStore), a hit in
/// [`CachedTokenStore`](super::CachedTokenStore)) allocate nothing.
pub struct RedisValidation(Pin<Box<dyn Future<Output = Result<TokenStatus, StoreError>> + Send>>);

impl Future for RedisValidation {
    type Output = Result<TokenStatus, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for RedisValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisValidation").finish_non_exhaustive()
    }
}

/// A number as a script argument.
fn number(n: u64) -> String {
    n.to_string()
}
