//! [`PostgresUserStore`]: users in PostgreSQL, shared by every server.

use std::{future::Future, sync::LazyLock, time::Duration};

use sqlx::{
    PgPool, Postgres,
    error::DatabaseError,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};

use super::{
    Profile, User, UserStore, UserStoreError,
    sql::{
        self, Kind, MERGED, Merged, SqlUserStoreBuilder, Value, column_list, timed, user_from_row,
    },
    unix_now,
};
use crate::phone::PhoneNumber;

/// Serializes migrations of servers starting at once (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6d70_6175_7468_7831; // "mpauthx1"

/// The table, with every column; `openId` is the key. Columns added since the first
/// version are listed in [`ADDED_COLUMNS`], for tables an older version created.
const CREATE_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS "user" (
    "openId" text PRIMARY KEY NOT NULL,
    "city" text, "country" text, "gender" bigint, "language" text, "nickName" text,
    "province" text, "avatarUrl" text, "unionId" text,
    "created_at" bigint, "updated_at" bigint, "last_login_at" bigint,
    "phoneNumber" text, "purePhoneNumber" text, "countryCode" text)"#;

const ADDED_COLUMNS: [&str; 3] = ["phoneNumber", "purePhoneNumber", "countryCode"];

const CREATE_INDEX: &str = r#"CREATE INDEX IF NOT EXISTS "user_unionId" ON "user" ("unionId")"#;

/// `coalesce(<new>, u.<c>) IS DISTINCT FROM u.<c>` for each merged column, OR-ed: true
/// when merging `new` (SQL expressions, one per [`MERGED`] column) changes the row.
fn changed(new: &[String; 11]) -> String {
    MERGED
        .iter()
        .zip(new)
        .map(|(c, n)| format!(r#"coalesce({n}, u."{c}") IS DISTINCT FROM u."{c}""#))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// One statement, so that concurrent first logins race inside PostgreSQL's unique
/// index: exactly one inserts, the others take the update.
static UPSERT_LOGIN: LazyLock<String> = LazyLock::new(|| {
    let excluded = MERGED.map(|c| format!(r#"excluded."{c}""#));
    let merge = MERGED
        .iter()
        .map(|c| format!(r#""{c}" = coalesce(excluded."{c}", u."{c}")"#))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"INSERT INTO "user" AS u ("openId", "unionId", "nickName", "avatarUrl", "gender",
            "city", "province", "country", "language", "phoneNumber", "purePhoneNumber",
            "countryCode", "created_at", "updated_at", "last_login_at")
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)
        ON CONFLICT ("openId") DO UPDATE SET {merge},
            "created_at" = coalesce(u."created_at", excluded."created_at"),
            "updated_at" = CASE WHEN {changed} THEN excluded."updated_at"
                ELSE coalesce(u."updated_at", excluded."updated_at") END,
            "last_login_at" = excluded."last_login_at"
        RETURNING {columns}"#,
        changed = changed(&excluded),
        columns = column_list('"'),
    )
});

/// Merges `$2..$12` (`NULL`: keep) into an existing row, without counting as a login.
static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let new = std::array::from_fn(|i| format!("${}", i + 2));
    let merge = MERGED
        .iter()
        .zip(&new)
        .map(|(c, n)| format!(r#""{c}" = coalesce({n}, u."{c}")"#))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"UPDATE "user" AS u SET {merge},
            "created_at" = coalesce(u."created_at", $13),
            "updated_at" = CASE WHEN {changed} THEN $13 ELSE coalesce(u."updated_at", $13) END
        WHERE u."openId" = $1 RETURNING {columns}"#,
        changed = changed(&new),
        columns = column_list('"'),
    )
});

static SELECT_BY_OPEN_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"SELECT {} FROM "user" WHERE "openId" = $1"#,
        column_list('"')
    )
});

static SELECT_BY_UNION_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"SELECT {} FROM "user" WHERE "unionId" = $1
        ORDER BY "last_login_at" DESC NULLS LAST, "created_at" DESC LIMIT 1"#,
        column_list('"')
    )
});

/// A [`UserStore`] on PostgreSQL (feature `postgres`), through a pool of sqlx
/// connections: users shared by every server.
///
/// The table is the seed's `user` table with its camelCase column names (quoted, as
/// PostgreSQL folds unquoted names to lower case). Opening the store creates it, or adds
/// the columns and the `unionId` index an older version lacks, under an advisory lock,
/// so servers starting at once migrate once. Every statement runs within the query
/// timeout; an unreachable or failing database is a [`UserStoreError`] that answers
/// 503. Text holding a NUL character, which PostgreSQL cannot store, is refused with
/// [`UserStoreError::InvalidInput`] before anything is sent.
///
/// ```no_run
/// use std::time::Duration;
/// use mpauthx::{PostgresUserStore, UserStore};
///
/// # async fn run() -> Result<(), mpauthx::UserStoreError> {
/// let users = PostgresUserStore::builder("postgres://mpauthx:secret@db.internal/mpauthx")
///     .with_max_connections(20)
///     .with_query_timeout(Duration::from_secs(2))
///     .open()
///     .await?;
/// assert!(users.get("o-nobody").await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresUserStore {
    pool: PgPool,
    query_timeout: Duration,
}

impl std::fmt::Debug for PostgresUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresUserStore")
            .field("connections", &self.pool.size())
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresUserStore {
    /// Settings for a store at `url` (`postgres://user:password@host:port/database`,
    /// with libpq's options such as `?sslmode=require`).
    pub fn builder(url: &str) -> SqlUserStoreBuilder<Self> {
        SqlUserStoreBuilder::new(url)
    }

    /// Opens a store at `url` with default settings.
    ///
    /// # Errors
    /// As [`SqlUserStoreBuilder::<PostgresUserStore>::open`].
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
        check(&[("key", Some(key))])?;
        let row = self
            .run(sqlx::query(sql).bind(key).fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(read).transpose()
    }
}

impl SqlUserStoreBuilder<PostgresUserStore> {
    /// Connects, checks the database answers and creates or migrates the table.
    ///
    /// # Errors
    /// [`UserStoreError::InvalidInput`] for a URL that is not a PostgreSQL URL (the
    /// message never repeats it), [`UserStoreError::Pool`] or
    /// [`UserStoreError::Unavailable`] when the database cannot be reached in time,
    /// [`UserStoreError::Database`] when the schema cannot be created.
    pub async fn open(self) -> Result<PostgresUserStore, UserStoreError> {
        let options: PgConnectOptions = self
            .url
            .parse()
            .map_err(|_| UserStoreError::InvalidInput("not a postgres:// URL"))?;
        let statement_timeout = format!("{}ms", self.query_timeout.as_millis());
        let options = options.options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.connect_timeout)
            .connect_lazy_with(options);
        let store = PostgresUserStore {
            pool,
            query_timeout: self.query_timeout,
        };
        store.migrate().await?;
        Ok(store)
    }
}

impl PostgresUserStore {
    async fn migrate(&self) -> Result<(), UserStoreError> {
        let migrate = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
            let present: Vec<String> = sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'user'",
            )
            .fetch_all(&mut *tx)
            .await?;
            for column in ADDED_COLUMNS {
                if !present.iter().any(|p| p == column) {
                    tracing::info!(column, "adding column to the PostgreSQL user table");
                    let add = format!(r#"ALTER TABLE "user" ADD COLUMN "{column}" text"#);
                    sqlx::query(&add).execute(&mut *tx).await?;
                }
            }
            sqlx::query(CREATE_INDEX).execute(&mut *tx).await?;
            tx.commit().await
        };
        // Connecting is bounded by the connect timeout inside; the statements by this.
        timed(self.query_timeout * 4, classify, migrate).await
    }
}

impl UserStore for PostgresUserStore {
    fn upsert_login(
        &self,
        open_id: &str,
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> impl Future<Output = Result<User, UserStoreError>> + Send {
        let values = Merged::new(union_id, profile, phone);
        async move {
            check(&[("openId", Some(open_id))])?;
            check(&values.texts())?;
            let query = bind(&values, sqlx::query(&UPSERT_LOGIN).bind(open_id));
            let row = self
                .run(query.bind(unix_now()).fetch_one(&self.pool))
                .await?;
            read(&row)
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
        check(&[("openId", Some(open_id))])?;
        let done = self
            .run(
                sqlx::query(r#"DELETE FROM "user" WHERE "openId" = $1"#)
                    .bind(open_id)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PostgresUserStore {
    async fn update(&self, open_id: &str, values: Merged) -> Result<Option<User>, UserStoreError> {
        check(&[("openId", Some(open_id))])?;
        check(&values.texts())?;
        let query = bind(&values, sqlx::query(&UPDATE).bind(open_id));
        let row = self
            .run(query.bind(unix_now()).fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(read).transpose()
    }
}

/// Binds `merged` in [`MERGED`] order.
fn bind<'q>(
    merged: &'q Merged,
    mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for value in merged.values() {
        query = match value {
            Value::Text(text) => query.bind(text),
            Value::Integer(number) => query.bind(number),
        };
    }
    query
}

/// PostgreSQL's text cannot hold NUL: refused before anything is sent.
fn check(values: &[(&str, Option<&str>)]) -> Result<(), UserStoreError> {
    if values
        .iter()
        .filter_map(|(_, v)| *v)
        .any(|v| v.contains('\0'))
    {
        return Err(UserStoreError::InvalidInput(
            "text holds a NUL character, which PostgreSQL cannot store",
        ));
    }
    Ok(())
}

fn read(row: &PgRow) -> Result<User, UserStoreError> {
    user_from_row(row).map_err(|e| sql::error(e, classify, Duration::ZERO))
}

/// PostgreSQL's SQLSTATE classes: lock conflicts are busy, a read-only transaction
/// read-only, connection and shutdown states unavailable, a cancelled statement (the
/// server-side `statement_timeout`) a timeout.
fn classify(e: &dyn DatabaseError) -> Kind {
    match e.code().as_deref() {
        Some("40001" | "40P01" | "55P03") => Kind::Busy,
        Some("25006") => Kind::ReadOnly,
        Some("57014") => Kind::Timeout,
        Some(code) if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
            Kind::Unavailable
        }
        _ => Kind::Other,
    }
}
