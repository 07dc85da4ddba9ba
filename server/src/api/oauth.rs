//! OAuth 2.0 and OpenID Connect endpoints: discovery (RFC 8414 / OpenID Connect Discovery) and
//! the token endpoint. Their errors follow RFC 6749 (`{"error", "error_description"}`), which
//! relying parties' libraries expect, rather than the management API's error body.
//!
//! Built so far: the client credentials grant (RFC 6749 §4.4), with client authentication by
//! `client_secret_basic` or `client_secret_post`, and a decision of the platform store
//! (`Action::"authenticate"` on the service) before any token is issued.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::AppState;

/// Lifetime of an access token, in seconds.
pub const ACCESS_TOKEN_SECONDS: i64 = 3600;
/// Largest accepted token request body.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// An RFC 6749 §5.2 error.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({ "error": code, "error_description": description }))
}

fn invalid_client(basic: bool) -> HttpResponse {
    let mut res = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
    }
    res
}

fn unavailable() -> HttpResponse {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the server cannot issue tokens right now",
    )
}

/// `GET /.well-known/openid-configuration`: what this provider supports, as built so far.
pub(super) async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    let Some(keys) = state.keys.as_ref() else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server does not issue tokens",
        );
    };
    let issuer = &state.issuer;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/oauth2/token"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [keys.algorithm_name()],
        }))
}

/// The client's credentials from `Authorization: Basic` (RFC 6749 §2.3.1: each part
/// form-urlencoded, then base64) or from the body; both at once is an error.
enum ClientAuth {
    Basic(String, String),
    Post(String, String),
}

/// Malformed `Authorization: Basic` credentials.
struct BadBasic;

fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, BadBasic> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| BadBasic)?;
    let encoded = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
        .ok_or(BadBasic)?;
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| BadBasic)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BadBasic)?;
    let (id, secret) = decoded.split_once(':').ok_or(BadBasic)?;
    let unescape = |s: &str| -> Result<String, BadBasic> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| BadBasic)?;
        pairs.into_iter().next().map(|(_, v)| v).ok_or(BadBasic)
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

/// `POST /oauth2/token`.
pub(super) async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (Some(identity), Some(keys)) = (state.identity.as_ref(), state.keys.as_ref()) else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server does not issue tokens",
        );
    };
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    if body.len() > MAX_FORM_BYTES {
        return oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        );
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body does not parse as a form",
        );
    };
    // RFC 6749 §3.2: parameters must not be repeated.
    let mut form = std::collections::HashMap::new();
    for (k, v) in pairs {
        if form.insert(k.clone(), v).is_some() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("`{k}` is repeated"),
            );
        }
    }
    let Some(grant_type) = form.get("grant_type").filter(|g| !g.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`grant_type` is required",
        );
    };
    if grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant type `{grant_type}` is not supported here"),
        );
    }
    let Ok(basic) = basic_credentials(&req) else {
        return invalid_client(true);
    };
    let auth = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not two",
            );
        }
        (Some((id, secret)), None, None) => ClientAuth::Basic(id, secret),
        (None, Some(id), Some(secret)) => ClientAuth::Post(id.clone(), secret.clone()),
        _ => return invalid_client(false),
    };
    let (client_id, secret, is_basic) = match auth {
        ClientAuth::Basic(i, s) => (i, s, true),
        ClientAuth::Post(i, s) => (i, s, false),
    };
    if client_id.len() > 200 || secret.len() > 512 {
        return invalid_client(is_basic);
    }
    let service = match identity.authenticate_client(&client_id, &secret).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::info!(client_id = %client_id, "client authentication failed");
            return invalid_client(is_basic);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot authenticate a client");
            return unavailable();
        }
    };
    if !service
        .grant_types
        .iter()
        .any(|g| g == "client_credentials")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client may not use the client_credentials grant",
        );
    }
    if form.get("scope").is_some_and(|s| !s.is_empty()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "this client has no scopes to request",
        );
    }
    // The platform decides before anything is issued.
    let mut ctx = serde_json::Map::new();
    ctx.insert("amr".into(), json!(["client_secret"]));
    ctx.insert("client_id".into(), json!(service.client_id));
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        ctx.insert("ip".into(), json!(ip.to_string()));
    }
    let principal = format!("service:{}", service.client_id);
    match identity.authorize_sign_in(&principal, &service, ctx).await {
        Ok(d) if d.allowed => {}
        Ok(d) => {
            let reasons: Vec<String> = d
                .policies
                .iter()
                .map(|p| {
                    p.annotations
                        .get("reason")
                        .cloned()
                        .unwrap_or_else(|| p.id.clone())
                })
                .collect();
            tracing::warn!(client_id = %service.client_id, policies = ?reasons, "token refused by policy");
            let why = if reasons.is_empty() {
                "the platform's policies do not allow this client to sign in".to_string()
            } else {
                format!("refused: {}", reasons.join("; "))
            };
            return oauth_error(StatusCode::BAD_REQUEST, "access_denied", &why);
        }
        Err(gatehouse_engine::Error::Validation(m)) => {
            return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", &m);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot decide a client's sign-in");
            return unavailable();
        }
    }
    let now = chrono::Utc::now();
    let claims = json!({
        "iss": state.issuer,
        "sub": service.client_id,
        "aud": state.issuer,
        "client_id": service.client_id,
        "iat": now.timestamp(),
        "exp": now.timestamp() + ACCESS_TOKEN_SECONDS,
        "jti": ulid::Ulid::new().to_string(),
    });
    let token = match keys.sign(&claims, "at+jwt", now) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an access token");
            return unavailable();
        }
    };
    let body: Value = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}
