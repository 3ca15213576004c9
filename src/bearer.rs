//! Reading bearer credentials from the `Authorization` header (RFC 6750 §2.1).

use http::{HeaderMap, header::AUTHORIZATION};

/// What the `Authorization` header holds, as far as bearer authentication goes: read
/// by the one parser (RFC 6750 §2.1) that the layer and the handlers share.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
/// use mpauthx::Credentials;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(Credentials::from_headers(&headers), Credentials::Absent);
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer demo.o-1.secret"));
/// assert_eq!(Credentials::from_headers(&headers), Credentials::Bearer("demo.o-1.secret"));
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a b"));
/// assert_eq!(Credentials::from_headers(&headers), Credentials::Malformed);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials<'a> {
    /// No `Authorization` header, or one for another scheme.
    Absent,
    /// A malformed header: duplicated, not visible ASCII, or a bad bearer credential.
    Malformed,
    /// A syntactically valid bearer credential (not yet a parsed token).
    Bearer(&'a str),
}

/// The credential is a bearer secret: `Debug` shows its kind only.
impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => f.write_str("Absent"),
            Self::Malformed => f.write_str("Malformed"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl<'a> Credentials<'a> {
    /// Looks at the `Authorization` header without allocating.
    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        bearer(headers)
    }
}

fn bearer(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::Absent;
    };
    if values.next().is_some() {
        return Credentials::Malformed;
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Credentials::Absent;
    }
    let credential = credential.trim_matches(' ');
    if is_b64token(credential) {
        Credentials::Bearer(credential)
    } else {
        Credentials::Malformed
    }
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn read(values: &[&[u8]]) -> Credentials<'static> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        // Leak so the borrowed answer can outlive the map in this test helper.
        bearer(Box::leak(Box::new(headers)))
    }

    #[test]
    fn reads_bearer_credentials() {
        assert_eq!(read(&[b"Bearer a.b.c"]), Credentials::Bearer("a.b.c"));
        assert_eq!(read(&[b"bearer   a.b.c"]), Credentials::Bearer("a.b.c"));
        assert_eq!(read(&[b"BEARER abc=="]), Credentials::Bearer("abc=="));
    }

    #[test]
    fn other_schemes_and_no_header_are_absent() {
        assert_eq!(read(&[]), Credentials::Absent);
        assert_eq!(read(&[b"Basic dXNlcjpwYXNz"]), Credentials::Absent);
        assert_eq!(read(&[b"Bearerx abc"]), Credentials::Absent);
    }

    #[test]
    fn debug_never_shows_the_credential() {
        let shown = format!("{:?}", read(&[b"Bearer demo.o-1.s3cr3t"]));
        assert_eq!(shown, "Bearer(<redacted>)");
    }

    #[test]
    fn malformed_headers_are_told_apart() {
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer a,b",
            b"Bearer =abc",
            b"Bearer \xe4\xbd\xa0",
        ] {
            assert_eq!(read(&[bad]), Credentials::Malformed, "{bad:?}");
        }
        assert_eq!(read(&[b"Bearer a", b"Bearer a"]), Credentials::Malformed);
    }
}
