//! The example server: `cargo run --example server`.
//!
//! With no settings it runs offline on an in-memory token store and an sqlite file.
//! Settings (environment): `MPAUTHX_LISTEN` (default `127.0.0.1:3000`), `MPAUTHX_APP_ID`,
//! `MPAUTHX_APP_SECRET`, `MPAUTHX_SKU` (default `demo`), `MPAUTHX_TOKEN_TTL` (seconds,
//! default 259200), `MPAUTHX_REDIS_URL` (unset: in memory), `MPAUTHX_DATABASE` (default
//! `mpauthx.db`), `MPAUTHX_WECHAT_API` (default `https://api.weixin.qq.com`).
//!
//! Routes: `POST /auth/refresh`, `/auth/logout`, `/auth/logout_all`, `GET /me` (behind
//! `MpAuthLayer`, the stored user as JSON) and `GET /healthz`. With an app secret,
//! `POST /auth/authorize` logs users in through WeChat. Without one (demo mode) there is
//! `POST /dev/token?open_id=…` instead, which mints a token for any openid so the layer
//! can be tried with curl offline; it exists only in demo mode, never expose such a route.

use std::{collections::HashMap, env, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use mpauthx::{
    AuthedUser, IssueOptions, MemoryTokenStore, MpAuth, MpAuthConfig, RedisTokenStore, Sku, Token,
    TokenStore,
    users::{SqliteUserStore, UserStore},
    wechat::{AppSecret, WeChatClient},
};
use serde_json::json;

struct Settings {
    listen: SocketAddr,
    sku: Sku,
    ttl: Duration,
    redis_url: Option<String>,
    app: Option<(String, String)>,
    database: String,
    wechat_api: String,
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
    let app = match (var("MPAUTHX_APP_ID"), var("MPAUTHX_APP_SECRET")) {
        (Some(id), Some(secret)) => Some((id, secret)),
        (None, None) => None,
        _ => return Err("set both MPAUTHX_APP_ID and MPAUTHX_APP_SECRET, or neither".into()),
    };
    Ok(Settings {
        listen,
        sku,
        ttl,
        redis_url: var("MPAUTHX_REDIS_URL"),
        app,
        database: var("MPAUTHX_DATABASE").unwrap_or_else(|| "mpauthx.db".into()),
        wechat_api: var("MPAUTHX_WECHAT_API")
            .unwrap_or_else(|| mpauthx::wechat::client::DEFAULT_BASE_URL.into()),
    })
}

#[derive(Clone)]
struct App<T> {
    auth: MpAuth<T, SqliteUserStore>,
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
    let users = SqliteUserStore::open(&settings.database)
        .await
        .map_err(|e| format!("cannot use MPAUTHX_DATABASE={:?}: {e}", settings.database))?;
    let demo = settings.app.is_none();
    let (app_id, secret) = settings
        .app
        .unwrap_or_else(|| ("demo-app".into(), String::new()));
    let config = MpAuthConfig::new(&app_id, &secret, settings.sku.as_str())
        .map_err(|e| format!("MPAUTHX_SKU: {e}"))?
        .with_token_ttl(settings.ttl);
    let wechat =
        WeChatClient::new(app_id, AppSecret::new(secret)).with_base_url(settings.wechat_api);
    let options = config.issue_options();
    let auth = MpAuth::with_parts(config, store, users, wechat);

    let mut router = Router::new()
        .route("/me", get(me::<T>))
        .route_layer(auth.layer())
        .route("/healthz", get(|| async { "ok" }))
        .route("/auth/refresh", post(auth.refresh_handler()))
        .route("/auth/logout", post(auth.logout_handler()))
        .route("/auth/logout_all", post(auth.logout_all_handler()));
    if demo {
        tracing::warn!("MPAUTHX_APP_SECRET unset: demo mode, POST /dev/token mints tokens");
        router = router.route("/dev/token", post(mint::<T>));
    } else {
        router = router.route("/auth/authorize", post(auth.authorize_handler()));
    }
    let router = router.with_state(App {
        auth: auth.clone(),
        options,
    });
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

async fn me<T: TokenStore>(State(app): State<App<T>>, user: AuthedUser) -> Response {
    match app.auth.users().get(user.open_id()).await {
        Ok(Some(stored)) => Json(stored).into_response(),
        // Demo tokens name users that never logged in through WeChat.
        Ok(None) => {
            Json(json!({ "open_id": user.open_id(), "sku": user.sku().as_str() })).into_response()
        }
        Err(e) => mpauthx::Error::from(e).into_response(),
    }
}

async fn mint<T: TokenStore>(
    State(app): State<App<T>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let open_id = query.get("open_id").map_or("o-demo-user", String::as_str);
    let token = match Token::generate(app.auth.config().sku(), open_id) {
        Ok(token) => token,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match app.auth.tokens().issue(&token, &app.options).await {
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
