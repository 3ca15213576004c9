//! Open-data decryption, encryption and signature checks through the public API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::Aes128;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use cbc::cipher::{BlockModeEncrypt as _, KeyIvInit as _, block_padding::NoPadding};
use http::StatusCode;
use mpauthx::{
    DecryptError, DecryptOptions, DecryptedProfile, Session, SessionKey, Watermark,
    decrypt_profile, encrypt_profile, verify_signature,
};

const APP_ID: &str = "wxtestappid00001";
const OPEN_ID: &str = "oTestUser0001";
/// Bytes 00..0f.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// Bytes 0f..00.
const IV: &str = "Dw4NDAsKCQgHBgUEAwIBAA==";
const IV_BYTES: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
const PLAINTEXT: &str = r#"{"openId":"oTestUser0001","nickName":"Tester","gender":2,"watermark":{"appid":"wxtestappid00001","timestamp":1700000000}}"#;
/// `PLAINTEXT` encrypted independently with `openssl enc -aes-128-cbc` (PKCS#7 by default).
const OPENSSL_CIPHERTEXT: &str = "8XbfwlsPKHbNvuVZphLIcdZuoaKjQseMv3kiZSEfIRLKhFQB5H54mTG0sEoyOwvDY76CkJ5qOasAKtvd3Pr7RzkHy82UGjUkS1882KTu0NWihPuRaOqMu+bXm7Js4VBZkFTqDRzJ4JADBdDI6ifPoYl9ACAQ4wuCHRWMYtTvzek=";
const WATERMARK_TS: u64 = 1_700_000_000;

fn session() -> Session {
    Session {
        open_id: OPEN_ID.to_owned(),
        union_id: None,
        session_key: SessionKey::new(KEY),
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn opts() -> DecryptOptions {
    DecryptOptions::new(APP_ID)
}

fn decrypt(data: &str, iv: &str) -> Result<DecryptedProfile, DecryptError> {
    decrypt_profile(&opts(), &session(), data, iv, at(WATERMARK_TS))
}

fn profile_json(app_id: &str, open_id: &str, timestamp: u64) -> String {
    serde_json::to_string(&DecryptedProfile {
        open_id: open_id.to_owned(),
        union_id: Some("uTestUnion".to_owned()),
        nick_name: Some("测试 user".to_owned()),
        gender: Some(1),
        city: Some("Guangzhou".to_owned()),
        province: Some("Guangdong".to_owned()),
        country: Some("CN".to_owned()),
        avatar_url: Some("https://example.invalid/a.png".to_owned()),
        language: Some("zh_CN".to_owned()),
        watermark: Watermark {
            appid: app_id.to_owned(),
            timestamp,
        },
    })
    .unwrap()
}

/// Encrypts raw bytes whose length is already a multiple of 16, bypassing PKCS#7.
fn encrypt_unpadded(plaintext: &[u8]) -> String {
    let key: [u8; 16] = STANDARD.decode(KEY).unwrap().try_into().unwrap();
    let mut buf = plaintext.to_vec();
    let len = buf.len();
    let ciphertext = cbc::Encryptor::<Aes128>::new(&key.into(), &IV_BYTES.into())
        .encrypt_padded::<NoPadding>(&mut buf, len)
        .unwrap()
        .to_vec();
    STANDARD.encode(ciphertext)
}

fn assert_invalid(result: Result<DecryptedProfile, DecryptError>) -> DecryptError {
    let err = result.expect_err("must be rejected");
    assert!(matches!(err, DecryptError::Invalid { .. }), "{err:?}");
    assert_eq!(err.to_string(), "encrypted data is invalid");
    assert_eq!(err.oauth_error(), "invalid_encrypted_data");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    err
}

#[test]
fn decrypts_independent_openssl_vector() {
    let profile = decrypt(OPENSSL_CIPHERTEXT, IV).unwrap();
    assert_eq!(profile.open_id, OPEN_ID);
    assert_eq!(profile.nick_name.as_deref(), Some("Tester"));
    assert_eq!(profile.gender, Some(2));
    assert_eq!(profile.union_id, None);
    assert_eq!(profile.watermark.timestamp, WATERMARK_TS);
}

#[test]
fn encrypt_matches_openssl_vector() {
    let encrypted = encrypt_profile(&SessionKey::new(KEY), IV_BYTES, PLAINTEXT).unwrap();
    assert_eq!(encrypted.encrypted_data, OPENSSL_CIPHERTEXT);
    assert_eq!(encrypted.iv, IV);
}

#[test]
fn round_trip_full_profile() {
    let json = profile_json(APP_ID, OPEN_ID, WATERMARK_TS);
    for iv in [[0u8; 16], [0xA5; 16], IV_BYTES] {
        let encrypted = encrypt_profile(&SessionKey::new(KEY), iv, &json).unwrap();
        let profile = decrypt(&encrypted.encrypted_data, &encrypted.iv).unwrap();
        assert_eq!(serde_json::to_string(&profile).unwrap(), json);
        assert_eq!(profile.nick_name.as_deref(), Some("测试 user"));
    }
}

#[test]
fn round_trip_block_aligned_plaintext() {
    // A whole-block plaintext needs a full block of padding; pad the JSON with spaces to 16n.
    let mut json = profile_json(APP_ID, OPEN_ID, WATERMARK_TS);
    while !json.len().is_multiple_of(16) {
        json.push(' ');
    }
    let encrypted = encrypt_profile(&SessionKey::new(KEY), IV_BYTES, &json).unwrap();
    assert_eq!(
        STANDARD.decode(&encrypted.encrypted_data).unwrap().len(),
        json.len() + 16
    );
    decrypt(&encrypted.encrypted_data, &encrypted.iv).unwrap();
}

#[test]
fn tampered_ciphertext_is_invalid() {
    let mut bytes = STANDARD.decode(OPENSSL_CIPHERTEXT).unwrap();
    let last = bytes.len() - 1;
    for index in [0, 20, last] {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x01;
        assert_invalid(decrypt(&STANDARD.encode(&tampered), IV));
    }
    bytes.truncate(bytes.len() - 16);
    assert_invalid(decrypt(&STANDARD.encode(&bytes), IV));
}

#[test]
fn wrong_iv_length_is_invalid() {
    assert_invalid(decrypt(OPENSSL_CIPHERTEXT, &STANDARD.encode([7u8; 15])));
    assert_invalid(decrypt(OPENSSL_CIPHERTEXT, &STANDARD.encode([7u8; 17])));
    assert_invalid(decrypt(OPENSSL_CIPHERTEXT, ""));
}

#[test]
fn wrong_key_length_is_invalid() {
    let mut short = session();
    short.session_key = SessionKey::new(STANDARD.encode([1u8; 24]));
    assert_invalid(decrypt_profile(
        &opts(),
        &short,
        OPENSSL_CIPHERTEXT,
        IV,
        at(WATERMARK_TS),
    ));
}

#[test]
fn wrong_key_and_bad_padding_look_identical() {
    let mut other_key = session();
    other_key.session_key = SessionKey::new(STANDARD.encode([9u8; 16]));
    let wrong_key = assert_invalid(decrypt_profile(
        &opts(),
        &other_key,
        OPENSSL_CIPHERTEXT,
        IV,
        at(WATERMARK_TS),
    ));
    let bad_padding = assert_invalid(decrypt(&encrypt_unpadded(&[b'{'; 32]), IV));
    assert_eq!(wrong_key.to_string(), bad_padding.to_string());
    assert_eq!(wrong_key.oauth_error(), bad_padding.oauth_error());
}

#[test]
fn bad_padding_is_invalid() {
    let json = br#"{"openId":"x"}"#;
    let mut inconsistent = json.to_vec();
    inconsistent.extend_from_slice(&[0x01, 0x02]);
    let mut zero = json.to_vec();
    zero.extend_from_slice(&[0x02, 0x00]);
    let mut too_long = json.to_vec();
    too_long.extend_from_slice(&[0x11, 0x11]);
    for plaintext in [inconsistent, zero, too_long] {
        assert_eq!(plaintext.len(), 16);
        let err = assert_invalid(decrypt(&encrypt_unpadded(&plaintext), IV));
        assert!(
            matches!(
                err,
                DecryptError::Invalid {
                    reason: "bad padding"
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn non_profile_plaintext_is_invalid() {
    for plaintext in ["not json", r#"{"openId":"oTestUser0001"}"#, "[]"] {
        let encrypted = encrypt_profile(&SessionKey::new(KEY), IV_BYTES, plaintext).unwrap();
        assert_invalid(decrypt(&encrypted.encrypted_data, &encrypted.iv));
    }
}

#[test]
fn malformed_base64_and_oversize_input_are_invalid() {
    assert_invalid(decrypt("!!!not-base64!!!", IV));
    assert_invalid(decrypt("", IV));
    assert_invalid(decrypt(&"A".repeat(70_000), IV));
}

#[test]
fn wrong_watermark_appid_is_rejected() {
    let json = profile_json("wxsomeoneelse0001", OPEN_ID, WATERMARK_TS);
    let encrypted = encrypt_profile(&SessionKey::new(KEY), IV_BYTES, &json).unwrap();
    let err = decrypt(&encrypted.encrypted_data, &encrypted.iv).unwrap_err();
    assert!(matches!(err, DecryptError::AppIdMismatch), "{err:?}");
    assert_eq!(err.oauth_error(), "invalid_encrypted_data");
}

#[test]
fn mismatched_open_id_is_rejected() {
    let json = profile_json(APP_ID, "oSomeoneElse", WATERMARK_TS);
    let encrypted = encrypt_profile(&SessionKey::new(KEY), IV_BYTES, &json).unwrap();
    let err = decrypt(&encrypted.encrypted_data, &encrypted.iv).unwrap_err();
    assert!(matches!(err, DecryptError::OpenIdMismatch), "{err:?}");
    assert_eq!(err.oauth_error(), "invalid_encrypted_data");
}

#[test]
fn max_age_is_enforced_against_supplied_now() {
    let opts = opts().with_max_age(Duration::from_secs(300));
    let check = |now: u64| decrypt_profile(&opts, &session(), OPENSSL_CIPHERTEXT, IV, at(now));
    assert!(check(WATERMARK_TS + 300).is_ok());
    // Slightly in the future counts as fresh: client and WeChat clocks differ.
    assert!(check(WATERMARK_TS - 60).is_ok());
    let err = check(WATERMARK_TS + 301).unwrap_err();
    assert!(matches!(err, DecryptError::Expired), "{err:?}");
    assert_eq!(err.oauth_error(), "invalid_encrypted_data");
    // Without a maximum age, old data is accepted.
    assert!(decrypt(OPENSSL_CIPHERTEXT, IV).is_ok());
}

#[test]
fn plus_sent_as_space_is_accepted() {
    assert!(OPENSSL_CIPHERTEXT.contains('+'));
    let mangled = OPENSSL_CIPHERTEXT.replace('+', " ");
    assert_eq!(decrypt(&mangled, IV).unwrap().open_id, OPEN_ID);

    let plus_iv = [0xfb; 16];
    let encrypted = encrypt_profile(&SessionKey::new(KEY), plus_iv, PLAINTEXT).unwrap();
    assert!(encrypted.iv.contains('+'), "{}", encrypted.iv);
    let profile = decrypt(&encrypted.encrypted_data, &encrypted.iv.replace('+', " ")).unwrap();
    assert_eq!(profile.open_id, OPEN_ID);
}

#[test]
fn encrypt_rejects_bad_session_key() {
    let err = encrypt_profile(&SessionKey::new("c2hvcnQ="), IV_BYTES, PLAINTEXT).unwrap_err();
    assert!(matches!(err, DecryptError::Invalid { .. }));
}

#[test]
fn errors_do_not_leak_key_or_plaintext() {
    let err = decrypt(&encrypt_unpadded(&[b'{'; 32]), IV).unwrap_err();
    for text in [format!("{err}"), format!("{err:?}")] {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("{{{{"), "{text}");
    }
}

/// `{"nickName":"Band","gender":1}` signed with key `KEY`, computed with `sha1sum`.
const RAW_DATA: &str = r#"{"nickName":"Band","gender":1}"#;
const SIGNATURE: &str = "da3e85f6a2ffe724d73059e96b73b94351739bbb";

#[test]
fn signature_good() {
    let key = SessionKey::new("ABEiM0RVZneImaq7zN3u/w==");
    verify_signature(RAW_DATA, &key, SIGNATURE).unwrap();
    verify_signature(RAW_DATA, &key, &SIGNATURE.to_uppercase()).unwrap();
}

#[test]
fn signature_bad() {
    let key = SessionKey::new("ABEiM0RVZneImaq7zN3u/w==");
    let flipped = format!("{}c", &SIGNATURE[..SIGNATURE.len() - 1]);
    let cases = [
        (RAW_DATA, key.clone(), flipped.as_str()),
        (RAW_DATA, key.clone(), &SIGNATURE[..38]),
        (
            RAW_DATA,
            key.clone(),
            "not hex at all, not hex at all, not hex!",
        ),
        (RAW_DATA, key.clone(), ""),
        (r#"{"nickName":"Bond","gender":1}"#, key, SIGNATURE),
        (RAW_DATA, SessionKey::new(KEY), SIGNATURE),
    ];
    for (raw, key, signature) in cases {
        let err = verify_signature(raw, &key, signature).unwrap_err();
        assert!(matches!(err, DecryptError::SignatureMismatch), "{err:?}");
        assert_eq!(err.oauth_error(), "invalid_signature");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
