//! The engine as a service: stores, models, tuples and queries with validation, consistency
//! tokens, revision tracking and caches. The HTTP layer maps wire formats onto this and nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::graph::{self, CheckCache, CompiledModel, ListUsersFilter, Query, UserResult};
use crate::model::{self, AuthorizationModel};
use crate::store::{
    ChangeFilter, Datastore, Page, Paged, Revision, StoreInfo, TupleChange, TupleFilter,
    WriteOptions,
};
use crate::tuple::{ContextMap, ObjectRef, Tuple, TupleKey, UserRef, valid_type_name};

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Resolution depth bound (OpenFGA's default is 25).
    pub max_depth: u32,
    /// Whether sub-results are cached across requests.
    pub cache_enabled: bool,
    /// Whether decisions without caller context are memoised (under the revision, model,
    /// policy version, attributes epoch and risk they depend on).
    pub decision_cache: bool,
    pub cache_capacity: u64,
    pub cache_ttl: Duration,
    /// How old a node's knowledge of a store's head revision may be for `MINIMIZE_LATENCY`.
    pub max_staleness: Duration,
    /// Most tuples one write request may change (OpenFGA: 100).
    pub max_tuples_per_write: usize,
    /// Most checks in one batch check (OpenFGA: 50).
    pub max_checks_per_batch: usize,
    /// Most contextual tuples per query (OpenFGA: 100).
    pub max_contextual_tuples: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_depth: graph::DEFAULT_MAX_DEPTH,
            cache_enabled: true,
            decision_cache: true,
            cache_capacity: 1_000_000,
            cache_ttl: Duration::from_secs(60),
            max_staleness: Duration::from_millis(500),
            max_tuples_per_write: 100,
            max_checks_per_batch: 50,
            max_contextual_tuples: 100,
        }
    }
}

/// How fresh the data a query reads must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// The newest revision this node knows, at most `max_staleness` old; cached sub-results allowed.
    #[default]
    MinimizeLatency,
    /// The database's newest revision; the cross-request cache is bypassed.
    HigherConsistency,
    /// At least this revision (from a consistency token).
    AtLeastAsFresh(Revision),
    /// Exactly this revision (later pages of a paginated query).
    AtRevision(Revision),
}

/// Something other nodes must learn about a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Tuples were written at this revision.
    Revision(Revision),
    /// A new model version became the latest.
    ModelWritten,
    /// The store was deleted.
    Deleted,
    /// Another policy version became active.
    PoliciesChanged,
    /// Stored entity attributes changed.
    AttributesChanged,
}

/// Told of every committed change, so other nodes learn of it at once (Redis pub/sub).
pub trait ChangeNotifier: Send + Sync {
    fn published(&self, store: &str, event: StoreEvent);
}

/// A query's common inputs.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub model_id: Option<String>,
    pub consistency: Consistency,
    pub contextual_tuples: Vec<TupleKey>,
    pub context: Option<ContextMap>,
}

/// One check of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub correlation_id: String,
    pub tuple: TupleKey,
    pub contextual_tuples: Vec<TupleKey>,
    pub context: Option<ContextMap>,
}

mod attributes;
mod decisions;
mod policies;
mod risk;
mod search;

pub use attributes::MAX_ATTRIBUTE_BYTES;
pub use decisions::{DecisionLogSettings, DryRun, Flip, MAX_DRY_RUN, Skipped};
pub use policies::{ActivePolicies, BASELINE_VERSION, Decision, DecisionRequest};
pub use risk::take_signals;
pub use search::{MAX_SEARCH_CANDIDATES, MAX_SEARCH_TUPLES};

/// The engine service.
pub struct Engine {
    ds: Arc<dyn Datastore>,
    cfg: EngineConfig,
    cache: CheckCache,
    models: moka::sync::Cache<(String, String), Arc<CompiledModel>>,
    latest: moka::sync::Cache<String, Arc<CompiledModel>>,
    stores: moka::sync::Cache<String, Arc<StoreInfo>>,
    /// Compiled active policies per store; also refreshed when the latest model changes.
    policies: moka::sync::Cache<String, Arc<ActivePolicies>>,
    /// Parents of an entity for Cedar's hierarchy: `(store, model id, revision, type:id)`.
    parents: moka::sync::Cache<(String, String, Revision, String), Arc<Parents>>,
    /// Memoised decisions (see [`EngineConfig::decision_cache`]).
    decision_memo: moka::sync::Cache<policies::DecisionKey, (Arc<Decision>, i64)>,
    /// Hydrated Cedar entity sets: `(store, model@revision/policy version, subject, resource)`.
    entity_sets: moka::sync::Cache<(String, String, String, String), EntitySet>,
    heads: Mutex<HashMap<String, (Revision, Instant)>>,
    notifier: Mutex<Option<Arc<dyn ChangeNotifier>>>,
    /// Whether `notifier` is set (read on every decision without taking the lock).
    notified: std::sync::atomic::AtomicBool,
    /// Risk rules per store.
    risk_rules: moka::sync::Cache<String, Arc<crate::risk::RiskRules>>,
    /// Risk histories by `(store, subject)`, read through for a second: another node's
    /// change (a recorded failure) shows within that.
    risk_profiles: moka::sync::Cache<(String, String), Arc<crate::risk::RiskProfile>>,
    risk_locks: risk::RiskLocks,
    /// Decision log settings per store.
    log_settings: moka::sync::Cache<String, Arc<DecisionLogSettings>>,
    /// Bumped on every change of a store's stored attributes (here or, by pub/sub, on another
    /// node); part of the keys of entity sets and memoised decisions.
    attributes_epochs: AttributeEpochs,
    /// The key continuation tokens of paged lists are signed with.
    page_key: std::sync::RwLock<[u8; 32]>,
    /// Decision log entries waiting to be written.
    decision_buffer: Mutex<Vec<crate::store::LoggedDecision>>,
    /// Log entry ids: ULIDs that increase within a millisecond too, so the log's newest-first
    /// order is the order decisions were made on this node.
    decision_ids: Mutex<ulid::Generator>,
    decisions_dropped: std::sync::atomic::AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
}

/// An entity's parents and until when they hold (µs since the epoch; `i64::MAX`: until the
/// next write).
pub(crate) type Parents = (Vec<String>, i64);
/// A hydrated entity set and until when it holds, as [`Parents`].
type EntitySet = (Arc<cedar_policy::Entities>, i64);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

const TOKEN_PREFIX: &str = "gh1.";

/// Encodes a consistency token: the store and revision a response was evaluated at.
pub fn encode_token(store: &str, rev: Revision) -> String {
    use std::fmt::Write as _;
    // Every query answers with one, so it is built in two buffers, not four.
    let mut raw = String::with_capacity(store.len() + 21);
    let _ = write!(raw, "{rev}:{store}");
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + raw.len().div_ceil(3) * 4);
    token.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut token);
    token
}

/// Decodes a consistency token for `store`.
pub fn decode_token(store: &str, token: &str) -> Result<Revision> {
    let raw = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(Error::InvalidConsistencyToken)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| Error::InvalidConsistencyToken)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::InvalidConsistencyToken)?;
    let (rev, s) = text.split_once(':').ok_or(Error::InvalidConsistencyToken)?;
    if s != store {
        return Err(Error::Validation(
            "the consistency token belongs to another store".into(),
        ));
    }
    rev.parse().map_err(|_| Error::InvalidConsistencyToken)
}

impl Engine {
    /// An engine over a datastore.
    pub fn new(ds: Arc<dyn Datastore>, cfg: EngineConfig) -> Self {
        let ttl = Duration::from_secs(1);
        Self {
            ds,
            cache: CheckCache::new(cfg.cache_capacity, cfg.cache_ttl),
            models: moka::sync::Cache::new(10_000),
            latest: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            stores: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            policies: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            parents: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .time_to_live(cfg.cache_ttl)
                .build(),
            decision_memo: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.cache_ttl)
                .build(),
            entity_sets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.cache_ttl)
                .build(),
            heads: Mutex::new(HashMap::new()),
            notifier: Mutex::new(None),
            notified: std::sync::atomic::AtomicBool::new(false),
            risk_rules: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            risk_profiles: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            risk_locks: risk::RiskLocks::default(),
            log_settings: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            attributes_epochs: AttributeEpochs::default(),
            decision_buffer: Mutex::new(Vec::new()),
            decision_ids: Mutex::new(ulid::Generator::new()),
            decisions_dropped: std::sync::atomic::AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            page_key: std::sync::RwLock::new(rand::random()),
            cfg,
        }
    }

    /// Sets the key continuation tokens of paged lists are signed with: nodes of one
    /// deployment share it, so that a page started on one continues on another. Without it,
    /// each process signs with a random key of its own.
    pub fn set_page_token_key(&self, key: [u8; 32]) {
        if let Ok(mut k) = self.page_key.write() {
            *k = key;
        }
    }

    /// The signer of continuation tokens of paged lists.
    pub fn page_tokens(&self) -> PageTokens {
        PageTokens {
            key: self.page_key.read().map(|k| *k).unwrap_or([0; 32]),
        }
    }

    /// Sets the notifier told of every committed write.
    pub fn set_notifier(&self, n: Arc<dyn ChangeNotifier>) {
        if let Ok(mut g) = self.notifier.lock() {
            *g = Some(n);
            self.notified
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether changes are announced to other nodes (pub/sub is configured).
    pub fn has_notifier(&self) -> bool {
        self.notified.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.ds
    }

    /// Entries in the cross-request cache.
    pub fn cache_entries(&self) -> u64 {
        self.cache.len()
    }

    fn notify(&self, store: &str, event: StoreEvent) {
        let notifier = self.notifier.lock().ok().and_then(|g| g.clone());
        if let Some(n) = notifier {
            n.published(store, event);
        }
    }

    /// Applies an event another node published.
    pub fn apply_event(&self, store: &str, event: StoreEvent) {
        match event {
            StoreEvent::Revision(rev) => self.observe_revision(store, rev),
            StoreEvent::ModelWritten | StoreEvent::Deleted => self.forget_store(store),
            StoreEvent::PoliciesChanged => self.policies.invalidate(store),
            StoreEvent::AttributesChanged => self.attributes_epochs.bump(store),
        }
    }

    /// Records that `store` has reached `rev` (a local write, or another node's via pub/sub).
    pub fn observe_revision(&self, store: &str, rev: Revision) {
        if let Ok(mut heads) = self.heads.lock() {
            let e = heads
                .entry(store.to_string())
                .or_insert((rev, Instant::now()));
            if rev >= e.0 {
                *e = (rev, Instant::now());
            }
        }
    }

    /// Forgets what this node knows of a store (another node wrote a model or deleted it).
    pub fn forget_store(&self, store: &str) {
        self.latest.invalidate(store);
        self.stores.invalidate(store);
        self.policies.invalidate(store);
    }

    async fn head(&self, store: &str) -> Result<Revision> {
        let rev = self.ds.head_revision(store).await?;
        self.observe_revision(store, rev);
        Ok(rev)
    }

    /// The revision a query reads at, and whether it may use the cross-request cache.
    async fn revision(&self, store: &str, c: Consistency) -> Result<(Revision, bool)> {
        let known = self
            .heads
            .lock()
            .map_err(|_| Error::Storage("revision table lock poisoned".into()))?
            .get(store)
            .copied();
        let fresh = known
            .filter(|(_, at)| at.elapsed() <= self.cfg.max_staleness)
            .map(|(r, _)| r);
        match c {
            Consistency::MinimizeLatency => match fresh {
                Some(r) => Ok((r, self.cfg.cache_enabled)),
                None => Ok((self.head(store).await?, self.cfg.cache_enabled)),
            },
            Consistency::HigherConsistency => Ok((self.head(store).await?, false)),
            Consistency::AtLeastAsFresh(want) => {
                if let Some(r) = fresh.filter(|r| *r >= want) {
                    return Ok((r, self.cfg.cache_enabled));
                }
                let head = self.head(store).await?;
                if head < want {
                    return Err(Error::InvalidConsistencyToken);
                }
                Ok((head, self.cfg.cache_enabled))
            }
            Consistency::AtRevision(rev) => {
                if known.is_none_or(|(r, _)| r < rev) && self.head(store).await? < rev {
                    return Err(Error::InvalidContinuationToken);
                }
                Ok((rev, self.cfg.cache_enabled))
            }
        }
    }

    // ---- stores ----

    pub async fn create_store(&self, name: &str) -> Result<StoreInfo> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Validation(
                "store name must be 1 to 64 characters without control characters".into(),
            ));
        }
        let now = chrono::Utc::now();
        let info = StoreInfo {
            id: ulid::Ulid::new().to_string(),
            name: name.into(),
            created_at: now,
            updated_at: now,
        };
        self.ds.create_store(&info).await?;
        Ok(info)
    }

    /// A live store, or `StoreNotFound`.
    pub async fn get_store(&self, id: &str) -> Result<StoreInfo> {
        Ok((*self.get_store_fresh(id, false).await?).clone())
    }

    /// A live store; `fresh` skips this node's cache and asks the database. Shared, not
    /// copied: every query looks its store up.
    async fn get_store_fresh(&self, id: &str, fresh: bool) -> Result<Arc<StoreInfo>> {
        if !fresh && let Some(s) = self.stores.get(id) {
            return Ok(s);
        }
        if ulid::Ulid::from_string(id).is_err() {
            return Err(Error::Validation(format!(
                "invalid store id `{id}`: expected a ULID"
            )));
        }
        let s = self
            .ds
            .get_store(id)
            .await?
            .ok_or_else(|| Error::StoreNotFound(id.into()))?;
        let s = Arc::new(s);
        self.stores.insert(id.into(), s.clone());
        Ok(s)
    }

    pub async fn list_stores(&self, name: Option<&str>, page: &Page) -> Result<Paged<StoreInfo>> {
        if name.is_some_and(|n| n.chars().any(char::is_control) || n.chars().count() > 64) {
            return Err(Error::Validation("invalid store name filter".into()));
        }
        self.ds.list_stores(name, page).await
    }

    pub async fn delete_store(&self, id: &str) -> Result<()> {
        self.get_store_fresh(id, true).await?;
        if !self.ds.delete_store(id).await? {
            return Err(Error::StoreNotFound(id.into()));
        }
        self.forget_store(id);
        self.notify(id, StoreEvent::Deleted);
        Ok(())
    }

    // ---- models ----

    /// Validates and saves a new model version; returns its id.
    pub async fn write_model(&self, store: &str, mut model: AuthorizationModel) -> Result<String> {
        self.get_store_fresh(store, false).await?;
        model::validate_model(&model)?;
        model.id = ulid::Ulid::new().to_string();
        // Compile up front so that a model whose conditions do not compile is rejected.
        let compiled = Arc::new(CompiledModel::new(model.clone())?);
        self.ds.write_model(store, &model).await?;
        self.models
            .insert((store.into(), model.id.clone()), compiled.clone());
        self.latest.insert(store.into(), compiled);
        self.notify(store, StoreEvent::ModelWritten);
        Ok(model.id)
    }

    /// A model version, or the latest when `id` is absent.
    pub async fn model(&self, store: &str, id: Option<&str>) -> Result<Arc<CompiledModel>> {
        self.model_fresh(store, id, false).await
    }

    /// A model version, or the latest; `fresh` reads the store and the latest model id from the
    /// database instead of this node's short-lived caches (another node may have just changed them).
    async fn model_fresh(
        &self,
        store: &str,
        id: Option<&str>,
        fresh: bool,
    ) -> Result<Arc<CompiledModel>> {
        self.get_store_fresh(store, fresh).await?;
        let id = match id.filter(|s| !s.is_empty()) {
            Some(id) => {
                if ulid::Ulid::from_string(id).is_err() {
                    return Err(Error::Validation(format!(
                        "invalid authorization model id `{id}`: expected a ULID"
                    )));
                }
                id.to_string()
            }
            // The latest model is held compiled: a check without a model id (most of them)
            // costs one cache lookup for it, not two and a key built from two strings.
            None => match self.latest.get(store).filter(|_| !fresh) {
                Some(m) => return Ok(m),
                None => {
                    let m = self
                        .ds
                        .latest_model(store)
                        .await?
                        .ok_or(Error::LatestModelNotFound)?;
                    let key = (store.to_string(), m.id.clone());
                    let compiled = match self.models.get(&key) {
                        Some(c) => c,
                        None => {
                            let c = Arc::new(CompiledModel::new(m)?);
                            self.models.insert(key, c.clone());
                            c
                        }
                    };
                    self.latest.insert(store.into(), compiled.clone());
                    return Ok(compiled);
                }
            },
        };
        let key = (store.to_string(), id.clone());
        if let Some(m) = self.models.get(&key) {
            return Ok(m);
        }
        let m = self
            .ds
            .read_model(store, &id)
            .await?
            .ok_or_else(|| Error::ModelNotFound(id.clone()))?;
        let compiled = Arc::new(CompiledModel::new(m)?);
        self.models.insert(key, compiled.clone());
        Ok(compiled)
    }

    pub async fn list_models(&self, store: &str, page: &Page) -> Result<Paged<AuthorizationModel>> {
        self.get_store_fresh(store, false).await?;
        self.ds.list_models(store, page).await
    }

    // ---- tuples ----

    /// Validates and applies a write: deletes and writes in one transaction at a new revision.
    pub async fn write(
        &self,
        store: &str,
        model_id: Option<&str>,
        writes: &[TupleKey],
        deletes: &[TupleKey],
        opts: WriteOptions,
    ) -> Result<Revision> {
        if writes.is_empty() && deletes.is_empty() {
            return Err(Error::Validation(
                "a write needs at least one tuple to write or delete".into(),
            ));
        }
        if writes.len() + deletes.len() > self.cfg.max_tuples_per_write {
            return Err(Error::Validation(format!(
                "a write may change at most {} tuples",
                self.cfg.max_tuples_per_write
            )));
        }
        let deleting: std::collections::HashSet<_> =
            deletes.iter().map(TupleKey::identity).collect();
        if let Some(t) = writes.iter().find(|t| deleting.contains(&t.identity())) {
            return Err(Error::Validation(format!(
                "cannot write and delete the same tuple in one request ({t})"
            )));
        }
        let model = self.model_fresh(store, model_id, true).await?;
        for t in writes {
            model.validate_tuple(t)?;
        }
        // Expiries: ahead of now, within what every backend stores, kept to the microsecond.
        let now = chrono::Utc::now();
        let normalized: Vec<TupleKey>;
        let writes = if writes.iter().any(|t| t.expires_at.is_some()) {
            normalized = writes
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    if let Some(e) = t.expires_at {
                        let e = crate::tuple::stored_expiry(e);
                        if e <= now {
                            return Err(Error::InvalidTuple {
                                tuple: t.to_string(),
                                reason: "`expires_at` has already passed".into(),
                            });
                        }
                        if e > crate::tuple::max_expiry() {
                            return Err(Error::InvalidTuple {
                                tuple: t.to_string(),
                                reason: "`expires_at` is after the year 9999".into(),
                            });
                        }
                        t.expires_at = Some(e);
                    }
                    Ok(t)
                })
                .collect::<Result<_>>()?;
            &normalized[..]
        } else {
            writes
        };
        for t in deletes {
            if t.expires_at.is_some() {
                return Err(Error::InvalidTuple {
                    tuple: t.to_string(),
                    reason: "a delete names a tuple by user, relation and object; it takes no \
                             `expires_at`"
                        .into(),
                });
            }
            let o = ObjectRef::parse(&t.object).ok_or_else(|| Error::InvalidTuple {
                tuple: t.to_string(),
                reason: format!("invalid object `{}`", t.object),
            })?;
            if UserRef::parse(&t.user).is_none() {
                return Err(Error::InvalidTuple {
                    tuple: t.to_string(),
                    reason: format!("invalid user `{}`", t.user),
                });
            }
            model.require_relation(o.object_type, &t.relation)?;
        }
        let rev = self.ds.write_tuples(store, deletes, writes, opts).await?;
        self.observe_revision(store, rev);
        self.notify(store, StoreEvent::Revision(rev));
        Ok(rev)
    }

    /// Reads tuples matching an OpenFGA-style filter (`object` may be `type:` or `type:id`).
    pub async fn read(
        &self,
        store: &str,
        filter: Option<&TupleKey>,
        page: &Page,
        consistency: Consistency,
    ) -> Result<(Paged<Tuple>, Revision)> {
        self.get_store_fresh(store, consistency != Consistency::MinimizeLatency)
            .await?;
        let mut f = TupleFilter::default();
        if let Some(k) = filter {
            if k.expires_at.is_some() {
                return Err(Error::Validation(
                    "a read filter takes no `expires_at`: it names a user, relation and object"
                        .into(),
                ));
            }
            if !k.object.is_empty() {
                let (t, id) = k.object.split_once(':').ok_or_else(|| {
                    Error::Validation(format!(
                        "invalid object `{}`: expected `type:` or `type:id`",
                        k.object
                    ))
                })?;
                let well_formed = if id.is_empty() {
                    valid_type_name(t)
                } else {
                    ObjectRef::parse(&k.object).is_some()
                };
                if !well_formed {
                    return Err(Error::Validation(format!(
                        "invalid object `{}`: expected `type:` or `type:id`",
                        k.object
                    )));
                }
                f.object_type = Some(t.into());
                f.object_id = (!id.is_empty()).then(|| id.to_string());
            } else if !k.user.is_empty() || !k.relation.is_empty() {
                return Err(Error::Validation(
                    "a read filter with a user or relation needs an object type".into(),
                ));
            }
            if f.object_id.is_none() && !k.user.is_empty() && k.object.is_empty() {
                return Err(Error::Validation(
                    "a read filter with a user needs an object type".into(),
                ));
            }
            if !k.relation.is_empty() {
                if k.relation.len() > crate::tuple::MAX_RELATION_LEN
                    || k.relation
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(Error::Validation(format!(
                        "invalid relation `{}`",
                        k.relation
                    )));
                }
                f.relation = Some(k.relation.clone());
            }
            if !k.user.is_empty() {
                if UserRef::parse(&k.user).is_none() {
                    return Err(Error::Validation(format!("invalid user `{}`", k.user)));
                }
                f.users = vec![k.user.clone()];
            }
        }
        let (rev, _) = self.revision(store, consistency).await?;
        let page = self.ds.read_tuples(store, &f, rev, page).await?;
        Ok((page, rev))
    }

    /// The changelog after a token, or from a start time, optionally for one object type.
    pub async fn changes(
        &self,
        store: &str,
        filter: &ChangeFilter,
        page: &Page,
    ) -> Result<Paged<TupleChange>> {
        self.get_store_fresh(store, false).await?;
        let mut filter = filter.clone();
        filter.object_type = filter.object_type.filter(|t| !t.is_empty());
        if let Some(t) = &filter.object_type
            && !valid_type_name(t)
        {
            return Err(Error::Validation(format!("invalid type `{t}`")));
        }
        self.ds.read_changes(store, &filter, page).await
    }

    // ---- queries ----

    fn validate_contextual(&self, model: &CompiledModel, tuples: &[TupleKey]) -> Result<()> {
        if tuples.len() > self.cfg.max_contextual_tuples {
            return Err(Error::Validation(format!(
                "at most {} contextual tuples are allowed",
                self.cfg.max_contextual_tuples
            )));
        }
        tuples.iter().try_for_each(|t| {
            if t.expires_at.is_some() {
                return Err(Error::InvalidTuple {
                    tuple: t.to_string(),
                    reason: "a contextual tuple lasts for its request; it takes no `expires_at`"
                        .into(),
                });
            }
            model.validate_tuple(t)
        })
    }

    async fn prepare(
        &self,
        store: &str,
        opts: &QueryOptions,
    ) -> Result<(Arc<CompiledModel>, Revision, bool)> {
        let fresh = opts.consistency != Consistency::MinimizeLatency;
        let model = self
            .model_fresh(store, opts.model_id.as_deref(), fresh)
            .await?;
        self.validate_contextual(&model, &opts.contextual_tuples)?;
        let (rev, cached) = self.revision(store, opts.consistency).await?;
        Ok((model, rev, cached))
    }

    fn query<'a>(
        &'a self,
        store: &'a str,
        model: &'a CompiledModel,
        rev: Revision,
        cached: bool,
        opts: &'a QueryOptions,
    ) -> Query<'a> {
        Query::new(
            store,
            model,
            self.ds.as_ref(),
            rev,
            &opts.contextual_tuples,
            opts.context.as_ref(),
        )
        .with_cache(cached.then_some(&self.cache))
        .with_max_depth(self.cfg.max_depth)
    }

    /// Does `tuple.user` hold `tuple.relation` on `tuple.object`?
    pub async fn check(
        &self,
        store: &str,
        tuple: &TupleKey,
        opts: &QueryOptions,
    ) -> Result<(bool, Revision)> {
        let (model, rev, cached) = self.prepare(store, opts).await?;
        let q = self.query(store, &model, rev, cached, opts);
        Ok((
            graph::check(&q, &tuple.object, &tuple.relation, &tuple.user).await?,
            rev,
        ))
    }

    /// Several checks at one revision; each answer or error is reported under its correlation id.
    pub async fn batch_check(
        &self,
        store: &str,
        items: &[BatchItem],
        opts: &QueryOptions,
    ) -> Result<(Vec<(String, Result<bool>)>, Revision)> {
        if items.is_empty() {
            return Err(Error::Validation(
                "a batch check needs at least one check".into(),
            ));
        }
        if items.len() > self.cfg.max_checks_per_batch {
            return Err(Error::Validation(format!(
                "a batch check may hold at most {} checks",
                self.cfg.max_checks_per_batch
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for i in items {
            if i.correlation_id.is_empty() || i.correlation_id.len() > 36 {
                return Err(Error::Validation(
                    "each check needs a correlation id of 1 to 36 characters".into(),
                ));
            }
            if !ids.insert(i.correlation_id.as_str()) {
                return Err(Error::Validation(format!(
                    "duplicate correlation id `{}`",
                    i.correlation_id
                )));
            }
        }
        let fresh = opts.consistency != Consistency::MinimizeLatency;
        let model = self
            .model_fresh(store, opts.model_id.as_deref(), fresh)
            .await?;
        let (rev, cached) = self.revision(store, opts.consistency).await?;
        let futs = items.iter().map(|i| {
            let model = &model;
            async move {
                let item_opts = QueryOptions {
                    model_id: None,
                    consistency: opts.consistency,
                    contextual_tuples: i.contextual_tuples.clone(),
                    context: i.context.clone(),
                };
                let r = async {
                    self.validate_contextual(model, &item_opts.contextual_tuples)?;
                    let q = self.query(store, model, rev, cached, &item_opts);
                    graph::check(&q, &i.tuple.object, &i.tuple.relation, &i.tuple.user).await
                }
                .await;
                (i.correlation_id.clone(), r)
            }
        });
        Ok((futures::future::join_all(futs).await, rev))
    }

    pub async fn expand(
        &self,
        store: &str,
        object: &str,
        relation: &str,
        opts: &QueryOptions,
    ) -> Result<(serde_json::Value, Revision)> {
        let (model, rev, _) = self.prepare(store, opts).await?;
        let q = self.query(store, &model, rev, false, opts);
        Ok((graph::expand(&q, object, relation).await?, rev))
    }

    /// Every object of `object_type` the user holds `relation` on, sorted and complete.
    pub async fn list_objects(
        &self,
        store: &str,
        object_type: &str,
        relation: &str,
        user: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<String>, Revision)> {
        let (model, rev, cached) = self.prepare(store, opts).await?;
        let q = self.query(store, &model, rev, cached, opts);
        Ok((
            graph::list_objects(&q, object_type, relation, user).await?,
            rev,
        ))
    }

    /// Every user matching the filters that holds `relation` on `object`, sorted and complete.
    pub async fn list_users(
        &self,
        store: &str,
        object: &str,
        relation: &str,
        filters: &[ListUsersFilter],
        opts: &QueryOptions,
    ) -> Result<(Vec<UserResult>, Revision)> {
        let (model, rev, cached) = self.prepare(store, opts).await?;
        let q = self.query(store, &model, rev, cached, opts);
        Ok((graph::list_users(&q, object, relation, filters).await?, rev))
    }

    /// The revision a `MINIMIZE_LATENCY` query of this store would read at (for tokens on
    /// responses that read nothing else).
    pub async fn current_revision(&self, store: &str) -> Result<Revision> {
        Ok(self.revision(store, Consistency::MinimizeLatency).await?.0)
    }

    // ---- assertions ----

    pub async fn write_assertions(
        &self,
        store: &str,
        model_id: &str,
        assertions: &serde_json::Value,
    ) -> Result<()> {
        let model = self.model(store, Some(model_id)).await?;
        let list = assertions
            .as_array()
            .ok_or_else(|| Error::Validation("`assertions` must be a list".into()))?;
        for (n, a) in list.iter().enumerate() {
            let field = |name: &str| a.get(name).cloned().unwrap_or(serde_json::Value::Null);
            let key: TupleKey = serde_json::from_value(field("tuple_key")).map_err(|e| {
                Error::Validation(format!("assertion {n}: invalid `tuple_key`: {e}"))
            })?;
            model.validate_check(&key.object, &key.relation, &key.user)?;
            if let Some(ct) = a.get("contextual_tuples").filter(|v| !v.is_null()) {
                let tuples: Vec<TupleKey> = serde_json::from_value(ct.clone()).map_err(|e| {
                    Error::Validation(format!("assertion {n}: invalid `contextual_tuples`: {e}"))
                })?;
                self.validate_contextual(&model, &tuples)?;
            }
            if a.get("context")
                .is_some_and(|c| !c.is_null() && !c.is_object())
            {
                return Err(Error::Validation(format!(
                    "assertion {n}: `context` must be an object"
                )));
            }
        }
        self.ds.write_assertions(store, model_id, assertions).await
    }

    pub async fn read_assertions(&self, store: &str, model_id: &str) -> Result<serde_json::Value> {
        self.model(store, Some(model_id)).await?;
        self.ds.read_assertions(store, model_id).await
    }
}

/// Continuation tokens of paged lists (list objects, list users): the revision of the first
/// page and the last item returned, signed (HMAC-SHA-256) together with the store and the
/// query they belong to, so that a token cannot be forged to read another revision, or
/// replayed against another store or query.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    /// Pages through a sorted result list at revision `rev`; `binding` names the store and the
    /// query (it must be the same for every page).
    pub fn paginate_sorted<T: Clone>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> &str,
        page: &Page,
        rev: Revision,
        binding: &str,
    ) -> Result<(Vec<T>, Option<String>)> {
        let start = match &page.token {
            None => 0,
            Some(t) => {
                let (r, after) = self.decode(t, binding)?;
                if r != rev {
                    return Err(Error::InvalidContinuationToken);
                }
                items.partition_point(|i| key(i) <= after.as_str())
            }
        };
        let size = if page.size == 0 {
            items.len()
        } else {
            page.size
        };
        let end = (start + size).min(items.len());
        let out = items[start..end].to_vec();
        let next = (end < items.len()).then(|| {
            let last = out.last().map(&key).unwrap_or("");
            let mac = self.mac(binding, rev, last);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rev}|{mac}|{last}"))
        });
        Ok((out, next))
    }

    /// The revision a token of [`Self::paginate_sorted`] was issued at, if it is genuine and
    /// was issued for `binding`.
    pub fn revision(&self, token: &str, binding: &str) -> Result<Revision> {
        Ok(self.decode(token, binding)?.0)
    }

    fn mac(&self, binding: &str, rev: Revision, last: &str) -> String {
        use hmac::Mac as _;
        let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        m.update(binding.as_bytes());
        m.update(b"\0");
        m.update(rev.to_string().as_bytes());
        m.update(b"\0");
        m.update(last.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// Splits a token into its revision and the last key returned, checking its signature.
    fn decode(&self, token: &str, binding: &str) -> Result<(Revision, String)> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Error::InvalidContinuationToken)?;
        let text = String::from_utf8(raw).map_err(|_| Error::InvalidContinuationToken)?;
        let mut parts = text.splitn(3, '|');
        let (Some(r), Some(mac), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidContinuationToken);
        };
        let rev: Revision = r.parse().map_err(|_| Error::InvalidContinuationToken)?;
        let want = self.mac(binding, rev, after);
        let same = want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(Error::InvalidContinuationToken);
        }
        Ok((rev, after.to_string()))
    }
}

/// The element of `stripes` that `key` hashes to (`stripes` is never empty).
pub(crate) fn stripe_of<'a, T, K: std::hash::Hash + ?Sized>(stripes: &'a [T], key: &K) -> &'a T {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let i = usize::try_from(h.finish() % stripes.len().max(1) as u64).unwrap_or(0);
    &stripes[i % stripes.len()]
}

/// Stripes of the attributes epoch, shared by the stores hashed to them: a change of one
/// store's attributes invalidates what holds attributes for the stores of its stripe only.
const EPOCH_STRIPES: usize = 256;

/// Attribute epochs per store (by stripe).
#[derive(Debug)]
struct AttributeEpochs(Vec<std::sync::atomic::AtomicU64>);

impl Default for AttributeEpochs {
    fn default() -> Self {
        Self(
            (0..EPOCH_STRIPES)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        )
    }
}

impl AttributeEpochs {
    fn stripe(&self, store: &str) -> &std::sync::atomic::AtomicU64 {
        stripe_of(&self.0, store)
    }

    fn of(&self, store: &str) -> u64 {
        self.stripe(store)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn bump(&self, store: &str) {
        self.stripe(store)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn consistency_tokens_round_trip_and_bind_to_their_store() {
        let t = encode_token("S1", 42);
        assert_eq!(decode_token("S1", &t).unwrap(), 42);
        assert!(decode_token("S2", &t).is_err());
        assert!(matches!(
            decode_token("S1", "garbage"),
            Err(Error::InvalidConsistencyToken)
        ));
        assert!(matches!(
            decode_token("S1", "gh1.!!!"),
            Err(Error::InvalidConsistencyToken)
        ));
    }

    #[test]
    fn sorted_pages_cover_everything_once_at_one_revision() {
        let tokens = PageTokens { key: [7; 32] };
        let items: Vec<String> = (0..25).map(|i| format!("doc:{i:02}")).collect();
        let mut page = Page {
            size: 10,
            token: None,
        };
        let mut seen = Vec::new();
        loop {
            let (got, next) = tokens
                .paginate_sorted(&items, |s| s.as_str(), &page, 7, "q")
                .unwrap();
            seen.extend(got);
            match next {
                Some(t) => {
                    assert_eq!(tokens.revision(&t, "q").unwrap(), 7);
                    page.token = Some(t);
                }
                None => break,
            }
        }
        assert_eq!(seen, items);
        let first = Page {
            size: 10,
            token: None,
        };
        let (_, next) = tokens
            .paginate_sorted(&items, |s| s.as_str(), &first, 7, "q")
            .unwrap();
        let next = next.unwrap();
        // A token from another revision is refused rather than mixing snapshots.
        let again = Page {
            size: 10,
            token: Some(next.clone()),
        };
        assert!(
            tokens
                .paginate_sorted(&items, |s| s.as_str(), &again, 8, "q")
                .is_err()
        );
        // Another query's or another key's token is refused.
        assert!(tokens.revision(&next, "other").is_err());
        assert!(PageTokens { key: [8; 32] }.revision(&next, "q").is_err());
        // A token edited to name an older revision is refused.
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&next)
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let forged =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.replacen('7', "3", 1));
        assert!(tokens.revision(&forged, "q").is_err());
    }

    #[tokio::test]
    async fn writes_are_validated_and_all_or_nothing() {
        let engine = Engine::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        let store = engine.create_store("s").await.unwrap().id;
        let model = model::parse_dsl(
            "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define viewer: [user]\n",
        )
        .unwrap();
        engine.write_model(&store, model).await.unwrap();
        let good = TupleKey::new("user:a", "viewer", "doc:1");
        let bad = TupleKey::new("user:a", "editor", "doc:1");
        assert!(
            engine
                .write(
                    &store,
                    None,
                    &[good.clone(), bad],
                    &[],
                    WriteOptions::default()
                )
                .await
                .is_err()
        );
        let (page, _) = engine
            .read(
                &store,
                None,
                &Page::default(),
                Consistency::HigherConsistency,
            )
            .await
            .unwrap();
        assert!(page.items.is_empty());
        let rev = engine
            .write(
                &store,
                None,
                std::slice::from_ref(&good),
                &[],
                WriteOptions::default(),
            )
            .await
            .unwrap();
        // At least as fresh as the write's token: sees the write.
        let opts = QueryOptions {
            consistency: Consistency::AtLeastAsFresh(rev),
            ..Default::default()
        };
        assert!(engine.check(&store, &good, &opts).await.unwrap().0);
        // A token from the future is refused.
        let opts = QueryOptions {
            consistency: Consistency::AtLeastAsFresh(rev + 10),
            ..Default::default()
        };
        assert!(engine.check(&store, &good, &opts).await.is_err());
        let too_many: Vec<TupleKey> = (0..101)
            .map(|i| TupleKey::new("user:a", "viewer", format!("doc:{i}")))
            .collect();
        assert!(
            engine
                .write(&store, None, &too_many, &[], WriteOptions::default())
                .await
                .is_err()
        );
    }
}
