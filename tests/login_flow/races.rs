//! Races on one user's tokens through `MpAuth`, with the WeChat simulator on a local port,
//! a sqlite file and a real `redis-server`: many concurrent logins under a device limit,
//! many concurrent refreshes of one token, and logout-everywhere racing new logins.
//!
//! After each race the Redis hash is read directly (one `MULTI`: `TIME`, `PTTL`,
//! `PEXPIRETIME`, `HGETALL`) and checked against the tokens the clients received: each
//! field is the raw SHA-256 of a token, each value `<expires ms>|<issued ms>|<device>`.

use std::{collections::HashSet, ops::Deref, time::Duration};

use mpauthx::{
    AuthorizeRequest, Error, MemoryTokenStore, RedisTokenStore, Token, TokenStore,
    testing::WeChatSimulator,
};
use sha2::{Digest as _, Sha256};

use crate::common::{
    fake_wechat::FakeWeChat,
    keys::{APP_ID, SECRET},
    login::{Fixture, config},
    stores::{RedisView, shared_redis_viewed},
};

const USER: &str = "alice";
const LIMIT: u32 = 5;

/// `TIME`, `PTTL`, `PEXPIRETIME` and `HGETALL`, as one `MULTI` answers them.
type Transaction = ((u64, u64), i64, i64, Vec<(Vec<u8>, String)>);

/// The user's hash as read in one transaction.
#[derive(Debug)]
struct HashState {
    /// Redis's clock at the read, in ms.
    now_ms: u64,
    /// `PTTL`: -2 when the key does not exist.
    pttl_ms: i64,
    /// `PEXPIRETIME`: the absolute expiry in ms, -2 when the key does not exist.
    expire_at_ms: i64,
    /// Field (32 raw bytes) and its `expires|issued|device` value.
    fields: Vec<([u8; 32], u64)>,
}

impl RedisView {
    async fn read(&self, open_id: &str) -> HashState {
        let mut conn = self.connection().await;
        let key = self.key(open_id);
        let ((secs, micros), pttl_ms, expire_at_ms, pairs): Transaction = redis::pipe()
            .atomic()
            .cmd("TIME")
            .cmd("PTTL")
            .arg(&key)
            .cmd("PEXPIRETIME")
            .arg(&key)
            .cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let fields = pairs
            .into_iter()
            .map(|(field, value)| {
                let field: [u8; 32] = field.try_into().expect("a field is 32 raw bytes");
                let mut parts = value.splitn(4, '|');
                let expires: u64 = parts.next().unwrap().parse().expect("expires ms");
                let _issued: u64 = parts.next().unwrap().parse().expect("issued ms");
                let _started: u64 = parts.next().unwrap().parse().expect("started ms");
                assert!(parts.next().is_some(), "no device part in {value:?}");
                (field, expires)
            })
            .collect();
        HashState {
            now_ms: secs * 1000 + micros / 1000,
            pttl_ms,
            expire_at_ms,
            fields,
        }
    }
}

impl HashState {
    /// The invariants of a user's hash, whatever raced on it: at most `LIMIT` fields,
    /// none expired, and the key outlives its longest-lived field.
    #[track_caller]
    fn assert_consistent(&self) {
        assert!(self.fields.len() <= LIMIT as usize, "{self:?}");
        if self.fields.is_empty() {
            assert_eq!((self.pttl_ms, self.expire_at_ms), (-2, -2), "{self:?}");
            return;
        }
        let furthest = self.fields.iter().map(|(_, e)| *e).max().unwrap();
        for (_, expires) in &self.fields {
            assert!(*expires > self.now_ms, "an expired field stayed: {self:?}");
        }
        let remaining = i64::try_from(furthest - self.now_ms).unwrap();
        assert!(
            self.pttl_ms >= remaining,
            "the key dies before its longest-lived token: {self:?}"
        );
        assert!(
            self.expire_at_ms >= i64::try_from(furthest).unwrap(),
            "{self:?}"
        );
    }

    fn field_set(&self) -> HashSet<[u8; 32]> {
        self.fields.iter().map(|(f, _)| *f).collect()
    }
}

/// SHA-256 of the token text, computed here rather than by the crate.
fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The login fixture against the WeChat simulator, under a device limit of `LIMIT`, and
/// (on Redis) a view of the store's keys.
struct Race<T> {
    fx: Fixture<T>,
    sim: WeChatSimulator,
    redis: Option<RedisView>,
}

impl<T> Deref for Race<T> {
    type Target = Fixture<T>;

    fn deref(&self) -> &Fixture<T> {
        &self.fx
    }
}

impl<T: TokenStore> Race<T> {
    async fn new(tokens: T, redis: Option<RedisView>) -> Self {
        let sim = WeChatSimulator::new(APP_ID, SECRET);
        // Hundreds of logins at once on a small machine: WeChat gets the client's default
        // read timeout, not the fixture's short one.
        let config = config()
            .with_max_tokens_per_user(LIMIT)
            .with_wechat_read_timeout(Duration::from_secs(5));
        let fx = Fixture::with_config(tokens, FakeWeChat::simulating(&sim), config).await;
        Self { fx, sim, redis }
    }

    fn open_id(&self) -> String {
        self.sim.open_id(USER)
    }

    /// Rows in the user table, and the test user's, counted through a connection of our own.
    fn rows(&self) -> (i64, i64) {
        (self.fx.all_rows(), self.fx.rows(&self.open_id()))
    }

    /// A fresh login code for the test user, as `wx.login()` would mint.
    fn request(&self) -> AuthorizeRequest {
        self.sim.login(USER).unwrap().authorize_request()
    }

    /// The hashes of the tokens among `tokens` that validate.
    async fn valid(&self, tokens: &[String]) -> HashSet<[u8; 32]> {
        let mut valid = HashSet::new();
        for token in tokens {
            if self.auth.is_token_valid(token).await.unwrap() {
                valid.insert(sha256(token));
            }
        }
        valid
    }

    /// The hashes `list` reports for the test user.
    async fn listed(&self) -> HashSet<[u8; 32]> {
        let listed = self.fx.live(&self.open_id()).await;
        listed.iter().map(|info| *info.hash.as_bytes()).collect()
    }
}

async fn redis_fixture(test: &str) -> Race<RedisTokenStore> {
    let (tokens, view) = shared_redis_viewed(test).await;
    Race::new(tokens, Some(view)).await
}

async fn memory_fixture() -> Race<MemoryTokenStore> {
    Race::new(MemoryTokenStore::new(), None).await
}

// ---------------------------------------------------------------------------------------
// 1. Concurrent logins of one user under a device limit
// ---------------------------------------------------------------------------------------

const LOGINS: usize = 200;

async fn concurrent_logins_keep_the_device_limit<T: TokenStore>(fx: Race<T>) {
    let requests: Vec<_> = (0..LOGINS).map(|_| fx.request()).collect();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let auth = fx.auth.clone();
            tokio::spawn(async move { auth.authorize(&request).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        let authorized = task.await.unwrap().expect("every login succeeds");
        assert_eq!(authorized.token.open_id(), fx.open_id());
        assert_eq!(
            sha256(authorized.token.expose()),
            *authorized.token.hash().as_bytes()
        );
        tokens.push(authorized.token.into_exposed());
    }

    let valid = fx.valid(&tokens).await;
    assert_eq!(valid.len(), LIMIT as usize, "exactly the limit stays live");
    let listed = fx.listed().await;
    assert_eq!(listed, valid, "list shows exactly the tokens that validate");
    if let Some(redis) = &fx.redis {
        let state = redis.read(&fx.open_id()).await;
        state.assert_consistent();
        assert_eq!(
            state.field_set(),
            valid,
            "the hash holds exactly the live tokens"
        );
    }
    assert_eq!(fx.rows(), (1, 1), "one user row for one user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_logins_keep_the_device_limit() {
    concurrent_logins_keep_the_device_limit(redis_fixture("logins").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_logins_keep_the_device_limit() {
    concurrent_logins_keep_the_device_limit(memory_fixture().await).await;
}

// ---------------------------------------------------------------------------------------
// 2. Concurrent refreshes of one token
// ---------------------------------------------------------------------------------------

const REFRESHES: usize = 50;

async fn concurrent_refreshes_have_one_winner<T: TokenStore>(fx: Race<T>) {
    let other_device = fx.auth.authorize(&fx.request()).await.unwrap().token;
    let old = fx.auth.authorize(&fx.request()).await.unwrap().token;

    let tasks: Vec<_> = (0..REFRESHES)
        .map(|_| {
            let auth = fx.auth.clone();
            let old = old.expose().to_owned();
            tokio::spawn(async move { auth.refresh(&old).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(refreshed) => winners.push(refreshed.token),
            Err(Error::InvalidToken) => refused += 1,
            Err(other) => panic!("a refresh failed otherwise: {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one refresh wins");
    assert_eq!(refused, REFRESHES - 1);
    let new: &Token = &winners[0];
    assert!(fx.auth.is_token_valid(new.expose()).await.unwrap());
    assert!(!fx.auth.is_token_valid(old.expose()).await.unwrap());
    assert!(fx.auth.is_token_valid(other_device.expose()).await.unwrap());
    let expected: HashSet<_> = [sha256(new.expose()), sha256(other_device.expose())].into();
    assert_eq!(fx.listed().await, expected);
    if let Some(redis) = &fx.redis {
        let state = redis.read(&fx.open_id()).await;
        state.assert_consistent();
        assert_eq!(
            state.field_set(),
            expected,
            "the hash holds the winner and the other device only"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_refreshes_have_one_winner() {
    concurrent_refreshes_have_one_winner(redis_fixture("refreshes").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_refreshes_have_one_winner() {
    concurrent_refreshes_have_one_winner(memory_fixture().await).await;
}

// ---------------------------------------------------------------------------------------
// 3. Logout everywhere racing new logins
// ---------------------------------------------------------------------------------------

const RACING_LOGINS: usize = 100;
const RACING_LOGOUTS: usize = 20;

async fn logout_all_racing_logins_leaves_a_consistent_hash<T: TokenStore>(fx: Race<T>) {
    enum Done {
        Login(String),
        LogoutAll,
    }
    // One logout_all after every five logins, so they interleave.
    let total = RACING_LOGINS + RACING_LOGOUTS;
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let auth = fx.auth.clone();
            let open_id = fx.open_id();
            let request = (i % 6 != 5).then(|| fx.request());
            tokio::spawn(async move {
                match request {
                    Some(request) => {
                        let authorized = auth.authorize(&request).await.expect("login succeeds");
                        Done::Login(authorized.token.into_exposed())
                    }
                    None => {
                        auth.logout_all(&open_id)
                            .await
                            .expect("logout_all succeeds");
                        Done::LogoutAll
                    }
                }
            })
        })
        .collect();
    let mut tokens = Vec::new();
    let mut logouts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Done::Login(token) => tokens.push(token),
            Done::LogoutAll => logouts += 1,
        }
    }
    assert_eq!((tokens.len(), logouts), (RACING_LOGINS, RACING_LOGOUTS));

    let received: HashSet<_> = tokens.iter().map(|t| sha256(t)).collect();
    let valid = fx.valid(&tokens).await;
    assert!(valid.len() <= LIMIT as usize, "{} live tokens", valid.len());
    let listed = fx.listed().await;
    assert_eq!(listed, valid, "list shows exactly the tokens that validate");
    if let Some(redis) = &fx.redis {
        let state = redis.read(&fx.open_id()).await;
        state.assert_consistent();
        let fields = state.field_set();
        assert!(
            fields.is_subset(&received),
            "a field belongs to no token a client received"
        );
        assert_eq!(
            fields, valid,
            "every valid token is a field, and only those"
        );
    }
    assert_eq!(fx.rows(), (1, 1));

    // Logging in once more after the race works and is counted against the limit.
    let last = fx.auth.authorize(&fx.request()).await.unwrap().token;
    assert!(fx.auth.is_token_valid(last.expose()).await.unwrap());
    let live = fx.listed().await;
    assert!(live.contains(&sha256(last.expose())));
    assert_eq!(live.len(), (valid.len() + 1).min(LIMIT as usize));
    if let Some(redis) = &fx.redis {
        redis.read(&fx.open_id()).await.assert_consistent();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_logout_all_racing_logins_leaves_a_consistent_hash() {
    logout_all_racing_logins_leaves_a_consistent_hash(redis_fixture("logout_all").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_logout_all_racing_logins_leaves_a_consistent_hash() {
    logout_all_racing_logins_leaves_a_consistent_hash(memory_fixture().await).await;
}
