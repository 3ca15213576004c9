//! Rejections as gRPC statuses, for gRPC clients (tonic and the like) behind the layer.
//!
//! A gRPC client reads an HTTP error page as a broken stream ("protocol error: received
//! message with invalid compression flag"), so a gRPC request is answered the way gRPC
//! servers answer a call they refuse before it starts: trailers-only, HTTP 200, the
//! status in `grpc-status` and `grpc-message` headers and an empty body.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::RejectionKind;

/// `UNAUTHENTICATED`: the call has no valid credentials.
const UNAUTHENTICATED: HeaderValue = HeaderValue::from_static("16");
/// `UNAVAILABLE`: transient; the client may retry.
const UNAVAILABLE: HeaderValue = HeaderValue::from_static("14");
/// `INTERNAL`: the server is misconfigured.
const INTERNAL: HeaderValue = HeaderValue::from_static("13");

/// Whether the request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+<codec>` (`grpc-web` is left to its own translating layer).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= GRPC.len()
            && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
            && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
    })
}

/// The trailers-only answer for `kind`; `retry_after` (whole seconds) becomes
/// `grpc-retry-pushback-ms` on `UNAVAILABLE`, gRPC's own retry hint.
pub(super) fn status_response<B>(
    kind: RejectionKind,
    retry_after: Option<&HeaderValue>,
    body: impl FnOnce(bytes::Bytes) -> B,
) -> Response<B> {
    let mut response = Response::new(body(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let status = match kind {
        RejectionKind::MissingCredentials
        | RejectionKind::InvalidRequest
        | RejectionKind::InvalidToken
        | RejectionKind::SignedOut => UNAUTHENTICATED,
        RejectionKind::StoreUnavailable => UNAVAILABLE,
        RejectionKind::MissingLayer => INTERNAL,
    };
    headers.insert("grpc-status", status);
    // Every summary is printable ASCII without '%', so it needs no percent-encoding.
    headers.insert("grpc-message", HeaderValue::from_static(kind.summary()));
    if kind == RejectionKind::StoreUnavailable {
        let seconds: u64 = retry_after
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        headers.insert(
            "grpc-retry-pushback-ms",
            HeaderValue::from(seconds.saturating_mul(1000)),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn recognises_grpc_content_types_only() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with_content_type(grpc)), "{grpc}");
        }
        for other in [
            "application/json",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&with_content_type(other)), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn summaries_are_valid_grpc_messages() {
        for kind in [
            RejectionKind::MissingCredentials,
            RejectionKind::InvalidRequest,
            RejectionKind::InvalidToken,
            RejectionKind::SignedOut,
            RejectionKind::StoreUnavailable,
            RejectionKind::MissingLayer,
        ] {
            let summary = kind.summary();
            assert!(
                summary
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'%'),
                "{summary}"
            );
        }
    }

    #[test]
    fn outages_carry_the_retry_hint() {
        let retry = HeaderValue::from_static("3");
        let response = status_response(RejectionKind::StoreUnavailable, Some(&retry), |_| ());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-retry-pushback-ms"], "3000");
        let response = status_response(RejectionKind::InvalidToken, None, |_| ());
        assert_eq!(response.headers()["grpc-status"], "16");
        assert!(response.headers().get("grpc-retry-pushback-ms").is_none());
    }
}
