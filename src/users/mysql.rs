//! [`MySqlUserStore`]: users in MySQL or MariaDB, shared by every server.

use std::{future::Future, sync::LazyLock, time::Duration};

use sqlx::{
    Executor as _, MySql, MySqlPool,
    error::DatabaseError,
    mysql::{MySqlArguments, MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions, MySqlRow},
};

use super::{
    Profile, User, UserStore, UserStoreError,
    sql::{self, Kind, MERGED, Merged, SqlUserStoreBuilder, Value, timed, user_from_row},
    unix_now,
};
use crate::phone::PhoneNumber;

/// The name of the lock servers starting at once take to migrate one after another.
const MIGRATION_LOCK: &str = "mpauthx.user.migrate";

/// The longest value of a `varchar(255)` column, in characters.
const MAX_KEY_CHARS: usize = 255;
/// The longest value of a `text` column, in bytes.
const MAX_TEXT_BYTES: usize = 65_535;

/// Binary collation: openids and unionids compare byte for byte, as on WeChat, and
/// 4-byte UTF-8 is stored as it is.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS `user` (
    `openId` varchar(255) NOT NULL PRIMARY KEY,
    `city` text, `country` text, `gender` bigint, `language` text, `nickName` text,
    `province` text, `avatarUrl` text, `unionId` varchar(255),
    `created_at` bigint, `updated_at` bigint, `last_login_at` bigint,
    `phoneNumber` varchar(255), `purePhoneNumber` varchar(255), `countryCode` varchar(255),
    KEY `user_unionId` (`unionId`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Columns a table of an older version may lack, with their definitions.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("phoneNumber", "varchar(255)"),
    ("purePhoneNumber", "varchar(255)"),
    ("countryCode", "varchar(255)"),
];

/// One statement, so that concurrent first logins race inside InnoDB's primary key:
/// exactly one inserts, the others take the update. `updated_at` is assigned first, as
/// MySQL evaluates the assignments in order and later ones see earlier results.
static UPSERT_LOGIN: LazyLock<String> = LazyLock::new(|| {
    let changed = MERGED
        .iter()
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
        "INSERT INTO `user` (`openId`, {columns}, `created_at`, `updated_at`, `last_login_at`)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON DUPLICATE KEY UPDATE
            `updated_at` = CASE WHEN {changed} THEN VALUES(`updated_at`)
                ELSE coalesce(`updated_at`, VALUES(`updated_at`)) END,
            {merge},
            `created_at` = coalesce(`created_at`, VALUES(`created_at`)),
            `last_login_at` = VALUES(`last_login_at`)"
    )
});

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

static SELECT_BY_OPEN_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM `user` WHERE `openId` = ?", select_list()));

/// In MySQL `NULL` sorts below every value, so `DESC` puts never-seen rows last.
static SELECT_BY_UNION_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM `user` WHERE `unionId` = ?
        ORDER BY `last_login_at` DESC, `created_at` DESC LIMIT 1",
        select_list()
    )
});

static LOCK_BY_OPEN_ID: LazyLock<String> =
    LazyLock::new(|| format!("{} FOR UPDATE", *SELECT_BY_OPEN_ID));

static WRITE_BACK: LazyLock<String> = LazyLock::new(|| {
    let set = MERGED
        .iter()
        .map(|c| format!("`{c}` = ?"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE `user` SET {set}, `created_at` = ?, `updated_at` = ? WHERE `openId` = ?")
});

/// A [`UserStore`] on MySQL 8 or MariaDB 10.5+ (feature `mysql`), through a pool of
/// sqlx connections: users shared by every server.
///
/// The table is the seed's `user` table with its camelCase column names, in `utf8mb4`
/// with a binary collation (ids compare exactly; emoji nicknames are stored as they
/// are). Opening the store creates it or adds what an older version lacks, under a
/// named lock (`GET_LOCK`), so servers starting at once migrate once. Connections run in
/// strict mode, so nothing is ever truncated: an id longer than 255 characters or a
/// profile field longer than 64 KiB is refused with [`UserStoreError::InvalidInput`]
/// before anything is sent. Every statement runs within the query timeout; an
/// unreachable or failing database is a [`UserStoreError`] that answers 503.
///
/// ```no_run
/// use mpauthx::{MySqlUserStore, UserStore};
///
/// # async fn run() -> Result<(), mpauthx::UserStoreError> {
/// let users = MySqlUserStore::builder("mysql://mpauthx:secret@db.internal/mpauthx")
///     .with_max_connections(20)
///     .open()
///     .await?;
/// assert!(users.get("o-nobody").await?.is_none());
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

    async fn one(&self, sql: &str, key: &str) -> Result<Option<User>, UserStoreError> {
        check_key(key)?;
        let row = self
            .run(sqlx::query(sql).bind(key).fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(read).transpose()
    }

    async fn migrate(&self) -> Result<(), UserStoreError> {
        let wait_secs = self.query_timeout.as_secs().max(1) * 3;
        let migrate = async {
            let mut conn = self.pool.acquire().await?;
            let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                .bind(MIGRATION_LOCK)
                .bind(wait_secs)
                .fetch_one(&mut *conn)
                .await?;
            if locked != Some(1) {
                return Err(sqlx::Error::Protocol(
                    "another server held the migration lock too long".into(),
                ));
            }
            let result = async {
                conn.execute(CREATE_TABLE).await?;
                let present: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user'",
                )
                .fetch_all(&mut *conn)
                .await?;
                for (column, definition) in ADDED_COLUMNS {
                    if !present.iter().any(|p| p.eq_ignore_ascii_case(column)) {
                        tracing::info!(column, "adding column to the MySQL user table");
                        let add = format!("ALTER TABLE `user` ADD COLUMN `{column}` {definition}");
                        conn.execute(add.as_str()).await?;
                    }
                }
                Ok(())
            }
            .await;
            sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
            result
        };
        timed(self.query_timeout * 4, classify, migrate).await
    }

    /// Merges `values` into an existing row in one transaction (the row locked), without
    /// counting as a login.
    async fn update(&self, open_id: &str, values: Merged) -> Result<Option<User>, UserStoreError> {
        check_key(open_id)?;
        check(&values)?;
        let update = async {
            let mut tx = self.pool.begin().await?;
            let Some(row) = sqlx::query(&LOCK_BY_OPEN_ID)
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
                .bind(open_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(user))
        };
        self.run(update).await
    }
}

impl SqlUserStoreBuilder<MySqlUserStore> {
    /// Connects, checks the database answers and creates or migrates the table.
    ///
    /// # Errors
    /// [`UserStoreError::InvalidInput`] for a URL that is not a MySQL URL (the message
    /// never repeats it), [`UserStoreError::Pool`] or [`UserStoreError::Unavailable`]
    /// when the database cannot be reached in time, [`UserStoreError::Database`] when
    /// the schema cannot be created.
    pub async fn open(self) -> Result<MySqlUserStore, UserStoreError> {
        let options: MySqlConnectOptions = self
            .url
            .parse()
            .map_err(|_| UserStoreError::InvalidInput("not a mysql:// URL"))?;
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
        store.migrate().await?;
        Ok(store)
    }
}

impl UserStore for MySqlUserStore {
    fn upsert_login(
        &self,
        open_id: &str,
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> impl Future<Output = Result<User, UserStoreError>> + Send {
        let values = Merged::new(union_id, profile, phone);
        async move {
            check_key(open_id)?;
            check(&values)?;
            let now = unix_now();
            let upsert = async {
                let mut tx = self.pool.begin().await?;
                bind(&values, sqlx::query(&UPSERT_LOGIN).bind(open_id))
                    .bind(now)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(&SELECT_BY_OPEN_ID)
                    .bind(open_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                user_from_row(&row)
            };
            self.run(upsert).await
        }
    }

    async fn get(&self, open_id: &str) -> Result<Option<User>, UserStoreError> {
        self.one(&SELECT_BY_OPEN_ID, open_id).await
    }

    async fn get_by_union_id(&self, union_id: &str) -> Result<Option<User>, UserStoreError> {
        self.one(&SELECT_BY_UNION_ID, union_id).await
    }

    fn update_profile(
        &self,
        open_id: &str,
        profile: &Profile,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let values = Merged::new(None, Some(profile), None);
        async move { self.update(open_id, values).await }
    }

    fn set_phone(
        &self,
        open_id: &str,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let values = Merged::new(None, None, Some(phone));
        async move { self.update(open_id, values).await }
    }

    async fn delete(&self, open_id: &str) -> Result<bool, UserStoreError> {
        check_key(open_id)?;
        let done = self
            .run(
                sqlx::query("DELETE FROM `user` WHERE `openId` = ?")
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
