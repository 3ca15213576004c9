//! Redis server-assisted client-side caching, for the tracked validation cache
//! ([`CachedTokenStore::tracking`](crate::CachedTokenStore::tracking)).
//!
//! One RESP3 connection per primary the store talks to runs `CLIENT TRACKING ON BCAST
//! PREFIX <prefix>:{`: Redis then pushes the name of every user key that changes, by
//! any client (a script of another server, an expiry, an administrator's `DEL`), and a
//! nil for `FLUSHALL`. redis-rs hands each push to a closure inside the connection's
//! driver, in the order it arrived, so an invalidation is applied before anything read
//! after it on that connection.
//!
//! Answers from memory are allowed only under a *lease*: a heartbeat (`ROLE`) on each
//! tracking connection every [`HEARTBEAT`] renews it for [`LEASE`] from when it was
//! sent, and only if the node still says it is a primary. A reply on the connection
//! comes after every push Redis queued before it, so a renewed lease means no push
//! sent before the heartbeat is missing. A connection that drops, stalls past the
//! lease, or whose node was demoted, revokes the lease (the cache is bypassed) and
//! flushes everything; the next connection flushes again once its tracking is on, and
//! only then grants a lease. On a cluster, every primary `CLUSTER NODES` lists is
//! tracked, and the list is checked every heartbeat: a change of primaries flushes and
//! reconnects.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value,
    aio::MultiplexedConnection,
};
use tokio::{
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

use super::{RedisTokenStore, cluster::Backend, connection::Source};
use crate::store::StoreBuildError;

/// How often each tracking connection's heartbeat is sent.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);

/// How long a heartbeat's reply lets answers come from memory, from when it was sent.
pub(crate) const LEASE: Duration = Duration::from_millis(350);

/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the tracked cache is told.
pub(crate) trait Invalidate: Send + Sync + 'static {
    /// The tokens of `user` (`<sku>:<openid>`, the part of the key between the braces)
    /// changed.
    fn user(&self, user: &[u8]);
    /// Anything may have changed.
    fn all(&self);
}

/// Until when answers may come from memory: nanoseconds after `base`, 0 for never.
#[derive(Debug)]
pub(crate) struct Lease {
    base: std::time::Instant,
    until_ns: AtomicU64,
}

impl Lease {
    /// Whether the lease holds at `now`.
    pub(crate) fn holds(&self, now: std::time::Instant) -> bool {
        let at = now.saturating_duration_since(self.base).as_nanos();
        at < u128::from(self.until_ns.load(Ordering::Acquire))
    }

    fn set(&self, until: Option<Instant>) {
        let ns = until.map_or(0, |until| {
            let ns = until
                .into_std()
                .saturating_duration_since(self.base)
                .as_nanos();
            u64::try_from(ns).unwrap_or(u64::MAX)
        });
        self.until_ns.store(ns, Ordering::Release);
    }
}

/// The lease of the whole cache: the earliest of its parts' (the cluster's list of
/// primaries, and each tracking connection).
struct Leases {
    combined: Arc<Lease>,
    parts: Mutex<Vec<Option<Instant>>>,
}

impl Leases {
    fn new(parts: usize) -> Self {
        Self {
            combined: Arc::new(Lease {
                base: std::time::Instant::now(),
                until_ns: AtomicU64::new(0),
            }),
            parts: Mutex::new(vec![None; parts]),
        }
    }

    /// Sets part `part`'s lease (`None`: revoked) and the combined one, under one lock so
    /// that a revocation is never overwritten by a concurrent renewal.
    fn set(&self, part: usize, until: Option<Instant>) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = parts.get_mut(part) {
            *slot = until;
        }
        let earliest = parts
            .iter()
            .try_fold(None::<Instant>, |earliest, &part| {
                let part = part?;
                Some(Some(earliest.map_or(part, |e| e.min(part))))
            })
            .flatten();
        self.combined.set(earliest);
    }

    /// Starts over with `parts` parts, all revoked.
    fn reset(&self, parts: usize) {
        let mut all = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        *all = vec![None; parts];
        self.combined.set(None);
    }
}

/// The tracking of one store; dropping it stops the tracking (and the lease lapses).
pub(crate) struct Tracker {
    lease: Arc<Lease>,
    task: JoinHandle<()>,
}

impl Tracker {
    /// The lease under which answers may come from memory.
    pub(crate) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("leased", &self.lease.holds(std::time::Instant::now()))
            .finish_non_exhaustive()
    }
}

/// Tasks aborted when this is dropped: the connections of a cluster's primaries.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One tracked server: a fixed client, or the primary the Sentinels name.
#[derive(Clone)]
enum Node {
    Source(Arc<Source>),
    Client(Client),
}

/// What every tracking connection of one store shares.
struct Shared {
    sink: Arc<dyn Invalidate>,
    leases: Leases,
    /// `<prefix>:{`: the user keys' prefix, tracked and stripped from pushed keys.
    prefix: Box<[u8]>,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl RedisTokenStore {
    /// Starts tracking this store's user keys for `sink`. Waits until the first
    /// tracking connection is set up (or failed), so that a Redis without
    /// `CLIENT TRACKING` (before 6.0) is refused at once.
    pub(crate) async fn track(
        &self,
        sink: Arc<dyn Invalidate>,
    ) -> Result<Tracker, StoreBuildError> {
        let inner = &self.inner;
        let mut prefix = inner.prefix.as_bytes().to_vec();
        prefix.extend_from_slice(b":{");
        let parts = match &inner.backend {
            Backend::Pooled(_) => 1,
            Backend::Cluster(_) => 0,
        };
        let shared = Arc::new(Shared {
            sink,
            leases: Leases::new(parts),
            prefix: prefix.into_boxed_slice(),
            connect_timeout: inner.connect_timeout,
            command_timeout: inner.command_timeout,
        });
        let lease = Arc::clone(&shared.leases.combined);
        let (first, outcome) = tokio::sync::oneshot::channel();
        let task = match &inner.backend {
            Backend::Pooled(pooled) => {
                let node = Node::Source(Arc::clone(&pooled.source));
                tokio::spawn(follow(node, shared, 0, Some(first)))
            }
            Backend::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                tokio::spawn(coordinate(cluster, shared, first))
            }
        };
        let tracker = Tracker { lease, task };
        let patience = inner.connect_timeout + inner.command_timeout * 2;
        match timeout(patience, outcome).await {
            Ok(Ok(Ok(()))) => Ok(tracker),
            Ok(Ok(Err(refused))) => Err(refused),
            // Not set up in time: it keeps trying, answering from Redis meanwhile.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    "Redis tracking not set up yet; token checks go to Redis until it is"
                );
                Ok(tracker)
            }
        }
    }
}

/// Keeps one tracking connection to `node` up, as lease part `part`. The first
/// outcome of setting up tracking goes to `first`.
async fn follow(
    node: Node,
    shared: Arc<Shared>,
    part: usize,
    mut first: Option<tokio::sync::oneshot::Sender<Result<(), StoreBuildError>>>,
) {
    let mut backoff = HEARTBEAT;
    loop {
        shared.leases.set(part, None);
        shared.sink.all();
        let disconnected = Arc::new(AtomicBool::new(false));
        let connection = match connect(&node, &shared, part, &disconnected).await {
            Ok(connection) => connection,
            Err(Refusal::Unsupported(reason)) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(StoreBuildError::InvalidSettings(reason)));
                    return;
                }
                tracing::warn!(
                    reason,
                    "Redis refuses client tracking; token checks go to Redis"
                );
                sleep(MAX_BACKOFF).await;
                continue;
            }
            Err(Refusal::Failed(error)) => {
                tracing::debug!(%error, "cannot set up Redis tracking; retrying");
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Pushes may have been missed between the last flush and tracking being on.
        shared.sink.all();
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        backoff = HEARTBEAT;
        heartbeats(connection, &shared, part, &disconnected).await;
        tracing::info!(
            "the Redis tracking connection was lost; token checks go to Redis until it is back"
        );
    }
}

/// Why tracking could not be set up.
enum Refusal {
    /// The server cannot track (an old Redis, or one that refuses RESP3).
    Unsupported(&'static str),
    /// It could not be reached, or answered in error: try again.
    Failed(redis::RedisError),
}

/// A RESP3 connection to `node` whose pushes invalidate `shared.sink`, with tracking on.
async fn connect(
    node: &Node,
    shared: &Arc<Shared>,
    part: usize,
    disconnected: &Arc<AtomicBool>,
) -> Result<MultiplexedConnection, Refusal> {
    let client = match node {
        Node::Source(source) => source.client().await.map_err(Refusal::Failed)?,
        Node::Client(client) => client.clone(),
    };
    let info = client.get_connection_info().clone();
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = Client::open(info.set_redis_settings(redis)).map_err(Refusal::Failed)?;
    let pushes = {
        let shared = Arc::clone(shared);
        let disconnected = Arc::clone(disconnected);
        move |push: PushInfo| -> Result<(), ()> {
            match push.kind {
                PushKind::Invalidate => shared.invalidated(&push.data),
                PushKind::Disconnection => {
                    disconnected.store(true, Ordering::Release);
                    shared.leases.set(part, None);
                    shared.sink.all();
                }
                _ => {}
            }
            Ok(())
        }
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.connect_timeout))
        .set_response_timeout(Some(shared.command_timeout))
        .set_push_sender(pushes);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match e.kind() {
            redis::ErrorKind::Server(_) if e.to_string().contains("HELLO") => {
                Refusal::Unsupported("Redis does not speak RESP3 (HELLO 3): it is older than 6.0")
            }
            _ => Refusal::Failed(e),
        })?;
    let tracking = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(&shared.prefix[..])
        .query_async::<()>(&mut connection)
        .await;
    match tracking {
        Ok(()) => Ok(connection),
        Err(e) if e.is_io_error() || e.is_timeout() => Err(Refusal::Failed(e)),
        Err(e) if matches!(e.code(), Some("ERR" | "NOPERM")) => Err(Refusal::Unsupported(
            "Redis refuses CLIENT TRACKING ON BCAST: it is older than 6.0, or this user may not run it",
        )),
        Err(e) => Err(Refusal::Failed(e)),
    }
}

/// Renews lease part `part` every heartbeat while `connection` works and its server is
/// a primary; returns when it no longer does.
async fn heartbeats(
    mut connection: MultiplexedConnection,
    shared: &Shared,
    part: usize,
    disconnected: &AtomicBool,
) {
    /// Heartbeats that may go unanswered in a row before the connection is given up.
    const PATIENCE: u32 = 3;
    let mut unanswered = 0;
    while !disconnected.load(Ordering::Acquire) {
        let sent = Instant::now();
        let role = timeout(
            shared.command_timeout,
            redis::cmd("ROLE").query_async::<Value>(&mut connection),
        )
        .await;
        match role {
            Ok(Ok(role)) if is_primary(&role) => {
                unanswered = 0;
                // A disconnection seen since the heartbeat was sent wins.
                if !disconnected.load(Ordering::Acquire) {
                    shared.leases.set(part, Some(sent + LEASE));
                }
            }
            Ok(Ok(_)) => {
                tracing::warn!("a tracked Redis is no longer a primary; reconnecting");
                return;
            }
            Ok(Err(e)) if e.is_io_error() => return,
            Ok(Err(_)) | Err(_) => {
                shared.leases.set(part, None);
                unanswered += 1;
                if unanswered >= PATIENCE {
                    return;
                }
            }
        }
        sleep(HEARTBEAT).await;
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_primary(role: &Value) -> bool {
    let Value::Array(parts) = role else {
        return false;
    };
    match parts.first() {
        Some(Value::BulkString(role)) => role == b"master",
        Some(Value::SimpleString(role)) => role == "master",
        _ => false,
    }
}

impl Shared {
    /// An `invalidate` push: the keys that changed, or nil for a flush.
    fn invalidated(&self, data: &[Value]) {
        let Some(Value::Array(keys)) = data.first() else {
            self.sink.all();
            return;
        };
        for key in keys {
            let user = match key {
                Value::BulkString(key) => key
                    .strip_prefix(&*self.prefix)
                    .and_then(|rest| rest.strip_suffix(b"}")),
                _ => None,
            };
            match user {
                Some(user) => self.sink.user(user),
                // Not a user key as this store writes them: forget everything.
                None => self.sink.all(),
            }
        }
    }
}

/// Tracks every primary of a cluster, as `CLUSTER NODES` lists them, checking the
/// list every heartbeat: lease part 0 is the list's, part `i + 1` primary `i`'s.
async fn coordinate(
    cluster: Arc<super::cluster::Cluster>,
    shared: Arc<Shared>,
    first: tokio::sync::oneshot::Sender<Result<(), StoreBuildError>>,
) {
    let mut first = Some(first);
    let mut tracked: Vec<Arc<str>> = Vec::new();
    let mut tasks = Tasks(Vec::new());
    loop {
        let sent = Instant::now();
        match timeout(shared.command_timeout, cluster.primaries()).await {
            Ok(Ok(mut primaries)) => {
                primaries.sort();
                if primaries != tracked {
                    tracing::info!(
                        primaries = primaries.len(),
                        "tracking the Redis Cluster's primaries"
                    );
                    drop(std::mem::replace(&mut tasks, Tasks(Vec::new())));
                    shared.leases.reset(primaries.len() + 1);
                    shared.sink.all();
                    for (i, node) in primaries.iter().enumerate() {
                        match cluster.node_client(node) {
                            Ok(client) => {
                                let first = if i == 0 { first.take() } else { None };
                                let node = Node::Client(client);
                                tasks.0.push(tokio::spawn(follow(
                                    node,
                                    Arc::clone(&shared),
                                    i + 1,
                                    first,
                                )));
                            }
                            Err(error) => {
                                tracing::warn!(%error, node = &**node, "cannot track a Redis Cluster primary");
                            }
                        }
                    }
                    tracked = primaries;
                }
                shared.leases.set(0, Some(sent + LEASE));
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot list the Redis Cluster's primaries");
                shared.leases.set(0, None);
            }
            Err(_) => shared.leases.set(0, None),
        }
        sleep(HEARTBEAT).await;
    }
}
