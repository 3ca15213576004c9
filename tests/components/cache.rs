//! `CachedTokenStore` in front of a real Redis: hits never reach Redis, revocations
//! through the wrapper apply at once, revocations by another process within the TTL and
//! not before, unknown tokens fill a bounded table, and store errors are never cached.

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use mpauthx::{
    CachedTokenStore, IssueOptions, MpAuthLayer, StoreError, Token, TokenStatus, TokenStore,
};
use tower::{Layer as _, ServiceExt as _, service_fn};

use crate::common::{
    RedisServer,
    keys::sku,
    stores::{LONG, issue, live, own_server, redis_with_timeout, shared_url},
    unique_prefix,
};

/// The Redis stores' connect and command timeout.
const TIMEOUT: Duration = Duration::from_millis(250);

/// `calls` of `cmdstat_hget` in `INFO commandstats`: how many `HGET`s the server ran.
fn hget_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).expect("INFO answers");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_hget:calls="))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_do_not_reach_redis() {
    let server = own_server().await;
    let store = CachedTokenStore::new(redis_with_timeout(&server.url(), "hits", TIMEOUT).await)
        .with_ttl(LONG);
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let unknown = Token::generate(&sku(), "o-nobody").unwrap();

    let before = hget_calls(&server);
    assert!(live(&store, &token).await);
    assert!(!live(&store, &unknown).await);
    let after_misses = hget_calls(&server);
    assert_eq!(after_misses - before, 2, "each first lookup is one HGET");

    for _ in 0..100 {
        assert!(live(&store, &token).await);
        assert!(!live(&store, &unknown).await);
    }
    assert_eq!(hget_calls(&server) - after_misses, 0, "hits sent no HGET");
    assert_eq!((store.valid_len(), store.invalid_len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_revoke_rotate_and_logout_all_apply_at_once() {
    let prefix = unique_prefix("cache-local");
    let store =
        CachedTokenStore::new(redis_with_timeout(&shared_url().await, &prefix, TIMEOUT).await)
            .with_ttl(Duration::from_secs(60));
    let revoked = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let by_hash = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let rotated = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let logged_out = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let bystander = issue(&store, "o-bob", &IssueOptions::new(LONG)).await;
    for token in [&revoked, &by_hash, &rotated, &logged_out, &bystander] {
        assert!(live(&store, token).await, "cached as live");
    }
    assert_eq!(store.valid_len(), 5);

    assert!(store.revoke(&revoked.parsed()).await.unwrap());
    assert!(!live(&store, &revoked).await, "revoke");

    let hash = by_hash.hash();
    assert!(store.revoke_hash(&sku(), "o-alice", &hash).await.unwrap());
    assert!(!live(&store, &by_hash).await, "revoke_hash");

    let successor = Token::successor_of(&rotated.parsed()).unwrap();
    store
        .rotate(&rotated.parsed(), &successor, &IssueOptions::new(LONG))
        .await
        .unwrap()
        .expect("a live token rotates");
    assert!(!live(&store, &rotated).await, "rotate: the old token");
    assert!(live(&store, &successor).await, "rotate: the new token");

    assert_eq!(store.revoke_all(&sku(), "o-alice").await.unwrap(), 2);
    assert!(!live(&store, &logged_out).await, "revoke_all");
    assert!(!live(&store, &successor).await, "revoke_all: the successor");
    assert!(live(&store, &bystander).await, "another user's token");
}

/// The same through `MpAuthLayer`: the cache is a drop-in store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_layer_a_local_logout_all_is_a_401_at_once() {
    let prefix = unique_prefix("cache-layer");
    let store =
        CachedTokenStore::new(redis_with_timeout(&shared_url().await, &prefix, TIMEOUT).await)
            .with_ttl(LONG);
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let service =
        MpAuthLayer::new(store.clone(), sku()).layer(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let status = |token: &Token| {
        let request = Request::get("/")
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let service = service.clone();
        async move { service.oneshot(request).await.unwrap().status() }
    };
    assert_eq!(status(&token).await, StatusCode::OK);
    assert_eq!(status(&token).await, StatusCode::OK);
    assert_eq!(store.valid_len(), 1);
    store.revoke_all(&sku(), "o-alice").await.unwrap();
    assert_eq!(status(&token).await, StatusCode::UNAUTHORIZED);
}

/// Another process (here a second store without cache, on the same Redis) revokes: this
/// process keeps honouring the token until its cached answer expires, then refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_revocation_applies_within_the_ttl_and_not_before() {
    const TTL: Duration = Duration::from_millis(300);
    const MARGIN: Duration = Duration::from_millis(100);
    let url = shared_url().await;
    let prefix = unique_prefix("cache-remote");
    let remote = redis_with_timeout(&url, &prefix, TIMEOUT).await;
    let cached =
        CachedTokenStore::new(redis_with_timeout(&url, &prefix, TIMEOUT).await).with_ttl(TTL);

    // A loaded machine may take longer than the TTL between two steps, which would make
    // "not before" unobservable: retry with a new token until one run sees it.
    let mut observed = false;
    for _ in 0..5 {
        let token = issue(&remote, "o-alice", &IssueOptions::new(LONG)).await;
        let asked = Instant::now();
        assert!(live(&cached, &token).await);
        let answered = Instant::now();
        assert!(remote.revoke(&token.parsed()).await.unwrap());
        assert!(!live(&remote, &token).await, "revoked in Redis");

        let checked = Instant::now();
        let still_live = live(&cached, &token).await;
        if checked < asked + TTL {
            assert!(still_live, "the cached answer holds until the TTL");
            observed = true;
        }
        tokio::time::sleep_until((answered + TTL + MARGIN).into()).await;
        assert!(!live(&cached, &token).await, "refused once the TTL is over");
        if observed {
            break;
        }
    }
    assert!(observed, "no run checked within the TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_fill_at_most_the_negative_capacity() {
    const CAPACITY: usize = 100;
    let prefix = unique_prefix("cache-flood");
    let store =
        CachedTokenStore::new(redis_with_timeout(&shared_url().await, &prefix, TIMEOUT).await)
            .with_ttl(LONG)
            .with_capacity(CAPACITY)
            .with_negative_capacity(CAPACITY);
    assert_eq!(
        (store.capacity(), store.negative_capacity()),
        (CAPACITY, CAPACITY)
    );
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    assert!(live(&store, &token).await);

    for i in 0..CAPACITY * 10 {
        let unknown = Token::generate(&sku(), &format!("o-flood{i}")).unwrap();
        assert!(!live(&store, &unknown).await);
        assert!(store.invalid_len() <= CAPACITY, "after {} unknown", i + 1);
    }
    assert!(
        store.invalid_len() > CAPACITY / 2,
        "unknown tokens are cached"
    );
    assert_eq!(store.valid_len(), 1, "the flood evicts no live token");
    assert!(store.len() <= 2 * CAPACITY);
}

/// Redis stops answering (SIGSTOP): a token answered before still passes until its TTL
/// is over, then fails like any other; errors are never remembered, so the first lookup
/// after Redis answers again is a real answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_not_cached() {
    const TTL: Duration = Duration::from_secs(1);
    let server = own_server().await;
    let store = CachedTokenStore::new(redis_with_timeout(&server.url(), "outage", TIMEOUT).await)
        .with_ttl(TTL);
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let unknown = Token::generate(&sku(), "o-nobody").unwrap();
    let asked = Instant::now();
    assert!(live(&store, &token).await);

    server.freeze();
    let result = store.validate(&unknown.parsed()).await;
    assert!(
        matches!(result, Err(StoreError::Timeout(_))),
        "an unanswered lookup fails: {result:?}"
    );
    let result = store.validate(&unknown.parsed()).await;
    assert!(result.is_err(), "and fails again, not cached: {result:?}");
    assert_eq!(store.invalid_len(), 0);
    let checked = Instant::now();
    let cached = store.validate(&token.parsed()).await;
    if checked < asked + TTL {
        assert!(
            cached.unwrap().is_live(),
            "the live answer holds until the TTL"
        );
    }

    tokio::time::sleep_until((asked + TTL + Duration::from_millis(50)).into()).await;
    let result = store.validate(&token.parsed()).await;
    assert!(
        result.is_err(),
        "after the TTL the outage shows: {result:?}"
    );

    server.thaw();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        match store.validate(&unknown.parsed()).await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "no answer after the thaw: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer, TokenStatus::Unknown, "the unknown token is unknown");
    assert!(live(&store, &token).await, "the live token is live");
}
