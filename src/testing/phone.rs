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
#[derive(Clone, PartialEq, Eq)]
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
    /// (`"+1 4155550100"`, a country code of 1 to 4 digits); anything else is
    /// [`SimulatorError::InvalidPhone`]. The code lives as long as a login code and
    /// works once.
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
