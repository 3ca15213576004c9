#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]

#[cfg(feature = "wechat")]
mod access_token;
#[cfg(feature = "wechat")]
mod apps;
mod bearer;
mod instruments;
mod layer;
#[cfg(feature = "wechat")]
mod login;
mod phone;
mod response;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod throttle;
mod token;
mod user;
mod users;
#[cfg(feature = "wechat")]
mod wechat;

#[cfg(feature = "wechat")]
pub use crate::access_token::{
    AccessTokenCache, AccessTokenError, AccessTokenManager, CacheFuture, CachedAccessToken,
    ForceRefreshBudget, MemoryAccessTokenCache,
};
#[cfg(feature = "wechat")]
pub use crate::apps::{AppError, MpApps};
#[cfg(all(feature = "wechat", feature = "axum"))]
pub use crate::login::MAX_BODY_BYTES;
#[cfg(feature = "wechat")]
pub use crate::login::{
    AuthorizeRequest, Authorized, ConfigError, EncryptedPhone, Error, Identity, MpAuth,
    MpAuthBuilder, MpAuthConfig,
};
#[cfg(feature = "redis")]
pub use crate::store::{RedisTokenStore, RedisTokenStoreBuilder, RedisValidation};
#[cfg(feature = "mysql")]
pub use crate::users::MySqlUserStore;
#[cfg(feature = "postgres")]
pub use crate::users::PostgresUserStore;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use crate::users::SqlUserStoreBuilder;
#[cfg(feature = "sqlite")]
pub use crate::users::{SqliteUserStore, SqliteUserStoreBuilder};
#[cfg(feature = "wechat")]
pub use crate::wechat::{
    AccessToken, AppSecret, DecryptError, DecryptOptions, DecryptedProfile, FetchedAccessToken,
    PhoneCode, Session, SessionKey, Watermark, WeChatClient, WeChatError, decrypt_phone,
    decrypt_profile, verify_signature,
};
#[cfg(feature = "testing")]
pub use crate::wechat::{EncryptedProfile, encrypt_profile};
pub use crate::{
    bearer::Credentials,
    layer::{MpAuthLayer, MpAuthService, ResponseBody, ResponseFuture},
    phone::PhoneNumber,
    response::{AuthRejection, RejectionKind},
    store::{
        CachedTokenStore, CachedValidation, IssueOptions, Issued, MemoryTokenStore, SignOutReason,
        StoreBuildError, StoreError, TokenInfo, TokenStatus, TokenStore,
    },
    throttle::{
        Decision, InvalidRateLimit, LoginThrottle, MemoryRateLimiter, RateLimit, RateLimiter,
        client_ip_key, forwarded_ip,
    },
    token::{
        MAX_OPEN_ID_LEN, ParsedToken, Sku, Token, TokenError, TokenHash, TokenId, extract_open_id,
        extract_sku,
    },
    user::AuthedUser,
    users::{Profile, StoredLogin, User, UserStore, UserStoreError},
};
