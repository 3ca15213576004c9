//! Phone numbers: the one-time codes of `<button open-type="getPhoneNumber">`, WeChat's
//! `getuserphonenumber` that exchanges them, and the legacy encrypted phone data.

use std::{
    fmt,
    sync::{MutexGuard, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    WeChatSimulator,
    calls::SimEndpoint,
    codes::Codes,
    mint::{SimulatedLogin, SimulatorError, check_user, random_bytes},
    simulator::Config,
    wire::{self, CountryCode, Errcode, PhoneInfoJson, PhoneNumberRequest, WatermarkJson},
};
use crate::wechat::{Session, encrypt_profile};

/// Random bytes in a phone code: 32 bytes are 64 hex characters, a real one's shape.
const PHONE_CODE_BYTES: usize = 32;
/// The country code of a number given without one: mainland China.
const MAINLAND: &str = "86";
/// Digits in a number, without its country code.
const NUMBER_DIGITS: std::ops::RangeInclusive<usize> = 4..=20;
/// Digits in a country code.
const COUNTRY_CODE_DIGITS: std::ops::RangeInclusive<usize> = 1..=4;

/// A test phone number: digits and country code.
pub(super) struct Phone {
    pure: String,
    country_code: String,
}

impl Phone {
    /// `"13800138000"` (country code 86) or `"+1 4155550100"`.
    pub(super) fn parse(phone: &str) -> Result<Self, SimulatorError> {
        let digits = |s: &str, len: &std::ops::RangeInclusive<usize>| {
            len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        let (country_code, pure) = match phone.strip_prefix('+') {
            Some(international) => international
                .split_once(' ')
                .ok_or(SimulatorError::InvalidPhone)?,
            None => (MAINLAND, phone),
        };
        if !digits(country_code, &COUNTRY_CODE_DIGITS)
            || country_code.starts_with('0')
            || !digits(pure, &NUMBER_DIGITS)
        {
            return Err(SimulatorError::InvalidPhone);
        }
        Ok(Self {
            pure: pure.to_owned(),
            country_code: country_code.to_owned(),
        })
    }

    /// WeChat's `phoneNumber`: the bare number in mainland China, else
    /// `+<country code> <number>`.
    fn phone_number(&self) -> String {
        if self.country_code == MAINLAND {
            self.pure.clone()
        } else {
            format!("+{} {}", self.country_code, self.pure)
        }
    }

    fn info(&self) -> PhoneInfo {
        PhoneInfo {
            phone_number: self.phone_number(),
            pure_phone_number: self.pure.clone(),
            country_code: self.country_code.clone(),
        }
    }
}

/// What a phone code stands for.
pub(super) struct PhoneGrant {
    open_id: String,
    phone: Phone,
}

/// A phone number as `getuserphonenumber` describes it (its `phone_info`, without the
/// watermark).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhoneInfo {
    /// `phoneNumber`: `"13800138000"` for a mainland number, `"+1 4155550100"` for
    /// others.
    pub phone_number: String,
    /// `purePhoneNumber`: the digits, without the country code.
    pub pure_phone_number: String,
    /// `countryCode`: `"86"`, `"1"`.
    pub country_code: String,
}

impl PhoneInfo {
    /// The JSON WeChat describes it with, watermarked for `config`'s app now.
    fn to_json<'a>(&'a self, config: &'a Config, wall_clock: SystemTime) -> PhoneInfoJson<'a> {
        let country_code = match self.country_code.parse() {
            Ok(number) if config.numeric_country_codes => CountryCode::Number(number),
            _ => CountryCode::Text(&self.country_code),
        };
        PhoneInfoJson {
            phone_number: &self.phone_number,
            pure_phone_number: &self.pure_phone_number,
            country_code,
            watermark: WatermarkJson {
                timestamp: wall_clock
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs()),
                appid: &config.app_id,
            },
        }
    }
}

/// What a mini-program holds after `<button open-type="getPhoneNumber">`: a one-time
/// phone code to send to the server under test, which exchanges it with
/// `getuserphonenumber`. `Debug` redacts the code.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimulatedPhoneCode {
    /// The one-time phone code (not a login code: `jscode2session` refuses it).
    pub code: String,
    /// The openid of the user the code is for.
    pub open_id: String,
    /// What `getuserphonenumber` answers as `phoneNumber`.
    pub phone_number: String,
    /// What `getuserphonenumber` answers as `purePhoneNumber`.
    pub pure_phone_number: String,
    /// What `getuserphonenumber` answers as `countryCode`.
    pub country_code: String,
}

impl fmt::Debug for SimulatedPhoneCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedPhoneCode")
            .field("code", &"<redacted>")
            .field("open_id", &self.open_id)
            .field("phone_number", &self.phone_number)
            .field("pure_phone_number", &self.pure_phone_number)
            .field("country_code", &self.country_code)
            .finish()
    }
}

/// The legacy encrypted phone data (`getPhoneNumber`'s `encryptedData` and `iv`, before
/// phone codes), made with the login's session key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimulatedPhone {
    /// Base64 AES-128-CBC ciphertext of `{"phoneNumber", "purePhoneNumber",
    /// "countryCode", "watermark": {"timestamp", "appid"}}` (`encryptedData`).
    pub encrypted_data: String,
    /// Base64 IV, fresh for each login (`iv`).
    pub iv: String,
}

impl SimulatedPhone {
    /// `{"encryptedData", "iv"}`.
    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "encryptedData": self.encrypted_data, "iv": self.iv })
    }
}

/// Encrypts `phone` as the legacy phone data with `session`'s key and a fresh IV.
pub(super) fn simulated_phone(
    config: &Config,
    phone: &Phone,
    session: &Session,
    wall_clock: SystemTime,
) -> Result<SimulatedPhone, SimulatorError> {
    let iv = random_bytes()?;
    let info = phone.info();
    let plaintext =
        serde_json::to_string(&info.to_json(config, wall_clock)).expect("phone info serializes");
    let encrypted = encrypt_profile(&session.session_key, iv, &plaintext)
        .expect("the simulator's session keys are 16 bytes");
    Ok(SimulatedPhone {
        encrypted_data: encrypted.encrypted_data,
        iv: encrypted.iv,
    })
}

impl WeChatSimulator {
    /// Mints a one-time phone code for test user `user` (openid
    /// [`open_id(user)`](Self::open_id)) and `phone`, as
    /// `<button open-type="getPhoneNumber">` would. `phone` is a mainland number of 4 to
    /// 20 digits (`"13800138000"`, country code 86) or `"+<country code> <digits>"`
    /// (`"+1 4155550100"`, a country code of 1 to 4 digits not starting with 0);
    /// anything else is [`SimulatorError::InvalidPhone`]. The code lives as long as a
    /// login code and works once.
    ///
    /// ```
    /// use mpauthx::testing::WeChatSimulator;
    ///
    /// let sim = WeChatSimulator::new("wx-test-app", "test-secret");
    /// let phone = sim.phone_code("alice", "+1 4155550100")?;
    /// let (token, _) = sim.stable_token("wx-test-app", "test-secret", false).unwrap();
    /// let info = sim.get_user_phone_number(&token, &phone.code, None).unwrap();
    /// assert_eq!(info.phone_number, "+1 4155550100");
    /// assert_eq!(info.pure_phone_number, "4155550100");
    /// assert_eq!(info.country_code, "1");
    /// # Ok::<(), mpauthx::testing::SimulatorError>(())
    /// ```
    pub fn phone_code(
        &self,
        user: &str,
        phone: &str,
    ) -> Result<SimulatedPhoneCode, SimulatorError> {
        self.phone_code_at(user, phone, Instant::now())
    }

    fn phone_code_at(
        &self,
        user: &str,
        phone: &str,
        now: Instant,
    ) -> Result<SimulatedPhoneCode, SimulatorError> {
        check_user(user)?;
        let phone = Phone::parse(phone)?;
        let code = hex::encode(random_bytes::<PHONE_CODE_BYTES>()?);
        let info = phone.info();
        let minted = SimulatedPhoneCode {
            code: code.clone(),
            open_id: self.open_id(user),
            phone_number: info.phone_number,
            pure_phone_number: info.pure_phone_number,
            country_code: info.country_code,
        };
        let grant = PhoneGrant {
            open_id: minted.open_id.clone(),
            phone,
        };
        let expires_at = now + self.config.code_ttl;
        self.lock_phone_codes()
            .insert(code, grant, expires_at, now, self.config.max_codes);
        tracing::debug!(open_id = %minted.open_id, "simulator minted a phone code");
        Ok(minted)
    }

    /// Mints a one-time login code for `user`, as [`login`](Self::login) does, together
    /// with the legacy encrypted phone data for `phone` (see
    /// [`phone_code`](Self::phone_code) for its format), made with the login's session
    /// key: `{"phoneNumber", "purePhoneNumber", "countryCode", "watermark":
    /// {"timestamp", "appid"}}`.
    pub fn login_with_phone(
        &self,
        user: &str,
        phone: &str,
    ) -> Result<SimulatedLogin, SimulatorError> {
        let phone = Phone::parse(phone)?;
        self.mint(user, false, Some(&phone), Instant::now(), SystemTime::now())
    }

    /// Exchanges a phone code as `POST /wxa/business/getuserphonenumber` does: the phone
    /// number on success, else WeChat's errcode. First the access token is checked
    /// (41001, 40014, 40001, 42001, see
    /// [`check_access_token`](Self::check_access_token)); an empty code is 47001; an
    /// unknown, expired or used code is 40029, and so is one for another user than
    /// `open_id`, when given (that refusal does not use the code up).
    pub fn get_user_phone_number(
        &self,
        access_token: &str,
        code: &str,
        open_id: Option<&str>,
    ) -> Result<PhoneInfo, Errcode> {
        self.get_user_phone_number_at(access_token, code, open_id, Instant::now())
    }

    fn get_user_phone_number_at(
        &self,
        access_token: &str,
        code: &str,
        open_id: Option<&str>,
        now: Instant,
    ) -> Result<PhoneInfo, Errcode> {
        self.state.calls.enter(SimEndpoint::PhoneNumber)?;
        let request = PhoneNumberRequest {
            code: Some(code.to_owned()),
            open_id: open_id.map(str::to_owned),
        };
        self.exchange_phone_code(access_token, Ok(request), now)
    }

    /// The JSON body WeChat answers to `POST /wxa/business/getuserphonenumber?<query>`
    /// with `request` as the body (or a body that was not one: 47001).
    pub(super) fn phone_number_answer(
        &self,
        query: &str,
        request: Result<PhoneNumberRequest, Errcode>,
        now: Instant,
        wall_clock: SystemTime,
    ) -> String {
        let info = self
            .state
            .calls
            .enter(SimEndpoint::PhoneNumber)
            .and_then(|()| {
                let access_token = wire::access_token_param(query).unwrap_or_default();
                self.exchange_phone_code(&access_token, request, now)
            });
        wire::phone_number_answer(
            &info
                .as_ref()
                .map_err(|e| *e)
                .map(|info| info.to_json(&self.config, wall_clock)),
        )
    }

    fn exchange_phone_code(
        &self,
        access_token: &str,
        request: Result<PhoneNumberRequest, Errcode>,
        now: Instant,
    ) -> Result<PhoneInfo, Errcode> {
        let result = self.exchange_phone_code_checked(access_token, request, now);
        match &result {
            Ok(_) => tracing::debug!("simulated getuserphonenumber"),
            Err(e) => tracing::debug!(errcode = e.errcode, "simulated getuserphonenumber refused"),
        }
        result
    }

    fn exchange_phone_code_checked(
        &self,
        access_token: &str,
        request: Result<PhoneNumberRequest, Errcode>,
        now: Instant,
    ) -> Result<PhoneInfo, Errcode> {
        self.check_access_token_at(access_token, now)?;
        let request = request?;
        let code = request
            .code
            .filter(|code| !code.is_empty())
            .ok_or(Errcode::DATA_FORMAT_ERROR)?;
        let open_id = request.open_id.filter(|open_id| !open_id.is_empty());
        let grant = self
            .lock_phone_codes()
            .take_if(&code, now, |grant| match &open_id {
                Some(open_id) if *open_id != grant.open_id => Err(Errcode::INVALID_CODE),
                _ => Ok(()),
            })
            // WeChat does not tell a used phone code from an unknown one.
            .map_err(|_| Errcode::INVALID_CODE)?;
        Ok(grant.phone.info())
    }

    fn lock_phone_codes(&self) -> MutexGuard<'_, Codes<PhoneGrant>> {
        // Every update leaves the maps consistent, so a panic elsewhere poisons nothing real.
        self.state
            .phone_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aes::Aes128;
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use cbc::cipher::{BlockModeDecrypt as _, KeyIvInit as _, block_padding::Pkcs7};

    use super::*;
    use crate::testing::SimulatorError;

    const APP: &str = "wx-sim-app";
    const SECRET: &str = "sim-secret";

    fn sim() -> WeChatSimulator {
        WeChatSimulator::new(APP, SECRET)
    }

    fn token(sim: &WeChatSimulator) -> String {
        sim.stable_token(APP, SECRET, false).unwrap().0
    }

    fn info(phone_number: &str, pure: &str, country_code: &str) -> PhoneInfo {
        PhoneInfo {
            phone_number: phone_number.into(),
            pure_phone_number: pure.into(),
            country_code: country_code.into(),
        }
    }

    /// The JSON answer to a `getuserphonenumber` request.
    fn answer(
        sim: &WeChatSimulator,
        access_token: &str,
        request: Result<PhoneNumberRequest, Errcode>,
    ) -> serde_json::Value {
        let query = format!("access_token={access_token}");
        let body = sim.phone_number_answer(&query, request, Instant::now(), SystemTime::now());
        serde_json::from_str(&body).unwrap()
    }

    fn request(code: &str, open_id: Option<&str>) -> Result<PhoneNumberRequest, Errcode> {
        Ok(PhoneNumberRequest {
            code: Some(code.into()),
            open_id: open_id.map(str::to_owned),
        })
    }

    #[test]
    fn a_phone_code_is_exchanged_once() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        assert_eq!(minted.code.len(), 64);
        assert!(minted.code.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(minted.open_id, sim.open_id("alice"));
        assert_eq!(
            sim.get_user_phone_number(&token, &minted.code, None),
            Ok(info("13800138000", "13800138000", "86"))
        );
        assert_eq!(
            sim.get_user_phone_number(&token, &minted.code, None),
            Err(Errcode::INVALID_CODE)
        );
        assert_eq!(
            sim.get_user_phone_number(&token, "never-minted", None),
            Err(Errcode::INVALID_CODE)
        );
        assert_eq!(
            sim.get_user_phone_number(&token, "", None),
            Err(Errcode::DATA_FORMAT_ERROR)
        );
    }

    #[test]
    fn phone_numbers_are_given_as_wechat_gives_them() {
        let sim = sim();
        let token = token(&sim);
        for (phone, expected) in [
            ("13800138000", info("13800138000", "13800138000", "86")),
            ("+86 13800138000", info("13800138000", "13800138000", "86")),
            ("+1 4155550100", info("+1 4155550100", "4155550100", "1")),
            ("+852 61234567", info("+852 61234567", "61234567", "852")),
            ("+1234 1234", info("+1234 1234", "1234", "1234")),
            ("1234", info("1234", "1234", "86")),
            (
                "12345678901234567890",
                info("12345678901234567890", "12345678901234567890", "86"),
            ),
        ] {
            let minted = sim.phone_code("alice", phone).unwrap();
            assert_eq!(minted.phone_number, expected.phone_number, "{phone}");
            assert_eq!(minted.pure_phone_number, expected.pure_phone_number);
            assert_eq!(minted.country_code, expected.country_code);
            assert_eq!(
                sim.get_user_phone_number(&token, &minted.code, None),
                Ok(expected),
                "{phone}"
            );
        }
    }

    #[test]
    fn phone_numbers_are_checked() {
        let sim = sim();
        for bad in [
            "",
            "123",
            "123456789012345678901",
            "1380013800a",
            " 13800138000",
            "13800138000 ",
            "138 0013 8000",
            "+13800138000",
            "+1",
            "+1 ",
            "+ 4155550100",
            "+12345 4155550100",
            "+0 4155550100",
            "+1  4155550100",
            "+1-4155550100",
            "+1 415 555 0100",
            "++1 4155550100",
            "１３８００１３８０００",
        ] {
            assert_eq!(
                sim.phone_code("alice", bad),
                Err(SimulatorError::InvalidPhone),
                "{bad:?}"
            );
            assert_eq!(
                sim.login_with_phone("alice", bad),
                Err(SimulatorError::InvalidPhone),
                "{bad:?}"
            );
        }
        assert_eq!(
            sim.phone_code("", "13800138000"),
            Err(SimulatorError::InvalidUser)
        );
    }

    #[test]
    fn another_users_openid_is_refused_without_using_the_code() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        let bob = sim.open_id("bob");
        assert_eq!(
            sim.get_user_phone_number(&token, &minted.code, Some(&bob)),
            Err(Errcode::INVALID_CODE)
        );
        let alice = sim.open_id("alice");
        assert!(
            sim.get_user_phone_number(&token, &minted.code, Some(&alice))
                .is_ok()
        );
        // An empty openid is no openid.
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        assert!(
            sim.get_user_phone_number(&token, &minted.code, Some(""))
                .is_ok()
        );
    }

    #[test]
    fn phone_codes_expire() {
        let sim = sim();
        let start = Instant::now();
        let (token, _) = sim.stable_token(APP, SECRET, false).unwrap();
        let minted = sim.phone_code_at("alice", "13800138000", start).unwrap();
        let late = start + Duration::from_secs(300);
        assert_eq!(
            sim.get_user_phone_number_at(&token, &minted.code, None, late),
            Err(Errcode::INVALID_CODE)
        );
        let minted = sim.phone_code_at("alice", "13800138000", start).unwrap();
        let in_time = start + Duration::from_secs(299);
        assert!(
            sim.get_user_phone_number_at(&token, &minted.code, None, in_time)
                .is_ok()
        );
    }

    #[test]
    fn the_oldest_phone_codes_are_forgotten_beyond_the_cap() {
        let sim = sim().with_max_codes(2);
        let token = token(&sim);
        let codes: Vec<_> = (0..3)
            .map(|_| sim.phone_code("alice", "13800138000").unwrap().code)
            .collect();
        // Login codes are counted apart.
        sim.login("alice").unwrap();
        assert_eq!(
            sim.get_user_phone_number(&token, &codes[0], None),
            Err(Errcode::INVALID_CODE)
        );
        for code in &codes[1..] {
            assert!(sim.get_user_phone_number(&token, code, None).is_ok());
        }
    }

    #[test]
    fn the_access_token_is_checked_first_and_uses_nothing_up() {
        let sim = sim().with_access_token_ttl(Duration::from_secs(600));
        let (token, _) = sim.stable_token(APP, SECRET, false).unwrap();
        // The token expires by `start + 600 s`.
        let start = Instant::now();
        let minted = sim.phone_code_at("alice", "13800138000", start).unwrap();
        let code = &minted.code;
        let wrong_user = sim.open_id("bob");
        let refused = |access_token: &str, now| {
            sim.get_user_phone_number_at(access_token, code, Some(&wrong_user), now)
                .unwrap_err()
        };
        assert_eq!(refused("", start), Errcode::MISSING_ACCESS_TOKEN);
        assert_eq!(refused("nope", start), Errcode::INVALID_ACCESS_TOKEN);
        assert_eq!(
            refused(&"A".repeat(136), start),
            Errcode::INVALID_CREDENTIAL
        );
        let late = start + Duration::from_secs(600);
        assert_eq!(refused(&token, late), Errcode::ACCESS_TOKEN_EXPIRED);
        let expired_and_empty = sim.get_user_phone_number_at(&token, "", None, late);
        assert_eq!(expired_and_empty, Err(Errcode::ACCESS_TOKEN_EXPIRED));
        assert!(sim.get_user_phone_number(&token, code, None).is_ok());

        let minted = sim.phone_code("alice", "13800138000").unwrap();
        sim.revoke_access_tokens();
        assert_eq!(
            sim.get_user_phone_number(&token, &minted.code, None),
            Err(Errcode::INVALID_CREDENTIAL)
        );
        let (legacy, _) = sim.token(APP, SECRET).unwrap();
        assert!(
            sim.get_user_phone_number(&legacy, &minted.code, None)
                .is_ok(),
            "legacy tokens work too"
        );
    }

    #[test]
    fn login_codes_and_phone_codes_are_not_interchangeable() {
        let sim = sim();
        let token = token(&sim);
        let login = sim.login("alice").unwrap();
        let phone = sim.phone_code("alice", "13800138000").unwrap();
        assert_eq!(
            sim.get_user_phone_number(&token, &login.code, None),
            Err(Errcode::INVALID_CODE)
        );
        assert_eq!(
            sim.jscode2session(APP, SECRET, &phone.code),
            Err(Errcode::INVALID_CODE)
        );
        assert!(sim.jscode2session(APP, SECRET, &login.code).is_ok());
        assert!(sim.get_user_phone_number(&token, &phone.code, None).is_ok());
    }

    #[test]
    fn answers_carry_phone_info_with_a_watermark() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.phone_code("alice", "+1 4155550100").unwrap();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let answer = answer(&sim, &token, request(&minted.code, None));
        assert_eq!(answer["errcode"], 0);
        assert_eq!(answer["errmsg"], "ok");
        let info = &answer["phone_info"];
        assert_eq!(info["phoneNumber"], "+1 4155550100");
        assert_eq!(info["purePhoneNumber"], "4155550100");
        assert_eq!(info["countryCode"], "1");
        assert_eq!(info["watermark"]["appid"], APP);
        let timestamp = info["watermark"]["timestamp"].as_u64().unwrap();
        assert!((before..before + 5).contains(&timestamp), "{timestamp}");
    }

    #[test]
    fn country_codes_can_be_numbers() {
        let sim = sim().with_numeric_country_codes(true);
        let token = token(&sim);
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        let answer = answer(&sim, &token, request(&minted.code, None));
        assert_eq!(answer["phone_info"]["countryCode"], 86);
        assert_eq!(answer["phone_info"]["phoneNumber"], "13800138000");
        // The library call and the minted code keep the string.
        assert_eq!(minted.country_code, "86");
    }

    #[test]
    fn refused_requests_are_answered_like_wechat() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        let errcode = |access_token: &str, request| {
            let answer = answer(&sim, access_token, request);
            assert!(answer["errmsg"].is_string(), "{answer}");
            let errcode = answer["errcode"].as_i64().unwrap();
            assert_eq!(answer.get("phone_info").is_some(), errcode == 0, "{answer}");
            errcode
        };
        let not_json = || Err(Errcode::DATA_FORMAT_ERROR);
        assert_eq!(errcode("", not_json()), 41001, "the token comes first");
        assert_eq!(errcode("x", not_json()), 40014);
        assert_eq!(errcode(&"A".repeat(136), not_json()), 40001);
        assert_eq!(errcode(&token, not_json()), 47001);
        let no_code = Ok(PhoneNumberRequest {
            code: None,
            open_id: None,
        });
        assert_eq!(errcode(&token, no_code), 47001);
        assert_eq!(errcode(&token, request("", None)), 47001);
        assert_eq!(errcode(&token, request("nope", None)), 40029);
        let bob = sim.open_id("bob");
        assert_eq!(errcode(&token, request(&minted.code, Some(&bob))), 40029);
        assert_eq!(errcode(&token, request(&minted.code, None)), 0);
        assert_eq!(errcode(&token, request(&minted.code, None)), 40029);
        assert_eq!(sim.calls().phone_number, 10);
    }

    #[test]
    fn the_access_token_is_read_from_the_query() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        let query = format!("foo=1&access_token=&access_token={token}");
        let body = sim.phone_number_answer(
            &query,
            request(&minted.code, None),
            Instant::now(),
            SystemTime::now(),
        );
        assert!(body.contains(r#""errcode":0"#), "{body}");
    }

    fn decrypt(session_key: &str, encrypted_data: &str, iv: &str) -> serde_json::Value {
        let key: [u8; 16] = STANDARD.decode(session_key).unwrap().try_into().unwrap();
        let iv: [u8; 16] = STANDARD.decode(iv).unwrap().try_into().unwrap();
        let ciphertext = STANDARD.decode(encrypted_data).unwrap();
        let plaintext = cbc::Decryptor::<Aes128>::new(&key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(&ciphertext)
            .unwrap();
        serde_json::from_slice(&plaintext).unwrap()
    }

    #[test]
    fn legacy_phone_data_decrypts_with_the_session_key() {
        let sim = sim();
        let login = sim.login_with_phone("alice", "+1 4155550100").unwrap();
        assert!(login.profile.is_none());
        let phone = login.phone.clone().unwrap();
        let session = sim.jscode2session(APP, SECRET, &login.code).unwrap();
        assert_eq!(session.open_id, sim.open_id("alice"));
        let data = decrypt(
            session.session_key.expose_secret(),
            &phone.encrypted_data,
            &phone.iv,
        );
        assert_eq!(data["phoneNumber"], "+1 4155550100");
        assert_eq!(data["purePhoneNumber"], "4155550100");
        assert_eq!(data["countryCode"], "1");
        assert_eq!(data["watermark"]["appid"], APP);
        assert!(data["watermark"]["timestamp"].as_u64().unwrap() > 0);

        let numeric = WeChatSimulator::new(APP, SECRET).with_numeric_country_codes(true);
        let login = numeric.login_with_phone("alice", "13800138000").unwrap();
        let phone = login.phone.clone().unwrap();
        let session = numeric.jscode2session(APP, SECRET, &login.code).unwrap();
        let data = decrypt(
            session.session_key.expose_secret(),
            &phone.encrypted_data,
            &phone.iv,
        );
        assert_eq!(data["phoneNumber"], "13800138000");
        assert_eq!(data["countryCode"], 86);
    }

    #[test]
    fn authorize_bodies_carry_the_phone_data() {
        let sim = sim();
        let login = sim.login_with_phone("alice", "13800138000").unwrap();
        let phone = login.phone.clone().unwrap();
        let body = login.authorize_body();
        assert_eq!(
            body,
            serde_json::json!({
                "code": login.code,
                "phone": { "encryptedData": phone.encrypted_data, "iv": phone.iv },
            })
        );
        assert_eq!(
            login.authorize_request().code.as_deref(),
            Some(login.code.as_str())
        );

        let login = sim.login_with_profile("alice").unwrap();
        let profile = login.profile.clone().unwrap();
        assert_eq!(
            login.authorize_body(),
            serde_json::json!({
                "code": login.code,
                "encryptedData": profile.encrypted_data,
                "iv": profile.iv,
                "rawData": profile.raw_data,
                "signature": profile.signature,
            })
        );
        let login = sim.login("alice").unwrap();
        assert_eq!(
            login.authorize_body(),
            serde_json::json!({ "code": login.code })
        );
    }

    #[test]
    fn ivs_are_fresh_for_every_phone() {
        let sim = sim();
        let a = sim.login_with_phone("alice", "13800138000").unwrap();
        let b = sim.login_with_phone("alice", "13800138000").unwrap();
        assert_ne!(a.phone.as_ref().unwrap().iv, b.phone.as_ref().unwrap().iv);
    }

    #[test]
    fn clones_share_phone_codes() {
        let sim = sim();
        let token = token(&sim);
        let minted = sim.clone().phone_code("alice", "13800138000").unwrap();
        assert!(
            sim.get_user_phone_number(&token, &minted.code, None)
                .is_ok()
        );
    }

    #[test]
    fn debug_redacts_codes() {
        let sim = sim();
        let minted = sim.phone_code("alice", "13800138000").unwrap();
        let login = sim.login_with_phone("alice", "13800138000").unwrap();
        let shown = format!("{minted:?} {login:?} {sim:?}");
        assert!(!shown.contains(&minted.code), "{shown}");
        assert!(!shown.contains(&login.code), "{shown}");
        assert!(shown.contains("13800138000"), "{shown}");
    }
}
