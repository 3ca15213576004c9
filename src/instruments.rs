//! The metrics this crate records, through the [`metrics`] facade: nothing is recorded,
//! and nearly nothing spent, unless the application installs a recorder (for example
//! `metrics-exporter-prometheus`). Every label value is one of a fixed set of static
//! strings: never an openid, a token, an app id or anything else unbounded.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `mpauthx_validations_total` | counter | `outcome`: `ok`, `missing`, `malformed`, `invalid`, `signed_out`, `unavailable` | requests checked by `MpAuthLayer` (`missing` includes those an optional layer lets through) |
//! | `mpauthx_logins_total` | counter | `outcome`: `ok`, or the error's `error` code (`invalid_code`, `rate_limited`, `wechat_busy`, `wechat_error`, `too_many_requests`, `temporarily_unavailable`, …; WeChat's errcodes grouped this way) | logins (`MpAuth::authorize`) |
//! | `mpauthx_refreshes_total` | counter | `outcome`: as for logins (`ok`, `invalid_token`, `signed_out`, …) | refreshes |
//! | `mpauthx_phone_binds_total` | counter | `outcome`: as for logins (`ok`, `invalid_phone_code`, …) | phone binds (`MpAuth::bind_phone`) |
//! | `mpauthx_logouts_total` | counter | `scope`: `token`, `all`, `device`, `service` (a sign-out by the service) | logouts that revoked something |
//! | `mpauthx_throttled_total` | counter | `flow`: `login`, `phone_bind`; `limit`: `client`, `user` | attempts the login throttle refused |
//! | `mpauthx_wechat_request_duration_seconds` | histogram | `endpoint`: `jscode2session`, `stable_token`, `getuserphonenumber`; `outcome`: `ok` or the error's `error` code | WeChat calls, retries included |
//! | `mpauthx_access_token_refreshes_total` | counter | `mode`: `normal`, `force`; `outcome`: `ok` or the error's `error` code | access_token fetches from WeChat |
//! | `mpauthx_validation_cache_hits_total` | counter | `answer`: `live`, `unknown` | validations a `CachedTokenStore` answered itself |
//! | `mpauthx_validation_cache_misses_total` | counter | | validations it passed to the store |
//! | `mpauthx_validation_cache_invalidations_total` | counter | `cause`: `local` (a change through the cache), `pushed` (Redis told it), `flush` (everything dropped) | answers dropped before their time |

use metrics::counter;

/// The `outcome` of a validation.
#[derive(Clone, Copy)]
pub(crate) enum Validation {
    Ok,
    Missing,
    Malformed,
    Invalid,
    SignedOut,
    Unavailable,
}

/// Counts one validation.
pub(crate) fn validation(outcome: Validation) {
    // One call site per label value, the name a literal: each key is then a constant,
    // built at compile time (a name in a `const` would be rebuilt and hashed per call).
    match outcome {
        Validation::Ok => counter!("mpauthx_validations_total", "outcome" => "ok").increment(1),
        Validation::Missing => {
            counter!("mpauthx_validations_total", "outcome" => "missing").increment(1);
        }
        Validation::Malformed => {
            counter!("mpauthx_validations_total", "outcome" => "malformed").increment(1);
        }
        Validation::Invalid => {
            counter!("mpauthx_validations_total", "outcome" => "invalid").increment(1);
        }
        Validation::SignedOut => {
            counter!("mpauthx_validations_total", "outcome" => "signed_out").increment(1);
        }
        Validation::Unavailable => {
            counter!("mpauthx_validations_total", "outcome" => "unavailable").increment(1);
        }
    }
}

/// A flow of the login handlers, as metrics name it.
#[cfg(feature = "wechat")]
#[derive(Clone, Copy)]
pub(crate) enum Flow {
    Login,
    Refresh,
    PhoneBind,
}

#[cfg(feature = "wechat")]
impl Flow {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Refresh => "refresh",
            Self::PhoneBind => "phone_bind",
        }
    }
}

/// Counts one login, refresh or phone bind, `outcome` being `ok` or an error code.
#[cfg(feature = "wechat")]
pub(crate) fn flow(flow: Flow, outcome: &'static str) {
    match flow {
        Flow::Login => counter!("mpauthx_logins_total", "outcome" => outcome).increment(1),
        Flow::Refresh => counter!("mpauthx_refreshes_total", "outcome" => outcome).increment(1),
        Flow::PhoneBind => {
            counter!("mpauthx_phone_binds_total", "outcome" => outcome).increment(1);
        }
    }
}

/// Counts a logout that revoked `tokens` tokens (none: nothing is counted).
#[cfg(feature = "wechat")]
pub(crate) fn logout(scope: &'static str, tokens: usize) {
    if tokens > 0 {
        counter!("mpauthx_logouts_total", "scope" => scope).increment(1);
    }
}

/// Counts an attempt the login throttle refused.
#[cfg(feature = "wechat")]
pub(crate) fn throttled(flow: Flow, limit: &'static str) {
    counter!("mpauthx_throttled_total", "flow" => flow.name(), "limit" => limit).increment(1);
}

/// Records how long a call to a WeChat endpoint took.
#[cfg(feature = "wechat")]
pub(crate) fn wechat_call(
    endpoint: &'static str,
    outcome: &'static str,
    took: std::time::Duration,
) {
    metrics::histogram!(
        "mpauthx_wechat_request_duration_seconds",
        "endpoint" => endpoint,
        "outcome" => outcome
    )
    .record(took.as_secs_f64());
}

/// Counts an access_token fetch from WeChat.
#[cfg(feature = "wechat")]
pub(crate) fn access_token_refresh(force: bool, outcome: &'static str) {
    let mode = if force { "force" } else { "normal" };
    counter!("mpauthx_access_token_refreshes_total", "mode" => mode, "outcome" => outcome)
        .increment(1);
}

/// Counts a validation a cache answered, live or unknown.
pub(crate) fn cache_hit(live: bool) {
    if live {
        counter!("mpauthx_validation_cache_hits_total", "answer" => "live").increment(1);
    } else {
        counter!("mpauthx_validation_cache_hits_total", "answer" => "unknown").increment(1);
    }
}

/// Counts a validation a cache passed on to its store.
pub(crate) fn cache_miss() {
    counter!("mpauthx_validation_cache_misses_total").increment(1);
}

/// Why a cache dropped answers before their time.
#[derive(Clone, Copy)]
pub(crate) enum Invalidation {
    /// A change made through the cache.
    Local,
    /// Redis said the user's tokens changed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Pushed,
    /// Everything was dropped.
    Flush,
}

/// Counts an invalidation.
pub(crate) fn cache_invalidation(cause: Invalidation) {
    match cause {
        Invalidation::Local => {
            counter!("mpauthx_validation_cache_invalidations_total", "cause" => "local")
                .increment(1);
        }
        Invalidation::Pushed => {
            counter!("mpauthx_validation_cache_invalidations_total", "cause" => "pushed")
                .increment(1);
        }
        Invalidation::Flush => {
            counter!("mpauthx_validation_cache_invalidations_total", "cause" => "flush")
                .increment(1);
        }
    }
}
