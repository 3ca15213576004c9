//! A `redis-server` of a benchmark's own, shared by the benchmarks that need one.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A `redis-server` of the bench's own: a free loopback port, a temporary directory, no
/// persistence. It runs under a shell that stops it when this process is gone, however
/// the bench ends.
pub struct RedisServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

const WATCHDOG: &str = r#"
redis-server "$@" &
server=$!
while kill -0 "$OWNER" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
kill "$server" 2>/dev/null
wait "$server"
"#;

impl RedisServer {
    /// `None` when `redis-server` is not on PATH.
    pub fn start() -> Result<Option<Self>> {
        let on_path = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !on_path {
            return Ok(None);
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let child = Command::new("sh")
            .args(["-c", WATCHDOG, "sh", "--port", &port.to_string()])
            .env("OWNER", std::process::id().to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self {
            port,
            child,
            _dir: dir,
        };
        server.wait_ready(server._dir.path())?;
        Ok(Some(server))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_ready(&self, dir: &Path) -> Result<()> {
        let client = redis::Client::open(self.url())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server did not start: {log}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Stop the server at once; the watchdog then exits (and would stop it anyway
        // once this process is gone).
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut conn) = client.get_connection()
        {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut conn);
        }
        let _ = self.child.wait();
    }
}
