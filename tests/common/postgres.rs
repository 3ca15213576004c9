//! Test support: a private PostgreSQL server per test binary (or per test, for fault
//! tests), for the PostgreSQL user store.
//!
//! Each server gets a fresh cluster in a temporary directory (in `/dev/shm` when it has
//! room, else `/tmp`): a copy of one `initdb` made once per test process, which is much
//! faster than an `initdb` each. It listens on a free loopback port (and on a unix socket
//! in that directory), syncs nothing to disk and dies with its owner, under the same kind
//! of watchdog as [`RedisServer`](super::RedisServer). Tests can stop, restart, freeze (SIGSTOP) and
//! thaw it to play faults, and run SQL as the superuser to inspect or break the schema.
//!
//! The unix socket trusts everyone (the superuser's `psql` needs no password); TCP asks
//! for passwords (scram-sha-256), as a deployed server would.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (as in CI) the server
//! runs as the `postgres` user, which owns the temporary directory.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use tempfile::TempDir;

use super::{
    DbProcess, RunAs, command_as, copy_data_dir, db_process_dir, db_temp_dir, find_program,
    free_port, output_within,
};

/// The database and the role owning it.
pub const DATABASE: &str = "mpauthx";
/// The password of the `mpauthx` role.
pub const PASSWORD: &str = "pg-test-password-7f3a";
/// The superuser (`postgres`)'s password, for TCP connections; the socket needs none.
pub const ADMIN_PASSWORD: &str = "pg-admin-password-2c9e";

/// How long a start may take before the test fails.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a `psql` run may take.
const PSQL_LIMIT: Duration = Duration::from_secs(60);

/// A PostgreSQL server owned by the test, with a database `mpauthx` owned by the role
/// `mpauthx`.
pub struct PostgresServer {
    port: u16,
    /// The postmaster under its watchdog; `None` while stopped. Declared before `dir`,
    /// so that the server stops before its directory goes.
    process: Option<DbProcess>,
    run_as: Option<RunAs>,
    /// `data/` (the cluster), `server.log`, and the unix socket.
    dir: TempDir,
}

impl PostgresServer {
    /// Creates a cluster (a copy of the one [`template`] makes once per test process),
    /// starts it on a free port, creates the `mpauthx` role and database, and waits until
    /// it answers.
    pub fn start() -> Self {
        let run_as = super::run_as("postgres");
        let dir = db_temp_dir("mpauthx-pg-", run_as);
        copy_data_dir(template(run_as), &dir.path().join("data"), run_as);
        let mut server = Self {
            port: 0,
            process: None,
            run_as,
            dir,
        };
        // Another process may take the free port before the server binds it: try another.
        for attempt in 1.. {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.contains("Address already in use") => {}
                Err(e) => panic!("{e}"),
            }
        }
        server.psql_in(
            "postgres",
            &format!("CREATE ROLE {DATABASE} LOGIN PASSWORD '{PASSWORD}'"),
        );
        server.psql_in(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {DATABASE}"),
        );
        server
    }

    /// The one server of this test binary, started on first use.
    pub fn shared() -> &'static PostgresServer {
        static SERVER: OnceLock<PostgresServer> = OnceLock::new();
        SERVER.get_or_init(PostgresServer::start)
    }

    /// `postgres://mpauthx:<password>@127.0.0.1:<port>/mpauthx`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{DATABASE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The superuser over TCP: `postgres://postgres:<password>@127.0.0.1:<port>/mpauthx`.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{ADMIN_PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `mpauthx` role's password.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The temporary directory: `data/`, `server.log` and the unix socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is alive (a frozen one is).
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(DbProcess::is_running)
    }

    /// Shuts the server down (fast shutdown: sessions are cut at once, data stays), and
    /// waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the stopped server again, on the same port and data directory, and waits
    /// until it answers.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "server already running");
        if let Err(e) = self.spawn() {
            panic!("{e}");
        }
    }

    /// Freezes the postmaster and its children (SIGSTOP): connections and sessions stay
    /// open but nothing answers.
    pub fn freeze(&self) {
        self.process().freeze();
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.process().thaw();
    }

    /// Runs `sql` (one or more statements) through `psql` as the superuser in the
    /// `mpauthx` database and returns its output (unaligned, tuples only: `1` for
    /// `SELECT 1`); panics with psql's error if it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(DATABASE, sql)
    }

    /// [`psql`](Self::psql), with psql's error as `Err`.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_in(DATABASE, sql)
    }

    /// [`psql`](Self::psql) in another database.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        self.try_psql_in(database, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// [`try_psql`](Self::try_psql) in another database.
    pub fn try_psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut psql = psql_command();
        psql.arg("--host")
            .arg(self.dir.path())
            .args(["--port", &self.port.to_string(), "--username=postgres"])
            .args(["--dbname", database, "--command", sql]);
        run_psql(&mut psql, PSQL_LIMIT)
    }

    /// Runs `sql` through `psql` as `user` over TCP, as an application would connect,
    /// giving up on connecting after `connect_timeout` (libpq rounds 1 s up to 2 s).
    pub fn client_query(
        &self,
        user: &str,
        password: &str,
        sql: &str,
        connect_timeout: Duration,
    ) -> Result<String, String> {
        let timeout = connect_timeout.as_secs().max(1);
        let mut psql = psql_command();
        psql.env("PGPASSWORD", password)
            .arg("--dbname")
            .arg(format!(
                "host=127.0.0.1 port={} user={user} dbname={DATABASE} connect_timeout={timeout}",
                self.port
            ))
            .args(["--command", sql]);
        run_psql(&mut psql, connect_timeout + PSQL_LIMIT)
    }

    fn process(&self) -> &DbProcess {
        self.process.as_ref().expect("server not running")
    }

    /// Starts the postmaster on `self.port` and waits until it answers over its socket.
    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let mut postgres = command_as(&bin_dir().join("postgres"), self.run_as);
        postgres
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            // Nothing waits for the disk: a crash of the machine may lose the cluster,
            // not a crash of the server.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=200", "-c", "log_checkpoints=off"]);
        let log = dir.join("server.log");
        let process = DbProcess::spawn(&postgres, dir, &log, dir, "INT");
        let ready = process.wait_ready(START_LIMIT, || {
            self.try_psql_in("postgres", "SELECT 1").as_deref() == Ok("1")
        });
        match ready {
            Ok(()) => {
                self.process = Some(process);
                Ok(())
            }
            Err(e) => Err(format!(
                "postgres on port {}: {e}; its log ends with:\n{}",
                self.port,
                process.log_tail(30)
            )),
        }
    }
}

/// A fresh cluster (`initdb`), made once per test process; servers start on copies.
fn template(run_as: Option<RunAs>) -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = db_process_dir("mpauthx-pg-template-", run_as);
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, ADMIN_PASSWORD).expect("write the superuser's password file");
        let data = dir.join("data");
        let initdb = output_within(
            command_as(&bin_dir().join("initdb"), run_as)
                .current_dir(&dir)
                .arg("--pgdata")
                .arg(&data)
                .args(["--username=postgres", "--encoding=UTF8", "--locale=C"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--no-sync", "--no-instructions"]),
            START_LIMIT,
        )
        .unwrap_or_else(|e| panic!("initdb: {e}"));
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        data
    })
}

/// The directory of `initdb`, `postgres` and `psql`: where `initdb` on `PATH` really is,
/// else the highest `/usr/lib/postgresql/<version>/bin` (where Debian puts them).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let on_path = find_program(&["initdb"], &[])
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_owned))
            .filter(|dir| dir.join("postgres").is_file());
        on_path
            .or_else(|| {
                let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
                versions
                    .flatten()
                    .filter_map(|entry| {
                        let name = entry.file_name().into_string().ok()?;
                        let version: Vec<u32> = name
                            .split('.')
                            .map(str::parse)
                            .collect::<Result<_, _>>()
                            .ok()?;
                        let bin = entry.path().join("bin");
                        (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                            .then_some((version, bin))
                    })
                    .max()
                    .map(|(_, bin)| bin)
            })
            .expect("PostgreSQL's initdb and postgres must be installed (see .ci/run)")
    })
}

/// `psql` from [`bin_dir`] (or `PATH`), reading no `~/.psqlrc` and no `PG*` variable,
/// stopping at the first error, printing bare values.
fn psql_command() -> Command {
    let psql = Some(bin_dir().join("psql"))
        .filter(|p| p.is_file())
        .or_else(|| find_program(&["psql"], &[]))
        .expect("psql must be installed (see .ci/run)");
    let mut command = Command::new(psql);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    command.args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"]);
    command.args(["--set", "ON_ERROR_STOP=1"]);
    command
}

fn run_psql(psql: &mut Command, limit: Duration) -> Result<String, String> {
    let output = output_within(psql, limit)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
