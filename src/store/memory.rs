//! An in-process token store: the embedded default and the test double.

use std::{
    collections::HashMap,
    future::{Future, Ready, ready},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::{IssueOptions, StoreError, TokenInfo, TokenStore, now_millis};
use crate::token::{ParsedToken, Sku, Token, TokenHash};

/// Sweep every expired token out after this many issues, so that memory stays bounded
/// by the live tokens even when nobody ever reads the expired ones again.
const SWEEP_EVERY: u32 = 1024;

/// Keeps tokens in this process's memory.
///
/// For tests, single-process deployments and the example server. Tokens vanish when the
/// process exits, and are not shared between processes: use [`RedisTokenStore`] for
/// anything else. Clones share one store.
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
    issued_at_ms: u64,
    expires_at_ms: u64,
    device: Option<String>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tokens are held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether no token is held.
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
    /// Files `token` under the user `sku` + `open_id`.
    fn insert(
        &mut self,
        sku: &str,
        open_id: &str,
        token: &Token,
        options: &IssueOptions,
        device: Option<String>,
    ) -> TokenInfo {
        let now = now_millis();
        self.issues_since_sweep += 1;
        if self.issues_since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let user = user_key(sku, open_id);
        let hashes = self.users.entry(user.clone()).or_default();
        hashes.retain(|h| self.tokens.get(h).is_some_and(|e| e.expires_at_ms > now));
        let max = options.max_tokens_per_user() as usize;
        while hashes.len() >= max {
            let oldest = hashes
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| self.tokens.get(*h).map_or(0, |e| e.expires_at_ms))
                .map(|(i, _)| i)
                .expect("non-empty");
            self.tokens.remove(&hashes.swap_remove(oldest));
        }
        let hash = token.hash();
        hashes.push(hash);
        let entry = Entry {
            user,
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(options.ttl_millis()),
            device,
        };
        let info = entry.info(hash);
        self.tokens.insert(hash, entry);
        info
    }

    fn remove(&mut self, hash: &TokenHash, now: u64) -> Option<Entry> {
        let entry = self.tokens.remove(hash)?;
        if let Some(hashes) = self.users.get_mut(&entry.user) {
            hashes.retain(|h| h != hash);
            if hashes.is_empty() {
                self.users.remove(&entry.user);
            }
        }
        (entry.expires_at_ms > now).then_some(entry)
    }

    fn sweep(&mut self, now: u64) {
        self.issues_since_sweep = 0;
        self.tokens.retain(|_, e| e.expires_at_ms > now);
        let tokens = &self.tokens;
        self.users.retain(|_, hashes| {
            hashes.retain(|h| tokens.contains_key(h));
            !hashes.is_empty()
        });
    }
}

impl Entry {
    fn info(&self, hash: TokenHash) -> TokenInfo {
        TokenInfo {
            hash,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            device: self.device.clone(),
        }
    }
}

impl TokenStore for MemoryTokenStore {
    type Validation = Ready<Result<bool, StoreError>>;

    fn issue(
        &self,
        token: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<TokenInfo, StoreError>> + Send {
        let device = options.device().map(str::to_owned);
        let info = self
            .lock()
            .insert(token.sku(), token.open_id(), token, options, device);
        ready(Ok(info))
    }

    fn validate(&self, token: &ParsedToken<'_>) -> Self::Validation {
        let hash = token.hash();
        let live = self
            .lock()
            .tokens
            .get(&hash)
            .is_some_and(|e| e.expires_at_ms > now_millis());
        ready(Ok(live))
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
        let live = owned && state.remove(hash, now_millis()).is_some();
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
            .filter(|e| e.expires_at_ms > now)
            .count();
        ready(Ok(live))
    }

    fn list(
        &self,
        sku: &Sku,
        open_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send {
        let now = now_millis();
        let state = self.lock();
        let mut infos: Vec<TokenInfo> = state
            .users
            .get(&user_key(sku.as_str(), open_id))
            .into_iter()
            .flatten()
            .filter_map(|h| state.tokens.get(h).map(|e| e.info(*h)))
            .filter(|info| info.expires_at_ms > now)
            .collect();
        infos.sort_by_key(|info| info.expires_at_ms);
        ready(Ok(infos))
    }

    fn rotate(
        &self,
        token: &ParsedToken<'_>,
        successor: &Token,
        options: &IssueOptions,
    ) -> impl Future<Output = Result<Option<TokenInfo>, StoreError>> + Send {
        let mut state = self.lock();
        let rotated = state
            .remove(&token.hash(), now_millis())
            .map(|old| state.insert(token.sku(), token.open_id(), successor, options, old.device));
        ready(Ok(rotated))
    }
}
