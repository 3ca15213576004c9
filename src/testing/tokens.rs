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
        self.issue(Grant::Stable, config.access_token_ttl, now)
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

    fn issue(
        &mut self,
        grant: Grant,
        ttl: Duration,
        now: Instant,
    ) -> Result<(String, u64), Errcode> {
        let token = draw_token()?;
        Ok(self.insert(token, grant, ttl, now))
    }

    fn insert(
        &mut self,
        token: String,
        grant: Grant,
        ttl: Duration,
        now: Instant,
    ) -> (String, u64) {
        while self.live.len() >= MAX_TOKENS {
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
    /// within 30 seconds (45009 both). Wrong credentials: 41002, 41004, 40013, 40125.
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
        let request = TokenRequest {
            grant_type: Some(CLIENT_CREDENTIAL.to_owned()),
            app_id: Some(app_id.to_owned()),
            secret: Some(secret.to_owned()),
            force_refresh,
        };
        self.issue_stable(&request, now)
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
        let request = TokenRequest {
            grant_type: Some(CLIENT_CREDENTIAL.to_owned()),
            app_id: Some(app_id.to_owned()),
            secret: Some(secret.to_owned()),
            force_refresh: false,
        };
        self.issue_legacy(&request, now)
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
        let given = |field: &Option<String>| field.clone().filter(|value| !value.is_empty());
        if request.grant_type.as_deref() != Some(CLIENT_CREDENTIAL) {
            return Err(Errcode::INVALID_GRANT_TYPE);
        }
        let app_id = given(&request.app_id).ok_or(Errcode::MISSING_APP_ID)?;
        let secret = given(&request.secret).ok_or(Errcode::MISSING_APP_SECRET)?;
        self.check_credentials(&app_id, &secret)
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
    /// refreshes again, as a new day does on WeChat. The 30 seconds between two force
    /// refreshes still apply.
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
