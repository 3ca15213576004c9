//! `MpAuth`: login, refresh and logout against a fake WeChat, a real sqlite file and both
//! token stores (in memory and a real `redis-server`).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::StatusCode;
use mpauthx::{
    AuthorizeRequest, DecryptError, EncryptedProfile, Error, Identity, MemoryTokenStore, MpAuth,
    SqliteUserStore, StoreError, TokenStore, UserStore, UserStoreError, WeChatError,
};
use sha1::{Digest as _, Sha1};

use crate::common::{
    fake_wechat::{FakeWeChat, Reply, session_body, wechat_errcode, wechat_ok},
    keys::{
        APP_ID, SECRET, SKU, encrypted, now_secs, profile_json, session_key, signature, sku,
        with_profile,
    },
    login::{Fixture, TTL, config, config_for, pointed_at},
    stores::dedicated,
    users,
};

const OPEN_ID: &str = "oUser_login-1";
const UNION_ID: &str = "uUnion_ABC123";

impl<T: TokenStore> Fixture<T> {
    /// A failed login: the error has `status`, leaks no secret, and left neither a
    /// user row nor a token behind.
    async fn assert_failed_cleanly(&self, error: &Error, status: StatusCode) {
        assert_eq!(error.status(), status, "{error:?}");
        assert_secret_free(error);
        assert_eq!(
            self.all_rows(),
            0,
            "a failed login stored a user: {error:?}"
        );
        assert!(
            self.live(OPEN_ID).await.is_empty(),
            "a failed login left a token: {error:?}"
        );
    }
}

/// Neither the app secret nor the session key (nor a login code used here) shows in an
/// error's `Display` or `Debug`.
fn assert_secret_free(error: &Error) {
    for text in [format!("{error}"), format!("{error:?}")] {
        assert!(!text.contains(SECRET), "app secret leaked: {text}");
        assert!(!text.contains(&session_key()), "session key leaked: {text}");
        assert!(!text.contains("code-"), "login code leaked: {text}");
    }
}

/// Runs each named `async fn(store)` against a `MemoryTokenStore` and a `RedisTokenStore`.
macro_rules! for_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(mpauthx::MemoryTokenStore::new()).await;
                }
            )*
        }
        mod redis_backed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = crate::common::stores::shared_redis(stringify!($name)).await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

for_both_stores!(
    code_only_login_issues_a_valid_token_and_stores_the_user,
    encrypted_profile_is_decrypted_and_stored,
    raw_data_with_the_right_signature_is_accepted,
    wrong_signature_is_rejected_and_stores_nothing,
    wrong_watermark_app_id_is_rejected_and_stores_nothing,
    stale_watermark_is_rejected_when_a_max_age_is_set,
    mismatched_open_id_is_rejected_and_stores_nothing,
    tampered_ciphertext_is_rejected_and_stores_nothing,
    encrypted_data_without_iv_is_rejected_before_wechat,
    missing_code_is_rejected_before_wechat,
    wechat_errcodes_map_to_statuses_and_store_nothing,
    wechat_http_5xx_is_502_and_stores_nothing,
    wechat_garbage_body_is_502_and_stores_nothing,
    wechat_timeout_is_504_and_stores_nothing,
    unusable_wechat_ids_are_502_and_store_nothing,
    union_id_identity_names_the_user_by_union_id,
    default_identity_names_the_user_by_open_id_despite_a_union_id,
    user_store_failure_leaves_no_live_token,
    concurrent_first_logins_create_one_user_and_respect_the_device_limit,
    refresh_replaces_the_token,
    concurrent_refreshes_yield_exactly_one_successor,
    logout_revokes_the_token_once,
    logout_all_revokes_every_device,
    refresh_for_user_replaces_every_token,
    refresh_for_unknown_user_is_404,
    tokens_of_another_sku_are_invalid,
    is_token_valid_answers_true_and_false,
    secrets_never_appear_in_errors_or_debug,
);

// ---------------------------------------------------------------------------------------
// Logins
// ---------------------------------------------------------------------------------------

async fn code_only_login_issues_a_valid_token_and_stores_the_user<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    assert_eq!(fx.rows(OPEN_ID), 0);

    let login = fx.login("code-1").await;

    assert_eq!(login.expires_in, TTL.as_secs());
    assert_eq!(login.token.open_id(), OPEN_ID);
    assert_eq!(login.token.sku(), SKU);
    let user = fx.auth.validate(login.token.expose()).await.unwrap();
    assert_eq!(user.open_id(), OPEN_ID);
    assert_eq!(user.sku(), &sku());
    assert!(fx.auth.is_token_valid(login.token.expose()).await.unwrap());
    assert_eq!(fx.rows(OPEN_ID), 1);
    assert_eq!(login.user.as_ref().unwrap().open_id, OPEN_ID);
    let live = fx.live(OPEN_ID).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].hash, login.token.hash());
    assert_eq!(
        live[0].expires_at_ms - live[0].issued_at_ms,
        u64::try_from(TTL.as_millis()).unwrap()
    );

    let requests = fx.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].param("js_code"), Some("code-1"));
    assert_eq!(requests[0].param("appid"), Some(APP_ID));
    assert_eq!(requests[0].param("secret"), Some(SECRET));
}

async fn encrypted_profile_is_decrypted_and_stored<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));

    let login = fx
        .auth
        .authorize(&with_profile("code-1", &profile))
        .await
        .unwrap();

    assert!(fx.auth.is_token_valid(login.token.expose()).await.unwrap());
    let user = login.user.unwrap();
    assert_eq!(user.nick_name.as_deref(), Some("Ada"));
    assert_eq!(user.gender, Some(2));
    assert_eq!(user.city.as_deref(), Some("Hangzhou"));
    let stored: (String, i64, String, String, String, String) = rusqlite::Connection::open(&fx.db)
        .unwrap()
        .query_row(
            "SELECT nickName, gender, city, province, country, avatarUrl FROM user \
                 WHERE openId = ?1",
            [OPEN_ID],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        stored,
        (
            "Ada".to_owned(),
            2,
            "Hangzhou".to_owned(),
            "Zhejiang".to_owned(),
            "China".to_owned(),
            "https://example.com/ada.png".to_owned()
        )
    );
    let read_back = fx.auth.users().get(APP_ID, OPEN_ID).await.unwrap().unwrap();
    assert_eq!(read_back.language.as_deref(), Some("zh_CN"));

    // A later code-only login keeps the stored profile.
    let again = fx.login("code-2").await;
    assert_eq!(again.user.unwrap().nick_name.as_deref(), Some("Ada"));
    assert_eq!(fx.rows(OPEN_ID), 1);
}

async fn raw_data_with_the_right_signature_is_accepted<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let raw = r#"{"nickName":"Ada","gender":2,"city":"Hangzhou"}"#;

    let signed_only = AuthorizeRequest::new("code-1").with_signature(raw, signature(raw));
    let login = fx.auth.authorize(&signed_only).await.unwrap();
    assert!(fx.auth.is_token_valid(login.token.expose()).await.unwrap());

    // Upper-case hex, together with an encrypted profile.
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    let both = with_profile("code-2", &profile).with_signature(raw, signature(raw).to_uppercase());
    let login = fx.auth.authorize(&both).await.unwrap();
    assert!(fx.auth.is_token_valid(login.token.expose()).await.unwrap());
    assert_eq!(login.user.unwrap().nick_name.as_deref(), Some("Ada"));
    assert_eq!(fx.rows(OPEN_ID), 1);
    assert_eq!(fx.live(OPEN_ID).await.len(), 2);
}

async fn wrong_signature_is_rejected_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let raw = r#"{"nickName":"Ada"}"#;
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    let cases = [
        // Signed over other data.
        signature(r#"{"nickName":"Eve"}"#),
        // Signed without the session key.
        hex::encode(Sha1::digest(raw.as_bytes())),
        "not hex".to_owned(),
        String::new(),
    ];
    for (i, wrong) in cases.into_iter().enumerate() {
        let request = with_profile(&format!("code-{i}"), &profile).with_signature(raw, wrong);
        let error = fx.refused(&request).await;
        assert!(
            matches!(error, Error::Decrypt(DecryptError::SignatureMismatch)),
            "{error:?}"
        );
        assert_eq!(error.oauth_error(), "invalid_signature");
        assert_eq!(error.node_code(), 6011);
        fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
            .await;
    }
    assert_eq!(fx.wechat_calls(), 4);
}

async fn wrong_watermark_app_id_is_rejected_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let profile = encrypted(&profile_json(OPEN_ID, "wxANOTHERAPP00000"));

    let error = fx.refused(&with_profile("code-1", &profile)).await;

    assert!(
        matches!(error, Error::Decrypt(DecryptError::AppIdMismatch)),
        "{error:?}"
    );
    assert_eq!(error.node_code(), 6009);
    fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(fx.rows(OPEN_ID), 0);
    assert_eq!(fx.wechat_calls(), 1);
}

async fn stale_watermark_is_rejected_when_a_max_age_is_set<T: TokenStore>(tokens: T) {
    let fx = Fixture::with_config(
        tokens,
        wechat_ok(OPEN_ID, None),
        config().with_profile_max_age(Duration::from_secs(300)),
    )
    .await;
    let mut stale: serde_json::Value =
        serde_json::from_str(&profile_json(OPEN_ID, APP_ID)).unwrap();
    stale["watermark"]["timestamp"] = (now_secs() - 3600).into();
    let profile = encrypted(&stale.to_string());

    let error = fx.refused(&with_profile("code-1", &profile)).await;

    assert!(
        matches!(error, Error::Decrypt(DecryptError::Expired)),
        "{error:?}"
    );
    fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
        .await;
    // A fresh watermark passes under the same limit.
    let fresh = encrypted(&profile_json(OPEN_ID, APP_ID));
    fx.auth
        .authorize(&with_profile("code-2", &fresh))
        .await
        .unwrap();
    assert_eq!(fx.rows(OPEN_ID), 1);
}

async fn mismatched_open_id_is_rejected_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let profile = encrypted(&profile_json("oSomebodyElse", APP_ID));

    let error = fx.refused(&with_profile("code-1", &profile)).await;

    assert!(
        matches!(error, Error::Decrypt(DecryptError::OpenIdMismatch)),
        "{error:?}"
    );
    assert_eq!(error.node_code(), 6009);
    fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(fx.rows("oSomebodyElse"), 0);
    assert!(fx.live("oSomebodyElse").await.is_empty());
}

async fn tampered_ciphertext_is_rejected_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    let mut bytes = STANDARD.decode(&profile.encrypted_data).unwrap();
    let tamper_points = [0, bytes.len() - 1];
    for (i, at) in tamper_points.into_iter().enumerate() {
        bytes[at] ^= 0x5a;
        let tampered = EncryptedProfile {
            encrypted_data: STANDARD.encode(&bytes),
            iv: profile.iv.clone(),
        };
        bytes[at] ^= 0x5a;

        let error = fx
            .refused(&with_profile(&format!("code-{i}"), &tampered))
            .await;

        assert!(
            matches!(error, Error::Decrypt(DecryptError::Invalid { .. })),
            "{error:?}"
        );
        assert_eq!(error.node_code(), 6011);
        fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
            .await;
    }
    // The untampered original still logs in, so the failures above were the tampering.
    fx.auth
        .authorize(&with_profile("code-9", &profile))
        .await
        .unwrap();
    assert_eq!(fx.rows(OPEN_ID), 1);
}

async fn encrypted_data_without_iv_is_rejected_before_wechat<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let profile = encrypted(&profile_json(OPEN_ID, APP_ID));
    let mut no_iv = AuthorizeRequest::new("code-1");
    no_iv.encrypted_data = Some(profile.encrypted_data.clone());
    let mut no_data = AuthorizeRequest::new("code-2");
    no_data.iv = Some(profile.iv.clone());
    let mut no_signature = AuthorizeRequest::new("code-3");
    no_signature.raw_data = Some("{}".to_owned());

    for request in [no_iv, no_data, no_signature] {
        let error = fx.refused(&request).await;
        assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
        assert_eq!(error.node_code(), 6001);
        fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
            .await;
    }
    assert_eq!(fx.wechat_calls(), 0, "WeChat must not be asked");
}

async fn missing_code_is_rejected_before_wechat<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let mut empty = AuthorizeRequest::new("");
    empty.device = Some("iPhone".to_owned());
    let too_long = AuthorizeRequest::new("c".repeat(257));
    for request in [AuthorizeRequest::default(), empty, too_long] {
        let error = fx.refused(&request).await;
        assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
        assert_eq!(error.node_code(), 6001);
        assert_eq!(error.oauth_error(), "invalid_request");
        assert!(error.to_string().contains("`code`"), "{error}");
        fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
            .await;
    }
    assert_eq!(fx.wechat_calls(), 0, "WeChat must not be asked");
}

// ---------------------------------------------------------------------------------------
// WeChat failures
// ---------------------------------------------------------------------------------------

async fn wechat_errcodes_map_to_statuses_and_store_nothing<T: TokenStore>(tokens: T) {
    let cases = [
        (40029, StatusCode::UNAUTHORIZED, 1),
        (40163, StatusCode::UNAUTHORIZED, 1),
        (45011, StatusCode::TOO_MANY_REQUESTS, 1),
        (40226, StatusCode::FORBIDDEN, 1),
        (40013, StatusCode::INTERNAL_SERVER_ERROR, 1),
        // Busy is retried: three attempts in all, then 503.
        (-1, StatusCode::SERVICE_UNAVAILABLE, 3),
    ];
    for (errcode, status, calls) in cases {
        let fx = Fixture::new(tokens.clone(), wechat_errcode(errcode)).await;
        let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
        assert!(matches!(error, Error::WeChat(_)), "{errcode}: {error:?}");
        assert_eq!(error.node_code(), 6008, "{errcode}: {error:?}");
        fx.assert_failed_cleanly(&error, status).await;
        assert_eq!(fx.wechat_calls(), calls, "errcode {errcode}");
    }
}

async fn wechat_http_5xx_is_502_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fake = FakeWeChat::start(|_, _| Reply::text_plain("upstream broke").with_status(500));
    let fx = Fixture::new(tokens, fake).await;
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    assert!(
        matches!(
            error,
            Error::WeChat(WeChatError::HttpStatus { status: 500 })
        ),
        "{error:?}"
    );
    fx.assert_failed_cleanly(&error, StatusCode::BAD_GATEWAY)
        .await;
}

async fn wechat_garbage_body_is_502_and_stores_nothing<T: TokenStore>(tokens: T) {
    let fake = FakeWeChat::start(|_, _| Reply::text_plain("<html>not json</html>"));
    let fx = Fixture::new(tokens, fake).await;
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    assert!(
        matches!(error, Error::WeChat(WeChatError::InvalidResponse { .. })),
        "{error:?}"
    );
    fx.assert_failed_cleanly(&error, StatusCode::BAD_GATEWAY)
        .await;
}

async fn wechat_timeout_is_504_and_stores_nothing<T: TokenStore>(tokens: T) {
    let body = session_body(OPEN_ID, None);
    let fake =
        FakeWeChat::start(move |_, _| Reply::json(body.clone()).with_delay(Duration::from_secs(3)));
    let fx = Fixture::new(tokens, fake).await;
    let started = std::time::Instant::now();
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::WeChat(WeChatError::Timeout { .. })),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    fx.assert_failed_cleanly(&error, StatusCode::GATEWAY_TIMEOUT)
        .await;
}

async fn unusable_wechat_ids_are_502_and_store_nothing<T: TokenStore>(tokens: T) {
    // An openid that cannot be put in a token (`.` separates a token's parts).
    let fx = Fixture::new(tokens.clone(), wechat_ok("o.bad.id", None)).await;
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    assert!(matches!(error, Error::UnusableId), "{error:?}");
    fx.assert_failed_cleanly(&error, StatusCode::BAD_GATEWAY)
        .await;
    assert!(fx.live("o.bad.id").await.is_empty());

    // The same for a unionid when it names the user.
    let fx = Fixture::with_config(
        tokens,
        wechat_ok(OPEN_ID, Some("u.bad")),
        config().with_identity(Identity::UnionIdWhenPresent),
    )
    .await;
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    assert!(matches!(error, Error::UnusableId), "{error:?}");
    fx.assert_failed_cleanly(&error, StatusCode::BAD_GATEWAY)
        .await;
}

// ---------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------

async fn union_id_identity_names_the_user_by_union_id<T: TokenStore>(tokens: T) {
    let fx = Fixture::with_config(
        tokens,
        wechat_ok(OPEN_ID, Some(UNION_ID)),
        config().with_identity(Identity::UnionIdWhenPresent),
    )
    .await;

    let login = fx.login("code-1").await;

    assert_eq!(login.token.open_id(), UNION_ID);
    assert_eq!(
        fx.auth.extract_open_id(login.token.expose()),
        Some(UNION_ID)
    );
    let user = fx.auth.validate(login.token.expose()).await.unwrap();
    assert_eq!(user.open_id(), UNION_ID);
    assert_eq!(fx.rows(UNION_ID), 1);
    assert_eq!(fx.rows(OPEN_ID), 0);
    assert_eq!(fx.live(UNION_ID).await.len(), 1);
    assert!(fx.live(OPEN_ID).await.is_empty());
    assert_eq!(login.user.unwrap().union_id.as_deref(), Some(UNION_ID));
}

async fn default_identity_names_the_user_by_open_id_despite_a_union_id<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, Some(UNION_ID))).await;

    let login = fx.login("code-1").await;

    assert_eq!(login.token.open_id(), OPEN_ID);
    let user = fx.auth.validate(login.token.expose()).await.unwrap();
    assert_eq!(user.open_id(), OPEN_ID);
    assert_eq!(fx.rows(OPEN_ID), 1);
    assert_eq!(fx.rows(UNION_ID), 0);
    assert!(fx.live(UNION_ID).await.is_empty());
    // The unionid is still recorded on the openid's row.
    let stored = fx.auth.users().get(APP_ID, OPEN_ID).await.unwrap().unwrap();
    assert_eq!(stored.union_id.as_deref(), Some(UNION_ID));
}

// ---------------------------------------------------------------------------------------
// Store failures and concurrency
// ---------------------------------------------------------------------------------------

async fn user_store_failure_leaves_no_live_token<T: TokenStore>(tokens: T) {
    let (dir, db) = users::temp_db();
    // Creates the file with the current schema; kept open, as a live writer would be.
    let _writer = SqliteUserStore::open(&db).await.unwrap();
    let read_only = SqliteUserStore::builder(&db)
        .with_read_only(true)
        .open()
        .await
        .unwrap();
    let fx = Fixture::with_users(
        tokens,
        wechat_ok(OPEN_ID, None),
        config(),
        read_only,
        dir,
        db,
    );

    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;

    assert!(
        matches!(error, Error::Users(UserStoreError::ReadOnly(_))),
        "{error:?}"
    );
    assert_eq!(error.node_code(), 6000);
    assert_eq!(
        fx.wechat_calls(),
        1,
        "WeChat succeeded before the store failed"
    );
    fx.assert_failed_cleanly(&error, StatusCode::INTERNAL_SERVER_ERROR)
        .await;
}

async fn concurrent_first_logins_create_one_user_and_respect_the_device_limit<T: TokenStore>(
    tokens: T,
) {
    let fx = Fixture::with_config(
        tokens,
        wechat_ok(OPEN_ID, None),
        config().with_max_tokens_per_user(5),
    )
    .await;

    let logins: Vec<_> = (0..20)
        .map(|i| {
            let auth = fx.auth.clone();
            tokio::spawn(async move {
                auth.authorize(&AuthorizeRequest::new(format!("code-{i}")))
                    .await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for login in logins {
        let login = login.await.unwrap().unwrap();
        tokens.push(login.token);
    }

    assert_eq!(fx.rows(OPEN_ID), 1);
    assert_eq!(fx.all_rows(), 1);
    assert_eq!(fx.wechat_calls(), 20);
    assert_eq!(fx.live(OPEN_ID).await.len(), 5);
    let mut valid = 0;
    for token in &tokens {
        if fx.auth.is_token_valid(token.expose()).await.unwrap() {
            valid += 1;
        }
    }
    assert_eq!(valid, 5, "exactly the device limit of tokens stays live");
}

// ---------------------------------------------------------------------------------------
// Refresh and logout
// ---------------------------------------------------------------------------------------

async fn refresh_replaces_the_token<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let old = fx
        .auth
        .authorize(&AuthorizeRequest::new("code-1").with_device("Pixel 9"))
        .await
        .unwrap()
        .token;
    assert_eq!(fx.live(OPEN_ID).await[0].device.as_deref(), Some("Pixel 9"));

    let refreshed = fx.auth.refresh(old.expose()).await.unwrap();

    assert_ne!(refreshed.token.expose(), old.expose());
    assert_eq!(refreshed.token.open_id(), OPEN_ID);
    assert_eq!(refreshed.expires_in, TTL.as_secs());
    assert!(refreshed.user.is_none());
    assert!(
        fx.auth
            .is_token_valid(refreshed.token.expose())
            .await
            .unwrap()
    );
    assert!(!fx.auth.is_token_valid(old.expose()).await.unwrap());
    let error = fx.auth.validate(old.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    let error = fx.auth.refresh(old.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    let live = fx.live(OPEN_ID).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].hash, refreshed.token.hash());
    assert_eq!(
        live[0].device.as_deref(),
        Some("Pixel 9"),
        "rotation keeps the device"
    );
}

async fn concurrent_refreshes_yield_exactly_one_successor<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let old = fx.login("code-1").await.token.into_exposed();

    let refreshes: Vec<_> = (0..20)
        .map(|_| {
            let auth = fx.auth.clone();
            let old = old.clone();
            tokio::spawn(async move { auth.refresh(&old).await })
        })
        .collect();
    let mut successors = Vec::new();
    for refresh in refreshes {
        match refresh.await.unwrap() {
            Ok(refreshed) => successors.push(refreshed.token),
            Err(Error::InvalidToken) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    assert_eq!(successors.len(), 1, "exactly one refresh wins");
    assert!(
        fx.auth
            .is_token_valid(successors[0].expose())
            .await
            .unwrap()
    );
    assert!(!fx.auth.is_token_valid(&old).await.unwrap());
    assert_eq!(fx.live(OPEN_ID).await.len(), 1);
}

async fn logout_revokes_the_token_once<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let token = fx.login("code-1").await.token;
    let other_device = fx.login("code-2").await.token;

    fx.auth.logout(token.expose()).await.unwrap();

    assert!(!fx.auth.is_token_valid(token.expose()).await.unwrap());
    let error = fx.auth.logout(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert!(
        fx.auth.is_token_valid(other_device.expose()).await.unwrap(),
        "logout revokes only the one token"
    );
    for garbage in ["", "not-a-token", "demo.oUser.short"] {
        let error = fx.auth.logout(garbage).await.unwrap_err();
        assert!(matches!(error, Error::InvalidToken), "{garbage}: {error:?}");
    }
}

async fn logout_all_revokes_every_device<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let phone = fx.login("code-1").await.token;
    let tablet = fx.login("code-2").await.token;

    assert_eq!(fx.auth.logout_all(OPEN_ID).await.unwrap(), 2);

    assert!(!fx.auth.is_token_valid(phone.expose()).await.unwrap());
    assert!(!fx.auth.is_token_valid(tablet.expose()).await.unwrap());
    assert!(fx.live(OPEN_ID).await.is_empty());
    assert_eq!(fx.auth.logout_all(OPEN_ID).await.unwrap(), 0);
    assert_eq!(fx.rows(OPEN_ID), 1, "logging out keeps the user");
}

async fn refresh_for_user_replaces_every_token<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let phone = fx.login("code-1").await.token;
    let tablet = fx.login("code-2").await.token;

    let fresh = fx.auth.refresh_for_user(OPEN_ID).await.unwrap();

    assert_eq!(fresh.token.open_id(), OPEN_ID);
    assert_eq!(fresh.expires_in, TTL.as_secs());
    assert_eq!(fresh.user.unwrap().open_id, OPEN_ID);
    assert!(fx.auth.is_token_valid(fresh.token.expose()).await.unwrap());
    assert!(!fx.auth.is_token_valid(phone.expose()).await.unwrap());
    assert!(!fx.auth.is_token_valid(tablet.expose()).await.unwrap());
    let live = fx.live(OPEN_ID).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].hash, fresh.token.hash());
}

async fn refresh_for_unknown_user_is_404<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let error = fx.auth.refresh_for_user("oNobody").await.unwrap_err();
    assert!(matches!(error, Error::UnknownUser), "{error:?}");
    assert_eq!(error.status(), StatusCode::NOT_FOUND);
    assert_eq!(error.node_code(), 6010);
    assert!(fx.live("oNobody").await.is_empty(), "no token for nobody");
    assert_eq!(fx.all_rows(), 0);
}

async fn tokens_of_another_sku_are_invalid<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let other = MpAuth::new(
        pointed_at(config_for("other"), &fx.fake),
        fx.auth.tokens().clone(),
        fx.auth.users().clone(),
    );
    let demo_token = fx.login("code-1").await.token;

    let error = other.refresh(demo_token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    let error = other.validate(demo_token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    let error = other.logout(demo_token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    assert!(!other.is_token_valid(demo_token.expose()).await.unwrap());
    assert!(
        fx.auth.is_token_valid(demo_token.expose()).await.unwrap(),
        "the other sku's attempts revoked nothing"
    );

    // And the other way round.
    let other_token = other
        .authorize(&AuthorizeRequest::new("code-2"))
        .await
        .unwrap()
        .token;
    assert_eq!(other_token.sku(), "other");
    assert!(other.is_token_valid(other_token.expose()).await.unwrap());
    let error = fx.auth.refresh(other_token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken), "{error:?}");
    assert!(!fx.auth.is_token_valid(other_token.expose()).await.unwrap());
    // logout_all is per sku.
    assert_eq!(fx.auth.logout_all(OPEN_ID).await.unwrap(), 1);
    assert!(other.is_token_valid(other_token.expose()).await.unwrap());
}

async fn is_token_valid_answers_true_and_false<T: TokenStore>(tokens: T) {
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let token = fx.login("code-1").await.token;

    assert!(fx.auth.is_token_valid(token.expose()).await.unwrap());
    let forged = mpauthx::Token::generate(&sku(), OPEN_ID).unwrap();
    assert!(!fx.auth.is_token_valid(forged.expose()).await.unwrap());
    for garbage in ["", "garbage", "demo..x", "demo.oUser_login-1"] {
        assert!(
            !fx.auth.is_token_valid(garbage).await.unwrap(),
            "{garbage:?}"
        );
    }
    // A token with one character of its secret changed.
    let mut tampered = token.expose().to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!fx.auth.is_token_valid(&tampered).await.unwrap());

    fx.auth.logout(token.expose()).await.unwrap();
    assert!(!fx.auth.is_token_valid(token.expose()).await.unwrap());
}

async fn secrets_never_appear_in_errors_or_debug<T: TokenStore>(tokens: T) {
    // An upstream that echoes the secret and the code in its errmsg.
    let fx = Fixture::new(tokens.clone(), wechat_errcode(40999)).await;
    let error = fx.refused(&AuthorizeRequest::new("code-echo")).await;
    assert!(
        matches!(
            error,
            Error::WeChat(WeChatError::Upstream { errcode: 40999, .. })
        ),
        "{error:?}"
    );
    assert!(
        fx.fake.requests()[0].param("secret") == Some(SECRET),
        "the fake did see the secret"
    );
    fx.assert_failed_cleanly(&error, StatusCode::BAD_GATEWAY)
        .await;
    assert!(error.description().contains("40999"));
    assert!(!error.description().contains(SECRET));

    // Errors after a successful exchange, when the session key is in hand.
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let good = encrypted(&profile_json(OPEN_ID, APP_ID));
    let raw = "{}";
    let requests = [
        with_profile("code-1", &good).with_signature(raw, "00"),
        with_profile("code-2", &encrypted(&profile_json(OPEN_ID, "wxOTHER"))),
        with_profile("code-3", &encrypted(&profile_json("oOther", APP_ID))),
        with_profile("code-4", &encrypted("not json")),
        AuthorizeRequest::new("code-5").with_encrypted_profile(&good.encrypted_data, "AAAA"),
    ];
    for request in &requests {
        let error = fx.refused(request).await;
        assert!(matches!(error, Error::Decrypt(_)), "{error:?}");
        fx.assert_failed_cleanly(&error, StatusCode::BAD_REQUEST)
            .await;
        let debug = format!("{request:?}");
        assert!(!debug.contains(&good.encrypted_data), "{debug}");
        assert!(!debug.contains("code-"), "{debug}");
    }

    let token = fx.login("code-6").await.token;
    for text in [format!("{:?}", fx.auth), format!("{:?}", fx.auth.config())] {
        assert!(!text.contains(SECRET), "app secret leaked: {text}");
        assert!(!text.contains(&session_key()), "session key leaked: {text}");
        assert!(!text.contains(token.expose()), "token leaked: {text}");
    }
    assert!(!format!("{token:?}").contains(token.expose()));
}

// ---------------------------------------------------------------------------------------
// Redis outages (a dedicated server each, stopped mid-test)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_token_valid_is_an_error_not_false_when_redis_is_down() {
    let (mut server, tokens, _) = dedicated("redis_down").await;
    let fx = Fixture::new(tokens, wechat_ok(OPEN_ID, None)).await;
    let token = fx.login("code-1").await.token;
    assert!(fx.auth.is_token_valid(token.expose()).await.unwrap());

    server.stop();

    let error = fx.auth.is_token_valid(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_secret_free(&error);
    let error = fx.auth.validate(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let error = fx.auth.refresh(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let error = fx.auth.logout(token.expose()).await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");

    // A login during the outage fails with 503 and stores no user.
    let error = fx.refused(&AuthorizeRequest::new("code-2")).await;
    assert!(
        matches!(
            error,
            Error::Store(StoreError::Unavailable(_) | StoreError::Timeout(_))
        ),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_secret_free(&error);
    assert_eq!(fx.rows(OPEN_ID), 1, "only the earlier login's row");

    server.restart();
    // Once Redis is back, the (unpersisted) token is simply gone: false, not an error.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match fx.auth.is_token_valid(token.expose()).await {
            Ok(valid) => {
                assert!(!valid, "redis kept nothing across the restart");
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(matches!(e, Error::Store(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("redis did not come back: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_leaves_the_memory_store_empty() {
    let tokens = MemoryTokenStore::new();
    let fx = Fixture::new(tokens.clone(), wechat_errcode(40029)).await;
    let error = fx.refused(&AuthorizeRequest::new("code-1")).await;
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert!(tokens.is_empty(), "a refused login stored a token");
}
