//! The generations of cached answers, by stripe of users: what lets a tracked cache
//! drop a user's answers in O(1) when Redis says the user's tokens changed.

use std::{
    hash::{BuildHasher as _, RandomState},
    sync::atomic::{AtomicU64, Ordering},
};

#[cfg(feature = "redis")]
use crate::instruments::{self, Invalidation};

/// How many stripes: 64 KiB of counters. A change to one user's tokens also drops the
/// answers of the users sharing its stripe (one in 8,192), which cost one lookup each.
const STRIPES: usize = 8192;

/// One counter per stripe of users. An answer is kept with its stripe's counter as it
/// was before the store was asked, and is good only while the counter has not moved:
/// a change to any user of the stripe after the lookup began (or a flush) ends it,
/// whether it came before or after the answer was cached.
pub(crate) struct Stripes {
    generations: Box<[AtomicU64]>,
    /// Keys the users' fingerprints.
    users: RandomState,
}

impl Stripes {
    pub(crate) fn new() -> Self {
        Self {
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            users: RandomState::new(),
        }
    }

    /// A keyed hash of (sku, openid): the user's fingerprint. A collision only makes a
    /// change to one user drop the other's answers too.
    pub(crate) fn user(&self, sku: &str, open_id: &str) -> u64 {
        self.users.hash_one((sku, open_id))
    }

    fn stripe(&self, user: u64) -> &AtomicU64 {
        // The fingerprint is a keyed hash: its low bits are as good as any.
        &self.generations[(user as usize) & (STRIPES - 1)]
    }

    /// The generation of `user`'s stripe now.
    pub(crate) fn generation(&self, user: u64) -> u64 {
        self.stripe(user).load(Ordering::SeqCst)
    }

    /// Ends the answers about `user` (and its stripe) cached so far, and those of the
    /// lookups under way.
    pub(crate) fn bump(&self, user: u64) {
        self.stripe(user).fetch_add(1, Ordering::SeqCst);
    }

    /// Ends every answer cached so far, and those of the lookups under way.
    pub(crate) fn bump_all(&self) {
        for generation in &self.generations {
            generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(feature = "redis")]
impl crate::store::redis::Invalidate for Stripes {
    fn user(&self, user: &[u8]) {
        // `<sku>:<openid>`: the sku has no ':'.
        let parsed = std::str::from_utf8(user)
            .ok()
            .and_then(|user| user.split_once(':'));
        match parsed {
            Some((sku, open_id)) => {
                self.bump(Stripes::user(self, sku, open_id));
                instruments::cache_invalidation(Invalidation::Pushed);
            }
            None => self.all(),
        }
    }

    fn all(&self) {
        self.bump_all();
        instruments::cache_invalidation(Invalidation::Flush);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_moves_the_users_stripe_and_a_flush_every_stripe() {
        let stripes = Stripes::new();
        let (ann, ben) = (stripes.user("demo", "o-ann"), stripes.user("demo", "o-ben"));
        let (a0, b0) = (stripes.generation(ann), stripes.generation(ben));
        stripes.bump(ann);
        assert_ne!(stripes.generation(ann), a0);
        if ann as usize % STRIPES != ben as usize % STRIPES {
            assert_eq!(stripes.generation(ben), b0, "another stripe stays");
        }
        stripes.bump_all();
        assert_ne!(stripes.generation(ben), b0);
        assert_ne!(
            stripes.user("demo", "o-ann"),
            stripes.user("other", "o-ann")
        );
    }
}
