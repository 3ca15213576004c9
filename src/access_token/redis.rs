//! The access token in Redis, beside the login tokens: one per app id, shared by every
//! server on that Redis.

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use super::cache::{AccessTokenCache, CacheFuture, CachedAccessToken, ForceRefreshBudget};
use crate::{store::RedisTokenStore, wechat::AccessToken};

static LOAD: LazyLock<Script> = LazyLock::new(|| Script::new("return redis.call('GET', KEYS[1])"));
static SAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new("redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1"));
static REMOVE_IF: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("remove_if.lua")));
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0",
    )
});
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
    )
});
static FORCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("force.lua")));

/// Keeps the access token of app `<app id>` at `<prefix>:wechat:{<app id>}:access_token`
/// as `<refresh_at_ms>:<expires_at_ms>:<token>` (expiring with the token), its refresh
/// lock at `…:lock` and its forced-refresh budget at `…:force`. Every operation is one
/// Lua script on one key, so it is atomic and runs on Redis Cluster (the app id is the
/// hash tag: the three keys share a slot). Uses the store's connection and command
/// timeout: while Redis is down, calls that need a new token fail with
/// [`StoreError`](crate::StoreError) (503).
impl AccessTokenCache for RedisTokenStore {
    fn load<'a>(&'a self, app_id: &'a str) -> CacheFuture<'a, Option<CachedAccessToken>> {
        Box::pin(async move {
            let text: Option<String> = self
                .invoke_script_bytes(&LOAD, &key(self, app_id, "access_token"), &[])
                .await?;
            match text.map(|text| decode(&text)) {
                None => Ok(None),
                Some(Some(record)) => Ok(Some(record)),
                // Not this crate's record (an older format, a stray SET): as good as
                // none, so that the next fetch replaces it.
                Some(None) => {
                    tracing::warn!(
                        app_id,
                        "the cached access token is malformed; fetching a new one"
                    );
                    Ok(None)
                }
            }
        })
    }

    fn save<'a>(&'a self, app_id: &'a str, token: &'a CachedAccessToken) -> CacheFuture<'a, ()> {
        Box::pin(async move {
            let now = crate::store::now_millis();
            let ttl = token.expires_at_ms.saturating_sub(now).max(1).to_string();
            let value = encode(token);
            let _: i64 = self
                .invoke_script_bytes(
                    &SAVE,
                    &key(self, app_id, "access_token"),
                    &[value.as_bytes(), ttl.as_bytes()],
                )
                .await?;
            Ok(())
        })
    }

    fn remove_if<'a>(&'a self, app_id: &'a str, token: &'a AccessToken) -> CacheFuture<'a, bool> {
        Box::pin(async move {
            let removed: i64 = self
                .invoke_script_bytes(
                    &REMOVE_IF,
                    &key(self, app_id, "access_token"),
                    &[token.expose_secret().as_bytes()],
                )
                .await?;
            Ok(removed == 1)
        })
    }

    fn try_lock<'a>(
        &'a self,
        app_id: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> CacheFuture<'a, bool> {
        Box::pin(async move {
            let ttl = (ttl.as_millis() as u64).max(1).to_string();
            let taken: i64 = self
                .invoke_script_bytes(
                    &LOCK,
                    &key(self, app_id, "lock"),
                    &[owner.as_bytes(), ttl.as_bytes()],
                )
                .await?;
            Ok(taken == 1)
        })
    }

    fn unlock<'a>(&'a self, app_id: &'a str, owner: &'a str) -> CacheFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .invoke_script_bytes(&UNLOCK, &key(self, app_id, "lock"), &[owner.as_bytes()])
                .await?;
            Ok(())
        })
    }

    fn take_force_refresh<'a>(
        &'a self,
        app_id: &'a str,
        budget: ForceRefreshBudget,
        now_ms: u64,
    ) -> CacheFuture<'a, bool> {
        Box::pin(async move {
            let args = [
                ForceRefreshBudget::day(now_ms).to_string(),
                now_ms.to_string(),
                budget.per_day.to_string(),
                (budget.min_interval.as_millis() as u64).to_string(),
            ];
            let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
            let taken: i64 = self
                .invoke_script_bytes(&FORCE, &key(self, app_id, "force"), &args)
                .await?;
            Ok(taken == 1)
        })
    }
}

/// `<prefix>:wechat:{<app id>}:<what>`.
fn key(store: &RedisTokenStore, app_id: &str, what: &str) -> String {
    format!("{}:wechat:{{{app_id}}}:{what}", store.key_prefix())
}

/// The text kept in Redis: `<refresh_at_ms>:<expires_at_ms>:<token>`.
fn encode(record: &CachedAccessToken) -> String {
    format!(
        "{}:{}:{}",
        record.refresh_at_ms,
        record.expires_at_ms,
        record.token.expose_secret()
    )
}

/// The inverse of [`encode`]; `None` for anything else.
fn decode(text: &str) -> Option<CachedAccessToken> {
    let mut parts = text.splitn(3, ':');
    let refresh_at_ms = parts.next()?.parse().ok()?;
    let expires_at_ms = parts.next()?.parse().ok()?;
    let token = parts.next().filter(|t| !t.is_empty())?;
    Some(CachedAccessToken::new(
        AccessToken::new(token),
        refresh_at_ms,
        expires_at_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        let record = CachedAccessToken::new(AccessToken::new("ab:cd"), 10, 20);
        assert_eq!(encode(&record), "10:20:ab:cd");
        assert_eq!(decode(&encode(&record)), Some(record));
        for bad in ["", "1:2", "1:2:", "x:2:t", "1:y:t"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
