//! Cedar policies over the relationship graph: a store's Cedar schema (supplied by the tenant or
//! generated from its authorization model), policy sets validated against it in strict mode,
//! and decisions that feed the graph's answer into Cedar.
//!
//! Naming, so that policies are portable: each model type `t` is the Cedar entity type `t`
//! (`user::"anne"`), each relation `r` is `Action::"r"`.

mod context;
pub mod hierarchy;
pub mod schema;
mod slice;
pub mod testfile;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, Schema, SlotId, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;

pub use hierarchy::Hierarchy;

use crate::store::TemplateLink;

/// The policy set of a store that has never been given one: the graph decides.
pub const BASELINE: &str =
    "@id(\"baseline\")\npermit (principal, action, resource)\nwhen { context.rebac };\n";

/// Largest policy text accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// A problem in a policy set or schema, with the policy it belongs to and its place in the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyIssue {
    /// The policy's id (its `@id` annotation, or `policyN` by position), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    pub message: String,
    /// 1-based line and column in the policy text, 0 when unknown.
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a policy set or schema was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid policies: {}", join(.0))]
    InvalidPolicies(Vec<PolicyIssue>),
    #[error("invalid Cedar schema: {0}")]
    InvalidSchema(String),
}

fn join(issues: &[PolicyIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line and column of a byte offset in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |l| l.chars().count() + 1);
    (line, column)
}

fn issue(
    text: &str,
    policy_id: Option<String>,
    d: &dyn Diagnostic,
    message: String,
) -> PolicyIssue {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map_or((0, 0), |o| line_column(text, o));
    PolicyIssue {
        policy_id,
        message,
        line,
        column,
    }
}

/// A policy set parsed and validated against a schema, ready to evaluate. Share it behind an
/// `Arc`: evaluation never clones it.
#[derive(Debug)]
pub struct CompiledPolicies {
    pub text: String,
    pub set: PolicySet,
    pub schema: Arc<Schema>,
    /// Annotations of every policy, by id.
    pub annotations: HashMap<String, BTreeMap<String, String>>,
    /// Every policy as a decision names it, built once.
    determining: HashMap<PolicyId, Arc<DeterminingPolicy>>,
    /// Picks the policies whose scope can match a request.
    slicer: slice::Slicer,
    /// The schema's actions as entities (with their groups).
    action_entities: Vec<Entity>,
    /// Request shapes `(principal type, action, resource type)` that passed the schema's
    /// request check with Gatehouse's own context.
    validated:
        std::sync::RwLock<std::collections::HashSet<(EntityTypeName, EntityUid, EntityTypeName)>>,
    /// Gatehouse-only contexts already built, by their values (a `Context` clone is an `Arc`).
    contexts: moka::sync::Cache<u64, Arc<(GraphContext, Risk, Context)>>,
    /// The declared context record of each action, read from the schema JSON
    /// ([`Self::with_context_types`]), so that a caller's context is converted without Cedar's
    /// JSON reader. Empty: every caller context goes through that reader.
    context_types: HashMap<EntityUid, HashMap<String, context::Shape>>,
    /// The context keys and attribute names the schema declares ([`Self::with_context_types`]).
    declared: context::Declared,
    /// Whether any policy may read `context.relations` (conservatively: the text mentions
    /// `relations`), so that decisions which do not return them can skip computing them.
    pub reads_relations: bool,
    /// Whether any policy may read `context.risk` (the text mentions `risk`): otherwise a
    /// decision without risk signals skips loading the subject's history.
    pub reads_risk: bool,
}

impl CompiledPolicies {
    /// Parses `text`, names each policy by its `@id` annotation (or `policyN` by position), and
    /// validates the set in strict mode against `schema`. Every problem is reported with its
    /// policy id and line:column.
    pub fn compile(
        text: &str,
        links: &[TemplateLink],
        schema: Arc<Schema>,
    ) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::InvalidPolicies(vec![PolicyIssue {
                policy_id: None,
                message: format!(
                    "the policy text is {} bytes; at most {MAX_POLICY_BYTES} are accepted",
                    text.len()
                ),
                line: 0,
                column: 0,
            }]));
        }
        // Nesting and operator chains are bounded before Cedar's parser, which recurses on
        // them, sees the text.
        crate::bounds::check(text, crate::bounds::Language::Cedar).map_err(|e| {
            PolicyError::InvalidPolicies(vec![PolicyIssue {
                policy_id: None,
                message: e.message,
                line: e.line,
                column: e.column,
            }])
        })?;
        let parsed = PolicySet::from_str(text).map_err(|errs| {
            PolicyError::InvalidPolicies(
                errs.iter()
                    .map(|e| issue(text, None, e, e.to_string()))
                    .collect(),
            )
        })?;
        // Re-id by `@id`, remembering the positional ids for error messages.
        let mut set = PolicySet::new();
        let mut renamed: HashMap<PolicyId, PolicyId> = HashMap::new();
        let mut annotations = HashMap::new();
        let mut issues = Vec::new();
        let id_of =
            |pos: &PolicyId, ann: Option<&str>| ann.map_or_else(|| pos.clone(), PolicyId::new);
        for t in parsed.templates() {
            let id = id_of(t.id(), t.annotation("id"));
            annotations.insert(id.to_string(), collect(t.annotations()));
            renamed.insert(t.id().clone(), id.clone());
            if let Err(e) = set.add_template(t.new_id(id.clone())) {
                issues.push(issue(text, Some(id.to_string()), &e, e.to_string()));
            }
        }
        for p in parsed.policies() {
            let id = id_of(p.id(), p.annotation("id"));
            annotations.insert(id.to_string(), collect(p.annotations()));
            renamed.insert(p.id().clone(), id.clone());
            if let Err(e) = set.add(p.new_id(id.clone())) {
                issues.push(issue(text, Some(id.to_string()), &e, e.to_string()));
            }
        }
        if !issues.is_empty() {
            return Err(PolicyError::InvalidPolicies(issues));
        }
        // Validate the positional set: its errors carry spans into `text`.
        let validator = Validator::new((*schema).clone());
        let result = validator.validate(&parsed, ValidationMode::Strict);
        let issues: Vec<PolicyIssue> = result
            .validation_errors()
            .map(|e| {
                let id = renamed
                    .get(e.policy_id())
                    .unwrap_or(e.policy_id())
                    .to_string();
                let message = e
                    .to_string()
                    .replace(&format!("`{}`", e.policy_id()), &format!("`{id}`"));
                issue(text, Some(id), e, message)
            })
            .collect();
        if !issues.is_empty() {
            return Err(PolicyError::InvalidPolicies(issues));
        }
        if !links.is_empty() {
            Self::link(&mut set, links, &mut annotations)?;
            // Linked policies are checked against the schema as well (slot entity types).
            let result = validator.validate(&set, ValidationMode::Strict);
            let issues: Vec<PolicyIssue> = result
                .validation_errors()
                .map(|e| PolicyIssue {
                    policy_id: Some(e.policy_id().to_string()),
                    message: e.to_string(),
                    line: 0,
                    column: 0,
                })
                .collect();
            if !issues.is_empty() {
                return Err(PolicyError::InvalidPolicies(issues));
            }
        }
        let slicer = slice::Slicer::new(&set, &schema);
        let action_entities = schema
            .action_entities()
            .map(|es| es.iter().cloned().collect())
            .map_err(|e| PolicyError::InvalidSchema(e.to_string()))?;
        let determining = annotations
            .iter()
            .map(|(id, a)| {
                (
                    PolicyId::new(id),
                    Arc::new(DeterminingPolicy {
                        id: id.clone(),
                        annotations: a.clone(),
                    }),
                )
            })
            .collect();
        Ok(Self {
            text: text.to_string(),
            set,
            schema,
            annotations,
            determining,
            slicer,
            action_entities,
            validated: std::sync::RwLock::default(),
            contexts: moka::sync::Cache::new(10_000),
            context_types: HashMap::new(),
            declared: context::Declared::default(),
            reads_relations: text.contains("relations"),
            reads_risk: text.contains("risk"),
        })
    }
}

impl CompiledPolicies {
    /// Reads each action's declared context from `schema_json` (the JSON the schema was parsed
    /// from), so that callers' contexts are converted directly instead of by Cedar's JSON
    /// reader. Decisions are the same either way: a context that does not fit the direct
    /// conversion, or that the schema check refuses, is read by Cedar's reader.
    #[must_use]
    pub fn with_context_types(mut self, schema_json: &serde_json::Value) -> Self {
        self.context_types = context::shapes(schema_json);
        self.declared = context::declared(schema_json);
        self
    }

    /// Leaves out of a caller's context what the schema does not declare for `action`, into
    /// nested records; nothing when that is not known (no schema JSON, or a context record
    /// it cannot resolve).
    pub fn prune_context(
        &self,
        action: &EntityUid,
        context: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(keys) = self.declared.context.get(action) {
            keys.prune(context);
        }
    }

    /// Leaves out of sent attributes what the schema does not declare for `entity_type`.
    pub fn prune_attributes(
        &self,
        entity_type: &str,
        attributes: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(keys) = self.declared.attributes.get(entity_type) {
            keys.prune(attributes);
        }
    }

    /// Adds the template-linked policies; every problem names the link's id.
    fn link(
        set: &mut PolicySet,
        links: &[TemplateLink],
        annotations: &mut HashMap<String, BTreeMap<String, String>>,
    ) -> Result<(), PolicyError> {
        let mut issues = Vec::new();
        for l in links {
            let problem = |message: String| PolicyIssue {
                policy_id: Some(l.id.clone()),
                message,
                line: 0,
                column: 0,
            };
            let mut slots = HashMap::new();
            for (slot, value) in [
                (SlotId::principal(), &l.principal),
                (SlotId::resource(), &l.resource),
            ] {
                if let Some(v) = value {
                    match entity_uid(v) {
                        Ok(uid) => {
                            slots.insert(slot, uid);
                        }
                        Err(e) => issues.push(problem(e)),
                    }
                }
            }
            let template = PolicyId::new(&l.template);
            match set.link(template, PolicyId::new(&l.id), slots) {
                Ok(()) => {
                    let inherited = annotations.get(&l.template).cloned().unwrap_or_default();
                    annotations.insert(l.id.clone(), inherited);
                }
                Err(e) => issues.push(problem(format!(
                    "cannot link template `{}`: {e}",
                    l.template
                ))),
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::InvalidPolicies(issues))
        }
    }
}

fn collect<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    it.map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Parses a Cedar schema in JSON form.
pub fn parse_schema(json: &serde_json::Value) -> Result<Schema, PolicyError> {
    Schema::from_json_value(json.clone()).map_err(|e| PolicyError::InvalidSchema(e.to_string()))
}

/// `type:id` as a Cedar entity uid.
pub fn entity_uid(object: &str) -> Result<EntityUid, String> {
    let (t, id) = object
        .split_once(':')
        .filter(|(t, id)| !t.is_empty() && !id.is_empty())
        .ok_or_else(|| format!("`{object}` is not `type:id`"))?;
    Ok(EntityUid::from_type_name_and_id(
        type_name(t)?,
        EntityId::new(id),
    ))
}

/// Most type names remembered parsed (a type name is parsed by Cedar's grammar).
const MAX_TYPE_NAMES: usize = 10_000;

/// A Cedar type name, parsed once per process.
fn type_name(t: &str) -> Result<EntityTypeName, String> {
    use std::sync::{LazyLock, RwLock};
    static PARSED: LazyLock<RwLock<HashMap<String, EntityTypeName>>> =
        LazyLock::new(RwLock::default);
    if let Some(n) = PARSED.read().ok().and_then(|m| m.get(t).cloned()) {
        return Ok(n);
    }
    let n =
        EntityTypeName::from_str(t).map_err(|_| format!("type `{t}` is not a Cedar identifier"))?;
    if let Ok(mut m) = PARSED.write()
        && m.len() < MAX_TYPE_NAMES
    {
        m.insert(t.to_string(), n.clone());
    }
    Ok(n)
}

/// `Action::"relation"`.
pub fn action_uid(relation: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        type_name("Action")?,
        EntityId::new(relation),
    ))
}

/// What Gatehouse adds to the caller's context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct GraphContext {
    /// The graph's answer for this action (relation) on the resource.
    pub rebac: bool,
    /// Every relation of the resource's type that the subject holds.
    pub relations: Vec<String>,
}

/// The risk of the request (`context.risk`).
pub use crate::risk::Assessment as Risk;

/// One policy that determined a decision.
#[derive(Debug, Clone, Serialize)]
pub struct DeterminingPolicy {
    pub id: String,
    pub annotations: BTreeMap<String, String>,
}

/// Cedar's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub allowed: bool,
    pub policies: Vec<Arc<DeterminingPolicy>>,
    /// With explain, on a deny: the permits that were satisfied but overridden by a forbid.
    pub overridden: Vec<Arc<DeterminingPolicy>>,
    pub errors: Vec<String>,
}

/// Why a request could not be evaluated (bad input, not a deny).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Who does what on which entity.
#[derive(Debug, Clone)]
pub struct Target {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
}

/// Evaluates one request: `context` is the caller's, to which `rebac`, `relations` and `risk`
/// are added; `entities` is the hydrated hierarchy of principal and resource.
pub fn evaluate(
    policies: &CompiledPolicies,
    target: Target,
    caller_context: Option<&serde_json::Map<String, serde_json::Value>>,
    graph: &GraphContext,
    risk: &Risk,
    entities: &Entities,
) -> Result<Evaluation, RequestError> {
    evaluate_with(
        policies,
        target,
        caller_context,
        graph,
        risk,
        entities,
        false,
    )
}

/// [`evaluate`], and on a deny also the permits that were satisfied but overridden by a
/// forbid (`explain`).
pub fn evaluate_explained(
    policies: &CompiledPolicies,
    target: Target,
    caller_context: Option<&serde_json::Map<String, serde_json::Value>>,
    graph: &GraphContext,
    risk: &Risk,
    entities: &Entities,
) -> Result<Evaluation, RequestError> {
    evaluate_with(
        policies,
        target,
        caller_context,
        graph,
        risk,
        entities,
        true,
    )
}

fn evaluate_with(
    policies: &CompiledPolicies,
    target: Target,
    caller_context: Option<&serde_json::Map<String, serde_json::Value>>,
    graph: &GraphContext,
    risk: &Risk,
    entities: &Entities,
    explain: bool,
) -> Result<Evaluation, RequestError> {
    let schema = policies.schema.as_ref();
    let Target {
        principal,
        action,
        resource,
    } = target;
    let only_ours = caller_context.is_none_or(|c| c.is_empty());
    let shape = (
        principal.type_name().clone(),
        action.clone(),
        resource.type_name().clone(),
    );
    // With only Gatehouse's context, the request's types are all the schema checks: once a
    // (principal type, action, resource type) passed, later requests skip the check.
    let known_good = only_ours && policies.validated.read().is_ok_and(|v| v.contains(&shape));
    let caller = caller_context.filter(|c| !c.is_empty());
    // Whether the caller's context was converted directly (see [`context`]).
    let mut direct = false;
    let context = match caller {
        // Only Gatehouse's attributes: built directly, without a JSON round trip.
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (graph, risk).hash(&mut h);
            let key = h.finish();
            // A hit is checked against the values: a hash collision builds afresh.
            match policies.contexts.get(&key) {
                Some(hit) if hit.0 == *graph && hit.1 == *risk => hit.2.clone(),
                _ => {
                    let c = gatehouse_context(graph, risk)?;
                    policies
                        .contexts
                        .insert(key, Arc::new((graph.clone(), risk.clone(), c.clone())));
                    c
                }
            }
        }
        Some(caller) => {
            for reserved in ["rebac", "relations", "risk"] {
                if caller.contains_key(reserved) {
                    return Err(RequestError(format!(
                        "context attribute `{reserved}` is set by Gatehouse and cannot be sent"
                    )));
                }
            }
            let converted = policies
                .context_types
                .get(&action)
                .and_then(|record| context::pairs(caller, record))
                .and_then(|mut pairs| {
                    pairs.extend(gatehouse_pairs(graph, risk).ok()?);
                    Context::from_pairs(pairs).ok()
                });
            match converted {
                Some(c) => {
                    direct = true;
                    c
                }
                None => caller_context_from_json(caller, graph, risk, schema, &action)?,
            }
        }
    };
    let slice = policies
        .slicer
        .slice(&principal, &action, &resource, entities)
        .map_err(RequestError)?;
    let request = match (caller, direct) {
        (Some(caller), true) => {
            let again = (principal.clone(), action.clone(), resource.clone());
            match Request::new(principal, action, resource, context, Some(schema)) {
                Ok(r) => r,
                // A directly converted context the schema refuses: Cedar's reader decides (and
                // words the error).
                Err(_) => {
                    let (principal, action, resource) = again;
                    let context = caller_context_from_json(caller, graph, risk, schema, &action)?;
                    Request::new(principal, action, resource, context, Some(schema))
                        .map_err(|e| RequestError(e.to_string()))?
                }
            }
        }
        _ => Request::new(
            principal,
            action,
            resource,
            context,
            (!known_good).then_some(schema),
        )
        .map_err(|e| RequestError(e.to_string()))?,
    };
    if only_ours
        && !known_good
        && let Ok(mut v) = policies.validated.write()
    {
        v.insert(shape);
    }
    let response = Authorizer::new().is_authorized(&request, &slice, entities);
    let named = |ids: &mut dyn Iterator<Item = &PolicyId>| -> Vec<Arc<DeterminingPolicy>> {
        ids.map(|id| {
            policies.determining.get(id).cloned().unwrap_or_else(|| {
                Arc::new(DeterminingPolicy {
                    id: id.to_string(),
                    annotations: BTreeMap::new(),
                })
            })
        })
        .collect()
    };
    let allowed = response.decision() == Decision::Allow;
    // The permits a forbid overrode: the same request against the slice without its forbids.
    let overridden = if explain && !allowed {
        let mut permits = (*slice).clone();
        let forbids: Vec<(PolicyId, bool)> = permits
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Forbid)
            .map(|p| (p.id().clone(), p.is_static()))
            .collect();
        for (id, is_static) in forbids {
            let removed = if is_static {
                permits.remove_static(id).map(|_| ())
            } else {
                permits.unlink(id).map(|_| ())
            };
            removed.map_err(|e| RequestError(e.to_string()))?;
        }
        let r = Authorizer::new().is_authorized(&request, &permits, entities);
        named(&mut r.diagnostics().reason())
    } else {
        vec![]
    };
    Ok(Evaluation {
        allowed,
        policies: named(&mut response.diagnostics().reason()),
        overridden,
        errors: response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect(),
    })
}

/// A caller's context with Gatehouse's attributes, read by Cedar's JSON reader against the
/// action's declared context.
fn caller_context_from_json(
    caller: &serde_json::Map<String, serde_json::Value>,
    graph: &GraphContext,
    risk: &Risk,
    schema: &Schema,
    action: &EntityUid,
) -> Result<Context, RequestError> {
    let mut ctx = caller.clone();
    ctx.insert("rebac".into(), serde_json::Value::Bool(graph.rebac));
    ctx.insert("relations".into(), serde_json::json!(graph.relations));
    ctx.insert("risk".into(), serde_json::json!(risk));
    Context::from_json_value(serde_json::Value::Object(ctx), Some((schema, action)))
        .map_err(|e| RequestError(format!("invalid context: {e}")))
}

/// `rebac`, `relations` and `risk` as context attributes.
fn gatehouse_pairs(
    graph: &GraphContext,
    risk: &Risk,
) -> Result<[(String, cedar_policy::RestrictedExpression); 3], RequestError> {
    use cedar_policy::RestrictedExpression as E;
    let strings = |v: &[String]| E::new_set(v.iter().map(|s| E::new_string(s.clone())));
    let risk = E::new_record([
        ("score".to_string(), E::new_long(risk.score)),
        ("level".to_string(), E::new_string(risk.level.clone())),
        ("signals".to_string(), strings(&risk.signals)),
    ])
    .map_err(|e| RequestError(e.to_string()))?;
    Ok([
        ("rebac".to_string(), E::new_bool(graph.rebac)),
        ("relations".to_string(), strings(&graph.relations)),
        ("risk".to_string(), risk),
    ])
}

/// `rebac`, `relations` and `risk` as a Cedar context.
fn gatehouse_context(graph: &GraphContext, risk: &Risk) -> Result<Context, RequestError> {
    Context::from_pairs(gatehouse_pairs(graph, risk)?).map_err(|e| RequestError(e.to_string()))
}

/// Attribute values of an entity, parsed against the schema.
pub type Attributes = HashMap<String, cedar_policy::RestrictedExpression>;

/// Parses stored attributes (`{"name": value}`) of `entity` against `schema`: the type must be
/// declared and the attributes must match its shape (extension values such as `ipaddr` are
/// written as strings).
pub fn parse_attributes(
    entity: &EntityUid,
    attributes: &serde_json::Map<String, serde_json::Value>,
    schema: &Schema,
) -> Result<Attributes, String> {
    let json = serde_json::json!({
        "uid": { "type": entity.type_name().to_string(), "id": entity.id().unescaped() },
        "attrs": attributes,
        "parents": [],
    });
    let e = Entity::from_json_value(json, Some(schema)).map_err(|e| {
        let mut msg = e.to_string();
        if let Some(help) = miette::Diagnostic::help(&e) {
            msg.push_str(&format!(" ({help})"));
        }
        msg
    })?;
    Ok(e.into_inner().1)
}

/// Builds the entity set of a decision from hierarchy edges and stored attributes.
///
/// The hierarchy comes from the model's parent links, so it is not checked against the schema
/// again on every request (that check was about half the cost of a decision); attributes were
/// parsed against the schema. The schema's action entities, computed once per policy set, are
/// added so that action groups work.
pub fn entities(
    uids: impl IntoIterator<Item = (EntityUid, Vec<EntityUid>, Option<Attributes>)>,
    policies: &CompiledPolicies,
) -> Result<Entities, RequestError> {
    let list = uids
        .into_iter()
        .map(|(uid, parents, attrs)| match attrs {
            None => Ok(Entity::new_no_attrs(uid, parents.into_iter().collect())),
            Some(a) => Entity::new(uid, a, parents.into_iter().collect())
                .map_err(|e| RequestError(e.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .chain(policies.action_entities.iter().cloned());
    Entities::from_entities(list, None).map_err(|e| RequestError(e.to_string()))
}

/// Whether a schema (JSON) declares attributes for any entity type, so that decisions need to
/// load stored attributes. A shape given by a common type counts as declaring some.
pub fn schema_declares_attributes(schema: &serde_json::Value) -> bool {
    let Some(namespaces) = schema.as_object() else {
        return false;
    };
    namespaces.values().any(|ns| {
        ns.get("entityTypes")
            .and_then(|t| t.as_object())
            .is_some_and(|types| {
                types.values().any(|t| match t.get("shape") {
                    None => false,
                    Some(shape) => shape
                        .get("attributes")
                        .and_then(|a| a.as_object())
                        .is_none_or(|a| !a.is_empty()),
                })
            })
    })
}

#[cfg(test)]
mod tests;
