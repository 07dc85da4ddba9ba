//! Cedar policies of a store and decisions over them: the graph's answer, the relations the
//! subject holds and the entity hierarchy from direct tuples go into Cedar with the caller's
//! context (DESIGN.md, "Cedar policies").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::{Consistency, Engine, QueryOptions, StoreEvent};
use crate::error::{Error, Result};
use crate::graph::{self, CompiledModel};
use crate::model::AuthorizationModel;
use crate::policy::{
    self, CompiledPolicies, DeterminingPolicy, GraphContext, Hierarchy, PolicyError, Risk,
};
use crate::store::{Page, Paged, PolicyVersion, Revision, TemplateLink, TupleFilter};
use crate::tuple::ObjectRef;

/// The id under which the baseline policy set of a store without versions is reported.
pub const BASELINE_VERSION: &str = "baseline";

/// Most entities one decision hydrates (principal and resource with all their ancestors).
const MAX_ENTITIES: usize = 10_000;

/// The policies a store decides with, compiled against the schema they were validated with.
#[derive(Debug)]
pub struct ActivePolicies {
    /// The version id, or [`BASELINE_VERSION`].
    pub version: String,
    /// The model the schema was generated from (or that hierarchy links come from).
    pub model_id: Option<String>,
    pub compiled: Arc<CompiledPolicies>,
    pub hierarchy: Hierarchy,
    /// Whether the schema was generated from the model (rather than supplied).
    pub generated_schema: bool,
    pub schema_json: serde_json::Value,
    /// Whether the schema declares entity attributes (so decisions load stored ones).
    pub declares_attributes: bool,
}

/// What a decision without caller context depends on: store, model id, revision, policy
/// version, attributes epoch, subject, action, resource, risk, and whether it is lean.
pub(super) type DecisionKey = (
    String,
    String,
    Revision,
    String,
    u64,
    String,
    String,
    String,
    Risk,
    bool,
);

/// A request's target, checked against the model, and the relations of its resource's type.
struct Checked {
    target: policy::Target,
    /// The resource's type name (its relations are looked up in the query's model).
    resource_type: String,
}

/// A decision request: may `subject` do `action` (a relation) on `resource`?
#[derive(Debug, Clone, Default)]
pub struct DecisionRequest {
    pub subject: String,
    pub action: String,
    pub resource: String,
    /// The caller's context; `rebac`, `relations` and `risk` are Gatehouse's.
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    pub consistency: Consistency,
    /// Also say why: the tuples that granted `rebac`.
    pub explain: bool,
    /// The caller does not need `relations` in the answer (AuthZEN): then every relation is
    /// checked only if a policy may read `context.relations`; otherwise only the action is,
    /// and `relations` holds just the action when granted.
    pub lean: bool,
    /// Attributes of the subject or resource sent with this request (AuthZEN `properties`),
    /// by entity; they replace stored ones for this decision and are checked against the
    /// schema.
    pub attributes: HashMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Context keys and sent attributes that the active schema does not declare are left out
    /// of the Cedar request instead of refused (AuthZEN: the specification allows any). No
    /// policy can read them anyway (validation refuses one that does); the model's conditions
    /// still see the whole context.
    pub ignore_undeclared: bool,
    /// Not written to the decision log and not added to the subject's risk history: an
    /// evaluation a search makes for itself, not a decision a caller enforces.
    pub quiet: bool,
}

/// A decision and what determined it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that determined it: the satisfied forbids on a deny, else the permits.
    pub policies: Vec<Arc<DeterminingPolicy>>,
    /// With `explain`, on a deny: the permits that were satisfied but overridden by a forbid.
    pub overridden: Vec<Arc<DeterminingPolicy>>,
    /// Policies that failed to evaluate (they count as not satisfied).
    pub errors: Vec<String>,
    /// The graph's answer for the action.
    pub rebac: bool,
    /// The relations the subject holds on the resource.
    pub relations: Vec<String>,
    /// The risk the request was decided with (`context.risk`).
    pub risk: Risk,
    pub revision: Revision,
    pub policy_version: String,
    /// With `explain`: one chain of tuples through the model that granted the action
    /// (`None` when the graph did not grant it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebac_path: Option<Option<Vec<crate::tuple::TupleKey>>>,
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::InvalidPolicies(issues) => Error::InvalidPolicies(issues),
            PolicyError::InvalidSchema(m) => Error::InvalidPolicySchema(m),
        }
    }
}

impl Engine {
    /// The latest model of a store, if it has one.
    pub(super) async fn latest_model_opt(&self, store: &str) -> Result<Option<Arc<CompiledModel>>> {
        match self.model(store, None).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::LatestModelNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Compiles a policy text against a supplied schema or the one generated from the latest
    /// model.
    pub(super) fn compile_policies(
        version: &str,
        text: &str,
        links: &[TemplateLink],
        supplied: Option<&serde_json::Value>,
        model: Option<&CompiledModel>,
    ) -> Result<ActivePolicies> {
        let empty = AuthorizationModel::default();
        let m = model.map_or(&empty, |m| &m.model);
        let schema_json = supplied
            .cloned()
            .unwrap_or_else(|| policy::schema::generate(m));
        let schema = Arc::new(policy::parse_schema(&schema_json)?);
        let compiled = Arc::new(
            CompiledPolicies::compile(text, links, schema)?.with_context_types(&schema_json),
        );
        Ok(ActivePolicies {
            version: version.to_string(),
            model_id: model.map(|m| m.id().to_string()),
            compiled,
            hierarchy: Hierarchy::new(m),
            generated_schema: supplied.is_none(),
            declares_attributes: policy::schema_declares_attributes(&schema_json),
            schema_json,
        })
    }

    /// The policies a store decides with now: its active version, else the baseline.
    pub async fn active_policies(&self, store: &str) -> Result<Arc<ActivePolicies>> {
        self.get_store_fresh(store, false).await?;
        let model = self.latest_model_opt(store).await?;
        self.active_for(store, model.as_deref()).await
    }

    /// The active policies with the schema and hierarchy of `model` (the latest one).
    pub(super) async fn active_for(
        &self,
        store: &str,
        model: Option<&CompiledModel>,
    ) -> Result<Arc<ActivePolicies>> {
        let model_id = model.map(|m| m.id().to_string());
        if let Some(p) = self.policies.get(store).filter(|p| p.model_id == model_id) {
            return Ok(p);
        }
        let active = match self.ds.active_policy_version(store).await? {
            Some(v) => {
                Self::compile_policies(&v.id, &v.policies, &v.links, v.schema.as_ref(), model)
            }
            None => Self::compile_policies(BASELINE_VERSION, policy::BASELINE, &[], None, model),
        };
        // A version validated against an older model's schema may no longer validate: the
        // store then decides with nothing permitted rather than with unchecked policies.
        let active = Arc::new(match active {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(store.id = store, error = %e, "active policies no longer validate; denying");
                Self::compile_policies("invalid", "", &[], None, model)?
            }
        });
        self.policies.insert(store.to_string(), active.clone());
        Ok(active)
    }

    /// Validates and saves a new policy version; `activate` makes it the active one.
    pub async fn write_policies(
        &self,
        store: &str,
        text: &str,
        schema: Option<serde_json::Value>,
        links: Vec<TemplateLink>,
        activate: bool,
    ) -> Result<PolicyVersion> {
        self.get_store_fresh(store, false).await?;
        let model = self.latest_model_opt(store).await?;
        Self::compile_policies("new", text, &links, schema.as_ref(), model.as_deref())?;
        let version = PolicyVersion {
            id: ulid::Ulid::new().to_string(),
            policies: text.to_string(),
            schema,
            links,
            created_at: chrono::Utc::now(),
        };
        self.ds
            .write_policy_version(store, &version, activate)
            .await?;
        if activate {
            self.policies_changed(store);
        }
        Ok(version)
    }

    /// Makes an earlier version active again, if it still validates against today's schema.
    pub async fn activate_policies(&self, store: &str, id: &str) -> Result<PolicyVersion> {
        let v = self.policy_version(store, id).await?;
        let model = self.latest_model_opt(store).await?;
        Self::compile_policies(
            &v.id,
            &v.policies,
            &v.links,
            v.schema.as_ref(),
            model.as_deref(),
        )?;
        if !self.ds.activate_policy_version(store, id).await? {
            return Err(Error::PolicyVersionNotFound(id.to_string()));
        }
        self.policies_changed(store);
        Ok(v)
    }

    /// Another version became active: every node drops its compiled set and reads the active
    /// one again (writes racing on one node cannot leave a stale set cached).
    fn policies_changed(&self, store: &str) {
        self.policies.invalidate(store);
        self.notify(store, StoreEvent::PoliciesChanged);
    }

    pub async fn policy_version(&self, store: &str, id: &str) -> Result<PolicyVersion> {
        self.get_store_fresh(store, false).await?;
        if ulid::Ulid::from_string(id).is_err() {
            return Err(Error::Validation(format!(
                "invalid policy version id `{id}`: expected a ULID"
            )));
        }
        self.ds
            .read_policy_version(store, id)
            .await?
            .ok_or_else(|| Error::PolicyVersionNotFound(id.to_string()))
    }

    pub async fn list_policy_versions(
        &self,
        store: &str,
        page: &Page,
    ) -> Result<Paged<PolicyVersion>> {
        self.get_store_fresh(store, false).await?;
        self.ds.list_policy_versions(store, page).await
    }

    /// Decides a request at one revision: risk from the request's signals and the subject's
    /// history, the graph's answer, the hydrated entities, then Cedar. The decision is logged
    /// (as the store's sampling says) and the signals join the subject's history.
    pub async fn decide(&self, store: &str, req: &DecisionRequest) -> Result<Decision> {
        let started = std::time::Instant::now();
        let mut context = req.context.clone();
        let mut signals = super::risk::take_signals(&mut context)?;
        // The caller's context also serves the model's conditions.
        let opts = QueryOptions {
            consistency: req.consistency,
            context: context.clone().map(crate::tuple::ContextMap),
            ..QueryOptions::default()
        };
        let (model, rev, cached) = self.prepare(store, &opts).await?;
        let active = self.active_for(store, Some(&model)).await?;
        let loaded = if !signals.is_empty() || active.compiled.reads_risk {
            Some(self.load_risk(store, &req.subject, &mut signals).await?)
        } else {
            None
        };
        let risk = loaded
            .as_ref()
            .map(|l| l.assessment.clone())
            .unwrap_or_default();
        // Without caller context, a decision is a function of the store's state at `rev` (model,
        // tuples, policy version, attributes) and the risk: memoised under exactly those.
        let memo = (cached
            && self.cfg.decision_cache
            && context.is_none()
            && req.attributes.is_empty()
            && !req.explain)
            .then(|| {
                (
                    store.to_string(),
                    active.hierarchy.model_id.clone(),
                    rev,
                    active.version.clone(),
                    self.epoch_for(store, &active),
                    req.subject.clone(),
                    req.action.clone(),
                    req.resource.clone(),
                    risk.clone(),
                    req.lean,
                )
            });
        let now = chrono::Utc::now().timestamp_micros();
        let d = match memo
            .as_ref()
            .and_then(|k| self.decision_memo.get(k))
            .filter(|(_, until)| *until > now)
        {
            Some((d, _)) => Decision::clone(&d),
            // A hit needs no checking of the request: the same one passed under this model.
            None => {
                let target = self.target(&model, req)?;
                let q = self.query(store, &model, rev, cached, &opts);
                // Only a request that leaves undeclared keys out pays for a copy.
                let pruned = req
                    .ignore_undeclared
                    .then(|| context.clone())
                    .flatten()
                    .map(|mut c| {
                        active.compiled.prune_context(&target.target.action, &mut c);
                        c
                    });
                let cedar_context = pruned.as_ref().or(context.as_ref());
                let d = self
                    .evaluate_with(&q, &active, target, req, cedar_context, risk)
                    .await?;
                // Kept no longer than the earliest expiry among the tuples it rests on.
                if let Some(k) = memo {
                    let until = q.valid_until().unwrap_or(i64::MAX);
                    self.decision_memo.insert(k, (Arc::new(d.clone()), until));
                }
                d
            }
        };
        // Only an allowed request joins the history: a refused one (a step-up demanded, a
        // login from far away) must not make the same request look familiar on retry.
        if let Some(loaded) = loaded
            && !signals.is_empty()
            && d.allowed
            && !req.quiet
        {
            // The decision stands if the sighting cannot be saved: the next request then
            // scores it as new again, which errs on the side of caution.
            if let Err(e) = self
                .record_risk(store, &req.subject, &signals, loaded)
                .await
            {
                tracing::warn!(store.id = store, error = %e, "cannot save a risk history");
            }
        }
        // The decision stands whether or not it can be logged.
        if !req.quiet
            && let Err(e) = self
                .log_decision(store, req, context, &d, started.elapsed())
                .await
        {
            tracing::warn!(store.id = store, error = %e, "cannot queue a decision for the log");
        }
        Ok(d)
    }

    /// Replays a logged request (at its revision, with its risk) against `candidate`.
    pub(super) async fn replay(
        &self,
        store: &str,
        req: &DecisionRequest,
        candidate: &ActivePolicies,
        risk: &Risk,
    ) -> Result<Decision> {
        let opts = QueryOptions {
            consistency: req.consistency,
            context: req.context.clone().map(crate::tuple::ContextMap),
            ..QueryOptions::default()
        };
        let (model, rev, cached) = self.prepare(store, &opts).await?;
        let target = self.target(&model, req)?;
        let q = self.query(store, &model, rev, cached, &opts);
        // As `decide` does: keys the candidate's schema does not declare are left out when
        // the request asked for that (AuthZEN), and refused otherwise.
        let pruned = req
            .ignore_undeclared
            .then(|| req.context.clone())
            .flatten()
            .map(|mut c| {
                candidate
                    .compiled
                    .prune_context(&target.target.action, &mut c);
                c
            });
        let context = pruned.as_ref().or(req.context.as_ref());
        self.evaluate_with(&q, candidate, target, req, context, risk.clone())
            .await
    }

    /// Checks the request's subject, resource and action against the model.
    fn target(&self, model: &CompiledModel, req: &DecisionRequest) -> Result<Checked> {
        let subject = ObjectRef::parse(&req.subject).ok_or_else(|| {
            Error::Validation(format!(
                "invalid subject `{}`: expected `type:id`",
                req.subject
            ))
        })?;
        let resource = ObjectRef::parse(&req.resource).ok_or_else(|| {
            Error::Validation(format!(
                "invalid resource `{}`: expected `type:id`",
                req.resource
            ))
        })?;
        model.require_type(subject.object_type)?;
        let resource_type = model
            .model
            .type_def(resource.object_type)
            .ok_or_else(|| Error::TypeNotFound(resource.object_type.to_string()))?;
        if req.action.is_empty() {
            return Err(Error::Validation("an action is required".into()));
        }
        let bad = |e: String| Error::Validation(e);
        Ok(Checked {
            resource_type: resource_type.type_name.clone(),
            target: policy::Target {
                principal: policy::entity_uid(&req.subject).map_err(bad)?,
                action: policy::action_uid(&req.action).map_err(bad)?,
                resource: policy::entity_uid(&req.resource).map_err(bad)?,
            },
        })
    }

    /// The graph's answers, the hydrated entities and Cedar's decision under `active`.
    async fn evaluate_with(
        &self,
        q: &graph::Query<'_>,
        active: &ActivePolicies,
        checked: Checked,
        req: &DecisionRequest,
        context: Option<&serde_json::Map<String, serde_json::Value>>,
        risk: Risk,
    ) -> Result<Decision> {
        let rev = q.revision;
        // The action's own answer must be exact; another relation that cannot be decided (a
        // condition without its parameters, the depth bound) is reported and not counted as
        // held, and when a policy may read `context.relations` the decision fails closed
        // (below): a `forbid` on a relation that could not be evaluated must not be skipped.
        let mut relations = Vec::new();
        let mut relation_errors = Vec::new();
        let all_relations = !req.lean || active.compiled.reads_relations;
        let type_def = q
            .model
            .model
            .type_def(&checked.resource_type)
            .ok_or_else(|| Error::TypeNotFound(checked.resource_type.clone()))?;
        if !all_relations && !type_def.relations.contains_key(&req.action) {
            return Err(Error::Validation(format!(
                "`{}` is not a relation of type `{}`",
                req.action, checked.resource_type
            )));
        }
        for rel in type_def.relations.keys() {
            if !all_relations && *rel != req.action {
                continue;
            }
            match graph::check(q, &req.resource, rel, &req.subject).await {
                Ok(true) => relations.push(rel.clone()),
                Ok(false) => {}
                Err(e) if *rel == req.action => return Err(e),
                Err(e) => relation_errors.push(format!("relation `{rel}`: {e}")),
            }
        }
        let rebac = relations.contains(&req.action);
        let rebac_path = if req.explain && rebac {
            Some(graph::path(q, &req.resource, &req.action, &req.subject).await?)
        } else if req.explain {
            Some(None)
        } else {
            None
        };
        let entities = self.entity_set(q, active, req).await?;
        let graph_ctx = GraphContext {
            rebac,
            relations: relations.clone(),
        };
        let evaluate = if req.explain {
            policy::evaluate_explained
        } else {
            policy::evaluate
        };
        let eval = evaluate(
            &active.compiled,
            checked.target,
            context,
            &graph_ctx,
            &risk,
            &entities,
        )
        .map_err(|e| Error::Validation(e.0))?;
        // Fail closed: an error in anything the decision depends on (a policy that could not
        // be evaluated, which Cedar skips, or a relation the policies may read) is a deny,
        // reported with the errors.
        let undecided = !eval.errors.is_empty()
            || (!relation_errors.is_empty() && active.compiled.reads_relations);
        Ok(Decision {
            allowed: eval.allowed && !undecided,
            policies: eval.policies,
            overridden: eval.overridden,
            errors: eval.errors.into_iter().chain(relation_errors).collect(),
            rebac,
            relations,
            risk,
            revision: rev,
            policy_version: active.version.clone(),
            rebac_path,
        })
    }

    /// The hydrated entity set of a request's subject and resource (with stored attributes
    /// when the schema declares any), cached like sub-results: the model, the revision, the
    /// policy version (its schema) and the attributes epoch are in the key.
    /// The hierarchy rests on tuples: the query is bounded by their earliest expiry.
    async fn entity_set(
        &self,
        q: &graph::Query<'_>,
        active: &ActivePolicies,
        req: &DecisionRequest,
    ) -> Result<Arc<cedar_policy::Entities>> {
        let (store, rev, cached) = (q.store, q.revision, q.cache.is_some());
        let now = chrono::Utc::now().timestamp_micros();
        let bad = |e: String| Error::Validation(e);
        let epoch = self.epoch_for(store, active);
        let key = (
            store.to_string(),
            format!(
                "{}@{rev}/{}/{epoch}",
                active.hierarchy.model_id, active.version
            ),
            req.subject.clone(),
            req.resource.clone(),
        );
        // Attributes sent with the request make the set this request's own.
        let cached = cached && req.attributes.is_empty();
        if cached
            && let Some((e, until)) = self.entity_sets.get(&key)
            && until > now
        {
            q.bound(until);
            return Ok(e);
        }
        let (edges, until) = self
            .hydrate(
                store,
                rev,
                cached,
                &active.hierarchy,
                &[&req.subject, &req.resource],
            )
            .await?;
        let mut attributes: HashMap<String, policy::Attributes> = HashMap::new();
        if active.declares_attributes {
            let names: Vec<String> = edges.iter().map(|(e, _)| e.clone()).collect();
            for a in self.ds.read_entity_attributes(store, &names).await? {
                let uid = policy::entity_uid(&a.entity).map_err(bad)?;
                // Attributes that no longer match the schema (it changed since) fail the
                // decision: left out, a forbid reading them would be skipped and allow.
                let parsed = policy::parse_attributes(&uid, &a.attributes, &active.compiled.schema)
                    .map_err(|e| {
                        bad(format!(
                            "the stored attributes of `{}` no longer match the store's Cedar \
                             schema ({e}); update or delete them",
                            a.entity
                        ))
                    })?;
                attributes.insert(a.entity, parsed);
            }
        }
        for (entity, sent) in &req.attributes {
            let uid = policy::entity_uid(entity).map_err(bad)?;
            let mut sent = std::borrow::Cow::Borrowed(sent);
            if req.ignore_undeclared {
                active
                    .compiled
                    .prune_attributes(&uid.type_name().to_string(), sent.to_mut());
            }
            let parsed =
                policy::parse_attributes(&uid, &sent, &active.compiled.schema).map_err(|e| {
                    bad(format!(
                        "properties of `{entity}` do not match the schema: {e}"
                    ))
                })?;
            attributes.insert(entity.clone(), parsed);
        }
        let mut uids = Vec::with_capacity(edges.len());
        for (child, parents) in &edges {
            let parents = parents
                .iter()
                .map(|p| policy::entity_uid(p))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(bad)?;
            uids.push((
                policy::entity_uid(child).map_err(bad)?,
                parents,
                attributes.remove(child),
            ));
        }
        let e = Arc::new(policy::entities(uids, &active.compiled).map_err(|e| bad(e.0))?);
        q.bound(until);
        if cached {
            self.entity_sets.insert(key, (e.clone(), until));
        }
        Ok(e)
    }

    /// The attributes epoch for cache keys of entity sets (and decisions) under `active`.
    /// Without pub/sub, another node's attribute change is not announced: what holds
    /// attributes then lives at most about a second, as compiled policies do; with it, at most
    /// ten seconds should an announcement be lost.
    fn epoch_for(&self, store: &str, active: &ActivePolicies) -> u64 {
        let epoch = self.attributes_epochs.of(store);
        if !active.declares_attributes {
            return epoch;
        }
        // With pub/sub, a lost message still heals within ten seconds.
        let bucket = if self.has_notifier() { 10 } else { 1 };
        epoch ^ ((chrono::Utc::now().timestamp().unsigned_abs() / bucket) << 32)
    }

    /// The entities `start` and all their ancestors through parent links of direct tuples at
    /// `rev`, each with its parents. Links that would close a cycle are dropped (Cedar's
    /// hierarchy is a DAG); more than [`MAX_ENTITIES`] is an error, never a partial hierarchy.
    async fn hydrate(
        &self,
        store: &str,
        rev: Revision,
        cached: bool,
        hierarchy: &Hierarchy,
        start: &[&str],
    ) -> Result<(Vec<(String, Vec<String>)>, i64)> {
        let mut until = i64::MAX;
        let mut parents: HashMap<String, Vec<String>> = HashMap::new();
        let mut queue: Vec<String> = start.iter().map(|s| s.to_string()).collect();
        let mut seen: HashSet<String> = queue.iter().cloned().collect();
        while let Some(e) = queue.pop() {
            let Some(o) = ObjectRef::parse(&e) else {
                continue;
            };
            let mine = self
                .entity_parents(store, rev, cached, hierarchy, &e, o)
                .await?;
            until = until.min(mine.1);
            let mine = &mine.0;
            for p in mine.iter() {
                if seen.insert(p.clone()) {
                    if seen.len() > MAX_ENTITIES {
                        return Err(Error::Validation(format!(
                            "the entity hierarchy of this request has more than {MAX_ENTITIES} entities"
                        )));
                    }
                    queue.push(p.clone());
                }
            }
            parents.insert(e, mine.clone());
        }
        drop_cycles(&mut parents);
        let mut out: Vec<(String, Vec<String>)> = parents.into_iter().collect();
        out.sort();
        Ok((out, until))
    }
}

impl Engine {
    /// The parents of one entity at `rev`, and until when they hold (µs; the earliest expiry
    /// of the tuples that make them), from the cross-request cache when allowed (the model
    /// and the revision are part of the key, and an answer past its expiry is not served, so
    /// a cached answer is never stale).
    async fn entity_parents(
        &self,
        store: &str,
        rev: Revision,
        cached: bool,
        hierarchy: &Hierarchy,
        e: &str,
        o: ObjectRef<'_>,
    ) -> Result<Arc<super::Parents>> {
        let key = (
            store.to_string(),
            hierarchy.model_id.clone(),
            rev,
            e.to_string(),
        );
        let now = chrono::Utc::now();
        if cached
            && let Some(p) = self.parents.get(&key)
            && p.1 > now.timestamp_micros()
        {
            return Ok(p);
        }
        let mut mine = Vec::new();
        let mut until = i64::MAX;
        // Memberships: tuples where `e` is the user.
        let as_user = TupleFilter {
            users: vec![e.to_string()],
            ..TupleFilter::default()
        };
        // Parent links: tuples of `e`'s tupleset relations.
        let as_object = TupleFilter {
            object_type: Some(o.object_type.to_string()),
            object_id: Some(o.object_id.to_string()),
            ..TupleFilter::default()
        };
        for f in [as_user, as_object] {
            let page = self
                .ds
                .read_tuples(store, &f, rev, &Page::default())
                .await?;
            for t in page.items {
                if !t.key.live_at(now) {
                    continue;
                }
                if let Some((child, parent)) =
                    hierarchy.edge(&t.key.object, &t.key.relation, &t.key.user)
                    && child == e
                {
                    if let Some(x) = t.key.expires_at {
                        until = until.min(x.timestamp_micros());
                    }
                    if !mine.contains(&parent) {
                        mine.push(parent);
                    }
                }
            }
        }
        let mine = Arc::new((mine, until));
        if cached {
            self.parents.insert(key, mine.clone());
        }
        Ok(mine)
    }
}

/// Removes the parent links that close a cycle (back edges of a depth-first walk).
fn drop_cycles(parents: &mut HashMap<String, Vec<String>>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: HashMap<String, Mark> = HashMap::new();
    let mut keys: Vec<String> = parents.keys().cloned().collect();
    keys.sort();
    for root in keys {
        if marks.contains_key(&root) {
            continue;
        }
        // Iterative DFS: (node, index of the next parent to visit).
        let mut stack: Vec<(String, usize)> = vec![(root.clone(), 0)];
        marks.insert(root, Mark::Active);
        while let Some((node, i)) = stack.pop() {
            let next = parents.get(&node).and_then(|p| p.get(i)).cloned();
            match next {
                None => {
                    marks.insert(node, Mark::Done);
                }
                Some(p) => {
                    stack.push((node.clone(), i + 1));
                    match marks.get(&p) {
                        Some(Mark::Active) => {
                            if let Some(list) = parents.get_mut(&node) {
                                list.retain(|x| *x != p);
                                // The list shifted: revisit the same index.
                                if let Some(top) = stack.last_mut() {
                                    top.1 = i;
                                }
                            }
                        }
                        Some(Mark::Done) => {}
                        None => {
                            marks.insert(p.clone(), Mark::Active);
                            stack.push((p, 0));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_cut_and_everything_else_kept() {
        let mut p: HashMap<String, Vec<String>> = HashMap::new();
        p.insert("a".into(), vec!["b".into(), "d".into()]);
        p.insert("b".into(), vec!["c".into()]);
        p.insert("c".into(), vec!["a".into(), "d".into()]);
        p.insert("d".into(), vec![]);
        drop_cycles(&mut p);
        let edges: usize = p.values().map(Vec::len).sum();
        assert_eq!(edges, 4, "one back edge removed: {p:?}");
        assert!(!p["c"].contains(&"a".to_string()), "{p:?}");
        assert_eq!(p["a"], vec!["b".to_string(), "d".to_string()]);
    }
}
