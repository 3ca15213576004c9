//! Several mini-programs in one backend (`MpApps`): one person in two apps, routes
//! restricted to one app, the late unionid merge, apps added and removed at run time,
//! and how a login names its app. Each app has a simulated WeChat of its own, served
//! over HTTP, so a code of one app is unknown to the other as on WeChat.

use std::{path::PathBuf, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
    routing::{get, post},
};
use mpauthx::{
    AppError, AuthedUser, LoginThrottle, MemoryRateLimiter, MemoryTokenStore, MpApps, MpAuthConfig,
    RateLimit, SqliteUserStore, testing::WeChatSimulator,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt as _;

use crate::common::{
    http::{Answer, json_post, with_bearer},
    sim, users,
};

const SHOP: &str = "wx1111111111111111";
const GAME: &str = "wx2222222222222222";

type Apps = MpApps<MemoryTokenStore, SqliteUserStore>;

/// `GET /me`: the user and the app (sku) the layer let in.
async fn me(user: AuthedUser) -> String {
    json!({ "open_id": user.open_id(), "sku": user.sku().as_str() }).to_string()
}

/// `request` as `wx.request` sends it from a page of a mini-program: with WeChat's
/// `Referer`, `referer`.
fn from_page(mut request: Request<Body>, referer: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert("referer", referer.parse().unwrap());
    request
}

/// A backend for the shop and the game, each app on a WeChat of its own.
struct Backend {
    apps: Apps,
    router: Router,
    shop: WeChatSimulator,
    game: WeChatSimulator,
    db: PathBuf,
    _dir: TempDir,
}

/// The configuration of `app_id` under `sku`, talking to the WeChat at `base`.
fn config(app_id: &str, sku: &str, base: &str) -> MpAuthConfig {
    MpAuthConfig::new(app_id, format!("{sku}-secret"), sku)
        .unwrap()
        .with_token_ttl(Duration::from_secs(3600))
        .with_wechat_base_url(base)
}

/// A simulated WeChat of `app_id`, handing out unionids or not.
fn simulator(app_id: &str, sku: &str, union_ids: bool) -> WeChatSimulator {
    WeChatSimulator::new(app_id, format!("{sku}-secret")).with_union_ids(union_ids)
}

impl Backend {
    /// Both apps registered; the shop's WeChat hands out unionids as `shop_unions` says,
    /// the game's always does.
    async fn new(shop_unions: bool) -> Self {
        let (dir, db) = users::temp_db();
        let users = SqliteUserStore::open(&db).await.unwrap();
        let apps = MpApps::new(MemoryTokenStore::new(), users);
        let shop = simulator(SHOP, "shop", shop_unions);
        let game = simulator(GAME, "game", true);
        apps.insert(config(SHOP, "shop", &sim::serve(&shop).await))
            .unwrap();
        apps.insert(config(GAME, "game", &sim::serve(&game).await))
            .unwrap();
        let router = Router::new()
            .route(
                "/apps/{app_id}/auth/authorize",
                post(apps.authorize_handler()),
            )
            .route("/auth/authorize", post(apps.authorize_handler()))
            .route("/auth/refresh", post(apps.refresh_handler()))
            .route("/auth/logout", post(apps.logout_handler()))
            .route("/auth/devices", get(apps.devices_handler()))
            .route("/me", get(me).layer(apps.layer()))
            .route("/shop/me", get(me).layer(apps.layer_for([SHOP]).unwrap()));
        Self {
            apps,
            router,
            shop,
            game,
            db,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        Answer::collect(self.router.clone().oneshot(request).await.unwrap()).await
    }

    /// `POST /apps/{app_id}/auth/authorize` with `body`.
    async fn authorize(&self, app_id: &str, body: Value) -> Answer {
        let path = format!("/apps/{app_id}/auth/authorize");
        self.send(json_post(&path, &body.to_string())).await
    }

    /// A login of `user` into `app_id` with a code of that app's WeChat: its token.
    async fn login(&self, app_id: &str, user: &str) -> String {
        let sim = if app_id == SHOP {
            &self.shop
        } else {
            &self.game
        };
        let code = sim.login(user).unwrap().code;
        let answer = self.authorize(app_id, json!({ "code": code })).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()["token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(with_bearer(Request::get(path), token, Body::empty()))
            .await
    }

    async fn post(&self, path: &str, token: &str) -> Answer {
        self.send(with_bearer(Request::post(path), token, Body::empty()))
            .await
    }

    /// The stored user behind `token`, through the registry.
    async fn user_of(&self, token: &str) -> mpauthx::User {
        let sku = mpauthx::extract_sku(token).unwrap();
        let open_id = mpauthx::extract_open_id(token).unwrap();
        let authed = AuthedUser::new(mpauthx::Sku::new(sku).unwrap(), open_id);
        self.apps.user(&authed).await.unwrap().expect("stored")
    }
}

#[tokio::test]
async fn one_person_in_two_apps_is_one_person_id_and_logs_out_everywhere() {
    let backend = Backend::new(true).await;
    let shop_token = backend.login(SHOP, "ada").await;
    let game_token = backend.login(GAME, "ada").await;
    assert!(shop_token.starts_with("shop.") && game_token.starts_with("game."));

    // Each token says its app; both pass the layer that takes every app.
    let me = backend.get("/me", &shop_token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.json(),
        json!({ "open_id": backend.shop.open_id("ada"), "sku": "shop" })
    );
    let me = backend.get("/me", &game_token).await;
    assert_eq!(
        me.json(),
        json!({ "open_id": backend.game.open_id("ada"), "sku": "game" })
    );
    assert_ne!(backend.shop.open_id("ada"), backend.game.open_id("ada"));

    // Two records, one person.
    let in_shop = backend.user_of(&shop_token).await;
    let in_game = backend.user_of(&game_token).await;
    assert_eq!(
        (in_shop.app_id.as_str(), in_game.app_id.as_str()),
        (SHOP, GAME)
    );
    assert_eq!(in_shop.union_id, backend.shop.union_id("ada"));
    assert_eq!(in_shop.union_id, in_game.union_id);
    assert_eq!(in_shop.person_id, in_game.person_id);
    let person = backend.apps.person(&in_shop.person_id).await.unwrap();
    assert_eq!(person, vec![in_shop.clone(), in_game.clone()]);
    // Another user is another person.
    let bob = backend.login(GAME, "bob").await;
    assert_ne!(backend.user_of(&bob).await.person_id, in_shop.person_id);

    // The person's tokens in every app, then a logout everywhere.
    let devices = backend
        .apps
        .person_devices(&in_shop.person_id)
        .await
        .unwrap();
    assert_eq!(
        devices
            .iter()
            .map(|(app, d)| (app.as_str(), d.len()))
            .collect::<Vec<_>>(),
        [(SHOP, 1), (GAME, 1)]
    );
    assert_eq!(
        backend
            .apps
            .logout_person(&in_shop.person_id)
            .await
            .unwrap(),
        2
    );
    for token in [&shop_token, &game_token] {
        let me = backend.get("/me", token).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{}", me.body);
    }
    assert_eq!(backend.get("/me", &bob).await.status, StatusCode::OK);
    assert_eq!(users::all_rows(&backend.db), 3, "the records stay");
}

#[tokio::test]
async fn a_route_restricted_to_one_app_refuses_the_other_apps_tokens() {
    let backend = Backend::new(true).await;
    let shop_token = backend.login(SHOP, "ada").await;
    let game_token = backend.login(GAME, "ada").await;

    let shop = backend.get("/shop/me", &shop_token).await;
    assert_eq!(shop.status, StatusCode::OK, "{}", shop.body);
    let refused = backend.get("/shop/me", &game_token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["error"], "invalid_token");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.contains(r#"error="invalid_token""#))
    );
    // The game's token is still good where the game is accepted.
    assert_eq!(backend.get("/me", &game_token).await.status, StatusCode::OK);

    // Flows that follow the token go to its own app: a refresh of the game's token is
    // a game token.
    let refreshed = backend.post("/auth/refresh", &game_token).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let successor = refreshed.json()["token"].as_str().unwrap().to_owned();
    assert!(successor.starts_with("game."));
    assert_eq!(
        backend.get("/me", &game_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        backend.get("/shop/me", &successor).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Asking for a layer of an app the registry lacks is an error, not a layer that
    // takes nothing.
    assert_eq!(
        backend.apps.layer_for(["wx-nope"]).unwrap_err(),
        AppError::UnknownApp("wx-nope".into())
    );
}

#[tokio::test]
async fn a_code_of_one_app_sent_as_another_is_refused_and_counts_against_nobody() {
    let (dir, db) = users::temp_db();
    let users = SqliteUserStore::open(&db).await.unwrap();
    let apps = MpApps::new(MemoryTokenStore::new(), users);
    let shop = simulator(SHOP, "shop", true);
    let game = simulator(GAME, "game", true);
    // One login per user per minute in each app: a refused login must not use it up.
    let throttle = || {
        LoginThrottle::new(MemoryRateLimiter::new())
            .per_user(RateLimit::new(1, Duration::from_secs(60)).unwrap())
    };
    for (app_id, sku, sim) in [(SHOP, "shop", &shop), (GAME, "game", &game)] {
        let config = config(app_id, sku, &sim::serve(sim).await);
        apps.add(apps.app(config).with_login_throttle(throttle()).build())
            .unwrap();
    }
    let router = Router::new().route(
        "/apps/{app_id}/auth/authorize",
        post(apps.authorize_handler()),
    );
    let authorize = |app_id: &str, code: &str| {
        let request = json_post(
            &format!("/apps/{app_id}/auth/authorize"),
            &json!({ "code": code }).to_string(),
        );
        let router = router.clone();
        async move { Answer::collect(router.oneshot(request).await.unwrap()).await }
    };

    let shop_code = shop.login("ada").unwrap().code;
    let refused = authorize(GAME, &shop_code).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_code");
    assert_eq!(users::all_rows(&db), 0, "nothing stored");

    // Neither app's limit for ada was touched: she logs into both, the shop with the
    // very code the game refused.
    let ok = authorize(SHOP, &shop_code).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let ok = authorize(GAME, &game.login("ada").unwrap().code).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // And the limits are real: a second login in the minute is throttled.
    let again = authorize(GAME, &game.login("ada").unwrap().code).await;
    assert_eq!(
        again.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        again.body
    );
    drop(dir);
}

#[tokio::test]
async fn a_unionid_that_comes_later_merges_the_records_keeping_everything() {
    // The shop is not bound to the Open Platform yet: no unionid for its users.
    let backend = Backend::new(false).await;
    let profile_login = backend.shop.login_with_profile("ada").unwrap();
    let shop_token = backend
        .apps
        .get(SHOP)
        .unwrap()
        .authorize(&profile_login.authorize_request())
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let before = backend.user_of(&shop_token).await;
    assert_eq!(before.union_id, None);
    let nick = before.nick_name.clone();
    assert!(nick.is_some(), "the profile was stored");

    let game_token = backend.login(GAME, "ada").await;
    let in_game = backend.user_of(&game_token).await;
    assert!(in_game.union_id.is_some());
    assert_ne!(in_game.person_id, before.person_id, "not linked yet");

    // The shop gets bound: its WeChat now sends unionids. The app is replaced at run
    // time with the same app id and secret, on a WeChat that says so.
    let bound = simulator(SHOP, "shop", true);
    let replaced = backend
        .apps
        .insert(config(SHOP, "shop", &sim::serve(&bound).await))
        .unwrap();
    assert_eq!(replaced.config().app_id(), SHOP);
    assert_eq!(bound.open_id("ada"), backend.shop.open_id("ada"));
    let login = backend
        .apps
        .get(SHOP)
        .unwrap()
        .authorize(&mpauthx::AuthorizeRequest::new(
            bound.login("ada").unwrap().code,
        ))
        .await
        .unwrap();
    assert_eq!(
        login.merged_from.as_deref(),
        Some(before.person_id.as_str())
    );
    let after = login.user.expect("a login returns the user");
    assert_eq!(
        after.person_id, in_game.person_id,
        "joined the game's person"
    );
    assert_eq!(after.union_id, in_game.union_id);
    assert_eq!(after.nick_name, nick, "the profile is kept");
    assert_eq!(after.created_at, before.created_at);

    // Nothing lost: both records under one person, the old person gone, the shop's
    // earlier token still live.
    let person = backend.apps.person(&in_game.person_id).await.unwrap();
    assert_eq!(
        person.iter().map(|u| u.app_id.as_str()).collect::<Vec<_>>(),
        [SHOP, GAME]
    );
    assert!(
        backend
            .apps
            .person(&before.person_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(backend.get("/me", &shop_token).await.status, StatusCode::OK);
    assert_eq!(users::all_rows(&backend.db), 2);
    // A later login changes nothing more.
    let again = backend
        .apps
        .get(SHOP)
        .unwrap()
        .authorize(&mpauthx::AuthorizeRequest::new(
            bound.login("ada").unwrap().code,
        ))
        .await
        .unwrap();
    assert_eq!(again.merged_from, None);
    assert_eq!(again.user.unwrap().person_id, in_game.person_id);
}

#[tokio::test]
async fn apps_added_and_removed_at_run_time_take_effect_at_once() {
    let backend = Backend::new(true).await;
    let shop_token = backend.login(SHOP, "ada").await;
    let game_token = backend.login(GAME, "ada").await;

    let removed = backend.apps.remove(GAME).expect("the game was there");
    assert_eq!(removed.config().sku().as_str(), "game");
    assert_eq!(backend.apps.app_ids(), [SHOP]);
    assert!(backend.apps.remove(GAME).is_none());

    // Its tokens are refused by every layer and flow, its login route is 404.
    let me = backend.get("/me", &game_token).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.json()["error"], "invalid_token");
    let refresh = backend.post("/auth/refresh", &game_token).await;
    assert_eq!(refresh.status, StatusCode::UNAUTHORIZED);
    let devices = backend.get("/auth/devices", &game_token).await;
    assert_eq!(devices.status, StatusCode::UNAUTHORIZED);
    let code = backend.game.login("bob").unwrap().code;
    let login = backend.authorize(GAME, json!({ "code": code })).await;
    assert_eq!(login.status, StatusCode::NOT_FOUND, "{}", login.body);
    assert_eq!(login.json()["error"], "unknown_app");
    // The shop carries on.
    assert_eq!(backend.get("/me", &shop_token).await.status, StatusCode::OK);

    // Added again (as an operator would, with its settings), it serves at once; a
    // token it issued before, unexpired, is accepted again under the same sku.
    let base = sim::serve(&backend.game).await;
    backend.apps.insert(config(GAME, "game", &base)).unwrap();
    assert_eq!(backend.get("/me", &game_token).await.status, StatusCode::OK);
    let fresh = backend.login(GAME, "bob").await;
    assert_eq!(backend.get("/me", &fresh).await.status, StatusCode::OK);

    // The registry's Debug shows its apps, never their secrets.
    let shown = format!("{:?}", backend.apps);
    assert!(shown.contains(SHOP) && shown.contains(GAME), "{shown}");
    assert!(
        !shown.contains("shop-secret") && !shown.contains("game-secret"),
        "{shown}"
    );

    // A new app under a sku another app has is refused, and changes nothing.
    let clash = config("wx3333333333333333", "shop", &base);
    assert_eq!(
        backend.apps.insert(clash).unwrap_err(),
        AppError::SkuTaken("shop".into())
    );
    assert_eq!(backend.apps.app_ids(), [SHOP, GAME]);
}

#[tokio::test]
async fn a_login_without_an_app_in_its_path_takes_the_referer_as_a_hint_only() {
    let backend = Backend::new(true).await;
    let game_code = backend.game.login("ada").unwrap().code;
    let body = json!({ "code": game_code }).to_string();

    // Two apps and nothing to go by: the client must name one.
    let answer = backend.send(json_post("/auth/authorize", &body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(
        answer.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("/apps/{app_id}/auth/authorize")
    );

    // WeChat's Referer names the game: the code is tried there, and works.
    let referer = format!("https://servicewechat.com/{GAME}/12/page-frame.html");
    let answer = backend
        .send(from_page(json_post("/auth/authorize", &body), &referer))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.json()["token"]
            .as_str()
            .unwrap()
            .starts_with("game.")
    );

    // A Referer naming the shop on a game code proves nothing: WeChat refuses the code
    // for the shop.
    let game_code = backend.game.login("ada").unwrap().code;
    let shop_referer = format!("https://servicewechat.com/{SHOP}/12/page-frame.html");
    let answer = backend
        .send(from_page(
            json_post("/auth/authorize", &json!({ "code": game_code }).to_string()),
            &shop_referer,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_code");

    // A path that names the game wins over a Referer naming the shop.
    let path = format!("/apps/{GAME}/auth/authorize");
    let answer = backend
        .send(from_page(
            json_post(&path, &json!({ "code": game_code }).to_string()),
            &shop_referer,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // A default app (the one served before there were several) takes the logins that
    // name none; a Referer naming another app still wins.
    backend.apps.set_default_app(Some(SHOP)).unwrap();
    let shop_code = backend.shop.login("carol").unwrap().code;
    let answer = backend
        .send(json_post(
            "/auth/authorize",
            &json!({ "code": shop_code }).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.json()["token"]
            .as_str()
            .unwrap()
            .starts_with("shop.")
    );
    let game_code = backend.game.login("carol").unwrap().code;
    let answer = backend
        .send(from_page(
            json_post("/auth/authorize", &json!({ "code": game_code }).to_string()),
            &referer,
        ))
        .await;
    assert!(
        answer.json()["token"]
            .as_str()
            .unwrap()
            .starts_with("game."),
        "{}",
        answer.body
    );
    assert_eq!(
        backend.apps.set_default_app(Some("wx-nope")).unwrap_err(),
        AppError::UnknownApp("wx-nope".into())
    );
    backend.apps.set_default_app(None).unwrap();

    // With one app left, a plain /auth/authorize is that app's, as before.
    backend.apps.remove(GAME);
    let shop_code = backend.shop.login("bob").unwrap().code;
    let answer = backend
        .send(json_post(
            "/auth/authorize",
            &json!({ "code": shop_code }).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.json()["token"]
            .as_str()
            .unwrap()
            .starts_with("shop.")
    );
}

#[tokio::test]
async fn a_sku_stays_its_first_apps_so_a_removed_apps_tokens_never_pass_as_anothers() {
    let backend = Backend::new(true).await;
    let game_token = backend.login(GAME, "ada").await;
    backend.apps.remove(GAME).expect("the game was there");

    // Another app id asks for the removed game's sku: refused, for the game's
    // unexpired token would pass as that app's, on every layer and in a refresh.
    let base = sim::serve(&backend.game).await;
    const OTHER: &str = "wx3333333333333333";
    assert_eq!(
        backend
            .apps
            .insert(config(OTHER, "game", &base))
            .unwrap_err(),
        AppError::SkuTaken("game".into())
    );
    assert_eq!(backend.apps.app_ids(), [SHOP]);
    assert_eq!(
        backend.get("/me", &game_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        backend.post("/auth/refresh", &game_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Under a sku of its own the other app is welcome.
    backend.apps.insert(config(OTHER, "other", &base)).unwrap();
    assert_eq!(backend.apps.app_ids(), [SHOP, OTHER]);
}

#[tokio::test]
async fn a_restricted_route_follows_its_app_to_a_new_sku() {
    let backend = Backend::new(true).await;
    let old_token = backend.login(SHOP, "ada").await;

    // The shop is replaced with a new sku (a fresh start for its tokens): the route
    // restricted to the shop takes its new tokens and none of the old ones.
    let base = sim::serve(&backend.shop).await;
    let renewed = MpAuthConfig::new(SHOP, "shop-secret", "shop2")
        .unwrap()
        .with_wechat_base_url(&base);
    let added = backend.apps.insert(renewed).unwrap();
    assert_eq!(added.config().sku().as_str(), "shop2");
    assert_eq!(backend.apps.app_ids(), [SHOP, GAME]);
    let new_token = backend.login(SHOP, "ada").await;
    assert!(new_token.starts_with("shop2."), "{new_token}");
    let shop = backend.get("/shop/me", &new_token).await;
    assert_eq!(shop.status, StatusCode::OK, "{}", shop.body);
    assert_eq!(shop.json()["sku"], "shop2");
    for path in ["/shop/me", "/me"] {
        assert_eq!(
            backend.get(path, &old_token).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    // The game's tokens are still not the shop's.
    let game_token = backend.login(GAME, "ada").await;
    assert_eq!(
        backend.get("/shop/me", &game_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // And the old sku is still the shop's: the game cannot have it.
    let game_base = sim::serve(&backend.game).await;
    assert_eq!(
        backend
            .apps
            .insert(config(GAME, "shop", &game_base))
            .unwrap_err(),
        AppError::SkuTaken("shop".into())
    );
}

#[tokio::test]
async fn the_default_app_goes_with_its_app() {
    let backend = Backend::new(true).await;
    backend.apps.set_default_app(Some(GAME)).unwrap();
    assert_eq!(backend.apps.default_app().unwrap().config().app_id(), GAME);
    backend.apps.remove(GAME).unwrap();
    assert!(backend.apps.default_app().is_none());
    // Re-adding the app does not make it the default again.
    let base = sim::serve(&backend.game).await;
    backend.apps.insert(config(GAME, "game", &base)).unwrap();
    assert!(backend.apps.default_app().is_none());
    // With two apps and no default, a login that names none is the client's error.
    let code = backend.game.login("ada").unwrap().code;
    let answer = backend
        .send(json_post(
            "/auth/authorize",
            &json!({ "code": code }).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    // Naming an app the registry lacks is refused and leaves the default alone.
    backend.apps.set_default_app(Some(SHOP)).unwrap();
    assert_eq!(
        backend.apps.set_default_app(Some("wx-nope")).unwrap_err(),
        AppError::UnknownApp("wx-nope".into())
    );
    assert_eq!(backend.apps.default_app().unwrap().config().app_id(), SHOP);
}
