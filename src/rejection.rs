//! Why a request was not let through, and the RFC 6750 response that says so.
//!
//! | kind | status | `error` | `code` |
//! |---|---|---|---|
//! | no bearer credentials | 401, `WWW-Authenticate: Bearer realm="…"` | `missing_token` | 6001 |
//! | malformed `Authorization` header | 400, `error="invalid_request"` | `invalid_request` | 6007 |
//! | unknown, expired, revoked or foreign token | 401, `error="invalid_token"` | `invalid_token` | 6007 |
//! | token store down or slow | 503, `Retry-After` | `temporarily_unavailable` | 6000 |
//! | extractor used without [`MpAuthLayer`](crate::MpAuthLayer) | 500 | `server_error` | 9999 |
//!
//! Bodies are JSON, `{"error", "error_description", "code"}`, the `code` being the Node
//! original's status code. They are static: rejecting allocates nothing.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// What kind of rejection it is.
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
            Self::MissingCredentials | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The snake_case `error` field of the JSON body.
    pub fn error(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::StoreUnavailable => "temporarily_unavailable",
            Self::MissingLayer => "server_error",
        }
    }

    /// The Node original's numeric status code, kept in the body's `code` field.
    pub fn code(self) -> u16 {
        match self {
            Self::MissingCredentials => 6001,
            Self::InvalidRequest | Self::InvalidToken => 6007,
            Self::StoreUnavailable => 6000,
            Self::MissingLayer => 9999,
        }
    }

    /// The JSON body.
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

/// A request was refused. It renders as an RFC 6750 response with a JSON body.
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
}

impl AuthRejection {
    /// A rejection of this kind, with the default realm and `Retry-After`.
    pub fn new(kind: RejectionKind) -> Self {
        Challenges::new(DEFAULT_REALM).reject(kind, &HeaderValue::from_static("1"))
    }

    /// Its kind.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The JSON body.
    pub fn body_text(&self) -> &'static str {
        self.kind.body_text()
    }

    /// The response, with `body` made from the JSON text.
    pub fn into_response_with<B>(self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let mut response = Response::new(body(Bytes::from_static(self.body_text().as_bytes())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
        let description = match self.kind {
            RejectionKind::MissingCredentials => "no bearer token",
            RejectionKind::InvalidRequest => "malformed Authorization header",
            RejectionKind::InvalidToken => "invalid, expired or revoked token",
            RejectionKind::StoreUnavailable => "token store unavailable",
            RejectionKind::MissingLayer => "`MpAuthLayer` is not installed on this route",
        };
        f.write_str(description)
    }
}

impl std::error::Error for AuthRejection {}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for AuthRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.into_response_with(axum_core::body::Body::from)
    }
}

/// The default `realm` of `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "mpauthx";

/// Precomputed `WWW-Authenticate` values for one realm: rejecting copies a reference.
#[derive(Debug, Clone)]
pub(crate) struct Challenges {
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
}

impl Challenges {
    /// # Panics
    /// If `realm` is not 1 to 64 visible ASCII characters without `"` or `\`.
    pub(crate) fn new(realm: &str) -> Self {
        let valid = !realm.is_empty()
            && realm.len() <= 64
            && realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        assert!(valid, "{}", crate::ConfigError::InvalidRealm);
        let value = |s: String| HeaderValue::try_from(s).expect("checked above");
        Self {
            missing: value(format!(r#"Bearer realm="{realm}""#)),
            invalid_request: value(format!(
                r#"Bearer realm="{realm}", error="invalid_request", error_description="malformed Authorization header""#
            )),
            invalid_token: value(format!(
                r#"Bearer realm="{realm}", error="invalid_token", error_description="the access token is invalid, expired or revoked""#
            )),
        }
    }

    pub(crate) fn reject(&self, kind: RejectionKind, retry_after: &HeaderValue) -> AuthRejection {
        let www_authenticate = match kind {
            RejectionKind::MissingCredentials => Some(self.missing.clone()),
            RejectionKind::InvalidRequest => Some(self.invalid_request.clone()),
            RejectionKind::InvalidToken => Some(self.invalid_token.clone()),
            RejectionKind::StoreUnavailable | RejectionKind::MissingLayer => None,
        };
        let retry_after = (kind == RejectionKind::StoreUnavailable).then(|| retry_after.clone());
        AuthRejection {
            kind,
            www_authenticate,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [RejectionKind; 5] = [
        RejectionKind::MissingCredentials,
        RejectionKind::InvalidRequest,
        RejectionKind::InvalidToken,
        RejectionKind::StoreUnavailable,
        RejectionKind::MissingLayer,
    ];

    #[test]
    fn bodies_are_json_matching_the_kind() {
        for kind in KINDS {
            let body: serde_json::Value = serde_json::from_str(kind.body_text()).unwrap();
            assert_eq!(body["error"], kind.error(), "{kind:?}");
            assert_eq!(body["code"], kind.code(), "{kind:?}");
            assert!(body["error_description"].as_str().unwrap().len() > 10);
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let challenges = Challenges::new("shop");
        let one = HeaderValue::from_static("1");
        let header = |kind| {
            challenges
                .reject(kind, &one)
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
        let unavailable = challenges
            .reject(RejectionKind::StoreUnavailable, &one)
            .into_response_with(|_| ());
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    #[should_panic(expected = "realm must be")]
    fn rejects_realms_that_would_break_the_header() {
        Challenges::new("a\"b");
    }
}
