//! What the simulator's endpoints were asked, counted, and the faults injected into
//! their next answers.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use super::{WeChatSimulator, wire::Errcode};

/// One of the simulated WeChat endpoints, for [`fail_next`](WeChatSimulator::fail_next).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimEndpoint {
    /// `GET /sns/jscode2session` and [`jscode2session`](WeChatSimulator::jscode2session).
    Jscode2Session,
    /// `POST /cgi-bin/stable_token` and [`stable_token`](WeChatSimulator::stable_token).
    StableToken,
    /// `GET /cgi-bin/token` and [`token`](WeChatSimulator::token).
    Token,
    /// `POST /wxa/business/getuserphonenumber` and
    /// [`get_user_phone_number`](WeChatSimulator::get_user_phone_number).
    PhoneNumber,
}

impl SimEndpoint {
    const COUNT: usize = 4;

    const fn index(self) -> usize {
        match self {
            Self::Jscode2Session => 0,
            Self::StableToken => 1,
            Self::Token => 2,
            Self::PhoneNumber => 3,
        }
    }
}

/// How many calls each endpoint received, over HTTP or as library calls, refused ones
/// included. See [`calls`](WeChatSimulator::calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimulatorCalls {
    /// Calls of `jscode2session`.
    pub jscode2session: u64,
    /// Calls of `stable_token`, force refreshes included.
    pub stable_token: u64,
    /// Successful force refreshes of `stable_token`.
    pub force_refresh: u64,
    /// Calls of the legacy `token` endpoint.
    pub token: u64,
    /// Calls of `getuserphonenumber`.
    pub phone_number: u64,
}

/// Errmsg of an injected errcode.
const INJECTED: &str = "injected";

/// The counters and the pending injected faults, shared by clones.
#[derive(Default)]
pub(super) struct Calls {
    counts: [AtomicU64; SimEndpoint::COUNT],
    force_refreshes: AtomicU64,
    /// Per endpoint: the errcode to answer and how many more times.
    faults: Mutex<[(i64, u32); SimEndpoint::COUNT]>,
}

impl Calls {
    /// Counts a call of `endpoint`, and answers an injected fault if one is pending.
    pub(super) fn enter(&self, endpoint: SimEndpoint) -> Result<(), Errcode> {
        self.counts[endpoint.index()].fetch_add(1, Ordering::Relaxed);
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let (errcode, times) = &mut faults[endpoint.index()];
        if *times == 0 {
            return Ok(());
        }
        *times -= 1;
        tracing::debug!(
            ?endpoint,
            errcode = *errcode,
            "simulator answered an injected errcode"
        );
        Err(Errcode::new(*errcode, INJECTED))
    }

    /// Counts a successful force refresh.
    pub(super) fn force_refreshed(&self) {
        self.force_refreshes.fetch_add(1, Ordering::Relaxed);
    }
}

impl WeChatSimulator {
    /// Makes the next `times` calls of `endpoint` answer `{"errcode": errcode, "errmsg":
    /// "injected"}` (an `Err` with that errcode from the library calls), before any other
    /// check and without using anything up. Replaces what is left of an earlier
    /// injection for that endpoint; `times` 0 cancels it.
    ///
    /// ```
    /// use mpauthx::testing::{SimEndpoint, WeChatSimulator};
    ///
    /// let sim = WeChatSimulator::new("wx-test-app", "test-secret");
    /// sim.fail_next(SimEndpoint::StableToken, -1, 1);
    /// let refused = sim.stable_token("wx-test-app", "test-secret", false).unwrap_err();
    /// assert_eq!(refused.errcode, -1);
    /// assert!(sim.stable_token("wx-test-app", "test-secret", false).is_ok());
    /// assert_eq!(sim.calls().stable_token, 2);
    /// ```
    pub fn fail_next(&self, endpoint: SimEndpoint, errcode: i64, times: u32) {
        let mut faults = self
            .state
            .calls
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        faults[endpoint.index()] = (errcode, times);
    }

    /// How many calls each endpoint has received so far, by this simulator and its
    /// clones.
    pub fn calls(&self) -> SimulatorCalls {
        let calls = &self.state.calls;
        let count = |endpoint: SimEndpoint| calls.counts[endpoint.index()].load(Ordering::Relaxed);
        SimulatorCalls {
            jscode2session: count(SimEndpoint::Jscode2Session),
            stable_token: count(SimEndpoint::StableToken),
            force_refresh: calls.force_refreshes.load(Ordering::Relaxed),
            token: count(SimEndpoint::Token),
            phone_number: count(SimEndpoint::PhoneNumber),
        }
    }
}
