//! The store's Lua scripts, and the one path every script runs by: the token
//! operations' and the login throttle's.
//!
//! Each token script is `common.lua` followed by its own body, and touches one key, a
//! user's hash: atomic, and valid on Redis Cluster.

use redis::Script;

use super::cluster::Backend;
use crate::store::StoreError;

/// The token operations' scripts, loaded from the `.lua` files beside this one.
pub(super) struct Scripts {
    pub(super) issue: Script,
    pub(super) rotate: Script,
    pub(super) revoke: Script,
    pub(super) revoke_all: Script,
    pub(super) list: Script,
    pub(super) undo: Script,
    pub(super) sign_out: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        const COMMON: &str = include_str!("common.lua");
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            issue: with_common(include_str!("issue.lua")),
            rotate: with_common(include_str!("rotate.lua")),
            revoke: with_common(include_str!("revoke.lua")),
            revoke_all: with_common(include_str!("revoke_all.lua")),
            list: with_common(include_str!("list.lua")),
            undo: with_common(include_str!("undo.lua")),
            sign_out: with_common(include_str!("sign_out.lua")),
        }
    }
}

/// Runs `script` on `key` with `args` within the command timeout, on the node that
/// holds `key`: the one path of every scripted operation.
pub(super) async fn eval<R>(
    backend: &Backend,
    script: &Script,
    key: &str,
    args: &[&[u8]],
) -> Result<R, StoreError>
where
    R: redis::FromRedisValue + Send,
{
    backend
        .run(Some(key), |mut c| async move {
            let mut invocation = script.key(key);
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async::<R>(&mut c).await
        })
        .await
}
