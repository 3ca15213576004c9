//! What a login brings ([`AuthorizeRequest`]) and what it hands out ([`Authorized`]).

use std::fmt;

use serde::Deserialize;

use crate::{phone::PhoneNumber, store::TokenInfo, token::Token, users::User};

/// The body of `POST /auth/authorize`: what `wx.login()` and, optionally,
/// `wx.getUserInfo()` and `getPhoneNumber` gave the mini-program. `Debug` redacts
/// everything but the device.
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
    /// A phone code from `<button open-type="getPhoneNumber">`: logs in and binds the
    /// phone in one request.
    pub phone_code: Option<String>,
    /// The legacy encrypted phone data (`getPhoneNumber`'s `encryptedData` + `iv`),
    /// decrypted with this login's session key.
    pub phone: Option<EncryptedPhone>,
}

/// The legacy encrypted phone data of a login: `{"encryptedData", "iv"}`.
#[derive(Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct EncryptedPhone {
    /// The base64 ciphertext.
    #[serde(rename = "encryptedData", alias = "encrypted_data")]
    pub encrypted_data: String,
    /// The base64 IV.
    pub iv: String,
}

impl EncryptedPhone {
    /// The ciphertext and its IV.
    pub fn new(encrypted_data: impl Into<String>, iv: impl Into<String>) -> Self {
        Self {
            encrypted_data: encrypted_data.into(),
            iv: iv.into(),
        }
    }
}

impl fmt::Debug for EncryptedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptedPhone(<redacted>)")
    }
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

    /// Adds a phone code, to bind the phone in the same request.
    pub fn with_phone_code(mut self, phone_code: impl Into<String>) -> Self {
        self.phone_code = Some(phone_code.into());
        self
    }

    /// Adds the legacy encrypted phone data.
    pub fn with_encrypted_phone(mut self, phone: EncryptedPhone) -> Self {
        self.phone = Some(phone);
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
            .field("phone_code", &shown(&self.phone_code))
            .field("phone", &self.phone)
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
    /// The phone number this login bound (with `phone_code` or `phone`), if any.
    pub phone: Option<PhoneNumber>,
    /// The person id the user had before this login, when the login's unionid moved
    /// the user to the person that has it (see
    /// [`StoredLogin::merged_from`](crate::StoredLogin::merged_from)).
    pub merged_from: Option<String>,
}

impl Authorized {
    /// The answer for `token`, recorded by a store as `info`: the one place `expires_in`
    /// is computed.
    pub(crate) fn new(token: Token, info: &TokenInfo, user: Option<User>) -> Self {
        Self {
            token,
            expires_in: info.expires_at_ms.saturating_sub(info.issued_at_ms) / 1000,
            user,
            phone: None,
            merged_from: None,
        }
    }
}
