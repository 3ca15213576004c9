//! The simulator over HTTP, as axum handlers (axum-core types only).

use std::{
    future,
    time::{Instant, SystemTime},
};

use axum_core::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    SimulatedApps, SimulatorError, WeChatSimulator,
    phone::Phone,
    wire::{self, Errcode, PhoneNumberRequest, TokenRequest},
};
use crate::{
    login::{BodyError, read_json},
    response::json_response,
};
/// The future of a handler, boxed as axum's are.
type HandlerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A mint request is a user name, a phone number, an app id and a flag; anything larger
/// is not one.
const MAX_MINT_BODY_BYTES: usize = 4 * 1024;

/// The WeChat API bodies the simulator reads are a few short fields; anything larger
/// is not one.
const MAX_WECHAT_BODY_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    user: String,
    #[serde(default)]
    profile: bool,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    app: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneMintRequest {
    user: String,
    phone: String,
    #[serde(default)]
    app: Option<String>,
}

/// The phone mint answer.
#[derive(Serialize)]
struct PhoneMintResponse<'a> {
    code: &'a str,
    app_id: &'a str,
    open_id: &'a str,
    phone_number: &'a str,
    pure_phone_number: &'a str,
    country_code: &'a str,
}

/// The mint answer: `code` and the profile fields carry the names of the
/// `POST /auth/authorize` body, so the answer can be sent there as it is.
#[derive(Serialize)]
struct MintResponse<'a> {
    code: &'a str,
    app_id: &'a str,
    open_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    union_id: Option<&'a str>,
    #[serde(rename = "encryptedData", skip_serializing_if = "Option::is_none")]
    encrypted_data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iv: Option<&'a str>,
    #[serde(rename = "rawData", skip_serializing_if = "Option::is_none")]
    raw_data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<PhoneData<'a>>,
}

/// The legacy encrypted phone data of a mint answer.
#[derive(Serialize)]
struct PhoneData<'a> {
    #[serde(rename = "encryptedData")]
    encrypted_data: &'a str,
    iv: &'a str,
}

/// The simulator's handlers are those of [`SimulatedApps`] with this one app, so that
/// one app answers alike behind either.
impl WeChatSimulator {
    /// `GET /sns/jscode2session`: WeChat's code exchange, answered from the query string
    /// (always HTTP 200 with JSON, errcodes included, as WeChat does).
    ///
    /// Mount it at `<base>/sns/jscode2session` and give the server under test
    /// [`client(<base>)`](Self::client).
    pub fn jscode2session_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).jscode2session_handler()
    }

    /// `POST /cgi-bin/stable_token`: WeChat's access token endpoint, answered from the
    /// JSON body `{"grant_type": "client_credential", "appid", "secret",
    /// "force_refresh"?}` (always HTTP 200 with JSON, errcodes included, as WeChat
    /// does). See [`stable_token`](Self::stable_token); a body that is not such JSON
    /// is 47001.
    pub fn stable_token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).stable_token_handler()
    }

    /// `GET /cgi-bin/token`: WeChat's legacy access token endpoint, answered from the
    /// query string `grant_type=client_credential&appid=..&secret=..` (always HTTP 200
    /// with JSON). See [`token`](Self::token).
    pub fn token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).token_handler()
    }

    /// `POST /wxa/business/getuserphonenumber?access_token=..`: WeChat's phone code
    /// exchange, answered from the JSON body `{"code", "openid"?}` (always HTTP 200
    /// with JSON): `{"errcode": 0, "errmsg": "ok", "phone_info": {"phoneNumber",
    /// "purePhoneNumber", "countryCode", "watermark": {"timestamp", "appid"}}}`. See
    /// [`get_user_phone_number`](Self::get_user_phone_number); a body that is not such
    /// JSON, or has no code, is 47001.
    pub fn phone_number_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).phone_number_handler()
    }

    /// `POST` JSON `{"user": "alice", "phone": "13800138000", "app"?}`: mints a
    /// one-time phone code for the test user (see [`phone_code`](Self::phone_code) for
    /// the phone format) and answers `200 {"code", "app_id", "open_id", "phone_number",
    /// "pure_phone_number", "country_code"}`. `app`, if given, must be this
    /// simulator's app id. Bad input is 400
    /// `{"error": "invalid_request", "error_description"}`.
    ///
    /// Anyone who can reach it can hand any phone number to the server under test:
    /// mount it in tests and demos only.
    pub fn phone_mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).phone_mint_handler()
    }

    /// `POST` JSON `{"user": "alice", "profile": true, "phone": "13800138000", "app"?}`:
    /// mints a login code for the test user (with `profile`, also encrypted profile
    /// data; with `phone`, also the legacy encrypted phone data, see
    /// [`login_with_phone`](Self::login_with_phone)) and answers
    /// `200 {"code", "app_id", "open_id", "union_id"?, "encryptedData"?, "iv"?,
    /// "rawData"?, "signature"?, "phone"?: {"encryptedData", "iv"}}`, a body
    /// `POST /auth/authorize` accepts as it is. `app`, if given, must be this
    /// simulator's app id. Bad input is 400
    /// `{"error": "invalid_request", "error_description"}`.
    ///
    /// Anyone who can reach it can log in as anyone: mount it in tests and demos only.
    pub fn mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        SimulatedApps::from(self.clone()).mint_handler()
    }

    fn phone_mint_answer(&self, mint: &PhoneMintRequest) -> Response {
        let minted = match self.phone_code(&mint.user, &mint.phone) {
            Ok(minted) => minted,
            Err(e) => return mint_refusal(e),
        };
        let answer = PhoneMintResponse {
            code: &minted.code,
            app_id: self.app_id(),
            open_id: &minted.open_id,
            phone_number: &minted.phone_number,
            pure_phone_number: &minted.pure_phone_number,
            country_code: &minted.country_code,
        };
        json(
            StatusCode::OK,
            serde_json::to_string(&answer).expect("the answer serializes"),
        )
    }

    fn mint_answer(&self, mint: &MintRequest) -> Response {
        let minted = mint
            .phone
            .as_deref()
            .map(Phone::parse)
            .transpose()
            .and_then(|phone| {
                self.mint(
                    &mint.user,
                    mint.profile,
                    phone.as_ref(),
                    Instant::now(),
                    SystemTime::now(),
                )
            });
        let login = match minted {
            Ok(login) => login,
            Err(e) => return mint_refusal(e),
        };
        let profile = login.profile.as_ref();
        let answer = MintResponse {
            code: &login.code,
            app_id: self.app_id(),
            open_id: &login.open_id,
            union_id: login.union_id.as_deref(),
            encrypted_data: profile.map(|p| p.encrypted_data.as_str()),
            iv: profile.map(|p| p.iv.as_str()),
            raw_data: profile.map(|p| p.raw_data.as_str()),
            signature: profile.map(|p| p.signature.as_str()),
            phone: login.phone.as_ref().map(|p| PhoneData {
                encrypted_data: &p.encrypted_data,
                iv: &p.iv,
            }),
        };
        json(
            StatusCode::OK,
            serde_json::to_string(&answer).expect("the answer serializes"),
        )
    }
}

impl SimulatedApps {
    /// `GET /sns/jscode2session` for every app, as
    /// [`WeChatSimulator::jscode2session_handler`], answered by the app of the query's
    /// `appid`; a code minted for another app is 40029 and stays usable for its own.
    /// An `appid` none of them has is refused as by a single simulator (40013).
    pub fn jscode2session_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let query = request.uri().query().unwrap_or("");
            let app_id = wire::query_param(query, "appid");
            let body = apps
                .by_app_id(app_id.as_deref())
                .jscode2session_query(query);
            Box::pin(future::ready(json(StatusCode::OK, body)))
        }
    }

    /// `POST /cgi-bin/stable_token` for every app, as
    /// [`WeChatSimulator::stable_token_handler`], answered by the app of the body's
    /// `appid` (an unknown one is 40013, a body that is not JSON 47001, as for a single
    /// simulator).
    pub fn stable_token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let apps = apps.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let token_request = wechat_body::<TokenRequest>(&parts.headers, body).await;
                let app_id = token_request
                    .as_ref()
                    .ok()
                    .and_then(|r| r.app_id.as_deref());
                let answer = apps
                    .by_app_id(app_id)
                    .stable_token_answer(token_request, Instant::now());
                json(StatusCode::OK, answer)
            })
        }
    }

    /// `GET /cgi-bin/token` for every app, as [`WeChatSimulator::token_handler`],
    /// answered by the app of the query's `appid` (an unknown one is 40013).
    pub fn token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let query = request.uri().query().unwrap_or("");
            let app_id = wire::query_param(query, "appid");
            let body = apps
                .by_app_id(app_id.as_deref())
                .token_query_answer(query, Instant::now());
            Box::pin(future::ready(json(StatusCode::OK, body)))
        }
    }

    /// `POST /wxa/business/getuserphonenumber?access_token=..` for every app, as
    /// [`WeChatSimulator::phone_number_handler`], answered by the app that issued the
    /// `access_token` (so the watermark names that app, and only its phone codes are
    /// known). A token none of them knows is refused as by a single simulator (40001,
    /// or 41001 and 40014 for a missing or malformed one).
    pub fn phone_number_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let apps = apps.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let phone_request = wechat_body::<PhoneNumberRequest>(&parts.headers, body).await;
                let query = parts.uri.query().unwrap_or("");
                let access_token = wire::access_token_param(query);
                let answer = apps
                    .by_access_token(access_token.as_deref())
                    .phone_number_answer(query, phone_request, Instant::now(), SystemTime::now());
                json(StatusCode::OK, answer)
            })
        }
    }

    /// `POST` JSON `{"user": "alice", "phone": "13800138000", "app": "wx-shop"}`: mints
    /// a phone code as [`WeChatSimulator::phone_mint_handler`] for app `app` (without
    /// it, the [first](Self::first)); the answer's `app_id` names the app. An app none
    /// of them has is 400 `{"error": "invalid_request", "error_description"}`.
    ///
    /// Mount it in tests and demos only.
    pub fn phone_mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let apps = apps.clone();
            Box::pin(async move {
                let expected = r#"expected JSON {"user": "<name>", "phone": "<number>", "app": "<app id>" (optional)}"#;
                let mint = match mint_body::<PhoneMintRequest>(request, expected).await {
                    Ok(mint) => mint,
                    Err(refused) => return refused,
                };
                apps.mint_for(mint.app.as_deref(), |sim| sim.phone_mint_answer(&mint))
            })
        }
    }

    /// `POST` JSON `{"user": "alice", "profile": true, "phone": "13800138000", "app":
    /// "wx-shop"}`: mints a login code as [`WeChatSimulator::mint_handler`] for app
    /// `app` (without it, the [first](Self::first)); the answer's `app_id` names the
    /// app. An app none of them has is 400
    /// `{"error": "invalid_request", "error_description"}`.
    ///
    /// Anyone who can reach it can log in as anyone: mount it in tests and demos only.
    pub fn mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<> {
        let apps = self.clone();
        move |request: Request| {
            let apps = apps.clone();
            Box::pin(async move {
                let expected = r#"expected JSON {"user": "<name>", "profile": <bool, optional>, "phone": "<number>" (optional), "app": "<app id>" (optional)}"#;
                let mint = match mint_body::<MintRequest>(request, expected).await {
                    Ok(mint) => mint,
                    Err(refused) => return refused,
                };
                apps.mint_for(mint.app.as_deref(), |sim| sim.mint_answer(&mint))
            })
        }
    }

    /// The `mint` answer of the app a mint request names (none: the first), or the 400
    /// refusal of an app none of them has.
    fn mint_for(
        &self,
        app: Option<&str>,
        mint: impl FnOnce(&WeChatSimulator) -> Response,
    ) -> Response {
        let Some(app) = app else {
            return mint(self.first());
        };
        match self.get(app) {
            Some(sim) => mint(sim),
            None => {
                let known: Vec<&str> = self.apps().iter().map(WeChatSimulator::app_id).collect();
                let description = format!("unknown app {app:?}; the simulated apps are {known:?}");
                refusal(StatusCode::BAD_REQUEST, "invalid_request", &description)
            }
        }
    }
}

/// A WeChat API body, or 47001 for one that could not be read or is not a JSON object
/// of the expected shape (WeChat answers them all alike).
async fn wechat_body<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Body,
) -> Result<T, Errcode> {
    // An object first: serde would also read a struct from an array.
    let object: serde_json::Map<String, serde_json::Value> =
        read_json(headers, body, MAX_WECHAT_BODY_BYTES)
            .await
            .map_err(|_| Errcode::DATA_FORMAT_ERROR)?;
    serde_json::from_value(object.into()).map_err(|_| Errcode::DATA_FORMAT_ERROR)
}

/// A mint request's body, or the refusal of one that could not be read or is not the
/// `expected` JSON.
async fn mint_body<T: DeserializeOwned>(request: Request, expected: &str) -> Result<T, Response> {
    let (parts, body) = request.into_parts();
    read_json::<T>(&parts.headers, body, MAX_MINT_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            ),
            BodyError::Unreadable => refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "could not read the request body",
            ),
            BodyError::NotJson => refusal(StatusCode::BAD_REQUEST, "invalid_request", expected),
        })
}

/// The refusal of a mint that failed: 400 for bad input, 500 for a failed RNG.
fn mint_refusal(e: SimulatorError) -> Response {
    match e {
        SimulatorError::InvalidUser | SimulatorError::InvalidPhone => {
            refusal(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
        }
        SimulatorError::Rng => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        ),
    }
}

/// A JSON answer, never cached: a minted code is a one-time credential.
fn json(status: StatusCode, body: String) -> Response {
    json_response(status, Bytes::from(body), Body::from)
}

fn refusal(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    json(status, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_http::{call, get, post};

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    fn mint(body: &str) -> http::Request<Body> {
        http::Request::post("/sim/login")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn exchange(code: &str) -> http::Request<Body> {
        let uri = format!(
            "/sns/jscode2session?appid={APP}&secret={SECRET}&js_code={code}&grant_type=authorization_code"
        );
        http::Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn minted_codes_are_exchanged_over_http() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let (status, minted) = call(sim.mint_handler(), mint(r#"{"user": "alice"}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(minted["open_id"], sim.open_id("alice"));
        assert!(minted.get("encryptedData").is_none());
        assert!(minted.get("union_id").is_none());
        let code = minted["code"].as_str().unwrap();

        let (status, session) = call(sim.jscode2session_handler(), exchange(code)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(session["openid"], sim.open_id("alice"));
        let (status, again) = call(sim.jscode2session_handler(), exchange(code)).await;
        assert_eq!(status, StatusCode::OK, "WeChat answers errors with 200");
        assert_eq!(again["errcode"], 40163);
    }

    #[tokio::test]
    async fn minted_profiles_are_an_authorize_body() {
        let sim = WeChatSimulator::new(APP, SECRET).with_union_ids(true);
        let (status, minted) = call(
            sim.mint_handler(),
            mint(r#"{"user": "alice", "profile": true}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(minted["union_id"], sim.union_id("alice").unwrap());
        let login: crate::login::AuthorizeRequest = serde_json::from_value(minted.clone()).unwrap();
        for field in [
            &login.code,
            &login.encrypted_data,
            &login.iv,
            &login.raw_data,
            &login.signature,
        ] {
            assert!(field.as_deref().is_some_and(|f| !f.is_empty()));
        }
    }

    fn stable_token_body(force_refresh: bool) -> String {
        serde_json::json!({
            "grant_type": "client_credential",
            "appid": APP,
            "secret": SECRET,
            "force_refresh": force_refresh,
        })
        .to_string()
    }

    /// A valid access token, over HTTP.
    async fn access_token(sim: &WeChatSimulator) -> String {
        let (status, answer) = call(
            sim.stable_token_handler(),
            post("/cgi-bin/stable_token", &stable_token_body(false)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        answer["access_token"].as_str().unwrap().to_owned()
    }

    fn phone_number(access_token: &str, body: &str) -> http::Request<Body> {
        post(
            &format!("/wxa/business/getuserphonenumber?access_token={access_token}"),
            body,
        )
    }

    #[tokio::test]
    async fn stable_tokens_are_served_over_http() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let handler = sim.stable_token_handler();
        let (status, first) = call(
            handler.clone(),
            post("/cgi-bin/stable_token", &stable_token_body(false)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["expires_in"], 7200);
        let token = first["access_token"].as_str().unwrap();
        assert!(sim.check_access_token(token).is_ok());
        // force_refresh is optional, and unknown fields are ignored.
        let body = format!(
            r#"{{"grant_type": "client_credential", "appid": "{APP}", "secret": "{SECRET}", "x": 1}}"#
        );
        let (_, again) = call(handler.clone(), post("/cgi-bin/stable_token", &body)).await;
        assert_eq!(again["access_token"], token);
        let (_, forced) = call(
            handler.clone(),
            post("/cgi-bin/stable_token", &stable_token_body(true)),
        )
        .await;
        assert_ne!(forced["access_token"], token);
        assert_eq!(
            sim.check_access_token(token),
            Err(crate::testing::Errcode::INVALID_CREDENTIAL)
        );
        let (_, too_soon) = call(
            handler,
            post("/cgi-bin/stable_token", &stable_token_body(true)),
        )
        .await;
        assert_eq!(too_soon["errcode"], 45009);
        let calls = sim.calls();
        assert_eq!((calls.stable_token, calls.force_refresh), (4, 1));
    }

    #[tokio::test]
    async fn refused_stable_token_requests_are_200_with_an_errcode() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let huge = format!(r#"{{"appid": "{}"}}"#, "x".repeat(MAX_WECHAT_BODY_BYTES));
        for (body, errcode) in [
            ("", 47001),
            ("nope", 47001),
            ("[]", 47001),
            (
                r#"["client_credential", "wx-sim-app", "sim-secret"]"#,
                47001,
            ),
            (r#"{"grant_type": 1}"#, 47001),
            (r#"{"force_refresh": "yes"}"#, 47001),
            (huge.as_str(), 47001),
            ("{}", 40002),
            (r#"{"grant_type": "client_credential"}"#, 41002),
            (
                r#"{"grant_type": "client_credential", "appid": "wx-sim-app"}"#,
                41004,
            ),
            (
                r#"{"grant_type": "client_credential", "appid": "wx-x", "secret": "sim-secret"}"#,
                40013,
            ),
            (
                r#"{"grant_type": "client_credential", "appid": "wx-sim-app", "secret": "s"}"#,
                40125,
            ),
        ] {
            let (status, answer) = call(
                sim.stable_token_handler(),
                post("/cgi-bin/stable_token", body),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(answer["errcode"], errcode, "{body}");
            assert!(answer["errmsg"].is_string());
            assert!(answer.get("access_token").is_none());
        }
    }

    #[tokio::test]
    async fn legacy_tokens_are_served_over_http() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let uri =
            format!("/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}");
        let (status, first) = call(sim.token_handler(), get(&uri)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["expires_in"], 7200);
        let (_, second) = call(sim.token_handler(), get(&uri)).await;
        assert_ne!(first["access_token"], second["access_token"]);
        assert!(
            sim.check_access_token(first["access_token"].as_str().unwrap())
                .is_err()
        );
        let (status, refused) = call(sim.token_handler(), get("/cgi-bin/token")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(refused["errcode"], 40002);
        assert_eq!(sim.calls().token, 3);
    }

    #[tokio::test]
    async fn phone_codes_are_minted_and_exchanged_over_http() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let (status, minted) = call(
            sim.phone_mint_handler(),
            post(
                "/sim/phone",
                r#"{"user": "alice", "phone": "+1 4155550100"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            minted,
            serde_json::json!({
                "code": minted["code"],
                "app_id": APP,
                "open_id": sim.open_id("alice"),
                "phone_number": "+1 4155550100",
                "pure_phone_number": "4155550100",
                "country_code": "1",
            })
        );
        let code = minted["code"].as_str().unwrap();
        let token = access_token(&sim).await;
        let body = serde_json::json!({ "code": code, "openid": sim.open_id("alice") }).to_string();
        let (status, answer) = call(sim.phone_number_handler(), phone_number(&token, &body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["errcode"], 0);
        assert_eq!(answer["errmsg"], "ok");
        let info = &answer["phone_info"];
        assert_eq!(info["phoneNumber"], "+1 4155550100");
        assert_eq!(info["purePhoneNumber"], "4155550100");
        assert_eq!(info["countryCode"], "1");
        assert_eq!(info["watermark"]["appid"], APP);
        assert!(info["watermark"]["timestamp"].as_u64().unwrap() > 0);
        let (status, again) = call(sim.phone_number_handler(), phone_number(&token, &body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["errcode"], 40029);
    }

    #[tokio::test]
    async fn numeric_country_codes_over_http() {
        let sim = WeChatSimulator::new(APP, SECRET).with_numeric_country_codes(true);
        let code = sim.phone_code("alice", "13800138000").unwrap().code;
        let token = access_token(&sim).await;
        let body = format!(r#"{{"code": "{code}"}}"#);
        let (_, answer) = call(sim.phone_number_handler(), phone_number(&token, &body)).await;
        assert_eq!(answer["phone_info"]["countryCode"], 86);
    }

    #[tokio::test]
    async fn refused_phone_number_requests_are_200_with_an_errcode() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let token = access_token(&sim).await;
        let code = sim.phone_code("alice", "13800138000").unwrap().code;
        let good = format!(r#"{{"code": "{code}"}}"#);
        let bob = format!(
            r#"{{"code": "{code}", "openid": "{}"}}"#,
            sim.open_id("bob")
        );
        let huge = format!(r#"{{"code": "{}"}}"#, "x".repeat(MAX_WECHAT_BODY_BYTES));
        let no_token = post("/wxa/business/getuserphonenumber", &good);
        let cases = [
            (no_token, 41001),
            (phone_number("", &good), 41001),
            (phone_number("short", &good), 40014),
            (phone_number(&"A".repeat(136), &good), 40001),
            (phone_number(&token, ""), 47001),
            (phone_number(&token, "nope"), 47001),
            (phone_number(&token, "{}"), 47001),
            (phone_number(&token, r#"{"code": 1}"#), 47001),
            (phone_number(&token, &huge), 47001),
            (phone_number(&token, r#"{"code": "nope"}"#), 40029),
            (phone_number(&token, &bob), 40029),
        ];
        for (request, errcode) in cases {
            let (status, answer) = call(sim.phone_number_handler(), request).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["errcode"], errcode, "{answer}");
            assert!(answer.get("phone_info").is_none());
        }
        // None of the refusals used the code up.
        let (_, answer) = call(sim.phone_number_handler(), phone_number(&token, &good)).await;
        assert_eq!(answer["errcode"], 0);
        assert_eq!(sim.calls().phone_number, 12);
    }

    #[tokio::test]
    async fn bad_phone_mint_requests_are_400() {
        let sim = WeChatSimulator::new(APP, SECRET);
        for body in [
            "",
            "{}",
            r#"{"user": "alice"}"#,
            r#"{"phone": "13800138000"}"#,
            r#"{"user": "", "phone": "13800138000"}"#,
            r#"{"user": "alice", "phone": "138"}"#,
            r#"{"user": "alice", "phone": "+1-4155550100"}"#,
            r#"{"user": "alice", "phone": 13800138000}"#,
            r#"{"user": "alice", "phone": "13800138000", "extra": 1}"#,
        ] {
            let (status, answer) = call(sim.phone_mint_handler(), post("/sim/phone", body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(answer["error"], "invalid_request");
            assert!(answer["error_description"].is_string());
        }
        let huge = format!(
            r#"{{"user": "{}", "phone": "1"}}"#,
            "x".repeat(MAX_MINT_BODY_BYTES)
        );
        let (status, _) = call(sim.phone_mint_handler(), post("/sim/phone", &huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn logins_minted_with_a_phone_carry_the_legacy_phone_data() {
        let sim = WeChatSimulator::new(APP, SECRET);
        let (status, minted) = call(
            sim.mint_handler(),
            mint(r#"{"user": "alice", "profile": true, "phone": "13800138000"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let phone = &minted["phone"];
        assert!(
            phone["encryptedData"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        assert!(phone["iv"].as_str().is_some_and(|iv| !iv.is_empty()));
        assert_ne!(phone["iv"], minted["iv"], "the phone has its own IV");
        let login: crate::login::AuthorizeRequest = serde_json::from_value(minted.clone()).unwrap();
        assert!(login.encrypted_data.is_some());
        let (_, plain) = call(sim.mint_handler(), mint(r#"{"user": "alice"}"#)).await;
        assert!(plain.get("phone").is_none());
        let (status, answer) = call(
            sim.mint_handler(),
            mint(r#"{"user": "alice", "phone": "12"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"], "invalid_request");
    }

    #[tokio::test]
    async fn injected_faults_are_200_with_the_errcode() {
        let sim = WeChatSimulator::new(APP, SECRET);
        sim.fail_next(super::super::SimEndpoint::StableToken, -1, 1);
        let (status, answer) = call(
            sim.stable_token_handler(),
            post("/cgi-bin/stable_token", &stable_token_body(false)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer,
            serde_json::json!({"errcode": -1, "errmsg": "injected"})
        );
        sim.fail_next(super::super::SimEndpoint::Jscode2Session, 40029, 1);
        let login = sim.login("alice").unwrap();
        let (status, answer) = call(sim.jscode2session_handler(), exchange(&login.code)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["errcode"], 40029);
        let (_, answer) = call(sim.jscode2session_handler(), exchange(&login.code)).await;
        assert_eq!(answer["openid"], sim.open_id("alice"));
    }

    #[tokio::test]
    async fn bad_mint_requests_are_400() {
        let sim = WeChatSimulator::new(APP, SECRET);
        for body in [
            "",
            "{}",
            r#"{"user": ""}"#,
            r#"{"user": "a", "extra": 1}"#,
            "alice",
        ] {
            let (status, answer) = call(sim.mint_handler(), mint(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(answer["error"], "invalid_request");
        }
        let huge = format!(r#"{{"user": "{}"}}"#, "x".repeat(MAX_MINT_BODY_BYTES));
        let (status, _) = call(sim.mint_handler(), mint(&huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
