//! The user profile carried in WeChat's encrypted open data.

use serde::{Deserialize, Serialize};

/// Decrypted user info, in WeChat's camelCase field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptedProfile {
    /// The user's openid for this Mini-Program.
    pub open_id: String,
    /// The user's unionid, present when the app is bound to an Open Platform account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union_id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    /// Gender as WeChat encodes it (0 unknown, 1 male, 2 female).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<i64>,
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Province name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// Country name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Avatar image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Language of the strings above (e.g. `zh_CN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Which app the data was encrypted for, and when.
    pub watermark: Watermark,
}

/// WeChat's watermark: binds the open data to an app id and a point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// App id the data was issued for.
    pub appid: String,
    /// Unix time (seconds) at which WeChat produced the data.
    pub timestamp: u64,
}

impl DecryptedProfile {
    /// The fields a [`UserStore`](crate::users::UserStore) keeps.
    pub fn to_stored(&self) -> crate::users::Profile {
        crate::users::Profile {
            nick_name: self.nick_name.clone(),
            avatar_url: self.avatar_url.clone(),
            gender: self.gender,
            city: self.city.clone(),
            province: self.province.clone(),
            country: self.country.clone(),
            language: self.language.clone(),
        }
    }
}
