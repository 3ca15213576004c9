//! Faults the other fault tests leave out:
//!
//! * Redis frozen (SIGSTOP) or killed while a steady load of requests runs through
//!   `MpAuthLayer`: every answer is a 200 or a prompt 503, never a 401, and service is
//!   back within a second of Redis answering again.
//! * The sqlite user store busy (another writer, an exclusive lock) or read-only during
//!   `authorize`: a clear status, no user row, and nothing at all in Redis for the user
//!   (the raw key is checked, not only the store's `list`).
//! * WeChat unreachable (a closed port), accepting but never answering, or answering
//!   its body too slowly: 502 or 504 within the client's timeout plus a margin, and
//!   nothing stored.

mod common;

use std::{
    convert::Infallible,
    future::{Ready, ready},
    io::{Read as _, Write as _},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    RedisServer, blocking,
    fake_wechat::{FakeWeChat, Reply as FakeReply},
    unique_prefix,
};
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use mpauthx::{
    AuthedUser, AuthorizeRequest, Error, IssueOptions, MpAuth, MpAuthConfig, MpAuthLayer,
    MpAuthService, RedisTokenStore, Sku, SqliteUserStore, Token, TokenStore, UserStoreError,
    WeChatError,
};
use tempfile::TempDir;
use tower::{Layer as _, ServiceExt as _, service_fn, util::ServiceFn};

/// The store's command and connect timeouts.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
/// How long any answer may take: a timeout plus a margin for a 2-core machine.
const BOUND: Duration = Duration::from_millis(300 + 700);
/// A request still pending after this has hung.
const HANG: Duration = Duration::from_secs(3);
/// How soon after Redis answers again every request must be served.
const RECOVERY: Duration = Duration::from_secs(1);
/// Concurrent clients of the load, and each one's pause between requests.
const CLIENTS: usize = 8;
const PACE: Duration = Duration::from_millis(5);

const SKU: &str = "extra";
const OPEN_ID: &str = "oFaults_extra-1";

fn sku() -> Sku {
    Sku::new(SKU).unwrap()
}

// ---------------------------------------------------------------------------------------
// Redis faults under a steady load
// ---------------------------------------------------------------------------------------

type Handler = fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
type App = MpAuthService<ServiceFn<Handler>, RedisTokenStore>;

fn hello(request: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let seen = request.extensions().get::<AuthedUser>().is_some();
    ready(Ok(Response::new(Full::new(Bytes::from(if seen {
        "hello"
    } else {
        "nobody"
    })))))
}

async fn connect(url: &str) -> RedisTokenStore {
    RedisTokenStore::builder(url)
        .with_command_timeout(COMMAND_TIMEOUT)
        .with_connect_timeout(COMMAND_TIMEOUT)
        .build()
        .await
        .unwrap()
}

/// One answer of the load: when its request started and ended, and its status.
#[derive(Debug, Clone, Copy)]
struct Answer {
    started: Instant,
    done: Instant,
    status: StatusCode,
}

/// `CLIENTS` clients sending requests with one token until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &App, token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..CLIENTS)
            .map(|_| {
                let (app, token) = (app.clone(), token.to_owned());
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let request = Request::builder()
                            .uri("/me")
                            .header(AUTHORIZATION, format!("Bearer {token}"))
                            .body(Full::default())
                            .unwrap();
                        let started = Instant::now();
                        let response = tokio::time::timeout(HANG, app.clone().oneshot(request))
                            .await
                            .expect("a request hung")
                            .unwrap();
                        let answer = Answer {
                            started,
                            done: Instant::now(),
                            status: response.status(),
                        };
                        answers.lock().unwrap().push(answer);
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            answers,
            clients,
        }
    }

    /// Stops the clients and returns every answer, each checked: a 200 or a 503 within
    /// [`BOUND`], never anything else (a 401 would log a user out during an outage).
    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("a client panicked");
        }
        let answers = self.answers.lock().unwrap().clone();
        for answer in &answers {
            assert!(
                matches!(
                    answer.status,
                    StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{answer:?}"
            );
            assert!(answer.done - answer.started < BOUND, "slow: {answer:?}");
        }
        answers
    }
}

/// After `back` (Redis answering again) the first 200 came within [`RECOVERY`], and
/// every request started after that was a 200.
#[track_caller]
fn assert_recovered(answers: &[Answer], back: Instant) {
    let first_ok = answers
        .iter()
        .filter(|a| a.done >= back && a.status == StatusCode::OK)
        .map(|a| a.done)
        .min()
        .expect("no 200 after Redis came back");
    eprintln!("first 200 {:?} after Redis was back", first_ok - back);
    assert!(first_ok - back < RECOVERY, "{:?}", first_ok - back);
    let late: Vec<_> = answers
        .iter()
        .filter(|a| a.started >= back + RECOVERY)
        .collect();
    assert!(late.len() > 10, "too few requests after recovery: {late:?}");
    for answer in late {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
}

/// How many answers had `status` and came in during `during`.
fn count(answers: &[Answer], status: StatusCode, during: impl Fn(Instant) -> bool) -> usize {
    answers
        .iter()
        .filter(|a| a.status == status && during(a.done))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_and_thaw_under_load_never_answer_401() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let app = MpAuthLayer::new(store.clone(), sku()).layer(service_fn(hello as Handler));
    let token = Token::generate(&sku(), OPEN_ID).unwrap();
    store
        .issue(&token, &IssueOptions::new(Duration::from_secs(600)))
        .await
        .unwrap();

    let load = Load::start(&app, token.expose());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = Instant::now();
    server.freeze();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.thaw();
    let thawed = Instant::now();
    tokio::time::sleep(RECOVERY + Duration::from_millis(500)).await;
    let answers = load.finish().await;

    assert!(count(&answers, StatusCode::OK, |done| done < frozen) > 10);
    let unavailable = count(&answers, StatusCode::SERVICE_UNAVAILABLE, |done| {
        done >= frozen && done <= thawed + BOUND
    });
    assert!(
        unavailable >= CLIENTS,
        "only {unavailable} 503s while frozen"
    );
    assert_recovered(&answers, thawed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_under_load_answers_503_then_a_restart_serves_within_a_second() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let app = MpAuthLayer::new(store.clone(), sku()).layer(service_fn(hello as Handler));
    let token = Token::generate(&sku(), OPEN_ID).unwrap();
    let options = IssueOptions::new(Duration::from_secs(600));
    store.issue(&token, &options).await.unwrap();

    let load = Load::start(&app, token.expose());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    let server = blocking(server, RedisServer::stop).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answers = load.finish().await;
    assert!(count(&answers, StatusCode::OK, |done| done < killed) > 10);
    let unavailable = count(&answers, StatusCode::SERVICE_UNAVAILABLE, |done| {
        done >= killed
    });
    assert!(
        unavailable >= CLIENTS,
        "only {unavailable} 503s after the kill"
    );

    // Redis kept nothing; the same token is issued again through a second store, so the
    // layer's own pool meets its dead connection on a request.
    let server = blocking(server, RedisServer::restart).await;
    let back = Instant::now();
    connect(&server.url())
        .await
        .issue(&token, &options)
        .await
        .unwrap();
    let load = Load::start(&app, token.expose());
    tokio::time::sleep(RECOVERY + Duration::from_millis(500)).await;
    let answers = load.finish().await;
    assert_recovered(&answers, back);
}

// ---------------------------------------------------------------------------------------
// A login that fails leaves nothing behind, in sqlite or in Redis
// ---------------------------------------------------------------------------------------

const APP_ID: &str = "wx-faults-extra";
const SECRET: &str = "faults-extra-secret";
/// The user store's busy timeout, and the WeChat client's timeouts.
const SHORT: Duration = Duration::from_millis(300);

struct Fixture {
    auth: MpAuth<RedisTokenStore, SqliteUserStore>,
    redis: redis::Client,
    prefix: String,
    db: PathBuf,
    _dir: TempDir,
}

impl Fixture {
    /// `MpAuth` on the shared Redis and a fresh sqlite file, talking to WeChat at
    /// `base_url`; `read_only` opens the user store read-only.
    async fn new(test: &str, base_url: &str, read_only: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        let writer = SqliteUserStore::builder(&db)
            .with_busy_timeout(SHORT)
            .open()
            .await
            .unwrap();
        let users = if read_only {
            SqliteUserStore::builder(&db)
                .with_read_only(true)
                .open()
                .await
                .unwrap()
        } else {
            writer
        };
        let prefix = unique_prefix(test);
        let tokens = RedisTokenStore::builder(RedisServer::shared().url())
            .with_key_prefix(&prefix)
            .build()
            .await
            .unwrap();
        let config = MpAuthConfig::new(APP_ID, SECRET, SKU)
            .unwrap()
            .with_wechat_base_url(base_url)
            .with_wechat_connect_timeout(SHORT)
            .with_wechat_read_timeout(SHORT)
            .with_wechat_busy_retry(1, Duration::ZERO);
        Self {
            auth: MpAuth::new(config, tokens, users),
            redis: redis::Client::open(RedisServer::shared().url()).unwrap(),
            prefix,
            db,
            _dir: dir,
        }
    }

    /// Logs in; returns the result and how long it took.
    async fn login(&self, code: &str) -> (Result<mpauthx::Authorized, Error>, Duration) {
        let started = Instant::now();
        let result = tokio::time::timeout(HANG, self.auth.authorize(&AuthorizeRequest::new(code)))
            .await
            .expect("a login hung");
        (result, started.elapsed())
    }

    fn rows(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .query_row("SELECT count(*) FROM user", [], |row| row.get(0))
            .unwrap()
    }

    /// `HLEN` of the user's hash, read from Redis directly.
    async fn fields_in_redis(&self) -> usize {
        let mut conn = self.redis.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("HLEN")
            .arg(format!("{}:{{{SKU}:{OPEN_ID}}}", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// The login failed with `status`, within `bound`, and left neither a user row nor
    /// a field in Redis.
    async fn assert_failed_cleanly(
        &self,
        (result, elapsed): (Result<mpauthx::Authorized, Error>, Duration),
        status: StatusCode,
        bound: Duration,
    ) -> Error {
        let error = result.expect_err("the login must fail");
        eprintln!("login failed after {elapsed:?}: {error}");
        assert_eq!(error.status(), status, "{error:?}");
        assert!(elapsed < bound, "failing took {elapsed:?}: {error:?}");
        assert_eq!(self.rows(), 0, "a failed login stored a user: {error:?}");
        assert!(
            self.auth
                .tokens()
                .list(&sku(), OPEN_ID)
                .await
                .unwrap()
                .is_empty(),
            "a failed login left a live token: {error:?}"
        );
        assert_eq!(self.fields_in_redis().await, 0, "{error:?}");
        error
    }

    /// The control: a login that works does store a row and a field.
    async fn assert_login_works(&self, code: &str) {
        let (result, _) = self.login(code).await;
        result.expect("the login works once the fault is gone");
        assert_eq!(self.rows(), 1);
        assert_eq!(self.fields_in_redis().await, 1);
    }
}

fn wechat_ok() -> FakeWeChat {
    FakeWeChat::start(|_, _| {
        FakeReply::json(
            serde_json::json!({ "openid": OPEN_ID, "session_key": "bXBhdXRoeC10ZXN0LWtleQ==" })
                .to_string(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_user_store_during_authorize_leaves_nothing_in_redis() {
    let fake = wechat_ok();
    for lock in ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"] {
        let fx = Fixture::new("sqlite_locked", &fake.base_url(), false).await;
        let holder = rusqlite::Connection::open(&fx.db).unwrap();
        holder.execute_batch(lock).unwrap();

        let outcome = fx.login("code-locked").await;
        let waited = outcome.1;
        let error = fx
            .assert_failed_cleanly(outcome, StatusCode::SERVICE_UNAVAILABLE, SHORT + BOUND)
            .await;
        assert!(
            matches!(error, Error::Users(UserStoreError::Busy(_))),
            "{lock}: {error:?}"
        );
        assert!(waited >= SHORT / 2, "{lock}: did not wait for the lock");

        holder.execute_batch("ROLLBACK").unwrap();
        assert_eq!(fx.rows(), 0, "{lock}: a row appeared after the rollback");
        fx.assert_login_works("code-after-unlock").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_user_store_during_authorize_leaves_nothing_in_redis() {
    let fake = wechat_ok();
    let fx = Fixture::new("sqlite_read_only", &fake.base_url(), true).await;
    let error = fx
        .assert_failed_cleanly(
            fx.login("code-read-only").await,
            StatusCode::INTERNAL_SERVER_ERROR,
            BOUND,
        )
        .await;
    assert!(
        matches!(error, Error::Users(UserStoreError::ReadOnly(_))),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 1, "WeChat was asked first");
}

// ---------------------------------------------------------------------------------------
// WeChat unreachable or slow
// ---------------------------------------------------------------------------------------

/// A loopback port nobody listens on.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_wechat_is_502_within_the_connect_timeout() {
    let fx = Fixture::new("wechat_closed", &closed_port(), false).await;
    let error = fx
        .assert_failed_cleanly(
            fx.login("code-closed").await,
            StatusCode::BAD_GATEWAY,
            SHORT + BOUND,
        )
        .await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::Transport { .. })),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_that_never_answers_is_504_within_the_read_timeout() {
    // The kernel completes the handshake and takes the request; nobody ever reads it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fx = Fixture::new("wechat_silent", &base, false).await;
    let error = fx
        .assert_failed_cleanly(
            fx.login("code-silent").await,
            StatusCode::GATEWAY_TIMEOUT,
            SHORT + BOUND,
        )
        .await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::Timeout { .. })),
        "{error:?}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_trickling_its_body_is_504_within_the_read_timeout() {
    // Headers at once, then one byte of the body every 50 ms: each read is quick, the
    // whole body is not.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 2048];
        let _ = stream.read(&mut head);
        let body =
            serde_json::json!({ "openid": OPEN_ID, "session_key": "a2V5a2V5a2V5a2V5a2V5aw==" })
                .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        for byte in body.bytes() {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let fx = Fixture::new("wechat_trickle", &base, false).await;
    let error = fx
        .assert_failed_cleanly(
            fx.login("code-trickle").await,
            StatusCode::GATEWAY_TIMEOUT,
            SHORT + BOUND,
        )
        .await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::Timeout { .. })),
        "{error:?}"
    );
    server.join().unwrap();
}
