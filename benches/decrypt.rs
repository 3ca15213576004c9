//! Micro-benchmark of profile decryption and signature checking, the CPU work of a
//! login with `encryptedData`.
//!
//! `cargo bench --bench decrypt`

use std::{hint::black_box, time::SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use mpauthx::{
    DecryptOptions, Session, SessionKey, decrypt_profile, encrypt_profile, verify_signature,
};
use sha1::{Digest as _, Sha1};

const APP_ID: &str = "wx4f4bc4dec97d474b";
const OPEN_ID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";

fn decryption(c: &mut Criterion) {
    let session_key = SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let profile = format!(
        r#"{{"openId":"{OPEN_ID}","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","watermark":{{"timestamp":{now},"appid":"{APP_ID}"}}}}"#
    );
    let encrypted = encrypt_profile(&session_key, [7; 16], &profile).unwrap();
    let session = Session {
        open_id: OPEN_ID.to_owned(),
        union_id: None,
        session_key: session_key.clone(),
    };
    let options = DecryptOptions::new(APP_ID);
    c.bench_function("decrypt and check profile", |b| {
        b.iter(|| {
            decrypt_profile(
                &options,
                &session,
                black_box(&encrypted.encrypted_data),
                black_box(&encrypted.iv),
                SystemTime::now(),
            )
            .unwrap()
        })
    });

    let raw_data = r#"{"nickName":"Band","gender":1}"#;
    let signature = hex::encode(Sha1::digest(format!(
        "{raw_data}{}",
        session_key.expose_secret()
    )));
    c.bench_function("verify rawData signature", |b| {
        b.iter(|| {
            verify_signature(black_box(raw_data), &session_key, black_box(&signature)).unwrap()
        })
    });
}

criterion_group!(benches, decryption);
criterion_main!(benches);
