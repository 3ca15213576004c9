//! Test support, shared by every test binary.
//!
//! This module: a private `redis-server` per test binary (or per test, for fault tests).
//! Each server listens on a free loopback port, keeps nothing on disk and dies with its
//! owner. Tests can stop, restart, freeze (SIGSTOP) and thaw it to play faults.
//!
//! The submodules: [`keys`] (the test app's credentials, session keys, signatures and
//! encrypted profiles), [`fake_wechat`], [`login`] (`MpAuth` over a token store, a
//! temporary sqlite file and a fake WeChat), [`http`] (collected responses, requests),
//! [`stores`] (Redis stores and issuing tokens), [`users`] (sqlite files and their rows),
//! [`logs`], [`sim`] (the simulator over HTTP), and the multi-process setups [`cluster`] and [`sentinel`].

#![allow(dead_code, unreachable_pub)]

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

pub mod cluster;
pub mod fake_wechat;
pub mod http;
pub mod keys;
pub mod login;
pub mod logs;
pub mod sentinel;
pub mod sim;
pub mod stores;
pub mod users;

/// A `redis-server` process owned by the test.
///
/// It runs under a small shell watchdog that kills it when the test process is gone, so
/// that the per-binary server (a `static`, never dropped) does not outlive the tests.
pub struct RedisServer {
    port: u16,
    /// The watchdog shell.
    child: Option<Child>,
    /// The redis-server process itself, for signals.
    pid: u32,
}

const WATCHDOG: &str = r#"
redis-server "$@" &
server=$!
while kill -0 "$OWNER" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
kill -CONT "$server" 2>/dev/null
kill "$server" 2>/dev/null
wait "$server"
"#;

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            pid: 0,
        };
        server.restart();
        server
    }

    /// The one server of this test binary, started on first use.
    pub fn shared() -> &'static RedisServer {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        SERVER.get_or_init(RedisServer::start)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// (Re)starts the process on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let child = Command::new("sh")
            .args(["-c", WATCHDOG, "sh", "--port", &self.port.to_string()])
            .env("OWNER", std::process::id().to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        let info = self.cli(&["INFO", "server"]).expect("INFO answers");
        self.pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("INFO server has process_id");
    }

    /// Kills the process; connections break at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal("-KILL");
            let _ = child.wait();
        }
        // Wait until the port is free, so that a restart can bind it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers.
    pub fn freeze(&self) {
        assert!(self.signal("-STOP"), "SIGSTOP redis-server");
    }

    /// Thaws a frozen process (SIGCONT).
    pub fn thaw(&self) {
        assert!(self.signal("-CONT"), "SIGCONT redis-server");
    }

    fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `redis-cli` against this server; `None` if it could not answer.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// Every key in the server (tests only: this is `KEYS *`).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["KEYS", "*"])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal("-CONT");
            self.signal("-KILL");
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `http://127.0.0.1:<port>` of a port nobody listens on.
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A prefix unique to one test, so tests sharing a server never see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("t{}-{test}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs a blocking `RedisServer` method (stop, restart, freeze, ...) off the runtime's
/// workers, handing the server back.
pub async fn blocking(
    mut server: RedisServer,
    f: impl FnOnce(&mut RedisServer) + Send + 'static,
) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        f(&mut server);
        server
    })
    .await
    .expect("server control panicked")
}
