//! [`MemoryRateLimiter`]: throttle counters in this process.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use super::{CheckFuture, Decision, RateLimit, RateLimiter, gcra};
use crate::store::now_millis;

/// The default number of keys a [`MemoryRateLimiter`] holds.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// Throttle counters in this process: for a single instance, or for tests. Behind a load
/// balancer each instance counts on its own; use [`RedisTokenStore`](crate::RedisTokenStore)
/// to share the counts.
///
/// It holds at most `capacity` keys. Keys whose limit has fully refilled are dropped
/// first; when every key is still counting, those closest to refilled go, so a flood of
/// new clients can neither grow memory nor lock out the clients already counted the
/// most.
pub struct MemoryRateLimiter {
    capacity: usize,
    /// Key → the "theoretical arrival time" of its next event, ms since the epoch.
    tats: Mutex<HashMap<Box<str>, u64>>,
}

/// Shows the size, not the keys: they are client addresses and user ids.
impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRateLimiter {
    /// An empty limiter holding up to 100,000 keys.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty limiter holding up to `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, u64>> {
        self.tats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decide(&self, key: &str, limit: &RateLimit) -> Decision {
        let now = now_millis();
        let mut tats = self.lock();
        let (decision, tat) = gcra(now, tats.get(key).copied(), limit);
        if decision == Decision::Allowed {
            match tats.get_mut(key) {
                Some(stored) => *stored = tat,
                None => {
                    if tats.len() >= self.capacity {
                        make_room(&mut tats, now, self.capacity);
                    }
                    tats.insert(key.into(), tat);
                }
            }
        }
        decision
    }
}

/// Drops refilled keys; if that is not enough, the half closest to refilled.
fn make_room(tats: &mut HashMap<Box<str>, u64>, now: u64, capacity: usize) {
    tats.retain(|_, tat| *tat > now);
    if tats.len() >= capacity {
        let mut times: Vec<u64> = tats.values().copied().collect();
        let middle = times.len() / 2;
        let (_, cut, _) = times.select_nth_unstable(middle);
        let cut = *cut;
        tats.retain(|_, tat| *tat > cut);
    }
}

impl RateLimiter for MemoryRateLimiter {
    fn check<'a>(&'a self, key: &'a str, limit: &'a RateLimit) -> CheckFuture<'a> {
        let decision = self.decide(key, limit);
        Box::pin(async move { Ok(decision) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_of_new_keys_stays_within_capacity() {
        let limiter = MemoryRateLimiter::with_capacity(100);
        let limit = RateLimit::new(1, Duration::from_secs(60)).unwrap();
        for i in 0..1_000 {
            assert_eq!(limiter.decide(&format!("k{i}"), &limit), Decision::Allowed);
            assert!(limiter.len() <= 100);
        }
        // The newest keys are still counted.
        assert!(matches!(
            limiter.decide("k999", &limit),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn debug_shows_no_keys() {
        let limiter = MemoryRateLimiter::with_capacity(10);
        let limit = RateLimit::new(1, Duration::from_secs(60)).unwrap();
        limiter.decide("client:203.0.113.9", &limit);
        let debug = format!("{limiter:?}");
        assert!(!debug.contains("203.0.113.9"), "{debug}");
        assert!(debug.contains("len: 1"), "{debug}");
    }

    #[test]
    fn keys_are_counted_apart() {
        let limiter = MemoryRateLimiter::new();
        let limit = RateLimit::new(2, Duration::from_secs(60)).unwrap();
        assert_eq!(limiter.decide("a", &limit), Decision::Allowed);
        assert_eq!(limiter.decide("a", &limit), Decision::Allowed);
        assert!(matches!(
            limiter.decide("a", &limit),
            Decision::Limited { .. }
        ));
        assert_eq!(limiter.decide("b", &limit), Decision::Allowed);
    }
}
