//! Test support: a private MariaDB server per test binary (or per test, for fault
//! tests), for the MySQL/MariaDB user store.
//!
//! Each server gets a fresh data directory in a temporary directory (in `/dev/shm` when
//! it has room, else `/tmp`): a copy of one `mariadb-install-db` made once per test
//! process (which takes seconds on a disk). It listens on a free loopback port (and on a
//! unix socket in that directory), reads no option file, flushes nothing on commit and
//! dies with its owner, under the same kind of watchdog as
//! [`RedisServer`](super::RedisServer). Tests can
//! stop, restart, freeze (SIGSTOP) and thaw it, and run SQL as root.
//!
//! `mariadbd` refuses to run as root unless told `--user`: when the tests run as root
//! (as in CI) the server runs as the `mysql` user instead (through `setpriv`, as for
//! PostgreSQL), which owns the temporary directory; otherwise as the current user.
//! MariaDB's root has no password (`--auth-root-authentication-method=normal`), over
//! the socket or TCP.

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

/// The database, and the user it is granted to.
pub const DATABASE: &str = "mpauthx";
/// The password of `mpauthx`@`%`.
pub const PASSWORD: &str = "mariadb-test-password-4b1d";

/// How long a start may take before the test fails.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a client run may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// Where `mariadbd` and `mariadb-install-db` may be when not on `PATH`.
const SBIN: &[&str] = &[
    "/usr/sbin",
    "/usr/local/sbin",
    "/usr/libexec",
    "/usr/local/mysql/bin",
];

/// Options shared by `mariadb-install-db` (which hands them to its bootstrap server)
/// and `mariadbd`: small, and nothing waits for the disk.
const TUNING: &[&str] = &[
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-doublewrite=0",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
];

/// A MariaDB server owned by the test, with a database `mpauthx` (utf8mb4) granted
/// whole to `mpauthx`@`%`.
pub struct MariaDbServer {
    port: u16,
    /// `mariadbd` under its watchdog; `None` while stopped. Declared before `dir`, so
    /// that the server stops before its directory goes.
    process: Option<DbProcess>,
    run_as: Option<RunAs>,
    /// `data/`, `server.log`, `mysqld.sock`, `tmp/`.
    dir: TempDir,
}

impl MariaDbServer {
    /// Creates a data directory (a copy of the one [`template`] makes once per test
    /// process), starts the server on a free port, creates the database and the user,
    /// and waits until it answers.
    pub fn start() -> Self {
        let run_as = super::run_as("mysql");
        let dir = db_temp_dir("mpauthx-mariadb-", run_as);
        copy_data_dir(template(run_as), &dir.path().join("data"), run_as);
        make_tmpdir(&dir.path().join("tmp"), run_as);
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
        let setup = server.try_sql_in(
            None,
            &format!(
                "CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
             CREATE USER '{DATABASE}'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{DATABASE}'@'%';"
            ),
        );
        if let Err(e) = setup {
            panic!("creating the mpauthx database and user: {e}");
        }
        server
    }

    /// The one server of this test binary, started on first use.
    pub fn shared() -> &'static MariaDbServer {
        static SERVER: OnceLock<MariaDbServer> = OnceLock::new();
        SERVER.get_or_init(MariaDbServer::start)
    }

    /// `mysql://mpauthx:<password>@127.0.0.1:<port>/mpauthx`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{DATABASE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// Root over TCP (no password): `mysql://root@127.0.0.1:<port>/mpauthx`.
    pub fn admin_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `mpauthx` user's password.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The temporary directory: `data/`, `server.log`, `mysqld.sock`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is alive (a frozen one is).
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(DbProcess::is_running)
    }

    /// Shuts the server down (SIGTERM: connections are cut, committed data stays), and
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

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    pub fn freeze(&self) {
        self.process().freeze();
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.process().thaw();
    }

    /// Runs `sql` (one or more statements) through the `mariadb` client as root over
    /// the socket, in the `mpauthx` database, and returns its output
    /// (tab-separated, no column names: `1` for `SELECT 1`); panics with the client's
    /// error if it fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb {sql:?} failed: {e}"))
    }

    /// [`sql`](Self::sql), with the client's error as `Err`.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.try_sql_in(Some(DATABASE), sql)
    }

    /// [`try_sql`](Self::try_sql) in another database, or in none.
    pub fn try_sql_in(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        let mut client = client_command();
        client
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--execute", sql]);
        client.args(database);
        run_client(&mut client, CLIENT_LIMIT)
    }

    /// Runs `sql` through the `mariadb` client as `user` over TCP, as an application
    /// would connect, giving up on connecting after `connect_timeout`.
    pub fn client_query(
        &self,
        user: &str,
        password: &str,
        sql: &str,
        connect_timeout: Duration,
    ) -> Result<String, String> {
        let mut client = client_command();
        client
            .args(["--protocol=TCP", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg(format!("--password={password}"))
            .arg(format!(
                "--connect-timeout={}",
                connect_timeout.as_secs().max(1)
            ))
            .args(["--execute", sql, DATABASE]);
        run_client(&mut client, connect_timeout + CLIENT_LIMIT)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn process(&self) -> &DbProcess {
        self.process.as_ref().expect("server not running")
    }

    /// Starts `mariadbd` on `self.port` and waits until it answers over its socket.
    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let mut mariadbd = command_as(&program(&["mariadbd", "mysqld"]), self.run_as);
        mariadbd
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg("--max-connections=200")
            .args(TUNING);
        let log = dir.join("server.log");
        let process = DbProcess::spawn(&mariadbd, dir, &log, dir, "TERM");
        let ready = process.wait_ready(START_LIMIT, || {
            self.try_sql_in(None, "SELECT 1").as_deref() == Ok("1")
        });
        match ready {
            Ok(()) => {
                self.process = Some(process);
                Ok(())
            }
            Err(e) => Err(format!(
                "mariadbd on port {}: {e}; its log ends with:\n{}",
                self.port,
                process.log_tail(30)
            )),
        }
    }
}

/// A fresh data directory (`mariadb-install-db`), made once per test process; servers
/// start on copies.
fn template(run_as: Option<RunAs>) -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = db_process_dir("mpauthx-mariadb-template-", run_as);
        let tmp = dir.join("tmp");
        make_tmpdir(&tmp, run_as);
        let data = dir.join("data");
        let install = output_within(
            command_as(
                &program(&["mariadb-install-db", "mysql_install_db"]),
                run_as,
            )
            .current_dir(&dir)
            .args(["--no-defaults", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--skip-test-db"])
            .args(TUNING),
            START_LIMIT,
        )
        .unwrap_or_else(|e| panic!("mariadb-install-db: {e}"));
        assert!(
            install.status.success(),
            "mariadb-install-db failed ({}):\n{}{}",
            install.status,
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        data
    })
}

/// The server's `--tmpdir`, owned by `run_as`.
fn make_tmpdir(tmp: &Path, run_as: Option<RunAs>) {
    std::fs::create_dir(tmp).expect("create the server's tmpdir");
    if let Some(RunAs { uid, gid }) = run_as {
        std::os::unix::fs::chown(tmp, Some(uid), Some(gid)).expect("chown the server's tmpdir");
    }
}

/// The first of `names` on `PATH` or in the usual sbin directories.
fn program(names: &[&str]) -> PathBuf {
    find_program(names, SBIN).unwrap_or_else(|| {
        panic!(
            "{} must be installed (mariadb-server, see .ci/run)",
            names[0]
        )
    })
}

/// The `mariadb` (or `mysql`) client, reading no option file, printing bare values.
fn client_command() -> Command {
    let client = find_program(&["mariadb", "mysql"], &[])
        .expect("the mariadb client must be installed (mariadb-client, see .ci/run)");
    let mut command = Command::new(client);
    for name in [
        "MYSQL_PWD",
        "MYSQL_HOST",
        "MYSQL_TCP_PORT",
        "MYSQL_UNIX_PORT",
    ] {
        command.env_remove(name);
    }
    command.args(["--no-defaults", "--batch", "--skip-column-names"]);
    command
}

fn run_client(client: &mut Command, limit: Duration) -> Result<String, String> {
    let output = output_within(client, limit)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
