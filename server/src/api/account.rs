//! What users do by email link: verify their address, reset a forgotten password, accept an
//! invitation to an organization. Server-rendered forms, protected by a double-submit token
//! (a cookie and a hidden field that must match), working without JavaScript.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::login::{
    Provider, SESSION_COOKIE, client_ip, cookie, form_token, form_token_ok, provider,
    unavailable_page,
};
use super::oauth::parse_form;
use super::pages::{Field, error_page, form, page};
use crate::oidc::sessions::SESSION_SECONDS;

const CSRF_COOKIE: &str = "gh_form";
/// Reset requests one address may make per minute.
const RESETS_PER_IP_MINUTE: u64 = 5;

fn query(req: &HttpRequest) -> HashMap<String, String> {
    serde_urlencoded::from_str(req.query_string()).unwrap_or_default()
}

/// A fresh double-submit token and its cookie.
fn csrf(
    p: &Provider<'_>,
    path: &'static str,
) -> Option<(String, actix_web::cookie::Cookie<'static>)> {
    form_token(p, CSRF_COOKIE, path, 3600)
}

fn csrf_ok(req: &HttpRequest, form: &HashMap<String, String>) -> bool {
    form_token_ok(
        req,
        CSRF_COOKIE,
        form.get("csrf").map(String::as_str).unwrap_or_default(),
    )
}

/// The provider and a posted form whose double-submit token matches its cookie.
fn posted<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(Provider<'a>, HashMap<String, String>), Box<HttpResponse>> {
    let p = provider(state)?;
    let f = parse_form(req, body).map_err(|_| Box::new(expired_form()))?;
    if !csrf_ok(req, &f) {
        return Err(Box::new(expired_form()));
    }
    Ok((p, f))
}

fn expired_form() -> HttpResponse {
    error_page(
        StatusCode::BAD_REQUEST,
        "This page has expired",
        "Open the link again and resubmit the form (cookies must be enabled).",
        None,
    )
}

fn bad_link(what: &str) -> HttpResponse {
    error_page(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        &format!("The {what} link is invalid, expired or used already. Ask for a new one."),
        None,
    )
}

fn with_cookie(mut r: HttpResponse, c: actix_web::cookie::Cookie<'static>) -> HttpResponse {
    let _ = r.add_cookie(&c);
    r
}

/// Sends the verification link for a user's address.
pub(super) async fn send_verification(
    p: &Provider<'_>,
    state: &AppState,
    user: &crate::db::users::User,
) -> gatehouse_engine::Result<()> {
    let token = p.identity.start_verification(user).await?;
    if let Some(m) = &state.mailer {
        m.send(
            "verify",
            user.email.clone(),
            "Verify your email address".into(),
            format!(
                "Confirm that this is your address by opening this link within {} hours:\n\n{}/verify-email?token={token}\n\nIf you did not ask for it, ignore this message.\n",
                crate::identity::email::VERIFY_HOURS,
                p.issuer
            ),
        );
    }
    Ok(())
}

/// `GET /verify-email?token=…`.
pub(super) async fn verify_email(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let token = query(&req).remove("token").unwrap_or_default();
    match p.identity.verify_email(&token).await {
        Ok(Some(u)) => page(
            StatusCode::OK,
            "Email address verified",
            None,
            &format!(
                "<p>{} is verified. You can close this window.</p>",
                super::pages::escape(&u.email)
            ),
        ),
        Ok(None) => bad_link("verification"),
        Err(e) => {
            tracing::error!(error = %e, "cannot verify an address");
            unavailable_page()
        }
    }
}

/// `POST /api/me/verify-email`: sends the caller a verification link.
pub(super) async fn resend_verification(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match super::login::api_user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = match p
        .identity
        .store
        .user(claims["sub"].as_str().unwrap_or_default())
        .await
    {
        Ok(Some(u)) => u,
        Ok(None) => return super::login::api_unavailable(),
        Err(_) => return super::login::api_unavailable(),
    };
    if user.email_verified {
        return HttpResponse::Ok().json(json!({ "email_verified": true }));
    }
    match send_verification(&p, &state, &user).await {
        Ok(()) => {
            HttpResponse::Accepted().json(json!({ "email_verified": false, "sent_to": user.email }))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a verification");
            super::login::api_unavailable()
        }
    }
}

fn forgot_form(status: StatusCode, csrf: &str, error: Option<&str>) -> HttpResponse {
    form(
        status,
        "Reset your password",
        None,
        "Enter your account's email address and we will send you a link to set a new password.",
        error,
        "/password/forgot",
        &[("csrf", csrf)],
        &[Field {
            name: "email",
            label: "Email address",
            kind: "email",
            value: "",
            autocomplete: "username",
        }],
        "Send the link",
    )
}

/// `GET /password/forgot`.
pub(super) async fn forgot_get(state: web::Data<AppState>) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some((t, c)) = csrf(&p, "/password") else {
        return unavailable_page();
    };
    with_cookie(forgot_form(StatusCode::OK, &t, None), c)
}

/// `POST /password/forgot`: the same answer whether or not the address has an account.
pub(super) async fn forgot_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (p, f) = match posted(&state, &req, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let csrf = f.get("csrf").cloned().unwrap_or_default();
    let email = f.get("email").map(|e| e.trim()).unwrap_or_default();
    if crate::identity::users::normalize_email(email).is_none() {
        return forgot_form(
            StatusCode::BAD_REQUEST,
            &csrf,
            Some("Enter a valid email address."),
        );
    }
    if let Some(ip) = client_ip(&req) {
        match p
            .sessions
            .kv()
            .incr(
                &format!("rate:reset:{ip}"),
                std::time::Duration::from_secs(60),
            )
            .await
        {
            Ok(n) if n > RESETS_PER_IP_MINUTE => {
                return forgot_form(
                    StatusCode::TOO_MANY_REQUESTS,
                    &csrf,
                    Some("Too many requests from your network. Wait a minute and try again."),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count reset requests");
                return unavailable_page();
            }
        }
    }
    match p.identity.start_password_reset(email).await {
        Ok(Some((user, token))) => {
            if let Some(m) = &state.mailer {
                m.send(
                    "password_reset",
                    user.email.clone(),
                    "Reset your password".into(),
                    format!(
                        "Someone asked to reset the password of your account. To choose a new one, open this link within {} minutes:\n\n{}/password/reset?token={token}\n\nIf it was not you, ignore this message: your password stays as it is.\n",
                        crate::identity::email::RESET_MINUTES,
                        p.issuer
                    ),
                );
            }
            p.identity
                .audit(
                    None,
                    &format!("user:{}", user.id),
                    client_ip(&req).as_deref(),
                    "user.password_reset_requested",
                    json!({}),
                )
                .await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot start a password reset");
            return unavailable_page();
        }
    }
    page(
        StatusCode::OK,
        "Check your email",
        None,
        "<p>If an account exists for that address, we sent it a link to reset the password.</p>",
    )
}

/// Accounts one address may create (or try to) per minute.
const SIGNUPS_PER_IP_MINUTE: u64 = 5;

fn signup_form(
    status: StatusCode,
    csrf: &str,
    email: &str,
    name: &str,
    error: Option<&str>,
) -> HttpResponse {
    form(
        status,
        "Create an account",
        None,
        "We will send a link to your email address to confirm it. Then sign in with it.",
        error,
        "/signup",
        &[("csrf", csrf)],
        &[
            Field {
                name: "email",
                label: "Email address",
                kind: "email",
                value: email,
                autocomplete: "username",
            },
            Field {
                name: "name",
                label: "Your name",
                kind: "text",
                value: name,
                autocomplete: "name",
            },
            Field {
                name: "password",
                label: "Password (at least 8 characters)",
                kind: "password",
                value: "",
                autocomplete: "new-password",
            },
        ],
        "Create the account",
    )
}

fn signup_closed() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Sign-up is closed",
        "Accounts on this server are created by invitation. Ask an administrator of your organization to invite you.",
        None,
    )
}

/// `GET /signup`.
pub(super) async fn signup_get(state: web::Data<AppState>) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !state.signup {
        return signup_closed();
    }
    let Some((t, c)) = csrf(&p, "/signup") else {
        return unavailable_page();
    };
    with_cookie(signup_form(StatusCode::OK, &t, "", "", None), c)
}

/// `POST /signup`: creates an account with an unverified address and mails the verification
/// link. The answer is the same whether or not the address has an account already (its
/// owner is told by mail instead), and takes as long: the password is hashed either way.
pub(super) async fn signup_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if !state.signup {
        return signup_closed();
    }
    let (p, f) = match posted(&state, &req, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let csrf = f.get("csrf").cloned().unwrap_or_default();
    let email = f.get("email").map(|e| e.trim()).unwrap_or_default();
    let name = f.get("name").map(|n| n.trim()).unwrap_or_default();
    let password = f.get("password").map(String::as_str).unwrap_or_default();
    let again =
        |status: StatusCode, message: &str| signup_form(status, &csrf, email, name, Some(message));
    let Some(normalized) = crate::identity::users::normalize_email(email) else {
        return again(StatusCode::BAD_REQUEST, "Enter a valid email address.");
    };
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return again(
            StatusCode::BAD_REQUEST,
            "Enter your name (at most 200 characters).",
        );
    }
    if let Err(e) = crate::identity::users::check_password_rules(password) {
        return again(StatusCode::BAD_REQUEST, &e.to_string());
    }
    if let Some(ip) = client_ip(&req) {
        match p
            .sessions
            .kv()
            .incr(
                &format!("rate:signup:{ip}"),
                std::time::Duration::from_secs(60),
            )
            .await
        {
            Ok(n) if n > SIGNUPS_PER_IP_MINUTE => {
                return again(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many accounts created from your network. Wait a minute and try again.",
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count sign-ups");
                return unavailable_page();
            }
        }
    }
    let existing = match p.identity.user_by_email(&normalized).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user");
            return unavailable_page();
        }
    };
    let created = match existing {
        Some(_) => None,
        None => match p
            .identity
            .create_user("anonymous", &normalized, name, Some(password), false)
            .await
        {
            Ok(u) => Some(u),
            // Taken meanwhile by another sign-up: answered as an existing account.
            Err(gatehouse_engine::Error::Validation(_)) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot create an account");
                return unavailable_page();
            }
        },
    };
    match created {
        Some(user) => {
            if let Err(e) = send_verification(&p, &state, &user).await {
                tracing::error!(error = %e, "cannot start a verification");
                return unavailable_page();
            }
            p.identity
                .audit(
                    None,
                    &format!("user:{}", user.id),
                    client_ip(&req).as_deref(),
                    "user.signed_up",
                    json!({ "email": user.email }),
                )
                .await;
        }
        None => {
            // As long as a new account takes.
            let _ = crate::identity::users::hash_password(password).await;
            if let Some(m) = &state.mailer {
                m.send(
                    "signup_existing",
                    normalized.clone(),
                    "You already have an account".into(),
                    format!(
                        "Someone asked to create an account with this address, which has one already. Sign in with it; if you forgot the password, choose a new one here:\n\n{}/password/forgot\n\nIf it was not you, ignore this message.\n",
                        p.issuer
                    ),
                );
            }
        }
    }
    page(
        StatusCode::OK,
        "Check your email",
        None,
        &format!(
            "<p>We sent a message to {}. Open the link in it to confirm your address, then sign in.</p>",
            super::pages::escape(&normalized)
        ),
    )
}

fn reset_form(status: StatusCode, csrf: &str, token: &str, error: Option<&str>) -> HttpResponse {
    form(
        status,
        "Choose a new password",
        None,
        "At least 8 characters.",
        error,
        "/password/reset",
        &[("csrf", csrf), ("token", token)],
        &[
            Field {
                name: "password",
                label: "New password",
                kind: "password",
                value: "",
                autocomplete: "new-password",
            },
            Field {
                name: "confirm",
                label: "New password again",
                kind: "password",
                value: "",
                autocomplete: "new-password",
            },
        ],
        "Set the password",
    )
}

/// `GET /password/reset?token=…`.
pub(super) async fn reset_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let token = query(&req).remove("token").unwrap_or_default();
    match p.identity.reset_token_live(&token).await {
        Ok(true) => {}
        Ok(false) => return bad_link("password reset"),
        Err(_) => return unavailable_page(),
    }
    let Some((t, c)) = csrf(&p, "/password") else {
        return unavailable_page();
    };
    with_cookie(reset_form(StatusCode::OK, &t, &token, None), c)
}

/// `POST /password/reset`: sets the password, then signs the account out everywhere.
pub(super) async fn reset_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (p, f) = match posted(&state, &req, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (csrf, token) = (
        f.get("csrf").cloned().unwrap_or_default(),
        f.get("token").cloned().unwrap_or_default(),
    );
    let password = f.get("password").map(String::as_str).unwrap_or_default();
    if Some(password) != f.get("confirm").map(String::as_str) {
        return reset_form(
            StatusCode::BAD_REQUEST,
            &csrf,
            &token,
            Some("The two passwords differ."),
        );
    }
    match p.identity.reset_password(&token, password).await {
        Ok(Some(user)) => {
            // Whoever knew the old password is signed out.
            let ended = p.sessions.end_all(&user.id).await;
            let revoked = p
                .identity
                .store
                .revoke_user_families(&user.id, chrono::Utc::now())
                .await;
            if let Err(e) = ended.as_ref().map(|_| ()).and(revoked.as_ref().map(|_| ())) {
                tracing::error!(error = %e, "cannot end the sessions of a reset account");
            }
            page(
                StatusCode::OK,
                "Password changed",
                None,
                "<p>Your password is changed. You can sign in with it now.</p>",
            )
        }
        Ok(None) => bad_link("password reset"),
        Err(gatehouse_engine::Error::Validation(m)) => {
            reset_form(StatusCode::BAD_REQUEST, &csrf, &token, Some(&m))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reset a password");
            unavailable_page()
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "the page shows all of these")]
fn accept_form(
    status: StatusCode,
    csrf: &str,
    token: &str,
    org: &crate::db::tenancy::Organization,
    email: &str,
    role: &str,
    has_account: bool,
    error: Option<&str>,
) -> HttpResponse {
    let intro = if has_account {
        format!(
            "You are invited to join {} as {role}. Sign in as {email} to accept.",
            org.name
        )
    } else {
        format!(
            "You are invited to join {} as {role}. Choose a password for {email} to create your account.",
            org.name
        )
    };
    let fields: Vec<Field<'_>> = if has_account {
        vec![Field {
            name: "password",
            label: "Password",
            kind: "password",
            value: "",
            autocomplete: "current-password",
        }]
    } else {
        vec![
            Field {
                name: "name",
                label: "Your name",
                kind: "text",
                value: "",
                autocomplete: "name",
            },
            Field {
                name: "password",
                label: "Password",
                kind: "password",
                value: "",
                autocomplete: "new-password",
            },
        ]
    };
    form(
        status,
        "Accept the invitation",
        Some(org),
        &intro,
        error,
        "/invitations/accept",
        &[("csrf", csrf), ("token", token)],
        &fields,
        if has_account {
            "Sign in and join"
        } else {
            "Create the account and join"
        },
    )
}

/// `GET /invitations/accept?token=…`.
pub(super) async fn accept_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let token = query(&req).remove("token").unwrap_or_default();
    let (inv, org) = match p.identity.invitation(&token).await {
        Ok(Some(x)) => x,
        Ok(None) => return bad_link("invitation"),
        Err(_) => return unavailable_page(),
    };
    let has_account = matches!(
        p.identity.store.user_by_email(&inv.email).await,
        Ok(Some(_))
    );
    let Some((t, c)) = csrf(&p, "/invitations") else {
        return unavailable_page();
    };
    let role = inv.role.clone().unwrap_or_default();
    with_cookie(
        accept_form(
            StatusCode::OK,
            &t,
            &token,
            &org,
            &inv.email,
            &role,
            has_account,
            None,
        ),
        c,
    )
}

/// `POST /invitations/accept`: signs in (or creates the account) as the invited address and
/// joins the organization.
pub(super) async fn accept_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (p, f) = match posted(&state, &req, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (csrf, token) = (
        f.get("csrf").cloned().unwrap_or_default(),
        f.get("token").cloned().unwrap_or_default(),
    );
    let (inv, org) = match p.identity.invitation(&token).await {
        Ok(Some(x)) => x,
        Ok(None) => return bad_link("invitation"),
        Err(_) => return unavailable_page(),
    };
    let role = inv.role.clone().unwrap_or_default();
    let password = f.get("password").map(String::as_str).unwrap_or_default();
    let existing = match p.identity.store.user_by_email(&inv.email).await {
        Ok(u) => u,
        Err(_) => return unavailable_page(),
    };
    let again = |status, m: &str| {
        accept_form(
            status,
            &csrf,
            &token,
            &org,
            &inv.email,
            &role,
            existing.is_some(),
            Some(m),
        )
    };
    let ip = client_ip(&req);
    let user = match &existing {
        // The password goes through the `password` plugin, like every sign-in.
        Some(_) => {
            use crate::identity::login::{Failure, Strategy};
            let form = HashMap::from([
                ("email".to_string(), inv.email.clone()),
                ("password".to_string(), password.to_string()),
            ]);
            match p
                .password_strategy(&req)
                .complete(p.identity, &org.id, &form)
                .await
            {
                Ok(a) => a.user,
                Err(Failure::InvalidCredentials { user }) => {
                    p.identity
                        .audit(
                            Some(&org.id),
                            &user
                                .map(|u| format!("user:{u}"))
                                .unwrap_or_else(|| "anonymous".into()),
                            ip.as_deref(),
                            "login.failed",
                            json!({ "flow": "invitation" }),
                        )
                        .await;
                    return again(StatusCode::UNAUTHORIZED, "Incorrect password.");
                }
                Err(Failure::Locked { .. }) => {
                    return again(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many failed attempts: this account is locked for a while.",
                    );
                }
                Err(Failure::BadRequest(m)) => return again(StatusCode::BAD_REQUEST, &m),
                Err(Failure::Unavailable(_)) => return unavailable_page(),
            }
        }
        None => {
            let name = f.get("name").map(String::as_str).unwrap_or_default();
            match p
                .identity
                .create_user("invitation", &inv.email, name, Some(password), true)
                .await
            {
                Ok(u) => u,
                Err(gatehouse_engine::Error::Validation(m)) => {
                    return again(StatusCode::BAD_REQUEST, &m);
                }
                Err(_) => return unavailable_page(),
            }
        }
    };
    match p.identity.accept_invitation(&token, &user).await {
        Ok(Some(_)) => {}
        Ok(None) => return bad_link("invitation"),
        Err(gatehouse_engine::Error::Validation(m)) => return again(StatusCode::BAD_REQUEST, &m),
        Err(_) => return unavailable_page(),
    }
    // Accepting is a login: the browser is signed in, unless the user has a second factor,
    // which this page does not ask for: they sign in to an application as usual.
    let second_factor = match p.identity.has_second_factor(&user.id).await {
        Ok(b) => b,
        Err(_) => return unavailable_page(),
    };
    if second_factor {
        return page(
            StatusCode::OK,
            "Welcome",
            Some(&org),
            &format!(
                "<p>You joined {} as {}. Sign in to its applications with your password and your authenticator app.</p>",
                super::pages::escape(&org.name),
                super::pages::escape(&role)
            ),
        );
    }
    let ua = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut res = page(
        StatusCode::OK,
        "Welcome",
        Some(&org),
        &format!(
            "<p>You joined {} as {}.</p>",
            super::pages::escape(&org.name),
            super::pages::escape(&role)
        ),
    );
    if let Ok((secret, s)) = p
        .sessions
        .create(&user.id, vec!["pwd".into()], ip.clone(), ua)
        .await
    {
        p.identity
            .audit(
                Some(&org.id),
                &format!("user:{}", user.id),
                ip.as_deref(),
                "login.succeeded",
                json!({ "session": s.id, "flow": "invitation" }),
            )
            .await;
        let _ = res.add_cookie(&cookie(
            SESSION_COOKIE,
            secret,
            "/",
            SESSION_SECONDS,
            p.secure,
        ));
    }
    res
}
