//! Login throttling: [`LoginThrottle`], [`RateLimit`] and the rate limiters.

use std::{fmt, future::Future, net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use http::request::Parts;
use sha2::{Digest as _, Sha256};

use crate::store::StoreError;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use self::memory::MemoryRateLimiter;

/// The longest period a [`RateLimit`] may span: one day.
pub(crate) const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// A limit: at most `max` events at once, refilled at `max` per `period`.
///
/// `RateLimit::new(10, 60 s)` lets a client log in 10 times in a row, then once every
/// 6 seconds; after a minute of quiet it may again log in 10 times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    max: u32,
    period: Duration,
}

/// A [`RateLimit`] that cannot work: `max` is zero, or the period is shorter than a
/// millisecond per event or longer than one day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a rate limit needs 1 or more events over a period from {max} ms to one day")]
pub struct InvalidRateLimit {
    max: u32,
}

impl RateLimit {
    /// At most `max` events at once, refilled at `max` per `period`.
    pub fn new(max: u32, period: Duration) -> Result<Self, InvalidRateLimit> {
        let valid = max > 0 && period <= MAX_PERIOD && period.as_millis() >= u128::from(max);
        if valid {
            Ok(Self { max, period })
        } else {
            Err(InvalidRateLimit { max })
        }
    }

    /// The number of events allowed at once.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The time over which `max` events are refilled.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Milliseconds between two events at the steady rate.
    pub(crate) fn interval_ms(&self) -> u64 {
        // `new` bounds the period to a day, so this fits; at least 1 by construction.
        (self.period.as_millis() / u128::from(self.max)) as u64
    }

    /// How far ahead of the steady rate a burst may run, in milliseconds.
    pub(crate) fn tolerance_ms(&self) -> u64 {
        self.interval_ms() * u64::from(self.max - 1)
    }
}

/// Whether an event is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and counted.
    Allowed,
    /// Over the limit; not counted. Try again after this long.
    Limited {
        /// How long until the next event is allowed.
        retry_after: Duration,
    },
}

/// One step of the generic cell rate algorithm, on a stored "theoretical arrival time"
/// (`tat`, ms): the decision, and the `tat` to store when allowed.
pub(crate) fn gcra(now_ms: u64, tat_ms: Option<u64>, limit: &RateLimit) -> (Decision, u64) {
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let allowed_at = tat.saturating_sub(limit.tolerance_ms());
    if now_ms < allowed_at {
        let retry_after = Duration::from_millis(allowed_at - now_ms);
        (Decision::Limited { retry_after }, tat)
    } else {
        (Decision::Allowed, tat + limit.interval_ms())
    }
}

/// The future of a [`RateLimiter`] check.
pub(crate) type CheckFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send + 'a>>;

/// Where throttle counters live: one timestamp per key.
///
/// Logins are not the hot path, so the check returns a boxed future and the trait can be
/// used as `dyn RateLimiter`.
pub trait RateLimiter: fmt::Debug + Send + Sync + 'static {
    /// Counts one event for `key` against `limit`, unless it is over the limit.
    /// Atomic: concurrent checks of one key never together exceed the limit.
    fn check<'a>(&'a self, key: &'a str, limit: &'a RateLimit) -> CheckFuture<'a>;
}

/// Computes the client key of a login request, e.g. the peer's IP address.
type ClientKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// Login limits per client and per user; give it to
/// [`MpAuthBuilder::with_login_throttle`](crate::MpAuthBuilder::with_login_throttle).
/// Cheap to clone. It caps how often one client (an IP address, say) and one user may
/// log in, and answers 429 with `Retry-After` beyond the cap.
///
/// Each login is an exchange with WeChat, and WeChat's own rate limit (errcode 45011)
/// counts per app: a client that floods `POST /auth/authorize` uses up the quota of
/// every user. A [`LoginThrottle`] refuses such a client before WeChat is asked, and
/// caps how often one user can mint tokens (each login may evict an older device).
///
/// Two limits, each optional:
/// - **per client**: counted for every login attempt that gets as far as asking WeChat
///   (a request the handler refuses as malformed costs nothing and counts nothing). The
///   client key comes from a function of the request parts that you choose: the peer
///   address, or a header your reverse proxy sets.
/// - **per user**: counted for every code WeChat accepts, by the user's id, so a user who
///   logs in from many addresses is capped all the same.
///
/// A limit is a [`RateLimit`]: at most `max` logins at once, refilled at `max` per
/// `period` (the generic cell rate algorithm: one timestamp per key, exact
/// `Retry-After`). The counters live in a [`RateLimiter`]: [`MemoryRateLimiter`] for one
/// process, or [`RedisTokenStore`](crate::RedisTokenStore), which keeps them beside the
/// tokens so that every instance of the application shares them.
///
/// ```
/// use std::{net::SocketAddr, time::Duration};
/// use mpauthx::{
///     LoginThrottle, MemoryRateLimiter, MemoryTokenStore, MpAuth, MpAuthConfig, RateLimit,
///     SqliteUserStore,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
/// let users = SqliteUserStore::open_in_memory().await?;
/// let throttle = LoginThrottle::new(MemoryRateLimiter::new())
///     // With axum: serve with `into_make_service_with_connect_info::<SocketAddr>()`.
///     .per_client(RateLimit::new(20, Duration::from_secs(60))?, |parts| {
///         parts
///             .extensions
///             .get::<axum::extract::ConnectInfo<SocketAddr>>()
///             .map(|info| info.0.ip().to_string())
///     })
///     .per_user(RateLimit::new(10, Duration::from_secs(60))?);
/// let auth = MpAuth::builder(config, MemoryTokenStore::new(), users)
///     .with_login_throttle(throttle)
///     .build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoginThrottle {
    limiter: Arc<dyn RateLimiter>,
    per_client: Option<(RateLimit, Arc<ClientKeyFn>)>,
    per_user: Option<RateLimit>,
}

impl fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("limiter", &self.limiter)
            .field(
                "per_client",
                &self.per_client.as_ref().map(|(limit, _)| limit),
            )
            .field("per_user", &self.per_user)
            .finish()
    }
}

/// The longest client key kept as it is; longer keys are kept as their SHA-256.
const MAX_PLAIN_KEY_LEN: usize = 64;

impl LoginThrottle {
    /// A throttle keeping its counters in `limiter`, with no limit yet.
    pub fn new(limiter: impl RateLimiter) -> Self {
        Self {
            limiter: Arc::new(limiter),
            per_client: None,
            per_user: None,
        }
    }

    /// Limits login attempts per client. `client_key` names the client of a request;
    /// requests it returns `None` for are not limited per client.
    ///
    /// Use a key the client cannot choose: the peer address, or a header set by your
    /// own reverse proxy (which must overwrite any value the client sent). Keys over 64
    /// bytes are stored as their SHA-256.
    pub fn per_client<F>(mut self, limit: RateLimit, client_key: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.per_client = Some((limit, Arc::new(client_key)));
        self
    }

    /// Limits logins per user: counted for every code WeChat accepts.
    pub fn per_user(mut self, limit: RateLimit) -> Self {
        self.per_user = Some(limit);
        self
    }

    /// The client key of a request, if the throttle limits clients and names this one.
    pub fn client_key(&self, parts: &Parts) -> Option<String> {
        let (_, key) = self.per_client.as_ref()?;
        key(parts)
    }

    /// Counts a login attempt of `client` (a key from [`client_key`](Self::client_key))
    /// for the mini-program `sku`: each sku sharing a limiter counts its clients apart.
    pub async fn check_client(&self, sku: &str, client: &str) -> Result<Decision, StoreError> {
        match &self.per_client {
            Some((limit, _)) => {
                let key = format!("{sku}:{client}");
                self.check("client", &key, limit).await
            }
            None => Ok(Decision::Allowed),
        }
    }

    /// Counts a login of the user `sku` / `user_id`.
    pub async fn check_user(&self, sku: &str, user_id: &str) -> Result<Decision, StoreError> {
        match &self.per_user {
            Some(limit) => {
                let key = format!("{sku}:{user_id}");
                self.check("user", &key, limit).await
            }
            None => Ok(Decision::Allowed),
        }
    }

    async fn check(
        &self,
        scope: &str,
        key: &str,
        limit: &RateLimit,
    ) -> Result<Decision, StoreError> {
        let plain = key.len() <= MAX_PLAIN_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
        let key = if plain {
            format!("{scope}:{key}")
        } else {
            format!("{scope}:#{}", hex::encode(Sha256::digest(key.as_bytes())))
        };
        self.limiter.check(&key, limit).await
    }
}

/// The client's address as a reverse proxy that appends to `header` reports it
/// (`X-Forwarded-For` style): the last entry of the last line of the header, if it
/// parses as an IP address. `None` when the header is missing, not text, or its last
/// entry is empty or not an address: fall back to the peer address then, so that a
/// request never escapes the per-client limit by its headers.
///
/// Only the last entry counts: the proxy appended it, whatever the client sent before.
///
/// ```
/// use http::{HeaderMap, HeaderName, HeaderValue};
/// use mpauthx::forwarded_ip;
///
/// let xff = HeaderName::from_static("x-forwarded-for");
/// let mut headers = HeaderMap::new();
/// headers.append(&xff, HeaderValue::from_static("6.6.6.6, 10.0.0.1"));
/// headers.append(&xff, HeaderValue::from_static("203.0.113.7"));
/// assert_eq!(forwarded_ip(&headers, &xff), Some("203.0.113.7".parse()?));
/// headers.insert(&xff, HeaderValue::from_static("203.0.113.7,"));
/// assert_eq!(forwarded_ip(&headers, &xff), None);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn forwarded_ip(headers: &http::HeaderMap, header: &http::HeaderName) -> Option<IpAddr> {
    let last_line = headers.get_all(header).iter().next_back()?;
    let last = last_line.to_str().ok()?.rsplit(',').next()?.trim();
    // `[v6]` and `v4:port` forms some proxies write.
    let last = last
        .strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .map_or(last, |(ip, _)| ip);
    last.parse()
        .ok()
        .or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The per-client throttle key of an address: an IPv4 address as it is, an IPv6
/// address by its /64 (one subscriber's whole network), so that rotating through the
/// addresses of one allocation buys no extra logins. IPv4-mapped IPv6 addresses count
/// as IPv4.
///
/// ```
/// use mpauthx::client_ip_key;
///
/// let a = client_ip_key("2001:db8:1:2::1".parse()?);
/// let b = client_ip_key("2001:db8:1:2:ffff::9".parse()?);
/// assert_eq!(a, b);
/// assert_eq!(a, "2001:db8:1:2::/64");
/// assert_eq!(client_ip_key("::ffff:203.0.113.7".parse()?), "203.0.113.7");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn client_ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn xff(lines: &[&[u8]]) -> Option<IpAddr> {
        let name = HeaderName::from_static("x-forwarded-for");
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(&name, HeaderValue::from_bytes(line).unwrap());
        }
        forwarded_ip(&headers, &name)
    }

    #[test]
    fn forwarded_ips_never_fail_open_to_a_made_up_key() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(xff(&[]), None, "no header: the peer counts");
        assert_eq!(xff(&[b"1.2.3.4"]), ip("1.2.3.4"));
        assert_eq!(xff(&[b"9.9.9.9, 1.2.3.4"]), ip("1.2.3.4"));
        assert_eq!(xff(&[b"1.2.3.4,"]), None, "an empty last entry");
        assert_eq!(xff(&[b"1.2.3.4, "]), None);
        assert_eq!(xff(&[b"\xff\xfe"]), None, "not text");
        assert_eq!(
            xff(&[b"9.9.9.9", b"1.2.3.4"]),
            ip("1.2.3.4"),
            "the last line"
        );
        assert_eq!(
            xff(&[b"1.2.3.4", b"x"]),
            None,
            "a last line that is no address"
        );
        assert_eq!(xff(&[b"evil-string-of-any-length"]), None);
        assert_eq!(xff(&[b"[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(xff(&[b"203.0.113.7:8080"]), ip("203.0.113.7"));
        assert_eq!(xff(&[b"unknown"]), None);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |s: &str| client_ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:aa:bb:1:2:3:4"), key("2001:db8:aa:bb::"));
        assert_ne!(key("2001:db8:aa:bb::1"), key("2001:db8:aa:bc::1"));
        assert_eq!(key("10.1.2.3"), "10.1.2.3");
        assert_ne!(key("10.1.2.3"), key("10.1.2.4"));
    }

    fn limit(max: u32, secs: u64) -> RateLimit {
        RateLimit::new(max, Duration::from_secs(secs)).unwrap()
    }

    /// Runs `n` events at `now` through the algorithm; the decisions and the final tat.
    fn burst(now: u64, tat: Option<u64>, limit: &RateLimit, n: usize) -> (Vec<Decision>, u64) {
        let mut tat = tat;
        let mut decisions = Vec::new();
        for _ in 0..n {
            let (decision, next) = gcra(now, tat, limit);
            decisions.push(decision);
            if decision == Decision::Allowed {
                tat = Some(next);
            }
        }
        (decisions, tat.unwrap_or(now))
    }

    #[test]
    fn a_burst_of_max_is_allowed_then_the_steady_rate() {
        let limit = limit(3, 3);
        let (decisions, tat) = burst(10_000, None, &limit, 4);
        assert_eq!(&decisions[..3], &[Decision::Allowed; 3]);
        assert_eq!(
            decisions[3],
            Decision::Limited {
                retry_after: Duration::from_millis(1000)
            }
        );
        // One interval later exactly one more is allowed.
        let (decisions, _) = burst(11_000, Some(tat), &limit, 2);
        assert_eq!(decisions[0], Decision::Allowed);
        assert!(matches!(decisions[1], Decision::Limited { .. }));
    }

    #[test]
    fn after_a_quiet_period_the_full_burst_is_back() {
        let limit = limit(3, 3);
        let (_, tat) = burst(10_000, None, &limit, 3);
        let (decisions, _) = burst(10_000 + 3_000, Some(tat), &limit, 4);
        assert_eq!(&decisions[..3], &[Decision::Allowed; 3]);
        assert!(matches!(decisions[3], Decision::Limited { .. }));
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(10, Duration::from_millis(5)).is_err());
        assert!(RateLimit::new(1, MAX_PERIOD + Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(1, Duration::from_millis(1)).is_ok());
        assert!(RateLimit::new(1, MAX_PERIOD).is_ok());
    }

    #[test]
    fn long_and_odd_client_keys_are_counted_apart() {
        let throttle =
            LoginThrottle::new(MemoryRateLimiter::new()).per_client(limit(1, 60), |_| None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let long = "x".repeat(100);
            assert_eq!(
                throttle.check_client("demo", &long).await.unwrap(),
                Decision::Allowed
            );
            assert!(matches!(
                throttle.check_client("demo", &long).await.unwrap(),
                Decision::Limited { .. }
            ));
            // Another key, sharing a prefix, is counted apart.
            let other = format!("{long}y");
            assert_eq!(
                throttle.check_client("demo", &other).await.unwrap(),
                Decision::Allowed
            );
            assert_eq!(
                throttle.check_client("demo", "with space").await.unwrap(),
                Decision::Allowed
            );
            // The same client of another mini-program has a counter of its own.
            assert_eq!(
                throttle.check_client("shop", &long).await.unwrap(),
                Decision::Allowed
            );
            assert!(matches!(
                throttle.check_client("demo", &long).await.unwrap(),
                Decision::Limited { .. }
            ));
        });
    }
}
