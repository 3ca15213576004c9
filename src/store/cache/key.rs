//! What the cache's tables are keyed by: a 128-bit keyed hash of the token's text, so
//! that a hit costs one SipHash pass rather than the SHA-256 the stores key tokens by
//! (which a miss still computes).

use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use siphasher::sip128::SipHasher13;

use crate::token::ParsedToken;

/// A token's key: the 128-bit SipHash-1-3 of its text under a random key drawn per
/// cache. A token hits only an entry of its own: another text matching all 128 bits
/// under a key it never sees is out of reach. The text itself is never kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key(u64, u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: the tables take its first half as is.
        state.write_u64(self.0);
    }
}

/// The random key of one cache.
pub(super) struct Keys(SipHasher13);

impl Keys {
    pub(super) fn new() -> Self {
        // The standard library's per-process random keys, through its own SipHash: two
        // words no one outside this process can tell.
        let random = RandomState::new();
        Self(SipHasher13::new_with_keys(
            random.hash_one(0_u8),
            random.hash_one(1_u8),
        ))
    }

    /// The key of `token`.
    pub(super) fn of(&self, token: &ParsedToken<'_>) -> Key {
        let (high, low) = self.0.hash(token.expose().as_bytes()).as_u64();
        Key(high, low)
    }
}

/// Hashes a [`Key`] by taking its first half: the tables' hasher.
#[derive(Clone, Copy, Default)]
pub(super) struct BuildPassThrough;

impl BuildHasher for BuildPassThrough {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// See [`BuildPassThrough`]. Anything but a `u64` is folded in, FNV-style, so that the
/// hasher stays correct (if slower) for any key.
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Sku, Token};

    #[test]
    fn keys_tell_tokens_apart_and_caches_apart() {
        let sku = Sku::new("unit").unwrap();
        let (a, b) = (
            Token::generate(&sku, "o-a").unwrap(),
            Token::generate(&sku, "o-a").unwrap(),
        );
        let keys = Keys::new();
        assert!(keys.of(&a.parsed()) == keys.of(&a.parsed()));
        assert!(keys.of(&a.parsed()) != keys.of(&b.parsed()));
        assert!(
            Keys::new().of(&a.parsed()) != keys.of(&a.parsed()),
            "keys per cache"
        );
        let key = keys.of(&a.parsed());
        assert_eq!(BuildPassThrough.hash_one(key), key.0);
    }
}
