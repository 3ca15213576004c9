//! WeChat Mini-Program server-side primitives.

mod client;
mod crypto;
mod error;
mod profile;
mod secret;

#[cfg(feature = "testing")]
pub(crate) use self::crypto::signature;
#[cfg(feature = "testing")]
pub use self::crypto::{EncryptedProfile, encrypt_profile};
pub use self::{
    client::{FetchedAccessToken, Session, WeChatClient},
    crypto::{DecryptOptions, decrypt_phone, decrypt_profile, verify_signature},
    error::{DecryptError, WeChatError},
    profile::{DecryptedProfile, Watermark},
    secret::{AccessToken, AppSecret, PhoneCode, SessionKey},
};
