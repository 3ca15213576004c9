//! [`Sku`]: the project a token belongs to.

use std::{fmt, str::FromStr, sync::Arc};

use super::{TokenError, alphabet::all_part_bytes};

/// The longest sku accepted, in bytes.
pub(super) const MAX_SKU_LEN: usize = 32;

/// The project a token belongs to (the Node original's `sku`), for example one
/// mini-program among several that share a Redis.
///
/// It is part of every token, so it is restricted to `[A-Za-z0-9_-]{1,32}`: the `.`
/// that separates a token's parts can never appear in it. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sku(Arc<str>);

impl Sku {
    /// Checks and wraps a sku.
    pub fn new(sku: impl AsRef<str>) -> Result<Self, TokenError> {
        let sku = sku.as_ref();
        if is_token_part(sku, MAX_SKU_LEN) {
            Ok(Self(Arc::from(sku)))
        } else {
            Err(TokenError::InvalidSku)
        }
    }

    /// A sku that was checked already, e.g. as part of a parsed token.
    pub(super) fn from_checked(sku: &str) -> Self {
        debug_assert!(is_token_part(sku, MAX_SKU_LEN));
        Self(Arc::from(sku))
    }

    /// The sku as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sku {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Sku {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Sku {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl fmt::Debug for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is 1 to `max` bytes of `[A-Za-z0-9_-]`, the alphabet of skus and openids.
pub(super) fn is_token_part(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && all_part_bytes(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["demo", "a", "A-b_9", &"x".repeat(MAX_SKU_LEN)] {
            assert_eq!(Sku::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "has.dot",
            "sp ace",
            "é",
            "a|b",
            "{tag}",
            &"x".repeat(MAX_SKU_LEN + 1),
        ] {
            assert_eq!(Sku::new(bad), Err(TokenError::InvalidSku), "{bad:?}");
        }
    }
}
