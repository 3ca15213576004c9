//! The stored value of one token: `<expires at ms>|<issued at ms>|<session started at
//! ms>|<device>`, the device empty when there is none. The Lua scripts write it (and
//! the retry grace's tombstones, which start with a letter and so never parse as live);
//! the store reads it.

use crate::store::{SignOutReason, StoreError, TokenStatus};

/// A stored `<expires at ms>|<issued at ms>|<started at ms>|<device>` value.
pub(super) struct Value {
    pub(super) expires_at_ms: u64,
    pub(super) issued_at_ms: u64,
    pub(super) started_at_ms: u64,
    pub(super) device: Option<String>,
}

impl Value {
    pub(super) fn parse(value: &str) -> Result<Self, StoreError> {
        let mut parts = value.splitn(4, '|');
        let mut number = || {
            parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or(StoreError::Protocol("token value without its times"))
        };
        let (expires_at_ms, issued_at_ms, started_at_ms) = (number()?, number()?, number()?);
        let device = parts.next().filter(|d| !d.is_empty()).map(str::to_owned);
        Ok(Self {
            expires_at_ms,
            issued_at_ms,
            started_at_ms,
            device,
        })
    }

    /// The expiry alone, without allocating: the validation path.
    pub(super) fn expires_at_ms(value: &[u8]) -> Option<u64> {
        let end = value.iter().position(|&b| b == b'|')?;
        std::str::from_utf8(&value[..end]).ok()?.parse().ok()
    }

    /// What validation answers about a stored value at `now`: live with its expiry, a
    /// sign-out notice (`s<until>|<reason>`, see `sign_out.lua`) with its reason, or
    /// unknown. A live token's value allocates nothing.
    pub(super) fn status(value: &[u8], now: u64) -> TokenStatus {
        if let Some(expires_at_ms) = Self::expires_at_ms(value) {
            return if expires_at_ms > now {
                TokenStatus::Live { expires_at_ms }
            } else {
                TokenStatus::Unknown
            };
        }
        let notice = value
            .strip_prefix(b"s")
            .and_then(|rest| Some((Self::expires_at_ms(rest)?, rest)))
            .filter(|(until, _)| *until > now)
            .and_then(|(_, rest)| {
                let reason = &rest[rest.iter().position(|&b| b == b'|')? + 1..];
                SignOutReason::new(std::str::from_utf8(reason).ok()?)
            });
        notice.map_or(TokenStatus::Unknown, TokenStatus::SignedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_into_times_and_device() {
        let value = Value::parse("20|17|12|").unwrap();
        assert_eq!(
            (
                value.expires_at_ms,
                value.issued_at_ms,
                value.started_at_ms,
                value.device
            ),
            (20, 17, 12, None)
        );
        let value = Value::parse("20|17|12|a|b").unwrap();
        assert_eq!(value.device.as_deref(), Some("a|b"));
        assert!(Value::parse("17").is_err());
        assert!(
            Value::parse("20|17|d").is_err(),
            "a value without its start"
        );
        assert!(Value::parse("x|1|1|d").is_err());
        assert_eq!(Value::expires_at_ms(b"20|17|12|d"), Some(20));
        assert_eq!(Value::expires_at_ms(b"20"), None);
        assert_eq!(Value::expires_at_ms(b"x|1|"), None);
        // The retry grace's tombstones are never live.
        assert_eq!(Value::expires_at_ms(b"r20|00ff"), None);
        assert_eq!(Value::expires_at_ms(b"x20|00ff|20|17|12|d"), None);
    }

    #[test]
    fn statuses_read_expiry_and_notices() {
        let live = TokenStatus::Live { expires_at_ms: 20 };
        assert_eq!(Value::status(b"20|17|12|d", 19), live);
        assert_eq!(Value::status(b"20|17|12|d", 20), TokenStatus::Unknown);
        let reason = SignOutReason::new("banned").unwrap();
        assert_eq!(
            Value::status(b"s20|banned", 19),
            TokenStatus::SignedOut(reason)
        );
        assert_eq!(Value::status(b"s20|banned", 20), TokenStatus::Unknown);
        // A notice whose reason is not one, and the grace's tombstones, say nothing.
        assert_eq!(Value::status(b"s20|Not OK", 19), TokenStatus::Unknown);
        assert_eq!(Value::status(b"s20", 19), TokenStatus::Unknown);
        assert_eq!(Value::status(b"r20|00ff", 19), TokenStatus::Unknown);
        assert_eq!(Value::status(b"u20|", 19), TokenStatus::Unknown);
    }
}
