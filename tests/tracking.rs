//! The tracked validation cache (`CachedTokenStore::tracking`) on a real Redis of each
//! test's own: a change by another store instance (another server) is refused here
//! within 50 ms, pushed by Redis; killing the tracking connection, freezing Redis
//! (`DEBUG SLEEP`, SIGSTOP) and restarting it never yield a stale answer, and the cache
//! recovers; a warm cache sends Redis nothing; a flood of unknown tokens leaves live
//! ones cached. (Sentinel's failover and a cluster's primaries: tests/sentinel.rs and
//! tests/cluster.rs.)

mod common;

use std::time::{Duration, Instant};

use common::{
    RedisServer,
    keys::sku,
    stores::{LONG, SHORT_TIMEOUT, issue, redis_with_timeout},
    tracked::answering,
    unique_prefix,
};
use mpauthx::{
    CachedTokenStore, IssueOptions, RedisTokenStore, SignOutReason, Token, TokenStatus, TokenStore,
};

/// How soon a change by another server must be refused here.
const PROPAGATION: Duration = Duration::from_millis(50);

/// How long the tracking may take to come (back) up.
const SETTLE: Duration = Duration::from_secs(10);

/// A tracked cache and a second, plain store (another server) on `server`.
async fn pair(
    server: &RedisServer,
    test: &str,
) -> (CachedTokenStore<RedisTokenStore>, RedisTokenStore) {
    let prefix = unique_prefix(test);
    let tracked =
        CachedTokenStore::tracking(redis_with_timeout(&server.url(), &prefix, SHORT_TIMEOUT).await)
            .await
            .expect("Redis 7 tracks");
    let other = redis_with_timeout(&server.url(), &prefix, SHORT_TIMEOUT).await;
    answering(&tracked, SETTLE).await;
    (tracked, other)
}

/// How many `HGET`s (validations) Redis has run.
fn hgets(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

async fn status(
    store: &impl TokenStore,
    token: &Token,
) -> Result<TokenStatus, mpauthx::StoreError> {
    store.validate(&token.parsed()).await
}

/// Caches `token` as live in `tracked` and checks that a second look costs Redis nothing.
async fn warm(server: &RedisServer, tracked: &CachedTokenStore<RedisTokenStore>, token: &Token) {
    assert!(status(tracked, token).await.unwrap().is_live());
    // The push of the token's own issue may arrive after that first lookup began, and
    // rightly drop its answer: let it arrive, and cache the token again.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(status(tracked, token).await.unwrap().is_live());
    let before = hgets(server);
    let mut lapses = 0;
    for _ in 0..100 {
        lapses += u32::from(!tracked.is_answering());
        assert!(status(tracked, token).await.unwrap().is_live());
    }
    assert_eq!(
        hgets(server),
        before,
        "a warm cache sends Redis no validation (lease lapsed {lapses} times)"
    );
}

/// Polls until `token` is refused here; fails if that takes longer than `PROPAGATION`
/// from `since`, or if it is ever answered live again within the next 200 ms.
async fn refused_within(
    tracked: &CachedTokenStore<RedisTokenStore>,
    token: &Token,
    since: Instant,
) -> Duration {
    let took = common::tracked::refused_within(tracked, token, since, PROPAGATION).await;
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        if let Ok(status) = status(tracked, token).await {
            assert!(!status.is_live(), "live again after being refused");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_another_server_is_refused_within_50_ms() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-changes").await;
    let options = IssueOptions::new(LONG).with_max_tokens_per_user(2);

    // A logout on the other server.
    let token = issue(&other, "o-ann", &options).await;
    warm(&server, &tracked, &token).await;
    assert!(other.revoke(&token.parsed()).await.unwrap());
    refused_within(&tracked, &token, Instant::now()).await;

    // A refresh there: the old token is refused here, the successor accepted.
    let token = issue(&other, "o-ann", &options).await;
    warm(&server, &tracked, &token).await;
    let successor = Token::successor_of(&token.parsed()).unwrap();
    other
        .rotate(&token.parsed(), &successor, &options)
        .await
        .unwrap()
        .unwrap();
    refused_within(&tracked, &token, Instant::now()).await;
    assert!(status(&tracked, &successor).await.unwrap().is_live());

    // A logout everywhere, a device eviction, a sign-out.
    warm(&server, &tracked, &successor).await;
    other.revoke_all(&sku(), "o-ann").await.unwrap();
    refused_within(&tracked, &successor, Instant::now()).await;
    let first = issue(&other, "o-ann", &options).await;
    let _second = issue(&other, "o-ann", &options).await;
    warm(&server, &tracked, &first).await;
    let _third = issue(&other, "o-ann", &options).await;
    refused_within(&tracked, &first, Instant::now()).await;
    let token = issue(&other, "o-ben", &options).await;
    warm(&server, &tracked, &token).await;
    let reason = SignOutReason::new("banned").unwrap();
    other
        .sign_out(&sku(), "o-ben", &reason, LONG)
        .await
        .unwrap();
    refused_within(&tracked, &token, Instant::now()).await;
    assert_eq!(
        status(&tracked, &token).await.unwrap(),
        TokenStatus::SignedOut(reason)
    );

    // An administrator's DEL, and FLUSHALL.
    let token = issue(&other, "o-cat", &options).await;
    warm(&server, &tracked, &token).await;
    let key = server
        .keys()
        .into_iter()
        .find(|k| k.contains("o-cat"))
        .unwrap();
    server.cli(&["DEL", &key]).unwrap();
    refused_within(&tracked, &token, Instant::now()).await;
    let token = issue(&other, "o-dan", &options).await;
    warm(&server, &tracked, &token).await;
    server.cli(&["FLUSHALL"]).unwrap();
    refused_within(&tracked, &token, Instant::now()).await;

    // An unknown token that becomes live (a login taken back restores the device it
    // evicted): the cached "unknown" is dropped too.
    let kept = issue(
        &other,
        "o-eve",
        &IssueOptions::new(LONG).with_max_tokens_per_user(1),
    )
    .await;
    let grace = IssueOptions::new(LONG)
        .with_max_tokens_per_user(1)
        .with_retry_grace(Duration::from_secs(30));
    let evictor = Token::generate(&sku(), "o-eve").unwrap();
    other.issue(&evictor, &grace).await.unwrap();
    assert_eq!(status(&tracked, &kept).await.unwrap(), TokenStatus::Unknown);
    assert_eq!(
        status(&tracked, &kept).await.unwrap(),
        TokenStatus::Unknown,
        "cached"
    );
    other.undo_issue(&evictor.parsed()).await.unwrap();
    let since = Instant::now();
    loop {
        if status(&tracked, &kept).await.unwrap().is_live() {
            break;
        }
        assert!(
            since.elapsed() < PROPAGATION,
            "the restored device is still refused"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expires_from_its_cached_record() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-expiry").await;
    let token = issue(
        &other,
        "o-brief",
        &IssueOptions::new(Duration::from_millis(400)),
    )
    .await;
    assert!(status(&tracked, &token).await.unwrap().is_live());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(!status(&tracked, &token).await.unwrap().is_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_tracking_connection_flushes_and_recovers() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-kill").await;
    for round in 0..3 {
        let token = issue(&other, "o-kill", &IssueOptions::new(LONG)).await;
        warm(&server, &tracked, &token).await;
        // The tracking connections are the ones with the tracking flag (`t`).
        let list = server.cli(&["CLIENT", "LIST"]).unwrap();
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| {
                l.split_whitespace().any(|f| {
                    f.strip_prefix("flags=")
                        .is_some_and(|flags| flags.contains('t'))
                })
            })
            .filter_map(|l| l.split_whitespace().next()?.strip_prefix("id="))
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "one tracking connection, round {round}:\n{list}"
        );
        server.cli(&["CLIENT", "KILL", "ID", ids[0]]).unwrap();
        // Revoked while the tracking is down: never answered live here.
        assert!(other.revoke(&token.parsed()).await.unwrap());
        refused_within(&tracked, &token, Instant::now()).await;
        answering(&tracked, SETTLE).await;
    }
    // Back up: answers come from memory again.
    let token = issue(&other, "o-kill", &IssueOptions::new(LONG)).await;
    warm(&server, &tracked, &token).await;
}

/// While Redis is frozen (by `freeze`, for 2 s at least, undone by `thaw`), cached
/// answers stop once the
/// lease lapses (errors instead: a 503, never a stale 200), a revocation queued during
/// the freeze is honoured as soon as Redis runs it, and the cache comes back.
async fn frozen(
    server: &RedisServer,
    tracked: &CachedTokenStore<RedisTokenStore>,
    other: &RedisTokenStore,
    freeze: impl FnOnce(),
    thaw: impl FnOnce(),
) {
    let token = issue(other, "o-frozen", &IssueOptions::new(LONG)).await;
    warm(server, tracked, &token).await;
    freeze();
    let frozen_at = Instant::now();
    let revoke = {
        let (other, token) = (other.clone(), token.clone());
        // Longer than the freeze: it goes through once Redis runs again.
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match other.revoke(&token.parsed()).await {
                    Ok(revoked) => break revoked,
                    Err(_) if Instant::now() < deadline => {}
                    Err(e) => panic!("the revocation never went through: {e}"),
                }
            }
        })
    };
    // Past the lease: no answer from memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!tracked.is_answering(), "the lease outlived a frozen Redis");
    let during = status(tracked, &token).await;
    assert!(
        during.is_err(),
        "a frozen Redis is an error, not a cached answer: {during:?}"
    );
    assert!(
        frozen_at.elapsed() < Duration::from_millis(1800),
        "the check ran during the freeze"
    );
    thaw();
    assert!(
        revoke.await.unwrap(),
        "the token was live until the revocation"
    );
    refused_within(tracked, &token, Instant::now()).await;
    answering(tracked, SETTLE).await;
    let token = issue(other, "o-frozen", &IssueOptions::new(LONG)).await;
    warm(server, tracked, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_never_yields_a_stale_answer() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-sleep").await;
    let sleeper = std::sync::Mutex::new(None);
    frozen(
        &server,
        &tracked,
        &other,
        || {
            let port = server.port().to_string();
            *sleeper.lock().unwrap() = Some(
                std::process::Command::new("redis-cli")
                    .args(["-p", &port, "DEBUG", "SLEEP", "2"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(50));
        },
        || {
            let _ = sleeper.lock().unwrap().take().unwrap().wait();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_never_yields_a_stale_answer() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-sigstop").await;
    frozen(
        &server,
        &tracked,
        &other,
        || server.freeze(),
        || server.thaw(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_flushes_and_the_cache_recovers() {
    let mut server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-restart").await;
    let token = issue(&other, "o-restart", &IssueOptions::new(LONG)).await;
    warm(&server, &tracked, &token).await;
    server.stop();
    server.restart();
    // The restarted Redis kept nothing: the token is gone, and never answered live.
    let since = Instant::now();
    loop {
        match status(&tracked, &token).await {
            Ok(status) => {
                assert!(
                    !status.is_live(),
                    "a token Redis lost was answered from memory"
                );
                break;
            }
            Err(_) => assert!(since.elapsed() < SETTLE, "no answer after the restart"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answering(&tracked, SETTLE).await;
    // The other server's connection broke too: its first command after the restart
    // may fail, and its pool reconnects.
    let token = Token::generate(&sku(), "o-restart").unwrap();
    let deadline = Instant::now() + SETTLE;
    while let Err(e) = other.issue(&token, &IssueOptions::new(LONG)).await {
        assert!(
            Instant::now() < deadline,
            "the other store never reconnected: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warm(&server, &tracked, &token).await;
    assert!(other.revoke(&token.parsed()).await.unwrap());
    refused_within(&tracked, &token, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_tokens_leaves_live_ones_cached() {
    let server = RedisServer::start();
    let (tracked, other) = pair(&server, "tracking-flood").await;
    let tracked = tracked.with_capacity(100).with_negative_capacity(100);
    assert!(tracked.is_tracking());
    answering(&tracked, SETTLE).await;
    let live: Vec<Token> = {
        let mut tokens = Vec::new();
        for i in 0..50 {
            tokens.push(issue(&other, &format!("o-live-{i}"), &IssueOptions::new(LONG)).await);
        }
        tokens
    };
    for token in &live {
        assert!(status(&tracked, token).await.unwrap().is_live());
    }
    for i in 0..5_000 {
        let made_up = Token::generate(&sku(), &format!("o-flood-{i}")).unwrap();
        assert_eq!(
            status(&tracked, &made_up).await.unwrap(),
            TokenStatus::Unknown
        );
    }
    let before = hgets(&server);
    for token in &live {
        assert!(status(&tracked, token).await.unwrap().is_live());
    }
    assert_eq!(
        hgets(&server),
        before,
        "every live token is still answered from memory"
    );
    assert!(tracked.invalid_len() <= 100, "{}", tracked.invalid_len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_cannot_track_is_refused() {
    let server = RedisServer::start();
    let prefix = unique_prefix("tracking-refused");
    let store = redis_with_timeout(&server.url(), &prefix, SHORT_TIMEOUT).await;
    // An ACL user that may not run CLIENT.
    server
        .cli(&[
            "ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-client",
        ])
        .unwrap();
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port());
    let limited = redis_with_timeout(&url, &prefix, SHORT_TIMEOUT).await;
    let refused = CachedTokenStore::tracking(limited).await;
    assert!(
        refused.is_err(),
        "a Redis that refuses CLIENT TRACKING must be refused"
    );
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("CLIENT TRACKING"), "{message}");
    assert!(!message.contains("pw"), "{message}");
    // The same Redis, allowed to track, works.
    assert!(CachedTokenStore::tracking(store).await.is_ok());
}
