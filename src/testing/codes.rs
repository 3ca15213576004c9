//! The simulator's bookkeeping of minted codes (login codes and phone codes alike): each
//! works once, expires, and the oldest are forgotten beyond a cap.

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use super::wire::Errcode;

/// Codes by value, each standing for a `T`, and in minting order so the oldest can be
/// forgotten first.
pub(super) struct Codes<T> {
    by_code: HashMap<String, Pending<T>>,
    order: VecDeque<(Instant, String)>,
}

struct Pending<T> {
    /// `None` once used: a second use answers 40163 rather than 40029.
    value: Option<T>,
    expires_at: Instant,
}

impl<T> Default for Codes<T> {
    fn default() -> Self {
        Self {
            by_code: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> Codes<T> {
    /// Remembers `code` for `value` until `expires_at`, forgetting the oldest codes
    /// beyond `max`.
    pub(super) fn insert(
        &mut self,
        code: String,
        value: T,
        expires_at: Instant,
        now: Instant,
        max: usize,
    ) {
        self.forget_expired(now);
        while self.by_code.len() >= max {
            self.forget_oldest();
        }
        self.by_code.insert(
            code.clone(),
            Pending {
                value: Some(value),
                expires_at,
            },
        );
        self.order.push_back((expires_at, code));
    }

    /// The value of `code`, once: later uses answer 40163, unknown or expired codes
    /// 40029.
    pub(super) fn take(&mut self, code: &str, now: Instant) -> Result<T, Errcode> {
        self.take_if(code, now, |_| Ok(()))
    }

    /// As [`take`](Self::take), but only if `accept` accepts the value: its refusal
    /// leaves the code unused.
    pub(super) fn take_if(
        &mut self,
        code: &str,
        now: Instant,
        accept: impl FnOnce(&T) -> Result<(), Errcode>,
    ) -> Result<T, Errcode> {
        self.forget_expired(now);
        match self.by_code.get_mut(code) {
            Some(pending) if pending.expires_at > now => {
                accept(pending.value.as_ref().ok_or(Errcode::CODE_USED)?)?;
                pending.value.take().ok_or(Errcode::CODE_USED)
            }
            _ => Err(Errcode::INVALID_CODE),
        }
    }

    /// How many codes are remembered, used ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_code.len()
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some((expires_at, _)) = self.order.front() {
            if *expires_at > now {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, code)) = self.order.pop_front() {
            self.by_code.remove(&code);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_refusal_leaves_the_code_unused() {
        let mut codes = Codes::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        codes.insert("c".into(), 7, later, now, 10);
        let refuse = |_: &i32| Err(Errcode::INVALID_APP_ID);
        assert_eq!(
            codes.take_if("c", now, refuse),
            Err(Errcode::INVALID_APP_ID)
        );
        assert_eq!(
            codes.take_if("c", now, |value| {
                assert_eq!(*value, 7);
                Ok(())
            }),
            Ok(7)
        );
        // A used code is reported as used before `accept` is asked.
        assert_eq!(codes.take_if("c", now, refuse), Err(Errcode::CODE_USED));
        assert_eq!(codes.take("d", now), Err(Errcode::INVALID_CODE));
    }
}
