//! Redis Cluster: a slot map and one pool of multiplexed connections per primary.
//!
//! Each key names its hash slot; the slot map (from `CLUSTER SLOTS`) names the primary
//! that serves it, and the command goes to that primary's pool, the same pool a
//! standalone store uses. A `MOVED` reply updates the map and the command goes on to
//! the node it names; an `ASK` reply runs the operation once on a private connection
//! to the importing node, every command of it after an `ASKING` of its own (a script
//! that node never loaded takes three: the script, `SCRIPT LOAD`, the script again).
//! A node that fails only fails its own slots: the other primaries' pools never wait
//! for it. Failures and redirections refresh the map in the background (at most every
//! [`REFRESH_EVERY`]), so once a replica has been promoted the failed slots go to it.
//!
//! redis-rs's own cluster connection (1.8) was the first choice; in tests it stopped
//! serving every slot, healthy ones included, after one primary was killed (its slot
//! refresh never completed; redis-rs issue #2092 describes the same lock held across a
//! refresh), so this store routes by itself over redis-rs's multiplexed connections.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult, Value};
use tokio::time::{Instant, timeout_at};

use super::{
    connection::Source,
    pool::{OpConnection, PoolSettings, Pooled, store_error},
};
use crate::store::{StoreBuildError, StoreError};

/// How commands reach Redis: an enum rather than a trait object, so the standalone hot
/// path stays as direct as it was.
// One per store, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Backend {
    /// A standalone Redis, or the primary Sentinel names: pooled multiplexed connections.
    Pooled(Pooled),
    /// A Redis Cluster: a slot map and a pool per primary.
    Cluster(Arc<Cluster>),
}

impl Backend {
    /// Runs one operation on `key`'s connection within the command timeout; `None`
    /// runs it anywhere. On a cluster `op` may run again after a `MOVED` reply.
    pub(super) async fn run<T, F, Fut>(&self, key: Option<&str>, op: F) -> Result<T, StoreError>
    where
        F: Fn(OpConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self {
            Self::Pooled(pooled) => {
                let deadline = Instant::now() + pooled.command_timeout;
                pooled
                    .run(deadline, op)
                    .await?
                    .map_err(|e| store_error(e, pooled.command_timeout))
            }
            Self::Cluster(cluster) => cluster.run(key, op).await,
        }
    }
}

/// The number of hash slots in a Redis Cluster.
const SLOTS: u16 = 16_384;

/// The least time between two slot map refreshes.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// How many `MOVED` redirections one operation follows.
const MAX_REDIRECTIONS: usize = 3;

/// Slot ranges, sorted and disjoint, each with the `host:port` of the primary serving it.
type SlotMap = Vec<(u16, u16, Arc<str>)>;

/// The cluster's nodes and who serves which slot.
pub(super) struct Cluster {
    /// How to reach a node: the first seed's settings (credentials, TLS) with the
    /// node's own host and port.
    template: ConnectionInfo,
    seeds: Vec<ConnectionInfo>,
    settings: PoolSettings,
    /// `slot -> "host:port"` of its primary; sorted, non-overlapping ranges.
    slots: RwLock<Arc<SlotMap>>,
    nodes: Mutex<HashMap<Arc<str>, Arc<Pooled>>>,
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl Cluster {
    /// Parses the seeds; connects nothing yet.
    pub(super) fn new(seeds: &[String], settings: PoolSettings) -> Result<Self, StoreBuildError> {
        let seeds: Vec<ConnectionInfo> = seeds
            .iter()
            .map(|seed| seed.as_str().into_connection_info())
            .collect::<Result<_, _>>()
            .map_err(|_| StoreBuildError::InvalidSettings("invalid Redis Cluster seed URL"))?;
        let template = seeds
            .first()
            .cloned()
            .ok_or(StoreBuildError::InvalidSettings(
                "a cluster needs at least one seed node",
            ))?;
        if !matches!(
            template.addr(),
            ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. }
        ) {
            return Err(StoreBuildError::InvalidSettings(
                "cluster seeds must be TCP addresses",
            ));
        }
        Ok(Self {
            template,
            seeds,
            settings,
            slots: RwLock::new(Arc::default()),
            nodes: Mutex::default(),
            refresh: tokio::sync::Mutex::new(None),
        })
    }

    /// The primary serving `slot`, if the map knows one.
    fn owner(&self, slot: u16) -> Option<Arc<str>> {
        let slots = Arc::clone(&self.slots.read().unwrap_or_else(PoisonError::into_inner));
        let at = slots.partition_point(|&(_, end, _)| end < slot);
        slots
            .get(at)
            .filter(|&&(start, _, _)| start <= slot)
            .map(|(_, _, node)| Arc::clone(node))
    }

    /// Some node of the map, for commands without a key.
    fn any_node(&self) -> Option<Arc<str>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.first().map(|(_, _, node)| Arc::clone(node))
    }

    /// Records a `MOVED` redirection: `slot` is now served by `node`.
    fn moved(&self, slot: u16, node: &str) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let mut map: SlotMap = Vec::with_capacity(slots.len() + 2);
        for (start, end, owner) in slots.iter() {
            if (*start..=*end).contains(&slot) {
                if *start < slot {
                    map.push((*start, slot - 1, Arc::clone(owner)));
                }
                map.push((slot, slot, Arc::from(node)));
                if slot < *end {
                    map.push((slot + 1, *end, Arc::clone(owner)));
                }
            } else {
                map.push((*start, *end, Arc::clone(owner)));
            }
        }
        if !map
            .iter()
            .any(|&(start, end, _)| (start..=end).contains(&slot))
        {
            map.push((slot, slot, Arc::from(node)));
            map.sort_by_key(|&(start, _, _)| start);
        }
        *slots = Arc::new(map);
    }

    /// The pool of the node at `host:port`, opened on first use.
    fn pool(&self, node: &Arc<str>) -> Result<Arc<Pooled>, StoreError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pooled) = nodes.get(node) {
            return Ok(Arc::clone(pooled));
        }
        let info = self.node_info(node)?;
        let client = redis::Client::open(info)
            .map_err(|_| StoreError::Protocol("cluster node address unusable"))?;
        let pooled = Arc::new(self.settings.pool(Source::Client(client), false));
        nodes.insert(Arc::clone(node), Arc::clone(&pooled));
        Ok(pooled)
    }

    /// The primaries `CLUSTER NODES` lists (as `host:port`), whether they serve slots
    /// yet or not, failed ones left out: those the validation cache tracks. Asks the
    /// known primaries in turn until one answers.
    pub(super) async fn primaries(&self) -> Result<Vec<Arc<str>>, StoreError> {
        let command_timeout = self.settings.command_timeout;
        let mut candidates: Vec<Arc<str>> = Vec::new();
        for (_, _, node) in self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if !candidates.contains(node) {
                candidates.push(Arc::clone(node));
            }
        }
        let mut last_error = StoreError::Protocol("no cluster node is known");
        for node in candidates {
            let deadline = Instant::now() + command_timeout;
            let reply = self
                .pool(&node)?
                .run(deadline, |mut c| async move {
                    redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async::<String>(&mut c)
                        .await
                })
                .await;
            match reply {
                Ok(Ok(text)) => return Ok(parse_primaries(&text, &node)),
                Ok(Err(e)) => last_error = store_error(e, command_timeout),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// A client of the node at `host:port`, with the cluster's credentials and TLS.
    pub(super) fn node_client(&self, node: &str) -> Result<redis::Client, StoreError> {
        self.client(node)
    }

    /// A private connection to `node`, for one `ASK` redirection.
    fn client(&self, node: &str) -> Result<redis::Client, StoreError> {
        redis::Client::open(self.node_info(node)?)
            .map_err(|_| StoreError::Protocol("cluster node address unusable"))
    }

    fn node_info(&self, node: &str) -> Result<ConnectionInfo, StoreError> {
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse().ok()?)))
            .ok_or(StoreError::Protocol("cluster node address without a port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = match self.template.addr().clone() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Ok(self.template.clone().set_addr(addr))
    }

    /// Reloads the slot map from the first node that answers `CLUSTER SLOTS`: known
    /// primaries first, then the seeds. At most once per [`REFRESH_EVERY`]; a caller
    /// that finds a refresh under way waits for it, unless `wait` is false.
    async fn refresh(&self, wait: bool) -> Result<(), StoreError> {
        let command_timeout = self.settings.command_timeout;
        let mut last = if wait {
            self.refresh.lock().await
        } else {
            match self.refresh.try_lock() {
                Ok(last) => last,
                Err(_) => return Ok(()),
            }
        };
        if last.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let mut candidates: Vec<Arc<str>> = Vec::new();
        {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            for (_, _, node) in slots.iter() {
                if !candidates.contains(node) {
                    candidates.push(Arc::clone(node));
                }
            }
        }
        for seed in &self.seeds {
            if let ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } =
                seed.addr()
            {
                let node: Arc<str> = Arc::from(format!("{host}:{port}"));
                if !candidates.contains(&node) {
                    candidates.push(node);
                }
            }
        }
        let mut last_error = StoreError::Protocol("no cluster node answered CLUSTER SLOTS");
        for node in candidates {
            let pooled = self.pool(&node)?;
            let deadline = Instant::now() + command_timeout;
            let reply = pooled
                .run(deadline, |mut c| async move {
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut c)
                        .await
                })
                .await;
            match reply {
                Ok(Ok(reply)) => match parse_slots(&reply, &node) {
                    Some(map) => {
                        *self.slots.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
                        return Ok(());
                    }
                    None => last_error = StoreError::Protocol("unexpected CLUSTER SLOTS reply"),
                },
                Ok(Err(e)) => last_error = StoreError::Unavailable(Box::new(e)),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Reloads the slot map (see [`refresh`](Self::refresh)), waiting for a refresh
    /// under way, by `deadline`.
    pub(super) async fn refresh_by(&self, deadline: Instant) -> Result<(), StoreError> {
        timeout_at(deadline, self.refresh(true))
            .await
            .map_err(|_| StoreError::Timeout(self.settings.command_timeout))?
    }

    /// Refreshes the slot map in the background, unless one is under way or was done
    /// just now.
    fn refresh_soon(self: &Arc<Self>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = cluster.refresh(false).await {
                tracing::debug!(%error, "cannot refresh the Redis Cluster slot map");
            }
        });
    }

    /// Runs one operation on the primary serving `key`'s slot (`None`: on any node)
    /// within the command timeout, following `MOVED` and `ASK` redirections.
    async fn run<T, F, Fut>(self: &Arc<Self>, key: Option<&str>, op: F) -> Result<T, StoreError>
    where
        F: Fn(OpConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let command_timeout = self.settings.command_timeout;
        let deadline = Instant::now() + command_timeout;
        let route = || match key {
            Some(key) => self.owner(key_slot(key.as_bytes())),
            None => self.any_node(),
        };
        let mut node = match route() {
            Some(node) => node,
            None => {
                self.refresh_by(deadline).await?;
                route().ok_or(StoreError::Protocol("no cluster node serves the slot"))?
            }
        };
        for _ in 0..=MAX_REDIRECTIONS {
            let pooled = self.pool(&node)?;
            let e = match pooled.run(deadline, &op).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(failed) => {
                    // The node is down or stuck: its slots may be failing over.
                    self.refresh_soon();
                    return Err(failed);
                }
            };
            if is_topology_error(&e) {
                self.refresh_soon();
            }
            match (e.code(), e.redirect_node()) {
                (Some("MOVED"), Some((to, slot))) => {
                    self.moved(slot, to);
                    node = Arc::from(to);
                }
                (Some("ASK"), Some((to, _))) => {
                    // The slot is migrating: run once on the importing node, each
                    // command after its own ASKING.
                    let client = self.client(to)?;
                    let config = pooled.config.clone();
                    let asked = timeout_at(deadline, async {
                        let conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        op(OpConnection::asking(conn)).await
                    });
                    return match asked.await {
                        Ok(result) => result.map_err(|e| store_error(e, command_timeout)),
                        Err(_) => Err(StoreError::Timeout(command_timeout)),
                    };
                }
                _ => return Err(store_error(e, command_timeout)),
            }
        }
        Err(StoreError::Protocol("too many cluster redirections"))
    }
}

/// The primaries in a `CLUSTER NODES` reply: `<id> <ip:port@cport[,hostname]> <flags>
/// …` per line, `master` among the flags and none of `fail`, `handshake`, `noaddr`. An
/// empty ip means the node that answered.
fn parse_primaries(text: &str, answered: &str) -> Vec<Arc<str>> {
    let answered_host = answered.rsplit_once(':').map_or(answered, |(host, _)| host);
    let mut primaries = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_id), Some(addr), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master")
            || flags
                .iter()
                .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"))
        {
            continue;
        }
        let addr = addr.split(['@', ',']).next().unwrap_or_default();
        let node = match addr.strip_prefix(':') {
            Some(port) => format!("{answered_host}:{port}"),
            None => addr.to_owned(),
        };
        if node
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            primaries.push(Arc::from(node));
        }
    }
    primaries
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`, as sorted
/// ranges of primaries. An empty host means the node that answered.
fn parse_slots(reply: &Value, answered: &str) -> Option<SlotMap> {
    let answered_host = answered.rsplit_once(':').map_or(answered, |(host, _)| host);
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(range) = range else {
            return None;
        };
        let number = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok().filter(|&n| n < SLOTS),
            _ => None,
        };
        let (start, end) = (number(range.first()?)?, number(range.get(1)?)?);
        let Value::Array(primary) = range.get(2)? else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
            Value::SimpleString(host) => host.clone(),
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            answered_host.to_owned()
        } else {
            host
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        let node = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        map.push((start, end, Arc::from(node)));
    }
    map.sort_by_key(|&(start, _, _)| start);
    Some(map)
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key without
/// one, modulo 16384.
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let len = key[open + 1..].iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &key[open + 1..open + 1 + len])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// Whether a failed command says the slot map is stale.
fn is_topology_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || e.is_timeout()
        || matches!(e.code(), Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_the_live_masters() {
        let text = "\
07c3 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:7001@17001,node-b master - 0 1 2 connected 5461-10922
2923 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected
9f1e :7003@17003 master - 0 1 4 connected
e7d1 127.0.0.1:7004@17004 slave 07c3 0 1 1 connected
";
        let primaries = parse_primaries(text, "127.0.0.1:7000");
        let primaries: Vec<&str> = primaries.iter().map(|p| &**p).collect();
        assert_eq!(
            primaries,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7003"],
            "failed nodes and replicas left out, an empty ip is the answering node's"
        );
    }

    #[test]
    fn slots_follow_hash_tags() {
        // Values from Redis's own CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"a:{demo:o-x}"), key_slot(b"demo:o-x"));
    }

    #[test]
    fn slot_maps_parse_and_follow_moves() {
        let node = |host: &str, port| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
        ]);
        let map = parse_slots(&reply, "10.0.0.9:7005").unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(&*map[0].2, "10.0.0.1:7000");
        assert_eq!(&*map[1].2, "10.0.0.9:7001");
        assert!(parse_slots(&Value::Int(1), "h:1").is_none());

        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            pool_size: 1,
        };
        let cluster = Cluster::new(&["redis://10.0.0.1:7000".to_owned()], settings).unwrap();
        *cluster.slots.write().unwrap() = Arc::new(map);
        assert_eq!(cluster.owner(0).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(cluster.owner(5461).as_deref(), Some("10.0.0.9:7001"));
        cluster.moved(100, "10.0.0.2:7002");
        assert_eq!(cluster.owner(99).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(cluster.owner(100).as_deref(), Some("10.0.0.2:7002"));
        assert_eq!(cluster.owner(101).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(cluster.owner(16383).as_deref(), Some("10.0.0.9:7001"));
    }
}
