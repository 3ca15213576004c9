//! Reading bearer credentials from the `Authorization` header (RFC 6750 §2.1).

use http::{HeaderMap, header::AUTHORIZATION};

use crate::token::ParsedToken;

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
        match presented(headers) {
            Presented::Absent => Self::Absent,
            Presented::Malformed => Self::Malformed,
            Presented::Token(token) => Self::Bearer(token.expose()),
            Presented::Other(credential) => Self::Bearer(credential),
        }
    }
}

/// What the `Authorization` header presents, read for the layer in one pass: a token
/// parsed at once (a token is a bearer credential by construction), or what
/// [`Credentials`] would say of anything else.
pub(crate) enum Presented<'a> {
    Absent,
    Malformed,
    /// A well-formed token (not yet known to the store).
    Token(ParsedToken<'a>),
    /// A syntactically valid bearer credential that is not a token.
    Other(&'a str),
}

/// Reads the `Authorization` header: the layer's hot path.
pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let credential = match bearer(headers) {
        Ok(credential) => credential,
        Err(answer) => return answer,
    };
    if let Ok(token) = ParsedToken::parse(credential) {
        return Presented::Token(token);
    }
    if is_b64token(credential.as_bytes()) {
        Presented::Other(credential)
    } else {
        Presented::Malformed
    }
}

/// The credential of a single `Authorization: Bearer` header, trimmed and text, not yet
/// checked against the b64token grammar; or what to answer without one.
fn bearer(headers: &HeaderMap) -> Result<&str, Presented<'_>> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Presented::Absent);
    };
    if values.next().is_some() {
        return Err(Presented::Malformed);
    }
    let bytes = value.as_bytes();
    let (scheme, credential) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        // Another scheme is none of ours, if the header is text at all.
        return Err(match value.to_str() {
            Ok(_) => Presented::Absent,
            Err(_) => Presented::Malformed,
        });
    }
    // `Bearer 1*SP b64token`, spaces around it tolerated, and only spaces.
    let credential = match credential.iter().position(|&b| b != b' ') {
        Some(first) => &credential[first..],
        None => &b""[..],
    };
    let credential = match credential.iter().rposition(|&b| b != b' ') {
        Some(last) => &credential[..=last],
        None => &b""[..],
    };
    // Every b64token byte is visible ASCII, so a credential that is not text is none.
    std::str::from_utf8(credential).map_err(|_| Presented::Malformed)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(s: &[u8]) -> bool {
    let body = match s.iter().rposition(|&b| b != b'=') {
        Some(last) => &s[..=last],
        None => return false,
    };
    body.iter().all(|&b| B64TOKEN[usize::from(b)])
}

/// The bytes of a b64token's body, `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`.
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

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
        Credentials::from_headers(Box::leak(Box::new(headers)))
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
            b"Bearer \ta.b.c",
            b"Bearer a.b.c\t",
        ] {
            assert_eq!(read(&[bad]), Credentials::Malformed, "{bad:?}");
        }
        assert_eq!(read(&[b"Bearer a", b"Bearer a"]), Credentials::Malformed);
    }
}
