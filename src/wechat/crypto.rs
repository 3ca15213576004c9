//! WeChat "open data" crypto: AES-128-CBC/PKCS#7 decryption of `encryptedData` and the
//! `rawData` signature check.
//!
//! The key is the user's `session_key`, so only the server (and WeChat) can decrypt. CBC has
//! no integrity protection, which is why every decryption failure collapses into one
//! [`DecryptError::Invalid`] (no padding oracle) and why the decrypted watermark and openid
//! are checked against what the server already knows.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aes::Aes128;
use base64::{Engine as _, engine::general_purpose::STANDARD_PAD_INDIFFERENT};
use cbc::cipher::{BlockModeDecrypt as _, KeyIvInit as _, block_padding::Pkcs7};
use serde::{Deserialize, de::DeserializeOwned};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

use super::{
    client::Session,
    error::DecryptError,
    profile::{DecryptedProfile, Watermark},
    secret::SessionKey,
};
use crate::phone::PhoneNumber;

type Aes128CbcDec = cbc::Decryptor<Aes128>;

/// AES block, key and IV size in bytes.
const BLOCK_LEN: usize = 16;

/// Upper bound on the base64 `encryptedData` accepted; real profiles are well under 2 KiB,
/// and the bound keeps a hostile client from making the server decrypt megabytes.
pub(crate) const MAX_ENCRYPTED_DATA_LEN: usize = 64 * 1024;

/// Server-side settings for checking decrypted open data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptOptions {
    /// This Mini-Program's app id; `watermark.appid` must equal it.
    pub app_id: String,
    /// Reject data whose `watermark.timestamp` is older than this; `None` disables the check.
    pub max_age: Option<Duration>,
}

impl DecryptOptions {
    /// Options for `app_id` with no maximum age.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            max_age: None,
        }
    }

    /// Sets the maximum age of `watermark.timestamp`.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
}

/// Base64 `encryptedData` and `iv`, as a Mini-Program would send them.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedProfile {
    /// Base64 ciphertext.
    pub encrypted_data: String,
    /// Base64 IV.
    pub iv: String,
}

/// Decrypts `encryptedData` with the session's key and checks it belongs to that session.
///
/// Checks, in order: key and IV are 16 bytes, strict PKCS#7 padding, the plaintext is a
/// [`DecryptedProfile`], `watermark.appid == opts.app_id`, `openId == session.open_id`, and, when
/// `opts.max_age` is set, that `now - watermark.timestamp <= max_age` (timestamps ahead of
/// `now` count as fresh, to tolerate clock skew). Base64 in which `+` arrived as a space is
/// accepted.
///
/// # Errors
/// [`DecryptError::Invalid`] for anything that fails before a profile is parsed, otherwise
/// the failed check's variant.
pub fn decrypt_profile(
    opts: &DecryptOptions,
    session: &Session,
    encrypted_data_b64: &str,
    iv_b64: &str,
    now: SystemTime,
) -> Result<DecryptedProfile, DecryptError> {
    let result = decrypt_json::<DecryptedProfile>(&session.session_key, encrypted_data_b64, iv_b64)
        .and_then(|profile| check_profile(opts, session, profile, now));
    if let Err(e) = &result {
        // `{e:?}` carries only static reasons; the key and plaintext never reach it.
        tracing::debug!(error = ?e, "rejected WeChat open data");
    }
    result
}

fn check_profile(
    opts: &DecryptOptions,
    session: &Session,
    profile: DecryptedProfile,
    now: SystemTime,
) -> Result<DecryptedProfile, DecryptError> {
    check_watermark(opts, &profile.watermark, now)?;
    if profile.open_id != session.open_id {
        return Err(DecryptError::OpenIdMismatch);
    }
    Ok(profile)
}

/// The watermark names this app and, with a maximum age, is recent enough.
fn check_watermark(
    opts: &DecryptOptions,
    watermark: &Watermark,
    now: SystemTime,
) -> Result<(), DecryptError> {
    if watermark.appid != opts.app_id {
        return Err(DecryptError::AppIdMismatch);
    }
    if let Some(max_age) = opts.max_age {
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let age = now_secs.saturating_sub(watermark.timestamp);
        if age > max_age.as_secs() {
            return Err(DecryptError::Expired);
        }
    }
    Ok(())
}

fn decrypt_json<T: DeserializeOwned>(
    session_key: &SessionKey,
    encrypted_data_b64: &str,
    iv_b64: &str,
) -> Result<T, DecryptError> {
    let invalid = |reason| DecryptError::Invalid { reason };
    if encrypted_data_b64.len() > MAX_ENCRYPTED_DATA_LEN {
        return Err(invalid("encrypted data too long"));
    }
    let key = decode_block(session_key.expose_secret())
        .ok_or_else(|| invalid("session key is not 16 bytes of base64"))?;
    let iv = decode_block(iv_b64).ok_or_else(|| invalid("iv is not 16 bytes of base64"))?;
    let ciphertext =
        decode_b64(encrypted_data_b64).ok_or_else(|| invalid("encrypted data is not base64"))?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK_LEN) {
        return Err(invalid("ciphertext is not a whole number of blocks"));
    }
    let plaintext = Aes128CbcDec::new(&key.into(), &iv.into())
        .decrypt_padded_vec::<Pkcs7>(&ciphertext)
        .map_err(|_| invalid("bad padding"))?;
    serde_json::from_slice(&plaintext).map_err(|_| invalid("plaintext is not the expected JSON"))
}

/// Decrypts the legacy phone open data (`getPhoneNumber`'s `encryptedData` + `iv`,
/// before WeChat's phone code existed) with the session's key.
///
/// Checks as [`decrypt_profile`] does, except that phone data names no openid: key and
/// IV length, padding, the plaintext is a phone number with a watermark,
/// `watermark.appid == opts.app_id`, the watermark's age when `opts.max_age` is set,
/// and that the number is well formed ([`PhoneNumber::is_well_formed`]).
///
/// # Errors
/// As [`decrypt_profile`]; a malformed number is [`DecryptError::Invalid`].
pub fn decrypt_phone(
    opts: &DecryptOptions,
    session: &Session,
    encrypted_data_b64: &str,
    iv_b64: &str,
    now: SystemTime,
) -> Result<PhoneNumber, DecryptError> {
    #[derive(Deserialize)]
    struct Phone {
        #[serde(flatten)]
        number: PhoneNumber,
        watermark: Watermark,
    }
    let result =
        decrypt_json::<Phone>(&session.session_key, encrypted_data_b64, iv_b64).and_then(|phone| {
            check_watermark(opts, &phone.watermark, now)?;
            if phone.number.is_well_formed() {
                Ok(phone.number)
            } else {
                Err(DecryptError::Invalid {
                    reason: "phone number is malformed",
                })
            }
        });
    if let Err(e) = &result {
        tracing::debug!(error = ?e, "rejected WeChat phone open data");
    }
    result
}

/// Encrypts `profile_json` the way WeChat does, for simulators and tests only.
///
/// A real server never needs this: WeChat encrypts, the server only decrypts. The caller picks
/// the IV so tests stay deterministic; a simulator must use a fresh random IV per message.
///
/// # Errors
/// [`DecryptError::Invalid`] when the session key is not 16 bytes of base64.
#[cfg(any(test, feature = "testing"))]
pub fn encrypt_profile(
    session_key: &SessionKey,
    iv: [u8; BLOCK_LEN],
    profile_json: &str,
) -> Result<EncryptedProfile, DecryptError> {
    let key = decode_block(session_key.expose_secret()).ok_or(DecryptError::Invalid {
        reason: "session key is not 16 bytes of base64",
    })?;
    use base64::engine::general_purpose::STANDARD;
    use cbc::cipher::BlockModeEncrypt as _;

    let ciphertext = cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into())
        .encrypt_padded_vec::<Pkcs7>(profile_json.as_bytes());
    Ok(EncryptedProfile {
        encrypted_data: STANDARD.encode(ciphertext),
        iv: STANDARD.encode(iv),
    })
}

/// Checks `signature == hex(sha1(raw_data + session_key))`, in constant time.
///
/// `session_key` is used as the base64 text WeChat returned, as WeChat specifies. Upper- and
/// lower-case hex are accepted.
///
/// # Errors
/// [`DecryptError::SignatureMismatch`] when the signature is malformed or does not match.
pub fn verify_signature(
    raw_data: &str,
    session_key: &SessionKey,
    signature_hex: &str,
) -> Result<(), DecryptError> {
    let expected = signature(raw_data, session_key);
    let Ok(given) = hex::decode(signature_hex.trim()) else {
        return Err(DecryptError::SignatureMismatch);
    };
    // `ct_eq` on slices of different lengths is false without comparing contents.
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(DecryptError::SignatureMismatch)
    }
}

/// `sha1(raw_data + session_key)`, WeChat's signature of `rawData` (the base64
/// `session_key` text, as WeChat specifies): what [`verify_signature`] checks and what
/// the simulator signs with.
pub(crate) fn signature(raw_data: &str, session_key: &SessionKey) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key.expose_secret().as_bytes());
    hasher.finalize().into()
}

/// Decodes base64, repairing `+` that a client sent unencoded in a URL or form (it arrives as
/// a space). A real space is never valid base64, so the repair cannot change a valid input.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let text = if text.contains(' ') {
        Cow::Owned(text.replace(' ', "+"))
    } else {
        Cow::Borrowed(text)
    };
    STANDARD_PAD_INDIFFERENT.decode(text.as_bytes()).ok()
}

fn decode_block(text: &str) -> Option<[u8; BLOCK_LEN]> {
    decode_b64(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WeChat's published sample from its official open-data decryption demo.
    const SAMPLE_APP_ID: &str = "wx4f4bc4dec97d474b";
    const SAMPLE_SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const SAMPLE_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const SAMPLE_ENCRYPTED_DATA: &str = concat!(
        "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS",
        "9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142d",
        "NCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6",
        "/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn",
        "/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4P",
        "C7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns",
        "/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYV",
        "oKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuy",
        "Db/XcxxmK01EpqOyuxINew==",
    );
    const SAMPLE_OPEN_ID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";

    fn sample_session() -> Session {
        Session {
            open_id: SAMPLE_OPEN_ID.to_owned(),
            union_id: None,
            session_key: SessionKey::new(SAMPLE_SESSION_KEY),
        }
    }

    #[test]
    fn decrypts_wechat_official_sample() {
        let profile = decrypt_profile(
            &DecryptOptions::new(SAMPLE_APP_ID),
            &sample_session(),
            SAMPLE_ENCRYPTED_DATA,
            SAMPLE_IV,
            SystemTime::now(),
        )
        .expect("official sample decrypts");
        assert_eq!(profile.open_id, SAMPLE_OPEN_ID);
        assert_eq!(profile.nick_name.as_deref(), Some("Band"));
        assert_eq!(profile.gender, Some(1));
        assert_eq!(profile.watermark.appid, SAMPLE_APP_ID);
        assert!(profile.union_id.is_some());
    }

    #[test]
    fn sample_is_rejected_when_max_age_is_exceeded() {
        let err = decrypt_profile(
            &DecryptOptions::new(SAMPLE_APP_ID).with_max_age(Duration::from_secs(300)),
            &sample_session(),
            SAMPLE_ENCRYPTED_DATA,
            SAMPLE_IV,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, DecryptError::Expired));
    }

    #[test]
    fn plus_as_space_is_repaired() {
        assert_eq!(decode_b64("a+b/"), decode_b64("a b/"));
        assert!(decode_b64("a+b/").is_some());
    }
}
