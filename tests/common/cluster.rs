//! Test support: a private Redis Cluster (3 primaries, 3 replicas) per test binary or
//! per test, and the node processes it (and the Sentinel setup) is made of.
//!
//! Every node listens on a free loopback port whose cluster bus port (+10000) is free
//! too, keeps nothing but its nodes file (in a temporary directory) and dies with its
//! owner, under the same watchdog as [`RedisServer`](super::RedisServer).

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use super::WATCHDOG;

/// One `redis-server` process (a cluster node, a replica or a Sentinel) owned by the
/// test, under the watchdog that kills it when the test process is gone.
pub struct Node {
    port: u16,
    child: Option<Child>,
    pid: u32,
}

impl Node {
    /// Starts `redis-server <args> --port <port>` and waits until it answers PING.
    /// `args` may begin with a config file path.
    pub fn start(port: u16, args: &[&str]) -> Self {
        let child = Command::new("sh")
            .args(["-c", WATCHDOG, "sh"])
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .env("OWNER", std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let mut node = Self {
            port,
            child: Some(child),
            pid: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let info = node.cli(&["INFO", "server"]).expect("INFO answers");
        node.pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("INFO server has process_id");
        node
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with SIGKILL: no goodbye to clients, replicas or the cluster.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against this node; `None` if it could not answer.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }

    /// One field of `INFO <section>`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cli(&["INFO", section])?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p <port> --raw <args>`; `None` if the server could not answer.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// Runs `ASKING` and then `args` on one `redis-cli` connection to `port`, as a client
/// sent there by an `ASK` redirection does; the reply to `args` (`None` if the server
/// could not answer).
pub fn cli_asking(port: u16, args: &[&str]) -> Option<String> {
    use std::io::Write;

    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let mut stdin = child.stdin.take()?;
    writeln!(stdin, "ASKING\n{}", quoted.join(" ")).ok()?;
    drop(stdin);
    let output = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let reply = text.strip_prefix("OK")?.trim().to_owned();
    output.status.success().then_some(reply)
}

/// The cluster node id of the node on `port`.
pub fn node_id(port: u16) -> String {
    cli(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID answers")
}

/// A slot left half-way through a resharding, by hand: `IMPORTING` on one primary,
/// `MIGRATING` on its owner, so that the owner answers `ASK` for the slot's keys it
/// does not hold. Dropping it (a failed assertion included) moves whatever keys the
/// importing node took back to the owner and makes the slot stable on both again.
pub struct HalfMigratedSlot {
    slot: String,
    owner: u16,
    importing: u16,
}

impl HalfMigratedSlot {
    /// Starts migrating `slot` from its owner, the primary on `owner`, to the primary
    /// on `importing`.
    pub fn start(slot: u16, owner: u16, importing: u16) -> Self {
        let (owner_id, importing_id) = (node_id(owner), node_id(importing));
        // The guard exists first, so that a half-done setup is undone as well.
        let guard = Self {
            slot: slot.to_string(),
            owner,
            importing,
        };
        let set = |port, state, id: &str| {
            let reply = cli(port, &["CLUSTER", "SETSLOT", &guard.slot, state, id]);
            assert_eq!(reply.as_deref(), Some("OK"), "SETSLOT {state} on {port}");
        };
        set(importing, "IMPORTING", &owner_id);
        set(owner, "MIGRATING", &importing_id);
        guard
    }
}

impl Drop for HalfMigratedSlot {
    fn drop(&mut self) {
        // Best effort: a panic here would abort the test binary. The owner first, which
        // then takes the keys back instead of answering ASK.
        let _ = cli(self.owner, &["CLUSTER", "SETSLOT", &self.slot, "STABLE"]);
        let keys = cli(
            self.importing,
            &["CLUSTER", "GETKEYSINSLOT", &self.slot, "1000"],
        )
        .unwrap_or_default();
        let owner = self.owner.to_string();
        for key in keys.lines().filter(|k| !k.is_empty()) {
            let _ = cli_asking(
                self.importing,
                &["MIGRATE", "127.0.0.1", &owner, key, "0", "5000", "REPLACE"],
            );
        }
        let _ = cli(
            self.importing,
            &["CLUSTER", "SETSLOT", &self.slot, "STABLE"],
        );
    }
}

/// A free port whose cluster bus port (port + 10000) is free as well.
pub fn free_cluster_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if port > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// The hash slot of a key, as Redis Cluster computes it (CRC16/XMODEM of the hash tag,
/// modulo 16384).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// A local Redis Cluster: three primaries with one replica each.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create` and waits until
    /// every node says `cluster_state:ok` and every replica is in sync.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes: Vec<Node> = (0..6)
            .map(|_| start_cluster_node(free_cluster_port(), dir.path()))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(node.addr());
        }
        let status = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, dir };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// The cluster of this test binary, started on first use.
    pub fn shared() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(RedisCluster::start)
    }

    /// `redis://127.0.0.1:<port>/` of every node, for `cluster_builder`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}/", n.addr()))
            .collect()
    }

    /// `redis+cluster://127.0.0.1:<port>,…`, the URL form of [`seeds`](Self::seeds).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(Node::addr).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes, running or killed.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node that is still running.
    pub fn any_running(&self) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node")
    }

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
            .kill();
    }

    /// The running primaries, by port, with the slot ranges each serves, as a running
    /// node sees them.
    pub fn primaries(&self) -> BTreeMap<u16, Vec<(u16, u16)>> {
        let nodes = self
            .any_running()
            .cli(&["CLUSTER", "NODES"])
            .expect("CLUSTER NODES answers");
        let mut primaries = BTreeMap::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("ip:port@bus");
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            primaries.insert(port, ranges);
        }
        primaries
    }

    /// The port of the primary serving `slot`.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.primaries()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|(port, _)| port)
            .expect("every slot is served")
    }

    /// Whether every running node says `cluster_state:ok`, three primaries that are not
    /// failed serve all 16384 slots, and each has a replica in sync.
    pub fn is_healthy(&self) -> bool {
        let states_ok = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| n.info_cluster_state().as_deref() == Some("ok"));
        if !states_ok {
            return false;
        }
        let primaries = self.primaries();
        let served: u32 = primaries
            .values()
            .flatten()
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        served == 16_384
            && primaries.keys().all(|&port| {
                cli(port, &["INFO", "replication"]).is_some_and(|info| {
                    info.lines()
                        .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
                })
            })
    }

    /// Waits until [`is_healthy`](Self::is_healthy); panics after `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.is_healthy() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node says `cluster_state:ok`; panics after `timeout`.
    pub fn wait_state_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| n.info_cluster_state().as_deref() == Some("ok"))
        {
            assert!(Instant::now() < deadline, "cluster_state did not become ok");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until each primary's replica has acknowledged every write the primary has
    /// taken so far (its offset reached the primary's), so the data survives a failover.
    pub fn wait_replicated(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for port in self.primaries().into_keys() {
            let target: u64 = cli(port, &["INFO", "replication"])
                .and_then(|info| field(&info, "master_repl_offset")?.parse().ok())
                .expect("master_repl_offset");
            loop {
                let acked = cli(port, &["INFO", "replication"])
                    .and_then(|info| replica_offset(&info))
                    .unwrap_or(0);
                if acked >= target {
                    break;
                }
                assert!(Instant::now() < deadline, "replica of {port} lags");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The temporary directory holding the nodes files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Node {
    fn info_cluster_state(&self) -> Option<String> {
        self.info("cluster", "cluster_state")
            .or_else(|| field(&self.cli(&["CLUSTER", "INFO"])?, "cluster_state"))
    }
}

fn start_cluster_node(port: u16, dir: &Path) -> Node {
    let nodes_file = dir.join(format!("nodes-{port}.conf"));
    Node::start(
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            nodes_file.to_str().expect("utf-8 path"),
            "--cluster-node-timeout",
            "1000",
            // The other primaries keep serving their slots while one is down (by default
            // a cluster with an unserved slot answers CLUSTERDOWN for every slot).
            "--cluster-require-full-coverage",
            "no",
            // Any replica may take over, however long since it last heard its primary.
            "--cluster-replica-validity-factor",
            "0",
            "--dir",
            dir.to_str().expect("utf-8 path"),
            "--appendonly",
            "no",
            "--save",
            "",
            "--repl-diskless-sync-delay",
            "0",
        ],
    )
}

/// `name:value` from an INFO-style text.
pub fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The offset a primary's first replica acknowledged (`slave0:…,offset=N,…`).
pub fn replica_offset(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("slave0:"))?;
    line.split(',')
        .find_map(|kv| kv.strip_prefix("offset="))
        .and_then(|n| n.parse().ok())
}
