//! The management API under `/api/`, authenticated by a user's access token and authorized by
//! the engine on the platform's model (DESIGN.md, "Tenancy"): no role checks in handlers.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use gatehouse_engine::service::{Consistency, DecisionRequest};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::db::users::AuditQuery;

/// Most audit events one page returns.
const MAX_AUDIT_PAGE: i64 = 200;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    kind: Option<String>,
    actor: Option<String>,
    /// Events older than this id (the previous page's `next_before`).
    before: Option<i64>,
    /// Events at or after this time (RFC 3339).
    since: Option<String>,
    limit: Option<i64>,
}

/// Whether the user may do `action` on `object` of the platform store, as the engine decides.
async fn permitted(
    state: &AppState,
    user: &str,
    action: &str,
    object: &str,
) -> Result<bool, HttpResponse> {
    let Some(identity) = state.identity.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no identity provider here",
        )
        .error_response());
    };
    let d = identity
        .engine
        .decide(
            &identity.platform_store,
            &DecisionRequest {
                subject: format!("user:{user}"),
                action: action.into(),
                resource: object.into(),
                context: None,
                consistency: Consistency::HigherConsistency,
                explain: false,
                lean: true,
                attributes: Default::default(),
            },
        )
        .await
        .map_err(|e| ApiError::from(e).error_response())?;
    Ok(d.allowed)
}

/// `GET /api/organizations/{slug}/audit`: the organization's audit log, newest first, with
/// filters and pagination; for its admins (and the platform's owners).
pub(super) async fn audit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<AuditParams>,
) -> HttpResponse {
    let p = match super::login::provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match super::login::user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = claims["sub"].as_str().unwrap_or_default();
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return ApiError::validation(format!("`limit` must be 1 to {MAX_AUDIT_PAGE}"))
            .error_response();
    }
    let since = match params
        .since
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&chrono::Utc)),
        Some(Err(_)) => {
            return ApiError::validation("`since` must be an RFC 3339 timestamp").error_response();
        }
    };
    if params.kind.as_ref().is_some_and(|k| k.len() > 100)
        || params.actor.as_ref().is_some_and(|a| a.len() > 300)
    {
        return ApiError::validation("`kind` or `actor` is too long").error_response();
    }
    let slug = path.into_inner();
    let org = match p.identity.store.organization_by_slug(&slug).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("organization `{slug}` does not exist"),
            )
            .error_response();
        }
        Err(e) => return ApiError::from(e).error_response(),
    };
    match permitted(
        &state,
        user,
        "can_read_audit",
        &format!("organization:{}", org.id),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you may not read this organization's audit log",
            )
            .error_response();
        }
        Err(r) => return r,
    }
    let q = AuditQuery {
        organization_id: org.id,
        kind: params.kind.clone(),
        actor: params.actor.clone(),
        before: params.before,
        since,
        limit,
    };
    match p.identity.store.audit_events(&q).await {
        Ok(events) => {
            let next = (events.len() as i64 == limit)
                .then(|| events.last().map(|e| e.id))
                .flatten();
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "events": events, "next_before": next }))
        }
        Err(e) => ApiError::from(e).error_response(),
    }
}
