//! The spans of the flows: one per login, refresh and phone bind, named `login`,
//! `refresh` and `phone_bind`, with these fields (never a secret):
//!
//! | field | in | value |
//! |---|---|---|
//! | `outcome` | all | `ok`, or the error's `oauth_error()` (`invalid_code`, `invalid_phone_code`, `temporarily_unavailable`, …) |
//! | `user` | all | the user's id (openid, or unionid under `Identity::UnionIdWhenPresent`) once known |
//! | `token` | `login`, `refresh` | the issued token's public id ([`TokenHash::id`](crate::TokenHash::id)) |
//! | `wechat_ms` | `login`, `phone_bind` | how long WeChat took: `jscode2session` for a login, `getuserphonenumber` (access token included) for a bind |

use std::{future::Future, time::Instant};

use tracing::{Instrument as _, Span, field::Empty};

use super::Error;
use crate::instruments::{self, Flow};

fn login() -> Span {
    tracing::info_span!(
        "login",
        outcome = Empty,
        user = Empty,
        token = Empty,
        wechat_ms = Empty
    )
}

fn refresh() -> Span {
    tracing::info_span!("refresh", outcome = Empty, user = Empty, token = Empty)
}

fn phone_bind() -> Span {
    tracing::info_span!(
        "phone_bind",
        outcome = Empty,
        user = Empty,
        wechat_ms = Empty
    )
}

/// Runs `flow` in the span of `which` and records its outcome there and in the flow's
/// counter.
pub(super) async fn traced<T>(
    which: Flow,
    flow: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let span = match which {
        Flow::Login => login(),
        Flow::Refresh => refresh(),
        Flow::PhoneBind => phone_bind(),
    };
    let result = flow.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.oauth_error(),
    };
    span.record("outcome", outcome);
    instruments::flow(which, outcome);
    result
}

/// Records on the current span how long WeChat took since `started`.
pub(super) fn record_wechat(started: Instant) {
    Span::current().record("wechat_ms", started.elapsed().as_millis() as u64);
}

/// Records a field of the current span.
pub(super) fn record(field: &'static str, value: &str) {
    Span::current().record(field, value);
}
