//! WeChat's wire format for `jscode2session`: the query it reads, the errcodes and the
//! JSON it answers.

use std::borrow::Cow;

use serde::Serialize;

use crate::wechat::Session;

/// A WeChat errcode with its errmsg, as `jscode2session` answers it.
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
    /// 40002: `grant_type` is not `authorization_code`.
    pub const INVALID_GRANT_TYPE: Self = Self::new(40002, "invalid grant_type");
    /// 40013: the app id is not this simulator's.
    pub const INVALID_APP_ID: Self = Self::new(40013, "invalid appid");
    /// 40029: the code is unknown, expired or forgotten.
    pub const INVALID_CODE: Self = Self::new(40029, "invalid code");
    /// 40125: the secret is not this simulator's.
    pub const INVALID_APP_SECRET: Self = Self::new(40125, "invalid appsecret");
    /// 40163: the code was exchanged before.
    pub const CODE_USED: Self = Self::new(40163, "code been used");
    /// 41002: no `appid` parameter.
    pub const MISSING_APP_ID: Self = Self::new(41002, "appid missing");
    /// 41004: no `secret` parameter.
    pub const MISSING_APP_SECRET: Self = Self::new(41004, "appsecret missing");
    /// 41008: no `js_code` parameter.
    pub const MISSING_CODE: Self = Self::new(41008, "missing code");

    const fn new(errcode: i64, errmsg: &'static str) -> Self {
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
    let json = match result {
        Ok(session) => serde_json::to_string(&SessionAnswer {
            session_key: session.session_key.expose_secret(),
            openid: &session.open_id,
            unionid: session.union_id.as_deref(),
        }),
        Err(e) => serde_json::to_string(&ErrorAnswer {
            errcode: e.errcode,
            errmsg: e.errmsg,
        }),
    };
    json.expect("answers serialize")
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
