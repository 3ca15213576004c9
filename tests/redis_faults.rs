//! `RedisTokenStore` and `MpAuthLayer` under Redis faults: a killed server, a restart
//! on the same port, a frozen process (SIGSTOP), `CLIENT PAUSE`, many requests during an
//! outage, and an unreachable or password-protected server at build time.
//!
//! Every test owns its server, so faults never leak between tests. Small timeouts keep
//! the tests fast: an outage must turn into a 503 within the command timeout plus a
//! margin, and service must come back within a second of Redis answering again.

mod common;

use std::{
    fmt::Debug,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    RedisServer, blocking,
    http::{Answer, HelloApp, hello_app, me_request},
    keys::sku,
    stores::{SHORT_TIMEOUT, issue, redis_with_timeout},
};
use http::{StatusCode, header::RETRY_AFTER};
use mpauthx::{
    IssueOptions, MpAuthLayer, RedisTokenStore, StoreBuildError, StoreError, Token, TokenStore,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The store's command timeout, and its connect timeout.
const COMMAND_TIMEOUT: Duration = SHORT_TIMEOUT;
/// How long a failing request or store operation may take: the timeout plus a margin.
const BOUND: Duration = Duration::from_millis(300 + 700);
/// A request or operation still pending after this has hung.
const HANG: Duration = Duration::from_secs(2);
/// How soon after Redis answers again the layer must answer 200.
const RECOVERY: Duration = Duration::from_secs(1);
/// How often recovery is polled.
const POLL: Duration = Duration::from_millis(20);

const OPEN_ID: &str = "o-user";

/// The inner service greets the user the layer put into the request.
type App = HelloApp<RedisTokenStore>;

fn app(store: &RedisTokenStore) -> App {
    hello_app(&MpAuthLayer::new(store.clone(), sku()))
}

/// A store at `url` with [`COMMAND_TIMEOUT`]s (every test owns its server: one key
/// prefix serves them all).
async fn connect(url: &str) -> RedisTokenStore {
    redis_with_timeout(url, "faults", COMMAND_TIMEOUT).await
}

fn options() -> IssueOptions {
    IssueOptions::new(Duration::from_secs(600))
}

/// A server of the test's own, a store on it, the app on that store, and a live token
/// the app is seen to serve.
async fn serving() -> (RedisServer, RedisTokenStore, App, Token) {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let app = app(&store);
    let token = issue(&store, OPEN_ID, &options()).await;
    call(&app, token.expose()).await.assert_ok();
    (server, store, app, token)
}

/// What the layer answered, and when.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
    elapsed: Duration,
    done: Instant,
}

impl Reply {
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.body, format!("hello {OPEN_ID}"), "{self:?}");
    }

    /// A prompt 503 that tells the client to retry, never a 401.
    #[track_caller]
    fn assert_unavailable(&self) {
        assert_eq!(self.status, StatusCode::SERVICE_UNAVAILABLE, "{self:?}");
        assert_eq!(self.retry_after.as_deref(), Some("1"), "{self:?}");
        assert!(self.body.contains("temporarily_unavailable"), "{self:?}");
        assert!(
            self.elapsed < BOUND,
            "503 took {:?}: {self:?}",
            self.elapsed
        );
    }
}

/// Sends one request with `Authorization: Bearer <token>`; panics if it hangs.
async fn call(app: &App, token: &str) -> Reply {
    let request = me_request(token);
    let start = Instant::now();
    let response = tokio::time::timeout(HANG, app.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("request hung for {HANG:?}"))
        .unwrap_or_else(|never| match never {});
    let elapsed = start.elapsed();
    let done = Instant::now();
    let answer = Answer::collect(response).await;
    Reply {
        status: answer.status,
        retry_after: answer.header(RETRY_AFTER).map(str::to_owned),
        body: answer.body,
        elapsed,
        done,
    }
}

/// Polls with `token` every [`POLL`] until the layer answers 200; every answer before
/// that must be a prompt 503. Returns when the 200 arrived.
async fn until_ok(app: &App, token: &str, since: Instant) -> Instant {
    loop {
        let reply = call(app, token).await;
        if reply.status == StatusCode::OK {
            reply.assert_ok();
            eprintln!("first 200 {:?} after the fault ended", reply.done - since);
            return reply.done;
        }
        reply.assert_unavailable();
        assert!(
            since.elapsed() < RECOVERY,
            "still no 200 {:?} after the fault ended: {reply:?}",
            since.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `op` during an outage: it must fail with a "retry later" error within
/// [`BOUND`].
async fn expect_outage<T: Debug>(
    what: &str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> StoreError {
    let start = Instant::now();
    let result = tokio::time::timeout(HANG, op)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG:?}"));
    let elapsed = start.elapsed();
    eprintln!("{what} during the outage: {result:?} after {elapsed:?}");
    let error = match result {
        Err(e @ (StoreError::Unavailable(_) | StoreError::Timeout(_))) => e,
        other => panic!("{what}: expected Unavailable or Timeout, got {other:?}"),
    };
    assert!(elapsed < BOUND, "{what} took {elapsed:?} to fail: {error}");
    error
}

/// The pool's connection count, from the store's `Debug`.
fn pooled_connections(store: &RedisTokenStore) -> usize {
    let debug = format!("{store:?}");
    debug
        .split("connections: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connection count in {debug}"))
}

/// Case 1: a killed Redis turns a valid token's request into a prompt 503, and every
/// store operation into a prompt error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_redis_answers_503_promptly() -> TestResult {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let app = app(&store);
    let token = issue(&store, OPEN_ID, &options()).await;
    let unknown = Token::generate(&sku(), OPEN_ID)?;
    call(&app, token.expose()).await.assert_ok();
    // Control: while Redis answers, an unknown token is a 401.
    assert_eq!(
        call(&app, unknown.expose()).await.status,
        StatusCode::UNAUTHORIZED
    );

    let _server = blocking(server, RedisServer::stop).await;

    // The first request meets the dead pooled connection, the next ones a refused connect.
    for _ in 0..3 {
        call(&app, token.expose()).await.assert_unavailable();
    }
    // The store cannot tell a live token from a dead one: never a 401.
    call(&app, unknown.expose()).await.assert_unavailable();

    let parsed = token.parsed();
    let fresh = Token::generate(&sku(), OPEN_ID)?;
    expect_outage("validate", store.validate(&parsed)).await;
    expect_outage("issue", store.issue(&fresh, &options())).await;
    expect_outage("revoke", store.revoke(&parsed)).await;
    expect_outage("list", store.list(&sku(), OPEN_ID)).await;
    let successor = Token::successor_of(&parsed)?;
    expect_outage("rotate", store.rotate(&parsed, &successor, &options())).await;
    expect_outage("revoke_all", store.revoke_all(&sku(), OPEN_ID)).await;
    expect_outage("ping", store.ping()).await;
    Ok(())
}

/// Case 2: after a restart on the same port the layer answers 200 again within a second,
/// replacing the pooled connection the restart broke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_redis_serves_again_within_a_second() -> TestResult {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let app = app(&store);
    let old = issue(&store, OPEN_ID, &options()).await;
    call(&app, old.expose()).await.assert_ok();
    assert!(pooled_connections(&store) >= 1);

    // No request during the outage: the layer's pool still holds the dead connection.
    let server = blocking(server, |s| {
        s.stop();
        s.restart();
    })
    .await;
    let restarted = Instant::now();

    // Redis kept nothing: issue again, through a second store so that the layer's pool
    // meets the dead connection on a request.
    let admin = connect(&server.url()).await;
    let token = issue(&admin, OPEN_ID, &options()).await;
    let first_ok = until_ok(&app, token.expose(), restarted).await;
    assert!(
        first_ok - restarted < RECOVERY,
        "{:?}",
        first_ok - restarted
    );

    // Recovered for good; and the token from before the restart is gone, hence a 401.
    for _ in 0..10 {
        call(&app, token.expose()).await.assert_ok();
    }
    let stale = call(&app, old.expose()).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{stale:?}");
    Ok(())
}

/// Case 3: a frozen Redis (SIGSTOP) keeps sockets open but never answers; no request
/// may hang, and after SIGCONT the valid token is served again within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_answers_503_then_recovers_after_thaw() -> TestResult {
    let (server, store, app, token) = serving().await;

    server.freeze();
    for _ in 0..3 {
        call(&app, token.expose()).await.assert_unavailable();
    }
    // Concurrent ones too, each on a connection that may be half set up.
    let replies: Vec<_> = (0..20)
        .map(|_| {
            let (app, token) = (app.clone(), token.expose().to_owned());
            tokio::spawn(async move { call(&app, &token).await })
        })
        .collect();
    for reply in replies {
        reply.await?.assert_unavailable();
    }
    // A frozen server is a timeout, whichever stage (checkout, command) it hits.
    let error = expect_outage("validate", store.validate(&token.parsed())).await;
    assert!(
        matches!(error, StoreError::Timeout(d) if d == COMMAND_TIMEOUT),
        "{error:?}"
    );
    expect_outage(
        "issue",
        store.issue(&Token::generate(&sku(), OPEN_ID)?, &options()),
    )
    .await;

    server.thaw();
    let thawed = Instant::now();
    let first_ok = until_ok(&app, token.expose(), thawed).await;
    assert!(first_ok - thawed < RECOVERY, "{:?}", first_ok - thawed);
    for _ in 0..10 {
        call(&app, token.expose()).await.assert_ok();
    }
    Ok(())
}

/// Case 4: `CLIENT PAUSE` stalls every command: 503s while it lasts, 200 soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_answers_503_then_recovers() -> TestResult {
    const PAUSE: Duration = Duration::from_millis(1500);
    let (server, _, app, token) = serving().await;

    let before = Instant::now();
    let answer = server.cli(&["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"]);
    assert_eq!(answer.as_deref(), Some("OK"));
    let after = Instant::now();
    // The pause started between `before` and `after`, and ends 1.5 s later.
    let (earliest_end, latest_end) = (before + PAUSE, after + PAUSE);

    let mut unavailable = 0;
    loop {
        let reply = call(&app, token.expose()).await;
        if reply.status == StatusCode::OK {
            reply.assert_ok();
            assert!(
                reply.done >= earliest_end,
                "answered {:?} into a {PAUSE:?} pause",
                reply.done - before
            );
            assert!(
                reply.done < latest_end + RECOVERY,
                "first 200 only {:?} after the pause ended",
                reply.done - latest_end
            );
            break;
        }
        reply.assert_unavailable();
        unavailable += 1;
        assert!(
            Instant::now() < latest_end + RECOVERY,
            "still no 200 {:?} after the pause ended: {reply:?}",
            Instant::now() - latest_end
        );
        tokio::time::sleep(POLL).await;
    }
    // 1.5 s of 300 ms timeouts: several 503s, not just one slow answer.
    assert!(unavailable >= 3, "only {unavailable} 503s during the pause");
    for _ in 0..10 {
        call(&app, token.expose()).await.assert_ok();
    }
    Ok(())
}

/// Sends `n` concurrent requests; each must answer 503 within [`BOUND`], and all of
/// them within `total`.
async fn storm_of_503(app: &App, token: &str, n: usize, total: Duration) -> TestResult {
    let start = Instant::now();
    let replies: Vec<_> = (0..n)
        .map(|_| {
            let (app, token) = (app.clone(), token.to_owned());
            tokio::spawn(async move { call(&app, &token).await })
        })
        .collect();
    for reply in replies {
        // A panicked request surfaces here as a JoinError.
        let reply = reply.await?;
        assert_ne!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
        reply.assert_unavailable();
    }
    let elapsed = start.elapsed();
    eprintln!("{n} concurrent 503s in {elapsed:?}");
    assert!(elapsed < total, "{n} requests took {elapsed:?}");
    Ok(())
}

/// Case 5: 200 concurrent requests while Redis is down all answer a prompt 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_during_outage_all_answer_503() -> TestResult {
    let (server, _, app, token) = serving().await;

    let server = blocking(server, RedisServer::stop).await;
    storm_of_503(&app, token.expose(), 200, Duration::from_millis(1500)).await?;

    // And the pool is not wedged by the storm.
    let server = blocking(server, RedisServer::restart).await;
    let restarted = Instant::now();
    let token = issue(&connect(&server.url()).await, OPEN_ID, &options()).await;
    let first_ok = until_ok(&app, token.expose(), restarted).await;
    assert!(
        first_ok - restarted < RECOVERY,
        "{:?}",
        first_ok - restarted
    );
    Ok(())
}

/// Case 5, frozen: 200 concurrent requests against a server that never answers all
/// answer a prompt 503, then 200 concurrent requests after the thaw all answer 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_while_frozen_all_answer_503() -> TestResult {
    let (server, _, app, token) = serving().await;

    server.freeze();
    storm_of_503(&app, token.expose(), 200, Duration::from_millis(1500)).await?;

    server.thaw();
    let thawed = Instant::now();
    let first_ok = until_ok(&app, token.expose(), thawed).await;
    assert!(first_ok - thawed < RECOVERY, "{:?}", first_ok - thawed);
    let replies: Vec<_> = (0..200)
        .map(|_| {
            let (app, token) = (app.clone(), token.expose().to_owned());
            tokio::spawn(async move { call(&app, &token).await })
        })
        .collect();
    for reply in replies {
        reply.await?.assert_ok();
    }
    Ok(())
}

const PASSWORD: &str = "hunter2secret";

/// Asserts that nothing printable about `error` holds the password.
#[track_caller]
fn assert_no_password(error: &(dyn std::error::Error + 'static)) {
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = error.source();
    while let Some(e) = source {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
        source = e.source();
    }
    for text in texts {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}

/// Case 6: building against a port nobody listens on fails promptly, and neither the
/// error nor the builder shows the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_build_promptly_without_leaking_password() {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", common::free_port());
    let builder = RedisTokenStore::builder(url.as_str())
        .with_command_timeout(COMMAND_TIMEOUT)
        .with_connect_timeout(COMMAND_TIMEOUT);
    let debug = format!("{builder:?}");
    assert!(debug.contains("RedisTokenStoreBuilder"), "{debug}");
    assert!(!debug.contains(PASSWORD), "{debug}");

    let start = Instant::now();
    let result = tokio::time::timeout(HANG, builder.build())
        .await
        .expect("build hung");
    let elapsed = start.elapsed();
    let error = result.expect_err("nobody listens there");
    eprintln!("unreachable: {error:?} after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}: {error}");
    assert!(
        matches!(
            error,
            StoreBuildError::Unreachable(StoreError::Unavailable(_) | StoreError::Timeout(_))
        ),
        "{error:?}"
    );
    assert_no_password(&error);
}

/// Case 6, with a server that wants another password: the build fails promptly and the
/// error does not echo the password tried; the right password works (control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_build_without_leaking_it() {
    let server = RedisServer::start();
    let answer = server.cli(&["CONFIG", "SET", "requirepass", "correct-horse"]);
    assert_eq!(answer.as_deref(), Some("OK"));
    let with_password =
        |password: &str| format!("redis://:{password}@127.0.0.1:{}/", server.port());

    let start = Instant::now();
    let result = tokio::time::timeout(
        HANG,
        RedisTokenStore::builder(with_password(PASSWORD))
            .with_command_timeout(COMMAND_TIMEOUT)
            .with_connect_timeout(COMMAND_TIMEOUT)
            .build(),
    )
    .await
    .expect("build hung");
    let elapsed = start.elapsed();
    let error = result.expect_err("wrong password");
    eprintln!("wrong password: {error:?} after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}: {error}");
    assert_no_password(&error);

    let store = connect(&with_password("correct-horse")).await;
    store.ping().await.expect("right password");
    let debug = format!("{store:?}");
    assert!(!debug.contains("correct-horse"), "{debug}");
}

/// Case 7: after a restart, sequential operations fail at most once per connection the
/// pool held (each is marked broken on its first failure), then succeed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_connections_fail_at_most_once_each() -> TestResult {
    let server = RedisServer::start();
    let store = RedisTokenStore::builder(server.url())
        .with_command_timeout(COMMAND_TIMEOUT)
        .with_connect_timeout(COMMAND_TIMEOUT)
        .with_pool_size(4)
        .build()
        .await?;
    let token = issue(&store, OPEN_ID, &options()).await;
    // Some concurrency, so that the pool may hold more than one connection.
    let checks: Vec<_> = (0..50)
        .map(|_| {
            let check = store.validate(&token.parsed());
            tokio::spawn(check)
        })
        .collect();
    for check in checks {
        assert!(check.await??.is_live());
    }
    let server = blocking(server, RedisServer::stop).await;
    // Counted once Redis is gone: connects still pending now can only fail.
    let held = pooled_connections(&store);
    assert!((1..=4).contains(&held), "{held} connections");
    let _server = blocking(server, RedisServer::restart).await;
    let restarted = Instant::now();

    let mut failures = Vec::new();
    loop {
        match tokio::time::timeout(HANG, store.validate(&token.parsed())).await? {
            // Redis kept nothing: the token is gone, but Redis answered.
            Ok(live) => {
                assert!(!live.is_live());
                break;
            }
            Err(e) => failures.push(e.to_string()),
        }
        assert!(restarted.elapsed() < RECOVERY, "{failures:?}");
    }
    assert!(restarted.elapsed() < RECOVERY, "{:?}", restarted.elapsed());
    eprintln!("{held} pooled connections, failures after restart: {failures:?}");
    assert!(
        failures.len() <= held,
        "{} failures for {held} stale connections: {failures:?}",
        failures.len()
    );
    for _ in 0..20 {
        assert!(!store.validate(&token.parsed()).await?.is_live());
    }
    store.ping().await?;
    Ok(())
}

/// A TCP proxy in front of Redis that can turn the connections it carries into
/// half-open ones: their sockets stay open, but bytes go nowhere, for good. That is what a
/// NAT or firewall that forgot a flow, or a failed-over Redis host, looks like to a
/// client. Connections opened afterwards are carried normally.
struct BlackholeProxy {
    port: u16,
    /// Connections numbered below this are swallowed.
    cutoff: Arc<AtomicU64>,
    /// The number of the next connection.
    next: Arc<AtomicU64>,
}

impl BlackholeProxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cutoff = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (cut, count) = (Arc::clone(&cutoff), Arc::clone(&next));
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (down_read, down_write) = down.into_split();
                let (up_read, up_write) = up.into_split();
                tokio::spawn(Self::pipe(down_read, up_write, id, Arc::clone(&cut)));
                tokio::spawn(Self::pipe(up_read, down_write, id, Arc::clone(&cut)));
            }
        });
        Self { port, cutoff, next }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every connection opened so far goes silent for good.
    fn blackhole_existing(&self) {
        self.cutoff
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    async fn pipe(
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
        id: u64,
        cutoff: Arc<AtomicU64>,
    ) {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if id < cutoff.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        // Half-open connections never close: only a live one forwards the EOF.
        if id >= cutoff.load(Ordering::SeqCst) {
            let _ = to.shutdown().await;
        }
    }
}

/// A pooled connection that goes silent for good (half-open) times out once, is marked
/// broken and replaced: the next request answers 200. Without the mark the pool would
/// hand the dead connection out forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_is_replaced_after_one_timeout() -> TestResult {
    let server = RedisServer::start();
    let proxy = BlackholeProxy::start(server.port()).await;
    let store = RedisTokenStore::builder(proxy.url())
        .with_command_timeout(COMMAND_TIMEOUT)
        .with_connect_timeout(COMMAND_TIMEOUT)
        .with_pool_size(1)
        .build()
        .await?;
    let app = app(&store);
    let token = issue(&store, OPEN_ID, &options()).await;
    call(&app, token.expose()).await.assert_ok();
    assert_eq!(pooled_connections(&store), 1);

    proxy.blackhole_existing();
    // The one pooled connection cannot answer: this request must time out.
    let reply = call(&app, token.expose()).await;
    reply.assert_unavailable();
    assert!(reply.elapsed >= COMMAND_TIMEOUT, "{reply:?}");
    // It was marked broken: its replacement answers the very next request.
    let next = call(&app, token.expose()).await;
    next.assert_ok();
    assert!(next.elapsed < RECOVERY, "{next:?}");
    eprintln!(
        "half-open: 503 after {:?}, then 200 after {:?}",
        reply.elapsed, next.elapsed
    );
    for _ in 0..10 {
        call(&app, token.expose()).await.assert_ok();
    }
    Ok(())
}

/// bb8's `Pool::get` hands connect errors only to the error sink and would wait out its
/// whole timeout; the store listens to that sink, so a refused connection fails at once
/// and reads as `Unavailable`, not as a `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_fails_fast_as_unavailable() {
    const SLOW: Duration = Duration::from_secs(1);
    let url = format!("redis://127.0.0.1:{}/", common::free_port());
    let start = Instant::now();
    let result = RedisTokenStore::builder(url)
        .with_command_timeout(SLOW)
        .with_connect_timeout(SLOW)
        .build()
        .await;
    let elapsed = start.elapsed();
    let error = result.expect_err("nobody listens there");
    assert!(
        matches!(
            error,
            StoreBuildError::Unreachable(StoreError::Unavailable(_))
        ),
        "connection refused reported as {error:?} ({error}) after {elapsed:?}"
    );
    assert!(elapsed < SLOW / 2, "refused connect took {elapsed:?}");
}

/// A wrong password is reported as the authentication failure it is (without the
/// password), not as "did not answer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_as_such() {
    let server = RedisServer::start();
    let answer = server.cli(&["CONFIG", "SET", "requirepass", "correct-horse"]);
    assert_eq!(answer.as_deref(), Some("OK"));
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port());
    let error = RedisTokenStore::builder(url)
        .with_command_timeout(COMMAND_TIMEOUT)
        .with_connect_timeout(COMMAND_TIMEOUT)
        .build()
        .await
        .expect_err("wrong password");
    assert!(
        matches!(
            error,
            StoreBuildError::Unreachable(StoreError::Unavailable(_))
        ),
        "wrong password reported as {error:?} ({error})"
    );
    assert_no_password(&error);
}
