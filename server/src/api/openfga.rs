//! OpenFGA's HTTP API: same paths, bodies and error shapes, plus consistency tokens.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use std::future::{Ready, ready};

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::{
    FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError, web,
};
use gatehouse_engine::graph::ListUsersFilter;
use gatehouse_engine::model::AuthorizationModel;
use gatehouse_engine::service::{self, BatchItem, Consistency, QueryOptions};
use gatehouse_engine::store::{ChangeFilter, Page, Revision, WriteOptions};
use gatehouse_engine::tuple::{ContextMap, TupleKey};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState};

/// Response header carrying the consistency token of every store response.
pub const TOKEN_HEADER: &str = "gatehouse-consistency-token";

type State = web::Data<AppState>;

/// `POST /stores` and `GET /stores`; everything below a store id goes through [`dispatch`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("")
            .route(web::post().to(create_store))
            .route(web::get().to(list_stores))
            .default_service(web::to(|| async { method_not_allowed("GET, POST") })),
    );
}

/// The ids of a `/stores/{store_id}[/…/{model_id}]` path, as [`dispatch`] parsed them.
struct PathIds {
    store: String,
    model: Option<String>,
}

/// The store id of the request path.
pub struct StoreId(String);

/// The model id of an `…/authorization-models/{id}` or `…/assertions/{id}` path.
pub struct ModelId(String);

impl std::ops::Deref for StoreId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ModelId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

fn path_ids<T>(
    req: &HttpRequest,
    pick: impl FnOnce(&PathIds) -> Option<&String>,
    wrap: fn(String) -> T,
) -> Ready<Result<T, actix_web::Error>> {
    let id = req
        .extensions()
        .get::<PathIds>()
        .and_then(|ids| pick(ids).cloned());
    ready(id.map(wrap).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "undefined_endpoint",
            "no such endpoint",
        )
        .into()
    }))
}

impl FromRequest for StoreId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        path_ids(req, |ids| Some(&ids.store), StoreId)
    }
}

impl FromRequest for ModelId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        path_ids(req, |ids| ids.model.as_ref(), ModelId)
    }
}

/// Routes `/stores/{store_id}/…` by splitting the path, without actix's router: its dynamic
/// segments are matched with a regex, which cost about a tenth of the CPU of a cached check.
/// A known path with the wrong method answers 405 with `Allow`; anything else 404.
pub async fn dispatch(req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let (req, mut payload) = req.into_parts();
    let res = route(&req, &mut payload).await;
    Ok(ServiceResponse::new(req, res))
}

async fn route(req: &HttpRequest, payload: &mut Payload) -> HttpResponse {
    use actix_web::http::Method;
    let rest = req.path().strip_prefix("/stores/").unwrap_or_default();
    let mut parts = rest.split('/');
    let store = parts.next().unwrap_or_default();
    let (op, arg, sub) = (parts.next(), parts.next(), parts.next());
    // AuthZEN's search endpoints are one segment deeper: `access/v1/search/{kind}`.
    let kind = if (op, arg, sub) == (Some("access"), Some("v1"), Some("search")) {
        parts.next()
    } else {
        None
    };
    if store.is_empty()
        || kind == Some("")
        || parts.next().is_some()
        || op == Some("")
        || arg == Some("")
        || sub == Some("")
    {
        return not_found();
    }
    // The platform's own store answers as if it did not exist: it is managed through the
    // organization and service commands, not the store API.
    let platform = req
        .app_data::<web::Data<super::AppState>>()
        .and_then(|s| s.identity.as_ref())
        .is_some_and(|i| i.platform_store == store);
    if platform {
        use actix_web::ResponseError;
        return super::ApiError::from(gatehouse_engine::Error::StoreNotFound(store.to_owned()))
            .error_response();
    }
    // A service API key reaches its organization's stores only; any other store answers as
    // if it did not exist.
    if let Some(org) = calling_organization(req) {
        match store_owner(req, store).await {
            Ok(Some(owner)) if owner == org => {}
            Ok(_) => {
                use actix_web::ResponseError;
                return super::ApiError::from(gatehouse_engine::Error::StoreNotFound(
                    store.to_owned(),
                ))
                .error_response();
            }
            Err(e) => {
                use actix_web::ResponseError;
                return super::ApiError::from(e).error_response();
            }
        }
    }
    req.extensions_mut().insert(PathIds {
        store: store.to_owned(),
        model: arg.map(str::to_owned),
    });
    let m = req.method();
    macro_rules! on {
        ($($method:ident => $handler:expr),+ ; $allow:literal) => {
            match *m {
                $(Method::$method => call($handler, req, payload).await,)+
                _ => method_not_allowed($allow),
            }
        };
    }
    use super::decisions as d;
    use super::policies as p;
    match (op, arg, sub) {
        (Some("policies"), None, None) => {
            on!(GET => p::active_policies, PUT => p::write_policies; "GET, PUT")
        }
        (Some("policies"), Some("dry-run"), None) => on!(POST => d::dry_run; "POST"),
        (Some("decisions"), None, None) => on!(GET => d::list_decisions; "GET"),
        (Some("decision-log"), Some("settings"), None) => {
            on!(GET => d::log_settings, PUT => d::set_log_settings; "GET, PUT")
        }
        (Some("risk"), Some("rules"), None) => {
            on!(GET => d::risk_rules, PUT => d::set_risk_rules; "GET, PUT")
        }
        (Some("risk"), Some("history"), None) => {
            on!(GET => d::risk_history, DELETE => d::forget_risk_history; "GET, DELETE")
        }
        (Some("risk"), Some("failures"), None) => on!(POST => d::record_failure; "POST"),
        (Some("entity-attributes"), None, None) => {
            on!(GET => d::read_attributes, PUT => d::write_attributes, DELETE => d::delete_attributes; "GET, PUT, DELETE")
        }
        (Some("policy-versions"), None, None) => on!(GET => p::list_versions; "GET"),
        (Some("policy-versions"), Some(_), None) => on!(GET => p::read_version; "GET"),
        (Some("policy-versions"), Some(_), Some("activate")) => {
            on!(POST => p::activate_version; "POST")
        }
        (Some("policy-schema"), None, None) => on!(GET => p::policy_schema; "GET"),
        (Some("decide"), None, None) => on!(POST => p::decide; "POST"),
        (Some("access"), Some("v1"), Some("evaluation")) => on!(POST => p::evaluation; "POST"),
        (Some("access"), Some("v1"), Some("evaluations")) => {
            on!(POST => p::evaluations; "POST")
        }
        (Some("access"), Some("v1"), Some("search")) => match kind {
            Some("subject") => on!(POST => p::search_subject; "POST"),
            Some("resource") => on!(POST => p::search_resource; "POST"),
            Some("action") => on!(POST => p::search_action; "POST"),
            _ => not_found(),
        },
        (_, _, Some(_)) => not_found(),
        (None, None, _) => on!(GET => get_store, DELETE => delete_store; "GET, DELETE"),
        (Some("check"), None, None) => on!(POST => check; "POST"),
        (Some("batch-check"), None, None) => on!(POST => batch_check; "POST"),
        (Some("write"), None, None) => on!(POST => write; "POST"),
        (Some("read"), None, None) => on!(POST => read; "POST"),
        (Some("changes"), None, None) => on!(GET => changes; "GET"),
        (Some("expand"), None, None) => on!(POST => expand; "POST"),
        (Some("list-objects"), None, None) => on!(POST => list_objects; "POST"),
        (Some("streamed-list-objects"), None, None) => on!(POST => streamed_list_objects; "POST"),
        (Some("list-users"), None, None) => on!(POST => list_users; "POST"),
        (Some("authorization-models"), None, None) => {
            on!(GET => list_models, POST => write_model; "GET, POST")
        }
        (Some("authorization-models"), Some(_), None) => on!(GET => read_model; "GET"),
        (Some("assertions"), Some(_), None) => {
            on!(GET => read_assertions, PUT => write_assertions; "GET, PUT")
        }
        _ => not_found(),
    }
}

/// Extracts a handler's arguments and runs it, as actix's router would.
async fn call<F, Args>(handler: F, req: &HttpRequest, payload: &mut Payload) -> HttpResponse
where
    F: Handler<Args>,
    Args: FromRequest,
    F::Output: Responder,
{
    match Args::from_request(req, payload).await {
        Ok(args) => handler
            .call(args)
            .await
            .respond_to(req)
            .map_into_boxed_body(),
        Err(e) => HttpResponse::from_error(e),
    }
}

fn not_found() -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "undefined_endpoint",
        "no such endpoint",
    )
    .error_response()
}

/// 405 with the methods the path allows.
pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint accepts {allow}"),
    )
    .error_response();
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        HeaderValue::from_static(allow),
    );
    res
}

fn with_token(res: HttpResponse, store: &str, rev: Revision) -> HttpResponse {
    set_token(res, &service::encode_token(store, rev))
}

fn set_token(mut res: HttpResponse, token: &str) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(token) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(TOKEN_HEADER),
            v,
        );
    }
    res
}

/// JSON with the consistency token in the body (`consistency_token`) and a header.
pub(super) fn json_with_token(
    status: StatusCode,
    mut body: Value,
    store: &str,
    rev: Revision,
) -> HttpResponse {
    let token = service::encode_token(store, rev);
    if let Value::Object(m) = &mut body {
        m.insert("consistency_token".into(), Value::String(token.clone()));
    }
    set_token(HttpResponse::build(status).json(body), &token)
}

pub(super) fn page(size: Option<i64>, token: Option<String>, default: usize) -> ApiResult<Page> {
    let size = match size {
        None | Some(0) => default,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::validation(format!(
                "page_size must be between 1 and 1000, got `{n}`"
            )));
        }
    };
    let token = token.filter(|t| !t.is_empty());
    Ok(Page { size, token })
}

pub(super) fn next_token(next: Option<String>) -> String {
    next.unwrap_or_default()
}

// ---- request bodies ----

#[derive(Deserialize)]
struct CreateStore {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) page_size: Option<i64>,
    pub(super) continuation_token: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct TupleKeys {
    #[serde(default)]
    tuple_keys: Vec<TupleKey>,
}

#[derive(Deserialize, Default)]
struct WriteSet {
    #[serde(default)]
    tuple_keys: Vec<TupleKey>,
    #[serde(default)]
    on_duplicate: Option<String>,
    #[serde(default)]
    on_missing: Option<String>,
}

#[derive(Deserialize)]
struct WriteRequest {
    #[serde(default)]
    writes: Option<WriteSet>,
    #[serde(default)]
    deletes: Option<WriteSet>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// The consistency fields every query accepts. Each request body declares them itself rather
/// than through `#[serde(flatten)]`, which buffers the whole body a second time.
pub(super) struct ConsistencyFields<'a> {
    consistency: Option<&'a str>,
    consistency_token: Option<&'a str>,
}

impl<'a> ConsistencyFields<'a> {
    pub(super) fn of(
        consistency: &'a Option<String>,
        consistency_token: &'a Option<String>,
    ) -> Self {
        Self {
            consistency: consistency.as_deref(),
            consistency_token: consistency_token.as_deref(),
        }
    }

    pub(super) fn resolve(&self, store: &str) -> ApiResult<Consistency> {
        if let Some(t) = self.consistency_token.filter(|t| !t.is_empty()) {
            return Ok(Consistency::AtLeastAsFresh(service::decode_token(
                store, t,
            )?));
        }
        match self.consistency.unwrap_or("UNSPECIFIED") {
            "UNSPECIFIED" | "" | "MINIMIZE_LATENCY" => Ok(Consistency::MinimizeLatency),
            "HIGHER_CONSISTENCY" => Ok(Consistency::HigherConsistency),
            other => Err(ApiError::validation(format!(
                "invalid consistency `{other}`: expected `MINIMIZE_LATENCY` or `HIGHER_CONSISTENCY`"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct ReadRequest {
    #[serde(default)]
    tuple_key: Option<TupleKey>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct ChangesQuery {
    #[serde(rename = "type")]
    object_type: Option<String>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
    /// RFC 3339; ignored with a continuation token, as in OpenFGA.
    start_time: Option<String>,
}

#[derive(Deserialize)]
struct CheckTupleKey {
    #[serde(default)]
    user: String,
    #[serde(default)]
    relation: String,
    #[serde(default)]
    object: String,
}

impl CheckTupleKey {
    fn into_key(self) -> ApiResult<TupleKey> {
        if self.user.is_empty() || self.relation.is_empty() || self.object.is_empty() {
            return Err(ApiError::validation(
                "`tuple_key` needs `user`, `relation` and `object`",
            ));
        }
        Ok(TupleKey::new(self.user, self.relation, self.object))
    }
}

#[derive(Deserialize)]
struct CheckRequest {
    tuple_key: Option<CheckTupleKey>,
    #[serde(default)]
    contextual_tuples: Option<TupleKeys>,
    #[serde(default)]
    authorization_model_id: Option<String>,
    #[serde(default)]
    context: Option<ContextMap>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct BatchCheckItem {
    tuple_key: Option<CheckTupleKey>,
    #[serde(default)]
    contextual_tuples: Option<TupleKeys>,
    #[serde(default)]
    context: Option<ContextMap>,
    #[serde(default)]
    correlation_id: String,
}

#[derive(Deserialize)]
struct BatchCheckRequest {
    #[serde(default)]
    checks: Vec<BatchCheckItem>,
    #[serde(default)]
    authorization_model_id: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct ExpandKey {
    #[serde(default)]
    relation: String,
    #[serde(default)]
    object: String,
}

#[derive(Deserialize)]
struct ExpandRequest {
    tuple_key: Option<ExpandKey>,
    #[serde(default)]
    authorization_model_id: Option<String>,
    #[serde(default)]
    contextual_tuples: Option<TupleKeys>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct ListObjectsRequest {
    #[serde(default)]
    authorization_model_id: Option<String>,
    #[serde(rename = "type", default)]
    object_type: String,
    #[serde(default)]
    relation: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    contextual_tuples: Option<TupleKeys>,
    #[serde(default)]
    context: Option<ContextMap>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct UserObject {
    #[serde(rename = "type", default)]
    type_name: String,
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct ListUsersRequest {
    #[serde(default)]
    authorization_model_id: Option<String>,
    object: Option<UserObject>,
    #[serde(default)]
    relation: String,
    #[serde(default)]
    user_filters: Vec<ListUsersFilter>,
    #[serde(default)]
    contextual_tuples: Vec<TupleKey>,
    #[serde(default)]
    context: Option<ContextMap>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    consistency_token: Option<String>,
}

#[derive(Deserialize)]
struct AssertionsBody {
    #[serde(default)]
    assertions: Vec<Value>,
}

// ---- stores ----

/// The organization of the caller, when it is a service API key.
fn calling_organization(req: &HttpRequest) -> Option<String> {
    match req.extensions().get::<super::StoreCaller>() {
        Some(super::StoreCaller::Organization(o)) => Some(o.clone()),
        _ => None,
    }
}

/// The organization `store` belongs to (cached: it never changes once set).
async fn store_owner(req: &HttpRequest, store: &str) -> gatehouse_engine::Result<Option<String>> {
    let Some(state) = req.app_data::<State>() else {
        return Ok(None);
    };
    if let Some(o) = state.store_owners.get(store) {
        return Ok(Some(o));
    }
    let Some(identity) = state.identity.as_ref() else {
        return Ok(None);
    };
    let owner = identity.store.store_owner(store).await?;
    if let Some(o) = &owner {
        state.store_owners.insert(store.to_string(), o.clone());
    }
    Ok(owner)
}

async fn create_store(
    state: State,
    req: HttpRequest,
    body: web::Json<CreateStore>,
) -> ApiResult<HttpResponse> {
    let s = state.engine.create_store(&body.name).await?;
    // A store created with a service API key belongs to the key's organization.
    if let (Some(org), Some(identity)) = (calling_organization(&req), state.identity.as_ref())
        && let Err(e) = identity.store.set_store_owner(&s.id, &org).await
    {
        if let Err(undo) = state.engine.delete_store(&s.id).await {
            tracing::error!(error = %undo, store = %s.id, "cannot remove a store whose owner was not recorded");
        }
        return Err(e.into());
    }
    Ok(HttpResponse::Created().json(s))
}

async fn list_stores(
    state: State,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let p = page(q.page_size, q.continuation_token, 50)?;
    if let (Some(org), Some(identity)) = (calling_organization(&req), state.identity.as_ref()) {
        // An organization's own stores, paged by store id.
        let ids = identity
            .store
            .stores_of(&org, p.token.as_deref(), p.size as i64)
            .await?;
        let next = (ids.len() == p.size).then(|| ids.last().cloned()).flatten();
        let mut items = Vec::new();
        for id in &ids {
            match state.engine.get_store(id).await {
                Ok(store) => items.push(store),
                Err(gatehouse_engine::Error::StoreNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) {
            items.retain(|s| s.name == name);
        }
        return Ok(HttpResponse::Ok()
            .json(json!({ "stores": items, "continuation_token": next_token(next) })));
    }
    let mut res = state
        .engine
        .list_stores(q.name.as_deref().filter(|n| !n.is_empty()), &p)
        .await?;
    // The platform's own store is not a tenant's.
    if let Some(id) = state.identity.as_ref() {
        res.items.retain(|s| s.id != id.platform_store);
    }
    Ok(HttpResponse::Ok()
        .json(json!({ "stores": res.items, "continuation_token": next_token(res.next) })))
}

async fn get_store(state: State, path: StoreId) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.engine.get_store(&path).await?))
}

async fn delete_store(state: State, path: StoreId) -> ApiResult<HttpResponse> {
    state.engine.delete_store(&path).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- models ----

async fn write_model(
    state: State,
    path: StoreId,
    body: web::Json<Value>,
) -> ApiResult<HttpResponse> {
    let model: AuthorizationModel = serde_json::from_value(body.into_inner())
        .map_err(|e| ApiError::validation(format!("invalid authorization model: {e}")))?;
    let id = state.engine.write_model(&path, model).await?;
    Ok(HttpResponse::Created().json(json!({ "authorization_model_id": id })))
}

async fn list_models(
    state: State,
    path: StoreId,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let p = page(q.page_size, q.continuation_token, 50)?;
    let res = state.engine.list_models(&path, &p).await?;
    Ok(HttpResponse::Ok().json(
        json!({ "authorization_models": res.items, "continuation_token": next_token(res.next) }),
    ))
}

async fn read_model(state: State, store: StoreId, id: ModelId) -> ApiResult<HttpResponse> {
    let m = state.engine.model(&store, Some(&id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "authorization_model": m.model })))
}

// ---- tuples ----

fn on_flag(v: Option<&str>, name: &str) -> ApiResult<bool> {
    match v.unwrap_or("") {
        "" | "error" | "ON_DUPLICATE_ERROR" | "ON_MISSING_ERROR" => Ok(false),
        "ignore" | "ON_DUPLICATE_IGNORE" | "ON_MISSING_IGNORE" => Ok(true),
        other => Err(ApiError::validation(format!(
            "invalid `{name}` `{other}`: expected `error` or `ignore`"
        ))),
    }
}

async fn write(
    state: State,
    path: StoreId,
    body: web::Json<WriteRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let writes = body.writes.unwrap_or_default();
    let deletes = body.deletes.unwrap_or_default();
    let opts = WriteOptions {
        ignore_duplicates: on_flag(writes.on_duplicate.as_deref(), "on_duplicate")?,
        ignore_missing: on_flag(deletes.on_missing.as_deref(), "on_missing")?,
    };
    for d in &deletes.tuple_keys {
        if d.condition.is_some() {
            return Err(ApiError::validation(
                "tuples to delete cannot carry a condition",
            ));
        }
    }
    let rev = state
        .engine
        .write(
            &path,
            body.authorization_model_id.as_deref(),
            &writes.tuple_keys,
            &deletes.tuple_keys,
            opts,
        )
        .await?;
    Ok(json_with_token(StatusCode::OK, json!({}), &path, rev))
}

async fn read(
    state: State,
    path: StoreId,
    body: web::Json<ReadRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let consistency =
        ConsistencyFields::of(&body.consistency, &body.consistency_token).resolve(&path)?;
    let p = page(body.page_size, body.continuation_token, 50)?;
    let filter = body
        .tuple_key
        .filter(|k| !(k.user.is_empty() && k.relation.is_empty() && k.object.is_empty()));
    let (res, rev) = state
        .engine
        .read(&path, filter.as_ref(), &p, consistency)
        .await?;
    let tuples: Vec<Value> = res
        .items
        .iter()
        .map(|t| json!({ "key": t.key, "timestamp": t.timestamp }))
        .collect();
    Ok(json_with_token(
        StatusCode::OK,
        json!({ "tuples": tuples, "continuation_token": next_token(res.next) }),
        &path,
        rev,
    ))
}

async fn changes(
    state: State,
    path: StoreId,
    q: web::Query<ChangesQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let start_time = q
        .start_time
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ApiError::validation(format!(
                        "invalid `start_time` `{t}`: expected an RFC 3339 time ({e})"
                    ))
                })
        })
        .transpose()?;
    let p = page(q.page_size, q.continuation_token, 50)?;
    let filter = ChangeFilter {
        object_type: q.object_type,
        start_time,
    };
    let res = state.engine.changes(&path, &filter, &p).await?;
    let changes: Vec<Value> = res
        .items
        .iter()
        .map(|c| json!({ "tuple_key": c.tuple_key, "operation": c.operation, "timestamp": c.timestamp }))
        .collect();
    let last = res.items.last().map(|c| c.revision);
    let mut resp = HttpResponse::Ok()
        .json(json!({ "changes": changes, "continuation_token": next_token(res.next) }));
    if let Some(rev) = last {
        resp = with_token(resp, &path, rev);
    }
    Ok(resp)
}

// ---- queries ----

fn contextual(t: Option<TupleKeys>) -> Vec<TupleKey> {
    t.map(|t| t.tuple_keys).unwrap_or_default()
}

async fn check(
    state: State,
    path: StoreId,
    body: web::Json<CheckRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let key = body
        .tuple_key
        .ok_or_else(|| ApiError::validation("`tuple_key` is required"))?
        .into_key()?;
    let opts = QueryOptions {
        model_id: body.authorization_model_id,
        consistency: ConsistencyFields::of(&body.consistency, &body.consistency_token)
            .resolve(&path)?,
        contextual_tuples: contextual(body.contextual_tuples),
        context: body.context,
    };
    let (allowed, rev) = state.engine.check(&path, &key, &opts).await?;
    // The hottest answer of the API, written from a struct rather than a `Value` map.
    #[derive(serde::Serialize)]
    struct CheckResponse<'a> {
        allowed: bool,
        resolution: &'static str,
        consistency_token: &'a str,
    }
    let token = service::encode_token(&path, rev);
    let body = serde_json::to_vec(&CheckResponse {
        allowed,
        resolution: "",
        consistency_token: &token,
    })
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("cannot write the answer: {e}"),
        )
    })?;
    Ok(set_token(
        HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(body),
        &token,
    ))
}

async fn batch_check(
    state: State,
    path: StoreId,
    body: web::Json<BatchCheckRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let mut items = Vec::with_capacity(body.checks.len());
    for c in body.checks {
        let tuple = c
            .tuple_key
            .ok_or_else(|| ApiError::validation("each check needs a `tuple_key`"))?
            .into_key()?;
        items.push(BatchItem {
            correlation_id: c.correlation_id,
            tuple,
            contextual_tuples: contextual(c.contextual_tuples),
            context: c.context,
        });
    }
    let opts = QueryOptions {
        model_id: body.authorization_model_id,
        consistency: ConsistencyFields::of(&body.consistency, &body.consistency_token)
            .resolve(&path)?,
        ..Default::default()
    };
    let (results, rev) = state.engine.batch_check(&path, &items, &opts).await?;
    let mut out = serde_json::Map::new();
    for (id, r) in results {
        let v = match r {
            Ok(allowed) => json!({ "allowed": allowed }),
            Err(e) => {
                let e = ApiError::from(e);
                json!({ "allowed": false, "error": { "input_error": e.code, "message": e.message } })
            }
        };
        out.insert(id, v);
    }
    Ok(json_with_token(
        StatusCode::OK,
        json!({ "result": out }),
        &path,
        rev,
    ))
}

async fn expand(
    state: State,
    path: StoreId,
    body: web::Json<ExpandRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let key = body
        .tuple_key
        .ok_or_else(|| ApiError::validation("`tuple_key` is required"))?;
    if key.object.is_empty() || key.relation.is_empty() {
        return Err(ApiError::validation(
            "`tuple_key` needs `relation` and `object`",
        ));
    }
    let opts = QueryOptions {
        model_id: body.authorization_model_id,
        consistency: ConsistencyFields::of(&body.consistency, &body.consistency_token)
            .resolve(&path)?,
        contextual_tuples: contextual(body.contextual_tuples),
        context: None,
    };
    let (tree, rev) = state
        .engine
        .expand(&path, &key.object, &key.relation, &opts)
        .await?;
    Ok(json_with_token(
        StatusCode::OK,
        json!({ "tree": tree }),
        &path,
        rev,
    ))
}

/// Consistency for a paginated query: later pages are evaluated at the first page's revision,
/// read from a token signed for this store and query (`binding`).
fn paged_consistency(
    state: &State,
    fields: &ConsistencyFields,
    store: &str,
    token: Option<&str>,
    binding: &str,
) -> ApiResult<Consistency> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => Ok(Consistency::AtRevision(
            state.engine.page_tokens().revision(t, binding)?,
        )),
        None => fields.resolve(store),
    }
}

async fn run_list_objects(
    state: &State,
    store: &str,
    body: ListObjectsRequest,
) -> ApiResult<(Vec<String>, Option<String>, Revision)> {
    if body.object_type.is_empty() || body.relation.is_empty() || body.user.is_empty() {
        return Err(ApiError::validation(
            "`type`, `relation` and `user` are required",
        ));
    }
    let p = page(body.page_size, body.continuation_token.clone(), 0)?;
    let binding = format!(
        "list-objects\0{store}\0{}\0{}\0{}",
        body.object_type, body.relation, body.user
    );
    let opts = QueryOptions {
        model_id: body.authorization_model_id,
        consistency: paged_consistency(
            state,
            &ConsistencyFields::of(&body.consistency, &body.consistency_token),
            store,
            body.continuation_token.as_deref(),
            &binding,
        )?,
        contextual_tuples: contextual(body.contextual_tuples),
        context: body.context,
    };
    let (objects, rev) = state
        .engine
        .list_objects(store, &body.object_type, &body.relation, &body.user, &opts)
        .await?;
    let (items, next) =
        state
            .engine
            .page_tokens()
            .paginate_sorted(&objects, |s| s.as_str(), &p, rev, &binding)?;
    Ok((items, next, rev))
}

async fn list_objects(
    state: State,
    path: StoreId,
    body: web::Json<ListObjectsRequest>,
) -> ApiResult<HttpResponse> {
    let (objects, next, rev) = run_list_objects(&state, &path, body.into_inner()).await?;
    Ok(json_with_token(
        StatusCode::OK,
        json!({ "objects": objects, "continuation_token": next_token(next) }),
        &path,
        rev,
    ))
}

async fn streamed_list_objects(
    state: State,
    path: StoreId,
    body: web::Json<ListObjectsRequest>,
) -> ApiResult<HttpResponse> {
    let (objects, _, rev) = run_list_objects(&state, &path, body.into_inner()).await?;
    let lines = objects.into_iter().map(|o| {
        let mut line = json!({ "result": { "object": o } }).to_string();
        line.push('\n');
        Ok::<_, actix_web::Error>(web::Bytes::from(line))
    });
    let res = HttpResponse::Ok()
        .content_type("application/json")
        .streaming(futures::stream::iter(lines));
    Ok(with_token(res, &path, rev))
}

async fn list_users(
    state: State,
    path: StoreId,
    body: web::Json<ListUsersRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let object = body
        .object
        .ok_or_else(|| ApiError::validation("`object` is required"))?;
    if object.type_name.is_empty() || object.id.is_empty() || body.relation.is_empty() {
        return Err(ApiError::validation(
            "`object.type`, `object.id` and `relation` are required",
        ));
    }
    let p = page(body.page_size, body.continuation_token.clone(), 0)?;
    let binding = format!(
        "list-users\0{}\0{}:{}\0{}",
        &*path, object.type_name, object.id, body.relation
    );
    let opts = QueryOptions {
        model_id: body.authorization_model_id,
        consistency: paged_consistency(
            &state,
            &ConsistencyFields::of(&body.consistency, &body.consistency_token),
            &path,
            body.continuation_token.as_deref(),
            &binding,
        )?,
        contextual_tuples: body.contextual_tuples,
        context: body.context,
    };
    let object = format!("{}:{}", object.type_name, object.id);
    let (users, rev) = state
        .engine
        .list_users(&path, &object, &body.relation, &body.user_filters, &opts)
        .await?;
    let (items, next) =
        state
            .engine
            .page_tokens()
            .paginate_sorted(&users, |u| u.0.as_str(), &p, rev, &binding)?;
    let users: Vec<Value> = items.iter().map(|u| user_json(&u.0)).collect();
    Ok(json_with_token(
        StatusCode::OK,
        json!({ "users": users, "continuation_token": next_token(next) }),
        &path,
        rev,
    ))
}

/// `user:anne` -> `{"object": …}`, `user:*` -> `{"wildcard": …}`, `group:x#member` -> `{"userset": …}`.
fn user_json(u: &str) -> Value {
    if let Some((obj, rel)) = u.split_once('#') {
        let (t, id) = obj.split_once(':').unwrap_or((obj, ""));
        return json!({ "userset": { "type": t, "id": id, "relation": rel } });
    }
    let (t, id) = u.split_once(':').unwrap_or((u, ""));
    if id == "*" {
        json!({ "wildcard": { "type": t } })
    } else {
        json!({ "object": { "type": t, "id": id } })
    }
}

// ---- assertions ----

async fn write_assertions(
    state: State,
    store: StoreId,
    model_id: ModelId,
    body: web::Json<AssertionsBody>,
) -> ApiResult<HttpResponse> {
    for a in &body.assertions {
        let ok = a.get("tuple_key").is_some_and(Value::is_object)
            && a.get("expectation").is_some_and(Value::is_boolean);
        if !ok {
            return Err(ApiError::validation(
                "each assertion needs a `tuple_key` object and a boolean `expectation`",
            ));
        }
    }
    state
        .engine
        .write_assertions(
            &store,
            &model_id,
            &Value::Array(body.into_inner().assertions),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn read_assertions(
    state: State,
    store: StoreId,
    model_id: ModelId,
) -> ApiResult<HttpResponse> {
    let a = state.engine.read_assertions(&store, &model_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "authorization_model_id": &*model_id, "assertions": a })))
}
