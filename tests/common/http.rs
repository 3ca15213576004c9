//! HTTP for the tests: a response with its body collected, the requests the suites send,
//! and an inner service for `MpAuthLayer` that greets the user it was given.

use std::{
    convert::Infallible,
    fmt::Debug,
    future::{Ready, ready},
};

use axum::body::Body;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Request, Response, StatusCode,
    header::{AUTHORIZATION, AsHeaderName, CONTENT_TYPE},
};
use http_body_util::{BodyExt as _, Full};
use mpauthx::{AuthedUser, MpAuthLayer, MpAuthService, TokenStore};
use serde_json::Value;
use tower::{Layer as _, service_fn, util::ServiceFn};

/// A response with its body collected.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// Collects `response`'s body, which must be UTF-8.
    pub async fn collect<B>(response: Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: Debug,
    {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).expect("a UTF-8 body"),
        }
    }

    /// The header's value, if it is there (only one is expected).
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("visible ASCII header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {token}")).unwrap()
}

/// `POST path` with a JSON `body`.
pub fn json_post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// `builder` with `Authorization: Bearer <token>` and `body`.
pub fn with_bearer(builder: http::request::Builder, token: &str, body: Body) -> Request<Body> {
    builder
        .header(AUTHORIZATION, bearer(token))
        .body(body)
        .unwrap()
}

pub type Hello = fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
/// [`hello`] behind `MpAuthLayer`.
pub type HelloApp<T> = MpAuthService<ServiceFn<Hello>, T>;

/// An inner service that greets the user the layer put into the request:
/// `hello <open_id>`, or `no user`.
pub fn hello(request: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let body = match request.extensions().get::<AuthedUser>() {
        Some(user) => format!("hello {}", user.open_id()),
        None => "no user".to_owned(),
    };
    ready(Ok(Response::new(Full::new(Bytes::from(body)))))
}

/// [`hello`] behind `layer`.
pub fn hello_app<T: TokenStore>(layer: &MpAuthLayer<T>) -> HelloApp<T> {
    layer.layer(service_fn(hello as Hello))
}

/// `GET /me` with `Authorization: Bearer <token>` and an empty body, as [`hello`] takes it.
pub fn me_request(token: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri("/me")
        .header(AUTHORIZATION, bearer(token))
        .body(Full::default())
        .unwrap()
}
