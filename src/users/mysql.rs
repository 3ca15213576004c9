//! [`MySqlUserStore`]: users in MySQL or MariaDB, shared by every server.

use std::{future::Future, sync::LazyLock, time::Duration};

use sqlx::{
    Executor as _, MySql, MySqlConnection, MySqlPool,
    error::DatabaseError,
    mysql::{MySqlArguments, MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions, MySqlRow},
    pool::PoolConnection,
};

use super::{
    Current, Placement, Profile, StoredLogin, User, UserStore, UserStoreError,
    sql::{self, Kind, MERGED, Merged, SqlUserStoreBuilder, Value, timed, user_from_row, within},
    unix_now,
};
use crate::phone::PhoneNumber;

/// The name of the lock servers starting at once take to migrate one after another.
const MIGRATION_LOCK: &str = "mpauthx.user.migrate";

/// The longest value of a `varchar(255)` column, in characters.
const MAX_KEY_CHARS: usize = 255;
/// The longest app id (`appId` is a `varchar(64)`), in characters.
const MAX_APP_ID_CHARS: usize = 64;
/// The longest value of a `text` column, in bytes.
const MAX_TEXT_BYTES: usize = 65_535;

/// The table since several apps share it, keyed by (`appId`, `openId`). Binary
/// collation: ids compare byte for byte, as on WeChat, and 4-byte UTF-8 is stored as
/// it is.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS `user` (
    `appId` varchar(64) NOT NULL, `openId` varchar(255) NOT NULL,
    `personId` varchar(32) NOT NULL,
    `city` text, `country` text, `gender` bigint, `language` text, `nickName` text,
    `province` text, `avatarUrl` text, `unionId` varchar(255),
    `created_at` bigint, `updated_at` bigint, `last_login_at` bigint,
    `phoneNumber` varchar(255), `purePhoneNumber` varchar(255), `countryCode` varchar(255),
    PRIMARY KEY (`appId`, `openId`),
    KEY `user_unionId` (`unionId`),
    KEY `user_personId` (`personId`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// The columns beside the key a table of an older version (down to the Node
/// package's) may lack, with their definitions.
const ADDED_COLUMNS: [(&str, &str); 14] = [
    ("city", "text"),
    ("country", "text"),
    ("gender", "bigint"),
    ("language", "text"),
    ("nickName", "text"),
    ("province", "text"),
    ("avatarUrl", "text"),
    ("unionId", "varchar(255)"),
    ("created_at", "bigint"),
    ("updated_at", "bigint"),
    ("last_login_at", "bigint"),
    ("phoneNumber", "varchar(255)"),
    ("purePhoneNumber", "varchar(255)"),
    ("countryCode", "varchar(255)"),
];

/// The definitions of the columns a single-app table gains, as the new table has them.
const APP_ID_COLUMN: &str = "varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";
const PERSON_ID_COLUMN: &str = "varchar(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";

/// The upsert of a login, once its person is chosen, in the login's transaction under
/// its named locks (so exactly one of concurrent first logins inserts). `updated_at` is
/// assigned first, as MySQL evaluates the assignments in order and later ones see
/// earlier results; a person change counts as a change of data.
static UPSERT_LOGIN: LazyLock<String> = LazyLock::new(|| {
    let changed = MERGED
        .iter()
        .chain(["personId"].iter())
        // Compared as bytes: the collation would take 'Ada' and 'Ada ' for equal.
        .map(|c| format!("NOT (BINARY coalesce(VALUES(`{c}`), `{c}`) <=> BINARY `{c}`)"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let merge = MERGED
        .iter()
        .map(|c| format!("`{c}` = coalesce(VALUES(`{c}`), `{c}`)"))
        .collect::<Vec<_>>()
        .join(", ");
    let columns = MERGED
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO `user` (`appId`, `openId`, `personId`, {columns}, `created_at`,
            `updated_at`, `last_login_at`)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON DUPLICATE KEY UPDATE
            `updated_at` = CASE WHEN {changed} THEN VALUES(`updated_at`)
                ELSE coalesce(`updated_at`, VALUES(`updated_at`)) END,
            {merge},
            `personId` = VALUES(`personId`),
            `created_at` = coalesce(`created_at`, VALUES(`created_at`)),
            `last_login_at` = VALUES(`last_login_at`)"
    )
});

/// What a login's placement reads, once its locks are held (app id, openid, unionid
/// or `NULL`, each bound where it is used): the record's person and unionid (`NULL`s if
/// it is new), the person of another record with the unionid, and whether the record's
/// person has other records.
const SELECT_PLACEMENT: &str = "SELECT CONVERT(c.`personId` USING utf8mb4),
        CONVERT(c.`unionId` USING utf8mb4),
        (SELECT CONVERT(o.`personId` USING utf8mb4) FROM `user` AS o
            WHERE o.`unionId` = ? AND NOT (o.`appId` = ? AND o.`openId` = ?) LIMIT 1),
        EXISTS (SELECT 1 FROM `user` AS s
            WHERE s.`personId` = c.`personId` AND NOT (s.`appId` = ? AND s.`openId` = ?))
    FROM (SELECT 1) AS one LEFT JOIN `user` AS c ON c.`appId` = ? AND c.`openId` = ?";

/// The columns as the row reader takes them: the binary collation makes MySQL label
/// text columns binary, which the driver will not read as text, so they are converted.
fn select_list() -> String {
    sql::COLUMNS
        .iter()
        .map(|c| match *c {
            "gender" | "created_at" | "updated_at" | "last_login_at" => format!("`{c}`"),
            _ => format!("CONVERT(`{c}` USING utf8mb4)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

static SELECT_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM `user` WHERE `appId` = ? AND `openId` = ?",
        select_list()
    )
});

/// In MySQL `NULL` sorts below every value, so `DESC` puts never-seen rows last.
static SELECT_BY_UNION_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM `user` WHERE `unionId` = ?
        ORDER BY `last_login_at` DESC, `created_at` DESC LIMIT 1",
        select_list()
    )
});

/// Byte order, as the binary collation compares.
static SELECT_BY_PERSON: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM `user` WHERE `personId` = ?
        ORDER BY BINARY `appId`, BINARY `openId`",
        select_list()
    )
});

static LOCK_BY_KEY: LazyLock<String> = LazyLock::new(|| format!("{} FOR UPDATE", *SELECT_BY_KEY));

static WRITE_BACK: LazyLock<String> = LazyLock::new(|| {
    let set = MERGED
        .iter()
        .map(|c| format!("`{c}` = ?"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE `user` SET {set}, `created_at` = ?, `updated_at` = ?
        WHERE `appId` = ? AND `openId` = ?"
    )
});

/// A pooled connection that may hold named locks (`GET_LOCK`), which outlive
/// transactions: unless [`release`](Self::release)d, it is closed rather than returned
/// to the pool, and the server frees its locks with the session. So a call given up on
/// (the query timeout drops its future) or failing half-way leaves no lock behind.
struct Locking(Option<PoolConnection<MySql>>);

impl Locking {
    fn conn(&mut self) -> &mut MySqlConnection {
        self.0.as_mut().expect("the connection until released")
    }

    /// Frees every named lock the session holds and hands the connection back to the
    /// pool; if that fails, the connection is closed instead.
    async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT RELEASE_ALL_LOCKS()")
            .execute(self.conn())
            .await?;
        drop(self.0.take());
        Ok(())
    }
}

impl Drop for Locking {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// Takes the named lock `name`, waiting at most `wait_secs`: a wait that runs out is
/// [`UserStoreError::Busy`].
async fn get_lock(
    conn: &mut MySqlConnection,
    name: &str,
    wait_secs: u64,
) -> Result<(), UserStoreError> {
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(name)
        .bind(wait_secs)
        .fetch_one(conn)
        .await
        .map_err(|e| sql::error(e, classify, Duration::from_secs(wait_secs)))?;
    match locked {
        Some(1) => Ok(()),
        _ => Err(UserStoreError::Busy(
            "another call held the user's lock too long".into(),
        )),
    }
}

/// The named lock of `key` under `kind`: a hash, as lock names are at most 64
/// characters. Two keys sharing a hash only wait for each other.
fn lock_name(kind: &str, key: &[&str]) -> String {
    use sha2::Digest as _;

    let mut hash = sha2::Sha256::new();
    for part in key {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    format!("mpauthx.{kind}.{}", hex::encode(&hash.finalize()[..24]))
}

/// A [`UserStore`] on MySQL 8 or MariaDB 10.5+ (feature `mysql`), through a pool of
/// sqlx connections: users shared by every server.
///
/// The table is the seed's `user` table with its camelCase column names, in `utf8mb4`
/// with a binary collation (ids compare exactly; emoji nicknames are stored as they
/// are), keyed by (`appId`, `openId`), with indexes on `unionId` and `personId`.
/// Opening the store creates it or adds what an older version lacks, under a named lock
/// (`GET_LOCK`), so servers starting at once migrate once: a single-app table (keyed by
/// `openId` alone) gets the app id of
/// [`with_legacy_app_id`](SqlUserStoreBuilder::with_legacy_app_id) in every row and the
/// new key. A login takes named locks on its record and then on its unionid (waiting at
/// most the query timeout, in whole seconds) around its transaction, so concurrent
/// first logins of one user make one row and of one unionid in several apps one person;
/// a connection whose call did not release its locks is closed, which frees them.
/// Connections run in strict mode, so nothing is ever truncated: an app id longer than
/// 64 characters, another id longer than 255 or a profile field longer than 64 KiB is
/// refused with [`UserStoreError::InvalidInput`] before anything is sent. Every
/// statement runs within the query timeout; an unreachable or failing database is a
/// [`UserStoreError`] that answers 503.
///
/// ```no_run
/// use mpauthx::{MySqlUserStore, UserStore};
///
/// # async fn run() -> Result<(), mpauthx::UserStoreError> {
/// let users = MySqlUserStore::builder("mysql://mpauthx:secret@db.internal/mpauthx")
///     .with_max_connections(20)
///     .with_legacy_app_id("wx-shop")
///     .open()
///     .await?;
/// assert!(users.get("wx-shop", "o-nobody").await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlUserStore {
    pool: MySqlPool,
    query_timeout: Duration,
}

impl std::fmt::Debug for MySqlUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlUserStore")
            .field("connections", &self.pool.size())
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl MySqlUserStore {
    /// Settings for a store at `url` (`mysql://user:password@host:port/database`, with
    /// options such as `?ssl-mode=required`).
    pub fn builder(url: &str) -> SqlUserStoreBuilder<Self> {
        SqlUserStoreBuilder::new(url)
    }

    /// Opens a store at `url` with default settings.
    ///
    /// # Errors
    /// As [`SqlUserStoreBuilder::<MySqlUserStore>::open`].
    pub async fn open(url: &str) -> Result<Self, UserStoreError> {
        Self::builder(url).open().await
    }

    async fn run<T>(
        &self,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, UserStoreError> {
        timed(self.query_timeout, classify, query).await
    }

    /// How long a named lock is waited for: the query timeout in whole seconds, at
    /// least one (as the server's lock wait timeout).
    fn lock_wait_secs(&self) -> u64 {
        self.query_timeout.as_secs().max(1)
    }

    /// The user `sql` finds with `keys` bound in order, if any.
    async fn one(&self, sql: &str, keys: &[&str]) -> Result<Option<User>, UserStoreError> {
        for key in keys {
            check_key(key)?;
        }
        let query = keys
            .iter()
            .fold(sqlx::query(sql), |query, key| query.bind(*key));
        let row = self.run(query.fetch_optional(&self.pool)).await?;
        row.as_ref().map(read).transpose()
    }

    /// Creates the table or brings an older one up to date, under [`MIGRATION_LOCK`]:
    /// whoever gets the lock second finds nothing to do. MySQL commits each schema
    /// change by itself, so each step is one that a later run, finding it done, skips:
    /// a migration cut short resumes where it stopped. All of it within `limit` (the
    /// query timeout does not apply), waiting for another server's migration included.
    async fn migrate(
        &self,
        legacy_app_id: Option<&str>,
        limit: Duration,
    ) -> Result<(), UserStoreError> {
        let wait_secs = limit.as_secs().max(1);
        let db = |e| sql::error(e, classify, limit);
        let migrate = async {
            let mut conn = Locking(Some(self.pool.acquire().await.map_err(db)?));
            get_lock(conn.conn(), MIGRATION_LOCK, wait_secs)
                .await
                .map_err(|e| match e {
                    UserStoreError::Busy(_) => UserStoreError::Unavailable(
                        "another server held the migration lock too long".into(),
                    ),
                    other => other,
                })?;
            let result = migrate_locked(conn.conn(), legacy_app_id)
                .await
                .map_err(|e| match e {
                    Migration::Store(e) => e,
                    Migration::Driver(e) => db(e),
                });
            conn.release().await.map_err(db)?;
            result
        };
        within(limit, migrate).await
    }

    /// Merges `values` into an existing row in one transaction (the row locked), without
    /// counting as a login.
    async fn update(
        &self,
        app_id: &str,
        open_id: &str,
        values: Merged,
    ) -> Result<Option<User>, UserStoreError> {
        check_app_id(app_id)?;
        check_key(open_id)?;
        check(&values)?;
        let update = async {
            let mut tx = self.pool.begin().await?;
            let Some(row) = sqlx::query(&LOCK_BY_KEY)
                .bind(app_id)
                .bind(open_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let user = values.merge_into(&user_from_row(&row)?, unix_now());
            let merged = Merged::new(
                user.union_id.as_deref(),
                Some(&user.profile()),
                user.phone().as_ref(),
            );
            bind(&merged, sqlx::query(&WRITE_BACK))
                .bind(user.created_at)
                .bind(user.updated_at)
                .bind(app_id)
                .bind(open_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(user))
        };
        self.run(update).await
    }

    /// A login's transaction, its named locks held on `conn`.
    async fn login_locked(
        &self,
        conn: &mut MySqlConnection,
        app_id: &str,
        open_id: &str,
        union_id: Option<&str>,
        values: &Merged,
    ) -> Result<(MySqlRow, Option<String>), UserStoreError> {
        let db = |e| sql::error(e, classify, self.query_timeout);
        let mut tx = sqlx::Connection::begin(conn).await.map_err(db)?;
        let (person_id, current_union_id, owner, shared): (
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
        ) = sqlx::query_as(SELECT_PLACEMENT)
            .bind(union_id)
            .bind(app_id)
            .bind(open_id)
            .bind(app_id)
            .bind(open_id)
            .bind(app_id)
            .bind(open_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let current = person_id.map(|person_id| Current {
            person_id,
            union_id: current_union_id,
        });
        let placement = Placement::place(current.as_ref(), union_id, owner, shared != 0);
        let now = unix_now();
        let query = sqlx::query(&UPSERT_LOGIN)
            .bind(app_id)
            .bind(open_id)
            .bind(&placement.person_id);
        bind(values, query)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let row = sqlx::query(&SELECT_BY_KEY)
            .bind(app_id)
            .bind(open_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((row, placement.merged_from))
    }
}

/// Why a migration stopped.
enum Migration {
    Store(UserStoreError),
    Driver(sqlx::Error),
}

impl From<sqlx::Error> for Migration {
    fn from(e: sqlx::Error) -> Self {
        Self::Driver(e)
    }
}

/// Names of the table's columns (`COLUMNS`) or of the columns of its index `PRIMARY`,
/// in order (`STATISTICS`); empty if there is no such table or index.
async fn names(conn: &mut MySqlConnection, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sql).fetch_all(conn).await
}

/// The migration, [`MIGRATION_LOCK`] held on `conn`.
async fn migrate_locked(
    conn: &mut MySqlConnection,
    legacy_app_id: Option<&str>,
) -> Result<(), Migration> {
    let present = names(
        conn,
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user'",
    )
    .await?;
    if present.is_empty() {
        conn.execute(CREATE_TABLE).await?;
        return Ok(());
    }
    let has = |names: &[String], name: &str| names.iter().any(|n| n.eq_ignore_ascii_case(name));
    let primary_key = names(
        conn,
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user' AND INDEX_NAME = 'PRIMARY'
         ORDER BY SEQ_IN_INDEX",
    )
    .await?;
    let keyed_by_app = primary_key.len() == 2
        && primary_key[0].eq_ignore_ascii_case("appId")
        && primary_key[1].eq_ignore_ascii_case("openId");
    let mut app_id = legacy_app_id;
    if !keyed_by_app && app_id.is_none() {
        // Checked before any change: MySQL's schema changes cannot be rolled back.
        let unassigned = if has(&present, "appId") {
            "SELECT count(*) FROM `user` WHERE `appId` IS NULL"
        } else {
            "SELECT count(*) FROM `user`"
        };
        let rows: i64 = sqlx::query_scalar(unassigned).fetch_one(&mut *conn).await?;
        if rows > 0 {
            return Err(Migration::Store(UserStoreError::LegacyAppIdNeeded));
        }
        app_id = Some("");
    }
    for (column, definition) in ADDED_COLUMNS {
        if !has(&present, column) {
            tracing::info!(column, "adding column to the MySQL user table");
            let add = format!("ALTER TABLE `user` ADD COLUMN `{column}` {definition}");
            conn.execute(add.as_str()).await?;
        }
    }
    if let (false, Some(app_id)) = (keyed_by_app, app_id) {
        // The unionid's index first: the persons are joined by unionid, which without
        // it takes time quadratic in the rows.
        add_indexes(conn, &[("user_unionId", "unionId")]).await?;
        key_by_app(conn, &present, !primary_key.is_empty(), app_id).await?;
    }
    add_indexes(
        conn,
        &[("user_unionId", "unionId"), ("user_personId", "personId")],
    )
    .await?;
    Ok(())
}

/// Adds each of `indexes` (name, column) the table lacks.
async fn add_indexes(
    conn: &mut MySqlConnection,
    indexes: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let present = names(
        conn,
        "SELECT DISTINCT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user'",
    )
    .await?;
    for (index, column) in indexes {
        if !present.iter().any(|n| n.eq_ignore_ascii_case(index)) {
            tracing::info!(index, "adding index to the MySQL user table");
            let add = format!("ALTER TABLE `user` ADD KEY `{index}` (`{column}`)");
            conn.execute(add.as_str()).await?;
        }
    }
    Ok(())
}

/// Keys a single-app table (keyed by `openId`) by (`appId`, `openId`): every row gets
/// `app_id` and a person id of its own, except that rows sharing a unionid share one;
/// rows without times get the migration time. Each step skips what an earlier,
/// interrupted run did; the last one (the new key) is a single statement.
async fn key_by_app(
    conn: &mut MySqlConnection,
    present: &[String],
    has_primary_key: bool,
    app_id: &str,
) -> Result<(), sqlx::Error> {
    let has = |name: &str| present.iter().any(|n| n.eq_ignore_ascii_case(name));
    let mut add = Vec::new();
    if !has("appId") {
        add.push(format!("ADD COLUMN `appId` {APP_ID_COLUMN} NULL"));
    }
    if !has("personId") {
        add.push(format!("ADD COLUMN `personId` {PERSON_ID_COLUMN} NULL"));
    }
    if !add.is_empty() {
        conn.execute(format!("ALTER TABLE `user` {}", add.join(", ")).as_str())
            .await?;
    }
    let rows = sqlx::query("UPDATE `user` SET `appId` = ? WHERE `appId` IS NULL")
        .bind(app_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    tracing::info!(rows, app_id, "keying the MySQL user table by (app, openid)");
    conn.execute(
        "UPDATE `user` SET `personId` = REPLACE(UUID(), '-', '') WHERE `personId` IS NULL",
    )
    .await?;
    conn.execute(
        "UPDATE `user` AS u JOIN (SELECT `unionId`, MIN(`personId`) AS p FROM `user`
            WHERE `unionId` IS NOT NULL GROUP BY `unionId`) AS m ON u.`unionId` = m.`unionId`
        SET u.`personId` = m.p WHERE NOT (BINARY u.`personId` <=> BINARY m.p)",
    )
    .await?;
    let now = unix_now();
    sqlx::query(
        "UPDATE `user` SET `created_at` = coalesce(`created_at`, ?),
            `updated_at` = coalesce(`updated_at`, ?)
        WHERE `created_at` IS NULL OR `updated_at` IS NULL",
    )
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let drop_key = if has_primary_key {
        "DROP PRIMARY KEY, "
    } else {
        ""
    };
    conn.execute(
        format!(
            "ALTER TABLE `user` MODIFY `appId` {APP_ID_COLUMN} NOT NULL,
                MODIFY `personId` {PERSON_ID_COLUMN} NOT NULL,
                {drop_key}ADD PRIMARY KEY (`appId`, `openId`)"
        )
        .as_str(),
    )
    .await?;
    Ok(())
}

impl SqlUserStoreBuilder<MySqlUserStore> {
    /// Connects, checks the database answers and creates or migrates the table.
    ///
    /// # Errors
    /// [`UserStoreError::InvalidInput`] for a URL that is not a MySQL URL (the message
    /// never repeats it) or an overlong legacy app id, [`UserStoreError::Pool`] or
    /// [`UserStoreError::Unavailable`] when the database cannot be reached in time,
    /// [`UserStoreError::Database`] when the schema cannot be created,
    /// [`UserStoreError::LegacyAppIdNeeded`] when the table holds single-app users and
    /// no [`with_legacy_app_id`](Self::with_legacy_app_id) was given.
    pub async fn open(self) -> Result<MySqlUserStore, UserStoreError> {
        let options: MySqlConnectOptions = self
            .url
            .parse()
            .map_err(|_| UserStoreError::InvalidInput("not a mysql:// URL"))?;
        if let Some(app_id) = &self.legacy_app_id {
            check_app_id(app_id)?;
        }
        // The server's side of the query timeout: a statement waiting on a row lock
        // gives up too (whole seconds, at least one).
        let lock_wait = self.query_timeout.as_secs().max(1);
        let pool = MySqlPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.connect_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
                        .await?;
                    sqlx::query("SET SESSION innodb_lock_wait_timeout = ?")
                        .bind(lock_wait)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let store = MySqlUserStore {
            pool,
            query_timeout: self.query_timeout,
        };
        store
            .migrate(self.legacy_app_id.as_deref(), self.migration_timeout)
            .await?;
        Ok(store)
    }
}

impl UserStore for MySqlUserStore {
    fn upsert_login(
        &self,
        app_id: &str,
        open_id: &str,
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> impl Future<Output = Result<StoredLogin, UserStoreError>> + Send {
        let values = Merged::new(union_id, profile, phone);
        async move {
            check_app_id(app_id)?;
            check_key(open_id)?;
            check(&values)?;
            let wait_secs = self.lock_wait_secs();
            let login = async {
                let acquired = self.pool.acquire().await;
                let mut conn = Locking(Some(
                    acquired.map_err(|e| sql::error(e, classify, self.query_timeout))?,
                ));
                // The record's lock, then the unionid's, always in this order (no
                // deadlock), both before the transaction starts, so that its reads see
                // what the locks' last holders committed.
                get_lock(
                    conn.conn(),
                    &lock_name("user", &[app_id, open_id]),
                    wait_secs,
                )
                .await?;
                if let Some(union_id) = union_id {
                    get_lock(conn.conn(), &lock_name("union", &[union_id]), wait_secs).await?;
                }
                let result = self
                    .login_locked(conn.conn(), app_id, open_id, union_id, &values)
                    .await;
                // After the commit (or the rollback of a failed transaction, which the
                // driver runs first); a failed release closes the connection.
                if let Err(e) = conn.release().await {
                    tracing::debug!(error = %e, "could not release a login's locks; closing its connection");
                }
                result
            };
            let (row, merged_from) = within(self.query_timeout, login).await?;
            Ok(StoredLogin {
                user: read(&row)?,
                merged_from,
            })
        }
    }

    async fn get(&self, app_id: &str, open_id: &str) -> Result<Option<User>, UserStoreError> {
        check_app_id(app_id)?;
        self.one(&SELECT_BY_KEY, &[app_id, open_id]).await
    }

    async fn get_by_union_id(&self, union_id: &str) -> Result<Option<User>, UserStoreError> {
        self.one(&SELECT_BY_UNION_ID, &[union_id]).await
    }

    async fn person(&self, person_id: &str) -> Result<Vec<User>, UserStoreError> {
        check_key(person_id)?;
        let rows = self
            .run(
                sqlx::query(&SELECT_BY_PERSON)
                    .bind(person_id)
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(read).collect()
    }

    fn update_profile(
        &self,
        app_id: &str,
        open_id: &str,
        profile: &Profile,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let values = Merged::new(None, Some(profile), None);
        async move { self.update(app_id, open_id, values).await }
    }

    fn set_phone(
        &self,
        app_id: &str,
        open_id: &str,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let values = Merged::new(None, None, Some(phone));
        async move { self.update(app_id, open_id, values).await }
    }

    async fn delete(&self, app_id: &str, open_id: &str) -> Result<bool, UserStoreError> {
        check_app_id(app_id)?;
        check_key(open_id)?;
        let done = self
            .run(
                sqlx::query("DELETE FROM `user` WHERE `appId` = ? AND `openId` = ?")
                    .bind(app_id)
                    .bind(open_id)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Binds `merged` in [`MERGED`] order.
fn bind<'q>(
    merged: &'q Merged,
    mut query: sqlx::query::Query<'q, MySql, MySqlArguments>,
) -> sqlx::query::Query<'q, MySql, MySqlArguments> {
    for value in merged.values() {
        query = match value {
            Value::Text(text) => query.bind(text),
            Value::Integer(number) => query.bind(number),
        };
    }
    query
}

/// An id fits its `varchar(255)` column and compares exactly: MySQL's collations pad
/// with spaces (`'a' = 'a '`), so an id ending in a space would meet another's row.
fn check_key(key: &str) -> Result<(), UserStoreError> {
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(UserStoreError::InvalidInput(
            "an id is longer than 255 characters",
        ));
    }
    if key.ends_with(' ') {
        return Err(UserStoreError::InvalidInput(
            "an id ends with a space, which MySQL would ignore",
        ));
    }
    Ok(())
}

/// An app id fits its `varchar(64)` column and compares exactly (as [`check_key`]).
fn check_app_id(app_id: &str) -> Result<(), UserStoreError> {
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(UserStoreError::InvalidInput(
            "an app id is longer than 64 characters",
        ));
    }
    check_key(app_id)
}

/// Every value fits its column: ids and phone parts `varchar(255)`, profile fields
/// `text`.
fn check(values: &Merged) -> Result<(), UserStoreError> {
    for (column, value) in values.texts() {
        let Some(value) = value else { continue };
        let key_like = matches!(
            column,
            "unionId" | "phoneNumber" | "purePhoneNumber" | "countryCode"
        );
        if key_like {
            check_key(value)?;
        } else if value.len() > MAX_TEXT_BYTES {
            return Err(UserStoreError::InvalidInput(
                "a profile field is longer than 64 KiB",
            ));
        }
    }
    Ok(())
}

fn read(row: &MySqlRow) -> Result<User, UserStoreError> {
    user_from_row(row).map_err(|e| sql::error(e, classify, Duration::ZERO))
}

/// MySQL's and MariaDB's error numbers: lock waits and deadlocks are busy, read-only
/// modes read-only, connection limits and shutdowns unavailable, statement time limits
/// a timeout.
fn classify(e: &dyn DatabaseError) -> Kind {
    let Some(number) = e
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(|e| e.number())
    else {
        return Kind::Other;
    };
    match number {
        1205 | 1213 => Kind::Busy,
        1290 | 1792 | 1836 => Kind::ReadOnly,
        1040 | 1053 | 1077 | 1927 => Kind::Unavailable,
        1969 | 3024 => Kind::Timeout,
        _ => Kind::Other,
    }
}
