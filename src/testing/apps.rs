//! [`SimulatedApps`]: several simulated mini-programs behind one WeChat base URL, as a
//! backend serving several mini-programs sees WeChat.

use std::sync::Arc;

use super::WeChatSimulator;

/// Several simulated mini-programs behind one base URL: each request goes to the
/// [`WeChatSimulator`] of the app it names, as WeChat's one API host serves every
/// mini-program.
///
/// Its handlers (see [`jscode2session_handler`](Self::jscode2session_handler) and the
/// others) are those of a single simulator, dispatched by the request's `appid` (or, for
/// `getuserphonenumber`, by the app that issued its `access_token`); a request naming no
/// known app goes to the [first](Self::first) app, which refuses it exactly as a single
/// simulator refuses a wrong app id. So one app behind `SimulatedApps` answers what the
/// simulator alone answers, byte for byte. Each simulator keeps its own codes, tokens,
/// call counts and injected faults; use [`get`](Self::get) to reach them.
///
/// A test user has one openid per app and, with unionids on, one unionid for all of
/// them; a code minted for one app is an unknown code (40029) for another.
///
/// Cheap to clone (the simulators are shared). Mount it under the same base URL as a
/// single simulator:
///
/// ```
/// use axum::{
///     Router,
///     routing::{get, post},
/// };
/// use mpauthx::{
///     WeChatError,
///     testing::{SimulatedApps, WeChatSimulator},
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shop = WeChatSimulator::new("wx-shop", "shop-secret").with_union_ids(true);
/// let games = WeChatSimulator::new("wx-games", "games-secret").with_union_ids(true);
/// let apps = SimulatedApps::new(vec![shop.clone(), games.clone()]);
/// let wechat_api = Router::new()
///     .route("/sim/sns/jscode2session", get(apps.jscode2session_handler()))
///     .route("/sim/cgi-bin/stable_token", post(apps.stable_token_handler()))
///     .route("/sim/cgi-bin/token", get(apps.token_handler()))
///     .route("/sim/wxa/business/getuserphonenumber", post(apps.phone_number_handler()))
///     .route("/sim/login", post(apps.mint_handler()))
///     .route("/sim/phone", post(apps.phone_mint_handler()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let base_url = format!("http://{}/sim", listener.local_addr()?);
/// tokio::spawn(async move { axum::serve(listener, wechat_api).await });
///
/// // One base URL for both apps' clients.
/// let (shop_client, games_client) = (shop.client(&base_url), games.client(&base_url));
/// let login = games.login("alice")?;
/// // WeChat refuses a code of another app without spending it.
/// let refused = shop_client.code2session(&login.code).await.unwrap_err();
/// assert!(matches!(refused, WeChatError::InvalidCode { .. }));
/// let session = games_client.code2session(&login.code).await?;
/// assert_eq!(session.open_id, games.open_id("alice"));
/// assert_ne!(session.open_id, shop.open_id("alice"));
/// assert_eq!(session.union_id, shop.union_id("alice"));
/// assert_eq!(apps.get("wx-games").map(|sim| sim.calls().jscode2session), Some(1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SimulatedApps {
    apps: Arc<[WeChatSimulator]>,
}

impl SimulatedApps {
    /// The apps of `simulators`, the first being the default one (see
    /// [`first`](Self::first)).
    ///
    /// # Panics
    /// If `simulators` is empty, or if two of them have the same app id: a request could
    /// not tell them apart.
    pub fn new(simulators: impl IntoIterator<Item = WeChatSimulator>) -> Self {
        let apps: Arc<[WeChatSimulator]> = simulators.into_iter().collect();
        assert!(
            !apps.is_empty(),
            "SimulatedApps needs at least one simulator"
        );
        for (i, sim) in apps.iter().enumerate() {
            assert!(
                apps[..i]
                    .iter()
                    .all(|earlier| earlier.app_id() != sim.app_id()),
                "SimulatedApps: app id {:?} is given twice",
                sim.app_id()
            );
        }
        Self { apps }
    }

    /// The simulator of app `app_id`, if it is one of them.
    pub fn get(&self, app_id: &str) -> Option<&WeChatSimulator> {
        self.apps.iter().find(|sim| sim.app_id() == app_id)
    }

    /// The simulators, in the order they were given.
    pub fn apps(&self) -> &[WeChatSimulator] {
        &self.apps
    }

    /// The default app: the first simulator given. It mints when a mint request names
    /// no app, and answers requests that name no known app (refusing them).
    pub fn first(&self) -> &WeChatSimulator {
        &self.apps[0]
    }

    /// The simulator that answers a request naming app `app_id`: that app's, else the
    /// first, which refuses an unknown app id (40013) or a missing one (41002) as a
    /// single simulator does.
    pub(super) fn by_app_id(&self, app_id: Option<&str>) -> &WeChatSimulator {
        app_id
            .and_then(|app_id| self.get(app_id))
            .unwrap_or_else(|| self.first())
    }

    /// The simulator that answers an API call with `access_token`: the one that issued
    /// it, else the first, which refuses it as a single simulator refuses a token it
    /// does not know (41001, 40014 or 40001).
    pub(super) fn by_access_token(&self, access_token: Option<&str>) -> &WeChatSimulator {
        access_token
            .and_then(|token| self.apps.iter().find(|sim| sim.knows_access_token(token)))
            .unwrap_or_else(|| self.first())
    }
}

/// One app: the simulator alone, whose handlers answer just as the simulator's own.
impl From<WeChatSimulator> for SimulatedApps {
    fn from(simulator: WeChatSimulator) -> Self {
        Self {
            apps: Arc::new([simulator]),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::{
        Errcode,
        test_http::{call, get, post},
    };

    const SHOP: &str = "wx-shop";
    const SHOP_SECRET: &str = "shop-secret";
    const GAMES: &str = "wx-games";
    const GAMES_SECRET: &str = "games-secret";

    /// The shop (the first app) and the games, both with unionids.
    fn apps() -> SimulatedApps {
        SimulatedApps::new(vec![
            WeChatSimulator::new(SHOP, SHOP_SECRET).with_union_ids(true),
            WeChatSimulator::new(GAMES, GAMES_SECRET).with_union_ids(true),
        ])
    }

    fn exchange(app_id: &str, secret: &str, code: &str) -> http::Request<axum_core::body::Body> {
        get(&format!(
            "/sns/jscode2session?appid={app_id}&secret={secret}&js_code={code}&grant_type=authorization_code"
        ))
    }

    async fn mint(apps: &SimulatedApps, body: Value) -> (StatusCode, Value) {
        call(apps.mint_handler(), post("/sim/login", &body.to_string())).await
    }

    /// A stable token of `app_id`, over HTTP.
    async fn stable_token(apps: &SimulatedApps, app_id: &str, secret: &str) -> String {
        let body = json!({"grant_type": "client_credential", "appid": app_id, "secret": secret});
        let (status, answer) = call(
            apps.stable_token_handler(),
            post("/cgi-bin/stable_token", &body.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned()
    }

    async fn phone_number(apps: &SimulatedApps, access_token: &str, code: &str) -> Value {
        let (status, answer) = call(
            apps.phone_number_handler(),
            post(
                &format!("/wxa/business/getuserphonenumber?access_token={access_token}"),
                &json!({ "code": code }).to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        answer
    }

    #[test]
    fn apps_are_found_by_app_id_and_the_first_is_the_default() {
        let apps = apps();
        assert_eq!(apps.first().app_id(), SHOP);
        assert_eq!(apps.get(GAMES).map(WeChatSimulator::app_id), Some(GAMES));
        assert!(apps.get("wx-other").is_none());
        let ids: Vec<_> = apps.apps().iter().map(WeChatSimulator::app_id).collect();
        assert_eq!(ids, [SHOP, GAMES]);
        // The simulators are shared, not copied.
        let login = apps.clone().get(GAMES).unwrap().login("alice").unwrap();
        assert!(
            apps.get(GAMES)
                .unwrap()
                .jscode2session(GAMES, GAMES_SECRET, &login.code)
                .is_ok()
        );
        let one = SimulatedApps::from(WeChatSimulator::new(SHOP, SHOP_SECRET));
        assert_eq!(one.apps().len(), 1);
        assert!(!format!("{apps:?}").contains(SHOP_SECRET));
    }

    #[test]
    #[should_panic(expected = "app id \"wx-shop\" is given twice")]
    fn duplicate_app_ids_panic() {
        let _ = SimulatedApps::new([
            WeChatSimulator::new(SHOP, SHOP_SECRET),
            WeChatSimulator::new(GAMES, GAMES_SECRET),
            WeChatSimulator::new(SHOP, "another-secret"),
        ]);
    }

    #[test]
    #[should_panic(expected = "at least one simulator")]
    fn no_app_panics() {
        let _ = SimulatedApps::new(Vec::new());
    }

    #[tokio::test]
    async fn a_code_of_one_app_is_refused_for_another_without_being_spent() {
        let apps = apps();
        let (status, minted) = mint(&apps, json!({"user": "alice"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(minted["app_id"], SHOP, "no app: the first");
        let code = minted["code"].as_str().unwrap();

        let handler = apps.jscode2session_handler();
        let (status, refused) = call(handler.clone(), exchange(GAMES, GAMES_SECRET, code)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(refused, json!({"errcode": 40029, "errmsg": "invalid code"}));
        let (_, session) = call(handler.clone(), exchange(SHOP, SHOP_SECRET, code)).await;
        assert_eq!(session["openid"], apps.first().open_id("alice"));
        let (_, again) = call(handler, exchange(SHOP, SHOP_SECRET, code)).await;
        assert_eq!(again["errcode"], 40163);
        // Each app counted its own calls.
        assert_eq!(apps.get(SHOP).unwrap().calls().jscode2session, 2);
        assert_eq!(apps.get(GAMES).unwrap().calls().jscode2session, 1);
    }

    #[tokio::test]
    async fn one_user_has_an_open_id_per_app_and_one_union_id() {
        let apps = apps();
        let (shop, games) = (apps.get(SHOP).unwrap(), apps.get(GAMES).unwrap());
        let (_, in_shop) = mint(&apps, json!({"user": "alice", "app": SHOP})).await;
        let (_, in_games) = mint(&apps, json!({"user": "alice", "app": GAMES})).await;
        assert_eq!(in_games["app_id"], GAMES);
        assert_eq!(in_shop["open_id"], shop.open_id("alice"));
        assert_eq!(in_games["open_id"], games.open_id("alice"));
        assert_ne!(in_shop["open_id"], in_games["open_id"]);
        assert_eq!(in_shop["union_id"], in_games["union_id"]);

        let handler = apps.jscode2session_handler();
        let code = |minted: &Value| minted["code"].as_str().unwrap().to_owned();
        let (_, shop_session) = call(
            handler.clone(),
            exchange(SHOP, SHOP_SECRET, &code(&in_shop)),
        )
        .await;
        let (_, games_session) = call(
            handler.clone(),
            exchange(GAMES, GAMES_SECRET, &code(&in_games)),
        )
        .await;
        assert_eq!(shop_session["openid"], in_shop["open_id"]);
        assert_eq!(games_session["openid"], in_games["open_id"]);
        assert_eq!(shop_session["unionid"], games_session["unionid"]);
        assert_eq!(shop_session["unionid"], shop.union_id("alice").unwrap());
    }

    #[tokio::test]
    async fn an_app_bound_later_hands_out_the_union_id_of_the_others() {
        let apps = apps();
        let games = apps.get(GAMES).unwrap();
        games.set_union_ids(false);
        let (_, before) = mint(&apps, json!({"user": "bob", "app": GAMES})).await;
        assert!(before.get("union_id").is_none(), "{before}");
        // Bound to the Open Platform account: the handlers' clones see it at once.
        games.set_union_ids(true);
        let (_, after) = mint(&apps, json!({"user": "bob", "app": GAMES})).await;
        assert_eq!(after["open_id"], before["open_id"]);
        assert_eq!(after["union_id"], apps.first().union_id("bob").unwrap());
    }

    #[tokio::test]
    async fn access_tokens_come_from_the_app_named_and_phone_numbers_from_the_issuer() {
        let apps = apps();
        let (shop, games) = (apps.get(SHOP).unwrap(), apps.get(GAMES).unwrap());
        let games_token = stable_token(&apps, GAMES, GAMES_SECRET).await;
        assert!(games.check_access_token(&games_token).is_ok());
        assert_eq!(
            shop.check_access_token(&games_token),
            Err(Errcode::INVALID_CREDENTIAL)
        );
        let (_, legacy) = call(
            apps.token_handler(),
            get(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid={SHOP}&secret={SHOP_SECRET}"
            )),
        )
        .await;
        let shop_token = legacy["access_token"].as_str().unwrap();
        assert!(shop.check_access_token(shop_token).is_ok());
        assert!(games.check_access_token(shop_token).is_err());
        assert_eq!((shop.calls().stable_token, shop.calls().token), (0, 1));
        assert_eq!((games.calls().stable_token, games.calls().token), (1, 0));

        let (status, minted) = call(
            apps.phone_mint_handler(),
            post(
                "/sim/phone",
                &json!({"user": "alice", "phone": "13800138000", "app": SHOP}).to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(minted["app_id"], SHOP);
        assert_eq!(minted["open_id"], shop.open_id("alice"));
        let code = minted["code"].as_str().unwrap();
        // The games know no phone code of the shop's; the refusal does not spend it.
        let refused = phone_number(&apps, &games_token, code).await;
        assert_eq!(refused["errcode"], 40029);
        let answer = phone_number(&apps, shop_token, code).await;
        assert_eq!(answer["errcode"], 0, "{answer}");
        assert_eq!(answer["phone_info"]["watermark"]["appid"], SHOP);
        assert_eq!(
            (shop.calls().phone_number, games.calls().phone_number),
            (1, 1)
        );

        let games_code = games.phone_code("alice", "+1 4155550100").unwrap().code;
        let answer = phone_number(&apps, &games_token, &games_code).await;
        assert_eq!(answer["phone_info"]["watermark"]["appid"], GAMES);
        assert_eq!(answer["phone_info"]["countryCode"], "1");
    }

    #[tokio::test]
    async fn unknown_tokens_are_refused_as_by_one_simulator() {
        let apps = apps();
        let alone = WeChatSimulator::new(SHOP, SHOP_SECRET);
        let code = apps
            .first()
            .phone_code("alice", "13800138000")
            .unwrap()
            .code;
        let revoked = stable_token(&apps, GAMES, GAMES_SECRET).await;
        apps.get(GAMES).unwrap().revoke_access_tokens();
        let unknown = "A".repeat(136);
        for token in [revoked.as_str(), unknown.as_str(), "short", ""] {
            let answer = phone_number(&apps, token, &code).await;
            let (_, expected) = call(
                alone.phone_number_handler(),
                post(
                    &format!("/wxa/business/getuserphonenumber?access_token={token}"),
                    &json!({ "code": code }).to_string(),
                ),
            )
            .await;
            assert_eq!(answer, expected, "{token:?}");
        }
        assert_eq!(phone_number(&apps, &revoked, &code).await["errcode"], 40001);
        assert_eq!(phone_number(&apps, "", &code).await["errcode"], 41001);
    }

    #[tokio::test]
    async fn unknown_app_ids_are_refused_as_by_one_simulator() {
        let apps = apps();
        let alone = WeChatSimulator::new(SHOP, SHOP_SECRET);
        let code = apps.get(GAMES).unwrap().login("alice").unwrap().code;
        for request in [
            exchange("wx-other", GAMES_SECRET, &code),
            exchange("", GAMES_SECRET, &code),
            get("/sns/jscode2session"),
        ] {
            let uri = request.uri().clone();
            let (_, answer) = call(apps.jscode2session_handler(), request).await;
            let (_, expected) = call(alone.jscode2session_handler(), get(&uri.to_string())).await;
            assert_eq!(answer, expected, "{uri}");
        }
        let (_, answer) = call(
            apps.jscode2session_handler(),
            exchange("wx-other", GAMES_SECRET, &code),
        )
        .await;
        assert_eq!(answer, json!({"errcode": 40013, "errmsg": "invalid appid"}));

        let body = json!({"grant_type": "client_credential", "appid": "wx-other", "secret": "s"});
        let (_, answer) = call(
            apps.stable_token_handler(),
            post("/cgi-bin/stable_token", &body.to_string()),
        )
        .await;
        assert_eq!(answer["errcode"], 40013);
        let (_, answer) = call(
            apps.stable_token_handler(),
            post("/cgi-bin/stable_token", "nope"),
        )
        .await;
        assert_eq!(answer["errcode"], 47001);
        let (_, answer) = call(
            apps.token_handler(),
            get("/cgi-bin/token?grant_type=client_credential&appid=wx-other&secret=s"),
        )
        .await;
        assert_eq!(answer["errcode"], 40013);
        // The refusals did not spend the code.
        assert!(
            apps.get(GAMES)
                .unwrap()
                .jscode2session(GAMES, GAMES_SECRET, &code)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn minting_for_an_unknown_app_is_400() {
        let apps = apps();
        for (uri, body) in [
            ("/sim/login", json!({"user": "alice", "app": "wx-other"})),
            (
                "/sim/phone",
                json!({"user": "alice", "phone": "13800138000", "app": "wx-other"}),
            ),
            ("/sim/login", json!({"user": "alice", "app": ""})),
        ] {
            let request = post(uri, &body.to_string());
            let (status, answer) = if uri == "/sim/phone" {
                call(apps.phone_mint_handler(), request).await
            } else {
                call(apps.mint_handler(), request).await
            };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(answer["error"], "invalid_request");
            let description = answer["error_description"].as_str().unwrap();
            assert!(
                description.contains(SHOP) && description.contains(GAMES),
                "{description}"
            );
        }
        let (status, _) = mint(&apps, json!({"user": "alice", "app": 1})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A single simulator takes its own app id, and refuses any other.
        let alone = WeChatSimulator::new(SHOP, SHOP_SECRET);
        let (status, minted) = call(
            alone.mint_handler(),
            post(
                "/sim/login",
                &json!({"user": "alice", "app": SHOP}).to_string(),
            ),
        )
        .await;
        assert_eq!((status, &minted["app_id"]), (StatusCode::OK, &json!(SHOP)));
        let (status, refused) = call(
            alone.mint_handler(),
            post(
                "/sim/login",
                &json!({"user": "alice", "app": GAMES}).to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(refused["error"], "invalid_request");
    }
}
