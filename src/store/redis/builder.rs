//! [`RedisTokenStoreBuilder`]: the store's settings, checked and turned into the pools
//! (one, or one per cluster primary) that the store runs on.

use std::{sync::Arc, time::Duration};

use redis::{
    RedisConnectionInfo,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio::time::Instant;

use super::{
    cluster::{Backend, Cluster},
    connection::Source,
    pool::PoolSettings,
    target::{NodeAuth, Target},
};
use crate::store::StoreBuildError;

/// The default key prefix.
const DEFAULT_KEY_PREFIX: &str = "mpauthx";
/// The default bound on opening a connection.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on one store operation, pool checkout included.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of multiplexed connections.
const DEFAULT_POOL_SIZE: u32 = 4;

/// Settings for a [`RedisTokenStore`](super::RedisTokenStore); [`build`](Self::build)
/// connects.
pub struct RedisTokenStoreBuilder {
    target: Result<Target, &'static str>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    pool_size: u32,
    primary_auth: Option<NodeAuth>,
}

/// What the settings make: the backend, not yet asked anything (except a cluster for its
/// slot map), and the settings the store keeps.
pub(super) struct Opened {
    pub(super) backend: Backend,
    pub(super) prefix: Box<str>,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
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
    pub(super) fn new(target: Result<Target, &'static str>) -> Self {
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

    /// Checks the settings and makes the backend they name; on a cluster, learns the
    /// slot map. [`build`](Self::build) then checks that Redis answers.
    pub(super) async fn open(self) -> Result<Opened, StoreBuildError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreBuildError::InvalidSettings(
                "key prefix must be non-empty and free of '{' and '}'",
            ));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(StoreBuildError::InvalidSettings(
                "timeouts must be non-zero",
            ));
        }
        let settings = PoolSettings {
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            pool_size: self.pool_size,
        };
        let backend = match self
            .target
            .clone()
            .map_err(StoreBuildError::InvalidSettings)?
        {
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
                cluster.refresh_by(deadline).await?;
                Backend::Cluster(Arc::new(cluster))
            }
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let node = self.primary_auth.clone().unwrap_or(node);
                let source = sentinel_source(sentinels, master, &node)?;
                Backend::Pooled(settings.pool(source, true))
            }
        };
        Ok(Opened {
            backend,
            prefix: self.prefix.into_boxed_str(),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
        })
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

/// Connections to whichever server the Sentinels at `sentinels` name primary of
/// `master`, reached with `node`'s credentials and database.
fn sentinel_source(
    sentinels: Vec<String>,
    master: String,
    node: &NodeAuth,
) -> Result<Source, StoreBuildError> {
    if master.is_empty() {
        return Err(StoreBuildError::InvalidSettings(
            "Sentinel master name is empty",
        ));
    }
    let mut redis_info = RedisConnectionInfo::default().set_db(node.db);
    if let Some(username) = &node.username {
        redis_info = redis_info.set_username(username);
    }
    if let Some(password) = &node.password {
        redis_info = redis_info.set_password(password);
    }
    let mut node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
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
    Ok(Source::Sentinel(tokio::sync::Mutex::new(sentinel)))
}
