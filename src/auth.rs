//! [`MpAuth`]: the login, refresh and logout flows, tying WeChat, the user store and the
//! token store together.
//!
//! ```no_run
//! use mpauthx::{MpAuth, MpAuthConfig, RedisTokenStore, users::SqliteUserStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
//! let tokens = RedisTokenStore::connect("redis://127.0.0.1/").await?;
//! let users = SqliteUserStore::open("users.db").await?;
//! let auth = MpAuth::new(config, tokens, users);
//!
//! let login = mpauthx::AuthorizeRequest::new("code from wx.login()");
//! let authorized = auth.authorize(&login).await?;
//! // Send `authorized.token.expose()` to the mini-program.
//! # Ok(()) }
//! ```

use std::{fmt, sync::Arc, time::SystemTime};

use serde::Deserialize;

use crate::{
    config::{Identity, MpAuthConfig, Sku},
    error::Error,
    extract::AuthedUser,
    layer::MpAuthLayer,
    store::{IssueOptions, TokenStore},
    throttle::{Decision, LoginThrottle},
    token::{ParsedToken, Token},
    users::{User, UserStore},
    wechat::{DecryptOptions, WeChatClient, decrypt_profile, verify_signature},
};

/// The body of `POST /auth/authorize`: what `wx.login()` and, optionally,
/// `wx.getUserInfo()` gave the mini-program. `Debug` redacts everything but the device.
#[derive(Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct AuthorizeRequest {
    /// The one-time login code from `wx.login()`. Required.
    pub code: Option<String>,
    /// The encrypted profile from `wx.getUserInfo()`; needs `iv`.
    #[serde(rename = "encryptedData", alias = "encrypted_data")]
    pub encrypted_data: Option<String>,
    /// The IV for `encryptedData`.
    pub iv: Option<String>,
    /// The plain profile JSON; with `signature`, checked as `sha1(rawData + session_key)`.
    #[serde(rename = "rawData", alias = "raw_data")]
    pub raw_data: Option<String>,
    /// The signature of `rawData`.
    pub signature: Option<String>,
    /// A label for the device, shown in device lists.
    pub device: Option<String>,
}

impl AuthorizeRequest {
    /// A login with a code only (the modern flow: WeChat no longer hands out profiles).
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: Some(code.into()),
            ..Self::default()
        }
    }

    /// Adds the encrypted profile and its IV.
    pub fn with_encrypted_profile(
        mut self,
        encrypted_data: impl Into<String>,
        iv: impl Into<String>,
    ) -> Self {
        self.encrypted_data = Some(encrypted_data.into());
        self.iv = Some(iv.into());
        self
    }

    /// Adds `rawData` and its signature.
    pub fn with_signature(
        mut self,
        raw_data: impl Into<String>,
        signature: impl Into<String>,
    ) -> Self {
        self.raw_data = Some(raw_data.into());
        self.signature = Some(signature.into());
        self
    }

    /// Labels the device.
    pub fn with_device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }
}

impl fmt::Debug for AuthorizeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthorizeRequest")
            .field("code", &shown(&self.code))
            .field("encrypted_data", &shown(&self.encrypted_data))
            .field("iv", &shown(&self.iv))
            .field("raw_data", &shown(&self.raw_data))
            .field("signature", &shown(&self.signature))
            .field("device", &self.device)
            .finish()
    }
}

/// A token handed out by a login or a refresh.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Authorized {
    /// The token, to send to the client once.
    pub token: Token,
    /// Its lifetime in seconds from now.
    pub expires_in: u64,
    /// The user, as stored (logins only; refreshes do not read the user store).
    pub user: Option<User>,
}

/// The login service: cheap to clone, shared by the handlers.
pub struct MpAuth<T, U> {
    inner: Arc<Inner<T, U>>,
}

#[derive(Clone)]
struct Inner<T, U> {
    config: MpAuthConfig,
    tokens: T,
    users: U,
    wechat: WeChatClient,
    decrypt: DecryptOptions,
    issue: IssueOptions,
    throttle: Option<LoginThrottle>,
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
            .field("wechat", &self.inner.wechat)
            .field("throttle", &self.inner.throttle)
            .finish()
    }
}

impl<T: TokenStore, U: UserStore> MpAuth<T, U> {
    /// Ties a configuration, a token store and a user store together, talking to
    /// WeChat's production API.
    pub fn new(config: MpAuthConfig, tokens: T, users: U) -> Self {
        let wechat = WeChatClient::new(config.app_id.clone(), config.app_secret.clone());
        Self::with_parts(config, tokens, users, wechat)
    }

    /// Like [`new`](Self::new), with a WeChat client of your own: another base URL
    /// (a simulator, a proxy) or other timeouts.
    pub fn with_parts(config: MpAuthConfig, tokens: T, users: U, wechat: WeChatClient) -> Self {
        let mut decrypt = DecryptOptions::new(config.app_id.clone());
        if let Some(max_age) = config.profile_max_age {
            decrypt = decrypt.with_max_age(max_age);
        }
        let issue = config.issue_options();
        Self {
            inner: Arc::new(Inner {
                config,
                tokens,
                users,
                wechat,
                decrypt,
                issue,
                throttle: None,
            }),
        }
    }

    /// Limits logins per client and per user; see [`LoginThrottle`]. Logins over a limit
    /// get [`Error::Throttled`] (429 with `Retry-After`).
    pub fn with_login_throttle(self, throttle: LoginThrottle) -> Self {
        let mut inner = (*self.inner).clone();
        inner.throttle = Some(throttle);
        Self {
            inner: Arc::new(inner),
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

    /// A layer that authenticates requests with this service's tokens.
    pub fn layer(&self) -> MpAuthLayer<T> {
        MpAuthLayer::new(self.inner.tokens.clone(), self.inner.config.sku.clone())
    }

    /// Logs a user in: exchanges the code with WeChat, decrypts and checks the profile
    /// when one is given, stores the user and issues a token.
    ///
    /// A failed login stores nothing: the token is issued before the user is stored and
    /// revoked again if storing fails, and never leaves this function unless both worked.
    pub async fn authorize(&self, request: &AuthorizeRequest) -> Result<Authorized, Error> {
        self.authorize_from(None, request).await
    }

    /// Like [`authorize`](Self::authorize), counting the attempt against the login limit
    /// of `client` (a key from [`LoginThrottle::client_key`]) when a throttle is set.
    /// The limits are checked after the request's own checks and before WeChat is
    /// asked (per client), and as soon as WeChat names the user (per user).
    pub async fn authorize_from(
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

        if let (Some(throttle), Some(client)) = (&self.inner.throttle, client) {
            admit(throttle.check_client(client).await?)?;
        }
        let session = self.inner.wechat.code2session(code).await?;
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
        let identity = match (self.inner.config.identity, &union_id) {
            (Identity::UnionIdWhenPresent, Some(union_id)) => union_id.clone(),
            _ => session.open_id.clone(),
        };
        if let Some(throttle) = &self.inner.throttle {
            admit(
                throttle
                    .check_user(self.inner.config.sku.as_str(), &identity)
                    .await?,
            )?;
        }
        let profile = decrypted.as_ref().map(crate::wechat::Profile::to_stored);

        let token = Token::generate(&self.inner.config.sku, &identity).map_err(|e| match e {
            crate::TokenError::InvalidOpenId => Error::UnusableId,
            other => Error::Token(other),
        })?;
        let mut options = self.inner.issue.clone();
        if let Some(device) = &request.device {
            options = options.with_device(device);
        }
        let info = self.inner.tokens.issue(&token, &options).await?;
        let stored = self
            .inner
            .users
            .upsert_login(&identity, union_id.as_deref(), profile.as_ref())
            .await;
        let user = match stored {
            Ok(user) => user,
            Err(error) => {
                if let Err(revoke) = self.inner.tokens.revoke(&token.parsed()).await {
                    // The token never left this function; it expires unused.
                    tracing::warn!(error = %revoke, "could not revoke the token of a failed login");
                }
                return Err(error.into());
            }
        };
        tracing::info!(user = %identity, token = %info.hash.id(), "user logged in");
        Ok(Authorized {
            token,
            expires_in: (info.expires_at_ms.saturating_sub(info.issued_at_ms)) / 1000,
            user: Some(user),
        })
    }

    /// Replaces a live token with a new one (the old one stops working at once). Of
    /// concurrent refreshes of one token exactly one succeeds; the others get
    /// [`Error::InvalidToken`].
    pub async fn refresh(&self, token: &str) -> Result<Authorized, Error> {
        let token = self.parse(token)?;
        let issued = self
            .inner
            .tokens
            .rotate(&token, &self.inner.issue)
            .await?
            .ok_or(Error::InvalidToken)?;
        Ok(Authorized {
            expires_in: (issued
                .info
                .expires_at_ms
                .saturating_sub(issued.info.issued_at_ms))
                / 1000,
            token: issued.token,
            user: None,
        })
    }

    /// Revokes a live token; [`Error::InvalidToken`] if it was not live.
    pub async fn logout(&self, token: &str) -> Result<(), Error> {
        let token = self.parse(token)?;
        if self.inner.tokens.revoke(&token).await? {
            Ok(())
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// Revokes every token of a user (logout on every device). Returns how many were
    /// live.
    pub async fn logout_all(&self, open_id: &str) -> Result<usize, Error> {
        Ok(self
            .inner
            .tokens
            .revoke_all(&self.inner.config.sku, open_id)
            .await?)
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
            .get(open_id)
            .await?
            .ok_or(Error::UnknownUser)?;
        let token =
            Token::generate(&self.inner.config.sku, open_id).map_err(|_| Error::UnusableId)?;
        self.logout_all(open_id).await?;
        let info = self.inner.tokens.issue(&token, &self.inner.issue).await?;
        Ok(Authorized {
            token,
            expires_in: (info.expires_at_ms.saturating_sub(info.issued_at_ms)) / 1000,
            user: Some(user),
        })
    }

    /// The user behind a live token.
    pub async fn validate(&self, token: &str) -> Result<AuthedUser, Error> {
        let parsed = self.parse(token)?;
        if self.inner.tokens.validate(&parsed).await? {
            Ok(AuthedUser::new(
                self.inner.config.sku.clone(),
                parsed.open_id(),
            ))
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// Whether a token is live. A store failure is an error, not `false`.
    pub async fn is_token_valid(&self, token: &str) -> Result<bool, Error> {
        match self.validate(token).await {
            Ok(_) => Ok(true),
            Err(Error::InvalidToken) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The openid part of a token, unchecked; see [`crate::extract_open_id`].
    pub fn extract_open_id<'a>(&self, token: &'a str) -> Option<&'a str> {
        crate::token::extract_open_id(token)
    }

    /// The sku part of a token, unchecked; see [`crate::extract_sku`].
    pub fn extract_sku<'a>(&self, token: &'a str) -> Option<&'a str> {
        crate::token::extract_sku(token)
    }

    /// Lets go of this handle. The stores' connections close when the last clone of
    /// this service (and of the stores) is dropped; nothing else needs flushing.
    pub fn close(self) {}

    fn parse<'a>(&self, token: &'a str) -> Result<ParsedToken<'a>, Error> {
        ParsedToken::parse(token)
            .ok()
            .filter(|t| is_own_sku(&self.inner.config.sku, t))
            .ok_or(Error::InvalidToken)
    }
}

/// Turns a throttle's refusal into [`Error::Throttled`].
fn admit(decision: Decision) -> Result<(), Error> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after } => {
            tracing::info!(
                retry_after_ms = retry_after.as_millis() as u64,
                "login throttled"
            );
            Err(Error::Throttled { retry_after })
        }
    }
}

fn is_own_sku(sku: &Sku, token: &ParsedToken<'_>) -> bool {
    *sku == *token.sku()
}

/// Far longer than any login code WeChat issues (they are 32 characters).
const MAX_CODE_LEN: usize = 256;
