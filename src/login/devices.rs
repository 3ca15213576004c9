//! Device management: a user's live tokens, each a device, and signing one out.

use super::{Error, MpAuth};
use crate::{
    store::{TokenInfo, TokenStore},
    token::TokenHash,
    user::AuthedUser,
    users::UserStore,
};

impl<T: TokenStore, U: UserStore> MpAuth<T, U> {
    /// The user's live tokens, one per device, oldest first: what
    /// `GET /auth/devices` lists. Each names its token by [`TokenHash::id`], a public
    /// id that is neither the token nor its hash.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for a user of another sku, [`Error::Store`] when the
    /// token store cannot answer.
    pub async fn devices(&self, user: &AuthedUser) -> Result<Vec<TokenInfo>, Error> {
        if user.sku() != self.config().sku() {
            return Err(Error::InvalidToken);
        }
        let mut devices = self.tokens().list(user.sku(), user.open_id()).await?;
        devices.sort_by_key(|d| (d.issued_at_ms, d.expires_at_ms));
        Ok(devices)
    }

    /// Signs one of the user's own devices out, by the public id [`devices`] lists;
    /// returns whether it was live. Another user's id, or an unknown or malformed one,
    /// is `false` and revokes nothing.
    ///
    /// [`devices`]: Self::devices
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for a user of another sku, [`Error::Store`] when the
    /// token store cannot answer.
    pub async fn revoke_device(&self, user: &AuthedUser, id: &str) -> Result<bool, Error> {
        if user.sku() != self.config().sku() {
            return Err(Error::InvalidToken);
        }
        let Some(hash) = TokenHash::from_id(id) else {
            return Ok(false);
        };
        let revoked = self
            .tokens()
            .revoke_hash(user.sku(), user.open_id(), &hash)
            .await?;
        crate::instruments::logout("device", usize::from(revoked));
        Ok(revoked)
    }
}
