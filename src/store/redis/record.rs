//! The stored value of one token: `<expires at ms>|<issued at ms>|<session started at
//! ms>|<device>`, the device empty when there is none. The Lua scripts write it (and
//! the retry grace's tombstones, which start with a letter and so never parse as live);
//! the store reads it.

use crate::store::StoreError;

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
}
