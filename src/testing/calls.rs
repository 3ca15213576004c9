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

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::testing::wire::{PhoneNumberRequest, TokenRequest};

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    fn sim() -> WeChatSimulator {
        WeChatSimulator::new(APP, SECRET)
    }

    fn injected(errcode: i64) -> Errcode {
        Errcode::new(errcode, INJECTED)
    }

    fn errcode_of(answer: &str) -> (i64, String) {
        let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
        (
            answer["errcode"].as_i64().unwrap_or(0),
            answer["errmsg"].as_str().unwrap_or("").to_owned(),
        )
    }

    #[test]
    fn injected_faults_come_before_any_check_and_use_nothing_up() {
        let sim = sim();
        let login = sim.login("alice").unwrap();
        sim.fail_next(SimEndpoint::Jscode2Session, -1, 2);
        assert_eq!(
            sim.jscode2session(APP, SECRET, &login.code),
            Err(injected(-1))
        );
        // Before the query's own checks too.
        assert_eq!(
            errcode_of(&sim.jscode2session_query("")),
            (-1, "injected".into())
        );
        assert!(sim.jscode2session(APP, SECRET, &login.code).is_ok());
        assert_eq!(sim.calls().jscode2session, 3);
    }

    #[test]
    fn injected_stable_token_faults_use_no_force_refresh() {
        let sim = sim().with_force_refresh_limit(1);
        let (token, _) = sim.stable_token(APP, SECRET, false).unwrap();
        sim.fail_next(SimEndpoint::StableToken, 45009, 2);
        assert_eq!(sim.stable_token(APP, SECRET, true), Err(injected(45009)));
        let not_json = sim.stable_token_answer(Err(Errcode::DATA_FORMAT_ERROR), Instant::now());
        assert_eq!(errcode_of(&not_json), (45009, "injected".into()));
        assert!(sim.check_access_token(&token).is_ok());
        let (forced, _) = sim.stable_token(APP, SECRET, true).unwrap();
        assert_ne!(forced, token);
        let calls = sim.calls();
        assert_eq!((calls.stable_token, calls.force_refresh), (4, 1));
    }

    #[test]
    fn injected_token_faults_keep_the_previous_token() {
        let sim = sim();
        let (token, _) = sim.token(APP, SECRET).unwrap();
        sim.fail_next(SimEndpoint::Token, 40013, 1);
        assert_eq!(sim.token(APP, SECRET), Err(injected(40013)));
        assert!(sim.check_access_token(&token).is_ok());
        sim.fail_next(SimEndpoint::Token, 40013, 1);
        let query = format!("grant_type=client_credential&appid={APP}&secret={SECRET}");
        let answer = sim.token_query_answer(&query, Instant::now());
        assert_eq!(errcode_of(&answer).0, 40013);
        assert!(sim.check_access_token(&token).is_ok());
        assert_eq!(sim.calls().token, 3);
    }

    #[test]
    fn injected_phone_number_faults_keep_the_phone_code() {
        let sim = sim();
        let (token, _) = sim.stable_token(APP, SECRET, false).unwrap();
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        sim.fail_next(SimEndpoint::PhoneNumber, 40001, 2);
        assert_eq!(
            sim.get_user_phone_number(&token, &minted.code, None),
            Err(injected(40001))
        );
        let request = PhoneNumberRequest {
            code: Some(minted.code.clone()),
            open_id: None,
        };
        let answer = sim.phone_number_answer("", Ok(request), Instant::now(), SystemTime::now());
        assert_eq!(errcode_of(&answer), (40001, "injected".into()));
        assert!(
            sim.get_user_phone_number(&token, &minted.code, None)
                .is_ok()
        );
        assert_eq!(sim.calls().phone_number, 3);
    }

    #[test]
    fn a_new_injection_replaces_the_last_and_zero_cancels() {
        let sim = sim();
        sim.fail_next(SimEndpoint::Token, 1, 5);
        sim.fail_next(SimEndpoint::Token, 2, 1);
        assert_eq!(sim.token(APP, SECRET), Err(injected(2)));
        assert!(sim.token(APP, SECRET).is_ok());
        sim.fail_next(SimEndpoint::Token, 3, 5);
        sim.fail_next(SimEndpoint::Token, 3, 0);
        assert!(sim.token(APP, SECRET).is_ok());
    }

    #[test]
    fn injections_are_per_endpoint_and_shared_by_clones() {
        let sim = sim();
        sim.clone().fail_next(SimEndpoint::StableToken, 7, 1);
        assert!(sim.token(APP, SECRET).is_ok());
        let login = sim.login("alice").unwrap();
        assert!(sim.jscode2session(APP, SECRET, &login.code).is_ok());
        assert_eq!(sim.stable_token(APP, SECRET, false), Err(injected(7)));
        assert_eq!(sim.clone().calls().stable_token, 1);
    }

    #[test]
    fn every_call_is_counted() {
        let sim = sim();
        assert_eq!(sim.calls(), SimulatorCalls::default());
        let login = sim.login("alice").unwrap();
        sim.jscode2session(APP, SECRET, &login.code).unwrap();
        sim.jscode2session(APP, "wrong", "x").unwrap_err();
        sim.jscode2session_query("");
        let (token, _) = sim.stable_token(APP, SECRET, false).unwrap();
        sim.stable_token(APP, SECRET, true).unwrap();
        sim.stable_token(APP, SECRET, true).unwrap_err();
        sim.stable_token_answer(Ok(TokenRequest::default()), Instant::now());
        sim.token(APP, SECRET).unwrap();
        sim.token_query_answer("", Instant::now());
        sim.get_user_phone_number(&token, "nope", None).unwrap_err();
        // Minting and checking tokens are no calls of an endpoint.
        sim.phone_code("alice", "13800138000").unwrap();
        sim.check_access_token(&token).unwrap_err();
        assert_eq!(
            sim.calls(),
            SimulatorCalls {
                jscode2session: 3,
                stable_token: 4,
                force_refresh: 1,
                token: 2,
                phone_number: 1,
            }
        );
    }
}
