//! The login fixture: `MpAuth` over a token store, a fresh sqlite file and a WeChat (a
//! fake, or just an address), with the HTTP handlers and the layer in an `axum::Router`.

use std::{path::PathBuf, time::Duration};

use axum::{
    Router,
    body::Body,
    http::Request,
    routing::{delete, get, post},
};
use mpauthx::{
    AuthedUser, AuthorizeRequest, Authorized, Error, LoginThrottle, MpAuth, MpAuthBuilder,
    MpAuthConfig, SqliteUserStore, TokenInfo, TokenStore,
};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt as _;

use super::{
    fake_wechat::FakeWeChat,
    http::{Answer, json_post, with_bearer},
    keys::{APP_ID, SECRET, SKU, sku},
    users,
};

/// The token lifetime of [`config`].
pub const TTL: Duration = Duration::from_secs(3600);
/// The WeChat client's read timeout in [`config`]: short, so timeout cases stay fast.
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// The test app under [`SKU`], see [`config_for`].
pub fn config() -> MpAuthConfig {
    config_for(SKU)
}

/// The test app under `sku`: tokens live [`TTL`], WeChat is given [`READ_TIMEOUT`] and a
/// busy WeChat is asked three times, 10 ms apart. The fixture sets WeChat's address.
///
/// No retry grace: these suites assert the strict rotation rule (a rotated-out token is
/// dead at once, an evicted device is gone). The grace, on by default, has its own
/// cases in `login_flow/retry.rs` and in the store suite.
pub fn config_for(sku: &str) -> MpAuthConfig {
    MpAuthConfig::new(APP_ID, SECRET, sku)
        .unwrap()
        .with_token_ttl(TTL)
        .with_refresh_grace(Duration::ZERO)
        .with_wechat_read_timeout(READ_TIMEOUT)
        .with_wechat_busy_retry(3, Duration::from_millis(10))
}

/// Where the fixture's WeChat is: a [`FakeWeChat`], or only an address (a closed port, a
/// listener that never answers, ...).
pub trait Upstream {
    fn base_url(&self) -> String;
}

impl Upstream for FakeWeChat {
    fn base_url(&self) -> String {
        FakeWeChat::base_url(self)
    }
}

impl Upstream for String {
    fn base_url(&self) -> String {
        self.clone()
    }
}

/// `config` talking to `wechat`.
pub fn pointed_at(config: MpAuthConfig, wechat: &impl Upstream) -> MpAuthConfig {
    config.with_wechat_base_url(wechat.base_url())
}

/// `GET /me`: the open id of the user the layer let in.
async fn me(user: AuthedUser) -> String {
    user.open_id().to_owned()
}

/// The handlers at `/auth/{authorize,refresh,logout,logout_all}`, and `/me`,
/// `/auth/phone` and `/auth/devices` behind the layer.
pub fn router<T: TokenStore>(auth: &MpAuth<T, SqliteUserStore>) -> Router {
    let protected = Router::new()
        .route("/me", get(me))
        .route("/auth/phone", post(auth.phone_handler()))
        .route("/auth/devices", get(auth.devices_handler()))
        .route("/auth/devices/{id}", delete(auth.revoke_device_handler()))
        .layer(auth.layer());
    Router::new()
        .route("/auth/authorize", post(auth.authorize_handler()))
        .route("/auth/refresh", post(auth.refresh_handler()))
        .route("/auth/logout", post(auth.logout_handler()))
        .route("/auth/logout_all", post(auth.logout_all_handler()))
        .merge(protected)
}

/// `MpAuth` over `T`, a sqlite file of its own and the WeChat `W`; [`router`] around it.
pub struct Fixture<T, W = FakeWeChat> {
    pub auth: MpAuth<T, SqliteUserStore>,
    pub app: Router,
    pub fake: W,
    pub db: PathBuf,
    _dir: TempDir,
}

impl<T: TokenStore, W: Upstream> Fixture<T, W> {
    /// On [`config`].
    pub async fn new(tokens: T, fake: W) -> Self {
        Self::with_config(tokens, fake, config()).await
    }

    pub async fn with_config(tokens: T, fake: W, config: MpAuthConfig) -> Self {
        let (dir, db) = users::temp_db();
        let users = SqliteUserStore::open(&db).await.unwrap();
        Self::with_users(tokens, fake, config, users, dir, db)
    }

    /// On [`config`], logins throttled by `throttle`.
    pub async fn with_throttle(tokens: T, fake: W, throttle: LoginThrottle) -> Self {
        let (dir, db) = users::temp_db();
        let users = SqliteUserStore::open(&db).await.unwrap();
        let builder = MpAuth::builder(pointed_at(config(), &fake), tokens, users);
        Self::build(builder.with_login_throttle(throttle), fake, dir, db)
    }

    /// With `users`, a store the caller opened on `db` in `dir`.
    pub fn with_users(
        tokens: T,
        fake: W,
        config: MpAuthConfig,
        users: SqliteUserStore,
        dir: TempDir,
        db: PathBuf,
    ) -> Self {
        let builder = MpAuth::builder(pointed_at(config, &fake), tokens, users);
        Self::build(builder, fake, dir, db)
    }

    fn build(
        builder: MpAuthBuilder<T, SqliteUserStore>,
        fake: W,
        dir: TempDir,
        db: PathBuf,
    ) -> Self {
        let auth = builder.build();
        Self {
            app: router(&auth),
            auth,
            fake,
            db,
            _dir: dir,
        }
    }

    /// Rows for `open_id`, read through a connection of our own.
    pub fn rows(&self, open_id: &str) -> i64 {
        users::count_rows(&self.db, open_id)
    }

    /// Every row in the table.
    pub fn all_rows(&self) -> i64 {
        users::all_rows(&self.db)
    }

    /// The live tokens of `open_id` under [`sku`].
    pub async fn live(&self, open_id: &str) -> Vec<TokenInfo> {
        self.auth.tokens().list(&sku(), open_id).await.unwrap()
    }

    /// A login with `code` that must work.
    pub async fn login(&self, code: &str) -> Authorized {
        self.auth
            .authorize(&AuthorizeRequest::new(code))
            .await
            .unwrap_or_else(|e| panic!("login with {code} failed: {e:?}"))
    }

    /// A login that must fail: its error.
    pub async fn refused(&self, request: &AuthorizeRequest) -> Error {
        match self.auth.authorize(request).await {
            Ok(authorized) => panic!("the login must fail: {:?}", authorized.token),
            Err(error) => error,
        }
    }

    /// Sends `request` through [`router`].
    pub async fn send(&self, request: Request<Body>) -> Answer {
        Answer::collect(self.app.clone().oneshot(request).await.unwrap()).await
    }

    /// `POST /auth/authorize` with `body`.
    pub async fn authorize(&self, body: Value) -> Answer {
        self.send(json_post("/auth/authorize", &body.to_string()))
            .await
    }

    /// `GET /me` with `token`.
    pub async fn me(&self, token: &str) -> Answer {
        self.send(with_bearer(Request::get("/me"), token, Body::empty()))
            .await
    }

    /// `POST path` with `token` and no body.
    pub async fn post_with_token(&self, path: &str, token: &str) -> Answer {
        self.send(with_bearer(Request::post(path), token, Body::empty()))
            .await
    }
}

impl<T> Fixture<T, FakeWeChat> {
    /// How often WeChat was asked.
    pub fn wechat_calls(&self) -> usize {
        self.fake.requests().len()
    }
}
