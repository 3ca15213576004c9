//! The crate's WeChat simulator served over HTTP on a free port: every WeChat endpoint
//! the crate calls (`jscode2session`, `stable_token`, `token`, `getuserphonenumber`)
//! under one base URL, as `MPAUTHX_WECHAT_API` points at it.

use axum::routing::{get, post};
use mpauthx::testing::WeChatSimulator;

use super::keys::{APP_ID, SECRET};

/// A simulator of the test app ([`APP_ID`], [`SECRET`]).
pub fn simulator() -> WeChatSimulator {
    WeChatSimulator::new(APP_ID, SECRET)
}

/// Serves `sim`'s WeChat API on the current runtime; returns its base URL.
pub async fn serve(sim: &WeChatSimulator) -> String {
    let app = axum::Router::new()
        .route("/sns/jscode2session", get(sim.jscode2session_handler()))
        .route("/cgi-bin/stable_token", post(sim.stable_token_handler()))
        .route("/cgi-bin/token", get(sim.token_handler()))
        .route(
            "/wxa/business/getuserphonenumber",
            post(sim.phone_number_handler()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}
