//! Configuration values that are checked once, when the application starts.
//!
//! ```
//! use mpauthx::Sku;
//!
//! let sku: Sku = "demo".parse()?;
//! assert_eq!(sku.as_str(), "demo");
//! assert!(Sku::new("has.dot").is_err());
//! # Ok::<(), mpauthx::ConfigError>(())
//! ```

use std::{fmt, str::FromStr, sync::Arc};

/// The longest sku accepted, in bytes.
pub const MAX_SKU_LEN: usize = 32;

/// A configuration value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sku is empty, longer than [`MAX_SKU_LEN`] or has a character outside `[A-Za-z0-9_-]`.
    #[error("sku must be 1 to 32 characters from [A-Za-z0-9_-]")]
    InvalidSku,
    /// The realm has a character that cannot appear in a `WWW-Authenticate` quoted string.
    #[error("realm must be 1 to 64 visible ASCII characters without '\"' or '\\'")]
    InvalidRealm,
}

/// The project a token belongs to (the Node original's `sku`), for example one
/// mini-program among several that share a Redis.
///
/// It is part of every token, so it is restricted to `[A-Za-z0-9_-]{1,32}`: the `.`
/// that separates a token's parts can never appear in it. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sku(Arc<str>);

impl Sku {
    /// Checks and wraps a sku.
    pub fn new(sku: impl AsRef<str>) -> Result<Self, ConfigError> {
        let sku = sku.as_ref();
        if is_token_part(sku, MAX_SKU_LEN) {
            Ok(Self(Arc::from(sku)))
        } else {
            Err(ConfigError::InvalidSku)
        }
    }

    /// The sku as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sku {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Sku {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Sku {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl fmt::Debug for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is 1 to `max` bytes of `[A-Za-z0-9_-]`, the alphabet of skus and openids.
pub(crate) fn is_token_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["demo", "a", "A-b_9", &"x".repeat(MAX_SKU_LEN)] {
            assert_eq!(Sku::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "has.dot",
            "sp ace",
            "é",
            "a|b",
            "{tag}",
            &"x".repeat(MAX_SKU_LEN + 1),
        ] {
            assert_eq!(Sku::new(bad), Err(ConfigError::InvalidSku), "{bad:?}");
        }
    }
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

/// Everything [`MpAuth`](crate::MpAuth) needs to know about the mini-program and its
/// tokens. `Debug` redacts the app secret.
///
/// ```
/// use std::time::Duration;
/// use mpauthx::MpAuthConfig;
///
/// let config = MpAuthConfig::new("wx4f4bc4dec97d474b", "app-secret", "demo")?
///     .with_token_ttl(Duration::from_secs(7 * 24 * 3600))
///     .with_max_tokens_per_user(3);
/// assert!(!format!("{config:?}").contains("app-secret"));
/// # Ok::<(), mpauthx::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct MpAuthConfig {
    pub(crate) app_id: String,
    pub(crate) app_secret: crate::wechat::AppSecret,
    pub(crate) sku: Sku,
    pub(crate) token_ttl: std::time::Duration,
    pub(crate) max_tokens_per_user: u32,
    pub(crate) identity: Identity,
    pub(crate) profile_max_age: Option<std::time::Duration>,
}

impl fmt::Debug for MpAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpAuthConfig")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("sku", &self.sku)
            .field("token_ttl", &self.token_ttl)
            .field("max_tokens_per_user", &self.max_tokens_per_user)
            .field("identity", &self.identity)
            .field("profile_max_age", &self.profile_max_age)
            .finish()
    }
}

impl MpAuthConfig {
    /// The mini-program's app id and secret, and the sku its tokens carry.
    /// Tokens live 72 hours, ten per user; users are named by openid.
    pub fn new(
        app_id: impl Into<String>,
        app_secret: impl Into<String>,
        sku: impl AsRef<str>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            app_id: app_id.into(),
            app_secret: crate::wechat::AppSecret::new(app_secret),
            sku: Sku::new(sku)?,
            token_ttl: crate::store::DEFAULT_TOKEN_TTL,
            max_tokens_per_user: crate::store::DEFAULT_MAX_TOKENS_PER_USER,
            identity: Identity::OpenId,
            profile_max_age: None,
        })
    }

    /// How long a token lives. Default: 72 hours.
    pub fn with_token_ttl(mut self, ttl: std::time::Duration) -> Self {
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
    pub fn with_profile_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.profile_max_age = Some(max_age);
        self
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The sku.
    pub fn sku(&self) -> &Sku {
        &self.sku
    }

    /// How a token is issued under this configuration.
    pub fn issue_options(&self) -> crate::store::IssueOptions {
        crate::store::IssueOptions::new(self.token_ttl)
            .with_max_tokens_per_user(self.max_tokens_per_user)
    }
}
