//! The cross-request cache of check sub-results.
//!
//! Keys carry the store, model id, revision and a hash of the request's contextual tuples and
//! context, so an entry can never answer for another snapshot: a write moves the store to a new
//! revision and later queries simply miss. An answer that rests on a tuple with an expiry
//! carries the earliest such expiry and is not served from then on. Entries age out by
//! capacity and time-to-live.

use std::time::Duration;

/// A bounded cache of sub-problem answers.
#[derive(Clone)]
pub struct CheckCache {
    /// The answer and until when it holds (µs since the epoch; `i64::MAX`: no expiry).
    inner: moka::sync::Cache<String, (bool, i64)>,
}

impl std::fmt::Debug for CheckCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl CheckCache {
    /// A cache holding at most `capacity` answers, each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            inner: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The answer for `key` if it still holds at `now` (µs), and until when it does.
    pub(crate) fn get(&self, key: &str, now: i64) -> Option<(bool, i64)> {
        self.inner.get(key).filter(|&(_, until)| until > now)
    }

    /// Keeps an answer that holds until `until` (µs; `None`: until the next write).
    pub(crate) fn insert(&self, key: String, allowed: bool, until: Option<i64>) {
        self.inner.insert(key, (allowed, until.unwrap_or(i64::MAX)));
    }

    /// Drops every entry of a store (after the store is deleted).
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    /// Number of entries (approximate).
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    /// Whether the cache holds nothing (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
