//! Rate limits and brute-force lockouts over the ephemeral store, shared by every node when
//! it is Redis.
//!
//! A limit counts requests in a fixed window. A lockout counts failures in a window; from the
//! threshold on, each further failure locks the key for twice as long as the one before
//! (30 s, 60 s, … up to an hour), and a locked key is refused before any secret is checked.

use std::time::Duration;

use gatehouse_engine::Result;

use crate::cache::ephemeral::Ephemeral;

/// Failures within [`FAILURE_WINDOW`] before a lockout.
pub const FAILURE_THRESHOLD: u64 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(900);
const FIRST_LOCK_SECS: u64 = 30;
const MAX_LOCK_SECS: u64 = 3600;

/// Counts a request against `limit` per minute for `key`; `Some(retry_after_secs)` when over.
pub async fn over_rate(kv: &dyn Ephemeral, key: &str, limit: u64) -> Result<Option<u64>> {
    if limit == 0 {
        return Ok(None);
    }
    let n = kv
        .incr(&format!("rate:{key}"), Duration::from_secs(60))
        .await?;
    Ok((n > limit).then_some(60))
}

/// Whether any of `keys` is locked out, read in one round trip; `Some(retry_after_secs)` of
/// the longest lock if so.
pub async fn locked_any(kv: &dyn Ephemeral, keys: &[&str]) -> Result<Option<u64>> {
    let names: Vec<String> = keys.iter().map(|k| format!("lock:{k}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let now = chrono::Utc::now().timestamp();
    Ok(kv
        .get_many(&names)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|until| until.parse::<i64>().ok())
        .map(|until| until - now)
        .filter(|left| *left > 0)
        .max()
        .map(|left| left as u64))
}

/// Counts a failure for `key`, locking it once failures reach the threshold.
pub async fn failed(kv: &dyn Ephemeral, key: &str) -> Result<()> {
    let n = kv.incr(&format!("fail:{key}"), FAILURE_WINDOW).await?;
    if n >= FAILURE_THRESHOLD {
        let doublings = (n - FAILURE_THRESHOLD).min(16) as u32;
        let secs = (FIRST_LOCK_SECS << doublings).min(MAX_LOCK_SECS);
        let until = chrono::Utc::now().timestamp() + secs as i64;
        kv.put(
            &format!("lock:{key}"),
            &until.to_string(),
            Duration::from_secs(secs),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cache::ephemeral::InProcess;

    #[tokio::test]
    async fn failures_lock_with_growing_backoff() {
        let kv = InProcess::default();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            failed(&kv, "k").await.unwrap();
        }
        assert_eq!(locked_any(&kv, &["k"]).await.unwrap(), None);
        failed(&kv, "k").await.unwrap();
        let first = locked_any(&kv, &["k"]).await.unwrap().unwrap();
        assert!(
            (FIRST_LOCK_SECS - 1..=FIRST_LOCK_SECS).contains(&first),
            "{first}"
        );
        failed(&kv, "k").await.unwrap();
        let second = locked_any(&kv, &["k"]).await.unwrap().unwrap();
        assert!(second > first, "{second} after {first}");
        assert_eq!(locked_any(&kv, &["other"]).await.unwrap(), None);
        let any = locked_any(&kv, &["other", "k"]).await.unwrap().unwrap();
        assert!(
            (second.saturating_sub(1)..=second).contains(&any),
            "{any} {second}"
        );
        assert_eq!(locked_any(&kv, &["other", "else"]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rates_count_per_key_and_zero_is_no_limit() {
        let kv = InProcess::default();
        assert_eq!(over_rate(&kv, "a", 2).await.unwrap(), None);
        assert_eq!(over_rate(&kv, "a", 2).await.unwrap(), None);
        assert_eq!(over_rate(&kv, "a", 2).await.unwrap(), Some(60));
        assert_eq!(over_rate(&kv, "b", 2).await.unwrap(), None);
        for _ in 0..10 {
            assert_eq!(over_rate(&kv, "c", 0).await.unwrap(), None);
        }
    }
}
