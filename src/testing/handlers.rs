//! The simulator over HTTP, as axum handlers (axum-core types only).

use std::future;

use axum_core::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{SimulatorError, WeChatSimulator};
use crate::{
    login::{BodyError, read_json},
    response::json_response,
};
/// The future of a handler, boxed as axum's are.
type HandlerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A mint request is a user name and a flag; anything larger is not one.
const MAX_MINT_BODY_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    user: String,
    #[serde(default)]
    profile: bool,
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

    /// `POST` JSON `{"user": "alice", "profile": true}`: mints a login code for the test
    /// user (with `profile`, also encrypted profile data) and answers
    /// `200 {"code", "open_id", "union_id"?, "encryptedData"?, "iv"?, "rawData"?,
    /// "signature"?}`, a body `POST /auth/authorize` accepts as it is. Bad input is 400
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
        let (parts, body) = request.into_parts();
        let mint = match read_json::<MintRequest>(&parts.headers, body, MAX_MINT_BODY_BYTES).await {
            Ok(mint) => mint,
            Err(BodyError::TooLarge) => {
                return refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is too large",
                );
            }
            Err(BodyError::Unreadable) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "could not read the request body",
                );
            }
            Err(BodyError::NotJson) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    r#"expected JSON {"user": "<name>", "profile": <bool, optional>}"#,
                );
            }
        };
        let minted = if mint.profile {
            self.login_with_profile(&mint.user)
        } else {
            self.login(&mint.user)
        };
        let login = match minted {
            Ok(login) => login,
            Err(e @ SimulatorError::InvalidUser) => {
                return refusal(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
            }
            Err(e) => {
                return refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    &e.to_string(),
                );
            }
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
        };
        json(
            StatusCode::OK,
            serde_json::to_string(&answer).expect("the answer serializes"),
        )
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
