//! What surrounds decisions: the decision log (query, settings) and the dry run of a candidate
//! policy set, the risk engine's rules and histories, and stored entity attributes.

use actix_web::{HttpResponse, web};
use gatehouse_engine::risk::RiskRules;
use gatehouse_engine::service::DecisionLogSettings;
use gatehouse_engine::store::{DecisionFilter, TemplateLink};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openfga::{StoreId, next_token, page};
use super::{ApiError, ApiResult, AppState};

type State = web::Data<AppState>;

fn timestamp(name: &str, v: Option<String>) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::validation(format!("`{name}` must be an RFC 3339 timestamp"))
                })
        })
        .transpose()
}

/// Checks a `type:id` reference as the engine parses objects.
fn subject_ref(v: &str, what: &str) -> ApiResult<()> {
    match gatehouse_engine::tuple::ObjectRef::parse(v) {
        Some(_) => Ok(()),
        None => Err(ApiError::validation(format!(
            "`{what}` must be `type:id`, got `{v}`"
        ))),
    }
}

// ---- decision log ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionQuery {
    subject: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    /// `allow` or `deny`.
    decision: Option<String>,
    policy_version: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
}

/// `GET /stores/{id}/decisions`: logged decisions, newest first, filtered.
pub(super) async fn list_decisions(
    state: State,
    store: StoreId,
    q: web::Query<DecisionQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let allowed = match q.decision.as_deref() {
        None | Some("") => None,
        Some("allow") => Some(true),
        Some("deny") => Some(false),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "`decision` must be `allow` or `deny`, got `{other}`"
            )));
        }
    };
    let filter = DecisionFilter {
        subject: q.subject.filter(|s| !s.is_empty()),
        action: q.action.filter(|s| !s.is_empty()),
        resource: q.resource.filter(|s| !s.is_empty()),
        allowed,
        policy_version: q.policy_version.filter(|s| !s.is_empty()),
        since: timestamp("since", q.since)?,
        until: timestamp("until", q.until)?,
    };
    let p = page(q.page_size, q.continuation_token, 50)?;
    let res = state.engine.decisions(&store, &filter, &p).await?;
    Ok(HttpResponse::Ok().json(json!({
        "decisions": res.items,
        "continuation_token": next_token(res.next),
    })))
}

/// `GET /stores/{id}/decision-log/settings`.
pub(super) async fn log_settings(state: State, store: StoreId) -> ApiResult<HttpResponse> {
    let s = state.engine.decision_log_settings(&store).await?;
    Ok(HttpResponse::Ok().json(&*s))
}

/// `PUT /stores/{id}/decision-log/settings`: sampling and retention.
pub(super) async fn set_log_settings(
    state: State,
    store: StoreId,
    body: web::Json<DecisionLogSettings>,
) -> ApiResult<HttpResponse> {
    let s = state
        .engine
        .set_decision_log_settings(&store, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(&*s))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DryRunBody {
    policies: String,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    links: Vec<TemplateLink>,
    /// How many of the latest logged decisions to replay (default 100).
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /stores/{id}/policies/dry-run`: which of the latest logged decisions a candidate
/// policy set would flip, and why; nothing is saved or activated.
pub(super) async fn dry_run(
    state: State,
    store: StoreId,
    body: web::Json<DryRunBody>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    if body.schema.as_ref().is_some_and(|s| !s.is_object()) {
        return Err(ApiError::validation(
            "`schema` must be a Cedar schema in JSON form (an object)",
        ));
    }
    let report = state
        .engine
        .dry_run(
            &store,
            &body.policies,
            body.schema,
            body.links,
            body.limit.unwrap_or(100),
        )
        .await?;
    Ok(HttpResponse::Ok().json(report))
}

// ---- risk ----

/// `GET /stores/{id}/risk/rules`.
pub(super) async fn risk_rules(state: State, store: StoreId) -> ApiResult<HttpResponse> {
    let r = state.engine.risk_rules(&store).await?;
    Ok(HttpResponse::Ok().json(&*r))
}

/// `PUT /stores/{id}/risk/rules`: weights, thresholds, retention.
pub(super) async fn set_risk_rules(
    state: State,
    store: StoreId,
    body: web::Json<RiskRules>,
) -> ApiResult<HttpResponse> {
    let r = state
        .engine
        .set_risk_rules(&store, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(&*r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubjectQuery {
    subject: Option<String>,
}

fn required_subject(q: SubjectQuery) -> ApiResult<String> {
    let s = q
        .subject
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation("`subject` is required"))?;
    subject_ref(&s, "subject")?;
    Ok(s)
}

/// `GET /stores/{id}/risk/history?subject=user:anne`: what the risk engine remembers.
pub(super) async fn risk_history(
    state: State,
    store: StoreId,
    q: web::Query<SubjectQuery>,
) -> ApiResult<HttpResponse> {
    let subject = required_subject(q.into_inner())?;
    let p = state.engine.subject_risk(&store, &subject).await?;
    Ok(HttpResponse::Ok().json(json!({ "subject": subject, "history": p })))
}

/// `DELETE /stores/{id}/risk/history?subject=user:anne`: forget a subject.
pub(super) async fn forget_risk_history(
    state: State,
    store: StoreId,
    q: web::Query<SubjectQuery>,
) -> ApiResult<HttpResponse> {
    let subject = required_subject(q.into_inner())?;
    let existed = state.engine.forget_subject_risk(&store, &subject).await?;
    Ok(HttpResponse::Ok().json(json!({ "subject": subject, "forgotten": existed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailureBody {
    subject: String,
    /// When it happened (now when absent).
    #[serde(default)]
    time: Option<String>,
}

/// `POST /stores/{id}/risk/failures`: records a failed attempt of a subject (a failed login,
/// a rejected credential), which `failed_attempts` counts.
pub(super) async fn record_failure(
    state: State,
    store: StoreId,
    body: web::Json<FailureBody>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    subject_ref(&body.subject, "subject")?;
    let at = timestamp("time", body.time)?.unwrap_or_else(chrono::Utc::now);
    let p = state
        .engine
        .record_failure(&store, &body.subject, at)
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "subject": body.subject,
        "failures": p.failures.len(),
    })))
}

// ---- entity attributes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttributesQuery {
    entity: Option<String>,
    #[serde(rename = "type")]
    entity_type: Option<String>,
    page_size: Option<i64>,
    continuation_token: Option<String>,
}

/// `GET /stores/{id}/entity-attributes?entity=type:id` reads one entity's attributes;
/// without `entity`, lists them (optionally of one `type`), ordered by entity.
pub(super) async fn read_attributes(
    state: State,
    store: StoreId,
    q: web::Query<AttributesQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    if let Some(entity) = q.entity.filter(|e| !e.is_empty()) {
        subject_ref(&entity, "entity")?;
        let a = state.engine.entity_attributes(&store, &entity).await?;
        return Ok(HttpResponse::Ok().json(a));
    }
    let p = page(q.page_size, q.continuation_token, 50)?;
    let res = state
        .engine
        .list_entity_attributes(
            &store,
            q.entity_type.as_deref().filter(|t| !t.is_empty()),
            &p,
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "entities": res.items,
        "continuation_token": next_token(res.next),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttributesBody {
    entity: String,
    attributes: Map<String, Value>,
}

/// `PUT /stores/{id}/entity-attributes` `{entity, attributes}`: sets an entity's attributes,
/// validated against the store's Cedar schema.
pub(super) async fn write_attributes(
    state: State,
    store: StoreId,
    body: web::Json<AttributesBody>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    subject_ref(&body.entity, "entity")?;
    let a = state
        .engine
        .set_entity_attributes(&store, &body.entity, body.attributes)
        .await?;
    Ok(HttpResponse::Ok().json(a))
}

/// `DELETE /stores/{id}/entity-attributes?entity=type:id`.
pub(super) async fn delete_attributes(
    state: State,
    store: StoreId,
    q: web::Query<AttributesQuery>,
) -> ApiResult<HttpResponse> {
    let entity = q
        .into_inner()
        .entity
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::validation("`entity` is required"))?;
    subject_ref(&entity, "entity")?;
    state
        .engine
        .delete_entity_attributes(&store, &entity)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
