//! `MpAuthLayer` as a plain tower layer: wrapped around a `tower::service_fn` whose
//! bodies are `http_body_util::Full<Bytes>` (no axum involved), driven with
//! `ServiceExt::oneshot`, against both token stores.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE},
};
use http_body_util::{BodyExt as _, Full};
use mpauthx::{
    AuthedUser, IssueOptions, Issued, MemoryTokenStore, MpAuthLayer, ParsedToken, RedisTokenStore,
    Sku, StoreError, Token, TokenHash, TokenInfo, TokenStore,
};
use tower::{Layer as _, Service, ServiceExt as _, service_fn};

use crate::common::{
    RedisServer, blocking,
    http::{Answer, bearer},
    keys::{SKU, sku},
    stores::{dedicated, issue, issue_in, own_server, redis},
    unique_prefix,
};

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;

const ALICE: &str = "o-alice_123";
const REQUEST_BODY: &[u8] = b"request payload";
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// What the inner service must find in the request's extensions.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An `AuthedUser` with this (sku, open_id).
    User(&'static str, &'static str),
    /// No `AuthedUser` at all (an anonymous request behind an optional layer).
    Anonymous,
}

/// The inner service: a bare `tower::service_fn` over `Full<Bytes>` bodies. It counts its
/// calls, asserts what it sees in the request extensions, and echoes the request body.
fn echo(
    expect: Expect,
    calls: Arc<AtomicUsize>,
) -> impl Service<Req, Response = Res, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(move |request: Req| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let user = request.extensions().get::<AuthedUser>().cloned();
            match expect {
                Expect::User(sku, open_id) => {
                    let user = user.expect("the inner service sees an AuthedUser");
                    assert_eq!(user.open_id(), open_id, "open_id seen by the inner service");
                    assert_eq!(user.sku().as_str(), sku, "sku seen by the inner service");
                }
                Expect::Anonymous => {
                    assert_eq!(user, None, "an anonymous request carries no AuthedUser");
                }
            }
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut echoed = b"echo:".to_vec();
            echoed.extend_from_slice(&body);
            Ok(Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("x-inner", "reached")
                .body(Full::new(Bytes::from(echoed)))
                .unwrap())
        }
    })
}

/// The response with its body collected.
async fn collect<B>(response: Response<B>) -> Answer
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    // Every body here, passed through or a rejection, knows its exact length.
    let hint = response.body().size_hint().exact();
    let answer = Answer::collect(response).await;
    let body = &answer.body;
    assert_eq!(hint, Some(body.len() as u64), "size hint of {body:?}");
    answer
}

fn request(authorization: &[HeaderValue]) -> Req {
    let mut request = Request::builder()
        .uri("/resource")
        .body(Full::new(Bytes::from_static(REQUEST_BODY)))
        .unwrap();
    for value in authorization {
        request.headers_mut().append(AUTHORIZATION, value.clone());
    }
    request
}

/// A layer plus a counter of inner-service calls.
struct Harness<T> {
    layer: MpAuthLayer<T>,
    calls: Arc<AtomicUsize>,
}

impl<T: TokenStore> Harness<T> {
    fn new(layer: MpAuthLayer<T>) -> Self {
        Self {
            layer,
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Sends one request through `layer(service_fn)` with `oneshot`.
    async fn send(&self, authorization: &[HeaderValue], expect: Expect) -> Answer {
        let service = self.layer.layer(echo(expect, Arc::clone(&self.calls)));
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            service.oneshot(request(authorization)),
        )
        .await
        .expect("the layer answers within 5 s")
        .unwrap();
        collect(response).await
    }

    /// Sends a request that must be rejected (the inner service must not run).
    async fn send_rejected(&self, authorization: &[HeaderValue]) -> Answer {
        let before = self.calls();
        // Were the inner service reached, it would fail this expectation too.
        let answer = self.send(authorization, Expect::User("-", "-")).await;
        assert_eq!(self.calls(), before, "the inner service was not called");
        answer
    }

    /// Sends a request that must reach the inner service as `open_id` under `sku`.
    async fn send_authed(&self, token: &Token, sku: &'static str, open_id: &'static str) {
        let before = self.calls();
        let answer = self
            .send(&[bearer(token.expose())], Expect::User(sku, open_id))
            .await;
        assert_passed_through(&answer);
        assert_eq!(
            self.calls(),
            before + 1,
            "the inner service was called once"
        );
    }
}

fn assert_passed_through(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.header("x-inner"), Some("reached"));
    let mut expected = b"echo:".to_vec();
    expected.extend_from_slice(REQUEST_BODY);
    assert_eq!(answer.body.as_bytes(), expected, "the body passes through");
    assert_eq!(answer.header(WWW_AUTHENTICATE), None);
}

/// Checks the JSON body of a rejection and returns it.
fn assert_json(answer: &Answer, error: &str, code: u64) -> serde_json::Value {
    assert_eq!(answer.header(CONTENT_TYPE), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["error"], error, "{json}");
    assert_eq!(json["code"].as_u64(), Some(code), "{json}");
    assert!(
        json["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{json}"
    );
    assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
    json
}

fn assert_missing(answer: &Answer, realm: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        answer.header(WWW_AUTHENTICATE),
        Some(format!(r#"Bearer realm="{realm}""#).as_str())
    );
    assert_eq!(answer.header(RETRY_AFTER), None);
    assert_json(answer, "missing_token", 6001);
}

fn assert_invalid_token(answer: &Answer, realm: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
    let expected = format!(r#"Bearer realm="{realm}", error="invalid_token""#);
    assert!(challenge.starts_with(&expected), "{challenge}");
    assert_eq!(answer.header(RETRY_AFTER), None);
    assert_json(answer, "invalid_token", 6007);
}

fn assert_invalid_request(answer: &Answer, realm: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    let challenge = answer.header(WWW_AUTHENTICATE).expect("a challenge");
    let expected = format!(r#"Bearer realm="{realm}", error="invalid_request""#);
    assert!(challenge.starts_with(&expected), "{challenge}");
    assert!(challenge.contains(r#"error="invalid_request""#));
    assert_eq!(answer.header(RETRY_AFTER), None);
    assert_json(answer, "invalid_request", 6007);
}

fn assert_unavailable(answer: &Answer, retry_after: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{answer:?}: {:?}",
        answer.body
    );
    assert_eq!(answer.header(RETRY_AFTER), Some(retry_after));
    assert_eq!(
        answer.header(WWW_AUTHENTICATE),
        None,
        "a 503 is no challenge"
    );
    assert_json(answer, "temporarily_unavailable", 6000);
}

/// Malformed `Authorization` headers, each given as all its values.
fn malformed_headers(token: &Token) -> Vec<(&'static str, Vec<HeaderValue>)> {
    let mut obs_text = b"Bearer \xff".to_vec();
    obs_text.extend_from_slice(token.expose().as_bytes());
    vec![
        (
            "two headers",
            vec![bearer(token.expose()), bearer(token.expose())],
        ),
        (
            "obs-text",
            vec![HeaderValue::from_bytes(&obs_text).unwrap()],
        ),
        (
            "empty credentials",
            vec![HeaderValue::from_static("Bearer")],
        ),
        (
            "blank credentials",
            vec![HeaderValue::from_static("Bearer ")],
        ),
        (
            "two credentials",
            vec![HeaderValue::from_static("Bearer a b")],
        ),
    ]
}

/// A token store that counts `validate` calls, to show when the layer never asks.
#[derive(Debug, Clone)]
struct Counting<T> {
    inner: T,
    validations: Arc<AtomicUsize>,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            validations: Arc::default(),
        }
    }

    fn validations(&self) -> usize {
        self.validations.load(Ordering::SeqCst)
    }
}

impl<T: TokenStore> TokenStore for Counting<T> {
    type Validation = T::Validation;

    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Issued, StoreError>> + Send {
        self.inner.issue(token, options)
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        self.validations.fetch_add(1, Ordering::SeqCst);
        self.inner.validate(token)
    }

    fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.revoke_hash(sku, open_id, hash)
    }

    fn revoke_all(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        self.inner.revoke_all(sku, open_id)
    }

    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
        self.inner.list(sku, open_id)
    }

    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send {
        self.inner.rotate(token, successor, options)
    }
}

/// Runs each case (an `async fn(store)`) once on a `MemoryTokenStore` and once on a
/// `RedisTokenStore`: `case::memory` and `case::redis`.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$case(mpauthx::MemoryTokenStore::new()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let store = crate::common::stores::shared_redis(stringify!($case)).await;
                super::$case(store).await;
            }
        }
    )*};
}

on_both_stores!(
    valid_token_reaches_inner_service,
    no_authorization_header_is_401_missing_token,
    other_scheme_is_401_missing_token,
    unknown_token_is_401_invalid_token,
    revoked_token_is_401_invalid_token,
    expired_token_is_401_invalid_token,
    malformed_token_is_401_without_asking_the_store,
    token_of_another_sku_is_401_invalid_token,
    malformed_headers_are_400_invalid_request,
    realm_is_configurable,
    optional_layer_lets_anonymous_requests_through,
    layer_calls_the_ready_inner_service,
);

// ---------------------------------------------------------------------------------------
// Cases run on both stores
// ---------------------------------------------------------------------------------------

async fn valid_token_reaches_inner_service<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let alice = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let bob = issue(&store, "o-bob", &IssueOptions::new(HOUR)).await;

    harness.send_authed(&alice, SKU, ALICE).await;
    harness.send_authed(&bob, SKU, "o-bob").await;
    // The scheme is case-insensitive and extra spaces are tolerated.
    let answer = harness
        .send(
            &[HeaderValue::try_from(format!("bearer   {}", alice.expose())).unwrap()],
            Expect::User(SKU, ALICE),
        )
        .await;
    assert_passed_through(&answer);
    assert_eq!(harness.calls(), 3);
}

async fn no_authorization_header_is_401_missing_token<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store, sku()));
    let answer = harness.send_rejected(&[]).await;
    assert_missing(&answer, "mpauthx");
}

async fn other_scheme_is_401_missing_token<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        // A valid token under another scheme is still no bearer credential.
        format!("Token {}", token.expose()),
    ] {
        let answer = harness
            .send_rejected(&[HeaderValue::try_from(value).unwrap()])
            .await;
        assert_missing(&answer, "mpauthx");
    }
}

async fn unknown_token_is_401_invalid_token<T: TokenStore>(store: T) {
    let store = Counting::new(store);
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    // Well-formed, of the right sku, never issued.
    let never_issued = Token::generate(&sku(), ALICE).unwrap();
    let answer = harness
        .send_rejected(&[bearer(never_issued.expose())])
        .await;
    assert_invalid_token(&answer, "mpauthx");
    assert_eq!(store.validations(), 1, "the store was asked once");
}

async fn revoked_token_is_401_invalid_token<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let other = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    harness.send_authed(&token, SKU, ALICE).await;

    assert!(store.revoke(&token.parsed()).await.unwrap());
    let answer = harness.send_rejected(&[bearer(token.expose())]).await;
    assert_invalid_token(&answer, "mpauthx");
    // Revoking one token leaves the user's other token alone.
    harness.send_authed(&other, SKU, ALICE).await;
}

async fn expired_token_is_401_invalid_token<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let issued_at = Instant::now();
    let token = issue(
        &store,
        ALICE,
        &IssueOptions::new(Duration::from_millis(200)),
    )
    .await;
    harness.send_authed(&token, SKU, ALICE).await;
    assert!(
        issued_at.elapsed() < Duration::from_millis(200),
        "the request before expiry took too long to mean anything"
    );

    tokio::time::sleep_until((issued_at + Duration::from_millis(300)).into()).await;
    let answer = harness.send_rejected(&[bearer(token.expose())]).await;
    assert_invalid_token(&answer, "mpauthx");
}

async fn malformed_token_is_401_without_asking_the_store<T: TokenStore>(store: T) {
    let store = Counting::new(store);
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let valid = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let secret = valid.expose().rsplit('.').next().unwrap().to_owned();
    for text in [
        "abc".to_owned(),
        // Right shape but a short secret.
        format!("{SKU}.{ALICE}.abc"),
        // Four parts.
        format!("{SKU}.{ALICE}.{secret}.x"),
        // Longer than any token can be.
        format!("{SKU}.{}.{secret}", "o".repeat(200)),
        // `=` padding is valid b64token syntax but never part of a token.
        format!("{}==", valid.expose()),
    ] {
        let answer = harness.send_rejected(&[bearer(&text)]).await;
        assert_invalid_token(&answer, "mpauthx");
    }
    assert_eq!(
        store.validations(),
        0,
        "malformed tokens never reach the store"
    );

    // The counter does count: a well-formed token is looked up.
    harness.send_authed(&valid, SKU, ALICE).await;
    assert_eq!(store.validations(), 1);
}

async fn token_of_another_sku_is_401_invalid_token<T: TokenStore>(store: T) {
    let store = Counting::new(store);
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let other_sku = Sku::new("other").unwrap();
    let foreign = issue_in(&store, &other_sku, ALICE, &IssueOptions::new(HOUR)).await;
    // The store itself holds the token as live: only the sku check can refuse it.
    assert!(store.validate(&foreign.parsed()).await.unwrap().is_live());
    let asked = store.validations();

    let answer = harness.send_rejected(&[bearer(foreign.expose())]).await;
    assert_invalid_token(&answer, "mpauthx");
    assert_eq!(
        store.validations(),
        asked,
        "a foreign sku is refused without I/O"
    );

    // A layer for the other sku accepts it, as that sku.
    let other = Harness::new(MpAuthLayer::new(store.clone(), other_sku));
    other.send_authed(&foreign, "other", ALICE).await;
}

async fn malformed_headers_are_400_invalid_request<T: TokenStore>(store: T) {
    let store = Counting::new(store);
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let valid = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    for (what, values) in malformed_headers(&valid) {
        let answer = harness.send_rejected(&values).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert_invalid_request(&answer, "mpauthx");
    }
    assert_eq!(
        store.validations(),
        0,
        "malformed headers never reach the store"
    );
}

async fn realm_is_configurable<T: TokenStore>(store: T) {
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()).with_realm("shop"));
    assert_missing(&harness.send_rejected(&[]).await, "shop");
    let unknown = Token::generate(&sku(), ALICE).unwrap();
    assert_invalid_token(
        &harness.send_rejected(&[bearer(unknown.expose())]).await,
        "shop",
    );
    assert_invalid_request(
        &harness
            .send_rejected(&[HeaderValue::from_static("Bearer a b")])
            .await,
        "shop",
    );
    // Valid tokens are unaffected.
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    harness.send_authed(&token, SKU, ALICE).await;
}

async fn optional_layer_lets_anonymous_requests_through<T: TokenStore>(store: T) {
    let store = Counting::new(store);
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()).with_optional(true));

    // No credentials: the inner service runs, without an AuthedUser.
    let answer = harness.send(&[], Expect::Anonymous).await;
    assert_passed_through(&answer);
    assert_eq!(harness.calls(), 1);
    // Another scheme counts as no bearer credentials.
    let answer = harness
        .send(
            &[HeaderValue::from_static("Basic dXNlcjpwYXNz")],
            Expect::Anonymous,
        )
        .await;
    assert_passed_through(&answer);
    assert_eq!(harness.calls(), 2);
    assert_eq!(store.validations(), 0);

    // A valid token still authenticates.
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    harness.send_authed(&token, SKU, ALICE).await;

    // A bad token is not silently anonymous.
    let unknown = Token::generate(&sku(), ALICE).unwrap();
    assert_invalid_token(
        &harness.send_rejected(&[bearer(unknown.expose())]).await,
        "mpauthx",
    );
    assert_invalid_token(&harness.send_rejected(&[bearer("abc")]).await, "mpauthx");
    assert!(store.revoke(&token.parsed()).await.unwrap());
    assert_invalid_token(
        &harness.send_rejected(&[bearer(token.expose())]).await,
        "mpauthx",
    );

    // Nor is a malformed header.
    for (what, values) in malformed_headers(&token) {
        let answer = harness.send_rejected(&values).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert_invalid_request(&answer, "mpauthx");
    }
    assert_eq!(harness.calls(), 3);
}

/// An inner service that must be driven to readiness before each call, and whose clones
/// start out not ready (as tower allows, e.g. for a `Buffer` or a rate limit).
#[derive(Debug)]
struct ReadyGate {
    ready: bool,
    calls: Arc<AtomicUsize>,
}

impl Clone for ReadyGate {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            calls: Arc::clone(&self.calls),
        }
    }
}

impl Service<Req> for ReadyGate {
    type Response = Res;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Res, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        assert!(self.ready, "ReadyGate called without poll_ready");
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let who = request
            .extensions()
            .get::<AuthedUser>()
            .map_or_else(|| "anonymous".to_owned(), |u| u.open_id().to_owned());
        std::future::ready(Ok(Response::new(Full::new(Bytes::from(who)))))
    }
}

async fn layer_calls_the_ready_inner_service<T: TokenStore>(store: T) {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = ReadyGate {
        ready: false,
        calls: Arc::clone(&calls),
    };
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let unknown = Token::generate(&sku(), ALICE).unwrap();
    let mut service = MpAuthLayer::new(store.clone(), sku())
        .with_optional(true)
        .layer(gate);

    // Twice on the same service: after a call the layer must hold a service that the
    // next `ready` drives to readiness, and the call must go to the ready one.
    for round in 1..=2 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request(&[bearer(token.expose())]))
            .await
            .unwrap();
        let answer = collect(response).await;
        assert_eq!(answer.status, StatusCode::OK, "round {round}: {answer:?}");
        assert_eq!(answer.body, ALICE, "round {round}");
        assert_eq!(calls.load(Ordering::SeqCst), round);
    }

    // A rejection in between does not call the inner service...
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(&[bearer(unknown.expose())]))
        .await
        .unwrap();
    assert_invalid_token(&collect(response).await, "mpauthx");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // ...nor break the anonymous path, which calls the ready service in place.
    for _ in 0..2 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request(&[]))
            .await
            .unwrap();
        let answer = collect(response).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.body, "anonymous");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // And `oneshot` on a fresh (not ready) gate works too.
    let answer = collect(
        MpAuthLayer::new(store, sku())
            .layer(ReadyGate {
                ready: false,
                calls: Arc::clone(&calls),
            })
            .oneshot(request(&[bearer(token.expose())]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, ALICE);
}

#[tokio::test]
async fn memory_layer_is_generic_over_bodies_and_errors() {
    // The same layer value serves two inner services with different body types.
    let store = MemoryTokenStore::new();
    let layer = MpAuthLayer::new(store.clone(), sku());
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;

    let text = layer.layer(service_fn(|request: Request<String>| async move {
        let user = request.extensions().get::<AuthedUser>().unwrap().clone();
        Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from(format!(
            "{}:{}",
            user.sku(),
            user.open_id()
        )))))
    }));
    let mut request = Request::new(String::from("ignored"));
    request
        .headers_mut()
        .insert(AUTHORIZATION, bearer(token.expose()));
    let answer = collect(text.oneshot(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, format!("{SKU}:{ALICE}"));

    // A rejection from a layer whose inner service can fail is still an `Ok` response.
    let failing = layer.layer(service_fn(|_: Request<String>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("inner failed"))
    }));
    let answer = collect(failing.oneshot(Request::new(String::new())).await.unwrap()).await;
    assert_missing(&answer, "mpauthx");
}

// ---------------------------------------------------------------------------------------
// Redis only: what the store is asked, outages
// ---------------------------------------------------------------------------------------

fn commands_processed(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "stats"]).expect("INFO stats answers");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_commands_processed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_never_asked_about_malformed_tokens_or_headers() {
    let server = Arc::new(own_server().await);
    let store = RedisTokenStore::builder(server.url())
        .with_key_prefix(unique_prefix("never_asked"))
        .with_pool_size(1)
        .build()
        .await
        .unwrap();
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let valid = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let foreign = issue_in(
        &store,
        &Sku::new("other").unwrap(),
        ALICE,
        &IssueOptions::new(HOUR),
    )
    .await;
    // Let the pool settle (it may open its idle connection in the background).
    harness.send_authed(&valid, SKU, ALICE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let count = {
        let server = Arc::clone(&server);
        move || {
            let server = Arc::clone(&server);
            async move {
                tokio::task::spawn_blocking(move || commands_processed(&server))
                    .await
                    .unwrap()
            }
        }
    };
    // Calibrate: what one INFO round costs by itself.
    let first = count().await;
    let second = count().await;
    let per_info = second - first;
    assert!(per_info >= 1, "INFO counts itself: {first} → {second}");

    for text in ["abc", "a.b.c", "demo.o-alice.short"] {
        assert_invalid_token(&harness.send_rejected(&[bearer(text)]).await, "mpauthx");
    }
    assert_invalid_token(
        &harness.send_rejected(&[bearer(foreign.expose())]).await,
        "mpauthx",
    );
    for (what, values) in malformed_headers(&valid) {
        let answer = harness.send_rejected(&values).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
    }
    assert_missing(&harness.send_rejected(&[]).await, "mpauthx");
    let third = count().await;
    assert_eq!(
        third - second,
        per_info,
        "Redis processed commands other than INFO ({second} → {third}, one INFO = {per_info})"
    );

    // The measure is sensitive: one valid request is exactly one more command.
    harness.send_authed(&valid, SKU, ALICE).await;
    let fourth = count().await;
    assert_eq!(fourth - third, per_info + 1, "one lookup per valid request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_503_and_the_layer_recovers() {
    let (server, store, prefix) = dedicated("outage").await;
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    harness.send_authed(&token, SKU, ALICE).await;

    let server = blocking(server, RedisServer::stop).await;
    // The first request meets the dead connection, later ones a refused connect: all
    // are 503, never 401, and quickly.
    for attempt in 0..3 {
        let started = Instant::now();
        let answer = harness.send_rejected(&[bearer(token.expose())]).await;
        assert_unavailable(&answer, "1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    // Requests that need no lookup are answered as usual meanwhile.
    assert_missing(&harness.send_rejected(&[]).await, "mpauthx");
    assert_invalid_token(&harness.send_rejected(&[bearer("abc")]).await, "mpauthx");

    let server = blocking(server, RedisServer::restart).await;
    // The restarted server is empty: issue afresh through another store, so that only
    // the layer's own requests can heal its pool.
    let fresh = redis(&server.url(), &prefix).await;
    let reissued = issue(&fresh, ALICE, &IssueOptions::new(HOUR)).await;

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut unavailable = 0;
    loop {
        let before = harness.calls();
        let answer = harness
            .send(&[bearer(reissued.expose())], Expect::User(SKU, ALICE))
            .await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_unavailable(&answer, "1");
            assert_eq!(harness.calls(), before);
            unavailable += 1;
            assert!(
                Instant::now() < deadline,
                "still 503 two seconds after the restart ({unavailable} attempts)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_passed_through(&answer);
        assert_eq!(harness.calls(), before + 1);
        break;
    }
    // Recovered for good: the token lost with the old server's data is now a plain 401.
    harness.send_authed(&reissued, SKU, ALICE).await;
    assert_invalid_token(
        &harness.send_rejected(&[bearer(token.expose())]).await,
        "mpauthx",
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_configurable() {
    let (server, store, _) = dedicated("retry_after").await;
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    let default = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let five = Harness::new(
        MpAuthLayer::new(store.clone(), sku()).with_retry_after(Duration::from_secs(5)),
    );
    let rounded = Harness::new(
        MpAuthLayer::new(store.clone(), sku()).with_retry_after(Duration::from_millis(1500)),
    );
    five.send_authed(&token, SKU, ALICE).await;

    let server = blocking(server, RedisServer::stop).await;
    assert_unavailable(&five.send_rejected(&[bearer(token.expose())]).await, "5");
    assert_unavailable(&rounded.send_rejected(&[bearer(token.expose())]).await, "2");
    assert_unavailable(&default.send_rejected(&[bearer(token.expose())]).await, "1");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_is_503_within_the_command_timeout_and_the_layer_recovers() {
    let (server, store, _) = dedicated("frozen").await;
    let harness = Harness::new(MpAuthLayer::new(store.clone(), sku()));
    let token = issue(&store, ALICE, &IssueOptions::new(HOUR)).await;
    harness.send_authed(&token, SKU, ALICE).await;

    let server = blocking(server, |s| s.freeze()).await;
    // The first request hangs on the open connection, later ones on opening another:
    // the command timeout (300 ms) bounds both.
    for attempt in 0..2 {
        let started = Instant::now();
        let answer = harness.send_rejected(&[bearer(token.expose())]).await;
        let took = started.elapsed();
        assert_unavailable(&answer, "1");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "attempt {attempt} answered after {took:?}"
        );
    }
    // Kept to the end: dropping the server would kill it.
    let _server = blocking(server, |s| s.thaw()).await;

    // The data survived the freeze; the timed-out connection must not be reused blindly.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let before = harness.calls();
        let answer = harness
            .send(&[bearer(token.expose())], Expect::User(SKU, ALICE))
            .await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_unavailable(&answer, "1");
            assert!(
                Instant::now() < deadline,
                "still 503 two seconds after thawing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_passed_through(&answer);
        assert_eq!(harness.calls(), before + 1);
        break;
    }
    harness.send_authed(&token, SKU, ALICE).await;
}
