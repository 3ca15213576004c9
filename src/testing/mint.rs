//! Minting what a mini-program holds after `wx.login()` and `wx.getUserInfo()`: ids
//! derived from a test user's name, a fresh code and session key, an encrypted profile
//! signed as WeChat signs it.

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::TryRng as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::phone::SimulatedPhone;
use crate::{
    login::AuthorizeRequest,
    wechat::{DecryptedProfile, Session, SessionKey, Watermark, encrypt_profile, signature},
};

/// The longest test user name accepted, in characters.
pub const MAX_USER_LEN: usize = 64;

/// Random bytes in a code: 24 bytes are 32 base64url characters, a real code's length.
const CODE_BYTES: usize = 24;
/// AES-128: key and IV are 16 bytes.
const BLOCK_BYTES: usize = 16;
/// Characters of an openid or unionid, as on WeChat (`o` + 27).
const ID_LEN: usize = 28;

/// Why a login could not be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatorError {
    /// The user name is empty, longer than [`MAX_USER_LEN`] or has control characters.
    #[error("user must be 1 to 64 characters without control characters")]
    InvalidUser,
    /// The phone number is neither 4 to 20 digits (a mainland number) nor
    /// `+<country code> <number>` with a country code of 1 to 4 digits (not starting
    /// with 0).
    #[error(
        "phone must be 4 to 20 digits, or \"+<country code> <digits>\" with a 1 to 4 digit country code"
    )]
    InvalidPhone,
    /// The operating system's random number generator failed.
    #[error("the system random number generator is unavailable")]
    Rng,
}

/// Checks a test user's name: 1 to [`MAX_USER_LEN`] characters, no control characters.
pub(super) fn check_user(user: &str) -> Result<(), SimulatorError> {
    if user.is_empty() || user.chars().count() > MAX_USER_LEN || user.chars().any(char::is_control)
    {
        Err(SimulatorError::InvalidUser)
    } else {
        Ok(())
    }
}

/// `N` random bytes from the operating system's RNG.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], SimulatorError> {
    let mut random = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut random)
        .map_err(|_| SimulatorError::Rng)?;
    Ok(random)
}

/// A fresh login code, session key and IV, from the operating system's RNG.
pub(super) fn draw() -> Result<(String, SessionKey, [u8; BLOCK_BYTES]), SimulatorError> {
    let random = random_bytes::<{ CODE_BYTES + 2 * BLOCK_BYTES }>()?;
    let (code, rest) = random.split_at(CODE_BYTES);
    let (key, iv) = rest.split_at(BLOCK_BYTES);
    let iv = iv.try_into().expect("split at the block size");
    Ok((
        URL_SAFE_NO_PAD.encode(code),
        SessionKey::new(STANDARD.encode(key)),
        iv,
    ))
}

/// `prefix` and 27 base64url characters of SHA-256 over the NUL-separated parts.
pub(super) fn derived_id(prefix: char, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    let mut id = String::with_capacity(ID_LEN + 16);
    id.push(prefix);
    URL_SAFE_NO_PAD.encode_string(hasher.finalize(), &mut id);
    id.truncate(ID_LEN);
    id
}

/// The `userInfo` part of a profile, which `rawData` carries in clear.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawUserInfo<'a> {
    nick_name: &'a str,
    gender: i64,
    language: &'a str,
}

pub(super) fn simulated_profile(
    app_id: &str,
    user: &str,
    session: &Session,
    iv: [u8; BLOCK_BYTES],
    wall_clock: SystemTime,
) -> SimulatedProfile {
    let info = RawUserInfo {
        nick_name: user,
        gender: 0,
        language: "zh_CN",
    };
    let profile = DecryptedProfile {
        open_id: session.open_id.clone(),
        union_id: session.union_id.clone(),
        nick_name: Some(info.nick_name.to_owned()),
        gender: Some(info.gender),
        city: None,
        province: None,
        country: None,
        avatar_url: None,
        language: Some(info.language.to_owned()),
        watermark: Watermark {
            appid: app_id.to_owned(),
            timestamp: wall_clock
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
        },
    };
    let plaintext = serde_json::to_string(&profile).expect("a profile serializes");
    let encrypted = encrypt_profile(&session.session_key, iv, &plaintext)
        .expect("the simulator's session keys are 16 bytes");
    let raw_data = serde_json::to_string(&info).expect("user info serializes");
    let signature = hex::encode(signature(&raw_data, &session.session_key));
    SimulatedProfile {
        encrypted_data: encrypted.encrypted_data,
        iv: encrypted.iv,
        raw_data,
        signature,
    }
}

/// What a mini-program holds after `wx.login()` (and `wx.getUserInfo()`): send it to
/// the server under test. `Debug` redacts the code.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimulatedLogin {
    /// The one-time login code.
    pub code: String,
    /// The openid the code stands for (WeChat tells only the server; the simulator
    /// tells the test, to check against).
    pub open_id: String,
    /// The unionid, when the simulator hands them out.
    pub union_id: Option<String>,
    /// The encrypted profile, when one was asked for.
    pub profile: Option<SimulatedProfile>,
    /// The legacy encrypted phone number, when one was asked for
    /// ([`login_with_phone`](super::WeChatSimulator::login_with_phone)).
    pub phone: Option<SimulatedPhone>,
}

impl SimulatedLogin {
    /// The body of `POST /auth/authorize` for this login.
    pub fn authorize_request(&self) -> AuthorizeRequest {
        let request = AuthorizeRequest::new(&self.code);
        match &self.profile {
            Some(profile) => request
                .with_encrypted_profile(&profile.encrypted_data, &profile.iv)
                .with_signature(&profile.raw_data, &profile.signature),
            None => request,
        }
    }

    /// The JSON body of `POST /auth/authorize` for this login, the phone data
    /// included: `{"code", "encryptedData"?, "iv"?, "rawData"?, "signature"?,
    /// "phone"?: {"encryptedData", "iv"}}`.
    pub fn authorize_body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), self.code.clone().into());
        if let Some(profile) = &self.profile {
            body.insert(
                "encryptedData".into(),
                profile.encrypted_data.clone().into(),
            );
            body.insert("iv".into(), profile.iv.clone().into());
            body.insert("rawData".into(), profile.raw_data.clone().into());
            body.insert("signature".into(), profile.signature.clone().into());
        }
        if let Some(phone) = &self.phone {
            body.insert("phone".into(), phone.to_json());
        }
        serde_json::Value::Object(body)
    }
}

impl fmt::Debug for SimulatedLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedLogin")
            .field("code", &"<redacted>")
            .field("open_id", &self.open_id)
            .field("union_id", &self.union_id)
            .field("profile", &self.profile)
            .field("phone", &self.phone)
            .finish()
    }
}

/// Encrypted profile data as `wx.getUserInfo()` returns it, made with the code's
/// session key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimulatedProfile {
    /// Base64 AES-128-CBC ciphertext of the profile JSON (`encryptedData`).
    pub encrypted_data: String,
    /// Base64 IV, fresh for each login (`iv`).
    pub iv: String,
    /// The user info in clear (`rawData`).
    pub raw_data: String,
    /// `hex(sha1(rawData + session_key))` (`signature`).
    pub signature: String,
}
