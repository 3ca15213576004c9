//! One writer for every auth failure: the layer and the handlers answer the same bad
//! credentials identically, and a gRPC client gets gRPC statuses instead of a JSON page.

use std::{
    future::{Ready, ready},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{
        HeaderMap, Request, StatusCode,
        header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE},
    },
    routing::{get, post},
};
use http_body_util::BodyExt as _;
use mpauthx::{
    AuthedUser, IssueOptions, Issued, MemoryTokenStore, MpAuth, MpAuthConfig, MpAuthLayer,
    ParsedToken, Sku, SqliteUserStore, StoreError, Token, TokenHash, TokenInfo, TokenStatus,
    TokenStore,
};
use tower::ServiceExt as _;

const SKU: &str = "demo";
const REALM: &str = "shop";
const RETRY_AFTER_SECS: u64 = 3;

fn sku() -> Sku {
    Sku::new(SKU).unwrap()
}

/// A memory store that can be switched off: while down, every operation fails as an
/// unreachable Redis would.
#[derive(Debug, Clone, Default)]
struct Switchable {
    inner: MemoryTokenStore,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Timeout(Duration::from_millis(300)))
        } else {
            Ok(())
        }
    }
}

impl TokenStore for Switchable {
    type Validation = Ready<Result<TokenStatus, StoreError>>;

    async fn issue(&self, token: &Token, options: &IssueOptions) -> Result<Issued, StoreError> {
        self.check()?;
        self.inner.issue(token, options).await
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        match self.check() {
            Ok(()) => self.inner.validate(token),
            Err(e) => ready(Err(e)),
        }
    }

    async fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke_hash(sku, open_id, hash).await
    }

    async fn revoke_all(&self, sku: &Sku, open_id: &str) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.revoke_all(sku, open_id).await
    }

    async fn list(&self, sku: &Sku, open_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        self.check()?;
        self.inner.list(sku, open_id).await
    }

    async fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> Result<Option<Issued>, StoreError> {
        self.check()?;
        self.inner.rotate(token, successor, options).await
    }
}

/// What a client sees of an answer, minus what legitimately differs between routes.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
    cache_control: Option<String>,
    body: String,
}

async fn seen(app: &Router, path: &str, authorization: &[&str]) -> Seen {
    let mut request = Request::post(path);
    if path == "/me" {
        request = Request::get(path);
    }
    for value in authorization {
        request = request.header(AUTHORIZATION, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |headers: &HeaderMap, name| {
        headers
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Seen {
        status: parts.status,
        www_authenticate: header(&parts.headers, WWW_AUTHENTICATE),
        retry_after: header(&parts.headers, RETRY_AFTER),
        content_type: header(&parts.headers, CONTENT_TYPE),
        cache_control: header(&parts.headers, CACHE_CONTROL),
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn app() -> (Router, Switchable, Token) {
    let tokens = Switchable::default();
    let users = SqliteUserStore::open_in_memory().await.unwrap();
    let config = MpAuthConfig::new("wx-app", "app-secret", SKU).unwrap();
    let auth = MpAuth::builder(config, tokens.clone(), users)
        .with_realm(REALM)
        .with_retry_after(Duration::from_secs(RETRY_AFTER_SECS))
        .build();
    let app = Router::new()
        .route(
            "/me",
            get(|user: AuthedUser| async move { user.open_id().to_owned() }),
        )
        .route_layer(auth.layer())
        .route("/auth/refresh", post(auth.refresh_handler()))
        .route("/auth/logout", post(auth.logout_handler()));
    let token = Token::generate(&sku(), "o-alice").unwrap();
    tokens
        .issue(&token, &IssueOptions::default())
        .await
        .unwrap();
    (app, tokens, token)
}

#[tokio::test]
async fn the_layer_and_the_handlers_answer_bad_credentials_alike() {
    let (app, tokens, live) = app().await;
    let unknown = Token::generate(&sku(), "o-alice").unwrap();
    let unknown = format!("Bearer {}", unknown.expose());
    let live = format!("Bearer {}", live.expose());
    let cases: [(&str, Vec<&str>, bool, StatusCode); 6] = [
        ("missing", vec![], false, StatusCode::UNAUTHORIZED),
        (
            "another scheme",
            vec!["Basic dXNlcjpwYXNz"],
            false,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "malformed",
            vec!["Bearer a b"],
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "duplicated",
            vec![&live, &live],
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown token",
            vec![&unknown],
            false,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "store down",
            vec![&live],
            true,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    for (case, authorization, down, status) in cases {
        tokens.set_down(down);
        let layer = seen(&app, "/me", &authorization).await;
        assert_eq!(layer.status, status, "{case}: {layer:?}");
        assert_eq!(
            layer.content_type.as_deref(),
            Some("application/json"),
            "{case}"
        );
        assert_eq!(layer.cache_control.as_deref(), Some("no-store"), "{case}");
        let body: serde_json::Value = serde_json::from_str(&layer.body).unwrap();
        assert!(
            body["error"].is_string() && body["code"].is_u64(),
            "{case}: {body}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(layer.retry_after.as_deref(), Some("3"), "{case}");
            assert_eq!(layer.www_authenticate, None, "{case}");
        } else {
            let challenge = layer.www_authenticate.as_deref().unwrap_or_default();
            assert!(
                challenge.starts_with(r#"Bearer realm="shop""#),
                "{case}: {challenge}"
            );
            assert_eq!(layer.retry_after, None, "{case}");
        }
        for path in ["/auth/refresh", "/auth/logout"] {
            let handler = seen(&app, path, &authorization).await;
            assert_eq!(handler, layer, "{case}: {path} answers unlike the layer");
        }
    }
    tokens.set_down(false);
    assert_eq!(seen(&app, "/me", &[&live]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_bare_layer_and_the_errors_default_realm_agree() {
    let layer = MpAuthLayer::new(MemoryTokenStore::new(), sku());
    let app = Router::new()
        .route(
            "/me",
            get(|user: AuthedUser| async move { user.open_id().to_owned() }),
        )
        .layer(layer);
    let from_layer = seen(&app, "/me", &[]).await;
    let from_error = mpauthx::Error::MissingToken.into_response_with(Body::from);
    let (parts, body) = from_error.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(from_layer.status, parts.status);
    assert_eq!(
        from_layer.www_authenticate.as_deref(),
        parts
            .headers
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap())
    );
    assert_eq!(from_layer.body, body);
}

mod grpc {
    use std::net::SocketAddr;

    use tonic::{Code, Request as GrpcRequest, metadata::MetadataValue, transport::Channel};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::*;

    /// A gRPC health service behind the layer, served over h2c on a free port.
    async fn serve(layer: MpAuthLayer<Switchable>) -> SocketAddr {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let router = tonic::service::Routes::new(health)
            .into_axum_router()
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    async fn check(addr: SocketAddr, authorization: Option<&str>) -> Result<i32, tonic::Status> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let mut request = GrpcRequest::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(value) = authorization {
            let value: MetadataValue<_> = value.parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        client.check(request).await.map(|r| r.into_inner().status)
    }

    #[tokio::test]
    async fn a_tonic_client_gets_grpc_statuses() {
        let tokens = Switchable::default();
        let live = Token::generate(&sku(), "o-alice").unwrap();
        tokens.issue(&live, &IssueOptions::default()).await.unwrap();
        let unknown = Token::generate(&sku(), "o-alice").unwrap();
        let layer =
            MpAuthLayer::new(tokens.clone(), sku()).with_retry_after(Duration::from_secs(2));
        let addr = serve(layer).await;
        let live = format!("Bearer {}", live.expose());

        // A valid token passes: the health service answers SERVING (1).
        assert_eq!(check(addr, Some(&live)).await.unwrap(), 1);

        let unknown = format!("Bearer {}", unknown.expose());
        for (case, authorization, message) in [
            ("missing", None, "no bearer token"),
            (
                "malformed",
                Some("Bearer a b"),
                "malformed Authorization header",
            ),
            (
                "unknown",
                Some(unknown.as_str()),
                "invalid, expired or revoked token",
            ),
        ] {
            let status = check(addr, authorization).await.expect_err(case);
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            assert_eq!(status.message(), message, "{case}");
        }

        tokens.set_down(true);
        let status = check(addr, Some(&live)).await.expect_err("store down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "token store unavailable; retry later");
        let pushback = status.metadata().get("grpc-retry-pushback-ms");
        assert_eq!(pushback.map(|v| v.to_str().unwrap()), Some("2000"));

        tokens.set_down(false);
        assert_eq!(check(addr, Some(&live)).await.unwrap(), 1, "recovers");
    }
}
