//! Newtypes for credentials whose `Debug` output is redacted.
//!
//! Values are only reachable through the explicitly named `expose_secret`, so an accidental
//! `{:?}` in a log line or error message cannot leak them, and are overwritten with zeros
//! when dropped.

use std::fmt;

use serde::Deserialize;
use zeroize::Zeroize as _;

const REDACTED: &str = "<redacted>";

/// The Mini-Program's app secret (`secret` parameter of `jscode2session`).
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret(String);

impl AppSecret {
    /// Wraps an app secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Returns the secret itself; only for building the upstream request.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for AppSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A user's `session_key` as returned by `jscode2session` (base64 text, 16 bytes decoded).
///
/// It must stay on the server: whoever holds it can forge open data for that user.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SessionKey(String);

impl SessionKey {
    /// Wraps a base64 `session_key` exactly as WeChat returned it.
    pub fn new(key_b64: impl Into<String>) -> Self {
        Self(key_b64.into())
    }

    /// Returns the base64 text of the key; only for crypto and storage.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A WeChat API `access_token` (from `stable_token`): every server-side API call of the
/// app carries it. `Debug` redacts it and equality is checked in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps an access token exactly as WeChat returned it.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Returns the token itself; only for building an upstream request.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl Eq for AccessToken {}

impl Drop for AccessToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The one-time code `<button open-type="getPhoneNumber">` hands the mini-program: a
/// different code from `wx.login()`'s, exchanged once for the user's phone number.
/// `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PhoneCode(String);

impl PhoneCode {
    /// Wraps a phone code.
    pub fn new(code: impl Into<String>) -> Self {
        Self(code.into())
    }

    /// Returns the code itself; only for building the upstream request.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for PhoneCode {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PhoneCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", AppSecret::new("topsecret")), "<redacted>");
        assert_eq!(
            format!("{:?}", SessionKey::new("c2Vzc2lvbg==")),
            "<redacted>"
        );
        assert_eq!(format!("{:?}", AccessToken::new("at-1")), "<redacted>");
        assert_eq!(format!("{:?}", PhoneCode::new("pc-1")), "<redacted>");
    }

    #[test]
    fn access_tokens_compare_by_value() {
        assert_eq!(AccessToken::new("a"), AccessToken::new("a"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("ab"));
    }

    #[test]
    fn expose_returns_value() {
        assert_eq!(AppSecret::new("abc").expose_secret(), "abc");
        assert_eq!(SessionKey::new("a2V5").expose_secret(), "a2V5");
    }
}
