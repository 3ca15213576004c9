//! [`UserStore`] backed by a SQLite file, shared with the original Node package.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use r2d2::{ManageConnection, Pool};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, types::ValueRef,
};

use super::{Current, Placement, Profile, StoredLogin, User, UserStore, UserStoreError, unix_now};
use crate::phone::PhoneNumber;

const DEFAULT_MAX_CONNECTIONS: u32 = 8;
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Bumped with each migration; recorded so later, non-additive migrations have something to key on.
/// Version 3 keys users by (`appId`, `openId`) and links them by `personId`.
const SCHEMA_VERSION: i64 = 3;

/// The table since version 3, named `$name`: users of every app, keyed by (app, openid).
/// A row a legacy writer adds without a person id gets one of its own.
macro_rules! create_table {
    ($name:literal) => {
        concat!(
            "CREATE TABLE ",
            $name,
            " (appId text NOT NULL, openId text NOT NULL, \
             personId text NOT NULL DEFAULT (lower(hex(randomblob(16)))), \
             city text, country text, gender integer, language text, nickName text, \
             province text, avatarUrl text, unionId text, created_at integer, \
             updated_at integer, last_login_at integer, phoneNumber text, \
             purePhoneNumber text, countryCode text, PRIMARY KEY (appId, openId))"
        )
    };
}

const CREATE_PERSON_INDEX: &str = "CREATE INDEX IF NOT EXISTS user_personId ON user(personId)";

const CREATE_UNION_ID_INDEX: &str = "CREATE INDEX IF NOT EXISTS user_unionId ON user(unionId)";

/// Columns the store reads or writes, with the statement that adds each one to an older table.
///
/// `openId` is absent: as the primary key it cannot be added afterwards.
const COLUMNS: &[(&str, &str)] = &[
    ("city", "ALTER TABLE user ADD COLUMN city text"),
    ("country", "ALTER TABLE user ADD COLUMN country text"),
    ("gender", "ALTER TABLE user ADD COLUMN gender integer"),
    ("language", "ALTER TABLE user ADD COLUMN language text"),
    ("nickName", "ALTER TABLE user ADD COLUMN nickName text"),
    ("province", "ALTER TABLE user ADD COLUMN province text"),
    ("avatarUrl", "ALTER TABLE user ADD COLUMN avatarUrl text"),
    ("unionId", "ALTER TABLE user ADD COLUMN unionId text"),
    (
        "created_at",
        "ALTER TABLE user ADD COLUMN created_at integer",
    ),
    (
        "updated_at",
        "ALTER TABLE user ADD COLUMN updated_at integer",
    ),
    (
        "last_login_at",
        "ALTER TABLE user ADD COLUMN last_login_at integer",
    ),
    (
        "phoneNumber",
        "ALTER TABLE user ADD COLUMN phoneNumber text",
    ),
    (
        "purePhoneNumber",
        "ALTER TABLE user ADD COLUMN purePhoneNumber text",
    ),
    (
        "countryCode",
        "ALTER TABLE user ADD COLUMN countryCode text",
    ),
];

/// Column list shared by every query, in the order [`user_from_row`] reads it.
macro_rules! user_columns {
    () => {
        "openId, unionId, nickName, avatarUrl, gender, city, province, country, language, \
         created_at, updated_at, last_login_at, phoneNumber, purePhoneNumber, countryCode, \
         appId, personId"
    };
}

/// True when merging the given values (SQL expressions, `NULL` for "not sent") changes the stored row.
///
/// Shared by the upsert and the plain profile update so `updated_at` means
/// "data changed" in both, not "someone logged in".
macro_rules! changed_condition {
    ($union:literal, $nick:literal, $avatar:literal, $gender:literal,
     $city:literal, $province:literal, $country:literal, $language:literal,
     $phone:literal, $pure_phone:literal, $country_code:literal) => {
        concat!(
            "coalesce(",
            $union,
            ", user.unionId) IS NOT user.unionId",
            " OR coalesce(",
            $nick,
            ", user.nickName) IS NOT user.nickName",
            " OR coalesce(",
            $avatar,
            ", user.avatarUrl) IS NOT user.avatarUrl",
            " OR coalesce(",
            $gender,
            ", user.gender) IS NOT user.gender",
            " OR coalesce(",
            $city,
            ", user.city) IS NOT user.city",
            " OR coalesce(",
            $province,
            ", user.province) IS NOT user.province",
            " OR coalesce(",
            $country,
            ", user.country) IS NOT user.country",
            " OR coalesce(",
            $language,
            ", user.language) IS NOT user.language",
            " OR coalesce(",
            $phone,
            ", user.phoneNumber) IS NOT user.phoneNumber",
            " OR coalesce(",
            $pure_phone,
            ", user.purePhoneNumber) IS NOT user.purePhoneNumber",
            " OR coalesce(",
            $country_code,
            ", user.countryCode) IS NOT user.countryCode",
        )
    };
}

// Run inside the login's `BEGIN IMMEDIATE`, after the person is chosen: concurrent first
// logins are serialized by SQLite's write lock, so exactly one inserts.
const UPSERT_LOGIN: &str = concat!(
    "INSERT INTO user (openId, unionId, nickName, avatarUrl, gender, city, province, country, \
     language, created_at, updated_at, last_login_at, phoneNumber, purePhoneNumber, countryCode, \
     appId, personId) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT(appId, openId) DO UPDATE SET \
     unionId = coalesce(excluded.unionId, user.unionId), \
     nickName = coalesce(excluded.nickName, user.nickName), \
     avatarUrl = coalesce(excluded.avatarUrl, user.avatarUrl), \
     gender = coalesce(excluded.gender, user.gender), \
     city = coalesce(excluded.city, user.city), \
     province = coalesce(excluded.province, user.province), \
     country = coalesce(excluded.country, user.country), \
     language = coalesce(excluded.language, user.language), \
     phoneNumber = coalesce(excluded.phoneNumber, user.phoneNumber), \
     purePhoneNumber = coalesce(excluded.purePhoneNumber, user.purePhoneNumber), \
     countryCode = coalesce(excluded.countryCode, user.countryCode), \
     personId = excluded.personId, \
     created_at = coalesce(user.created_at, excluded.created_at), \
     updated_at = CASE WHEN excluded.personId IS NOT user.personId OR ",
    changed_condition!(
        "excluded.unionId",
        "excluded.nickName",
        "excluded.avatarUrl",
        "excluded.gender",
        "excluded.city",
        "excluded.province",
        "excluded.country",
        "excluded.language",
        "excluded.phoneNumber",
        "excluded.purePhoneNumber",
        "excluded.countryCode"
    ),
    " THEN excluded.updated_at ELSE coalesce(user.updated_at, excluded.updated_at) END, \
     last_login_at = excluded.last_login_at \
     RETURNING ",
    user_columns!()
);

/// The person and unionid of a user, if stored.
const SELECT_PERSON_OF: &str =
    "SELECT personId, unionId FROM user WHERE appId = ?1 AND openId = ?2";

/// The person of another record with this unionid.
const SELECT_PERSON_OF_UNION_ID: &str = "SELECT personId FROM user \
     WHERE unionId = ?1 AND NOT (appId = ?2 AND openId = ?3) LIMIT 1";

/// Whether a person has records beside the given one.
const SELECT_OTHER_RECORDS: &str = "SELECT EXISTS(SELECT 1 FROM user \
     WHERE personId = ?1 AND NOT (appId = ?2 AND openId = ?3))";

const UPDATE_PROFILE: &str = concat!(
    "UPDATE user SET \
     nickName = coalesce(?2, nickName), \
     avatarUrl = coalesce(?3, avatarUrl), \
     gender = coalesce(?4, gender), \
     city = coalesce(?5, city), \
     province = coalesce(?6, province), \
     country = coalesce(?7, country), \
     language = coalesce(?8, language), \
     created_at = coalesce(created_at, ?9), \
     updated_at = CASE WHEN ",
    changed_condition!(
        "NULL", "?2", "?3", "?4", "?5", "?6", "?7", "?8", "NULL", "NULL", "NULL"
    ),
    " THEN ?9 ELSE coalesce(updated_at, ?9) END \
     WHERE appId = ?10 AND openId = ?1 RETURNING ",
    user_columns!()
);

const SET_PHONE: &str = concat!(
    "UPDATE user SET \
     phoneNumber = ?2, \
     purePhoneNumber = ?3, \
     countryCode = ?4, \
     created_at = coalesce(created_at, ?5), \
     updated_at = CASE WHEN ",
    changed_condition!(
        "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "?2", "?3", "?4"
    ),
    " THEN ?5 ELSE coalesce(updated_at, ?5) END \
     WHERE appId = ?6 AND openId = ?1 RETURNING ",
    user_columns!()
);

const SELECT_BY_OPEN_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM user WHERE appId = ?1 AND openId = ?2"
);

const SELECT_BY_PERSON: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM user WHERE personId = ?1 ORDER BY appId, openId"
);

const SELECT_BY_UNION_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM user WHERE unionId = ?1 ORDER BY last_login_at DESC NULLS LAST, created_at DESC LIMIT 1"
);

const DELETE_BY_OPEN_ID: &str = "DELETE FROM user WHERE appId = ?1 AND openId = ?2";

/// A [`UserStore`] on a pooled set of SQLite connections to one file.
///
/// The table is the Node package's `user` table, with its camelCase column
/// names; opening a store adds the columns this crate needs (`avatarUrl`,
/// `unionId`, `created_at`, `updated_at`, `last_login_at`) and an index on
/// `unionId` to an existing file, so a deployment can switch over in place.
/// Every query runs on Tokio's blocking pool, so calls must be made from inside
/// a Tokio runtime.
///
/// ```
/// use std::time::Duration;
/// use mpauthx::{SqliteUserStore, UserStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("users.db");
/// let store = SqliteUserStore::builder(&path)
///     .with_max_connections(4)
///     .with_busy_timeout(Duration::from_secs(2))
///     .open()
///     .await?;
/// assert!(store.get("wx-app-id", "o-nobody").await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteUserStore {
    pool: Pool<SqliteConnectionManager>,
}

/// Options for opening a [`SqliteUserStore`]; get one from [`SqliteUserStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct SqliteUserStoreBuilder {
    path: PathBuf,
    max_connections: u32,
    busy_timeout: Duration,
    connection_timeout: Duration,
    read_only: bool,
    legacy_app_id: Option<String>,
}

impl SqliteUserStoreBuilder {
    /// The app the users of a single-app table belong to (one written by the Node
    /// package or by mpauthx before 0.x's several apps, keyed by openid alone): opening
    /// such a file moves them, every row and column, into the table keyed by
    /// (app, openid), with this app id. Without it, opening a file that holds such
    /// users fails with [`UserStoreError::LegacyAppIdNeeded`] and changes nothing.
    /// Ignored once the file is migrated.
    pub fn with_legacy_app_id(mut self, app_id: impl Into<String>) -> Self {
        self.legacy_app_id = Some(app_id.into());
        self
    }

    /// Sets the most pooled connections (default 8; values below 1 count as 1).
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Sets how long a statement waits for another writer's lock before failing with [`UserStoreError::Busy`] (default 5 s).
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Sets how long a call waits for a free pooled connection before failing with [`UserStoreError::Pool`] (default 30 s).
    pub fn with_connection_timeout(mut self, connection_timeout: Duration) -> Self {
        // r2d2 panics on a zero timeout.
        self.connection_timeout = connection_timeout.max(Duration::from_millis(1));
        self
    }

    /// Opens the file read-only (default `false`); writes then fail with [`UserStoreError::ReadOnly`].
    ///
    /// The file must already hold the current schema, since a read-only
    /// connection cannot create or migrate it.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Opens the pool, creating or migrating the schema first.
    ///
    /// On Unix a database file this creates is readable and writable by its owner
    /// only (mode 0600, less what the umask removes), and so are the `-wal` and `-shm`
    /// files beside it, to which SQLite gives the database's mode. An existing file
    /// keeps its mode; one that other users may read is logged as a warning. A `file:`
    /// URI is opened by SQLite alone, with the mode the umask gives.
    pub async fn open(self) -> Result<SqliteUserStore, UserStoreError> {
        let flags = if self.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::default()
        };
        let manager = SqliteConnectionManager::file(&self.path)
            .with_flags(flags)
            .with_init(connection_init(self.busy_timeout, !self.read_only));
        let builder = Pool::builder()
            .max_size(self.max_connections)
            .connection_timeout(self.connection_timeout);
        let create = (!self.read_only).then_some(self.path);
        SqliteUserStore::from_manager(manager, builder, create, self.legacy_app_id).await
    }
}

impl SqliteUserStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, UserStoreError> {
        Self::builder(path).open().await
    }

    /// Starts configuring a store for the database at `path`, which may also be a `file:` URI.
    pub fn builder(path: impl AsRef<Path>) -> SqliteUserStoreBuilder {
        SqliteUserStoreBuilder {
            path: path.as_ref().to_path_buf(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            read_only: false,
            legacy_app_id: None,
        }
    }

    /// Opens a private in-memory database, for tests; it lives as long as the store and its clones.
    pub async fn open_in_memory() -> Result<Self, UserStoreError> {
        let manager = SqliteConnectionManager::memory()
            .with_init(connection_init(DEFAULT_BUSY_TIMEOUT, false));
        // A shared-cache memory database reports table-lock conflicts as
        // SQLITE_LOCKED, which busy_timeout does not retry, so one connection
        // serializes callers instead.
        let builder = Pool::builder()
            .max_size(1)
            .connection_timeout(DEFAULT_CONNECTION_TIMEOUT);
        Self::from_manager(manager, builder, None, None).await
    }

    /// Opens the pool on `manager`, first creating the file at `create` (if given and
    /// missing) with owner-only permissions.
    async fn from_manager(
        manager: SqliteConnectionManager,
        builder: r2d2::Builder<SqliteConnectionManager>,
        create: Option<PathBuf>,
        legacy_app_id: Option<String>,
    ) -> Result<Self, UserStoreError> {
        let pool = tokio::task::spawn_blocking(move || {
            if let Some(path) = create {
                create_private(&path);
            }
            // Migrate on a connection of our own rather than through the pool:
            // r2d2 would retry a failing connect until its timeout and then
            // report only a string, losing the busy/read-only distinction.
            let mut conn = manager.connect().map_err(db_error)?;
            migrate(&mut conn, legacy_app_id.as_deref())?;
            drop(conn);
            Ok::<_, UserStoreError>(
                builder
                    // A local file connection cannot go stale, so the check
                    // would only add a query to every call.
                    .test_on_check_out(false)
                    .build_unchecked(manager),
            )
        })
        .await
        .map_err(|err| UserStoreError::Task(Box::new(err)))??;
        Ok(Self { pool })
    }

    /// The user a one-parameter `SELECT` finds, if any.
    async fn find_one<const N: usize>(
        &self,
        sql: &'static str,
        keys: [String; N],
    ) -> Result<Option<User>, UserStoreError> {
        self.with_conn(move |conn| {
            conn.prepare_cached(sql)?
                .query_row(rusqlite::params_from_iter(keys), user_from_row)
                .optional()
        })
        .await
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, UserStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|err| UserStoreError::Pool(Box::new(err)))?;
            f(&mut conn).map_err(db_error)
        })
        .await
        .map_err(|err| UserStoreError::Task(Box::new(err)))?
    }
}

impl UserStore for SqliteUserStore {
    fn upsert_login(
        &self,
        app_id: &str,
        open_id: &str,
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> impl Future<Output = Result<StoredLogin, UserStoreError>> + Send {
        let app_id = app_id.to_owned();
        let open_id = open_id.to_owned();
        let union_id = union_id.map(str::to_owned);
        let profile = profile.cloned().unwrap_or_default();
        let phone = phone.cloned();
        async move {
            self.with_conn(move |conn| {
                // The write lock first: whoever reads the person here is the one writer.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current = tx
                    .prepare_cached(SELECT_PERSON_OF)?
                    .query_row([&app_id, &open_id], |row| {
                        Ok(Current {
                            person_id: row.get(0)?,
                            union_id: row.get(1)?,
                        })
                    })
                    .optional()?;
                let owner: Option<String> = match &union_id {
                    Some(union_id) => tx
                        .prepare_cached(SELECT_PERSON_OF_UNION_ID)?
                        .query_row([union_id, &app_id, &open_id], |row| row.get(0))
                        .optional()?,
                    None => None,
                };
                let shared = match &current {
                    Some(c)
                        if Placement::needs_sharing(
                            Some(c),
                            union_id.as_deref(),
                            owner.as_deref(),
                        ) =>
                    {
                        tx.prepare_cached(SELECT_OTHER_RECORDS)?
                            .query_row([&c.person_id, &app_id, &open_id], |row| row.get(0))?
                    }
                    _ => false,
                };
                let placement =
                    Placement::place(current.as_ref(), union_id.as_deref(), owner, shared);
                let p = &profile;
                let user = tx.prepare_cached(UPSERT_LOGIN)?.query_row(
                    rusqlite::params![
                        open_id,
                        union_id,
                        p.nick_name,
                        p.avatar_url,
                        p.gender,
                        p.city,
                        p.province,
                        p.country,
                        p.language,
                        unix_now(),
                        phone.as_ref().map(|p| &p.phone_number),
                        phone.as_ref().map(|p| &p.pure_phone_number),
                        phone.as_ref().map(|p| &p.country_code),
                        app_id,
                        placement.person_id,
                    ],
                    user_from_row,
                )?;
                tx.commit()?;
                Ok(StoredLogin {
                    user,
                    merged_from: placement.merged_from,
                })
            })
            .await
        }
    }

    fn get(
        &self,
        app_id: &str,
        open_id: &str,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        self.find_one(SELECT_BY_OPEN_ID, [app_id.to_owned(), open_id.to_owned()])
    }

    fn get_by_union_id(
        &self,
        union_id: &str,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        self.find_one(SELECT_BY_UNION_ID, [union_id.to_owned()])
    }

    fn person(
        &self,
        person_id: &str,
    ) -> impl Future<Output = Result<Vec<User>, UserStoreError>> + Send {
        let person_id = person_id.to_owned();
        async move {
            self.with_conn(move |conn| {
                conn.prepare_cached(SELECT_BY_PERSON)?
                    .query_map([person_id], user_from_row)?
                    .collect()
            })
            .await
        }
    }

    fn update_profile(
        &self,
        app_id: &str,
        open_id: &str,
        profile: &Profile,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let app_id = app_id.to_owned();
        let open_id = open_id.to_owned();
        let profile = profile.clone();
        async move {
            self.with_conn(move |conn| {
                let p = &profile;
                conn.prepare_cached(UPDATE_PROFILE)?
                    .query_row(
                        rusqlite::params![
                            open_id,
                            p.nick_name,
                            p.avatar_url,
                            p.gender,
                            p.city,
                            p.province,
                            p.country,
                            p.language,
                            unix_now(),
                            app_id,
                        ],
                        user_from_row,
                    )
                    .optional()
            })
            .await
        }
    }

    fn set_phone(
        &self,
        app_id: &str,
        open_id: &str,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send {
        let app_id = app_id.to_owned();
        let open_id = open_id.to_owned();
        let phone = phone.clone();
        async move {
            self.with_conn(move |conn| {
                conn.prepare_cached(SET_PHONE)?
                    .query_row(
                        rusqlite::params![
                            open_id,
                            phone.phone_number,
                            phone.pure_phone_number,
                            phone.country_code,
                            unix_now(),
                            app_id,
                        ],
                        user_from_row,
                    )
                    .optional()
            })
            .await
        }
    }

    fn delete(
        &self,
        app_id: &str,
        open_id: &str,
    ) -> impl Future<Output = Result<bool, UserStoreError>> + Send {
        let keys = [app_id.to_owned(), open_id.to_owned()];
        async move {
            self.with_conn(move |conn| {
                Ok(conn.prepare_cached(DELETE_BY_OPEN_ID)?.execute(keys)? > 0)
            })
            .await
        }
    }
}

/// Creates the database file at `path` with mode 0600 unless it exists, so that SQLite
/// (which gives its `-wal`, `-shm` and journal files the database's mode) keeps all of
/// them private. An existing file keeps its mode, with a warning if other users may
/// read it. Whatever fails here is left to SQLite's own open to report.
#[cfg(unix)]
fn create_private(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    // SQLite's own names for a private in-memory or temporary database, and URIs,
    // whose path and options SQLite parses.
    let name = path.as_os_str().as_encoded_bytes();
    if name.is_empty() || name == b":memory:" || name.starts_with(b"file:") {
        return;
    }
    // `create_new` never follows a symlink, dangling or not.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {
            tracing::debug!(path = %path.display(), "created the sqlite user database, mode 0600")
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
            if let Ok(mode) = mode
                && mode & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the sqlite user database is readable or writable by other users; chmod 600 it unless that is meant"
                );
            }
        }
        Err(err) => {
            tracing::debug!(path = %path.display(), error = %err, "cannot create the sqlite user database ahead of SQLite");
        }
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) {}

/// Per-connection settings; none of these persist in the file except `journal_mode`.
fn connection_init(
    busy_timeout: Duration,
    writable: bool,
) -> impl Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync + 'static {
    move |conn| {
        // First, so that the journal-mode switch below also waits for other writers.
        conn.busy_timeout(busy_timeout)?;
        // WAL lets readers proceed while a login writes. Switching needs write
        // access, so read-only connections use whatever mode the file has.
        if writable {
            enable_wal(conn, busy_timeout)?;
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
    }
}

fn enable_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + busy_timeout;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0)) {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::debug!(%mode, "sqlite user store is not in WAL mode");
                }
                return Ok(());
            }
            // When two connections race to convert a file, SQLite fails one at
            // once instead of calling the busy handler (waiting could deadlock),
            // so the busy timeout has to be honoured here by hand.
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Creates the table or brings an older one (such as the Node package's) up to date.
///
/// Safe to run from several processes at once: the check is repeated under
/// `BEGIN IMMEDIATE`, so whoever gets the write lock second finds nothing to do.
fn migrate(conn: &mut Connection, legacy_app_id: Option<&str>) -> Result<(), UserStoreError> {
    // Checked outside a write transaction first so read-only stores can open a current file.
    if is_current(conn).map_err(db_error)? {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let table_exists: bool = tx
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user')",
            [],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if !table_exists {
        tx.execute(create_table!("user"), []).map_err(db_error)?;
    } else if has_column(&tx, "appId").map_err(db_error)? {
        add_missing_columns(&tx).map_err(db_error)?;
    } else {
        add_missing_columns(&tx).map_err(db_error)?;
        key_by_app(&tx, legacy_app_id)?;
    }
    tx.execute(CREATE_UNION_ID_INDEX, []).map_err(db_error)?;
    tx.execute(CREATE_PERSON_INDEX, []).map_err(db_error)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

/// Whether the file holds the current schema: every column and both indexes.
fn is_current(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(has_column(conn, "appId")?
        && missing_columns(conn)?.is_empty()
        && index_exists(conn, "user_unionId")?
        && index_exists(conn, "user_personId")?)
}

/// Adds the columns of [`COLUMNS`] an older table lacks, and the times earlier rows
/// never recorded.
fn add_missing_columns(tx: &Connection) -> rusqlite::Result<()> {
    let missing = missing_columns(tx)?;
    for (name, add_column) in COLUMNS {
        if missing.contains(name) {
            tracing::info!(column = name, "adding column to sqlite user table");
            tx.execute(add_column, [])?;
        }
    }
    // Earlier rows have no recorded creation time; the migration time is the best known bound.
    let now = unix_now();
    tx.execute(
        "UPDATE user SET created_at = ?1 WHERE created_at IS NULL",
        [now],
    )?;
    tx.execute(
        "UPDATE user SET updated_at = ?1 WHERE updated_at IS NULL",
        [now],
    )?;
    Ok(())
}

/// Moves a single-app table (keyed by `openId`) into the table keyed by
/// (`appId`, `openId`): SQLite cannot change a primary key in place, so the rows are
/// copied, every column, into a new table that then takes the old one's name. Each row
/// becomes a person of its own, except that rows sharing a unionid share a person.
fn key_by_app(tx: &Connection, legacy_app_id: Option<&str>) -> Result<(), UserStoreError> {
    let rows: i64 = tx
        .query_row("SELECT count(*) FROM user", [], |row| row.get(0))
        .map_err(db_error)?;
    let app_id = match legacy_app_id {
        Some(app_id) => app_id,
        None if rows == 0 => "",
        None => return Err(UserStoreError::LegacyAppIdNeeded),
    };
    tracing::info!(
        rows,
        app_id,
        "moving single-app users into the table keyed by (app, openid)"
    );
    // A table of the operator's own whose foreign key names `user` would lose its
    // parent key (openid alone is no longer unique), and dropping the old table could
    // cascade into it: refused, before anything changes.
    let referencing: Option<String> = tx
        .query_row(
            "SELECT m.name FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f \
             WHERE m.type = 'table' AND f.\"table\" = 'user' COLLATE NOCASE LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)?;
    if let Some(table) = referencing {
        return Err(UserStoreError::Database(
            format!(
                "the table `{table}` has a foreign key on `user`, which keying users by \
                 (app, openid) would break: drop or change it, then open the store again"
            )
            .into(),
        ));
    }
    tx.execute_batch(concat!(
        "DROP TABLE IF EXISTS user_v3; ",
        create_table!("user_v3")
    ))
    .map_err(db_error)?;
    // Columns of the old table the store does not know (an operator's own) move too,
    // with their declared types.
    let mut columns: Vec<String> = COLUMNS.iter().map(|(name, _)| (*name).to_owned()).collect();
    let known = |name: &str| {
        ["openId", "appId", "personId"]
            .into_iter()
            .chain(COLUMNS.iter().map(|(known, _)| *known))
            .any(|known| known.eq_ignore_ascii_case(name))
    };
    let present = {
        let mut statement = tx
            .prepare("SELECT name, type FROM pragma_table_info('user')")
            .map_err(db_error)?;
        statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?
    };
    for (name, kind) in present.into_iter().filter(|(name, _)| !known(name)) {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // A declared type is a few words of letters, digits and parentheses; anything
        // else is left out (SQLite takes a column without one).
        let kind = if kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " (),_".contains(c))
        {
            kind
        } else {
            String::new()
        };
        tracing::info!(column = name, "keeping a column of the single-app table");
        tx.execute(
            &format!("ALTER TABLE user_v3 ADD COLUMN {quoted} {kind}"),
            [],
        )
        .map_err(db_error)?;
        columns.push(quoted);
    }
    let columns = columns.join(", ");
    tx.execute(
        &format!(
            "INSERT INTO user_v3 (appId, openId, {columns}) SELECT ?1, openId, {columns} FROM user"
        ),
        [app_id],
    )
    .map_err(db_error)?;
    // The old table's own indexes and triggers (an operator's), made again on the new
    // one once it has the old one's name.
    let own: Vec<String> = {
        let mut statement = tx
            .prepare(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'user' \
                 AND type IN ('index', 'trigger') AND sql IS NOT NULL \
                 AND name NOT IN ('user_unionId', 'user_personId') ORDER BY type, name",
            )
            .map_err(db_error)?;
        statement
            .query_map([], |row| row.get(0))
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?
    };
    // The unionid indexed for the update, which would otherwise scan the table once
    // per row.
    tx.execute_batch(
        "CREATE INDEX user_v3_unionId ON user_v3(unionId); \
         UPDATE user_v3 SET personId = (SELECT min(o.personId) FROM user_v3 AS o \
             WHERE o.unionId = user_v3.unionId) WHERE unionId IS NOT NULL; \
         DROP INDEX user_v3_unionId; \
         DROP TABLE user; \
         ALTER TABLE user_v3 RENAME TO user;",
    )
    .map_err(db_error)?;
    for sql in own {
        tx.execute_batch(&sql).map_err(db_error)?;
    }
    Ok(())
}

fn has_column(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('user') WHERE name = ?1 COLLATE NOCASE)",
        [name],
        |row| row.get(0),
    )
}

/// Names from [`COLUMNS`] the `user` table lacks; all of them when it does not exist.
fn missing_columns(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('user')")?;
    let present = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(COLUMNS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !present.iter().any(|p| p.eq_ignore_ascii_case(name)))
        .collect())
}

fn index_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        open_id: row.get(0)?,
        union_id: row.get(1)?,
        nick_name: row.get(2)?,
        avatar_url: row.get(3)?,
        gender: lenient_integer(row.get_ref(4)?),
        city: row.get(5)?,
        province: row.get(6)?,
        country: row.get(7)?,
        language: row.get(8)?,
        // NULL only in rows a legacy writer added after the migration.
        created_at: row.get::<_, Option<i64>>(9)?.unwrap_or(0),
        updated_at: row.get::<_, Option<i64>>(10)?.unwrap_or(0),
        last_login_at: row.get(11)?,
        phone_number: row.get(12)?,
        pure_phone_number: row.get(13)?,
        country_code: row.get(14)?,
        app_id: row.get(15)?,
        person_id: row.get(16)?,
    })
}

/// Reads `gender` without failing on whatever the Node package may have stored there.
fn lenient_integer(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(i),
        // Saturating float-to-int conversion is acceptable for a small enum code.
        ValueRef::Real(f) if f.is_finite() => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn db_error(err: rusqlite::Error) -> UserStoreError {
    if is_busy(&err) {
        UserStoreError::Busy(Box::new(err))
    } else if err.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        UserStoreError::ReadOnly(Box::new(err))
    } else {
        UserStoreError::Database(Box::new(err))
    }
}
