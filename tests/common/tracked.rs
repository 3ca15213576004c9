//! The tracked validation cache in tests: waiting until it answers from memory, and
//! until a token revoked elsewhere is refused by it.

use std::time::{Duration, Instant};

use mpauthx::{CachedTokenStore, RedisTokenStore, Token, TokenStore};

/// Waits until `tracked` answers from memory (its tracking is up), at most `within`.
pub async fn answering(tracked: &CachedTokenStore<RedisTokenStore>, within: Duration) {
    let deadline = Instant::now() + within;
    while !tracked.is_answering() {
        assert!(Instant::now() < deadline, "the tracking did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `tracked` refuses `token`; fails if that takes longer than `within` from
/// `since`, or if the store cannot answer. Returns how long it took.
pub async fn refused_within(
    tracked: &CachedTokenStore<RedisTokenStore>,
    token: &Token,
    since: Instant,
    within: Duration,
) -> Duration {
    loop {
        match tracked.validate(&token.parsed()).await {
            Ok(status) if !status.is_live() => return since.elapsed(),
            Ok(_) => assert!(
                since.elapsed() < within,
                "still live {:?} after the change",
                since.elapsed()
            ),
            Err(e) => panic!("no answer: {e}"),
        }
        tokio::task::yield_now().await;
    }
}
