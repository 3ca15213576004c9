//! The user stores against real databases: the user store suite on sqlite, PostgreSQL
//! and MariaDB (`suite`, `dbs`), outages and bad settings (`outages`), and smoke tests
//! of the servers themselves ([`common::postgres`] and
//! [`common::mariadb`]): each starts on a port of its own, answers its CLI client, keeps
//! its data across a stop and a restart, stops answering while frozen and answers again
//! once thawed, and two started at once do not collide.

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
mod suite;
mod dbs;
mod migrations;
mod outages;

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::{
    mariadb::MariaDbServer,
    postgres::{self, PostgresServer},
};

/// The connect timeout of the clients that must fail on a frozen server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The uid of the process whose pid is the first line of `pid_file`.
fn pid_file_owner(pid_file: &Path) -> u32 {
    let text = std::fs::read_to_string(pid_file).expect("read the pid file");
    let pid = text.lines().next().expect("a pid").trim();
    std::fs::metadata(format!("/proc/{pid}"))
        .expect("the server process")
        .uid()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0
}

#[test]
fn postgres_answers_on_its_own_port() {
    let pg = PostgresServer::shared();
    assert_ne!(pg.port(), 5432, "not the machine's own PostgreSQL");
    assert_eq!(pg.psql("SELECT 1"), "1");
    assert_eq!(pg.psql("SHOW port"), pg.port().to_string());
    assert_eq!(
        pg.url(),
        format!(
            "postgres://mpauthx:pg-test-password-7f3a@127.0.0.1:{}/mpauthx",
            pg.port()
        )
    );
    // The role logs in over TCP with its password and owns its database.
    let me = pg
        .client_query(
            "mpauthx",
            pg.password(),
            "SELECT current_user, current_database()",
            CONNECT_TIMEOUT,
        )
        .expect("mpauthx logs in over TCP");
    assert_eq!(me, "mpauthx|mpauthx");
    assert_eq!(
        pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mpauthx'"),
        "mpauthx"
    );
    assert_eq!(pg.psql("SHOW server_encoding"), "UTF8");
    assert_eq!(pg.psql("SHOW fsync"), "off");
    // TCP wants the password; the superuser has one too.
    let wrong = pg.client_query("mpauthx", "wrong", "SELECT 1", CONNECT_TIMEOUT);
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "{wrong:?}"
    );
    let admin = pg.client_query(
        "postgres",
        postgres::ADMIN_PASSWORD,
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        CONNECT_TIMEOUT,
    );
    assert_eq!(admin.as_deref(), Ok("t"));
    // As root, the server runs as `postgres` (it refuses root).
    let owner = pid_file_owner(&pg.dir().join("data/postmaster.pid"));
    if running_as_root() {
        assert_ne!(owner, 0, "postgres must not run as root");
    }
}

#[test]
fn postgres_keeps_a_table_across_stop_and_restart() {
    let started = Instant::now();
    let mut pg = PostgresServer::start();
    eprintln!("postgres started in {:?}", started.elapsed());
    let port = pg.port();
    pg.client_query(
        "mpauthx",
        pg.password(),
        "CREATE TABLE kept (id int PRIMARY KEY, name text); INSERT INTO kept VALUES (1, 'ünï');",
        CONNECT_TIMEOUT,
    )
    .expect("mpauthx creates a table");

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens once stopped"
    );
    let restarted = Instant::now();
    pg.restart();
    eprintln!("postgres restarted in {:?}", restarted.elapsed());
    assert!(pg.is_running());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("SELECT name FROM kept WHERE id = 1"), "ünï");

    // Dropping it stops the server and removes its directory.
    let dir = pg.dir().to_owned();
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn postgres_frozen_times_clients_out_and_thawed_answers() {
    let pg = PostgresServer::start();
    pg.freeze();
    assert!(pg.is_running(), "a frozen server is running");
    let asked = Instant::now();
    let frozen = pg.client_query("mpauthx", pg.password(), "SELECT 1", CONNECT_TIMEOUT);
    let waited = asked.elapsed();
    assert!(frozen.is_err(), "a frozen server answered: {frozen:?}");
    // libpq rounds a 1 s connect_timeout up to 2 s.
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    pg.thaw();
    let thawed = pg.client_query("mpauthx", pg.password(), "SELECT 1", CONNECT_TIMEOUT);
    assert_eq!(thawed.as_deref(), Ok("1"));
    assert_eq!(pg.psql("SELECT 1"), "1");
}

#[test]
fn two_postgres_servers_started_at_once_get_different_ports() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(PostgresServer::start);
        let b = s.spawn(PostgresServer::start);
        (a.join().expect("first"), b.join().expect("second"))
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.psql("CREATE TABLE only_in_a (id int)");
    assert_eq!(a.psql("SELECT count(*) FROM only_in_a"), "0");
    let in_b = b.try_psql("SELECT count(*) FROM only_in_a");
    assert!(in_b.is_err(), "{in_b:?}");
}

#[test]
fn mariadb_answers_on_its_own_port() {
    let db = MariaDbServer::shared();
    assert_ne!(db.port(), 3306, "not the machine's own MariaDB");
    assert_eq!(db.sql("SELECT 1"), "1");
    assert_eq!(db.sql("SELECT @@port"), db.port().to_string());
    assert_eq!(
        db.url(),
        format!(
            "mysql://mpauthx:mariadb-test-password-4b1d@127.0.0.1:{}/mpauthx",
            db.port()
        )
    );
    let me = db
        .client_query(
            "mpauthx",
            db.password(),
            "SELECT current_user(), database()",
            CONNECT_TIMEOUT,
        )
        .expect("mpauthx logs in over TCP");
    assert_eq!(me, "mpauthx@%\tmpauthx");
    assert_eq!(
        db.sql(
            "SELECT default_character_set_name FROM information_schema.schemata \
             WHERE schema_name = 'mpauthx'"
        ),
        "utf8mb4"
    );
    let wrong = db.client_query("mpauthx", "wrong", "SELECT 1", CONNECT_TIMEOUT);
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("Access denied")),
        "{wrong:?}"
    );
    // Root over TCP, as admin_url() says: no password.
    let root = db.client_query("root", "", "SELECT 1", CONNECT_TIMEOUT);
    assert_eq!(root.as_deref(), Ok("1"));
    // As root, the server runs as `mysql`.
    let owner = pid_file_owner(&db.dir().join("mariadbd.pid"));
    if running_as_root() {
        assert_ne!(owner, 0, "mariadbd must not run as root");
    }
}

#[test]
fn mariadb_keeps_a_table_across_stop_and_restart() {
    let started = Instant::now();
    let mut db = MariaDbServer::start();
    eprintln!("mariadb started in {:?}", started.elapsed());
    let port = db.port();
    db.client_query(
        "mpauthx",
        db.password(),
        "CREATE TABLE kept (id int PRIMARY KEY, name varchar(20)) ENGINE=InnoDB; \
         INSERT INTO kept VALUES (1, 'ünï');",
        CONNECT_TIMEOUT,
    )
    .expect("mpauthx creates a table");

    db.stop();
    assert!(!db.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens once stopped"
    );
    let restarted = Instant::now();
    db.restart();
    eprintln!("mariadb restarted in {:?}", restarted.elapsed());
    assert!(db.is_running());
    assert_eq!(db.port(), port);
    assert_eq!(db.sql("SELECT name FROM kept WHERE id = 1"), "ünï");

    let dir = db.dir().to_owned();
    drop(db);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn mariadb_frozen_times_clients_out_and_thawed_answers() {
    let db = MariaDbServer::start();
    db.freeze();
    assert!(db.is_running(), "a frozen server is running");
    let asked = Instant::now();
    let frozen = db.client_query("mpauthx", db.password(), "SELECT 1", CONNECT_TIMEOUT);
    let waited = asked.elapsed();
    assert!(frozen.is_err(), "a frozen server answered: {frozen:?}");
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    db.thaw();
    let thawed = db.client_query("mpauthx", db.password(), "SELECT 1", CONNECT_TIMEOUT);
    assert_eq!(thawed.as_deref(), Ok("1"));
    assert_eq!(db.sql("SELECT 1"), "1");
}

#[test]
fn two_mariadb_servers_started_at_once_get_different_ports() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(MariaDbServer::start);
        let b = s.spawn(MariaDbServer::start);
        (a.join().expect("first"), b.join().expect("second"))
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.sql("CREATE TABLE only_in_a (id int)");
    assert_eq!(a.sql("SELECT count(*) FROM only_in_a"), "0");
    let in_b = b.try_sql("SELECT count(*) FROM only_in_a");
    assert!(in_b.is_err(), "{in_b:?}");
}
