//! [`AccessTokenCache`]: where the access token lives between calls, and the locks and
//! budget that let many servers share it.

use std::{fmt, future::Future, pin::Pin, time::Duration};

use crate::{store::StoreError, wechat::AccessToken};

/// The future of an [`AccessTokenCache`] call: boxed, as these calls are far from the
/// hot path (once per token lifetime, not per request).
pub type CacheFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An access token as it is kept: the token, when to fetch anew, and when it ends.
/// Times are milliseconds since the Unix epoch on the application server's clock.
/// `Debug` redacts the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedAccessToken {
    /// The token.
    pub token: AccessToken,
    /// From this time on the next caller asks WeChat again (the token stays usable).
    pub refresh_at_ms: u64,
    /// When the token stops working; it is never handed out from then on.
    pub expires_at_ms: u64,
}

impl CachedAccessToken {
    /// A cached token; `refresh_at_ms` is clamped to `expires_at_ms`.
    pub fn new(token: AccessToken, refresh_at_ms: u64, expires_at_ms: u64) -> Self {
        Self {
            token,
            refresh_at_ms: refresh_at_ms.min(expires_at_ms),
            expires_at_ms,
        }
    }

    /// Whether it is still good at `now_ms` without asking WeChat.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.refresh_at_ms
    }

    /// Whether it still works at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// How many forced refreshes (`stable_token` with `force_refresh: true`) may be made,
/// across every server sharing the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForceRefreshBudget {
    /// At most this many per day, the day running midnight to midnight China Standard
    /// Time (UTC+8), as WeChat counts its quota.
    pub per_day: u32,
    /// Never two within this interval (WeChat ignores a second within 30 s).
    pub min_interval: Duration,
}

impl ForceRefreshBudget {
    /// At most `per_day` a day, never two within `min_interval`.
    pub fn new(per_day: u32, min_interval: Duration) -> Self {
        Self {
            per_day,
            min_interval,
        }
    }

    /// The day number of `now_ms` in China Standard Time.
    pub(crate) fn day(now_ms: u64) -> u64 {
        (now_ms / 1000 + 8 * 3600) / 86_400
    }
}

/// Where an [`AccessTokenManager`](super::AccessTokenManager) keeps the app's access
/// token, its refresh lock and its forced-refresh budget.
///
/// [`MemoryAccessTokenCache`](super::MemoryAccessTokenCache) serves one process;
/// [`RedisTokenStore`](crate::RedisTokenStore) implements it for every server on one
/// Redis (standalone, Sentinel or Cluster), under the store's key prefix. Each method is
/// atomic on its own; the manager builds single-flight refreshes from them.
pub trait AccessTokenCache: fmt::Debug + Send + Sync + 'static {
    /// The cached token of `app_id`, if any (expired ones included; the manager checks).
    fn load<'a>(&'a self, app_id: &'a str) -> CacheFuture<'a, Option<CachedAccessToken>>;

    /// Keeps `token` for `app_id` until its expiry, replacing what was there.
    fn save<'a>(&'a self, app_id: &'a str, token: &'a CachedAccessToken) -> CacheFuture<'a, ()>;

    /// Drops the cached token of `app_id` only if it is still `token`
    /// (compare-and-delete); returns whether it was dropped.
    fn remove_if<'a>(&'a self, app_id: &'a str, token: &'a AccessToken) -> CacheFuture<'a, bool>;

    /// Takes the refresh lock of `app_id` for `owner`, for at most `ttl`; `false` if
    /// someone else holds it.
    fn try_lock<'a>(
        &'a self,
        app_id: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> CacheFuture<'a, bool>;

    /// Gives the refresh lock back, if `owner` still holds it.
    fn unlock<'a>(&'a self, app_id: &'a str, owner: &'a str) -> CacheFuture<'a, ()>;

    /// Takes one forced refresh from the budget at `now_ms`; `false` (and nothing
    /// taken) when the day's budget is spent or one was taken within the interval.
    fn take_force_refresh<'a>(
        &'a self,
        app_id: &'a str,
        budget: ForceRefreshBudget,
        now_ms: u64,
    ) -> CacheFuture<'a, bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_times_are_clamped_to_the_expiry() {
        let record = CachedAccessToken::new(AccessToken::new("t"), 30, 20);
        assert_eq!(record.refresh_at_ms, 20);
        assert!(!record.is_fresh(20) && record.is_live(19) && !record.is_live(20));
    }

    #[test]
    fn days_turn_at_midnight_in_china() {
        // 2026-12-01T15:59:59Z is 23:59:59 in Beijing; a second later it is the 2nd.
        let before = 1_796_140_799_000;
        assert_eq!(
            ForceRefreshBudget::day(before) + 1,
            ForceRefreshBudget::day(before + 1000)
        );
    }
}
