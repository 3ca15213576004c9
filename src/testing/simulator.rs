//! [`WeChatSimulator`]: its settings and shared state, login codes, sessions and
//! encrypted profiles, without WeChat.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use subtle::ConstantTimeEq as _;

use super::{
    calls::{Calls, SimEndpoint},
    codes::Codes,
    mint::{SimulatedLogin, SimulatorError, check_user, derived_id, draw, simulated_profile},
    phone::{Phone, PhoneGrant, simulated_phone},
    tokens::{
        DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_FORCE_REFRESH_LIMIT, FORCE_REFRESH_INTERVAL, Tokens,
    },
    wire::{self, Errcode},
};
use crate::wechat::{AppSecret, Session, WeChatClient};

/// How long a minted code can be exchanged: five minutes, like WeChat's.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(300);

/// How many codes the simulator remembers, used ones included; minting one more
/// forgets the oldest. It bounds the simulator's memory. Login codes and phone codes
/// are counted apart.
pub const DEFAULT_MAX_CODES: usize = 10_000;

/// The longest lifetime the builders accept for codes and access tokens; longer ones
/// are shortened to it.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A simulated WeChat for one mini-program (app id and app secret).
///
/// Cheap to clone; clones share all their state (codes, access tokens, counters,
/// injected faults), so a clone serving HTTP sees the codes minted through another.
/// `Debug` redacts the secret and shows no code or token.
///
/// ```
/// use mpauthx::testing::{Errcode, WeChatSimulator};
///
/// let sim = WeChatSimulator::new("wx-test-app", "test-secret");
/// let login = sim.login("alice")?;
/// let session = sim.jscode2session("wx-test-app", "test-secret", &login.code).unwrap();
/// assert_eq!(session.open_id, sim.open_id("alice"));
/// assert_eq!(
///     sim.jscode2session("wx-test-app", "test-secret", &login.code),
///     Err(Errcode::CODE_USED),
/// );
/// # Ok::<(), mpauthx::testing::SimulatorError>(())
/// ```
#[derive(Clone)]
pub struct WeChatSimulator {
    pub(super) config: Arc<Config>,
    pub(super) state: Arc<State>,
}

/// The settings, fixed once the simulator is built.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) app_id: String,
    pub(super) secret: AppSecret,
    pub(super) code_ttl: Duration,
    pub(super) max_codes: usize,
    pub(super) access_token_ttl: Duration,
    pub(super) force_refresh_limit: u32,
    pub(super) force_refresh_interval: Duration,
    pub(super) numeric_country_codes: bool,
}

/// What clones share.
#[derive(Default)]
pub(super) struct State {
    codes: Mutex<Codes<Session>>,
    pub(super) phone_codes: Mutex<Codes<PhoneGrant>>,
    pub(super) tokens: Mutex<Tokens>,
    pub(super) calls: Calls,
    /// Whether sessions carry a unionid: a switch, since an app can be bound to an
    /// Open Platform account at any time.
    union_ids: AtomicBool,
}

impl fmt::Debug for WeChatSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeChatSimulator")
            .field("app_id", &self.config.app_id)
            .field("secret", &self.config.secret)
            .field("union_ids", &self.union_ids())
            .field("code_ttl", &self.config.code_ttl)
            .field("max_codes", &self.config.max_codes)
            .field("access_token_ttl", &self.config.access_token_ttl)
            .field("force_refresh_limit", &self.config.force_refresh_limit)
            .field(
                "force_refresh_interval",
                &self.config.force_refresh_interval,
            )
            .field("numeric_country_codes", &self.config.numeric_country_codes)
            .finish_non_exhaustive()
    }
}

impl WeChatSimulator {
    /// A simulated WeChat that knows one mini-program: `app_id` and `app_secret`.
    /// Sessions carry no unionid; codes live [`DEFAULT_CODE_TTL`], access tokens
    /// [`DEFAULT_ACCESS_TOKEN_TTL`].
    pub fn new(app_id: impl Into<String>, app_secret: impl Into<String>) -> Self {
        Self {
            config: Arc::new(Config {
                app_id: app_id.into(),
                secret: AppSecret::new(app_secret),
                code_ttl: DEFAULT_CODE_TTL,
                max_codes: DEFAULT_MAX_CODES,
                access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
                force_refresh_limit: DEFAULT_FORCE_REFRESH_LIMIT,
                force_refresh_interval: FORCE_REFRESH_INTERVAL,
                numeric_country_codes: false,
            }),
            state: Arc::default(),
        }
    }

    /// Also hands out unionids, as WeChat does once the app is bound to an Open Platform
    /// account. A unionid depends on the user name only, so it is the same across
    /// simulators of different app ids.
    ///
    /// The builder form of [`set_union_ids`](Self::set_union_ids): the switch is shared
    /// by clones, so it can be turned later.
    #[must_use]
    pub fn with_union_ids(self, union_ids: bool) -> Self {
        self.set_union_ids(union_ids);
        self
    }

    /// Turns unionids on or off at once, for this simulator and all its clones: models
    /// an app bound to an Open Platform account (or unbound) while users keep logging
    /// in. Codes minted from then on carry a unionid (or none); codes minted before keep
    /// what they were minted with, as their encrypted profile does.
    ///
    /// ```
    /// use mpauthx::testing::WeChatSimulator;
    ///
    /// let sim = WeChatSimulator::new("wx-test-app", "test-secret");
    /// let server_side = sim.clone();
    /// let before = sim.login("alice")?;
    /// sim.set_union_ids(true);
    /// let after = sim.login("alice")?;
    /// let exchange = |code: &str| server_side.jscode2session("wx-test-app", "test-secret", code);
    /// assert_eq!(exchange(&before.code).unwrap().union_id, None);
    /// assert_eq!(exchange(&after.code).unwrap().union_id, sim.union_id("alice"));
    /// assert!(server_side.union_id("alice").is_some());
    /// # Ok::<(), mpauthx::testing::SimulatorError>(())
    /// ```
    pub fn set_union_ids(&self, on: bool) {
        self.state.union_ids.store(on, Ordering::Relaxed);
        tracing::debug!(on, "simulator switched unionids");
    }

    fn union_ids(&self) -> bool {
        self.state.union_ids.load(Ordering::Relaxed)
    }

    /// How long a minted code (login code or phone code) can be used, at most a year.
    /// Default: [`DEFAULT_CODE_TTL`].
    #[must_use]
    pub fn with_code_ttl(mut self, ttl: Duration) -> Self {
        Arc::make_mut(&mut self.config).code_ttl = ttl.min(MAX_TTL);
        self
    }

    /// How many codes are remembered at most (at least one), for login codes and phone
    /// codes each. Default: [`DEFAULT_MAX_CODES`].
    #[must_use]
    pub fn with_max_codes(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.config).max_codes = max.max(1);
        self
    }

    /// How long an access token lives, at most a year. Default:
    /// [`DEFAULT_ACCESS_TOKEN_TTL`] (two hours, as WeChat's).
    ///
    /// `stable_token` hands out a new token in the last five minutes of the current one,
    /// so with a lifetime of five minutes or less every call gets a new token.
    #[must_use]
    pub fn with_access_token_ttl(mut self, ttl: Duration) -> Self {
        Arc::make_mut(&mut self.config).access_token_ttl = ttl.min(MAX_TTL);
        self
    }

    /// How many force refreshes `stable_token` grants, counted from the simulator's
    /// creation or the last [`reset_force_refresh_quota`](Self::reset_force_refresh_quota).
    /// Default: [`DEFAULT_FORCE_REFRESH_LIMIT`] (WeChat's daily limit).
    #[must_use]
    pub fn with_force_refresh_limit(mut self, limit: u32) -> Self {
        Arc::make_mut(&mut self.config).force_refresh_limit = limit;
        self
    }

    /// How long after a force refresh `stable_token` refuses the next one (45009), at
    /// most a year. Default: 30 seconds, as WeChat. Zero lets tests that run in real
    /// time force refresh back to back.
    #[must_use]
    pub fn with_force_refresh_interval(mut self, interval: Duration) -> Self {
        Arc::make_mut(&mut self.config).force_refresh_interval = interval.min(MAX_TTL);
        self
    }

    /// Sends the country code of a phone number as a JSON number (`86`) rather than a
    /// string (`"86"`), in `getuserphonenumber`'s answer and in the legacy encrypted
    /// phone data: WeChat sends either. Default: a string.
    #[must_use]
    pub fn with_numeric_country_codes(mut self, numeric: bool) -> Self {
        Arc::make_mut(&mut self.config).numeric_country_codes = numeric;
        self
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    /// The app secret, for configuring the server under test.
    pub fn app_secret(&self) -> &AppSecret {
        &self.config.secret
    }

    /// A WeChat client with this simulator's credentials, for a simulator whose
    /// `/sns/jscode2session` is served under `base_url`.
    pub fn client(&self, base_url: impl Into<String>) -> WeChatClient {
        WeChatClient::new(self.config.app_id.clone(), self.config.secret.clone())
            .with_base_url(base_url)
    }

    /// The openid of a test user: derived from the name and the app id, so the same
    /// name is the same user across runs, and differs between mini-programs as on WeChat.
    pub fn open_id(&self, user: &str) -> String {
        derived_id('o', &[self.config.app_id.as_bytes(), user.as_bytes()])
    }

    /// The unionid of a test user, while unionids are on
    /// ([`with_union_ids`](Self::with_union_ids), [`set_union_ids`](Self::set_union_ids)).
    pub fn union_id(&self, user: &str) -> Option<String> {
        self.union_ids()
            .then(|| derived_id('u', &[b"unionid", user.as_bytes()]))
    }

    /// Mints a one-time login code for `user`, as `wx.login()` would.
    pub fn login(&self, user: &str) -> Result<SimulatedLogin, SimulatorError> {
        self.mint(user, false, None, Instant::now(), SystemTime::now())
    }

    /// Mints a one-time login code for `user` together with encrypted profile data
    /// (nickname `user`), as `wx.login()` plus `wx.getUserInfo()` would.
    pub fn login_with_profile(&self, user: &str) -> Result<SimulatedLogin, SimulatorError> {
        self.mint(user, true, None, Instant::now(), SystemTime::now())
    }

    /// Exchanges a code as `GET /sns/jscode2session` does: the session on success,
    /// else WeChat's errcode. A code is exchanged at most once; a wrong app id or
    /// secret does not use it up.
    pub fn jscode2session(
        &self,
        app_id: &str,
        secret: &str,
        code: &str,
    ) -> Result<Session, Errcode> {
        self.state.calls.enter(SimEndpoint::Jscode2Session)?;
        self.exchange(app_id, secret, code, Instant::now())
    }

    /// The JSON body WeChat answers to `GET /sns/jscode2session?<query>` (with HTTP 200,
    /// errors included): `{"session_key", "openid", "unionid"?}` or
    /// `{"errcode", "errmsg"}`.
    pub fn jscode2session_query(&self, query: &str) -> String {
        let answer = self
            .state
            .calls
            .enter(SimEndpoint::Jscode2Session)
            .and_then(|()| wire::parse_query(query))
            .and_then(|q| self.exchange(&q.app_id, &q.secret, &q.code, Instant::now()));
        wire::answer(&answer)
    }

    fn exchange(
        &self,
        app_id: &str,
        secret: &str,
        code: &str,
        now: Instant,
    ) -> Result<Session, Errcode> {
        let result = self.exchange_checked(app_id, secret, code, now);
        match &result {
            Ok(session) => tracing::debug!(open_id = %session.open_id, "simulated jscode2session"),
            Err(e) => tracing::debug!(errcode = e.errcode, "simulated jscode2session refused"),
        }
        result
    }

    fn exchange_checked(
        &self,
        app_id: &str,
        secret: &str,
        code: &str,
        now: Instant,
    ) -> Result<Session, Errcode> {
        self.check_credentials(app_id, secret)?;
        self.lock_codes().take(code, now)
    }

    /// Checks the app id, then the secret in constant time: 40013 or 40125.
    pub(super) fn check_credentials(&self, app_id: &str, secret: &str) -> Result<(), Errcode> {
        if app_id != self.config.app_id {
            return Err(Errcode::INVALID_APP_ID);
        }
        let expected = self.config.secret.expose_secret().as_bytes();
        // Differing lengths compare unequal without looking at the contents.
        if !bool::from(secret.as_bytes().ct_eq(expected)) {
            return Err(Errcode::INVALID_APP_SECRET);
        }
        Ok(())
    }

    /// Mints a login code for `user`, with a profile and legacy encrypted phone data
    /// if asked.
    pub(super) fn mint(
        &self,
        user: &str,
        with_profile: bool,
        phone: Option<&Phone>,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Result<SimulatedLogin, SimulatorError> {
        check_user(user)?;
        let (code, session_key, iv) = draw()?;
        let session = Session {
            open_id: self.open_id(user),
            union_id: self.union_id(user),
            session_key,
        };
        let phone = phone
            .map(|phone| simulated_phone(&self.config, phone, &session, wall_clock))
            .transpose()?;
        let profile = with_profile
            .then(|| simulated_profile(&self.config.app_id, user, &session, iv, wall_clock));
        let login = SimulatedLogin {
            code: code.clone(),
            open_id: session.open_id.clone(),
            union_id: session.union_id.clone(),
            profile,
            phone,
        };
        let expires_at = now + self.config.code_ttl;
        self.lock_codes()
            .insert(code, session, expires_at, now, self.config.max_codes);
        tracing::debug!(
            open_id = %login.open_id,
            profile = with_profile,
            phone = login.phone.is_some(),
            "simulator minted a login code"
        );
        Ok(login)
    }

    fn lock_codes(&self) -> std::sync::MutexGuard<'_, Codes<Session>> {
        // Every update leaves the maps consistent, so a panic elsewhere poisons nothing real.
        self.state
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn remembered_codes(&self) -> usize {
        self.lock_codes().len()
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::STANDARD};

    use super::*;
    use crate::{
        testing::MAX_USER_LEN,
        wechat::{DecryptOptions, decrypt_profile, verify_signature},
    };

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    fn sim() -> WeChatSimulator {
        WeChatSimulator::new(APP, SECRET)
    }

    fn query(code: &str) -> String {
        format!("appid={APP}&secret={SECRET}&js_code={code}&grant_type=authorization_code")
    }

    #[test]
    fn a_code_is_exchanged_once_for_its_user() {
        let sim = sim();
        let login = sim.login("alice").unwrap();
        assert_eq!(login.code.len(), 32);
        assert!(login.profile.is_none());
        let session = sim.jscode2session(APP, SECRET, &login.code).unwrap();
        assert_eq!(session.open_id, login.open_id);
        assert_eq!(session.open_id, sim.open_id("alice"));
        assert_eq!(session.union_id, None);
        let key = STANDARD
            .decode(session.session_key.expose_secret())
            .unwrap();
        assert_eq!(key.len(), 16);
        assert_eq!(
            sim.jscode2session(APP, SECRET, &login.code),
            Err(Errcode::CODE_USED)
        );
    }

    #[test]
    fn codes_and_session_keys_are_fresh_for_every_login() {
        let sim = sim();
        let (a, b) = (sim.login("alice").unwrap(), sim.login("alice").unwrap());
        assert_ne!(a.code, b.code);
        assert_eq!(a.open_id, b.open_id);
        let ka = sim
            .jscode2session(APP, SECRET, &a.code)
            .unwrap()
            .session_key;
        let kb = sim
            .jscode2session(APP, SECRET, &b.code)
            .unwrap()
            .session_key;
        assert_ne!(ka, kb);
    }

    #[test]
    fn unknown_codes_are_invalid() {
        assert_eq!(
            sim().jscode2session(APP, SECRET, "never-minted"),
            Err(Errcode::INVALID_CODE)
        );
    }

    #[test]
    fn wrong_credentials_are_refused_without_using_the_code() {
        let sim = sim();
        let login = sim.login("alice").unwrap();
        assert_eq!(
            sim.jscode2session("wx-other", SECRET, &login.code),
            Err(Errcode::INVALID_APP_ID)
        );
        for wrong in ["", "sim-secreT", "sim-secret-", "sim-secre"] {
            assert_eq!(
                sim.jscode2session(APP, wrong, &login.code),
                Err(Errcode::INVALID_APP_SECRET),
                "{wrong:?}"
            );
        }
        assert!(sim.jscode2session(APP, SECRET, &login.code).is_ok());
    }

    #[test]
    fn codes_expire() {
        let sim = sim().with_code_ttl(Duration::from_secs(300));
        let start = Instant::now();
        let login = sim
            .mint("alice", false, None, start, SystemTime::now())
            .unwrap();
        let late = start + Duration::from_secs(300);
        assert_eq!(
            sim.exchange(APP, SECRET, &login.code, late),
            Err(Errcode::INVALID_CODE)
        );
        assert_eq!(sim.remembered_codes(), 0, "expired codes are forgotten");
        let login = sim
            .mint("alice", false, None, start, SystemTime::now())
            .unwrap();
        let in_time = start + Duration::from_secs(299);
        assert!(sim.exchange(APP, SECRET, &login.code, in_time).is_ok());
    }

    #[test]
    fn the_oldest_codes_are_forgotten_beyond_the_cap() {
        let sim = sim().with_max_codes(2);
        let logins: Vec<_> = (0..3).map(|_| sim.login("alice").unwrap()).collect();
        assert_eq!(sim.remembered_codes(), 2);
        assert_eq!(
            sim.jscode2session(APP, SECRET, &logins[0].code),
            Err(Errcode::INVALID_CODE)
        );
        assert!(sim.jscode2session(APP, SECRET, &logins[1].code).is_ok());
        assert!(sim.jscode2session(APP, SECRET, &logins[2].code).is_ok());
        // Used codes count too (they answer 40163), and stay bounded.
        for _ in 0..10 {
            let login = sim.login("bob").unwrap();
            sim.jscode2session(APP, SECRET, &login.code).unwrap();
        }
        assert_eq!(sim.remembered_codes(), 2);
    }

    #[test]
    fn clones_share_codes() {
        let sim = sim();
        let login = sim.clone().login("alice").unwrap();
        assert!(sim.jscode2session(APP, SECRET, &login.code).is_ok());
    }

    #[test]
    fn open_ids_are_stable_per_user_and_app() {
        let sim = sim();
        let id = sim.open_id("alice");
        assert_eq!(id.len(), 28);
        assert!(id.starts_with('o'));
        let sku = crate::token::Sku::new("demo").unwrap();
        assert!(crate::token::Token::generate(&sku, &id).is_ok(), "{id}");
        assert_eq!(id, sim.open_id("alice"));
        assert_ne!(id, sim.open_id("bob"));
        assert_ne!(
            id,
            WeChatSimulator::new("wx-other", SECRET).open_id("alice")
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            WeChatSimulator::new("ab", SECRET).open_id("c"),
            WeChatSimulator::new("a", SECRET).open_id("bc")
        );
    }

    #[test]
    fn union_ids_are_shared_across_apps() {
        assert_eq!(sim().union_id("alice"), None);
        let a = sim().with_union_ids(true);
        let b = WeChatSimulator::new("wx-other", SECRET).with_union_ids(true);
        let union_id = a.union_id("alice").unwrap();
        assert_eq!(union_id.len(), 28);
        assert!(union_id.starts_with('u'));
        assert_eq!(b.union_id("alice").as_ref(), Some(&union_id));
        assert_ne!(a.open_id("alice"), b.open_id("alice"));
        let login = a.login("alice").unwrap();
        let session = a.jscode2session(APP, SECRET, &login.code).unwrap();
        assert_eq!(session.union_id, Some(union_id));
    }

    #[test]
    fn union_ids_can_be_switched_on_later_for_every_clone() {
        let sim = sim();
        let server_side = sim.clone();
        let first = sim.login_with_profile("alice").unwrap();
        assert_eq!(first.union_id, None);
        // Another clone turns the switch: it applies to all of them at once.
        server_side.clone().set_union_ids(true);
        let union_id = sim.union_id("alice").expect("on for every clone");
        assert_eq!(server_side.union_id("alice").as_ref(), Some(&union_id));
        let later = sim.login_with_profile("alice").unwrap();
        assert_eq!(later.union_id.as_ref(), Some(&union_id));
        assert_eq!(later.open_id, first.open_id, "the same user");

        // A code keeps what it was minted with, and so does its encrypted profile.
        let early = server_side
            .jscode2session(APP, SECRET, &first.code)
            .unwrap();
        assert_eq!(early.union_id, None);
        let session = server_side
            .jscode2session(APP, SECRET, &later.code)
            .unwrap();
        assert_eq!(session.union_id.as_ref(), Some(&union_id));
        let options = DecryptOptions::new(APP).with_max_age(Duration::from_secs(60));
        let profile = later.profile.unwrap();
        let decrypted = decrypt_profile(
            &options,
            &session,
            &profile.encrypted_data,
            &profile.iv,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(decrypted.union_id, Some(union_id));
        assert!(format!("{sim:?}").contains("union_ids: true"));

        // And off again; the builder form flips the same switch.
        sim.set_union_ids(false);
        assert_eq!(server_side.login("alice").unwrap().union_id, None);
        let built = server_side.clone().with_union_ids(true);
        assert!(sim.union_id("alice").is_some());
        assert!(built.union_id("alice").is_some());
    }

    #[test]
    fn profiles_decrypt_and_verify_with_the_session_key() {
        let sim = sim().with_union_ids(true);
        let login = sim.login_with_profile("Zoë").unwrap();
        let profile = login.profile.clone().unwrap();
        let session = sim.jscode2session(APP, SECRET, &login.code).unwrap();
        let options = DecryptOptions::new(APP).with_max_age(Duration::from_secs(60));
        let decrypted = decrypt_profile(
            &options,
            &session,
            &profile.encrypted_data,
            &profile.iv,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(decrypted.open_id, sim.open_id("Zoë"));
        assert_eq!(decrypted.union_id, sim.union_id("Zoë"));
        assert_eq!(decrypted.nick_name.as_deref(), Some("Zoë"));
        assert_eq!(decrypted.watermark.appid, APP);
        verify_signature(&profile.raw_data, &session.session_key, &profile.signature).unwrap();
        assert_eq!(
            profile.raw_data,
            r#"{"nickName":"Zoë","gender":0,"language":"zh_CN"}"#
        );
        let request = login.authorize_request();
        assert_eq!(request.code.as_deref(), Some(login.code.as_str()));
        assert_eq!(request.encrypted_data, Some(profile.encrypted_data));
        assert_eq!(request.signature, Some(profile.signature));
    }

    #[test]
    fn ivs_are_fresh_for_every_profile() {
        let sim = sim();
        let a = sim.login_with_profile("alice").unwrap().profile.unwrap();
        let b = sim.login_with_profile("alice").unwrap().profile.unwrap();
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.encrypted_data, b.encrypted_data);
    }

    #[test]
    fn user_names_are_checked() {
        let sim = sim();
        for bad in [String::new(), "a\nb".into(), "x".repeat(MAX_USER_LEN + 1)] {
            assert_eq!(sim.login(&bad), Err(SimulatorError::InvalidUser), "{bad:?}");
        }
        assert!(sim.login(&"é".repeat(MAX_USER_LEN)).is_ok());
    }

    #[test]
    fn queries_are_answered_like_wechat() {
        let sim = sim().with_union_ids(true);
        let login = sim.login("alice").unwrap();
        let answer: serde_json::Value =
            serde_json::from_str(&sim.jscode2session_query(&query(&login.code))).unwrap();
        assert_eq!(answer["openid"], sim.open_id("alice"));
        assert_eq!(answer["unionid"], sim.union_id("alice").unwrap());
        assert_eq!(answer["session_key"].as_str().unwrap().len(), 24);
        assert!(answer.get("errcode").is_none());

        let errcode = |query: &str| -> i64 {
            let answer: serde_json::Value =
                serde_json::from_str(&sim.jscode2session_query(query)).unwrap();
            assert!(answer["errmsg"].is_string());
            answer["errcode"].as_i64().unwrap()
        };
        assert_eq!(errcode(&query(&login.code)), 40163);
        assert_eq!(errcode(&query("nope")), 40029);
        assert_eq!(errcode(""), 41002);
        assert_eq!(errcode(&format!("appid={APP}&js_code=x")), 41004);
        assert_eq!(errcode(&format!("appid={APP}&secret={SECRET}")), 41008);
        let fresh = sim.login("alice").unwrap();
        let no_grant = format!("appid={APP}&secret={SECRET}&js_code={}", fresh.code);
        assert_eq!(errcode(&no_grant), 40002);
        assert_eq!(
            errcode(&query(&fresh.code).replace("wx-sim-app", "wx-x")),
            40013
        );
        assert_eq!(
            errcode(&query(&fresh.code).replace("sim-secret", "s")),
            40125
        );
        // Percent-encoding is decoded; the refusals above did not use the code up.
        let encoded = query(&fresh.code).replace("wx-sim-app", "wx%2Dsim%2Dapp");
        assert!(sim.jscode2session_query(&encoded).contains("session_key"));
    }

    #[test]
    fn answers_without_a_unionid_leave_it_out() {
        let sim = sim();
        let login = sim.login("alice").unwrap();
        let answer = sim.jscode2session_query(&query(&login.code));
        assert!(!answer.contains("unionid"), "{answer}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let sim = sim();
        let login = sim.login("alice").unwrap();
        let shown = format!("{sim:?} {login:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&login.code), "{shown}");
    }
}
