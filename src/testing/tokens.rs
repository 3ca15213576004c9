//! Access tokens: WeChat's `stable_token` and legacy `token` endpoints, and the check
//! an API call makes of its `access_token`.

use std::{
    collections::HashMap,
    sync::{MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    WeChatSimulator,
    calls::SimEndpoint,
    mint::random_bytes,
    simulator::Config,
    wire::{self, Errcode, TokenRequest},
};

/// How long an access token lives unless
/// [`with_access_token_ttl`](WeChatSimulator::with_access_token_ttl) says otherwise: two
/// hours, as WeChat's.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(7200);

/// How many force refreshes `stable_token` grants unless
/// [`with_force_refresh_limit`](WeChatSimulator::with_force_refresh_limit) says
/// otherwise: WeChat's daily limit.
pub const DEFAULT_FORCE_REFRESH_LIMIT: u32 = 20;

/// The shortest time between two force refreshes, as on WeChat.
pub(super) const FORCE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// `stable_token` hands out a new token this long before the current one expires.
const REFRESH_WINDOW: Duration = Duration::from_secs(300);

/// Random bytes in an access token: 102 bytes are 136 base64url characters, the length
/// of WeChat's.
const TOKEN_BYTES: usize = 102;

/// Characters in an access token.
const TOKEN_LEN: usize = TOKEN_BYTES / 3 * 4;

/// How many tokens are remembered, expired ones included (they answer 42001 rather than
/// 40001); beyond it, the soonest to expire are forgotten.
const MAX_TOKENS: usize = 1024;

/// The `grant_type` of both endpoints.
const CLIENT_CREDENTIAL: &str = "client_credential";

/// Which endpoint issued a token: their tokens are kept apart, as on WeChat.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    Stable,
    Legacy,
}

struct Issued {
    expires_at: Instant,
    grant: Grant,
}

/// The tokens issued so far and the force refresh quota, shared by clones.
#[derive(Default)]
pub(super) struct Tokens {
    /// Tokens neither revoked nor superseded, expired ones included, by value.
    live: HashMap<String, Issued>,
    /// The latest stable token and its expiry, revoked or not.
    stable: Option<(String, Instant)>,
    /// Force refreshes granted since creation or the last reset.
    forced: u32,
    last_forced: Option<Instant>,
    /// Whether normal mode hands back the latest stable token even once revoked.
    serve_revoked: bool,
}

impl Tokens {
    /// A stable token and its remaining lifetime in seconds.
    fn stable(
        &mut self,
        config: &Config,
        force: bool,
        now: Instant,
    ) -> Result<(String, u64), Errcode> {
        if force {
            return self.force_refresh(config, now);
        }
        if let Some((token, expires_at)) = &self.stable {
            let usable = self.serve_revoked || self.live.contains_key(token);
            let left = expires_at.saturating_duration_since(now);
            if usable && left > REFRESH_WINDOW {
                return Ok((token.clone(), left.as_secs()));
            }
        }
        // Earlier stable tokens stay valid until their own expiry.
        let token = draw_token()?;
        Ok(self.insert(token, Grant::Stable, config.access_token_ttl, now))
    }

    fn force_refresh(&mut self, config: &Config, now: Instant) -> Result<(String, u64), Errcode> {
        let too_soon = self.last_forced.is_some_and(|last| {
            now.saturating_duration_since(last) < config.force_refresh_interval
        });
        if self.forced >= config.force_refresh_limit || too_soon {
            return Err(Errcode::API_QUOTA);
        }
        let token = draw_token()?;
        self.live.retain(|_, issued| issued.grant != Grant::Stable);
        self.forced += 1;
        self.last_forced = Some(now);
        Ok(self.insert(token, Grant::Stable, config.access_token_ttl, now))
    }

    /// A new token of the legacy endpoint, which supersedes its previous one.
    fn legacy(&mut self, config: &Config, now: Instant) -> Result<(String, u64), Errcode> {
        let token = draw_token()?;
        self.live.retain(|_, issued| issued.grant != Grant::Legacy);
        Ok(self.insert(token, Grant::Legacy, config.access_token_ttl, now))
    }

    /// Remembers `token`, forgetting the one soonest to expire if there are too many,
    /// and answers it with its lifetime in seconds.
    fn insert(
        &mut self,
        token: String,
        grant: Grant,
        ttl: Duration,
        now: Instant,
    ) -> (String, u64) {
        if self.live.len() >= MAX_TOKENS {
            let soonest = self
                .live
                .iter()
                .min_by_key(|(_, issued)| issued.expires_at)
                .map(|(token, _)| token.clone());
            if let Some(soonest) = soonest {
                self.live.remove(&soonest);
            }
        }
        let expires_at = now + ttl;
        if grant == Grant::Stable {
            self.stable = Some((token.clone(), expires_at));
        }
        self.live
            .insert(token.clone(), Issued { expires_at, grant });
        (token, ttl.as_secs())
    }

    fn check(&self, token: &str, now: Instant) -> Result<(), Errcode> {
        if token.is_empty() {
            return Err(Errcode::MISSING_ACCESS_TOKEN);
        }
        if !has_token_shape(token) {
            return Err(Errcode::INVALID_ACCESS_TOKEN);
        }
        match self.live.get(token) {
            None => Err(Errcode::INVALID_CREDENTIAL),
            Some(issued) if issued.expires_at <= now => Err(Errcode::ACCESS_TOKEN_EXPIRED),
            Some(_) => Ok(()),
        }
    }

    fn current(&self, now: Instant) -> Option<String> {
        let (token, _) = self.stable.as_ref()?;
        self.check(token, now).is_ok().then(|| token.clone())
    }
}

/// The request a library call stands for.
fn client_credential(app_id: &str, secret: &str, force_refresh: bool) -> TokenRequest {
    TokenRequest {
        grant_type: Some(CLIENT_CREDENTIAL.to_owned()),
        app_id: Some(app_id.to_owned()),
        secret: Some(secret.to_owned()),
        force_refresh,
    }
}

/// A fresh access token, or WeChat's "system error" if the RNG fails.
fn draw_token() -> Result<String, Errcode> {
    random_bytes::<TOKEN_BYTES>()
        .map(|random| URL_SAFE_NO_PAD.encode(random))
        .map_err(|_| Errcode::SYSTEM_ERROR)
}

/// Whether `token` could be one of the simulator's: 136 base64url characters.
fn has_token_shape(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WeChatSimulator {
    /// Asks for an access token as `POST /cgi-bin/stable_token` does: the token and the
    /// seconds it has left (`expires_in`), else WeChat's errcode.
    ///
    /// Without `force_refresh`, the current token is handed back while it has more than
    /// five minutes left; in its last five minutes (or once expired or revoked) a new
    /// one is issued, and the previous one stays valid until its own expiry.
    /// With `force_refresh`, a new token is issued and every earlier stable token is
    /// invalid at once (40001); at most
    /// [`with_force_refresh_limit`](Self::with_force_refresh_limit) times, and not twice
    /// within 30 seconds ([`with_force_refresh_interval`](Self::with_force_refresh_interval));
    /// 45009 for both. Wrong credentials: 41002, 41004, 40013, 40125.
    ///
    /// ```
    /// use mpauthx::testing::WeChatSimulator;
    ///
    /// let sim = WeChatSimulator::new("wx-test-app", "test-secret");
    /// let (token, expires_in) = sim.stable_token("wx-test-app", "test-secret", false).unwrap();
    /// assert_eq!(expires_in, 7200);
    /// assert_eq!(sim.stable_token("wx-test-app", "test-secret", false).unwrap().0, token);
    /// assert!(sim.check_access_token(&token).is_ok());
    /// ```
    pub fn stable_token(
        &self,
        app_id: &str,
        secret: &str,
        force_refresh: bool,
    ) -> Result<(String, u64), Errcode> {
        self.stable_token_at(app_id, secret, force_refresh, Instant::now())
    }

    fn stable_token_at(
        &self,
        app_id: &str,
        secret: &str,
        force_refresh: bool,
        now: Instant,
    ) -> Result<(String, u64), Errcode> {
        self.state.calls.enter(SimEndpoint::StableToken)?;
        self.issue_stable(&client_credential(app_id, secret, force_refresh), now)
    }

    /// The JSON body WeChat answers to `POST /cgi-bin/stable_token` with `request` as
    /// the body (or a body that was not one: 47001).
    pub(super) fn stable_token_answer(
        &self,
        request: Result<TokenRequest, Errcode>,
        now: Instant,
    ) -> String {
        let answer = self
            .state
            .calls
            .enter(SimEndpoint::StableToken)
            .and(request)
            .and_then(|request| self.issue_stable(&request, now));
        wire::token_answer(&answer)
    }

    fn issue_stable(&self, request: &TokenRequest, now: Instant) -> Result<(String, u64), Errcode> {
        self.check_token_request(request)?;
        let result = self
            .lock_tokens()
            .stable(&self.config, request.force_refresh, now);
        match &result {
            Ok(_) => {
                if request.force_refresh {
                    self.state.calls.force_refreshed();
                }
                tracing::debug!(force = request.force_refresh, "simulated stable_token");
            }
            Err(e) => tracing::debug!(errcode = e.errcode, "simulated stable_token refused"),
        }
        result
    }

    /// Asks for an access token as the legacy `GET /cgi-bin/token` does: a new token on
    /// every call, which invalidates the previous one of this endpoint (stable tokens
    /// are not affected). Wrong credentials: 41002, 41004, 40013, 40125.
    pub fn token(&self, app_id: &str, secret: &str) -> Result<(String, u64), Errcode> {
        self.token_at(app_id, secret, Instant::now())
    }

    fn token_at(&self, app_id: &str, secret: &str, now: Instant) -> Result<(String, u64), Errcode> {
        self.state.calls.enter(SimEndpoint::Token)?;
        self.issue_legacy(&client_credential(app_id, secret, false), now)
    }

    /// The JSON body WeChat answers to `GET /cgi-bin/token?<query>`.
    pub(super) fn token_query_answer(&self, query: &str, now: Instant) -> String {
        let answer = self
            .state
            .calls
            .enter(SimEndpoint::Token)
            .and_then(|()| self.issue_legacy(&wire::parse_token_query(query), now));
        wire::token_answer(&answer)
    }

    fn issue_legacy(&self, request: &TokenRequest, now: Instant) -> Result<(String, u64), Errcode> {
        self.check_token_request(request)?;
        let result = self.lock_tokens().legacy(&self.config, now);
        match &result {
            Ok(_) => tracing::debug!("simulated token"),
            Err(e) => tracing::debug!(errcode = e.errcode, "simulated token refused"),
        }
        result
    }

    /// 40002, 41002, 41004, 40013 or 40125 for a request WeChat would refuse.
    fn check_token_request(&self, request: &TokenRequest) -> Result<(), Errcode> {
        fn given(field: Option<&str>) -> Option<&str> {
            field.filter(|value| !value.is_empty())
        }
        if request.grant_type.as_deref() != Some(CLIENT_CREDENTIAL) {
            return Err(Errcode::INVALID_GRANT_TYPE);
        }
        let app_id = given(request.app_id.as_deref()).ok_or(Errcode::MISSING_APP_ID)?;
        let secret = given(request.secret.as_deref()).ok_or(Errcode::MISSING_APP_SECRET)?;
        self.check_credentials(app_id, secret)
    }

    /// Checks an access token as WeChat's APIs do: `Ok` for a token this simulator
    /// issued (through either endpoint) that is still valid; 41001 for an empty one,
    /// 40014 for one without the shape of a token, 40001 for one unknown, revoked or
    /// superseded, 42001 for one expired.
    pub fn check_access_token(&self, access_token: &str) -> Result<(), Errcode> {
        self.check_access_token_at(access_token, Instant::now())
    }

    pub(super) fn check_access_token_at(
        &self,
        access_token: &str,
        now: Instant,
    ) -> Result<(), Errcode> {
        self.lock_tokens().check(access_token, now)
    }

    /// Whether this simulator issued `access_token` and still knows it: valid or
    /// expired, but neither revoked nor superseded (those are 40001 for any simulator).
    pub(super) fn knows_access_token(&self, access_token: &str) -> bool {
        self.lock_tokens().live.contains_key(access_token)
    }

    /// The latest stable token, while it is valid (not expired, revoked or superseded).
    pub fn current_access_token(&self) -> Option<String> {
        self.lock_tokens().current(Instant::now())
    }

    /// Revokes every access token issued so far, through either endpoint: they answer
    /// 40001 from then on. The next `stable_token` or `token` call issues a new one
    /// (but see [`serve_revoked_tokens`](Self::serve_revoked_tokens)).
    pub fn revoke_access_tokens(&self) {
        self.lock_tokens().live.clear();
        tracing::debug!("simulator revoked its access tokens");
    }

    /// While on, `stable_token` without `force_refresh` keeps handing back the latest
    /// stable token after [`revoke_access_tokens`](Self::revoke_access_tokens), though
    /// it answers 40001, until its last five minutes: the upstream bug a client's force
    /// refresh exists for. A force refresh still issues a valid token. Default: off.
    pub fn serve_revoked_tokens(&self, on: bool) {
        self.lock_tokens().serve_revoked = on;
    }

    /// Grants [`with_force_refresh_limit`](Self::with_force_refresh_limit) force
    /// refreshes again, as a new day does on WeChat. The spacing between two force
    /// refreshes still applies.
    pub fn reset_force_refresh_quota(&self) {
        self.lock_tokens().forced = 0;
    }

    fn lock_tokens(&self) -> MutexGuard<'_, Tokens> {
        // Every update leaves the tokens consistent, so a panic elsewhere poisons nothing.
        self.state
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    fn sim() -> WeChatSimulator {
        WeChatSimulator::new(APP, SECRET)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    impl WeChatSimulator {
        fn stable_at(&self, force: bool, now: Instant) -> Result<(String, u64), Errcode> {
            self.stable_token_at(APP, SECRET, force, now)
        }

        fn live_tokens(&self) -> usize {
            self.lock_tokens().live.len()
        }
    }

    fn stable_answer(sim: &WeChatSimulator, request: Result<TokenRequest, Errcode>) -> i64 {
        let answer: serde_json::Value =
            serde_json::from_str(&sim.stable_token_answer(request, Instant::now())).unwrap();
        assert!(answer["errmsg"].is_string(), "{answer}");
        answer["errcode"].as_i64().unwrap()
    }

    fn request(
        grant_type: Option<&str>,
        app_id: Option<&str>,
        secret: Option<&str>,
    ) -> TokenRequest {
        TokenRequest {
            grant_type: grant_type.map(str::to_owned),
            app_id: app_id.map(str::to_owned),
            secret: secret.map(str::to_owned),
            force_refresh: false,
        }
    }

    #[test]
    fn tokens_have_wechat_shape() {
        let (token, expires_in) = sim().stable_token(APP, SECRET, false).unwrap();
        assert_eq!(expires_in, 7200);
        assert_eq!(token.len(), 136);
        assert!(has_token_shape(&token), "{token}");
        let (legacy, expires_in) = sim().token(APP, SECRET).unwrap();
        assert_eq!(expires_in, 7200);
        assert!(has_token_shape(&legacy), "{legacy}");
    }

    #[test]
    fn the_same_stable_token_is_handed_back_while_valid() {
        let sim = sim();
        let t0 = Instant::now();
        let (token, expires_in) = sim.stable_at(false, t0).unwrap();
        assert_eq!(expires_in, 7200);
        assert_eq!(
            sim.stable_at(false, t0 + secs(100)).unwrap(),
            (token.clone(), 7100)
        );
        // Whole seconds, rounded down; 301 s left is more than five minutes.
        let late = t0 + secs(6899) - Duration::from_millis(500);
        assert_eq!(sim.stable_at(false, late).unwrap(), (token.clone(), 301));
        assert!(sim.check_access_token_at(&token, late).is_ok());
        assert_eq!(sim.current_access_token(), Some(token));
    }

    #[test]
    fn a_new_stable_token_comes_in_the_last_five_minutes_and_the_old_stays_valid() {
        let sim = sim();
        let t0 = Instant::now();
        let (old, _) = sim.stable_at(false, t0).unwrap();
        let window = t0 + secs(6900);
        let (new, expires_in) = sim.stable_at(false, window).unwrap();
        assert_ne!(new, old);
        assert_eq!(expires_in, 7200);
        assert!(sim.check_access_token_at(&old, window + secs(299)).is_ok());
        assert!(sim.check_access_token_at(&new, window + secs(299)).is_ok());
        // The new one is handed back from then on.
        assert_eq!(
            sim.stable_at(false, window + secs(10)).unwrap(),
            (new.clone(), 7190)
        );
        // The old one expires on its own schedule.
        assert_eq!(
            sim.check_access_token_at(&old, t0 + secs(7200)),
            Err(Errcode::ACCESS_TOKEN_EXPIRED)
        );
        assert!(sim.check_access_token_at(&new, t0 + secs(7200)).is_ok());
    }

    #[test]
    fn an_expired_stable_token_is_replaced() {
        let sim = sim().with_access_token_ttl(secs(600));
        let t0 = Instant::now();
        let (old, expires_in) = sim.stable_at(false, t0).unwrap();
        assert_eq!(expires_in, 600);
        let late = t0 + secs(601);
        assert_eq!(
            sim.check_access_token_at(&old, late),
            Err(Errcode::ACCESS_TOKEN_EXPIRED)
        );
        let (new, expires_in) = sim.stable_at(false, late).unwrap();
        assert_ne!(new, old);
        assert_eq!(expires_in, 600);
        assert!(sim.check_access_token_at(&new, late).is_ok());
    }

    #[test]
    fn short_lifetimes_get_a_new_token_every_call() {
        let sim = sim().with_access_token_ttl(secs(60));
        let t0 = Instant::now();
        let (a, _) = sim.stable_at(false, t0).unwrap();
        let (b, expires_in) = sim.stable_at(false, t0 + secs(1)).unwrap();
        assert_ne!(a, b);
        assert_eq!(expires_in, 60);
        assert!(sim.check_access_token_at(&a, t0 + secs(1)).is_ok());
    }

    #[test]
    fn a_force_refresh_invalidates_every_earlier_stable_token() {
        let sim = sim();
        let t0 = Instant::now();
        let (first, _) = sim.stable_at(false, t0).unwrap();
        let window = t0 + secs(6950);
        let (second, _) = sim.stable_at(false, window).unwrap();
        let (legacy, _) = sim.token_at(APP, SECRET, window).unwrap();
        let (forced, expires_in) = sim.stable_at(true, window + secs(1)).unwrap();
        assert_eq!(expires_in, 7200);
        assert!(forced != first && forced != second);
        let now = window + secs(2);
        for earlier in [&first, &second] {
            assert_eq!(
                sim.check_access_token_at(earlier, now),
                Err(Errcode::INVALID_CREDENTIAL)
            );
        }
        assert!(sim.check_access_token_at(&forced, now).is_ok());
        assert!(
            sim.check_access_token_at(&legacy, now).is_ok(),
            "the legacy token is kept apart"
        );
        assert_eq!(sim.stable_at(false, now).unwrap().0, forced);
        let calls = sim.calls();
        assert_eq!((calls.stable_token, calls.force_refresh), (4, 1));
    }

    #[test]
    fn force_refreshes_are_spaced_30_seconds_apart() {
        let sim = sim();
        let t0 = Instant::now();
        let (first, _) = sim.stable_at(true, t0).unwrap();
        assert_eq!(sim.stable_at(true, t0 + secs(29)), Err(Errcode::API_QUOTA));
        assert!(
            sim.check_access_token_at(&first, t0 + secs(29)).is_ok(),
            "a refused force refresh invalidates nothing"
        );
        let (second, _) = sim.stable_at(true, t0 + secs(30)).unwrap();
        assert_ne!(first, second);
        assert_eq!(sim.calls().force_refresh, 2);
        assert_eq!(sim.calls().stable_token, 3);
    }

    #[test]
    fn the_spacing_can_be_shortened() {
        let sim = sim().with_force_refresh_interval(Duration::ZERO);
        let t0 = Instant::now();
        let (a, _) = sim.stable_at(true, t0).unwrap();
        let (b, _) = sim.stable_at(true, t0).unwrap();
        assert_ne!(a, b);
        assert!(sim.stable_token(APP, SECRET, true).is_ok());
    }

    #[test]
    fn force_refreshes_are_limited_in_number_until_reset() {
        let sim = sim().with_force_refresh_limit(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(sim.stable_at(true, t0 + secs(30 * i)).is_ok(), "{i}");
        }
        let later = t0 + secs(3600);
        assert_eq!(sim.stable_at(true, later), Err(Errcode::API_QUOTA));
        // Normal mode still works.
        assert!(sim.stable_at(false, later).is_ok());
        sim.reset_force_refresh_quota();
        assert!(sim.stable_at(true, later).is_ok());
        assert_eq!(sim.calls().force_refresh, 4);

        let sim = WeChatSimulator::new(APP, SECRET);
        for i in 0..20 {
            assert!(sim.stable_at(true, t0 + secs(30 * i)).is_ok(), "{i}");
        }
        assert_eq!(
            sim.stable_at(true, t0 + secs(30 * 20)),
            Err(Errcode::API_QUOTA),
            "WeChat's default of 20"
        );
        let none = WeChatSimulator::new(APP, SECRET).with_force_refresh_limit(0);
        assert_eq!(none.stable_at(true, t0), Err(Errcode::API_QUOTA));
    }

    #[test]
    fn refused_credentials_use_no_force_refresh() {
        let sim = sim().with_force_refresh_limit(1);
        assert_eq!(
            sim.stable_token(APP, "wrong", true),
            Err(Errcode::INVALID_APP_SECRET)
        );
        assert!(sim.stable_token(APP, SECRET, true).is_ok());
        assert_eq!(sim.calls().force_refresh, 1);
    }

    #[test]
    fn revoked_tokens_answer_40001_and_new_ones_are_issued() {
        let sim = sim();
        let (stable, _) = sim.stable_token(APP, SECRET, false).unwrap();
        let (legacy, _) = sim.token(APP, SECRET).unwrap();
        sim.revoke_access_tokens();
        for token in [&stable, &legacy] {
            assert_eq!(
                sim.check_access_token(token),
                Err(Errcode::INVALID_CREDENTIAL)
            );
        }
        assert_eq!(sim.current_access_token(), None);
        let (fresh, expires_in) = sim.stable_token(APP, SECRET, false).unwrap();
        assert_ne!(fresh, stable);
        assert_eq!(expires_in, 7200);
        assert!(sim.check_access_token(&fresh).is_ok());
        assert_eq!(sim.current_access_token(), Some(fresh));
    }

    #[test]
    fn served_revoked_tokens_are_dead_until_a_force_refresh() {
        let sim = sim();
        sim.serve_revoked_tokens(true);
        let t0 = Instant::now();
        let (token, _) = sim.stable_at(false, t0).unwrap();
        sim.revoke_access_tokens();
        let now = t0 + secs(10);
        assert_eq!(sim.stable_at(false, now).unwrap(), (token.clone(), 7190));
        assert_eq!(
            sim.check_access_token_at(&token, now),
            Err(Errcode::INVALID_CREDENTIAL)
        );
        let (forced, _) = sim.stable_at(true, now).unwrap();
        assert_ne!(forced, token);
        assert!(sim.check_access_token_at(&forced, now).is_ok());
        assert_eq!(sim.stable_at(false, now).unwrap().0, forced);

        // Its last five minutes bring a valid one, as for any token.
        sim.revoke_access_tokens();
        let window = now + secs(6950);
        let (renewed, _) = sim.stable_at(false, window).unwrap();
        assert_ne!(renewed, forced);
        assert!(sim.check_access_token_at(&renewed, window).is_ok());

        // Off again: a revoked token is replaced.
        sim.serve_revoked_tokens(false);
        sim.revoke_access_tokens();
        let (replaced, _) = sim.stable_at(false, window).unwrap();
        assert_ne!(replaced, renewed);
        assert!(sim.check_access_token_at(&replaced, window).is_ok());
    }

    #[test]
    fn the_legacy_endpoint_issues_a_new_token_every_call() {
        let sim = sim();
        let (stable, _) = sim.stable_token(APP, SECRET, false).unwrap();
        let (first, _) = sim.token(APP, SECRET).unwrap();
        let (second, expires_in) = sim.token(APP, SECRET).unwrap();
        assert_ne!(first, second);
        assert_eq!(expires_in, 7200);
        assert_eq!(
            sim.check_access_token(&first),
            Err(Errcode::INVALID_CREDENTIAL)
        );
        assert!(sim.check_access_token(&second).is_ok());
        assert!(
            sim.check_access_token(&stable).is_ok(),
            "stable tokens are apart"
        );
        assert_eq!(sim.current_access_token(), Some(stable.clone()));
        assert_eq!(sim.stable_token(APP, SECRET, false).unwrap().0, stable);
        assert_eq!(sim.calls().token, 2);
    }

    #[test]
    fn access_tokens_are_checked_as_the_api_does() {
        let sim = sim();
        let t0 = Instant::now();
        let (token, _) = sim.stable_at(false, t0).unwrap();
        assert_eq!(
            sim.check_access_token_at("", t0),
            Err(Errcode::MISSING_ACCESS_TOKEN)
        );
        let mut wrong_char = token.clone();
        wrong_char.replace_range(0..1, "!");
        for malformed in ["short", &token[1..], &format!("{token}A"), &wrong_char] {
            assert_eq!(
                sim.check_access_token_at(malformed, t0),
                Err(Errcode::INVALID_ACCESS_TOKEN),
                "{malformed}"
            );
        }
        assert_eq!(
            sim.check_access_token_at(&"A".repeat(136), t0),
            Err(Errcode::INVALID_CREDENTIAL)
        );
        assert!(sim.check_access_token_at(&token, t0 + secs(7199)).is_ok());
        assert_eq!(
            sim.check_access_token_at(&token, t0 + secs(7200)),
            Err(Errcode::ACCESS_TOKEN_EXPIRED)
        );
    }

    #[test]
    fn token_requests_are_checked_like_wechat() {
        let sim = sim();
        assert_eq!(
            sim.stable_token("wx-other", SECRET, false),
            Err(Errcode::INVALID_APP_ID)
        );
        for wrong in ["sim-secreT", "sim-secret-", "sim-secre"] {
            assert_eq!(
                sim.stable_token(APP, wrong, false),
                Err(Errcode::INVALID_APP_SECRET),
                "{wrong}"
            );
            assert_eq!(sim.token(APP, wrong), Err(Errcode::INVALID_APP_SECRET));
        }
        assert_eq!(
            sim.stable_token("", SECRET, false),
            Err(Errcode::MISSING_APP_ID)
        );
        assert_eq!(
            sim.stable_token(APP, "", false),
            Err(Errcode::MISSING_APP_SECRET)
        );
        assert_eq!(sim.token("wx-other", SECRET), Err(Errcode::INVALID_APP_ID));
        assert_eq!(sim.token("", SECRET), Err(Errcode::MISSING_APP_ID));
        assert_eq!(sim.token(APP, ""), Err(Errcode::MISSING_APP_SECRET));

        let cc = Some(CLIENT_CREDENTIAL);
        assert_eq!(stable_answer(&sim, Err(Errcode::DATA_FORMAT_ERROR)), 47001);
        assert_eq!(
            stable_answer(&sim, Ok(request(None, Some(APP), Some(SECRET)))),
            40002
        );
        let wrong_grant = request(Some("authorization_code"), Some(APP), Some(SECRET));
        assert_eq!(stable_answer(&sim, Ok(wrong_grant)), 40002);
        assert_eq!(
            stable_answer(&sim, Ok(request(cc, None, Some(SECRET)))),
            41002
        );
        assert_eq!(
            stable_answer(&sim, Ok(request(cc, Some(""), Some(SECRET)))),
            41002
        );
        assert_eq!(stable_answer(&sim, Ok(request(cc, Some(APP), None))), 41004);
        assert_eq!(
            stable_answer(&sim, Ok(request(cc, Some(APP), Some("")))),
            41004
        );
        assert_eq!(
            stable_answer(&sim, Ok(request(cc, Some("x"), Some(SECRET)))),
            40013
        );
        assert_eq!(
            stable_answer(&sim, Ok(request(cc, Some(APP), Some("x")))),
            40125
        );
        let answer: serde_json::Value = serde_json::from_str(
            &sim.stable_token_answer(Ok(request(cc, Some(APP), Some(SECRET))), Instant::now()),
        )
        .unwrap();
        assert!(
            sim.check_access_token(answer["access_token"].as_str().unwrap())
                .is_ok()
        );
        assert_eq!(answer["expires_in"], 7200);
        assert!(answer.get("errcode").is_none());
        assert_eq!(sim.calls().stable_token, 16);
    }

    #[test]
    fn token_queries_are_answered_like_wechat() {
        let sim = sim();
        let errcode = |query: &str| -> i64 {
            let answer: serde_json::Value =
                serde_json::from_str(&sim.token_query_answer(query, Instant::now())).unwrap();
            assert!(answer["errmsg"].is_string(), "{answer}");
            answer["errcode"].as_i64().unwrap()
        };
        assert_eq!(errcode(""), 40002);
        assert_eq!(errcode(&format!("appid={APP}&secret={SECRET}")), 40002);
        let grant = "grant_type=client_credential";
        assert_eq!(errcode(grant), 41002);
        assert_eq!(errcode(&format!("{grant}&appid=&secret={SECRET}")), 41002);
        assert_eq!(errcode(&format!("{grant}&appid={APP}")), 41004);
        assert_eq!(errcode(&format!("{grant}&appid=x&secret={SECRET}")), 40013);
        assert_eq!(errcode(&format!("{grant}&appid={APP}&secret=x")), 40125);
        let query = format!("{grant}&appid=wx%2Dsim%2Dapp&secret={SECRET}");
        let answer: serde_json::Value =
            serde_json::from_str(&sim.token_query_answer(&query, Instant::now())).unwrap();
        let token = answer["access_token"].as_str().unwrap();
        assert!(sim.check_access_token(token).is_ok());
        assert_eq!(answer["expires_in"], 7200);
        assert_eq!(sim.calls().token, 8);
    }

    #[test]
    fn clones_share_tokens() {
        let sim = sim();
        let (token, _) = sim.clone().stable_token(APP, SECRET, false).unwrap();
        assert!(sim.check_access_token(&token).is_ok());
        assert_eq!(sim.stable_token(APP, SECRET, false).unwrap().0, token);
        sim.clone().revoke_access_tokens();
        assert!(sim.check_access_token(&token).is_err());
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let sim = sim().with_access_token_ttl(Duration::ZERO);
        let t0 = Instant::now();
        let (first, expires_in) = sim.stable_at(false, t0).unwrap();
        assert_eq!(expires_in, 0);
        assert_eq!(
            sim.check_access_token_at(&first, t0),
            Err(Errcode::ACCESS_TOKEN_EXPIRED)
        );
        for i in 1..=MAX_TOKENS as u64 {
            sim.stable_at(false, t0 + secs(i)).unwrap();
        }
        assert_eq!(sim.live_tokens(), MAX_TOKENS);
        assert_eq!(
            sim.check_access_token_at(&first, t0),
            Err(Errcode::INVALID_CREDENTIAL),
            "the soonest to expire is forgotten"
        );
    }

    #[test]
    fn debug_shows_no_token() {
        let sim = sim();
        let (stable, _) = sim.stable_token(APP, SECRET, false).unwrap();
        let (legacy, _) = sim.token(APP, SECRET).unwrap();
        let shown = format!("{sim:?}");
        assert!(
            !shown.contains(&stable) && !shown.contains(&legacy),
            "{shown}"
        );
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
