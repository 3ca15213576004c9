//! The shared WeChat access token: single-flight refreshes within a process and across
//! servers on one real Redis, refused tokens, the forced-refresh budget, and failures of
//! `stable_token` (nothing cached), against the simulator over HTTP.

use std::{sync::Arc, time::Duration};

use mpauthx::{
    AccessToken, AccessTokenCache, AccessTokenError, AccessTokenManager, CachedAccessToken,
    ForceRefreshBudget, PhoneCode, RedisTokenStore, WeChatClient, WeChatError,
    testing::WeChatSimulator,
};
use tokio::{sync::Barrier, task::JoinSet};

use crate::common::{
    fake_wechat::{FakeWeChat, Reply},
    keys::{APP_ID, SECRET},
    sim, stores,
};

/// A WeChat client of the test app on `base`, asking a busy WeChat twice, 10 ms apart.
fn client(base: &str) -> WeChatClient {
    WeChatClient::new(APP_ID, mpauthx::AppSecret::new(SECRET))
        .with_base_url(base)
        .with_busy_retry(2, Duration::from_millis(10))
        .with_read_timeout(Duration::from_millis(500))
}

/// Two "servers": two managers over two connections to one Redis, one key prefix.
async fn two_servers(
    test: &str,
    base: &str,
) -> (AccessTokenManager, AccessTokenManager, RedisTokenStore) {
    let url = stores::shared_url().await;
    let prefix = crate::common::unique_prefix(test);
    let (a, b) = (
        stores::redis(&url, &prefix).await,
        stores::redis(&url, &prefix).await,
    );
    (
        AccessTokenManager::redis(client(base), &a),
        AccessTokenManager::redis(client(base), &b),
        a,
    )
}

/// `callers` concurrent `access_token()` calls, split over `managers`, released at once.
async fn stampede(managers: &[AccessTokenManager], callers: usize) -> Vec<AccessToken> {
    let barrier = Arc::new(Barrier::new(callers));
    let mut tasks = JoinSet::new();
    for i in 0..callers {
        let (manager, barrier) = (managers[i % managers.len()].clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            manager.access_token().await.expect("a token")
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_callers_on_two_servers_make_one_stable_token_call() {
    // Tokens that live 2 s: the cache drops them 10 % early, so the second stampede
    // finds the token expired.
    let sim = sim::simulator().with_access_token_ttl(Duration::from_secs(2));
    let base = sim::serve(&sim).await;
    let (a, b, store) = two_servers("at-stampede", &base).await;

    let tokens = stampede(&[a.clone(), b.clone()], 100).await;
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "everyone got the same token"
    );
    assert_eq!(sim.calls().stable_token, 1, "a cold cache: one call");
    assert_eq!(
        sim.current_access_token().as_deref(),
        Some(tokens[0].expose_secret())
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.load(APP_ID).await.unwrap(), None, "expired and gone");
    let fresh = stampede(&[a, b], 100).await;
    assert!(fresh.iter().all(|t| *t == fresh[0]));
    assert_ne!(fresh[0], tokens[0]);
    let calls = sim.calls();
    assert_eq!(
        (calls.stable_token, calls.force_refresh, calls.token),
        (2, 0, 0),
        "an expired token: one more call, never forced, never cgi-bin/token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_due_for_refresh_is_fetched_once_while_callers_keep_using_it() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (a, b, store) = two_servers("at-due", &base).await;
    let first = a.access_token().await.unwrap();
    // Due now, working for another hour.
    let now = now_ms();
    let due = CachedAccessToken::new(first.clone(), now - 1, now + 3_600_000);
    store.save(APP_ID, &due).await.unwrap();

    let tokens = stampede(&[a, b], 100).await;
    assert_eq!(sim.calls().stable_token, 2, "one refresh for all");
    let cached = store.load(APP_ID).await.unwrap().unwrap();
    assert!(cached.is_fresh(now_ms()));
    // WeChat hands back the token it has while it is valid (normal mode).
    assert!(tokens.iter().all(|t| *t == first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_upstream_is_refreshed_once_and_every_call_succeeds() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (a, b, _store) = two_servers("at-revoked", &base).await;
    let old = a.access_token().await.unwrap();
    sim.revoke_access_tokens();

    let codes: Vec<_> = (0..40)
        .map(|i| sim.phone_code(&format!("user-{i}"), "13800138000").unwrap())
        .collect();
    let barrier = Arc::new(Barrier::new(codes.len()));
    let mut tasks = JoinSet::new();
    for (i, code) in codes.into_iter().enumerate() {
        let manager = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            let client = manager.client().clone();
            let code = PhoneCode::new(code.code);
            manager
                .call(|token| client.phone_number(&token, &code, None))
                .await
        });
    }
    for result in tasks.join_all().await {
        assert_eq!(
            result.expect("the call succeeds").pure_phone_number,
            "13800138000"
        );
    }
    let calls = sim.calls();
    assert_eq!(
        (calls.stable_token, calls.force_refresh),
        (2, 0),
        "one refresh after the revocation, not forced"
    );
    assert_ne!(a.access_token().await.unwrap(), old);
    // Each code was tried at most twice: once with the dead token, once with the new.
    assert!((40..=80).contains(&calls.phone_number), "{calls:?}");
}

#[tokio::test]
async fn force_refresh_only_for_a_handed_back_token_and_within_its_budget() {
    let sim = sim::simulator();
    sim.serve_revoked_tokens(true);
    let base = sim::serve(&sim).await;
    let (a, b, _store) = two_servers("at-force", &base).await;
    let (a, b) = (
        a.with_force_refresh_budget(1),
        b.with_force_refresh_budget(1),
    );
    let phone = |manager: &AccessTokenManager, user: &str| {
        let manager = manager.clone();
        let code = PhoneCode::new(sim.phone_code(user, "13800138000").unwrap().code);
        async move {
            let client = manager.client().clone();
            manager
                .call(|token| client.phone_number(&token, &code, None))
                .await
        }
    };
    phone(&a, "u1").await.unwrap();
    sim.revoke_access_tokens();
    // Normal mode hands back the dead token: one forced refresh, and the call works.
    phone(&a, "u2").await.unwrap();
    assert_eq!(sim.calls().force_refresh, 1);

    // Again, on the other server: the shared budget (1 a day, 30 s apart) is spent.
    sim.revoke_access_tokens();
    let error = phone(&b, "u3").await.unwrap_err();
    assert!(
        matches!(
            error,
            AccessTokenError::WeChat(WeChatError::AccessTokenUnavailable { .. })
        ),
        "{error:?}"
    );
    assert_eq!(error.status(), 503);
    assert_eq!(sim.calls().force_refresh, 1, "no second forced refresh");

    let never = AccessTokenManager::memory(client(&base)).with_force_refresh_budget(0);
    let error = phone(&never, "u4").await.unwrap_err();
    assert_eq!(error.status(), 503);
    assert_eq!(sim.calls().force_refresh, 1);
}

#[tokio::test]
async fn the_redis_budget_counts_per_china_day_and_spaces_refreshes() {
    let store = stores::shared_redis("at-budget").await;
    let budget = ForceRefreshBudget::new(2, Duration::from_secs(30));
    let day = 1_796_140_800_000; // 2026-12-01T16:00:00Z: midnight in Beijing.
    let take = |at: u64| store.take_force_refresh(APP_ID, budget, at);
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
        store
            .take_force_refresh("wx-other", budget, day)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn redis_locks_and_compare_and_delete() {
    let store = stores::shared_redis("at-cas").await;
    let ttl = Duration::from_secs(5);
    assert!(store.try_lock(APP_ID, "a", ttl).await.unwrap());
    assert!(!store.try_lock(APP_ID, "b", ttl).await.unwrap());
    store.unlock(APP_ID, "b").await.unwrap();
    assert!(
        !store.try_lock(APP_ID, "b", ttl).await.unwrap(),
        "b never held it"
    );
    store.unlock(APP_ID, "a").await.unwrap();
    assert!(
        store
            .try_lock(APP_ID, "b", Duration::from_millis(50))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store.try_lock(APP_ID, "c", ttl).await.unwrap(),
        "an expired lock"
    );

    let now = now_ms();
    let old = CachedAccessToken::new(AccessToken::new("old:token"), now + 1000, now + 60_000);
    store.save(APP_ID, &old).await.unwrap();
    assert_eq!(store.load(APP_ID).await.unwrap(), Some(old));
    assert!(
        !store
            .remove_if(APP_ID, &AccessToken::new("token"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_if(APP_ID, &AccessToken::new("new"))
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_if(APP_ID, &AccessToken::new("old:token"))
            .await
            .unwrap()
    );
    assert_eq!(store.load(APP_ID).await.unwrap(), None);
}

/// A WeChat whose `stable_token` answers `reply`.
fn failing_stable_token(reply: Reply) -> FakeWeChat {
    FakeWeChat::start(move |_, _| reply.clone())
}

#[tokio::test]
async fn stable_token_failures_are_answered_and_nothing_is_cached() {
    let cases = [
        (Reply::json("<html>"), 502, "invalid_response"),
        (
            Reply::json(r#"{"access_token":"","expires_in":7200}"#),
            502,
            "invalid_response",
        ),
        (
            Reply::json(r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#),
            500,
            "app_misconfigured",
        ),
        (
            Reply::json(r#"{"errcode":40164,"errmsg":"invalid ip"}"#),
            500,
            "app_misconfigured",
        ),
        (
            Reply::json(r#"{"errcode":-1,"errmsg":"busy"}"#),
            503,
            "wechat_busy",
        ),
        (
            Reply::json(r#"{"errcode":45009,"errmsg":"quota"}"#),
            503,
            "access_token_unavailable",
        ),
        (
            Reply::json("{}").with_status(502),
            502,
            "upstream_http_status",
        ),
        (
            Reply::json("{}").with_delay(Duration::from_millis(1500)),
            504,
            "upstream_timeout",
        ),
    ];
    let store = stores::shared_redis("at-failing").await;
    for (reply, status, error) in cases {
        let fake = failing_stable_token(reply);
        let manager = AccessTokenManager::redis(client(&fake.base_url()), &store);
        let code = PhoneCode::new("pc-1");
        let client = manager.client().clone();
        let failed = manager
            .call(|token| client.phone_number(&token, &code, None))
            .await
            .unwrap_err();
        let AccessTokenError::WeChat(wechat) = &failed else {
            panic!("{failed:?}");
        };
        assert_eq!(
            (failed.status().as_u16(), wechat.oauth_error()),
            (status, error),
            "{failed:?}"
        );
        assert_eq!(store.load(APP_ID).await.unwrap(), None, "nothing cached");
        assert!(
            fake.requests()
                .iter()
                .all(|r| r.path.ends_with("/cgi-bin/stable_token")),
            "the phone endpoint is never called without a token"
        );
    }
}

#[tokio::test]
async fn the_lock_is_given_back_after_a_failed_refresh() {
    let store = stores::shared_redis("at-unlock").await;
    let fake = failing_stable_token(Reply::json(r#"{"errcode":-1,"errmsg":"busy"}"#));
    let manager = AccessTokenManager::redis(client(&fake.base_url()), &store);
    assert!(manager.access_token().await.is_err());
    assert!(
        store
            .try_lock(APP_ID, "next", Duration::from_secs(1))
            .await
            .unwrap(),
        "the failed refresher released its lock"
    );
}

#[tokio::test]
async fn a_working_token_serves_while_wechat_cannot_refresh_it() {
    let store = stores::shared_redis("at-serve-current").await;
    let now = now_ms();
    let current = CachedAccessToken::new(AccessToken::new("still-good"), now - 1, now + 60_000);
    store.save(APP_ID, &current).await.unwrap();
    let fake = failing_stable_token(Reply::json(r#"{"errcode":-1,"errmsg":"busy"}"#));
    let manager = AccessTokenManager::redis(client(&fake.base_url()), &store);
    assert_eq!(
        manager.access_token().await.unwrap().expose_secret(),
        "still-good"
    );
    assert!(!fake.requests().is_empty(), "a refresh was tried");
    assert_eq!(
        store.load(APP_ID).await.unwrap(),
        Some(current),
        "the failure cached nothing"
    );
}

#[tokio::test]
async fn the_legacy_token_endpoint_is_never_called() {
    let sim: WeChatSimulator = sim::simulator();
    let base = sim::serve(&sim).await;
    let manager = AccessTokenManager::memory(client(&base));
    let token = manager.access_token().await.unwrap();
    assert_eq!(sim.check_access_token(token.expose_secret()), Ok(()));
    assert_eq!(sim.calls().token, 0);
    assert!(!format!("{manager:?}").contains(token.expose_secret()));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn an_invalidated_token_is_not_handed_out_again() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (a, _b, _store) = two_servers("at-invalidate", &base).await;
    let old = a.access_token().await.unwrap();
    sim.revoke_access_tokens();
    assert!(a.invalidate(&old).await.unwrap());
    let fresh = a.access_token().await.unwrap();
    assert_ne!(fresh, old, "the invalidated token must not come back");
    assert_eq!(sim.check_access_token(fresh.expose_secret()), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_a_failed_refresh_instead_of_repeating_it() {
    let fake = FakeWeChat::start(|_, _| {
        Reply::json(r#"{"errcode":-1,"errmsg":"busy"}"#).with_delay(Duration::from_millis(150))
    });
    let manager = AccessTokenManager::memory(client(&fake.base_url()));
    let started = std::time::Instant::now();
    let failures = stampede_results(&manager, 10).await;
    assert!(
        failures
            .iter()
            .all(|r| matches!(r, Err(e) if e.status() == 503))
    );
    // One refresh (two attempts: the client asks a busy WeChat twice), shared by all.
    assert_eq!(fake.requests().len(), 2, "{:?}", fake.requests().len());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// `callers` concurrent `access_token()` calls on one manager, released at once.
async fn stampede_results(
    manager: &AccessTokenManager,
    callers: usize,
) -> Vec<Result<AccessToken, AccessTokenError>> {
    let barrier = Arc::new(Barrier::new(callers));
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let (manager, barrier) = (manager.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            manager.access_token().await
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn a_refresh_whose_caller_gave_up_still_lands_and_releases_its_lock() {
    let store = stores::shared_redis("at-cancelled").await;
    let fake = FakeWeChat::start(|_, _| {
        Reply::json(r#"{"access_token":"AT-slow-1","expires_in":7200}"#)
            .with_delay(Duration::from_millis(300))
    });
    let manager = AccessTokenManager::redis(client(&fake.base_url()), &store);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), manager.access_token()).await;
    assert!(gave_up.is_err(), "the caller gave up");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cached = store.load(APP_ID).await.unwrap().expect("the fetch landed");
    assert_eq!(cached.token.expose_secret(), "AT-slow-1");
    assert!(
        store
            .try_lock(APP_ID, "next", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert_eq!(fake.requests().len(), 1);
}
