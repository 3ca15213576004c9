//! [`MpAuthConfig`]: the mini-program, its tokens and how users are named, checked once
//! when the application starts.
//!
//! ```
//! use mpauthx::MpAuthConfig;
//!
//! let config = MpAuthConfig::new("wx4f4bc4dec97d474b", "app-secret", "demo")?;
//! assert_eq!(config.sku().as_str(), "demo");
//! assert!(MpAuthConfig::new("wx4f4bc4dec97d474b", "app-secret", "has.dot").is_err());
//! # Ok::<(), mpauthx::ConfigError>(())
//! ```

use std::time::Duration;

use crate::{
    store::{DEFAULT_MAX_TOKENS_PER_USER, DEFAULT_TOKEN_TTL, IssueOptions},
    token::Sku,
    wechat::{AppSecret, WeChatClient},
};

/// The default [`MpAuthConfig::with_refresh_grace`]: long enough for a client to retry
/// after a 503, short enough that a stolen, rotated-out token is of little use.
const DEFAULT_REFRESH_GRACE: Duration = Duration::from_secs(10);

/// A configuration value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sku is empty, longer than 32 bytes or has a character outside `[A-Za-z0-9_-]`.
    #[error("sku must be 1 to 32 characters from [A-Za-z0-9_-]")]
    InvalidSku,
    /// The app id is empty, longer than 64 bytes or has a character outside
    /// `[A-Za-z0-9_-]` (WeChat's are `wx` and 16 hex digits): it names the app in routes
    /// and in the user store.
    #[error("app id must be 1 to 64 characters from [A-Za-z0-9_-]")]
    InvalidAppId,
}

/// Which WeChat id names a user: the key of the user row and of their tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Identity {
    /// The openid, unique per user and mini-program. The default.
    #[default]
    OpenId,
    /// The unionid when WeChat returns one, else the openid (the Node original's
    /// behaviour), so that one user is one row across the mini-programs of a company.
    ///
    /// Pitfall: WeChat returns a unionid only once the app is bound to an Open Platform
    /// account (and, for some apps, the user has followed it). A user seen before that is
    /// stored under their openid and appears under a new id afterwards; migrate such rows
    /// (`UserStore::get_by_union_id` helps) before switching an existing app to this mode.
    UnionIdWhenPresent,
}

/// Everything [`MpAuth`](crate::MpAuth) needs to know about the mini-program, its
/// tokens and how to reach WeChat: the app id and secret live here once, in the WeChat
/// client the login flow uses. `Debug` redacts the app secret.
///
/// ```
/// use std::time::Duration;
/// use mpauthx::MpAuthConfig;
///
/// let config = MpAuthConfig::new("wx4f4bc4dec97d474b", "app-secret", "demo")?
///     .with_token_ttl(Duration::from_secs(7 * 24 * 3600))
///     .with_max_tokens_per_user(3)
///     .with_wechat_base_url("http://127.0.0.1:8080")
///     .with_wechat_total_timeout(Duration::from_secs(5));
/// assert!(!format!("{config:?}").contains("app-secret"));
/// # Ok::<(), mpauthx::ConfigError>(())
/// ```
// `Debug` is derived: the WeChat client's redacts the app secret.
#[derive(Clone, Debug)]
pub struct MpAuthConfig {
    wechat: WeChatClient,
    sku: Sku,
    token_ttl: Duration,
    max_tokens_per_user: u32,
    identity: Identity,
    pub(super) profile_max_age: Option<Duration>,
    refresh_grace: Duration,
    max_session_age: Option<Duration>,
}

impl MpAuthConfig {
    /// The mini-program's app id and secret, and the sku its tokens carry.
    /// Tokens live 72 hours, ten per user; users are named by openid.
    pub fn new(
        app_id: impl Into<String>,
        app_secret: impl Into<String>,
        sku: impl AsRef<str>,
    ) -> Result<Self, ConfigError> {
        let app_id = app_id.into();
        let usable = (1..=64).contains(&app_id.len())
            && app_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !usable {
            return Err(ConfigError::InvalidAppId);
        }
        Ok(Self {
            wechat: WeChatClient::new(app_id, AppSecret::new(app_secret)),
            sku: Sku::new(sku).map_err(|_| ConfigError::InvalidSku)?,
            token_ttl: DEFAULT_TOKEN_TTL,
            max_tokens_per_user: DEFAULT_MAX_TOKENS_PER_USER,
            identity: Identity::OpenId,
            profile_max_age: None,
            refresh_grace: DEFAULT_REFRESH_GRACE,
            max_session_age: None,
        })
    }

    /// How long a token lives. Default: 72 hours; at most ten years (longer is cut).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// How many live tokens (devices) one user may hold; logging in on one more device
    /// logs out the oldest. Default: 10.
    pub fn with_max_tokens_per_user(mut self, max: u32) -> Self {
        self.max_tokens_per_user = max;
        self
    }

    /// Which WeChat id names a user. Default: [`Identity::OpenId`]; read the pitfall
    /// of [`Identity::UnionIdWhenPresent`] before changing it.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Rejects encrypted profiles whose watermark is older than `max_age`, so a
    /// captured `encryptedData` cannot be replayed forever. Default: no limit.
    pub fn with_profile_max_age(mut self, max_age: Duration) -> Self {
        self.profile_max_age = Some(max_age);
        self
    }

    /// Sends WeChat API calls to `base_url` instead of `https://api.weixin.qq.com`: a
    /// proxy, or a simulator in tests. Every endpoint hangs under it.
    pub fn with_wechat_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.wechat = self.wechat.with_base_url(base_url);
        self
    }

    /// Bounds connecting to WeChat. Default: 5 s.
    pub fn with_wechat_connect_timeout(mut self, timeout: Duration) -> Self {
        self.wechat = self.wechat.with_connect_timeout(timeout);
        self
    }

    /// Bounds waiting for WeChat's answer, per attempt. Default: 5 s.
    pub fn with_wechat_read_timeout(mut self, timeout: Duration) -> Self {
        self.wechat = self.wechat.with_read_timeout(timeout);
        self
    }

    /// Bounds a whole exchange with WeChat, every retry and backoff included.
    /// Default: 10 s.
    pub fn with_wechat_total_timeout(mut self, timeout: Duration) -> Self {
        self.wechat = self.wechat.with_total_timeout(timeout);
        self
    }

    /// How often a login is tried while WeChat answers "busy" (`-1`), and the first
    /// backoff, doubled each time. Default: 3 attempts, 100 ms.
    pub fn with_wechat_busy_retry(mut self, max_attempts: u32, initial_backoff: Duration) -> Self {
        self.wechat = self.wechat.with_busy_retry(max_attempts, initial_backoff);
        self
    }

    /// How long a refresh or a login whose answer was lost (a store outage answered
    /// 503 after the write) can still be made good, so that an outage never logs a user
    /// out: within it a rotated-out token may refresh once more, ending the successor
    /// it had, and a failed login's evictions are undone. Default: 10 s; at most 60 s;
    /// zero turns it off (see [`IssueOptions::with_retry_grace`] for the tradeoff).
    pub fn with_refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// An absolute session lifetime: a user logs in again `max_age` after their login,
    /// however often they refresh (refreshes keep the login time; past it a refresh is
    /// 401, and no token outlives it). Default: none.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mpauthx::MpAuthConfig;
    /// let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?
    ///     .with_max_session_age(Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), mpauthx::ConfigError>(())
    /// ```
    pub fn with_max_session_age(mut self, max_age: Duration) -> Self {
        self.max_session_age = Some(max_age);
        self
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        self.wechat.app_id()
    }

    /// Which WeChat id names a user.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The WeChat client logins use, for calls of your own with the same app.
    pub fn wechat(&self) -> &WeChatClient {
        &self.wechat
    }

    /// The sku.
    pub fn sku(&self) -> &Sku {
        &self.sku
    }

    /// How a token is issued under this configuration.
    pub fn issue_options(&self) -> IssueOptions {
        let options = IssueOptions::new(self.token_ttl)
            .with_max_tokens_per_user(self.max_tokens_per_user)
            .with_retry_grace(self.refresh_grace);
        match self.max_session_age {
            Some(max_age) => options.with_max_session_age(max_age),
            None => options,
        }
    }
}
