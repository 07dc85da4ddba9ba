//! The browser side of the OpenID provider: the authorization endpoint (code flow with PKCE),
//! the hosted login pages, RP-initiated logout, userinfo, and a user's own sessions.
//!
//! Every sign-in ends in a decision of the platform store, `Action::"authenticate"` on
//! `Service::"<client_id>"` with `{amr, ip, device_id, …}`; only a permit yields a code. A
//! denial that a second factor would lift is shown as a step-up `challenge`.

use std::collections::HashMap;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use serde_json::json;

use super::AppState;
use super::oauth::{Refusal, oauth_error, parse_form};
use super::pages::{error_page, login_form, page};
use crate::db::tenancy::{Organization, Service};
use crate::identity::login::{Failure, PluginStrategy, Strategy};
use crate::identity::{Identity, SignIn, sign_in_outcome};
use crate::oidc::sessions::{Code, Pending, SESSION_SECONDS, Session, Sessions, sha256_hex};
use gatehouse_plugin_host::{BeginResult, Field, StepRequest};

pub const SESSION_COOKIE: &str = "gh_session";
pub(super) const BINDING_COOKIE: &str = "gh_login";
const DEVICE_COOKIE: &str = "gh_device";
/// The pending request a sign-in with an identity provider belongs to, for its callback.
const FLOW_COOKIE: &str = "gh_flow";
/// The double-submit token of the logout confirmation.
const LOGOUT_COOKIE: &str = "gh_logout";

/// The scopes a client may ask for.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Sign-ins one address may start per minute, per password attempt it may make
/// (`GATEHOUSE_LOGIN_RATE_PER_IP`): each waits ten minutes in the session store.
const PENDING_PER_LOGIN_ATTEMPT: u64 = 4;

/// The pieces every handler here needs.
pub(super) struct Provider<'a> {
    pub identity: &'a Identity,
    pub service_plugins: &'a crate::identity::providers::ServicePlugins,
    pub keys: &'a crate::oidc::keys::KeyRing,
    pub sessions: &'a Sessions,
    pub issuer: &'a str,
    pub secure: bool,
    pub plugins: &'a gatehouse_plugin_host::Host,
    pub plugin_failures: &'a prometheus::IntCounterVec,
}

impl Provider<'_> {
    /// The audience of access tokens for Gatehouse's own APIs (`/api/…`): only tokens that
    /// carry it are accepted there.
    pub(super) fn api_audience(&self) -> String {
        api_audience(self.issuer)
    }

    /// Email and password, through the `password` plugin, tried from `req`'s client (whose
    /// failures are throttled per account and address).
    pub(super) fn password_strategy(&self, req: &HttpRequest) -> PluginStrategy<'_> {
        PluginStrategy {
            host: self.plugins,
            plugin: "password",
            user: None,
            failures: self.plugin_failures,
            throttle: Some((
                self.sessions.kv().as_ref(),
                client_ip(req).unwrap_or_default(),
            )),
        }
    }

    /// The second factor of `user`, through `plugin` (`totp`, `passkey`), tried from `req`'s
    /// client: a code is throttled like a password, a passkey cannot be guessed.
    pub(super) fn second_factor<'u>(
        &'u self,
        plugin: &'u str,
        user: &'u str,
        req: &HttpRequest,
    ) -> PluginStrategy<'u> {
        let guessable = plugin != crate::identity::login::PASSKEY;
        PluginStrategy {
            host: self.plugins,
            plugin,
            user: Some(user),
            failures: self.plugin_failures,
            throttle: guessable.then(|| {
                (
                    self.sessions.kv().as_ref(),
                    client_ip(req).unwrap_or_default(),
                )
            }),
        }
    }
}

pub(super) fn provider(state: &AppState) -> Result<Provider<'_>, Refusal> {
    match (
        state.identity.as_deref(),
        state.keys.as_deref(),
        state.sessions.as_ref(),
        state.plugins.as_deref(),
        state.service_plugins.as_deref(),
    ) {
        (Some(identity), Some(keys), Some(sessions), Some(plugins), Some(service_plugins)) => {
            Ok(Provider {
                identity,
                service_plugins,
                keys,
                sessions,
                issuer: &state.issuer,
                secure: state.issuer.starts_with("https://"),
                plugins,
                plugin_failures: &state.metrics.plugin_failures,
            })
        }
        _ => Err(Box::new(oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server does not issue tokens",
        ))),
    }
}

pub(super) fn cookie<'c>(
    name: &'c str,
    value: String,
    path: &'c str,
    secs: i64,
    secure: bool,
) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(secs))
        .finish()
}

pub(super) fn removal(name: &str, path: &str) -> Cookie<'static> {
    let mut c = Cookie::build(name.to_string(), "")
        .path(path.to_string())
        .finish();
    c.make_removal();
    c
}

/// A double-submit token: a fresh random value, and the cookie `name` on `path` that carries
/// it; the form carries it too, and [`form_token_ok`] compares the two.
pub(super) fn form_token(
    p: &Provider<'_>,
    name: &'static str,
    path: &'static str,
    secs: i64,
) -> Option<(String, Cookie<'static>)> {
    let t = crate::oidc::sessions::secret("").ok()?;
    Some((t.clone(), cookie(name, t, path, secs, p.secure)))
}

/// Whether a form's token `given` is the one of the cookie `name`.
pub(super) fn form_token_ok(req: &HttpRequest, name: &str, given: &str) -> bool {
    !given.is_empty() && req.cookie(name).is_some_and(|c| c.value() == given)
}

/// The client's address: the peer's, or, when the peer is one of the configured trusted
/// proxies (`GATEHOUSE_TRUSTED_PROXIES`), the address that proxy saw in `X-Forwarded-For`.
pub(crate) fn client_ip(req: &HttpRequest) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.trusted_proxies.as_slice())
        .unwrap_or_default();
    Some(forwarded_client(peer, req.headers(), trusted).to_string())
}

/// The client behind `peer`: walking `X-Forwarded-For` from its end (the entry the nearest
/// proxy wrote), every trusted proxy is skipped and the first other address is the client.
/// Entries a client wrote itself sit at the start and are never reached past an untrusted
/// hop, so they cannot choose the address; a malformed entry stops the walk there.
pub(crate) fn forwarded_client(
    peer: std::net::IpAddr,
    headers: &header::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

pub(super) fn api_unavailable() -> HttpResponse {
    super::error::ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the session store cannot be reached; try again",
    )
    .error_response()
}

pub(super) fn unavailable_page() -> HttpResponse {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong",
        "Signing in is not possible right now. Please try again in a moment.",
        None,
    )
}

/// Query or form parameters, none repeated.
fn params(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("the parameter `{k}` is repeated"));
        }
    }
    Ok(out)
}

/// The parameters of a request that may come as a query (GET) or a form (POST).
fn request_params(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if req.method() == actix_web::http::Method::POST {
        super::oauth::form_pairs(req, body).map_err(|(_, m)| m.to_string())
    } else {
        serde_urlencoded::from_str(req.query_string())
            .map_err(|_| "the request does not parse".to_string())
    }
}

/// The largest answer an identity provider may post to a callback (a SAML response is
/// commonly tens of KiB; the `saml` capability takes at most 256 KiB of base64).
pub(super) const MAX_CALLBACK_BYTES: usize = 512 << 10;
/// The field marking a callback's answer as posted again from this site.
const REPOSTED: &str = "gh_reposted";

/// Whether a POST came from another site's page (its `Origin` is not the issuer's, or it
/// has none): only such a POST lacks the sign-in's cookies for want of SameSite; one from
/// Gatehouse's own pages without them has none to bring.
fn posted_from_elsewhere(p: &Provider<'_>, req: &HttpRequest) -> bool {
    let own = url::Url::parse(p.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    req.headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|o| o != own)
}

/// The parameters of a callback: its query, or its posted form of up to
/// [`MAX_CALLBACK_BYTES`].
fn callback_params(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if req.method() == actix_web::http::Method::POST {
        super::oauth::form_pairs_up_to(req, body, MAX_CALLBACK_BYTES)
            .map_err(|(_, m)| m.to_string())
    } else {
        request_params(req, body)
    }
}

/// `redirect_uri` with the parameters added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{encoded}")
}

pub(super) fn redirect(to: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::SeeOther();
    b.insert_header((header::LOCATION, to.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

/// An error sent back to the client's (verified) redirect URI (RFC 6749 §4.1.2.1).
pub(super) fn redirect_error(
    p: &Provider,
    uri: &str,
    state: Option<&str>,
    code: &str,
    desc: &str,
) -> HttpResponse {
    let mut pairs = vec![
        ("error", code),
        ("error_description", desc),
        ("iss", p.issuer),
    ];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect(&with_query(uri, &pairs)).finish()
}

/// PKCE `code_challenge` and `code_verifier` share one alphabet (RFC 7636 §4.1).
pub fn pkce_shaped(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

pub(super) async fn organization_of(
    identity: &Identity,
    service: &Service,
) -> Option<Organization> {
    identity
        .organization(&service.organization_id)
        .await
        .ok()
        .flatten()
}

/// `GET|POST /oauth2/authorize`.
pub(super) async fn authorize(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let bad = |m: &str| {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            m,
            None,
        )
    };
    let q = match request_params(&req, &body).and_then(params) {
        Ok(q) => q,
        Err(m) => return bad(&m),
    };
    // Until the client and its redirect URI are known to match, errors are shown here and
    // never sent anywhere (RFC 6749 §4.1.2.1).
    let Some(client_id) = q
        .get("client_id")
        .filter(|c| !c.is_empty() && c.len() <= 200)
    else {
        return bad("The request names no application (`client_id`).");
    };
    let service = match p.identity.service(client_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return bad("The application (`client_id`) is not known here."),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service");
            return unavailable_page();
        }
    };
    let org = organization_of(p.identity, &service).await;
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "The request names no return address (`redirect_uri`).",
            org.as_ref(),
        );
    };
    if !service.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "The return address (`redirect_uri`) is not registered for this application.",
            org.as_ref(),
        );
    }
    let st = q.get("state").map(String::as_str);
    let fail = |code: &str, desc: &str| redirect_error(&p, redirect_uri, st, code, desc);
    if q.contains_key("request") || q.contains_key("request_uri") {
        return fail("request_not_supported", "request objects are not supported");
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return fail(
            "unsupported_response_type",
            "only `response_type=code` is supported",
        );
    }
    if !service
        .grant_types
        .iter()
        .any(|g| g == "authorization_code")
    {
        return fail(
            "unauthorized_client",
            "this client may not use the authorization code flow",
        );
    }
    if let Some(m) = q.get("response_mode")
        && m != "query"
    {
        return fail("invalid_request", "only `response_mode=query` is supported");
    }
    let scope = q.get("scope").map(String::as_str).unwrap_or_default();
    let mut scopes: Vec<&str> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&s) {
            return fail("invalid_scope", &format!("scope `{s}` is not supported"));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let Some(challenge) = q.get("code_challenge") else {
        return fail(
            "invalid_request",
            "PKCE is required: send `code_challenge` (S256)",
        );
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return fail("invalid_request", "`code_challenge_method` must be S256");
    }
    if !pkce_shaped(challenge) {
        return fail(
            "invalid_request",
            "`code_challenge` is not a valid S256 challenge",
        );
    }
    let prompt: Vec<&str> = q
        .get("prompt")
        .map(|v| v.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if prompt
        .iter()
        .any(|v| !["none", "login", "consent", "select_account"].contains(v))
    {
        return fail("invalid_request", "`prompt` has an unknown value");
    }
    if prompt.contains(&"none") && prompt.len() > 1 {
        return fail(
            "invalid_request",
            "`prompt=none` cannot be combined with other values",
        );
    }
    let max_age = match q.get("max_age").map(|m| m.parse::<i64>()) {
        None => None,
        Some(Ok(m)) if m >= 0 => Some(m),
        Some(_) => {
            return fail(
                "invalid_request",
                "`max_age` must be a non-negative integer",
            );
        }
    };
    if q.get("nonce").is_some_and(|n| n.len() > 512) || st.is_some_and(|s| s.len() > 2048) {
        return fail("invalid_request", "`nonce` or `state` is too long");
    }
    let pending = Pending {
        client_id: service.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope: scopes.join(" "),
        state: st.map(str::to_string),
        nonce: q.get("nonce").cloned(),
        code_challenge: challenge.clone(),
        max_age,
        binding: String::new(),
        prompt_consent: prompt.contains(&"consent"),
        prompt_none: prompt.contains(&"none"),
        consent_session: None,
    };
    // A live session that satisfies `prompt` and `max_age` signs in without a form.
    let session = match current_session(&p, &req).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return unavailable_page();
        }
    };
    let fresh_enough =
        |s: &Session| max_age.is_none_or(|m| (Utc::now() - s.auth_time).num_seconds() <= m);
    if let Some(s) = session.filter(|s| !prompt.contains(&"login") && fresh_enough(s)) {
        return finish(&p, &req, &service, org.as_ref(), &pending, &s, None).await;
    }
    if prompt.contains(&"none") {
        return fail("login_required", "the user is not signed in");
    }
    let binding = match crate::oidc::sessions::secret("") {
        Ok(b) => b,
        Err(_) => return unavailable_page(),
    };
    let pending = Pending {
        binding: sha256_hex(&binding),
        ..pending
    };
    // Each waiting request is kept for ten minutes: one address may start only so many.
    if let Some(ip) = client_ip(&req) {
        match crate::cache::limits::over_rate(
            p.sessions.kv().as_ref(),
            &format!("authorize:{ip}"),
            state
                .login_rate_per_ip
                .saturating_mul(PENDING_PER_LOGIN_ATTEMPT),
        )
        .await
        {
            Ok(Some(_)) => {
                return error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-ins",
                    "Too many sign-ins were started from your network. Wait a minute and try again.",
                    None,
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count authorization requests");
                return unavailable_page();
            }
        }
    }
    let id = match p.sessions.put_pending(&pending).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot keep an authorization request");
            return unavailable_page();
        }
    };
    redirect(&format!("/login?request={id}"))
        .cookie(cookie(
            BINDING_COOKIE,
            binding,
            "/login",
            crate::oidc::sessions::PENDING_SECONDS as i64,
            p.secure,
        ))
        .finish()
}

pub(super) async fn current_session(
    p: &Provider<'_>,
    req: &HttpRequest,
) -> gatehouse_engine::Result<Option<Session>> {
    match req.cookie(SESSION_COOKIE) {
        Some(c) => p.sessions.from_cookie(c.value()).await,
        None => Ok(None),
    }
}

/// Decides the sign-in of a session's user to a service (`Action::"authenticate"`): on a
/// permit, the device cookie to set (for a browser seen the first time); otherwise the page
/// that says why (a step-up `challenge`, or a denial), audited.
pub(super) async fn authorize_session(
    p: &Provider<'_>,
    req: &HttpRequest,
    service: &Service,
    org: Option<&Organization>,
    session: &Session,
) -> Result<Option<Cookie<'static>>, HttpResponse> {
    let ip = client_ip(req);
    let device = req.cookie(DEVICE_COOKIE).map(|c| c.value().to_string());
    let new_device = match &device {
        Some(d) if d.len() == 64 => None,
        _ => crate::oidc::sessions::secret("").ok(),
    };
    let device_id = device
        .filter(|d| d.len() == 64)
        .or_else(|| new_device.clone());
    let device_cookie = new_device.map(|d| cookie(DEVICE_COOKIE, d, "/", 400 * 86400, p.secure));
    let mut ctx = serde_json::Map::new();
    ctx.insert("amr".into(), json!(session.amr));
    ctx.insert(
        "mfa".into(),
        json!(crate::identity::is_multi_factor(&session.amr)),
    );
    ctx.insert("client_id".into(), json!(service.client_id));
    if let Some(ip) = &ip {
        ctx.insert("ip".into(), json!(ip));
    }
    if let Some(d) = &device_id {
        ctx.insert("device_id".into(), json!(d));
    }
    let principal = format!("user:{}", session.user_id);
    // At this node's cached revision, like the token endpoint: a change made through this
    // node (or announced over Redis) counts at once, one made elsewhere within 0.5 s.
    let outcome = match p
        .identity
        .authorize_sign_in(&principal, service, ctx, false)
        .await
    {
        Ok(d) => sign_in_outcome(&d),
        Err(gatehouse_engine::Error::Validation(m)) => SignIn::Denied { reasons: vec![m] },
        Err(e) => {
            tracing::error!(error = %e, "cannot decide a sign-in");
            return Err(unavailable_page());
        }
    };
    let org_id = Some(service.organization_id.as_str());
    let mut res = match outcome {
        SignIn::Allowed => return Ok(device_cookie),
        SignIn::StepUp { methods, reasons } => {
            p.identity
                .audit(
                    org_id,
                    &principal,
                    ip.as_deref(),
                    "login.step_up_required",
                    json!({ "client_id": service.client_id, "challenge": methods, "reasons": reasons }),
                )
                .await;
            let mut r = error_page(
                StatusCode::FORBIDDEN,
                "A second factor is needed",
                &format!(
                    "To continue, confirm it is you with one of: {}. ({})",
                    methods.join(", "),
                    reasons.join("; ")
                ),
                org,
            );
            if let Ok(v) =
                header::HeaderValue::from_str(&json!({ "challenge": methods }).to_string())
            {
                r.headers_mut()
                    .insert(header::HeaderName::from_static("gatehouse-challenge"), v);
            }
            r
        }
        SignIn::Denied { reasons } => {
            p.identity
                .audit(
                    org_id,
                    &principal,
                    ip.as_deref(),
                    "login.denied",
                    json!({ "client_id": service.client_id, "reasons": reasons }),
                )
                .await;
            error_page(
                StatusCode::FORBIDDEN,
                "You cannot sign in to this application",
                &if reasons.is_empty() {
                    "Your account does not have access to this application.".to_string()
                } else {
                    format!("Access was refused: {}.", reasons.join("; "))
                },
                org,
            )
        }
    };
    if let Some(c) = device_cookie {
        let _ = res.add_cookie(&c);
    }
    Err(res)
}

/// Decides the sign-in of a session's user to a service and, on a permit, sends the browser
/// back with a code. `set_cookie` is a new session's cookie, set on the way.
pub(super) async fn finish(
    p: &Provider<'_>,
    req: &HttpRequest,
    service: &Service,
    org: Option<&Organization>,
    pending: &Pending,
    session: &Session,
    set_cookie: Option<Cookie<'static>>,
) -> HttpResponse {
    let mut res = match authorize_session(p, req, service, org, session).await {
        // Allowed: the service learns who the person is once they approve it.
        Ok(device_cookie) => match p
            .identity
            .needs_consent(
                service,
                &session.user_id,
                &pending.scope,
                pending.prompt_consent,
            )
            .await
        {
            Err(e) => {
                tracing::error!(error = %e, "cannot read a consent");
                return unavailable_page();
            }
            Ok(true) if pending.prompt_none => redirect_error(
                p,
                &pending.redirect_uri,
                pending.state.as_deref(),
                "consent_required",
                "the user has not approved this application",
            ),
            Ok(true) => {
                let mut r = super::consent::consent_page(p, service, org, pending, session).await;
                if let Some(c) = device_cookie {
                    let _ = r.add_cookie(&c);
                }
                r
            }
            Ok(false) => {
                let code = Code {
                    client_id: service.client_id.clone(),
                    redirect_uri: pending.redirect_uri.clone(),
                    user_id: session.user_id.clone(),
                    session_id: session.id.clone(),
                    scope: pending.scope.clone(),
                    nonce: pending.nonce.clone(),
                    code_challenge: pending.code_challenge.clone(),
                    auth_time: session.auth_time,
                    amr: session.amr.clone(),
                };
                let code = match p.sessions.put_code(&code).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot keep an authorization code");
                        return unavailable_page();
                    }
                };
                let mut pairs = vec![("code", code.as_str()), ("iss", p.issuer)];
                if let Some(s) = &pending.state {
                    pairs.push(("state", s));
                }
                let mut r = redirect(&with_query(&pending.redirect_uri, &pairs)).finish();
                if let Some(c) = device_cookie {
                    let _ = r.add_cookie(&c);
                }
                r
            }
        },
        Err(page) => match served_step_up(&page, session) {
            true => step_up(p, service, org, pending, session)
                .await
                .unwrap_or(page),
            false => {
                // A sign-in the decision refused opens no session: the one made for it ends
                // here, and its cookie is never sent.
                if set_cookie.is_some() {
                    if let Err(e) = p.sessions.end(session).await {
                        tracing::error!(error = %e, "cannot end a refused sign-in's session");
                    }
                    return page;
                }
                page
            }
        },
    };
    if let Some(c) = set_cookie {
        let _ = res.add_cookie(&c);
    }
    res
}

/// The pending request a login page belongs to, with its service and organization.
async fn pending_request(
    p: &Provider<'_>,
    id: &str,
) -> Result<(Pending, Service, Option<Organization>), HttpResponse> {
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired",
            "Go back to the application and start signing in again.",
            None,
        )
    };
    let pending = match p.sessions.pending(id).await {
        Ok(Some(x)) => x,
        Ok(None) => return Err(expired()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an authorization request");
            return Err(unavailable_page());
        }
    };
    let service = match p.identity.service(&pending.client_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(expired()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service");
            return Err(unavailable_page());
        }
    };
    let org = organization_of(p.identity, &service).await;
    Ok((pending, service, org))
}

/// `GET /login?request=…`: the login form of a pending authorization request.
pub(super) async fn login_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let id = q.get("request").map(String::as_str).unwrap_or_default();
    let (_, service, org) = match pending_request(&p, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let fields = match method_fields(&p, &service, "password", id, None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let providers = offered_methods(&p, &service).await;
    login_form(
        StatusCode::OK,
        id,
        org.as_ref(),
        &service.name,
        "password",
        &fields,
        "",
        None,
        state.signup,
        &providers,
    )
}

/// The fields of a login method's form, as its plugin's `begin` asks for them.
async fn method_fields(
    p: &Provider<'_>,
    service: &Service,
    method: &str,
    request_id: &str,
    user: Option<&str>,
) -> Result<Vec<Field>, HttpResponse> {
    let request = StepRequest {
        config: "{}".into(),
        params: Vec::new(),
        flow_id: request_id.to_string(),
        callback_url: String::new(),
        user_id: user.map(str::to_string),
    };
    match p
        .plugins
        .begin(method, &service.organization_id, request)
        .await
    {
        Ok(Ok(BeginResult::Form(fields))) => Ok(fields),
        Ok(Ok(_)) => {
            tracing::error!(plugin = method, "a login plugin's begin answered no form");
            Err(unavailable_page())
        }
        Ok(Err(f)) => {
            tracing::error!(plugin = method, failure = ?f, "a login plugin refused to begin");
            Err(unavailable_page())
        }
        Err(e) => {
            crate::identity::login::plugin_failed(p.plugin_failures, method, &e);
            Err(unavailable_page())
        }
    }
}

/// `POST /login`: a submitted login form.
pub(super) async fn login_submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let form = match parse_form(&req, &body) {
        Ok(f) => f,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                "Go back to the application and start signing in again.",
                None,
            );
        }
    };
    let id = form.get("request").map(String::as_str).unwrap_or_default();
    let (pending, service, org) = match pending_request(&p, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Only the browser that started this sign-in may complete it.
    let bound = req
        .cookie(BINDING_COOKIE)
        .is_some_and(|c| sha256_hex(c.value()) == pending.binding);
    if !bound {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired",
            "Go back to the application and start signing in again (cookies must be enabled).",
            org.as_ref(),
        );
    }
    let ip = client_ip(&req);
    let email = form.get("email").cloned().unwrap_or_default();
    // The form shown again, with its fields and the providers' buttons (read only when it is
    // shown: a successful sign-in needs neither).
    let again = async |status: StatusCode, message: &str| {
        let fields = match method_fields(&p, &service, "password", id, None).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        login_form(
            status,
            id,
            org.as_ref(),
            &service.name,
            "password",
            &fields,
            &email,
            Some(message),
            state.signup,
            &offered_methods(&p, &service).await,
        )
    };
    if let Some(ip) = &ip {
        match crate::cache::limits::over_rate(
            p.sessions.kv().as_ref(),
            &format!("login:{ip}"),
            state.login_rate_per_ip,
        )
        .await
        {
            Ok(Some(_)) => {
                return again(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-in attempts from your network. Wait a minute and try again.",
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count sign-in attempts");
                return unavailable_page();
            }
        }
    }
    let password = p.password_strategy(&req);
    let strategy: &dyn Strategy = match form.get("method").map(String::as_str) {
        None | Some("password") => &password,
        Some(m @ (crate::identity::login::SECOND_FACTOR | crate::identity::login::PASSKEY)) => {
            return second_factor_submit(&p, &req, m, &form, id, &pending, &service, org.as_ref())
                .await;
        }
        Some(_) => {
            return again(
                StatusCode::BAD_REQUEST,
                "This sign-in method is not available.",
            )
            .await;
        }
    };
    let (secret, session) = match sign_in_with_form(&p, &req, strategy, &form, &service, "code")
        .await
    {
        FormSignIn::SignedIn(secret, session) => (secret, session),
        FormSignIn::Refused(status, message) => {
            return again(status, &message).await;
        }
        FormSignIn::Unavailable => return unavailable_page(),
        FormSignIn::SecondFactor(user, methods) => {
            return second_factor_page(&p, id, &service, org.as_ref(), &user, methods, None).await;
        }
    };
    signed_in(
        &p,
        &req,
        &service,
        org.as_ref(),
        &pending,
        id,
        secret,
        &session,
    )
    .await
}

/// A sign-in that opened a session (whose cookie holds `secret`) for the pending request
/// `request`: the request is done, the session's cookie is set, the sign-in to the service is
/// decided ([`finish`]), and the login's cookies are cleared.
#[allow(clippy::too_many_arguments)]
async fn signed_in(
    p: &Provider<'_>,
    req: &HttpRequest,
    service: &Service,
    org: Option<&Organization>,
    pending: &Pending,
    request: &str,
    secret: String,
    session: &Session,
) -> HttpResponse {
    if let Err(e) = p.sessions.drop_pending(request).await {
        tracing::warn!(error = %e, "cannot drop a finished authorization request");
    }
    let session_cookie = cookie(SESSION_COOKIE, secret, "/", SESSION_SECONDS, p.secure);
    let mut res = finish(p, req, service, org, pending, session, Some(session_cookie)).await;
    let _ = res.add_cookie(&removal(BINDING_COOKIE, "/login"));
    let _ = res.add_cookie(&removal(FLOW_COOKIE, "/login"));
    res
}

/// What signing in with a form's credentials came to.
pub(super) enum FormSignIn {
    /// A new session, and the secret of its cookie.
    SignedIn(String, Session),
    /// Refused, with the status and the message the form shows again.
    Refused(StatusCode, String),
    /// Something the sign-in needs cannot be reached (logged).
    Unavailable,
    /// The first factor is good; the user has a second factor, which must be asked for
    /// before any session opens.
    SecondFactor(crate::db::users::User, Vec<String>),
}

/// Signs a user in with the credentials of a form (`email`, `password`, …) through
/// `strategy`, for `service`, in `flow` (`code`, `device`): checks them, opens a session and
/// audits the outcome (`login.succeeded`, `login.failed`, `login.locked`). Shared by the login
/// page and the device page, which each render the outcome their own way.
pub(super) async fn sign_in_with_form(
    p: &Provider<'_>,
    req: &HttpRequest,
    strategy: &dyn Strategy,
    form: &HashMap<String, String>,
    service: &Service,
    flow: &str,
) -> FormSignIn {
    let ip = client_ip(req);
    let org_id = Some(service.organization_id.as_str());
    let incorrect = || {
        FormSignIn::Refused(
            StatusCode::UNAUTHORIZED,
            "Incorrect email address or password.".into(),
        )
    };
    let assertion = match strategy
        .complete(p.identity, &service.organization_id, form)
        .await
    {
        Ok(a) => a,
        Err(Failure::BadRequest(m)) => return FormSignIn::Refused(StatusCode::BAD_REQUEST, m),
        Err(Failure::InvalidCredentials { user }) => {
            let actor = user.as_deref().map(|u| format!("user:{u}"));
            p.identity
                .audit(
                    org_id,
                    actor.as_deref().unwrap_or("anonymous"),
                    ip.as_deref(),
                    "login.failed",
                    json!({ "client_id": service.client_id, "method": strategy.id(), "email": form.get("email"), "flow": flow }),
                )
                .await;
            return incorrect();
        }
        Err(Failure::Locked { user, until }) => {
            let actor = user.as_deref().map(|u| format!("user:{u}"));
            p.identity
                .audit(
                    org_id,
                    actor.as_deref().unwrap_or("anonymous"),
                    ip.as_deref(),
                    "login.locked",
                    json!({ "client_id": service.client_id, "until": until, "flow": flow, "email": form.get("email") }),
                )
                .await;
            let minutes = ((until - Utc::now()).num_seconds() + 59) / 60;
            return FormSignIn::Refused(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed attempts: this account is locked. Try again in {} minute{}.",
                    minutes.max(1),
                    if minutes > 1 { "s" } else { "" }
                ),
            );
        }
        Err(Failure::Unavailable(m)) => {
            tracing::error!(error = %m, "a sign-in method failed");
            return FormSignIn::Unavailable;
        }
    };
    let crate::identity::login::Assertion { user, methods } = assertion;
    match p.identity.has_second_factor(&user.id).await {
        Ok(false) => {}
        Ok(true) => return FormSignIn::SecondFactor(user, methods),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user's second factor");
            return FormSignIn::Unavailable;
        }
    }
    open_session(p, req, &user, methods, service, flow).await
}

/// Opens a session for `user`, signed in with `methods`, and audits it (`login.succeeded`).
pub(super) async fn open_session(
    p: &Provider<'_>,
    req: &HttpRequest,
    user: &crate::db::users::User,
    methods: Vec<String>,
    service: &Service,
    flow: &str,
) -> FormSignIn {
    let ip = client_ip(req);
    let org_id = Some(service.organization_id.as_str());
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (secret, session) = match p.sessions.create(&user.id, methods, ip.clone(), ua).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a session");
            return FormSignIn::Unavailable;
        }
    };
    p.identity
        .audit(
            org_id,
            &format!("user:{}", user.id),
            ip.as_deref(),
            "login.succeeded",
            json!({ "client_id": service.client_id, "amr": session.amr, "session": session.id, "flow": flow }),
        )
        .await;
    FormSignIn::SignedIn(secret, session)
}

/// Ends a session and revokes the refresh tokens issued under it.
pub(super) async fn end_session(
    p: &Provider<'_>,
    session: &Session,
    ip: Option<&str>,
    why: &str,
) -> gatehouse_engine::Result<()> {
    p.sessions.end(session).await?;
    let families = p
        .identity
        .store
        .revoke_session_families(&session.id, Utc::now())
        .await?;
    p.identity
        .audit(
            None,
            &format!("user:{}", session.user_id),
            ip,
            "session.ended",
            json!({ "session": session.id, "why": why, "token_families_revoked": families }),
        )
        .await;
    Ok(())
}

/// `GET|POST /oauth2/logout`: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
pub(super) async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let bad = |m: &str| error_page(StatusCode::BAD_REQUEST, "Signing out failed", m, None);
    let q = match request_params(&req, &body).and_then(params) {
        Ok(q) => q,
        Err(m) => return bad(&m),
    };
    let hint = match q.get("id_token_hint") {
        Some(t) => match p.keys.verify_ignoring_expiry(t, p.issuer) {
            Some(c) => Some(c),
            None => return bad("The `id_token_hint` is not an ID token of this server."),
        },
        None => None,
    };
    let client_id = q.get("client_id").cloned().or_else(|| {
        hint.as_ref()
            .and_then(|c| c["aud"].as_str().map(str::to_string))
    });
    if let (Some(h), Some(c)) = (hint.as_ref(), q.get("client_id"))
        && h["aud"].as_str() != Some(c)
    {
        return bad("`client_id` and the `id_token_hint` name different applications.");
    }
    let back = match q.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(cid) = client_id.as_deref() else {
                return bad("A return address needs `client_id` or `id_token_hint`.");
            };
            match p.identity.service(cid).await {
                Ok(Some(s)) if s.redirect_uris.iter().any(|u| u == uri) => Some(uri.clone()),
                Ok(_) => {
                    return bad("The return address is not registered for this application.");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a service");
                    return unavailable_page();
                }
            }
        }
    };
    let ip = client_ip(&req);
    let mut ended = Vec::new();
    match current_session(&p, &req).await {
        Ok(Some(s)) => ended.push(s),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return unavailable_page();
        }
    }
    // Without an ID token of ours naming this browser's session (its `sid` and `sub`), the
    // user confirms first: a link on another site, or anybody's own ID token sent as the
    // hint, must not sign them out (OpenID Connect RP-Initiated Logout §2).
    let hint_names_session = match (hint.as_ref(), ended.first()) {
        (Some(h), Some(s)) => {
            h["sid"].as_str() == Some(s.id.as_str())
                && h["sub"].as_str() == Some(s.user_id.as_str())
        }
        _ => false,
    };
    let confirmed = req.method() == actix_web::http::Method::POST
        && q.get("confirm")
            .is_some_and(|c| form_token_ok(&req, LOGOUT_COOKIE, c));
    if !hint_names_session && !ended.is_empty() && !confirmed {
        let Some((token, token_cookie)) = form_token(&p, LOGOUT_COOKIE, "/oauth2/logout", 600)
        else {
            return unavailable_page();
        };
        let mut hidden: Vec<(&str, &str)> = vec![("confirm", token.as_str())];
        for k in ["post_logout_redirect_uri", "state"] {
            if let Some(v) = q.get(k) {
                hidden.push((k, v.as_str()));
            }
        }
        // The application a hint named, so that the confirmed sign-out still returns to it.
        if let Some(c) = client_id.as_deref() {
            hidden.push(("client_id", c));
        }
        let mut r = super::pages::form(
            StatusCode::OK,
            "Sign out?",
            None,
            "Do you want to sign out of your account on this browser?",
            None,
            "/oauth2/logout",
            &hidden,
            &[],
            "Sign out",
        );
        let _ = r.add_cookie(&token_cookie);
        return r;
    }
    if let Some(sid) = hint.as_ref().and_then(|c| c["sid"].as_str())
        && !ended.iter().any(|s| s.id == sid)
        && let Ok(Some(s)) = p.sessions.by_id(sid).await
        && hint.as_ref().and_then(|c| c["sub"].as_str()) == Some(s.user_id.as_str())
    {
        ended.push(s);
    }
    for s in &ended {
        if let Err(e) = end_session(&p, s, ip.as_deref(), "logout").await {
            tracing::error!(error = %e, "cannot end a session");
            return unavailable_page();
        }
    }
    let mut res = match back {
        Some(uri) => {
            let pairs: Vec<(&str, &str)> = q
                .get("state")
                .map(|s| vec![("state", s.as_str())])
                .unwrap_or_default();
            let to = if pairs.is_empty() {
                uri
            } else {
                with_query(&uri, &pairs)
            };
            redirect(&to).finish()
        }
        None => page(
            StatusCode::OK,
            "You are signed out",
            None,
            "<p>You can close this window.</p>",
        ),
    };
    let _ = res.add_cookie(&removal(SESSION_COOKIE, "/"));
    res
}

/// The user access token of a request (`Authorization: Bearer`), verified and live: not
/// revoked, its refresh family not revoked, its session not ended.
/// The audience of access tokens for Gatehouse's own APIs at `issuer`.
pub(super) fn api_audience(issuer: &str) -> String {
    format!("{issuer}/api")
}

/// Whether an access token's `aud` (a string or an array) names `audience`.
pub(super) fn has_audience(claims: &serde_json::Value, audience: &str) -> bool {
    match &claims["aud"] {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    }
}

/// A user's live access token issued for Gatehouse's own APIs (`/api/me/…`): a token any
/// other service obtained for the user is refused here, as one not meant for this API.
pub(super) async fn api_user_token(
    p: &Provider<'_>,
    req: &HttpRequest,
) -> Result<serde_json::Value, HttpResponse> {
    let claims = user_token(p, req).await?;
    if !has_audience(&claims, &p.api_audience()) {
        let desc = "the access token was not issued for this API";
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", desc);
        if let Ok(v) = header::HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{desc}\""
        )) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return Err(r);
    }
    Ok(claims)
}

/// A user's live access token, for any audience (userinfo serves every token with `openid`).
pub(super) async fn user_token(
    p: &Provider<'_>,
    req: &HttpRequest,
) -> Result<serde_json::Value, HttpResponse> {
    let invalid = |desc: &str| {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", desc);
        if let Ok(v) = header::HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{desc}\""
        )) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    };
    let Some(token) = super::bearer(req.headers()) else {
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "send an access token as `Authorization: Bearer`",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Err(r);
    };
    let Some(claims) = p.keys.verify(token, p.issuer) else {
        return Err(invalid("the access token is invalid or expired"));
    };
    match super::oauth::token_live(p, &claims).await {
        Ok(true) => {}
        Ok(false) => return Err(invalid("the access token has been revoked")),
        Err(e) => {
            tracing::error!(error = %e, "cannot check a token");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            ));
        }
    }
    if claims["sid"].as_str().is_none() {
        return Err(invalid("the access token does not stand for a user"));
    }
    Ok(claims)
}

/// `GET|POST /oauth2/userinfo`: claims about the user an access token stands for.
pub(super) async fn userinfo(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let scopes: Vec<&str> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    if !scopes.contains(&"openid") {
        let mut r = oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "userinfo needs the `openid` scope",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(
                "Bearer error=\"insufficient_scope\", scope=\"openid\"",
            ),
        );
        return r;
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    let user = match p.identity.store.user(sub).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the user no longer exists",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    };
    let mut out = json!({ "sub": user.id });
    super::oauth::add_user_claims(&mut out, &user, &scopes);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(out)
}

/// `GET /api/me/sessions`: the caller's live login sessions.
pub(super) async fn my_sessions(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match api_user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = claims["sub"].as_str().unwrap_or_default();
    match p.sessions.list(user).await {
        Ok(list) => {
            let current = claims["sid"].as_str();
            let items: Vec<serde_json::Value> = list
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "created_at": s.created_at,
                        "expires_at": s.expires_at,
                        "auth_time": s.auth_time,
                        "amr": s.amr,
                        "ip": s.ip,
                        "user_agent": s.user_agent,
                        "current": Some(s.id.as_str()) == current,
                    })
                })
                .collect();
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "sessions": items }))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot list sessions");
            api_unavailable()
        }
    }
}

/// `DELETE /api/me/sessions/{id}`: ends one of the caller's sessions.
pub(super) async fn end_my_session(
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
    let id = path.into_inner();
    let session = match p.sessions.by_id(&id).await {
        Ok(s) => s.filter(|s| s.user_id == user),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return api_unavailable();
        }
    };
    let Some(session) = session else {
        return super::error::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such session")
            .error_response();
    };
    match end_session(
        &p,
        &session,
        client_ip(&req).as_deref(),
        "revoked by the user",
    )
    .await
    {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => {
            tracing::error!(error = %e, "cannot end a session");
            api_unavailable()
        }
    }
}

/// `DELETE /api/me/sessions`: signs the caller out everywhere: every session ends and every
/// refresh token of the user is revoked.
pub(super) async fn end_all_my_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let claims = match api_user_token(&p, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user = claims["sub"].as_str().unwrap_or_default().to_string();
    let ip = client_ip(&req);
    let result: gatehouse_engine::Result<usize> = async {
        let ended = p.sessions.end_all(&user).await?;
        let families = p
            .identity
            .store
            .revoke_user_families(&user, Utc::now())
            .await?;
        p.identity
            .audit(
                None,
                &format!("user:{user}"),
                ip.as_deref(),
                "session.signed_out_everywhere",
                json!({ "sessions": ended, "token_families_revoked": families }),
            )
            .await;
        Ok(ended.len())
    }
    .await;
    match result {
        Ok(n) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "sessions_ended": n })),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign out everywhere");
            api_unavailable()
        }
    }
}

/// The sign-in methods a service offers besides the password (identity providers, sign-in
/// links, …), as (plugin, button text) for the login page. A plugin that cannot be loaded is
/// left out (and logged).
async fn offered_methods(p: &Provider<'_>, service: &Service) -> Vec<(String, String)> {
    let offered = match p.service_plugins.offered(&service.client_id).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service's plugins");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (id, config) in offered {
        if built_in(&id) {
            continue;
        }
        match p.plugins.plugin(&id).await {
            Ok(pl) => {
                let label = config
                    .get("display_name")
                    .and_then(|d| d.as_str())
                    .map_or_else(|| pl.description.display_name.clone(), str::to_string);
                let text = match pl.description.kind {
                    gatehouse_plugin_host::Kind::Provider => format!("Continue with {label}"),
                    gatehouse_plugin_host::Kind::Strategy => label,
                };
                out.push((id, text));
            }
            Err(e) => crate::identity::login::plugin_failed(p.plugin_failures, &id, &e),
        }
    }
    out
}

/// Whether `plugin` is part of every service's login (the password, and the second factor),
/// rather than a method a service offers.
pub(super) fn built_in(plugin: &str) -> bool {
    plugin == "password" || plugin == crate::identity::login::SECOND_FACTOR
}

/// The callback URL of a sign-in method's plugin: where an identity provider sends the
/// browser back (what an organization registers at its provider), and where a sign-in link
/// leads.
fn callback_url(p: &Provider<'_>, plugin: &str) -> String {
    format!("{}/login/callback/{plugin}", p.issuer.trim_end_matches('/'))
}

/// `GET /login/metadata/saml/{client_id}`: the SAML service provider metadata of a service
/// that offers the `saml` plugin (its entity id, the callback as its assertion consumer
/// service), for the organization to give its identity provider.
pub(super) async fn saml_metadata(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let client_id = path.into_inner();
    let not_found = || {
        super::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no service offers SAML single sign-on under this client id",
        )
        .error_response()
    };
    let offered = match p.service_plugins.list(&client_id).await {
        Ok(list) => list.into_iter().find(|o| o.plugin == "saml"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service's plugins");
            return api_unavailable();
        }
    };
    let Some(saml) = offered else {
        return not_found();
    };
    let acs = callback_url(&p, "saml");
    let entity_id = saml
        .config
        .get("sp_entity_id")
        .and_then(|v| v.as_str())
        .map_or_else(|| acs.clone(), str::to_string);
    let signs = saml.secrets_set.iter().any(|s| s == "sp_signing_key");
    match gatehouse_plugin_host::saml::sp_metadata(&entity_id, &acs, signs) {
        Ok(xml) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/samlmetadata+xml"))
            .insert_header((header::CACHE_CONTROL, "max-age=3600"))
            .body(xml),
        Err(e) => {
            tracing::error!(error = %e, "cannot write SAML metadata");
            api_unavailable()
        }
    }
}

/// The pending request of a sign-in, checked to belong to this browser.
pub(super) async fn bound_request(
    p: &Provider<'_>,
    req: &HttpRequest,
    id: &str,
) -> Result<(Pending, Service, Option<Organization>), HttpResponse> {
    let (pending, service, org) = pending_request(p, id).await?;
    let bound = req
        .cookie(BINDING_COOKIE)
        .is_some_and(|c| sha256_hex(c.value()) == pending.binding);
    if !bound {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired",
            "Go back to the application and start signing in again (cookies must be enabled).",
            org.as_ref(),
        ));
    }
    Ok((pending, service, org))
}

/// A sign-in method a service offers: its plugin's configuration for the service, its display
/// name and its kind.
struct OfferedMethod {
    config: String,
    display_name: String,
    kind: gatehouse_plugin_host::Kind,
}

/// The method `plugin` if `service` offers it; otherwise the page that says so.
async fn offered_method(
    p: &Provider<'_>,
    service: &Service,
    org: Option<&Organization>,
    plugin: &str,
) -> Result<OfferedMethod, HttpResponse> {
    let not_offered = || {
        error_page(
            StatusCode::NOT_FOUND,
            "This sign-in method is not available",
            "The application does not offer it. Go back and choose another way to sign in.",
            org,
        )
    };
    if built_in(plugin) {
        return Err(not_offered());
    }
    let config = match p
        .service_plugins
        .step_config(&service.client_id, plugin)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return Err(not_offered()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a service's plugin configuration");
            return Err(unavailable_page());
        }
    };
    match p.plugins.plugin(plugin).await {
        Ok(pl) => Ok(OfferedMethod {
            config,
            display_name: pl.description.display_name.clone(),
            kind: pl.description.kind,
        }),
        Err(e) => {
            crate::identity::login::plugin_failed(p.plugin_failures, plugin, &e);
            Err(unavailable_page())
        }
    }
}

/// How long a sign-in waits once a method has said it goes on elsewhere (a link sent by email
/// is good for 15 minutes): its request and cookies are kept that long from then.
const WAIT_SECONDS: u64 = 900;

/// `GET|POST /login/with/{plugin}` (`request=…`, and the fields of the method's form): a
/// sign-in method the service offers. Its plugin's `begin` says what comes next: a form (shown
/// here, and posted back here), a redirect to an identity provider, or a message (a link was
/// sent by email). The callback (`/login/callback/{plugin}`) completes it.
pub(super) async fn method_start(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let plugin = path.into_inner();
    let unreadable = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "The form could not be read",
            "Go back to the application and start signing in again.",
            None,
        )
    };
    let mut params = match request_params(&req, &body) {
        Ok(ps) if ps.len() <= 32 => ps,
        _ => return unreadable(),
    };
    let Some(at) = params.iter().position(|(k, _)| k == "request") else {
        return unreadable();
    };
    let (_, id) = params.remove(at);
    if params.iter().any(|(k, _)| k == "request") {
        return unreadable();
    }
    params.retain(|(k, _)| k != "purpose");
    let (pending, service, org) = match bound_request(&p, &req, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let method = match offered_method(&p, &service, org.as_ref(), &plugin).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let submitted = !params.is_empty();
    if submitted && let Some(ip) = client_ip(&req) {
        match crate::cache::limits::over_rate(
            p.sessions.kv().as_ref(),
            &format!("login:{ip}"),
            state.login_rate_per_ip,
        )
        .await
        {
            Ok(Some(_)) => {
                return error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-in attempts",
                    "Too many sign-in attempts from your network. Wait a minute and try again.",
                    org.as_ref(),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot count sign-in attempts");
                return unavailable_page();
            }
        }
    }
    let step = |params: Vec<(String, String)>| StepRequest {
        config: method.config.clone(),
        params,
        flow_id: id.clone(),
        callback_url: callback_url(&p, &plugin),
        user_id: None,
    };
    let flow_cookie =
        |seconds: u64| cookie(FLOW_COOKIE, id.clone(), "/login", seconds as i64, p.secure);
    let begun = p
        .plugins
        .begin(&plugin, &service.organization_id, step(params))
        .await;
    let (status, error, fields) = match begun {
        Ok(Ok(BeginResult::Redirect(url)))
            if url.starts_with("https://") || url.starts_with("http://") =>
        {
            return redirect(&url)
                .cookie(flow_cookie(crate::oidc::sessions::PENDING_SECONDS))
                .finish();
        }
        Ok(Ok(BeginResult::Form(fields))) => (StatusCode::OK, None, fields),
        Ok(Ok(BeginResult::Message(message))) => {
            // The sign-in goes on from elsewhere (a link in an email): this request, and this
            // browser's hold on it, wait for it.
            if let Err(e) = p
                .sessions
                .keep_pending(&id, &pending, std::time::Duration::from_secs(WAIT_SECONDS))
                .await
            {
                tracing::error!(error = %e, "cannot keep an authorization request");
                return unavailable_page();
            }
            let mut res = page(
                StatusCode::OK,
                &method.display_name,
                org.as_ref(),
                &format!(r#"<p role="status">{}</p>"#, super::pages::escape(&message)),
            );
            let _ = res.add_cookie(&flow_cookie(WAIT_SECONDS));
            if let Some(b) = req.cookie(BINDING_COOKIE) {
                let _ = res.add_cookie(&cookie(
                    BINDING_COOKIE,
                    b.value().to_string(),
                    "/login",
                    WAIT_SECONDS as i64,
                    p.secure,
                ));
            }
            return res;
        }
        Ok(Ok(BeginResult::Challenge(options))) => {
            // A passkey: the page's script asks the browser, and posts its answer to the
            // callback.
            let others = format!(
                "\n<p><a href=\"/login?request={}\">Other ways to sign in</a></p>",
                super::pages::escape(&id)
            );
            let mut res = super::pages::passkey_page(
                StatusCode::OK,
                &method.display_name,
                org.as_ref(),
                &format!("to continue to {}", service.name),
                None,
                &options,
                &format!("/login/callback/{plugin}"),
                &[],
                &others,
            );
            let _ = res.add_cookie(&flow_cookie(crate::oidc::sessions::PENDING_SECONDS));
            return res;
        }
        Ok(Ok(_)) => {
            tracing::error!(
                plugin,
                "a sign-in plugin's begin answered what this page cannot show"
            );
            return unavailable_page();
        }
        Ok(Err(gatehouse_plugin_host::Failure::BadRequest(m))) if submitted => {
            // The form again, with what was wrong.
            match p
                .plugins
                .begin(&plugin, &service.organization_id, step(Vec::new()))
                .await
            {
                Ok(Ok(BeginResult::Form(fields))) => (StatusCode::BAD_REQUEST, Some(m), fields),
                _ => {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "Signing in did not start",
                        &m,
                        org.as_ref(),
                    );
                }
            }
        }
        Ok(Err(gatehouse_plugin_host::Failure::BadRequest(m))) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Signing in did not start",
                &m,
                org.as_ref(),
            );
        }
        Ok(Err(f)) => {
            tracing::error!(plugin, failure = ?f, "a sign-in plugin could not begin");
            return unavailable_page();
        }
        Err(e) => {
            crate::identity::login::plugin_failed(p.plugin_failures, &plugin, &e);
            return unavailable_page();
        }
    };
    super::pages::method_form(
        status,
        &id,
        org.as_ref(),
        &service.name,
        &plugin,
        &method.display_name,
        &fields,
        error.as_deref(),
    )
}

/// `GET|POST /login/callback/{plugin}`: the identity provider sends the browser back; the
/// plugin's `complete` says who it vouches for, and the user it is linked to signs in.
pub(super) async fn provider_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let plugin = path.into_inner();
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "Go back to the application and start signing in again (cookies must be enabled).",
            None,
        )
    };
    let params: Vec<(String, String)> = match callback_params(&req, &body) {
        Ok(ps) if ps.len() <= 64 => ps,
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The answer could not be read",
                "Go back to the application and start signing in again.",
                None,
            );
        }
    };
    let reposted = params.iter().any(|(k, _)| k == REPOSTED);
    let Some(id) = req.cookie(FLOW_COOKIE).map(|c| c.value().to_string()) else {
        // An identity provider's answer posted from its own site (SAML's HTTP-POST binding)
        // comes without this site's SameSite=Lax cookies: the page posts it again from here,
        // which brings them. Only for identity providers: a strategy's answers come from this
        // site's own pages, which have the cookies.
        let provider_plugin = matches!(
            p.plugins
                .plugin(&plugin)
                .await
                .map(|pl| pl.description.kind),
            Ok(gatehouse_plugin_host::Kind::Provider)
        );
        if req.method() == actix_web::http::Method::POST
            && !reposted
            && provider_plugin
            && posted_from_elsewhere(&p, &req)
        {
            let mut fields: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            fields.push((REPOSTED, "1"));
            return super::pages::repost_page(&format!("/login/callback/{plugin}"), &fields);
        }
        return expired();
    };
    // `purpose` is the server's to set, never a browser's.
    let params: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| k != "purpose" && k != REPOSTED)
        .collect();
    let (pending, service, org) = match bound_request(&p, &req, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let method = match offered_method(&p, &service, org.as_ref(), &plugin).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let display_name = method.display_name.clone();
    let ip = client_ip(&req);
    let org_id = Some(service.organization_id.as_str());
    let request = StepRequest {
        config: method.config,
        params,
        flow_id: id.clone(),
        callback_url: callback_url(&p, &plugin),
        user_id: None,
    };
    let refused = |status: StatusCode, message: &str| {
        error_page(status, "You could not be signed in", message, org.as_ref())
    };
    let assertion = match p
        .plugins
        .complete(&plugin, &service.organization_id, request)
        .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(f)) => {
            p.identity
                .audit(
                    org_id,
                    "anonymous",
                    ip.as_deref(),
                    "login.failed",
                    json!({ "client_id": service.client_id, "method": plugin, "reason": format!("{f:?}"), "flow": "code" }),
                )
                .await;
            return match f {
                gatehouse_plugin_host::Failure::BadRequest(m) => {
                    refused(StatusCode::BAD_REQUEST, &m)
                }
                gatehouse_plugin_host::Failure::InvalidCredentials(_) => refused(
                    StatusCode::UNAUTHORIZED,
                    &format!("{display_name} did not confirm who you are."),
                ),
                gatehouse_plugin_host::Failure::Unavailable(m) => {
                    tracing::error!(plugin, error = %m, "an identity provider cannot be used");
                    unavailable_page()
                }
            };
        }
        Err(e) => {
            crate::identity::login::plugin_failed(p.plugin_failures, &plugin, &e);
            return unavailable_page();
        }
    };
    let user = match method.kind {
        // A first-party strategy checked the user itself: its subject is a Gatehouse user.
        // A third-party strategy's subject is only an account of its own, linked like a
        // provider's: no plugin of an outsider names which Gatehouse user signs in.
        gatehouse_plugin_host::Kind::Strategy
            if gatehouse_plugin_host::embedded::is_first_party(&plugin) =>
        {
            match p.identity.store.user(&assertion.subject).await {
                Ok(Some(u)) => u,
                Ok(None) => return refused(StatusCode::FORBIDDEN, "The account no longer exists."),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a user");
                    return unavailable_page();
                }
            }
        }
        gatehouse_plugin_host::Kind::Strategy | gatehouse_plugin_host::Kind::Provider => {
            match provider_user(
                &p,
                &req,
                &plugin,
                &service.organization_id,
                &display_name,
                &assertion,
            )
            .await
            {
                Ok(crate::identity::login::ProviderUser::User(u)) => u,
                Ok(crate::identity::login::ProviderUser::Prove { email, name }) => {
                    let proof = super::link::PendingProof {
                        plugin: plugin.clone(),
                        organization: service.organization_id.clone(),
                        provider: assertion.provider.clone(),
                        subject: assertion.subject.clone(),
                        email,
                        name,
                        display_name: display_name.clone(),
                        request: id.clone(),
                        methods: crate::identity::trusted_methods(
                            gatehouse_plugin_host::embedded::is_first_party(&plugin),
                            matches!(method.kind, gatehouse_plugin_host::Kind::Provider),
                            &assertion.methods,
                        ),
                        code_sha256: String::new(),
                    };
                    return super::link::prove_page(
                        &p,
                        state.mailer.as_ref(),
                        proof,
                        &service,
                        org.as_ref(),
                    )
                    .await;
                }
                Ok(crate::identity::login::ProviderUser::Link(u)) => {
                    let link = super::link::PendingLink {
                        plugin: plugin.clone(),
                        organization: service.organization_id.clone(),
                        provider: assertion.provider.clone(),
                        subject: assertion.subject.clone(),
                        user: u.id.clone(),
                        request: id.clone(),
                        methods: crate::identity::trusted_methods(
                            gatehouse_plugin_host::embedded::is_first_party(&plugin),
                            matches!(method.kind, gatehouse_plugin_host::Kind::Provider),
                            &assertion.methods,
                        ),
                    };
                    return super::link::confirm_page(&p, &link, &display_name, &u, org.as_ref())
                        .await;
                }
                Err(None) => return unavailable_page(),
                Ok(crate::identity::login::ProviderUser::Refused(m)) | Err(Some(m)) => {
                    p.identity
                        .audit(
                            org_id,
                            "anonymous",
                            ip.as_deref(),
                            "login.failed",
                            json!({ "client_id": service.client_id, "method": plugin, "provider": assertion.provider, "reason": m, "flow": "code" }),
                        )
                        .await;
                    return refused(StatusCode::FORBIDDEN, &m);
                }
            }
        }
    };
    let methods = crate::identity::trusted_methods(
        gatehouse_plugin_host::embedded::is_first_party(&plugin),
        matches!(method.kind, gatehouse_plugin_host::Kind::Provider),
        &assertion.methods,
    );
    sign_in_as(
        &p,
        &req,
        &id,
        &pending,
        &service,
        org.as_ref(),
        &user,
        methods,
    )
    .await
}

/// Ends a sign-in through a plugin's callback as `user`, vouched for with `methods`: the
/// account rules hold whoever vouched (a locked account stays locked), a user with a second
/// factor is asked for it, then a session opens and the decision is made.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sign_in_as(
    p: &Provider<'_>,
    req: &HttpRequest,
    id: &str,
    pending: &Pending,
    service: &Service,
    org: Option<&Organization>,
    user: &crate::db::users::User,
    methods: Vec<String>,
) -> HttpResponse {
    let refused = |status: StatusCode, message: &str| {
        error_page(status, "You could not be signed in", message, org)
    };
    match p.identity.settle_login(&user.id, true, None).await {
        Ok(crate::identity::users::PasswordCheck::Valid(_)) => {}
        Ok(crate::identity::users::PasswordCheck::Locked { until, .. }) => {
            let minutes = ((until - Utc::now()).num_seconds() + 59) / 60;
            return refused(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed attempts: this account is locked. Try again in {} minute{}.",
                    minutes.max(1),
                    if minutes > 1 { "s" } else { "" }
                ),
            );
        }
        Ok(crate::identity::users::PasswordCheck::Invalid { .. }) => {
            return refused(StatusCode::FORBIDDEN, "The account no longer exists.");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot settle a sign-in");
            return unavailable_page();
        }
    }
    // A user with a second factor is asked for it whoever vouched for the first, unless the
    // method was two factors in one (a passkey that verified the user).
    match p.identity.has_second_factor(&user.id).await {
        Ok(false) => {}
        Ok(true) if crate::identity::is_multi_factor(&methods) => {}
        Ok(true) => {
            let mut res = second_factor_page(p, id, service, org, user, methods, None).await;
            let _ = res.add_cookie(&removal(FLOW_COOKIE, "/login"));
            return res;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user's second factor");
            return unavailable_page();
        }
    }
    let (secret, session) = match open_session(p, req, user, methods, service, "code").await {
        FormSignIn::SignedIn(secret, session) => (secret, session),
        FormSignIn::Refused(status, m) => return refused(status, &m),
        _ => return unavailable_page(),
    };
    signed_in(p, req, service, org, pending, id, secret, &session).await
}

/// The user an identity provider's assertion signs in (see
/// [`Identity::user_for_provider`](crate::identity::Identity::user_for_provider)); `Err` with
/// the refusal's message, or `None` when the users cannot be read (logged).
async fn provider_user(
    p: &Provider<'_>,
    req: &HttpRequest,
    plugin: &str,
    organization: &str,
    display_name: &str,
    assertion: &gatehouse_plugin_host::Assertion,
) -> Result<crate::identity::login::ProviderUser, Option<String>> {
    let current_user = match current_session(p, req).await {
        Ok(s) => s.map(|s| s.user_id),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return Err(None);
        }
    };
    match p
        .identity
        .user_for_provider(
            plugin,
            organization,
            display_name,
            assertion,
            current_user.as_deref(),
        )
        .await
    {
        Ok(found) => Ok(found),
        Err(e) => {
            tracing::error!(error = %e, "cannot find or create the user of a provider's account");
            Err(None)
        }
    }
}

/// What the first factor of a sign-in established, kept while the second is asked for.
#[derive(serde::Serialize, serde::Deserialize)]
struct FirstFactor {
    user: String,
    methods: Vec<String>,
}

fn first_factor_key(request: &str) -> String {
    format!("second-factor:{request}")
}

/// Keeps the first factor of the sign-in `request` (10 minutes, or as long as the request
/// lives) and shows the form of the second.
async fn second_factor_page(
    p: &Provider<'_>,
    request: &str,
    service: &Service,
    org: Option<&Organization>,
    user: &crate::db::users::User,
    methods: Vec<String>,
    error: Option<(StatusCode, &str)>,
) -> HttpResponse {
    let kept = FirstFactor {
        user: user.id.clone(),
        methods,
    };
    let value = match serde_json::to_string(&kept) {
        Ok(v) => v,
        Err(_) => return unavailable_page(),
    };
    if let Err(e) = p
        .sessions
        .kv()
        .put(
            &first_factor_key(request),
            &value,
            std::time::Duration::from_secs(600),
        )
        .await
    {
        tracing::error!(error = %e, "cannot keep a first factor");
        return unavailable_page();
    }
    let factors = match p.identity.second_factors(&user.id).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user's second factors");
            return unavailable_page();
        }
    };
    let (status, message) = match error {
        Some((s, m)) => (s, Some(m)),
        None => (StatusCode::OK, None),
    };
    let totp_fields = if factors.totp {
        match method_fields(
            p,
            service,
            crate::identity::login::SECOND_FACTOR,
            request,
            Some(&user.id),
        )
        .await
        {
            Ok(f) => Some(f),
            Err(r) => return r,
        }
    } else {
        None
    };
    if factors.passkey {
        // The passkey first; the authenticator app, if there is one, as the other way.
        let step = StepRequest {
            config: "{}".into(),
            params: Vec::new(),
            flow_id: request.to_string(),
            callback_url: String::new(),
            user_id: Some(user.id.clone()),
        };
        let asked = p
            .plugins
            .begin(
                crate::identity::login::PASSKEY,
                &service.organization_id,
                step,
            )
            .await;
        match asked {
            Ok(Ok(BeginResult::Challenge(options))) => {
                let other = totp_fields
                    .as_deref()
                    .map(|f| {
                        format!(
                            "\n<p>or</p>\n{}",
                            super::pages::inline_login_form(
                                request,
                                crate::identity::login::SECOND_FACTOR,
                                f
                            )
                        )
                    })
                    .unwrap_or_default();
                return super::pages::passkey_page(
                    status,
                    "Confirm it is you",
                    org,
                    &format!("to continue to {}, use your passkey", service.name),
                    message,
                    &options,
                    "/login",
                    &[
                        ("request", request),
                        ("method", crate::identity::login::PASSKEY),
                    ],
                    &other,
                );
            }
            Ok(other) => {
                tracing::error!(answer = ?other, "the passkey plugin could not ask for a passkey");
            }
            Err(e) => crate::identity::login::plugin_failed(
                p.plugin_failures,
                crate::identity::login::PASSKEY,
                &e,
            ),
        }
    }
    let Some(fields) = totp_fields else {
        return unavailable_page();
    };
    login_form(
        status,
        request,
        org,
        &service.name,
        crate::identity::login::SECOND_FACTOR,
        &fields,
        "",
        message,
        false,
        &[],
    )
}

/// `POST /login` with `method=totp`: the second factor of a sign-in whose first factor is
/// kept for this request (and so for this browser).
#[allow(clippy::too_many_arguments)]
async fn second_factor_submit(
    p: &Provider<'_>,
    req: &HttpRequest,
    plugin: &str,
    form: &HashMap<String, String>,
    request: &str,
    pending: &Pending,
    service: &Service,
    org: Option<&Organization>,
) -> HttpResponse {
    let kept: Option<FirstFactor> = match p.sessions.kv().get(&first_factor_key(request)).await {
        Ok(v) => v.and_then(|v| serde_json::from_str(&v).ok()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a first factor");
            return unavailable_page();
        }
    };
    let Some(kept) = kept else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "Go back to the application and start signing in again.",
            org,
        );
    };
    let user = match p.identity.store.user(&kept.user).await {
        Ok(Some(u)) => u,
        Ok(None) => return unavailable_page(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user");
            return unavailable_page();
        }
    };
    let strategy = p.second_factor(plugin, &kept.user, req);
    let ip = client_ip(req);
    let org_id = Some(service.organization_id.as_str());
    let assertion = match strategy
        .complete(p.identity, &service.organization_id, form)
        .await
    {
        Ok(a) => a,
        Err(f) => {
            let (status, message) = match &f {
                Failure::InvalidCredentials { .. } if plugin == crate::identity::login::PASSKEY => {
                    (
                        StatusCode::UNAUTHORIZED,
                        "The passkey was not accepted. Try again, or another way.".to_string(),
                    )
                }
                Failure::InvalidCredentials { .. } => (
                    StatusCode::UNAUTHORIZED,
                    "That code is not right. Try the current one.".to_string(),
                ),
                Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
                Failure::Locked { .. } => {
                    let _ = p.sessions.kv().delete(&first_factor_key(request)).await;
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many failed attempts: this account is locked for now.".to_string(),
                    )
                }
                Failure::Unavailable(m) => {
                    tracing::error!(error = %m, "a second factor failed");
                    return unavailable_page();
                }
            };
            p.identity
                .audit(
                    org_id,
                    &format!("user:{}", kept.user),
                    ip.as_deref(),
                    "login.failed",
                    json!({ "client_id": service.client_id, "method": plugin, "flow": "code" }),
                )
                .await;
            if status == StatusCode::TOO_MANY_REQUESTS {
                return error_page(status, "You could not be signed in", &message, org);
            }
            return second_factor_page(
                p,
                request,
                service,
                org,
                &user,
                kept.methods,
                Some((status, &message)),
            )
            .await;
        }
    };
    if let Err(e) = p.sessions.kv().delete(&first_factor_key(request)).await {
        tracing::warn!(error = %e, "cannot drop a used first factor");
    }
    let mut methods = kept.methods;
    for m in assertion.methods.into_iter().chain(["mfa".to_string()]) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let (secret, session) = match open_session(p, req, &user, methods, service, "code").await {
        FormSignIn::SignedIn(secret, session) => (secret, session),
        FormSignIn::Refused(status, m) => {
            return error_page(status, "You could not be signed in", &m, org);
        }
        _ => return unavailable_page(),
    };
    signed_in(p, req, service, org, pending, request, secret, &session).await
}

/// Whether a refused sign-in is a step-up challenge the second factor answers (`otp` or
/// `mfa` among its methods) for a session that has not used one.
fn served_step_up(page: &HttpResponse, session: &Session) -> bool {
    let Some(challenge) = page
        .headers()
        .get("gatehouse-challenge")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    else {
        return false;
    };
    let methods: Vec<&str> = challenge["challenge"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    !crate::identity::is_multi_factor(&session.amr)
        && methods
            .iter()
            .any(|m| matches!(*m, "otp" | "totp" | "mfa" | "hwk" | "webauthn"))
}

/// Serves a step-up challenge with the second factor when the session's user has one: the
/// sign-in continues as a new request of this browser whose first factor is the session's,
/// and the code form is shown. `None` when the user has no second factor (the challenge page
/// stays, and says what is needed).
async fn step_up(
    p: &Provider<'_>,
    service: &Service,
    org: Option<&Organization>,
    pending: &Pending,
    session: &Session,
) -> Option<HttpResponse> {
    if !p.identity.has_second_factor(&session.user_id).await.ok()? {
        return None;
    }
    let user = p.identity.store.user(&session.user_id).await.ok()??;
    let binding = crate::oidc::sessions::secret("").ok()?;
    let again = Pending {
        binding: sha256_hex(&binding),
        ..pending.clone()
    };
    let id = match p.sessions.put_pending(&again).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot keep an authorization request");
            return None;
        }
    };
    let mut res = second_factor_page(p, &id, service, org, &user, session.amr.clone(), None).await;
    let _ = res.add_cookie(&cookie(
        BINDING_COOKIE,
        binding,
        "/login",
        crate::oidc::sessions::PENDING_SECONDS as i64,
        p.secure,
    ));
    Some(res)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session(amr: &[&str]) -> Session {
        let now = Utc::now();
        Session {
            id: "s".into(),
            user_id: "u".into(),
            auth_time: now,
            amr: amr.iter().map(|m| m.to_string()).collect(),
            created_at: now,
            expires_at: now,
            ip: None,
            user_agent: None,
        }
    }

    fn challenge_page(methods: Option<&str>) -> HttpResponse {
        let mut r = HttpResponse::Forbidden().finish();
        if let Some(m) = methods {
            r.headers_mut().insert(
                header::HeaderName::from_static("gatehouse-challenge"),
                header::HeaderValue::from_str(&format!(r#"{{"challenge":{m}}}"#)).unwrap(),
            );
        }
        r
    }

    #[test]
    fn the_second_factor_serves_otp_challenges_of_sessions_without_one() {
        let pwd = session(&["pwd"]);
        assert!(served_step_up(
            &challenge_page(Some(r#"["otp","webauthn"]"#)),
            &pwd
        ));
        assert!(served_step_up(&challenge_page(Some(r#"["mfa"]"#)), &pwd));
        // Not a challenge it answers, not a challenge at all, or already answered.
        assert!(served_step_up(&challenge_page(Some(r#"["hwk"]"#)), &pwd));
        assert!(!served_step_up(&challenge_page(Some(r#"["sms"]"#)), &pwd));
        assert!(!served_step_up(&challenge_page(None), &pwd));
        assert!(!served_step_up(&challenge_page(Some("nonsense")), &pwd));
        assert!(!served_step_up(
            &challenge_page(Some(r#"["otp"]"#)),
            &session(&["pwd", "otp", "mfa"])
        ));
    }
}
