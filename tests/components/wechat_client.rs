//! `WeChatClient` against a fake `jscode2session` server on loopback.

use std::time::{Duration, Instant};

use http::StatusCode;
use mpauthx::{AppSecret, WeChatClient, WeChatError};

use crate::common::{
    closed_port_url,
    fake_wechat::{FakeWeChat, Reply},
    keys::{APP_ID, SECRET},
    logs::LogBuffer,
};

const CODE: &str = "LOGINCODE-0a1b2c3d4e5f";

fn client_for(server: &FakeWeChat) -> WeChatClient {
    client_at(&server.base_url())
}

fn client_at(base_url: &str) -> WeChatClient {
    WeChatClient::new(APP_ID, AppSecret::new(SECRET))
        .with_base_url(base_url)
        .with_busy_retry(3, Duration::from_millis(10))
}

fn errcode_body(errcode: i64) -> String {
    format!(r#"{{"errcode":{errcode},"errmsg":"fake error, rid: 1234"}}"#)
}

fn expect_err(client: &WeChatClient, code: &str) -> WeChatError {
    client
        .code2session_blocking(code)
        .expect_err("exchange should fail")
}

fn assert_no_secrets(text: &str) {
    assert!(!text.contains(SECRET), "secret leaked: {text}");
    assert!(!text.contains(CODE), "login code leaked: {text}");
}

#[test]
fn success_with_unionid_sends_expected_query() {
    let server = FakeWeChat::fixed(
        r#"{"openid":"oUser1","session_key":"c2Vzc2lvbmtleTEyMzQ1Ng==","unionid":"uUnion1"}"#,
    );
    let session = client_for(&server).code2session_blocking(CODE).unwrap();
    assert_eq!(session.open_id, "oUser1");
    assert_eq!(session.union_id.as_deref(), Some("uUnion1"));
    assert_eq!(
        session.session_key.expose_secret(),
        "c2Vzc2lvbmtleTEyMzQ1Ng=="
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/sns/jscode2session");
    assert_eq!(request.param("appid"), Some(APP_ID));
    assert_eq!(request.param("secret"), Some(SECRET));
    assert_eq!(request.param("js_code"), Some(CODE));
    assert_eq!(request.param("grant_type"), Some("authorization_code"));
}

#[test]
fn success_without_unionid_as_text_plain() {
    let server = FakeWeChat::start(|_, _| {
        Reply::text_plain(r#"{"session_key":"c2Vzc2lvbmtleTEyMzQ1Ng==","openid":"oUser2"}"#)
    });
    let session = client_for(&server).code2session_blocking(CODE).unwrap();
    assert_eq!(session.open_id, "oUser2");
    assert_eq!(session.union_id, None);
    assert!(!format!("{session:?}").contains("c2Vzc2lvbmtleTEyMzQ1Ng=="));
}

#[test]
fn errcode_zero_with_openid_is_success() {
    let server =
        FakeWeChat::fixed(r#"{"errcode":0,"errmsg":"ok","openid":"oUser3","session_key":"a2V5"}"#);
    let session = client_for(&server).code2session_blocking(CODE).unwrap();
    assert_eq!(session.open_id, "oUser3");
}

#[test]
fn code_needing_url_encoding_arrives_intact() {
    let awkward = "a+b c/d?e=f&g=h#i%j;k=\"中\"";
    let server = FakeWeChat::fixed(r#"{"openid":"o","session_key":"a2V5"}"#);
    client_for(&server).code2session_blocking(awkward).unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].param("js_code"), Some(awkward));
    assert_eq!(requests[0].param("grant_type"), Some("authorization_code"));
    assert_eq!(requests[0].query.len(), 4, "{:?}", requests[0].query);
}

fn assert_errcode_maps(errcode: i64, status: StatusCode, name: &str) -> WeChatError {
    let server = FakeWeChat::start(move |_, _| Reply::json(errcode_body(errcode)));
    let err = expect_err(&client_for(&server), CODE);
    assert_eq!(err.status(), status, "{err:?}");
    assert_eq!(err.oauth_error(), name, "{err:?}");
    assert_eq!(err.node_code(), 6008, "{err:?}");
    assert_eq!(
        server.requests().len(),
        1,
        "errcode {errcode} must not be retried"
    );
    err
}

#[test]
fn errcode_40029_invalid_code_is_401() {
    let err = assert_errcode_maps(40029, StatusCode::UNAUTHORIZED, "invalid_code");
    assert!(matches!(err, WeChatError::InvalidCode { errcode: 40029 }));
}

#[test]
fn errcode_40163_used_code_is_401() {
    let err = assert_errcode_maps(40163, StatusCode::UNAUTHORIZED, "invalid_code");
    assert!(matches!(err, WeChatError::InvalidCode { errcode: 40163 }));
}

#[test]
fn errcode_45011_rate_limit_is_429() {
    assert_errcode_maps(45011, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[test]
fn errcode_40226_blocked_user_is_403() {
    assert_errcode_maps(40226, StatusCode::FORBIDDEN, "user_blocked");
}

#[test]
fn errcode_40013_bad_app_id_is_500() {
    assert_errcode_maps(
        40013,
        StatusCode::INTERNAL_SERVER_ERROR,
        "app_misconfigured",
    );
}

#[test]
fn errcode_40125_bad_app_secret_is_500() {
    assert_errcode_maps(
        40125,
        StatusCode::INTERNAL_SERVER_ERROR,
        "app_misconfigured",
    );
}

#[test]
fn other_errcode_is_502_and_carries_it() {
    let err = assert_errcode_maps(40999, StatusCode::BAD_GATEWAY, "wechat_error");
    let WeChatError::Upstream { errcode, errmsg } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*errcode, 40999);
    assert_eq!(errmsg, "fake error, rid: 1234");
    assert!(err.to_string().contains("40999"));
}

#[test]
fn busy_is_retried_then_succeeds() {
    let server = FakeWeChat::start(|_, index| {
        if index < 2 {
            Reply::json(errcode_body(-1))
        } else {
            Reply::json(r#"{"openid":"oAfterBusy","session_key":"a2V5"}"#)
        }
    });
    let session = client_for(&server).code2session_blocking(CODE).unwrap();
    assert_eq!(session.open_id, "oAfterBusy");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn persistent_busy_is_503_after_default_backoff() {
    let server = FakeWeChat::start(|_, _| Reply::json(errcode_body(-1)));
    let client = WeChatClient::new(APP_ID, AppSecret::new(SECRET)).with_base_url(server.base_url());
    let started = Instant::now();
    let err = expect_err(&client, CODE);
    let elapsed = started.elapsed();
    assert!(matches!(err, WeChatError::Busy { attempts: 3 }), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.requests().len(), 3);
    // Default backoff is 100 ms then 200 ms.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn busy_retry_count_is_configurable() {
    let server = FakeWeChat::start(|_, _| Reply::json(errcode_body(-1)));
    let client = client_for(&server).with_busy_retry(1, Duration::from_millis(10));
    let err = expect_err(&client, CODE);
    assert!(matches!(err, WeChatError::Busy { attempts: 1 }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn total_timeout_bounds_a_slow_answer_within_the_read_timeout() {
    // Each phase is within the 2 s read timeout; the whole exchange is not.
    let server = FakeWeChat::start(|_, _| {
        Reply::json(r#"{"openid":"o","session_key":"a2V5"}"#).with_delay(Duration::from_secs(1))
    });
    let client = client_for(&server)
        .with_read_timeout(Duration::from_secs(2))
        .with_total_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = expect_err(&client, CODE);
    let elapsed = started.elapsed();
    assert!(matches!(err, WeChatError::Timeout { .. }), "{err:?}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(elapsed < Duration::from_millis(900), "took {elapsed:?}");
}

#[test]
fn total_timeout_bounds_busy_retries() {
    // Busy after 150 ms, ten attempts allowed, 100 ms backoff doubling: unbounded this
    // would take about 100 s; the total timeout stops it within 600 ms.
    let server = FakeWeChat::start(|_, _| {
        Reply::json(errcode_body(-1)).with_delay(Duration::from_millis(150))
    });
    let client = client_for(&server)
        .with_busy_retry(10, Duration::from_millis(100))
        .with_total_timeout(Duration::from_millis(600));
    let started = Instant::now();
    let err = expect_err(&client, CODE);
    let elapsed = started.elapsed();
    assert!(
        matches!(err, WeChatError::Busy { .. } | WeChatError::Timeout { .. }),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_millis(1200), "took {elapsed:?}");
    let attempts = server.requests().len();
    assert!((2..=3).contains(&attempts), "{attempts} attempts");
}

#[test]
fn read_timeout_returns_promptly_as_504() {
    let server = FakeWeChat::start(|_, _| {
        Reply::json(r#"{"openid":"o","session_key":"a2V5"}"#).with_delay(Duration::from_secs(3))
    });
    let client = client_for(&server).with_read_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = expect_err(&client, CODE);
    let elapsed = started.elapsed();
    assert!(matches!(err, WeChatError::Timeout { .. }), "{err:?}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(err.node_code(), 6006);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn http_500_is_502() {
    let server = FakeWeChat::start(|_, _| Reply::text_plain("internal error").with_status(500));
    let err = expect_err(&client_for(&server), CODE);
    assert!(
        matches!(err, WeChatError::HttpStatus { status: 500 }),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(err.node_code(), 6005);
}

#[test]
fn redirect_is_not_followed() {
    let server = FakeWeChat::start(|_, _| {
        Reply::text_plain("")
            .with_status(302)
            .with_header("Location: http://127.0.0.1:9/elsewhere")
    });
    let err = expect_err(&client_for(&server), CODE);
    assert!(
        matches!(err, WeChatError::HttpStatus { status: 302 }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn garbage_body_is_502() {
    let server = FakeWeChat::start(|_, _| Reply::text_plain("<html>not json</html>"));
    let err = expect_err(&client_for(&server), CODE);
    assert!(
        matches!(err, WeChatError::InvalidResponse { .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(err.node_code(), 6004);
}

#[test]
fn missing_fields_are_502() {
    let server = FakeWeChat::fixed(r#"{"errcode":0,"openid":"o"}"#);
    let err = expect_err(&client_for(&server), CODE);
    assert!(
        matches!(err, WeChatError::InvalidResponse { .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[test]
fn empty_body_is_502() {
    let server = FakeWeChat::start(|_, _| Reply::text_plain(""));
    let err = expect_err(&client_for(&server), CODE);
    assert!(matches!(err, WeChatError::EmptyResponse), "{err:?}");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(err.node_code(), 6003);
}

#[test]
fn empty_code_is_rejected_without_calling_wechat() {
    let server = FakeWeChat::fixed(r#"{"openid":"o","session_key":"a2V5"}"#);
    let err = expect_err(&client_for(&server), "");
    assert!(matches!(err, WeChatError::MissingCode), "{err:?}");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(server.requests().is_empty());
}

#[test]
fn transport_error_is_502_and_hides_url() {
    let err = expect_err(&client_at(&closed_port_url()), CODE);
    assert!(matches!(err, WeChatError::Transport { .. }), "{err:?}");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(err.node_code(), 6006);
    assert_no_secrets(&format!("{err}"));
    assert_no_secrets(&format!("{err:?}"));
}

/// Runs `f` with every `tracing` event of this thread captured at TRACE level.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    (value, logs.text())
}

#[test]
fn secret_and_code_never_appear_in_errors_or_logs() {
    // WeChat's errmsg is echoed into the error, so a hostile or buggy upstream that repeats
    // the request must be scrubbed too.
    let echo = format!(r#"{{"errcode":40999,"errmsg":"you sent secret={SECRET} js_code={CODE}"}}"#);
    let echo_server = FakeWeChat::start(move |_, _| Reply::json(echo.clone()));
    let status_server = FakeWeChat::start(|_, _| Reply::text_plain("boom").with_status(503));
    let busy_server = FakeWeChat::start(|_, _| Reply::json(errcode_body(-1)));
    let misconfigured_server = FakeWeChat::start(|_, _| Reply::json(errcode_body(40125)));
    let timeout_server =
        FakeWeChat::start(|_, _| Reply::json(errcode_body(0)).with_delay(Duration::from_secs(2)));
    let targets = [
        closed_port_url(),
        // ureq's own error text for a bad URI quotes the whole URL, query included.
        "not a url".to_owned(),
        "http://".to_owned(),
        echo_server.base_url(),
        status_server.base_url(),
        busy_server.base_url(),
        misconfigured_server.base_url(),
        timeout_server.base_url(),
    ];
    for target in targets {
        let client = client_at(&target).with_read_timeout(Duration::from_millis(200));
        let (result, logs) = capture_logs(|| client.code2session_blocking(CODE));
        let err = result.expect_err(&target);
        assert_no_secrets(&format!("{err}"));
        assert_no_secrets(&format!("{err:?}"));
        assert_no_secrets(&logs);
        assert!(!logs.is_empty(), "{target}: failure was not logged");
    }
}

#[test]
fn misconfiguration_is_logged_as_error_naming_the_secret() {
    let server = FakeWeChat::start(|_, _| Reply::json(errcode_body(40125)));
    let client = client_for(&server);
    let (result, logs) = capture_logs(|| client.code2session_blocking(CODE));
    assert!(matches!(
        result,
        Err(WeChatError::Misconfigured { errcode: 40125 })
    ));
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(logs.contains("app secret"), "{logs}");
    assert!(logs.contains(APP_ID), "{logs}");
    assert_no_secrets(&logs);
}

#[test]
fn client_is_cheap_clone_send_sync_and_redacted() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<WeChatClient>();
    let client = WeChatClient::new(APP_ID, AppSecret::new(SECRET));
    let debug = format!("{:?}", client.clone());
    assert!(debug.contains(APP_ID));
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn async_exchange_runs_on_blocking_pool() {
    let server = FakeWeChat::fixed(r#"{"openid":"oAsync","session_key":"a2V5","unionid":"u"}"#);
    let client = client_for(&server);
    let future = client.code2session(CODE);
    // The future must be spawnable on a multi-threaded runtime.
    let session = tokio::spawn(future).await.unwrap().unwrap();
    assert_eq!(session.open_id, "oAsync");
    assert_eq!(session.union_id.as_deref(), Some("u"));
}

#[tokio::test]
async fn async_exchange_maps_errors() {
    let server = FakeWeChat::start(|_, _| Reply::json(errcode_body(40163)));
    let err = client_for(&server).code2session(CODE).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
}
