//! An in-process token store: the embedded default and the test double.

use std::{
    collections::HashMap,
    future::{Future, Ready, ready},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use super::{
    IssueOptions, Issued, SignOutReason, StoreError, TokenInfo, TokenStatus, TokenStore,
    notice_millis, now_millis,
};
use crate::token::{ParsedToken, Sku, Token, TokenHash};

/// Why an issue wrote nothing: the token was taken back (or issued) before.
pub(super) const TOKEN_TAKEN: &str = "the token was issued or taken back before";

/// A user keeps at most this many times their device limit of tombstones.
const TOMBSTONES_PER_DEVICE: usize = 2;

/// How long the marker of an undone issue is kept: longer than any late script.
const UNDONE_MARKER_MS: u64 = 60_000;

/// Sweep every expired token out after this many issues, so that memory stays bounded
/// by the live tokens even when nobody ever reads the expired ones again.
const SWEEP_EVERY: u32 = 1024;

/// Keeps tokens in this process's memory.
///
/// For tests, single-process deployments and the example server. Tokens vanish when the
/// process exits, and are not shared between processes: use [`RedisTokenStore`] for
/// anything else. Clones share one store. It behaves as `RedisTokenStore` does, the
/// retry grace's tombstones included.
///
/// [`RedisTokenStore`]: crate::RedisTokenStore
#[derive(Debug, Clone, Default)]
pub struct MemoryTokenStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<TokenHash, Entry>,
    /// Each user's token hashes, keyed by `<sku>.<open_id>`.
    users: HashMap<String, Vec<TokenHash>>,
    issues_since_sweep: u32,
}

#[derive(Debug)]
struct Entry {
    user: String,
    kind: Kind,
}

/// A live token, or one of the retry grace's tombstones (see `common.lua` beside the
/// Redis store, which this mirrors).
#[derive(Debug)]
enum Kind {
    Live(Record),
    /// Rotated out; may rotate once more until `until`, evicting `successor`.
    Rotated {
        until: u64,
        successor: TokenHash,
    },
    /// Evicted by the device limit for `by`; restored if `by`'s issue is undone.
    Evicted {
        until: u64,
        by: TokenHash,
        record: Record,
    },
    /// Its issue was undone: an issue of it writes nothing until `until`.
    Undone {
        until: u64,
    },
    /// Signed out by the service for `reason`; says so until `until`.
    SignedOut {
        until: u64,
        reason: SignOutReason,
    },
}

#[derive(Debug, Clone)]
struct Record {
    issued_at_ms: u64,
    expires_at_ms: u64,
    started_at_ms: u64,
    device: Option<String>,
}

impl Record {
    fn info(&self, hash: TokenHash) -> TokenInfo {
        TokenInfo {
            hash,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            session_started_at_ms: self.started_at_ms,
            device: self.device.clone(),
        }
    }
}

impl Kind {
    /// The record, if this is a token live at `now`.
    fn live(&self, now: u64) -> Option<&Record> {
        match self {
            Self::Live(record) if record.expires_at_ms > now => Some(record),
            _ => None,
        }
    }

    /// Until when a tombstone is kept; `None` for a token.
    fn tombstone_until(&self) -> Option<u64> {
        match self {
            Self::Live(_) => None,
            Self::Rotated { until, .. }
            | Self::Evicted { until, .. }
            | Self::Undone { until }
            | Self::SignedOut { until, .. } => Some(*until),
        }
    }

    /// What `validate` answers about this entry at `now`.
    fn status(&self, now: u64) -> TokenStatus {
        match self {
            Self::Live(record) if record.expires_at_ms > now => TokenStatus::Live {
                expires_at_ms: record.expires_at_ms,
            },
            Self::SignedOut { until, reason } if *until > now => {
                TokenStatus::SignedOut(reason.clone())
            }
            _ => TokenStatus::Unknown,
        }
    }

    /// Whether nothing will ever read this entry again.
    fn is_over(&self, now: u64) -> bool {
        match self {
            Self::Live(record) => record.expires_at_ms <= now,
            Self::Rotated { until, .. }
            | Self::Evicted { until, .. }
            | Self::Undone { until }
            | Self::SignedOut { until, .. } => *until <= now,
        }
    }
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries are held: tokens (expired ones not yet swept included) and the
    /// retry grace's tombstones.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the state stays consistent
        // between statements, so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn user_key(sku: &str, open_id: &str) -> String {
    format!("{sku}.{open_id}")
}

impl State {
    /// Drops the user's expired tokens and tombstones; the live tokens, soonest to
    /// expire first.
    fn live_of(&mut self, user: &str, now: u64) -> Vec<(TokenHash, u64)> {
        let Some(hashes) = self.users.get_mut(user) else {
            return Vec::new();
        };
        let tokens = &mut self.tokens;
        hashes.retain(|h| match tokens.get(h) {
            Some(entry) if !entry.kind.is_over(now) => true,
            _ => {
                tokens.remove(h);
                false
            }
        });
        let mut live: Vec<_> = hashes
            .iter()
            .filter_map(|h| Some((*h, tokens.get(h)?.kind.live(now)?.expires_at_ms)))
            .collect();
        live.sort_by_key(|(_, expires)| *expires);
        live
    }

    /// Files `hash` under `user`, evicting the live tokens closest to expiry beyond the
    /// limit (as tombstones while there is a grace). Returns the evicted hashes.
    fn insert(
        &mut self,
        user: String,
        hash: TokenHash,
        record: Record,
        options: &IssueOptions,
        now: u64,
    ) -> Vec<TokenHash> {
        self.issues_since_sweep += 1;
        if self.issues_since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let live = self.live_of(&user, now);
        let max = options.max_tokens_per_user() as usize;
        self.trim_tombstones(&user, TOMBSTONES_PER_DEVICE * max);
        let evict = (live.len() + 1).saturating_sub(max);
        let grace = options.retry_grace_millis();
        let mut evicted = Vec::with_capacity(evict);
        for (old, _) in live.into_iter().take(evict) {
            if grace > 0 {
                let entry = self.tokens.get_mut(&old).expect("listed as live");
                if let Kind::Live(record) = &entry.kind {
                    entry.kind = Kind::Evicted {
                        until: now.saturating_add(grace),
                        by: hash,
                        record: record.clone(),
                    };
                }
            } else {
                self.remove(&old);
            }
            evicted.push(old);
        }
        self.users.entry(user.clone()).or_default().push(hash);
        self.tokens.insert(
            hash,
            Entry {
                user,
                kind: Kind::Live(record),
            },
        );
        evicted
    }

    /// Drops the user's oldest tombstones until fewer than `keep` are left, as
    /// `common.lua` does: fast refreshes cannot grow a user without bound.
    fn trim_tombstones(&mut self, user: &str, keep: usize) {
        let Some(hashes) = self.users.get(user) else {
            return;
        };
        let mut tombstones: Vec<(u64, TokenHash)> = hashes
            .iter()
            .filter_map(|h| Some((self.tokens.get(h)?.kind.tombstone_until()?, *h)))
            .collect();
        if tombstones.len() < keep {
            return;
        }
        tombstones.sort_unstable_by_key(|(until, _)| *until);
        let excess = tombstones.len() - keep + 1;
        for (_, hash) in &tombstones[..excess] {
            self.remove(hash);
        }
    }

    fn remove(&mut self, hash: &TokenHash) -> Option<Entry> {
        let entry = self.tokens.remove(hash)?;
        if let Some(hashes) = self.users.get_mut(&entry.user) {
            hashes.retain(|h| h != hash);
            if hashes.is_empty() {
                self.users.remove(&entry.user);
            }
        }
        Some(entry)
    }

    fn sweep(&mut self, now: u64) {
        self.issues_since_sweep = 0;
        self.tokens.retain(|_, e| !e.kind.is_over(now));
        let tokens = &self.tokens;
        self.users.retain(|_, hashes| {
            hashes.retain(|h| tokens.contains_key(h));
            !hashes.is_empty()
        });
    }

    /// The rotation, as `rotate.lua` does it.
    fn rotate(
        &mut self,
        user: String,
        old: TokenHash,
        successor: TokenHash,
        options: &IssueOptions,
        now: u64,
    ) -> Option<Issued> {
        let entry = self.tokens.get(&old).filter(|e| e.user == user)?;
        let mut gone = Vec::new();
        let record = match &entry.kind {
            Kind::Rotated {
                until,
                successor: given,
            } => {
                let (until, given) = (*until, *given);
                self.remove(&old);
                if until <= now {
                    return None;
                }
                let record = self.tokens.get(&given)?.kind.live(now)?.clone();
                self.remove(&given);
                gone.push(given);
                record
            }
            Kind::Evicted { .. } | Kind::Undone { .. } => {
                self.remove(&old);
                return None;
            }
            // The notice stays, for the requests that follow.
            Kind::SignedOut { .. } => return None,
            Kind::Live(record) => {
                if record.expires_at_ms <= now {
                    self.remove(&old);
                    return None;
                }
                record.clone()
            }
        };
        let mut expires_at_ms = now.saturating_add(options.ttl_millis());
        if let Some(max_age) = options.max_session_age() {
            let ends = record.started_at_ms.saturating_add(super::millis(max_age));
            if ends <= now {
                self.remove(&old);
                return None;
            }
            expires_at_ms = expires_at_ms.min(ends);
        }
        let grace = options.retry_grace_millis();
        if grace > 0 && gone.is_empty() {
            let entry = self.tokens.get_mut(&old).expect("checked above");
            entry.kind = Kind::Rotated {
                until: now.saturating_add(grace),
                successor,
            };
        } else if gone.is_empty() {
            self.remove(&old);
        }
        let record = Record {
            issued_at_ms: now,
            expires_at_ms,
            started_at_ms: record.started_at_ms,
            device: record.device,
        };
        let info = record.info(successor);
        gone.extend(self.insert(user, successor, record, options, now));
        Some(Issued {
            info,
            evicted: gone,
        })
    }

    /// The undo, as `undo.lua` does it: only a live token gives back the devices it
    /// evicted; a token not there yet gets a marker its issue respects.
    fn undo(&mut self, user: &str, hash: TokenHash, now: u64) -> Vec<TokenHash> {
        let mine = self.tokens.get(&hash).filter(|e| e.user == user);
        let (was_there, was_live) = (
            mine.is_some(),
            mine.is_some_and(|e| e.kind.live(now).is_some()),
        );
        if was_there {
            self.remove(&hash);
        }
        let mut restored = Vec::new();
        if was_live {
            for h in self.users.get(user).into_iter().flatten() {
                let entry = self.tokens.get_mut(h).expect("users and tokens agree");
                if let Kind::Evicted { until, by, record } = &entry.kind
                    && *by == hash
                    && *until > now
                {
                    entry.kind = Kind::Live(record.clone());
                    restored.push(*h);
                }
            }
        }
        // The issue ran (the entry was there) or may not have yet: then a marker makes
        // it write nothing.
        if !was_there && !self.tokens.contains_key(&hash) {
            self.users.entry(user.to_owned()).or_default().push(hash);
            self.tokens.insert(
                hash,
                Entry {
                    user: user.to_owned(),
                    kind: Kind::Undone {
                        until: now.saturating_add(UNDONE_MARKER_MS),
                    },
                },
            );
        }
        restored
    }
}

impl TokenStore for MemoryTokenStore {
    type Validation = Ready<Result<TokenStatus, StoreError>>;

    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Issued, StoreError>> + Send {
        let now = now_millis();
        let record = Record {
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(options.login_ttl_millis()),
            started_at_ms: now,
            device: options.device().map(str::to_owned),
        };
        let hash = token.hash();
        let info = record.info(hash);
        let user = user_key(token.sku(), token.open_id());
        let mut state = self.lock();
        if state.tokens.contains_key(&hash) {
            return ready(Err(StoreError::Protocol(TOKEN_TAKEN)));
        }
        let evicted = state.insert(user, hash, record, options, now);
        ready(Ok(Issued { info, evicted }))
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        let hash = token.hash();
        let now = now_millis();
        let status = self
            .lock()
            .tokens
            .get(&hash)
            .map_or(TokenStatus::Unknown, |e| e.kind.status(now));
        ready(Ok(status))
    }

    fn validate_now(&self, token: &ParsedToken<'_>) -> Option<Result<TokenStatus, StoreError>> {
        Some(self.validate(token).into_inner())
    }

    fn sign_out(
        &self,
        sku: &Sku,
        open_id: &str,
        reason: &SignOutReason,
        notice: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let now = now_millis();
        let notice_until = now.saturating_add(notice_millis(notice));
        let mut state = self.lock();
        let user = user_key(sku.as_str(), open_id);
        let live = state.live_of(&user, now);
        for (hash, expires_at_ms) in &live {
            let entry = state.tokens.get_mut(hash).expect("listed as live");
            entry.kind = Kind::SignedOut {
                until: notice_until.min(*expires_at_ms),
                reason: reason.clone(),
            };
        }
        ready(Ok(live.len()))
    }

    fn revoke_hash(
        &self,
        sku: &Sku,
        open_id: &str,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.lock();
        let owned = state
            .tokens
            .get(hash)
            .is_some_and(|e| e.user == user_key(sku.as_str(), open_id));
        let now = now_millis();
        let live = owned
            && state
                .remove(hash)
                .is_some_and(|e| e.kind.live(now).is_some());
        ready(Ok(live))
    }

    fn revoke_all(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let now = now_millis();
        let mut state = self.lock();
        let hashes = state
            .users
            .remove(&user_key(sku.as_str(), open_id))
            .unwrap_or_default();
        let live = hashes
            .iter()
            .filter_map(|h| state.tokens.remove(h))
            .filter(|e| e.kind.live(now).is_some())
            .count();
        ready(Ok(live))
    }

    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
        let now = now_millis();
        let mut state = self.lock();
        let live = state.live_of(&user_key(sku.as_str(), open_id), now);
        let infos = live
            .into_iter()
            .filter_map(|(h, _)| Some(state.tokens.get(&h)?.kind.live(now)?.info(h)))
            .collect();
        ready(Ok(infos))
    }

    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<Issued>, StoreError>> + Send {
        let user = user_key(token.sku(), token.open_id());
        let rotated =
            self.lock()
                .rotate(user, token.hash(), successor.hash(), options, now_millis());
        ready(Ok(rotated))
    }

    fn undo_issue(
        &self,
        token: &ParsedToken<'_>,
    ) -> impl Future<Output = Result<Vec<TokenHash>, StoreError>> + Send {
        let user = user_key(token.sku(), token.open_id());
        let restored = self.lock().undo(&user, token.hash(), now_millis());
        ready(Ok(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `common.lua` does: at most two tombstones per device, however fast a user
    /// refreshes within the retry grace.
    #[tokio::test]
    async fn fast_refreshes_keep_a_user_small() {
        let store = MemoryTokenStore::new();
        let sku = Sku::new("unit").unwrap();
        let options = IssueOptions::default()
            .with_max_tokens_per_user(2)
            .with_retry_grace(Duration::from_secs(60));
        let mut token = Token::generate(&sku, "o-fast").unwrap();
        store.issue(&token, &options).await.unwrap();
        for _ in 0..50 {
            let successor = Token::successor_of(&token.parsed()).unwrap();
            let rotated = store.rotate(&token.parsed(), &successor, &options).await;
            assert!(rotated.unwrap().is_some());
            token = successor;
        }
        assert!(store.len() <= 1 + 2 * 2, "{} entries", store.len());
        assert!(store.validate(&token.parsed()).await.unwrap().is_live());
    }
}
