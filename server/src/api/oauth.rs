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
pub(super) fn oauth_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
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

/// 429 with `Retry-After`.
pub(super) fn too_many(secs: u64) -> HttpResponse {
    let mut r = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
        &format!("too many requests; try again in {secs} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The per-address request limit of the token endpoints.
pub(super) async fn rate_limited(
    p: &super::login::Provider<'_>,
    limit: u64,
    req: &HttpRequest,
) -> Result<(), Refusal> {
    let ip = super::login::client_ip(req).unwrap_or_default();
    match crate::cache::limits::over_rate(
        p.sessions.kv().as_ref(),
        &format!("token-ip:{ip}"),
        limit,
    )
    .await
    {
        Ok(None) => Ok(()),
        Ok(Some(secs)) => Err(Box::new(too_many(secs))),
        Err(e) => Err(internal("cannot count requests", e)),
    }
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
    let alg = keys.algorithm_name();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
            "token_endpoint": format!("{issuer}/oauth2/token"),
            "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
            "end_session_endpoint": format!("{issuer}/oauth2/logout"),
            "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
            "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "scopes_supported": super::login::SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "device_authorization_endpoint": format!("{issuer}/oauth2/device_authorization"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", super::device::DEVICE_GRANT],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "at_hash", "sid", "email", "email_verified", "name"],
            "acr_values_supported": ["1", "2"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
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
pub(super) type Refusal = Box<HttpResponse>;

/// The pairs of a form body: `application/x-www-form-urlencoded`, bounded. The error is
/// the status and a description.
pub(super) fn form_pairs(
    req: &HttpRequest,
    body: &[u8],
) -> Result<Vec<(String, String)>, (StatusCode, &'static str)> {
    form_pairs_up_to(req, body, MAX_FORM_BYTES)
}

/// [`form_pairs`] with a cap of `max` bytes (an identity provider's posted answer is larger
/// than any form of the login).
pub(super) fn form_pairs_up_to(
    req: &HttpRequest,
    body: &[u8],
    max: usize,
) -> Result<Vec<(String, String)>, (StatusCode, &'static str)> {
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
        return Err((
            StatusCode::BAD_REQUEST,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    if body.len() > max {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large",
        ));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map_err(|_| (StatusCode::BAD_REQUEST, "the body does not parse as a form"))
}

/// The form body of an OAuth request: `application/x-www-form-urlencoded`, bounded, no
/// parameter repeated (RFC 6749 §3.2).
pub(super) fn parse_form(
    req: &HttpRequest,
    body: &[u8],
) -> Result<std::collections::HashMap<String, String>, Refusal> {
    let pairs = form_pairs(req, body)
        .map_err(|(status, m)| Box::new(oauth_error(status, "invalid_request", m)))?;
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
    p: &super::login::Provider<'_>,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<crate::db::tenancy::Service, Refusal> {
    let identity = p.identity;
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
    // Guessing secrets: an address with too many failures for a client (or for clients at
    // large) is locked out, with a lockout that doubles, before any secret is looked at. The
    // lockout is the guessing address's alone: the client's own calls from elsewhere go on.
    let kv = p.sessions.kv().as_ref();
    let ip = super::login::client_ip(req).unwrap_or_default();
    let (by_client, by_ip) = (
        format!("client:{client_id}:{ip}"),
        format!("client-ip:{ip}"),
    );
    match crate::cache::limits::locked_any(kv, &[by_client.as_str(), by_ip.as_str()]).await {
        Ok(None) => {}
        Ok(Some(secs)) => return Err(Box::new(too_many(secs))),
        Err(e) => return Err(internal("cannot read a lockout", e)),
    }
    match identity.authenticate_client(&client_id, &secret).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            tracing::info!(client_id = %client_id, "client authentication failed");
            for key in [&by_client, &by_ip] {
                if let Err(e) = crate::cache::limits::failed(kv, key).await {
                    tracing::error!(error = %e, "cannot count a failed client authentication");
                }
            }
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
    let p = match super::login::provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(r) = rate_limited(&p, state.token_rate_per_ip, &req).await {
        return *r;
    }
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
    let result = match grant_type.as_str() {
        "client_credentials" => client_credentials(&p, &req, &form).await,
        "authorization_code" => authorization_code(&p, &req, &form).await,
        "refresh_token" => refresh(&p, &req, &form).await,
        super::device::DEVICE_GRANT => super::device::token(&p, &req, &form).await,
        other => Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant type `{other}` is not supported here"),
        ))),
    };
    result.unwrap_or_else(|r| *r)
}

pub(super) fn grant_allowed(
    service: &crate::db::tenancy::Service,
    grant: &str,
) -> Result<(), Refusal> {
    if service.grant_types.iter().any(|g| g == grant) {
        return Ok(());
    }
    Err(Box::new(oauth_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        &format!("this client may not use the {grant} grant"),
    )))
}

/// The client credentials grant (RFC 6749 §4.4): a confidential client signs in as itself.
async fn client_credentials(
    p: &super::login::Provider<'_>,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<HttpResponse, Refusal> {
    let (identity, keys) = (p.identity, p.keys);
    let service = authenticate_client(p, req, form).await?;
    grant_allowed(&service, "client_credentials")?;
    if form.get("scope").is_some_and(|s| !s.is_empty()) {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "this client has no scopes to request",
        )));
    }
    // The platform decides before anything is issued.
    let mut ctx = serde_json::Map::new();
    ctx.insert("amr".into(), json!(["client_secret"]));
    ctx.insert("client_id".into(), json!(service.client_id));
    if let Some(ip) = super::login::client_ip(req) {
        ctx.insert("ip".into(), json!(ip));
    }
    let principal = format!("service:{}", service.client_id);
    decide_sign_in(identity, &principal, &service, ctx).await?;
    let now = chrono::Utc::now();
    let claims = json!({
        "iss": p.issuer,
        "sub": service.client_id,
        "aud": service.client_id,
        "client_id": service.client_id,
        "iat": now.timestamp(),
        "exp": now.timestamp() + ACCESS_TOKEN_SECONDS,
        "jti": ulid::Ulid::new().to_string(),
    });
    let token = keys.sign(&claims, "at+jwt", now).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an access token");
        Box::new(unavailable())
    })?;
    Ok(no_store(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
    })))
}

/// The platform's decision before a token is issued: a refusal is `access_denied` with the
/// policies' reasons.
async fn decide_sign_in(
    identity: &crate::identity::Identity,
    principal: &str,
    service: &crate::db::tenancy::Service,
    ctx: serde_json::Map<String, Value>,
) -> Result<(), Refusal> {
    match identity
        .authorize_sign_in(principal, service, ctx, false)
        .await
    {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            let reasons = crate::identity::reasons(&d);
            tracing::warn!(client_id = %service.client_id, principal, policies = ?reasons, "token refused by policy");
            let why = if reasons.is_empty() {
                "the platform's policies do not allow this sign-in".to_string()
            } else {
                format!("refused: {}", reasons.join("; "))
            };
            Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "access_denied",
                &why,
            )))
        }
        Err(gatehouse_engine::Error::Validation(m)) => Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &m,
        ))),
        Err(e) => {
            tracing::error!(error = %e, "cannot decide a sign-in");
            Err(Box::new(unavailable()))
        }
    }
}

/// How long a refresh token family lives at most (and never beyond its session).
pub const REFRESH_SECONDS: i64 = 30 * 86400;
/// Lifetime of an ID token, in seconds.
pub const ID_TOKEN_SECONDS: i64 = 3600;

pub(super) fn invalid_grant(desc: &str) -> Refusal {
    Box::new(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", desc))
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "{what}");
    Box::new(unavailable())
}

/// The client of a code or refresh request: a confidential client authenticates; a public
/// one (PKCE) names itself with `client_id` and nothing else.
pub(super) async fn grant_client(
    p: &super::login::Provider<'_>,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<crate::db::tenancy::Service, Refusal> {
    let identity = p.identity;
    let confidential =
        req.headers().contains_key(header::AUTHORIZATION) || form.contains_key("client_secret");
    if confidential {
        return authenticate_client(p, req, form).await;
    }
    let Some(id) = form.get("client_id").filter(|c| c.len() <= 200) else {
        return Err(Box::new(invalid_client(false)));
    };
    match identity.service(id).await {
        Ok(Some(s)) if s.is_public() => Ok(s),
        Ok(_) => Err(Box::new(invalid_client(false))),
        Err(e) => Err(internal("cannot read a service", e)),
    }
}

/// `at_hash` (OpenID Connect Core §3.1.3.6): the left half of the access token's hash, with
/// the hash of the signing algorithm (SHA-512 for Ed25519).
pub fn at_hash(alg: &str, access_token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::Digest;
    let digest: Vec<u8> = if alg == "EdDSA" {
        sha2::Sha512::digest(access_token.as_bytes()).to_vec()
    } else {
        sha2::Sha256::digest(access_token.as_bytes()).to_vec()
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The claims of a user that `scopes` release.
pub fn add_user_claims(out: &mut Value, user: &crate::db::users::User, scopes: &[&str]) {
    if scopes.contains(&"email") {
        out["email"] = json!(user.email);
        out["email_verified"] = json!(user.email_verified);
    }
    if scopes.contains(&"profile") && !user.name.is_empty() {
        out["name"] = json!(user.name);
    }
}

/// `acr`: `1` for a single factor, `2` for several (at least one not a password).
fn acr(amr: &[String]) -> &'static str {
    if amr.len() > 1 || crate::identity::is_multi_factor(amr) {
        "2"
    } else {
        "1"
    }
}

/// What the tokens of a user's grant are issued from.
pub(super) struct UserGrant<'a> {
    pub(super) service: &'a crate::db::tenancy::Service,
    pub(super) user: &'a crate::db::users::User,
    pub(super) scope: &'a str,
    pub(super) session_id: &'a str,
    pub(super) auth_time: chrono::DateTime<chrono::Utc>,
    pub(super) amr: &'a [String],
    pub(super) nonce: Option<&'a str>,
    /// The refresh token family and the new refresh token, when one is issued.
    pub(super) refresh: Option<(&'a str, &'a str)>,
    /// The access token's id, when the caller must know it beforehand (a code's redemption
    /// records it, so that a replay of the code revokes the token); otherwise a new one.
    pub(super) jti: Option<&'a str>,
}

/// Signs the access token (and the ID token with `openid`) of a user's grant.
pub(super) fn user_tokens(
    p: &super::login::Provider<'_>,
    g: &UserGrant<'_>,
) -> Result<HttpResponse, Refusal> {
    let now = chrono::Utc::now();
    // The console's tokens are for Gatehouse's own APIs; every other service's are for that
    // service, and Gatehouse's APIs refuse them.
    let aud = if g.service.client_id == crate::identity::CONSOLE_CLIENT {
        p.api_audience()
    } else {
        g.service.client_id.clone()
    };
    let mut at = json!({
        "iss": p.issuer,
        "sub": g.user.id,
        "aud": aud,
        "client_id": g.service.client_id,
        "scope": g.scope,
        "sid": g.session_id,
        "amr": g.amr,
        "auth_time": g.auth_time.timestamp(),
        "iat": now.timestamp(),
        "exp": now.timestamp() + ACCESS_TOKEN_SECONDS,
        "jti": g.jti.map_or_else(|| ulid::Ulid::new().to_string(), str::to_string),
    });
    if let Some((family, _)) = g.refresh {
        at["fid"] = json!(family);
    }
    let access = p
        .keys
        .sign(&at, "at+jwt", now)
        .map_err(|e| internal("cannot sign an access token", e))?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": g.scope,
    });
    if let Some((_, refresh)) = g.refresh {
        body["refresh_token"] = json!(refresh);
    }
    let scopes: Vec<&str> = g.scope.split(' ').collect();
    if scopes.contains(&"openid") {
        let mut id = json!({
            "iss": p.issuer,
            "sub": g.user.id,
            "aud": g.service.client_id,
            "azp": g.service.client_id,
            "iat": now.timestamp(),
            "exp": now.timestamp() + ID_TOKEN_SECONDS,
            "auth_time": g.auth_time.timestamp(),
            "amr": g.amr,
            "acr": acr(g.amr),
            "sid": g.session_id,
            "at_hash": at_hash(p.keys.algorithm_name(), &access),
        });
        if let Some(n) = g.nonce {
            id["nonce"] = json!(n);
        }
        add_user_claims(&mut id, g.user, &scopes);
        let id_token = p
            .keys
            .sign(&id, "JWT", now)
            .map_err(|e| internal("cannot sign an ID token", e))?;
        body["id_token"] = json!(id_token);
    }
    Ok(no_store(body))
}

/// The context of a user's sign-in decision at the token endpoint.
fn user_context(
    req: &HttpRequest,
    client_id: &str,
    amr: &[String],
) -> serde_json::Map<String, Value> {
    let mut ctx = serde_json::Map::new();
    ctx.insert("amr".into(), json!(amr));
    ctx.insert("mfa".into(), json!(crate::identity::is_multi_factor(amr)));
    ctx.insert("client_id".into(), json!(client_id));
    if let Some(ip) = super::login::client_ip(req) {
        ctx.insert("ip".into(), json!(ip));
    }
    ctx
}

/// Starts a refresh token family for a grant when the client may refresh; returns the
/// family's id and its first token.
pub(super) async fn new_family(
    p: &super::login::Provider<'_>,
    service: &crate::db::tenancy::Service,
    code: &crate::oidc::sessions::Code,
) -> Result<Option<(String, String)>, Refusal> {
    if !service.grant_types.iter().any(|g| g == "refresh_token") {
        return Ok(None);
    }
    let now = chrono::Utc::now();
    let session_end = match p.sessions.by_id(&code.session_id).await {
        Ok(Some(s)) => s.expires_at,
        Ok(None) => return Err(invalid_grant("the login session has ended")),
        Err(e) => return Err(internal("cannot read a session", e)),
    };
    let family = crate::db::users::TokenFamily {
        id: ulid::Ulid::new().to_string().to_lowercase(),
        client_id: service.client_id.clone(),
        user_id: code.user_id.clone(),
        session_id: code.session_id.clone(),
        scope: code.scope.clone(),
        amr: code.amr.clone(),
        auth_time: code.auth_time,
        created_at: now,
        expires_at: session_end.min(now + chrono::Duration::seconds(REFRESH_SECONDS)),
        revoked_at: None,
    };
    let token = crate::oidc::sessions::secret("rt_").map_err(|e| internal("no randomness", e))?;
    p.identity
        .store
        .insert_family(&family, &crate::oidc::sessions::sha256_hex(&token))
        .await
        .map_err(|e| internal("cannot store a refresh token", e))?;
    Ok(Some((family.id, token)))
}

/// The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636).
async fn authorization_code(
    p: &super::login::Provider<'_>,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<HttpResponse, Refusal> {
    let service = grant_client(p, req, form).await?;
    grant_allowed(&service, "authorization_code")?;
    let Some(code) = form.get("code").filter(|c| !c.is_empty()) else {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`code` is required",
        )));
    };
    let ip = super::login::client_ip(req);
    let org = Some(service.organization_id.as_str());
    let actor = format!("service:{}", service.client_id);
    let Some(c) = p
        .sessions
        .take_code(code)
        .await
        .map_err(|e| internal("cannot read a code", e))?
    else {
        // A code presented twice: what it issued is revoked (RFC 6749 §4.1.2): the access
        // token, and the refresh token family when there is one.
        if let Ok(Some(issued)) = p.sessions.redeemed(code).await {
            let (family, jti) = issued.split_once(' ').unwrap_or((issued.as_str(), ""));
            if family != "-"
                && p.identity
                    .store
                    .revoke_family(family, chrono::Utc::now())
                    .await
                    .is_ok()
            {
                p.identity.revocations.note_family(family);
            }
            if !jti.is_empty() {
                let expires =
                    chrono::Utc::now() + chrono::Duration::seconds(ACCESS_TOKEN_SECONDS + 60);
                match p.identity.store.revoke_token(jti, expires).await {
                    Ok(()) => p.identity.revocations.note_jti(jti),
                    Err(e) => tracing::error!(error = %e, "cannot revoke a replayed code's token"),
                }
            }
            p.identity
                .audit(
                    org,
                    &actor,
                    ip.as_deref(),
                    "token.code_replayed",
                    json!({ "token_family": family, "jti": jti }),
                )
                .await;
        }
        return Err(invalid_grant("the code is invalid, expired or used"));
    };
    if c.client_id != service.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(&c.redirect_uri) {
        return Err(invalid_grant(
            "`redirect_uri` differs from the authorization request's",
        ));
    }
    let Some(verifier) = form
        .get("code_verifier")
        .filter(|v| super::login::pkce_shaped(v))
    else {
        return Err(invalid_grant("a valid `code_verifier` is required (PKCE)"));
    };
    {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use sha2::Digest;
        let computed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        if computed != c.code_challenge {
            return Err(invalid_grant(
                "the `code_verifier` does not match the challenge",
            ));
        }
    }
    let user = match p.identity.store.user(&c.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(invalid_grant("the user no longer exists")),
        Err(e) => return Err(internal("cannot read a user", e)),
    };
    let family = new_family(p, &service, &c).await?;
    let jti = ulid::Ulid::new().to_string();
    let issued = format!(
        "{} {jti}",
        family.as_ref().map(|f| f.0.as_str()).unwrap_or("-")
    );
    if let Err(e) = p.sessions.mark_redeemed(code, &issued).await {
        tracing::warn!(error = %e, "cannot remember a redeemed code");
    }
    let res = user_tokens(
        p,
        &UserGrant {
            service: &service,
            user: &user,
            scope: &c.scope,
            session_id: &c.session_id,
            auth_time: c.auth_time,
            amr: &c.amr,
            nonce: c.nonce.as_deref(),
            refresh: family.as_ref().map(|(f, t)| (f.as_str(), t.as_str())),
            jti: Some(&jti),
        },
    )?;
    p.identity
        .audit(
            org,
            &format!("user:{}", user.id),
            ip.as_deref(),
            "token.issued",
            json!({ "client_id": service.client_id, "grant_type": "authorization_code", "scope": c.scope, "token_family": family.as_ref().map(|f| &f.0) }),
        )
        .await;
    Ok(res)
}

/// The refresh token grant (RFC 6749 §6), rotating: each refresh token works once, and a
/// second use revokes its whole family.
async fn refresh(
    p: &super::login::Provider<'_>,
    req: &HttpRequest,
    form: &std::collections::HashMap<String, String>,
) -> Result<HttpResponse, Refusal> {
    let service = grant_client(p, req, form).await?;
    grant_allowed(&service, "refresh_token")?;
    let Some(old) = form
        .get("refresh_token")
        .filter(|t| !t.is_empty() && t.len() <= 256)
    else {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`refresh_token` is required",
        )));
    };
    let old_sha = crate::oidc::sessions::sha256_hex(old);
    let family = match p.identity.store.family_of_token(&old_sha).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(invalid_grant("the refresh token is invalid")),
        Err(e) => return Err(internal("cannot read a refresh token", e)),
    };
    if family.client_id != service.client_id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let granted: Vec<&str> = family.scope.split(' ').collect();
    let scope = match form.get("scope").filter(|s| !s.is_empty()) {
        None => family.scope.clone(),
        Some(asked) => {
            if asked
                .split(' ')
                .any(|s| !s.is_empty() && !granted.contains(&s))
            {
                return Err(Box::new(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh can only narrow the scope granted",
                )));
            }
            asked
                .split(' ')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let ip = super::login::client_ip(req);
    let org = Some(service.organization_id.as_str());
    let session_live = matches!(p.sessions.by_id(&family.session_id).await, Ok(Some(_)));
    if family.revoked_at.is_none() && family.expires_at > chrono::Utc::now() && !session_live {
        if p.identity
            .store
            .revoke_family(&family.id, chrono::Utc::now())
            .await
            .is_ok()
        {
            p.identity.revocations.note_family(&family.id);
        }
        return Err(invalid_grant("the login session has ended"));
    }
    let user = match p.identity.store.user(&family.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(invalid_grant("the user no longer exists")),
        Err(e) => return Err(internal("cannot read a user", e)),
    };
    // Reuse is detected before anything else is asked, so that it always revokes.
    let new = crate::oidc::sessions::secret("rt_").map_err(|e| internal("no randomness", e))?;
    let new_sha = crate::oidc::sessions::sha256_hex(&new);
    if family.revoked_at.is_none() && family.expires_at > chrono::Utc::now() {
        // Tokens are issued only after a decision: a suspension or a lost grant ends refresh.
        let principal = format!("user:{}", user.id);
        decide_sign_in(
            p.identity,
            &principal,
            &service,
            user_context(req, &service.client_id, &family.amr),
        )
        .await?;
    }
    match p
        .identity
        .store
        .rotate_refresh(&old_sha, &new_sha, chrono::Utc::now())
        .await
        .map_err(|e| internal("cannot rotate a refresh token", e))?
    {
        crate::db::users::Refresh::Rotated(_) => {}
        crate::db::users::Refresh::Reused(f) => {
            p.identity.revocations.note_family(&f.id);
            tracing::warn!(client_id = %service.client_id, family = %f.id, "refresh token reused: family revoked");
            p.identity
                .audit(
                    org,
                    &format!("user:{}", f.user_id),
                    ip.as_deref(),
                    "token.refresh_reused",
                    json!({ "client_id": service.client_id, "token_family": f.id }),
                )
                .await;
            return Err(invalid_grant(
                "the refresh token was used before: its grant is revoked",
            ));
        }
        crate::db::users::Refresh::Dead(_) | crate::db::users::Refresh::Unknown => {
            return Err(invalid_grant("the refresh token is revoked or expired"));
        }
    }
    let res = user_tokens(
        p,
        &UserGrant {
            service: &service,
            user: &user,
            scope: &scope,
            session_id: &family.session_id,
            auth_time: family.auth_time,
            amr: &family.amr,
            nonce: None,
            refresh: Some((&family.id, &new)),
            jti: None,
        },
    )?;
    p.identity
        .audit(
            org,
            &format!("user:{}", user.id),
            ip.as_deref(),
            "token.refreshed",
            json!({ "client_id": service.client_id, "token_family": family.id }),
        )
        .await;
    Ok(res)
}

/// Whether a verified access token is still live: not revoked by `jti`, its refresh family
/// not revoked, its login session (`sid`) not ended.
pub(super) async fn token_live(
    p: &super::login::Provider<'_>,
    claims: &Value,
) -> gatehouse_engine::Result<bool> {
    let Some(jti) = claims["jti"].as_str() else {
        return Ok(false);
    };
    let revoked = &p.identity.revocations;
    if revoked.jti_revoked(jti)
        || claims["fid"]
            .as_str()
            .is_some_and(|f| revoked.family_revoked(f))
    {
        return Ok(false);
    }
    if let Some(sid) = claims["sid"].as_str()
        && p.sessions.by_id(sid).await?.is_none()
    {
        return Ok(false);
    }
    // A deleted service's tokens are dead with it, and a suspended organization's are dead
    // while it is suspended.
    let Some(client_id) = claims["client_id"].as_str() else {
        return Ok(false);
    };
    match p.identity.service(client_id).await? {
        Some(s) => Ok(!p
            .identity
            .organization_suspended(&s.organization_id, client_id)
            .await?),
        None => Ok(false),
    }
}

pub(super) fn no_store(body: Value) -> HttpResponse {
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

/// What introspection and revocation start from: the provider, the calling client, the form
/// and its `token`.
struct TokenRequest<'a> {
    p: super::login::Provider<'a>,
    caller: crate::db::tenancy::Service,
    form: std::collections::HashMap<String, String>,
    token: String,
}

/// Introspection needs a confidential client; revocation also takes a public one
/// (RFC 7009 §2.1).
async fn token_request<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    body: &[u8],
    public_ok: bool,
) -> Result<TokenRequest<'a>, Refusal> {
    let p = super::login::provider(state)?;
    rate_limited(&p, state.token_rate_per_ip, req).await?;
    let form = parse_form(req, body)?;
    let caller = if public_ok {
        grant_client(&p, req, &form).await?
    } else {
        authenticate_client(&p, req, &form).await?
    };
    let token = token_param(&form)?.to_string();
    Ok(TokenRequest {
        p,
        caller,
        form,
        token,
    })
}

/// `POST /oauth2/introspect` (RFC 7662): whether an access or refresh token is active, for a
/// confidential client of the same organization as the token's client; any other token, or
/// a caller of another organization, gets `{"active": false}`.
pub(super) async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let r = match token_request(&state, &req, &body, false).await {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (p, caller, token) = (&r.p, &r.caller, r.token.as_str());
    let inactive = || no_store(json!({ "active": false }));
    let same_org = |client_id: String| async move {
        match p.identity.service(&client_id).await {
            Ok(Some(owner)) => Ok(owner.organization_id == caller.organization_id),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if token.starts_with("rt_") {
        // A rotated refresh token is spent: inactive, though its family lives on.
        let family = match p
            .identity
            .store
            .family_of_current_token(&crate::oidc::sessions::sha256_hex(token))
            .await
        {
            Ok(f) => f,
            Err(e) => return *internal("cannot read a refresh token", e),
        };
        let Some(f) =
            family.filter(|f| f.revoked_at.is_none() && f.expires_at > chrono::Utc::now())
        else {
            return inactive();
        };
        match same_org(f.client_id.clone()).await {
            Ok(true) => {}
            Ok(false) => return inactive(),
            Err(e) => return *internal("cannot read a service", e),
        }
        return no_store(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": f.client_id,
            "sub": f.user_id,
            "scope": f.scope,
            "exp": f.expires_at.timestamp(),
            "iss": p.issuer,
        }));
    }
    let Some(claims) = p.keys.verify(token, p.issuer) else {
        return inactive();
    };
    let Some(client_id) = claims["client_id"].as_str() else {
        return inactive();
    };
    match token_live(p, &claims).await {
        Ok(true) => {}
        Ok(false) => return inactive(),
        Err(e) => return *internal("cannot check a token", e),
    }
    match same_org(client_id.to_string()).await {
        Ok(true) => {}
        Ok(false) => return inactive(),
        Err(e) => return *internal("cannot read a service", e),
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
        "sid",
    ] {
        if let Some(v) = claims.get(k) {
            out[k] = v.clone();
        }
    }
    no_store(out)
}

/// `POST /oauth2/revoke` (RFC 7009): revokes an access token, or a refresh token with its
/// whole family (and the access tokens the family issued), issued to the calling client. An
/// invalid or unknown token, or another client's, is not an error (200, nothing done).
pub(super) async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let r = match token_request(&state, &req, &body, true).await {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (p, caller, token) = (&r.p, &r.caller, r.token.as_str());
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
    // Another client's token is left alone, with the answer an unknown token gets: the
    // caller learns nothing of whose it is (or that it exists).
    let not_yours = done;
    let ip = super::login::client_ip(&req);
    if token.starts_with("rt_") {
        let family = match p
            .identity
            .store
            .family_of_token(&crate::oidc::sessions::sha256_hex(token))
            .await
        {
            Ok(Some(f)) => f,
            Ok(None) => return done(),
            Err(e) => return *internal("cannot read a refresh token", e),
        };
        if family.client_id != caller.client_id {
            return not_yours();
        }
        match p
            .identity
            .store
            .revoke_family(&family.id, chrono::Utc::now())
            .await
        {
            Ok(true) => {
                p.identity.revocations.note_family(&family.id);
                p.identity
                    .audit(
                        Some(&caller.organization_id),
                        &format!("service:{}", caller.client_id),
                        ip.as_deref(),
                        "token.revoked",
                        json!({ "token_type": "refresh_token", "token_family": family.id, "user": family.user_id }),
                    )
                    .await;
            }
            Ok(false) => {}
            Err(e) => return *internal("cannot revoke a refresh token", e),
        }
        return done();
    }
    let Some(claims) = p.keys.verify(token, p.issuer) else {
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
        return not_yours();
    }
    let expires = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now);
    if let Err(e) = p.identity.store.revoke_token(jti, expires).await {
        return *internal("cannot record a revocation", e);
    }
    p.identity.revocations.note_jti(jti);
    p.identity
        .audit(
            Some(&caller.organization_id),
            &format!("service:{}", caller.client_id),
            ip.as_deref(),
            "token.revoked",
            json!({ "token_type": "access_token", "jti": jti }),
        )
        .await;
    done()
}
