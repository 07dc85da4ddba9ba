//! The management API under `/api/`: organizations, members, services and their API keys, and
//! the audit log. Callers authenticate with a user's access token (or a service API key);
//! every permission is decided by the engine on the platform's model (DESIGN.md, "Tenancy"),
//! with no role checks in handlers. The one rule beside the model is that nobody grants or
//! removes a role at or above their own (platform owners excepted).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use gatehouse_engine::service::{Consistency, DecisionRequest};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::login::{Provider, provider};
use crate::db::tenancy::{Organization, Service};
use crate::db::users::AuditQuery;
use crate::identity::users::role_rank;

/// Most audit events one page returns.
const MAX_AUDIT_PAGE: i64 = 200;

type Answer = Result<HttpResponse, Refusal>;
use super::oauth::Refusal;

/// Who is calling.
pub(super) struct Caller {
    /// `user:<id>` or `service:<client_id>`.
    principal: String,
    user_id: Option<String>,
    amr: Vec<String>,
    /// When the user behind a token signed in (seconds since the epoch).
    auth_time: Option<i64>,
}

/// Deleting things (members, invitations, services, their keys and plugins, plugins) takes a
/// recent sign-in (`GATEHOUSE_REAUTH_SECS`), not only a valid token: a token copied from a
/// person's browser hours ago does not tear their organization down.
fn recent(state: &AppState, c: &Caller) -> Result<(), Refusal> {
    // API keys are machine credentials: no sign-in to be recent. A person's token without a
    // sign-in time counts as old.
    if c.user_id.is_none() {
        return Ok(());
    }
    let at = c.auth_time.unwrap_or(0);
    let age = chrono::Utc::now().timestamp().saturating_sub(at);
    if age < 0 || age as u64 > state.reauth_secs {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "reauthentication_required",
            "sign in again to delete this",
        ));
    }
    Ok(())
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Box::new(ApiError::new(status, code, message).error_response())
}

fn engine_error(e: gatehouse_engine::Error) -> Refusal {
    Box::new(ApiError::from(e).error_response())
}

fn unauthenticated(message: &str) -> Refusal {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The caller of a management request: a user's access token, or a service API key.
async fn caller(p: &Provider<'_>, req: &HttpRequest) -> Result<Caller, Refusal> {
    let token = super::bearer(req.headers()).ok_or_else(|| {
        unauthenticated("send an access token or API key as `Authorization: Bearer`")
    })?;
    if token.starts_with("ak_live_") {
        if let Some(state) = req.app_data::<web::Data<super::AppState>>()
            && !state.key_rate.allow(&super::hash_key(token))
        {
            return Err(Box::new(super::rate_limited().error_response()));
        }
        return match p.identity.authenticate_api_key(token).await {
            Ok(Some((_, service)))
                if p.identity
                    .organization_suspended(&service.organization_id, &service.client_id)
                    .await
                    .map_err(engine_error)? =>
            {
                Err(error(
                    StatusCode::FORBIDDEN,
                    "organization_suspended",
                    "the API key's organization is suspended",
                ))
            }
            Ok(Some((_, service))) => Ok(Caller {
                principal: format!("service:{}", service.client_id),
                user_id: None,
                amr: vec!["api_key".into()],
                auth_time: None,
            }),
            Ok(None) => Err(unauthenticated("the API key is not valid")),
            Err(e) => Err(engine_error(e)),
        };
    }
    let Some(claims) = p.keys.verify(token, p.issuer) else {
        return Err(unauthenticated("the access token is invalid or expired"));
    };
    // A token any service obtained for the user is for that service, not for this API.
    if !super::login::has_audience(&claims, &p.api_audience()) {
        return Err(unauthenticated(
            "the access token was not issued for this API",
        ));
    }
    match super::oauth::token_live(p, &claims).await {
        Ok(true) => {}
        Ok(false) => return Err(unauthenticated("the access token has been revoked")),
        Err(e) => return Err(engine_error(e)),
    }
    let (Some(sub), Some(_)) = (claims["sub"].as_str(), claims["sid"].as_str()) else {
        return Err(unauthenticated(
            "the access token does not stand for a user",
        ));
    };
    Ok(Caller {
        principal: format!("user:{sub}"),
        user_id: Some(sub.to_string()),
        auth_time: claims["auth_time"].as_i64(),
        amr: claims["amr"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Asks the engine whether the caller may do `action` on `object` of the platform store;
/// a refusal is a 403 with the policies' reasons.
async fn require(p: &Provider<'_>, c: &Caller, action: &str, object: &str) -> Result<(), Refusal> {
    if allowed(p, c, action, object).await? {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("you may not do `{action}` on `{object}`"),
    ))
}

async fn allowed(
    p: &Provider<'_>,
    c: &Caller,
    action: &str,
    object: &str,
) -> Result<bool, Refusal> {
    let mfa = crate::identity::is_multi_factor(&c.amr);
    // A user with a second factor set up must have used it to change things.
    let enrolled = match &c.user_id {
        Some(u) => p.identity.has_second_factor(u).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read a user's second factor");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the decision cannot be made now; try again",
            )
        })?,
        None => false,
    };
    let mut ctx = serde_json::Map::new();
    ctx.insert("mfa".into(), json!(mfa));
    ctx.insert("mfa_enrolled".into(), json!(enrolled));
    ctx.insert("amr".into(), json!(c.amr));
    let d = p
        .identity
        .engine
        .decide(
            &p.identity.platform_store,
            &DecisionRequest {
                subject: c.principal.clone(),
                action: action.into(),
                resource: object.into(),
                context: Some(ctx),
                consistency: Consistency::HigherConsistency,
                explain: false,
                lean: true,
                attributes: Default::default(),
                ignore_undeclared: false,
                quiet: false,
            },
        )
        .await
        .map_err(engine_error)?;
    Ok(d.allowed)
}

async fn organization(p: &Provider<'_>, slug: &str) -> Result<Organization, Refusal> {
    match p.identity.store.organization_by_slug(slug).await {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("organization `{slug}` does not exist"),
        )),
        Err(e) => Err(engine_error(e)),
    }
}

async fn service(p: &Provider<'_>, client_id: &str) -> Result<Service, Refusal> {
    match p.identity.service(client_id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("service `{client_id}` does not exist"),
        )),
        Err(e) => Err(engine_error(e)),
    }
}

/// The provider, the caller and the organization `slug`, once the engine allows the caller
/// `action` on it.
async fn on_organization<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    slug: &str,
    action: &str,
) -> Result<(Provider<'a>, Caller, Organization), Refusal> {
    let p = provider_or_404(state)?;
    let c = caller(&p, req).await?;
    let org = organization(&p, slug).await?;
    require(&p, &c, action, &format!("organization:{}", org.id)).await?;
    Ok((p, c, org))
}

/// The provider, the caller and the service `client_id`, once the engine allows the caller
/// `action` on it.
async fn on_service<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    client_id: &str,
    action: &str,
) -> Result<(Provider<'a>, Caller, Service), Refusal> {
    let p = provider_or_404(state)?;
    let c = caller(&p, req).await?;
    let s = service(&p, client_id).await?;
    require(&p, &c, action, &format!("service:{}", s.client_id)).await?;
    Ok((p, c, s))
}

fn provider_or_404(state: &AppState) -> Result<Provider<'_>, Refusal> {
    provider(state).map_err(|_| {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no identity provider",
        )
    })
}

fn done(r: Answer) -> HttpResponse {
    r.unwrap_or_else(|e| *e)
}

fn user_only(c: &Caller) -> Result<&str, Refusal> {
    c.user_id.as_deref().ok_or_else(|| {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs a user's access token, not an API key",
        )
    })
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOrganization {
    slug: String,
    name: String,
}

/// `POST /api/organizations`: registers an organization, `pending` until the platform owner
/// approves it, with the caller as its owner.
pub(super) async fn create_organization(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewOrganization>,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            let user = user_only(&c)?;
            let org = p
                .identity
                .create_organization(&c.principal, &body.slug, &body.name, None)
                .await
                .map_err(engine_error)?;
            let m = p
                .identity
                .add_member(&c.principal, &org.slug, user, "owner")
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Created().json(json!({ "organization": org, "membership": m })))
        }
        .await,
    )
}

/// `GET /api/organizations`: the organizations the caller belongs to, with its role.
pub(super) async fn list_organizations(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            let user = user_only(&c)?;
            let rows = p
                .identity
                .store
                .memberships_of(user)
                .await
                .map_err(engine_error)?;
            let items: Vec<_> = rows
                .into_iter()
                .map(|(id, slug, name, status, role)| {
                    json!({ "id": id, "slug": slug, "name": name, "status": status, "role": role })
                })
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "organizations": items })))
        }
        .await,
    )
}

/// `GET /api/organizations/{slug}`.
pub(super) async fn get_organization(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (_, _, org) = on_organization(&state, &req, &path, "viewer").await?;
            Ok(HttpResponse::Ok().json(org))
        }
        .await,
    )
}

/// A field that may be absent (kept), `null` (cleared) or a value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(d).map(Some)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OrganizationPatch {
    #[serde(default, deserialize_with = "present")]
    logo_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    primary_color: Option<Option<String>>,
    /// The platform owner's to change.
    tier: Option<String>,
}

/// `PATCH /api/organizations/{slug}`: the branding of its login pages (a field left out is
/// kept, `null` clears it), and its tier (for the platform's owners).
pub(super) async fn patch_organization(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<OrganizationPatch>,
) -> HttpResponse {
    done(
        async {
            let body = body.into_inner();
            let branding = body.logo_url.is_some() || body.primary_color.is_some();
            if !branding && body.tier.is_none() {
                return Err(Box::new(
                    ApiError::validation(
                        "nothing to change: send `logo_url`, `primary_color` or `tier`",
                    )
                    .error_response(),
                ));
            }
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            let mut org = organization(&p, &path).await?;
            let object = format!("organization:{}", org.id);
            // Every permission first, so that a refused part changes nothing.
            if branding {
                require(&p, &c, "can_manage_settings", &object).await?;
            }
            if body.tier.is_some() {
                require(&p, &c, "can_approve", &object).await?;
            }
            let logo = body.logo_url.unwrap_or(org.logo_url.clone());
            let color = body.primary_color.unwrap_or(org.primary_color.clone());
            // Every value checked before anything is written, so that a refused part changes
            // nothing.
            crate::identity::check_branding(logo.as_deref(), color.as_deref())
                .map_err(engine_error)?;
            // The tier first: it checks that the organization fits it.
            if let Some(tier) = body.tier.as_deref() {
                org = p
                    .identity
                    .change_tier(&c.principal, &org.slug, tier)
                    .await
                    .map_err(engine_error)?;
            }
            if branding {
                org = p
                    .identity
                    .brand_organization(&c.principal, &org.slug, logo.as_deref(), color.as_deref())
                    .await
                    .map_err(engine_error)?;
            }
            Ok(HttpResponse::Ok().json(org))
        }
        .await,
    )
}

/// `POST /api/organizations/{slug}/approve`, `/reject`, `/suspend` and `/unsuspend`: the
/// platform owner's decisions. A suspended organization's services sign nobody in and issue
/// no tokens until the suspension is lifted.
pub(super) async fn decide_organization(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    done(
        async {
            let (slug, verb) = path.into_inner();
            if !matches!(
                verb.as_str(),
                "approve" | "reject" | "suspend" | "unsuspend"
            ) {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "undefined_endpoint",
                    "no such endpoint",
                ));
            }
            let (p, c, _) = on_organization(&state, &req, &slug, "can_approve").await?;
            let id = &p.identity;
            let out = match verb.as_str() {
                "approve" | "reject" => {
                    let org = id
                        .decide_organization(&c.principal, &slug, verb == "approve")
                        .await
                        .map_err(engine_error)?;
                    json!(org)
                }
                _ => {
                    let suspend = verb == "suspend";
                    let org = id
                        .suspend_organization(&c.principal, &slug, suspend)
                        .await
                        .map_err(engine_error)?;
                    json!({ "organization": org, "suspended": suspend })
                }
            };
            Ok(HttpResponse::Ok().json(out))
        }
        .await,
    )
}

/// `GET /api/organizations/{slug}/members`.
pub(super) async fn list_members(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, _, org) = on_organization(&state, &req, &path, "viewer").await?;
            let members = p.identity.store.members(&org.id).await.map_err(engine_error)?;
            let items: Vec<_> = members
                .into_iter()
                .map(|(m, u)| {
                    json!({ "user_id": u.id, "email": u.email, "name": u.name, "role": m.role, "joined_at": chrono::DateTime::<chrono::Utc>::from_naive_utc_and_offset(m.created_at, chrono::Utc) })
                })
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "members": items })))
        }
        .await,
    )
}

/// The rank the caller may grant below: its own role's, or above every role for a platform
/// owner.
async fn caller_rank(p: &Provider<'_>, c: &Caller, org: &Organization) -> Result<usize, Refusal> {
    let object = format!("organization:{}", org.id);
    if allowed(p, c, "platform_owner", &object).await? {
        return Ok(usize::MAX);
    }
    let Some(user) = c.user_id.as_deref() else {
        return Ok(0);
    };
    let m = p
        .identity
        .store
        .membership(&org.id, user)
        .await
        .map_err(engine_error)?;
    Ok(m.and_then(|m| role_rank(&m.role)).unwrap_or(0))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMember {
    email: String,
    role: String,
}

/// `POST /api/organizations/{slug}/members`: nobody joins an organization without their say,
/// so this invites the address (as `POST …/invitations` does) and answers `202 Accepted` with
/// the invitation, the same whether or not the address has an account; the person becomes a
/// member by accepting it. The role must be below the caller's own.
pub(super) async fn add_member(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NewMember>,
) -> HttpResponse {
    let body = body.into_inner();
    let invited = invite_address(&state, &req, &path, &body.email, &body.role).await;
    match invited {
        Ok(inv) => HttpResponse::Accepted().json(json!({ "invitation": inv })),
        Err(r) => *r,
    }
}

/// `DELETE /api/organizations/{slug}/members/{user_id}`: removes a member whose role is
/// below the caller's own.
pub(super) async fn remove_member(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    done(
        async {
            let (slug, user_id) = path.into_inner();
            let (p, c, org) = on_organization(&state, &req, &slug, "can_manage_members").await?;
            recent(&state, &c)?;
            let target = p
                .identity
                .store
                .membership(&org.id, &user_id)
                .await
                .map_err(engine_error)?
                .ok_or_else(|| {
                    error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("`{user_id}` is not a member"),
                    )
                })?;
            if role_rank(&target.role).unwrap_or(usize::MAX) >= caller_rank(&p, &c, &org).await? {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "you can only remove members whose role is below your own",
                ));
            }
            p.identity
                .remove_member(&c.principal, &slug, &user_id)
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewInvitation {
    email: String,
    role: String,
}

/// `POST /api/organizations/{slug}/invitations`: emails a single-use link; the role must be
/// below the caller's own.
pub(super) async fn invite(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NewInvitation>,
) -> HttpResponse {
    let body = body.into_inner();
    match invite_address(&state, &req, &path, &body.email, &body.role).await {
        Ok(inv) => HttpResponse::Created().json(inv),
        Err(r) => *r,
    }
}

/// Invites `email` to the organization `slug` as `role` (below the caller's own) and mails
/// the link; the open invitation.
async fn invite_address(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    slug: &str,
    email: &str,
    role: &str,
) -> Result<crate::db::users::EmailToken, Refusal> {
    let (p, c, org) = on_organization(state, req, slug, "can_manage_members").await?;
    if org.status != "active" {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "organization `{}` is {}: it invites people once it is active",
                org.slug, org.status
            ),
        ));
    }
    if let Some(rank) = role_rank(role)
        && rank >= caller_rank(&p, &c, &org).await?
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you can only invite to roles below your own",
        ));
    }
    let (inv, token) = p
        .identity
        .invite(&c.principal, &org, email, role)
        .await
        .map_err(engine_error)?;
    if let Some(m) = &state.mailer {
        m.send(
            "invitation",
            inv.email.clone(),
            format!("You are invited to join {}", org.name),
            format!(
                "You are invited to join {} on Gatehouse as {}. To accept, open this link within {} days:\n\n{}/invitations/accept?token={token}\n",
                org.name,
                role,
                crate::identity::email::INVITE_DAYS,
                p.issuer
            ),
        );
    }
    Ok(inv)
}

/// `GET /api/organizations/{slug}/invitations`: the open ones.
pub(super) async fn list_invitations(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, _, org) = on_organization(&state, &req, &path, "can_manage_members").await?;
            let list = p
                .identity
                .store
                .invitations(&org.id)
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Ok().json(json!({ "invitations": list })))
        }
        .await,
    )
}

/// `DELETE /api/organizations/{slug}/invitations/{id}`: withdraws an open invitation.
pub(super) async fn withdraw_invitation(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    done(
        async {
            let (slug, id) = path.into_inner();
            let (p, c, org) = on_organization(&state, &req, &slug, "can_manage_members").await?;
            recent(&state, &c)?;
            if !p
                .identity
                .store
                .withdraw_invitation(&org.id, &id)
                .await
                .map_err(engine_error)?
            {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such open invitation",
                ));
            }
            p.identity
                .audit(
                    Some(&org.id),
                    &c.principal,
                    None,
                    "invitation.withdrawn",
                    json!({ "id": id }),
                )
                .await;
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

/// `GET /api/organizations/{slug}/services`.
pub(super) async fn list_services(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, _, org) = on_organization(&state, &req, &path, "member").await?;
            let mut out = Vec::new();
            for id in p
                .identity
                .store
                .service_ids(&org.id)
                .await
                .map_err(engine_error)?
            {
                if let Some(s) = p.identity.service(&id).await.map_err(engine_error)? {
                    out.push(s);
                }
            }
            Ok(HttpResponse::Ok().json(json!({ "services": out })))
        }
        .await,
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewService {
    name: String,
    grant_types: Vec<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    public: bool,
    /// The organization's own application: its members sign in without a consent page.
    #[serde(default)]
    first_party: bool,
}

/// `POST /api/organizations/{slug}/services`: a new OIDC client; its secret is in this answer
/// only.
pub(super) async fn create_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NewService>,
) -> HttpResponse {
    done(
        async {
            let (p, c, org) = on_organization(&state, &req, &path, "can_manage_services").await?;
            let body = body.into_inner();
            let created = p
                .identity
                .create_service(
                    &c.principal,
                    &org.slug,
                    &body.name,
                    body.grant_types,
                    body.redirect_uris,
                    body.public,
                    body.first_party,
                )
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Created()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(created))
        }
        .await,
    )
}

/// `GET /api/services/{client_id}`.
pub(super) async fn get_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (_, _, s) = on_service(&state, &req, &path, "member").await?;
            Ok(HttpResponse::Ok().json(s))
        }
        .await,
    )
}

/// `PATCH /api/services/{client_id}`: its name, redirect URIs or grant types.
pub(super) async fn patch_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<crate::identity::ServiceChange>,
) -> HttpResponse {
    done(
        async {
            let (p, c, s) = on_service(&state, &req, &path, "can_manage").await?;
            let s = p
                .identity
                .update_service(&c.principal, &s.client_id, body.into_inner())
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Ok().json(s))
        }
        .await,
    )
}

/// `POST /api/services/{client_id}/secret`: a new client secret, in this answer only; the
/// old one stops working.
pub(super) async fn rotate_service_secret(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, c, s) = on_service(&state, &req, &path, "can_manage").await?;
            let rotated = p
                .identity
                .rotate_service_secret(&c.principal, &s.client_id)
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(rotated))
        }
        .await,
    )
}

/// `DELETE /api/services/{client_id}`: the service stops signing anyone in, its API keys
/// are revoked and its tokens stop being active.
pub(super) async fn delete_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, c, s) = on_service(&state, &req, &path, "can_manage").await?;
            recent(&state, &c)?;
            let keys = p
                .identity
                .store
                .api_keys_of(&s.client_id)
                .await
                .map_err(engine_error)?;
            p.identity
                .delete_service(&c.principal, &s.client_id)
                .await
                .map_err(engine_error)?;
            for k in &keys {
                p.identity.forget_api_key(&k.key_sha256);
            }
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

/// `GET /api/tiers`: every tier and its limits, for any signed-in caller.
pub(super) async fn list_tiers(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            caller(&p, &req).await?;
            let tiers = p.identity.store.tiers().await.map_err(engine_error)?;
            let items: Vec<_> = tiers
                .into_iter()
                .map(|(name, l)| json!({ "name": name, "max_users": l.max_users, "max_services": l.max_services }))
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "tiers": items })))
        }
        .await,
    )
}

/// `GET /api/plugins`: the installed login plugins (id, version, kind, display name,
/// capabilities, configuration schema), for any signed-in caller.
pub(super) async fn list_plugins(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            caller(&p, &req).await?;
            let mut items = Vec::new();
            if let Some(h) = state.plugins.as_deref() {
                let plugins = h.plugins().await.map_err(|e| {
                    tracing::error!(error = %e, "a plugin cannot be loaded");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the plugins cannot be listed now",
                    )
                })?;
                items.extend(
                    plugins
                        .values()
                        .map(|p| crate::identity::plugins::describe(p)),
                );
            }
            Ok(HttpResponse::Ok().json(json!({ "plugins": items })))
        }
        .await,
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upload {
    /// `plugin.toml`.
    manifest: String,
    /// The component, base64.
    wasm: String,
}

/// `POST /api/plugins`: installs a third-party plugin (platform administration, with a second
/// factor). It is checked as one from the plugin directory, kept in the database, and
/// installed again at every start; one with the id of an uploaded plugin replaces it.
pub(super) async fn upload_plugin(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Upload>,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            require(&p, &c, "can_manage_plugins", crate::identity::PLATFORM).await?;
            let (host, _) = plugin_parts(&state)?;
            let Upload { manifest, wasm } = body.into_inner();
            use base64::Engine;
            let wasm = base64::engine::general_purpose::STANDARD
                .decode(wasm.trim())
                .map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "validation_error",
                        "`wasm` must be the component in base64",
                    )
                })?;
            let checked = crate::identity::plugins::check_third_party(host, &manifest, &wasm)
                .await
                .map_err(|e| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "validation_error",
                        format!("{e:#}"),
                    )
                })?;
            let id = checked.manifest.id.clone();
            let sha256 = crate::secrets::sha256_hex_bytes(&wasm);
            p.identity
                .store
                .put_uploaded_plugin(&crate::db::users::UploadedPlugin {
                    id: id.clone(),
                    manifest,
                    wasm,
                    sha256: sha256.clone(),
                    uploaded_by: c.principal.clone(),
                    uploaded_at: chrono::Utc::now().naive_utc(),
                })
                .await
                .map_err(storage_refusal)?;
            let plugin = host.install_loaded(checked);
            p.identity
                .audit(
                    None,
                    &c.principal,
                    super::login::client_ip(&req).as_deref(),
                    "platform.plugin_uploaded",
                    json!({ "plugin": id, "version": plugin.manifest.version, "sha256": sha256 }),
                )
                .await;
            Ok(HttpResponse::Created().json(crate::identity::plugins::describe(&plugin)))
        }
        .await,
    )
}

/// `DELETE /api/plugins/{id}`: removes an uploaded plugin (platform administration).
pub(super) async fn delete_plugin(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            require(&p, &c, "can_manage_plugins", crate::identity::PLATFORM).await?;
            recent(&state, &c)?;
            let (host, _) = plugin_parts(&state)?;
            let id = path.into_inner();
            if gatehouse_plugin_host::embedded::is_first_party(&id) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "validation_error",
                    format!("`{id}` is a first-party plugin; it cannot be removed"),
                ));
            }
            if !p
                .identity
                .store
                .delete_uploaded_plugin(&id)
                .await
                .map_err(storage_refusal)?
            {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no uploaded plugin `{id}`"),
                ));
            }
            host.uninstall(&id);
            p.identity
                .audit(
                    None,
                    &c.principal,
                    super::login::client_ip(&req).as_deref(),
                    "platform.plugin_removed",
                    json!({ "plugin": id }),
                )
                .await;
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

/// The plugin host and the services' plugin configurations, or a 404.
fn plugin_parts(
    state: &AppState,
) -> Result<
    (
        &gatehouse_plugin_host::Host,
        &crate::identity::providers::ServicePlugins,
    ),
    Refusal,
> {
    match (state.plugins.as_deref(), state.service_plugins.as_deref()) {
        (Some(h), Some(s)) => Ok((h, s)),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no login plugins",
        )),
    }
}

fn storage_refusal(e: gatehouse_engine::Error) -> Refusal {
    match e {
        gatehouse_engine::Error::Validation(_) => engine_error(e),
        e => {
            tracing::error!(error = %e, "cannot read or keep a plugin configuration");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "plugin configurations cannot be read or kept now",
            )
        }
    }
}

/// `GET /api/services/{client_id}/plugins`: the login plugins the service offers, with their
/// configuration; secret fields are named in `secrets_set`, never shown.
pub(super) async fn list_service_plugins(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (_, _, s) = on_service(&state, &req, &path, "member").await?;
            let (_, sp) = plugin_parts(&state)?;
            let items = sp.list(&s.client_id).await.map_err(storage_refusal)?;
            Ok(HttpResponse::Ok().json(json!({ "plugins": items })))
        }
        .await,
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginConfig {
    config: serde_json::Value,
}

/// `PUT /api/services/{client_id}/plugins/{plugin}`: the service offers the plugin, with this
/// configuration (checked against the plugin's schema; secret fields sealed, and kept when
/// left out).
pub(super) async fn put_service_plugin(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<PluginConfig>,
) -> HttpResponse {
    done(
        async {
            let (client_id, plugin_id) = path.into_inner();
            let (p, c, s) = on_service(&state, &req, &client_id, "can_manage").await?;
            let (host, sp) = plugin_parts(&state)?;
            if super::login::built_in(&plugin_id) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "validation_error",
                    format!("`{plugin_id}` is part of every service's sign-in and is not configured per service"),
                ));
            }
            let plugin = match host.plugin(&plugin_id).await {
                Ok(pl) => pl,
                Err(gatehouse_plugin_host::PluginError::Unknown(_)) => {
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no plugin `{plugin_id}` is installed"),
                    ));
                }
                Err(e) => {
                    crate::identity::login::plugin_failed(
                        &state.metrics.plugin_failures,
                        &plugin_id,
                        &e,
                    );
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("the plugin `{plugin_id}` cannot be loaded now"),
                    ));
                }
            };
            let schema: serde_json::Value =
                serde_json::from_str(&plugin.description.config_schema).unwrap_or(json!({}));
            let offered = sp
                .configure(&s.client_id, &plugin_id, &schema, body.into_inner().config)
                .await
                .map_err(storage_refusal)?;
            let fields: Vec<&String> = offered
                .config
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            p.identity
                .audit(
                    Some(&s.organization_id),
                    &c.principal,
                    super::login::client_ip(&req).as_deref(),
                    "service.plugin_configured",
                    json!({ "client_id": s.client_id, "plugin": plugin_id, "fields": fields, "secrets_set": offered.secrets_set }),
                )
                .await;
            Ok(HttpResponse::Ok().json(offered))
        }
        .await,
    )
}

/// `DELETE /api/services/{client_id}/plugins/{plugin}`: the service stops offering it.
pub(super) async fn delete_service_plugin(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    done(
        async {
            let (client_id, plugin_id) = path.into_inner();
            let (p, c, s) = on_service(&state, &req, &client_id, "can_manage").await?;
            recent(&state, &c)?;
            let (_, sp) = plugin_parts(&state)?;
            if !sp
                .remove(&s.client_id, &plugin_id)
                .await
                .map_err(storage_refusal)?
            {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("the service does not offer `{plugin_id}`"),
                ));
            }
            p.identity
                .audit(
                    Some(&s.organization_id),
                    &c.principal,
                    super::login::client_ip(&req).as_deref(),
                    "service.plugin_removed",
                    json!({ "client_id": s.client_id, "plugin": plugin_id }),
                )
                .await;
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

/// `PUT /api/tiers/{name}`: adds a tier or changes its limits; platform administration, so
/// it needs the platform's owner signed in with a second factor.
pub(super) async fn put_tier(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<crate::db::tenancy::TierLimits>,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            require(&p, &c, "can_manage_tiers", crate::identity::PLATFORM).await?;
            p.identity
                .set_tier(&c.principal, &path, *body)
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Ok().json(json!({ "name": *path, "max_users": body.max_users, "max_services": body.max_services })))
        }
        .await,
    )
}

/// `GET /api/services/{client_id}/api-keys`.
pub(super) async fn list_api_keys(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (p, _, s) = on_service(&state, &req, &path, "member").await?;
            let keys = p
                .identity
                .store
                .api_keys_of(&s.client_id)
                .await
                .map_err(engine_error)?;
            Ok(HttpResponse::Ok().json(json!({ "api_keys": keys })))
        }
        .await,
    )
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewApiKey {
    name: String,
}

/// `POST /api/services/{client_id}/api-keys`: a new key, in this answer only.
pub(super) async fn create_api_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NewApiKey>,
) -> HttpResponse {
    done(
        async {
            let (p, c, s) = on_service(&state, &req, &path, "can_manage").await?;
            let (k, key) = p
                .identity
                .create_api_key(&c.principal, &s.client_id, &body.name)
                .await
                .map_err(engine_error)?;
            let mut out = serde_json::to_value(&k).unwrap_or_default();
            out["key"] = json!(key);
            Ok(HttpResponse::Created()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(out))
        }
        .await,
    )
}

/// `DELETE /api/services/{client_id}/api-keys/{id}`: revokes a key at once on this node,
/// and on the others within the key cache's lifetime.
pub(super) async fn revoke_api_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    done(
        async {
            let (client_id, id) = path.into_inner();
            let (p, c, s) = on_service(&state, &req, &client_id, "can_manage").await?;
            recent(&state, &c)?;
            let keys = p
                .identity
                .store
                .api_keys_of(&s.client_id)
                .await
                .map_err(engine_error)?;
            let revoked = p
                .identity
                .revoke_api_key(&c.principal, &s, &id)
                .await
                .map_err(engine_error)?;
            if !revoked {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no live API key `{id}`"),
                ));
            }
            if let Some(k) = keys.iter().find(|k| k.id == id) {
                p.identity.forget_api_key(&k.key_sha256);
            }
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

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

/// `GET /api/organizations/{slug}/audit`: the organization's audit log, newest first, with
/// filters and pagination; for its admins (and the platform's owners).
pub(super) async fn audit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    params: web::Query<AuditParams>,
) -> HttpResponse {
    done(
        async {
            let p = provider_or_404(&state)?;
            let c = caller(&p, &req).await?;
            let limit = params.limit.unwrap_or(50);
            if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
                return Err(Box::new(
                    ApiError::validation(format!("`limit` must be 1 to {MAX_AUDIT_PAGE}"))
                        .error_response(),
                ));
            }
            let since = match params
                .since
                .as_deref()
                .map(chrono::DateTime::parse_from_rfc3339)
            {
                None => None,
                Some(Ok(t)) => Some(t.with_timezone(&chrono::Utc)),
                Some(Err(_)) => {
                    return Err(Box::new(
                        ApiError::validation("`since` must be an RFC 3339 timestamp")
                            .error_response(),
                    ));
                }
            };
            if params.kind.as_ref().is_some_and(|k| k.len() > 100)
                || params.actor.as_ref().is_some_and(|a| a.len() > 300)
            {
                return Err(Box::new(
                    ApiError::validation("`kind` or `actor` is too long").error_response(),
                ));
            }
            let org = organization(&p, &path).await?;
            require(
                &p,
                &c,
                "can_read_audit",
                &format!("organization:{}", org.id),
            )
            .await?;
            let q = AuditQuery {
                organization_id: org.id,
                kind: params.kind.clone(),
                actor: params.actor.clone(),
                before: params.before,
                since,
                limit,
            };
            let events = p
                .identity
                .store
                .audit_events(&q)
                .await
                .map_err(engine_error)?;
            let next = (events.len() as i64 == limit)
                .then(|| events.last().map(|e| e.id))
                .flatten();
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "events": events, "next_before": next })))
        }
        .await,
    )
}
