//! The invariants behind the fuzz targets, one `check_*` function per target.
//!
//! Each function takes the raw fuzz input and panics when an invariant breaks. The
//! targets in `fuzz_targets/` only call them; `tests/fuzz_seeds.rs` at the crate root
//! includes this file and replays the committed seeds and regressions through the same
//! functions on stable Rust.

use std::{
    convert::Infallible,
    future::{Future, Ready, poll_fn, ready},
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Request, Response, StatusCode,
    header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE},
};
use http_body::Body;
use http_body_util::BodyExt as _;
use mpauthx::{
    AuthedUser, AuthorizeRequest, DecryptError, DecryptOptions, DecryptedProfile, IssueOptions,
    MAX_OPEN_ID_LEN, MemoryTokenStore, MpAuth, MpAuthConfig, MpAuthLayer, ParsedToken,
    RejectionKind, Session, SessionKey, Sku, SqliteUserStore, Token, TokenError, TokenHash,
    TokenStore, Watermark, decrypt_profile, encrypt_profile, extract_open_id, extract_sku,
    verify_signature,
};

/// A token's secret part, as the crate documents it: 32 bytes in base64url, unpadded.
const SECRET_LEN: usize = 43;
/// The longest token: a 32-byte sku, an openid, the secret and two dots.
const MAX_TOKEN_LEN: usize = 32 + 1 + MAX_OPEN_ID_LEN + 1 + SECRET_LEN;
/// The most base64 `encryptedData` the crate decrypts (64 KiB).
const MAX_ENCRYPTED_DATA_LEN: usize = 64 * 1024;
use serde_json::Value;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use tower_layer::Layer as _;
use tower_service::Service;

// ---------------------------------------------------------------------------------------
// token_parse
// ---------------------------------------------------------------------------------------

/// `ParsedToken::parse`, `Token::from_str`, `extract_sku`, `extract_open_id` and
/// `TokenHash::from_id` on any text (input bytes, lossily UTF-8).
///
/// A text is accepted exactly when it is in the documented grammar
/// `[A-Za-z0-9_-]{1,32} "." [A-Za-z0-9_-]{1,64} "." [A-Za-z0-9_-]{43}`; an accepted
/// text re-assembles from its parts, and every view of it (owned token, extractors,
/// hash, successor) agrees on those parts.
pub fn check_token_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let in_grammar = in_token_grammar(text);
    match ParsedToken::parse(text) {
        Ok(token) => {
            assert!(in_grammar, "accepted outside the grammar: {text:?}");
            check_accepted_token(text, token);
        }
        Err(error) => {
            assert!(!in_grammar, "rejected a token in the grammar: {text:?}");
            let too_long = text.len() > MAX_TOKEN_LEN;
            let expected = if too_long {
                TokenError::TooLong
            } else {
                TokenError::Malformed
            };
            assert_eq!(error, expected, "{text:?}");
            assert_eq!(text.parse::<Token>().unwrap_err(), error);
            assert_eq!(extract_sku(text), None);
            assert_eq!(extract_open_id(text), None);
        }
    }
    // A token id reads back only from its one canonical spelling.
    if let Some(hash) = TokenHash::from_id(text) {
        assert_eq!(hash.id().as_str(), text);
    }
}

fn check_accepted_token(text: &str, token: ParsedToken<'_>) {
    assert!(std::ptr::eq(token.expose(), text), "expose() is the input");
    let (sku, open_id) = (token.sku(), token.open_id());
    let secret = &text[sku.len() + 1 + open_id.len() + 1..];
    assert_eq!(format!("{sku}.{open_id}.{secret}"), text);
    assert_eq!(secret.len(), SECRET_LEN);
    assert_eq!(
        Sku::new(sku)
            .expect("a token's sku is a valid sku")
            .as_str(),
        sku
    );
    assert_eq!(extract_sku(text), Some(sku));
    assert_eq!(extract_open_id(text), Some(open_id));

    let owned: Token = text.parse().expect("FromStr accepts what parse accepts");
    assert_eq!(owned.expose(), text);
    assert_eq!((owned.sku(), owned.open_id()), (sku, open_id));
    assert_eq!(owned.parsed(), token);

    let hash = token.hash();
    assert_eq!(owned.hash(), hash);
    let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    assert_eq!(hash.as_bytes(), &digest, "the hash is SHA-256 of the text");
    assert_eq!(TokenHash::from_id(hash.id().as_str()), Some(hash));

    // `Debug` names the owner, never the secret (unless the secret is part of the owner).
    let shown = format!("{token:?} {owned:?}");
    if !sku.contains(secret) && !open_id.contains(secret) {
        assert!(!shown.contains(secret), "Debug shows the secret: {shown}");
    }
    assert!(shown.contains("<redacted>"));

    let next = Token::successor_of(&token).expect("the system RNG works");
    assert_eq!((next.sku(), next.open_id()), (sku, open_id));
    assert_ne!(next.expose(), text, "a successor draws a new secret");
    let reparsed = ParsedToken::parse(next.expose()).expect("successors parse");
    assert_eq!((reparsed.sku(), reparsed.open_id()), (sku, open_id));
}

/// The token grammar as documented, written as a scan rather than the parser's split.
fn in_token_grammar(text: &str) -> bool {
    let mut lens = [0usize; 3];
    let mut part = 0;
    for b in text.bytes() {
        match b {
            b'.' if part < 2 => part += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => lens[part] += 1,
            _ => return false,
        }
    }
    part == 2 && (1..=32).contains(&lens[0]) && (1..=64).contains(&lens[1]) && lens[2] == 43
}

// ---------------------------------------------------------------------------------------
// auth_header
// ---------------------------------------------------------------------------------------

/// The live token of the `auth_header` fixture (sku `demo`).
pub const LIVE_TOKEN: &str = "demo.oFuzz_live-user.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// A token that is live in the store but of another sku.
pub const FOREIGN_TOKEN: &str = "other.oFuzz_live-user.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// A token of sku `demo` that was issued and then revoked.
pub const REVOKED_TOKEN: &str = "demo.oFuzz_revoked.CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

/// `MpAuthLayer` over a `MemoryTokenStore`, driven with a request built from the input.
///
/// Input: an optional leading `?` turns on `with_optional(true)`; the rest is split on
/// `\n`. A line starting with `+` is a header `+name:value`; any other non-empty line is
/// the value of one more `Authorization` header. Lines that no HTTP stack could deliver
/// (bad header name or value bytes) are skipped.
///
/// The answer is 200, 400 or 401; the inner service sees the user exactly when there is
/// one `Authorization` header reading `Bearer`, spaces and the live token; it runs
/// anonymously only in optional mode and only without bearer credentials; rejections are
/// the documented RFC 6750 answers.
pub fn check_auth_header(data: &[u8]) {
    let (optional, lines) = match data.split_first() {
        Some((b'?', rest)) => (true, rest),
        _ => (false, data),
    };
    let mut request = Request::new(());
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (name, value) = match line.split_first() {
            Some((b'+', header)) => {
                let colon = header.iter().position(|&b| b == b':');
                let (name, value) = header.split_at(colon.unwrap_or(header.len()));
                (name, value.get(1..).unwrap_or_default())
            }
            _ => (AUTHORIZATION.as_str().as_bytes(), line),
        };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request.headers_mut().append(name, value);
        }
    }
    let values: Vec<Vec<u8>> = request
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();

    let mut service = auth_layer().clone().with_optional(optional).layer(Inner);
    now(poll_fn(|cx| {
        Service::<Request<()>>::poll_ready(&mut service, cx)
    }))
    .expect("the inner service is always ready");
    let response = now(service.call(request)).expect("the inner service never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let body = now(collect(response.into_body()));
    let body = String::from_utf8(body).expect("bodies are UTF-8");

    let single = |token: &str| values.len() == 1 && is_bearer_for(&values[0], token);
    let anonymous_allowed =
        optional && (values.is_empty() || (values.len() == 1 && !attempts_bearer(&values[0])));
    if single(LIVE_TOKEN) {
        assert_eq!(
            status,
            StatusCode::OK,
            "the live token was refused: {values:?}"
        );
        let open_id = extract_open_id(LIVE_TOKEN).unwrap_or_default();
        assert_eq!(body, format!("user:demo:{open_id}"));
        return;
    }
    if anonymous_allowed {
        assert_eq!(status, StatusCode::OK, "optional mode refused {values:?}");
        assert_eq!(body, "anonymous", "{values:?}");
        return;
    }
    assert_ne!(status, StatusCode::OK, "let through: {values:?} -> {body}");
    let kind = match status {
        StatusCode::BAD_REQUEST => RejectionKind::InvalidRequest,
        StatusCode::UNAUTHORIZED if body.contains("\"missing_token\"") => {
            RejectionKind::MissingCredentials
        }
        StatusCode::UNAUTHORIZED => RejectionKind::InvalidToken,
        other => panic!("status {other} for {values:?}"),
    };
    assert_eq!(body, kind.body_text(), "{values:?}");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    if status == StatusCode::UNAUTHORIZED {
        let challenge = headers[WWW_AUTHENTICATE].to_str().unwrap_or_default();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    }
    if values.is_empty() {
        assert_eq!(kind, RejectionKind::MissingCredentials);
    }
    if values.len() > 1 {
        assert_eq!(kind, RejectionKind::InvalidRequest, "{values:?}");
    }
    if single(FOREIGN_TOKEN) || single(REVOKED_TOKEN) {
        assert_eq!(kind, RejectionKind::InvalidToken, "{values:?}");
    }
}

/// `<scheme> 1*SP <token> *SP` with the scheme `Bearer` in any case.
fn is_bearer_for(value: &[u8], token: &str) -> bool {
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer") && trim_spaces(rest) == token.as_bytes()
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether a header value asks for bearer authentication at all, or cannot be read as
/// text (which is malformed, whatever the scheme).
fn attempts_bearer(value: &[u8]) -> bool {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    let scheme = value.split(|&b| b == b' ').next().unwrap_or_default();
    !visible || scheme.eq_ignore_ascii_case(b"bearer")
}

fn auth_layer() -> &'static MpAuthLayer<MemoryTokenStore> {
    static LAYER: OnceLock<MpAuthLayer<MemoryTokenStore>> = OnceLock::new();
    LAYER.get_or_init(|| {
        let store = MemoryTokenStore::new();
        let options = IssueOptions::new(Duration::from_secs(24 * 3600));
        for text in [LIVE_TOKEN, FOREIGN_TOKEN, REVOKED_TOKEN] {
            let token: Token = text.parse().expect("fixture tokens are well-formed");
            now(store.issue(&token, &options)).expect("the memory store issues");
        }
        let revoked = ParsedToken::parse(REVOKED_TOKEN).expect("well-formed");
        assert!(now(store.revoke(&revoked)).expect("the memory store revokes"));
        MpAuthLayer::new(store, Sku::new("demo").expect("valid sku"))
    })
}

/// The protected service: says who it was called for.
#[derive(Debug, Clone)]
pub struct Inner;

impl<B> Service<Request<B>> for Inner {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let who = match request.extensions().get::<AuthedUser>() {
            Some(user) => format!("user:{}:{}", user.sku(), user.open_id()),
            None => "anonymous".to_owned(),
        };
        ready(Ok(Response::new(who)))
    }
}

// ---------------------------------------------------------------------------------------
// profile_decrypt
// ---------------------------------------------------------------------------------------

/// App id of WeChat's published open-data sample.
pub const SAMPLE_APP_ID: &str = "wx4f4bc4dec97d474b";
/// Openid of WeChat's published open-data sample.
pub const SAMPLE_OPEN_ID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";

/// `decrypt_profile` and `verify_signature` on arbitrary strings.
///
/// Input (lossily UTF-8) split on `\n` into: session key, iv, encryptedData, rawData,
/// signature; missing parts are empty. The session is the sample's openid with that key,
/// the server's app id the sample's.
///
/// No panic; a profile comes back only when it names this app and this user; `+` sent
/// as a space changes nothing; a signature is accepted exactly when it is the hex SHA-1
/// of `rawData` and the key text, in either case.
pub fn check_profile_decrypt(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let mut next = || parts.next().unwrap_or_default();
    let (key, iv, encrypted, raw, signature) = (next(), next(), next(), next(), next());

    let opts = DecryptOptions::new(SAMPLE_APP_ID);
    let session = session(SAMPLE_OPEN_ID, key);
    let result = decrypt_profile(&opts, &session, encrypted, iv, SystemTime::now());
    let spaced = decrypt_profile(
        &opts,
        &self::session(SAMPLE_OPEN_ID, &key.replace('+', " ")),
        &encrypted.replace('+', " "),
        &iv.replace('+', " "),
        SystemTime::now(),
    );
    assert_eq!(format!("{result:?}"), format!("{spaced:?}"), "'+' as ' '");
    match &result {
        Ok(profile) => {
            assert_eq!(profile.open_id, SAMPLE_OPEN_ID);
            assert_eq!(profile.watermark.appid, SAMPLE_APP_ID);
            assert!(encrypted.len() <= MAX_ENCRYPTED_DATA_LEN);
            check_max_age(&opts, &session, encrypted, iv, profile.watermark.timestamp);
        }
        Err(error) => {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(error.oauth_error(), "invalid_encrypted_data");
            if encrypted.len() > MAX_ENCRYPTED_DATA_LEN {
                assert!(matches!(error, DecryptError::Invalid { .. }));
            }
        }
    }

    let expected = hex::encode(sha1_of(raw, key));
    let verdict = verify_signature(raw, &SessionKey::new(key), signature);
    let matches = signature.trim().eq_ignore_ascii_case(&expected);
    assert_eq!(verdict.is_ok(), matches, "signature {signature:?}");
    if let Err(error) = verdict {
        assert!(matches!(error, DecryptError::SignatureMismatch));
    }
    let key = SessionKey::new(key);
    assert!(verify_signature(raw, &key, &expected).is_ok());
    assert!(verify_signature(raw, &key, &expected.to_ascii_uppercase()).is_ok());
    let mut wrong = expected.into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).expect("hex is ASCII");
    assert!(verify_signature(raw, &key, &wrong).is_err());
}

/// A profile of `timestamp` is fresh at `timestamp + max_age`, stale one second later,
/// and fresh when it is dated in the future.
fn check_max_age(
    opts: &DecryptOptions,
    session: &Session,
    encrypted: &str,
    iv: &str,
    timestamp: u64,
) {
    let max_age = Duration::from_secs(60);
    let opts = opts.clone().with_max_age(max_age);
    let Some(issued) = UNIX_EPOCH.checked_add(Duration::from_secs(timestamp)) else {
        return;
    };
    let at = |now: SystemTime| decrypt_profile(&opts, session, encrypted, iv, now);
    if let Some(now) = issued.checked_add(max_age) {
        assert!(at(now).is_ok(), "fresh at the limit");
    }
    if let Some(now) = issued.checked_add(max_age + Duration::from_secs(1)) {
        assert!(matches!(at(now), Err(DecryptError::Expired)));
    }
    if let Some(now) = issued.checked_sub(Duration::from_secs(3600)) {
        assert!(at(now).is_ok(), "dated in the future");
    }
}

fn session(open_id: &str, key: &str) -> Session {
    Session {
        open_id: open_id.to_owned(),
        union_id: None,
        session_key: SessionKey::new(key),
    }
}

fn sha1_of(raw: &str, key: &str) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hasher.update(raw.as_bytes());
    hasher.update(key.as_bytes());
    hasher.finalize().into()
}

// ---------------------------------------------------------------------------------------
// profile_roundtrip
// ---------------------------------------------------------------------------------------

const ROUNDTRIP_HEADER: usize = 16 + 16 + 8 + 8 + 1;

/// `encrypt_profile` then `decrypt_profile` of an arbitrary profile.
///
/// Input: 16 bytes of session key, 16 bytes of IV, `watermark.timestamp` (u64 LE),
/// `gender` (i64 LE), a presence mask, then `\0`-separated strings (lossily UTF-8):
/// openId, watermark.appid, unionId, nickName, city, province, country, avatarUrl,
/// language. Mask bits 0 to 6 keep the optional strings in that order, bit 7 the gender.
/// Short inputs are padded with zeros.
///
/// The profile decrypts back to itself under its own app id and openid, and is refused
/// for the documented reason under another app id, another openid, an exceeded maximum
/// age, another key or a truncated ciphertext.
pub fn check_profile_roundtrip(data: &[u8]) {
    let mut header = [0u8; ROUNDTRIP_HEADER];
    let fixed = data.len().min(ROUNDTRIP_HEADER);
    header[..fixed].copy_from_slice(&data[..fixed]);
    let field =
        |range: std::ops::Range<usize>| -> [u8; 8] { header[range].try_into().expect("8 bytes") };
    let key: [u8; 16] = header[..16].try_into().expect("16 bytes");
    let iv: [u8; 16] = header[16..32].try_into().expect("16 bytes");
    let timestamp = u64::from_le_bytes(field(32..40));
    let gender = i64::from_le_bytes(field(40..48));
    let mask = header[48];
    let mut strings = data[fixed..]
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let mut text = || strings.next().unwrap_or_default();
    let (open_id, appid) = (text(), text());
    let mut optional = (0..7).map(|bit| {
        let value = text();
        (mask & (1 << bit) != 0).then_some(value)
    });
    let mut opt = || optional.next().flatten();
    let profile = DecryptedProfile {
        open_id,
        watermark: Watermark { appid, timestamp },
        union_id: opt(),
        nick_name: opt(),
        city: opt(),
        province: opt(),
        country: opt(),
        avatar_url: opt(),
        language: opt(),
        gender: (mask & 0x80 != 0).then_some(gender),
    };

    let json = serde_json::to_string(&profile).expect("a profile serializes");
    let session_key = SessionKey::new(STANDARD.encode(key));
    let sealed = encrypt_profile(&session_key, iv, &json).expect("a 16-byte key encrypts");
    assert_eq!(sealed.iv, STANDARD.encode(iv));

    let opts = DecryptOptions::new(profile.watermark.appid.clone());
    let session = Session {
        open_id: profile.open_id.clone(),
        union_id: None,
        session_key: session_key.clone(),
    };
    let open = |opts: &DecryptOptions, session: &Session, data: &str| {
        decrypt_profile(opts, session, data, &sealed.iv, SystemTime::now())
    };
    let result = open(&opts, &session, &sealed.encrypted_data);
    if sealed.encrypted_data.len() > MAX_ENCRYPTED_DATA_LEN {
        assert!(matches!(result, Err(DecryptError::Invalid { .. })));
        return;
    }
    assert_eq!(result.expect("decrypts back"), profile);

    let other_app = DecryptOptions::new(format!("{}x", profile.watermark.appid));
    assert!(matches!(
        open(&other_app, &session, &sealed.encrypted_data),
        Err(DecryptError::AppIdMismatch)
    ));
    let other_user = Session {
        open_id: format!("{}x", profile.open_id),
        ..session.clone()
    };
    assert!(matches!(
        open(&opts, &other_user, &sealed.encrypted_data),
        Err(DecryptError::OpenIdMismatch)
    ));
    check_max_age(
        &opts,
        &session,
        &sealed.encrypted_data,
        &sealed.iv,
        timestamp,
    );

    let mut other_key = key;
    other_key[0] ^= 1;
    let other_key = Session {
        session_key: SessionKey::new(STANDARD.encode(other_key)),
        ..session.clone()
    };
    assert!(open(&opts, &other_key, &sealed.encrypted_data).is_err());

    let ciphertext = STANDARD
        .decode(&sealed.encrypted_data)
        .expect("encrypt_profile emits base64");
    if ciphertext.len() > 16 {
        let truncated = STANDARD.encode(&ciphertext[..ciphertext.len() - 16]);
        assert!(open(&opts, &session, &truncated).is_err(), "truncated");
    }
}

// ---------------------------------------------------------------------------------------
// authorize_body
// ---------------------------------------------------------------------------------------

/// The longest login code `MpAuth::authorize` accepts, as documented in its source.
const MAX_CODE_LEN: usize = 256;

/// `auth.authorize_handler()` with the input as the JSON body, WeChat unreachable.
///
/// The fixture: a `MemoryTokenStore`, an in-memory `SqliteUserStore` and a WeChat client
/// pointed at port 0 of the loopback address, where nothing can listen.
///
/// The answer is never 200; a body that is not an `AuthorizeRequest` or fails the
/// request checks is a 400 with the check's message; a body that passes them reaches
/// WeChat and gets its transport error; every answer is the documented JSON error; no
/// token is ever stored.
pub fn check_authorize_body(data: &[u8]) {
    let fixture = authorize_fixture();
    let request = Request::builder()
        .method("POST")
        .uri("/auth/authorize")
        .header(CONTENT_TYPE, "application/json")
        .body(axum_core::body::Body::from(data.to_vec()))
        .expect("a valid request");
    let (status, headers, body) = fixture.runtime.block_on(async {
        let response = (fixture.handler)(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("bodies are in memory");
        (parts.status, parts.headers, body.to_bytes())
    });

    assert_ne!(status, StatusCode::OK, "a login without WeChat succeeded");
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status}"
    );
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    let json: Value = serde_json::from_slice(&body).expect("the error is JSON");
    let object = json.as_object().expect("the error is a JSON object");
    assert_eq!(object.len(), 3, "{json}");
    let error = object["error"].as_str().expect("`error` is a string");
    let description = object["error_description"]
        .as_str()
        .expect("`error_description` is a string");
    let code = object["code"].as_u64().expect("`code` is a number");

    match request_check(data) {
        Err(message) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(
                (error, description, code),
                ("invalid_request", message, 6001)
            );
        }
        Ok(()) => {
            let unreachable = [
                (StatusCode::BAD_GATEWAY, "transport_error"),
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ];
            assert!(unreachable.contains(&(status, error)), "{status} {json}");
            assert_eq!(code, 6006, "{json}");
        }
    }
    assert!(
        fixture.auth.tokens().is_empty(),
        "a failed login stored a token"
    );
}

/// What `MpAuth::authorize` checks before it calls WeChat, in its order.
fn request_check(body: &[u8]) -> Result<(), &'static str> {
    let Ok(login) = serde_json::from_slice::<AuthorizeRequest>(body) else {
        return Err("the request body is not the expected JSON");
    };
    match login.code.as_deref() {
        None | Some("") => return Err("missing required field `code`"),
        Some(code) if code.len() > MAX_CODE_LEN => return Err("`code` is too long"),
        Some(_) => {}
    }
    match (&login.encrypted_data, &login.iv) {
        (Some(_), None) => return Err("missing required field `iv`"),
        (None, Some(_)) => return Err("missing required field `encryptedData`"),
        _ => {}
    }
    match (&login.raw_data, &login.signature) {
        (Some(_), None) => Err("missing required field `signature`"),
        (None, Some(_)) => Err("missing required field `rawData`"),
        _ => Ok(()),
    }
}

type Handler = Box<
    dyn Fn(
            axum_core::extract::Request,
        ) -> std::pin::Pin<Box<dyn Future<Output = axum_core::response::Response> + Send>>
        + Send
        + Sync,
>;

struct AuthorizeFixture {
    runtime: tokio::runtime::Runtime,
    auth: MpAuth<MemoryTokenStore, SqliteUserStore>,
    handler: Handler,
}

fn authorize_fixture() -> &'static AuthorizeFixture {
    static FIXTURE: OnceLock<AuthorizeFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let users = runtime
            .block_on(SqliteUserStore::open_in_memory())
            .expect("an in-memory sqlite");
        let config = MpAuthConfig::new(SAMPLE_APP_ID, "fuzz-app-secret", "demo")
            .expect("a valid config")
            .with_wechat_base_url("http://127.0.0.1:0")
            .with_wechat_connect_timeout(Duration::from_secs(1))
            .with_wechat_read_timeout(Duration::from_secs(1));
        let auth = MpAuth::new(config, MemoryTokenStore::new(), users);
        let handler = Box::new(auth.authorize_handler());
        AuthorizeFixture {
            runtime,
            auth,
            handler,
        }
    })
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Polls a future once; everything under test here answers without waiting.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future did not complete at once"),
    }
}

async fn collect<B: Body<Data = Bytes>>(body: B) -> Vec<u8>
where
    B::Error: std::fmt::Debug,
{
    body.collect()
        .await
        .expect("bodies are in memory")
        .to_bytes()
        .to_vec()
}

// ---------------------------------------------------------------------------------------
// phone_answer
// ---------------------------------------------------------------------------------------

/// The app id the phone answers are read for.
const PHONE_APP_ID: &str = "wx-fuzz-app";
/// The app secret of that client: never echoed in an error.
const PHONE_SECRET: &str = "fuzz-app-secret-4f1c";

/// `WeChatClient::interpret_phone_answer` on any bytes, as the body of a
/// `getuserphonenumber` answer, and `decrypt_phone` on the same bytes encrypted with a
/// fixed session key (the legacy phone data).
///
/// No panic; a number comes back only when the answer's watermark names this app, and
/// it is then well formed (digits where digits belong); every refusal maps to 401, 429,
/// 502 or 503 with a stable snake_case name, and no error text repeats the app secret;
/// a legacy plaintext decrypts to the same verdict on the number's shape.
pub fn check_phone_answer(data: &[u8]) {
    use mpauthx::{AppSecret, WeChatClient, WeChatError, decrypt_phone};

    let client = WeChatClient::new(PHONE_APP_ID, AppSecret::new(PHONE_SECRET));
    match client.interpret_phone_answer(data) {
        Ok(phone) => {
            assert!(phone.is_well_formed(), "accepted a malformed number");
            let answer: Value = serde_json::from_slice(data).expect("an accepted answer is JSON");
            assert_eq!(
                answer["phone_info"]["watermark"]["appid"], PHONE_APP_ID,
                "accepted another app's number"
            );
            assert_eq!(answer["errcode"].as_i64().unwrap_or(0), 0);
            // `Debug` masks the number (beyond 7 digits, its middle; else all of it).
            let shown = format!("{phone:?}");
            if phone.pure_phone_number.len() > 7 {
                assert!(!shown.contains(&phone.pure_phone_number), "{shown}");
            }
        }
        Err(error) => {
            let status = error.status().as_u16();
            assert!(
                matches!(status, 401 | 429 | 502 | 503),
                "unexpected status {status} for {error:?}"
            );
            assert!(!error.oauth_error().is_empty());
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(PHONE_SECRET), "an error repeats the secret");
            if let WeChatError::InvalidPhoneCode { errcode } = error {
                assert_eq!(errcode, 40029);
            }
        }
    }

    // The same bytes as legacy phone plaintext.
    let session = Session {
        open_id: "o-fuzz".into(),
        union_id: None,
        session_key: SessionKey::new(STANDARD.encode([7u8; 16])),
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sealed = encrypt_profile(&session.session_key, [9u8; 16], text).expect("a 16-byte key");
    let options = DecryptOptions::new(PHONE_APP_ID);
    match decrypt_phone(
        &options,
        &session,
        &sealed.encrypted_data,
        &sealed.iv,
        SystemTime::now(),
    ) {
        Ok(phone) => {
            assert!(phone.is_well_formed());
            let plain: Value = serde_json::from_str(text).expect("accepted plaintext is JSON");
            assert_eq!(plain["watermark"]["appid"], PHONE_APP_ID);
        }
        Err(error) => assert_eq!(error.status(), StatusCode::BAD_REQUEST),
    }
}
