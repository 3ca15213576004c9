//! The token store suite, generic over the store: every [`TokenStore`] must pass it.
//! Test binaries run it with `store_suite!(name, <expression making a fresh store>)`,
//! which adds one test per case in a module `name`.

#![allow(dead_code, unreachable_pub)]

use std::{collections::HashSet, time::Duration};

use mpauthx::{
    IssueOptions, SignOutReason, Sku, Token, TokenHash, TokenInfo, TokenStatus, TokenStore,
};

pub use crate::common::{
    keys::sku,
    stores::{LONG, issue, live},
};

/// The shared cases.
pub async fn issue_validate_revoke<S: TokenStore>(store: S) {
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    assert!(live(&store, &token).await);

    let never_issued = Token::generate(&sku(), "o-alice").unwrap();
    assert!(!live(&store, &never_issued).await);

    assert!(store.revoke(&token.parsed()).await.unwrap());
    assert!(!live(&store, &token).await);
    assert!(
        !store.revoke(&token.parsed()).await.unwrap(),
        "second revoke"
    );
    assert!(store.list(&sku(), "o-alice").await.unwrap().is_empty());
}

pub async fn a_secret_is_bound_to_its_user<S: TokenStore>(store: S) {
    let token = issue(&store, "o-alice", &IssueOptions::new(LONG)).await;
    let secret = token.expose().rsplit('.').next().unwrap();
    for forged in [
        format!("demo.o-mallory.{secret}"),
        format!("other.o-alice.{secret}"),
    ] {
        let forged: Token = forged.parse().unwrap();
        assert!(!live(&store, &forged).await, "{forged:?}");
    }
    assert!(
        !store
            .revoke_hash(&sku(), "o-mallory", &token.hash())
            .await
            .unwrap(),
        "revoking another user's token by hash"
    );
    assert!(live(&store, &token).await);
}

pub async fn tokens_expire<S: TokenStore>(store: S) {
    let options = IssueOptions::new(Duration::from_millis(300));
    let token = issue(&store, "o-brief", &options).await;
    assert!(live(&store, &token).await);
    assert_eq!(store.list(&sku(), "o-brief").await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(!live(&store, &token).await);
    assert!(store.list(&sku(), "o-brief").await.unwrap().is_empty());
    assert!(rotate(&store, &token, &options).await.is_none());
    assert!(!store.revoke(&token.parsed()).await.unwrap());
}

pub async fn device_limit_evicts_the_oldest<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_max_tokens_per_user(3);
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(issue(&store, "o-many", &options).await);
        // Distinct issue times make "oldest" well defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(live(&store, token).await, i >= 2, "token {i}");
    }
    let listed: Vec<TokenHash> = store
        .list(&sku(), "o-many")
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.hash)
        .collect();
    let expected: Vec<TokenHash> = tokens[2..].iter().map(Token::hash).collect();
    assert_eq!(listed, expected, "soonest to expire first");
}

pub async fn list_reports_times_and_devices<S: TokenStore>(store: S) {
    let phone = issue(
        &store,
        "o-dev",
        &IssueOptions::new(LONG).with_device("iPhone|15"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let bare = issue(&store, "o-dev", &IssueOptions::new(LONG)).await;
    let list = store.list(&sku(), "o-dev").await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].hash, phone.hash());
    assert_eq!(list[0].device.as_deref(), Some("iPhone|15"));
    assert_eq!(list[1].hash, bare.hash());
    assert_eq!(list[1].device, None);
    for info in &list {
        assert_eq!(info.expires_at_ms - info.issued_at_ms, 600_000);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(info.issued_at_ms.abs_diff(now) < 5_000, "clock skew");
    }
}

pub async fn revoke_all_is_per_user_and_sku<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG);
    let mine = [
        issue(&store, "o-out", &options).await,
        issue(&store, "o-out", &options).await,
        issue(&store, "o-out", &options).await,
    ];
    let neighbour = issue(&store, "o-stay", &options).await;
    let other_sku = Sku::new("other").unwrap();
    let elsewhere = Token::generate(&other_sku, "o-out").unwrap();
    store.issue(&elsewhere, &options).await.unwrap();

    assert_eq!(store.revoke_all(&sku(), "o-out").await.unwrap(), 3);
    for token in &mine {
        assert!(!live(&store, token).await);
    }
    assert!(live(&store, &neighbour).await);
    assert!(live(&store, &elsewhere).await);
    assert!(store.list(&sku(), "o-out").await.unwrap().is_empty());
    assert_eq!(store.list(&other_sku, "o-out").await.unwrap().len(), 1);
    assert_eq!(store.revoke_all(&sku(), "o-out").await.unwrap(), 0);
}

pub async fn rotate_replaces_and_keeps_the_device<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_device("Pixel");
    let old = issue(&store, "o-rot", &options).await;
    let (successor, info) = rotate(&store, &old, &IssueOptions::new(LONG))
        .await
        .expect("live token rotates");
    assert_ne!(successor.expose(), old.expose());
    assert_eq!(successor.open_id(), "o-rot");
    assert_eq!(info.hash, successor.hash());
    assert_eq!(info.device.as_deref(), Some("Pixel"));
    assert!(info.expires_at_ms > info.issued_at_ms);
    assert!(!live(&store, &old).await);
    assert!(live(&store, &successor).await);
    assert!(rotate(&store, &old, &options).await.is_none());
    let list = store.list(&sku(), "o-rot").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].hash, successor.hash());
}

pub async fn concurrent_rotations_have_one_winner<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG);
    let old = issue(&store, "o-race", &options).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, old, options) = (store.clone(), old.clone(), options.clone());
            tokio::spawn(async move { rotate(&store, &old, &options).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(issued) = task.await.unwrap() {
            winners.push(issued);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    assert!(live(&store, &winners[0].0).await);
    let list = store.list(&sku(), "o-race").await.unwrap();
    assert_eq!(list.len(), 1);
}

pub async fn concurrent_issues_respect_the_limit<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_max_tokens_per_user(5);
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let (store, options) = (store.clone(), options.clone());
            tokio::spawn(async move {
                let token = Token::generate(&sku(), "o-crowd").unwrap();
                store.issue(&token, &options).await.unwrap();
                token
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    let mut live_count = 0;
    for token in &tokens {
        live_count += usize::from(live(&store, token).await);
    }
    assert_eq!(live_count, 5);
    let listed: HashSet<TokenHash> = store
        .list(&sku(), "o-crowd")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.hash)
        .collect();
    assert_eq!(listed.len(), 5);
    for token in &tokens {
        assert_eq!(listed.contains(&token.hash()), live(&store, token).await);
    }
}

/// How long the retry-grace cases give themselves.
const GRACE: Duration = Duration::from_secs(10);

pub async fn evictions_are_reported<S: TokenStore>(store: S) {
    let single = IssueOptions::new(LONG).with_max_tokens_per_user(1);
    let first = issue(&store, "o-evict", &single).await;
    let second = Token::generate(&sku(), "o-evict").unwrap();
    let issued = store.issue(&second, &single).await.unwrap();
    assert_eq!(issued.evicted, vec![first.hash()]);
    assert_eq!(issued.info.hash, second.hash());
    assert_eq!(issued.info.session_started_at_ms, issued.info.issued_at_ms);
    assert!(!live(&store, &first).await);
    // Without a grace nothing is kept aside: undoing the issue restores nothing.
    assert!(store.undo_issue(&second.parsed()).await.unwrap().is_empty());
    assert!(!live(&store, &first).await);
    assert!(!live(&store, &second).await, "taken back");
}

pub async fn a_rotated_out_token_rotates_once_more_within_the_grace<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG)
        .with_device("Pixel")
        .with_retry_grace(GRACE);
    let old = issue(&store, "o-retry", &options).await;
    let lost = Token::successor_of(&old.parsed()).unwrap();
    let first = store
        .rotate(&old.parsed(), &lost, &options)
        .await
        .unwrap()
        .expect("a live token rotates");
    assert!(first.evicted.is_empty());
    assert!(!live(&store, &old).await, "rotated out: not live");
    assert!(live(&store, &lost).await);

    // The answer was lost; the client retries with the old token.
    let retried = Token::successor_of(&old.parsed()).unwrap();
    let second = store
        .rotate(&old.parsed(), &retried, &options)
        .await
        .unwrap()
        .expect("the rotated-out token rotates once more within the grace");
    assert_eq!(
        second.evicted,
        vec![lost.hash()],
        "the lost successor gives way"
    );
    assert_eq!(second.info.device.as_deref(), Some("Pixel"));
    assert_eq!(
        second.info.session_started_at_ms,
        first.info.session_started_at_ms
    );
    assert!(!live(&store, &lost).await);
    assert!(live(&store, &retried).await);
    assert!(!live(&store, &old).await);

    // Once more only.
    assert!(rotate(&store, &old, &options).await.is_none());
    assert!(rotate(&store, &lost, &options).await.is_none());
    let list = store.list(&sku(), "o-retry").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].hash, retried.hash());
    // A rotated-out token is no device, and revoking it revokes nothing live.
    assert!(!store.revoke(&old.parsed()).await.unwrap());
    assert!(live(&store, &retried).await);
}

pub async fn the_retry_grace_ends<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_retry_grace(Duration::from_millis(300));
    let old = issue(&store, "o-late", &options).await;
    let (successor, _) = rotate(&store, &old, &options).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        rotate(&store, &old, &options).await.is_none(),
        "past the grace the old token is dead"
    );
    assert!(live(&store, &successor).await, "and the successor stays");
}

pub async fn concurrent_rotations_within_a_grace_leave_one_live_successor<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_retry_grace(GRACE);
    let old = issue(&store, "o-race-grace", &options).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, old, options) = (store.clone(), old.clone(), options.clone());
            tokio::spawn(async move { rotate(&store, &old, &options).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some((successor, _)) = task.await.unwrap() {
            winners.push(successor);
        }
    }
    assert!(
        (1..=2).contains(&winners.len()),
        "one rotation, and at most one more: {}",
        winners.len()
    );
    let mut alive = Vec::new();
    for successor in &winners {
        if live(&store, successor).await {
            alive.push(successor);
        }
    }
    assert_eq!(alive.len(), 1, "exactly one successor lives");
    let list = store.list(&sku(), "o-race-grace").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].hash, alive[0].hash());
}

pub async fn an_undone_issue_restores_the_devices_it_evicted<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG)
        .with_max_tokens_per_user(2)
        .with_retry_grace(GRACE);
    let a = issue(&store, "o-undo", &options).await;
    let b = issue(&store, "o-undo", &options.clone().with_device("tablet")).await;
    let phantom = Token::generate(&sku(), "o-undo").unwrap();
    let issued = store.issue(&phantom, &options).await.unwrap();
    assert_eq!(issued.evicted, vec![a.hash()]);
    assert!(!live(&store, &a).await, "evicted");
    assert_eq!(store.list(&sku(), "o-undo").await.unwrap().len(), 2);

    let restored = store.undo_issue(&phantom.parsed()).await.unwrap();
    assert_eq!(restored, vec![a.hash()]);
    assert!(live(&store, &a).await, "restored");
    assert!(live(&store, &b).await);
    assert!(!live(&store, &phantom).await, "taken back");
    let list = store.list(&sku(), "o-undo").await.unwrap();
    let hashes: HashSet<TokenHash> = list.iter().map(|i| i.hash).collect();
    assert_eq!(hashes, HashSet::from([a.hash(), b.hash()]));
    assert_eq!(
        list.iter()
            .find(|i| i.hash == b.hash())
            .unwrap()
            .device
            .as_deref(),
        Some("tablet")
    );
    // Undoing twice restores nothing more.
    assert!(
        store
            .undo_issue(&phantom.parsed())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn an_undone_login_that_was_evicted_in_turn_restores_nothing<S: TokenStore>(store: S) {
    let single = IssueOptions::new(LONG)
        .with_max_tokens_per_user(1)
        .with_retry_grace(GRACE);
    let phone = issue(&store, "o-undo-chain", &single).await;
    let phantom = issue(&store, "o-undo-chain", &single).await;
    let retry = issue(&store, "o-undo-chain", &single).await;
    // The retried login took the phantom's slot: undoing the phantom must not bring the
    // phone back beside it, past the limit.
    assert!(
        store
            .undo_issue(&phantom.parsed())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!live(&store, &phone).await);
    assert!(!live(&store, &phantom).await);
    assert!(live(&store, &retry).await);
    assert_eq!(store.list(&sku(), "o-undo-chain").await.unwrap().len(), 1);
    // Nor does undoing the retry later bring the phantom back.
    let restored = store.undo_issue(&retry.parsed()).await.unwrap();
    assert!(!restored.contains(&phantom.hash()), "{restored:?}");
    assert!(!live(&store, &phantom).await);
}

pub async fn an_issue_arriving_after_its_undo_writes_nothing<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_retry_grace(GRACE);
    let token = Token::generate(&sku(), "o-late-issue").unwrap();
    assert!(store.undo_issue(&token.parsed()).await.unwrap().is_empty());
    assert!(
        store.issue(&token, &options).await.is_err(),
        "the undone token is never written"
    );
    assert!(!live(&store, &token).await);
    assert!(store.list(&sku(), "o-late-issue").await.unwrap().is_empty());
}

pub async fn an_evicted_token_refreshed_is_not_restored_later<S: TokenStore>(store: S) {
    let single = IssueOptions::new(LONG)
        .with_max_tokens_per_user(1)
        .with_retry_grace(GRACE);
    let phone = issue(&store, "o-evicted-refresh", &single).await;
    let phantom = issue(&store, "o-evicted-refresh", &single).await;
    // The phone, evicted, tries to refresh: refused, and forgotten.
    assert!(rotate(&store, &phone, &single).await.is_none());
    assert!(
        store
            .undo_issue(&phantom.parsed())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !live(&store, &phone).await,
        "its client was told it is gone"
    );
}

pub async fn undo_after_the_grace_restores_nothing<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG)
        .with_max_tokens_per_user(1)
        .with_retry_grace(Duration::from_millis(300));
    let a = issue(&store, "o-undo-late", &options).await;
    let b = issue(&store, "o-undo-late", &options).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(store.undo_issue(&b.parsed()).await.unwrap().is_empty());
    assert!(!live(&store, &a).await);
    assert!(!live(&store, &b).await);
    assert!(store.list(&sku(), "o-undo-late").await.unwrap().is_empty());
}

pub async fn sessions_keep_their_start_and_end_at_their_maximum_age<S: TokenStore>(store: S) {
    let max_age = Duration::from_millis(800);
    let options = IssueOptions::new(LONG).with_max_session_age(max_age);
    let token = Token::generate(&sku(), "o-session").unwrap();
    let login = store.issue(&token, &options).await.unwrap().info;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (successor, info) = rotate(&store, &token, &options).await.unwrap();
    assert_eq!(
        info.session_started_at_ms, login.issued_at_ms,
        "the login's time"
    );
    assert!(info.issued_at_ms > login.issued_at_ms);
    assert_eq!(
        info.expires_at_ms,
        login.issued_at_ms + max_age.as_millis() as u64,
        "no token outlives its session"
    );
    let listed = store.list(&sku(), "o-session").await.unwrap();
    assert_eq!(listed[0].session_started_at_ms, login.issued_at_ms);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!live(&store, &successor).await, "the session ended");
    assert!(rotate(&store, &successor, &options).await.is_none());
}

pub async fn a_sign_out_says_why_for_its_notice<S: TokenStore>(store: S) {
    let options = IssueOptions::new(LONG).with_max_tokens_per_user(5);
    let mine = [
        issue(&store, "o-banned", &options).await,
        issue(&store, "o-banned", &options).await,
    ];
    let neighbour = issue(&store, "o-fine", &options).await;
    let reason = SignOutReason::new("account_suspended").unwrap();
    let notice = Duration::from_millis(600);
    let signed_out = store.sign_out(&sku(), "o-banned", &reason, notice).await;
    assert_eq!(signed_out.unwrap(), 2);
    for token in &mine {
        let status = store.validate(&token.parsed()).await.unwrap();
        assert_eq!(status, TokenStatus::SignedOut(reason.clone()));
        assert!(
            rotate(&store, token, &options).await.is_none(),
            "no refresh"
        );
        // The refused refresh leaves the notice for the requests that follow.
        let status = store.validate(&token.parsed()).await.unwrap();
        assert_eq!(status, TokenStatus::SignedOut(reason.clone()));
    }
    assert!(live(&store, &neighbour).await, "another user stays");
    assert!(store.list(&sku(), "o-banned").await.unwrap().is_empty());
    assert_eq!(
        store
            .sign_out(&sku(), "o-banned", &reason, notice)
            .await
            .unwrap(),
        0
    );

    // A new login works at once, and its token is not signed out.
    let again = issue(&store, "o-banned", &options).await;
    assert!(live(&store, &again).await);
    tokio::time::sleep(notice + Duration::from_millis(100)).await;
    for token in &mine {
        let status = store.validate(&token.parsed()).await.unwrap();
        assert_eq!(status, TokenStatus::Unknown, "the notice ended");
    }
    assert!(live(&store, &again).await);
}

pub async fn a_notice_never_outlives_its_token<S: TokenStore>(store: S) {
    let short = issue(
        &store,
        "o-short",
        &IssueOptions::new(Duration::from_millis(400)),
    )
    .await;
    let reason = SignOutReason::new("password_changed").unwrap();
    let signed_out = store
        .sign_out(&sku(), "o-short", &reason, Duration::from_secs(3600))
        .await;
    assert_eq!(signed_out.unwrap(), 1);
    let status = store.validate(&short.parsed()).await.unwrap();
    assert_eq!(status, TokenStatus::SignedOut(reason));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = store.validate(&short.parsed()).await.unwrap();
    assert_eq!(status, TokenStatus::Unknown, "past the token's own expiry");
}

pub async fn live_tokens_report_their_expiry<S: TokenStore>(store: S) {
    let token = issue(&store, "o-expiry", &IssueOptions::new(LONG)).await;
    let listed = store.list(&sku(), "o-expiry").await.unwrap();
    let status = store.validate(&token.parsed()).await.unwrap();
    assert_eq!(
        status,
        TokenStatus::Live {
            expires_at_ms: listed[0].expires_at_ms
        }
    );
}

/// One `#[tokio::test]` per case, each on a store made by `$make`.
macro_rules! store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            store_suite!(@cases $make;
                issue_validate_revoke,
                a_secret_is_bound_to_its_user,
                tokens_expire,
                device_limit_evicts_the_oldest,
                list_reports_times_and_devices,
                revoke_all_is_per_user_and_sku,
                rotate_replaces_and_keeps_the_device,
                concurrent_rotations_have_one_winner,
                concurrent_issues_respect_the_limit,
                evictions_are_reported,
                a_rotated_out_token_rotates_once_more_within_the_grace,
                the_retry_grace_ends,
                concurrent_rotations_within_a_grace_leave_one_live_successor,
                an_undone_issue_restores_the_devices_it_evicted,
                undo_after_the_grace_restores_nothing,
                an_undone_login_that_was_evicted_in_turn_restores_nothing,
                an_issue_arriving_after_its_undo_writes_nothing,
                an_evicted_token_refreshed_is_not_restored_later,
                sessions_keep_their_start_and_end_at_their_maximum_age,
                a_sign_out_says_why_for_its_notice,
                a_notice_never_outlives_its_token,
                live_tokens_report_their_expiry,
            );
        }
    };
    (@cases $make:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::store_suite::$case($make).await;
            }
        )*
    };
}

/// Rotates `old` into a successor drawn as `MpAuth` draws one: the successor and what
/// the store recorded, or `None` if `old` was not live.
pub async fn rotate<S: TokenStore>(
    store: &S,
    old: &Token,
    options: &IssueOptions,
) -> Option<(Token, TokenInfo)> {
    let successor = Token::successor_of(&old.parsed()).unwrap();
    let issued = store
        .rotate(&old.parsed(), &successor, options)
        .await
        .unwrap()?;
    Some((successor, issued.info))
}
