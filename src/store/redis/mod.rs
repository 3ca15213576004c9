//! The production token store: Redis through a shared multiplexed connection, taken
//! from a bb8 pool; or Redis Cluster through redis-rs's cluster connection; or the
//! primary that Redis Sentinel names, through the same pool.
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
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bb8_redis::bb8;
use redis::{
    AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, RedisError, RedisResult, Script,
    ServerErrorKind,
    aio::MultiplexedConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio::time::{Instant, timeout_at};

use self::{
    cluster::{Cluster, is_topology_error, key_slot},
    connection::{ConnectFailures, Connection, Manager, Source},
    record::Value,
    target::{NodeAuth, Target},
};
use super::{IssueOptions, StoreBuildError, StoreError, TokenInfo, TokenStore, now_millis};
use crate::token::{ParsedToken, Sku, Token, TokenHash};

mod cluster;
mod connection;
mod record;
mod target;

/// The default key prefix.
const DEFAULT_KEY_PREFIX: &str = "mpauthx";
/// The default bound on opening a connection.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on one store operation, pool checkout included.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of multiplexed connections.
const DEFAULT_POOL_SIZE: u32 = 4;

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

/// How commands reach Redis: an enum rather than a trait object, so the standalone hot
/// path stays as direct as it was.
// One per store, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// A standalone Redis, or the primary Sentinel names: pooled multiplexed connections.
    Pooled(Pooled),
    /// A Redis Cluster: a slot map and a pool per primary.
    Cluster(Arc<Cluster>),
}

/// What every pool of a store shares.
#[derive(Clone, Copy)]
struct PoolSettings {
    connect_timeout: Duration,
    command_timeout: Duration,
    pool_size: u32,
}

impl PoolSettings {
    fn pool(&self, source: Source, follows_sentinel: bool) -> Pooled {
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
            .build_unchecked(Manager::new(source, config.clone()));
        Pooled {
            pool,
            failures,
            current: Mutex::new(None),
            follows_sentinel,
            config,
        }
    }
}

struct Pooled {
    pool: bb8::Pool<Manager>,
    failures: ConnectFailures,
    /// The connection requests use while it works, taken from the pool: one multiplexed
    /// socket pipelines concurrent requests best, and using it skips the pool's lock.
    /// A broken one is left to the pool, which replaces it at the next checkout.
    current: Mutex<Option<Connection>>,
    /// Behind Sentinel: a `READONLY` reply means the server was demoted, so the
    /// connection is retired and its replacement asks the Sentinels again.
    follows_sentinel: bool,
    /// How this pool's connections are opened.
    config: AsyncConnectionConfig,
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
        let mut s = f.debug_struct("RedisTokenStore");
        match &self.inner.backend {
            Backend::Pooled(pooled) => s
                .field(
                    "backend",
                    &if pooled.follows_sentinel {
                        "sentinel"
                    } else {
                        "standalone"
                    },
                )
                .field("connections", &pooled.pool.state().connections),
            Backend::Cluster(_) => s.field("backend", &"cluster"),
        };
        s.field("prefix", &self.inner.prefix)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("command_timeout", &self.inner.command_timeout)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`RedisTokenStore`]; [`build`](Self::build) connects.
pub struct RedisTokenStoreBuilder {
    target: Result<Target, &'static str>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    pool_size: u32,
    primary_auth: Option<NodeAuth>,
}

impl std::fmt::Debug for RedisTokenStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may hold a password.
        let backend = match &self.target {
            Ok(Target::Standalone(_)) => "standalone",
            Ok(Target::Cluster(_)) => "cluster",
            Ok(Target::Sentinel { .. }) => "sentinel",
            Err(_) => "invalid",
        };
        f.debug_struct("RedisTokenStoreBuilder")
            .field("backend", &backend)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl RedisTokenStoreBuilder {
    fn new(target: Result<Target, &'static str>) -> Self {
        Self {
            target,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            primary_auth: None,
        }
    }

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
    /// It is also how long a request waits before a Redis outage turns into a 503. On a
    /// cluster it bounds redirections to other nodes too.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many multiplexed connections the pool may hold (each serves many requests at
    /// once). Requests use one at a time, until it breaks; the others stand by as its
    /// replacement. Default: 4. On a cluster, each primary has a pool of this size.
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Behind Sentinel: the credentials (`username` may be `None` for the default user)
    /// and database for the primary, once the Sentinels have named it. The Sentinels
    /// themselves are reached with the credentials in their own URLs. Replaces what a
    /// `redis+sentinel://` URL said; [`build`](Self::build) rejects it for any other
    /// kind of store.
    pub fn with_primary_auth(
        mut self,
        username: Option<&str>,
        password: Option<&str>,
        db: i64,
    ) -> Self {
        let tls = match &self.target {
            Ok(Target::Sentinel { node, .. }) => node.tls,
            _ => false,
        };
        self.primary_auth = Some(NodeAuth {
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            db,
            tls,
        });
        self
    }

    /// Connects and checks that Redis answers.
    pub async fn build(self) -> Result<RedisTokenStore, StoreBuildError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreBuildError::InvalidSettings(
                "key prefix must be non-empty and free of '{' and '}'",
            ));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(StoreBuildError::InvalidSettings("timeouts must be non-zero"));
        }
        let settings = PoolSettings {
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            pool_size: self.pool_size,
        };
        let backend = match self.target.clone().map_err(StoreBuildError::InvalidSettings)? {
            Target::Standalone(url) => {
                self.only_for_sentinel()?;
                let client = redis::Client::open(url.as_str())
                    .map_err(|_| StoreBuildError::InvalidSettings("invalid Redis URL"))?;
                Backend::Pooled(settings.pool(Source::Client(client), false))
            }
            Target::Cluster(seeds) => {
                self.only_for_sentinel()?;
                let cluster = Cluster::new(&seeds, settings)?;
                // Learn the slot map now: a cluster that cannot tell it is unusable.
                let deadline = Instant::now() + self.connect_timeout + self.command_timeout;
                timeout_at(deadline, cluster.refresh(self.command_timeout, true))
                    .await
                    .map_err(|_| StoreError::Timeout(self.command_timeout))??;
                Backend::Cluster(Arc::new(cluster))
            }
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => {
                if master.is_empty() {
                    return Err(StoreBuildError::InvalidSettings("Sentinel master name is empty"));
                }
                let node = self.primary_auth.clone().unwrap_or(node);
                let mut redis_info = RedisConnectionInfo::default().set_db(node.db);
                if let Some(username) = &node.username {
                    redis_info = redis_info.set_username(username);
                }
                if let Some(password) = &node.password {
                    redis_info = redis_info.set_password(password);
                }
                let mut node_info =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
                if node.tls {
                    node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinel = SentinelClient::build(
                    sentinels,
                    master,
                    Some(node_info),
                    SentinelServerType::Master,
                )
                .map_err(|_| StoreBuildError::InvalidSettings("invalid Sentinel URL"))?;
                let source = Source::Sentinel(tokio::sync::Mutex::new(sentinel));
                Backend::Pooled(settings.pool(source, true))
            }
        };
        let store = RedisTokenStore {
            inner: Arc::new(Inner {
                backend,
                prefix: self.prefix.into_boxed_str(),
                connect_timeout: self.connect_timeout,
                command_timeout: self.command_timeout,
                scripts: Scripts::new(),
            }),
        };
        store.ping().await?;
        Ok(store)
    }

    fn only_for_sentinel(&self) -> Result<(), StoreBuildError> {
        match self.primary_auth {
            Some(_) => Err(StoreBuildError::InvalidSettings(
                "primary credentials apply only behind Sentinel",
            )),
            None => Ok(()),
        }
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
        self.inner.eval(script, key, &args).await
    }

    /// This store's key prefix.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Pooled {
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
    async fn run<T, F, Fut>(
        &self,
        deadline: Instant,
        command_timeout: Duration,
        op: F,
    ) -> Result<RedisResult<T>, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = match self.current_connection() {
            Some(conn) => conn,
            None => {
                let conn = self.checkout(deadline, command_timeout).await?;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                conn
            }
        };
        match timeout_at(deadline, op(conn.redis.clone())).await {
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
                Err(StoreError::Timeout(command_timeout))
            }
        }
    }

    /// A working connection from the pool, which opens one when needed.
    async fn checkout(
        &self,
        deadline: Instant,
        command_timeout: Duration,
    ) -> Result<Connection, StoreError> {
        let connect_failed = self.failures.notified();
        tokio::select! {
            biased;
            got = timeout_at(deadline, self.pool.get()) => match got {
                // Clone the handle and return the pooled slot at once: requests share it.
                Ok(Ok(pooled)) => Ok(pooled.clone()),
                Ok(Err(bb8::RunError::User(e))) => Err(store_error(e, command_timeout)),
                Ok(Err(bb8::RunError::TimedOut)) | Err(_) => {
                    Err(StoreError::Timeout(command_timeout))
                }
            },
            () = connect_failed => {
                let e = self.failures.last().expect("set before notifying");
                Err(store_error(e, command_timeout))
            }
        }
    }
}

/// Whether Redis refused a write because the server is now a replica.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || e.to_string().contains("READONLY")
}

/// A Redis failure as the store reports it: "try again later", in either form.
fn store_error(e: RedisError, command_timeout: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(command_timeout)
    } else {
        StoreError::Unavailable(Box::new(e))
    }
}

/// How many `MOVED` redirections one cluster operation follows.
const MAX_REDIRECTIONS: usize = 3;

impl Inner {
    /// Runs one operation on `key`'s connection within the command timeout; `None`
    /// runs it anywhere. On a cluster `op` may run again after a `MOVED` reply.
    async fn run<T, F, Fut>(&self, key: Option<&str>, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.command_timeout;
        match &self.backend {
            Backend::Pooled(pooled) => pooled
                .run(deadline, self.command_timeout, op)
                .await?
                .map_err(|e| store_error(e, self.command_timeout)),
            Backend::Cluster(cluster) => self.run_on_cluster(cluster, key, deadline, op).await,
        }
    }

    async fn run_on_cluster<T, F, Fut>(
        &self,
        cluster: &Arc<Cluster>,
        key: Option<&str>,
        deadline: Instant,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let route = || match key {
            Some(key) => cluster.owner(key_slot(key.as_bytes())),
            None => cluster.any_node(),
        };
        let mut node = match route() {
            Some(node) => node,
            None => {
                timeout_at(deadline, cluster.refresh(self.command_timeout, true))
                    .await
                    .map_err(|_| StoreError::Timeout(self.command_timeout))??;
                route().ok_or(StoreError::Protocol("no cluster node serves the slot"))?
            }
        };
        for _ in 0..=MAX_REDIRECTIONS {
            let pooled = cluster.pool(&node)?;
            let e = match pooled.run(deadline, self.command_timeout, &op).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(failed) => {
                    // The node is down or stuck: its slots may be failing over.
                    self.refresh_soon(cluster);
                    return Err(failed);
                }
            };
            if is_topology_error(&e) {
                self.refresh_soon(cluster);
            }
            match (e.code(), e.redirect_node()) {
                (Some("MOVED"), Some((to, slot))) => {
                    cluster.moved(slot, to);
                    node = Arc::from(to);
                }
                (Some("ASK"), Some((to, _))) => {
                    // The slot is migrating: run once on the importing node, on a
                    // private connection so that nothing slips between ASKING and `op`.
                    let client = cluster.client(to)?;
                    let config = pooled.config.clone();
                    let asked = timeout_at(deadline, async {
                        let mut conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        redis::cmd("ASKING").query_async::<()>(&mut conn).await?;
                        op(conn).await
                    });
                    return match asked.await {
                        Ok(result) => result.map_err(|e| store_error(e, self.command_timeout)),
                        Err(_) => Err(StoreError::Timeout(self.command_timeout)),
                    };
                }
                _ => return Err(store_error(e, self.command_timeout)),
            }
        }
        Err(StoreError::Protocol("too many cluster redirections"))
    }

    /// Refreshes the cluster's slot map in the background, unless one is under way or
    /// was done just now.
    fn refresh_soon(&self, cluster: &Arc<Cluster>) {
        let (cluster, command_timeout) = (Arc::clone(cluster), self.command_timeout);
        tokio::spawn(async move {
            if let Err(error) = cluster.refresh(command_timeout, false).await {
                tracing::debug!(%error, "cannot refresh the Redis Cluster slot map");
            }
        });
    }

    /// Runs `script` on `key` with `args`: the one path of every scripted operation.
    async fn eval<R>(&self, script: &Script, key: &str, args: &[&[u8]]) -> Result<R, StoreError>
    where
        R: redis::FromRedisValue + Send,
    {
        self.run(Some(key), |mut c| async move {
            let mut invocation = script.key(key);
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async::<R>(&mut c).await
        })
        .await
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

impl TokenStore for RedisTokenStore {
    type Validation = RedisValidation;

    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<TokenInfo, StoreError>> + Send {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        async move {
            let now = now_millis();
            let expires_at_ms = now.saturating_add(options.ttl_millis());
            let device = options.device().unwrap_or("");
            self.inner
                .eval::<()>(
                    &self.inner.scripts.issue,
                    &key,
                    &[
                        &hash.as_bytes()[..],
                        number(now).as_bytes(),
                        number(expires_at_ms).as_bytes(),
                        number(options.max_tokens_per_user().into()).as_bytes(),
                        device.as_bytes(),
                    ],
                )
                .await?;
            Ok(TokenInfo {
                hash,
                issued_at_ms: now,
                expires_at_ms,
                device: options.device().map(str::to_owned),
            })
        }
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let hash = token.hash();
        let inner = Arc::clone(&self.inner);
        RedisValidation(Box::pin(async move {
            let key = key.as_str();
            let value = inner
                .run(Some(key), |mut c| async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg(&hash.as_bytes()[..])
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                })
                .await?;
            Ok(value
                .as_deref()
                .and_then(Value::expires_at_ms)
                .is_some_and(|expires| expires > now_millis()))
        }))
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
            self.inner
                .eval(
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
            self.inner
                .eval(&self.inner.scripts.revoke_all, &key, &[now.as_bytes()])
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
            let pairs: Vec<(Vec<u8>, String)> = self
                .inner
                .eval(&self.inner.scripts.list, &key, &[now.as_bytes()])
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
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<TokenInfo>, StoreError>> + Send {
        let key = self.inner.user_key(token.sku(), token.open_id());
        let (old_hash, new_hash) = (token.hash(), successor.hash());
        async move {
            let now = now_millis();
            let expires_at_ms = now.saturating_add(options.ttl_millis());
            let device: Option<String> = self
                .inner
                .eval(
                    &self.inner.scripts.rotate,
                    &key,
                    &[
                        &old_hash.as_bytes()[..],
                        &new_hash.as_bytes()[..],
                        number(now).as_bytes(),
                        number(expires_at_ms).as_bytes(),
                        number(options.max_tokens_per_user().into()).as_bytes(),
                    ],
                )
                .await?;
            Ok(device.map(|device| TokenInfo {
                hash: new_hash,
                issued_at_ms: now,
                expires_at_ms,
                device: (!device.is_empty()).then_some(device),
            }))
        }
    }
}

/// The future of [`RedisTokenStore`]'s `validate`.
///
/// It is boxed inside: redis-rs's futures cannot be named on stable Rust. Stores whose
/// answer is at hand ([`MemoryTokenStore`](super::MemoryTokenStore), a hit in
/// [`CachedTokenStore`](super::CachedTokenStore)) allocate nothing.
pub struct RedisValidation(Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send>>);

impl Future for RedisValidation {
    type Output = Result<bool, StoreError>;

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
