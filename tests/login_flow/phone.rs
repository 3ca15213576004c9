//! Phone numbers (`bind_phone`, `POST /auth/phone`, `phone_code` and the legacy `phone`
//! at login) and duplicate login codes, against the simulator over HTTP, a real sqlite
//! file and the binary's redis-server.

use axum::{Router, body::Body, http::Request};
use mpauthx::{
    AccessTokenManager, AuthorizeRequest, Error, MemoryTokenStore, MpAuth, MpAuthConfig, PhoneCode,
    SqliteUserStore, TokenStore, UserStore, WeChatError,
    testing::{SimEndpoint, WeChatSimulator},
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt as _;

use crate::common::{
    fake_wechat::{FakeWeChat, Reply},
    http::{Answer, json_post, with_bearer},
    keys::APP_ID,
    login::{READ_TIMEOUT, config, router},
    sim, stores, users,
};

/// `MpAuth` on the simulator at `base`, memory tokens, a sqlite file of its own.
struct Phone<T: TokenStore = MemoryTokenStore> {
    auth: MpAuth<T, SqliteUserStore>,
    app: Router,
    _dir: TempDir,
}

impl Phone {
    async fn on(base: &str) -> Self {
        Self::with(
            config().with_wechat_base_url(base),
            MemoryTokenStore::new(),
            None,
        )
        .await
    }
}

impl<T: TokenStore> Phone<T> {
    async fn with(config: MpAuthConfig, tokens: T, access: Option<AccessTokenManager>) -> Self {
        let (dir, db) = users::temp_db();
        let users = SqliteUserStore::open(&db).await.unwrap();
        let mut builder = MpAuth::builder(config, tokens, users);
        if let Some(access) = access {
            builder = builder.with_access_tokens(access);
        }
        let auth = builder.build();
        Self {
            app: router(&auth),
            auth,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        Answer::collect(self.app.clone().oneshot(request).await.unwrap()).await
    }

    /// Logs `user` in through the simulator; the token.
    async fn login(&self, sim: &WeChatSimulator, user: &str) -> String {
        let code = sim.login(user).unwrap().code;
        let authorized = self
            .auth
            .authorize(&AuthorizeRequest::new(code))
            .await
            .unwrap();
        authorized.token.expose().to_owned()
    }

    /// `POST /auth/phone` with `token` and `body`.
    async fn bind(&self, token: &str, body: &str) -> Answer {
        let request = with_bearer(
            Request::post("/auth/phone").header("content-type", "application/json"),
            token,
            Body::from(body.to_owned()),
        );
        self.send(request).await
    }

    async fn stored_phone(&self, sim: &WeChatSimulator, user: &str) -> Option<String> {
        let user = self
            .auth
            .users()
            .get(APP_ID, &sim.open_id(user))
            .await
            .unwrap()?;
        user.pure_phone_number
    }
}

fn code_body(code: &str) -> String {
    json!({ "code": code }).to_string()
}

#[tokio::test]
async fn a_phone_is_bound_stored_and_the_token_reused() {
    let sim = sim::simulator();
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let token = phone.login(&sim, "alice").await;
    let code = sim.phone_code("alice", "13800138000").unwrap();
    let answer = phone.bind(&token, &code_body(&code.code)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({"phone_number": "13800138000", "pure_phone_number": "13800138000", "country_code": "86"})
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(
        phone.stored_phone(&sim, "alice").await.as_deref(),
        Some("13800138000")
    );

    // A foreign number replaces it; the access token is fetched once for both.
    let code = sim.phone_code("alice", "+1 4155550100").unwrap();
    let answer = phone.bind(&token, &code_body(&code.code)).await;
    assert_eq!(answer.json()["phone_number"], "+1 4155550100");
    assert_eq!(answer.json()["country_code"], "1");
    let user = phone
        .auth
        .users()
        .get(APP_ID, &sim.open_id("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.pure_phone_number.as_deref(), Some("4155550100"));
    let calls = sim.calls();
    assert_eq!(
        (calls.stable_token, calls.phone_number, calls.force_refresh),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn numeric_country_codes_are_accepted() {
    let sim = sim::simulator().with_numeric_country_codes(true);
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let token = phone.login(&sim, "bob").await;
    let code = sim.phone_code("bob", "13800138000").unwrap();
    let answer = phone.bind(&token, &code_body(&code.code)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["country_code"], "86");
}

#[tokio::test]
async fn refused_phone_requests_get_their_statuses_and_bind_nothing() {
    let sim = sim::simulator();
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let token = phone.login(&sim, "alice").await;

    for body in ["{}", r#"{"code": ""}"#, r#"{"code": 7}"#, "not json"] {
        let answer = phone.bind(&token, body).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert_eq!(answer.json()["error"], "invalid_request");
    }
    let long = "x".repeat(300);
    assert_eq!(phone.bind(&token, &code_body(&long)).await.status, 400);

    let code = sim.phone_code("alice", "13800138000").unwrap().code;
    let unauthenticated = phone
        .send(json_post("/auth/phone", &code_body(&code)))
        .await;
    assert_eq!(unauthenticated.status, 401);

    let refused = phone.bind(&token, &code_body("never-minted")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "invalid_phone_code");
    assert!(refused.header("www-authenticate").is_some());

    // Another user's code: refused, and still good for its owner.
    let bobs = sim.phone_code("bob", "13900139000").unwrap().code;
    let stolen = phone.bind(&token, &code_body(&bobs)).await;
    assert_eq!(stolen.json()["error"], "invalid_phone_code");
    assert_eq!(phone.stored_phone(&sim, "alice").await, None);
    let bob = phone.login(&sim, "bob").await;
    assert_eq!(phone.bind(&bob, &code_body(&bobs)).await.status, 200);

    // Once only.
    assert_eq!(phone.bind(&token, &code_body(&code)).await.status, 200);
    let replay = phone.bind(&token, &code_body(&code)).await;
    assert_eq!(replay.json()["error"], "invalid_phone_code");

    let code = sim.phone_code("alice", "13700137000").unwrap().code;
    sim.fail_next(SimEndpoint::PhoneNumber, 45011, 1);
    let limited = phone.bind(&token, &code_body(&code)).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.header("retry-after").is_some());
    // The config asks WeChat three times while it is busy.
    sim.fail_next(SimEndpoint::PhoneNumber, -1, 3);
    let busy = phone.bind(&token, &code_body(&code)).await;
    assert_eq!(
        (busy.status.as_u16(), busy.json()["error"].as_str()),
        (503, Some("wechat_busy"))
    );
    // Neither refusal used the code up, and nothing was stored meanwhile.
    assert_eq!(
        phone.stored_phone(&sim, "alice").await.as_deref(),
        Some("13800138000")
    );
    assert_eq!(phone.bind(&token, &code_body(&code)).await.status, 200);
}

/// A WeChat whose `stable_token` works and whose phone endpoint answers `phone`.
fn phone_upstream(phone: Reply) -> FakeWeChat {
    FakeWeChat::start(move |request, _| {
        if request.path.ends_with("/cgi-bin/stable_token") {
            Reply::json(r#"{"access_token":"AT-upstream-1","expires_in":7200}"#)
        } else if request.path.ends_with("/sns/jscode2session") {
            Reply::json(crate::common::fake_wechat::session_body(
                "o-phone-user",
                None,
            ))
        } else {
            phone.clone()
        }
    })
}

#[tokio::test]
async fn upstream_garbage_is_502_and_a_timeout_504() {
    let cases = [
        (Reply::json("<html>oops</html>"), 502, "invalid_response"),
        (Reply::json(r#"{"errcode":0}"#), 502, "invalid_response"),
        (
            Reply::json(
                r#"{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1,"appid":"wx-someone-else"}}}"#,
            ),
            502,
            "invalid_response",
        ),
        (
            Reply::json("{}").with_status(500),
            502,
            "upstream_http_status",
        ),
        (
            Reply::json("{}").with_delay(READ_TIMEOUT * 3),
            504,
            "upstream_timeout",
        ),
    ];
    for (reply, status, error) in cases {
        let fake = phone_upstream(reply);
        let phone = Phone::on(&fake.base_url()).await;
        let login = phone
            .auth
            .authorize(&AuthorizeRequest::new("c"))
            .await
            .unwrap();
        let answer = phone.bind(login.token.expose(), &code_body("pc-1")).await;
        assert_eq!(
            (answer.status.as_u16(), answer.json()["error"].as_str()),
            (status, Some(error)),
            "{answer:?}"
        );
        assert_eq!(
            phone
                .auth
                .users()
                .get(APP_ID, "o-phone-user")
                .await
                .unwrap()
                .unwrap()
                .phone_number,
            None
        );
    }
}

#[tokio::test]
async fn a_wrong_app_secret_is_500() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let good = Phone::on(&base).await;
    let token = good.login(&sim, "alice").await;
    // Another server of the same app with a wrong secret, sharing the tokens.
    let wrong = MpAuthConfig::new(APP_ID, "not-the-secret", "demo")
        .unwrap()
        .with_wechat_base_url(&base);
    let bad = Phone::with(wrong, good.auth.tokens().clone(), None).await;
    let user = bad.auth.validate(&token).await.unwrap();
    let code = sim.phone_code("alice", "13800138000").unwrap();
    let error = bad
        .auth
        .bind_phone(&user, PhoneCode::new(code.code))
        .await
        .unwrap_err();
    assert_eq!(
        (error.status().as_u16(), error.oauth_error()),
        (500, "app_misconfigured")
    );
    assert_eq!(sim.calls().phone_number, 0, "no token, no phone call");
}

#[tokio::test]
async fn a_login_binds_its_phone_code_in_one_request() {
    let sim = sim::simulator();
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let login = sim.login("carol").unwrap();
    let code = sim.phone_code("carol", "13800138000").unwrap();
    let answer = phone
        .send(json_post(
            "/auth/authorize",
            &json!({"code": login.code, "phone_code": code.code}).to_string(),
        ))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["phone"]["pure_phone_number"], "13800138000");
    assert_eq!(
        phone.stored_phone(&sim, "carol").await.as_deref(),
        Some("13800138000")
    );

    // A refused phone code fails the login: no user, no token.
    let login = sim.login("dave").unwrap();
    let refused = phone
        .send(json_post(
            "/auth/authorize",
            &json!({"code": login.code, "phone_code": "never-minted"}).to_string(),
        ))
        .await;
    assert_eq!(refused.json()["error"], "invalid_phone_code");
    assert!(
        phone
            .auth
            .users()
            .get(APP_ID, &sim.open_id("dave"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        phone
            .auth
            .tokens()
            .list(&crate::common::keys::sku(), &sim.open_id("dave"))
            .await
            .unwrap()
            .is_empty()
    );

    let both = json!({"code": "c", "phone_code": "p", "phone": {"encryptedData": "x", "iv": "y"}});
    let answer = phone
        .send(json_post("/auth/authorize", &both.to_string()))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        sim.calls().jscode2session,
        2,
        "a malformed request asks WeChat nothing"
    );
}

#[tokio::test]
async fn a_login_decrypts_the_legacy_phone_data() {
    let sim = sim::simulator().with_numeric_country_codes(true);
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let login = sim.login_with_phone("erin", "+852 61234567").unwrap();
    let answer = phone
        .send(json_post(
            "/auth/authorize",
            &login.authorize_body().to_string(),
        ))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["phone"]["country_code"], "852");
    assert_eq!(
        phone.stored_phone(&sim, "erin").await.as_deref(),
        Some("61234567")
    );
    assert_eq!(
        sim.calls().stable_token,
        0,
        "legacy data needs no access token"
    );

    let login = sim.login_with_phone("frank", "13800138000").unwrap();
    let mut body = login.authorize_body();
    body["phone"]["iv"] = Value::from("AAAAAAAAAAAAAAAAAAAAAA==");
    let tampered = phone
        .send(json_post("/auth/authorize", &body.to_string()))
        .await;
    assert_eq!(
        (tampered.status.as_u16(), tampered.json()["error"].as_str()),
        (400, Some("invalid_encrypted_data"))
    );
    assert!(
        phone
            .auth
            .users()
            .get(APP_ID, &sim.open_id("frank"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_login_codes_are_one_login() {
    let sim = sim::simulator();
    let phone = Phone::on(&sim::serve(&sim).await).await;
    let code = sim.login("gina").unwrap().code;
    let body = json!({ "code": code }).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (app, body) = (phone.app.clone(), body.clone());
        tasks.spawn(async move {
            let response = app
                .oneshot(json_post("/auth/authorize", &body))
                .await
                .unwrap();
            Answer::collect(response).await
        });
    }
    let answers = tasks.join_all().await;
    let tokens: Vec<_> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            a.json()["token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "one login, one token"
    );
    assert_eq!(sim.calls().jscode2session, 1);
    assert_eq!(
        phone
            .auth
            .tokens()
            .list(&crate::common::keys::sku(), &sim.open_id("gina"))
            .await
            .unwrap()
            .len(),
        1
    );

    let replay = phone.send(json_post("/auth/authorize", &body)).await;
    assert_eq!(
        (replay.status.as_u16(), replay.json()["error"].as_str()),
        (401, Some("invalid_code"))
    );
    assert_eq!(sim.calls().jscode2session, 2);
}

#[tokio::test]
async fn with_redis_down_a_phone_bind_is_503_while_logins_on_memory_work() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (mut server, store, _) = stores::dedicated("phone-redis-down").await;
    let config = config().with_wechat_base_url(&base);
    let access = AccessTokenManager::redis(config.wechat().clone(), &store);
    let phone = Phone::with(config, MemoryTokenStore::new(), Some(access)).await;
    let token = phone.login(&sim, "alice").await;
    let user = phone.auth.validate(&token).await.unwrap();

    tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let code = sim.phone_code("alice", "13800138000").unwrap().code;
    let answer = phone.bind(&token, &code_body(&code)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    let error = phone
        .auth
        .bind_phone(&user, PhoneCode::new(code.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    assert_eq!(sim.calls().phone_number, 0, "the code is not spent");
    // Logins need no access token: they work on the memory token store.
    let _ = phone.login(&sim, "bob").await;
}

#[test]
fn phone_codes_and_access_tokens_never_show_in_debug() {
    let code = PhoneCode::new("pc-secret-123");
    let token = mpauthx::AccessToken::new("at-secret-456");
    let request = AuthorizeRequest::new("c").with_phone_code("pc-secret-789");
    let shown = format!("{code:?} {token:?} {request:?}");
    for secret in ["pc-secret-123", "at-secret-456", "pc-secret-789"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let error = WeChatError::AccessTokenRejected { errcode: 40001 };
    assert_eq!(error.status(), 502);
}

#[tokio::test]
async fn phone_binds_count_against_the_per_user_login_limit() {
    use mpauthx::{LoginThrottle, MemoryRateLimiter, RateLimit};

    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (dir, db) = users::temp_db();
    let users = SqliteUserStore::open(&db).await.unwrap();
    let throttle = LoginThrottle::new(MemoryRateLimiter::new())
        .per_user(RateLimit::new(2, std::time::Duration::from_secs(60)).unwrap());
    let auth = MpAuth::builder(
        config().with_wechat_base_url(&base),
        MemoryTokenStore::new(),
        users,
    )
    .with_login_throttle(throttle)
    .build();
    let phone = Phone {
        app: router(&auth),
        auth,
        _dir: dir,
    };
    let token = phone.login(&sim, "paula").await; // the first of two
    let first = sim.phone_code("paula", "13800138000").unwrap().code;
    assert_eq!(phone.bind(&token, &code_body(&first)).await.status, 200);
    let second = sim.phone_code("paula", "13800138001").unwrap().code;
    let limited = phone.bind(&token, &code_body(&second)).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.header("retry-after").is_some());
    assert_eq!(
        sim.calls().phone_number,
        1,
        "the limited bind asked WeChat nothing"
    );
}
