//! Test support: a primary, its replica and one Sentinel watching them as `mymaster`,
//! all private to the test and dying with it (see [`Node`]).

use std::{
    thread,
    time::{Duration, Instant},
};

use super::{
    cluster::{Node, cli, field, replica_offset},
    free_port,
};

/// The name the Sentinel monitors the primary under.
pub const MASTER: &str = "mymaster";

/// A primary, a replica of it, and a Sentinel that fails over after 1 s of silence.
pub struct SentinelSetup {
    primary: Node,
    replica: Node,
    sentinel: Node,
    _dir: tempfile::TempDir,
}

impl SentinelSetup {
    /// Starts the three processes and waits until the replica is in sync and the
    /// Sentinel knows it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).expect("a data directory");
            path.to_str().expect("utf-8 path").to_owned()
        };
        let (primary_dir, replica_dir) = (data("primary"), data("replica"));
        let common = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let primary_port = free_port();
        let primary = Node::start(
            primary_port,
            &[&common[..], &["--dir", &primary_dir]].concat(),
        );
        let primary_port_text = primary_port.to_string();
        let replica = Node::start(
            free_port(),
            &[
                &common[..],
                &[
                    "--dir",
                    &replica_dir,
                    "--replicaof",
                    "127.0.0.1",
                    &primary_port_text,
                ],
            ]
            .concat(),
        );
        let sentinel_port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "sentinel monitor {MASTER} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 3000\n"
            ),
        )
        .expect("write the Sentinel config");
        let sentinel = Node::start(
            sentinel_port,
            &[config.to_str().expect("utf-8 path"), "--sentinel"],
        );
        let setup = Self {
            primary,
            replica,
            sentinel,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let replica_port = setup.replica.port().to_string();
        loop {
            let synced = setup
                .replica
                .info("replication", "master_link_status")
                .as_deref()
                == Some("up");
            let known = setup
                .sentinel
                .cli(&["SENTINEL", "REPLICAS", MASTER])
                .is_some_and(|r| r.lines().any(|l| l == replica_port));
            if synced && known {
                break;
            }
            assert!(Instant::now() < deadline, "replica or Sentinel not ready");
            thread::sleep(Duration::from_millis(50));
        }
        setup
    }

    /// `redis://127.0.0.1:<port>/` of the Sentinel.
    pub fn sentinels(&self) -> Vec<String> {
        vec![format!("redis://{}/", self.sentinel.addr())]
    }

    /// `redis+sentinel://127.0.0.1:<port>/mymaster`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://{}/{MASTER}", self.sentinel.addr())
    }

    /// The original primary.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The original replica.
    pub fn replica(&self) -> &Node {
        &self.replica
    }

    /// Kills the primary with SIGKILL.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// The port the Sentinel names as the primary now.
    pub fn primary_port_per_sentinel(&self) -> Option<u16> {
        self.sentinel
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])?
            .lines()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Waits until the replica acknowledged every write the primary has taken.
    pub fn wait_replicated(&self, timeout: Duration) {
        let port = self.primary.port();
        let target: u64 = cli(port, &["INFO", "replication"])
            .and_then(|info| field(&info, "master_repl_offset")?.parse().ok())
            .expect("master_repl_offset");
        let deadline = Instant::now() + timeout;
        while cli(port, &["INFO", "replication"])
            .and_then(|info| replica_offset(&info))
            .unwrap_or(0)
            < target
        {
            assert!(Instant::now() < deadline, "the replica lags");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
