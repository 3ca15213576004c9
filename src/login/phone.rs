//! Phone numbers: [`MpAuth::bind_phone`] for a logged-in user, and the phone a login
//! brings (`phone_code` or the legacy encrypted `phone`).

use std::time::SystemTime;

use super::{AuthorizeRequest, Error, Identity, MAX_CODE_LEN, MpAuth};
use crate::{
    instruments::Flow,
    phone::PhoneNumber,
    store::TokenStore,
    user::AuthedUser,
    users::UserStore,
    wechat::{PhoneCode, Session, decrypt_phone},
};

/// What a login asks for its phone, checked before WeChat is asked anything.
pub(super) enum LoginPhone<'a> {
    None,
    Code(PhoneCode),
    Encrypted { data: &'a str, iv: &'a str },
}

impl<'a> LoginPhone<'a> {
    /// The phone part of `request`, or why it is malformed.
    pub(super) fn of(request: &'a AuthorizeRequest) -> Result<Self, Error> {
        match (&request.phone_code, &request.phone) {
            (Some(_), Some(_)) => Err(Error::InvalidRequest(
                "send `phone_code` or `phone`, not both",
            )),
            (Some(code), None) => Ok(Self::Code(checked_code(
                code,
                "`phone_code` is empty",
                "`phone_code` is not a phone code",
            )?)),
            (None, Some(phone)) => Ok(Self::Encrypted {
                data: &phone.encrypted_data,
                iv: &phone.iv,
            }),
            (None, None) => Ok(Self::None),
        }
    }
}

impl<T: TokenStore, U: UserStore> MpAuth<T, U> {
    /// Binds a phone number to a logged-in user: exchanges the phone code from
    /// `<button open-type="getPhoneNumber">` with WeChat (`getuserphonenumber`, with
    /// the shared access token, see [`MpAuth::access_tokens`]), checks the answer's
    /// watermark, stores the number on the user and returns it.
    ///
    /// The user's openid goes with the request, so WeChat refuses a code another
    /// user's button produced; under [`Identity::UnionIdWhenPresent`] a token names a
    /// unionid, not an openid, and the code is exchanged without it. WeChat charges for
    /// each successful exchange (see README.md).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an empty or overlong code, `InvalidToken` for a
    /// user of another sku, the WeChat errors of
    /// [`WeChatClient::phone_number`](crate::WeChatClient::phone_number)
    /// (`invalid_phone_code` 401, rate limit 429, busy 503, …), [`Error::Store`] when
    /// the access token's cache is down, [`Error::UnknownUser`] when the user was
    /// deleted meanwhile.
    pub async fn bind_phone(
        &self,
        user: &AuthedUser,
        code: PhoneCode,
    ) -> Result<PhoneNumber, Error> {
        super::spans::traced(Flow::PhoneBind, self.bind(user, code)).await
    }

    async fn bind(&self, user: &AuthedUser, code: PhoneCode) -> Result<PhoneNumber, Error> {
        super::spans::record("user", user.open_id());
        if user.sku() != self.config().sku() {
            return Err(Error::InvalidToken);
        }
        let code = checked_code(
            code.expose_secret(),
            "missing required field `code`",
            "`code` is not a phone code",
        )?;
        // The openid goes with the code, so that WeChat refuses another user's. Under
        // `UnionIdWhenPresent` a token names a unionid once the user has one: then no
        // openid is known here.
        let open_id = match self.config().identity() {
            Identity::OpenId => Some(user.open_id()),
            _ => match self
                .users()
                .get(self.config().app_id(), user.open_id())
                .await?
            {
                Some(stored) if stored.union_id.as_deref() != Some(user.open_id()) => {
                    Some(user.open_id())
                }
                Some(_) => None,
                None => return Err(Error::UnknownUser),
            },
        };
        if let Some(throttle) = self.login_throttle() {
            super::admit(
                throttle
                    .check_user(self.config().sku().as_str(), user.open_id())
                    .await?,
                Flow::PhoneBind,
                "user",
            )?;
        }
        let phone = self.exchange_phone(&code, open_id).await?;
        match self
            .users()
            .set_phone(self.config().app_id(), user.open_id(), &phone)
            .await?
        {
            Some(_) => {
                tracing::info!(user = user.open_id(), phone = %phone.masked(), "phone bound");
                Ok(phone)
            }
            None => Err(Error::UnknownUser),
        }
    }

    /// The phone number a login brings, once WeChat named its user.
    pub(super) async fn login_phone(
        &self,
        phone: LoginPhone<'_>,
        session: &Session,
    ) -> Result<Option<PhoneNumber>, Error> {
        match phone {
            LoginPhone::None => Ok(None),
            LoginPhone::Code(code) => Ok(Some(
                self.exchange_phone(&code, Some(&session.open_id)).await?,
            )),
            LoginPhone::Encrypted { data, iv } => Ok(Some(decrypt_phone(
                self.decrypt_options(),
                session,
                data,
                iv,
                SystemTime::now(),
            )?)),
        }
    }

    async fn exchange_phone(
        &self,
        code: &PhoneCode,
        open_id: Option<&str>,
    ) -> Result<PhoneNumber, Error> {
        let manager = self.access_tokens();
        let client = manager.client();
        let asked = std::time::Instant::now();
        let phone = manager
            .call(|token| client.phone_number(&token, code, open_id))
            .await;
        super::spans::record_wechat(asked);
        Ok(phone?)
    }
}

/// A phone code that is worth sending: present, visible ASCII, and no longer than any
/// WeChat issues; else the request is refused with `missing` or `malformed`.
fn checked_code(
    code: &str,
    missing: &'static str,
    malformed: &'static str,
) -> Result<PhoneCode, Error> {
    if code.is_empty() {
        return Err(Error::InvalidRequest(missing));
    }
    if code.len() > MAX_CODE_LEN || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(malformed));
    }
    Ok(PhoneCode::new(code))
}
