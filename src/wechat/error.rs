//! Error types of the WeChat client and the open-data crypto.
//!
//! Every variant carries only non-secret data: errcodes, HTTP statuses, static reason strings
//! and WeChat's `errmsg` after the app secret and the login code were scrubbed from it.

use http::StatusCode;

/// Why a call to WeChat (`jscode2session`, `stable_token`, `getuserphonenumber`) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WeChatError {
    /// The caller passed an empty login code; WeChat was not asked.
    #[error("login code is empty")]
    MissingCode,
    /// The login code is invalid or was already used (errcode 40029 or 40163).
    #[error("WeChat rejected the login code (errcode {errcode})")]
    InvalidCode {
        /// WeChat's errcode.
        errcode: i64,
    },
    /// The phone code is invalid, expired, already used or another user's (errcode
    /// 40029 from `getuserphonenumber`).
    #[error("WeChat rejected the phone code (errcode {errcode})")]
    InvalidPhoneCode {
        /// WeChat's errcode.
        errcode: i64,
    },
    /// WeChat refused the access_token (errcode 40001 stale, 42001 expired, 40014
    /// malformed) even after it was fetched anew: see
    /// [`AccessTokenManager::call`](crate::AccessTokenManager::call), which retries once.
    #[error("WeChat rejected the access_token (errcode {errcode})")]
    AccessTokenRejected {
        /// WeChat's errcode.
        errcode: i64,
    },
    /// No usable access_token could be had: another server's refresh did not finish in
    /// time, or WeChat keeps handing back a rejected token and a forced refresh is not
    /// allowed now (the daily budget is spent, one ran within 30 s, or WeChat answered
    /// 45009).
    #[error("no usable WeChat access_token: {reason}")]
    AccessTokenUnavailable {
        /// Why not.
        reason: &'static str,
    },
    /// WeChat's per-minute quota was hit (errcode 45011).
    #[error("WeChat rate limit reached (errcode 45011)")]
    RateLimited,
    /// WeChat refused to log in a high-risk user (errcode 40226).
    #[error("WeChat blocked this user's login (errcode 40226)")]
    UserBlocked,
    /// WeChat answered "system busy" (errcode -1) on every attempt.
    #[error("WeChat stayed busy after {attempts} attempts (errcode -1)")]
    Busy {
        /// How many requests were made.
        attempts: u32,
    },
    /// The configured app id or app secret is wrong (errcode 40013 or 40125).
    #[error("WeChat rejected this server's app credentials (errcode {errcode})")]
    Misconfigured {
        /// WeChat's errcode.
        errcode: i64,
    },
    /// Any other non-zero errcode.
    #[error("WeChat returned errcode {errcode}: {errmsg}")]
    Upstream {
        /// WeChat's errcode.
        errcode: i64,
        /// WeChat's errmsg, truncated and with the app secret and login code scrubbed.
        errmsg: String,
    },
    /// WeChat answered with a non-success HTTP status.
    #[error("WeChat answered HTTP {status}")]
    HttpStatus {
        /// The HTTP status code received.
        status: u16,
    },
    /// WeChat answered with an empty body or JSON `null`.
    #[error("WeChat returned an empty response")]
    EmptyResponse,
    /// The body was not JSON, or lacked `openid`/`session_key`.
    #[error("WeChat response is not a valid jscode2session answer: {reason}")]
    InvalidResponse {
        /// What was wrong with the body.
        reason: &'static str,
    },
    /// WeChat could not be reached (DNS, connect, TLS, I/O).
    #[error("could not reach WeChat: {reason}")]
    Transport {
        /// Which part of the transport failed.
        reason: &'static str,
    },
    /// WeChat did not answer within the configured timeouts.
    #[error("WeChat did not answer in time ({phase})")]
    Timeout {
        /// Which phase timed out.
        phase: &'static str,
    },
    /// The blocking worker failed (panicked or was cancelled).
    #[error("internal error while calling WeChat")]
    Internal,
    /// Nothing was sent: the `log` crate's logger has TRACE enabled for ureq, which would
    /// record the app secret, the login code and the session key. Filter ureq's targets
    /// below TRACE (`ureq=debug,ureq_proto=debug`); see [`WeChatClient`](super::WeChatClient).
    #[error("refusing to call WeChat: TRACE logging for ureq would record secrets")]
    SecretsWouldBeLogged,
}

impl WeChatError {
    /// HTTP status the login endpoint should answer with.
    ///
    /// Timeouts map to 504 Gateway Timeout; other upstream failures to 502.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCode => StatusCode::BAD_REQUEST,
            Self::InvalidCode { .. } | Self::InvalidPhoneCode { .. } => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UserBlocked => StatusCode::FORBIDDEN,
            Self::Busy { .. } | Self::AccessTokenUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Misconfigured { .. } | Self::Internal | Self::SecretsWouldBeLogged => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Upstream { .. }
            | Self::AccessTokenRejected { .. }
            | Self::HttpStatus { .. }
            | Self::EmptyResponse
            | Self::InvalidResponse { .. }
            | Self::Transport { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Numeric code kept compatible with the Node.js original's error table.
    pub fn node_code(&self) -> u16 {
        match self {
            Self::Internal | Self::SecretsWouldBeLogged => 6002,
            Self::EmptyResponse => 6003,
            Self::InvalidResponse { .. } => 6004,
            Self::HttpStatus { .. } => 6005,
            Self::Transport { .. } | Self::Timeout { .. } => 6006,
            Self::MissingCode
            | Self::InvalidCode { .. }
            | Self::InvalidPhoneCode { .. }
            | Self::AccessTokenRejected { .. }
            | Self::AccessTokenUnavailable { .. }
            | Self::RateLimited
            | Self::UserBlocked
            | Self::Busy { .. }
            | Self::Misconfigured { .. }
            | Self::Upstream { .. } => 6008,
        }
    }

    /// Stable snake_case name, safe to show to clients.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            Self::MissingCode => "missing_code",
            Self::InvalidCode { .. } => "invalid_code",
            Self::InvalidPhoneCode { .. } => "invalid_phone_code",
            Self::AccessTokenRejected { .. } => "access_token_rejected",
            Self::AccessTokenUnavailable { .. } => "access_token_unavailable",
            Self::RateLimited => "rate_limited",
            Self::UserBlocked => "user_blocked",
            Self::Busy { .. } => "wechat_busy",
            Self::Misconfigured { .. } => "app_misconfigured",
            Self::Upstream { .. } => "wechat_error",
            Self::HttpStatus { .. } => "upstream_http_status",
            Self::EmptyResponse => "empty_response",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Transport { .. } => "transport_error",
            Self::Timeout { .. } => "upstream_timeout",
            Self::Internal => "internal_error",
            Self::SecretsWouldBeLogged => "logging_misconfigured",
        }
    }
}

impl WeChatError {
    /// Whether `errcode` says the access_token itself was refused (40001 stale, 42001
    /// expired, 40014 malformed): the one case in which fetching a new token and trying
    /// again can help.
    pub fn is_access_token_errcode(errcode: i64) -> bool {
        matches!(errcode, 40001 | 42001 | 40014)
    }
}

/// Why open data or a signature was rejected.
///
/// What a client can learn: all decryption failures (bad base64, wrong key or IV length,
/// bad padding, non-JSON or incomplete plaintext) share one variant and one `Display` text,
/// so responses give no padding oracle. The other variants are reachable only with a
/// ciphertext that decrypts to a complete profile, which needs the session key anyway.
/// [`DecryptError::oauth_error`] and [`DecryptError::status`] are the same for every
/// decryption failure, so an endpoint that only shows those reveals even less.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The data could not be decrypted or parsed.
    #[error("encrypted data is invalid")]
    Invalid {
        /// Internal reason for debug logs; never shown to clients, never holds key or plaintext.
        reason: &'static str,
    },
    /// `watermark.appid` is not this server's app id.
    #[error("encrypted data was issued for another app")]
    AppIdMismatch,
    /// The decrypted `openId` is not the session's openid.
    #[error("encrypted data belongs to another user")]
    OpenIdMismatch,
    /// `watermark.timestamp` is older than the configured maximum age.
    #[error("encrypted data is too old")]
    Expired,
    /// `signature` is not `sha1(rawData + session_key)`.
    #[error("signature does not match")]
    SignatureMismatch,
}

impl DecryptError {
    /// HTTP status the endpoint should answer with (always 400).
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// Stable snake_case name, safe to show to clients.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            Self::SignatureMismatch => "invalid_signature",
            Self::Invalid { .. } | Self::AppIdMismatch | Self::OpenIdMismatch | Self::Expired => {
                "invalid_encrypted_data"
            }
        }
    }
}
