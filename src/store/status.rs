//! What a store answers about one token: [`TokenStatus`], and the [`SignOutReason`] a
//! token signed out by the service carries.

use std::{fmt, time::Duration};

/// How long a token signed out by [`TokenStore::sign_out`](super::TokenStore::sign_out)
/// keeps saying so, unless told otherwise: one day (or until the token would have
/// expired, if sooner).
#[cfg(feature = "wechat")]
pub(crate) const DEFAULT_SIGN_OUT_NOTICE: Duration = Duration::from_secs(24 * 3600);

/// The longest notice a store keeps: 30 days.
pub(crate) const MAX_SIGN_OUT_NOTICE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest [`SignOutReason`], in bytes.
const MAX_REASON_LEN: usize = 32;

/// What a [`TokenStore`](super::TokenStore) knows of a token: the answer of
/// [`validate`](super::TokenStore::validate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenStatus {
    /// The token is live until `expires_at_ms` (milliseconds since the Unix epoch, on
    /// this machine's clock; see [`TokenStore`](super::TokenStore)'s "Time").
    Live {
        /// When the token expires.
        expires_at_ms: u64,
    },
    /// The store does not hold the token as live: unknown, expired, revoked, rotated
    /// out or evicted.
    Unknown,
    /// The service signed the token's user out for this reason
    /// ([`TokenStore::sign_out`](super::TokenStore::sign_out)); the store says so for
    /// the notice given, then forgets the token.
    SignedOut(SignOutReason),
}

impl TokenStatus {
    /// Whether the token is live.
    ///
    /// ```
    /// # use mpauthx::TokenStatus;
    /// assert!(TokenStatus::Live { expires_at_ms: 1 }.is_live());
    /// assert!(!TokenStatus::Unknown.is_live());
    /// ```
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live { .. })
    }
}

/// Why the service signed a user out, as the client is told: `[a-z0-9_]{1,32}`, such as
/// `password_changed`, `account_suspended` or `admin`. A machine-readable code, never
/// free text: it travels in 401 bodies and is kept beside the user's tokens.
///
/// ```
/// # use mpauthx::SignOutReason;
/// let reason = SignOutReason::new("account_suspended").unwrap();
/// assert_eq!(reason.as_str(), "account_suspended");
/// assert!(SignOutReason::new("Account Suspended").is_none());
/// assert!(SignOutReason::new("").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SignOutReason(Box<str>);

impl SignOutReason {
    /// The reason `code`, if it is 1 to 32 characters of `a-z`, `0-9` and `_`.
    pub fn new(code: &str) -> Option<Self> {
        let well_formed = (1..=MAX_REASON_LEN).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        well_formed.then(|| Self(code.into()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SignOutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignOutReason({:?})", &*self.0)
    }
}

impl fmt::Display for SignOutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a notice lasts at most, in ms: `notice` capped at 30 days, and at least 1 ms.
pub(crate) fn notice_millis(notice: Duration) -> u64 {
    super::millis(notice.min(MAX_SIGN_OUT_NOTICE)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_snake_case_codes() {
        for good in ["a", "password_changed", "x1", &"z".repeat(32)] {
            assert_eq!(SignOutReason::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "A", "a-b", "a b", "é", "a|b", "a\"", &"z".repeat(33)] {
            assert!(SignOutReason::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn notices_are_bounded() {
        assert_eq!(notice_millis(Duration::ZERO), 1);
        assert_eq!(notice_millis(Duration::MAX), 30 * 24 * 3600 * 1000);
        assert_eq!(notice_millis(Duration::from_secs(2)), 2000);
    }
}
