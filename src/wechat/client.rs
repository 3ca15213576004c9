//! Blocking and async client for WeChat's `jscode2session` login exchange.
//!
//! The request carries the app secret and the one-time login code in its query string (as
//! WeChat requires), so nothing derived from the URL or from ureq's own error text is ever put
//! into a [`WeChatError`] or a log line. ureq itself records the full request line and every
//! byte on the wire (the answer carries the `session_key`) through the `log` crate at TRACE;
//! [`WeChatClient`] refuses to send a request while that would be recorded, see its docs.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{
    error::WeChatError,
    secret::{AccessToken, AppSecret, PhoneCode, SessionKey},
};
use crate::{instruments, phone::PhoneNumber};

/// WeChat's production API host.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";
/// Default connect and read timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on a whole exchange: every attempt and every retry delay included.
pub(crate) const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of requests made while WeChat answers errcode -1 (system busy).
pub(crate) const DEFAULT_BUSY_ATTEMPTS: u32 = 3;
/// Default delay before the first retry after errcode -1; it doubles for each further retry.
pub(crate) const DEFAULT_BUSY_BACKOFF: Duration = Duration::from_millis(100);

const JSCODE2SESSION_PATH: &str = "/sns/jscode2session";
const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
const PHONE_NUMBER_PATH: &str = "/wxa/business/getuserphonenumber";
/// WeChat asks for room for 512 characters; far more is not an access token.
const MAX_ACCESS_TOKEN_LEN: usize = 2048;
/// WeChat's access tokens live 7200 s; a longer `expires_in` is not believed.
const MAX_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// The longest any timeout is taken to be (longer ones are cut): ten minutes.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Idle connections kept to WeChat (ureq keeps 3 per host by default).
const MAX_IDLE_CONNECTIONS: usize = 32;
/// A real answer is a few hundred bytes; the cap bounds memory if the upstream misbehaves.
const MAX_BODY_BYTES: u64 = 64 * 1024;
const MAX_ERRMSG_CHARS: usize = 200;
const REDACTED: &str = "<redacted>";

/// What `jscode2session` returns for a valid login code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user's openid for this Mini-Program.
    pub open_id: String,
    /// The user's unionid, when the app is bound to an Open Platform account.
    pub union_id: Option<String>,
    /// Key for decrypting this user's open data; never send it to the client.
    pub session_key: SessionKey,
}

/// An access token as `stable_token` handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchedAccessToken {
    /// The token.
    pub token: AccessToken,
    /// How long WeChat says it stays valid, from when it answered (at most 7200 s).
    pub expires_in: Duration,
}

/// Which WeChat endpoint a call went to, for logs.
#[derive(Clone, Copy)]
enum Endpoint {
    Jscode2Session,
    StableToken,
    PhoneNumber,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Jscode2Session => "jscode2session",
            Self::StableToken => "stable_token",
            Self::PhoneNumber => "getuserphonenumber",
        }
    }
}

/// Client for WeChat's server API: `GET {base}/sns/jscode2session` (logins),
/// `POST {base}/cgi-bin/stable_token` (access tokens) and
/// `POST {base}/wxa/business/getuserphonenumber` (phone numbers); cheap to clone,
/// shareable across threads. Calls that need an access token are best made through an
/// [`AccessTokenManager`](crate::AccessTokenManager), which shares one token between
/// every caller and server.
///
/// # Logging
///
/// The HTTP client, ureq, logs through the `log` crate, and at TRACE it records the request
/// line with its query (the app secret and the login code) and a hex dump of every byte
/// sent and received (the answer holds the user's `session_key`). This crate does not
/// control the application's logger, so before each exchange the client asks the installed
/// `log` logger whether TRACE is enabled for ureq's targets (`ureq`, `ureq::util`,
/// `ureq_proto`, `ureq_proto::util`). If it is, nothing is sent: the exchange fails with
/// [`WeChatError::SecretsWouldBeLogged`] (HTTP 500) and one `tracing` error names the fix.
/// With no `log` logger installed, or with ureq's targets filtered below TRACE (for example
/// `RUST_LOG=trace,ureq=debug,ureq_proto=debug` with `tracing-subscriber`'s `EnvFilter` and
/// its `tracing-log` bridge), logins work as usual; ureq's DEBUG output redacts the query.
/// The check is a comparison with `log::max_level()` and, only when that allows TRACE, a few
/// calls to the logger's `enabled`.
///
/// Beside it, [`decrypt_profile`](super::decrypt_profile) decrypts and checks the "open
/// data" (`encryptedData` + `iv`) a mini-program hands to its backend, and
/// [`verify_signature`](super::verify_signature) checks `rawData`. Secrets (the app
/// secret, `session_key`, login codes) never appear in `Debug`/`Display` output or in
/// log lines of this crate; see [`AppSecret`].
#[derive(Clone)]
pub struct WeChatClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    app_id: String,
    secret: AppSecret,
    base_url: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    total_timeout: Duration,
    busy_attempts: u32,
    busy_backoff: Duration,
    agent: ureq::Agent,
}

impl fmt::Debug for WeChatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("WeChatClient")
            .field("app_id", &inner.app_id)
            .field("secret", &inner.secret)
            .field("base_url", &inner.base_url)
            .field("connect_timeout", &inner.connect_timeout)
            .field("read_timeout", &inner.read_timeout)
            .field("total_timeout", &inner.total_timeout)
            .field("busy_attempts", &inner.busy_attempts)
            .field("busy_backoff", &inner.busy_backoff)
            .finish_non_exhaustive()
    }
}

impl WeChatClient {
    /// Client for `app_id`/`secret` against `https://api.weixin.qq.com` with default timeouts.
    pub fn new(app_id: impl Into<String>, secret: AppSecret) -> Self {
        let mut inner = Inner {
            app_id: app_id.into(),
            secret,
            base_url: DEFAULT_BASE_URL.to_owned(),
            connect_timeout: DEFAULT_TIMEOUT,
            read_timeout: DEFAULT_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            busy_attempts: DEFAULT_BUSY_ATTEMPTS,
            busy_backoff: DEFAULT_BUSY_BACKOFF,
            agent: ureq::Agent::new_with_defaults(),
        };
        inner.rebuild_agent();
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Uses another API host (e.g. a simulator); a trailing `/` is ignored.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the budget for DNS resolution and for connecting (each).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.connect_timeout = timeout.min(MAX_TIMEOUT);
        inner.rebuild_agent();
        self
    }

    /// Sets the budget for sending the request, for the response headers, and for the body (each).
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.read_timeout = timeout.min(MAX_TIMEOUT);
        inner.rebuild_agent();
        self
    }

    /// Bounds a whole exchange: the connect and read phases of every attempt and the delays
    /// between busy retries together. Default: 10 s; at most 10 minutes (as every
    /// timeout here). A login never
    /// waits on WeChat longer than this; past it the exchange fails with
    /// [`WeChatError::Timeout`] (504).
    #[must_use]
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.inner).total_timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// Sets how often errcode -1 (system busy) is tried in total, and the first retry delay.
    ///
    /// The delay doubles after each retry; `max_attempts` of 0 is treated as 1 (no retry).
    #[must_use]
    pub fn with_busy_retry(mut self, max_attempts: u32, initial_backoff: Duration) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.busy_attempts = max_attempts.max(1);
        inner.busy_backoff = initial_backoff;
        self
    }

    /// The configured app id.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The bound on a whole exchange, retries included.
    pub(crate) fn total_timeout(&self) -> Duration {
        self.inner.total_timeout
    }

    /// Runs a blocking call on Tokio's blocking pool.
    fn on_blocking_pool<T, F>(
        &self,
        call: F,
    ) -> impl Future<Output = Result<T, WeChatError>> + Send + 'static + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Self) -> Result<T, WeChatError> + Send + 'static,
    {
        let client = self.clone();
        async move {
            tokio::task::spawn_blocking(move || call(&client))
                .await
                .unwrap_or_else(|join_error| {
                    // The join error's text may quote a panic payload, so only its kind is logged.
                    tracing::error!(
                        panicked = join_error.is_panic(),
                        "WeChat worker did not complete"
                    );
                    Err(WeChatError::Internal)
                })
        }
    }

    /// Exchanges a login code on Tokio's blocking pool; must be polled inside a Tokio runtime.
    ///
    /// # Errors
    /// As [`WeChatClient::code2session_blocking`], plus [`WeChatError::Internal`] if the
    /// blocking task panicked or was cancelled.
    pub fn code2session(
        &self,
        code: &str,
    ) -> impl Future<Output = Result<Session, WeChatError>> + Send + 'static + use<> {
        let code = code.to_owned();
        self.on_blocking_pool(move |client| client.code2session_blocking(&code))
    }

    /// Exchanges a login code for a [`Session`], blocking the current thread.
    ///
    /// Errcode -1 is retried with the configured backoff; nothing else is retried, since a
    /// login code is single-use and a repeated request could only fail with 40163.
    ///
    /// # Errors
    /// See [`WeChatError`] for the mapping of WeChat errcodes and transport failures.
    pub fn code2session_blocking(&self, code: &str) -> Result<Session, WeChatError> {
        if code.is_empty() {
            return Err(WeChatError::MissingCode);
        }
        self.logged(Endpoint::Jscode2Session, || {
            self.with_retry(|deadline| {
                let inner = &self.inner;
                let url = format!("{}{JSCODE2SESSION_PATH}", inner.base_url);
                let body = read_body(
                    inner
                        .agent
                        .get(&url)
                        .config()
                        .timeout_global(Some(time_left(deadline)?))
                        .build()
                        .query("appid", &inner.app_id)
                        .query("secret", inner.secret.expose_secret())
                        .query("js_code", code)
                        .query("grant_type", "authorization_code")
                        .call(),
                )?;
                self.interpret(&body, code)
            })
        })
    }

    /// Fetches the app's access token from `POST {base}/cgi-bin/stable_token`, on
    /// Tokio's blocking pool; see [`stable_token_blocking`](Self::stable_token_blocking).
    ///
    /// # Errors
    /// As [`stable_token_blocking`](Self::stable_token_blocking), plus
    /// [`WeChatError::Internal`] if the blocking task failed.
    pub fn stable_token(
        &self,
        force_refresh: bool,
    ) -> impl Future<Output = Result<FetchedAccessToken, WeChatError>> + Send + 'static + use<>
    {
        self.on_blocking_pool(move |client| client.stable_token_blocking(force_refresh))
    }

    /// Fetches the app's access token from `stable_token`, blocking the current thread.
    ///
    /// In normal mode (`force_refresh: false`) WeChat hands back the token it already
    /// issued while that one is valid (a new one in its last five minutes), so any number
    /// of servers may call it. `force_refresh: true` ends the previous token at once and
    /// is limited by WeChat (20 a day, 30 s apart; beyond that errcode 45009, which is
    /// [`WeChatError::AccessTokenUnavailable`]); use it only through an
    /// [`AccessTokenManager`](crate::AccessTokenManager), which budgets it. Errcode -1 is
    /// retried as for logins.
    ///
    /// # Errors
    /// See [`WeChatError`]; a wrong app id or secret (40013, 40125) or a server address
    /// missing from the app's IP allow list (40164) is [`WeChatError::Misconfigured`].
    pub fn stable_token_blocking(
        &self,
        force_refresh: bool,
    ) -> Result<FetchedAccessToken, WeChatError> {
        let inner = &self.inner;
        let request = serde_json::json!({
            "grant_type": "client_credential",
            "appid": inner.app_id,
            "secret": inner.secret.expose_secret(),
            "force_refresh": force_refresh,
        })
        .to_string();
        // A forced refresh is counted against a daily budget: never repeated on -1.
        let attempts = if force_refresh {
            1
        } else {
            self.inner.busy_attempts
        };
        let result = self.logged(Endpoint::StableToken, || {
            self.with_retry_up_to(attempts, |deadline| {
                let body = self.post_json(STABLE_TOKEN_PATH, None, &request, deadline)?;
                self.interpret_stable_token(&body)
            })
        });
        let mut request = request;
        zeroize::Zeroize::zeroize(&mut request);
        result
    }

    /// Exchanges a phone code for the user's phone number
    /// (`POST {base}/wxa/business/getuserphonenumber`) on Tokio's blocking pool; see
    /// [`phone_number_blocking`](Self::phone_number_blocking).
    ///
    /// # Errors
    /// As [`phone_number_blocking`](Self::phone_number_blocking), plus
    /// [`WeChatError::Internal`] if the blocking task failed.
    pub fn phone_number(
        &self,
        access_token: &AccessToken,
        code: &PhoneCode,
        open_id: Option<&str>,
    ) -> impl Future<Output = Result<PhoneNumber, WeChatError>> + Send + 'static + use<> {
        let (access_token, code) = (access_token.clone(), code.clone());
        let open_id = open_id.map(str::to_owned);
        self.on_blocking_pool(move |client| {
            client.phone_number_blocking(&access_token, &code, open_id.as_deref())
        })
    }

    /// Exchanges a phone code for the user's phone number, blocking the current thread.
    ///
    /// With `open_id`, WeChat refuses a code that another user's button produced. The
    /// answer's watermark must name this client's app id. A code works once; errcode -1
    /// is retried as for logins.
    ///
    /// # Errors
    /// [`WeChatError::InvalidPhoneCode`] for 40029, [`WeChatError::RateLimited`] for
    /// 45011, [`WeChatError::AccessTokenRejected`] for 40001, 42001 and 40014 (an
    /// [`AccessTokenManager`](crate::AccessTokenManager) fetches a new token and retries),
    /// [`WeChatError::InvalidResponse`] for an answer without a well-formed number or
    /// with another app's watermark; the rest as for logins.
    pub fn phone_number_blocking(
        &self,
        access_token: &AccessToken,
        code: &PhoneCode,
        open_id: Option<&str>,
    ) -> Result<PhoneNumber, WeChatError> {
        if code.expose_secret().is_empty() {
            return Err(WeChatError::MissingCode);
        }
        let mut request = serde_json::json!({ "code": code.expose_secret() });
        if let Some(open_id) = open_id {
            request["openid"] = serde_json::Value::from(open_id);
        }
        let mut request = request.to_string();
        let result = self.logged(Endpoint::PhoneNumber, || {
            self.with_retry(|deadline| {
                let token = Some(("access_token", access_token.expose_secret()));
                let body = self.post_json(PHONE_NUMBER_PATH, token, &request, deadline)?;
                self.interpret_phone_number(
                    &body,
                    &[access_token.expose_secret(), code.expose_secret()],
                )
            })
        });
        zeroize::Zeroize::zeroize(&mut request);
        result
    }

    /// Reads a `getuserphonenumber` answer exactly as
    /// [`phone_number_blocking`](Self::phone_number_blocking) does: for answers fetched
    /// by other means (your own HTTP client, a queue).
    ///
    /// # Errors
    /// As [`phone_number_blocking`](Self::phone_number_blocking), without the transport
    /// errors.
    pub fn interpret_phone_answer(&self, body: &[u8]) -> Result<PhoneNumber, WeChatError> {
        self.interpret_phone_number(body, &[])
    }

    /// `POST {base}{path}` with the JSON `body` (and a `query` parameter), within
    /// `deadline`: the body of a 2xx answer.
    fn post_json(
        &self,
        path: &str,
        query: Option<(&str, &str)>,
        body: &str,
        deadline: Instant,
    ) -> Result<Vec<u8>, WeChatError> {
        let inner = &self.inner;
        let url = format!("{}{path}", inner.base_url);
        let mut request = inner
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(time_left(deadline)?))
            .build();
        if let Some((name, value)) = query {
            request = request.query(name, value);
        }
        read_body(
            request
                .header("Content-Type", "application/json")
                .send(body.as_bytes()),
        )
    }

    /// Runs `call`, logging its failure: the one place a WeChat failure is logged.
    fn logged<T>(
        &self,
        endpoint: Endpoint,
        call: impl FnOnce() -> Result<T, WeChatError>,
    ) -> Result<T, WeChatError> {
        // Checked on the thread that makes the request, as a thread-local logger would be.
        let started = Instant::now();
        let result = if ureq_would_log_secrets() {
            Err(WeChatError::SecretsWouldBeLogged)
        } else {
            call()
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => {
                self.log_failure(endpoint, err);
                err.oauth_error()
            }
        };
        instruments::wechat_call(endpoint.name(), outcome, started.elapsed());
        result
    }

    /// Makes `once` until it answers something other than errcode -1, at most the
    /// configured number of times, doubling the backoff, within the total timeout.
    fn with_retry<T>(
        &self,
        once: impl FnMut(Instant) -> Result<T, WeChatError>,
    ) -> Result<T, WeChatError> {
        self.with_retry_up_to(self.inner.busy_attempts, once)
    }

    /// [`with_retry`](Self::with_retry) with at most `attempts` requests.
    fn with_retry_up_to<T>(
        &self,
        attempts: u32,
        mut once: impl FnMut(Instant) -> Result<T, WeChatError>,
    ) -> Result<T, WeChatError> {
        let deadline = Instant::now() + self.inner.total_timeout;
        let mut backoff = self.inner.busy_backoff;
        let mut attempt = 1;
        loop {
            match once(deadline) {
                // A retry that could not even start before the deadline is not made.
                Err(WeChatError::Busy { .. })
                    if attempt < attempts && Instant::now() + backoff < deadline =>
                {
                    tracing::warn!(attempt, ?backoff, "WeChat busy (errcode -1), retrying");
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(WeChatError::Busy { .. }) => {
                    return Err(WeChatError::Busy { attempts: attempt });
                }
                other => return other,
            }
        }
    }

    fn interpret(&self, body: &[u8], code: &str) -> Result<Session, WeChatError> {
        let reply: Reply = parse_reply(body, "body is not jscode2session JSON")?;
        match reply.errcode {
            0 => {}
            40029 | 40163 => {
                return Err(WeChatError::InvalidCode {
                    errcode: reply.errcode,
                });
            }
            45011 => return Err(WeChatError::RateLimited),
            40226 => return Err(WeChatError::UserBlocked),
            -1 => return Err(WeChatError::Busy { attempts: 1 }),
            40013 | 40125 => {
                return Err(WeChatError::Misconfigured {
                    errcode: reply.errcode,
                });
            }
            errcode => {
                return Err(WeChatError::Upstream {
                    errcode,
                    errmsg: self.scrub(&reply.errmsg, &[code]),
                });
            }
        }
        let (Some(open_id), Some(session_key)) = (
            reply.openid.filter(|id| !id.is_empty()),
            reply
                .session_key
                .filter(|key| !key.expose_secret().is_empty()),
        ) else {
            return Err(WeChatError::InvalidResponse {
                reason: "openid or session_key missing",
            });
        };
        Ok(Session {
            open_id,
            union_id: reply.unionid.filter(|id| !id.is_empty()),
            session_key,
        })
    }

    fn interpret_stable_token(&self, body: &[u8]) -> Result<FetchedAccessToken, WeChatError> {
        let reply: TokenReply = parse_reply(body, "body is not stable_token JSON")?;
        match reply.errcode {
            0 => {}
            -1 => return Err(WeChatError::Busy { attempts: 1 }),
            40013 | 40125 | 40164 => {
                return Err(WeChatError::Misconfigured {
                    errcode: reply.errcode,
                });
            }
            45009 => {
                return Err(WeChatError::AccessTokenUnavailable {
                    reason: "WeChat refused a forced refresh (errcode 45009: 20 a day, 30 s apart)",
                });
            }
            errcode => {
                return Err(WeChatError::Upstream {
                    errcode,
                    errmsg: self.scrub(&reply.errmsg, &[]),
                });
            }
        }
        let token = reply
            .access_token
            .filter(|t| {
                let t = t.expose_secret();
                !t.is_empty()
                    && t.len() <= MAX_ACCESS_TOKEN_LEN
                    && t.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or(WeChatError::InvalidResponse {
                reason: "access_token missing or malformed",
            })?;
        let expires_in = reply
            .expires_in
            .filter(|secs| *secs > 0)
            .map(|secs| Duration::from_secs(secs).min(MAX_ACCESS_TOKEN_LIFETIME))
            .ok_or(WeChatError::InvalidResponse {
                reason: "expires_in missing or not positive",
            })?;
        Ok(FetchedAccessToken { token, expires_in })
    }

    fn interpret_phone_number(
        &self,
        body: &[u8],
        secrets: &[&str],
    ) -> Result<PhoneNumber, WeChatError> {
        let reply: PhoneReply = parse_reply(body, "body is not getuserphonenumber JSON")?;
        match reply.errcode {
            0 => {}
            40029 => {
                return Err(WeChatError::InvalidPhoneCode {
                    errcode: reply.errcode,
                });
            }
            45011 => return Err(WeChatError::RateLimited),
            -1 => return Err(WeChatError::Busy { attempts: 1 }),
            errcode if WeChatError::is_access_token_errcode(errcode) => {
                return Err(WeChatError::AccessTokenRejected { errcode });
            }
            errcode => {
                return Err(WeChatError::Upstream {
                    errcode,
                    errmsg: self.scrub(&reply.errmsg, secrets),
                });
            }
        }
        let info = reply.phone_info.ok_or(WeChatError::InvalidResponse {
            reason: "phone_info missing or malformed",
        })?;
        if info.watermark.appid != self.inner.app_id {
            return Err(WeChatError::InvalidResponse {
                reason: "phone number was issued for another app",
            });
        }
        if !info.number.is_well_formed() {
            return Err(WeChatError::InvalidResponse {
                reason: "phone number is malformed",
            });
        }
        Ok(info.number)
    }

    /// WeChat's errmsg is free text; scrubbing keeps a future echo of the request out of logs.
    fn scrub(&self, errmsg: &str, secrets: &[&str]) -> String {
        let mut text = errmsg.to_owned();
        let app_secret = [self.inner.secret.expose_secret()];
        for needle in app_secret.iter().chain(secrets) {
            if !needle.is_empty() {
                text = text.replace(needle, REDACTED);
            }
        }
        text.chars().take(MAX_ERRMSG_CHARS).collect()
    }

    fn log_failure(&self, endpoint: Endpoint, err: &WeChatError) {
        let app_id = self.inner.app_id.as_str();
        let endpoint = endpoint.name();
        match err {
            WeChatError::Misconfigured { errcode } => {
                let wrong = match *errcode {
                    40013 => "app id",
                    40164 => "server address (add it to the app's IP allow list)",
                    _ => "app secret",
                };
                tracing::error!(
                    app_id,
                    endpoint,
                    errcode,
                    "WeChat rejected the configured {wrong}: fix the Mini-Program credentials"
                );
            }
            WeChatError::SecretsWouldBeLogged => {
                tracing::error!(
                    app_id,
                    "refusing to call WeChat: TRACE logging is enabled for ureq, which would record \
                     the app secret and session keys; filter its log targets below TRACE \
                     (e.g. RUST_LOG=...,ureq=debug,ureq_proto=debug)"
                );
            }
            WeChatError::Internal => {}
            _ if err.status().is_server_error() => {
                tracing::warn!(app_id, endpoint, error_code = err.node_code(), error = %err, "WeChat call failed");
            }
            _ => {
                tracing::debug!(app_id, endpoint, error_code = err.node_code(), error = %err, "WeChat refused the call");
            }
        }
    }
}

impl Inner {
    fn rebuild_agent(&mut self) {
        self.agent = ureq::Agent::config_builder()
            // Non-2xx statuses are mapped here, so ureq must hand the response back.
            .http_status_as_error(false)
            // A redirect would resend the secret-bearing query to wherever it points.
            .max_redirects(0)
            // One host, many calls in flight (logins, phone binds): keep enough
            // connections that a busy server does not pay a TLS handshake per call.
            .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .timeout_resolve(Some(self.connect_timeout))
            .timeout_connect(Some(self.connect_timeout))
            .timeout_send_request(Some(self.read_timeout))
            .timeout_recv_response(Some(self.read_timeout))
            .timeout_recv_body(Some(self.read_timeout))
            .build()
            .new_agent();
    }
}

/// The `log` targets under which ureq 3 records request lines with their query
/// (`ureq::util`'s `DebugUri`) and raw wire bytes (`ureq_proto::util`'s hex dump) at TRACE;
/// the crate roots are checked too, in case a later ureq moves that code.
const UREQ_LOG_TARGETS: [&str; 4] = ["ureq", "ureq::util", "ureq_proto", "ureq_proto::util"];

/// Whether the installed `log` logger would record ureq's TRACE output, which holds the
/// app secret, the login code and the session key. Mirrors the `log` macros' own test: the
/// static and the global maximum level first (no logger installed: `Off`), then the logger.
fn ureq_would_log_secrets() -> bool {
    if log::Level::Trace > log::STATIC_MAX_LEVEL || log::Level::Trace > log::max_level() {
        return false;
    }
    let logger = log::logger();
    UREQ_LOG_TARGETS.iter().any(|target| {
        logger.enabled(
            &log::Metadata::builder()
                .level(log::Level::Trace)
                .target(target)
                .build(),
        )
    })
}

/// The wire answer; deliberately not `Debug`, as it holds the session key.
#[derive(Deserialize)]
struct Reply {
    openid: Option<String>,
    session_key: Option<SessionKey>,
    unionid: Option<String>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// A `stable_token` answer; not `Debug`, as it holds the access token.
#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<AccessToken>,
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// A `getuserphonenumber` answer.
#[derive(Deserialize)]
struct PhoneReply {
    // A malformed `phone_info` is an answer without one, refused below.
    #[serde(default, deserialize_with = "lenient")]
    phone_info: Option<PhoneInfo>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Deserialize)]
struct PhoneInfo {
    #[serde(flatten)]
    number: PhoneNumber,
    watermark: PhoneWatermark,
}

#[derive(Deserialize)]
struct PhoneWatermark {
    appid: String,
}

/// `Some` when the value parses as `T`, else `None`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Parses a WeChat answer: blank or `null` is [`WeChatError::EmptyResponse`], anything
/// not of the shape `T` is [`WeChatError::InvalidResponse`] with `reason`.
fn parse_reply<T: serde::de::DeserializeOwned>(
    body: &[u8],
    reason: &'static str,
) -> Result<T, WeChatError> {
    if body.trim_ascii().is_empty() {
        return Err(WeChatError::EmptyResponse);
    }
    let reply: Option<T> =
        serde_json::from_slice(body).map_err(|_| WeChatError::InvalidResponse { reason })?;
    reply.ok_or(WeChatError::EmptyResponse)
}

/// What is left of the budget until `deadline`; [`WeChatError::Timeout`] if nothing.
fn time_left(deadline: Instant) -> Result<Duration, WeChatError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(WeChatError::Timeout { phase: "request" })
    } else {
        Ok(left)
    }
}

/// The body of a successful (2xx) answer, at most [`MAX_BODY_BYTES`].
fn read_body(
    response: Result<http::Response<ureq::Body>, ureq::Error>,
) -> Result<Vec<u8>, WeChatError> {
    let mut response = response.map_err(|e| from_transport_error(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(WeChatError::HttpStatus {
            status: status.as_u16(),
        });
    }
    // Parsed from bytes regardless of Content-Type: WeChat often labels JSON `text/plain`.
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(|e| from_transport_error(&e))
}

/// ureq's error text can contain the request URL (secret and code included), so only the
/// error's kind is kept.
fn from_transport_error(err: &ureq::Error) -> WeChatError {
    use std::io::ErrorKind;
    match err {
        ureq::Error::Timeout(timeout) => WeChatError::Timeout {
            phase: timeout_phase(*timeout),
        },
        ureq::Error::Io(io) if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            WeChatError::Timeout { phase: "i/o" }
        }
        ureq::Error::Io(io) => WeChatError::Transport {
            reason: match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "connection reset",
                ErrorKind::UnexpectedEof => "connection closed early",
                _ => "i/o error",
            },
        },
        ureq::Error::HostNotFound => WeChatError::Transport {
            reason: "host not found",
        },
        ureq::Error::ConnectionFailed => WeChatError::Transport {
            reason: "connection failed",
        },
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => WeChatError::Transport {
            reason: "invalid base url",
        },
        ureq::Error::Tls(_) => WeChatError::Transport {
            reason: "tls error",
        },
        ureq::Error::Protocol(_) => WeChatError::Transport {
            reason: "http protocol error",
        },
        ureq::Error::BodyExceedsLimit(_) => WeChatError::InvalidResponse {
            reason: "body too large",
        },
        ureq::Error::StatusCode(status) => WeChatError::HttpStatus { status: *status },
        _ => WeChatError::Transport {
            reason: "transport error",
        },
    }
}

fn timeout_phase(timeout: ureq::Timeout) -> &'static str {
    match timeout {
        ureq::Timeout::Resolve => "resolve",
        ureq::Timeout::Connect => "connect",
        ureq::Timeout::SendRequest | ureq::Timeout::SendBody | ureq::Timeout::PerWrite => "send",
        ureq::Timeout::RecvResponse => "response headers",
        ureq::Timeout::RecvBody => "response body",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> WeChatClient {
        WeChatClient::new("wxapp", AppSecret::new("SECRET-123"))
    }

    #[test]
    fn parses_success_with_and_without_unionid() {
        let s = client()
            .interpret(
                br#"{"openid":"o1","session_key":"a2V5","unionid":"u1"}"#,
                "c",
            )
            .unwrap();
        assert_eq!(s.open_id, "o1");
        assert_eq!(s.union_id.as_deref(), Some("u1"));
        assert_eq!(s.session_key.expose_secret(), "a2V5");
        let s = client()
            .interpret(br#"{"errcode":0,"openid":"o1","session_key":"a2V5"}"#, "c")
            .unwrap();
        assert_eq!(s.union_id, None);
    }

    #[test]
    fn null_and_blank_bodies_are_empty_responses() {
        for body in [&b""[..], b"  \n", b"null"] {
            let err = client().interpret(body, "c").unwrap_err();
            assert!(matches!(err, WeChatError::EmptyResponse), "{body:?}");
            assert_eq!(err.node_code(), 6003);
        }
    }

    #[test]
    fn errmsg_is_scrubbed_then_truncated() {
        let body = br#"{"errcode":40999,"errmsg":"bad SECRET-123 for CODE-9"}"#;
        let err = client().interpret(body, "CODE-9").unwrap_err();
        let WeChatError::Upstream { errcode, errmsg } = err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(errcode, 40999);
        assert_eq!(errmsg, "bad <redacted> for <redacted>");
        let long = format!(r#"{{"errcode":1,"errmsg":"{}"}}"#, "x".repeat(1000));
        let WeChatError::Upstream { errmsg, .. } =
            client().interpret(long.as_bytes(), "c").unwrap_err()
        else {
            panic!("expected Upstream");
        };
        assert_eq!(errmsg.chars().count(), MAX_ERRMSG_CHARS);
    }

    #[test]
    fn stable_token_answers_are_checked() {
        let c = client();
        let fetched = c
            .interpret_stable_token(br#"{"access_token":"AT-1","expires_in":7200}"#)
            .unwrap();
        assert_eq!(fetched.token.expose_secret(), "AT-1");
        assert_eq!(fetched.expires_in, Duration::from_secs(7200));
        let capped = c
            .interpret_stable_token(br#"{"access_token":"AT-1","expires_in":99999}"#)
            .unwrap();
        assert_eq!(capped.expires_in, MAX_ACCESS_TOKEN_LIFETIME);
        let status = |body: &[u8]| c.interpret_stable_token(body).unwrap_err().status();
        assert_eq!(status(br#"{"errcode":40125,"errmsg":"x"}"#), 500);
        assert_eq!(status(br#"{"errcode":40013,"errmsg":"x"}"#), 500);
        assert_eq!(status(br#"{"errcode":40164,"errmsg":"x"}"#), 500);
        assert_eq!(status(br#"{"errcode":45009,"errmsg":"x"}"#), 503);
        assert_eq!(status(br#"{"errcode":-1,"errmsg":"x"}"#), 503);
        for garbage in [
            &b"<html>"[..],
            br#"{"access_token":"","expires_in":7200}"#,
            br#"{"access_token":"a b","expires_in":7200}"#,
            br#"{"access_token":"AT","expires_in":0}"#,
            br#"{"access_token":"AT"}"#,
            br#"{"expires_in":7200}"#,
            br#"{"access_token":7,"expires_in":7200}"#,
        ] {
            assert_eq!(
                status(garbage),
                502,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(status(b""), 502);
    }

    #[test]
    fn phone_answers_are_checked() {
        let c = client();
        let answer = |cc: &str, appid: &str| {
            format!(
                r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":{cc},"watermark":{{"timestamp":1,"appid":"{appid}"}}}}}}"#
            )
        };
        for cc in [r#""86""#, "86"] {
            let phone = c
                .interpret_phone_number(answer(cc, "wxapp").as_bytes(), &[])
                .unwrap();
            assert_eq!(phone.pure_phone_number, "13800138000");
            assert_eq!(phone.country_code, "86");
        }
        let err = c
            .interpret_phone_number(answer("86", "wx-other").as_bytes(), &[])
            .unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.oauth_error()),
            (502, "invalid_response")
        );
        let refusal = |body: &str| {
            c.interpret_phone_number(body.as_bytes(), &["PC-9"])
                .unwrap_err()
        };
        let err = refusal(r#"{"errcode":40029,"errmsg":"invalid code"}"#);
        assert_eq!(
            (err.status().as_u16(), err.oauth_error()),
            (401, "invalid_phone_code")
        );
        assert_eq!(refusal(r#"{"errcode":45011,"errmsg":"x"}"#).status(), 429);
        assert_eq!(refusal(r#"{"errcode":-1,"errmsg":"x"}"#).status(), 503);
        for errcode in [40001, 42001, 40014] {
            let err = refusal(&format!(r#"{{"errcode":{errcode},"errmsg":"x"}}"#));
            assert!(matches!(err, WeChatError::AccessTokenRejected { errcode: e } if e == errcode));
        }
        let WeChatError::Upstream { errmsg, .. } =
            refusal(r#"{"errcode":47001,"errmsg":"bad PC-9 SECRET-123"}"#)
        else {
            panic!("expected Upstream");
        };
        assert_eq!(errmsg, "bad <redacted> <redacted>");
        for garbage in [
            r#"{"errcode":0}"#,
            r#"{"errcode":0,"phone_info":{"phoneNumber":"1"}}"#,
            r#"{"errcode":0,"phone_info":{"phoneNumber":"x","purePhoneNumber":"x","countryCode":"86","watermark":{"timestamp":1,"appid":"wxapp"}}}"#,
            r#"{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86"}}"#,
            "[]",
        ] {
            assert_eq!(refusal(garbage).status(), 502, "{garbage}");
        }
    }

    #[test]
    fn debug_redacts_secret() {
        let text = format!("{:?}", client());
        assert!(!text.contains("SECRET-123"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn builder_keeps_clones_independent() {
        let base = client();
        let other = base.clone().with_base_url("http://127.0.0.1:1/");
        assert_eq!(base.inner.base_url, DEFAULT_BASE_URL);
        assert_eq!(other.inner.base_url, "http://127.0.0.1:1");
    }
}
