//! The HTTP handlers (`authorize`, `refresh`, `logout`, `logout_all`) and `auth.layer()`
//! in an `axum::Router`, driven with `oneshot`, against a fake WeChat and a real sqlite
//! file.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    http::{
        Request, StatusCode,
        header::{
            AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
            WWW_AUTHENTICATE,
        },
    },
};
use bytes::Bytes;
use http_body::Frame;
use mpauthx::{MAX_BODY_BYTES, MemoryTokenStore, Sku, Token, TokenStore};
use serde_json::json;

use crate::common::{
    fake_wechat::{wechat_errcode, wechat_ok},
    http::{Answer, json_post},
    keys::{APP_ID, SECRET, SKU, encrypted, profile_json, session_key, sku},
    login::{Fixture, TTL},
    stores::{dedicated, shared_redis},
    users,
};

const OPEN_ID: &str = "oUser_http-1";

impl<T: TokenStore> Fixture<T> {
    /// Logs in with `code` through `POST /auth/authorize` and returns the token, checking
    /// the 200 answer on the way.
    async fn login_over_http(&self, code: &str) -> String {
        let answer = self.authorize(json!({ "code": code })).await;
        assert_token_answer(&answer);
        answer.json()["token"].as_str().unwrap().to_owned()
    }
}

fn assert_token_answer(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.header(CACHE_CONTROL), Some("no-store"), "{answer:?}");
    assert_eq!(
        answer.header(CONTENT_TYPE),
        Some("application/json"),
        "{answer:?}"
    );
    let json = answer.json();
    assert_eq!(json["token_type"], "Bearer", "{json}");
    assert_eq!(json["expires_in"], TTL.as_secs(), "{json}");
    let token = json["token"].as_str().expect("a token");
    assert!(token.starts_with(&format!("{SKU}.")), "{token}");
    assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
}

/// An error answer: `status`, JSON `{error, error_description, code}`, never cached.
fn assert_error(answer: &Answer, status: StatusCode, error: &str, code: u16) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.header(CONTENT_TYPE),
        Some("application/json"),
        "{answer:?}"
    );
    assert_eq!(answer.header(CACHE_CONTROL), Some("no-store"), "{answer:?}");
    let json = answer.json();
    assert_eq!(json["error"], error, "{json}");
    assert_eq!(json["code"], code, "{json}");
    assert!(json["error_description"].is_string(), "{json}");
    assert!(!answer.body.contains(SECRET), "{answer:?}");
    assert!(!answer.body.contains(&session_key()), "{answer:?}");
}

fn assert_invalid_token(answer: &Answer) {
    assert_error(answer, StatusCode::UNAUTHORIZED, "invalid_token", 6007);
    let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

/// `/me` refuses `token` (the layer's own 401).
async fn assert_rejected_at_me<T: TokenStore>(fx: &Fixture<T>, token: &str) {
    let answer = fx.me(token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

async fn assert_accepted_at_me<T: TokenStore>(fx: &Fixture<T>, token: &str) {
    let answer = fx.me(token).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, OPEN_ID);
}

/// A body of `chunks` × `chunk_len` bytes whose length is unknown up front (no size
/// hint), as a chunked upload without `Content-Length` would be.
struct Streaming {
    chunks_left: usize,
    chunk_len: usize,
}

impl http_body::Body for Streaming {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.chunks_left == 0 {
            return Poll::Ready(None);
        }
        self.chunks_left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![
            b' ';
            self.chunk_len
        ])))))
    }
}

// ---------------------------------------------------------------------------------------
// The happy path
// ---------------------------------------------------------------------------------------

async fn full_flow<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;

    // authorize
    let answer = fx
        .authorize(json!({ "code": "code-1", "device": "iPhone" }))
        .await;
    assert_token_answer(&answer);
    let first = answer.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(fx.rows(OPEN_ID), 1);
    assert_eq!(fx.wechat_calls(), 1);
    assert_accepted_at_me(&fx, &first).await;

    // refresh
    let answer = fx.post_with_token("/auth/refresh", &first).await;
    assert_token_answer(&answer);
    let second = answer.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_rejected_at_me(&fx, &first).await;
    assert_accepted_at_me(&fx, &second).await;
    // The old token cannot be refreshed again.
    assert_invalid_token(&fx.post_with_token("/auth/refresh", &first).await);

    // logout
    let answer = fx.post_with_token("/auth/logout", &second).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    assert!(answer.body.is_empty(), "{answer:?}");
    assert_rejected_at_me(&fx, &second).await;
    assert_invalid_token(&fx.post_with_token("/auth/logout", &second).await);
    assert_eq!(fx.rows(OPEN_ID), 1, "logging out keeps the user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_refresh_logout_through_the_router() {
    full_flow(MemoryTokenStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_refresh_logout_through_the_router_on_redis() {
    full_flow(shared_redis("handlers_flow").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_an_encrypted_profile_stores_it() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let encrypted = encrypted(&profile_json(OPEN_ID, APP_ID));

    let answer = fx
        .authorize(json!({
            "code": "code-1",
            "encryptedData": encrypted.encrypted_data,
            "iv": encrypted.iv,
        }))
        .await;

    assert_token_answer(&answer);
    let nick: String = users::raw(&fx.db)
        .query_row(
            "SELECT nickName FROM user WHERE openId = ?1",
            [OPEN_ID],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(nick, "Ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_revokes_every_device() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let phone = fx.login_over_http("code-1").await;
    let tablet = fx.login_over_http("code-2").await;
    assert_accepted_at_me(&fx, &phone).await;
    assert_accepted_at_me(&fx, &tablet).await;

    let answer = fx.post_with_token("/auth/logout_all", &phone).await;

    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    assert_rejected_at_me(&fx, &phone).await;
    assert_rejected_at_me(&fx, &tablet).await;
    assert_invalid_token(&fx.post_with_token("/auth/logout_all", &tablet).await);
}

// ---------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_without_code_is_400_6001() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    for body in [json!({}), json!({ "code": "" }), json!({ "iv": "AAAA" })] {
        let answer = fx.authorize(body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6001);
        assert!(answer.header(WWW_AUTHENTICATE).is_none(), "{answer:?}");
    }
    assert_eq!(fx.wechat_calls(), 0);
    assert_eq!(fx.rows(OPEN_ID), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_encrypted_data_but_no_iv_is_400_6001() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let answer = fx
        .authorize(json!({ "code": "code-1", "encryptedData": "AAAA" }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6001);
    assert_eq!(fx.wechat_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_a_non_json_body_is_400() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    for body in [
        "code=abc",
        "",
        "{\"code\":",
        "[\"code-1\"]",
        "{\"code\": 42}",
    ] {
        let answer = fx.send(json_post("/auth/authorize", body)).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6001);
    }
    assert_eq!(fx.wechat_calls(), 0);
    assert_eq!(fx.rows(OPEN_ID), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_a_body_over_64_kib_and_content_length_is_413() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    // Valid JSON with a real code, padded past the limit: only the size is wrong.
    let body = format!(
        "{{\"code\":\"code-1\",\"device\":\"{}\"}}",
        "x".repeat(MAX_BODY_BYTES)
    );
    let request = Request::post("/auth/authorize")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap();

    let answer = fx.send(request).await;

    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        6001,
    );
    assert_eq!(fx.wechat_calls(), 0);
    assert_eq!(fx.rows(OPEN_ID), 0);

    // A declared length over the limit is refused as well, whatever the body.
    let request = Request::post("/auth/authorize")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
        .body(Body::new(Streaming {
            chunks_left: usize::MAX,
            chunk_len: 1024,
        }))
        .unwrap();
    let answer = fx.send(request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_a_streamed_body_over_64_kib_is_413() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let request = Request::post("/auth/authorize")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::new(Streaming {
            chunks_left: 80,
            chunk_len: 1024,
        }))
        .unwrap();
    assert!(request.headers().get(CONTENT_LENGTH).is_none());

    let answer = fx.send(request).await;

    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        6001,
    );
    assert_eq!(fx.wechat_calls(), 0);

    // The same kind of body under the limit is read (and refused only as not JSON).
    let request = Request::post("/auth/authorize")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::new(Streaming {
            chunks_left: 8,
            chunk_len: 1024,
        }))
        .unwrap();
    let answer = fx.send(request).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_routes_without_authorization_are_401_missing_token() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    for path in ["/auth/refresh", "/auth/logout", "/auth/logout_all"] {
        let answer = fx
            .send(Request::post(path).body(Body::empty()).unwrap())
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "missing_token", 6001);
        let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
        assert!(challenge.starts_with("Bearer"), "{path}: {challenge}");
        assert!(!challenge.contains("error="), "{path}: {challenge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_routes_with_a_malformed_authorization_are_400() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let token = fx.login_over_http("code-1").await;
    for path in ["/auth/refresh", "/auth/logout", "/auth/logout_all"] {
        for header in ["Bearer", "Bearer not a token", "Bearer a,b"] {
            let request = Request::post(path)
                .header(AUTHORIZATION, header)
                .body(Body::empty())
                .unwrap();
            let answer = fx.send(request).await;
            // The layer's answer to the same header: 6007 and an RFC 6750 challenge.
            assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6007);
            let challenge = answer.header(WWW_AUTHENTICATE).unwrap_or_default();
            assert!(
                challenge.contains(r#"error="invalid_request""#),
                "{answer:?}"
            );
        }
        // Two Authorization headers are ambiguous, even if one is valid.
        let request = Request::post(path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let answer = fx.send(request).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", 6007);
    }
    assert_accepted_at_me(&fx, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_routes_with_an_unknown_token_are_401_invalid_token() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_ok(OPEN_ID, None)).await;
    let unknown = Token::generate(&sku(), OPEN_ID).unwrap();
    let other_sku = Token::generate(&Sku::new("other").unwrap(), OPEN_ID).unwrap();
    for path in ["/auth/refresh", "/auth/logout", "/auth/logout_all"] {
        for token in [unknown.expose(), other_sku.expose(), "not-a-token"] {
            assert_invalid_token(&fx.post_with_token(path, token).await);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstream and store failures
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_invalid_code_is_401_6008() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_errcode(40029)).await;
    let answer = fx.authorize(json!({ "code": "code-1" })).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_code", 6008);
    assert_eq!(fx.wechat_calls(), 1);
    assert_eq!(fx.rows(OPEN_ID), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_rate_limit_is_429_with_retry_after() {
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_errcode(45011)).await;
    let answer = fx.authorize(json!({ "code": "code-1" })).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited", 6008);
    let retry_after: u64 = answer
        .header(RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .expect("delay-seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(fx.wechat_calls(), 1, "45011 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_store_down_during_authorize_is_503_and_stores_no_user() {
    let (mut server, tokens, _) = dedicated("handlers_down").await;
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let token = fx.login_over_http("code-1").await;
    assert_eq!(fx.rows(OPEN_ID), 1);
    let newcomer = "oUser_http-2";
    // A second user whose first login falls into the outage.
    let fx2 = Fixture::new(fx.auth.tokens().clone(), wechat_ok(newcomer, None)).await;

    server.stop();

    let answer = fx2.authorize(json!({ "code": "code-2" })).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        6000,
    );
    assert!(answer.header(RETRY_AFTER).is_some(), "{answer:?}");
    assert_eq!(fx2.wechat_calls(), 1);
    assert_eq!(fx2.rows(newcomer), 0, "no user row without a token");

    // A store outage is 503 on every route, never 401.
    let answer = fx.post_with_token("/auth/refresh", &token).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        6000,
    );
    let answer = fx.post_with_token("/auth/logout", &token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    let answer = fx.me(&token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_invalid_code_401_carries_a_www_authenticate_challenge() {
    // RFC 7235 §3.1: a 401 response MUST carry WWW-Authenticate; DESIGN.md asks for it
    // on "bad/expired token or code".
    let fx = Fixture::new(MemoryTokenStore::new(), wechat_errcode(40029)).await;
    let answer = fx.authorize(json!({ "code": "code-1" })).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert!(
        answer.header(WWW_AUTHENTICATE).is_some(),
        "401 without a challenge: {answer:?}"
    );
}
