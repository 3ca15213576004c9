//! Why a request was not let through, and the one writer of the response that says so.

use std::{borrow::Cow, fmt, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::store::SignOutReason;

mod grpc;

/// The default `realm` of `WWW-Authenticate` challenges.
const DEFAULT_REALM: &str = "mpauthx";

/// What kind of rejection it is, and the RFC 6750 response that says so. One writer
/// answers every auth failure, from [`MpAuthLayer`](crate::MpAuthLayer), from the
/// extractor and from the login handlers alike.
///
/// | kind | status | `error` | `code` |
/// |---|---|---|---|
/// | no bearer credentials | 401, `WWW-Authenticate: Bearer realm="…"` | `missing_token` | 6001 |
/// | malformed `Authorization` header | 400, `error="invalid_request"` | `invalid_request` | 6007 |
/// | unknown, expired, revoked or foreign token | 401, `error="invalid_token"` | `invalid_token` | 6007 |
/// | token signed out by the service ([`MpAuth::sign_out`](crate::MpAuth::sign_out)), for the notice period | 401, `error="invalid_token"` | `signed_out`, with `"reason"` | 6007 |
/// | token store down or slow | 503, `Retry-After` | `temporarily_unavailable` | 6000 |
/// | extractor used without [`MpAuthLayer`](crate::MpAuthLayer) | 500 | `server_error` | 9999 |
///
/// Bodies are JSON, `{"error", "error_description", "code"}`, the `code` being the Node
/// original's status code; a sign-out adds `"reason"`, the code the service gave
/// ([`SignOutReason`]). They are static, but for the sign-out's: rejecting allocates
/// nothing. Every such response carries `Cache-Control: no-store`.
///
/// A gRPC request (`content-type: application/grpc…`) gets its rejection as a gRPC
/// status instead, trailers-only: HTTP 200 with `grpc-status` 16 (`UNAUTHENTICATED`)
/// for missing, malformed or invalid credentials, 14 (`UNAVAILABLE`) with
/// `grpc-retry-pushback-ms` for a store outage, 13 (`INTERNAL`) for a missing layer,
/// and a `grpc-message`.
///
/// ```
/// use mpauthx::{AuthRejection, RejectionKind};
/// use http::StatusCode;
///
/// let rejection = AuthRejection::new(RejectionKind::StoreUnavailable);
/// let response = rejection.into_response_with(|json| json);
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.headers()["retry-after"], "1");
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The request carries no bearer credentials.
    MissingCredentials,
    /// The `Authorization` header is malformed: duplicated, not visible ASCII, or a
    /// `Bearer` scheme without a well-formed credential.
    InvalidRequest,
    /// The token is unknown, expired, revoked, malformed, or of another sku.
    InvalidToken,
    /// The service signed the token's user out, with a reason
    /// ([`MpAuth::sign_out`](crate::MpAuth::sign_out)): a 401 like
    /// [`InvalidToken`](Self::InvalidToken) whose body says why.
    SignedOut,
    /// The token store could not answer in time; the token may be valid.
    StoreUnavailable,
    /// An extractor ran on a route without [`MpAuthLayer`](crate::MpAuthLayer).
    MissingLayer,
}

macro_rules! json_body {
    ($error:literal, $description:literal, $code:literal) => {
        concat!(
            r#"{"error":""#,
            $error,
            r#"","error_description":""#,
            $description,
            r#"","code":"#,
            $code,
            "}"
        )
    };
}

impl RejectionKind {
    /// The HTTP status this kind answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingCredentials | Self::InvalidToken | Self::SignedOut => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OAuth error string (RFC 6750 §3.1, or this crate's own for the kinds the RFC
    /// does not name): the body's `error` field.
    pub fn oauth_error(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::SignedOut => "signed_out",
            Self::StoreUnavailable => "temporarily_unavailable",
            Self::MissingLayer => "server_error",
        }
    }

    /// The Node original's numeric status code: the body's `code` field.
    pub fn node_code(self) -> u16 {
        match self {
            Self::MissingCredentials => 6001,
            Self::InvalidRequest | Self::InvalidToken | Self::SignedOut => 6007,
            Self::StoreUnavailable => 6000,
            Self::MissingLayer => 9999,
        }
    }

    /// A short description, for logs and `grpc-message`.
    pub fn summary(self) -> &'static str {
        match self {
            Self::MissingCredentials => "no bearer token",
            Self::InvalidRequest => "malformed Authorization header",
            Self::InvalidToken => "invalid, expired or revoked token",
            Self::SignedOut => "signed out by the service",
            Self::StoreUnavailable => "token store unavailable; retry later",
            Self::MissingLayer => "`MpAuthLayer` is not installed on this route",
        }
    }

    /// The JSON body (for [`SignedOut`](Self::SignedOut), without its reason).
    pub fn body_text(self) -> &'static str {
        match self {
            Self::MissingCredentials => json_body!(
                "missing_token",
                "an Authorization: Bearer <token> header is required",
                6001
            ),
            Self::InvalidRequest => json_body!(
                "invalid_request",
                "the Authorization header is malformed",
                6007
            ),
            Self::InvalidToken => json_body!(
                "invalid_token",
                "the access token is invalid, expired or revoked",
                6007
            ),
            Self::SignedOut => json_body!(
                "signed_out",
                "the service signed this session out; log in again",
                6007
            ),
            Self::StoreUnavailable => json_body!(
                "temporarily_unavailable",
                "the token store is unavailable; retry later",
                6000
            ),
            Self::MissingLayer => json_body!(
                "server_error",
                "authentication is not configured for this route (is `MpAuthLayer` installed?)",
                9999
            ),
        }
    }
}

/// A request was refused. It renders as an RFC 6750 response with a JSON body, or as a
/// gRPC status for a gRPC request.
///
/// ```
/// use mpauthx::{AuthRejection, RejectionKind};
/// use http::StatusCode;
///
/// let rejection = AuthRejection::new(RejectionKind::InvalidToken);
/// assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
/// assert!(rejection.body_text().contains(r#""code":6007"#));
/// ```
#[derive(Debug, Clone)]
pub struct AuthRejection {
    kind: RejectionKind,
    www_authenticate: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    reason: Option<SignOutReason>,
    grpc: bool,
}

impl AuthRejection {
    /// A rejection of this kind, with the default realm and `Retry-After`.
    pub fn new(kind: RejectionKind) -> Self {
        Responder::default().reject(kind)
    }

    /// Its kind.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status (of the HTTP form; the gRPC form answers 200).
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Why the service signed the user out, for [`RejectionKind::SignedOut`].
    pub fn reason(&self) -> Option<&SignOutReason> {
        self.reason.as_ref()
    }

    /// The JSON body.
    pub fn body_text(&self) -> Cow<'static, str> {
        let text = self.kind.body_text();
        match &self.reason {
            // `{"error":…,"code":6007}` gains `,"reason":"…"`; a reason is
            // `[a-z0-9_]`, nothing to escape.
            Some(reason) => Cow::Owned(format!(
                r#"{},"reason":"{reason}"}}"#,
                &text[..text.len() - 1]
            )),
            None => Cow::Borrowed(text),
        }
    }

    /// Answers as a gRPC status when the request asked for gRPC
    /// (`content-type: application/grpc…`).
    pub(crate) fn for_request(mut self, headers: &HeaderMap) -> Self {
        self.grpc = grpc::is_grpc(headers);
        self
    }

    /// The response, with `body` made from the JSON text (empty for gRPC).
    pub fn into_response_with<B>(self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        if self.grpc {
            return grpc::status_response(self.kind, self.retry_after.as_ref(), body);
        }
        let json = match self.body_text() {
            Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        };
        let mut response = json_response(self.status(), json, body);
        let headers = response.headers_mut();
        if let Some(value) = self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = self.retry_after {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.summary())
    }
}

impl std::error::Error for AuthRejection {}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for AuthRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.into_response_with(axum_core::body::Body::from)
    }
}

/// A JSON response that must not be cached: every error body and every token. The one
/// place their `Content-Type` and `Cache-Control` are set.
pub(crate) fn json_response<B>(
    status: StatusCode,
    json: Bytes,
    body: impl FnOnce(Bytes) -> B,
) -> Response<B> {
    let mut response = Response::new(body(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // RFC 6749 §5.1 and RFC 6750 §3: tokens and their refusals are never cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How one service answers auth failures: the realm of its challenges and the
/// `Retry-After` of its 503s, shared by a layer and the handlers of one
/// [`MpAuth`](crate::MpAuth). The challenges are built once: rejecting copies them.
#[derive(Debug, Clone)]
pub(crate) struct Responder {
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
    signed_out: HeaderValue,
    retry_after: HeaderValue,
}

impl Default for Responder {
    fn default() -> Self {
        Self::new(DEFAULT_REALM, Duration::from_secs(1))
    }
}

impl Responder {
    /// # Panics
    /// If `realm` is not 1 to 64 visible ASCII characters without `"` or `\`.
    pub(crate) fn new(realm: &str, retry_after: Duration) -> Self {
        let [missing, invalid_request, invalid_token, signed_out] = challenges(realm);
        Self {
            missing,
            invalid_request,
            invalid_token,
            signed_out,
            retry_after: seconds_header(retry_after),
        }
    }

    /// The same `Retry-After` with challenges in another realm.
    ///
    /// # Panics
    /// If `realm` is not 1 to 64 visible ASCII characters without `"` or `\`.
    pub(crate) fn with_realm(self, realm: &str) -> Self {
        let [missing, invalid_request, invalid_token, signed_out] = challenges(realm);
        Self {
            missing,
            invalid_request,
            invalid_token,
            signed_out,
            ..self
        }
    }

    /// The same challenges with another `Retry-After`.
    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = seconds_header(after);
        self
    }

    /// The `Retry-After` of this service's 503s.
    #[cfg(feature = "wechat")]
    pub(crate) fn retry_after(&self) -> &HeaderValue {
        &self.retry_after
    }

    /// The rejection of this kind, with this service's challenge or `Retry-After`.
    pub(crate) fn reject(&self, kind: RejectionKind) -> AuthRejection {
        let www_authenticate = match kind {
            RejectionKind::MissingCredentials => Some(self.missing.clone()),
            RejectionKind::InvalidRequest => Some(self.invalid_request.clone()),
            RejectionKind::InvalidToken => Some(self.invalid_token.clone()),
            RejectionKind::SignedOut => Some(self.signed_out.clone()),
            RejectionKind::StoreUnavailable | RejectionKind::MissingLayer => None,
        };
        let retry_after =
            (kind == RejectionKind::StoreUnavailable).then(|| self.retry_after.clone());
        AuthRejection {
            kind,
            www_authenticate,
            retry_after,
            reason: None,
            grpc: false,
        }
    }

    /// The rejection of a token the service signed out for `reason`.
    pub(crate) fn signed_out(&self, reason: SignOutReason) -> AuthRejection {
        AuthRejection {
            reason: Some(reason),
            ..self.reject(RejectionKind::SignedOut)
        }
    }

    /// The `WWW-Authenticate` challenge a 401 that is not about a token carries (RFC
    /// 7235 §3.1: every 401 has one), e.g. a refused login code.
    #[cfg(feature = "wechat")]
    pub(crate) fn challenge(&self) -> &HeaderValue {
        &self.missing
    }
}

/// The `WWW-Authenticate` values of `realm`: missing credentials, malformed header,
/// invalid token, signed out.
fn challenges(realm: &str) -> [HeaderValue; 4] {
    let valid = !realm.is_empty()
        && realm.len() <= 64
        && realm
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    assert!(
        valid,
        "realm must be 1 to 64 visible ASCII characters without '\"' or '\\'"
    );
    let value = |s: String| HeaderValue::try_from(s).expect("checked above");
    [
        value(format!(r#"Bearer realm="{realm}""#)),
        value(format!(
            r#"Bearer realm="{realm}", error="invalid_request", error_description="malformed Authorization header""#
        )),
        value(format!(
            r#"Bearer realm="{realm}", error="invalid_token", error_description="the access token is invalid, expired or revoked""#
        )),
        value(format!(
            r#"Bearer realm="{realm}", error="invalid_token", error_description="signed out by the service""#
        )),
    ]
}

/// Whole seconds, rounded up and at least one: retrying at the announced time succeeds.
pub(crate) fn seconds_header(after: Duration) -> HeaderValue {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [RejectionKind; 6] = [
        RejectionKind::MissingCredentials,
        RejectionKind::InvalidRequest,
        RejectionKind::InvalidToken,
        RejectionKind::SignedOut,
        RejectionKind::StoreUnavailable,
        RejectionKind::MissingLayer,
    ];

    #[test]
    fn bodies_are_json_matching_the_kind() {
        for kind in KINDS {
            let body: serde_json::Value = serde_json::from_str(kind.body_text()).unwrap();
            assert_eq!(body["error"], kind.oauth_error(), "{kind:?}");
            assert_eq!(body["code"], kind.node_code(), "{kind:?}");
            assert!(body["error_description"].as_str().unwrap().len() > 10);
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let responder = Responder::new("shop", Duration::from_millis(1500));
        let header = |kind| {
            responder
                .reject(kind)
                .into_response_with(|_| ())
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header(RejectionKind::MissingCredentials).unwrap(),
            r#"Bearer realm="shop""#
        );
        assert!(
            header(RejectionKind::InvalidToken)
                .unwrap()
                .starts_with(r#"Bearer realm="shop", error="invalid_token""#)
        );
        assert!(
            header(RejectionKind::InvalidRequest)
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );
        assert_eq!(header(RejectionKind::StoreUnavailable), None);
        let unavailable = responder
            .reject(RejectionKind::StoreUnavailable)
            .into_response_with(|_| ());
        assert_eq!(
            unavailable.headers()[header::RETRY_AFTER],
            "2",
            "rounded up"
        );
    }

    #[test]
    fn sign_outs_say_why() {
        let responder = Responder::new("shop", Duration::from_secs(1));
        let rejection = responder.signed_out(SignOutReason::new("password_changed").unwrap());
        assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = serde_json::from_str(&rejection.body_text()).unwrap();
        assert_eq!(body["error"], "signed_out");
        assert_eq!(body["reason"], "password_changed");
        assert_eq!(body["code"], 6007);
        let response = rejection.into_response_with(|json| json);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert!(
            challenge.contains("signed out by the service"),
            "{challenge}"
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["reason"], "password_changed");
    }

    #[test]
    #[should_panic(expected = "realm must be")]
    fn rejects_realms_that_would_break_the_header() {
        Responder::new("a\"b", Duration::from_secs(1));
    }
}
