//! The device authorization grant (RFC 8628): a device without a browser shows a short code,
//! its user approves it at `/device` on another screen, and the device polls the token
//! endpoint until the approval comes. The approval is a sign-in like any other: the platform
//! decides `Action::"authenticate"` on the service before the device gets a token.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::login::{
    FormSignIn, Provider, SESSION_COOKIE, authorize_session, client_ip, cookie, current_session,
    form_token, form_token_ok, organization_of, provider, unavailable_page,
};
use super::oauth::{
    Refusal, UserGrant, grant_allowed, grant_client, internal, invalid_grant, new_family, no_store,
    oauth_error, parse_form, user_tokens,
};
use super::pages::{error_page, escape, page};
use crate::identity::login::{Failure, Strategy as _};
use crate::oidc::sessions::{
    Code, DEVICE_INTERVAL, DEVICE_SECONDS, DeviceDecision, SESSION_SECONDS, sha256_hex,
};

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const CSRF_COOKIE: &str = "gh_csrf";
/// Code entries one address may make per minute (user codes are short: guessing is slowed).
const DEVICE_ATTEMPTS_PER_IP_MINUTE: u64 = 20;

/// `POST /oauth2/device_authorization` (RFC 8628 §3.1).
pub(super) async fn authorization(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let run = async {
        let p = provider(&state)?;
        super::oauth::rate_limited(&p, state.token_rate_per_ip, &req).await?;
        let form = parse_form(&req, &body)?;
        let service = grant_client(&p, &req, &form).await?;
        grant_allowed(&service, DEVICE_GRANT)?;
        let mut scopes: Vec<&str> = Vec::new();
        for s in form
            .get("scope")
            .map(String::as_str)
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
        {
            if !super::login::SCOPES.contains(&s) {
                return Err(Box::new(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("scope `{s}` is not supported"),
                )));
            }
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let (device_code, user_code) = p
            .sessions
            .put_device(&service.client_id, &scopes.join(" "))
            .await
            .map_err(|e| internal("cannot start a device authorization", e))?;
        let uri = format!("{}/device", p.issuer);
        Ok::<_, Refusal>(no_store(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": uri,
            "verification_uri_complete": format!("{uri}?user_code={user_code}"),
            "expires_in": DEVICE_SECONDS,
            "interval": DEVICE_INTERVAL,
        })))
    };
    run.await.unwrap_or_else(|r| *r)
}

/// The device grant at the token endpoint (RFC 8628 §3.4, §3.5).
pub(super) async fn token(
    p: &Provider<'_>,
    req: &HttpRequest,
    form: &HashMap<String, String>,
) -> Result<HttpResponse, Refusal> {
    let service = grant_client(p, req, form).await?;
    grant_allowed(&service, DEVICE_GRANT)?;
    let Some(device_code) = form.get("device_code").filter(|c| !c.is_empty()) else {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`device_code` is required",
        )));
    };
    let (grant, too_fast) = p
        .sessions
        .poll_device(device_code)
        .await
        .map_err(|e| internal("cannot read a device authorization", e))?;
    let Some(grant) = grant else {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code is unknown or has expired; start again",
        )));
    };
    if grant.client_id != service.client_id {
        return Err(invalid_grant(
            "the device code was issued to another client",
        ));
    }
    let approved = match grant.decision {
        None if too_fast => {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "slow_down",
                &format!("poll at most every {DEVICE_INTERVAL} seconds"),
            )));
        }
        None => {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "the user has not yet approved this device",
            )));
        }
        Some(DeviceDecision::Denied) => {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "access_denied",
                "the user denied this device",
            )));
        }
        Some(DeviceDecision::Approved(c)) => *c,
    };
    let user = match p.identity.store.user(&approved.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(invalid_grant("the user no longer exists")),
        Err(e) => return Err(internal("cannot read a user", e)),
    };
    let family = new_family(p, &service, &approved).await?;
    let res = user_tokens(
        p,
        &UserGrant {
            service: &service,
            user: &user,
            scope: &approved.scope,
            session_id: &approved.session_id,
            auth_time: approved.auth_time,
            amr: &approved.amr,
            nonce: None,
            refresh: family.as_ref().map(|(f, t)| (f.as_str(), t.as_str())),
            jti: None,
        },
    )?;
    p.identity
        .audit(
            Some(&service.organization_id),
            &format!("user:{}", user.id),
            client_ip(req).as_deref(),
            "token.issued",
            json!({ "client_id": service.client_id, "grant_type": DEVICE_GRANT, "scope": approved.scope, "token_family": family.as_ref().map(|f| &f.0) }),
        )
        .await;
    Ok(res)
}

/// The code entry form; with the password fields when the browser has no session.
fn device_form(
    status: StatusCode,
    csrf: &str,
    user_code: &str,
    signed_in: bool,
    error: Option<&str>,
) -> HttpResponse {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let login = if signed_in {
        String::new()
    } else {
        r#"<label for="email">Email address</label>
<input id="email" name="email" type="email" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
"#
        .to_string()
    };
    let body = format!(
        r#"<p>Enter the code shown on your device.</p>
{error}<form method="post" action="/device">
<input type="hidden" name="csrf" value="{csrf}">
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" autocomplete="one-time-code" autocapitalize="characters" required value="{code}">
{login}<button type="submit" name="action" value="allow">Allow this device</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>"#,
        csrf = escape(csrf),
        code = escape(user_code),
    );
    page(status, "Connect a device", None, &body)
}

/// Asks the signed-in person to confirm connecting the device: which application, of which
/// organization, and what it will learn.
fn confirm_page(
    csrf: &str,
    user_code: &str,
    service: &crate::db::tenancy::Service,
    org: Option<&crate::db::tenancy::Organization>,
    scope: &str,
) -> HttpResponse {
    let items: String = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "<li>{}</li>",
                escape(crate::identity::consent::scope_description(s))
            )
        })
        .collect();
    let body = format!(
        r#"<p>Connect the device showing <strong>{code}</strong> to <strong>{app}</strong>, an application of <strong>{org}</strong>? It will be able to:</p>
<ul>{items}</ul>
<form method="post" action="/device">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="user_code" value="{code}">
<input type="hidden" name="confirm" value="yes">
<button type="submit" name="action" value="allow">Connect the device</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>"#,
        code = escape(user_code),
        app = escape(&service.name),
        org = escape(org.map(|o| o.name.as_str()).unwrap_or("an organization")),
        csrf = escape(csrf),
    );
    page(StatusCode::OK, "Connect this device?", org, &body)
}

/// How long the password may wait for the authenticator app's code.
const FIRST_FACTOR_SECONDS: u64 = 600;

fn first_factor_key(token: &str) -> String {
    format!("device-first-factor:{}", sha256_hex(token))
}

/// A first factor that waits for the second, on the device page.
#[derive(serde::Serialize, serde::Deserialize)]
struct FirstFactor {
    user: String,
    methods: Vec<String>,
}

/// The page asking for the authenticator app's code, after a good password: the first factor
/// waits under a token of this form (only its digest is kept) for 10 minutes.
async fn ask_second_factor(
    p: &Provider<'_>,
    csrf: &str,
    user_code: &str,
    action: &str,
    user: &crate::db::users::User,
    methods: Vec<String>,
    error: Option<(StatusCode, &str)>,
) -> HttpResponse {
    match p.identity.second_factors(&user.id).await {
        Ok(f) if f.totp => {}
        Ok(_) => {
            return device_form(
                StatusCode::FORBIDDEN,
                csrf,
                user_code,
                false,
                Some(
                    "This account's second factor is a passkey, which this page cannot ask for. Sign in to an application in this browser with it first, then open this page again.",
                ),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user's second factor");
            return unavailable_page();
        }
    }
    let Ok(token) = crate::oidc::sessions::secret("") else {
        return unavailable_page();
    };
    let kept = FirstFactor {
        user: user.id.clone(),
        methods,
    };
    let Ok(value) = serde_json::to_string(&kept) else {
        return unavailable_page();
    };
    if let Err(e) = p
        .sessions
        .kv()
        .put(
            &first_factor_key(&token),
            &value,
            std::time::Duration::from_secs(FIRST_FACTOR_SECONDS),
        )
        .await
    {
        tracing::error!(error = %e, "cannot keep a first factor");
        return unavailable_page();
    }
    let (status, error) = error.unwrap_or((StatusCode::OK, ""));
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert">{}</p>"#, escape(error))
    };
    let deny = action == "deny";
    let body = format!(
        r#"<p>Enter the code your authenticator app shows (or a recovery code).</p>
{error}<form method="post" action="/device">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="user_code" value="{code}">
<input type="hidden" name="first_factor" value="{token}">
<label for="code">Code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus>
<button type="submit" name="action" value="{action}">{label}</button>
</form>"#,
        csrf = escape(csrf),
        code = escape(user_code),
        action = if deny { "deny" } else { "allow" },
        label = if deny {
            "Deny the device"
        } else {
            "Allow this device"
        },
    );
    page(status, "Confirm it is you", None, &body)
}

/// A second factor to ask for again: the user, the first factor's methods, and why.
type AskAgain = (crate::db::users::User, Vec<String>, StatusCode, String);

/// The authenticator app's code for a first factor waiting under `token`: a session with both
/// factors, or (`Err`) the code asked for again (a wrong code counts towards the account's
/// lockout).
async fn second_factor(
    p: &Provider<'_>,
    req: &HttpRequest,
    form: &HashMap<String, String>,
    token: &str,
    service: &crate::db::tenancy::Service,
) -> Result<FormSignIn, AskAgain> {
    let key = first_factor_key(token);
    let kept: Option<FirstFactor> = match p.sessions.kv().get(&key).await {
        Ok(v) => v.and_then(|v| serde_json::from_str(&v).ok()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a first factor");
            return Ok(FormSignIn::Unavailable);
        }
    };
    let Some(kept) = kept else {
        return Ok(FormSignIn::Refused(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired. Enter the code and your password again.".into(),
        ));
    };
    let user = match p.identity.store.user(&kept.user).await {
        Ok(Some(u)) => u,
        Ok(None) => return Ok(FormSignIn::Unavailable),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user");
            return Ok(FormSignIn::Unavailable);
        }
    };
    let plugin = crate::identity::login::SECOND_FACTOR;
    let outcome = p
        .second_factor(plugin, &kept.user, req)
        .complete(p.identity, &service.organization_id, form)
        .await;
    // The token is used up either way: a new one comes with the form asked again.
    if let Err(e) = p.sessions.kv().delete(&key).await {
        tracing::warn!(error = %e, "cannot drop a used first factor");
    }
    let assertion = match outcome {
        Ok(a) => a,
        Err(f) => {
            p.identity
                .audit(
                    Some(&service.organization_id),
                    &format!("user:{}", kept.user),
                    client_ip(req).as_deref(),
                    "login.failed",
                    json!({ "client_id": service.client_id, "method": plugin, "flow": "device" }),
                )
                .await;
            return match f {
                Failure::InvalidCredentials { .. } => Err((
                    user,
                    kept.methods,
                    StatusCode::UNAUTHORIZED,
                    "That code is not right. Try the current one.".into(),
                )),
                Failure::BadRequest(m) => Err((user, kept.methods, StatusCode::BAD_REQUEST, m)),
                Failure::Locked { .. } => Ok(FormSignIn::Refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed attempts: this account is locked for now.".into(),
                )),
                Failure::Unavailable(m) => {
                    tracing::error!(error = %m, "a second factor failed");
                    Ok(FormSignIn::Unavailable)
                }
            };
        }
    };
    let mut methods = kept.methods;
    for m in assertion.methods.into_iter().chain(["mfa".to_string()]) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    Ok(super::login::open_session(p, req, &user, methods, service, "device").await)
}

/// `GET /device`: the page where the user enters (or confirms) a device's code.
pub(super) async fn page_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let signed_in = matches!(current_session(&p, &req).await, Ok(Some(_)));
    let Some((csrf, csrf_cookie)) = form_token(&p, CSRF_COOKIE, "/device", 3600) else {
        return unavailable_page();
    };
    let code = q.get("user_code").map(String::as_str).unwrap_or_default();
    let mut res = device_form(StatusCode::OK, &csrf, code, signed_in, None);
    let _ = res.add_cookie(&csrf_cookie);
    res
}

/// `POST /device`: a code entered, with the user's credentials when not signed in, and the
/// user's answer.
pub(super) async fn page_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Ok(form) = parse_form(&req, &body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The form could not be read",
            "Open the device page again and enter the code.",
            None,
        );
    };
    let csrf = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !form_token_ok(&req, CSRF_COOKIE, csrf) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This page has expired",
            "Open the device page again and enter the code (cookies must be enabled).",
            None,
        );
    }
    let session = match current_session(&p, &req).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return unavailable_page();
        }
    };
    let user_code = form.get("user_code").cloned().unwrap_or_default();
    let has_session = session.is_some();
    let again =
        |status: StatusCode, m: &str| device_form(status, csrf, &user_code, has_session, Some(m));
    let ip = client_ip(&req);
    if let Some(ip) = &ip {
        match p
            .sessions
            .kv()
            .incr(
                &format!("rate:device:{ip}"),
                std::time::Duration::from_secs(60),
            )
            .await
        {
            Ok(n) if n > DEVICE_ATTEMPTS_PER_IP_MINUTE => {
                return again(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts from your network. Wait a minute and try again.",
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count device attempts");
                return unavailable_page();
            }
        }
    }
    let (key, grant) = match p.sessions.device_by_user_code(&user_code).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            return again(
                StatusCode::BAD_REQUEST,
                "That code is not valid or has expired. Check the code on your device.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a device authorization");
            return unavailable_page();
        }
    };
    let service = match p.identity.service(&grant.client_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return again(StatusCode::BAD_REQUEST, "That code is not valid."),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service");
            return unavailable_page();
        }
    };
    let org = organization_of(p.identity, &service).await;
    // Not signed in: the credentials on this form sign the user in first, and then the code
    // of their authenticator app when they have one.
    let mut new_session_cookie = None;
    let action = form.get("action").map(String::as_str).unwrap_or("allow");
    let signed_in = match (session, form.get("first_factor")) {
        (Some(s), _) => FormSignIn::SignedIn(String::new(), s),
        (None, Some(token)) => match second_factor(&p, &req, &form, token, &service).await {
            Ok(outcome) => outcome,
            Err((user, methods, status, message)) => {
                return ask_second_factor(
                    &p,
                    csrf,
                    &user_code,
                    action,
                    &user,
                    methods,
                    Some((status, &message)),
                )
                .await;
            }
        },
        (None, None) => {
            super::login::sign_in_with_form(
                &p,
                &req,
                &p.password_strategy(&req),
                &form,
                &service,
                "device",
            )
            .await
        }
    };
    let session = match signed_in {
        FormSignIn::SignedIn(secret, s) => {
            if !secret.is_empty() {
                new_session_cookie = Some(cookie(
                    SESSION_COOKIE,
                    secret,
                    "/",
                    SESSION_SECONDS,
                    p.secure,
                ));
            }
            s
        }
        FormSignIn::Refused(status, message) => return again(status, &message),
        FormSignIn::SecondFactor(user, methods) => {
            return ask_second_factor(&p, csrf, &user_code, action, &user, methods, None).await;
        }
        FormSignIn::Unavailable => return unavailable_page(),
    };
    let deny = form.get("action").map(String::as_str) == Some("deny");
    // Connecting a device takes an explicit confirmation naming what is connected: a code
    // typed from a message or a link on another site connects nothing by itself.
    if !deny && form.get("confirm").map(String::as_str) != Some("yes") {
        let mut r = confirm_page(csrf, &user_code, &service, org.as_ref(), &grant.scope);
        if let Some(c) = new_session_cookie {
            let _ = r.add_cookie(&c);
        }
        return r;
    }
    let mut res = if deny {
        if let Err(e) = p
            .sessions
            .decide_device(&key, grant, DeviceDecision::Denied)
            .await
        {
            tracing::error!(error = %e, "cannot record a device decision");
            return unavailable_page();
        }
        page(
            StatusCode::OK,
            "Device denied",
            org.as_ref(),
            "<p>The device was not connected. You can close this window.</p>",
        )
    } else {
        match authorize_session(&p, &req, &service, org.as_ref(), &session).await {
            Ok(device_cookie) => {
                let code = Code {
                    client_id: service.client_id.clone(),
                    redirect_uri: String::new(),
                    user_id: session.user_id.clone(),
                    session_id: session.id.clone(),
                    scope: grant.scope.clone(),
                    nonce: None,
                    code_challenge: String::new(),
                    auth_time: session.auth_time,
                    amr: session.amr.clone(),
                };
                if let Err(e) = p
                    .sessions
                    .decide_device(&key, grant, DeviceDecision::Approved(Box::new(code)))
                    .await
                {
                    tracing::error!(error = %e, "cannot record a device decision");
                    return unavailable_page();
                }
                let mut r = page(
                    StatusCode::OK,
                    "Device connected",
                    org.as_ref(),
                    &format!(
                        "<p>{} is now signed in. You can return to your device.</p>",
                        escape(&service.name)
                    ),
                );
                if let Some(c) = device_cookie {
                    let _ = r.add_cookie(&c);
                }
                r
            }
            Err(refusal) => refusal,
        }
    };
    if let Some(c) = new_session_cookie {
        let _ = res.add_cookie(&c);
    }
    res
}
