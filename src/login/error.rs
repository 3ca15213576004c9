//! [`Error`]: why a login, refresh or logout failed, and the HTTP answer for it.
//!
//! Every variant maps to a status, a stable snake_case `error` and the Node original's
//! numeric `code`; with the `axum` feature it renders as
//! `{"error", "error_description", "code"}`. Descriptions never carry secrets or
//! backend internals: 5xx answers from the stores say only what failed. The failures a
//! request's credentials cause (missing, malformed, invalid, store down) are answered by
//! the same writer as [`MpAuthLayer`](crate::MpAuthLayer)'s rejections, byte for byte.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::{
    access_token::AccessTokenError,
    response::{RejectionKind, Responder, json_response, seconds_header},
    store::{SignOutReason, StoreError},
    token::TokenError,
    users::UserStoreError,
    wechat::{DecryptError, WeChatError},
};

/// A login, refresh or logout failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed: a required field is missing or the body is not JSON.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The request body is larger than the handlers accept.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// WeChat refused the code or could not be reached.
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    /// The encrypted profile or its signature did not check out.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The user could not be stored or read.
    #[error(transparent)]
    Users(#[from] UserStoreError),
    /// The token store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request carries no bearer token.
    #[error("an Authorization: Bearer <token> header is required")]
    MissingToken,
    /// The `Authorization` header is malformed: duplicated, not visible ASCII, or a
    /// `Bearer` scheme without a well-formed credential.
    #[error("the Authorization header is malformed")]
    MalformedCredentials,
    /// The token is unknown, expired, revoked, malformed or of another sku.
    #[error("invalid, expired or revoked token")]
    InvalidToken,
    /// The service signed the user out ([`MpAuth::sign_out`](crate::MpAuth::sign_out))
    /// for this reason: a 401 whose body carries the reason.
    #[error("signed out by the service ({0})")]
    SignedOut(SignOutReason),
    /// A user id cannot be put in a token (not `[A-Za-z0-9_-]{1,64}`).
    #[error("the user id cannot be put in a token")]
    UnusableId,
    /// No such user in the user store.
    #[error("no such user")]
    UnknownUser,
    /// No live device of this user has that id.
    #[error("no such device")]
    UnknownDevice,
    /// The request names no mini-program this backend serves, or none at all where
    /// several are served: see [`MpApps`](crate::MpApps).
    #[error(
        "no such mini-program here: name a configured app id (POST /apps/{{app_id}}/auth/authorize)"
    )]
    UnknownApp,
    /// A token could not be drawn (the system random number generator failed).
    #[error("could not draw a token")]
    Token(#[source] TokenError),
    /// Too many logins from this client or of this user: see
    /// [`LoginThrottle`](crate::throttle::LoginThrottle).
    #[error("too many logins; retry later")]
    Throttled {
        /// How long until a login is allowed again (sent as `Retry-After`).
        retry_after: Duration,
    },
}

impl Error {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::MalformedCredentials => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::WeChat(e) => e.status(),
            Self::Decrypt(e) => e.status(),
            Self::Users(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Users(UserStoreError::InvalidInput(_)) => StatusCode::BAD_REQUEST,
            Self::Users(_) | Self::Token(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidToken | Self::SignedOut(_) | Self::MissingToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::UnusableId => StatusCode::BAD_GATEWAY,
            Self::UnknownUser | Self::UnknownDevice | Self::UnknownApp => StatusCode::NOT_FOUND,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The OAuth error string (RFC 6750 §3.1 where it names one, this crate's own
    /// snake_case otherwise): the JSON body's `error`.
    pub fn oauth_error(&self) -> &'static str {
        if let Some(kind) = self.rejection_kind() {
            return kind.oauth_error();
        }
        match self {
            Self::InvalidRequest(_) | Self::MalformedCredentials => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::WeChat(e) => e.oauth_error(),
            Self::Decrypt(e) => e.oauth_error(),
            Self::Users(UserStoreError::InvalidInput(_)) => "invalid_request",
            Self::Users(_) => "user_store_unavailable",
            Self::Store(_) => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::SignedOut(_) => "signed_out",
            Self::MissingToken => "missing_token",
            Self::UnusableId => "invalid_response",
            Self::UnknownUser => "unknown_user",
            Self::UnknownDevice => "unknown_device",
            Self::UnknownApp => "unknown_app",
            Self::Token(_) => "server_error",
            Self::Throttled { .. } => "too_many_requests",
        }
    }

    /// The Node original's numeric status code: the JSON body's `code`.
    pub fn node_code(&self) -> u16 {
        if let Some(kind) = self.rejection_kind() {
            return kind.node_code();
        }
        match self {
            Self::InvalidRequest(_)
            | Self::PayloadTooLarge
            | Self::MissingToken
            | Self::UnknownApp => 6001,
            Self::WeChat(e) => e.node_code(),
            Self::Decrypt(DecryptError::AppIdMismatch | DecryptError::OpenIdMismatch) => 6009,
            Self::Decrypt(_) => 6011,
            Self::Users(_) | Self::Store(_) => 6000,
            Self::InvalidToken | Self::SignedOut(_) | Self::MalformedCredentials => 6007,
            Self::UnusableId => 6008,
            Self::UnknownUser | Self::UnknownDevice => 6010,
            Self::Token(_) => 9999,
            Self::Throttled { .. } => 6012,
        }
    }

    /// The client-facing description: this error's message, or for store failures
    /// only what failed (the backend's message stays in the logs).
    pub fn description(&self) -> String {
        match self {
            Self::Users(e @ UserStoreError::InvalidInput(_)) => e.to_string(),
            Self::Users(_) => "the user store is unavailable".to_owned(),
            Self::Store(_) => "the token store is unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    /// The layer's rejection this error is, if it is about the request's credentials
    /// or the token store: such errors are answered exactly as the layer answers them.
    pub fn rejection_kind(&self) -> Option<RejectionKind> {
        match self {
            Self::MissingToken => Some(RejectionKind::MissingCredentials),
            Self::MalformedCredentials => Some(RejectionKind::InvalidRequest),
            Self::InvalidToken => Some(RejectionKind::InvalidToken),
            Self::SignedOut(_) => Some(RejectionKind::SignedOut),
            Self::Store(_) => Some(RejectionKind::StoreUnavailable),
            _ => None,
        }
    }

    /// The response, with `body` made from the JSON text, with the default realm and
    /// `Retry-After`; [`MpAuth`](crate::MpAuth)'s handlers answer with its own.
    pub fn into_response_with<B>(self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        self.respond(&Responder::default(), body)
    }

    /// The response as `responder` writes it: the one path of every error answer.
    pub(crate) fn respond<B>(
        self,
        responder: &Responder,
        body: impl FnOnce(Bytes) -> B,
    ) -> Response<B> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        } else {
            tracing::debug!(error = self.oauth_error(), "request refused");
        }
        if let Self::SignedOut(reason) = self {
            return responder.signed_out(reason).into_response_with(body);
        }
        if let Some(kind) = self.rejection_kind() {
            return responder.reject(kind).into_response_with(body);
        }
        let json = serde_json::json!({
            "error": self.oauth_error(),
            "error_description": self.description(),
            "code": self.node_code(),
        });
        let mut response = json_response(status, Bytes::from(json.to_string()), body);
        let headers = response.headers_mut();
        // RFC 7235 §3.1: every 401 carries a challenge.
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, responder.challenge().clone());
        }
        if let Self::Throttled { retry_after } = self {
            headers.insert(header::RETRY_AFTER, seconds_header(retry_after));
        } else if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, responder.retry_after().clone());
        }
        response
    }
}

impl From<AccessTokenError> for Error {
    fn from(error: AccessTokenError) -> Self {
        match error {
            AccessTokenError::WeChat(e) => Self::WeChat(e),
            AccessTokenError::Store(e) => Self::Store(e),
        }
    }
}

impl Error {
    /// The same error for another caller: what a duplicate of a login gets. Sources
    /// that cannot be cloned are carried as their message.
    pub(crate) fn replay(&self) -> Self {
        match self {
            Self::InvalidRequest(reason) => Self::InvalidRequest(reason),
            Self::PayloadTooLarge => Self::PayloadTooLarge,
            Self::WeChat(e) => Self::WeChat(e.clone()),
            Self::Decrypt(e) => Self::Decrypt(e.clone()),
            Self::Users(e) => Self::Users(e.replay()),
            Self::Store(e) => Self::Store(e.replay()),
            Self::MissingToken => Self::MissingToken,
            Self::MalformedCredentials => Self::MalformedCredentials,
            Self::InvalidToken => Self::InvalidToken,
            Self::SignedOut(reason) => Self::SignedOut(reason.clone()),
            Self::UnusableId => Self::UnusableId,
            Self::UnknownUser => Self::UnknownUser,
            Self::UnknownDevice => Self::UnknownDevice,
            Self::UnknownApp => Self::UnknownApp,
            Self::Token(e) => Self::Token(*e),
            Self::Throttled { retry_after } => Self::Throttled {
                retry_after: *retry_after,
            },
        }
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        self.into_response_with(axum_core::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_503_and_say_nothing_internal() {
        let error = Error::Store(StoreError::Protocol("internal detail"));
        let response = error.into_response_with(|b| b);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let text = std::str::from_utf8(response.body()).unwrap();
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(body["code"], 6000);
        assert!(!text.contains("internal detail"));
    }

    #[test]
    fn invalid_tokens_are_401_with_a_challenge() {
        let response = Error::InvalidToken.into_response_with(|b| b);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }

    #[test]
    fn sign_outs_are_401_with_their_reason() {
        let reason = SignOutReason::new("account_suspended").unwrap();
        let response = Error::SignedOut(reason).into_response_with(|b| b);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = serde_json::from_slice(&response.body()[..]).unwrap();
        assert_eq!(
            (&body["error"], &body["reason"], &body["code"]),
            (
                &serde_json::json!("signed_out"),
                &serde_json::json!("account_suspended"),
                &serde_json::json!(6007)
            )
        );
    }

    #[test]
    fn missing_fields_keep_the_node_code() {
        let error = Error::InvalidRequest("missing required field `code`");
        assert_eq!(
            (error.status(), error.node_code()),
            (StatusCode::BAD_REQUEST, 6001)
        );
        assert_eq!(error.description(), "missing required field `code`");
    }
}
