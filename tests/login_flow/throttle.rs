//! Login throttling through the authorize handler: per client, per user, on both
//! limiters (in memory and in a real Redis), with a fake WeChat that counts its calls.

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    http::{Request, StatusCode, header::RETRY_AFTER},
};
use mpauthx::{
    Decision, Error, LoginThrottle, MemoryRateLimiter, MemoryTokenStore, RateLimit, RateLimiter,
    RedisTokenStore, TokenStore,
};
use serde_json::{Value, json};

use crate::common::{
    RedisServer,
    fake_wechat::{FakeWeChat, wechat_by_code},
    keys::{SKU, sku},
    login::Fixture,
    stores::{dedicated, redis, shared_redis},
    unique_prefix,
};

fn limit(max: u32, period: Duration) -> RateLimit {
    RateLimit::new(max, period).unwrap()
}

/// Names the client by the `x-client` header, as a reverse proxy's header would.
fn by_header(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The login fixture with `throttle`, against a WeChat that logs in `<user>` for every
/// code `<user>-<anything>`.
async fn service<T: TokenStore>(tokens: T, throttle: LoginThrottle) -> Fixture<T, FakeWeChat> {
    Fixture::with_throttle(tokens, wechat_by_code(), throttle).await
}

impl<T: TokenStore> Fixture<T> {
    /// Logs `user` in from `client`: the status, `Retry-After` and the JSON body.
    async fn login_from(&self, client: &str, user: &str) -> (StatusCode, Option<u64>, Value) {
        self.post_from(
            client,
            &json!({ "code": format!("{user}-{}", rand_suffix()) }).to_string(),
        )
        .await
    }

    async fn post_from(&self, client: &str, body: &str) -> (StatusCode, Option<u64>, Value) {
        let request = Request::post("/auth/authorize")
            .header("content-type", "application/json")
            .header("x-client", client)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let answer = self.send(request).await;
        let retry_after = answer.header(RETRY_AFTER).map(|v| v.parse().unwrap());
        (answer.status, retry_after, answer.json())
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn assert_throttled(answer: &(StatusCode, Option<u64>, Value), max_wait_secs: u64) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["code"], 6012);
    let retry_after = retry_after.expect("a 429 carries Retry-After");
    assert!(
        (1..=max_wait_secs).contains(&retry_after),
        "Retry-After {retry_after} not in 1..={max_wait_secs}"
    );
}

/// Per client: a burst of `max`, then 429 without asking WeChat; other clients unaffected.
async fn per_client_limit<T: TokenStore, L: RateLimiter>(tokens: T, limiter: L) {
    let throttle =
        LoginThrottle::new(limiter).per_client(limit(3, Duration::from_secs(60)), by_header);
    let service = service(tokens, throttle).await;
    for i in 0..3 {
        let (status, _, body) = service.login_from("10.0.0.1", &format!("u{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = service.login_from("10.0.0.1", "u9").await;
    // The steady rate is one login per 20 s.
    assert_throttled(&refused, 20);
    assert_eq!(
        service.wechat_calls(),
        3,
        "a throttled login never reaches WeChat"
    );
    let (status, _, _) = service.login_from("10.0.0.2", "u9").await;
    assert_eq!(status, StatusCode::OK, "another client is counted apart");
}

#[tokio::test]
async fn per_client_limit_in_memory() {
    per_client_limit(MemoryTokenStore::new(), MemoryRateLimiter::new()).await;
}

#[tokio::test]
async fn per_client_limit_in_redis() {
    let store = shared_redis("per_client").await;
    per_client_limit(store.clone(), store).await;
}

/// Per user: the same user from many clients is capped, and a throttled login issues no
/// token.
async fn per_user_limit<T: TokenStore, L: RateLimiter>(tokens: T, limiter: L) {
    let throttle = LoginThrottle::new(limiter).per_user(limit(2, Duration::from_secs(60)));
    let service = service(tokens.clone(), throttle).await;
    for client in ["a", "b"] {
        let (status, _, body) = service.login_from(client, "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = service.login_from("c", "alice").await;
    assert_throttled(&refused, 30);
    let live = tokens.list(&sku(), "alice").await.unwrap();
    assert_eq!(live.len(), 2, "the throttled login issued no token");
    let (status, _, _) = service.login_from("c", "bob").await;
    assert_eq!(status, StatusCode::OK, "another user is counted apart");
}

#[tokio::test]
async fn per_user_limit_in_memory() {
    per_user_limit(MemoryTokenStore::new(), MemoryRateLimiter::new()).await;
}

#[tokio::test]
async fn per_user_limit_in_redis() {
    let store = shared_redis("per_user").await;
    per_user_limit(store.clone(), store).await;
}

#[tokio::test]
async fn malformed_requests_do_not_count() {
    let throttle = LoginThrottle::new(MemoryRateLimiter::new())
        .per_client(limit(1, Duration::from_secs(60)), by_header);
    let service = service(MemoryTokenStore::new(), throttle).await;
    for body in ["not json", "{}", r#"{"code": ""}"#] {
        let (status, _, _) = service.post_from("10.0.0.3", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _, body) = service.login_from("10.0.0.3", "u1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn requests_without_a_client_key_are_not_limited_per_client() {
    let throttle = LoginThrottle::new(MemoryRateLimiter::new())
        .per_client(limit(1, Duration::from_secs(60)), |_| None);
    let service = service(MemoryTokenStore::new(), throttle).await;
    for i in 0..3 {
        let (status, _, body) = service.login_from("ignored", &format!("u{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Two instances of the application sharing one Redis share the counts; the limit
/// refills after `Retry-After`, and the counter expires once refilled.
#[tokio::test]
async fn redis_counts_are_shared_and_refill() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("shared");
    let url = server.url();
    let store = || redis(&url, &prefix);
    let period = Duration::from_millis(1200);
    let throttle =
        |store: RedisTokenStore| LoginThrottle::new(store).per_client(limit(2, period), by_header);
    let (one, two) = (store().await, store().await);
    let first = service(one.clone(), throttle(one)).await;
    let second = service(two.clone(), throttle(two)).await;

    assert_eq!(first.login_from("10.1.0.1", "u1").await.0, StatusCode::OK);
    assert_eq!(second.login_from("10.1.0.1", "u2").await.0, StatusCode::OK);
    let refused = first.login_from("10.1.0.1", "u3").await;
    assert_throttled(&refused, 1);

    // Counted per sku: another mini-program on this Redis counts its own clients.
    let key = format!("{prefix}:throttle:client:{SKU}:10.1.0.1");
    let pttl: i64 = server.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();
    assert!(
        pttl > 0 && pttl <= period.as_millis() as i64,
        "the counter expires once refilled: PTTL {pttl}"
    );

    // One interval (600 ms) later, one more login is allowed.
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(second.login_from("10.1.0.1", "u4").await.0, StatusCode::OK);
    assert_eq!(
        second.login_from("10.1.0.1", "u5").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Concurrent logins of one client never together exceed the limit.
#[tokio::test]
async fn concurrent_logins_respect_the_limit() {
    let store = shared_redis("concurrent").await;
    let throttle =
        LoginThrottle::new(store.clone()).per_client(limit(5, Duration::from_secs(60)), by_header);
    let service = std::sync::Arc::new(service(store, throttle).await);
    let logins = (0..40).map(|i| {
        let service = service.clone();
        tokio::spawn(async move { service.login_from("10.2.0.1", &format!("c{i}")).await.0 })
    });
    let mut ok = 0;
    for login in logins {
        match login.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(service.wechat_calls(), 5);
}

/// While Redis is down a throttled login answers 503, never 200 or 429.
#[tokio::test]
async fn redis_outage_is_503() {
    let (mut server, store, _) = dedicated("throttle_down").await;
    let throttle =
        LoginThrottle::new(store.clone()).per_client(limit(5, Duration::from_secs(60)), by_header);
    let service = service(store, throttle).await;
    server.stop();
    let started = Instant::now();
    let (status, retry_after, body) = service.login_from("10.3.0.1", "u1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after, Some(1));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(service.wechat_calls(), 0);
}

#[tokio::test]
async fn the_library_call_reports_throttled() {
    let limiter = MemoryRateLimiter::new();
    let throttle = LoginThrottle::new(limiter).per_user(limit(1, Duration::from_secs(60)));
    let service = service(MemoryTokenStore::new(), throttle).await;
    let login = |user: &str| mpauthx::AuthorizeRequest::new(format!("{user}-{}", rand_suffix()));
    service.auth.authorize(&login("dora")).await.unwrap();
    match service.auth.authorize(&login("dora")).await {
        Err(Error::Throttled { retry_after }) => {
            assert!(
                retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(60)
            );
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    let throttle = service.auth.login_throttle().unwrap();
    assert_eq!(
        throttle.check_user(SKU, "eve").await.unwrap(),
        Decision::Allowed
    );
}
