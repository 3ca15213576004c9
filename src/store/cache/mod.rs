//! [`CachedTokenStore`]: an opt-in, in-process cache of [`TokenStore::validate`] answers.

use std::{
    fmt,
    future::Future,
    num::NonZeroUsize,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use pin_project::pin_project;
use quick_cache::{
    OptionsBuilder, UnitWeighter,
    sync::{Cache, DefaultLifecycle},
};

use self::{
    key::{BuildPassThrough, Key, Keys},
    stripes::Stripes,
};
#[cfg(feature = "redis")]
use super::StoreBuildError;
#[cfg(feature = "redis")]
use super::redis::{RedisTokenStore, Tracker};
use super::{
    IssueOptions, Issued, SignOutReason, StoreError, TokenInfo, TokenStatus, TokenStore, now_millis,
};
use crate::{
    instruments::{self, Invalidation},
    token::{ParsedToken, Sku, Token, TokenHash},
};

/// How long [`CachedTokenStore`] keeps an answer unless told otherwise: one second.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// The longest TTL [`CachedTokenStore::with_ttl`] accepts: one minute.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long a tracked cache keeps an answer unless told otherwise: five minutes, a
/// bound for what no push could tell (see [`CachedTokenStore::tracking`]).
#[cfg(feature = "redis")]
const DEFAULT_TRACKING_TTL: Duration = Duration::from_secs(300);

/// The longest TTL of a tracked cache: an hour.
const MAX_TRACKING_TTL: Duration = Duration::from_secs(3600);

mod key;
mod stripes;

/// How many live tokens, and separately how many unknown ones, [`CachedTokenStore`]
/// keeps unless told otherwise: about 2.5 MB for both tables, full.
///
/// An entry takes about 110 bytes (key, value, and the eviction policy's bookkeeping),
/// up to twice that as the tables grow in powers of two.
const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// The largest capacity [`CachedTokenStore::with_capacity`] and
/// [`CachedTokenStore::with_negative_capacity`] accept: 2^24 entries.
const MAX_CACHE_CAPACITY: usize = 1 << 24;

/// A [`TokenStore`] that remembers [`validate`](TokenStore::validate) answers: in front
/// of any store for a short time (the TTL mode, [`new`](Self::new)), or in front of
/// [`RedisTokenStore`](crate::RedisTokenStore) until Redis says the user's tokens
/// changed (the tracking mode, [`tracking`](CachedTokenStore::tracking)).
///
/// It wraps the store and passes every other operation through, forgetting what the
/// operation may have changed. Configure it before cloning: clones share one cache, and
/// each `with_*` call starts a new, empty one (in tracking mode, on the same tracking).
///
/// Every request behind [`MpAuthLayer`](crate::MpAuthLayer) asks the token store whether
/// its token is live; with [`RedisTokenStore`](crate::RedisTokenStore) that is one round
/// trip per request. A cached answer costs none.
///
/// # The two modes
///
/// - **Tracking** (recommended with Redis 6 or later): Redis pushes every change to a
///   user's tokens, by any server, and the push drops the user's answers here within
///   milliseconds; while the push channel is down the cache is flushed and bypassed.
///   See [`tracking`](CachedTokenStore::tracking) for what it guarantees and assumes.
/// - **TTL** (any store): **a cached answer is not checked again until it expires.** A
///   token revoked by another process (another server sharing the same Redis, or an
///   administrator deleting keys), or one that expired in the store, keeps being
///   honoured by this process for up to the cache's TTL (one second by default, one
///   minute at most). Choose the TTL as the longest time a logout on one server may go
///   unnoticed on another.
///
/// In both, changes made through the wrapper itself ([`revoke`], [`revoke_hash`],
/// [`revoke_all`], [`rotate`], [`issue`], [`sign_out`](TokenStore::sign_out)) take
/// effect in this process at once.
///
/// What is cached, and what is not:
///
/// - **Live tokens**, keyed by a 128-bit keyed hash of the token (SipHash-1-3-128
///   under a key drawn for each cache), never by its text, for the TTL counted from
///   before the store was asked, and never past the token's own expiry.
/// - **Unknown tokens** (a well-formed token the store does not hold), for the same TTL,
///   in a separate table, so that a flood of made-up tokens cannot push live ones out.
///   This is safe because a token's secret is 256 random bits drawn at issue (and at
///   rotation, which draws a new token): a token unknown now becomes live only if that
///   exact text is issued later, which the crate's own [`Token::generate`] and
///   [`Token::successor_of`] never do, or if a login that evicted it is taken back
///   ([`TokenStore::undo_issue`], within the retry grace), a change to its user that
///   drops the answer here (through this wrapper, or pushed in tracking mode; another
///   server's cache in the TTL mode may refuse the restored device for up to its TTL).
///   An application that [`issue`]s tokens it did not draw itself should issue them
///   through this wrapper or turn negative caching off with
///   [`with_negative_capacity(0)`].
/// - **Sign-out notices never** (they are rare, and the store answers them).
/// - **Errors never.** A store that cannot answer makes `validate` fail (a 503 behind the
///   layer) as soon as the cached answer for that token has expired.
///
/// Both tables have a fixed capacity ([`with_capacity`], [`with_negative_capacity`]) and
/// evict with [`quick_cache`]'s CLOCK-Pro / S3-FIFO-like policy: O(1) per insertion,
/// and scan resistant, so that tokens seen once do not evict tokens seen often. A hit
/// hashes the token once with SipHash (a miss also computes the SHA-256 the store needs),
/// takes a shard's read lock and allocates nothing.
///
/// A change to a user's tokens drops that user's answers in O(1): every answer carries
/// the generation of its user's *stripe* (one of 8,192 counters, by a keyed hash of the
/// user) read before the store was asked, and is good only while the stripe has not
/// moved. A change to one user also drops the answers of the users sharing its stripe,
/// which then cost one lookup each.
///
/// [`revoke`]: TokenStore::revoke
/// [`revoke_hash`]: TokenStore::revoke_hash
/// [`revoke_all`]: TokenStore::revoke_all
/// [`rotate`]: TokenStore::rotate
/// [`issue`]: TokenStore::issue
/// [`with_capacity`]: CachedTokenStore::with_capacity
/// [`with_negative_capacity`]: CachedTokenStore::with_negative_capacity
/// [`with_negative_capacity(0)`]: CachedTokenStore::with_negative_capacity
/// [`Token::generate`]: crate::Token::generate
/// [`Token::successor_of`]: crate::Token::successor_of
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use mpauthx::{CachedTokenStore, IssueOptions, MemoryTokenStore, Sku, Token, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In production: `CachedTokenStore::new(RedisTokenStore::connect(url).await?)`.
/// let store = CachedTokenStore::new(MemoryTokenStore::new())
///     .with_ttl(Duration::from_millis(500))
///     .with_capacity(50_000);
/// let sku = Sku::new("demo")?;
/// let token = Token::generate(&sku, "o-user")?;
/// store.issue(&token, &IssueOptions::default()).await?;
///
/// assert!(store.validate(&token.parsed()).await?.is_live()); // asks the store
/// assert!(store.validate(&token.parsed()).await?.is_live()); // answered from the cache
/// assert_eq!(store.valid_len(), 1);
///
/// // A revocation through the wrapper takes effect at once.
/// store.revoke(&token.parsed()).await?;
/// assert!(!store.validate(&token.parsed()).await?.is_live());
/// # Ok(())
/// # }
/// ```
///
/// Behind the layer: `MpAuth::new(config, CachedTokenStore::new(store), users)`, or
/// `MpAuthLayer::new(CachedTokenStore::new(store), ..)`.
#[derive(Clone)]
pub struct CachedTokenStore<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The cache proper, shared by clones.
struct Shared {
    ttl: Duration,
    capacity: usize,
    negative_capacity: usize,
    /// Live tokens: until when, and whose.
    valid: Option<Table<Live>>,
    /// Unknown tokens: until when, and whose.
    invalid: Option<Table<Unknown>>,
    /// Keys the tables by the token's text.
    keys: Keys,
    /// The users' fingerprints, and the generations their answers are good for: moved
    /// by every change to a user's tokens made through the wrapper, and in tracking mode
    /// by Redis's pushes.
    stripes: Arc<Stripes>,
    /// Tracking mode: the Redis tracking, whose lease must hold for an answer to come
    /// from memory.
    #[cfg(feature = "redis")]
    tracker: Option<Arc<Tracker>>,
}

#[derive(Clone, Copy)]
struct Live {
    /// The cache's TTL from the lookup, or the token's own expiry if sooner.
    until: Instant,
    /// The token's own expiry, as the store said.
    expires_at_ms: u64,
    /// The user's fingerprint ([`Stripes::user`]).
    user: u64,
    /// The user's stripe's generation before the store was asked.
    generation: u64,
}

#[derive(Clone, Copy)]
struct Unknown {
    until: Instant,
    user: u64,
    generation: u64,
}

impl<S: TokenStore> CachedTokenStore<S> {
    /// Wraps `store` with a cache that keeps answers for one second, at most 10,000
    /// live and 10,000 unknown tokens (about 2.5 MB full).
    pub fn new(store: S) -> Self {
        Self {
            inner: store,
            shared: Arc::new(Shared::new(
                DEFAULT_CACHE_TTL,
                DEFAULT_CACHE_CAPACITY,
                DEFAULT_CACHE_CAPACITY,
            )),
        }
    }

    /// Keeps each answer for `ttl`, at most one minute; this is also how long a
    /// revocation by another process may go unnoticed here. A zero TTL caches nothing.
    pub fn with_ttl(self, ttl: Duration) -> Self {
        let shared = &self.shared;
        let (capacity, negative) = (shared.capacity, shared.negative_capacity);
        let ttl = ttl.min(shared.max_ttl());
        self.rebuilt(ttl, capacity, negative)
    }

    /// Keeps at most `capacity` live tokens (at most 2^24; zero caches
    /// no live token). Above 32 entries per internal shard, the capacity is rounded down
    /// to a multiple of the shard count (a power of two, four per CPU).
    pub fn with_capacity(self, capacity: usize) -> Self {
        let (ttl, negative) = (self.shared.ttl, self.shared.negative_capacity);
        self.rebuilt(ttl, capacity.min(MAX_CACHE_CAPACITY), negative)
    }

    /// Keeps at most `capacity` unknown tokens (at most 2^24; zero
    /// turns negative caching off), rounded like [`with_capacity`](Self::with_capacity).
    pub fn with_negative_capacity(self, capacity: usize) -> Self {
        let (ttl, positive) = (self.shared.ttl, self.shared.capacity);
        self.rebuilt(ttl, positive, capacity.min(MAX_CACHE_CAPACITY))
    }

    fn rebuilt(self, ttl: Duration, capacity: usize, negative: usize) -> Self {
        Self {
            shared: Arc::new(self.shared.rebuilt(ttl, capacity, negative)),
            inner: self.inner,
        }
    }
}

#[cfg(feature = "redis")]
impl CachedTokenStore<RedisTokenStore> {
    /// A cache in front of `store` that Redis tells of every change to a user's tokens,
    /// by any client, within milliseconds: its *tracking mode*. Answers come from memory
    /// and a logout on any other server is honoured here as soon as Redis's push
    /// arrives. Call it from within a Tokio runtime: the tracking runs in a task of its
    /// own, stopped when the last clone is dropped.
    ///
    /// Needs Redis 6 or later (RESP3 and `CLIENT TRACKING`). It waits until tracking
    /// is set up, so that a server that cannot track is refused here
    /// ([`StoreBuildError::InvalidSettings`]); a Redis that does not answer in time is
    /// not an error: the cache goes to Redis until tracking is up.
    ///
    /// # What it guarantees
    ///
    /// - **Changes are pushed.** One RESP3 connection per primary the store talks to
    ///   (the server, the primary Sentinel names, or every primary of a cluster) runs
    ///   `CLIENT TRACKING ON BCAST PREFIX <prefix>:{`. Every write to a user's hash (a
    ///   login, refresh, logout, `logout_all`, device eviction, sign-out, the hash's
    ///   expiry, an administrator's `DEL`, a `FLUSHALL`) is pushed, and the push drops
    ///   the user's cached answers, live and unknown.
    /// - **Never stale by accident.** Answers come from memory only under a lease that
    ///   each connection's heartbeat (`ROLE`, every 100 ms) renews for 350 ms from
    ///   when it was sent, and only while the node says it is a primary. Redis answers
    ///   a heartbeat after every push it queued before it, so a renewed lease means no
    ///   push is missing. A connection that drops, stalls past the lease or whose node
    ///   is demoted (a Sentinel failover kills it; a `REPLICAOF` makes `ROLE` say
    ///   `slave`) ends the lease: every cached answer is dropped and the cache is
    ///   bypassed until a new connection has tracking on. On a cluster the list of
    ///   primaries (`CLUSTER NODES`) is checked every heartbeat too; a change of
    ///   primaries flushes and reconnects.
    /// - **A token's own expiry** is honoured from the cached record; **errors** are
    ///   never cached; **memory** is bounded by the capacities, and unknown tokens
    ///   have a table of their own, so a flood of made-up tokens cannot evict live ones.
    /// - **Your own changes** through this wrapper take effect here at once, as in the
    ///   TTL mode.
    ///
    /// # What it assumes
    ///
    /// - A revocation on another server is seen here once its push arrives: normally
    ///   within a millisecond or two of its write (BENCHMARKS.md measures it). If the
    ///   network silently stops delivering pushes, the lease bounds it: at most 450 ms
    ///   (the lease plus a heartbeat).
    /// - Every server writing tokens uses the same key prefix, on the same Redis.
    /// - The TTL ([`with_ttl`](Self::with_ttl), five minutes by default, at most an
    ///   hour) bounds any answer regardless: a backstop for what no push can tell (a
    ///   Redis 7.0 cluster node dropping a slot's keys after a migration sends none).
    /// - Unknown tokens are cached too, dropped by pushes like live ones.
    ///
    /// ```no_run
    /// use mpauthx::{CachedTokenStore, RedisTokenStore};
    ///
    /// # async fn run() -> Result<(), mpauthx::StoreBuildError> {
    /// let redis = RedisTokenStore::connect("redis://127.0.0.1:6379/").await?;
    /// let tokens = CachedTokenStore::tracking(redis).await?;
    /// # Ok(()) }
    /// ```
    pub async fn tracking(store: RedisTokenStore) -> Result<Self, StoreBuildError> {
        let mut shared = Shared::new(
            DEFAULT_TRACKING_TTL,
            DEFAULT_CACHE_CAPACITY,
            DEFAULT_CACHE_CAPACITY,
        );
        let sink: Arc<dyn super::redis::Invalidate> = Arc::clone(&shared.stripes) as _;
        shared.tracker = Some(Arc::new(store.track(sink).await?));
        Ok(Self {
            inner: store,
            shared: Arc::new(shared),
        })
    }
}

impl<S> CachedTokenStore<S> {
    /// Whether it is in tracking mode ([`tracking`](CachedTokenStore::tracking)).
    pub fn is_tracking(&self) -> bool {
        self.shared.is_tracking()
    }

    /// Whether answers may come from memory now: always in the TTL mode; in tracking
    /// mode, while Redis's tracking is up (see [`tracking`](CachedTokenStore::tracking)).
    pub fn is_answering(&self) -> bool {
        self.shared.answers(Instant::now())
    }

    /// The wrapped store, e.g. for a health check that must reach it.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How long an answer is kept.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// How many live tokens the cache holds at most.
    pub fn capacity(&self) -> usize {
        self.shared
            .valid
            .as_ref()
            .map_or(0, |c| to_usize(c.capacity()))
    }

    /// How many unknown tokens the cache holds at most.
    pub fn negative_capacity(&self) -> usize {
        self.shared
            .invalid
            .as_ref()
            .map_or(0, |c| to_usize(c.capacity()))
    }

    /// How many entries the cache holds now, live and unknown, expired ones included
    /// until they are looked up or evicted.
    pub fn len(&self) -> usize {
        self.valid_len() + self.invalid_len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many live tokens the cache holds now.
    pub fn valid_len(&self) -> usize {
        self.shared.valid.as_ref().map_or(0, Cache::len)
    }

    /// How many unknown tokens the cache holds now.
    pub fn invalid_len(&self) -> usize {
        self.shared.invalid.as_ref().map_or(0, Cache::len)
    }

    /// Forgets every cached answer, e.g. after revoking tokens behind the wrapper's back.
    pub fn clear(&self) {
        instruments::cache_invalidation(Invalidation::Flush);
        self.shared.stripes.bump_all();
        if let Some(valid) = &self.shared.valid {
            valid.clear();
        }
        if let Some(invalid) = &self.shared.invalid {
            invalid.clear();
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<S: fmt::Debug> fmt::Debug for CachedTokenStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTokenStore")
            .field("inner", &self.inner)
            .field("tracking", &self.is_tracking())
            .field("ttl", &self.shared.ttl)
            .field("capacity", &self.capacity())
            .field("negative_capacity", &self.negative_capacity())
            .field("valid_len", &self.valid_len())
            .field("invalid_len", &self.invalid_len())
            .finish()
    }
}

impl Shared {
    fn new(ttl: Duration, capacity: usize, negative_capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            negative_capacity,
            valid: table(capacity),
            invalid: table(negative_capacity),
            keys: Keys::new(),
            stripes: Arc::new(Stripes::new()),
            #[cfg(feature = "redis")]
            tracker: None,
        }
    }

    /// A new, empty cache with these settings and the same tracking.
    fn rebuilt(&self, ttl: Duration, capacity: usize, negative_capacity: usize) -> Self {
        Self {
            stripes: Arc::clone(&self.stripes),
            #[cfg(feature = "redis")]
            tracker: self.tracker.clone(),
            ..Self::new(ttl, capacity, negative_capacity)
        }
    }

    fn user(&self, sku: &str, open_id: &str) -> u64 {
        self.stripes.user(sku, open_id)
    }

    /// Whether answers may come from memory now: always with a TTL, while the lease
    /// holds in tracking mode.
    fn answers(&self, now: Instant) -> bool {
        #[cfg(feature = "redis")]
        if let Some(tracker) = &self.tracker {
            return tracker.lease().holds(now);
        }
        let _ = now;
        true
    }

    fn is_tracking(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.tracker.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// The longest TTL: a minute with a TTL alone, an hour in tracking mode.
    fn max_ttl(&self) -> Duration {
        if self.is_tracking() {
            MAX_TRACKING_TTL
        } else {
            MAX_CACHE_TTL
        }
    }

    /// The cached answer for `hash`, if there is one that has not expired and no change
    /// to its user has been seen since its lookup began.
    fn cached(&self, key: &Key, now: Instant) -> Option<TokenStatus> {
        if !self.answers(now) {
            return None;
        }
        if let Some(valid) = &self.valid
            && let Some(live) = valid.get(key)
        {
            if now < live.until && self.stripes.generation(live.user) == live.generation {
                return Some(TokenStatus::Live {
                    expires_at_ms: live.expires_at_ms,
                });
            }
            valid.remove_if(key, |current| {
                (current.until, current.generation) == (live.until, live.generation)
            });
        }
        if let Some(invalid) = &self.invalid
            && let Some(unknown) = invalid.get(key)
        {
            if now < unknown.until && self.stripes.generation(unknown.user) == unknown.generation {
                return Some(TokenStatus::Unknown);
            }
            invalid.remove_if(key, |current| {
                (current.until, current.generation) == (unknown.until, unknown.generation)
            });
        }
        None
    }

    /// Keeps the store's answer to a lookup that started at `started`, good while its
    /// user's stripe stays at the generation read before the store was asked.
    /// A sign-out notice is not kept: it is rare, and its reason would cost every entry
    /// room.
    fn remember(&self, lookup: &Lookup, status: &TokenStatus) {
        let Some(mut until) = lookup.started.checked_add(self.ttl) else {
            return;
        };
        let now = Instant::now();
        if until <= now {
            return;
        }
        match (status, &self.valid, &self.invalid) {
            (&TokenStatus::Live { expires_at_ms }, Some(valid), _) => {
                // Never past the token's own expiry.
                let left = expires_at_ms.saturating_sub(now_millis());
                until = until.min(now + Duration::from_millis(left));
                if until <= now {
                    return;
                }
                valid.insert(
                    lookup.key,
                    Live {
                        until,
                        expires_at_ms,
                        user: lookup.user,
                        generation: lookup.generation,
                    },
                );
            }
            (TokenStatus::Unknown, _, Some(invalid)) => invalid.insert(
                lookup.key,
                Unknown {
                    until,
                    user: lookup.user,
                    generation: lookup.generation,
                },
            ),
            _ => return,
        }
        // A change to the user since the lookup began makes the entry dead: drop it
        // now rather than at its next lookup. (A change after this check makes it dead
        // all the same.)
        if self.stripes.generation(lookup.user) != lookup.generation {
            self.forget(&lookup.key);
        }
    }

    /// After a change to `user`'s tokens through the wrapper (or one that may have
    /// happened: a write whose answer was lost): every answer about the user cached so
    /// far, and those of the lookups under way, are dropped.
    fn changed(&self, sku: &str, open_id: &str) {
        instruments::cache_invalidation(Invalidation::Local);
        self.stripes.bump(self.user(sku, open_id));
    }

    /// Drops what is cached about one token.
    fn forget(&self, key: &Key) {
        if let Some(valid) = &self.valid {
            valid.remove(key);
        }
        if let Some(invalid) = &self.invalid {
            invalid.remove(key);
        }
    }
}

/// A table of the cache: answers by [`Key`].
type Table<V> = Cache<Key, V, UnitWeighter, BuildPassThrough>;

/// A bounded table, or none for a zero capacity.
fn table<V: Clone>(capacity: usize) -> Option<Table<V>> {
    if capacity == 0 {
        return None;
    }
    // quick_cache splits the capacity over its shards, rounding each share up; with a
    // multiple of the shard count (or a single shard) the total is exact.
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let shards = (cpus * 4).next_power_of_two();
    let (shards, capacity) = if capacity >= shards * 32 {
        (shards, capacity - capacity % shards)
    } else {
        (1, capacity)
    };
    let options = OptionsBuilder::new()
        .shards(shards)
        .estimated_items_capacity(capacity)
        .weight_capacity(capacity as u64)
        .build()
        .expect("capacity and shards are set");
    Some(Cache::with_options(
        options,
        UnitWeighter,
        BuildPassThrough,
        DefaultLifecycle::default(),
    ))
}

/// What a cache miss needs to keep the store's answer.
struct Lookup {
    key: Key,
    started: Instant,
    user: u64,
    /// The user's stripe's generation before the store was asked.
    generation: u64,
}

impl<S: TokenStore> TokenStore for CachedTokenStore<S> {
    type Validation = CachedValidation<S::Validation>;

    async fn issue(&self, token: &Token, options: &IssueOptions) -> Result<Issued, StoreError> {
        let issued = self.inner.issue(token, options).await;
        // An "unknown" answer about this exact token, should there be one, and the
        // devices the limit evicted (or, if the answer was lost, may have evicted) are
        // the user's.
        self.shared.changed(token.sku(), token.open_id());
        issued
    }

    async fn undo_issue(&self, token: &ParsedToken<'_>) -> Result<Vec<TokenHash>, StoreError> {
        let undone = self.inner.undo_issue(token).await;
        // The restored devices, cached as unknown while evicted, are the user's.
        self.shared.changed(token.sku(), token.open_id());
        undone
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        let key = self.shared.keys.of(token);
        let now = Instant::now();
        let state = match self.shared.cached(&key, now) {
            Some(status) => {
                instruments::cache_hit(status.is_live());
                Validation::Cached {
                    status: Some(status),
                }
            }
            None => {
                instruments::cache_miss();
                let user = self.shared.user(token.sku(), token.open_id());
                Validation::Asking {
                    lookup: Lookup {
                        key,
                        started: now,
                        user,
                        // Read before the store is asked: a change to the user from
                        // now on ends the answer, however it interleaves with it.
                        generation: self.shared.stripes.generation(user),
                    },
                    shared: Arc::clone(&self.shared),
                    check: self.inner.validate(token),
                }
            }
        };
        CachedValidation { state }
    }

    fn validate_now(&self, token: &ParsedToken<'_>) -> Option<Result<TokenStatus, StoreError>> {
        let status = self
            .shared
            .cached(&self.shared.keys.of(token), Instant::now())?;
        instruments::cache_hit(status.is_live());
        Some(Ok(status))
    }

    async fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> Result<bool, StoreError> {
        let revoked = self.inner.revoke_hash(sku, open_id, hash).await;
        self.shared.changed(sku.as_str(), open_id);
        revoked
    }

    async fn revoke(&self, token: &ParsedToken<'_>) -> Result<bool, StoreError> {
        let revoked = self.inner.revoke(token).await;
        match revoked {
            // Nothing was live, so nothing changed: only this token's own answer goes
            // (it may have expired here). A flood of logouts of made-up tokens leaves
            // every other answer cached.
            Ok(false) => self.shared.forget(&self.shared.keys.of(token)),
            // One that failed may have been applied.
            Ok(true) | Err(_) => self.shared.changed(token.sku(), token.open_id()),
        }
        revoked
    }

    async fn revoke_all(&self, sku: &Sku, open_id: &str) -> Result<usize, StoreError> {
        let revoked = self.inner.revoke_all(sku, open_id).await;
        if !matches!(revoked, Ok(0)) {
            self.shared.changed(sku.as_str(), open_id);
        }
        revoked
    }

    async fn sign_out(
        &self,
        sku: &Sku,
        open_id: &str,
        reason: &SignOutReason,
        notice: Duration,
    ) -> Result<usize, StoreError> {
        let signed_out = self.inner.sign_out(sku, open_id, reason, notice).await;
        if !matches!(signed_out, Ok(0)) {
            self.shared.changed(sku.as_str(), open_id);
        }
        signed_out
    }

    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
        self.inner.list(sku, open_id)
    }

    async fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> Result<Option<Issued>, StoreError> {
        let rotated = self.inner.rotate(token, successor, options).await;
        match &rotated {
            // Nothing was live to rotate (though a session too old to refresh was
            // ended): the old token is live no longer, the successor never was.
            Ok(None) => {
                self.shared.forget(&self.shared.keys.of(token));
                self.shared
                    .forget(&self.shared.keys.of(&successor.parsed()));
            }
            Ok(Some(_)) | Err(_) => self.shared.changed(token.sku(), token.open_id()),
        }
        rotated
    }
}

/// The future of [`CachedTokenStore`]'s `validate`: a cached answer, ready at once and
/// without allocating, or the wrapped store's lookup, remembered when it succeeds.
#[pin_project]
pub struct CachedValidation<F> {
    #[pin]
    state: Validation<F>,
}

#[pin_project(project = ValidationProj)]
enum Validation<F> {
    Cached {
        status: Option<TokenStatus>,
    },
    Asking {
        #[pin]
        check: F,
        shared: Arc<Shared>,
        lookup: Lookup,
    },
}

impl<F: Future<Output = Result<TokenStatus, StoreError>>> Future for CachedValidation<F> {
    type Output = Result<TokenStatus, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ValidationProj::Cached { status } => {
                Poll::Ready(Ok(status.take().expect("polled after completion")))
            }
            ValidationProj::Asking {
                check,
                shared,
                lookup,
            } => {
                let verdict = ready!(check.poll(cx));
                if let Ok(status) = &verdict {
                    shared.remember(lookup, status);
                }
                Poll::Ready(verdict)
            }
        }
    }
}

impl<F> fmt::Debug for CachedValidation<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Validation::Cached { .. } => "cached",
            Validation::Asking { .. } => "asking",
        };
        f.debug_struct("CachedValidation")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::MemoryTokenStore;

    /// All of them: holding these closes the gate.
    const GATE_PERMITS: u32 = u32::MAX;

    /// A memory store that counts lookups and can hold their answers back: the answer is
    /// read when `validate` is called and handed out once a permit is available.
    #[derive(Debug, Clone)]
    struct Probe {
        inner: MemoryTokenStore,
        lookups: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Probe {
        fn new() -> Self {
            Self {
                inner: MemoryTokenStore::new(),
                lookups: Arc::default(),
                gate: Arc::new(Semaphore::new(GATE_PERMITS as usize)),
            }
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    impl TokenStore for Probe {
        type Validation = Pin<Box<dyn Future<Output = Result<TokenStatus, StoreError>> + Send>>;

        fn issue(
            &self,
            token: &Token,
            options: &IssueOptions,
        ) -> impl Future<Output = Result<Issued, StoreError>> + Send {
            self.inner.issue(token, options)
        }

        fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let answer = self.inner.validate(token);
            let gate = Arc::clone(&self.gate);
            Box::pin(async move {
                let answer = answer.await;
                let _permit = gate.acquire().await.expect("never closed");
                answer
            })
        }

        fn revoke_hash(
            &self,
            sku: &Sku,
            open_id: &str,
            hash: &TokenHash,
        ) -> impl Future<Output = Result<bool, StoreError>> + Send {
            self.inner.revoke_hash(sku, open_id, hash)
        }

        fn revoke_all(
            &self,
            sku: &Sku,
            open_id: &str,
        ) -> impl Future<Output = Result<usize, StoreError>> + Send {
            self.inner.revoke_all(sku, open_id)
        }

        fn list(
            &self,
            sku: &Sku,
            open_id: &str,
        ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
            self.inner.list(sku, open_id)
        }

        fn rotate(
            &self,
            token: &ParsedToken<'_>,
            successor: &Token,
            options: &IssueOptions,
        ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send {
            self.inner.rotate(token, successor, options)
        }
    }

    async fn issued(store: &impl TokenStore, open_id: &str) -> Token {
        let token = Token::generate(&Sku::new("unit").unwrap(), open_id).unwrap();
        store.issue(&token, &IssueOptions::default()).await.unwrap();
        token
    }

    #[tokio::test]
    async fn answers_are_kept_for_the_ttl_and_no_longer() {
        let probe = Probe::new();
        let store = CachedTokenStore::new(probe.clone()).with_ttl(Duration::from_millis(100));
        let live = issued(&store, "o-live").await;
        let unknown = Token::generate(&Sku::new("unit").unwrap(), "o-nobody").unwrap();
        for _ in 0..3 {
            assert!(store.validate(&live.parsed()).await.unwrap().is_live());
            assert!(!store.validate(&unknown.parsed()).await.unwrap().is_live());
        }
        assert_eq!(probe.lookups(), 2, "one lookup per token within the TTL");
        assert_eq!((store.valid_len(), store.invalid_len()), (1, 1));

        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.validate(&live.parsed()).await.unwrap().is_live());
        assert!(!store.validate(&unknown.parsed()).await.unwrap().is_live());
        assert_eq!(probe.lookups(), 4, "expired answers are asked again");
    }

    #[tokio::test]
    async fn ttl_is_capped_and_zero_caches_nothing() {
        let probe = Probe::new();
        let capped = CachedTokenStore::new(probe.clone()).with_ttl(Duration::from_secs(3600));
        assert_eq!(capped.ttl(), MAX_CACHE_TTL);

        let store = CachedTokenStore::new(probe.clone()).with_ttl(Duration::ZERO);
        let live = issued(&store, "o-zero").await;
        for _ in 0..3 {
            assert!(store.validate(&live.parsed()).await.unwrap().is_live());
        }
        assert_eq!(probe.lookups(), 3);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn zero_negative_capacity_keeps_unknown_tokens_out() {
        let probe = Probe::new();
        let store = CachedTokenStore::new(probe.clone()).with_negative_capacity(0);
        assert_eq!(store.negative_capacity(), 0);
        assert_eq!(store.capacity(), DEFAULT_CACHE_CAPACITY);
        let unknown = Token::generate(&Sku::new("unit").unwrap(), "o-nobody").unwrap();
        assert!(!store.validate(&unknown.parsed()).await.unwrap().is_live());
        assert!(!store.validate(&unknown.parsed()).await.unwrap().is_live());
        assert_eq!(probe.lookups(), 2);
        assert_eq!(store.len(), 0);
    }

    /// A lookup that read "live" before a revocation through the wrapper, and answers
    /// after it, must not put the revoked token in the cache.
    #[tokio::test]
    async fn a_lookup_overtaken_by_a_revocation_is_not_cached() {
        let probe = Probe::new();
        let store = CachedTokenStore::new(probe.clone()).with_ttl(MAX_CACHE_TTL);
        let token = issued(&store, "o-race").await;

        let held = probe.gate.acquire_many(GATE_PERMITS).await.unwrap();
        let lookup = tokio::spawn(store.validate(&token.parsed()));
        tokio::task::yield_now().await;
        assert!(store.revoke(&token.parsed()).await.unwrap());
        drop(held);
        assert!(
            lookup.await.unwrap().unwrap().is_live(),
            "the store read it live before the revocation"
        );

        assert_eq!(store.valid_len(), 0);
        assert!(!store.validate(&token.parsed()).await.unwrap().is_live());
    }

    /// Logouts of unknown tokens change nothing: a flood of them must not keep the
    /// lookups under way out of the cache (which would send every request to the store).
    #[tokio::test]
    async fn revoking_unknown_tokens_leaves_the_cache_working() {
        let probe = Probe::new();
        let store = CachedTokenStore::new(probe.clone()).with_ttl(MAX_CACHE_TTL);
        let token = issued(&store, "o-live").await;

        let held = probe.gate.acquire_many(GATE_PERMITS).await.unwrap();
        let lookup = tokio::spawn(store.validate(&token.parsed()));
        tokio::task::yield_now().await;
        for i in 0..100 {
            let unknown = Token::generate(&Sku::new("unit").unwrap(), &format!("o-{i}")).unwrap();
            assert!(!store.revoke(&unknown.parsed()).await.unwrap());
            let sku = Sku::new("unit").unwrap();
            assert_eq!(store.revoke_all(&sku, &format!("o-{i}")).await.unwrap(), 0);
        }
        drop(held);
        assert!(lookup.await.unwrap().unwrap().is_live());

        assert_eq!(store.valid_len(), 1, "the lookup's answer was kept");
        let lookups = probe.lookups();
        assert!(store.validate(&token.parsed()).await.unwrap().is_live());
        assert_eq!(probe.lookups(), lookups, "answered from the cache");
    }

    /// A device evicted by the device limit through the wrapper is refused at once,
    /// not when its cached answer expires.
    #[tokio::test]
    async fn devices_evicted_by_the_limit_are_dropped_at_once() {
        let store = CachedTokenStore::new(MemoryTokenStore::new()).with_ttl(MAX_CACHE_TTL);
        let sku = Sku::new("unit").unwrap();
        let single = IssueOptions::default().with_max_tokens_per_user(1);
        let first = Token::generate(&sku, "o-one-device").unwrap();
        store.issue(&first, &single).await.unwrap();
        assert!(store.validate(&first.parsed()).await.unwrap().is_live());
        assert_eq!(store.valid_len(), 1);

        let second = Token::generate(&sku, "o-one-device").unwrap();
        let issued = store.issue(&second, &single).await.unwrap();
        assert_eq!(issued.evicted, vec![first.hash()]);
        assert!(
            !store.validate(&first.parsed()).await.unwrap().is_live(),
            "evicted"
        );
        assert!(store.validate(&second.parsed()).await.unwrap().is_live());
    }

    /// An undone login restores the devices it evicted, even where the cache had
    /// learned they were gone.
    #[tokio::test]
    async fn undoing_a_login_restores_evicted_devices_through_the_cache() {
        let store = CachedTokenStore::new(MemoryTokenStore::new()).with_ttl(MAX_CACHE_TTL);
        let sku = Sku::new("unit").unwrap();
        let single = IssueOptions::default()
            .with_max_tokens_per_user(1)
            .with_retry_grace(Duration::from_secs(10));
        let kept = Token::generate(&sku, "o-undo").unwrap();
        store.issue(&kept, &single).await.unwrap();
        let phantom = Token::generate(&sku, "o-undo").unwrap();
        store.issue(&phantom, &single).await.unwrap();
        assert!(
            !store.validate(&kept.parsed()).await.unwrap().is_live(),
            "evicted"
        );
        assert_eq!(store.invalid_len(), 1);

        let restored = store.undo_issue(&phantom.parsed()).await.unwrap();
        assert_eq!(restored, vec![kept.hash()]);
        assert!(
            store.validate(&kept.parsed()).await.unwrap().is_live(),
            "restored"
        );
        assert!(
            !store.validate(&phantom.parsed()).await.unwrap().is_live(),
            "taken back"
        );
    }

    #[tokio::test]
    async fn revoke_all_drops_only_that_users_entries() {
        let probe = Probe::new();
        let store = CachedTokenStore::new(probe.clone()).with_ttl(MAX_CACHE_TTL);
        let sku = Sku::new("unit").unwrap();
        let a1 = issued(&store, "o-a").await;
        let a2 = issued(&store, "o-a").await;
        let b = issued(&store, "o-b").await;
        for token in [&a1, &a2, &b] {
            assert!(store.validate(&token.parsed()).await.unwrap().is_live());
        }
        assert_eq!(store.valid_len(), 3);
        assert_eq!(store.revoke_all(&sku, "o-a").await.unwrap(), 2);
        let lookups = probe.lookups();
        assert!(!store.validate(&a1.parsed()).await.unwrap().is_live());
        assert!(!store.validate(&a2.parsed()).await.unwrap().is_live());
        assert_eq!(
            probe.lookups(),
            lookups + 2,
            "the user's answers were dropped"
        );
        assert!(store.validate(&b.parsed()).await.unwrap().is_live());
        // Another user's answer stays cached, unless the two happen to share a stripe
        // (one chance in 8,192: the fingerprints are keyed anew for every cache).
        let stripes = &store.shared.stripes;
        let (ua, ub) = (stripes.user("unit", "o-a"), stripes.user("unit", "o-b"));
        if ua % 8192 != ub % 8192 {
            assert_eq!(
                probe.lookups(),
                lookups + 2,
                "another user's answer stays cached"
            );
        }
    }

    #[test]
    fn capacity_is_exact_or_rounded_down_to_the_shards() {
        let store = CachedTokenStore::new(MemoryTokenStore::new())
            .with_capacity(100)
            .with_negative_capacity(1_000_003);
        assert_eq!(store.capacity(), 100);
        assert!((1_000_003 - 1024..=1_000_003).contains(&store.negative_capacity()));
        let debug = format!("{store:?}");
        assert!(debug.contains("capacity: 100"), "{debug}");
    }
}
