//! WeChat's wire format: the queries and bodies its endpoints read, the errcodes and
//! the JSON they answer.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::wechat::Session;

/// A WeChat errcode with its errmsg, as WeChat's endpoints answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("errcode {errcode}: {errmsg}")]
#[non_exhaustive]
pub struct Errcode {
    /// WeChat's errcode.
    pub errcode: i64,
    /// WeChat's errmsg.
    pub errmsg: &'static str,
}

impl Errcode {
    /// -1: the simulator could not draw a random value (WeChat's "system error").
    pub const SYSTEM_ERROR: Self = Self::new(-1, "system error");
    /// 40001: the access token is unknown, revoked or superseded.
    pub const INVALID_CREDENTIAL: Self = Self::new(
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    /// 40002: `grant_type` is not `authorization_code` (`jscode2session`) or
    /// `client_credential` (the access token endpoints).
    pub const INVALID_GRANT_TYPE: Self = Self::new(40002, "invalid grant_type");
    /// 40013: the app id is not this simulator's.
    pub const INVALID_APP_ID: Self = Self::new(40013, "invalid appid");
    /// 40014: the access token does not have the shape of one.
    pub const INVALID_ACCESS_TOKEN: Self = Self::new(40014, "invalid access_token");
    /// 40029: the code is unknown, expired or forgotten (and, for a phone code, used,
    /// or not the given openid's).
    pub const INVALID_CODE: Self = Self::new(40029, "invalid code");
    /// 40125: the secret is not this simulator's.
    pub const INVALID_APP_SECRET: Self = Self::new(40125, "invalid appsecret");
    /// 40163: the code was exchanged before.
    pub const CODE_USED: Self = Self::new(40163, "code been used");
    /// 41001: no `access_token` parameter.
    pub const MISSING_ACCESS_TOKEN: Self = Self::new(41001, "access_token missing");
    /// 41002: no `appid` parameter.
    pub const MISSING_APP_ID: Self = Self::new(41002, "appid missing");
    /// 41004: no `secret` parameter.
    pub const MISSING_APP_SECRET: Self = Self::new(41004, "appsecret missing");
    /// 41008: no `js_code` parameter.
    pub const MISSING_CODE: Self = Self::new(41008, "missing code");
    /// 42001: the access token has expired.
    pub const ACCESS_TOKEN_EXPIRED: Self = Self::new(42001, "access_token expired");
    /// 45009: no force refresh left today, or one less than 30 seconds after the last.
    pub const API_QUOTA: Self = Self::new(45009, "reach max api daily quota limit");
    /// 47001: the body is not JSON of the expected shape, or lacks a required field.
    pub const DATA_FORMAT_ERROR: Self = Self::new(47001, "data format error");

    pub(super) const fn new(errcode: i64, errmsg: &'static str) -> Self {
        Self { errcode, errmsg }
    }
}

/// What a `jscode2session` query asks for.
pub(super) struct Query<'a> {
    pub(super) app_id: Cow<'a, str>,
    pub(super) secret: Cow<'a, str>,
    pub(super) code: Cow<'a, str>,
}

/// The `appid`, `secret` and `js_code` of a `jscode2session` query, or the errcode
/// WeChat answers a query without them (or with another `grant_type`).
pub(super) fn parse_query(query: &str) -> Result<Query<'_>, Errcode> {
    let mut app_id = None;
    let mut secret = None;
    let mut code = None;
    let mut grant_type = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "appid" => &mut app_id,
            "secret" => &mut secret,
            "js_code" => &mut code,
            "grant_type" => &mut grant_type,
            _ => continue,
        };
        if !value.is_empty() {
            slot.get_or_insert(value);
        }
    }
    match (app_id, secret, code) {
        (None, ..) => Err(Errcode::MISSING_APP_ID),
        (_, None, _) => Err(Errcode::MISSING_APP_SECRET),
        (.., None) => Err(Errcode::MISSING_CODE),
        _ if grant_type.as_deref() != Some("authorization_code") => {
            Err(Errcode::INVALID_GRANT_TYPE)
        }
        (Some(app_id), Some(secret), Some(code)) => Ok(Query {
            app_id,
            secret,
            code,
        }),
    }
}

/// The JSON body WeChat answers: `{"session_key", "openid", "unionid"?}` or
/// `{"errcode", "errmsg"}`.
pub(super) fn answer(result: &Result<Session, Errcode>) -> String {
    to_json(result.as_ref().map(|session| SessionAnswer {
        session_key: session.session_key.expose_secret(),
        openid: &session.open_id,
        unionid: session.union_id.as_deref(),
    }))
}

/// `answer` as JSON, or the errcode as `{"errcode", "errmsg"}`.
fn to_json<T: Serialize>(answer: Result<T, &Errcode>) -> String {
    let json = match answer {
        Ok(answer) => serde_json::to_string(&answer),
        Err(e) => serde_json::to_string(&ErrorAnswer {
            errcode: e.errcode,
            errmsg: e.errmsg,
        }),
    };
    json.expect("answers serialize")
}

/// What `GET /cgi-bin/token` or `POST /cgi-bin/stable_token` asks for.
#[derive(Default, Deserialize)]
pub(super) struct TokenRequest {
    #[serde(default)]
    pub(super) grant_type: Option<String>,
    #[serde(default, rename = "appid")]
    pub(super) app_id: Option<String>,
    #[serde(default)]
    pub(super) secret: Option<String>,
    /// Only `stable_token` reads it.
    #[serde(default)]
    pub(super) force_refresh: bool,
}

/// The `grant_type`, `appid` and `secret` of a `GET /cgi-bin/token` query (the first
/// non-empty value of each).
pub(super) fn parse_token_query(query: &str) -> TokenRequest {
    let mut request = TokenRequest::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "grant_type" => &mut request.grant_type,
            "appid" => &mut request.app_id,
            "secret" => &mut request.secret,
            _ => continue,
        };
        if !value.is_empty() {
            slot.get_or_insert_with(|| value.into_owned());
        }
    }
    request
}

/// The first non-empty value of parameter `name` in a query, if any: the value WeChat
/// reads (and so the one the parsers above keep).
pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value)
}

/// The first non-empty `access_token` of a query, if any.
pub(super) fn access_token_param(query: &str) -> Option<Cow<'_, str>> {
    query_param(query, "access_token")
}

/// The body of `POST /wxa/business/getuserphonenumber`.
#[derive(Deserialize)]
pub(super) struct PhoneNumberRequest {
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default, rename = "openid")]
    pub(super) open_id: Option<String>,
}

/// The JSON body the access token endpoints answer: `{"access_token", "expires_in"}` or
/// `{"errcode", "errmsg"}`.
pub(super) fn token_answer(result: &Result<(String, u64), Errcode>) -> String {
    to_json(
        result
            .as_ref()
            .map(|(access_token, expires_in)| TokenAnswer {
                access_token,
                expires_in: *expires_in,
            }),
    )
}

/// The JSON body `getuserphonenumber` answers: `{"errcode": 0, "errmsg": "ok",
/// "phone_info"}` or `{"errcode", "errmsg"}`.
pub(super) fn phone_number_answer(result: &Result<PhoneInfoJson<'_>, Errcode>) -> String {
    to_json(result.as_ref().map(|phone_info| PhoneNumberAnswer {
        errcode: 0,
        errmsg: "ok",
        phone_info,
    }))
}

/// A phone number as WeChat describes it, in `phone_info` and in the legacy encrypted
/// phone data alike.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PhoneInfoJson<'a> {
    pub(super) phone_number: &'a str,
    pub(super) pure_phone_number: &'a str,
    pub(super) country_code: CountryCode<'a>,
    pub(super) watermark: WatermarkJson<'a>,
}

/// WeChat sends a country code as a string (`"86"`) or as a number (`86`).
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum CountryCode<'a> {
    Text(&'a str),
    Number(u16),
}

/// The watermark of a phone number: when, and for which app.
#[derive(Serialize)]
pub(super) struct WatermarkJson<'a> {
    pub(super) timestamp: u64,
    pub(super) appid: &'a str,
}

/// A successful access token answer.
#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    expires_in: u64,
}

/// A successful `getuserphonenumber` answer.
#[derive(Serialize)]
struct PhoneNumberAnswer<'a> {
    errcode: i64,
    errmsg: &'static str,
    phone_info: &'a PhoneInfoJson<'a>,
}

/// A successful `jscode2session` answer, in WeChat's field order.
#[derive(Serialize)]
struct SessionAnswer<'a> {
    session_key: &'a str,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unionid: Option<&'a str>,
}

/// A refused `jscode2session`.
#[derive(Serialize)]
struct ErrorAnswer {
    errcode: i64,
    errmsg: &'static str,
}
