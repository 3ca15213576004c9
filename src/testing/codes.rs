//! The simulator's bookkeeping of minted codes: each works once, expires, and the
//! oldest are forgotten beyond a cap.

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use super::wire::Errcode;
use crate::wechat::Session;

/// Codes by value, and in minting order so the oldest can be forgotten first.
#[derive(Default)]
pub(super) struct Codes {
    by_code: HashMap<String, Pending>,
    order: VecDeque<(Instant, String)>,
}

struct Pending {
    /// `None` once exchanged: a second exchange answers 40163 rather than 40029.
    session: Option<Session>,
    expires_at: Instant,
}

impl Codes {
    /// Remembers `code` for `session` until `expires_at`, forgetting the oldest codes
    /// beyond `max`.
    pub(super) fn insert(
        &mut self,
        code: String,
        session: Session,
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
                session: Some(session),
                expires_at,
            },
        );
        self.order.push_back((expires_at, code));
    }

    /// The session of `code`, once: later exchanges answer 40163, unknown or expired
    /// codes 40029.
    pub(super) fn take(&mut self, code: &str, now: Instant) -> Result<Session, Errcode> {
        self.forget_expired(now);
        match self.by_code.get_mut(code) {
            Some(pending) if pending.expires_at > now => {
                pending.session.take().ok_or(Errcode::CODE_USED)
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
