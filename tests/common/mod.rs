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
//! [`postgres`] and [`mariadb`] run a private PostgreSQL or MariaDB server the same way
//! (a fresh data directory, a free port, the watchdog), for the SQL user stores.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
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
pub mod mariadb;
pub mod postgres;
pub mod sentinel;
pub mod sim;
pub mod stores;
pub mod tracked;
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
            // `DEBUG SLEEP`, for the tests that stall Redis (Redis 7 refuses DEBUG by
            // default).
            .args(["--enable-debug-command", "local"])
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

// Database servers: what `postgres` and `mariadb` share.

/// The watchdog of a database server: runs `"$@"` with its output appended to `$LOG`
/// and prints its pid. Once the test process (`$OWNER`) is gone it thaws the server and
/// its children, stops it with `$STOP_SIGNAL` (SIGKILL after 10 s) and removes
/// `$CLEANUP`, the server's temporary directory, which a `shared()` server (a `static`,
/// never dropped) would otherwise leave behind.
const DB_WATCHDOG: &str = r#"
"$@" >>"$LOG" 2>&1 </dev/null &
server=$!
echo "$server"
while kill -0 "$OWNER" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
if ! kill -0 "$OWNER" 2>/dev/null; then
  kill -CONT "$server" $(cat /proc/"$server"/task/*/children 2>/dev/null) 2>/dev/null
  kill -"$STOP_SIGNAL" "$server" 2>/dev/null
  n=0
  while kill -0 "$server" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL "$server" 2>/dev/null
  wait "$server"
  [ -n "$CLEANUP" ] && rm -rf "$CLEANUP"
fi
wait "$server"
"#;

/// The system user a database server runs as when the tests run as root: PostgreSQL
/// refuses to run as root, and MariaDB does unless told `--user`.
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// `Some(user)` when the tests run as root (`user` must exist then), `None` otherwise:
/// the server then runs as the current user.
pub fn run_as(user: &str) -> Option<RunAs> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return None;
    }
    let (uid, gid) = id(&["-u", user]).zip(id(&["-g", user])).unwrap_or_else(|| {
        panic!("the tests run as root, so the database server must run as `{user}`, which does not exist")
    });
    Some(RunAs { uid, gid })
}

/// `program` run as `run_as` (through `setpriv`, which execs: the pid stays the
/// program's) or as the current user.
pub fn command_as(program: &Path, run_as: Option<RunAs>) -> Command {
    match run_as {
        None => Command::new(program),
        Some(RunAs { uid, gid }) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            command
        }
    }
}

/// Where the servers' directories go: `/dev/shm` when it is a tmpfs with room (creating
/// a cluster there takes a fraction of the time it takes on a disk), else `/tmp`. Both
/// are short enough for unix socket paths and reachable by every user.
fn db_temp_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let available_kib = Command::new("df")
            .args(["-Pk", "/dev/shm"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.lines()
                    .nth(1)?
                    .split_whitespace()
                    .nth(3)?
                    .parse::<u64>()
                    .ok()
            });
        let shm = Path::new("/dev/shm");
        if available_kib.is_some_and(|kib| kib >= 1 << 20) && shm.is_dir() {
            shm.to_owned()
        } else {
            PathBuf::from("/tmp")
        }
    })
}

/// A fresh directory (see [`db_temp_root`]), mode 0700, owned by `run_as` when there is
/// one.
pub fn db_temp_dir(prefix: &str, run_as: Option<RunAs>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(db_temp_root())
        .expect("a temporary directory for a database server");
    if let Some(RunAs { uid, gid }) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .expect("chown the server's temporary directory");
    }
    dir
}

/// Leaves behind a shell that removes `$CLEANUP` once the test process (`$OWNER`) is
/// gone.
const REAPER: &str = r#"
(
  while kill -0 "$OWNER" 2>/dev/null; do sleep 0.5; done
  rm -rf "$CLEANUP"
) &
"#;

/// A directory like [`db_temp_dir`] that lasts as long as the test process (for data
/// directory templates, which `static`s hold): a small shell removes it afterwards.
pub fn db_process_dir(prefix: &str, run_as: Option<RunAs>) -> PathBuf {
    let dir = db_temp_dir(prefix, run_as).keep();
    Command::new("sh")
        .args(["-c", REAPER])
        .env("OWNER", std::process::id().to_string())
        .env("CLEANUP", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("leave a shell to remove the template");
    dir
}

/// Copies the data directory `template` to `to`, as `run_as` (who then owns the copy).
pub fn copy_data_dir(template: &Path, to: &Path, run_as: Option<RunAs>) {
    let copy = output_within(
        command_as(Path::new("cp"), run_as)
            .arg("-a")
            .arg(template)
            .arg(to),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("copy the data directory template: {e}"));
    assert!(
        copy.status.success(),
        "copy {} to {}: {}",
        template.display(),
        to.display(),
        String::from_utf8_lossy(&copy.stderr)
    );
}

/// The first of `names` on `PATH` or in `extra_dirs` (sbin directories are often not on a
/// user's `PATH`).
pub fn find_program(names: &[&str], extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .collect();
    names.iter().find_map(|name| {
        dirs.iter().map(|dir| dir.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs `command` with piped output, killing it if it has not finished after `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", command.get_program()))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} did not finish within {limit:?}",
                    command.get_program()
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A database server process (PostgreSQL's postmaster, `mariadbd`) under
/// [`DB_WATCHDOG`]. Dropping it stops the server.
pub struct DbProcess {
    /// The watchdog shell.
    child: Child,
    /// The server process itself.
    pid: u32,
    /// What makes it shut down cleanly and quickly (`INT` for PostgreSQL, `TERM` for MariaDB).
    stop_signal: &'static str,
    log: PathBuf,
}

impl DbProcess {
    /// Starts `server` (a program and its arguments, see [`command_as`]) in `dir`,
    /// appending its output to `log`. `cleanup` is removed if the test process dies.
    pub fn spawn(
        server: &Command,
        dir: &Path,
        log: &Path,
        cleanup: &Path,
        stop_signal: &'static str,
    ) -> Self {
        let mut child = Command::new("sh")
            .args(["-c", DB_WATCHDOG, "sh"])
            .arg(server.get_program())
            .args(server.get_args())
            .current_dir(dir)
            .env("OWNER", std::process::id().to_string())
            .env("LOG", log)
            .env("CLEANUP", cleanup)
            .env("STOP_SIGNAL", stop_signal)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the watchdog shell");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the server's pid");
        let pid = line
            .trim()
            .parse()
            .expect("the watchdog prints the server's pid");
        Self {
            child,
            pid,
            stop_signal,
            log: log.to_owned(),
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server process is alive (stopped by SIGSTOP counts as alive).
    pub fn is_running(&self) -> bool {
        process_alive(self.pid)
    }

    /// Polls `ready` until it holds; `Err` with the reason if the server exits first or
    /// `limit` passes.
    pub fn wait_ready(
        &self,
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if ready() {
                return Ok(());
            }
            if !self.is_running() {
                return Err("the server exited".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("the server did not answer within {limit:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The server and its descendants, the server first.
    fn tree(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        pids
    }

    /// SIGSTOP to the server, then to its children (which it can no longer add to).
    pub fn freeze(&self) {
        assert!(signal("-STOP", &[self.pid]), "SIGSTOP the server");
        signal("-STOP", &self.tree()[1..]);
    }

    /// SIGCONT to the children, then to the server.
    pub fn thaw(&self) {
        signal("-CONT", &self.tree()[1..]);
        assert!(signal("-CONT", &[self.pid]), "SIGCONT the server");
    }

    /// Thaws the server and shuts it down (its clean, fast shutdown; SIGKILL to it and
    /// its children after 20 s), and waits until it is gone.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if !self.is_running() {
            let _ = self.child.wait();
            return;
        }
        signal("-CONT", &self.tree());
        signal(&format!("-{}", self.stop_signal), &[self.pid]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.is_running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if self.is_running() {
            signal("-KILL", &self.tree());
        }
        let _ = self.child.wait();
    }
}

impl Drop for DbProcess {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Sends `signal` (`-STOP`, ...) to `pids` through `kill`; whether all got it.
fn signal(signal: &str, pids: &[u32]) -> bool {
    pids.is_empty()
        || Command::new("kill")
            .arg(signal)
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The children of `pid`, from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) state ...": comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
    })
}
