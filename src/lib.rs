#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod config;
pub mod extract;
pub mod layer;
pub mod rejection;
pub mod store;
pub mod token;
pub mod users;
pub mod wechat;

pub use crate::{
    config::{ConfigError, Sku},
    extract::AuthedUser,
    layer::{MpAuthLayer, MpAuthService},
    rejection::{AuthRejection, RejectionKind},
    store::{
        IssueOptions, Issued, MemoryTokenStore, RedisTokenStore, RedisTokenStoreBuilder,
        StoreError, TokenInfo, TokenStore,
    },
    token::{ParsedToken, Token, TokenError, TokenHash, TokenId, extract_open_id, extract_sku},
};
