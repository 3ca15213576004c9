//! [`AccessTokenManager`]: one WeChat access token per app, shared by every caller and,
//! with a Redis cache, by every server.
//!
//! WeChat's server API (phone numbers, subscribe messages, QR codes, content checks)
//! takes an `access_token` that the app fetches with its secret. The pain every WeChat
//! SDK reports is servers refreshing it on their own and invalidating each other's. The
//! manager avoids it by construction:
//!
//! - it only ever calls `stable_token` in normal mode, which hands every caller the same
//!   token while it is valid (never `cgi-bin/token`, which ends the previous token);
//! - a refresh is single-flight in the process (one task asks, the others wait or keep
//!   using the current token while it works) and across servers (a lock in the cache
//!   with a bounded wait; the other servers wait for the new token or keep using the
//!   current one while it is valid);
//! - a call WeChat answers with 40001, 42001 or 40014 drops the cached token only if it
//!   is still the one that failed (compare-and-delete), fetches again and retries once;
//!   `force_refresh` is used only when normal mode hands back the very token that
//!   failed, within a daily budget and never twice within 30 s.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use http::StatusCode;

pub use self::{
    cache::{AccessTokenCache, CacheFuture, CachedAccessToken, ForceRefreshBudget},
    memory::MemoryAccessTokenCache,
};
use crate::{
    instruments,
    store::{StoreError, now_millis},
    wechat::{AccessToken, FetchedAccessToken, WeChatClient, WeChatError},
};

mod cache;
mod memory;
#[cfg(feature = "redis")]
mod redis;

/// Fetch anew this long before the token ends: WeChat hands out a new token in normal
/// mode during the last five minutes of the old one.
const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// The longest refresh-ahead accepted.
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(30 * 60);
/// Forced refreshes per day by default: half of WeChat's 20, leaving the rest to people.
const DEFAULT_FORCE_PER_DAY: u32 = 10;
/// WeChat ignores a forced refresh within 30 s of the previous one.
const FORCE_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// When normal mode answers with the token already cached, ask again no sooner.
const MIN_RECHECK: Duration = Duration::from_secs(30);
/// How often a server waiting for another server's refresh looks again (one caller per
/// process polls: the others wait for it).
const POLL: Duration = Duration::from_millis(5);
/// A token is dropped this much before WeChat says it ends, at most (a tenth of its
/// lifetime for short ones), for the time the answer took and clock skew.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Why no access token, or no answer from a call made with one, could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessTokenError {
    /// WeChat refused or failed: fetching the token, or the call itself.
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    /// The cache (Redis) could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccessTokenError {
    /// The same failure for another caller.
    fn replay(&self) -> Self {
        match self {
            Self::WeChat(e) => Self::WeChat(e.clone()),
            Self::Store(e) => Self::Store(e.replay()),
        }
    }

    /// The HTTP status an endpoint should answer with: WeChat's failures as
    /// [`WeChatError::status`], a cache outage 503.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::WeChat(e) => e.status(),
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One WeChat access token per app id, fetched with `stable_token`, kept in an
/// [`AccessTokenCache`] and refreshed ahead of its expiry; cheap to clone.
///
/// - It only ever calls `stable_token` in normal mode, which hands every caller the
///   same token while it is valid (never `cgi-bin/token`, which ends the previous one).
/// - A refresh is single-flight in the process (one task asks; the others wait, or keep
///   using the current token while it works) and across servers (a lock in the cache
///   with a bounded wait; the other servers wait for the new token or keep using the
///   current one while it is valid). Errors are never cached.
/// - A call WeChat answers with 40001, 42001 or 40014 drops the cached token only if it
///   is still the one that failed (compare-and-delete), fetches again and retries once;
///   `force_refresh` is used only when normal mode hands back the very token that
///   failed, within a daily budget and never twice within 30 s.
///
/// ```no_run
/// use mpauthx::{AccessTokenManager, AppSecret, PhoneCode, RedisTokenStore, WeChatClient};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = WeChatClient::new("wx-app-id", AppSecret::new("app-secret"));
/// let store = RedisTokenStore::connect("redis://127.0.0.1/").await?;
/// // Every server on this Redis shares one token.
/// let tokens = AccessTokenManager::redis(client.clone(), &store);
///
/// // A call of your own: retried once with a new token if WeChat refuses the old one.
/// // Send the caller's openid with a phone code, so that another user's is refused.
/// let code = PhoneCode::new("code from getPhoneNumber");
/// let open_id = "the caller's openid";
/// let phone = tokens
///     .call(|token| client.phone_number(&token, &code, Some(open_id)))
///     .await?;
/// # Ok(()) }
/// ```
///
/// `Debug` shows the settings, never a token.
#[derive(Clone)]
pub struct AccessTokenManager {
    inner: Arc<Inner>,
}

struct Inner {
    client: WeChatClient,
    cache: Arc<dyn AccessTokenCache>,
    refresh_ahead: Duration,
    budget: ForceRefreshBudget,
    /// One refresh at a time in this process.
    flight: tokio::sync::Mutex<()>,
    /// How many refreshes have finished here: a caller that saw it change while it
    /// waited for the flight takes that refresh's outcome.
    generation: std::sync::atomic::AtomicU64,
    /// The outcome of the last refresh here, failures included: the callers that waited
    /// for it share it rather than each asking again.
    outcome: std::sync::Mutex<Option<Result<CachedAccessToken, AccessTokenError>>>,
}

impl fmt::Debug for AccessTokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("AccessTokenManager")
            .field("app_id", &inner.client.app_id())
            .field("cache", &inner.cache)
            .field("refresh_ahead", &inner.refresh_ahead)
            .field("force_refresh_budget", &inner.budget)
            .finish_non_exhaustive()
    }
}

impl AccessTokenManager {
    /// A manager for `client`'s app keeping its token in `cache`.
    pub fn new(client: WeChatClient, cache: impl AccessTokenCache) -> Self {
        Self::with_cache(client, Arc::new(cache))
    }

    /// A manager keeping the token in this process: for one server.
    pub fn memory(client: WeChatClient) -> Self {
        Self::new(client, MemoryAccessTokenCache::new())
    }

    /// A manager keeping the token in `store`'s Redis, under its key prefix, shared by
    /// every server on that Redis (standalone, Sentinel or Cluster).
    #[cfg(feature = "redis")]
    pub fn redis(client: WeChatClient, store: &crate::RedisTokenStore) -> Self {
        Self::new(client, store.clone())
    }

    fn with_cache(client: WeChatClient, cache: Arc<dyn AccessTokenCache>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                cache,
                refresh_ahead: DEFAULT_REFRESH_AHEAD,
                budget: ForceRefreshBudget::new(DEFAULT_FORCE_PER_DAY, FORCE_MIN_INTERVAL),
                flight: tokio::sync::Mutex::new(()),
                generation: std::sync::atomic::AtomicU64::new(0),
                outcome: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A copy with `change` made to its settings (and a refresh flight of its own).
    fn settings(self, change: impl FnOnce(&mut Inner)) -> Self {
        let old = &self.inner;
        let mut inner = Inner {
            client: old.client.clone(),
            cache: Arc::clone(&old.cache),
            refresh_ahead: old.refresh_ahead,
            budget: old.budget,
            flight: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            outcome: std::sync::Mutex::new(None),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How long before its expiry the token is fetched anew. Default: 5 minutes, when
    /// WeChat starts handing out the next one; at most 30 minutes.
    #[must_use]
    pub fn with_refresh_ahead(self, ahead: Duration) -> Self {
        self.settings(|inner| inner.refresh_ahead = ahead.min(MAX_REFRESH_AHEAD))
    }

    /// How many forced refreshes a day may be made for this app, counted in the cache
    /// (so across servers with a shared one). Default: 10 of WeChat's 20, leaving the
    /// rest to people; 0 turns forced refreshes off. Never two within 30 s.
    #[must_use]
    pub fn with_force_refresh_budget(self, per_day: u32) -> Self {
        self.settings(|inner| inner.budget.per_day = per_day)
    }

    /// The WeChat client, for calls of your own.
    pub fn client(&self) -> &WeChatClient {
        &self.inner.client
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        self.inner.client.app_id()
    }

    /// A valid access token: the cached one, or a new one fetched for every caller and
    /// server at once.
    ///
    /// # Errors
    /// [`AccessTokenError::Store`] when the cache cannot answer;
    /// [`AccessTokenError::WeChat`] when no token is cached and WeChat gives none
    /// (nothing is cached then), or another server's refresh did not finish in time
    /// ([`WeChatError::AccessTokenUnavailable`]).
    pub async fn access_token(&self) -> Result<AccessToken, AccessTokenError> {
        let now = now_millis();
        let current = self.inner.cache.load(self.app_id()).await?;
        match current {
            Some(cached) if cached.is_fresh(now) => return Ok(cached.token),
            // Due for a refresh but working: if a refresh is already running here, keep
            // using it rather than wait.
            Some(cached) if cached.is_live(now) => {
                if let Ok(flight) = self.inner.flight.try_lock() {
                    return self.refresh_in_flight(flight, None).await;
                }
                return Ok(cached.token);
            }
            _ => {}
        }
        self.refresh(None).await
    }

    /// Runs `call` with a valid token. When WeChat refuses the token (the call fails
    /// with [`WeChatError::AccessTokenRejected`]: 40001, 42001 or 40014), the cached
    /// token is dropped if it is still the one that failed, a new one is fetched (see
    /// the type's docs) and `call` runs once more.
    ///
    /// # Errors
    /// As [`access_token`](Self::access_token), and `call`'s own error; a second refusal
    /// of the new token is returned as it is.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, AccessTokenError>
    where
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, WeChatError>>,
    {
        let token = self.access_token().await?;
        match call(token.clone()).await {
            Err(WeChatError::AccessTokenRejected { errcode }) => {
                tracing::info!(
                    app_id = self.app_id(),
                    errcode,
                    "WeChat refused the access_token; fetching a new one"
                );
                self.forget(&token);
                self.inner.cache.remove_if(self.app_id(), &token).await?;
                let fresh = self.refresh(Some(&token)).await?;
                Ok(call(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// Drops the cached token if it is still `token`, so that the next caller fetches
    /// a new one; returns whether it was dropped. For calls of your own that learn of a
    /// refused token other than through [`call`](Self::call).
    ///
    /// # Errors
    /// [`AccessTokenError::Store`] when the cache cannot answer.
    pub async fn invalidate(&self, token: &AccessToken) -> Result<bool, AccessTokenError> {
        self.forget(token);
        Ok(self.inner.cache.remove_if(self.app_id(), token).await?)
    }

    /// A token other than `stale`, fetched unless another caller or server did so
    /// meanwhile.
    async fn refresh(&self, stale: Option<&AccessToken>) -> Result<AccessToken, AccessTokenError> {
        let seen = self.generation();
        let flight = self.inner.flight.lock().await;
        // A refresh finished while this caller waited: its outcome, failures included.
        if self.generation() != seen
            && let Some(outcome) = self.outcome()
        {
            match outcome {
                Ok(record) if usable_now(&record, stale) => return Ok(record.token),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        self.refresh_in_flight(flight, stale).await
    }

    /// [`refresh_locked`](Self::refresh_locked) with the flight held; its outcome is
    /// shared with the callers that wait.
    async fn refresh_in_flight(
        &self,
        _flight: tokio::sync::MutexGuard<'_, ()>,
        stale: Option<&AccessToken>,
    ) -> Result<AccessToken, AccessTokenError> {
        let result = self.refresh_locked(stale).await;
        let shared = match &result {
            Ok(record) => Ok(record.clone()),
            Err(error) => Err(error.replay()),
        };
        *self
            .inner
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(shared);
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        result.map(|record| record.token)
    }

    async fn refresh_locked(
        &self,
        stale: Option<&AccessToken>,
    ) -> Result<CachedAccessToken, AccessTokenError> {
        let app_id = self.app_id();
        let lock_ttl = self.inner.client.total_timeout() * 2 + Duration::from_secs(2);
        let deadline = Instant::now() + lock_ttl + Duration::from_secs(1);
        let owner = lock_owner();
        loop {
            let current = self.usable(stale).await?;
            if let Some(cached) = current.as_ref().filter(|c| c.is_fresh(now_millis())) {
                return Ok(cached.clone());
            }
            if self.inner.cache.try_lock(app_id, &owner, lock_ttl).await? {
                // In a task of its own, so that a caller dropped half-way (a client
                // hanging up, a request timeout) neither wastes the fetch nor leaves the
                // lock held until it expires.
                let (this, stale, owner) = (self.clone(), stale.cloned(), owner.clone());
                let task = tokio::spawn(async move {
                    let fetched = this.fetch_locked(stale.as_ref()).await;
                    if let Err(error) = this.inner.cache.unlock(this.app_id(), &owner).await {
                        tracing::warn!(app_id = this.app_id(), %error, "could not release the access_token refresh lock; it expires");
                    }
                    fetched
                });
                let fetched = task.await.unwrap_or_else(|_| {
                    tracing::error!(app_id, "the access_token refresh task did not complete");
                    Err(WeChatError::Internal.into())
                });
                return match (fetched, current) {
                    (Ok(record), _) => Ok(record),
                    // Errors are never cached; the current token serves while it works.
                    (Err(error), Some(cached)) => {
                        tracing::warn!(app_id, %error, "could not refresh the access_token; using the current one while it is valid");
                        Ok(cached)
                    }
                    (Err(error), None) => Err(error),
                };
            }
            // Another server is refreshing: the current token serves while it works.
            if let Some(cached) = current {
                return Ok(cached);
            }
            if Instant::now() + POLL >= deadline {
                return Err(WeChatError::AccessTokenUnavailable {
                    reason: "another server's refresh of the access_token did not finish in time",
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The cached token if it works now and is not `stale`.
    async fn usable(
        &self,
        stale: Option<&AccessToken>,
    ) -> Result<Option<CachedAccessToken>, AccessTokenError> {
        let now = now_millis();
        Ok(self
            .inner
            .cache
            .load(self.app_id())
            .await?
            .filter(|c| c.is_live(now) && Some(&c.token) != stale))
    }

    /// With the refresh lock held: asks WeChat, forcing a refresh only if normal mode
    /// hands back `stale`, and saves the answer.
    async fn fetch_locked(
        &self,
        stale: Option<&AccessToken>,
    ) -> Result<CachedAccessToken, AccessTokenError> {
        let app_id = self.app_id();
        // Another server may have saved a token between our look and our lock.
        if let Some(cached) = self
            .usable(stale)
            .await?
            .filter(|c| c.is_fresh(now_millis()))
        {
            return Ok(cached);
        }
        let client = &self.inner.client;
        let mut started = now_millis();
        let mut fetched = counted(false, client.stable_token(false).await)?;
        if Some(&fetched.token) == stale {
            let allowed = self
                .inner
                .cache
                .take_force_refresh(app_id, self.inner.budget, now_millis())
                .await?;
            if !allowed {
                tracing::error!(
                    app_id,
                    "WeChat hands back the access_token it refused, and no forced refresh is allowed now"
                );
                return Err(WeChatError::AccessTokenUnavailable {
                    reason: "WeChat hands back the refused access_token and a forced refresh is not allowed now (daily budget spent, or one ran within 30 s)",
                }
                .into());
            }
            tracing::warn!(
                app_id,
                "WeChat handed back the access_token it refused: forcing a refresh"
            );
            started = now_millis();
            fetched = counted(true, client.stable_token(true).await)?;
        }
        let record = self.record(fetched, started);
        self.inner.cache.save(app_id, &record).await?;
        tracing::info!(
            app_id,
            expires_in_secs = (record.expires_at_ms.saturating_sub(started)) / 1000,
            "fetched a WeChat access_token"
        );
        Ok(record)
    }

    fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn outcome(&self) -> Option<Result<CachedAccessToken, AccessTokenError>> {
        let outcome = self
            .inner
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome.as_ref().map(|o| match o {
            Ok(record) => Ok(record.clone()),
            Err(error) => Err(error.replay()),
        })
    }

    /// Forgets the last outcome if it handed out `token`: it was refused.
    fn forget(&self, token: &AccessToken) {
        let mut outcome = self
            .inner
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(&*outcome, Some(Ok(record)) if record.token == *token) {
            *outcome = None;
        }
    }

    /// The record of a token fetched at `started_ms`.
    fn record(&self, fetched: FetchedAccessToken, started_ms: u64) -> CachedAccessToken {
        let lifetime = fetched.expires_in;
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        let expires_at = started_ms + (lifetime - margin).as_millis() as u64;
        let refresh_at = expires_at
            .saturating_sub(self.inner.refresh_ahead.as_millis() as u64)
            .max(now_millis() + MIN_RECHECK.as_millis() as u64);
        CachedAccessToken::new(fetched.token, refresh_at, expires_at)
    }
}

/// Whether `cached` may be handed out now in place of `stale`: fresh, and not it.
fn usable_now(cached: &CachedAccessToken, stale: Option<&AccessToken>) -> bool {
    cached.is_fresh(now_millis()) && Some(&cached.token) != stale
}

/// A name for this attempt's hold on the refresh lock, unique across servers.
fn lock_owner() -> String {
    use rand::TryRng as _;
    let mut bytes = [0u8; 16];
    if rand::rngs::SysRng.try_fill_bytes(&mut bytes).is_err() {
        // Unique enough without the RNG: the lock only keeps refreshes from overlapping.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

/// Counts a fetch from WeChat, forced or not, by its outcome.
fn counted<T>(force: bool, fetched: Result<T, WeChatError>) -> Result<T, WeChatError> {
    let outcome = fetched
        .as_ref()
        .map_or_else(WeChatError::oauth_error, |_| "ok");
    instruments::access_token_refresh(force, outcome);
    fetched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_day: u32) -> ForceRefreshBudget {
        ForceRefreshBudget::new(per_day, FORCE_MIN_INTERVAL)
    }

    #[tokio::test]
    async fn the_memory_budget_counts_per_day_and_spaces_refreshes() {
        let cache = MemoryAccessTokenCache::new();
        let day = 1_796_140_800_000; // 2026-12-01T16:00:00Z: midnight in Beijing.
        let take = |at: u64| cache.take_force_refresh("wx", budget(2), at);
        assert!(take(day).await.unwrap());
        assert!(!take(day + 29_999).await.unwrap(), "within 30 s");
        assert!(take(day + 30_000).await.unwrap());
        assert!(
            !take(day + 90_000).await.unwrap(),
            "the day's budget is spent"
        );
        assert!(take(day + 86_400_000).await.unwrap(), "a new day");
        assert!(
            !take(day + 86_400_000 - 1).await.unwrap(),
            "a clock gone back"
        );
        assert!(
            !cache
                .take_force_refresh("wx", budget(0), day + 10 * 86_400_000)
                .await
                .unwrap()
        );
        assert!(
            cache
                .take_force_refresh("wx-other", budget(1), day)
                .await
                .unwrap(),
            "apps have budgets of their own"
        );
    }

    #[tokio::test]
    async fn memory_locks_and_compare_and_delete() {
        let cache = MemoryAccessTokenCache::new();
        let ttl = Duration::from_secs(5);
        assert!(cache.try_lock("wx", "a", ttl).await.unwrap());
        assert!(!cache.try_lock("wx", "b", ttl).await.unwrap());
        cache.unlock("wx", "b").await.unwrap();
        assert!(
            !cache.try_lock("wx", "b", ttl).await.unwrap(),
            "b never held it"
        );
        cache.unlock("wx", "a").await.unwrap();
        assert!(cache.try_lock("wx", "b", Duration::ZERO).await.unwrap());
        assert!(
            cache.try_lock("wx", "c", ttl).await.unwrap(),
            "an expired lock"
        );

        let old = CachedAccessToken::new(AccessToken::new("old"), 1, 2);
        cache.save("wx", &old).await.unwrap();
        assert!(
            !cache
                .remove_if("wx", &AccessToken::new("new"))
                .await
                .unwrap()
        );
        assert_eq!(cache.load("wx").await.unwrap(), Some(old));
        assert!(
            cache
                .remove_if("wx", &AccessToken::new("old"))
                .await
                .unwrap()
        );
        assert_eq!(cache.load("wx").await.unwrap(), None);
    }

    #[test]
    fn records_refresh_ahead_and_keep_a_margin() {
        let manager =
            AccessTokenManager::memory(WeChatClient::new("wx", crate::wechat::AppSecret::new("s")));
        let now = now_millis();
        let record = manager.record(
            FetchedAccessToken {
                token: AccessToken::new("t"),
                expires_in: Duration::from_secs(7200),
            },
            now,
        );
        assert_eq!(record.expires_at_ms, now + 7_140_000);
        assert_eq!(record.refresh_at_ms, now + 6_840_000);
        // A token WeChat hands back in its last minutes is asked for again no sooner
        // than 30 s later, and never served past its end.
        let short = manager.record(
            FetchedAccessToken {
                token: AccessToken::new("t"),
                expires_in: Duration::from_secs(100),
            },
            now,
        );
        assert_eq!(short.expires_at_ms, now + 90_000);
        assert!(short.refresh_at_ms >= now + 30_000 && short.refresh_at_ms <= short.expires_at_ms);
        let shown = format!("{manager:?}");
        assert!(shown.contains("refresh_ahead"), "{shown}");
    }
}
