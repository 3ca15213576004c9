//! [`MemoryAccessTokenCache`]: the access token of a single process.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::cache::{AccessTokenCache, CacheFuture, CachedAccessToken, ForceRefreshBudget};
use crate::wechat::AccessToken;

/// Keeps access tokens in this process: the embedded default. Servers that share one
/// app should share a Redis cache instead
/// ([`AccessTokenManager::redis`](super::AccessTokenManager::redis)): with one memory
/// cache each, every server holds its own copy of the token, which `stable_token`
/// allows, but forced refreshes are budgeted per server.
#[derive(Debug, Default)]
pub struct MemoryAccessTokenCache {
    apps: Mutex<HashMap<String, App>>,
}

#[derive(Default)]
struct App {
    token: Option<CachedAccessToken>,
    lock: Option<(String, Instant)>,
    /// The day of the last forced refresh, how many that day, and when the last was.
    forced: (u64, u32, u64),
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl MemoryAccessTokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, app_id: &str, f: impl FnOnce(&mut App) -> T) -> T {
        // Every update leaves the entry consistent, so a poisoned lock holds nothing torn.
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        f(apps.entry(app_id.to_owned()).or_default())
    }
}

impl AccessTokenCache for MemoryAccessTokenCache {
    fn load<'a>(&'a self, app_id: &'a str) -> CacheFuture<'a, Option<CachedAccessToken>> {
        let token = self.with(app_id, |app| app.token.clone());
        Box::pin(async move { Ok(token) })
    }

    fn save<'a>(&'a self, app_id: &'a str, token: &'a CachedAccessToken) -> CacheFuture<'a, ()> {
        self.with(app_id, |app| app.token = Some(token.clone()));
        Box::pin(async { Ok(()) })
    }

    fn remove_if<'a>(&'a self, app_id: &'a str, token: &'a AccessToken) -> CacheFuture<'a, bool> {
        let removed = self.with(app_id, |app| {
            let same = app.token.as_ref().is_some_and(|t| t.token == *token);
            if same {
                app.token = None;
            }
            same
        });
        Box::pin(async move { Ok(removed) })
    }

    fn try_lock<'a>(
        &'a self,
        app_id: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> CacheFuture<'a, bool> {
        let now = Instant::now();
        let taken = self.with(app_id, |app| match &app.lock {
            Some((_, until)) if *until > now => false,
            _ => {
                app.lock = Some((owner.to_owned(), now + ttl));
                true
            }
        });
        Box::pin(async move { Ok(taken) })
    }

    fn unlock<'a>(&'a self, app_id: &'a str, owner: &'a str) -> CacheFuture<'a, ()> {
        self.with(app_id, |app| {
            if app.lock.as_ref().is_some_and(|(held, _)| held == owner) {
                app.lock = None;
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn take_force_refresh<'a>(
        &'a self,
        app_id: &'a str,
        budget: ForceRefreshBudget,
        now_ms: u64,
    ) -> CacheFuture<'a, bool> {
        let day = ForceRefreshBudget::day(now_ms);
        let taken = self.with(app_id, |app| {
            let (last_day, count, last_ms) = app.forced;
            let count = if last_day == day { count } else { 0 };
            let too_soon = last_ms != 0
                && now_ms.saturating_sub(last_ms) < budget.min_interval.as_millis() as u64;
            if too_soon || count >= budget.per_day {
                return false;
            }
            app.forced = (day, count + 1, now_ms);
            true
        });
        Box::pin(async move { Ok(taken) })
    }
}
