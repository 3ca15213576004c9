//! Calling the simulator's handlers in unit tests, without a server.

use std::future::Future;

use axum_core::{body::Body, extract::Request, response::Response};
use http::{StatusCode, header};
use http_body_util::BodyExt as _;

/// Calls `handler` and answers the status and JSON body (checking it is JSON).
pub(super) async fn call<F: Future<Output = Response>>(
    handler: impl Fn(Request) -> F,
    request: http::Request<Body>,
) -> (StatusCode, serde_json::Value) {
    let response = handler(request).await;
    let status = response.status();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// `POST uri` with `body`.
pub(super) fn post(uri: &str, body: &str) -> http::Request<Body> {
    http::Request::post(uri)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// `GET uri`.
pub(super) fn get(uri: &str) -> http::Request<Body> {
    http::Request::get(uri).body(Body::empty()).unwrap()
}
