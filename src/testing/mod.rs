//! Test support (feature `testing`): a WeChat simulator, so that a login flow runs
//! offline, in tests or on a laptop, with no mini-program and no network.
//!
//! [`WeChatSimulator`] plays WeChat's side of a login. It mints one-time login codes
//! for named test users (what `wx.login()` hands a mini-program), optionally with
//! encrypted profile data (what `wx.getUserInfo()` hands it), and answers
//! `GET /sns/jscode2session` exactly as WeChat does, errcodes included. The same
//! name is always the same user: its openid is derived from the name and the app id.
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

mod calls;
mod codes;
mod handlers;
mod mint;
mod phone;
mod simulator;
mod tokens;
mod wire;

pub use self::{
    calls::{SimEndpoint, SimulatorCalls},
    mint::{MAX_USER_LEN, SimulatedLogin, SimulatedProfile, SimulatorError},
    phone::{PhoneInfo, SimulatedPhone, SimulatedPhoneCode},
    simulator::{DEFAULT_CODE_TTL, DEFAULT_MAX_CODES, WeChatSimulator},
    tokens::{DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_FORCE_REFRESH_LIMIT},
    wire::Errcode,
};
