//! Access tokens: generation, parsing and hashing.

use std::{fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::TryRng as _;
use sha2::{Digest as _, Sha256};

pub use self::sku::Sku;
use self::{
    alphabet::{all_part_bytes, single_dot},
    sku::{MAX_SKU_LEN, is_token_part},
};

mod alphabet;
mod sku;

/// The longest openid (or unionid) a token may carry, in bytes.
///
/// WeChat's openids and unionids are 28 or 29 characters; the margin leaves room for
/// other identity providers without letting a header grow unbounded.
pub const MAX_OPEN_ID_LEN: usize = 64;

/// Length of a token's secret part: 32 random bytes, base64url without padding.
pub(crate) const SECRET_LEN: usize = 43;

/// The longest string that can be a token. Anything longer is rejected unread.
pub(crate) const MAX_TOKEN_LEN: usize = MAX_SKU_LEN + 1 + MAX_OPEN_ID_LEN + 1 + SECRET_LEN;

const SECRET_BYTES: usize = 32;

/// A string is not a well-formed token, or an openid cannot be put in one.
///
/// The message never repeats the rejected input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than any token can be (141 bytes).
    #[error("token is too long")]
    TooLong,
    /// Not three `.`-separated parts of the token alphabet.
    #[error("token is malformed")]
    Malformed,
    /// The openid is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("openid must be 1 to 64 characters from [A-Za-z0-9_-]")]
    InvalidOpenId,
    /// The sku is empty, longer than 32 bytes or has a character outside `[A-Za-z0-9_-]`.
    #[error("sku must be 1 to 32 characters from [A-Za-z0-9_-]")]
    InvalidSku,
    /// The operating system's random number generator failed.
    #[error("the system random number generator is unavailable")]
    Rng,
}

/// An access token, owned. It is a bearer secret: whoever holds it is the user.
///
/// `Debug` shows the sku and openid only; there is deliberately no `Display`, so that a
/// token does not end up in a log line by accident. [`Token::expose`] hands out the
/// text, to send to the client exactly once.
///
/// A token reads `<sku>.<openid>.<secret>`. The secret is 32 bytes from the operating
/// system's CSPRNG, base64url without padding (43 characters). The sku and openid in a
/// token are a convenience for routing and logs, never proof: only a token store lookup
/// proves a token, and stores keep only its SHA-256 ([`TokenHash`]).
///
/// ```
/// use mpauthx::{ParsedToken, Sku, Token};
///
/// let sku = Sku::new("demo")?;
/// let token = Token::generate(&sku, "oGZUI0egBJY1zhBYw2KhdUfwVJJE")?;
/// let parsed = ParsedToken::parse(token.expose())?;
/// assert_eq!(parsed.sku(), "demo");
/// assert_eq!(parsed.open_id(), "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
/// assert_eq!(mpauthx::extract_sku(token.expose()), Some("demo"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    sku_len: usize,
    open_id_end: usize,
}

impl Token {
    /// Draws a new token for `open_id` under `sku`.
    pub fn generate(sku: &Sku, open_id: &str) -> Result<Self, TokenError> {
        if !is_token_part(open_id, MAX_OPEN_ID_LEN) {
            return Err(TokenError::InvalidOpenId);
        }
        Self::assemble(sku.as_str(), open_id)
    }

    /// Draws a new token for the same user and sku as `token`, for rotation.
    pub fn successor_of(token: &ParsedToken<'_>) -> Result<Self, TokenError> {
        Self::assemble(token.sku, token.open_id)
    }

    fn assemble(sku: &str, open_id: &str) -> Result<Self, TokenError> {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::SysRng
            .try_fill_bytes(&mut secret)
            .map_err(|_| TokenError::Rng)?;
        let mut text = String::with_capacity(sku.len() + open_id.len() + 2 + SECRET_LEN);
        text.push_str(sku);
        text.push('.');
        text.push_str(open_id);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(secret, &mut text);
        Ok(Self {
            sku_len: sku.len(),
            open_id_end: sku.len() + 1 + open_id.len(),
            text,
        })
    }

    /// The token text, to hand to the client. Treat it as a password.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Consumes the token into its text. Treat it as a password: the returned `String`
    /// is no longer overwritten on drop.
    pub fn into_exposed(mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// The token seen through the borrowed view that stores take.
    pub fn parsed(&self) -> ParsedToken<'_> {
        ParsedToken {
            text: &self.text,
            sku: &self.text[..self.sku_len],
            open_id: &self.text[self.sku_len + 1..self.open_id_end],
        }
    }

    /// The sku this token was issued under.
    pub fn sku(&self) -> &str {
        &self.text[..self.sku_len]
    }

    /// The openid (or unionid) this token was issued to.
    pub fn open_id(&self) -> &str {
        &self.text[self.sku_len + 1..self.open_id_end]
    }

    /// The SHA-256 of the token, which is all a store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.text)
    }
}

/// The text holds the secret: overwrite it when the token goes.
impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.parsed(), f)
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = ParsedToken::parse(s)?;
        Ok(Self {
            sku_len: parsed.sku.len(),
            open_id_end: parsed.sku.len() + 1 + parsed.open_id.len(),
            text: s.to_owned(),
        })
    }
}

/// A well-formed token borrowed from a header or a request body. Parsing does no I/O
/// and allocates nothing; it proves nothing either: ask a store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    text: &'a str,
    sku: &'a str,
    open_id: &'a str,
}

impl<'a> ParsedToken<'a> {
    /// Checks the shape `<sku>.<openid>.<secret>` and the length limits.
    pub fn parse(text: &'a str) -> Result<Self, TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        // The request hot path. The secret has a fixed length: it is the last 43 bytes,
        // after a dot; the rest, `<sku>.<openid>`, has exactly one dot. The alphabet is
        // checked eight bytes at a time.
        let Some(last_dot) = text.len().checked_sub(SECRET_LEN + 1) else {
            return Err(TokenError::Malformed);
        };
        if text.as_bytes()[last_dot] != b'.' {
            return Err(TokenError::Malformed);
        }
        let (head, secret) = (&text[..last_dot], &text[last_dot + 1..]);
        let Some(first_dot) = single_dot(head.as_bytes()) else {
            return Err(TokenError::Malformed);
        };
        let (sku, open_id) = (&head[..first_dot], &head[first_dot + 1..]);
        let well_formed = (1..=MAX_SKU_LEN).contains(&sku.len())
            && (1..=MAX_OPEN_ID_LEN).contains(&open_id.len())
            && all_part_bytes(secret.as_bytes());
        if well_formed {
            Ok(Self { text, sku, open_id })
        } else {
            Err(TokenError::Malformed)
        }
    }

    /// The sku part.
    pub fn sku(&self) -> &'a str {
        self.sku
    }

    /// The sku part as a [`Sku`], which parsing already checked.
    pub fn to_sku(&self) -> Sku {
        Sku::from_checked(self.sku)
    }

    /// The openid (or unionid) part.
    pub fn open_id(&self) -> &'a str {
        self.open_id
    }

    /// The whole token text. Treat it as a password.
    pub fn expose(&self) -> &'a str {
        self.text
    }

    /// The SHA-256 of the token, which is all a store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.text)
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("sku", &self.sku)
            .field("open_id", &self.open_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The SHA-256 of a token: how stores know a token without keeping it.
///
/// Its base64url form ([`TokenHash::id`]) is the token's public id, safe to log and to
/// show in a device list; it cannot be turned back into the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

/// Length of [`TokenHash::id`].
pub(crate) const TOKEN_ID_LEN: usize = 43;

impl TokenHash {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// A hash from its raw digest, e.g. as a store kept it.
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 43 characters of base64url, without allocating.
    pub fn id(&self) -> TokenId {
        let mut buf = [0u8; TOKEN_ID_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .expect("32 bytes always encode to 43 base64 characters");
        debug_assert_eq!(written, TOKEN_ID_LEN);
        TokenId(buf)
    }

    /// Reads a hash back from its id, e.g. one picked from a device list.
    pub fn from_id(id: &str) -> Option<Self> {
        if id.len() != TOKEN_ID_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(id, &mut out) {
            Ok(32) => Some(Self(out)),
            _ => None,
        }
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.id().as_str())
    }
}

/// A token's public id: its hash in base64url, on the stack.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; TOKEN_ID_LEN]);

impl TokenId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64url is ASCII")
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The openid part of a well-formed token, without checking that the token is live.
///
/// A convenience for logs and routing, never proof of identity.
pub fn extract_open_id(token: &str) -> Option<&str> {
    ParsedToken::parse(token).ok().map(|t| t.open_id)
}

/// The sku part of a well-formed token, without checking that the token is live.
///
/// A convenience for logs and routing, never proof of identity.
pub fn extract_sku(token: &str) -> Option<&str> {
    ParsedToken::parse(token).ok().map(|t| t.sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_ID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";

    fn sku() -> Sku {
        Sku::new("demo").unwrap()
    }

    #[test]
    fn generated_tokens_parse_back() {
        let token = Token::generate(&sku(), OPEN_ID).unwrap();
        let parsed = ParsedToken::parse(token.expose()).unwrap();
        assert_eq!(parsed, token.parsed());
        assert_eq!((parsed.sku(), parsed.open_id()), ("demo", OPEN_ID));
        assert_eq!((token.sku(), token.open_id()), ("demo", OPEN_ID));
        assert_eq!(token.expose().len(), 4 + 1 + OPEN_ID.len() + 1 + SECRET_LEN);
        assert_eq!(token.expose().parse::<Token>().unwrap(), token);
    }

    #[test]
    fn secrets_differ_and_successors_keep_the_owner() {
        let a = Token::generate(&sku(), OPEN_ID).unwrap();
        let b = Token::successor_of(&a.parsed()).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
        assert_eq!((b.sku(), b.open_id()), (a.sku(), a.open_id()));
    }

    #[test]
    fn rejects_malformed_tokens() {
        let good = Token::generate(&sku(), OPEN_ID).unwrap();
        let secret = &good.expose()[good.expose().len() - SECRET_LEN..];
        let cases = [
            String::new(),
            "demo".into(),
            format!("demo.{OPEN_ID}"),
            format!("demo.{OPEN_ID}.{secret}.x"),
            format!(".{OPEN_ID}.{secret}"),
            format!("demo..{secret}"),
            format!("demo.{OPEN_ID}."),
            format!("demo.{OPEN_ID}.{}", &secret[1..]),
            format!("demo.{OPEN_ID}.{secret}A"),
            format!("demo.{OPEN_ID}.{}+", &secret[1..]),
            format!("de mo.{OPEN_ID}.{secret}"),
            format!("demo.o/d.{secret}"),
        ];
        for case in &cases {
            assert_eq!(
                ParsedToken::parse(case).unwrap_err(),
                TokenError::Malformed,
                "{case:?}"
            );
        }
        let long = format!("demo.{}.{secret}", "o".repeat(MAX_TOKEN_LEN));
        assert_eq!(ParsedToken::parse(&long).unwrap_err(), TokenError::TooLong);
    }

    #[test]
    fn rejects_bad_open_ids_at_generation() {
        for bad in ["", "a.b", "a b", &"o".repeat(MAX_OPEN_ID_LEN + 1)] {
            assert_eq!(
                Token::generate(&sku(), bad).unwrap_err(),
                TokenError::InvalidOpenId
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::generate(&sku(), OPEN_ID).unwrap();
        let secret = &token.expose()[token.expose().len() - SECRET_LEN..];
        for shown in [format!("{token:?}"), format!("{:?}", token.parsed())] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(OPEN_ID) && shown.contains("<redacted>"));
        }
    }

    #[test]
    fn hash_is_sha256_of_the_text_and_ids_round_trip() {
        let hash = TokenHash::of("abc");
        assert_eq!(
            hash.as_bytes()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
        let id = hash.id();
        assert_eq!(id.as_str().len(), TOKEN_ID_LEN);
        assert_eq!(TokenHash::from_id(id.as_str()), Some(hash));
        assert_eq!(TokenHash::from_id("short"), None);
        assert_eq!(TokenHash::from_id(&"!".repeat(TOKEN_ID_LEN)), None);
    }

    #[test]
    fn extractors_parse_or_refuse() {
        let token = Token::generate(&sku(), OPEN_ID).unwrap();
        assert_eq!(extract_open_id(token.expose()), Some(OPEN_ID));
        assert_eq!(extract_sku(token.expose()), Some("demo"));
        assert_eq!(extract_open_id("nonsense"), None);
        assert_eq!(extract_sku("a.b.c"), None);
    }
}
