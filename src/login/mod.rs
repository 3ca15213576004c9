//! [`MpAuth`]: the login, refresh and logout flows.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::request::Parts;

pub use self::{
    config::{ConfigError, Identity, MpAuthConfig},
    error::Error,
    request::{AuthorizeRequest, Authorized, EncryptedPhone},
};
use self::{dedup::InFlight, phone::LoginPhone};
use crate::{
    access_token::AccessTokenManager,
    instruments::{self, Flow},
    layer::MpAuthLayer,
    response::Responder,
    store::{DEFAULT_SIGN_OUT_NOTICE, IssueOptions, SignOutReason, TokenStatus, TokenStore},
    throttle::{Decision, LoginThrottle},
    token::{ParsedToken, Token, TokenError},
    user::AuthedUser,
    users::UserStore,
    wechat::{DecryptOptions, DecryptedProfile, decrypt_profile, verify_signature},
};

mod config;
mod dedup;
mod devices;
mod error;
#[cfg(feature = "axum")]
mod handlers;
mod phone;
mod request;
mod spans;

#[cfg(feature = "axum")]
pub use self::handlers::MAX_BODY_BYTES;
#[cfg(feature = "testing")]
pub(crate) use self::handlers::{BodyError, read_json};

/// The login service: cheap to clone, shared by the handlers. Build it with
/// [`MpAuth::new`] or, for a login throttle or other answers, [`MpAuth::builder`]. It
/// runs the login, refresh and logout flows, tying WeChat, the user store and the token
/// store together.
///
/// ```no_run
/// use mpauthx::{AuthorizeRequest, MpAuth, MpAuthConfig, RedisTokenStore, SqliteUserStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
/// let tokens = RedisTokenStore::connect("redis://127.0.0.1/").await?;
/// let users = SqliteUserStore::open("users.db").await?;
/// let auth = MpAuth::new(config, tokens, users);
///
/// let login = AuthorizeRequest::new("code from wx.login()");
/// let authorized = auth.authorize(&login).await?;
/// // Send `authorized.token.expose()` to the mini-program.
/// # Ok(()) }
/// ```
pub struct MpAuth<T, U> {
    inner: Arc<Shared<T, U>>,
}

/// What every clone of one [`MpAuth`] shares.
struct Shared<T, U> {
    config: MpAuthConfig,
    tokens: T,
    users: U,
    decrypt: DecryptOptions,
    issue: IssueOptions,
    throttle: Option<LoginThrottle>,
    responder: Arc<Responder>,
    access_tokens: AccessTokenManager,
    in_flight: InFlight,
}

impl<T, U> Clone for MpAuth<T, U> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: fmt::Debug, U: fmt::Debug> fmt::Debug for MpAuth<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpAuth")
            .field("config", &self.inner.config)
            .field("tokens", &self.inner.tokens)
            .field("users", &self.inner.users)
            .field("throttle", &self.inner.throttle)
            .field("access_tokens", &self.inner.access_tokens)
            .finish_non_exhaustive()
    }
}

/// Settings for an [`MpAuth`] beyond its configuration and stores; from
/// [`MpAuth::builder`].
///
/// ```
/// use std::time::Duration;
/// use mpauthx::{
///     LoginThrottle, MemoryRateLimiter, MemoryTokenStore, MpAuth, MpAuthConfig, RateLimit,
///     SqliteUserStore,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
/// let throttle = LoginThrottle::new(MemoryRateLimiter::new())
///     .per_user(RateLimit::new(10, Duration::from_secs(60))?);
/// let auth = MpAuth::builder(config, MemoryTokenStore::new(), SqliteUserStore::open_in_memory().await?)
///     .with_login_throttle(throttle)
///     .with_realm("shop")
///     .build();
/// # Ok(()) }
/// ```
pub struct MpAuthBuilder<T, U> {
    config: MpAuthConfig,
    tokens: T,
    users: U,
    throttle: Option<LoginThrottle>,
    responder: Responder,
    access_tokens: Option<AccessTokenManager>,
}

impl<T: fmt::Debug, U: fmt::Debug> fmt::Debug for MpAuthBuilder<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpAuthBuilder")
            .field("config", &self.config)
            .field("tokens", &self.tokens)
            .field("users", &self.users)
            .field("throttle", &self.throttle)
            .field("access_tokens", &self.access_tokens)
            .finish_non_exhaustive()
    }
}

impl<T: TokenStore, U: UserStore> MpAuthBuilder<T, U> {
    /// Where the app's WeChat access token (for phone numbers) is kept. Default: this
    /// process ([`AccessTokenManager::memory`]); servers that share an app should share
    /// it through Redis ([`AccessTokenManager::redis`]), so that one token serves them
    /// all.
    ///
    /// ```no_run
    /// use mpauthx::{AccessTokenManager, MpAuth, MpAuthConfig, RedisTokenStore, SqliteUserStore};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
    /// let tokens = RedisTokenStore::connect("redis://127.0.0.1/").await?;
    /// let access_tokens = AccessTokenManager::redis(config.wechat().clone(), &tokens);
    /// let users = SqliteUserStore::open("users.db").await?;
    /// let auth = MpAuth::builder(config, tokens, users)
    ///     .with_access_tokens(access_tokens)
    ///     .build();
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If `manager` is for another app id than the configuration's.
    pub fn with_access_tokens(mut self, manager: AccessTokenManager) -> Self {
        assert_eq!(
            manager.app_id(),
            self.config.app_id(),
            "the access token manager is for another app than the configuration"
        );
        self.access_tokens = Some(manager);
        self
    }

    /// Limits logins per client and per user; see [`LoginThrottle`]. Logins over a limit
    /// get [`Error::Throttled`] (429 with `Retry-After`).
    pub fn with_login_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Sets the `realm` of the `WWW-Authenticate` challenges of the handlers and of
    /// [`MpAuth::layer`]. Default: `mpauthx`.
    ///
    /// # Panics
    /// If `realm` is not 1 to 64 visible ASCII characters without `"` or `\`.
    pub fn with_realm(mut self, realm: &str) -> Self {
        self.responder = self.responder.with_realm(realm);
        self
    }

    /// Sets the `Retry-After` of 503 answers of the handlers and of [`MpAuth::layer`],
    /// rounded up to whole seconds. Default: 1 s.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.responder = self.responder.with_retry_after(after);
        self
    }

    /// The login service.
    pub fn build(self) -> MpAuth<T, U> {
        let mut decrypt = DecryptOptions::new(self.config.app_id().to_owned());
        if let Some(max_age) = self.config.profile_max_age {
            decrypt = decrypt.with_max_age(max_age);
        }
        let issue = self.config.issue_options();
        let access_tokens = self
            .access_tokens
            .unwrap_or_else(|| AccessTokenManager::memory(self.config.wechat().clone()));
        MpAuth {
            inner: Arc::new(Shared {
                config: self.config,
                tokens: self.tokens,
                users: self.users,
                decrypt,
                issue,
                throttle: self.throttle,
                responder: Arc::new(self.responder),
                access_tokens,
                in_flight: InFlight::default(),
            }),
        }
    }
}

impl<T: TokenStore, U: UserStore> MpAuth<T, U> {
    /// Ties a configuration, a token store and a user store together. WeChat is asked
    /// as the configuration says ([`MpAuthConfig::with_wechat_base_url`] and the
    /// timeouts).
    pub fn new(config: MpAuthConfig, tokens: T, users: U) -> Self {
        Self::builder(config, tokens, users).build()
    }

    /// Like [`new`](Self::new), with further settings: a login throttle, the realm and
    /// `Retry-After` of its answers.
    pub fn builder(config: MpAuthConfig, tokens: T, users: U) -> MpAuthBuilder<T, U> {
        MpAuthBuilder {
            config,
            tokens,
            users,
            throttle: None,
            responder: Responder::default(),
            access_tokens: None,
        }
    }

    /// The login throttle, if one is set.
    pub fn login_throttle(&self) -> Option<&LoginThrottle> {
        self.inner.throttle.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &MpAuthConfig {
        &self.inner.config
    }

    /// The token store.
    pub fn tokens(&self) -> &T {
        &self.inner.tokens
    }

    /// The user store.
    pub fn users(&self) -> &U {
        &self.inner.users
    }

    /// The app's WeChat access token, shared with phone binding: for WeChat calls of
    /// your own (see [`AccessTokenManager::call`]).
    pub fn access_tokens(&self) -> &AccessTokenManager {
        &self.inner.access_tokens
    }

    fn decrypt_options(&self) -> &DecryptOptions {
        &self.inner.decrypt
    }

    /// A layer that authenticates requests with this service's tokens, answering
    /// failures exactly as the handlers do (realm, `Retry-After`, bodies).
    pub fn layer(&self) -> MpAuthLayer<T> {
        MpAuthLayer::new(self.inner.tokens.clone(), self.inner.config.sku().clone())
            .with_responder(Arc::clone(&self.inner.responder))
    }

    /// Logs a user in: exchanges the code with WeChat, decrypts and checks the profile
    /// when one is given, stores the user and issues a token. Not limited per client:
    /// a handler uses [`authorize_from`](Self::authorize_from).
    ///
    /// A failed login stores nothing: WeChat is asked everything first (the session,
    /// then the phone for a `phone_code`), the token is issued before the user is stored
    /// and taken back if storing fails (or the login is dropped half-way), and never
    /// leaves this function unless both worked.
    ///
    /// Concurrent logins with the same code (a double submit) are one login: the first
    /// runs, the others wait for it and get the same answer, token included. A later
    /// replay of the code is refused by WeChat (`invalid_code`).
    pub async fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, Error> {
        self.login_once(None, request).await
    }

    /// Like [`authorize`](Self::authorize) for an HTTP request: when a throttle limits
    /// clients, the attempt counts against the client it names in `parts` (see
    /// [`LoginThrottle::per_client`]). The limits are checked after the request's own
    /// checks and before WeChat is asked (per client), and as soon as WeChat names the
    /// user (per user).
    pub async fn authorize_from(
        &self,
        parts: &Parts,
        request: &AuthorizeRequest,
    ) -> Result<Authorized, Error> {
        let client = self.login_throttle().and_then(|t| t.client_key(parts));
        self.login_once(client.as_deref(), request).await
    }

    /// A login, or the outcome of the one in flight with the same code.
    async fn login_once(
        &self,
        client: Option<&str>,
        request: &AuthorizeRequest,
    ) -> Result<Authorized, Error> {
        let login = async {
            match request.code.as_deref() {
                Some(code) if !code.is_empty() && code.len() <= MAX_CODE_LEN => {
                    self.inner
                        .in_flight
                        .run(dedup::key_of(request), self.login(client, request))
                        .await
                }
                _ => self.login(client, request).await,
            }
        };
        spans::traced(Flow::Login, login).await
    }

    async fn login(
        &self,
        client: Option<&str>,
        request: &AuthorizeRequest,
    ) -> Result<Authorized, Error> {
        let code = request
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(Error::InvalidRequest("missing required field `code`"))?;
        if code.len() > MAX_CODE_LEN {
            return Err(Error::InvalidRequest("`code` is too long"));
        }
        let encrypted = match (&request.encrypted_data, &request.iv) {
            (Some(data), Some(iv)) => Some((data.as_str(), iv.as_str())),
            (None, None) => None,
            (Some(_), None) => return Err(Error::InvalidRequest("missing required field `iv`")),
            (None, Some(_)) => {
                return Err(Error::InvalidRequest(
                    "missing required field `encryptedData`",
                ));
            }
        };
        let signed = match (&request.raw_data, &request.signature) {
            (Some(raw), Some(signature)) => Some((raw.as_str(), signature.as_str())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::InvalidRequest("missing required field `signature`"));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidRequest("missing required field `rawData`"));
            }
        };
        let phone = LoginPhone::of(request)?;

        if let (Some(throttle), Some(client)) = (&self.inner.throttle, client) {
            let sku = self.inner.config.sku().as_str();
            admit(
                throttle.check_client(sku, client).await?,
                Flow::Login,
                "client",
            )?;
        }
        let asked = std::time::Instant::now();
        let session = self.inner.config.wechat().code2session(code).await;
        spans::record_wechat(asked);
        let session = session?;
        if let Some((raw, signature)) = signed {
            verify_signature(raw, &session.session_key, signature)?;
        }
        let decrypted = match encrypted {
            Some((data, iv)) => Some(decrypt_profile(
                &self.inner.decrypt,
                &session,
                data,
                iv,
                SystemTime::now(),
            )?),
            None => None,
        };
        let union_id = decrypted
            .as_ref()
            .and_then(|p| p.union_id.clone())
            .or(session.union_id.clone());
        let identity = match (self.inner.config.identity(), &union_id) {
            (Identity::UnionIdWhenPresent, Some(union_id)) => union_id.clone(),
            _ => session.open_id.clone(),
        };
        if let Some(throttle) = &self.inner.throttle {
            admit(
                throttle
                    .check_user(self.inner.config.sku().as_str(), &identity)
                    .await?,
                Flow::Login,
                "user",
            )?;
        }
        let profile = decrypted.as_ref().map(DecryptedProfile::to_stored);
        let phone = self.login_phone(phone, &session).await?;

        let token = Token::generate(self.inner.config.sku(), &identity).map_err(|e| match e {
            TokenError::InvalidOpenId => Error::UnusableId,
            other => Error::Token(other),
        })?;
        let mut options = self.inner.issue.clone();
        if let Some(device) = &request.device {
            options = options.with_device(device);
        }
        // Until the login completes, dropping this takes the token back: a login that
        // fails, or whose future is dropped (a request timeout, a client hanging up),
        // after its issue reached the store leaves no phantom token.
        let mut pending = Pending::new(self.inner.tokens.clone(), token.clone(), &self.inner.issue);
        let issued = self.inner.tokens.issue(&token, &options).await?;
        let stored = self
            .inner
            .users
            .upsert_login(
                self.inner.config.app_id(),
                &identity,
                union_id.as_deref(),
                profile.as_ref(),
                phone.as_ref(),
            )
            .await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                // Take it back now, so that the failed login leaves nothing behind; if
                // the store cannot answer either, `pending` keeps trying.
                match self.inner.tokens.undo_issue(&token.parsed()).await {
                    Ok(_) => pending.disarm(),
                    Err(undo) => {
                        tracing::warn!(error = %undo, "could not take back the token of a failed login; retrying")
                    }
                }
                return Err(error.into());
            }
        };
        pending.disarm();
        if let Some(from) = &stored.merged_from {
            tracing::info!(user = %identity, from = %from, person = %stored.user.person_id, "a late unionid moved the user to the person that has it");
        }
        spans::record("user", &identity);
        spans::record("token", issued.info.hash.id().as_str());
        tracing::info!(user = %identity, token = %issued.info.hash.id(), phone = phone.is_some(), "user logged in");
        let mut authorized = Authorized::new(token, &issued.info, Some(stored.user));
        authorized.phone = phone;
        authorized.merged_from = stored.merged_from;
        Ok(authorized)
    }

    /// Replaces a live token with a new one: the old one stops working at once. Of
    /// concurrent refreshes of one token exactly one succeeds and the others get
    /// [`Error::InvalidToken`], except that within the retry grace
    /// ([`MpAuthConfig::with_refresh_grace`]) the old token may refresh once more,
    /// which ends the successor it had: a client whose answer was lost to an outage
    /// retries and stays logged in. Past the session's maximum age
    /// ([`MpAuthConfig::with_max_session_age`]) a refresh is refused.
    pub async fn refresh(&self, token: &str) -> Result<Authorized, Error> {
        spans::traced(Flow::Refresh, async {
            let token = self.parse(token)?;
            spans::record("user", token.open_id());
            let successor = Token::successor_of(&token).map_err(Error::Token)?;
            let rotated = self
                .inner
                .tokens
                .rotate(&token, &successor, &self.inner.issue)
                .await?;
            let Some(issued) = rotated else {
                // Not live: say why if the service signed the user out (a second look,
                // on the refused path only).
                return Err(match self.inner.tokens.validate(&token).await? {
                    TokenStatus::SignedOut(reason) => Error::SignedOut(reason),
                    _ => Error::InvalidToken,
                });
            };
            spans::record("token", issued.info.hash.id().as_str());
            Ok(Authorized::new(successor, &issued.info, None))
        })
        .await
    }

    /// Revokes a live token; [`Error::InvalidToken`] if it was not live.
    pub async fn logout(&self, token: &str) -> Result<(), Error> {
        let token = self.parse(token)?;
        if self.inner.tokens.revoke(&token).await? {
            instruments::logout("token", 1);
            Ok(())
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// Revokes every token of a user (logout on every device). Returns how many were
    /// live.
    pub async fn logout_all(&self, open_id: &str) -> Result<usize, Error> {
        let revoked = self
            .inner
            .tokens
            .revoke_all(self.inner.config.sku(), open_id)
            .await?;
        instruments::logout("all", revoked);
        Ok(revoked)
    }

    /// Signs a user out on every device for `reason`, as trusted code decides (a changed
    /// password, a suspended account, an administrator's action). Returns how many
    /// tokens were live.
    ///
    /// Unlike [`logout_all`](Self::logout_all), the client learns why: for a day (or
    /// until the token would have expired, if sooner) a request with one of these
    /// tokens, and a refresh of one, is answered 401 with
    /// `{"error": "signed_out", "reason": "<reason>", …}` rather than `invalid_token`;
    /// then it is an unknown token like any other. Valid tokens pay nothing for it: the
    /// notice takes the place of the revoked token in the store, read only when a token
    /// is no longer live. For another notice period, call
    /// [`TokenStore::sign_out`](crate::TokenStore::sign_out) on
    /// [`tokens`](Self::tokens).
    pub async fn sign_out(&self, open_id: &str, reason: &SignOutReason) -> Result<usize, Error> {
        let sku = self.inner.config.sku();
        let signed_out = self
            .inner
            .tokens
            .sign_out(sku, open_id, reason, DEFAULT_SIGN_OUT_NOTICE)
            .await?;
        tracing::info!(user = %open_id, %reason, tokens = signed_out, "user signed out by the service");
        instruments::logout("service", signed_out);
        Ok(signed_out)
    }

    /// Revokes every token of a stored user and issues a new one: the Node original's
    /// `refreshToken(userId)`.
    ///
    /// **For trusted server code only.** Knowing an openid proves nothing; never expose
    /// this through an endpoint that does not authenticate the caller otherwise.
    pub async fn refresh_for_user(&self, open_id: &str) -> Result<Authorized, Error> {
        let user = self
            .inner
            .users
            .get(self.inner.config.app_id(), open_id)
            .await?
            .ok_or(Error::UnknownUser)?;
        let token = Token::generate(self.inner.config.sku(), open_id).map_err(|e| match e {
            TokenError::InvalidOpenId => Error::UnusableId,
            other => Error::Token(other),
        })?;
        self.logout_all(open_id).await?;
        let issued = self.inner.tokens.issue(&token, &self.inner.issue).await?;
        Ok(Authorized::new(token, &issued.info, Some(user)))
    }

    /// Deletes a user and revokes every token they hold, on every device. Returns
    /// whether the user existed. The tokens go first: a user who cannot be deleted
    /// (the user store fails) is at least logged out.
    pub async fn delete_user(&self, open_id: &str) -> Result<bool, Error> {
        self.logout_all(open_id).await?;
        Ok(self
            .inner
            .users
            .delete(self.inner.config.app_id(), open_id)
            .await?)
    }

    /// The user behind a live token.
    pub async fn validate(&self, token: &str) -> Result<AuthedUser, Error> {
        let parsed = self.parse(token)?;
        match self.inner.tokens.validate(&parsed).await? {
            TokenStatus::Live { .. } => Ok(AuthedUser::new(
                self.inner.config.sku().clone(),
                parsed.open_id(),
            )),
            TokenStatus::SignedOut(reason) => Err(Error::SignedOut(reason)),
            _ => Err(Error::InvalidToken),
        }
    }

    /// Whether a token is live. A store failure is an error, not `false`.
    pub async fn is_token_valid(&self, token: &str) -> Result<bool, Error> {
        match self.validate(token).await {
            Ok(_) => Ok(true),
            Err(Error::InvalidToken | Error::SignedOut(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The openid part of a token, unchecked; see [`extract_open_id`](crate::extract_open_id).
    pub fn extract_open_id<'a>(&self, token: &'a str) -> Option<&'a str> {
        crate::token::extract_open_id(token)
    }

    /// The sku part of a token, unchecked; see [`extract_sku`](crate::extract_sku).
    pub fn extract_sku<'a>(&self, token: &'a str) -> Option<&'a str> {
        crate::token::extract_sku(token)
    }

    /// Lets go of this handle. The stores' connections close when the last clone of
    /// this service (and of the stores) is dropped; nothing else needs flushing.
    pub fn close(self) {}

    /// The answer for `error`, written as this service answers (realm, `Retry-After`):
    /// what the handlers send.
    #[cfg(feature = "axum")]
    pub(crate) fn responder(&self) -> &Responder {
        &self.inner.responder
    }

    fn parse<'a>(&self, token: &'a str) -> Result<ParsedToken<'a>, Error> {
        ParsedToken::parse(token)
            .ok()
            .filter(|t| *self.inner.config.sku() == *t.sku())
            .ok_or(Error::InvalidToken)
    }
}

/// A login's token until the login completes: dropped armed, it takes the token back in
/// the background, retrying while the store cannot answer, for as long as the devices
/// it evicted can be restored (the retry grace) or a few seconds without one. The token
/// is harmless meanwhile: nobody holds it.
struct Pending<T: TokenStore> {
    tokens: T,
    token: Option<Token>,
    window: Duration,
}

impl<T: TokenStore> Pending<T> {
    fn new(tokens: T, token: Token, options: &IssueOptions) -> Self {
        Self {
            tokens,
            token: Some(token),
            window: options.retry_grace().max(Duration::from_secs(5)),
        }
    }

    /// The login completed, or its token was taken back: nothing left to do.
    fn disarm(&mut self) {
        self.token = None;
    }
}

impl<T: TokenStore> Drop for Pending<T> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(token = %token.hash().id(), "a failed login's token cannot be taken back outside a runtime; it expires unused");
            return;
        };
        let (tokens, window) = (self.tokens.clone(), self.window);
        runtime.spawn(async move {
            let id = token.hash().id();
            let deadline = tokio::time::Instant::now() + window;
            let mut backoff = Duration::from_millis(100);
            loop {
                match tokens.undo_issue(&token.parsed()).await {
                    Ok(restored) => {
                        tracing::info!(token = %id, restored = restored.len(), "took back the token of a failed login");
                        return;
                    }
                    Err(error) if tokio::time::Instant::now() + backoff >= deadline => {
                        tracing::warn!(token = %id, %error, "gave up taking back the token of a failed login; it expires unused");
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    }
}

/// Turns a throttle's refusal into [`Error::Throttled`].
pub(super) fn admit(decision: Decision, flow: Flow, limit: &'static str) -> Result<(), Error> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after } => {
            instruments::throttled(flow, limit);
            tracing::info!(
                retry_after_ms = retry_after.as_millis() as u64,
                "login throttled"
            );
            Err(Error::Throttled { retry_after })
        }
    }
}

/// Far longer than any login or phone code WeChat issues (login codes are 32
/// characters).
const MAX_CODE_LEN: usize = 256;
