//! Throttle counters in Redis, beside the tokens: shared by every instance.

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use super::{CheckFuture, Decision, RateLimit, RateLimiter};
use crate::store::RedisTokenStore;

/// One step of the generic cell rate algorithm on Redis's clock, atomic.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// Keeps the counters at `<prefix>:throttle:<scope>:<key>`, each a timestamp that expires
/// once its limit has refilled. Uses the store's connection and command timeout: while
/// Redis is down, logins answer 503 (they could not issue a token either).
impl RateLimiter for RedisTokenStore {
    fn check<'a>(&'a self, key: &'a str, limit: &'a RateLimit) -> CheckFuture<'a> {
        Box::pin(async move {
            let redis_key = format!("{}:throttle:{key}", self.key_prefix());
            let args = [limit.interval_ms(), limit.tolerance_ms()];
            let wait_ms: u64 = self.invoke_script(&GCRA, &redis_key, &args).await?;
            Ok(match wait_ms {
                0 => Decision::Allowed,
                ms => Decision::Limited {
                    retry_after: Duration::from_millis(ms),
                },
            })
        })
    }
}
