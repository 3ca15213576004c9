//! No secret reaches the logs: every `tracing` event and every `log` record (ureq's among
//! them, through `tracing_log::LogTracer`) is captured at TRACE during whole login flows,
//! failing ones included, and searched for the app secret, session keys, tokens, login
//! codes and encrypted profiles.
//!
//! ureq records the request line (query included) and a hex dump of every byte on the
//! wire at TRACE, so the WeChat client refuses to call WeChat while that output would be
//! recorded. One test shows the refusal under TRACE for everything, one that logins work
//! with ureq's targets filtered to DEBUG, and a control shows that the capture does catch
//! ureq's TRACE output, so the searches can fail.
//!
//! The subscriber is global (the WeChat exchange runs on Tokio's blocking pool, where a
//! thread-local subscriber would see nothing), so the tests take turns.

mod common;

use std::{ops::Deref, sync::OnceLock, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{
    fake_wechat::{FakeWeChat, Received, Reply, session_body},
    http::{hello_app, me_request},
    keys::{
        APP_ID, SECRET, SESSION_KEY_BYTES, SKU, encrypted, profile_json, session_key, signature,
        sku,
    },
    login::{Fixture, config, pointed_at},
    logs::LogBuffer,
    stores::shared_redis,
};
use http::StatusCode;
use mpauthx::{
    AccessTokenManager, AppSecret, AuthorizeRequest, Error, IssueOptions, MpAuth, MpAuthConfig,
    PhoneCode, RedisTokenStore, Session, SessionKey, Sku, SqliteUserStore, Token, TokenStore,
    WeChatClient, WeChatError,
};
use tower::ServiceExt as _;
use tracing_subscriber::{EnvFilter, Registry, layer::SubscriberExt as _, reload};

/// The secret a misconfigured second server uses; WeChat answers it with errcode 40125.
const WRONG_SECRET: &str = "WRONGSECRETm3Pj7Dy5Fs0Ga2Ue8";
const OPEN_ID: &str = "oSecretsLog_user1";
/// The filter of a production deployment that wants everything else at TRACE.
const NORMAL_FILTER: &str = "trace,ureq=debug,ureq_proto=debug";

// ---------------------------------------------------------------------------------------
// Capture: one global subscriber, its filter reloadable, writing into a buffer
// ---------------------------------------------------------------------------------------

struct Capture {
    buffer: LogBuffer,
    filter: reload::Handle<EnvFilter, Registry>,
}

/// Installs the global subscriber and the `log` bridge once.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let (filter, handle) = reload::Layer::new(EnvFilter::new("trace"));
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(true)
                // The flows' spans, with the fields they recorded, when they close.
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        tracing_log::LogTracer::init().expect("first logger");
        Capture {
            buffer,
            filter: handle,
        }
    })
}

/// Serializes the tests: they share the capture.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Capture {
    /// Starts a capture with `filter` (an `EnvFilter` directive string).
    fn start(&self, filter: &str) {
        self.filter
            .reload(EnvFilter::new(filter))
            .expect("reload the filter");
        self.buffer.clear();
    }

    fn text(&self) -> String {
        self.buffer.text()
    }
}

/// The bytes of ureq-proto's TRACE hex dumps (`0a1b 2c3d … ascii`), decoded, so that a
/// secret split across dump rows is still found.
fn hex_dumped_bytes(logs: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in logs.lines() {
        let Some((_, row)) = line.split_once("ureq_proto::util: ") else {
            continue;
        };
        for group in row.split(' ').take(8) {
            for pair in group.as_bytes().chunks(2) {
                if let Ok(byte) = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or(""), 16) {
                    bytes.push(byte);
                }
            }
        }
    }
    bytes
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A `tracing` and a `log` record at TRACE, to show that the capture takes both.
fn emit_trace_probes() {
    tracing::trace!(target: "app", "tracing probe");
    log::trace!(target: "app", "log probe");
}

#[track_caller]
fn assert_trace_is_captured(logs: &str) {
    for probe in ["TRACE app: tracing probe", "TRACE app: log probe"] {
        assert!(logs.contains(probe), "no {probe:?} in:\n{logs}");
    }
}

/// Every secret of a flow, with a name for the failure message.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn with_defaults() -> Self {
        let mut secrets = Self::default();
        secrets.add("app secret", SECRET);
        secrets.add("wrong app secret", WRONG_SECRET);
        secrets.add("session_key (base64)", &session_key());
        secrets.add("session_key (hex)", &hex::encode(SESSION_KEY_BYTES));
        secrets.add("session_key (HEX)", &hex::encode_upper(SESSION_KEY_BYTES));
        secrets.add(
            "session_key (raw)",
            std::str::from_utf8(SESSION_KEY_BYTES).unwrap(),
        );
        secrets
    }

    fn add(&mut self, name: &str, value: &str) {
        assert!(value.len() >= 8, "{name} is too short to search for");
        self.0.push((name.to_owned(), value.to_owned()));
    }

    fn add_token(&mut self, token: &str) {
        self.add("token", token);
        let secret_part = token.rsplit('.').next().unwrap();
        assert_eq!(secret_part.len(), 43);
        self.add("token secret part", secret_part);
    }

    /// None of the secrets appears in the text, nor in the bytes ureq dumped.
    #[track_caller]
    fn assert_absent_from(&self, logs: &str) {
        let dumped = hex_dumped_bytes(logs);
        for (name, value) in &self.0 {
            assert!(
                !logs.contains(value.as_str()),
                "{name} {value:?} was logged:\n{logs}"
            );
            assert!(
                !contains_bytes(&dumped, value.as_bytes()),
                "{name} {value:?} was hex-dumped by ureq:\n{logs}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The flow: a fake WeChat, MpAuth over Redis and a sqlite file, and the layer
// ---------------------------------------------------------------------------------------

/// A WeChat that checks the app secret (40125 otherwise) and refuses codes starting
/// with `bad` (40029); any other code logs in `OPEN_ID`.
fn fake_wechat() -> FakeWeChat {
    FakeWeChat::start(|request: &Received, _| {
        let body = if request.param("secret") != Some(SECRET) {
            serde_json::json!({ "errcode": 40125, "errmsg": "invalid appsecret" })
        } else if request
            .param("js_code")
            .is_some_and(|c| c.starts_with("bad"))
        {
            serde_json::json!({ "errcode": 40029, "errmsg": "invalid code" })
        } else {
            return Reply::json(session_body(OPEN_ID, None));
        };
        Reply::json(body.to_string())
    })
}

/// The login fixture on Redis against [`fake_wechat`], and a second `MpAuth` on the same
/// stores whose app secret WeChat refuses.
struct Flow {
    fx: Fixture<RedisTokenStore>,
    misconfigured: MpAuth<RedisTokenStore, SqliteUserStore>,
}

impl Deref for Flow {
    type Target = Fixture<RedisTokenStore>;

    fn deref(&self) -> &Fixture<RedisTokenStore> {
        &self.fx
    }
}

impl Flow {
    async fn new(test: &str) -> Self {
        let read_timeout = Duration::from_secs(2);
        let tokens = shared_redis(test).await;
        let config = config().with_wechat_read_timeout(read_timeout);
        let fx = Fixture::with_config(tokens, fake_wechat(), config).await;
        let wrong = MpAuthConfig::new(APP_ID, WRONG_SECRET, SKU)
            .unwrap()
            .with_wechat_read_timeout(read_timeout);
        let misconfigured = MpAuth::new(
            pointed_at(wrong, &fx.fake),
            fx.auth.tokens().clone(),
            fx.auth.users().clone(),
        );
        Self { fx, misconfigured }
    }

    /// What the layer answers to a request bearing `token`.
    async fn through_layer(&self, token: &str) -> StatusCode {
        let app = hello_app(&self.auth.layer());
        app.oneshot(me_request(token)).await.unwrap().status()
    }
}

/// A login code nobody could guess, recorded as a secret.
fn code(secrets: &mut Secrets, label: &str) -> String {
    let random = Token::generate(&Sku::new("c").unwrap(), "c").unwrap();
    let random = random.expose().rsplit('.').next().unwrap();
    let code: String = format!("{label}{random}")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    secrets.add("login code", &code);
    code
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// The normal case: everything at TRACE except ureq's targets at DEBUG. Every operation
/// works, and nothing secret is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_with_ureq_filtered_logs_in_and_leaks_nothing() {
    let _turn = TURN.lock().await;
    let capture = capture();
    capture.start(NORMAL_FILTER);
    emit_trace_probes();
    let flow = Flow::new("filtered").await;
    let mut secrets = Secrets::with_defaults();

    // A login with an encrypted profile and a signed rawData.
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    secrets.add("encryptedData", &profile.encrypted_data);
    secrets.add("iv", &profile.iv);
    let raw_data = r#"{"nickName":"Ada","gender":2}"#;
    let login = AuthorizeRequest::new(code(&mut secrets, "good"))
        .with_encrypted_profile(&profile.encrypted_data, &profile.iv)
        .with_signature(raw_data, signature(raw_data))
        .with_device("Pixel 9");
    let first = flow.auth.authorize(&login).await.expect("login works");
    assert_eq!(
        first.user.as_ref().unwrap().nick_name.as_deref(),
        Some("Ada")
    );
    secrets.add_token(first.token.expose());

    // Through the layer: the live token passes, a forged one is refused.
    assert_eq!(
        flow.through_layer(first.token.expose()).await,
        StatusCode::OK
    );
    let forged = Token::generate(&sku(), OPEN_ID).unwrap();
    secrets.add_token(forged.expose());
    assert_eq!(
        flow.through_layer(forged.expose()).await,
        StatusCode::UNAUTHORIZED
    );

    // Refresh, then logout of the successor, then logout on every device.
    let refreshed = flow.auth.refresh(first.token.expose()).await.unwrap();
    secrets.add_token(refreshed.token.expose());
    assert_eq!(
        flow.through_layer(first.token.expose()).await,
        StatusCode::UNAUTHORIZED
    );
    flow.auth.logout(refreshed.token.expose()).await.unwrap();
    let phone = flow
        .auth
        .authorize(&AuthorizeRequest::new(code(&mut secrets, "good")))
        .await
        .unwrap();
    secrets.add_token(phone.token.expose());
    let tablet = flow
        .auth
        .authorize(&AuthorizeRequest::new(code(&mut secrets, "good")))
        .await
        .unwrap();
    secrets.add_token(tablet.token.expose());
    assert_eq!(flow.auth.logout_all(OPEN_ID).await.unwrap(), 2);

    // Failing logins: a refused code, a tampered profile, a wrong app secret.
    let error = flow
        .refused(&AuthorizeRequest::new(code(&mut secrets, "bad")))
        .await;
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{error:?}");
    let mut tampered = STANDARD.decode(&profile.encrypted_data).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    let tampered = STANDARD.encode(tampered);
    secrets.add("tampered encryptedData", &tampered);
    let error = flow
        .refused(
            &AuthorizeRequest::new(code(&mut secrets, "good"))
                .with_encrypted_profile(&tampered, &profile.iv),
        )
        .await;
    assert!(matches!(error, Error::Decrypt(_)), "{error:?}");
    let error = flow
        .misconfigured
        .authorize(&AuthorizeRequest::new(code(&mut secrets, "good")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WeChat(WeChatError::Misconfigured { errcode: 40125 })
        ),
        "{error:?}"
    );
    // The error responses themselves, as the handlers log and send them.
    let response = error.into_response_with(|body| body);
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    assert!(!body.contains(WRONG_SECRET), "{body}");

    assert_eq!(flow.fake.requests().len(), 6, "every login reached WeChat");
    assert_eq!(flow.all_rows(), 1);
    let logs = capture.text();

    // The capture saw the flow: our own events, and ureq's `log` records at DEBUG.
    for expected in [
        "user logged in",
        "WeChat refused the call",
        "WeChat rejected the configured app secret",
        "ureq::run",
        "/******",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("TRACE") && (l.contains("ureq::") || l.contains("ureq_proto::"))),
        "ureq's TRACE output was not filtered:\n{logs}"
    );
    assert_trace_is_captured(&logs);
    secrets.assert_absent_from(&logs);
}

/// Phone numbers and the shared access token, everything at TRACE but ureq: no access
/// token, phone code or full phone number reaches the logs, through a login with a
/// phone code, binds, an upstream revocation (a refresh), a forced refresh, refused
/// codes and a server with a wrong secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_flow_leaks_no_access_token_phone_code_or_number() {
    let _turn = TURN.lock().await;
    let capture = capture();
    capture.start(NORMAL_FILTER);
    emit_trace_probes();
    let sim = common::sim::simulator();
    let base = common::sim::serve(&sim).await;
    let store = shared_redis("secrets-phone").await;
    let config = config().with_wechat_base_url(&base);
    let access = AccessTokenManager::redis(config.wechat().clone(), &store);
    let (dir, db) = common::users::temp_db();
    let users = SqliteUserStore::open(&db).await.unwrap();
    let auth = MpAuth::builder(config, store.clone(), users)
        .with_access_tokens(access.clone())
        .build();
    let mut secrets = Secrets::with_defaults();
    let access_token = |secrets: &mut Secrets| {
        let token = sim.current_access_token().expect("a live access token");
        secrets.add("access token", &token);
    };
    let phone_code = |secrets: &mut Secrets, user: &str, number: &str| {
        let code = sim.phone_code(user, number).unwrap().code;
        secrets.add("phone code", &code);
        code
    };

    // A login that binds its phone in the same request.
    let login = sim.login("alice").unwrap().code;
    secrets.add("login code", &login);
    let code = phone_code(&mut secrets, "alice", "13800138000");
    let first = auth
        .authorize(&AuthorizeRequest::new(login).with_phone_code(code))
        .await
        .expect("login and bind");
    secrets.add_token(first.token.expose());
    secrets.add("phone number", "13800138000");
    access_token(&mut secrets);
    let user = auth.validate(first.token.expose()).await.unwrap();
    let refreshed = auth.refresh(first.token.expose()).await.unwrap();
    secrets.add_token(refreshed.token.expose());

    // A bind; an upstream revocation (one refresh); a dead token handed back (forced).
    let code = phone_code(&mut secrets, "alice", "13911112222");
    secrets.add("phone number", "13911112222");
    auth.bind_phone(&user, PhoneCode::new(code)).await.unwrap();
    sim.revoke_access_tokens();
    let code = phone_code(&mut secrets, "alice", "13800138000");
    auth.bind_phone(&user, PhoneCode::new(code)).await.unwrap();
    access_token(&mut secrets);
    sim.serve_revoked_tokens(true);
    sim.revoke_access_tokens();
    let code = phone_code(&mut secrets, "alice", "13800138000");
    auth.bind_phone(&user, PhoneCode::new(code)).await.unwrap();
    access_token(&mut secrets);
    assert_eq!(sim.calls().force_refresh, 1);

    // Refusals: a code of another user, a replayed one, a made-up one.
    let bobs = phone_code(&mut secrets, "bob", "13700001111");
    let error = auth
        .bind_phone(&user, PhoneCode::new(bobs.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.oauth_error(), "invalid_phone_code");
    let made_up = "made-up-phone-code-0001";
    secrets.add("made-up phone code", made_up);
    let error = auth
        .bind_phone(&user, PhoneCode::new(made_up))
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    // A server with a wrong secret cannot fetch a token: 500, logged as such.
    let wrong = MpAuthConfig::new(APP_ID, WRONG_SECRET, SKU)
        .unwrap()
        .with_wechat_base_url(&base);
    let stranger = AccessTokenManager::memory(wrong.wechat().clone());
    let error = stranger.access_token().await.unwrap_err();
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drop(dir);

    let logs = capture.text();
    for expected in [
        "user logged in",
        "phone bound",
        "fetched a WeChat access_token",
        "WeChat refused the access_token",
        "forcing a refresh",
        "WeChat rejected the configured app secret",
        "+86 138******00",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    // One span per flow, closed with its outcome and fields.
    let closed = |name: &str, outcome: &str| {
        logs.lines().any(|l| {
            l.contains(&format!(" {name}{{")) && l.contains("close") && l.contains(outcome)
        })
    };
    let user_id = sim.open_id("alice");
    for (name, outcome) in [
        ("login", "outcome=\"ok\""),
        ("refresh", "outcome=\"ok\""),
        ("phone_bind", "outcome=\"ok\""),
        ("phone_bind", "outcome=\"invalid_phone_code\""),
    ] {
        assert!(
            closed(name, outcome),
            "no {name} span closed with {outcome}:\n{logs}"
        );
    }
    for line in logs
        .lines()
        .filter(|l| l.contains(" login{") && l.contains("close"))
    {
        for field in ["user=", "token=", "wechat_ms="] {
            assert!(line.contains(field), "{field} in {line}");
        }
        assert!(line.contains(&user_id), "{line}");
    }
    assert_trace_is_captured(&logs);
    secrets.assert_absent_from(&logs);
}

/// TRACE for everything, ureq included: the client refuses to send the secret, says
/// once how to fix the filter, and nothing secret is logged by any other operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_for_everything_refuses_the_exchange_and_leaks_nothing() {
    let _turn = TURN.lock().await;
    let capture = capture();
    capture.start("trace");
    emit_trace_probes();
    let flow = Flow::new("trace_all").await;
    let mut secrets = Secrets::with_defaults();

    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    secrets.add("encryptedData", &profile.encrypted_data);
    secrets.add("iv", &profile.iv);
    let raw_data = r#"{"nickName":"Ada"}"#;
    let login = AuthorizeRequest::new(code(&mut secrets, "good"))
        .with_encrypted_profile(&profile.encrypted_data, &profile.iv)
        .with_signature(raw_data, signature(raw_data));
    let error = flow.refused(&login).await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::SecretsWouldBeLogged)),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    for (auth, label) in [(&flow.auth, "bad"), (&flow.misconfigured, "good")] {
        let error = auth
            .authorize(&AuthorizeRequest::new(code(&mut secrets, label)))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::WeChat(WeChatError::SecretsWouldBeLogged)),
            "{error:?}"
        );
    }
    assert!(
        flow.fake.requests().is_empty(),
        "a secret was sent while TRACE was on"
    );
    assert_eq!(flow.all_rows(), 0);
    assert!(flow.live(OPEN_ID).await.is_empty());

    // Everything that does not call WeChat still works, and logs nothing secret.
    let token = Token::generate(&sku(), OPEN_ID).unwrap();
    flow.auth
        .tokens()
        .issue(&token, &IssueOptions::default())
        .await
        .unwrap();
    secrets.add_token(token.expose());
    assert_eq!(flow.through_layer(token.expose()).await, StatusCode::OK);
    let refreshed = flow.auth.refresh(token.expose()).await.unwrap();
    secrets.add_token(refreshed.token.expose());
    assert_eq!(
        flow.through_layer(token.expose()).await,
        StatusCode::UNAUTHORIZED
    );
    flow.auth.logout(refreshed.token.expose()).await.unwrap();
    assert_eq!(flow.auth.logout_all(OPEN_ID).await.unwrap(), 0);

    let logs = capture.text();
    let refusals: Vec<_> = logs
        .lines()
        .filter(|l| l.contains("refusing to call WeChat"))
        .collect();
    assert_eq!(refusals.len(), 3, "one error per refused login:\n{logs}");
    for refusal in refusals {
        assert!(refusal.starts_with("ERROR "), "{refusal}");
        assert!(refusal.contains("ureq=debug,ureq_proto=debug"), "{refusal}");
    }
    assert_trace_is_captured(&logs);
    secrets.assert_absent_from(&logs);
}

/// The control: under the same capture, ureq called directly does put the secret, the
/// code and the session key into the logs, so the searches above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_the_capture_sees_what_ureq_logs_at_trace() {
    let _turn = TURN.lock().await;
    let capture = capture();
    let fake = fake_wechat();
    let url = format!(
        "{}/sns/jscode2session?appid={APP_ID}&secret={SECRET}&js_code=controlcode1234",
        fake.base_url()
    );
    let get = |url: String| {
        tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap()
        })
    };

    capture.start("trace");
    let body = get(url.clone()).await.unwrap();
    assert!(body.contains(&session_key()), "{body}");
    let logs = capture.text();
    assert!(
        logs.contains(SECRET),
        "the request line was not captured:\n{logs}"
    );
    let dumped = hex_dumped_bytes(&logs);
    assert!(
        contains_bytes(&dumped, session_key().as_bytes()),
        "the response bytes were not captured:\n{logs}"
    );
    assert!(contains_bytes(&dumped, SECRET.as_bytes()));
    let mut secrets = Secrets::with_defaults();
    secrets.add("login code", "controlcode1234");
    let caught = std::panic::catch_unwind(|| secrets.assert_absent_from(&logs));
    assert!(caught.is_err(), "the detector missed a leak");

    // And with the documented filter, ureq keeps them out.
    capture.start(NORMAL_FILTER);
    get(url).await.unwrap();
    let logs = capture.text();
    assert!(
        logs.contains("ureq"),
        "ureq's DEBUG records were not captured:\n{logs}"
    );
    secrets.assert_absent_from(&logs);
}

/// `Debug` of every type that holds a secret redacts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_redacts_secrets() {
    let flow = Flow::new("debug").await;
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    let token = Token::generate(&sku(), OPEN_ID).unwrap();
    let request = AuthorizeRequest::new("codeDebug12345678")
        .with_encrypted_profile(&profile.encrypted_data, &profile.iv)
        .with_signature("rawDataDebug", "signatureDebug99")
        .with_device("Pixel 9");
    let session = Session {
        open_id: OPEN_ID.to_owned(),
        union_id: None,
        session_key: SessionKey::new(session_key()),
    };
    let password = "hunter2-redis-pass";
    let builder = RedisTokenStore::builder(format!("redis://:{password}@127.0.0.1:6379/0"));
    let user_builder = RedisTokenStore::builder(format!("redis://admin:{password}@127.0.0.1/"));

    let texts = [
        format!("{:?}", MpAuthConfig::new(APP_ID, SECRET, SKU).unwrap()),
        format!("{token:?}"),
        format!("{:?}", token.parsed()),
        format!("{request:?}"),
        format!("{:?}", WeChatClient::new(APP_ID, AppSecret::new(SECRET))),
        format!("{:?}", AppSecret::new(SECRET)),
        format!("{session:?}"),
        format!("{:?}", session.session_key),
        format!("{builder:?}"),
        format!("{user_builder:?}"),
        format!("{:?}", flow.auth),
    ];
    let mut secrets = Secrets::with_defaults();
    secrets.add_token(token.expose());
    secrets.add("login code", "codeDebug12345678");
    secrets.add("encryptedData", &profile.encrypted_data);
    secrets.add("iv", &profile.iv);
    secrets.add("rawData", "rawDataDebug");
    secrets.add("signature", "signatureDebug99");
    secrets.add("redis password", password);
    for text in &texts {
        secrets.assert_absent_from(text);
    }
    // They still say what they are.
    assert!(texts[0].contains(APP_ID), "{}", texts[0]);
    assert!(texts[3].contains("Pixel 9"), "{}", texts[3]);
    assert!(texts[6].contains(OPEN_ID), "{}", texts[6]);
    assert!(texts[8].contains("RedisTokenStoreBuilder"), "{}", texts[8]);
}
