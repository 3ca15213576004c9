//! Users who have logged in through the mini-program, and where they are kept.

use std::{error::Error as StdError, fmt::Debug, future::Future};

use serde::{Deserialize, Serialize};

use crate::phone::PhoneNumber;
#[cfg(feature = "wechat")]
use crate::store::Replayed;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use self::mysql::MySqlUserStore;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresUserStore;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use self::sql::SqlUserStoreBuilder;
#[cfg(feature = "sqlite")]
pub use self::sqlite::{SqliteUserStore, SqliteUserStoreBuilder};

/// The seconds since the Unix epoch: the stores' times.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Boxed source of a [`UserStoreError`], so the trait does not tie callers to one backend's error types.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Profile data a client may send at login; `None` means "not sent", never "clear it".
///
/// Deserializes from snake_case and also from the camelCase names of WeChat's
/// `userInfo` object (`nickName`, `avatarUrl`), so the client's payload can be
/// passed through as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Display name (`userInfo.nickName`).
    #[serde(alias = "nickName")]
    pub nick_name: Option<String>,
    /// Avatar image URL (`userInfo.avatarUrl`).
    #[serde(alias = "avatarUrl")]
    pub avatar_url: Option<String>,
    /// WeChat's gender code: 0 unknown, 1 male, 2 female.
    pub gender: Option<i64>,
    /// City name.
    pub city: Option<String>,
    /// Province name.
    pub province: Option<String>,
    /// Country name.
    pub country: Option<String>,
    /// Language of the profile strings, e.g. `zh_CN`.
    pub language: Option<String>,
}

impl Profile {
    /// Whether no field is set, i.e. merging this profile would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A stored user: one person's record in one mini-program, keyed by (`app_id`,
/// `open_id`) and linked to the person's records in the other apps by `person_id`.
/// Serialized with snake_case field names (the `GET /me` body). `Debug` masks the phone
/// number, as [`PhoneNumber`]'s does.
///
/// Times are unix seconds. Rows carried over from the original Node schema get
/// the migration time as `created_at`/`updated_at`; rows another writer adds after
/// that without timestamps (with an app id: the migrated table needs one) read as `0`
/// until their next login here.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The app id of the mini-program this record belongs to.
    pub app_id: String,
    /// The user's openid for this mini-program.
    pub open_id: String,
    /// The person this record belongs to: the same for every record of one unionid,
    /// across apps (32 lowercase hex characters). A record without a unionid is a person
    /// of its own until WeChat sends one that another app's record already has; the
    /// record then joins that person (see [`StoredLogin::merged_from`]).
    pub person_id: String,
    /// The user's unionid across the developer's apps, once WeChat has sent one.
    pub union_id: Option<String>,
    /// Display name.
    pub nick_name: Option<String>,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// WeChat's gender code: 0 unknown, 1 male, 2 female.
    pub gender: Option<i64>,
    /// City name.
    pub city: Option<String>,
    /// Province name.
    pub province: Option<String>,
    /// Country name.
    pub country: Option<String>,
    /// Language of the profile strings.
    pub language: Option<String>,
    /// When the user was first stored, in unix seconds.
    pub created_at: i64,
    /// When the union id, a profile field or the phone last changed, in unix seconds.
    pub updated_at: i64,
    /// When the user last logged in through this store, in unix seconds; `None` for legacy rows not yet seen.
    pub last_login_at: Option<i64>,
    /// The bound phone number as the user sees it (see [`PhoneNumber`]), once bound.
    pub phone_number: Option<String>,
    /// The bound phone number without its country code.
    pub pure_phone_number: Option<String>,
    /// The bound phone number's country calling code.
    pub country_code: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |number: &Option<String>| {
            number
                .as_ref()
                .map(|n| crate::phone::mask(self.country_code.as_deref().unwrap_or("?"), n))
        };
        f.debug_struct("User")
            .field("app_id", &self.app_id)
            .field("open_id", &self.open_id)
            .field("person_id", &self.person_id)
            .field("union_id", &self.union_id)
            .field("nick_name", &self.nick_name)
            .field("avatar_url", &self.avatar_url)
            .field("gender", &self.gender)
            .field("city", &self.city)
            .field("province", &self.province)
            .field("country", &self.country)
            .field("language", &self.language)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("last_login_at", &self.last_login_at)
            .field("phone_number", &masked(&self.pure_phone_number))
            .field("country_code", &self.country_code)
            .finish()
    }
}

impl User {
    /// The profile part of this user.
    pub fn profile(&self) -> Profile {
        Profile {
            nick_name: self.nick_name.clone(),
            avatar_url: self.avatar_url.clone(),
            gender: self.gender,
            city: self.city.clone(),
            province: self.province.clone(),
            country: self.country.clone(),
            language: self.language.clone(),
        }
    }

    /// The bound phone number, if one is.
    pub fn phone(&self) -> Option<PhoneNumber> {
        Some(PhoneNumber {
            phone_number: self.phone_number.clone()?,
            pure_phone_number: self.pure_phone_number.clone()?,
            country_code: self.country_code.clone()?,
        })
    }
}

/// Why a [`UserStore`] call failed.
///
/// Messages name only the kind of failure; the boxed source carries the
/// backend's own message, which never includes the values bound to a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserStoreError {
    /// Another connection held the lock for longer than the busy timeout (`SQLITE_BUSY`/`SQLITE_LOCKED`).
    #[error("user store is busy or locked")]
    Busy(#[source] BoxError),
    /// The database cannot be written: opened read-only, or the file or medium refuses writes.
    #[error("user store is read-only")]
    ReadOnly(#[source] BoxError),
    /// Any other database failure, such as corruption, a full disk or an unexpected schema.
    #[error("user store database error")]
    Database(#[source] BoxError),
    /// No connection could be had from the pool in time.
    #[error("user store connection pool error")]
    Pool(#[source] BoxError),
    /// The blocking task running the query panicked or was cancelled by runtime shutdown.
    #[error("user store task failed")]
    Task(#[source] BoxError),
    /// The database server cannot be reached, refused the connection or is shutting down.
    #[error("user store unavailable")]
    Unavailable(#[source] BoxError),
    /// The database did not answer within the configured query timeout.
    #[error("user store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A value cannot be stored as it is (too long for its column, or a NUL character
    /// PostgreSQL's text cannot hold); nothing was written.
    #[error("user store cannot store this value: {0}")]
    InvalidInput(&'static str),
    /// The table holds users of a single-app version (keyed by openid alone), and the
    /// store was opened without saying which app they belong to: open it with
    /// `with_legacy_app_id(<their app id>)`. Nothing was changed.
    #[error(
        "the user table holds single-app users; open the store with `with_legacy_app_id` to migrate them"
    )]
    LegacyAppIdNeeded,
}

impl UserStoreError {
    /// Whether retrying the same call later may succeed (lock contention, pool exhaustion).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Busy(_) | Self::Pool(_) | Self::Unavailable(_) | Self::Timeout(_)
        )
    }

    /// The same failure for another caller, its source carried as its message.
    #[cfg(feature = "wechat")]
    pub(crate) fn replay(&self) -> Self {
        let source = |e: &BoxError| -> BoxError { Box::new(Replayed(e.to_string())) };
        match self {
            Self::Busy(e) => Self::Busy(source(e)),
            Self::ReadOnly(e) => Self::ReadOnly(source(e)),
            Self::Database(e) => Self::Database(source(e)),
            Self::Pool(e) => Self::Pool(source(e)),
            Self::Task(e) => Self::Task(source(e)),
            Self::Unavailable(e) => Self::Unavailable(source(e)),
            Self::Timeout(after) => Self::Timeout(*after),
            Self::InvalidInput(reason) => Self::InvalidInput(reason),
            Self::LegacyAppIdNeeded => Self::LegacyAppIdNeeded,
        }
    }
}

/// What [`UserStore::upsert_login`] did: the user as stored, and the person the record
/// left, if the login moved it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredLogin {
    /// The user as stored after the login.
    pub user: User,
    /// When this login's unionid belongs to another person (the user's record in
    /// another app got it first), the record joins that person: this is the person id
    /// it had before, which no longer names anyone if this was its only record. Data an
    /// application keeps per person moves from this id to `user.person_id`.
    pub merged_from: Option<String>,
}

impl StoredLogin {
    /// A login that moved no record.
    pub fn new(user: User) -> Self {
        Self {
            user,
            merged_from: None,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
/// A new person id: 16 bytes from the thread's CSPRNG (seeded by the OS) as 32 lowercase hex characters (ids
/// only need to be unique; random ones leak nothing about when or where they were made).
pub(crate) fn new_person_id() -> String {
    use std::fmt::Write as _;

    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut id, b| {
        let _ = write!(id, "{b:02x}");
        id
    })
}

/// A record's person and unionid as stored, before a login changes them.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) struct Current {
    pub(crate) person_id: String,
    pub(crate) union_id: Option<String>,
}

/// Where a login's record goes: the person id it gets, and the one it leaves, if any.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) struct Placement {
    pub(crate) person_id: String,
    pub(crate) merged_from: Option<String>,
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl Placement {
    /// Whether [`place`](Self::place) needs to know if the record's person has other
    /// records: only when the record's unionid changes to one nobody has (WeChat never
    /// changes a unionid, but an app moved to another Open Platform account would).
    pub(crate) fn needs_sharing(
        current: Option<&Current>,
        union_id: Option<&str>,
        owner: Option<&str>,
    ) -> bool {
        match (current, union_id, owner) {
            (Some(c), Some(new), None) => c.union_id.as_deref().is_some_and(|old| old != new),
            _ => false,
        }
    }

    /// The rule every store follows, inside the login's transaction: a record joins
    /// the person of another record with its unionid (`owner`); else it keeps its
    /// person, unless it takes a new unionid away from the person's other records
    /// (`shared`), when it becomes a person of its own; a new record without an owner
    /// is a new person.
    pub(crate) fn place(
        current: Option<&Current>,
        union_id: Option<&str>,
        owner: Option<String>,
        shared: bool,
    ) -> Self {
        let (person_id, merged_from) = match (current, owner) {
            (Some(c), Some(owner)) if owner != c.person_id => (owner, Some(c.person_id.clone())),
            (_, Some(owner)) => (owner, None),
            (Some(c), None) if shared && Self::needs_sharing(Some(c), union_id, None) => {
                (new_person_id(), Some(c.person_id.clone()))
            }
            (Some(c), None) => (c.person_id.clone(), None),
            (None, None) => (new_person_id(), None),
        };
        Self {
            person_id,
            merged_from,
        }
    }
}

/// Persistent storage of [`User`]s, in the style of tower-sessions' `SessionStore`.
///
/// A user is a person's record in one mini-program, keyed by (app id, openid): one
/// store serves every app of a backend. A login calls [`UserStore::upsert_login`] with
/// the app id, the `openid` (and `unionid`, when WeChat sends one) from
/// `code2Session`, plus whatever profile the client sent. The first login creates the
/// user; later logins record the login time and merge in only the profile fields they
/// actually carry, so a login without `getUserProfile` data never wipes a nickname
/// stored earlier.
///
/// Records sharing a unionid belong to one person ([`User::person_id`]), whichever app
/// they are from, including when the unionid first comes with a later login: the
/// record then joins the person that has it, in the same write.
///
/// ```
/// use mpauthx::{Profile, SqliteUserStore, UserStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("users.db");
/// let store = SqliteUserStore::open(&path).await?;
///
/// let profile = Profile { nick_name: Some("Ada".into()), ..Profile::default() };
/// store.upsert_login("wx-shop", "o-abc", None, Some(&profile), None).await?;
///
/// // A later login without a profile keeps the stored nickname.
/// let user = store.upsert_login("wx-shop", "o-abc", Some("u-xyz"), None, None).await?.user;
/// assert_eq!(user.nick_name.as_deref(), Some("Ada"));
/// assert_eq!(user.union_id.as_deref(), Some("u-xyz"));
///
/// // The same person in another app: another openid, the same unionid.
/// let game = store.upsert_login("wx-game", "o-def", Some("u-xyz"), None, None).await?.user;
/// assert_eq!(game.person_id, user.person_id);
/// assert_eq!(store.person(&user.person_id).await?.len(), 2);
/// # Ok(())
/// # }
/// ```
pub trait UserStore: Debug + Clone + Send + Sync + 'static {
    /// Records a login in app `app_id`: creates the user if missing, else sets
    /// `last_login_at` and merges the given fields.
    ///
    /// `union_id`, each profile field and the phone overwrite the stored value only
    /// when they are `Some`, in the one write. A `union_id` that another record already
    /// has links this record to that record's person ([`StoredLogin::merged_from`]
    /// says when that moved it). Concurrent first logins of one user create one user,
    /// and concurrent first logins of one unionid in several apps one person.
    fn upsert_login(
        &self,
        app_id: &str,
        open_id: &str,
        union_id: Option<&str>,
        profile: Option<&Profile>,
        phone: Option<&PhoneNumber>,
    ) -> impl Future<Output = Result<StoredLogin, UserStoreError>> + Send;

    /// Looks a user up by app id and openid.
    fn get(
        &self,
        app_id: &str,
        open_id: &str,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send;

    /// Looks a user up by unionid, in any app; if several records share it, the most
    /// recent login wins. [`person`](Self::person) lists them all.
    fn get_by_union_id(
        &self,
        union_id: &str,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send;

    /// Every record of a person, one per app, ordered by app id; empty if no record has
    /// this person id.
    fn person(
        &self,
        person_id: &str,
    ) -> impl Future<Output = Result<Vec<User>, UserStoreError>> + Send;

    /// Merges the `Some` fields of `profile` into an existing user without counting as
    /// a login; `None` if no such user.
    fn update_profile(
        &self,
        app_id: &str,
        open_id: &str,
        profile: &Profile,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send;

    /// Binds `phone` to an existing user, replacing any number bound before, without
    /// counting as a login; `None` if no such user.
    fn set_phone(
        &self,
        app_id: &str,
        open_id: &str,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<User>, UserStoreError>> + Send;

    /// Deletes a user; returns whether one was deleted. The person's records in other
    /// apps stay.
    fn delete(
        &self,
        app_id: &str,
        open_id: &str,
    ) -> impl Future<Output = Result<bool, UserStoreError>> + Send;
}
