//! OAuth 2.0 and OpenID Connect endpoints: discovery (RFC 8414 / OpenID Connect Discovery) and
//! the token endpoint. Their errors follow RFC 6749 (`{"error", "error_description"}`), which
//! relying parties' libraries expect, rather than the management API's error body.
//!
//! Built so far: the client credentials grant (RFC 6749 §4.4), with client authentication by
//! `client_secret_basic` or `client_secret_post`, and a decision of the platform store
//! (`Action::"authenticate"` on the service) before any token is issued; introspection
//! (RFC 7662) and revocation (RFC 7009) of the access tokens.

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
            "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
            "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
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

/// An OAuth error response, boxed (it is large) for early returns.
type Refusal = Box<HttpResponse>;

/// The form body of an OAuth request: `application/x-www-form-urlencoded`, bounded, no
/// parameter repeated (RFC 6749 §3.2).
fn parse_form(
    req: &HttpRequest,
    body: &[u8],
) -> Result<std::collections::HashMap<String, String>, Refusal> {
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
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        )));
    }
    if body.len() > MAX_FORM_BYTES {
        return Err(Box::new(oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        )));
    }
    let pairs = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|_| {
        Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body does not parse as a form",
        ))
    })?;
    let mut form = std::collections::HashMap::new();
    for (k, v) in pairs {
        if form.insert(k.clone(), v).is_some() {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("`{k}` is repeated"),
            )));
        }
    }
    Ok(form)
}

/// The confidential client making the request, authenticated by `client_secret_basic` or
/// `client_secret_post` (one of them, not both).
async fn authenticate_client(
    identity: &crate::identity::Identity,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<crate::db::tenancy::Service, Refusal> {
    let Ok(basic) = basic_credentials(req) else {
        return Err(Box::new(invalid_client(true)));
    };
    let auth = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not two",
            )));
        }
        (Some((id, secret)), None, None) => ClientAuth::Basic(id, secret),
        (None, Some(id), Some(secret)) => ClientAuth::Post(id.clone(), secret.clone()),
        _ => return Err(Box::new(invalid_client(false))),
    };
    let (client_id, secret, is_basic) = match auth {
        ClientAuth::Basic(i, s) => (i, s, true),
        ClientAuth::Post(i, s) => (i, s, false),
    };
    if client_id.len() > 200 || secret.len() > 512 {
        return Err(Box::new(invalid_client(is_basic)));
    }
    match identity.authenticate_client(&client_id, &secret).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            tracing::info!(client_id = %client_id, "client authentication failed");
            Err(Box::new(invalid_client(is_basic)))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot authenticate a client");
            Err(Box::new(unavailable()))
        }
    }
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
    let form = match parse_form(&req, &body) {
        Ok(f) => f,
        Err(res) => return *res,
    };
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
    let service = match authenticate_client(identity, &req, &form).await {
        Ok(s) => s,
        Err(res) => return *res,
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

fn no_store(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// The `token` parameter of introspection and revocation.
fn token_param(form: &std::collections::HashMap<String, String>) -> Result<&str, Refusal> {
    form.get("token")
        .map(String::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 8 * 1024)
        .ok_or_else(|| {
            Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "`token` is required",
            ))
        })
}

/// What introspection and revocation start from: the provider, the authenticated calling
/// client, the form and its `token`.
struct TokenRequest<'a> {
    identity: &'a crate::identity::Identity,
    keys: &'a crate::oidc::keys::KeyRing,
    caller: crate::db::tenancy::Service,
    form: std::collections::HashMap<String, String>,
    token: String,
}

async fn token_request<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    body: &[u8],
) -> Result<TokenRequest<'a>, Refusal> {
    let (Some(identity), Some(keys)) = (state.identity.as_deref(), state.keys.as_deref()) else {
        return Err(Box::new(oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server does not issue tokens",
        )));
    };
    let form = parse_form(req, body)?;
    let caller = authenticate_client(identity, req, &form).await?;
    let token = token_param(&form)?.to_string();
    Ok(TokenRequest {
        identity,
        keys,
        caller,
        form,
        token,
    })
}

/// `POST /oauth2/introspect` (RFC 7662)/// `POST /oauth2/introspect` (RFC 7662): whether an access token is active, for a confidential
/// client of the same organization as the token's client; any other token, or a caller of
/// another organization, gets `{"active": false}`.
pub(super) async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let r = match token_request(&state, &req, &body).await {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (identity, keys, caller, token) = (r.identity, r.keys, r.caller, r.token.as_str());
    let inactive = || no_store(json!({ "active": false }));
    let Some(claims) = keys.verify(token, &state.issuer) else {
        return inactive();
    };
    let (Some(jti), Some(client_id)) = (claims["jti"].as_str(), claims["client_id"].as_str())
    else {
        return inactive();
    };
    match identity.store.is_revoked(jti).await {
        Ok(false) => {}
        Ok(true) => return inactive(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read revocations");
            return unavailable();
        }
    }
    match identity.store.service(client_id).await {
        Ok(Some(owner)) if owner.organization_id == caller.organization_id => {}
        Ok(_) => return inactive(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service");
            return unavailable();
        }
    }
    let mut out = json!({ "active": true, "token_type": "Bearer" });
    for k in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "exp",
        "iat",
        "jti",
        "scope",
    ] {
        if let Some(v) = claims.get(k) {
            out[k] = v.clone();
        }
    }
    no_store(out)
}

/// `POST /oauth2/revoke` (RFC 7009): revokes an access token issued to the calling client.
/// An invalid or unknown token is not an error (200, nothing done).
pub(super) async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let r = match token_request(&state, &req, &body).await {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (identity, keys, caller, token) = (r.identity, r.keys, r.caller, r.token.as_str());
    if let Some(hint) = r.form.get("token_type_hint")
        && hint != "access_token"
        && hint != "refresh_token"
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            &format!("token type `{hint}` is not supported"),
        );
    }
    let done = || no_store(json!({}));
    let Some(claims) = keys.verify(token, &state.issuer) else {
        return done();
    };
    let (Some(jti), Some(client_id), Some(exp)) = (
        claims["jti"].as_str(),
        claims["client_id"].as_str(),
        claims["exp"].as_i64(),
    ) else {
        return done();
    };
    if client_id != caller.client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the token was not issued to this client",
        );
    }
    let expires = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now);
    if let Err(e) = identity.store.revoke_token(jti, expires).await {
        tracing::error!(error = %e, "cannot record a revocation");
        return unavailable();
    }
    tracing::info!(client_id = %client_id, jti, "access token revoked");
    done()
}
