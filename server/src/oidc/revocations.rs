//! Revoked access tokens (by `jti`) and refresh token families, held in memory so that
//! checking a token reads no database: revocations made on this node count at once, those of
//! other nodes within [`REFRESH_EVERY`], when the set is reloaded from the database
//! (`Identity::spawn_refresh`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gatehouse_engine::Result;

use crate::db::SqlStore;

/// How often the set is reloaded from the database.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How long a revocation noted on this node is kept beside the reloaded set: longer than a
/// reload takes, so that a reload that read the database just before the revocation
/// committed does not forget it.
const NOTED_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Sets {
    /// Revoked `jti`s and families, with when they expire (and drop out).
    jtis: HashMap<String, DateTime<Utc>>,
    families: HashMap<String, DateTime<Utc>>,
    /// Revocations made on this node lately, and when.
    noted_jtis: HashMap<String, Instant>,
    noted_families: HashMap<String, Instant>,
}

/// The live revocations.
#[derive(Debug)]
pub struct Revocations {
    store: Arc<SqlStore>,
    sets: RwLock<Sets>,
}

impl Revocations {
    /// Loads the set; `Identity::spawn_refresh` keeps it current.
    pub async fn load(store: Arc<SqlStore>) -> Result<Arc<Self>> {
        let r = Arc::new(Self {
            store,
            sets: RwLock::new(Sets::default()),
        });
        r.reload().await?;
        Ok(r)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sets> {
        self.sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sets> {
        self.sets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn jti_revoked(&self, jti: &str) -> bool {
        let s = self.read();
        s.jtis.contains_key(jti) || s.noted_jtis.contains_key(jti)
    }

    pub fn family_revoked(&self, id: &str) -> bool {
        let s = self.read();
        s.families.contains_key(id) || s.noted_families.contains_key(id)
    }

    /// Counts a revocation made (committed) on this node at once.
    pub fn note_jti(&self, jti: &str) {
        self.write()
            .noted_jtis
            .insert(jti.to_string(), Instant::now());
    }

    pub fn note_family(&self, id: &str) {
        self.write()
            .noted_families
            .insert(id.to_string(), Instant::now());
    }

    /// Replaces the sets by what the database holds (what expired drops out).
    pub async fn reload(&self) -> Result<()> {
        let now = Utc::now();
        let jtis = self.store.live_revocations(now, None).await?;
        let families = self.store.revoked_families(now, None).await?;
        let mut s = self.write();
        s.jtis = jtis.into_iter().collect();
        s.families = families.into_iter().collect();
        prune(&mut s, now);
        Ok(())
    }

    /// Adds what was revoked at or after `since` (the database's newer rows only), and drops
    /// what expired.
    pub async fn catch_up(&self, since: DateTime<Utc>) -> Result<()> {
        let now = Utc::now();
        let jtis = self.store.live_revocations(now, Some(since)).await?;
        let families = self.store.revoked_families(now, Some(since)).await?;
        let mut s = self.write();
        s.jtis.extend(jtis);
        s.families.extend(families);
        prune(&mut s, now);
        Ok(())
    }

    /// How many revocations are held (tokens, families).
    pub fn len(&self) -> (usize, usize) {
        let s = self.read();
        (s.jtis.len(), s.families.len())
    }
}

/// Drops expired revocations and notes older than [`NOTED_FOR`].
fn prune(s: &mut Sets, now: DateTime<Utc>) {
    s.jtis.retain(|_, exp| *exp > now);
    s.families.retain(|_, exp| *exp > now);
    let fresh = |at: &mut Instant| at.elapsed() < NOTED_FOR;
    s.noted_jtis.retain(|_, at| fresh(at));
    s.noted_families.retain(|_, at| fresh(at));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::db::tests::with_sqlite;

    /// A catch-up reads only what was revoked since its mark, keeps what it held, and drops
    /// what expired; a full reload reads everything live.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catching_up_reads_only_newer_revocations() {
        with_sqlite(|url| async move {
            let store = Arc::new(SqlStore::connect(&url).await.unwrap());
            let now = Utc::now();
            let hour = chrono::Duration::hours(1);
            store.revoke_token("old", now + hour).await.unwrap();
            let r = Revocations::load(store.clone()).await.unwrap();
            assert!(r.jti_revoked("old"));
            let mark = Utc::now();
            store.revoke_token("new", now + hour).await.unwrap();
            store
                .revoke_token("brief", Utc::now() + chrono::Duration::milliseconds(300))
                .await
                .unwrap();
            // Written on another node: unknown here until read.
            assert!(!r.jti_revoked("new"));
            r.catch_up(mark).await.unwrap();
            assert!(r.jti_revoked("new") && r.jti_revoked("brief") && r.jti_revoked("old"));
            assert_eq!(r.len().0, 3);
            // A mark after every write reads nothing new and forgets nothing live.
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            r.catch_up(Utc::now()).await.unwrap();
            assert!(r.jti_revoked("new") && r.jti_revoked("old"));
            assert!(!r.jti_revoked("brief"), "an expired revocation is kept");
            assert_eq!(r.len().0, 2);
            r.reload().await.unwrap();
            assert_eq!(r.len().0, 2);
        })
        .await;
    }
}
