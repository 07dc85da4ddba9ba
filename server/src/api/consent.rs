//! The consent page (`/login/consent`) and a person's list of the services they approved
//! (`/api/me/consents`). The flow's rules live in `identity::consent`; this adapts them to
//! pages and JSON.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::login::{
    BINDING_COOKIE, Provider, api_unavailable, api_user_token, bound_request, cookie,
    current_session, finish, form_token, form_token_ok, provider, redirect_error, removal,
    unavailable_page,
};
use super::oauth::parse_form;
use super::pages::{error_page, escape, page};
use crate::db::tenancy::{Organization, Service};
use crate::identity::consent::scope_description;
use crate::oidc::sessions::{PENDING_SECONDS, Pending, Session, sha256_hex};

/// The double-submit cookie of the consent form.
const CONSENT_COOKIE: &str = "gh_consent";
const CONSENT_PATH: &str = "/login/consent";

/// Asks `session`'s user to approve what `pending` asks for `service`: the request waits
/// under a new id bound to this browser, with the form's token.
pub(super) async fn consent_page(
    p: &Provider<'_>,
    service: &Service,
    org: Option<&Organization>,
    pending: &Pending,
    session: &Session,
) -> HttpResponse {
    let Ok(binding) = crate::oidc::sessions::secret("") else {
        return unavailable_page();
    };
    let waiting = Pending {
        binding: sha256_hex(&binding),
        // Approved once, the request goes on without asking again.
        prompt_consent: false,
        consent_session: Some(session.id.clone()),
        ..pending.clone()
    };
    let id = match p.sessions.put_pending(&waiting).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot keep an authorization request");
            return unavailable_page();
        }
    };
    let Some((token, token_cookie)) =
        form_token(p, CONSENT_COOKIE, CONSENT_PATH, PENDING_SECONDS as i64)
    else {
        return unavailable_page();
    };
    let org_name = org.map(|o| o.name.as_str()).unwrap_or("an organization");
    let items: String = pending
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "<li>{} <small>({})</small></li>",
                escape(scope_description(s)),
                escape(s)
            )
        })
        .collect();
    let body = format!(
        r#"<p><strong>{app}</strong>, an application of <strong>{org}</strong>, asks to:</p>
<ul>{items}</ul>
<form method="post" action="{CONSENT_PATH}">
<input type="hidden" name="request" value="{id}">
<input type="hidden" name="csrf" value="{token}">
<button type="submit" name="action" value="allow">Allow</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>
<p><small>You can withdraw this at any time from your account.</small></p>"#,
        app = escape(&service.name),
        org = escape(org_name),
        id = escape(&id),
        token = escape(&token),
    );
    let mut r = page(StatusCode::OK, "Allow access?", org, &body);
    let _ = r.add_cookie(&token_cookie);
    let _ = r.add_cookie(&cookie(
        BINDING_COOKIE,
        binding,
        "/login",
        PENDING_SECONDS as i64,
        p.secure,
    ));
    r
}

/// `POST /login/consent`: the person allows (a code goes to the application) or denies
/// (`access_denied`). Only the browser, session and form that were asked count.
pub(super) async fn decide(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This page has expired",
            "Go back to the application and start signing in again.",
            None,
        )
    };
    let Ok(form) = parse_form(&req, &body) else {
        return expired();
    };
    let csrf = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !form_token_ok(&req, CONSENT_COOKIE, csrf) {
        return expired();
    }
    let id = form.get("request").map(String::as_str).unwrap_or_default();
    let (pending, service, org) = match bound_request(&p, &req, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let session = match current_session(&p, &req).await {
        Ok(Some(s)) if pending.consent_session.as_deref() == Some(s.id.as_str()) => s,
        Ok(_) => return expired(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return unavailable_page();
        }
    };
    if let Err(e) = p.sessions.drop_pending(id).await {
        tracing::warn!(error = %e, "cannot drop a finished authorization request");
    }
    let mut res = match form.get("action").map(String::as_str) {
        Some("allow") => {
            if let Err(e) = p
                .identity
                .grant_consent(&session.user_id, &service, &pending.scope)
                .await
            {
                tracing::error!(error = %e, "cannot record a consent");
                return unavailable_page();
            }
            finish(&p, &req, &service, org.as_ref(), &pending, &session, None).await
        }
        Some("deny") => {
            p.identity
                .audit(
                    Some(&service.organization_id),
                    &format!("user:{}", session.user_id),
                    super::login::client_ip(&req).as_deref(),
                    "consent.denied",
                    json!({ "client_id": service.client_id, "scope": pending.scope }),
                )
                .await;
            redirect_error(
                &p,
                &pending.redirect_uri,
                pending.state.as_deref(),
                "access_denied",
                "the user did not allow the application",
            )
        }
        _ => return expired(),
    };
    let _ = res.add_cookie(&removal(CONSENT_COOKIE, CONSENT_PATH));
    let _ = res.add_cookie(&removal(BINDING_COOKIE, "/login"));
    res
}

/// `GET /api/me/consents`: the services the caller approved, with what they may learn.
pub(super) async fn list(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match api_user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = claims["sub"].as_str().unwrap_or_default();
    let consents = match p.identity.store.consents_of(user).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot list consents");
            return api_unavailable();
        }
    };
    let mut items = Vec::with_capacity(consents.len());
    for c in consents {
        let service = p.identity.service(&c.client_id).await.ok().flatten();
        let org = match &service {
            Some(s) => p
                .identity
                .organization(&s.organization_id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        items.push(json!({
            "client_id": c.client_id,
            "application": service.as_ref().map(|s| s.name.clone()),
            "organization": org.map(|o| o.name),
            "scope": c.scope,
            "granted_at": c.granted_at,
        }));
    }
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({ "consents": items }))
}

/// `DELETE /api/me/consents/{client_id}`: withdraws an approval; the service's refresh tokens
/// for the caller are revoked, and its next sign-in asks again.
pub(super) async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match api_user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = claims["sub"].as_str().unwrap_or_default();
    match p.identity.revoke_consent(user, &path).await {
        Ok(true) => HttpResponse::NoContent().finish(),
        Ok(false) => {
            use actix_web::ResponseError as _;
            super::error::ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "you have not approved this application",
            )
            .error_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot withdraw a consent");
            api_unavailable()
        }
    }
}
