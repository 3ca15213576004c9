//! The test app's credentials and the WeChat-side secrets of a login: the session key
//! the fakes hand out, `rawData` signatures and encrypted profiles made with it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use mpauthx::{AuthorizeRequest, EncryptedProfile, SessionKey, Sku, encrypt_profile};
use sha1::{Digest as _, Sha1};

pub const APP_ID: &str = "wx0123456789abcdef";
pub const SECRET: &str = "APPSECRET-5f2b9c1e7d3a4b6c";
pub const SKU: &str = "demo";
/// 16 bytes; its base64 text is the `session_key` the fakes hand out.
pub const SESSION_KEY_BYTES: &[u8; 16] = b"mpauthx-test-key";
/// The IV of the profiles [`encrypted`] makes.
pub const IV: [u8; 16] = *b"fixed-test-iv-16";

/// [`SKU`] as a [`Sku`].
pub fn sku() -> Sku {
    Sku::new(SKU).unwrap()
}

/// The `session_key` the fakes hand out: [`SESSION_KEY_BYTES`] in base64.
pub fn session_key() -> String {
    STANDARD.encode(SESSION_KEY_BYTES)
}

/// The `signature` WeChat gives `raw_data`: hex SHA-1 of it and the session key.
pub fn signature(raw_data: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key().as_bytes());
    hex::encode(hasher.finalize())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A full user profile for `open_id`, watermarked for `app_id` now.
pub fn profile_json(open_id: &str, app_id: &str) -> String {
    serde_json::json!({
        "openId": open_id,
        "nickName": "Ada",
        "gender": 2,
        "city": "Hangzhou",
        "province": "Zhejiang",
        "country": "China",
        "language": "zh_CN",
        "avatarUrl": "https://example.com/ada.png",
        "watermark": { "appid": app_id, "timestamp": now_secs() },
    })
    .to_string()
}

/// `profile_json` encrypted as WeChat would, with the session key and [`IV`].
pub fn encrypted(profile_json: &str) -> EncryptedProfile {
    encrypt_profile(&SessionKey::new(session_key()), IV, profile_json).unwrap()
}

/// A login with `code` and the encrypted `profile`.
pub fn with_profile(code: &str, profile: &EncryptedProfile) -> AuthorizeRequest {
    AuthorizeRequest::new(code).with_encrypted_profile(&profile.encrypted_data, &profile.iv)
}
