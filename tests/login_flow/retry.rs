//! An outage never logs a user out: a refresh or a login whose answer Redis ran but
//! never delivered (a stall past the command timeout: 503) can be retried, within the
//! retry grace, without losing the session or a device. Also the absolute session
//! lifetime, and deleting a user.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mpauthx::{
    Error, IssueOptions, MemoryTokenStore, RedisTokenStore, StoreError, Token, TokenStore,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::common::{
    RedisServer,
    fake_wechat::wechat_ok,
    keys::sku,
    login::{Fixture, config},
    stores::{LONG, SHORT_TIMEOUT, issue, live, redis_with_timeout, shared_url},
    unique_prefix,
};

const OPEN_ID: &str = "oRetryUser";

/// A TCP proxy in front of Redis that, while told to, carries commands to Redis but
/// drops its replies: the script runs, and the client hears nothing (what a stall or a
/// lost packet after the write looks like). Once it has dropped a reply it holds every
/// later command back too, until released, so that what the client does next (a retry,
/// an undo) waits for the test.
struct ReplyEater {
    port: u16,
    eating: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
}

impl ReplyEater {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let eating = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        let (eat, hold) = (Arc::clone(&eating), Arc::clone(&holding));
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (down_read, down_write) = down.into_split();
                let (up_read, up_write) = up.into_split();
                tokio::spawn(pipe(down_read, up_write, Arc::clone(&hold), None));
                tokio::spawn(pipe(
                    up_read,
                    down_write,
                    Arc::clone(&eat),
                    Some(Arc::clone(&hold)),
                ));
            }
        });
        Self {
            port,
            eating,
            holding,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops replies from now on; or carries everything again.
    fn eat(&self, eat: bool) {
        self.eating.store(eat, Ordering::SeqCst);
        if !eat {
            self.holding.store(false, Ordering::SeqCst);
        }
    }
}

/// Copies `from` to `to`, dropping what arrives while `drop` is set; having dropped
/// something, sets `then_hold`.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    drop: Arc<AtomicBool>,
    then_hold: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if drop.load(Ordering::SeqCst) {
            if let Some(hold) = &then_hold {
                hold.store(true, Ordering::SeqCst);
            }
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A store reaching the shared server through a [`ReplyEater`], and one reaching it
/// directly under the same prefix, to look at what the scripts did.
///
/// The scripts are loaded first: a `NOSCRIPT` whose answer is eaten would leave the
/// script unrun, and these tests are about scripts that ran.
async fn stores(test: &str) -> (RedisTokenStore, RedisTokenStore, ReplyEater) {
    let url = shared_url().await;
    let port = tokio::task::spawn_blocking(|| RedisServer::shared().port())
        .await
        .unwrap();
    let proxy = ReplyEater::start(port).await;
    let prefix = unique_prefix(test);
    let through = redis_with_timeout(&proxy.url(), &prefix, SHORT_TIMEOUT).await;
    let direct = redis_with_timeout(&url, &prefix, SHORT_TIMEOUT).await;
    let warm = issue(&through, "oWarmUp", &IssueOptions::new(LONG)).await;
    let successor = Token::successor_of(&warm.parsed()).unwrap();
    let options = IssueOptions::new(LONG);
    through
        .rotate(&warm.parsed(), &successor, &options)
        .await
        .unwrap();
    through.undo_issue(&successor.parsed()).await.unwrap();
    (through, direct, proxy)
}

/// Waits until `phone` is live again in `store` as the only token of the user: a
/// taken-back login gave it back and left nothing of its own.
async fn assert_given_back(store: &RedisTokenStore, phone: &Token) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live(store, phone).await {
        assert!(Instant::now() < deadline, "the phone was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live_tokens = store.list(&sku(), OPEN_ID).await.unwrap();
    assert_eq!(live_tokens.len(), 1, "no phantom token left");
    assert_eq!(live_tokens[0].hash, phone.hash());
}

fn is_outage(error: &Error) -> bool {
    matches!(
        error,
        Error::Store(StoreError::Timeout(_) | StoreError::Unavailable(_))
    ) && error.status() == 503
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_answer_was_lost_is_retried_and_the_user_stays_logged_in() {
    let (through, direct, proxy) = stores("retry-refresh").await;
    let fx = Fixture::with_config(
        through,
        wechat_ok(OPEN_ID, None),
        config().with_refresh_grace(Duration::from_secs(10)),
    )
    .await;
    let old = fx.login("code-1").await.token;

    proxy.eat(true);
    let lost = fx.auth.refresh(old.expose()).await.unwrap_err();
    assert!(is_outage(&lost), "{lost:?}");
    proxy.eat(false);
    // The script ran: the old token is rotated out, and a successor nobody holds lives.
    assert!(!live(&direct, &old).await, "the rotation was applied");
    assert_eq!(direct.list(&sku(), OPEN_ID).await.unwrap().len(), 1);

    // The client retries after `Retry-After`: it gets a token, and stays logged in.
    let retried = retry(|| fx.auth.refresh(old.expose())).await;
    assert!(
        fx.auth
            .is_token_valid(retried.token.expose())
            .await
            .unwrap()
    );
    let live_tokens = direct.list(&sku(), OPEN_ID).await.unwrap();
    assert_eq!(live_tokens.len(), 1, "the lost successor gave way");
    assert_eq!(live_tokens[0].hash, retried.token.hash());
    // Once more only.
    let again = fx.auth.refresh(old.expose()).await.unwrap_err();
    assert!(matches!(again, Error::InvalidToken), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_a_lost_refresh_logs_the_user_out() {
    let (through, _direct, proxy) = stores("retry-off").await;
    let fx = Fixture::with_config(through, wechat_ok(OPEN_ID, None), config()).await;
    let old = fx.login("code-1").await.token;
    proxy.eat(true);
    assert!(is_outage(&fx.auth.refresh(old.expose()).await.unwrap_err()));
    proxy.eat(false);
    let retried = retry_result(|| fx.auth.refresh(old.expose())).await;
    assert!(
        matches!(retried, Err(Error::InvalidToken)),
        "the failure mode the grace exists for: {retried:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_answer_was_lost_gives_the_evicted_device_back() {
    let (through, direct, proxy) = stores("retry-login").await;
    let config = config()
        .with_max_tokens_per_user(1)
        .with_refresh_grace(Duration::from_secs(10));
    let fx = Fixture::with_config(through, wechat_ok(OPEN_ID, None), config).await;
    let phone = fx.login("code-1").await.token;

    proxy.eat(true);
    let error = fx
        .auth
        .authorize(&mpauthx::AuthorizeRequest::new("code-2"))
        .await;
    let error = error.unwrap_err();
    assert!(is_outage(&error), "{error:?}");
    // The issue ran and evicted the phone for a token no client will ever hold.
    assert!(!live(&direct, &phone).await, "evicted by the lost login");
    proxy.eat(false);

    // Once Redis answers again, the login is taken back and the phone restored.
    assert_given_back(&direct, &phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_dropped_half_way_gives_the_evicted_device_back() {
    let (through, direct, proxy) = stores("retry-dropped").await;
    let config = config()
        .with_max_tokens_per_user(1)
        .with_refresh_grace(Duration::from_secs(10));
    let fx = Fixture::with_config(through, wechat_ok(OPEN_ID, None), config).await;
    let phone = fx.login("code-1").await.token;

    // A request timeout (or a client hanging up) drops the login while its issue,
    // already run by Redis, waits for an answer.
    proxy.eat(true);
    let request = mpauthx::AuthorizeRequest::new("code-2");
    let login = fx.auth.authorize(&request);
    let dropped = tokio::time::timeout(Duration::from_millis(150), login).await;
    assert!(dropped.is_err(), "the login was still waiting");
    assert!(!live(&direct, &phone).await, "evicted by the dropped login");
    proxy.eat(false);

    assert_given_back(&direct, &phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_under_the_default_grace_leave_one_live_successor() {
    let tokens = MemoryTokenStore::new();
    let fx = Fixture::with_config(
        tokens,
        wechat_ok(OPEN_ID, None),
        config().with_refresh_grace(Duration::from_secs(10)),
    )
    .await;
    let old = fx.login("code-1").await.token.into_exposed();
    let refreshes: Vec<_> = (0..20)
        .map(|_| {
            let (auth, old) = (fx.auth.clone(), old.clone());
            tokio::spawn(async move { auth.refresh(&old).await })
        })
        .collect();
    let mut successors = Vec::new();
    for refresh in refreshes {
        match refresh.await.unwrap() {
            Ok(refreshed) => successors.push(refreshed.token),
            Err(Error::InvalidToken) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!((1..=2).contains(&successors.len()), "{}", successors.len());
    let mut valid = 0;
    for successor in &successors {
        valid += usize::from(fx.auth.is_token_valid(successor.expose()).await.unwrap());
    }
    assert_eq!(valid, 1, "exactly one successor lives");
    assert!(!fx.auth.is_token_valid(&old).await.unwrap());
    assert_eq!(fx.live(OPEN_ID).await.len(), 1);
}

#[tokio::test]
async fn sessions_end_at_their_maximum_age_however_often_refreshed() {
    let max_age = Duration::from_millis(900);
    let fx = Fixture::with_config(
        MemoryTokenStore::new(),
        wechat_ok(OPEN_ID, None),
        config().with_max_session_age(max_age),
    )
    .await;
    let login = fx.login("code-1").await;
    assert!(login.expires_in <= 1, "no token outlives its session");
    let mut token = login.token;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        token = fx.auth.refresh(token.expose()).await.unwrap().token;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let error = fx.auth.refresh(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    assert_eq!(error.status(), 401);
    assert!(!fx.auth.is_token_valid(token.expose()).await.unwrap());
    // A new login is a new session.
    let fresh = fx.login("code-2").await.token;
    assert!(fx.auth.refresh(fresh.expose()).await.is_ok());
}

#[tokio::test]
async fn deleting_a_user_revokes_every_device() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let phone = fx.login("code-1").await.token;
    let tablet = fx.login("code-2").await.token;
    let bystander = issue(fx.auth.tokens(), "oSomeoneElse", &IssueOptions::new(LONG)).await;
    assert_eq!(fx.rows(OPEN_ID), 1);

    assert!(fx.auth.delete_user(OPEN_ID).await.unwrap());
    assert_eq!(fx.rows(OPEN_ID), 0);
    for token in [&phone, &tablet] {
        assert!(!fx.auth.is_token_valid(token.expose()).await.unwrap());
    }
    assert!(live(fx.auth.tokens(), &bystander).await);
    assert!(!fx.auth.delete_user(OPEN_ID).await.unwrap(), "already gone");
}

/// Retries `attempt` through outages, as a client honouring `Retry-After` would.
async fn retry<F, Fut>(attempt: F) -> mpauthx::Authorized
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<mpauthx::Authorized, Error>>,
{
    retry_result(attempt).await.expect("the retry succeeds")
}

async fn retry_result<F, Fut>(attempt: F) -> Result<mpauthx::Authorized, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<mpauthx::Authorized, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match attempt().await {
            Err(error) if is_outage(&error) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
