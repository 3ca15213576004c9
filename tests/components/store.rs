//! One suite, run against both token stores: they must be interchangeable.

use std::time::Duration;

use mpauthx::{IssueOptions, MemoryTokenStore, RedisTokenStore, Token, TokenStore};

use crate::common::{
    RedisServer,
    keys::sku,
    stores::{LONG, issue, live, own_server, redis, shared_redis},
};

store_suite!(memory, MemoryTokenStore::new());
store_suite!(redis, shared_redis("suite").await);

/// What only the Redis store can show: its key layout and its cost per request.
mod redis_layout {
    use super::*;

    fn total_commands(server: &RedisServer) -> u64 {
        server
            .cli(&["INFO", "stats"])
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_prefixed_hash_tagged_and_hold_no_token() {
        let server = own_server().await;
        let store = redis(&server.url(), "app").await;
        let options = IssueOptions::new(LONG).with_device("iPad");
        let a = issue(&store, "o-alice", &options).await;
        let b = issue(&store, "o-alice", &options).await;

        let c = issue(&store, "o-bob", &options).await;

        // One hash per user, named by prefix and a {sku:openid} Cluster hash tag.
        assert_eq!(server.keys(), ["app:{demo:o-alice}", "app:{demo:o-bob}"]);
        assert_eq!(server.cli(&["TYPE", "app:{demo:o-alice}"]).unwrap(), "hash");
        assert_eq!(server.cli(&["HLEN", "app:{demo:o-alice}"]).unwrap(), "2");
        assert_eq!(server.cli(&["HLEN", "app:{demo:o-bob}"]).unwrap(), "1");

        // Nothing in Redis holds a token or its secret.
        let mut dump = String::new();
        for key in server.keys() {
            dump.push_str(&server.cli(&["HGETALL", &key]).unwrap());
        }
        for token in [&a, &b, &c] {
            let secret = token.expose().rsplit('.').next().unwrap();
            assert!(!dump.contains(secret), "{dump}");
        }
        assert!(dump.contains("|iPad"), "values carry the device: {dump}");

        // Every key expires with its longest-lived token.
        for key in server.keys() {
            let pttl: i64 = server.cli(&["PTTL", &key]).unwrap().parse().unwrap();
            assert!(pttl > 590_000 && pttl <= 600_000, "{key}: {pttl}");
        }

        store.revoke_all(&sku(), "o-alice").await.unwrap();
        assert_eq!(
            server.keys(),
            ["app:{demo:o-bob}"],
            "logout everywhere leaves nothing"
        );
    }

    /// Refreshing fast within the retry grace leaves a tombstone per rotation; a user
    /// keeps at most two per device, so the hash every script reads stays small.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fast_refreshes_keep_the_hash_small() {
        let server = own_server().await;
        let store = redis(&server.url(), "fast").await;
        let options = IssueOptions::new(LONG)
            .with_max_tokens_per_user(2)
            .with_retry_grace(Duration::from_secs(60));
        let mut token = issue(&store, "o-fast", &options).await;
        let other = issue(&store, "o-fast", &options).await;
        for _ in 0..50 {
            let successor = Token::successor_of(&token.parsed()).unwrap();
            store
                .rotate(&token.parsed(), &successor, &options)
                .await
                .unwrap()
                .expect("the current token rotates");
            token = successor;
        }
        let fields: usize = server
            .cli(&["HLEN", "fast:{demo:o-fast}"])
            .unwrap()
            .parse()
            .unwrap();
        assert!(fields <= 2 + 2 * 2, "{fields} fields for 2 devices");
        assert!(live(&store, &token).await);
        assert!(live(&store, &other).await);
        // The newest tombstone is kept: the last rotation can still be retried.
        assert_eq!(store.list(&sku(), "o-fast").await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_tokens_leave_nothing_behind() {
        let server = own_server().await;
        let store = redis(&server.url(), "gone").await;
        issue(
            &store,
            "o-x",
            &IssueOptions::new(Duration::from_millis(200)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(server.keys().is_empty(), "{:?}", server.keys());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validation_is_one_round_trip() {
        let server = own_server().await;
        let store = redis(&server.url(), "rt").await;
        let token = issue(&store, "o-rt", &IssueOptions::new(LONG)).await;
        let unknown = Token::generate(&sku(), "o-rt").unwrap();

        // Two INFO calls with nothing between them measure INFO's own count.
        let idle = total_commands(&server);
        let baseline = total_commands(&server) - idle;

        let before = total_commands(&server);
        for _ in 0..10 {
            assert!(live(&store, &token).await);
            assert!(!live(&store, &unknown).await);
        }
        let spent = total_commands(&server) - before - baseline;
        assert_eq!(spent, 20, "one command per validation, no PING on checkout");
    }

    #[tokio::test]
    async fn rejects_unusable_settings() {
        for prefix in ["", "a{b", "c}"] {
            let result = RedisTokenStore::builder("redis://127.0.0.1:1/")
                .with_key_prefix(prefix)
                .build()
                .await;
            assert!(
                matches!(result, Err(mpauthx::StoreBuildError::InvalidSettings(_))),
                "{prefix:?}"
            );
        }
        let result = RedisTokenStore::builder("not a url").build().await;
        assert!(matches!(
            result,
            Err(mpauthx::StoreBuildError::InvalidSettings(_))
        ));
    }
}
