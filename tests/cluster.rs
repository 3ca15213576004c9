//! The Redis store on a real local Redis Cluster (3 primaries, 3 replicas): the store
//! suite, the key layout across slots, atomicity under concurrency, and a primary's
//! failure and its replica's promotion.

mod common;
#[macro_use]
mod store_suite;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{
    cluster::{HalfMigratedSlot, RedisCluster, cli, cli_asking, key_slot},
    tracked::{answering, refused_within},
    unique_prefix,
};
use mpauthx::{IssueOptions, RedisTokenStore, StoreBuildError, StoreError, Token, TokenStore};
use store_suite::{LONG, issue, live, sku};
use tokio::task::JoinSet;

async fn shared_cluster() -> &'static RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap()
}

async fn cluster_store() -> RedisTokenStore {
    RedisTokenStore::cluster_builder(shared_cluster().await.seeds())
        .with_key_prefix(unique_prefix("suite"))
        .build()
        .await
        .unwrap()
}

store_suite!(cluster, cluster_store().await);

/// `<prefix>:{demo:<open_id>}`, the key the store keeps a user's tokens under.
fn user_key(prefix: &str, open_id: &str) -> String {
    format!("{prefix}:{{demo:{open_id}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_form_names_a_cluster() {
    let cluster = shared_cluster().await;
    let store = RedisTokenStore::builder(cluster.url())
        .with_key_prefix(unique_prefix("url"))
        .build()
        .await
        .unwrap();
    assert!(format!("{store:?}").contains("cluster"), "{store:?}");
    let token = issue(&store, "o-url", &IssueOptions::new(LONG)).await;
    assert!(live(&store, &token).await);
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_tokens_share_one_slot_and_users_spread_over_the_primaries() {
    let cluster = shared_cluster().await;
    let prefix = unique_prefix("slots");
    let store = RedisTokenStore::cluster_builder(cluster.seeds())
        .with_key_prefix(&prefix)
        .build()
        .await
        .unwrap();
    let options = IssueOptions::new(LONG);
    let mut holders = BTreeSet::new();
    for i in 0..24 {
        let open_id = format!("o-slot-{i}");
        for _ in 0..3 {
            issue(&store, &open_id, &options).await;
        }
        let key = user_key(&prefix, &open_id);
        let slot = key_slot(&key);
        let port = cluster.any_running().port();
        // Redis agrees on the slot, and it is the slot of the {sku:openid} tag alone.
        let redis_slot = cli(port, &["CLUSTER", "KEYSLOT", &key]).unwrap();
        assert_eq!(redis_slot, slot.to_string(), "{key}");
        let tag_slot = cli(port, &["CLUSTER", "KEYSLOT", &format!("demo:{open_id}")]).unwrap();
        assert_eq!(tag_slot, redis_slot, "{key}");
        // The user's three tokens are one hash, on the primary that serves the slot.
        let holder = cluster.primary_of_slot(slot);
        assert_eq!(cli(holder, &["HLEN", &key]).unwrap(), "3", "{key}");
        holders.insert(holder);
    }
    assert_eq!(holders.len(), 3, "24 users land on all three primaries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_rotate_and_revoke_stay_atomic_across_the_cluster() {
    let cluster = shared_cluster().await;
    let prefix = unique_prefix("atomic");
    let store = RedisTokenStore::cluster_builder(cluster.seeds())
        .with_key_prefix(&prefix)
        .build()
        .await
        .unwrap();
    // Twelve users, so that every primary serves some of them.
    let users: Vec<String> = (0..12).map(|i| format!("o-atomic-{i}")).collect();
    let primaries: BTreeSet<u16> = users
        .iter()
        .map(|u| cluster.primary_of_slot(key_slot(&user_key(&prefix, u))))
        .collect();
    assert_eq!(primaries.len(), 3, "the users span all primaries");

    // Concurrent issues, all users at once: each keeps exactly its limit.
    let limited = IssueOptions::new(LONG).with_max_tokens_per_user(4);
    let mut tasks = JoinSet::new();
    for user in &users {
        for _ in 0..10 {
            let (store, user, options) = (store.clone(), user.clone(), limited.clone());
            tasks.spawn(async move {
                let token = Token::generate(&sku(), &user).unwrap();
                store.issue(&token, &options).await.unwrap();
                (user, token)
            });
        }
    }
    let mut issued: BTreeMap<String, Vec<Token>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (user, token) = done.unwrap();
        issued.entry(user).or_default().push(token);
    }
    for (user, tokens) in &issued {
        let mut live_count = 0;
        for token in tokens {
            live_count += usize::from(live(&store, token).await);
        }
        assert_eq!(live_count, 4, "{user}");
        assert_eq!(store.list(&sku(), user).await.unwrap().len(), 4, "{user}");
    }

    // Concurrent rotations of one token per user: one winner each.
    let mut tasks = JoinSet::new();
    for user in &users {
        let token = issue(&store, user, &IssueOptions::new(LONG)).await;
        for _ in 0..8 {
            let (store, user, token) = (store.clone(), user.clone(), token.clone());
            tasks.spawn(async move {
                let successor = Token::successor_of(&token.parsed()).unwrap();
                let rotated = store
                    .rotate(&token.parsed(), &successor, &IssueOptions::new(LONG))
                    .await
                    .unwrap();
                (user, rotated.map(|_| successor))
            });
        }
    }
    let mut winners: BTreeMap<String, Vec<Token>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (user, rotated) = done.unwrap();
        let entry = winners.entry(user).or_default();
        entry.extend(rotated);
    }
    assert_eq!(winners.len(), users.len());
    for (user, won) in &winners {
        assert_eq!(won.len(), 1, "{user}: exactly one rotation wins");
        assert!(live(&store, &won[0]).await, "{user}");
    }

    // Concurrent revocations of each winner: exactly one reports it live.
    let mut tasks = JoinSet::new();
    for (user, won) in &winners {
        for _ in 0..6 {
            let (store, user, token) = (store.clone(), user.clone(), won[0].clone());
            tasks.spawn(async move { (user, store.revoke(&token.parsed()).await.unwrap()) });
        }
    }
    let mut revoked: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (user, was_live) = done.unwrap();
        *revoked.entry(user).or_default() += usize::from(was_live);
    }
    assert!(revoked.values().all(|&n| n == 1), "{revoked:?}");
    for (user, won) in &winners {
        assert!(!live(&store, &won[0]).await, "{user}");
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_and_bad_settings_are_rejected() {
    let started = Instant::now();
    let result = RedisTokenStore::cluster_builder(["redis://127.0.0.1:1/"])
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
        RedisTokenStore::cluster_builder(Vec::<String>::new()),
        RedisTokenStore::cluster_builder(["not a url"]),
        RedisTokenStore::builder("redis+cluster://h:1/0"),
        RedisTokenStore::builder("redis+cluster://h:1,,h:2"),
        RedisTokenStore::cluster_builder(["redis://127.0.0.1:1/"]).with_key_prefix("a{b"),
        RedisTokenStore::cluster_builder(["redis://127.0.0.1:1/"]).with_primary_auth(
            None,
            Some("pw"),
            0,
        ),
    ] {
        let described = format!("{settings:?}");
        let result = settings.build().await;
        assert!(
            matches!(result, Err(StoreBuildError::InvalidSettings(_))),
            "{described}: {result:?}"
        );
    }
}

/// What one validation saw during the failover, and when.
enum Seen {
    Live,
    NotLive,
    Failed(StoreError),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_fails_only_its_slots_until_its_replica_takes_over() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let command_timeout = Duration::from_millis(500);
    let store = RedisTokenStore::cluster_builder(cluster.seeds())
        .with_key_prefix("fo")
        .with_command_timeout(command_timeout)
        .build()
        .await
        .unwrap();

    // Users over all slots' primaries, each with a token.
    let options = IssueOptions::new(LONG);
    let mut users = Vec::new();
    for i in 0..150 {
        let open_id = format!("o-fo-{i}");
        let token = issue(&store, &open_id, &options).await;
        let primary = cluster.primary_of_slot(key_slot(&user_key("fo", &open_id)));
        users.push((open_id, primary, token));
    }
    let victim = users[0].1;
    let primaries: BTreeSet<u16> = users.iter().map(|u| u.1).collect();
    assert_eq!(primaries.len(), 3);
    // Every write reached the replicas, so a promoted replica has all tokens.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_replicated(Duration::from_secs(10));
        cluster.kill(victim);
        cluster
    })
    .await
    .unwrap();
    let killed_at = Instant::now();
    let failed_users = users.iter().filter(|u| u.1 == victim).count();
    assert!(failed_users > 20 && failed_users < users.len() - 40);

    // Until every user validates again: validate everyone, every 100 ms.
    let mut failed_slot_errors = 0;
    let mut first_recovery = None;
    let mut slowest_healthy = Duration::ZERO;
    let deadline = killed_at + Duration::from_secs(20);
    loop {
        let mut round = JoinSet::new();
        for (open_id, primary, token) in &users {
            let (store, token) = (store.clone(), token.clone());
            let (open_id, on_victim) = (open_id.clone(), *primary == victim);
            round.spawn(async move {
                let started = Instant::now();
                let seen = match store.validate(&token.parsed()).await {
                    Ok(status) if status.is_live() => Seen::Live,
                    Ok(_) => Seen::NotLive,
                    Err(
                        e @ (StoreError::Unavailable(_)
                        | StoreError::Timeout(_)
                        | StoreError::Protocol(_)),
                    ) => Seen::Failed(e),
                    Err(e) => panic!("{open_id}: {e}"),
                };
                (open_id, on_victim, seen, started.elapsed())
            });
        }
        let mut all_live = true;
        while let Some(done) = round.join_next().await {
            let (open_id, on_victim, seen, took) = done.unwrap();
            match (on_victim, seen) {
                (_, Seen::NotLive) => panic!("{open_id}: a live token reported not live"),
                (false, Seen::Failed(e)) => {
                    panic!("{open_id}: a healthy primary's slot failed after {took:?}: {e}")
                }
                (false, Seen::Live) => slowest_healthy = slowest_healthy.max(took),
                (true, Seen::Failed(_)) => {
                    failed_slot_errors += 1;
                    all_live = false;
                    assert!(took <= command_timeout + Duration::from_millis(300));
                }
                (true, Seen::Live) => {
                    first_recovery.get_or_insert_with(|| killed_at.elapsed());
                }
            }
        }
        if all_live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed slots never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_recovered = killed_at.elapsed();
    assert!(
        failed_slot_errors > 0,
        "the failure was visible to its slots"
    );
    assert!(
        slowest_healthy < command_timeout,
        "healthy slots stayed prompt: {slowest_healthy:?}"
    );

    // The cluster agrees: a replica took over, and new tokens go to it.
    let first_user = users[0].0.clone();
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_state_ok(Duration::from_secs(10));
        let now_serving = cluster.primary_of_slot(key_slot(&user_key("fo", &first_user)));
        assert_ne!(now_serving, victim, "a replica serves the slot");
        cluster
    })
    .await
    .unwrap();
    eprintln!(
        "primary killed with {failed_users} of {} users on it: first of them live again \
         after {:?}, all after {all_recovered:?}; {failed_slot_errors} failed validations; \
         slowest healthy validation {slowest_healthy:?}",
        users.len(),
        first_recovery.expect("recovered"),
    );
    let fresh = issue(&store, &users[0].0, &options).await;
    assert!(live(&store, &fresh).await);
    assert_eq!(store.list(&sku(), &users[0].0).await.unwrap().len(), 2);
}

/// Login throttle counters live on the cluster too: each key on the primary of its own
/// slot, counted atomically there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttle_counts_on_the_cluster() {
    use mpauthx::{Decision, LoginThrottle, RateLimit};

    let cluster = shared_cluster().await;
    let prefix = unique_prefix("throttle");
    let store = RedisTokenStore::cluster_builder(cluster.seeds())
        .with_key_prefix(&prefix)
        .build()
        .await
        .unwrap();
    let limit = RateLimit::new(2, Duration::from_secs(60)).unwrap();
    let throttle = LoginThrottle::new(store).per_user(limit);
    let mut ports = BTreeSet::new();
    for i in 0..12 {
        let user = format!("o-throttle-{i}");
        for _ in 0..2 {
            assert_eq!(
                throttle.check_user("demo", &user).await.unwrap(),
                Decision::Allowed
            );
        }
        assert!(matches!(
            throttle.check_user("demo", &user).await.unwrap(),
            Decision::Limited { .. }
        ));
        let key = format!("{prefix}:throttle:user:demo:{user}");
        let port = cluster.primary_of_slot(key_slot(&key));
        assert!(
            cli(port, &["EXISTS", &key]).unwrap() == "1",
            "{key} is on the primary of its slot"
        );
        ports.insert(port);
    }
    assert!(
        ports.len() > 1,
        "the counters spread over primaries: {ports:?}"
    );
}

/// During a resharding, a script on a migrating slot whose key the owner no longer holds
/// follows `ASK` to the importing node, even when that node never loaded the script:
/// redis-rs then loads it and sends it again, and that retry needs its own `ASKING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_follow_ask_to_a_node_that_never_loaded_them() {
    let cluster = shared_cluster().await;
    let prefix = unique_prefix("ask");
    let store = RedisTokenStore::cluster_builder(cluster.seeds())
        .with_key_prefix(&prefix)
        .build()
        .await
        .unwrap();
    let open_id = "o-ask";
    let key = user_key(&prefix, open_id);
    let slot = key_slot(&key);
    let owner = cluster.primary_of_slot(slot);
    let importing = *cluster
        .primaries()
        .keys()
        .find(|&&port| port != owner)
        .expect("another primary");
    assert_eq!(cli(owner, &["EXISTS", &key]).as_deref(), Some("0"));
    let _migrating = HalfMigratedSlot::start(slot, owner, importing);
    let flush = || assert_eq!(cli(importing, &["SCRIPT", "FLUSH"]).as_deref(), Some("OK"));

    flush();
    let token = Token::generate(&sku(), open_id).unwrap();
    store
        .issue(&token, &IssueOptions::new(LONG))
        .await
        .expect("the first scripted write on the importing node");
    assert_eq!(
        cli_asking(importing, &["HLEN", &key]).as_deref(),
        Some("1"),
        "the token is on the importing node"
    );
    assert!(live(&store, &token).await, "HGET follows ASK too");

    flush();
    assert_eq!(store.list(&sku(), open_id).await.unwrap().len(), 1);
    flush();
    assert_eq!(store.revoke_all(&sku(), open_id).await.unwrap(), 1);
    assert_eq!(
        cli_asking(importing, &["EXISTS", &key]).as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracked_cache_hears_every_primary() {
    let cluster = shared_cluster().await;
    let prefix = unique_prefix("tracked");
    let store = || async {
        RedisTokenStore::cluster_builder(cluster.seeds())
            .with_key_prefix(&prefix)
            .build()
            .await
            .unwrap()
    };
    let tracked = mpauthx::CachedTokenStore::tracking(store().await)
        .await
        .unwrap();
    let other = store().await;
    answering(&tracked, Duration::from_secs(10)).await;
    // One tracking connection per primary (no other test tracks on this cluster).
    let tracking_clients: usize = cluster
        .primaries()
        .keys()
        .map(|port| {
            cli(*port, &["CLIENT", "LIST"])
                .unwrap()
                .lines()
                .filter(|l| {
                    l.contains(" flags=")
                        && l.split(" flags=")
                            .nth(1)
                            .unwrap()
                            .split(' ')
                            .next()
                            .unwrap()
                            .contains('t')
                })
                .count()
        })
        .sum();
    assert_eq!(tracking_clients, cluster.primaries().len());

    // Users on every primary: each revocation by the other store is refused here
    // within 50 ms, pushed by the primary that holds the user.
    let options = IssueOptions::new(LONG);
    let mut by_primary: BTreeMap<u16, Token> = BTreeMap::new();
    for i in 0.. {
        let open_id = format!("o-t{i}");
        let owner = cluster.primary_of_slot(key_slot(&user_key(&prefix, &open_id)));
        if let std::collections::btree_map::Entry::Vacant(slot) = by_primary.entry(owner) {
            slot.insert(issue(&other, &open_id, &options).await);
        }
        if by_primary.len() == cluster.primaries().len() {
            break;
        }
    }
    for token in by_primary.values() {
        assert!(live(&tracked, token).await);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (primary, token) in &by_primary {
        assert!(live(&tracked, token).await);
        assert!(other.revoke(&token.parsed()).await.unwrap());
        let took = refused_within(&tracked, token, Instant::now(), Duration::from_millis(50)).await;
        eprintln!("a revocation on primary {primary} refused here after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracked_cache_follows_a_failover_and_never_answers_stale() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let store = || async {
        RedisTokenStore::cluster_builder(cluster.seeds())
            .with_key_prefix("tfo")
            .with_command_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap()
    };
    let tracked = mpauthx::CachedTokenStore::tracking(store().await)
        .await
        .unwrap();
    let other = store().await;
    answering(&tracked, Duration::from_secs(10)).await;
    let options = IssueOptions::new(LONG);
    let token = issue(&other, "o-tfo", &options).await;
    let victim = cluster.primary_of_slot(key_slot(&user_key("tfo", "o-tfo")));
    assert!(live(&tracked, &token).await);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_replicated(Duration::from_secs(10));
        cluster.kill(victim);
        cluster
    })
    .await
    .unwrap();
    let killed_at = Instant::now();
    // The victim's tracking connection is gone: no answer from memory.
    while tracked.is_answering() {
        assert!(
            killed_at.elapsed() < Duration::from_millis(500),
            "still answering from memory with a primary dead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the replica is promoted, the other store revokes there: never live here
    // after that.
    let deadline = killed_at + Duration::from_secs(30);
    loop {
        match other.revoke(&token.parsed()).await {
            Ok(revoked) => {
                assert!(revoked, "the token was replicated to the promoted replica");
                break;
            }
            Err(_) => assert!(Instant::now() < deadline, "no replica took over"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        match tracked.validate(&token.parsed()).await {
            Ok(status) => {
                assert!(!status.is_live(), "a stale answer after the failover");
                break;
            }
            Err(_) => assert!(Instant::now() < deadline, "no answer after the failover"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new primary is tracked: a revocation there is refused within 50 ms.
    answering(&tracked, Duration::from_secs(20)).await;
    let token = issue(&other, "o-tfo", &options).await;
    assert!(live(&tracked, &token).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(live(&tracked, &token).await);
    assert!(other.revoke(&token.parsed()).await.unwrap());
    refused_within(&tracked, &token, Instant::now(), Duration::from_millis(50)).await;
    drop(cluster);
}
