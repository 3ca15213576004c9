//! Logins on each user store, side by side in one run (see BENCHMARKS.md, "Logins on
//! each user store"; `benches/load.sh` runs it too). `cargo bench --bench users`.
//!
//! Each store (an sqlite file in a temporary directory, PostgreSQL and MariaDB, the
//! servers started here through the tests' helpers in `tests/common`) gets two
//! databases, filled untimed with 1,000 and with 100,000 users (one `INSERT … SELECT`
//! over a generated series, through the database's own client for the servers). Then,
//! `USERS_ROUNDS` (5) times, on the one database and then the other (1,000 users first
//! in odd rounds, 100,000 first in even ones; the users the rounds before added are
//! deleted first, untimed):
//!
//! 1. `LOGINS` (2000) logins through `MpAuth::authorize`, `LOGIN_CONCURRENCY` (16) at a
//!    time, against the WeChat simulator served over HTTP on loopback, each a fresh code
//!    of a new user (minted beforehand, untimed), tokens in a `MemoryTokenStore`; after
//!    `LOGIN_CONCURRENCY` untimed logins that open the connections;
//! 2. `LOGINS` calls of `UserStore::upsert_login` alone, at the same concurrency, each
//!    the first login of a new open id of the simulator's kind (no union id, no profile,
//!    no phone, as the logins of 1. write).
//!
//! Beside them, the same logins with a store that writes nothing (the bare login), first
//! and last. The SQL stores have as many pooled connections as there are concurrent
//! logins. A store whose server binaries are missing is skipped with a note. It prints
//! markdown tables (means of the rounds, and the 100,000 / 1,000 ratios) and the load
//! averages before and after, asserts nothing about the figures and exits non-zero only
//! when the setup fails.
//!
//! cargo passes `--bench` to every bench target; it is ignored here.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    env,
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    find_program,
    keys::{APP_ID, SECRET, SKU},
    mariadb::{self, MariaDbServer},
    postgres::{self, PostgresServer},
    sim,
};
use mpauthx::{
    AuthorizeRequest, MemoryTokenStore, MpAuth, MpAuthConfig, MySqlUserStore, PhoneNumber,
    PostgresUserStore, Profile, SqliteUserStore, StoredLogin, User, UserStore, UserStoreError,
    testing::{DEFAULT_MAX_CODES, WeChatSimulator},
};
use tokio::task::JoinSet;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The existing users of the two measurements of each store.
const SIZES: [usize; 2] = [1_000, 100_000];
/// Where `mariadbd` and `mariadb-install-db` may be when not on `PATH` (as the helper
/// looks for them).
const SBIN: &[&str] = &[
    "/usr/sbin",
    "/usr/local/sbin",
    "/usr/libexec",
    "/usr/local/mysql/bin",
];

fn knob(name: &str, default: usize) -> usize {
    env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn main() {
    let logins = knob("LOGINS", 2000);
    let concurrency = knob("LOGIN_CONCURRENCY", 16);
    let rounds = knob("USERS_ROUNDS", 5);
    let before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bench = Bench {
        logins,
        concurrency,
        rounds,
    };
    match bench.run(&runtime) {
        Ok(report) => report.print(&bench, &before, &load_average()),
        Err(e) => {
            eprintln!("users: {e}");
            std::process::exit(1);
        }
    }
}

struct Bench {
    logins: usize,
    concurrency: usize,
    rounds: usize,
}

/// One store at one size: a batch of logins and one of upserts per round.
struct Series {
    users: usize,
    logins: Vec<Batch>,
    upserts: Vec<Batch>,
}

/// The rows of one store.
struct StoreRows {
    name: &'static str,
    version: String,
    small: Series,
    large: Series,
}

struct Report {
    bare_first: Batch,
    bare_last: Batch,
    stores: Vec<StoreRows>,
    /// Stores not measured, and why.
    skipped: Vec<(&'static str, String)>,
}

impl Bench {
    fn run(&self, runtime: &tokio::runtime::Runtime) -> Result<Report> {
        eprintln!(
            "users: {} logins and {} upserts per row and round, {} at a time, {} rounds",
            self.logins, self.logins, self.concurrency, self.rounds
        );
        let bare_first = runtime.block_on(self.logins(NoopUserStore, "bare-first"))?;
        let mut stores = Vec::new();
        let mut skipped = Vec::new();

        let dir = tempfile::tempdir()?;
        let [small, large] = SIZES.map(|size| Sqlite {
            path: dir.path().join(format!("users-{size}.db")),
        });
        stores.push(runtime.block_on(self.store_rows(&small, &large))?);
        drop(dir);

        match postgres_missing() {
            Some(why) => skipped.push(("PostgreSQL", why)),
            None => {
                eprintln!("users: starting PostgreSQL");
                let server = PostgresServer::start();
                let [small, large] = SIZES.map(|size| Postgres {
                    server: &server,
                    database: format!("users_{size}"),
                    max_connections: self.concurrency,
                });
                for db in [&small, &large] {
                    server.try_psql_in(
                        "postgres",
                        &format!(
                            "CREATE DATABASE {} OWNER {}",
                            db.database,
                            postgres::DATABASE
                        ),
                    )?;
                }
                stores.push(runtime.block_on(self.store_rows(&small, &large))?);
            }
        }
        match mariadb_missing() {
            Some(why) => skipped.push(("MariaDB", why)),
            None => {
                eprintln!("users: starting MariaDB");
                let server = MariaDbServer::start();
                let [small, large] = SIZES.map(|size| MariaDb {
                    server: &server,
                    database: format!("users_{size}"),
                    max_connections: self.concurrency,
                });
                for db in [&small, &large] {
                    server.try_sql_in(
                        None,
                        &format!(
                            "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
                             GRANT ALL PRIVILEGES ON {db}.* TO '{user}'@'%';",
                            db = db.database,
                            user = mariadb::DATABASE,
                        ),
                    )?;
                }
                stores.push(runtime.block_on(self.store_rows(&small, &large))?);
            }
        }
        let bare_last = runtime.block_on(self.logins(NoopUserStore, "bare-last"))?;
        Ok(Report {
            bare_first,
            bare_last,
            stores,
            skipped,
        })
    }

    /// Fills `small` and `large` to their sizes (untimed), then times logins and upserts
    /// on each in turn, `self.rounds` times, each round on the filled users only (the
    /// users the rounds before added are deleted first, untimed).
    async fn store_rows<D: Db>(&self, small: &D, large: &D) -> Result<StoreRows> {
        let mut series = Vec::new();
        for (db, size) in [(small, SIZES[0]), (large, SIZES[1])] {
            let store = db.open().await?;
            let started = Instant::now();
            db.fill(size)?;
            let took = started.elapsed();
            check_count(db, size)?;
            eprintln!(
                "users: {}: {size} users filled in {:.1} s",
                D::NAME,
                took.as_secs_f64()
            );
            let empty = Series {
                users: size,
                logins: Vec::new(),
                upserts: Vec::new(),
            };
            series.push((db, store, empty));
        }
        for round in 1..=self.rounds {
            eprintln!("users: {}: round {round} of {}", D::NAME, self.rounds);
            // Odd rounds the smaller database first, even rounds the larger: a drift
            // within a round does not always favour the same size.
            if round > 1 {
                series.reverse();
            }
            for (db, store, series) in &mut series {
                db.reset()?;
                check_count(*db, series.users)?;
                let tag = format!("{}-{}-r{round}", D::TAG, series.users);
                series.logins.push(self.logins(store.clone(), &tag).await?);
                series
                    .upserts
                    .push(self.upserts(store.clone(), &tag).await?);
            }
        }
        series.sort_by_key(|(_, _, series)| series.users);
        let mut series = series.into_iter().map(|(_, _, series)| series);
        let (small_series, large_series) = (series.next(), series.next());
        Ok(StoreRows {
            name: D::NAME,
            version: small.version()?,
            small: small_series.ok_or("no series")?,
            large: large_series.ok_or("no series")?,
        })
    }

    /// `self.logins` timed logins of new users through `MpAuth::authorize` on `users`,
    /// after `self.concurrency` untimed ones; users are named after `tag`.
    async fn logins<U: UserStore>(&self, users: U, tag: &str) -> Result<Batch> {
        let (count, concurrency) = (self.logins, self.concurrency);
        let sim = WeChatSimulator::new(APP_ID, SECRET)
            .with_max_codes(DEFAULT_MAX_CODES.max(count + concurrency + 100));
        let base = sim::serve(&sim).await;
        let config = MpAuthConfig::new(APP_ID, SECRET, SKU)?.with_wechat_base_url(&base);
        let auth = Arc::new(MpAuth::new(config, MemoryTokenStore::new(), users));
        let codes = |prefix: &str, count: usize| -> Result<Arc<Vec<String>>> {
            let codes = (0..count)
                .map(|n| Ok(sim.login(&format!("{tag}-{prefix}-{n}"))?.code))
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(codes))
        };
        let login = |codes: Arc<Vec<String>>| {
            let auth = Arc::clone(&auth);
            move |n: usize| {
                let (auth, codes) = (Arc::clone(&auth), Arc::clone(&codes));
                async move {
                    auth.authorize(&AuthorizeRequest::new(&codes[n]))
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            }
        };
        // Untimed: open the WeChat client's and the pool's connections.
        let warm = drive(concurrency, concurrency, login(codes("warm", concurrency)?)).await;
        if let Some(e) = warm.error {
            return Err(format!("{tag}: a warm-up login failed: {e}").into());
        }
        Ok(drive(count, concurrency, login(codes("login", count)?)).await)
    }

    /// `self.logins` timed `upsert_login` calls on `users`, each a new open id.
    async fn upserts<U: UserStore>(&self, users: U, tag: &str) -> Result<Batch> {
        let sim = WeChatSimulator::new(APP_ID, SECRET);
        let ids: Arc<Vec<String>> = Arc::new(
            (0..self.logins)
                .map(|n| sim.open_id(&format!("{tag}-upsert-{n}")))
                .collect(),
        );
        Ok(drive(self.logins, self.concurrency, move |n| {
            let (users, ids) = (users.clone(), Arc::clone(&ids));
            async move {
                users
                    .upsert_login(APP_ID, &ids[n], None, None, None)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await)
    }
}

fn check_count(db: &impl Db, want: usize) -> Result<()> {
    let rows = db.count()?;
    if rows != want {
        return Err(format!("{rows} users in the table, not {want}").into());
    }
    Ok(())
}

/// Latencies of one timed batch.
struct Batch {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: usize,
    /// The first failure's message.
    error: Option<String>,
}

/// The value at quantile `q` (nearest rank) of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `job(0..count)`, `concurrency` at a time, each timed.
async fn drive<F, Fut>(count: usize, concurrency: usize, job: F) -> Batch
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), String>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (job, next, first_error) = (
            Arc::clone(&job),
            Arc::clone(&next),
            Arc::clone(&first_error),
        );
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return (latencies, failures);
                }
                let sent = Instant::now();
                let result = job(n).await;
                latencies.push(sent.elapsed());
                if let Err(e) = result {
                    failures += 1;
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    for (l, f) in workers.join_all().await {
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let error = first_error.lock().unwrap().take();
    Batch {
        per_s: count as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(quantile(&latencies, 0.50)),
        p99_ms: ms(quantile(&latencies, 0.99)),
        failures,
        error,
    }
}

/// A store that keeps nothing: the login without a database.
#[derive(Debug, Clone)]
struct NoopUserStore;

fn new_user(app_id: &str, open_id: &str, union_id: Option<&str>) -> User {
    let now = unix_now();
    User {
        app_id: app_id.to_owned(),
        open_id: open_id.to_owned(),
        person_id: "0".repeat(32),
        union_id: union_id.map(str::to_owned),
        nick_name: None,
        avatar_url: None,
        gender: None,
        city: None,
        province: None,
        country: None,
        language: None,
        created_at: now,
        updated_at: now,
        last_login_at: Some(now),
        phone_number: None,
        pure_phone_number: None,
        country_code: None,
    }
}

impl UserStore for NoopUserStore {
    async fn upsert_login(
        &self,
        app_id: &str,
        open_id: &str,
        union_id: Option<&str>,
        _profile: Option<&Profile>,
        _phone: Option<&PhoneNumber>,
    ) -> std::result::Result<StoredLogin, UserStoreError> {
        Ok(StoredLogin::new(new_user(app_id, open_id, union_id)))
    }

    async fn get(
        &self,
        _app_id: &str,
        _open_id: &str,
    ) -> std::result::Result<Option<User>, UserStoreError> {
        Ok(None)
    }

    async fn get_by_union_id(
        &self,
        _union_id: &str,
    ) -> std::result::Result<Option<User>, UserStoreError> {
        Ok(None)
    }

    async fn person(&self, _person_id: &str) -> std::result::Result<Vec<User>, UserStoreError> {
        Ok(Vec::new())
    }

    async fn update_profile(
        &self,
        _app_id: &str,
        _open_id: &str,
        _profile: &Profile,
    ) -> std::result::Result<Option<User>, UserStoreError> {
        Ok(None)
    }

    async fn set_phone(
        &self,
        _app_id: &str,
        _open_id: &str,
        _phone: &PhoneNumber,
    ) -> std::result::Result<Option<User>, UserStoreError> {
        Ok(None)
    }

    async fn delete(
        &self,
        _app_id: &str,
        _open_id: &str,
    ) -> std::result::Result<bool, UserStoreError> {
        Ok(false)
    }
}

/// A database to measure: how to open its store, fill it and reset it.
trait Db {
    type Store: UserStore;
    /// The row label.
    const NAME: &'static str;
    /// A prefix of its simulated users' names, unique to it.
    const TAG: &'static str;

    /// Opens the store (which creates the table).
    async fn open(&self) -> Result<Self::Store>;
    fn version(&self) -> Result<String>;
    /// Inserts `count` users into the empty table, in one statement (blocking).
    fn fill(&self, count: usize) -> Result<()>;
    /// Deletes the users the fill did not insert (blocking).
    fn reset(&self) -> Result<()>;
    /// The rows in the table (blocking).
    fn count(&self) -> Result<usize>;
}

/// The fill's open ids begin so; the simulator's begin with `o` and a letter or digit of
/// its hash, compared case-sensitively.
const FILL_PREFIX: &str = "oFill";

/// The fill's values for the seed's columns, as SQL over `n` (an integer expression):
/// `openId`, `unionId`, `nickName`, `avatarUrl`, `gender`, `city`, `province`, `country`,
/// `language`, `created_at`, `updated_at`, `last_login_at`, `phoneNumber`,
/// `purePhoneNumber`, `countryCode`, `appId` (the benchmark's app), `personId` (one
/// person per user, 32 hex digits); `pad(expr, width)` left-pads with zeros and `cat`
/// concatenates, in the database's own functions. Open and union ids are 28 characters,
/// as WeChat's.
fn fill_values(pad: impl Fn(&str, usize) -> String, cat: impl Fn(&[&str]) -> String) -> String {
    let now = unix_now();
    let phone = cat(&["'138'", &pad("n % 100000000", 8)]);
    [
        cat(&[&format!("'{FILL_PREFIX}'"), &pad("n", 23)]),
        cat(&["'uFill'", &pad("n", 23)]),
        cat(&["'user '", &pad("n", 6)]),
        cat(&[
            "'https://thirdwx.qlogo.cn/mmopen/vi_32/'",
            &pad("n", 12),
            "'/132'",
        ]),
        "n % 3".into(),
        "'Guangzhou'".into(),
        "'Guangdong'".into(),
        "'China'".into(),
        "'zh_CN'".into(),
        now.to_string(),
        now.to_string(),
        now.to_string(),
        phone.clone(),
        phone,
        "'86'".into(),
        format!("'{APP_ID}'"),
        pad("n", 32),
    ]
    .join(", ")
}

/// The seed's column names, quoted with `q`.
fn fill_columns(q: char) -> String {
    [
        "openId",
        "unionId",
        "nickName",
        "avatarUrl",
        "gender",
        "city",
        "province",
        "country",
        "language",
        "created_at",
        "updated_at",
        "last_login_at",
        "phoneNumber",
        "purePhoneNumber",
        "countryCode",
        "appId",
        "personId",
    ]
    .map(|c| format!("{q}{c}{q}"))
    .join(", ")
}

struct Sqlite {
    path: PathBuf,
}

impl Db for Sqlite {
    type Store = SqliteUserStore;
    const NAME: &'static str = "sqlite";
    const TAG: &'static str = "sqlite";

    async fn open(&self) -> Result<SqliteUserStore> {
        Ok(SqliteUserStore::open(&self.path).await?)
    }

    fn version(&self) -> Result<String> {
        Ok(format!("sqlite {}", rusqlite::version()))
    }

    fn fill(&self, count: usize) -> Result<()> {
        let values = fill_values(
            |e, w| format!("printf('%0{w}d', {e})"),
            |parts| parts.join(" || "),
        );
        let db = raw_sqlite(&self.path)?;
        db.execute_batch(&format!(
            "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {last})
             INSERT INTO user ({columns}) SELECT {values} FROM seq",
            last = count - 1,
            columns = fill_columns('"'),
        ))?;
        // Fold the insert into the database file now, not in a timed login's write.
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        let db = raw_sqlite(&self.path)?;
        db.execute(
            &format!("DELETE FROM user WHERE openId NOT GLOB '{FILL_PREFIX}*'"),
            [],
        )?;
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn count(&self) -> Result<usize> {
        let n: i64 =
            raw_sqlite(&self.path)?.query_row("SELECT count(*) FROM user", [], |r| r.get(0))?;
        Ok(n as usize)
    }
}

fn raw_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(10))?;
    Ok(db)
}

struct Postgres<'a> {
    server: &'a PostgresServer,
    database: String,
    max_connections: usize,
}

impl Postgres<'_> {
    fn psql(&self, sql: &str) -> Result<String> {
        Ok(self.server.try_psql_in(&self.database, sql)?)
    }
}

impl Db for Postgres<'_> {
    type Store = PostgresUserStore;
    const NAME: &'static str = "PostgreSQL";
    const TAG: &'static str = "pg";

    async fn open(&self) -> Result<PostgresUserStore> {
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            postgres::DATABASE,
            postgres::PASSWORD,
            self.server.port(),
            self.database
        );
        Ok(PostgresUserStore::builder(&url)
            .with_max_connections(self.max_connections as u32)
            .open()
            .await?)
    }

    fn version(&self) -> Result<String> {
        Ok(format!("PostgreSQL {}", self.psql("SHOW server_version")?))
    }

    fn fill(&self, count: usize) -> Result<()> {
        let values = fill_values(
            |e, w| format!("lpad(({e})::text, {w}, '0')"),
            |parts| parts.join(" || "),
        );
        self.psql(&format!(
            r#"INSERT INTO "user" ({columns}) SELECT {values} FROM generate_series(0, {last}) AS n"#,
            last = count - 1,
            columns = fill_columns('"'),
        ))?;
        self.settle()
    }

    fn reset(&self) -> Result<()> {
        self.psql(&format!(
            r#"DELETE FROM "user" WHERE "openId" NOT LIKE '{FILL_PREFIX}%'"#
        ))?;
        self.settle()
    }

    fn count(&self) -> Result<usize> {
        Ok(self.psql(r#"SELECT count(*) FROM "user""#)?.parse()?)
    }
}

impl Postgres<'_> {
    /// Statistics and the visibility map brought up to date, dead rows vacuumed and the
    /// pages written out, before the timed logins.
    fn settle(&self) -> Result<()> {
        self.psql(r#"VACUUM ANALYZE "user""#)?;
        self.psql("CHECKPOINT")?;
        Ok(())
    }
}

struct MariaDb<'a> {
    server: &'a MariaDbServer,
    database: String,
    max_connections: usize,
}

impl MariaDb<'_> {
    fn sql(&self, sql: &str) -> Result<String> {
        Ok(self.server.try_sql_in(Some(&self.database), sql)?)
    }
}

impl Db for MariaDb<'_> {
    type Store = MySqlUserStore;
    const NAME: &'static str = "MariaDB";
    const TAG: &'static str = "mariadb";

    async fn open(&self) -> Result<MySqlUserStore> {
        let url = format!(
            "mysql://{}:{}@127.0.0.1:{}/{}",
            mariadb::DATABASE,
            mariadb::PASSWORD,
            self.server.port(),
            self.database
        );
        Ok(MySqlUserStore::builder(&url)
            .with_max_connections(self.max_connections as u32)
            .open()
            .await?)
    }

    fn version(&self) -> Result<String> {
        let version = self.sql("SELECT VERSION()")?;
        Ok(format!(
            "MariaDB {}",
            version.split('-').next().unwrap_or(&version)
        ))
    }

    fn fill(&self, count: usize) -> Result<()> {
        let values = fill_values(
            |e, w| format!("LPAD({e}, {w}, '0')"),
            |parts| format!("CONCAT({})", parts.join(", ")),
        );
        // `seq_<from>_to_<to>`: a table of the Sequence engine.
        self.sql(&format!(
            "INSERT INTO `user` ({columns}) SELECT {values} FROM (SELECT seq AS n FROM seq_0_to_{last}) AS s",
            last = count - 1,
            columns = fill_columns('`'),
        ))?;
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        // The table's binary collation makes LIKE case-sensitive.
        self.sql(&format!(
            "DELETE FROM `user` WHERE `openId` NOT LIKE '{FILL_PREFIX}%'"
        ))?;
        Ok(())
    }

    fn count(&self) -> Result<usize> {
        Ok(self.sql("SELECT count(*) FROM `user`")?.parse()?)
    }
}

/// Why the PostgreSQL rows cannot run, if they cannot (as `common::postgres` finds its
/// programs).
fn postgres_missing() -> Option<String> {
    let on_path = find_program(&["initdb"], &[])
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_owned))
        .filter(|dir| dir.join("postgres").is_file());
    let bin = on_path.or_else(|| {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
    });
    let Some(bin) = bin else {
        return Some("no PostgreSQL `initdb` and `postgres`".into());
    };
    if !bin.join("psql").is_file() && find_program(&["psql"], &[]).is_none() {
        return Some("no `psql`".into());
    }
    missing_user("postgres")
}

/// Why the MariaDB rows cannot run, if they cannot.
fn mariadb_missing() -> Option<String> {
    if find_program(&["mariadbd", "mysqld"], SBIN).is_none() {
        return Some("no `mariadbd`".into());
    }
    if find_program(&["mariadb-install-db", "mysql_install_db"], SBIN).is_none() {
        return Some("no `mariadb-install-db`".into());
    }
    if find_program(&["mariadb", "mysql"], &[]).is_none() {
        return Some("no `mariadb` client".into());
    }
    missing_user("mysql")
}

/// As root the helpers run the server as `user`: a note if it does not exist.
fn missing_user(user: &str) -> Option<String> {
    let id = |args: &[&str]| {
        Command::new("id")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    (id(&["-u"]).as_deref() == Some("0") && id(&["-u", user]).is_none())
        .then(|| format!("running as root, and no `{user}` user to run the server as"))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The mean of `f` over `batches`.
fn mean(batches: &[Batch], f: impl Fn(&Batch) -> f64) -> f64 {
    batches.iter().map(f).sum::<f64>() / batches.len().max(1) as f64
}

/// `large / small` of `f` per round: min / median / max.
fn spread(small: &[Batch], large: &[Batch], f: impl Fn(&Batch) -> f64) -> String {
    let mut ratios: Vec<f64> = small.iter().zip(large).map(|(s, l)| f(l) / f(s)).collect();
    ratios.sort_by(f64::total_cmp);
    match ratios[..] {
        [] => String::new(),
        _ => format!(
            "{:.2} / {:.2} / {:.2}",
            ratios[0],
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1]
        ),
    }
}

fn per_s(b: &Batch) -> f64 {
    b.per_s
}

fn p50(b: &Batch) -> f64 {
    b.p50_ms
}

fn p99(b: &Batch) -> f64 {
    b.p99_ms
}

/// `| name | users | per s | p50 | p99 | failures |` over `batches`.
fn batch_row(name: &str, users: &str, batches: &[Batch]) -> String {
    format!(
        "| {name} | {users} | {} | {:.2} | {:.2} | {} |",
        thousands(mean(batches, per_s).round() as usize),
        mean(batches, p50),
        mean(batches, p99),
        batches.iter().map(|b| b.failures).sum::<usize>()
    )
}

impl Report {
    fn print(&self, bench: &Bench, before: &str, after: &str) {
        let (n, c, r) = (thousands(bench.logins), bench.concurrency, bench.rounds);
        let (small, large) = (thousands(SIZES[0]), thousands(SIZES[1]));
        let versions: Vec<&str> = self.stores.iter().map(|s| s.version.as_str()).collect();
        println!();
        println!(
            "{} cores, {}; {n} logins and {n} upserts per row and round, {c} at a time, mean of {r} rounds (each store at {small} and at {large} users in turn, the order alternating); the simulator over HTTP on loopback, tokens in memory, {c} pooled connections for the SQL stores; load average (1, 5, 15 min) {before} before, {after} after",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            versions.join(", "),
        );
        println!();
        println!(
            "| `MpAuth::authorize`, {n} logins, {c} at a time | users | logins/s | p50 ms | p99 ms | failures |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "{}",
            batch_row(
                "bare login (a store that writes nothing), first",
                "",
                std::slice::from_ref(&self.bare_first)
            )
        );
        for store in &self.stores {
            for series in [&store.small, &store.large] {
                println!(
                    "{}",
                    batch_row(store.name, &thousands(series.users), &series.logins)
                );
            }
        }
        for (name, why) in &self.skipped {
            println!("| {name} | skipped: {why} | | | | |");
        }
        println!(
            "{}",
            batch_row(
                "bare login, last",
                "",
                std::slice::from_ref(&self.bare_last)
            )
        );

        println!();
        println!(
            "| store | logins/s, {large} / {small} users | per round, min / median / max | p50, {large} / {small} | p99, {large} / {small} |"
        );
        println!("|---|---:|---:|---:|---:|");
        for store in &self.stores {
            let (s, l) = (&store.small.logins, &store.large.logins);
            println!(
                "| {} | {:.2} | {} | {:.2} | {:.2} |",
                store.name,
                mean(l, per_s) / mean(s, per_s),
                spread(s, l, per_s),
                mean(l, p50) / mean(s, p50),
                mean(l, p99) / mean(s, p99),
            );
        }

        let bare_p50 = (self.bare_first.p50_ms + self.bare_last.p50_ms) / 2.0;
        println!();
        println!(
            "| `UserStore::upsert_login` alone, {n} new users, {c} at a time | users | upserts/s | p50 ms | p99 ms | failures | upsert p50 / login p50 | login p50 − bare login p50, ms |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for store in &self.stores {
            for series in [&store.small, &store.large] {
                let login_p50 = mean(&series.logins, p50);
                println!(
                    "{} {:.2} | {:.2} |",
                    batch_row(store.name, &thousands(series.users), &series.upserts),
                    mean(&series.upserts, p50) / login_p50,
                    login_p50 - bare_p50
                );
            }
        }
        println!();
        println!(
            "(The bare login's p50 is the mean of its first and last rows: {bare_p50:.2} ms.)"
        );
        let bare = [
            ("bare login, first", &self.bare_first),
            ("bare login, last", &self.bare_last),
        ];
        let batches = bare.into_iter().chain(self.stores.iter().flat_map(|s| {
            [&s.small, &s.large]
                .into_iter()
                .flat_map(|series| series.logins.iter().chain(&series.upserts))
                .map(move |b| (s.name, b))
        }));
        for (name, batch) in batches {
            if let Some(e) = &batch.error {
                println!(
                    "\nwarning: {name}: {} failures, the first: {e}",
                    batch.failures
                );
            }
        }
    }
}
