//! `MpAuthLayer` and the `AuthedUser` extractor in an `axum::Router`.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{
        Request, StatusCode,
        header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE},
    },
    routing::get,
};
use mpauthx::{AuthedUser, IssueOptions, MemoryTokenStore, MpAuthLayer, Token, TokenStore};
use tower::ServiceExt as _;

use crate::common::{
    http::{Answer, bearer},
    keys::sku,
    stores::{self, shared_redis},
};

const ALICE: &str = "o-alice_123";
const HOUR: Duration = Duration::from_secs(3600);

async fn required(user: AuthedUser) -> String {
    user.open_id().to_owned()
}

async fn optional(user: Option<AuthedUser>) -> String {
    user.map_or_else(|| "anon".to_owned(), |u| u.open_id().to_owned())
}

/// - `/required`: `AuthedUser` behind a required layer;
/// - `/optional`: `Option<AuthedUser>` behind an optional layer;
/// - `/optional-required`: `AuthedUser` behind an optional layer;
/// - `/bare`, `/bare-optional`: the extractors on routes without any layer.
fn app<T: TokenStore>(store: T) -> Router {
    let required_routes = Router::new()
        .route("/required", get(required))
        .layer(MpAuthLayer::new(store.clone(), sku()));
    let optional_routes = Router::new()
        .route("/optional", get(optional))
        .route("/optional-required", get(required))
        .layer(MpAuthLayer::new(store, sku()).with_optional(true));
    Router::new()
        .merge(required_routes)
        .merge(optional_routes)
        .route("/bare", get(required))
        .route("/bare-optional", get(optional))
}

/// A token of `open_id` for an hour, issued into `store`.
async fn issue<T: TokenStore>(store: &T, open_id: &str) -> Token {
    stores::issue(store, open_id, &IssueOptions::new(HOUR)).await
}

async fn get_with(app: &Router, path: &str, token: Option<&str>) -> Answer {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(AUTHORIZATION, bearer(token));
    }
    Answer::collect(app.clone().oneshot(request).await.unwrap()).await
}

fn assert_ok(answer: &Answer, body: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, body);
    assert_eq!(answer.header(WWW_AUTHENTICATE), None);
}

fn assert_missing_token(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        answer.header(WWW_AUTHENTICATE),
        Some(r#"Bearer realm="mpauthx""#)
    );
    let json = answer.json();
    assert_eq!(json["error"], "missing_token");
    assert_eq!(json["code"], 6001);
}

fn assert_invalid_token(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
    assert!(
        challenge.starts_with(r#"Bearer realm="mpauthx", error="invalid_token""#),
        "{challenge}"
    );
    let json = answer.json();
    assert_eq!(json["error"], "invalid_token");
    assert_eq!(json["code"], 6007);
}

fn assert_missing_layer(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert!(answer.body.contains("MpAuthLayer"), "{}", answer.body);
    assert_eq!(answer.header(CONTENT_TYPE), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["error"], "server_error");
    assert_eq!(json["code"], 9999);
    assert_eq!(
        answer.header(WWW_AUTHENTICATE),
        None,
        "a 500 is no challenge"
    );
}

#[tokio::test]
async fn required_route_with_valid_token_is_200_with_the_open_id() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    let alice = issue(&store, ALICE).await;
    let bob = issue(&store, "o-bob").await;
    assert_ok(
        &get_with(&app, "/required", Some(alice.expose())).await,
        ALICE,
    );
    assert_ok(
        &get_with(&app, "/required", Some(bob.expose())).await,
        "o-bob",
    );
}

#[tokio::test]
async fn required_route_without_token_is_401() {
    let app = app(MemoryTokenStore::new());
    let answer = get_with(&app, "/required", None).await;
    assert_missing_token(&answer);
    assert_eq!(answer.header(CONTENT_TYPE), Some("application/json"));
}

#[tokio::test]
async fn required_route_with_unknown_token_is_401_invalid_token() {
    let app = app(MemoryTokenStore::new());
    let never_issued = Token::generate(&sku(), ALICE).unwrap();
    assert_invalid_token(&get_with(&app, "/required", Some(never_issued.expose())).await);
}

#[tokio::test]
async fn optional_route_without_token_is_anon() {
    let app = app(MemoryTokenStore::new());
    assert_ok(&get_with(&app, "/optional", None).await, "anon");
}

#[tokio::test]
async fn optional_route_with_valid_token_is_the_open_id() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    let token = issue(&store, ALICE).await;
    assert_ok(
        &get_with(&app, "/optional", Some(token.expose())).await,
        ALICE,
    );
}

#[tokio::test]
async fn optional_route_with_bad_token_is_still_rejected() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    let token = issue(&store, ALICE).await;
    assert!(store.revoke(&token.parsed()).await.unwrap());
    assert_invalid_token(&get_with(&app, "/optional", Some(token.expose())).await);

    let answer = get_with(&app, "/optional", Some("a b")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert!(
        answer
            .header(WWW_AUTHENTICATE)
            .is_some_and(|c| c.contains(r#"error="invalid_request""#)),
        "{answer:?}"
    );
    assert_eq!(answer.json()["error"], "invalid_request");
}

#[tokio::test]
async fn authed_user_without_the_layer_is_500_naming_the_layer() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    assert_missing_layer(&get_with(&app, "/bare", None).await);
    // A valid token does not help: nothing checked it.
    let token = issue(&store, ALICE).await;
    assert_missing_layer(&get_with(&app, "/bare", Some(token.expose())).await);
}

#[tokio::test]
async fn optional_authed_user_without_the_layer_is_500_not_none() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    let answer = get_with(&app, "/bare-optional", None).await;
    assert_ne!(
        answer.body, "anon",
        "a missing layer must not look like no user"
    );
    assert_missing_layer(&answer);
    let token = issue(&store, ALICE).await;
    assert_missing_layer(&get_with(&app, "/bare-optional", Some(token.expose())).await);
}

#[tokio::test]
async fn authed_user_behind_an_optional_layer_without_token_is_401_not_500() {
    let store = MemoryTokenStore::new();
    let app = app(store.clone());
    let answer = get_with(&app, "/optional-required", None).await;
    assert_missing_token(&answer);
    assert_eq!(answer.header(CONTENT_TYPE), Some("application/json"));
    // With a token it is the user.
    let token = issue(&store, ALICE).await;
    assert_ok(
        &get_with(&app, "/optional-required", Some(token.expose())).await,
        ALICE,
    );
}

#[tokio::test]
async fn optional_layer_realm_reaches_the_extractor_rejection() {
    let app: Router = Router::new().route("/", get(required)).layer(
        MpAuthLayer::new(MemoryTokenStore::new(), sku())
            .with_optional(true)
            .with_realm("shop"),
    );
    let answer = get_with(&app, "/", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        answer.header(WWW_AUTHENTICATE),
        Some(r#"Bearer realm="shop""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backed_router() {
    let store = shared_redis("axum_router").await;
    let app = app(store.clone());
    let token = issue(&store, ALICE).await;

    assert_ok(
        &get_with(&app, "/required", Some(token.expose())).await,
        ALICE,
    );
    assert_ok(
        &get_with(&app, "/optional", Some(token.expose())).await,
        ALICE,
    );
    assert_ok(&get_with(&app, "/optional", None).await, "anon");
    assert_missing_token(&get_with(&app, "/required", None).await);

    assert!(store.revoke(&token.parsed()).await.unwrap());
    assert_invalid_token(&get_with(&app, "/required", Some(token.expose())).await);
    assert_invalid_token(&get_with(&app, "/optional", Some(token.expose())).await);
}
