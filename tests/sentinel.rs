//! The Redis store behind Redis Sentinel (a primary, a replica, one Sentinel): the store
//! suite, and following a failover after the primary is killed.

mod common;
#[macro_use]
mod store_suite;

use std::time::{Duration, Instant};

use common::{
    sentinel::{MASTER, SentinelSetup},
    tracked::{answering, refused_within},
    unique_prefix,
};
use mpauthx::{IssueOptions, RedisTokenStore, StoreBuildError, StoreError, Token, TokenStore};
use store_suite::{LONG, issue, live, sku};
use tokio::task::JoinSet;

async fn shared_setup() -> &'static SentinelSetup {
    static SETUP: std::sync::OnceLock<SentinelSetup> = std::sync::OnceLock::new();
    tokio::task::spawn_blocking(|| SETUP.get_or_init(SentinelSetup::start))
        .await
        .unwrap()
}

async fn sentinel_store() -> RedisTokenStore {
    RedisTokenStore::sentinel_builder(shared_setup().await.sentinels(), MASTER)
        .with_key_prefix(unique_prefix("suite"))
        .build()
        .await
        .unwrap()
}

store_suite!(sentinel, sentinel_store().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_form_reaches_the_primary_through_sentinel() {
    let setup = shared_setup().await;
    let prefix = unique_prefix("url");
    let store = RedisTokenStore::builder(setup.url())
        .with_key_prefix(&prefix)
        .build()
        .await
        .unwrap();
    assert!(format!("{store:?}").contains("sentinel"), "{store:?}");
    let token = issue(&store, "o-url", &IssueOptions::new(LONG)).await;
    assert!(live(&store, &token).await);
    // The tokens are on the primary the Sentinel names.
    let key = format!("{prefix}:{{demo:o-url}}");
    assert_eq!(setup.primary().cli(&["HLEN", &key]).unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_masters_are_unavailable_and_bad_settings_are_rejected() {
    let setup = shared_setup().await;
    let started = Instant::now();
    let result = RedisTokenStore::sentinel_builder(setup.sentinels(), "no-such-master")
        .build()
        .await;
    assert!(
        matches!(
            result,
            Err(StoreBuildError::Unreachable(
                StoreError::Unavailable(_) | StoreError::Timeout(_)
            ))
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "fails promptly");

    for settings in [
        RedisTokenStore::builder("redis+sentinel://127.0.0.1:1"),
        RedisTokenStore::builder("redis+sentinel://127.0.0.1:1/m/x"),
        RedisTokenStore::sentinel_builder(setup.sentinels(), ""),
        RedisTokenStore::sentinel_builder(["not a url"], MASTER),
        RedisTokenStore::builder("redis://127.0.0.1:1/").with_primary_auth(None, Some("pw"), 0),
    ] {
        let described = format!("{settings:?}");
        let result = settings.build().await;
        assert!(
            matches!(result, Err(StoreBuildError::InvalidSettings(_))),
            "{described}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_failover_to_the_promoted_replica() {
    let setup = tokio::task::spawn_blocking(SentinelSetup::start)
        .await
        .unwrap();
    let command_timeout = Duration::from_millis(500);
    let store = RedisTokenStore::sentinel_builder(setup.sentinels(), MASTER)
        .with_key_prefix("fo")
        .with_command_timeout(command_timeout)
        .build()
        .await
        .unwrap();
    let options = IssueOptions::new(LONG);
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(issue(&store, &format!("o-fo-{i}"), &options).await);
    }
    let replica_port = setup.replica().port();
    let mut setup = tokio::task::spawn_blocking(move || {
        setup.wait_replicated(Duration::from_secs(10));
        setup
    })
    .await
    .unwrap();
    setup.kill_primary();
    let killed_at = Instant::now();

    // Until every token validates again: validate all of them, every 100 ms.
    let mut failed_validations = 0;
    let deadline = killed_at + Duration::from_secs(30);
    let recovered_after = loop {
        let mut round = JoinSet::new();
        for token in &tokens {
            let (store, token) = (store.clone(), token.clone());
            round.spawn(async move {
                let started = Instant::now();
                (store.validate(&token.parsed()).await, started.elapsed())
            });
        }
        let mut all_live = true;
        while let Some(done) = round.join_next().await {
            let (result, took) = done.unwrap();
            match result {
                Ok(status) if status.is_live() => {}
                Ok(_) => panic!("a live token reported not live"),
                Err(StoreError::Unavailable(_) | StoreError::Timeout(_)) => {
                    failed_validations += 1;
                    all_live = false;
                    assert!(
                        took <= command_timeout + Duration::from_millis(300),
                        "{took:?}"
                    );
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        if all_live {
            break killed_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the store never reached a new primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed_validations > 0, "the failure was visible");

    // The Sentinel promoted the replica, and the store writes there now.
    let setup = tokio::task::spawn_blocking(move || {
        assert_eq!(setup.primary_port_per_sentinel(), Some(replica_port));
        setup
    })
    .await
    .unwrap();
    let fresh = Token::generate(&sku(), "o-fo-0").unwrap();
    store.issue(&fresh, &options).await.unwrap();
    assert!(live(&store, &fresh).await);
    assert_eq!(store.list(&sku(), "o-fo-0").await.unwrap().len(), 2);
    assert_eq!(
        setup.replica().cli(&["HLEN", "fo:{demo:o-fo-0}"]).unwrap(),
        "2",
        "the promoted replica holds the new token"
    );
    eprintln!(
        "primary killed: all {} tokens live again after {recovered_after:?}; \
         {failed_validations} failed validations meanwhile",
        tokens.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracked_cache_follows_a_failover_and_never_answers_stale() {
    let setup = tokio::task::spawn_blocking(SentinelSetup::start)
        .await
        .unwrap();
    let store = || async {
        RedisTokenStore::sentinel_builder(setup.sentinels(), MASTER)
            .with_key_prefix("tracked")
            .with_command_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap()
    };
    let tracked = mpauthx::CachedTokenStore::tracking(store().await)
        .await
        .unwrap();
    let other = store().await;
    answering(&tracked, Duration::from_secs(5)).await;
    let options = IssueOptions::new(LONG);

    // On the first primary: a revocation by the other store is refused here at once.
    let token = issue(&other, "o-tracked", &options).await;
    assert!(live(&tracked, &token).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(live(&tracked, &token).await);
    assert!(other.revoke(&token.parsed()).await.unwrap());
    refused_within(&tracked, &token, Instant::now(), Duration::from_millis(50)).await;

    // A failover: the tracking connection to the old primary is lost, and the cache
    // stops answering from memory.
    let token = issue(&other, "o-failover", &options).await;
    assert!(live(&tracked, &token).await);
    let mut setup = tokio::task::spawn_blocking(move || {
        setup.wait_replicated(Duration::from_secs(10));
        setup
    })
    .await
    .unwrap();
    setup.kill_primary();
    let killed_at = Instant::now();
    while tracked.is_answering() {
        assert!(
            killed_at.elapsed() < Duration::from_millis(500),
            "still answering from memory with the primary dead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the replica is promoted, the other store revokes there: never live here
    // after that, whether the tracking is back yet or not.
    let deadline = killed_at + Duration::from_secs(30);
    loop {
        match other.revoke(&token.parsed()).await {
            Ok(revoked) => {
                assert!(revoked, "the token was replicated to the new primary");
                break;
            }
            Err(_) => assert!(Instant::now() < deadline, "no new primary"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revoked_at = Instant::now();
    loop {
        match tracked.validate(&token.parsed()).await {
            Ok(status) => {
                assert!(!status.is_live(), "a stale answer after the failover");
                break;
            }
            Err(_) => assert!(revoked_at.elapsed() < Duration::from_secs(10)),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The tracking comes back on the new primary, and works there.
    answering(&tracked, Duration::from_secs(10)).await;
    let token = issue(&other, "o-after", &options).await;
    assert!(live(&tracked, &token).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(live(&tracked, &token).await);
    assert!(other.revoke(&token.parsed()).await.unwrap());
    refused_within(&tracked, &token, Instant::now(), Duration::from_millis(50)).await;
    drop(setup);
}
