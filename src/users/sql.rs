//! What the PostgreSQL and MySQL stores share: their builder, the timeout every query
//! runs under, the row they read, and how a driver error becomes a [`UserStoreError`].

use std::{fmt, future::Future, marker::PhantomData, time::Duration};

use sqlx::{ColumnIndex, Decode, Row, Type, error::DatabaseError};

use super::{Profile, User, UserStoreError};
use crate::phone::PhoneNumber;

const DEFAULT_MAX_CONNECTIONS: u32 = 10;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest timeout taken (longer ones are cut): ten minutes.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest migration timeout taken: an hour.
const MAX_MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings for a [`PostgresUserStore`](super::PostgresUserStore) or a
/// [`MySqlUserStore`](super::MySqlUserStore) (`S`); from their `builder(url)`, opened with
/// `open()`.
///
/// `Debug` shows the settings and never the URL (it may hold a password).
#[derive(Clone)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct SqlUserStoreBuilder<S> {
    pub(super) url: String,
    pub(super) max_connections: u32,
    pub(super) min_connections: u32,
    pub(super) connect_timeout: Duration,
    pub(super) query_timeout: Duration,
    pub(super) migration_timeout: Duration,
    pub(super) legacy_app_id: Option<String>,
    store: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for SqlUserStoreBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlUserStoreBuilder")
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("migration_timeout", &self.migration_timeout)
            .field("legacy_app_id", &self.legacy_app_id)
            .finish_non_exhaustive()
    }
}

impl<S> SqlUserStoreBuilder<S> {
    pub(super) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            min_connections: 0,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
            legacy_app_id: None,
            store: PhantomData,
        }
    }

    /// The app the users of a single-app table belong to (one written by the Node
    /// package or by an earlier mpauthx, keyed by openid alone): opening the store on
    /// such a table gives every row this app id and a person id (rows sharing a unionid
    /// share one) and keys the table by (app, openid), keeping every row and column.
    /// Without it, opening a store on such a table that holds rows fails with
    /// [`UserStoreError::LegacyAppIdNeeded`] and changes nothing. Ignored once the
    /// table is migrated.
    pub fn with_legacy_app_id(mut self, app_id: impl Into<String>) -> Self {
        self.legacy_app_id = Some(app_id.into());
        self
    }

    /// The most pooled connections per server process (default 10; at least 1). Each
    /// login holds one for one short transaction (its record's and its unionid's locks,
    /// a read, the upsert), so 10 serve a few thousand logins a second; mind the
    /// database's `max_connections` across all servers.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self.min_connections = self.min_connections.min(self.max_connections);
        self
    }

    /// Connections kept open while idle (default 0).
    pub fn with_min_connections(mut self, min: u32) -> Self {
        self.min_connections = min.min(self.max_connections);
        self
    }

    /// How long a call waits for a connection, a new one's connect included (default
    /// 5 s); past it the call fails with [`UserStoreError::Pool`] (503).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// How long a call may take (default 5 s; at most 10 minutes); past it the call
    /// fails with [`UserStoreError::Timeout`] (503). The database bounds its side too
    /// (PostgreSQL's `statement_timeout`, MySQL's lock wait timeout), so a statement
    /// given up on does not linger; one that was committing when the time ran out may
    /// still have committed.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// How long opening the store may spend creating or migrating the table (default
    /// 10 minutes; at most an hour), waiting for another server's migration included;
    /// past it the open fails with [`UserStoreError::Timeout`] and the table is left as
    /// it was (PostgreSQL rolls the migration back; MySQL's resumes at the next open).
    /// The query timeout does not apply: keying a table of millions of rows by app
    /// takes longer than any one call should. Raise it for a larger table.
    pub fn with_migration_timeout(mut self, timeout: Duration) -> Self {
        self.migration_timeout = timeout.clamp(Duration::from_millis(1), MAX_MIGRATION_TIMEOUT);
        self
    }
}

/// How a database's own error codes classify.
pub(super) enum Kind {
    Busy,
    ReadOnly,
    Unavailable,
    Timeout,
    Other,
}

/// Runs `query` within `limit`: the one path of every statement.
pub(super) async fn timed<T>(
    limit: Duration,
    classify: fn(&dyn DatabaseError) -> Kind,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, UserStoreError> {
    within(limit, async {
        query.await.map_err(|e| error(e, classify, limit))
    })
    .await
}

/// Runs `work` within `limit`, for work that makes its own [`UserStoreError`]s.
pub(super) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, UserStoreError>>,
) -> Result<T, UserStoreError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        // The future is dropped: an open transaction is rolled back, and the
        // database's own bound (statement or lock wait timeout) ends the statement.
        Err(_) => Err(UserStoreError::Timeout(limit)),
    }
}

/// The store's error for a driver error. The driver's messages name what failed, never
/// the values bound to a statement.
pub(super) fn error(
    e: sqlx::Error,
    classify: fn(&dyn DatabaseError) -> Kind,
    limit: Duration,
) -> UserStoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => UserStoreError::Pool(Box::new(e)),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            UserStoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::Database(db) => match classify(db.as_ref()) {
            Kind::Busy => UserStoreError::Busy(Box::new(e)),
            Kind::ReadOnly => UserStoreError::ReadOnly(Box::new(e)),
            Kind::Unavailable => UserStoreError::Unavailable(Box::new(e)),
            Kind::Timeout => UserStoreError::Timeout(limit),
            Kind::Other => UserStoreError::Database(Box::new(e)),
        },
        _ => UserStoreError::Database(Box::new(e)),
    }
}

/// A stored user from a row of [`COLUMNS`] in that order.
pub(super) fn user_from_row<'r, R>(row: &'r R) -> Result<User, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        open_id: row.try_get(0)?,
        union_id: row.try_get(1)?,
        nick_name: row.try_get(2)?,
        avatar_url: row.try_get(3)?,
        gender: row.try_get(4)?,
        city: row.try_get(5)?,
        province: row.try_get(6)?,
        country: row.try_get(7)?,
        language: row.try_get(8)?,
        created_at: row.try_get::<Option<i64>, _>(9)?.unwrap_or(0),
        updated_at: row.try_get::<Option<i64>, _>(10)?.unwrap_or(0),
        last_login_at: row.try_get(11)?,
        phone_number: row.try_get(12)?,
        pure_phone_number: row.try_get(13)?,
        country_code: row.try_get(14)?,
        app_id: row.try_get(15)?,
        person_id: row.try_get(16)?,
    })
}

/// Every column, as the seed's sqlite table names them, in the order
/// [`user_from_row`] reads them; the key is (`appId`, `openId`).
pub(super) const COLUMNS: [&str; 17] = [
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
];

/// The columns a login or a profile update merges (`coalesce(new, old)`), beside the key
/// and the times.
pub(super) const MERGED: [&str; 11] = [
    "unionId",
    "nickName",
    "avatarUrl",
    "gender",
    "city",
    "province",
    "country",
    "language",
    "phoneNumber",
    "purePhoneNumber",
    "countryCode",
];

/// `COLUMNS`, each quoted with `quote`, comma-separated.
#[cfg(feature = "postgres")]
pub(super) fn column_list(quote: char) -> String {
    COLUMNS
        .iter()
        .map(|c| format!("{quote}{c}{quote}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values a write merges, in [`MERGED`] order: `None` keeps what is stored.
pub(super) struct Merged {
    text: [Option<String>; 11],
    gender: Option<i64>,
}

/// One value of a [`Merged`], as it is bound.
pub(super) enum Value<'a> {
    Text(Option<&'a str>),
    Integer(Option<i64>),
}

/// Where `gender`, the one integer, sits in [`MERGED`].
const GENDER: usize = 3;

impl Merged {
    pub(super) fn new(
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> Self {
        let p = profile.cloned().unwrap_or_default();
        let (number, pure, code) = match phone.cloned() {
            Some(p) => (
                Some(p.phone_number),
                Some(p.pure_phone_number),
                Some(p.country_code),
            ),
            None => (None, None, None),
        };
        Self {
            text: [
                union_id.map(str::to_owned),
                p.nick_name,
                p.avatar_url,
                None,
                p.city,
                p.province,
                p.country,
                p.language,
                number,
                pure,
                code,
            ],
            gender: p.gender,
        }
    }

    /// Every value in [`MERGED`] order.
    pub(super) fn values(&self) -> impl Iterator<Item = Value<'_>> {
        self.text.iter().enumerate().map(|(i, text)| {
            if i == GENDER {
                Value::Integer(self.gender)
            } else {
                Value::Text(text.as_deref())
            }
        })
    }

    /// The text values with their column names.
    pub(super) fn texts(&self) -> Vec<(&'static str, Option<&str>)> {
        MERGED
            .iter()
            .zip(&self.text)
            .filter(|(c, _)| **c != "gender")
            .map(|(c, t)| (*c, t.as_deref()))
            .collect()
    }

    #[cfg(feature = "mysql")]
    /// `user` with these values merged in at `now`: `updated_at` moves only when a value
    /// changes, as the SQL of the other stores does.
    pub(super) fn merge_into(&self, user: &User, now: i64) -> User {
        let mut merged = user.clone();
        let slots: [&mut Option<String>; 10] = [
            &mut merged.union_id,
            &mut merged.nick_name,
            &mut merged.avatar_url,
            &mut merged.city,
            &mut merged.province,
            &mut merged.country,
            &mut merged.language,
            &mut merged.phone_number,
            &mut merged.pure_phone_number,
            &mut merged.country_code,
        ];
        let texts = self.texts();
        let mut changed = false;
        for (slot, (_, new)) in slots.into_iter().zip(texts) {
            if let Some(new) = new
                && slot.as_deref() != Some(new)
            {
                *slot = Some(new.to_owned());
                changed = true;
            }
        }
        if let Some(gender) = self.gender
            && merged.gender != Some(gender)
        {
            merged.gender = Some(gender);
            changed = true;
        }
        if merged.created_at == 0 {
            merged.created_at = now;
        }
        if changed || merged.updated_at == 0 {
            merged.updated_at = now;
        }
        merged
    }
}
