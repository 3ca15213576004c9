//! Duplicate login codes: concurrent logins carrying one code are one login.
//!
//! A double tap or a client retrying before the first answer sends the same one-time
//! code twice. WeChat would accept it once and refuse the second (40163), so the
//! second request would fail although the user is logged in. Instead the first request
//! runs the login and every concurrent request with the same code waits for it and gets
//! the same answer, token included. Requests count as duplicates when their whole body
//! is the same (a request with the same code but, say, a phone code the first lacked
//! is not answered for by the first: WeChat refuses its code). Only requests in flight
//! are remembered: a replay after the login finished goes to WeChat and gets
//! `invalid_code`.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::{AuthorizeRequest, Authorized, Error};

type Outcome = Result<Authorized, Error>;

/// The logins in flight, by the SHA-256 of their code (codes are credentials: never
/// kept as such).
#[derive(Default)]
pub(super) struct InFlight {
    logins: Mutex<HashMap<[u8; 32], Arc<OnceCell<Outcome>>>>,
}

impl InFlight {
    /// Runs `login` for `code`, unless a login with that code is running: then its
    /// outcome, once it is known. If that login is dropped before it finishes, one of
    /// its waiters runs its own.
    pub(super) async fn run(&self, key: [u8; 32], login: impl Future<Output = Outcome>) -> Outcome {
        let entry = Entry {
            in_flight: self,
            key,
            cell: Some(Arc::clone(self.lock().entry(key).or_default())),
        };
        let cell = entry.cell.as_ref().expect("held until drop");
        let mut mine = None;
        let shared = cell
            .get_or_init(|| async {
                let outcome = login.await;
                let copy = replay(&outcome);
                mine = Some(outcome);
                copy
            })
            .await;
        match mine {
            Some(outcome) => outcome,
            None => {
                tracing::debug!("a duplicate login code got the answer of the login in flight");
                replay(shared)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<OnceCell<Outcome>>>> {
        // Every update leaves the map consistent, so a poisoned lock holds nothing torn.
        self.logins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The key of a login: the SHA-256 of its whole body, each field tagged and
/// length-prefixed (codes are credentials: never kept as such).
pub(super) fn key_of(request: &AuthorizeRequest) -> [u8; 32] {
    let mut hash = Sha256::new();
    let phone = request.phone.as_ref();
    let fields = [
        request.code.as_deref(),
        request.encrypted_data.as_deref(),
        request.iv.as_deref(),
        request.raw_data.as_deref(),
        request.signature.as_deref(),
        request.device.as_deref(),
        request.phone_code.as_deref(),
        phone.map(|p| p.encrypted_data.as_str()),
        phone.map(|p| p.iv.as_str()),
    ];
    for field in fields {
        match field {
            None => hash.update([0]),
            Some(value) => {
                hash.update([1]);
                hash.update((value.len() as u64).to_le_bytes());
                hash.update(value.as_bytes());
            }
        }
    }
    hash.finalize().into()
}

/// One caller's hold on an entry: the last to leave, or anyone once the outcome is
/// known, removes it, so that the map holds logins in flight only.
struct Entry<'a> {
    in_flight: &'a InFlight,
    key: [u8; 32],
    /// This caller's reference, given up under the map's lock.
    cell: Option<Arc<OnceCell<Outcome>>>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut logins = self.in_flight.lock();
        let Some(mine) = self.cell.take() else { return };
        let ours = logins
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &mine));
        let done = mine.initialized();
        // Given up while the lock is held, so that of two leaving at once the second
        // sees the first gone.
        drop(mine);
        let alone = logins
            .get(&self.key)
            .is_some_and(|cell| Arc::strong_count(cell) == 1);
        if ours && (done || alone) {
            logins.remove(&self.key);
        }
    }
}

fn replay(outcome: &Outcome) -> Outcome {
    match outcome {
        Ok(authorized) => Ok(authorized.clone()),
        Err(error) => Err(error.replay()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_duplicates_share_one_run_and_are_forgotten() {
        let in_flight = InFlight::default();
        let runs = AtomicUsize::new(0);
        let login = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(Error::InvalidRequest("the same answer"))
        };
        let code = key_of(&AuthorizeRequest::new("code"));
        let other = key_of(&AuthorizeRequest::new("code").with_device("another body"));
        assert_ne!(code, other);
        let (a, b, c) = tokio::join!(
            in_flight.run(code, login()),
            in_flight.run(code, login()),
            in_flight.run(other, login()),
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per code");
        for outcome in [a, b, c] {
            assert!(matches!(
                outcome,
                Err(Error::InvalidRequest("the same answer"))
            ));
        }
        assert_eq!(in_flight.len(), 0, "nothing is remembered afterwards");
        let _ = in_flight.run(code, login()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "a later replay runs again");
    }

    #[tokio::test]
    async fn a_dropped_login_leaves_nothing_and_a_waiter_takes_over() {
        let in_flight = InFlight::default();
        let started = tokio::sync::Notify::new();
        let slow = async {
            started.notify_one();
            std::future::pending::<Outcome>().await
        };
        let waiter = async {
            started.notified().await;
            in_flight
                .run([7; 32], async { Err(Error::InvalidRequest("waiter ran")) })
                .await
        };
        let leader = async {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), in_flight.run([7; 32], slow)).await;
        };
        let ((), outcome) = tokio::join!(leader, waiter);
        assert!(matches!(outcome, Err(Error::InvalidRequest("waiter ran"))));
        assert_eq!(in_flight.len(), 0);
        // Cancelled alone: the entry goes with it.
        let _ = tokio::time::timeout(
            Duration::from_millis(10),
            in_flight.run([9; 32], std::future::pending()),
        )
        .await;
        assert_eq!(in_flight.len(), 0);
    }
}
