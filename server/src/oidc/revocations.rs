//! Revoked access tokens (by `jti`) and refresh token families, held in memory so that
//! checking a token reads no database: revocations made on this node count at once, those of
//! other nodes within [`REFRESH_EVERY`], when the set is reloaded from the database
//! (`Identity::spawn_refresh`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
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
    jtis: HashSet<String>,
    families: HashSet<String>,
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
        s.jtis.contains(jti) || s.noted_jtis.contains_key(jti)
    }

    pub fn family_revoked(&self, id: &str) -> bool {
        let s = self.read();
        s.families.contains(id) || s.noted_families.contains_key(id)
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
        let jtis: HashSet<String> = self
            .store
            .live_revocations(now)
            .await?
            .into_iter()
            .collect();
        let families: HashSet<String> = self
            .store
            .revoked_families(now)
            .await?
            .into_iter()
            .collect();
        let mut s = self.write();
        s.jtis = jtis;
        s.families = families;
        let fresh = |at: &mut Instant| at.elapsed() < NOTED_FOR;
        s.noted_jtis.retain(|_, at| fresh(at));
        s.noted_families.retain(|_, at| fresh(at));
        Ok(())
    }
}
