//! The example server: `cargo run --example server`.
//!
//! With no settings it runs offline on an in-memory token store. Settings (environment):
//! `MPAUTHX_LISTEN` (default `127.0.0.1:3000`), `MPAUTHX_SKU` (default `demo`),
//! `MPAUTHX_TOKEN_TTL` (seconds, default 259200), `MPAUTHX_REDIS_URL` (unset: in memory).
//!
//! Routes: `GET /healthz`, `GET /me` (behind `MpAuthLayer`), and, until the WeChat login
//! handlers land, `POST /dev/token?open_id=…`, which mints a token for any openid. It
//! exists only in this example, to try the layer with curl; never expose such a route.

use std::{collections::HashMap, env, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use mpauthx::{
    AuthedUser, IssueOptions, MemoryTokenStore, MpAuthLayer, RedisTokenStore, Sku, Token,
    TokenStore,
};
use serde_json::json;

struct Settings {
    listen: SocketAddr,
    sku: Sku,
    ttl: Duration,
    redis_url: Option<String>,
}

fn settings() -> Result<Settings, String> {
    let var = |name: &str| env::var(name).ok().filter(|v| !v.is_empty());
    let listen = var("MPAUTHX_LISTEN").unwrap_or_else(|| "127.0.0.1:3000".into());
    let listen = listen
        .parse()
        .map_err(|_| format!("MPAUTHX_LISTEN={listen:?} is not a socket address"))?;
    let sku = var("MPAUTHX_SKU").unwrap_or_else(|| "demo".into());
    let sku = Sku::new(&sku).map_err(|e| format!("MPAUTHX_SKU: {e}"))?;
    let ttl = match var("MPAUTHX_TOKEN_TTL") {
        None => mpauthx::store::DEFAULT_TOKEN_TTL,
        Some(s) => match s.parse::<u64>() {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => {
                return Err(format!(
                    "MPAUTHX_TOKEN_TTL={s:?} is not a positive number of seconds"
                ));
            }
        },
    };
    Ok(Settings {
        listen,
        sku,
        ttl,
        redis_url: var("MPAUTHX_REDIS_URL"),
    })
}

#[derive(Clone)]
struct App<T> {
    store: T,
    sku: Sku,
    options: IssueOptions,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mpauthx=debug".into()),
        )
        .init();
    let settings = match settings() {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let result = match settings.redis_url.clone() {
        Some(url) => match RedisTokenStore::connect(url).await {
            Ok(store) => serve(store, settings).await,
            Err(e) => Err(format!("cannot use MPAUTHX_REDIS_URL: {e}")),
        },
        None => {
            tracing::info!("MPAUTHX_REDIS_URL unset: tokens are kept in memory");
            serve(MemoryTokenStore::new(), settings).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve<T: TokenStore>(store: T, settings: Settings) -> Result<(), String> {
    let app = App {
        store: store.clone(),
        sku: settings.sku.clone(),
        options: IssueOptions::new(settings.ttl),
    };
    let protected = Router::new()
        .route("/me", get(me))
        .layer(MpAuthLayer::new(store, settings.sku));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/dev/token", post(mint::<T>))
        .with_state(app)
        .merge(protected);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    tracing::info!("listening on http://{}", settings.listen);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server failed: {e}"))
}

async fn me(user: AuthedUser) -> Json<serde_json::Value> {
    Json(json!({ "open_id": user.open_id(), "sku": user.sku().as_str() }))
}

async fn mint<T: TokenStore>(
    State(app): State<App<T>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let open_id = query.get("open_id").map_or("o-demo-user", String::as_str);
    let token = match Token::generate(&app.sku, open_id) {
        Ok(token) => token,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match app.store.issue(&token, &app.options).await {
        Ok(info) => Json(json!({
            "token": token.expose(),
            "token_type": "Bearer",
            "expires_in": (info.expires_at_ms - info.issued_at_ms) / 1000,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "token store unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
