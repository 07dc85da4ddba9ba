//! A user's second factor: setting up an authenticator app (the `totp` plugin), and removing
//! it. Once set up, every sign-in of the user asks for it (DESIGN.md, "Authentication and
//! tokens").
//!
//! - `GET /api/me/mfa`: whether one is set up.
//! - `POST /api/me/mfa/totp`: a new secret, as an `otpauth://` URI and a QR code (SVG); it
//!   waits 10 minutes for its first code.
//! - `POST /api/me/mfa/totp/confirm` `{"code"}`: the first code sets it up; the answer holds
//!   ten recovery codes, shown this once.
//! - `DELETE /api/me/mfa/totp`: removes it; only from a sign-in that used it.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::login::{api_user_token, provider};
use crate::identity::login::{PASSKEY, SECOND_FACTOR};
use gatehouse_plugin_host::{BeginResult, Failure, StepRequest};

/// The key-value space of enrolments is the platform's, not an organization's.
const PLATFORM: &str = "platform";

fn refuse(status: StatusCode, code: &'static str, message: &str) -> HttpResponse {
    ApiError::new(status, code, message).error_response()
}

fn unavailable() -> HttpResponse {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the second factor cannot be set up now; try again",
    )
}

fn step(user: &str, params: Vec<(String, String)>) -> StepRequest {
    StepRequest {
        config: "{}".into(),
        params,
        flow_id: String::new(),
        callback_url: String::new(),
        user_id: Some(user.to_string()),
    }
}

/// The caller of a change to their factors: [`caller`], whose sign-in must be recent
/// (`GATEHOUSE_REAUTH_SECS`) and, when the user has a second factor, must have used one; a
/// token alone, however valid, does not add or remove a factor.
async fn recent_caller(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(String, Vec<String>), HttpResponse> {
    let p = provider(state).map_err(|r| *r)?;
    let claims = api_user_token(&p, req).await?;
    let auth_time = claims["auth_time"].as_i64().unwrap_or(0);
    let age = chrono::Utc::now().timestamp().saturating_sub(auth_time);
    if age < 0 || age as u64 > state.reauth_secs {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "reauthentication_required",
            "sign in again to change your account's factors",
        ));
    }
    let (user, amr) = identity_of(&claims);
    match p.identity.has_second_factor(&user).await {
        Ok(false) => {}
        Ok(true) if crate::identity::is_multi_factor(&amr) => {}
        Ok(true) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "sign in with your second factor to change your account's factors",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a second factor");
            return Err(unavailable());
        }
    }
    Ok((user, amr))
}

/// The caller (a user's access token): their id and the methods of the sign-in behind it.
async fn caller(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(String, Vec<String>), HttpResponse> {
    let p = provider(state).map_err(|r| *r)?;
    let claims = api_user_token(&p, req).await?;
    Ok(identity_of(&claims))
}

/// The user id and the sign-in methods of a token's claims.
fn identity_of(claims: &serde_json::Value) -> (String, Vec<String>) {
    let user = claims["sub"].as_str().unwrap_or_default().to_string();
    let amr = claims["amr"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (user, amr)
}

/// `GET /api/me/mfa`.
pub(super) async fn status(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (user, _) = match caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(identity) = state.identity.as_deref() else {
        return unavailable();
    };
    let totp = match identity.second_factors(&user).await {
        Ok(f) => f.totp,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a second factor");
            return unavailable();
        }
    };
    match passkey_step(&state, &user, vec![purpose("list")]).await {
        Ok(a) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "totp": totp, "passkeys": claims(&a)["passkeys"] })),
        Err(r) => r,
    }
}

/// `POST /api/me/mfa/totp`.
pub(super) async fn begin(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (user, _) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (Some(identity), Some(host)) = (state.identity.as_deref(), state.plugins.as_deref()) else {
        return unavailable();
    };
    match identity.second_factors(&user).await.map(|f| f.totp) {
        Ok(false) => {}
        Ok(true) => {
            return refuse(
                StatusCode::CONFLICT,
                "conflict",
                "an authenticator app is set up already; remove it first",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a second factor");
            return unavailable();
        }
    }
    let account = match identity.store.user(&user).await {
        Ok(Some(u)) => u.email,
        _ => return unavailable(),
    };
    let issuer = state
        .issuer
        .split("://")
        .nth(1)
        .unwrap_or("Gatehouse")
        .to_string();
    let params = vec![
        ("purpose".to_string(), "enrol".to_string()),
        ("issuer".to_string(), issuer),
        ("account".to_string(), account),
    ];
    match host
        .begin(SECOND_FACTOR, PLATFORM, step(&user, params))
        .await
    {
        Ok(Ok(BeginResult::Challenge(c))) => match serde_json::from_str::<serde_json::Value>(&c) {
            Ok(v) => HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(v),
            Err(_) => unavailable(),
        },
        Ok(Ok(_)) | Ok(Err(_)) => unavailable(),
        Err(e) => {
            crate::identity::login::plugin_failed(
                &state.metrics.plugin_failures,
                SECOND_FACTOR,
                &e,
            );
            unavailable()
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Confirm {
    code: String,
}

/// `POST /api/me/mfa/totp/confirm`.
pub(super) async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Confirm>,
) -> HttpResponse {
    let (user, _) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (Some(identity), Some(host)) = (state.identity.as_deref(), state.plugins.as_deref()) else {
        return unavailable();
    };
    let code = body.into_inner().code;
    if code.is_empty() || code.len() > 16 || !code.chars().all(|c| c.is_ascii_digit()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "`code` must be the 6 digits your authenticator app shows",
        );
    }
    let params = vec![
        ("purpose".to_string(), "enrol".to_string()),
        ("code".to_string(), code),
    ];
    match host
        .complete(SECOND_FACTOR, PLATFORM, step(&user, params))
        .await
    {
        Ok(Ok(a)) if a.subject == user => {
            let codes = serde_json::from_str::<serde_json::Value>(&a.claims)
                .ok()
                .and_then(|c| c.get("recovery_codes").cloned())
                .unwrap_or_else(|| json!([]));
            identity
                .audit(
                    None,
                    &format!("user:{user}"),
                    super::login::client_ip(&req).as_deref(),
                    "user.mfa_enabled",
                    json!({ "method": SECOND_FACTOR }),
                )
                .await;
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "totp": true, "recovery_codes": codes }))
        }
        Ok(Ok(_)) => unavailable(),
        Ok(Err(Failure::InvalidCredentials(_))) => refuse(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "that code is not right; enter the one your app shows now",
        ),
        Ok(Err(Failure::BadRequest(m))) => refuse(StatusCode::BAD_REQUEST, "validation_error", &m),
        Ok(Err(Failure::Unavailable(m))) => {
            tracing::error!(error = %m, "cannot set up a second factor");
            unavailable()
        }
        Err(e) => {
            crate::identity::login::plugin_failed(
                &state.metrics.plugin_failures,
                SECOND_FACTOR,
                &e,
            );
            unavailable()
        }
    }
}

/// `DELETE /api/me/mfa/totp`.
pub(super) async fn remove(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (user, amr) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(identity) = state.identity.as_deref() else {
        return unavailable();
    };
    if !crate::identity::is_multi_factor(&amr) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sign in with your authenticator app (or a recovery code) to remove it",
        );
    }
    match identity
        .store
        .delete_plugin_credentials(SECOND_FACTOR, &user)
        .await
    {
        Ok(0) => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "no authenticator app is set up",
        ),
        Ok(_) => {
            identity
                .audit(
                    None,
                    &format!("user:{user}"),
                    super::login::client_ip(&req).as_deref(),
                    "user.mfa_disabled",
                    json!({ "method": SECOND_FACTOR }),
                )
                .await;
            HttpResponse::NoContent().finish()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot remove a second factor");
            unavailable()
        }
    }
}

fn purpose(p: &str) -> (String, String) {
    ("purpose".to_string(), p.to_string())
}

fn claims(a: &gatehouse_plugin_host::Assertion) -> serde_json::Value {
    serde_json::from_str(&a.claims).unwrap_or_else(|_| json!({}))
}

/// Runs `complete` of the `passkey` plugin for `user` with `params`; a refusal is a 400
/// (a 404 when the plugin names no such passkey).
async fn passkey_step(
    state: &AppState,
    user: &str,
    params: Vec<(String, String)>,
) -> Result<gatehouse_plugin_host::Assertion, HttpResponse> {
    let Some(host) = state.plugins.as_deref() else {
        return Err(unavailable());
    };
    match host.complete(PASSKEY, PLATFORM, step(user, params)).await {
        Ok(Ok(a)) if a.subject == user => Ok(a),
        Ok(Ok(_)) => Err(unavailable()),
        Ok(Err(Failure::BadRequest(m))) if m.starts_with("No such passkey") => {
            Err(refuse(StatusCode::NOT_FOUND, "not_found", &m))
        }
        Ok(Err(Failure::BadRequest(m))) => {
            Err(refuse(StatusCode::BAD_REQUEST, "validation_error", &m))
        }
        Ok(Err(Failure::InvalidCredentials(_))) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_passkey",
            "the passkey's answer was not accepted",
        )),
        Ok(Err(Failure::Unavailable(m))) => {
            tracing::error!(error = %m, "a passkey step failed");
            Err(unavailable())
        }
        Err(e) => {
            crate::identity::login::plugin_failed(&state.metrics.plugin_failures, PASSKEY, &e);
            Err(unavailable())
        }
    }
}

/// `POST /api/me/mfa/passkey`: the options of a new passkey for the caller, for the
/// browser's `navigator.credentials.create`; it waits 5 minutes for its answer.
pub(super) async fn passkey_begin(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (user, _) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (Some(identity), Some(host)) = (state.identity.as_deref(), state.plugins.as_deref()) else {
        return unavailable();
    };
    let account = match identity.store.user(&user).await {
        Ok(Some(u)) => u.email,
        _ => return unavailable(),
    };
    let params = vec![purpose("enrol"), ("account".to_string(), account)];
    match host.begin(PASSKEY, PLATFORM, step(&user, params)).await {
        Ok(Ok(BeginResult::Challenge(c))) => match serde_json::from_str::<serde_json::Value>(&c) {
            Ok(options) => HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "options": options })),
            Err(_) => unavailable(),
        },
        Ok(Err(Failure::BadRequest(m))) => refuse(StatusCode::BAD_REQUEST, "validation_error", &m),
        Ok(Ok(_)) | Ok(Err(_)) => unavailable(),
        Err(e) => {
            crate::identity::login::plugin_failed(&state.metrics.plugin_failures, PASSKEY, &e);
            unavailable()
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasskeyAnswer {
    /// The browser's answer (the `PublicKeyCredential`, as JSON text).
    response: String,
}

/// `POST /api/me/mfa/passkey/confirm` `{"response"}`: registers the passkey the browser made.
pub(super) async fn passkey_confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PasskeyAnswer>,
) -> HttpResponse {
    let (user, _) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(identity) = state.identity.as_deref() else {
        return unavailable();
    };
    let response = body.into_inner().response;
    if response.is_empty() || response.len() > 64 << 10 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "`response` must be the browser's answer, as JSON text",
        );
    }
    let params = vec![purpose("enrol"), ("response".to_string(), response)];
    let a = match passkey_step(&state, &user, params).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let c = claims(&a);
    identity
        .audit(
            None,
            &format!("user:{user}"),
            super::login::client_ip(&req).as_deref(),
            "user.mfa_enabled",
            json!({ "method": PASSKEY, "credential_id": c["credential_id"] }),
        )
        .await;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "credential_id": c["credential_id"], "passkeys": c["passkeys"] }))
}

/// `DELETE /api/me/mfa/passkey/{credential_id}`: removes a passkey; only from a sign-in with
/// a second factor.
pub(super) async fn passkey_remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let (user, amr) = match recent_caller(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(identity) = state.identity.as_deref() else {
        return unavailable();
    };
    if !crate::identity::is_multi_factor(&amr) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sign in with a second factor to remove a passkey",
        );
    }
    let id = path.into_inner();
    let params = vec![purpose("remove"), ("credential_id".to_string(), id.clone())];
    if let Err(r) = passkey_step(&state, &user, params).await {
        return r;
    }
    identity
        .audit(
            None,
            &format!("user:{user}"),
            super::login::client_ip(&req).as_deref(),
            "user.mfa_disabled",
            json!({ "method": PASSKEY, "credential_id": id }),
        )
        .await;
    HttpResponse::NoContent().finish()
}
