//! Cedar policies of a store and decisions: policy versions, the effective Cedar schema, the
//! native decide endpoint and the OpenID AuthZEN Authorization API 1.0 (evaluation and
//! evaluations), scoped to a store.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use gatehouse_engine::service::{Consistency, Decision, DecisionRequest};
use gatehouse_engine::store::{PolicyVersion, TemplateLink};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openfga::{
    ConsistencyFields, ListQuery, ModelId, StoreId, json_with_token, next_token, page,
};
use super::{ApiError, ApiResult, AppState};

type State = web::Data<AppState>;

/// Most evaluations in one AuthZEN batch.
const MAX_EVALUATIONS: usize = 50;

fn version_json(v: &PolicyVersion, active: Option<&str>) -> Value {
    let mut j = json!({
        "id": v.id,
        "policies": v.policies,
        "created_at": v.created_at,
        "schema_generated": v.schema.is_none(),
        "links": v.links,
    });
    if let Some(s) = &v.schema {
        j["schema"] = s.clone();
    }
    if let Some(a) = active {
        j["active"] = Value::Bool(a == v.id);
    }
    j
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WritePolicies {
    policies: String,
    /// A Cedar schema in JSON form; without one, the schema is generated from the model.
    #[serde(default)]
    schema: Option<Value>,
    /// Whether the new version becomes the active one (default true).
    #[serde(default)]
    activate: Option<bool>,
    /// Policies linked from the templates (`?principal`, `?resource`) of `policies`.
    #[serde(default)]
    links: Vec<TemplateLink>,
}

/// `PUT /stores/{id}/policies`: validates and saves a new version (active unless told not).
pub(super) async fn write_policies(
    state: State,
    store: StoreId,
    body: web::Json<WritePolicies>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    if body.schema.as_ref().is_some_and(|s| !s.is_object()) {
        return Err(ApiError::validation(
            "`schema` must be a Cedar schema in JSON form (an object)",
        ));
    }
    let activate = body.activate.unwrap_or(true);
    let v = state
        .engine
        .write_policies(&store, &body.policies, body.schema, body.links, activate)
        .await?;
    let mut j = version_json(&v, None);
    j["active"] = Value::Bool(activate);
    Ok(HttpResponse::Created().json(j))
}

/// `GET /stores/{id}/policies`: the active version (the baseline when none was written).
pub(super) async fn active_policies(state: State, store: StoreId) -> ApiResult<HttpResponse> {
    let active = state.engine.active_policies(&store).await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": active.version,
        "policies": active.compiled.text,
        "schema_generated": active.generated_schema,
        "authorization_model_id": active.model_id,
    })))
}

/// `GET /stores/{id}/policy-versions`: every version, newest first.
pub(super) async fn list_versions(
    state: State,
    store: StoreId,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let p = page(q.page_size, q.continuation_token, 50)?;
    let res = state.engine.list_policy_versions(&store, &p).await?;
    let active = state.engine.active_policies(&store).await?;
    let versions: Vec<Value> = res
        .items
        .iter()
        .map(|v| version_json(v, Some(&active.version)))
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({ "versions": versions, "continuation_token": next_token(res.next) })))
}

/// `GET /stores/{id}/policy-versions/{version}`.
pub(super) async fn read_version(
    state: State,
    store: StoreId,
    id: ModelId,
) -> ApiResult<HttpResponse> {
    let v = state.engine.policy_version(&store, &id).await?;
    let active = state.engine.active_policies(&store).await?;
    Ok(HttpResponse::Ok().json(version_json(&v, Some(&active.version))))
}

/// `POST /stores/{id}/policy-versions/{version}/activate`: roll back to (or pin) a version.
pub(super) async fn activate_version(
    state: State,
    store: StoreId,
    id: ModelId,
) -> ApiResult<HttpResponse> {
    let v = state.engine.activate_policies(&store, &id).await?;
    let mut j = version_json(&v, None);
    j["active"] = Value::Bool(true);
    Ok(HttpResponse::Ok().json(j))
}

/// `GET /stores/{id}/policy-schema`: the Cedar schema the active policies are checked against.
pub(super) async fn policy_schema(state: State, store: StoreId) -> ApiResult<HttpResponse> {
    let active = state.engine.active_policies(&store).await?;
    Ok(HttpResponse::Ok().json(json!({
        "schema": active.schema_json,
        "generated": active.generated_schema,
        "authorization_model_id": active.model_id,
    })))
}

#[derive(Deserialize)]
pub(super) struct DecideBody {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
    /// Also return why: the tuples that granted `rebac`.
    #[serde(default)]
    explain: bool,
    /// Attributes of the subject or the resource for this request only, by entity.
    #[serde(default)]
    attributes: std::collections::HashMap<String, Map<String, Value>>,
}

fn decision_json(d: &Decision) -> Value {
    let mut v = json!({
        "decision": if d.allowed { "allow" } else { "deny" },
        "allowed": d.allowed,
        "policies": d.policies,
        "errors": d.errors,
        "rebac": d.rebac,
        "relations": d.relations,
        "risk": d.risk,
        "policy_version": d.policy_version,
        "revision": d.revision,
    });
    if let Some(path) = &d.rebac_path {
        v["explain"] = json!({
            "rebac_path": path,
            "policies": d.policies,
            "overridden_permits": d.overridden,
        });
    }
    v
}

/// `POST /stores/{id}/decide`: `{subject, action, resource, context}` → the decision, the
/// policies that determined it (with their annotations), evaluation errors, the revision.
pub(super) async fn decide(
    state: State,
    store: StoreId,
    body: web::Json<DecideBody>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    for (name, v) in [
        ("subject", &body.subject),
        ("action", &body.action),
        ("resource", &body.resource),
    ] {
        if v.is_empty() {
            return Err(ApiError::validation(format!("`{name}` is required")));
        }
    }
    if let Some(other) = body
        .attributes
        .keys()
        .find(|e| **e != body.subject && **e != body.resource)
    {
        return Err(ApiError::validation(format!(
            "`attributes` may name the subject and the resource only, not `{other}`"
        )));
    }
    let req = DecisionRequest {
        attributes: body.attributes,
        ignore_undeclared: false,
        quiet: false,
        consistency: ConsistencyFields::of(&body.consistency, &body.consistency_token)
            .resolve(&store)?,
        subject: body.subject,
        action: body.action,
        resource: body.resource,
        context: body.context,
        explain: body.explain,
        lean: false,
    };
    let d = state.engine.decide(&store, &req).await?;
    Ok(json_with_token(
        StatusCode::OK,
        decision_json(&d),
        &store,
        d.revision,
    ))
}

// ---- AuthZEN ----

#[derive(Deserialize, Clone, Default)]
struct AzEntity {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

#[derive(Deserialize, Clone, Default)]
struct AzAction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// One AuthZEN evaluation; in a batch, absent parts come from the request's defaults.
#[derive(Deserialize, Clone, Default)]
pub(super) struct AzEvaluation {
    #[serde(default)]
    subject: Option<AzEntity>,
    #[serde(default)]
    action: Option<AzAction>,
    #[serde(default)]
    resource: Option<AzEntity>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
struct AzOptions {
    #[serde(default)]
    evaluations_semantic: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct AzBatch {
    #[serde(flatten)]
    defaults: AzEvaluation,
    #[serde(default)]
    evaluations: Option<Vec<AzEvaluation>>,
    #[serde(default)]
    options: Option<AzOptions>,
}

fn az_entity(e: Option<&AzEntity>, what: &str) -> ApiResult<String> {
    let e = e.ok_or_else(|| ApiError::validation(format!("`{what}` is required")))?;
    let kind = e.kind.as_deref().filter(|k| !k.is_empty());
    let id = e.id.as_deref().filter(|i| !i.is_empty());
    let (Some(kind), Some(id)) = (kind, id) else {
        return Err(ApiError::validation(format!(
            "`{what}` needs a non-empty `type` and `id`"
        )));
    };
    Ok(format!("{kind}:{id}"))
}

/// An AuthZEN decision, serialized without building a JSON tree.
#[derive(serde::Serialize)]
struct AzDecision<'a> {
    decision: bool,
    context: AzReasons<'a>,
}

#[derive(serde::Serialize)]
struct AzReasons<'a> {
    policies: Vec<&'a str>,
    errors: &'a [String],
    policy_version: &'a str,
    revision: gatehouse_engine::store::Revision,
}

impl<'a> AzDecision<'a> {
    fn of(d: &'a Decision) -> Self {
        Self {
            decision: d.allowed,
            context: AzReasons {
                policies: d.policies.iter().map(|p| p.id.as_str()).collect(),
                errors: &d.errors,
                policy_version: &d.policy_version,
                revision: d.revision,
            },
        }
    }
}

async fn az_decide(state: &State, store: &str, e: &AzEvaluation) -> ApiResult<Decision> {
    Ok(state.engine.decide(store, &az_request(e)?).await?)
}

/// The decision request of an AuthZEN evaluation.
fn az_request(e: &AzEvaluation) -> ApiResult<DecisionRequest> {
    let action = e
        .action
        .as_ref()
        .ok_or_else(|| ApiError::validation("`action` is required"))?;
    let name = action
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::validation("`action` needs a non-empty `name`"))?;
    // The action's `properties` reach the policies as `context.action` (a record the schema
    // declares in the action's context, e.g. `action: {soft: Bool?}`).
    let mut context = e.context.clone();
    if let Some(p) = action.properties.as_ref().filter(|p| !p.is_empty()) {
        let c = context.get_or_insert_with(Map::new);
        if c.contains_key("action") {
            return Err(ApiError::validation(
                "`context.action` is where `action.properties` go: send them in one place",
            ));
        }
        c.insert("action".into(), Value::Object(p.clone()));
    }
    let subject = az_entity(e.subject.as_ref(), "subject")?;
    let resource = az_entity(e.resource.as_ref(), "resource")?;
    // `properties` are the entities' attributes for this request.
    let mut attributes = std::collections::HashMap::new();
    for (entity, sent) in [(&subject, &e.subject), (&resource, &e.resource)] {
        if let Some(p) = sent
            .as_ref()
            .and_then(|s| s.properties.as_ref())
            .filter(|p| !p.is_empty())
        {
            if attributes.contains_key(entity) {
                return Err(ApiError::validation(
                    "subject and resource are one entity: send its `properties` once",
                ));
            }
            attributes.insert(entity.clone(), p.clone());
        }
    }
    let req = DecisionRequest {
        subject,
        action: name.to_string(),
        resource,
        context,
        lean: true,
        attributes,
        ignore_undeclared: true,
        ..DecisionRequest::default()
    };
    Ok(req)
}

/// `GET /.well-known/authzen-configuration/{store_id}` and
/// `GET /.well-known/authzen-configuration/stores/{store_id}` (AuthZEN 1.0 PDP metadata): each
/// store is a policy decision point named `{issuer}/stores/{store_id}`, and the second path is
/// the one a PEP derives from that identifier. Public, like OpenID discovery; the answer is
/// the same for any well-formed store id, so it says nothing of which stores exist.
pub(super) async fn authzen_configuration(
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    let id = id.strip_prefix("stores/").unwrap_or(&id);
    if ulid::Ulid::from_string(id).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "undefined_endpoint",
            "no such endpoint: the path names no store id",
        ));
    }
    let pdp = format!("{}/stores/{id}", state.issuer.trim_end_matches('/'));
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=3600"))
        .json(json!({
            "policy_decision_point": pdp,
            "access_evaluation_endpoint": format!("{pdp}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{pdp}/access/v1/evaluations"),
            "search_subject_endpoint": format!("{pdp}/access/v1/search/subject"),
            "search_resource_endpoint": format!("{pdp}/access/v1/search/resource"),
            "search_action_endpoint": format!("{pdp}/access/v1/search/action"),
        })))
}

/// `POST /stores/{id}/access/v1/evaluation` (AuthZEN 1.0).
pub(super) async fn evaluation(
    state: State,
    store: StoreId,
    body: web::Json<AzEvaluation>,
) -> ApiResult<HttpResponse> {
    let d = az_decide(&state, &store, &body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(AzDecision::of(&d)))
}

/// `POST /stores/{id}/access/v1/evaluations` (AuthZEN 1.0 batch): each evaluation inherits
/// the request's subject, action, resource and context where it has none; the
/// `evaluations_semantic` option may stop at the first deny or the first permit.
pub(super) async fn evaluations(
    state: State,
    store: StoreId,
    body: web::Json<AzBatch>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let semantic = body
        .options
        .and_then(|o| o.evaluations_semantic)
        .unwrap_or_else(|| "execute_all".into());
    if ![
        "execute_all",
        "deny_on_first_deny",
        "permit_on_first_permit",
    ]
    .contains(&semantic.as_str())
    {
        return Err(ApiError::validation(format!(
            "invalid `evaluations_semantic` `{semantic}`: expected `execute_all`, \
             `deny_on_first_deny` or `permit_on_first_permit`"
        )));
    }
    let items = match body.evaluations {
        None => {
            let d = az_decide(&state, &store, &body.defaults).await?;
            return Ok(HttpResponse::Ok().json(AzDecision::of(&d)));
        }
        Some(items) if items.is_empty() => {
            let d = az_decide(&state, &store, &body.defaults).await?;
            return Ok(HttpResponse::Ok().json(AzDecision::of(&d)));
        }
        Some(items) => items,
    };
    if items.len() > MAX_EVALUATIONS {
        return Err(ApiError::validation(format!(
            "at most {MAX_EVALUATIONS} evaluations are allowed in one request"
        )));
    }
    // An item that is itself malformed (no resource, say) is a deny with its error, like one
    // that cannot be decided: AuthZEN answers the batch, never a 400 for one item.
    let d = &body.defaults;
    let resolved: Vec<AzEvaluation> = items
        .into_iter()
        .map(|e| AzEvaluation {
            subject: e.subject.or_else(|| d.subject.clone()),
            action: e.action.or_else(|| d.action.clone()),
            resource: e.resource.or_else(|| d.resource.clone()),
            context: e.context.or_else(|| d.context.clone()),
        })
        .collect();
    let mut out = Vec::with_capacity(resolved.len());
    for e in &resolved {
        let v = match az_decide(&state, &store, e).await {
            Ok(d) => serde_json::to_value(AzDecision::of(&d))
                .map_err(|e| ApiError::from(gatehouse_engine::Error::Storage(e.to_string())))?,
            // An evaluation that cannot be decided is a deny with the reason, as AuthZEN's
            // batch semantics expect; the others still run.
            Err(err) => json!({
                "decision": false,
                "context": { "error": { "status": err.status.as_u16(), "code": err.code, "message": err.message } }
            }),
        };
        let decision = v["decision"].as_bool().unwrap_or(false);
        out.push(v);
        if (semantic == "deny_on_first_deny" && !decision)
            || (semantic == "permit_on_first_permit" && decision)
        {
            break;
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "evaluations": out })))
}

#[derive(Deserialize, Default)]
struct AzPage {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

/// An AuthZEN search: the parts of an evaluation, one of them with only a `type` (or, for
/// actions, absent), and paging.
#[derive(Deserialize)]
pub(super) struct AzSearch {
    #[serde(flatten)]
    e: AzEvaluation,
    #[serde(default)]
    page: Option<AzPage>,
}

/// Most results on one search page (and the default).
const MAX_SEARCH_PAGE: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Searched {
    Subject,
    Resource,
    Action,
}

/// `POST /stores/{id}/access/v1/search/subject`: every subject of the type that may do the
/// action on the resource.
pub(super) async fn search_subject(
    state: State,
    store: StoreId,
    body: web::Json<AzSearch>,
) -> ApiResult<HttpResponse> {
    az_search(&state, &store, body.into_inner(), Searched::Subject).await
}

/// `POST /stores/{id}/access/v1/search/resource`: every resource of the type the subject may
/// do the action on.
pub(super) async fn search_resource(
    state: State,
    store: StoreId,
    body: web::Json<AzSearch>,
) -> ApiResult<HttpResponse> {
    az_search(&state, &store, body.into_inner(), Searched::Resource).await
}

/// `POST /stores/{id}/access/v1/search/action`: every action the subject may do on the
/// resource.
pub(super) async fn search_action(
    state: State,
    store: StoreId,
    body: web::Json<AzSearch>,
) -> ApiResult<HttpResponse> {
    az_search(&state, &store, body.into_inner(), Searched::Action).await
}

fn az_type<'a>(e: Option<&'a AzEntity>, what: &str) -> ApiResult<&'a str> {
    e.and_then(|e| e.kind.as_deref())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::validation(format!("`{what}` needs a non-empty `type`")))
}

/// Searches by deciding every candidate at one revision (the first page's, carried by the
/// page token): the store's known entities of the searched type (in its relationships or
/// with attributes), or the resource type's relations for actions. What is returned is
/// exactly what an evaluation at that revision allows.
async fn az_search(
    state: &State,
    store: &str,
    body: AzSearch,
    what: Searched,
) -> ApiResult<HttpResponse> {
    let e = body.e;
    let action_name = || -> ApiResult<String> {
        e.action
            .as_ref()
            .and_then(|a| a.name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::validation("`action` needs a non-empty `name`"))
    };
    // What the request fixes, and the binding of its page tokens.
    let (searched_type, fixed) = match what {
        Searched::Subject => (
            az_type(e.subject.as_ref(), "subject")?.to_string(),
            format!(
                "{}\0{}",
                action_name()?,
                az_entity(e.resource.as_ref(), "resource")?
            ),
        ),
        Searched::Resource => (
            az_type(e.resource.as_ref(), "resource")?.to_string(),
            format!(
                "{}\0{}",
                az_entity(e.subject.as_ref(), "subject")?,
                action_name()?
            ),
        ),
        Searched::Action => (
            String::new(),
            format!(
                "{}\0{}",
                az_entity(e.subject.as_ref(), "subject")?,
                az_entity(e.resource.as_ref(), "resource")?
            ),
        ),
    };
    let page = body.page.unwrap_or_default();
    let limit = match page.limit {
        None | Some(0) => MAX_SEARCH_PAGE,
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(MAX_SEARCH_PAGE),
    };
    let context = e
        .context
        .as_ref()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .unwrap_or_default();
    let kind = match what {
        Searched::Subject => "subject",
        Searched::Resource => "resource",
        Searched::Action => "action",
    };
    let binding = format!("search-{kind}\0{store}\0{searched_type}\0{fixed}\0{context}");
    let token = page.token.filter(|t| !t.is_empty());
    let rev = match &token {
        Some(t) => state.engine.page_tokens().revision(t, &binding)?,
        None => state.engine.current_revision(store).await?,
    };
    let model = state.engine.model(store, None).await?;
    let candidates: Vec<String> = match what {
        Searched::Action => {
            let resource = az_entity(e.resource.as_ref(), "resource")?;
            let rtype = resource.split_once(':').map_or("", |(t, _)| t);
            model
                .model
                .type_def(rtype)
                .map(|t| t.relations.keys().cloned().collect())
                .unwrap_or_default()
        }
        // A type the model does not have has no entities to find.
        _ if model.model.type_def(&searched_type).is_none() => Vec::new(),
        _ => state
            .engine
            .known_entities(store, &searched_type, rev)
            .await?
            .into_iter()
            .collect(),
    };
    let mut allowed: Vec<String> = Vec::new();
    let started = std::time::Instant::now();
    for c in candidates {
        // A search answers completely or not at all: past its time budget it is refused.
        if started.elapsed() > state.search_budget {
            return Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "search_too_costly",
                format!(
                    "the search did not finish within its budget of {} ms; search a narrower \
                     type or store",
                    state.search_budget.as_millis()
                ),
            ));
        }
        let mut one = e.clone();
        match what {
            Searched::Subject => {
                let id = c.split_once(':').map_or("", |(_, id)| id);
                one.subject = Some(AzEntity {
                    kind: Some(searched_type.clone()),
                    id: Some(id.to_string()),
                    properties: None,
                });
            }
            Searched::Resource => {
                let id = c.split_once(':').map_or("", |(_, id)| id);
                one.resource = Some(AzEntity {
                    kind: Some(searched_type.clone()),
                    id: Some(id.to_string()),
                    properties: None,
                });
            }
            Searched::Action => {
                one.action = Some(AzAction {
                    name: Some(c.clone()),
                    properties: e.action.as_ref().and_then(|a| a.properties.clone()),
                });
            }
        }
        // A search's evaluations are its own work, not decisions a caller enforces: they
        // neither fill the decision log (whose buffer every store shares) nor add to anyone's
        // risk history.
        let decided = match az_request(&one) {
            Ok(req) => {
                let req = DecisionRequest {
                    consistency: Consistency::AtRevision(rev),
                    quiet: true,
                    ..req
                };
                state
                    .engine
                    .decide(store, &req)
                    .await
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        };
        match decided {
            Ok(d) if d.allowed => allowed.push(c),
            Ok(_) => {}
            // A candidate that cannot be decided is not a result (fail closed); a fault of
            // the server is the request's.
            Err(err) if err.status.is_client_error() => {}
            Err(err) => return Err(err),
        }
    }
    let total = allowed.len();
    let (items, next) = state.engine.page_tokens().paginate_sorted(
        &allowed,
        |s| s.as_str(),
        &gatehouse_engine::store::Page { size: limit, token },
        rev,
        &binding,
    )?;
    let results: Vec<Value> = items
        .iter()
        .map(|c| match what {
            Searched::Action => json!({ "name": c }),
            _ => {
                let (t, id) = c.split_once(':').unwrap_or((c, ""));
                json!({ "type": t, "id": id })
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "results": results,
        "page": { "next_token": next.unwrap_or_default(), "count": results.len(), "total": total },
        "context": { "revision": rev },
    })))
}
