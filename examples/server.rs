//! The example server: `cargo run --example server`.
//!
//! With no settings it runs offline: tokens in memory, users in `./mpauthx.db`, and a
//! built-in WeChat simulator under `/sim` answering for two mini-programs,
//! `wx-simulator` (sku `demo`) and `wx-simulator-game` (sku `game`), bound to one Open
//! Platform account so that a test user is one person in both (`POST /sim/login` mints
//! a login code for a named test user, `"app"` naming the app). README.md walks the
//! whole flow with curl.
//!
//! Settings (environment; empty counts as unset):
//!
//! | variable | default | |
//! |---|---|---|
//! | `MPAUTHX_LISTEN` | `127.0.0.1:3000` | address and port to listen on |
//! | `MPAUTHX_APP_ID` | unset: the simulator | one mini-program's app id |
//! | `MPAUTHX_APP_SECRET` | unset: the simulator | its app secret; set, logins go to WeChat |
//! | `MPAUTHX_SKU` | `demo` | the sku in its tokens, `[A-Za-z0-9_-]{1,32}` (with the simulator: the first app's) |
//! | `MPAUTHX_APPS_FILE` | unset | several mini-programs: a JSON file (see below) instead of the three above; `kill -HUP` re-reads it |
//! | `MPAUTHX_WECHAT_API` | `https://api.weixin.qq.com` | WeChat's API (needs a secret) |
//! | `MPAUTHX_TOKEN_TTL` | `259200` | token lifetime in seconds, at most a year |
//! | `MPAUTHX_SESSION_MAX_AGE` | unset: none | seconds after a login when its session ends, however often it is refreshed |
//! | `MPAUTHX_LEGACY_APP_ID` | the one app (the simulator: `wx-simulator`) | the app of the users in a single-app user table (one the Node package or an earlier version wrote), moved at startup into the table keyed by (app, openid) |
//! | `MPAUTHX_REDIS_URL` | unset: in memory | the token store: `redis://[:password@]host:port/db`, a cluster `redis+cluster://[:password@]host:port,host:port,…` or Sentinel `redis+sentinel://[:password@]host:port[,…]/<master name>[/db]` |
//! | `MPAUTHX_DATABASE` | `mpauthx.db` | the users: an sqlite file, or `postgres://user:password@host:port/db` or `mysql://user:password@host:port/db` shared by every instance |
//! | `MPAUTHX_DATABASE_MAX_CONNECTIONS` | `10` | connections to PostgreSQL or MySQL per process, 1 to 1000 |
//! | `MPAUTHX_LOGIN_LIMIT_PER_CLIENT` | unset: no limit | logins per client, `<count>/<seconds>` such as `20/60` |
//! | `MPAUTHX_LOGIN_LIMIT_PER_USER` | unset: no limit | logins per user, `<count>/<seconds>` such as `10/60` |
//! | `MPAUTHX_TRUSTED_PROXIES` | `127.0.0.0/8,::1` | the peers whose `MPAUTHX_CLIENT_IP_HEADER` is believed: addresses or `<ip>/<prefix>`, comma-separated |
//! | `MPAUTHX_CLIENT_IP_HEADER` | unset: the peer address | the header naming the client behind your proxy, e.g. `X-Forwarded-For` (its last entry counts) |
//! | `MPAUTHX_VALIDATION_CACHE` | `tracking` with Redis, else `off` | how token checks are cached: `tracking`, `ttl` or `off` (see below) |
//! | `MPAUTHX_VALIDATION_CACHE_MS` | `ttl`: 1000; `tracking`: 300000 | how long a cached check is kept at most: up to 60000 for `ttl`, 3600000 for `tracking`; set alone, it means `ttl` |
//! | `MPAUTHX_HEADER_TIMEOUT_MS` | `10000` | close a connection whose request headers take longer, 1 to 600000 |
//! | `MPAUTHX_REQUEST_TIMEOUT_MS` | `30000` | answer 503 to a request that runs longer, 1 to 600000 |
//! | `MPAUTHX_METRICS` | `prometheus` | `GET /metrics` in Prometheus's text format; `off`: no recorder, and 404 |
//!
//! `MPAUTHX_APPS_FILE` names a JSON file (mode 600: it holds secrets):
//! `{"apps": [{"app_id", "app_secret", "sku", "token_ttl"?, "session_max_age"?,
//! "max_devices"?, "wechat_api"?}, …]}`, the optional fields defaulting to the variables
//! above. Each app is an `MpAuth` of its own in one `MpApps` registry over the shared
//! stores. On SIGHUP the file is read again: new apps are served at once, changed ones
//! (a rotated secret) replaced, and removed ones stop: their tokens are refused (401)
//! and their login route answers 404. A file that does not read is logged and changes
//! nothing.
//!
//! Routes: `POST /apps/{app_id}/auth/authorize` (a login into that app),
//! `POST /auth/authorize` (the only app, or with several the one WeChat's `Referer`
//! names), `/auth/refresh`, `/auth/logout`, `/auth/logout_all` (each for the bearer
//! token's app), `POST /auth/phone`, `GET /auth/devices`, `DELETE /auth/devices/{id}`,
//! `GET /me` and `GET /me/person`
//! (all behind `MpAuthLayer`, accepting the tokens of every app; `/me` answers the
//! stored user as JSON, phone included, `/me/person` the person's user in every app),
//! `GET /healthz`, `GET /metrics` (Prometheus
//! text), `GET /openapi.json`, and with the simulator
//! `POST /sim/login` (a login code), `POST /sim/phone` (a phone code) and WeChat's own
//! endpoints under `/sim`: `GET /sim/sns/jscode2session`, `POST /sim/cgi-bin/stable_token`,
//! `GET /sim/cgi-bin/token` and `POST /sim/wxa/business/getuserphonenumber`. `GET /ping` and
//! `GET /me/ping` answer `pong` from the same handler, the second behind `MpAuthLayer`:
//! the load benchmark (`benches/load.sh`) compares them to measure the layer.
//!
//! Login limits are counted in Redis when `MPAUTHX_REDIS_URL` is set (shared by every
//! instance), else in memory; a login over a limit gets 429 with `Retry-After`. The
//! WeChat access token (for phone numbers) lives there too: with `MPAUTHX_REDIS_URL`
//! every instance shares one token per app id, fetched single-flight; without it the
//! process keeps its own.
//!
//! The validation cache (`CachedTokenStore`) answers token checks from memory. With
//! Redis it is on by default in its tracking mode (`MPAUTHX_VALIDATION_CACHE=tracking`):
//! Redis pushes every change to a user's tokens, by any server, and this server drops
//! the user's answers within milliseconds; while that channel is down the cache is
//! bypassed. It is the default because it is as exact as asking Redis every time, within
//! the push's latency, and costs Redis nothing per request; it needs Redis 6 or later
//! and a user allowed to run `CLIENT TRACKING` (the server exits 1 otherwise, saying to
//! set `MPAUTHX_VALIDATION_CACHE=off`). `ttl` keeps each check for
//! `MPAUTHX_VALIDATION_CACHE_MS` whatever other servers do (a token revoked elsewhere
//! stays usable here that long); `off` asks the store every time.
//!
//! Slow clients are cut off. A connection is closed without an answer when it sends
//! nothing for `MPAUTHX_HEADER_TIMEOUT_MS` (10 s) after it opens, or when the head of
//! an HTTP/1 request, counted from the first byte, takes longer than that; an idle
//! HTTP/1 keep-alive connection is closed that long after its last answer. A request still running `MPAUTHX_REQUEST_TIMEOUT_MS` (30 s) after
//! its head arrived, whether its body is slow to come or the server is slow to answer
//! (WeChat, Redis, sqlite), gets `503 Service Unavailable` with an empty body: like the
//! crate's other 503s it says "try again later", where 408 would blame the client.
//! HTTP/1.1 and cleartext HTTP/2 with prior knowledge (h2c) are both served; once a
//! connection has sent HTTP/2's preface, only the request timeout applies to it.
//!
//! Logs go to stderr (`RUST_LOG` filters them; default `info,mpauthx=debug`). A bad
//! setting is one `ERROR` line naming it and exit code 1. SIGINT or SIGTERM stops the
//! server gracefully: requests in flight get up to 10 s to finish, then it exits 0.

use std::{
    env,
    io::IsTerminal as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use mpauthx::{
    AppSecret, AuthedUser, CachedTokenStore, LoginThrottle, MemoryRateLimiter, MemoryTokenStore,
    MpApps, MpAuthConfig, MySqlUserStore, PostgresUserStore, RateLimit, RateLimiter,
    RedisTokenStore, Sku, SqliteUserStore, Token, TokenStore, UserStore, client_ip_key,
    forwarded_ip,
    testing::{SimulatedApps, WeChatSimulator},
};
use rand::TryRng as _;
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};
use tower::Layer as _;
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument as _, Level};
use tracing_subscriber::{EnvFilter, filter::filter_fn, prelude::*};

use self::apps::{AppSetting, Defaults};

#[path = "server/apps.rs"]
mod apps;

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
const WECHAT_API: &str = "https://api.weixin.qq.com";
/// The Node original's token lifetime, 72 hours (the crate's default too).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(259_200);
/// The longest validation cache `CachedTokenStore` accepts.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_SKU: &str = "demo";
const DEFAULT_DATABASE: &str = "mpauthx.db";
/// Connections to a PostgreSQL or MySQL user store per process (the crate's default).
const DEFAULT_DATABASE_CONNECTIONS: u32 = 10;
const SIMULATOR_APP_ID: &str = "wx-simulator";
/// The second simulated app, and its sku.
const SIMULATOR_GAME_APP_ID: &str = "wx-simulator-game";
const SIMULATOR_GAME_SKU: &str = "game";
/// The sku of `/healthz`'s probe tokens, which no app issues.
static HEALTHZ_SKU: std::sync::LazyLock<Sku> =
    std::sync::LazyLock::new(|| Sku::new("healthz").expect("a valid sku"));
/// The Redis key prefix of tokens and login counters (the crate's default).
const PREFIX: &str = "mpauthx";
/// The key prefix while the simulator answers logins: its tokens are worthless elsewhere.
const SIMULATOR_PREFIX: &str = "mpauthx-simulator";
/// Longer-lived tokens belong in a refresh flow, not in one token.
const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;
/// Ten years: the longest session `MPAUTHX_SESSION_MAX_AGE` accepts.
const MAX_SESSION_AGE_SECS: u64 = 10 * 365 * 24 * 3600;
/// How long requests in flight may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send the head of a request (HTTP/1).
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may run, body upload included, before it is answered 503.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest either timeout may be set to.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// A setting the server cannot start with: the variable and what is wrong with it.
struct BadSetting {
    setting: &'static str,
    message: String,
}

impl BadSetting {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// Where users are kept.
enum Database {
    /// An sqlite file: one server.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: users shared by every server.
    Postgres(String),
    /// A MySQL or MariaDB URL: users shared by every server.
    MySql(String),
}

impl Database {
    /// `postgres://…`, `postgresql://…`, `mysql://…` or `mariadb://…` is a database server;
    /// anything else without `://` an sqlite path.
    fn parse(value: String) -> Result<Self, BadSetting> {
        let scheme = value
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        // A URL with a typo (`postgresql:/u:pw@host/db`) is no sqlite path: refused
        // without repeating it, as it may hold a password.
        let url_like = value.contains('@')
            || value.split_once(':').is_some_and(|(scheme, _)| {
                scheme.len() > 1
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            });
        match scheme.as_deref() {
            None if url_like => Err(BadSetting::new(
                "MPAUTHX_DATABASE",
                "MPAUTHX_DATABASE looks like a URL but is not postgres://… or mysql://… (and is no sqlite path); its value is not shown, as it may hold a password",
            )),
            None => Ok(Self::Sqlite(value.into())),
            Some("postgres" | "postgresql") => Ok(Self::Postgres(value)),
            Some("mysql" | "mariadb") => Ok(Self::MySql(value)),
            Some(_) => Err(BadSetting::new(
                "MPAUTHX_DATABASE",
                format!(
                    "MPAUTHX_DATABASE={} is neither an sqlite path nor a postgres:// or mysql:// URL",
                    redacted_url(&value)
                ),
            )),
        }
    }

    /// For logs: the path, or the URL without its credentials.
    fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) | Self::MySql(url) => redacted_url(url),
        }
    }
}

/// The mini-programs served, and where their logins are checked.
enum Apps {
    /// One app, from `MPAUTHX_APP_ID`, `MPAUTHX_APP_SECRET` and `MPAUTHX_SKU`.
    One(AppSetting),
    /// The apps of `MPAUTHX_APPS_FILE`, re-read on SIGHUP.
    File {
        path: PathBuf,
        defaults: Defaults,
        apps: Vec<AppSetting>,
    },
    /// Two apps answered by the built-in simulator, served under `/sim` on the
    /// server's own listener; the first under this sku.
    Simulated {
        sku: Sku,
        token_ttl: Duration,
        session_max_age: Option<Duration>,
    },
}

struct Settings {
    listen: SocketAddr,
    apps: Apps,
    /// The app of the users of a single-app table, if not the one app.
    legacy_app_id: Option<String>,
    redis_url: Option<String>,
    database: Database,
    /// The most connections to a PostgreSQL or MySQL user store, per process.
    database_connections: u32,
    limits: Limits,
    /// Whether and how token checks are cached.
    validation_cache: ValidationCache,
    /// How long a client may take to send a request's head.
    header_timeout: Duration,
    /// How long a request may run before it is answered 503.
    request_timeout: Duration,
}

/// The login limits; off unless set.
struct Limits {
    per_client: Option<RateLimit>,
    per_user: Option<RateLimit>,
    /// The header naming the client, else the peer address.
    client_header: Option<axum::http::HeaderName>,
    /// The peers whose `client_header` is believed: the reverse proxies.
    trusted_proxies: Vec<Network>,
}

/// An address range, `<ip>` or `<ip>/<prefix length>`.
#[derive(Clone, Copy, Debug)]
struct Network {
    ip: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Option<Self> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Self { ip, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let to_bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, true),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)) << 96, true),
                None => (u128::from(v6), false),
            },
        };
        let ((net, net_v4), (addr, addr_v4)) = (to_bits(self.ip), to_bits(ip));
        if net_v4 != addr_v4 {
            return false;
        }
        let prefix = u32::from(self.prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        net & mask == addr & mask
    }
}

/// Reverse proxies believed unless `MPAUTHX_TRUSTED_PROXIES` says otherwise: this machine.
const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.0/8,::1";

/// An environment variable; empty counts as unset.
fn var(name: &'static str) -> Result<Option<String>, BadSetting> {
    match env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(env::VarError::NotPresent) => Ok(None),
        Err(env::VarError::NotUnicode(_)) => {
            Err(BadSetting::new(name, format!("{name} is not valid UTF-8")))
        }
    }
}

fn settings() -> Result<Settings, BadSetting> {
    let listen = var("MPAUTHX_LISTEN")?.unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen.parse().map_err(|_| {
        BadSetting::new(
            "MPAUTHX_LISTEN",
            format!(
                "MPAUTHX_LISTEN={listen:?} is not an IP address and port such as {DEFAULT_LISTEN}"
            ),
        )
    })?;

    let sku_set = var("MPAUTHX_SKU")?;
    let sku = sku_set.clone().unwrap_or_else(|| DEFAULT_SKU.into());
    let sku = Sku::new(&sku)
        .map_err(|e| BadSetting::new("MPAUTHX_SKU", format!("MPAUTHX_SKU={sku:?}: {e}")))?;

    let token_ttl = match var("MPAUTHX_TOKEN_TTL")? {
        None => DEFAULT_TOKEN_TTL,
        Some(ttl) => match ttl.parse::<u64>() {
            Ok(secs @ 1..=MAX_TOKEN_TTL_SECS) => Duration::from_secs(secs),
            _ => {
                return Err(BadSetting::new(
                    "MPAUTHX_TOKEN_TTL",
                    format!(
                        "MPAUTHX_TOKEN_TTL={ttl:?} is not a number of seconds from 1 to {MAX_TOKEN_TTL_SECS}"
                    ),
                ));
            }
        },
    };

    let session_max_age = match var("MPAUTHX_SESSION_MAX_AGE")? {
        None => None,
        Some(age) => match age.parse::<u64>() {
            Ok(secs @ 1..=MAX_SESSION_AGE_SECS) => Some(Duration::from_secs(secs)),
            _ => {
                return Err(BadSetting::new(
                    "MPAUTHX_SESSION_MAX_AGE",
                    format!(
                        "MPAUTHX_SESSION_MAX_AGE={age:?} is not a number of seconds from 1 to {MAX_SESSION_AGE_SECS}"
                    ),
                ));
            }
        },
    };

    let cache_ms = var("MPAUTHX_VALIDATION_CACHE_MS")?;
    let cache_mode = var("MPAUTHX_VALIDATION_CACHE")?;
    let redis_url = var("MPAUTHX_REDIS_URL")?;
    let validation_cache = validation_cache(
        cache_mode.as_deref(),
        cache_ms.as_deref(),
        redis_url.is_some(),
    )?;

    let header_timeout = timeout("MPAUTHX_HEADER_TIMEOUT_MS", DEFAULT_HEADER_TIMEOUT)?;
    let request_timeout = timeout("MPAUTHX_REQUEST_TIMEOUT_MS", DEFAULT_REQUEST_TIMEOUT)?;

    let app_id = var("MPAUTHX_APP_ID")?;
    let wechat_api = match var("MPAUTHX_WECHAT_API")? {
        Some(url) => Some(checked_base_url(url)?),
        None => None,
    };
    let apps_file = var("MPAUTHX_APPS_FILE")?;
    // The secret is never echoed, not even in an error.
    let secret = var("MPAUTHX_APP_SECRET")?;
    let apps = match (apps_file, secret, app_id) {
        (Some(path), None, None) if sku_set.is_none() => {
            let path = PathBuf::from(path);
            let defaults = Defaults {
                base_url: wechat_api.unwrap_or_else(|| WECHAT_API.to_owned()),
                token_ttl,
                session_max_age,
            };
            let apps = apps::read_file(&path, &defaults)?;
            Apps::File {
                path,
                defaults,
                apps,
            }
        }
        (Some(_), _, _) => {
            return Err(BadSetting::new(
                "MPAUTHX_APPS_FILE",
                "MPAUTHX_APPS_FILE lists the apps with their ids, secrets and skus: unset MPAUTHX_APP_ID, MPAUTHX_APP_SECRET and MPAUTHX_SKU",
            ));
        }
        (None, Some(secret), Some(app_id)) => {
            MpAuthConfig::new(&app_id, "x", sku.as_str()).map_err(|e| {
                BadSetting::new("MPAUTHX_APP_ID", format!("MPAUTHX_APP_ID={app_id:?}: {e}"))
            })?;
            Apps::One(AppSetting {
                app_id,
                secret: AppSecret::new(secret),
                sku: sku.clone(),
                base_url: wechat_api.unwrap_or_else(|| WECHAT_API.to_owned()),
                token_ttl,
                session_max_age,
                max_devices: None,
            })
        }
        (None, Some(_), None) => {
            return Err(BadSetting::new(
                "MPAUTHX_APP_ID",
                "MPAUTHX_APP_SECRET is set but MPAUTHX_APP_ID is not: set both, or neither for the simulator",
            ));
        }
        (None, None, Some(_)) => {
            // A real app id without its secret is a failed secret injection, not a wish
            // for the simulator: starting would mint tokens anyone can get.
            return Err(BadSetting::new(
                "MPAUTHX_APP_SECRET",
                "MPAUTHX_APP_ID is set but MPAUTHX_APP_SECRET is unset or empty: set the secret to log users in with WeChat, or unset both for the built-in simulator",
            ));
        }
        (None, None, None) => {
            if wechat_api.is_some() {
                return Err(BadSetting::new(
                    "MPAUTHX_WECHAT_API",
                    "MPAUTHX_WECHAT_API needs MPAUTHX_APP_ID and MPAUTHX_APP_SECRET (or MPAUTHX_APPS_FILE): without a secret the built-in simulator answers for WeChat",
                ));
            }
            Apps::Simulated {
                sku: sku.clone(),
                token_ttl,
                session_max_age,
            }
        }
    };

    Ok(Settings {
        listen,
        apps,
        legacy_app_id: var("MPAUTHX_LEGACY_APP_ID")?,
        redis_url: var("MPAUTHX_REDIS_URL")?,
        database: Database::parse(
            var("MPAUTHX_DATABASE")?.unwrap_or_else(|| DEFAULT_DATABASE.into()),
        )?,
        database_connections: match var("MPAUTHX_DATABASE_MAX_CONNECTIONS")? {
            None => DEFAULT_DATABASE_CONNECTIONS,
            Some(n) => match n.parse::<u32>() {
                Ok(n @ 1..=1000) => n,
                _ => {
                    return Err(BadSetting::new(
                        "MPAUTHX_DATABASE_MAX_CONNECTIONS",
                        format!("MPAUTHX_DATABASE_MAX_CONNECTIONS={n:?} is not a number from 1 to 1000"),
                    ));
                }
            },
        },
        limits: Limits {
            per_client: rate_limit("MPAUTHX_LOGIN_LIMIT_PER_CLIENT")?,
            per_user: rate_limit("MPAUTHX_LOGIN_LIMIT_PER_USER")?,
            client_header: match var("MPAUTHX_CLIENT_IP_HEADER")? {
                None => None,
                Some(name) => Some(name.parse().map_err(|_| {
                    BadSetting::new(
                        "MPAUTHX_CLIENT_IP_HEADER",
                        format!("MPAUTHX_CLIENT_IP_HEADER={name:?} is not a header name"),
                    )
                })?),
            },
            trusted_proxies: {
                let list = var("MPAUTHX_TRUSTED_PROXIES")?
                    .unwrap_or_else(|| DEFAULT_TRUSTED_PROXIES.into());
                list.split(',')
                    .map(|entry| {
                        Network::parse(entry.trim()).ok_or_else(|| {
                            BadSetting::new(
                                "MPAUTHX_TRUSTED_PROXIES",
                                format!(
                                    "MPAUTHX_TRUSTED_PROXIES={list:?}: {:?} is not an IP address or <ip>/<prefix length>",
                                    entry.trim()
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            },
        },
        validation_cache,
        header_timeout,
        request_timeout,
    })
    .and_then(|settings| {
        if settings.limits.client_header.is_some() && settings.limits.per_client.is_none() {
            return Err(BadSetting::new(
                "MPAUTHX_CLIENT_IP_HEADER",
                "MPAUTHX_CLIENT_IP_HEADER names the client for MPAUTHX_LOGIN_LIMIT_PER_CLIENT, which is unset: set the limit, or unset the header",
            ));
        }
        Ok(settings)
    })
}

/// A timeout in milliseconds, 1 to [`MAX_TIMEOUT_MS`]; `default` when unset.
fn timeout(name: &'static str, default: Duration) -> Result<Duration, BadSetting> {
    let Some(ms) = var(name)? else {
        return Ok(default);
    };
    match ms.parse::<u64>() {
        Ok(ms @ 1..=MAX_TIMEOUT_MS) => Ok(Duration::from_millis(ms)),
        _ => Err(BadSetting::new(
            name,
            format!("{name}={ms:?} is not a number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        )),
    }
}

/// A `<count>/<seconds>` limit such as `20/60`.
fn rate_limit(name: &'static str) -> Result<Option<RateLimit>, BadSetting> {
    let Some(value) = var(name)? else {
        return Ok(None);
    };
    value
        .split_once('/')
        .and_then(|(count, secs)| Some((count.parse().ok()?, secs.parse().ok()?)))
        .and_then(|(count, secs)| RateLimit::new(count, Duration::from_secs(secs)).ok())
        .map(Some)
        .ok_or_else(|| {
            BadSetting::new(
                name,
                format!(
                    "{name}={value:?} is not <count>/<seconds> with a count of 1 or more over at most a day, such as 20/60"
                ),
            )
        })
}

/// The login throttle the settings ask for, counting in `limiter`.
fn login_throttle(limits: &Limits, limiter: impl RateLimiter) -> Option<LoginThrottle> {
    if limits.per_client.is_none() && limits.per_user.is_none() {
        return None;
    }
    let mut throttle = LoginThrottle::new(limiter);
    if let Some(limit) = limits.per_client {
        let header = limits.client_header.clone();
        let trusted = limits.trusted_proxies.clone();
        throttle = throttle.per_client(limit, move |parts| {
            // From a trusted proxy, the entry the proxy itself appended; without one
            // that parses, or from anyone else, the peer: a request never escapes the
            // limit by its headers.
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
            let forwarded = header
                .as_ref()
                .filter(|_| trusted.iter().any(|proxy| proxy.contains(peer)))
                .and_then(|header| forwarded_ip(&parts.headers, header));
            Some(client_ip_key(forwarded.unwrap_or(peer)))
        });
    }
    if let Some(limit) = limits.per_user {
        throttle = throttle.per_user(limit);
    }
    Some(throttle)
}

fn checked_base_url(url: String) -> Result<String, BadSetting> {
    let valid = url.parse::<Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    if valid {
        Ok(url)
    } else {
        Err(BadSetting::new(
            "MPAUTHX_WECHAT_API",
            format!("MPAUTHX_WECHAT_API={url:?} is not an http:// or https:// URL"),
        ))
    }
}

/// The URL with its credentials and query replaced by `***`, for messages. A password
/// may hold `/`, `?` or `#` (`redis://:p/x@host`), so everything before the last `@`
/// counts as credentials, and an `@` beside a query hides all but the scheme: this may
/// hide more than it must, never less.
fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let Some(at) = rest.rfind('@') else {
        let hosts = rest.split(['?', '#']).next().unwrap_or_default();
        let query = if hosts.len() < rest.len() { "?***" } else { "" };
        return format!("{scheme}://{hosts}{query}");
    };
    let (credentials, hosts) = (&rest[..at], &rest[at + 1..]);
    // An `@` after a `?` or `#` may sit in a query, where anything around it can be a
    // secret: show the scheme only.
    if credentials.contains(['?', '#']) || hosts.contains(['?', '#']) {
        return format!("{scheme}://***");
    }
    format!("{scheme}://***@{hosts}")
}

fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,mpauthx=debug"));
    tracing_subscriber::registry()
        .with(filter)
        // At TRACE, ureq logs request URLs in full: jscode2session's carry the app
        // secret and the login code.
        .with(filter_fn(|meta| {
            !(*meta.level() == Level::TRACE && meta.target().starts_with("ureq"))
        }))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// The Prometheus recorder's handle, which `GET /metrics` renders.
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The buckets of WeChat's call latency, in seconds.
const WECHAT_LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder for the crate's metrics, and the task that keeps
/// its histograms trimmed; with `MPAUTHX_METRICS=off`, none (the load benchmark
/// measures the hot path without one).
fn init_metrics() -> Result<(), BadSetting> {
    match env::var("MPAUTHX_METRICS").as_deref() {
        Ok("off") => return Ok(()),
        Ok("" | "prometheus") | Err(_) => {}
        Ok(other) => {
            return Err(BadSetting::new(
                "MPAUTHX_METRICS",
                format!("MPAUTHX_METRICS={other:?} is neither prometheus nor off"),
            ));
        }
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("mpauthx_wechat_request_duration_seconds".into()),
            &WECHAT_LATENCY_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| BadSetting::new("metrics", format!("cannot record metrics: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let _ = METRICS.set(handle);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    // Installed first, so that a signal during startup is not lost.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGINT and SIGTERM handlers");
            return ExitCode::FAILURE;
        }
    };
    let result = match init_metrics().and_then(|()| settings()) {
        Ok(settings) => run(settings, shutdown).await,
        Err(bad) => Err(bad),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(bad) => {
            tracing::error!(setting = bad.setting, "{}", bad.message);
            ExitCode::FAILURE
        }
    }
}

/// Becomes `true` at the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    let (sender, receiver) = watch::channel(false);
    #[cfg(unix)]
    let signalled = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        async move {
            tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            }
        }
    };
    #[cfg(not(unix))]
    let signalled = async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    };
    tokio::spawn(async move {
        let name = signalled.await;
        tracing::info!(signal = name, "shutting down: finishing requests in flight");
        let _ = sender.send(true);
    });
    Ok(receiver)
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // An error means the sender is gone, which it only is after sending.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn run(settings: Settings, shutdown: watch::Receiver<bool>) -> Result<(), BadSetting> {
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        BadSetting::new(
            "MPAUTHX_LISTEN",
            format!("cannot listen on MPAUTHX_LISTEN={}: {e}", settings.listen),
        )
    })?;
    match settings.redis_url.as_deref() {
        Some(url) => {
            // The simulator's tokens live under a prefix of their own, so that no server
            // logging users in with WeChat on the same Redis ever accepts one.
            let prefix = match settings.apps {
                Apps::One(_) | Apps::File { .. } => PREFIX,
                Apps::Simulated { .. } => SIMULATOR_PREFIX,
            };
            let store = RedisTokenStore::builder(url)
                .with_key_prefix(prefix)
                .build()
                .await
                .map_err(|e| {
                    BadSetting::new(
                        "MPAUTHX_REDIS_URL",
                        format!("cannot use MPAUTHX_REDIS_URL={}: {e}", redacted_url(url)),
                    )
                })?;
            tracing::info!(url = %redacted_url(url), prefix, "tokens are kept in Redis, and so is the WeChat access token");
            let throttle = login_throttle(&settings.limits, store.clone());
            let shared = Some(store.clone());
            serve_cached(listener, store, shared, throttle, settings, shutdown).await
        }
        None => {
            tracing::info!("MPAUTHX_REDIS_URL unset: tokens are kept in memory");
            let throttle = login_throttle(&settings.limits, MemoryRateLimiter::new());
            let tokens = MemoryTokenStore::new();
            serve_cached(listener, tokens, None, throttle, settings, shutdown).await
        }
    }
}

/// Serves with the validation cache in front of `tokens` when it is on. `shared` is the
/// Redis that keeps the WeChat access token, if one is set.
async fn serve_cached<T: TokenStore>(
    listener: TcpListener,
    tokens: T,
    shared: Option<RedisTokenStore>,
    throttle: Option<LoginThrottle>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BadSetting> {
    match settings.validation_cache {
        ValidationCache::Off => serve(listener, tokens, shared, throttle, settings, shutdown).await,
        ValidationCache::Ttl(ttl) => {
            tracing::warn!(
                cache_ms = ttl.as_millis() as u64,
                "token checks are cached: a token revoked by another server stays usable here for up to {ttl:?}"
            );
            let tokens = CachedTokenStore::new(tokens).with_ttl(ttl);
            serve(listener, tokens, shared, throttle, settings, shutdown).await
        }
        ValidationCache::Tracking(ttl) => {
            let redis = shared.clone().ok_or_else(|| {
                BadSetting::new(
                    "MPAUTHX_VALIDATION_CACHE",
                    "MPAUTHX_VALIDATION_CACHE=tracking needs MPAUTHX_REDIS_URL",
                )
            })?;
            let tokens = CachedTokenStore::tracking(redis).await.map_err(|e| {
                BadSetting::new(
                    "MPAUTHX_VALIDATION_CACHE",
                    format!(
                        "cannot track token changes in Redis ({e}); set MPAUTHX_VALIDATION_CACHE=off to check every token with Redis"
                    ),
                )
            })?;
            let tokens = tokens.with_ttl(ttl);
            tracing::info!(
                backstop_secs = ttl.as_secs(),
                "token checks are answered from memory; Redis tells this server of every change to a user's tokens"
            );
            serve(listener, tokens, shared, throttle, settings, shutdown).await
        }
    }
}

/// How token checks are cached (`MPAUTHX_VALIDATION_CACHE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValidationCache {
    /// Every check goes to the token store.
    Off,
    /// Answers kept this long, whatever other servers do.
    Ttl(Duration),
    /// Answers kept until Redis says they changed, and at most this long.
    Tracking(Duration),
}

/// The longest TTL of the tracking mode's backstop, in ms: an hour.
const MAX_TRACKING_TTL_MS: u64 = 3_600_000;

/// The tracking mode's backstop unless `MPAUTHX_VALIDATION_CACHE_MS` says otherwise:
/// five minutes.
const DEFAULT_TRACKING_TTL_MS: u64 = 300_000;

/// `MPAUTHX_VALIDATION_CACHE` (`tracking`, `ttl` or `off`) and `MPAUTHX_VALIDATION_CACHE_MS`.
/// Unset, the mode is `tracking` when tokens are in Redis, `ttl` when only the
/// milliseconds are set (as before there was a mode), `off` otherwise.
fn validation_cache(
    mode: Option<&str>,
    ms: Option<&str>,
    redis: bool,
) -> Result<ValidationCache, BadSetting> {
    let max_ttl_ms = MAX_CACHE_TTL.as_millis() as u64;
    let millis = |max: u64, zero_ok: bool| -> Result<Option<Duration>, BadSetting> {
        let Some(ms) = ms else { return Ok(None) };
        match ms.parse::<u64>() {
            Ok(n) if n <= max && (zero_ok || n > 0) => Ok(Some(Duration::from_millis(n))),
            _ => Err(BadSetting::new(
                "MPAUTHX_VALIDATION_CACHE_MS",
                format!(
                    "MPAUTHX_VALIDATION_CACHE_MS={ms:?} is not a number of milliseconds from {} to {max}",
                    u8::from(!zero_ok)
                ),
            )),
        }
    };
    let mode = match mode {
        Some(mode) => mode,
        None if ms.is_some() => "ttl",
        None if redis => "tracking",
        None => "off",
    };
    match mode {
        "off" => Ok(ValidationCache::Off),
        "ttl" => Ok(match millis(max_ttl_ms, true)? {
            Some(ttl) if ttl.is_zero() => ValidationCache::Off,
            Some(ttl) => ValidationCache::Ttl(ttl),
            None => ValidationCache::Ttl(Duration::from_secs(1)),
        }),
        "tracking" if !redis => Err(BadSetting::new(
            "MPAUTHX_VALIDATION_CACHE",
            "MPAUTHX_VALIDATION_CACHE=tracking needs MPAUTHX_REDIS_URL: Redis tells the servers of each other's changes",
        )),
        "tracking" => Ok(ValidationCache::Tracking(
            millis(MAX_TRACKING_TTL_MS, false)?
                .unwrap_or(Duration::from_millis(DEFAULT_TRACKING_TTL_MS)),
        )),
        other => Err(BadSetting::new(
            "MPAUTHX_VALIDATION_CACHE",
            format!("MPAUTHX_VALIDATION_CACHE={other:?} is none of tracking, ttl, off"),
        )),
    }
}

async fn serve<T: TokenStore>(
    listener: TcpListener,
    tokens: T,
    shared: Option<RedisTokenStore>,
    throttle: Option<LoginThrottle>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BadSetting> {
    let unusable = |e: mpauthx::UserStoreError| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        let hint = match e {
            mpauthx::UserStoreError::LegacyAppIdNeeded => {
                " (set MPAUTHX_LEGACY_APP_ID to the app id of the users it holds)"
            }
            _ => "",
        };
        BadSetting::new(
            "MPAUTHX_DATABASE",
            format!(
                "cannot use MPAUTHX_DATABASE={}: {e}{cause}{hint}",
                settings.database.shown()
            ),
        )
    };
    // The users of a single-app table belong to the one app, or to the one named.
    let legacy_app_id = match (&settings.legacy_app_id, &settings.apps) {
        (Some(app_id), _) => Some(app_id.clone()),
        (None, Apps::One(app)) => Some(app.app_id.clone()),
        (None, Apps::Simulated { .. }) => Some(SIMULATOR_APP_ID.to_owned()),
        (None, Apps::File { .. }) => None,
    };
    match &settings.database {
        Database::Sqlite(path) => {
            let mut builder = SqliteUserStore::builder(path);
            if let Some(app_id) = &legacy_app_id {
                builder = builder.with_legacy_app_id(app_id);
            }
            let users = builder.open().await.map_err(unusable)?;
            serve_users(
                listener, tokens, users, shared, throttle, settings, shutdown,
            )
            .await
        }
        Database::Postgres(url) => {
            let mut builder =
                PostgresUserStore::builder(url).with_max_connections(settings.database_connections);
            if let Some(app_id) = &legacy_app_id {
                builder = builder.with_legacy_app_id(app_id);
            }
            let users = builder.open().await.map_err(unusable)?;
            serve_users(
                listener, tokens, users, shared, throttle, settings, shutdown,
            )
            .await
        }
        Database::MySql(url) => {
            let mut builder =
                MySqlUserStore::builder(url).with_max_connections(settings.database_connections);
            if let Some(app_id) = &legacy_app_id {
                builder = builder.with_legacy_app_id(app_id);
            }
            let users = builder.open().await.map_err(unusable)?;
            serve_users(
                listener, tokens, users, shared, throttle, settings, shutdown,
            )
            .await
        }
    }
}

async fn serve_users<T: TokenStore, U: UserStore>(
    listener: TcpListener,
    tokens: T,
    users: U,
    redis: Option<RedisTokenStore>,
    throttle: Option<LoginThrottle>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BadSetting> {
    let database = settings.database.shown();
    let local = listener.local_addr().map_err(|e| {
        BadSetting::new(
            "MPAUTHX_LISTEN",
            format!("cannot read the listening address: {e}"),
        )
    })?;

    if let Some(throttle) = &throttle {
        tracing::info!(?throttle, "logins are limited");
    }
    let shared = apps::Shared { redis, throttle };
    let registry = MpApps::new(tokens, users);
    let mut current = Vec::new();
    let simulator = match settings.apps {
        Apps::One(app) => {
            tracing::info!(
                app_id = app.app_id,
                api = app.base_url,
                "logins are checked with WeChat"
            );
            apps::apply(&registry, &mut current, vec![app], &shared);
            None
        }
        Apps::File {
            path,
            defaults,
            apps: listed,
        } => {
            tracing::info!(file = %path.display(), apps = listed.len(), "logins are checked with WeChat; kill -HUP re-reads the apps");
            apps::apply(&registry, &mut current, listed, &shared);
            #[cfg(unix)]
            apps::reload_on_sighup(
                registry.clone(),
                current.clone(),
                path,
                defaults,
                shared.clone(),
            )
            .map_err(|e| {
                BadSetting::new(
                    "MPAUTHX_APPS_FILE",
                    format!("cannot install the SIGHUP handler: {e}"),
                )
            })?;
            None
        }
        Apps::Simulated {
            sku,
            token_ttl,
            session_max_age,
        } => {
            // The WeChat client calls the simulator on this very listener.
            let base_url = format!("http://{}/sim", loopback(local));
            let game_sku = if sku.as_str() == SIMULATOR_GAME_SKU {
                "game2"
            } else {
                SIMULATOR_GAME_SKU
            };
            let mut simulated = Vec::new();
            let mut settings = Vec::new();
            for (app_id, sku) in [
                (SIMULATOR_APP_ID, sku),
                (
                    SIMULATOR_GAME_APP_ID,
                    Sku::new(game_sku).expect("a valid sku"),
                ),
            ] {
                let secret = random_secret()?;
                // Both apps are bound to one Open Platform account: a test user has
                // one unionid in both, as one person.
                simulated.push(
                    WeChatSimulator::new(app_id, secret.expose_secret()).with_union_ids(true),
                );
                settings.push(AppSetting {
                    app_id: app_id.to_owned(),
                    secret,
                    sku,
                    base_url: base_url.clone(),
                    token_ttl,
                    session_max_age,
                    max_devices: None,
                });
            }
            apps::apply(&registry, &mut current, settings, &shared);
            Some(SimulatedApps::new(simulated))
        }
    };

    // The layer on each handler, not on the whole router: a method a route does not
    // serve is 405 before any credential is looked at. (On the handler rather than
    // `route_layer` on its method router: the same answers, one boxed service fewer to
    // clone per request.)
    let layer = registry.layer();
    let mut app = Router::new()
        .route("/me", get(guarded(me::<T, U>, layer.clone())))
        .route("/me/person", get(guarded(person::<T, U>, layer.clone())))
        .route("/me/ping", get(guarded(ping, layer.clone())))
        .route(
            "/auth/phone",
            post(guarded(registry.phone_handler(), layer.clone())),
        )
        .route(
            "/auth/devices",
            get(guarded(registry.devices_handler(), layer.clone())),
        )
        .route(
            "/auth/devices/{id}",
            delete(guarded(registry.revoke_device_handler(), layer)),
        )
        .route("/ping", get(ping))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz::<T, U>))
        .route("/auth/authorize", post(registry.authorize_handler()))
        .route(
            "/apps/{app_id}/auth/authorize",
            post(registry.authorize_handler()),
        )
        .route("/auth/refresh", post(registry.refresh_handler()))
        .route("/auth/logout", post(registry.logout_handler()))
        .route("/auth/logout_all", post(registry.logout_all_handler()));
    if let Some(simulator) = &simulator {
        app = app
            .route("/sim/login", post(simulator.mint_handler()))
            .route("/sim/phone", post(simulator.phone_mint_handler()))
            .route(
                "/sim/sns/jscode2session",
                get(simulator.jscode2session_handler()),
            )
            .route(
                "/sim/cgi-bin/stable_token",
                post(simulator.stable_token_handler()),
            )
            .route("/sim/cgi-bin/token", get(simulator.token_handler()))
            .route(
                "/sim/wxa/business/getuserphonenumber",
                post(simulator.phone_number_handler()),
            );
    }
    // The first app takes the logins that name none (`POST /auth/authorize` without a
    // WeChat `Referer`): the app this server served before it served several.
    if let Some(first) = current.first() {
        registry
            .set_default_app(Some(&first.app_id))
            .expect("the app was just added");
    }
    let app_ids = registry.app_ids();
    let app = app
        .with_state(AppState { apps: registry })
        // Inside the logging, so that a request cut off is logged with its 503.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(middleware::from_fn(log_request));

    tracing::info!(
        addr = %local,
        apps = ?app_ids,
        database = %database,
        header_timeout_ms = settings.header_timeout.as_millis() as u64,
        request_timeout_ms = settings.request_timeout.as_millis() as u64,
        "listening on http://{local}"
    );
    if simulator.is_some() && !local.ip().is_loopback() {
        tracing::warn!(
            "the simulator is reachable from other machines: anyone who can reach {local} can log in as anyone"
        );
    }
    if simulator.is_some() {
        tracing::warn!(
            "MPAUTHX_APP_SECRET unset: the built-in WeChat simulator answers logins for two apps ({SIMULATOR_APP_ID}, {SIMULATOR_GAME_APP_ID}); \
             mint a code with POST http://{local}/sim/login {{\"user\": \"alice\"}} (add \"app\": \"{SIMULATOR_GAME_APP_ID}\" for the second)"
        );
    }

    accept_loop(listener, app, settings.header_timeout, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves connections from `listener` until `shutdown`, then lets the requests in
/// flight finish for up to [`SHUTDOWN_GRACE`].
///
/// `axum::serve` would do, but has no header read timeout; this is the same loop on
/// hyper-util's connection builder, HTTP/1 or HTTP/2 as the client speaks.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // As axum::serve: HTTP/2 WebSockets need the CONNECT protocol.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stopped(shutdown.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // The peer address as `ConnectInfo<SocketAddr>` in every request's extensions,
        // as `into_make_service_with_connect_info` puts it: handlers and the login
        // throttle's client key read it there.
        let service = Extension(ConnectInfo(peer)).layer(app.clone());
        let (builder, watcher, shutdown) = (builder.clone(), graceful.watcher(), shutdown.clone());
        tokio::spawn(async move {
            // hyper-util waits for the first bytes to tell HTTP/1 from HTTP/2, with no
            // timeout of its own: without this, a client that sends nothing would hold
            // the connection for ever.
            tokio::select! {
                known = tokio::time::timeout(header_timeout, protocol_known(&stream)) => {
                    if known.is_err() {
                        tracing::debug!(%peer, "connection closed: nothing received in time");
                        return;
                    }
                }
                () = stopped(shutdown) => return,
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
    // No new connections; those open finish their requests and close.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running {SHUTDOWN_GRACE:?} after the signal; exiting anyway");
        }
    }
}

/// Returns once the bytes received tell HTTP/1 from HTTP/2's connection preface (or
/// the client has closed the connection or failed), reading nothing: it only peeks.
async fn protocol_known(stream: &tokio::net::TcpStream) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0; PREFACE.len()];
    loop {
        match stream.peek(&mut buf).await {
            Ok(n) if n > 0 && n < PREFACE.len() && buf[..n] == PREFACE[..n] => {
                // A preface arriving piecemeal: wait for more (peek returns at once
                // while anything is buffered).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return,
        }
    }
}

/// After a failed `accept`: a connection that failed before it was accepted is the
/// client's business; anything else (out of file descriptors, say) is logged and waited
/// out, as axum::serve does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where this server can reach itself: the listening address, with a wildcard IP
/// replaced by loopback.
fn loopback(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// A fresh secret for the simulator, known to this process only.
fn random_secret() -> Result<AppSecret, BadSetting> {
    let mut bytes = [0u8; 16];
    rand::rngs::SysRng.try_fill_bytes(&mut bytes).map_err(|e| {
        BadSetting::new(
            "MPAUTHX_APP_SECRET",
            format!("cannot draw a simulator secret: {e}"),
        )
    })?;
    Ok(AppSecret::new(hex::encode(bytes)))
}

#[derive(Clone)]
struct AppState<T, U> {
    apps: MpApps<T, U>,
}

/// `GET /me`: the stored user behind the bearer token, in the token's app.
async fn me<T: TokenStore, U: UserStore>(
    State(state): State<AppState<T, U>>,
    user: AuthedUser,
) -> Response {
    match state.apps.user(&user).await {
        Ok(Some(stored)) => Json(stored).into_response(),
        Ok(None) => mpauthx::Error::UnknownUser.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /me/person`: the person behind the bearer token, with their user in every app.
async fn person<T: TokenStore, U: UserStore>(
    State(state): State<AppState<T, U>>,
    user: AuthedUser,
) -> Response {
    let stored = match state.apps.user(&user).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return mpauthx::Error::UnknownUser.into_response(),
        Err(e) => return e.into_response(),
    };
    match state.apps.person(&stored.person_id).await {
        Ok(users) => Json(json!({ "person_id": stored.person_id, "users": users })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /openapi.json`: the HTTP contract (examples/openapi.json), OpenAPI 3.1.
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// `handler` behind `layer`: the layer on the handler itself (not `route_layer` on its
/// method router), so that an unserved method is 405 before any credential is read,
/// with no extra boxed service to clone per request. (A function, not the `Handler`
/// trait's method: the trait in scope would shadow `tower::Layer::layer` below.)
fn guarded<H, T, S, L>(handler: H, layer: L) -> axum::handler::Layered<L, H, T, S>
where
    H: axum::handler::Handler<T, S>,
    L: tower::Layer<axum::handler::HandlerService<H, T, S>> + Clone,
    L::Service: tower::Service<Request>,
{
    axum::handler::Handler::layer(handler, layer)
}

/// `GET /metrics`: the crate's metrics in Prometheus's text format. Served beside the
/// API for the walk-through; in production put it where only the scraper reaches it.
async fn metrics() -> Response {
    let Some(handle) = METRICS.get() else {
        return (
            StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"error":"not_found","error_description":"metrics are off (MPAUTHX_METRICS=off)","code":6010}"#,
        )
            .into_response();
    };
    let text = handle.render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /ping` and, behind the layer, `GET /me/ping`: `pong`, for the load benchmark.
async fn ping() -> &'static str {
    "pong"
}

/// `GET /healthz`: 200 when both stores answer, else 503.
async fn healthz<T: TokenStore, U: UserStore>(State(state): State<AppState<T, U>>) -> Response {
    // A well-formed token that was never issued, drawn anew each time so that a
    // validation cache cannot answer for the store.
    let tokens = match Token::generate(&HEALTHZ_SKU, "healthz") {
        Ok(probe) => state.apps.tokens().validate(&probe.parsed()).await.is_ok(),
        Err(_) => false,
    };
    let users = state.apps.users().get("healthz", "healthz").await.is_ok();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if tokens && users {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({ "status": word(tokens && users), "tokens": word(tokens), "users": word(users) });
    (status, Json(body)).into_response()
}

/// One line per request. Only the path is logged: a query string may carry
/// credentials (jscode2session's carries the app secret and the login code).
async fn log_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
    );
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "served"
        );
        response
    }
    .instrument(span)
    .await
}
