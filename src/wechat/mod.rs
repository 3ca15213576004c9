//! WeChat Mini-Program server-side primitives.
//!
//! * [`client`] exchanges a `wx.login()` code for a [`Session`] via `jscode2session`.
//! * [`crypto`] decrypts and checks the "open data" (`encryptedData` + `iv`) a Mini-Program
//!   hands to its backend, and verifies `rawData` signatures.
//!
//! Secrets (the app secret, `session_key`, login codes) never appear in `Debug`/`Display`
//! output or log lines produced by this module; see [`secret`].

pub mod client;
pub mod crypto;
pub mod error;
pub mod profile;
pub mod secret;

pub use client::{Session, WeChatClient};
pub use crypto::{
    DecryptOptions, EncryptedProfile, decrypt_profile, encrypt_profile, verify_signature,
};
pub use error::{DecryptError, WeChatError};
pub use profile::{Profile, Watermark};
pub use secret::{AppSecret, SessionKey};
