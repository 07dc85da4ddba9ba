//! The in-memory datastore: the reference implementation of [`Datastore`], used by tests and
//! by `gatehouse model test`.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;

use super::{
    Assertions, ChangeFilter, Datastore, DecisionFilter, EntityAttributes, LoggedDecision,
    Operation, Page, Paged, PolicyVersion, Revision, StoreInfo, StoredRisk, TupleChange,
    TupleFilter, WriteOptions,
};
use crate::error::{Error, Result};
use crate::model::AuthorizationModel;
use crate::tuple::{Tuple, TupleKey};

#[derive(Debug, Clone)]
struct Row {
    /// Increases with every row written, and survives sweeps: what read tokens name.
    seq: u64,
    key: TupleKey,
    created: Revision,
    deleted: Option<Revision>,
    timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default)]
struct StoreData {
    info: Option<StoreInfo>,
    deleted: bool,
    models: BTreeMap<String, AuthorizationModel>,
    /// All tuple versions, in insertion order.
    rows: Vec<Row>,
    /// The `seq` of the next row.
    next_seq: u64,
    /// Live (not deleted) row index by tuple identity.
    live: HashMap<(String, String, String), usize>,
    /// Rows by `object#relation`, for check.
    by_object: HashMap<(String, String), Vec<usize>>,
    /// Rows by user, for reverse lookups.
    by_user: HashMap<String, Vec<usize>>,
    changes: Vec<TupleChange>,
    head: Revision,
    assertions: HashMap<String, Assertions>,
    policies: BTreeMap<String, PolicyVersion>,
    active_policy: Option<String>,
    settings: HashMap<String, serde_json::Value>,
    /// Risk histories with when retention removes them.
    risk: HashMap<String, (StoredRisk, chrono::DateTime<chrono::Utc>)>,
    /// The decision log, by id (ULIDs sort by time).
    decisions: BTreeMap<String, LoggedDecision>,
    attributes: BTreeMap<String, EntityAttributes>,
}

/// A datastore kept entirely in memory; data is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    stores: RwLock<BTreeMap<String, StoreData>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> Error {
    Error::Storage("in-memory store lock poisoned".into())
}

fn visible(row: &Row, rev: Revision) -> bool {
    row.created <= rev && row.deleted.is_none_or(|d| d > rev)
}

fn offset_token(page: &Page) -> Result<usize> {
    match &page.token {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| Error::InvalidContinuationToken),
    }
}

fn paginate<T>(items: Vec<T>, page: &Page) -> Result<Paged<T>> {
    let start = offset_token(page)?;
    if start > items.len() {
        return Err(Error::InvalidContinuationToken);
    }
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    if page.size == 0 || rest.len() <= page.size {
        return Ok(Paged {
            items: rest,
            next: None,
        });
    }
    rest.truncate(page.size);
    Ok(Paged {
        next: Some((start + page.size).to_string()),
        items: rest,
    })
}

/// A live (existing, not deleted) store, for writing.
fn live_mut<'a>(
    stores: &'a mut BTreeMap<String, StoreData>,
    store: &str,
) -> Result<&'a mut StoreData> {
    stores
        .get_mut(store)
        .filter(|s| s.live_store())
        .ok_or_else(|| Error::StoreNotFound(store.into()))
}

impl StoreData {
    fn live_store(&self) -> bool {
        self.info.is_some() && !self.deleted
    }
}

#[async_trait]
impl Datastore for MemoryStore {
    async fn create_store(&self, store: &StoreInfo) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        if stores.contains_key(&store.id) {
            return Err(Error::Validation(format!(
                "store `{}` already exists",
                store.id
            )));
        }
        stores.insert(
            store.id.clone(),
            StoreData {
                info: Some(store.clone()),
                ..Default::default()
            },
        );
        Ok(())
    }

    async fn get_store(&self, id: &str) -> Result<Option<StoreInfo>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(id)
            .filter(|s| s.live_store())
            .and_then(|s| s.info.clone()))
    }

    async fn list_stores(&self, name: Option<&str>, page: &Page) -> Result<Paged<StoreInfo>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let all: Vec<StoreInfo> = stores
            .values()
            .filter(|s| s.live_store())
            .filter_map(|s| s.info.clone())
            .filter(|s| name.is_none_or(|n| n == s.name))
            .collect();
        paginate(all, page)
    }

    async fn delete_store(&self, id: &str) -> Result<bool> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        match stores.get_mut(id) {
            Some(s) if s.live_store() => {
                s.deleted = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn write_model(&self, store: &str, model: &AuthorizationModel) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        s.models.insert(model.id.clone(), model.clone());
        Ok(())
    }

    async fn read_model(&self, store: &str, id: &str) -> Result<Option<AuthorizationModel>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores.get(store).and_then(|s| s.models.get(id)).cloned())
    }

    async fn latest_model(&self, store: &str) -> Result<Option<AuthorizationModel>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(store)
            .and_then(|s| s.models.values().next_back())
            .cloned())
    }

    async fn list_models(&self, store: &str, page: &Page) -> Result<Paged<AuthorizationModel>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let all: Vec<_> = stores
            .get(store)
            .map(|s| s.models.values().rev().cloned().collect())
            .unwrap_or_default();
        paginate(all, page)
    }

    async fn write_tuples(
        &self,
        store: &str,
        deletes: &[TupleKey],
        writes: &[TupleKey],
        opts: WriteOptions,
    ) -> Result<Revision> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        let id = |k: &TupleKey| (k.object.clone(), k.relation.clone(), k.user.clone());
        let now = chrono::Utc::now();
        // A tuple past its expiry no longer exists, though its row may still be kept.
        let exists = |s: &StoreData, k: &TupleKey| {
            s.live
                .get(&id(k))
                .is_some_and(|&i| s.rows[i].key.live_at(now))
        };
        // Validate everything before touching anything: all or nothing.
        let mut deleting = std::collections::HashSet::new();
        for d in deletes {
            if !deleting.insert(id(d)) {
                return Err(Error::Validation(format!(
                    "duplicate tuple in the delete list ({d})"
                )));
            }
            if !exists(s, d) && !opts.ignore_missing {
                return Err(Error::MissingDelete(d.to_string()));
            }
        }
        let mut writing = std::collections::HashSet::new();
        for w in writes {
            if !writing.insert(id(w)) {
                return Err(Error::Validation(format!(
                    "duplicate tuple in the write list ({w})"
                )));
            }
            if exists(s, w) && !deleting.contains(&id(w)) && !opts.ignore_duplicates {
                return Err(Error::DuplicateWrite(w.to_string()));
            }
        }
        let rev = s.head + 1;
        let mut changed = false;
        for d in deletes {
            if !exists(s, d) {
                continue; // an ignored missing delete
            }
            if let Some(idx) = s.live.remove(&id(d)) {
                s.rows[idx].deleted = Some(rev);
                s.changes.push(TupleChange {
                    tuple_key: s.rows[idx].key.clone(),
                    operation: Operation::Delete,
                    timestamp: now,
                    revision: rev,
                });
                changed = true;
            }
        }
        for w in writes {
            if exists(s, w) {
                continue; // an ignored duplicate
            }
            // An expired version still kept gives way to the new one, without a change of its
            // own: it had stopped counting already.
            if let Some(idx) = s.live.remove(&id(w)) {
                s.rows[idx].deleted = Some(rev);
            }
            let idx = s.rows.len();
            s.next_seq += 1;
            s.rows.push(Row {
                seq: s.next_seq,
                key: w.clone(),
                created: rev,
                deleted: None,
                timestamp: now,
            });
            s.live.insert(id(w), idx);
            s.by_object
                .entry((w.object.clone(), w.relation.clone()))
                .or_default()
                .push(idx);
            s.by_user.entry(w.user.clone()).or_default().push(idx);
            s.changes.push(TupleChange {
                tuple_key: w.clone(),
                operation: Operation::Write,
                timestamp: now,
                revision: rev,
            });
            changed = true;
        }
        if changed {
            s.head = rev;
        }
        Ok(s.head)
    }

    async fn head_revision(&self, store: &str) -> Result<Revision> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        stores
            .get(store)
            .map(|s| s.head)
            .ok_or_else(|| Error::StoreNotFound(store.into()))
    }

    async fn read_tuples(
        &self,
        store: &str,
        filter: &TupleFilter,
        rev: Revision,
        page: &Page,
    ) -> Result<Paged<Tuple>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let Some(s) = stores.get(store) else {
            return Ok(Paged {
                items: vec![],
                next: None,
            });
        };
        let to_tuple = |r: &Row| Tuple {
            key: r.key.clone(),
            timestamp: r.timestamp,
        };
        let mut idxs: Vec<usize> = match (&filter.object_type, &filter.object_id, &filter.relation)
        {
            (Some(t), Some(i), Some(r)) => s
                .by_object
                .get(&(format!("{t}:{i}"), r.clone()))
                .cloned()
                .unwrap_or_default(),
            _ if !filter.users.is_empty() => filter
                .users
                .iter()
                .flat_map(|u| s.by_user.get(u).into_iter().flatten().copied())
                .collect(),
            _ => (0..s.rows.len()).collect(),
        };
        idxs.sort_unstable();
        idxs.dedup();
        let now = chrono::Utc::now();
        // Tokens name the last row read, not a position: rows that expire or are swept
        // between pages move nothing.
        let after: u64 = match &page.token {
            None => 0,
            Some(t) => t.parse().map_err(|_| Error::InvalidContinuationToken)?,
        };
        let mut rows = idxs.into_iter().map(|i| &s.rows[i]).filter(|r| {
            r.seq > after && visible(r, rev) && r.key.live_at(now) && filter.matches(&r.key)
        });
        let size = if page.size == 0 {
            usize::MAX
        } else {
            page.size
        };
        let picked: Vec<&Row> = rows.by_ref().take(size).collect();
        let next = match (picked.last(), rows.next()) {
            (Some(last), Some(_)) => Some(last.seq.to_string()),
            _ => None,
        };
        Ok(Paged {
            items: picked.into_iter().map(to_tuple).collect(),
            next,
        })
    }

    async fn read_changes(
        &self,
        store: &str,
        filter: &ChangeFilter,
        page: &Page,
    ) -> Result<Paged<TupleChange>> {
        let object_type = filter.object_type.as_deref();
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let Some(s) = stores.get(store) else {
            return Ok(Paged {
                items: vec![],
                next: None,
            });
        };
        let start = match (&page.token, filter.start_time) {
            // Changes are appended under the store's write lock, so timestamps never decrease.
            (None, Some(t)) => s.changes.partition_point(|c| c.timestamp < t),
            _ => offset_token(page)?,
        };
        if start > s.changes.len() {
            return Err(Error::InvalidContinuationToken);
        }
        let size = if page.size == 0 {
            usize::MAX
        } else {
            page.size
        };
        let mut items = Vec::new();
        let mut pos = start;
        while pos < s.changes.len() && items.len() < size {
            let c = &s.changes[pos];
            pos += 1;
            if object_type.is_none_or(|t| {
                c.tuple_key
                    .object
                    .split_once(':')
                    .is_some_and(|(ot, _)| ot == t)
            }) {
                items.push(c.clone());
            }
        }
        // The token always advances to where reading stopped, so polling resumes there.
        Ok(Paged {
            items,
            next: Some(pos.to_string()),
        })
    }

    async fn write_assertions(
        &self,
        store: &str,
        model_id: &str,
        assertions: &Assertions,
    ) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        s.assertions.insert(model_id.into(), assertions.clone());
        Ok(())
    }

    async fn read_assertions(&self, store: &str, model_id: &str) -> Result<Assertions> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(store)
            .and_then(|s| s.assertions.get(model_id))
            .cloned()
            .unwrap_or(serde_json::Value::Array(vec![])))
    }

    async fn write_policy_version(
        &self,
        store: &str,
        version: &PolicyVersion,
        activate: bool,
    ) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        if s.policies.contains_key(&version.id) {
            return Err(Error::Validation(format!(
                "policy version `{}` already exists",
                version.id
            )));
        }
        s.policies.insert(version.id.clone(), version.clone());
        if activate {
            s.active_policy = Some(version.id.clone());
        }
        Ok(())
    }

    async fn read_policy_version(&self, store: &str, id: &str) -> Result<Option<PolicyVersion>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores.get(store).and_then(|s| s.policies.get(id)).cloned())
    }

    async fn list_policy_versions(&self, store: &str, page: &Page) -> Result<Paged<PolicyVersion>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let all: Vec<_> = stores
            .get(store)
            .map(|s| s.policies.values().rev().cloned().collect())
            .unwrap_or_default();
        paginate(all, page)
    }

    async fn activate_policy_version(&self, store: &str, id: &str) -> Result<bool> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        if !s.policies.contains_key(id) {
            return Ok(false);
        }
        s.active_policy = Some(id.to_string());
        Ok(true)
    }

    async fn active_policy_version(&self, store: &str) -> Result<Option<PolicyVersion>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores.get(store).and_then(|s| {
            s.active_policy
                .as_ref()
                .and_then(|id| s.policies.get(id))
                .cloned()
        }))
    }

    async fn read_setting(&self, store: &str, kind: &str) -> Result<Option<serde_json::Value>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(store)
            .and_then(|s| s.settings.get(kind))
            .cloned())
    }

    async fn write_setting(
        &self,
        store: &str,
        kind: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        live_mut(&mut stores, store)?
            .settings
            .insert(kind.to_string(), value.clone());
        Ok(())
    }

    async fn read_risk_profile(&self, store: &str, subject: &str) -> Result<Option<StoredRisk>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(store)
            .and_then(|s| s.risk.get(subject))
            .map(|(p, _)| p.clone()))
    }

    async fn write_risk_profile(
        &self,
        store: &str,
        subject: &str,
        profile: &serde_json::Value,
        expires_at: chrono::DateTime<chrono::Utc>,
        expected: Option<i64>,
    ) -> Result<bool> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let risk = &mut live_mut(&mut stores, store)?.risk;
        let current = risk.get(subject).map(|(p, _)| p.version);
        if current != expected {
            return Ok(false);
        }
        let stored = StoredRisk {
            profile: profile.clone(),
            version: expected.map_or(1, |v| v + 1),
        };
        risk.insert(subject.to_string(), (stored, expires_at));
        Ok(true)
    }

    async fn delete_risk_profile(&self, store: &str, subject: &str) -> Result<bool> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        Ok(live_mut(&mut stores, store)?.risk.remove(subject).is_some())
    }

    async fn append_decisions(&self, entries: &[LoggedDecision]) -> Result<()> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        for e in entries {
            if let Some(s) = stores.get_mut(&e.store_id).filter(|s| s.live_store()) {
                s.decisions.insert(e.id.clone(), e.clone());
            }
        }
        Ok(())
    }

    async fn read_decisions(
        &self,
        store: &str,
        filter: &DecisionFilter,
        page: &Page,
    ) -> Result<Paged<LoggedDecision>> {
        let now = chrono::Utc::now();
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let all: Vec<_> = stores
            .get(store)
            .map(|s| {
                s.decisions
                    .values()
                    .rev()
                    .filter(|d| d.expires_at >= now && filter.matches(d))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        paginate(all, page)
    }

    async fn prune_expired(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let mut removed = 0;
        for s in stores.values_mut() {
            let before = s.decisions.len() + s.risk.len();
            s.decisions.retain(|_, d| d.expires_at >= now);
            s.risk.retain(|_, (_, expires)| *expires >= now);
            removed += (before - s.decisions.len() - s.risk.len()) as u64;
        }
        Ok(removed)
    }

    async fn remove_expired_tuples(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let mut removed = 0usize;
        for s in stores.values_mut() {
            if removed >= limit {
                break;
            }
            let before = s.rows.len();
            let mut budget = limit - removed;
            s.rows.retain(|r| {
                let expired = !r.key.live_at(now);
                if expired && budget > 0 {
                    budget -= 1;
                    return false;
                }
                true
            });
            if s.rows.len() == before {
                continue;
            }
            removed += before - s.rows.len();
            // Row positions moved: index them again.
            s.live.clear();
            s.by_object.clear();
            s.by_user.clear();
            for (idx, r) in s.rows.iter().enumerate() {
                let k = &r.key;
                if r.deleted.is_none() {
                    s.live
                        .insert((k.object.clone(), k.relation.clone(), k.user.clone()), idx);
                }
                s.by_object
                    .entry((k.object.clone(), k.relation.clone()))
                    .or_default()
                    .push(idx);
                s.by_user.entry(k.user.clone()).or_default().push(idx);
            }
        }
        Ok(removed as u64)
    }

    async fn write_entity_attributes(
        &self,
        store: &str,
        entity: &str,
        attributes: Option<&EntityAttributes>,
    ) -> Result<bool> {
        let mut stores = self.stores.write().map_err(|_| poisoned())?;
        let s = live_mut(&mut stores, store)?;
        Ok(match attributes {
            Some(a) => s.attributes.insert(entity.to_string(), a.clone()).is_some(),
            None => s.attributes.remove(entity).is_some(),
        })
    }

    async fn read_entity_attributes(
        &self,
        store: &str,
        entities: &[String],
    ) -> Result<Vec<EntityAttributes>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        Ok(stores
            .get(store)
            .map(|s| {
                entities
                    .iter()
                    .filter_map(|e| s.attributes.get(e).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_entity_attributes(
        &self,
        store: &str,
        entity_type: Option<&str>,
        page: &Page,
    ) -> Result<Paged<EntityAttributes>> {
        let stores = self.stores.read().map_err(|_| poisoned())?;
        let all: Vec<_> = stores
            .get(store)
            .map(|s| {
                s.attributes
                    .values()
                    .filter(|a| {
                        entity_type
                            .is_none_or(|t| a.entity.split_once(':').is_some_and(|(et, _)| et == t))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        paginate(all, page)
    }
}
