//! Short-lived shared state: login sessions, pending authorization requests, authorization
//! codes and rate-limit counters. In Redis when it is configured (shared by every node), in
//! process otherwise (the embedded default, one node).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatehouse_engine::{Error, Result};

/// A key-value space with expiry.
#[async_trait::async_trait]
pub trait Ephemeral: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Option<String>>;
    /// Several keys in one round trip, in the order given.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>>;
    /// Reads and removes `key` at once: of two callers racing, one gets the value.
    async fn take(&self, key: &str) -> Result<Option<String>>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Adds one to a counter that lives `ttl` from its first increment; returns the count.
    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64>;
    /// Adds `member` to a set, which then lives at least `ttl`.
    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<()>;
    async fn set_remove(&self, set: &str, member: &str) -> Result<()>;
    async fn set_members(&self, set: &str) -> Result<Vec<String>>;
}

#[derive(Debug)]
enum Value {
    Text(String),
    Count(u64),
    Set(HashSet<String>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Instant,
}

/// Sweep expired entries after this many writes.
const SWEEP_EVERY: u64 = 1024;

/// Most entries the in-process space holds: past it (after a sweep of the expired ones) a new
/// entry is refused, so that a flood of anonymous requests cannot take the process's memory.
const MAX_ENTRIES: usize = 500_000;

/// The in-process implementation.
#[derive(Debug, Default)]
pub struct InProcess {
    entries: Mutex<(HashMap<String, Entry>, u64)>,
}

impl InProcess {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> Result<T> {
        let mut guard = self
            .entries
            .lock()
            .map_err(|_| Error::Unavailable("the session store is poisoned".into()))?;
        let now = Instant::now();
        let (map, writes) = &mut *guard;
        *writes += 1;
        if (*writes).is_multiple_of(SWEEP_EVERY) {
            map.retain(|_, e| e.expires > now);
        }
        Ok(f(map, now))
    }
}

fn live(map: &mut HashMap<String, Entry>, key: &str, now: Instant) -> bool {
    match map.get(key) {
        Some(e) if e.expires > now => true,
        Some(_) => {
            map.remove(key);
            false
        }
        None => false,
    }
}

#[async_trait::async_trait]
impl Ephemeral for InProcess {
    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.with(|m, now| {
            if m.len() >= MAX_ENTRIES && !m.contains_key(key) {
                m.retain(|_, e| e.expires > now);
                if m.len() >= MAX_ENTRIES {
                    return Err(Error::Unavailable(
                        "the session store is full; try again later".into(),
                    ));
                }
            }
            m.insert(
                key.to_string(),
                Entry {
                    value: Value::Text(value.to_string()),
                    expires: now + ttl,
                },
            );
            Ok(())
        })?
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.with(|m, now| {
            if !live(m, key, now) {
                return None;
            }
            match m.get(key).map(|e| &e.value) {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            }
        })
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    async fn take(&self, key: &str) -> Result<Option<String>> {
        self.with(|m, now| {
            if !live(m, key, now) {
                return None;
            }
            match m.remove(key).map(|e| e.value) {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            }
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.with(|m, _| {
            m.remove(key);
        })
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        self.with(|m, now| {
            if !live(m, key, now) {
                m.insert(
                    key.to_string(),
                    Entry {
                        value: Value::Count(0),
                        expires: now + ttl,
                    },
                );
            }
            match m.get_mut(key).map(|e| &mut e.value) {
                Some(Value::Count(n)) => {
                    *n += 1;
                    *n
                }
                _ => 0,
            }
        })
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<()> {
        self.with(|m, now| {
            if !live(m, set, now) {
                m.insert(
                    set.to_string(),
                    Entry {
                        value: Value::Set(HashSet::new()),
                        expires: now + ttl,
                    },
                );
            }
            if let Some(e) = m.get_mut(set) {
                e.expires = e.expires.max(now + ttl);
                if let Value::Set(s) = &mut e.value {
                    s.insert(member.to_string());
                }
            }
        })
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<()> {
        self.with(|m, _| {
            if let Some(Entry {
                value: Value::Set(s),
                ..
            }) = m.get_mut(set)
            {
                s.remove(member);
            }
        })
    }

    async fn set_members(&self, set: &str) -> Result<Vec<String>> {
        self.with(|m, now| {
            if !live(m, set, now) {
                return Vec::new();
            }
            match m.get(set).map(|e| &e.value) {
                Some(Value::Set(s)) => s.iter().cloned().collect(),
                _ => Vec::new(),
            }
        })
    }
}

/// The Redis implementation: every key under `<prefix>:`.
pub struct InRedis {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for InRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl InRedis {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let client = redis::Client::open(url).context("invalid `REDIS_URL`")?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .context("cannot connect to redis")?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(redis_error)
    }

    async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(redis_error)
    }
}

#[async_trait::async_trait]
impl Ephemeral for InRedis {
    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let mut c = redis::cmd("SET");
        c.arg(self.key(key)).arg(value).arg("PX").arg(millis(ttl));
        self.query::<()>(&c).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        let mut c = redis::cmd("GET");
        c.arg(self.key(key));
        self.query(&c).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = redis::cmd("MGET");
        for k in keys {
            c.arg(self.key(k));
        }
        self.query(&c).await
    }

    async fn take(&self, key: &str) -> Result<Option<String>> {
        let mut c = redis::cmd("GETDEL");
        c.arg(self.key(key));
        self.query(&c).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut c = redis::cmd("DEL");
        c.arg(self.key(key));
        self.query::<()>(&c).await
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        let k = self.key(key);
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(&k)
            .arg(0)
            .arg("PX")
            .arg(millis(ttl))
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&k);
        let (n,): (u64,) = self.pipe(&p).await?;
        Ok(n)
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<()> {
        let k = self.key(set);
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SADD")
            .arg(&k)
            .arg(member)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(millis(ttl))
            .arg("GT")
            .ignore()
            // A new set has no expiry for GT to compare with: NX gives it one.
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(millis(ttl))
            .arg("NX")
            .ignore();
        self.pipe::<()>(&p).await
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<()> {
        let mut c = redis::cmd("SREM");
        c.arg(self.key(set)).arg(member);
        self.query::<()>(&c).await
    }

    async fn set_members(&self, set: &str) -> Result<Vec<String>> {
        let mut c = redis::cmd("SMEMBERS");
        c.arg(self.key(set));
        self.query(&c).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    async fn exercise(kv: &dyn Ephemeral) {
        let long = Duration::from_secs(60);
        kv.put("a", "1", long).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(kv.take("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(kv.take("a").await.unwrap(), None);
        kv.put("c", "3", long).await.unwrap();
        kv.put("d", "4", long).await.unwrap();
        assert_eq!(
            kv.get_many(&["c", "missing", "d"]).await.unwrap(),
            vec![Some("3".into()), None, Some("4".into())]
        );
        assert!(kv.get_many(&[]).await.unwrap().is_empty());
        kv.put("b", "2", Duration::from_millis(30)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(kv.get("b").await.unwrap(), None, "expired");
        assert_eq!(kv.incr("n", long).await.unwrap(), 1);
        assert_eq!(kv.incr("n", long).await.unwrap(), 2);
        kv.set_add("s", "x", long).await.unwrap();
        kv.set_add("s", "y", long).await.unwrap();
        let mut m = kv.set_members("s").await.unwrap();
        m.sort();
        assert_eq!(m, vec!["x", "y"]);
        kv.set_remove("s", "x").await.unwrap();
        assert_eq!(kv.set_members("s").await.unwrap(), vec!["y"]);
        kv.delete("n").await.unwrap();
        assert_eq!(
            kv.incr("n", long).await.unwrap(),
            1,
            "a deleted counter restarts"
        );
    }

    #[tokio::test]
    async fn in_process() {
        exercise(&InProcess::default()).await;
    }

    #[tokio::test]
    async fn in_redis() {
        let prefix = format!("test-ephemeral-{}", ulid::Ulid::new());
        let kv = InRedis::connect("redis://127.0.0.1:6379", &prefix)
            .await
            .unwrap();
        exercise(&kv).await;
    }
}
