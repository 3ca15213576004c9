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
    io::{Read as _, Write as _},
    net::TcpListener,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    RedisServer, blocking, closed_port_url,
    fake_wechat::{session_body, wechat_ok},
    http::{HelloApp, hello_app, me_request},
    keys::sku,
    login::{Fixture, config},
    stores::{RedisView, SHORT_TIMEOUT, dedicated, redis_with_timeout, shared_redis_viewed},
    users,
};
use http::StatusCode;
use mpauthx::{
    AuthorizeRequest, Error, IssueOptions, MpAuthLayer, RedisTokenStore, SqliteUserStore, Token,
    TokenStore, UserStoreError, WeChatError,
};
use tower::ServiceExt as _;

/// How long any answer may take: a timeout (the stores' [`SHORT_TIMEOUT`]) plus a margin
/// for a 2-core machine.
const BOUND: Duration = Duration::from_millis(300 + 700);
/// A request still pending after this has hung.
const HANG: Duration = Duration::from_secs(3);
/// How soon after Redis answers again every request must be served.
const RECOVERY: Duration = Duration::from_secs(1);
/// Concurrent clients of the load, and each one's pause between requests.
const CLIENTS: usize = 8;
const PACE: Duration = Duration::from_millis(5);

const OPEN_ID: &str = "oFaults_extra-1";

type App = HelloApp<RedisTokenStore>;

// ---------------------------------------------------------------------------------------
// Redis faults under a steady load
// ---------------------------------------------------------------------------------------

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
                        let request = me_request(&token);
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
    let (server, store, _) = dedicated("freeze").await;
    let app = hello_app(&MpAuthLayer::new(store.clone(), sku()));
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
    let (server, store, prefix) = dedicated("kill").await;
    let app = hello_app(&MpAuthLayer::new(store.clone(), sku()));
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
    redis_with_timeout(&server.url(), &prefix, SHORT_TIMEOUT)
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

/// The user store's busy timeout, and the WeChat client's timeouts.
const SHORT: Duration = Duration::from_millis(300);

/// The login fixture on the shared Redis, talking to WeChat at an address the test
/// chose, and a view of what Redis holds.
struct Login {
    fx: Fixture<RedisTokenStore, String>,
    redis: RedisView,
}

impl Deref for Login {
    type Target = Fixture<RedisTokenStore, String>;

    fn deref(&self) -> &Self::Target {
        &self.fx
    }
}

impl Login {
    /// `MpAuth` on the shared Redis and a fresh sqlite file, talking to WeChat at
    /// `base_url`; `read_only` opens the user store read-only.
    async fn new(test: &str, base_url: &str, read_only: bool) -> Self {
        let (dir, db) = users::temp_db();
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
        let (tokens, redis) = shared_redis_viewed(test).await;
        let config = config()
            .with_wechat_connect_timeout(SHORT)
            .with_wechat_read_timeout(SHORT)
            .with_wechat_busy_retry(1, Duration::ZERO);
        let fx = Fixture::with_users(tokens, base_url.to_owned(), config, users, dir, db);
        Self { fx, redis }
    }

    /// Logs in; returns the result and how long it took.
    async fn login(&self, code: &str) -> (Result<mpauthx::Authorized, Error>, Duration) {
        let started = Instant::now();
        let result = tokio::time::timeout(HANG, self.auth.authorize(&AuthorizeRequest::new(code)))
            .await
            .expect("a login hung");
        (result, started.elapsed())
    }

    /// `HLEN` of the user's hash, read from Redis directly.
    async fn fields_in_redis(&self) -> usize {
        self.redis.fields(OPEN_ID).await
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
        assert_eq!(
            self.all_rows(),
            0,
            "a failed login stored a user: {error:?}"
        );
        assert!(
            self.live(OPEN_ID).await.is_empty(),
            "a failed login left a live token: {error:?}"
        );
        assert_eq!(self.fields_in_redis().await, 0, "{error:?}");
        error
    }

    /// The control: a login that works does store a row and a field.
    async fn assert_login_works(&self, code: &str) {
        let (result, _) = self.login(code).await;
        result.expect("the login works once the fault is gone");
        assert_eq!(self.all_rows(), 1);
        assert_eq!(self.fields_in_redis().await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_user_store_during_authorize_leaves_nothing_in_redis() {
    let fake = wechat_ok(OPEN_ID, None);
    for lock in ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"] {
        let fx = Login::new("sqlite_locked", &fake.base_url(), false).await;
        let holder = users::raw(&fx.db);
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
        assert_eq!(
            fx.all_rows(),
            0,
            "{lock}: a row appeared after the rollback"
        );
        fx.assert_login_works("code-after-unlock").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_user_store_during_authorize_leaves_nothing_in_redis() {
    let fake = wechat_ok(OPEN_ID, None);
    let fx = Login::new("sqlite_read_only", &fake.base_url(), true).await;
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

/// A login against WeChat at `base_url` fails with `status` within the client's timeouts
/// plus [`BOUND`], and leaves nothing behind.
async fn wechat_fails(test: &str, base_url: &str, status: StatusCode) -> Error {
    let fx = Login::new(test, base_url, false).await;
    fx.assert_failed_cleanly(fx.login("code-wechat").await, status, SHORT + BOUND)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_wechat_is_502_within_the_connect_timeout() {
    let error = wechat_fails("wechat_closed", &closed_port_url(), StatusCode::BAD_GATEWAY).await;
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
    let error = wechat_fails("wechat_silent", &base, StatusCode::GATEWAY_TIMEOUT).await;
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
        let body = session_body(OPEN_ID, None);
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
    let error = wechat_fails("wechat_trickle", &base, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::Timeout { .. })),
        "{error:?}"
    );
    server.join().unwrap();
}
