//! Where live tokens are kept: the [`TokenStore`] trait, its options and errors.

use std::{future::Future, num::NonZeroU32, time::Duration};

use crate::token::{ParsedToken, Sku, Token, TokenHash};

mod cache;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod status;

#[cfg(feature = "redis")]
pub use self::redis::{RedisTokenStore, RedisTokenStoreBuilder, RedisValidation};
#[cfg(feature = "wechat")]
pub(crate) use self::status::DEFAULT_SIGN_OUT_NOTICE;
pub(crate) use self::status::notice_millis;
pub use self::{
    cache::{CachedTokenStore, CachedValidation},
    memory::MemoryTokenStore,
    status::{SignOutReason, TokenStatus},
};

/// The default token lifetime: 72 hours, as in the Node original.
pub(crate) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(259_200);

/// The default number of live tokens (devices) one user may hold per sku.
pub(crate) const DEFAULT_MAX_TOKENS_PER_USER: u32 = 10;

/// The longest device label kept, in bytes; longer labels are cut at a char boundary.
pub(crate) const MAX_DEVICE_LEN: usize = 64;

/// The most live tokens per user a store accepts as a limit.
pub(crate) const MAX_TOKENS_PER_USER_LIMIT: u32 = 1000;

/// How a token is issued: its lifetime, the per-user limit, and a device label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOptions {
    ttl: Duration,
    max_tokens_per_user: NonZeroU32,
    device: Option<String>,
    retry_grace: Duration,
    max_session_age: Option<Duration>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self::new(DEFAULT_TOKEN_TTL)
    }
}

impl IssueOptions {
    /// Tokens that live for `ttl`, at most ten per user, without a device label.
    ///
    /// The lifetime is clamped to 1 ms ..= 10 years (315,360,000 s): stores compute
    /// `now + ttl` in milliseconds, and Redis's scripts format it as a 64-bit integer,
    /// which a lifetime near `Duration::MAX` would overflow. A token meant to outlive
    /// ten years belongs in a refresh flow instead.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mpauthx::IssueOptions;
    /// let forever = IssueOptions::new(Duration::MAX);
    /// assert_eq!(forever.ttl(), Duration::from_secs(10 * 365 * 24 * 3600));
    /// ```
    pub fn new(ttl: Duration) -> Self {
        /// Ten years of 365 days.
        const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        Self {
            ttl: ttl.clamp(Duration::from_millis(1), MAX_TTL),
            max_tokens_per_user: NonZeroU32::new(DEFAULT_MAX_TOKENS_PER_USER).expect("non-zero"),
            device: None,
            retry_grace: Duration::ZERO,
            max_session_age: None,
        }
    }

    /// Caps the live tokens one user may hold (one per device, typically); issuing one
    /// more evicts the one closest to expiry. Clamped to 1 ..= 1000.
    ///
    /// ```
    /// # use mpauthx::IssueOptions;
    /// let single_device = IssueOptions::default().with_max_tokens_per_user(1);
    /// assert_eq!(single_device.max_tokens_per_user(), 1);
    /// ```
    pub fn with_max_tokens_per_user(mut self, max: u32) -> Self {
        let max = max.clamp(1, MAX_TOKENS_PER_USER_LIMIT);
        self.max_tokens_per_user = NonZeroU32::new(max).expect("clamped to at least 1");
        self
    }

    /// Labels the token with the device it was issued to, for device lists. Control
    /// characters and invisible format characters (Unicode category Cf: bidirectional
    /// overrides and isolates such as U+202E, zero-width spaces and joiners, the BOM,
    /// the soft hyphen, tag characters) are dropped, so that a label shows what it
    /// says; the rest is cut to 64 bytes. A label left empty is no label.
    ///
    /// ```
    /// # use mpauthx::IssueOptions;
    /// let options = IssueOptions::default().with_device("iPhone\u{202E}gpj.exe");
    /// assert_eq!(options.device(), Some("iPhonegpj.exe"));
    /// ```
    pub fn with_device(mut self, device: impl AsRef<str>) -> Self {
        /// Unicode's format characters (general category Cf, as of Unicode 16), plus
        /// the unassigned rest of the tag block.
        fn is_format(c: char) -> bool {
            matches!(
                c,
                '\u{00AD}'
                    | '\u{0600}'..='\u{0605}'
                    | '\u{061C}'
                    | '\u{06DD}'
                    | '\u{070F}'
                    | '\u{0890}'..='\u{0891}'
                    | '\u{08E2}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{206F}'
                    | '\u{FEFF}'
                    | '\u{FFF9}'..='\u{FFFB}'
                    | '\u{110BD}'
                    | '\u{110CD}'
                    | '\u{13430}'..='\u{1343F}'
                    | '\u{1BCA0}'..='\u{1BCA3}'
                    | '\u{1D173}'..='\u{1D17A}'
                    | '\u{E0000}'..='\u{E007F}'
            )
        }
        let mut label = String::new();
        for c in device
            .as_ref()
            .chars()
            .filter(|&c| !c.is_control() && !is_format(c))
        {
            if label.len() + c.len_utf8() > MAX_DEVICE_LEN {
                break;
            }
            label.push(c);
        }
        self.device = (!label.is_empty()).then_some(label);
        self
    }

    /// Makes writes safe to retry when their answer is lost (a Redis stall after the
    /// script ran): for `grace` after a rotation the rotated-out token may rotate
    /// **once more**, invalidating the successor it had (which never reached the client,
    /// or the retry would not come), and for `grace` after a login the devices it
    /// evicted are kept aside, restored by [`TokenStore::undo_issue`]. Default: zero,
    /// no grace (a rotated-out token is dead at once, an evicted device is gone).
    ///
    /// **Weakens rotation:** within the grace, whoever holds the rotated-out token can
    /// trade it for a fresh one once, logging the successor's holder out. Keep it to
    /// seconds; [`MpAuthConfig`](crate::MpAuthConfig) uses 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mpauthx::IssueOptions;
    /// let options = IssueOptions::default().with_retry_grace(Duration::from_secs(10));
    /// assert_eq!(options.retry_grace(), Duration::from_secs(10));
    /// ```
    pub fn with_retry_grace(mut self, grace: Duration) -> Self {
        self.retry_grace = grace.min(MAX_RETRY_GRACE);
        self
    }

    /// Ends every session `max_age` after its login, however often it is refreshed: a
    /// rotation keeps the login time, its successor never outlives it, and past it a
    /// rotation fails (the user logs in again). Default: no limit.
    pub fn with_max_session_age(mut self, max_age: Duration) -> Self {
        self.max_session_age = Some(max_age.max(Duration::from_millis(1)));
        self
    }

    /// How long a lost answer can be made good; see
    /// [`with_retry_grace`](Self::with_retry_grace).
    pub fn retry_grace(&self) -> Duration {
        self.retry_grace
    }

    /// The absolute session lifetime, if any.
    pub fn max_session_age(&self) -> Option<Duration> {
        self.max_session_age
    }

    pub(crate) fn retry_grace_millis(&self) -> u64 {
        millis(self.retry_grace)
    }

    /// The maximum session age in ms, 0 for none: the Redis scripts' argument.
    #[cfg(feature = "redis")]
    pub(crate) fn max_session_age_millis(&self) -> u64 {
        self.max_session_age.map_or(0, millis)
    }

    /// How long an issued token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many live tokens one user may hold.
    pub fn max_tokens_per_user(&self) -> u32 {
        self.max_tokens_per_user.get()
    }

    /// The device label, if any.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    pub(crate) fn ttl_millis(&self) -> u64 {
        millis(self.ttl)
    }

    /// The lifetime of a login's first token: the TTL, or the whole session if shorter.
    pub(crate) fn login_ttl_millis(&self) -> u64 {
        match self.max_session_age {
            Some(max_age) => millis(self.ttl.min(max_age)),
            None => self.ttl_millis(),
        }
    }
}

/// The longest [`IssueOptions::with_retry_grace`] accepted: one minute.
const MAX_RETRY_GRACE: Duration = Duration::from_secs(60);

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a store knows about one live token. It never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The token's hash; its [`TokenHash::id`] is a public id for device lists.
    pub hash: TokenHash,
    /// When the token was issued, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// When the token expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// When the session began: the login this token descends from by rotation, in
    /// milliseconds since the Unix epoch.
    pub session_started_at_ms: u64,
    /// The device label given at issue, if any.
    pub device: Option<String>,
}

impl TokenInfo {
    /// A record, for [`TokenStore`] implementations outside this crate.
    pub fn new(
        hash: TokenHash,
        issued_at_ms: u64,
        expires_at_ms: u64,
        session_started_at_ms: u64,
        device: Option<String>,
    ) -> Self {
        Self {
            hash,
            issued_at_ms,
            expires_at_ms,
            session_started_at_ms,
            device,
        }
    }
}

/// What an [`issue`](TokenStore::issue) or a [`rotate`](TokenStore::rotate) wrote: the
/// new token's record, and the tokens it ended (devices evicted by the limit; for a
/// rotation within the retry grace, the successor given before), so that caches can
/// forget them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Issued {
    /// The new token's record.
    pub info: TokenInfo,
    /// The tokens that stopped being live.
    pub evicted: Vec<TokenHash>,
}

impl Issued {
    /// The outcome of a write, for [`TokenStore`] implementations outside this crate.
    pub fn new(info: TokenInfo, evicted: Vec<TokenHash>) -> Self {
        Self { info, evicted }
    }
}

/// A token store could not answer. Every variant means "try again later": a caller
/// answers 503, never 401, because the token may well be valid. (Settings that cannot
/// work are a [`StoreBuildError`], from the builders.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or refused the command.
    #[error("token store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store did not answer within the configured time.
    #[error("token store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered something this crate does not understand.
    #[error("token store answered unexpectedly: {0}")]
    Protocol(&'static str),
}

#[cfg(feature = "wechat")]
impl StoreError {
    /// The same failure for another caller, its source carried as its message.
    pub(crate) fn replay(&self) -> Self {
        match self {
            Self::Unavailable(source) => Self::Unavailable(Box::new(Replayed(source.to_string()))),
            Self::Timeout(after) => Self::Timeout(*after),
            Self::Protocol(reason) => Self::Protocol(reason),
        }
    }
}

/// The message of a failure that happened to another caller: what a shared outcome
/// carries in place of a source that cannot be cloned.
#[cfg(feature = "wechat")]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Replayed(pub(crate) String);

/// A store could not be built: its settings are unusable, or it could not be reached
/// to check them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreBuildError {
    /// The settings are unusable; the message says which and never repeats a password.
    #[error("invalid token store settings: {0}")]
    InvalidSettings(&'static str),
    /// The settings look right but the store did not answer.
    #[error(transparent)]
    Unreachable(#[from] StoreError),
}

/// A place to keep live tokens.
///
/// Implementations are cheap to clone (share state behind an `Arc` or a pool) and must
/// keep each operation atomic with respect to the others. They store a token's
/// [`TokenHash`], never its text. Every token names its user (`sku` + `open_id`), so a
/// store can group a user's tokens for limits, listing and revocation.
///
/// # Time
///
/// Expiry is decided on the application server's clock, by every operation alike: a
/// token issued at `now` on this machine expires at `now + ttl`, and `validate`,
/// `revoke`, `list` and `rotate` compare against this machine's `now` too. Servers
/// sharing a store should keep their clocks in step (NTP): a server whose clock runs
/// `d` ahead of the one that issued a token sees it end `d` early, one running behind
/// sees it live up to `d` longer. No operation mixes two clocks, so the skew never
/// does more than shift expiry by `d`.
///
/// # The stores
///
/// `RedisTokenStore` for production (feature `redis`), [`MemoryTokenStore`] for tests
/// and the embedded example, and [`CachedTokenStore`] in front of either. All keep only a SHA-256 of each token, expire tokens after their TTL, hold at most
/// [`IssueOptions::max_tokens_per_user`] live tokens per user (evicting the one closest
/// to expiry, which is the oldest when TTLs are equal), and rotate atomically: of
/// several concurrent rotations of one token exactly one succeeds.
///
/// ```
/// use std::time::Duration;
/// use mpauthx::{IssueOptions, MemoryTokenStore, Sku, Token, TokenStatus, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryTokenStore::new();
/// let sku = Sku::new("demo")?;
/// let token = Token::generate(&sku, "o-user")?;
/// let options = IssueOptions::new(Duration::from_secs(3600)).with_device("iPhone");
/// store.issue(&token, &options).await?;
///
/// assert!(store.validate(&token.parsed()).await?.is_live());
/// let successor = Token::successor_of(&token.parsed())?;
/// let rotated = store.rotate(&token.parsed(), &successor, &options).await?;
/// assert!(rotated.is_some(), "the old token was live");
/// assert_eq!(store.validate(&token.parsed()).await?, TokenStatus::Unknown);
/// assert!(store.validate(&successor.parsed()).await?.is_live());
/// # Ok(())
/// # }
/// ```
pub trait TokenStore: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// The future [`validate`](Self::validate) returns: a named type, so that
    /// [`MpAuthLayer`](crate::MpAuthLayer) holds it without boxing.
    type Validation: Future<Output = Result<TokenStatus, StoreError>> + Send + 'static;

    /// Records a new token with the given lifetime; if the user then holds more than
    /// `options.max_tokens_per_user()` live tokens, evicts those closest to expiry
    /// (keeping them aside for the retry grace, see
    /// [`IssueOptions::with_retry_grace`]).
    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Issued, StoreError>> + Send;

    /// Takes back an issue whose answer may never have reached its client (the store
    /// timed out, or the user could not be stored): revokes `token` and restores the
    /// devices its issue evicted, if the retry grace has not passed. Returns the
    /// restored tokens. The default revokes and restores nothing.
    fn undo_issue(
        &self,
        token: &ParsedToken<'_>,
    ) -> impl Future<Output = Result<Vec<TokenHash>, StoreError>> + Send {
        async move { self.revoke(token).await.map(|_| Vec::new()) }
    }

    /// Whether the token is live, and until when; or, for the notice period after a
    /// [`sign_out`](Self::sign_out), that the service signed it out and why. This is the
    /// request hot path: one round trip, and the returned future owns what it needs, so
    /// middleware can hold it across the request.
    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation;

    /// [`validate`](Self::validate)'s answer if the store has it at hand, without I/O
    /// (a hit in [`CachedTokenStore`], the in-memory store); `None` if it must ask.
    /// [`MpAuthLayer`](crate::MpAuthLayer) tries this first, and on an answer calls the
    /// inner service at once, without a future to hold across the request. It must
    /// answer as `validate` would. The default has nothing at hand.
    fn validate_now(&self, token: &ParsedToken<'_>) -> Option<Result<TokenStatus, StoreError>> {
        let _ = token;
        None
    }

    /// Revokes the token with this hash held by `open_id` under `sku`. Returns whether it
    /// was live.
    fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes a token. Returns whether it was live.
    fn revoke(
        &self,
        token: &ParsedToken<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (sku, hash) = (token.to_sku(), token.hash());
        async move { self.revoke_hash(&sku, token.open_id(), &hash).await }
    }

    /// Revokes every token of `open_id` under `sku` (logout everywhere). Returns how many
    /// were live.
    fn revoke_all(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Signs `open_id` out of `sku` for `reason`: revokes every token, as
    /// [`revoke_all`](Self::revoke_all) does, and for `notice` (at most 30 days, never
    /// past a token's own expiry) [`validate`](Self::validate) answers those tokens
    /// [`TokenStatus::SignedOut`] rather than [`TokenStatus::Unknown`], so that a client
    /// can tell a forced sign-out from an expired token. Returns how many were live.
    ///
    /// The notice costs nothing on the path of live tokens: it is kept where the token
    /// was and read only when the token is no longer live. The default implementation
    /// revokes without a notice.
    fn sign_out(
        &self,
        sku: &Sku,
        open_id: &str,
        reason: &SignOutReason,
        notice: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let _ = (reason, notice);
        self.revoke_all(sku, open_id)
    }

    /// The live tokens of `open_id` under `sku`, soonest to expire first.
    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send;

    /// Atomically replaces a live token with `successor`, keeping its device label and
    /// session start, and returns what was recorded about the successor. `None` if the
    /// token was not live, including when a concurrent rotation of the same token won,
    /// and when its session is older than `options.max_session_age()`. Within
    /// `options.retry_grace()` after a rotation, the rotated-out token rotates once more
    /// and its earlier successor is evicted.
    ///
    /// The caller draws `successor` with [`Token::successor_of`], so it names the same
    /// user; the store files it under `token`'s user whatever it says. Stores draw no
    /// random numbers themselves, so a failing RNG is never mistaken for an outage.
    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send;
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_clamp_and_clean() {
        let options = IssueOptions::new(Duration::ZERO)
            .with_max_tokens_per_user(0)
            .with_device("Pixel\n\u{7}9");
        assert_eq!(options.ttl(), Duration::from_millis(1));
        assert_eq!(options.max_tokens_per_user(), 1);
        assert_eq!(options.device(), Some("Pixel9"));
        let options = options
            .with_max_tokens_per_user(u32::MAX)
            .with_device("é".repeat(MAX_DEVICE_LEN));
        assert_eq!(options.max_tokens_per_user(), MAX_TOKENS_PER_USER_LIMIT);
        assert_eq!(options.device().unwrap().len(), MAX_DEVICE_LEN);
        assert_eq!(options.with_device("\n").device(), None);
    }

    /// Ten years, the most `IssueOptions::new` keeps.
    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

    #[test]
    fn ttl_is_capped_at_ten_years() {
        assert_eq!(IssueOptions::new(TEN_YEARS).ttl(), TEN_YEARS);
        for huge in [
            TEN_YEARS + Duration::from_millis(1),
            Duration::from_millis(1 << 63),
            Duration::MAX,
        ] {
            let options = IssueOptions::new(huge);
            assert_eq!(options.ttl(), TEN_YEARS, "{huge:?}");
            // What the stores add to `now`: far inside what Lua formats with `%d`
            // (an i64) and what a float holds exactly.
            assert!(options.ttl_millis() < 1 << 53);
            assert!(now_millis().checked_add(options.ttl_millis()).is_some());
        }
        let just_under = TEN_YEARS - Duration::from_millis(1);
        assert_eq!(IssueOptions::new(just_under).ttl(), just_under);
    }

    #[cfg(feature = "wechat")]
    #[test]
    fn config_token_ttl_is_capped_through_issue_options() {
        let config = crate::MpAuthConfig::new("wx-app", "secret", "demo")
            .unwrap()
            .with_token_ttl(Duration::MAX);
        assert_eq!(config.issue_options().ttl(), TEN_YEARS);
    }

    #[test]
    fn device_labels_lose_format_characters() {
        // A right-to-left override would show "iPhoneexe.jpg" in a device list.
        let options = IssueOptions::default().with_device("iPhone\u{202E}gpj.exe");
        assert_eq!(options.device(), Some("iPhonegpj.exe"));
        // Zero-width joiners, spaces and marks; isolates; the BOM; a soft hyphen.
        let options = IssueOptions::default()
            .with_device("\u{FEFF}Pi\u{200D}xel\u{200B} \u{2066}9\u{2069}\u{00AD}\u{200E}\u{200F}");
        assert_eq!(options.device(), Some("Pixel 9"));
        let every_format_char = concat!(
            "\u{00AD}\u{061C}\u{180E}\u{200B}\u{200C}\u{200D}\u{200E}\u{200F}",
            "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2060}\u{2061}\u{2062}",
            "\u{2063}\u{2064}\u{2066}\u{2067}\u{2068}\u{2069}\u{206A}\u{206B}",
            "\u{206C}\u{206D}\u{206E}\u{206F}\u{FEFF}\u{FFF9}\u{FFFA}\u{FFFB}",
            "\u{E0000}\u{E0001}\u{E0020}\u{E0041}\u{E007F}",
        );
        let options = IssueOptions::default().with_device(format!("a{every_format_char}b"));
        assert_eq!(options.device(), Some("ab"));
        // Nothing but format characters is no label at all.
        assert_eq!(
            IssueOptions::default()
                .with_device(every_format_char)
                .device(),
            None
        );
        // Dropped characters do not count towards the 64 bytes.
        let padded = "\u{200B}".repeat(40) + &"x".repeat(MAX_DEVICE_LEN);
        assert_eq!(
            IssueOptions::default().with_device(padded).device(),
            Some("x".repeat(MAX_DEVICE_LEN).as_str())
        );
        // Ordinary non-ASCII text, emoji and their variation selectors stay.
        let options = IssueOptions::default().with_device("华为 Mate 60 ❤\u{FE0F}");
        assert_eq!(options.device(), Some("华为 Mate 60 ❤\u{FE0F}"));
    }
}
