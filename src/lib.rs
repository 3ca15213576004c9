#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
#[cfg(feature = "axum")]
pub mod handlers;
pub mod layer;
pub mod rejection;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod throttle;
pub mod token;
pub mod users;
pub mod wechat;

pub use crate::{
    auth::{AuthorizeRequest, Authorized, MpAuth},
    config::{ConfigError, Identity, MpAuthConfig, Sku},
    error::Error,
    extract::AuthedUser,
    layer::{MpAuthLayer, MpAuthService},
    rejection::{AuthRejection, RejectionKind},
    store::{
        CachedTokenStore, IssueOptions, Issued, MemoryTokenStore, RedisTokenStore,
        RedisTokenStoreBuilder, StoreError, TokenInfo, TokenStore,
    },
    token::{ParsedToken, Token, TokenError, TokenHash, TokenId, extract_open_id, extract_sku},
};
