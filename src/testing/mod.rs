//! Test support (feature `testing`): a WeChat simulator, so that a login flow runs
//! offline, in tests or on a laptop, with no mini-program and no network.
//!
//! [`WeChatSimulator`] plays WeChat's side of a login. It mints one-time login codes
//! for named test users (what `wx.login()` hands a mini-program), optionally with
//! encrypted profile data (what `wx.getUserInfo()` hands it), and answers
//! `GET /sns/jscode2session` exactly as WeChat does, errcodes included; it also issues
//! access tokens and exchanges phone codes (see below). The same name is always the
//! same user: its openid is derived from the name and the app id.
//!
//! Serve [`jscode2session_handler`](WeChatSimulator::jscode2session_handler) on a
//! local port, point [`MpAuth`](crate::MpAuth)'s WeChat client at it, and the real
//! login path runs end to end:
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpauthx::{MemoryTokenStore, MpAuth, MpAuthConfig, SqliteUserStore, testing::WeChatSimulator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = WeChatSimulator::new("wx-test-app", "test-secret");
//! let wechat_api = Router::new().route("/sns/jscode2session", get(sim.jscode2session_handler()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base_url = format!("http://{}", listener.local_addr()?);
//! tokio::spawn(async move { axum::serve(listener, wechat_api).await });
//!
//! let config = MpAuthConfig::new(sim.app_id(), sim.app_secret().expose_secret(), "demo")?
//!     .with_wechat_base_url(base_url);
//! let users = SqliteUserStore::open_in_memory().await?;
//! let auth = MpAuth::new(config, MemoryTokenStore::new(), users);
//!
//! let login = sim.login_with_profile("alice")?;
//! let authorized = auth.authorize(&login.authorize_request()).await?;
//! let user = authorized.user.expect("logins return the user");
//! assert_eq!(user.open_id, sim.open_id("alice"));
//! assert_eq!(user.nick_name.as_deref(), Some("alice"));
//!
//! // Codes are one-time, as on WeChat: a replay is refused with 401.
//! let replay = auth.authorize(&login.authorize_request()).await.unwrap_err();
//! assert_eq!(replay.status(), 401);
//! # Ok(()) }
//! ```
//!
//! [`mint_handler`](WeChatSimulator::mint_handler) serves the minting over HTTP
//! (`POST {"user": "alice", "profile": true}`), which is how the example server lets
//! you walk the flow with curl. The simulator checks its app secret in constant time,
//! keeps at most [`DEFAULT_MAX_CODES`] codes and forgets them after
//! [`DEFAULT_CODE_TTL`], like WeChat. It is for tests and demos: never mount it in
//! production, where anyone could mint logins with it.
//!
//! # Access tokens and phone numbers
//!
//! The simulator also plays WeChat's server-to-server APIs, each as a handler, a
//! library call and an entry of [`SimEndpoint`]:
//!
//! | Endpoint | Handler | Library call |
//! |---|---|---|
//! | `GET /sns/jscode2session` | [`jscode2session_handler`](WeChatSimulator::jscode2session_handler) | [`jscode2session`](WeChatSimulator::jscode2session) |
//! | `POST /cgi-bin/stable_token` | [`stable_token_handler`](WeChatSimulator::stable_token_handler) | [`stable_token`](WeChatSimulator::stable_token) |
//! | `GET /cgi-bin/token` | [`token_handler`](WeChatSimulator::token_handler) | [`token`](WeChatSimulator::token) |
//! | `POST /wxa/business/getuserphonenumber` | [`phone_number_handler`](WeChatSimulator::phone_number_handler) | [`get_user_phone_number`](WeChatSimulator::get_user_phone_number) |
//!
//! They answer HTTP 200 with JSON, errcodes included, as WeChat does. `stable_token`
//! hands back the same access token until its last five minutes, and a
//! `force_refresh` invalidates the earlier ones, at most
//! [`DEFAULT_FORCE_REFRESH_LIMIT`] times and 30 seconds apart; the legacy `token`
//! endpoint issues a new token on every call. `getuserphonenumber` checks its
//! `access_token` as every WeChat API does
//! ([`check_access_token`](WeChatSimulator::check_access_token)) and exchanges a
//! one-time phone code, what `<button open-type="getPhoneNumber">` hands a mini-program:
//! mint one with [`phone_code`](WeChatSimulator::phone_code), or over HTTP with
//! [`phone_mint_handler`](WeChatSimulator::phone_mint_handler)
//! (`POST {"user": "alice", "phone": "13800138000"}`).
//! [`login_with_phone`](WeChatSimulator::login_with_phone) (or `"phone"` in the body
//! of `mint_handler`) mints the legacy encrypted phone data instead.
//!
//! To test a client's error paths, [`revoke_access_tokens`](WeChatSimulator::revoke_access_tokens)
//! kills every token, [`serve_revoked_tokens`](WeChatSimulator::serve_revoked_tokens)
//! keeps handing out a revoked one (WeChat's bug that `force_refresh` exists for),
//! [`fail_next`](WeChatSimulator::fail_next) makes an endpoint answer an errcode of
//! your choosing, and [`calls`](WeChatSimulator::calls) counts the calls each
//! endpoint received.
//!
//! The example server mounts them all under `/sim`: `/sim/sns/jscode2session`,
//! `/sim/cgi-bin/stable_token`, `/sim/cgi-bin/token`,
//! `/sim/wxa/business/getuserphonenumber`, `/sim/login` and `/sim/phone`.
//!
//! ```
//! use axum::{
//!     Router,
//!     body::Body,
//!     http::Request,
//!     routing::{get, post},
//! };
//! use http_body_util::BodyExt as _;
//! use mpauthx::testing::{Errcode, SimEndpoint, WeChatSimulator};
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = WeChatSimulator::new("wx-test-app", "test-secret");
//! let wechat_api = Router::new()
//!     .route("/sim/sns/jscode2session", get(sim.jscode2session_handler()))
//!     .route("/sim/cgi-bin/stable_token", post(sim.stable_token_handler()))
//!     .route("/sim/cgi-bin/token", get(sim.token_handler()))
//!     .route("/sim/wxa/business/getuserphonenumber", post(sim.phone_number_handler()))
//!     .route("/sim/login", post(sim.mint_handler()))
//!     .route("/sim/phone", post(sim.phone_mint_handler()));
//!
//! let ask = |request: Request<Body>| {
//!     let api = wechat_api.clone();
//!     async move {
//!         let body = api.oneshot(request).await?.into_body().collect().await?;
//!         Ok::<_, Box<dyn std::error::Error>>(serde_json::from_slice::<serde_json::Value>(
//!             &body.to_bytes(),
//!         )?)
//!     }
//! };
//! let token = ask(Request::post("/sim/cgi-bin/stable_token").body(Body::from(
//!     r#"{"grant_type": "client_credential", "appid": "wx-test-app", "secret": "test-secret"}"#,
//! ))?)
//! .await?;
//! let access_token = token["access_token"].as_str().unwrap();
//! assert_eq!(token["expires_in"], 7200);
//!
//! let phone = sim.phone_code("alice", "13800138000")?;
//! let uri = format!("/sim/wxa/business/getuserphonenumber?access_token={access_token}");
//! let body = format!(r#"{{"code": "{}"}}"#, phone.code);
//! let answer = ask(Request::post(uri.as_str()).body(Body::from(body.clone()))?).await?;
//! assert_eq!(answer["phone_info"]["purePhoneNumber"], "13800138000");
//!
//! // A revoked token answers 40001, and an injected errcode comes before any check.
//! sim.revoke_access_tokens();
//! assert_eq!(sim.check_access_token(access_token), Err(Errcode::INVALID_CREDENTIAL));
//! sim.fail_next(SimEndpoint::PhoneNumber, -1, 1);
//! let answer = ask(Request::post(uri.as_str()).body(Body::from(body))?).await?;
//! assert_eq!(answer["errcode"], -1);
//! assert_eq!(sim.calls().phone_number, 2);
//! # Ok(()) }
//! ```
//!
//! # Several mini-programs
//!
//! A backend that serves several mini-programs talks to one WeChat. [`SimulatedApps`]
//! puts several simulators behind one base URL: each request is answered by the app it
//! names (its `appid`, or the app that issued its `access_token`), and the mint
//! handlers take `"app": "<app id>"` (the first app without it). A test user has an
//! openid per app and one unionid across them; a code of one app is unknown (40029) to
//! another. [`set_union_ids`](WeChatSimulator::set_union_ids) turns unionids on while
//! users keep logging in, as binding an app to an Open Platform account does.

mod apps;
mod calls;
mod codes;
mod handlers;
mod mint;
mod phone;
mod simulator;
#[cfg(test)]
mod test_http;
mod tokens;
mod wire;

pub use self::{
    apps::SimulatedApps,
    calls::{SimEndpoint, SimulatorCalls},
    mint::{MAX_USER_LEN, SimulatedLogin, SimulatedProfile, SimulatorError},
    phone::{PhoneInfo, SimulatedPhone, SimulatedPhoneCode},
    simulator::{DEFAULT_CODE_TTL, DEFAULT_MAX_CODES, WeChatSimulator},
    tokens::{DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_FORCE_REFRESH_LIMIT},
    wire::Errcode,
};
