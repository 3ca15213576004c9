//! Token stores for tests: Redis stores on the binary's shared server (each under a
//! prefix of its own) or on a server of the test's own, tokens issued into any store,
//! and a direct view of what Redis holds.

use std::time::Duration;

use mpauthx::{IssueOptions, RedisTokenStore, Sku, Token, TokenStore};

use super::{
    RedisServer,
    keys::{SKU, sku},
    unique_prefix,
};

/// A lifetime no test outlives.
pub const LONG: Duration = Duration::from_secs(600);
/// The connect and command timeout of stores that must fail fast during an outage.
pub const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

/// A fresh token of `open_id` under [`sku`], issued into `store`.
pub async fn issue<S: TokenStore>(store: &S, open_id: &str, options: &IssueOptions) -> Token {
    issue_in(store, &sku(), open_id, options).await
}

/// A fresh token of `open_id` under `sku`, issued into `store`.
pub async fn issue_in<S: TokenStore>(
    store: &S,
    sku: &Sku,
    open_id: &str,
    options: &IssueOptions,
) -> Token {
    let token = Token::generate(sku, open_id).unwrap();
    store.issue(&token, options).await.unwrap();
    token
}

/// Whether `store` holds `token` as live; an answer the store has at hand
/// (`validate_now`) must be the same.
pub async fn live<S: TokenStore>(store: &S, token: &Token) -> bool {
    let now = store.validate_now(&token.parsed()).map(Result::unwrap);
    let status = store.validate(&token.parsed()).await.unwrap();
    if let Some(now) = now {
        assert_eq!(now, status, "validate_now answered otherwise than validate");
    }
    status.is_live()
}

/// A store at `url` under `prefix`.
pub async fn redis(url: &str, prefix: &str) -> RedisTokenStore {
    RedisTokenStore::builder(url)
        .with_key_prefix(prefix)
        .build()
        .await
        .expect("connect to the test redis")
}

/// A store at `url` under `prefix` that gives up connecting, and on each command, after
/// `timeout`.
pub async fn redis_with_timeout(url: &str, prefix: &str, timeout: Duration) -> RedisTokenStore {
    RedisTokenStore::builder(url)
        .with_key_prefix(prefix)
        .with_connect_timeout(timeout)
        .with_command_timeout(timeout)
        .build()
        .await
        .expect("connect to the test redis")
}

/// The URL of the binary's shared server, started (off the runtime's workers) on first use.
pub async fn shared_url() -> String {
    tokio::task::spawn_blocking(|| RedisServer::shared().url())
        .await
        .unwrap()
}

/// A store on the binary's shared server, under a prefix unique to `test`.
pub async fn shared_redis(test: &str) -> RedisTokenStore {
    redis(&shared_url().await, &unique_prefix(test)).await
}

/// A store on the shared server as [`shared_redis`], and a view of its keys.
pub async fn shared_redis_viewed(test: &str) -> (RedisTokenStore, RedisView) {
    let url = shared_url().await;
    let prefix = unique_prefix(test);
    let store = redis(&url, &prefix).await;
    let view = RedisView {
        client: redis::Client::open(url).unwrap(),
        prefix,
    };
    (store, view)
}

/// A server of the test's own, and a store on it with [`SHORT_TIMEOUT`]s so that
/// outages answer fast, under a prefix unique to `test` (returned too).
pub async fn dedicated(test: &str) -> (RedisServer, RedisTokenStore, String) {
    let server = own_server().await;
    let prefix = unique_prefix(test);
    let store = redis_with_timeout(&server.url(), &prefix, SHORT_TIMEOUT).await;
    (server, store, prefix)
}

/// A server of the test's own, started off the runtime's workers.
pub async fn own_server() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
}

/// What a test inspects in Redis, next to the store under test.
pub struct RedisView {
    pub client: redis::Client,
    pub prefix: String,
}

impl RedisView {
    /// The hash of `open_id`'s tokens under [`SKU`].
    pub fn key(&self, open_id: &str) -> String {
        format!("{}:{{{SKU}:{open_id}}}", self.prefix)
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `HLEN` of `open_id`'s hash.
    pub async fn fields(&self, open_id: &str) -> usize {
        redis::cmd("HLEN")
            .arg(self.key(open_id))
            .query_async(&mut self.connection().await)
            .await
            .unwrap()
    }
}
