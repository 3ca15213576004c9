//! WeChat Mini-Program server-side primitives.
//!
//! * [`WeChatClient`] exchanges a `wx.login()` code for a [`Session`] via `jscode2session`.
//! * [`decrypt_profile`] decrypts and checks the "open data" (`encryptedData` + `iv`) a
//!   Mini-Program hands to its backend, and [`verify_signature`] checks `rawData`.
//!
//! Secrets (the app secret, `session_key`, login codes) never appear in `Debug`/`Display`
//! output or log lines produced by this module; see [`AppSecret`].

mod client;
mod crypto;
mod error;
mod profile;
mod secret;

#[cfg(feature = "testing")]
pub use self::crypto::{EncryptedProfile, encrypt_profile};
pub use self::{
    client::{Session, WeChatClient},
    crypto::{DecryptOptions, decrypt_profile, verify_signature},
    error::{DecryptError, WeChatError},
    profile::{DecryptedProfile, Watermark},
    secret::{AppSecret, SessionKey},
};
