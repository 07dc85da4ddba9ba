//! Rate limits and brute-force lockouts over the ephemeral store, shared by every node when
//! it is Redis.
//!
//! A limit counts requests in a fixed window. A lockout counts failures in a window (so they
//! decay: a failure is forgotten when its window ends); from the threshold on, each further
//! failure locks the key for twice as long as the one before (30 s, 60 s, … up to an hour),
//! and a locked key is refused before any secret is checked. Lockouts are keyed by what was
//! guessed *and* the address guessing it, so that nobody can lock the owner of an account or
//! a client out from an address of their own.

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
    failed_after(kv, key, FAILURE_THRESHOLD).await
}

/// Forgets the failures of `key` (a success), so that earlier ones do not add up with later
/// ones.
pub async fn succeeded(kv: &dyn Ephemeral, key: &str) -> Result<()> {
    kv.delete(&format!("fail:{key}")).await
}

/// Like [`failed`], locking from `threshold` failures within the window.
pub async fn failed_after(kv: &dyn Ephemeral, key: &str, threshold: u64) -> Result<()> {
    failed_within(kv, key, threshold, FAILURE_WINDOW).await
}

/// Like [`failed_after`], with failures forgotten `window` after the first of them.
async fn failed_within(
    kv: &dyn Ephemeral,
    key: &str,
    threshold: u64,
    window: Duration,
) -> Result<()> {
    let n = kv.incr(&format!("fail:{key}"), window).await?;
    if n >= threshold {
        let doublings = (n - threshold).min(16) as u32;
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

/// Requests per second each tenant API key may make to this node (a token bucket holding a
/// second's worth): one tenant's flood of checks or management calls takes its own share of
/// the node, not everyone's. Counted in process, so that the check path pays no round trip;
/// a deployment of `n` nodes allows up to `n` times the rate.
pub struct KeyRate {
    per_second: u64,
    buckets:
        moka::sync::Cache<[u8; 32], std::sync::Arc<std::sync::Mutex<(f64, std::time::Instant)>>>,
}

impl KeyRate {
    /// `per_second` requests per key (0: no limit).
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    /// Takes one request of `key`'s (a digest) budget; false when it has none left now.
    pub fn allow(&self, key: &[u8; 32]) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let cap = self.per_second as f64;
        let bucket = self.buckets.get_with(*key, || {
            std::sync::Arc::new(std::sync::Mutex::new((cap, std::time::Instant::now())))
        });
        let Ok(mut b) = bucket.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * cap;
        b.0 = (b.0 + refill).min(cap);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
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

    /// Failures decay: those of an ended window do not add up with later ones, so one wrong
    /// guess now and then never locks anyone (here with a window of a second instead of 15
    /// minutes, in process and in Redis).
    async fn failures_decay(kv: &dyn Ephemeral) {
        let window = Duration::from_millis(1000);
        for _ in 0..FAILURE_THRESHOLD - 1 {
            failed_within(kv, "d", FAILURE_THRESHOLD, window)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..FAILURE_THRESHOLD - 1 {
            failed_within(kv, "d", FAILURE_THRESHOLD, window)
                .await
                .unwrap();
        }
        assert_eq!(
            locked_any(kv, &["d"]).await.unwrap(),
            None,
            "failures of an ended window counted"
        );
        // Within one window they do add up.
        failed_within(kv, "d", FAILURE_THRESHOLD, window)
            .await
            .unwrap();
        assert!(locked_any(kv, &["d"]).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn failures_decay_in_process() {
        failures_decay(&InProcess::default()).await;
    }

    #[tokio::test]
    async fn failures_decay_in_redis() {
        let prefix = format!("test-limits-{}", ulid::Ulid::new());
        let kv = crate::cache::ephemeral::InRedis::connect("redis://127.0.0.1:6379", &prefix)
            .await
            .unwrap();
        failures_decay(&kv).await;
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

    #[test]
    fn a_key_gets_its_rate_and_no_more() {
        let r = KeyRate::new(5);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let allowed = (0..20).filter(|_| r.allow(&a)).count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        // Another key has its own budget.
        assert!(r.allow(&b));
        assert!(KeyRate::new(0).allow(&a));
    }
}
