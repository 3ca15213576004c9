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
    SimulatorError, WeChatSimulator,
    phone::Phone,
    wire::{Errcode, PhoneNumberRequest, TokenRequest},
};
use crate::{
    login::{BodyError, read_json},
    response::json_response,
};
/// The future of a handler, boxed as axum's are.
type HandlerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A mint request is a user name, a phone number and a flag; anything larger is not one.
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneMintRequest {
    user: String,
    phone: String,
}

/// The phone mint answer.
#[derive(Serialize)]
struct PhoneMintResponse<'a> {
    code: &'a str,
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

impl WeChatSimulator {
    /// `GET /sns/jscode2session`: WeChat's code exchange, answered from the query string
    /// (always HTTP 200 with JSON, errcodes included, as WeChat does).
    ///
    /// Mount it at `<base>/sns/jscode2session` and give the server under test
    /// [`client(<base>)`](Self::client).
    pub fn jscode2session_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        let sim = self.clone();
        move |request: Request| {
            let body = sim.jscode2session_query(request.uri().query().unwrap_or(""));
            Box::pin(future::ready(json(StatusCode::OK, body)))
        }
    }

    /// `POST /cgi-bin/stable_token`: WeChat's access token endpoint, answered from the
    /// JSON body `{"grant_type": "client_credential", "appid", "secret",
    /// "force_refresh"?}` (always HTTP 200 with JSON, errcodes included, as WeChat
    /// does). See [`stable_token`](Self::stable_token); a body that is not such JSON
    /// is 47001.
    pub fn stable_token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        let sim = self.clone();
        move |request: Request| {
            let sim = sim.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let token_request = wechat_body::<TokenRequest>(&parts.headers, body).await;
                json(
                    StatusCode::OK,
                    sim.stable_token_answer(token_request, Instant::now()),
                )
            })
        }
    }

    /// `GET /cgi-bin/token`: WeChat's legacy access token endpoint, answered from the
    /// query string `grant_type=client_credential&appid=..&secret=..` (always HTTP 200
    /// with JSON). See [`token`](Self::token).
    pub fn token_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        let sim = self.clone();
        move |request: Request| {
            let query = request.uri().query().unwrap_or("");
            let body = sim.token_query_answer(query, Instant::now());
            Box::pin(future::ready(json(StatusCode::OK, body)))
        }
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
        let sim = self.clone();
        move |request: Request| {
            let sim = sim.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let phone_request = wechat_body::<PhoneNumberRequest>(&parts.headers, body).await;
                let answer = sim.phone_number_answer(
                    parts.uri.query().unwrap_or(""),
                    phone_request,
                    Instant::now(),
                    SystemTime::now(),
                );
                json(StatusCode::OK, answer)
            })
        }
    }

    /// `POST` JSON `{"user": "alice", "phone": "13800138000"}`: mints a one-time phone
    /// code for the test user (see [`phone_code`](Self::phone_code) for the phone
    /// format) and answers `200 {"code", "open_id", "phone_number",
    /// "pure_phone_number", "country_code"}`. Bad input is 400
    /// `{"error": "invalid_request", "error_description"}`.
    ///
    /// Anyone who can reach it can hand any phone number to the server under test:
    /// mount it in tests and demos only.
    pub fn phone_mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        let sim = self.clone();
        move |request: Request| {
            let sim = sim.clone();
            Box::pin(async move { sim.phone_mint_response(request).await })
        }
    }

    async fn phone_mint_response(self, request: Request) -> Response {
        let expected = r#"expected JSON {"user": "<name>", "phone": "<number>"}"#;
        let mint = match mint_body::<PhoneMintRequest>(request, expected).await {
            Ok(mint) => mint,
            Err(refused) => return refused,
        };
        let minted = match self.phone_code(&mint.user, &mint.phone) {
            Ok(minted) => minted,
            Err(e) => return mint_refusal(e),
        };
        let answer = PhoneMintResponse {
            code: &minted.code,
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

    /// `POST` JSON `{"user": "alice", "profile": true, "phone": "13800138000"}`: mints
    /// a login code for the test user (with `profile`, also encrypted profile data;
    /// with `phone`, also the legacy encrypted phone data, see
    /// [`login_with_phone`](Self::login_with_phone)) and answers
    /// `200 {"code", "open_id", "union_id"?, "encryptedData"?, "iv"?, "rawData"?,
    /// "signature"?, "phone"?: {"encryptedData", "iv"}}`, a body `POST /auth/authorize`
    /// accepts as it is. Bad input is 400
    /// `{"error": "invalid_request", "error_description"}`.
    ///
    /// Anyone who can reach it can log in as anyone: mount it in tests and demos only.
    pub fn mint_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        let sim = self.clone();
        move |request: Request| {
            let sim = sim.clone();
            Box::pin(async move { sim.mint_response(request).await })
        }
    }

    async fn mint_response(self, request: Request) -> Response {
        let expected = r#"expected JSON {"user": "<name>", "profile": <bool, optional>, "phone": "<number>" (optional)}"#;
        let mint = match mint_body::<MintRequest>(request, expected).await {
            Ok(mint) => mint,
            Err(refused) => return refused,
        };
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

/// A WeChat API body, or 47001 for one that could not be read or is not JSON of the
/// expected shape (WeChat answers them all alike).
async fn wechat_body<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Body,
) -> Result<T, Errcode> {
    read_json(headers, body, MAX_WECHAT_BODY_BYTES)
        .await
        .map_err(|_| Errcode::DATA_FORMAT_ERROR)
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
    use http::header;
    use http_body_util::BodyExt as _;

    use super::*;

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    async fn call(
        handler: impl Fn(Request) -> HandlerFuture,
        request: http::Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let response = handler(request).await;
        let status = response.status();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

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
