//! [`PostgresUserStore`]: users in PostgreSQL, shared by every server.

use std::{future::Future, sync::LazyLock, time::Duration};

use sqlx::{
    PgPool, Postgres,
    error::DatabaseError,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};

use super::{
    Current, Placement, Profile, StoredLogin, User, UserStore, UserStoreError,
    sql::{
        self, Kind, MERGED, Merged, SqlUserStoreBuilder, Value, column_list, timed, user_from_row,
        within,
    },
    unix_now,
};
use crate::phone::PhoneNumber;

/// Serializes migrations of servers starting at once (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6d70_6175_7468_7831; // "mpauthx1"

/// The advisory lock class (the first of two keys) of a login's record: its
/// (app, openid) hashed is the second. Two-key locks never meet [`MIGRATION_LOCK`].
const USER_LOCK: i32 = 0x6d70_7531; // "mpu1"
/// The advisory lock class of a login's unionid, taken after [`USER_LOCK`].
const UNION_ID_LOCK: i32 = 0x6d70_6e31; // "mpn1"

/// A fresh person id in SQL: 32 lowercase hex characters, for rows that get one in
/// the database (a migrated row, a row a legacy writer adds).
const NEW_PERSON_ID: &str = "md5(random()::text || clock_timestamp()::text)";

/// The table since several apps share it, with every column, keyed by (`appId`,
/// `openId`). Columns an older table may lack are listed in [`ADDED_COLUMNS`].
static CREATE_TABLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"CREATE TABLE "user" (
    "appId" text NOT NULL, "openId" text NOT NULL,
    "personId" text NOT NULL DEFAULT {NEW_PERSON_ID},
    "city" text, "country" text, "gender" bigint, "language" text, "nickName" text,
    "province" text, "avatarUrl" text, "unionId" text,
    "created_at" bigint, "updated_at" bigint, "last_login_at" bigint,
    "phoneNumber" text, "purePhoneNumber" text, "countryCode" text,
    CONSTRAINT "user_pkey" PRIMARY KEY ("appId", "openId"))"#
    )
});

/// The columns beside the key a table of an older version (down to the Node
/// package's) may lack, with their types.
const ADDED_COLUMNS: [(&str, &str); 14] = [
    ("city", "text"),
    ("country", "text"),
    ("gender", "bigint"),
    ("language", "text"),
    ("nickName", "text"),
    ("province", "text"),
    ("avatarUrl", "text"),
    ("unionId", "text"),
    ("created_at", "bigint"),
    ("updated_at", "bigint"),
    ("last_login_at", "bigint"),
    ("phoneNumber", "text"),
    ("purePhoneNumber", "text"),
    ("countryCode", "text"),
];

const CREATE_UNION_ID_INDEX: &str =
    r#"CREATE INDEX IF NOT EXISTS "user_unionId" ON "user" ("unionId")"#;

const CREATE_PERSON_INDEX: &str =
    r#"CREATE INDEX IF NOT EXISTS "user_personId" ON "user" ("personId")"#;

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

/// Takes an advisory lock until the transaction ends: `$1` its class, `$2` its key.
const LOCK: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// What a login's placement reads, once its locks are held (`$1` app id, `$2` openid,
/// `$3` unionid or `NULL`): the record's person and unionid (`NULL`s if it is new),
/// the person of another record with the unionid, and whether the record's person has
/// other records.
const SELECT_PLACEMENT: &str = r#"SELECT c."personId", c."unionId",
        (SELECT o."personId" FROM "user" AS o
            WHERE o."unionId" = $3 AND NOT (o."appId" = $1 AND o."openId" = $2) LIMIT 1),
        EXISTS (SELECT 1 FROM "user" AS s
            WHERE s."personId" = c."personId" AND NOT (s."appId" = $1 AND s."openId" = $2))
    FROM (SELECT 1) AS one LEFT JOIN "user" AS c ON c."appId" = $1 AND c."openId" = $2"#;

/// The upsert of a login, once its person is chosen (`$1` app id, `$2` openid, `$3`
/// person id, `$4..$14` the merged values, `$15` now); a person change counts as a
/// change of data.
static UPSERT_LOGIN: LazyLock<String> = LazyLock::new(|| {
    let excluded = MERGED.map(|c| format!(r#"excluded."{c}""#));
    let merge = MERGED
        .iter()
        .map(|c| format!(r#""{c}" = coalesce(excluded."{c}", u."{c}")"#))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"INSERT INTO "user" AS u ("appId", "openId", "personId", "unionId", "nickName",
            "avatarUrl", "gender", "city", "province", "country", "language", "phoneNumber",
            "purePhoneNumber", "countryCode", "created_at", "updated_at", "last_login_at")
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $15)
        ON CONFLICT ("appId", "openId") DO UPDATE SET {merge},
            "personId" = excluded."personId",
            "created_at" = coalesce(u."created_at", excluded."created_at"),
            "updated_at" = CASE
                WHEN excluded."personId" IS DISTINCT FROM u."personId" OR {changed}
                THEN excluded."updated_at"
                ELSE coalesce(u."updated_at", excluded."updated_at") END,
            "last_login_at" = excluded."last_login_at"
        RETURNING {columns}"#,
        changed = changed(&excluded),
        columns = column_list('"'),
    )
});

/// Merges `$3..$13` (`NULL`: keep) into the existing row of (`$1`, `$2`), without
/// counting as a login; `$14` is now.
static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let new = std::array::from_fn(|i| format!("${}", i + 3));
    let merge = MERGED
        .iter()
        .zip(&new)
        .map(|(c, n)| format!(r#""{c}" = coalesce({n}, u."{c}")"#))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"UPDATE "user" AS u SET {merge},
            "created_at" = coalesce(u."created_at", $14),
            "updated_at" = CASE WHEN {changed} THEN $14 ELSE coalesce(u."updated_at", $14) END
        WHERE u."appId" = $1 AND u."openId" = $2 RETURNING {columns}"#,
        changed = changed(&new),
        columns = column_list('"'),
    )
});

static SELECT_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"SELECT {} FROM "user" WHERE "appId" = $1 AND "openId" = $2"#,
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

/// Ordered byte for byte, as the other stores order, whatever the database's collation.
static SELECT_BY_PERSON: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"SELECT {} FROM "user" WHERE "personId" = $1
        ORDER BY "appId" COLLATE "C", "openId" COLLATE "C""#,
        column_list('"')
    )
});

/// A [`UserStore`] on PostgreSQL (feature `postgres`), through a pool of sqlx
/// connections: users shared by every server.
///
/// The table is the seed's `user` table with its camelCase column names (quoted, as
/// PostgreSQL folds unquoted names to lower case), keyed by (`appId`, `openId`), with
/// indexes on `unionId` and `personId`. Opening the store creates it, or brings an
/// older one up to date under an advisory lock, so servers starting at once migrate
/// once: a single-app table (keyed by `openId` alone) gets the app id of
/// [`with_legacy_app_id`](SqlUserStoreBuilder::with_legacy_app_id) in every row, in one
/// transaction. A login runs in a transaction holding advisory locks on its record and
/// then on its unionid, so concurrent first logins of one user make one row and of one
/// unionid in several apps one person. Every statement runs within the query timeout;
/// an unreachable or failing database is a [`UserStoreError`] that answers 503. Text
/// holding a NUL character, which PostgreSQL cannot store, is refused with
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
///     .with_legacy_app_id("wx-shop")
///     .open()
///     .await?;
/// assert!(users.get("wx-shop", "o-nobody").await?.is_none());
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

    /// The user `sql` finds with `keys` bound in order, if any.
    async fn one(&self, sql: &str, keys: &[&str]) -> Result<Option<User>, UserStoreError> {
        check(&keys.iter().map(|k| ("key", Some(*k))).collect::<Vec<_>>())?;
        let query = keys
            .iter()
            .fold(sqlx::query(sql), |query, key| query.bind(*key));
        let row = self.run(query.fetch_optional(&self.pool)).await?;
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
    /// [`UserStoreError::Database`] when the schema cannot be created,
    /// [`UserStoreError::LegacyAppIdNeeded`] when the table holds single-app users and
    /// no [`with_legacy_app_id`](Self::with_legacy_app_id) was given.
    pub async fn open(self) -> Result<PostgresUserStore, UserStoreError> {
        let options: PgConnectOptions = self
            .url
            .parse()
            .map_err(|_| UserStoreError::InvalidInput("not a postgres:// URL"))?;
        if let Some(app_id) = &self.legacy_app_id {
            check(&[("appId", Some(app_id))])?;
        }
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
        store
            .migrate(self.legacy_app_id.as_deref(), self.migration_timeout)
            .await?;
        Ok(store)
    }
}

impl PostgresUserStore {
    /// Creates the table or brings an older one up to date, in one transaction under
    /// [`MIGRATION_LOCK`], within `limit` (the query timeout does not apply): whoever
    /// gets the lock second finds nothing to do.
    async fn migrate(
        &self,
        legacy_app_id: Option<&str>,
        limit: Duration,
    ) -> Result<(), UserStoreError> {
        let db = |e| sql::error(e, classify, limit);
        let migrate = async {
            // READ COMMITTED, so that a server that waited for the lock sees the table
            // the one before it made (whatever the database's default isolation).
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(db)?;
            // The server's side of the limit, for this transaction only (a number of
            // milliseconds: nothing to quote).
            let statement_timeout =
                format!("SET LOCAL statement_timeout = {}", limit.as_millis().max(1));
            sqlx::query(&statement_timeout)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let present: Vec<String> = sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'user'",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            if present.is_empty() {
                sqlx::query(&CREATE_TABLE)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            } else {
                let keyed_by_app = present.iter().any(|p| p == "appId");
                let mut app_id = legacy_app_id;
                if !keyed_by_app && app_id.is_none() {
                    let rows: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "user""#)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                    if rows > 0 {
                        // Dropping the transaction rolls it back: nothing changed.
                        return Err(UserStoreError::LegacyAppIdNeeded);
                    }
                    app_id = Some("");
                }
                for (column, kind) in ADDED_COLUMNS {
                    if !present.iter().any(|p| p == column) {
                        tracing::info!(column, "adding column to the PostgreSQL user table");
                        let add = format!(r#"ALTER TABLE "user" ADD COLUMN "{column}" {kind}"#);
                        sqlx::query(&add).execute(&mut *tx).await.map_err(db)?;
                    }
                }
                if let (false, Some(app_id)) = (keyed_by_app, app_id) {
                    key_by_app(&mut tx, app_id).await.map_err(db)?;
                }
            }
            sqlx::query(CREATE_UNION_ID_INDEX)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(CREATE_PERSON_INDEX)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)
        };
        // Connecting is bounded by the connect timeout inside; the statements by this.
        within(limit, migrate).await
    }
}

/// Keys a single-app table (keyed by `openId`) by (`appId`, `openId`), in the
/// migration's transaction: every row gets `app_id` and a person id of its own, except
/// that rows sharing a unionid share one; rows without times get the migration time.
async fn key_by_app(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    app_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(r#"ALTER TABLE "user" ADD COLUMN "appId" text, ADD COLUMN "personId" text"#)
        .execute(&mut **tx)
        .await?;
    let rows = sqlx::query(
        r#"UPDATE "user" SET "appId" = $1,
            "personId" = md5(random()::text || clock_timestamp()::text || "openId"),
            "created_at" = coalesce("created_at", $2),
            "updated_at" = coalesce("updated_at", $2)"#,
    )
    .bind(app_id)
    .bind(unix_now())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    tracing::info!(
        rows,
        app_id,
        "keying the PostgreSQL user table by (app, openid)"
    );
    sqlx::query(
        r#"UPDATE "user" AS u SET "personId" = m."personId"
        FROM (SELECT "unionId", min("personId") AS "personId" FROM "user"
            WHERE "unionId" IS NOT NULL GROUP BY "unionId") AS m
        WHERE u."unionId" = m."unionId" AND u."personId" <> m."personId""#,
    )
    .execute(&mut **tx)
    .await?;
    let primary_key: Option<String> = sqlx::query_scalar(
        r#"SELECT conname::text FROM pg_constraint
        WHERE conrelid = '"user"'::regclass AND contype = 'p'"#,
    )
    .fetch_optional(&mut **tx)
    .await?;
    let drop_key = primary_key
        .map(|name| format!(r#"DROP CONSTRAINT "{}", "#, name.replace('"', "\"\"")))
        .unwrap_or_default();
    sqlx::query(&format!(
        r#"ALTER TABLE "user" {drop_key}
            ALTER COLUMN "appId" SET NOT NULL,
            ALTER COLUMN "personId" SET NOT NULL,
            ALTER COLUMN "personId" SET DEFAULT {NEW_PERSON_ID},
            ADD CONSTRAINT "user_pkey" PRIMARY KEY ("appId", "openId")"#
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl UserStore for PostgresUserStore {
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
            check(&[("appId", Some(app_id)), ("openId", Some(open_id))])?;
            check(&values.texts())?;
            let login = async {
                // READ COMMITTED whatever the database's default: under REPEATABLE READ
                // or SERIALIZABLE the snapshot would be taken by the first lock
                // statement, before its wait, and the read below would miss what the
                // lock's last holder committed (two first logins of one unionid would
                // make two persons).
                let mut tx = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?;
                // The record's lock, then the unionid's, always in this order: no
                // deadlock, and whoever reads below is the one writer of both.
                sqlx::query(LOCK)
                    .bind(USER_LOCK)
                    .bind(format!("{}:{app_id}{open_id}", app_id.len()))
                    .execute(&mut *tx)
                    .await?;
                if let Some(union_id) = union_id {
                    sqlx::query(LOCK)
                        .bind(UNION_ID_LOCK)
                        .bind(union_id)
                        .execute(&mut *tx)
                        .await?;
                }
                // A statement of its own, so that it sees what the lock's last holder
                // committed.
                let (person_id, current_union_id, owner, shared): (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    bool,
                ) = sqlx::query_as(SELECT_PLACEMENT)
                    .bind(app_id)
                    .bind(open_id)
                    .bind(union_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let current = person_id.map(|person_id| Current {
                    person_id,
                    union_id: current_union_id,
                });
                let placement = Placement::place(current.as_ref(), union_id, owner, shared);
                let query = sqlx::query(&UPSERT_LOGIN)
                    .bind(app_id)
                    .bind(open_id)
                    .bind(&placement.person_id);
                let row = bind(&values, query)
                    .bind(unix_now())
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((row, placement.merged_from))
            };
            let (row, merged_from) = self.run(login).await?;
            Ok(StoredLogin {
                user: read(&row)?,
                merged_from,
            })
        }
    }

    async fn get(&self, app_id: &str, open_id: &str) -> Result<Option<User>, UserStoreError> {
        self.one(&SELECT_BY_KEY, &[app_id, open_id]).await
    }

    async fn get_by_union_id(&self, union_id: &str) -> Result<Option<User>, UserStoreError> {
        self.one(&SELECT_BY_UNION_ID, &[union_id]).await
    }

    async fn person(&self, person_id: &str) -> Result<Vec<User>, UserStoreError> {
        check(&[("personId", Some(person_id))])?;
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
        check(&[("appId", Some(app_id)), ("openId", Some(open_id))])?;
        let done = self
            .run(
                sqlx::query(r#"DELETE FROM "user" WHERE "appId" = $1 AND "openId" = $2"#)
                    .bind(app_id)
                    .bind(open_id)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PostgresUserStore {
    async fn update(
        &self,
        app_id: &str,
        open_id: &str,
        values: Merged,
    ) -> Result<Option<User>, UserStoreError> {
        check(&[("appId", Some(app_id)), ("openId", Some(open_id))])?;
        check(&values.texts())?;
        let query = bind(&values, sqlx::query(&UPDATE).bind(app_id).bind(open_id));
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
