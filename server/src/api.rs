//! The HTTP API: OpenFGA-compatible store endpoints, health and metrics. Handlers are thin:
//! parse, call the engine, map the answer; all errors go through [`ApiError`].

mod account;
mod consent;
mod decisions;
mod device;
pub mod error;
mod link;
mod login;
mod manage;
mod mfa;
mod oauth;
mod openfga;
mod pages;
mod policies;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use gatehouse_engine::service::Engine;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use sha2::{Digest, Sha256};

pub use error::{ApiError, ApiResult, ErrorBody};

/// Shared state of every worker.
pub struct AppState {
    pub engine: Arc<Engine>,
    /// SHA-256 digests of the accepted API keys; the keys themselves are not kept.
    pub api_key_hashes: Vec<[u8; 32]>,
    pub metrics: Metrics,
    pub backend: &'static str,
    /// The token signing keys (absent where no OpenID provider runs, e.g. in-process tests).
    pub keys: Option<Arc<crate::oidc::keys::KeyRing>>,
    /// Organizations and services (absent with the keys).
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// The issuer URL of tokens (`GATEHOUSE_ISSUER`).
    pub issuer: String,
    /// Login sessions, pending authorization requests and codes (absent with the keys).
    pub sessions: Option<crate::oidc::sessions::Sessions>,
    /// The owning organization of stores looked up lately.
    pub store_owners: moka::sync::Cache<String, String>,
    /// Requests per minute one address may make to the token endpoints (0: no limit).
    pub token_rate_per_ip: u64,
    /// How recent (seconds) the sign-in behind a token must be to add or remove a factor.
    pub reauth_secs: u64,
    /// The request budget of each tenant API key on this node (`GATEHOUSE_API_KEY_RATE`).
    pub key_rate: crate::cache::limits::KeyRate,
    /// Proxies whose `X-Forwarded-For` names the client (`GATEHOUSE_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Password attempts per minute one address may make on the login pages (0: no limit).
    pub login_rate_per_ip: u64,
    /// Whether `/signup` is open.
    pub signup: bool,
    /// The time one AuthZEN search may spend deciding its candidates
    /// (`GATEHOUSE_SEARCH_BUDGET_MS`); past it the search is refused, never partial.
    pub search_budget: std::time::Duration,
    /// Outgoing mail (absent with the keys).
    pub mailer: Option<Arc<crate::mail::Mailer>>,
    /// The login plugins (absent with the keys).
    pub plugins: Option<Arc<gatehouse_plugin_host::Host>>,
    /// The plugins each service offers and their configuration (absent with the keys).
    pub service_plugins: Option<Arc<crate::identity::providers::ServicePlugins>>,
}

/// Prometheus metrics of the HTTP layer.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Plugin steps that failed in the sandbox.
    pub plugin_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            &["route"],
        )?;
        let plugin_failures = IntCounterVec::new(
            Opts::new(
                "gatehouse_plugin_failures_total",
                "Login plugin steps that failed in the sandbox (trap, time, memory, answer size), by plugin and kind",
            ),
            &["plugin", "kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(plugin_failures.clone()))?;
        Ok(Self {
            registry,
            requests,
            duration,
            plugin_failures,
        })
    }
}

/// Hashes an API key for comparison; keys are only ever held as digests.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The request id of the current request.
#[derive(Clone)]
pub struct RequestId(pub String);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (echoing a sane incoming `X-Request-Id`), times it, counts it,
/// and logs one line per request without bodies or credentials.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let route = route_label(req.path());
    // Inner middleware answers with responses, not errors (see `authenticate`), so every
    // request reaches the stamping below. The request cannot be cloned here: routing needs it
    // uniquely owned.
    let mut res = next.call(req).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    let error_body = res.response().extensions().get::<ErrorBody>().cloned();
    let res = match error_body {
        Some(ErrorBody(mut body)) => {
            if let Some(m) = body.as_object_mut() {
                m.insert("request_id".into(), serde_json::Value::String(id.clone()));
            }
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            res.map_body(|_, _| EitherBody::right(bytes))
        }
        None => res.map_into_left_body(),
    };
    let status = res.status();
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state
            .metrics
            .requests
            .with_label_values(&[method.as_str(), route, status.as_str()])
            .inc();
        state
            .metrics
            .duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
    tracing::debug!(request.id = %id, http.method = %method, http.route = route, http.status = status.as_u16(), duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
    Ok(res)
}

/// The route a path belongs to, as a metric label from a fixed set (so that arbitrary paths
/// cannot grow the label space). Cheaper than asking the router again.
fn route_label(path: &str) -> &'static str {
    // A fixed buffer: this runs on every request, so no allocation.
    let mut parts = [""; 6];
    let mut n = 0;
    for p in path.trim_end_matches('/').split('/').skip(1) {
        let Some(slot) = parts.get_mut(n) else {
            return "other";
        };
        *slot = p;
        n += 1;
    }
    match parts.get(..n).unwrap_or_default() {
        ["healthz"] => "/healthz",
        ["metrics"] => "/metrics",
        [".well-known", "jwks.json"] => "/.well-known/jwks.json",
        [".well-known", "openid-configuration"] => "/.well-known/openid-configuration",
        [".well-known", "authzen-configuration", _] => {
            "/.well-known/authzen-configuration/{store_id}"
        }
        [".well-known", "authzen-configuration", "stores", _] => {
            "/.well-known/authzen-configuration/stores/{store_id}"
        }
        ["oauth2", "token"] => "/oauth2/token",
        ["oauth2", "introspect"] => "/oauth2/introspect",
        ["oauth2", "revoke"] => "/oauth2/revoke",
        ["oauth2", "authorize"] => "/oauth2/authorize",
        ["oauth2", "logout"] => "/oauth2/logout",
        ["oauth2", "userinfo"] => "/oauth2/userinfo",
        ["login"] => "/login",
        ["login", "with", _] => "/login/with/{plugin}",
        ["login", "consent"] => "/login/consent",
        ["login", "link"] => "/login/link",
        ["login", "prove"] => "/login/prove",
        ["login", "callback", _] => "/login/callback/{plugin}",
        ["login", "metadata", "saml", _] => "/login/metadata/saml/{client_id}",
        ["device"] => "/device",
        ["oauth2", "device_authorization"] => "/oauth2/device_authorization",
        ["api", "me", "sessions"] => "/api/me/sessions",
        ["api", "me", "consents"] => "/api/me/consents",
        ["api", "me", "consents", _] => "/api/me/consents/{client_id}",
        ["api", "me", "sessions", _] => "/api/me/sessions/{id}",
        ["api", "organizations"] => "/api/organizations",
        ["api", "organizations", _] => "/api/organizations/{slug}",
        ["api", "organizations", _, sub] => match *sub {
            "audit" => "/api/organizations/{slug}/audit",
            "members" => "/api/organizations/{slug}/members",
            "services" => "/api/organizations/{slug}/services",
            "invitations" => "/api/organizations/{slug}/invitations",
            "approve" => "/api/organizations/{slug}/approve",
            "reject" => "/api/organizations/{slug}/reject",
            "suspend" => "/api/organizations/{slug}/suspend",
            "unsuspend" => "/api/organizations/{slug}/unsuspend",
            _ => "other",
        },
        ["api", "organizations", _, "invitations", _] => {
            "/api/organizations/{slug}/invitations/{id}"
        }
        ["api", "me", "verify-email"] => "/api/me/verify-email",
        ["verify-email"] => "/verify-email",
        ["password", "forgot"] => "/password/forgot",
        ["signup"] => "/signup",
        ["password", "reset"] => "/password/reset",
        ["invitations", "accept"] => "/invitations/accept",
        ["api", "organizations", _, "members", _] => "/api/organizations/{slug}/members/{user_id}",
        ["api", "services", _] => "/api/services/{client_id}",
        ["api", "services", _, "secret"] => "/api/services/{client_id}/secret",
        ["api", "tiers"] => "/api/tiers",
        ["api", "plugins"] => "/api/plugins",
        ["api", "tiers", _] => "/api/tiers/{name}",
        ["api", "services", _, "api-keys"] => "/api/services/{client_id}/api-keys",
        ["api", "services", _, "api-keys", _] => "/api/services/{client_id}/api-keys/{id}",
        ["stores"] => "/stores",
        ["stores", _] => "/stores/{store_id}",
        ["stores", _, op] => match *op {
            "check" => "/stores/{store_id}/check",
            "batch-check" => "/stores/{store_id}/batch-check",
            "write" => "/stores/{store_id}/write",
            "read" => "/stores/{store_id}/read",
            "changes" => "/stores/{store_id}/changes",
            "expand" => "/stores/{store_id}/expand",
            "list-objects" => "/stores/{store_id}/list-objects",
            "streamed-list-objects" => "/stores/{store_id}/streamed-list-objects",
            "list-users" => "/stores/{store_id}/list-users",
            "authorization-models" => "/stores/{store_id}/authorization-models",
            "policies" => "/stores/{store_id}/policies",
            "policy-versions" => "/stores/{store_id}/policy-versions",
            "policy-schema" => "/stores/{store_id}/policy-schema",
            "decide" => "/stores/{store_id}/decide",
            "decisions" => "/stores/{store_id}/decisions",
            "entity-attributes" => "/stores/{store_id}/entity-attributes",
            _ => "other",
        },
        ["stores", _, "policies", "dry-run"] => "/stores/{store_id}/policies/dry-run",
        ["stores", _, "decision-log", "settings"] => "/stores/{store_id}/decision-log/settings",
        ["stores", _, "risk", sub] => match *sub {
            "rules" => "/stores/{store_id}/risk/rules",
            "history" => "/stores/{store_id}/risk/history",
            "failures" => "/stores/{store_id}/risk/failures",
            _ => "other",
        },
        ["stores", _, "authorization-models", _] => {
            "/stores/{store_id}/authorization-models/{model_id}"
        }
        ["stores", _, "assertions", _] => "/stores/{store_id}/assertions/{model_id}",
        ["stores", _, "policy-versions", _] => "/stores/{store_id}/policy-versions/{version_id}",
        ["stores", _, "policy-versions", _, "activate"] => {
            "/stores/{store_id}/policy-versions/{version_id}/activate"
        }
        ["stores", _, "access", "v1", "evaluation"] => "/stores/{store_id}/access/v1/evaluation",
        ["stores", _, "access", "v1", "evaluations"] => "/stores/{store_id}/access/v1/evaluations",
        ["stores", _, "access", "v1", "search", "subject"] => {
            "/stores/{store_id}/access/v1/search/subject"
        }
        ["stores", _, "access", "v1", "search", "resource"] => {
            "/stores/{store_id}/access/v1/search/resource"
        }
        ["stores", _, "access", "v1", "search", "action"] => {
            "/stores/{store_id}/access/v1/search/action"
        }
        _ => "other",
    }
}

/// Who calls the store API: an operator (a configured API key: every store) or an
/// organization (a service API key: its organization's stores only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCaller {
    Operator,
    Organization(String),
}

/// The credential of `Authorization: Bearer <credential>`, if any.
pub(crate) fn bearer(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Serves the request with its client's address in [`crate::identity::REQUEST_IP`], for the
/// audit events written on its behalf.
async fn with_request_ip(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ip = login::client_ip(req.request());
    crate::identity::REQUEST_IP.scope(ip, next.call(req)).await
}

/// Requires `Authorization: Bearer <key>` with a configured API key or a live service API key
/// (`ak_live_…`), and notes which it was ([`StoreCaller`]).
async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let key = bearer(req.headers()).map(str::to_string);
    let mut caller = None;
    if let (Some(state), Some(key)) = (req.app_data::<web::Data<AppState>>(), key.as_deref()) {
        let h = hash_key(key);
        if state.api_key_hashes.iter().any(|k| constant_eq(k, &h)) {
            caller = Some(StoreCaller::Operator);
        } else if key.starts_with("ak_live_")
            && let Some(identity) = state.identity.as_deref()
        {
            let owner = match identity.api_keys.get(&h) {
                Some(owner) => owner,
                None => match identity.authenticate_api_key(key).await {
                    Ok(found) => {
                        let owner =
                            found.map(|(_, service)| (service.organization_id, service.client_id));
                        identity.api_keys.insert(h, owner.clone());
                        owner
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot look up an API key");
                        None
                    }
                },
            };
            if owner.is_some() && !state.key_rate.allow(&h) {
                return Ok(req
                    .into_response(rate_limited().error_response())
                    .map_into_right_body());
            }
            if let Some((org, client_id)) = owner {
                // A suspended organization's keys reach nothing until the suspension is lifted.
                let refusal = match identity.organization_suspended(&org, &client_id).await {
                    Ok(false) => None,
                    Ok(true) => Some(ApiError::new(
                        actix_web::http::StatusCode::FORBIDDEN,
                        "organization_suspended",
                        "the API key's organization is suspended",
                    )),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read an organization's suspension");
                        Some(ApiError::new(
                            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "the API key cannot be checked now; try again",
                        ))
                    }
                };
                if let Some(e) = refusal {
                    return Ok(req.into_response(e.error_response()).map_into_right_body());
                }
                caller = Some(StoreCaller::Organization(org));
            }
        }
    }
    let Some(caller) = caller else {
        // Answered here as a response, not an error, so the outer middleware still stamps it.
        return Ok(req
            .into_response(ApiError::unauthenticated().error_response())
            .map_into_right_body());
    };
    req.extensions_mut().insert(caller);
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// The answer to a tenant API key over its request rate.
pub(crate) fn rate_limited() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "this API key is over its request rate; slow down",
    )
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "SERVING", "backend": state.backend }))
}

/// The public keys tokens are signed with (RFC 7517), including the next key before it signs
/// and past keys while what they signed is valid. Public; cacheable for an hour (keys are
/// published a day before they sign).
async fn jwks(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let ring = state.keys.as_ref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            "this server does not issue tokens",
        )
    })?;
    let jwks = ring.jwks().map_err(|e| {
        tracing::error!(error = %e, "cannot read the key ring");
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the signing keys are not available",
        )
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=3600",
        ))
        .content_type("application/jwk-set+json")
        .body(jwks.to_string()))
}

async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let mut families = state.metrics.registry.gather();
    families.extend(prometheus::gather());
    prometheus::TextEncoder::new()
        .encode(&families, &mut buf)
        .map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?;
    let cache = format!(
        "# HELP gatehouse_check_cache_entries Entries in the cross-request check cache\n# TYPE gatehouse_check_cache_entries gauge\ngatehouse_check_cache_entries {}\n\
         # HELP gatehouse_decision_log_dropped_total Decisions not logged because the log's buffer was full\n# TYPE gatehouse_decision_log_dropped_total counter\ngatehouse_decision_log_dropped_total {}\n",
        state.engine.cache_entries(),
        state.engine.decisions_dropped()
    );
    buf.extend_from_slice(cache.as_bytes());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(buf))
}

async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "undefined_endpoint",
        "no such endpoint",
    ))
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    let json = web::JsonConfig::default()
        .limit(max_body)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as J;
            let e = match &err {
                J::Overflow { .. } | J::OverflowKnownLength { .. } => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the server accepts",
                ),
                J::ContentType => ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be JSON (`Content-Type: application/json`)",
                ),
                J::Deserialize(d) => ApiError::validation(format!("invalid request body: {d}")),
                other => ApiError::validation(format!("invalid request body: {other}")),
            };
            e.into()
        });
    let query = web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::validation(format!("invalid query string: {err}")).into()
    });
    let path = web::PathConfig::default()
        .error_handler(|err, _req| ApiError::validation(format!("invalid path: {err}")).into());
    cfg.app_data(json)
        .app_data(query)
        .app_data(path)
        .service(
            web::resource("/healthz")
                .get(healthz)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        // Second, right after the health check: actix tries services in order, and the
        // dynamic resources below are matched with regular expressions, which cost a
        // check request about 2 µs when this scope came last.
        .service(
            web::scope("/stores")
                .wrap(actix_web::middleware::from_fn(authenticate))
                .configure(openfga::routes)
                .default_service(actix_web::dev::fn_service(openfga::dispatch)),
        )
        .service(
            web::resource("/metrics")
                .get(metrics)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .service(
            web::resource("/.well-known/authzen-configuration/{tail:.+}")
                .get(policies::authzen_configuration)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .service(
            web::resource("/.well-known/openid-configuration")
                .get(oauth::discovery)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .service(
            web::resource("/oauth2/token")
                .post(oauth::token)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/oauth2/introspect")
                .post(oauth::introspect)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/oauth2/revoke")
                .post(oauth::revoke)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/oauth2/authorize")
                .get(login::authorize)
                .post(login::authorize)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/login")
                .get(login::login_page)
                .post(login::login_submit)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/login/link")
                .post(link::confirm)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/login/prove")
                .post(link::prove)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/login/consent")
                .post(consent::decide)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/login/with/{plugin}")
                .get(login::method_start)
                .post(login::method_start)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/login/metadata/saml/{client_id}")
                .get(login::saml_metadata)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .service(
            web::resource("/login/callback/{plugin}")
                .app_data(web::PayloadConfig::new(login::MAX_CALLBACK_BYTES))
                .get(login::provider_callback)
                .post(login::provider_callback)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/oauth2/device_authorization")
                .post(device::authorization)
                .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
        )
        .service(
            web::resource("/device")
                .get(device::page_get)
                .post(device::page_post)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/oauth2/logout")
                .get(login::logout)
                .post(login::logout)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/oauth2/userinfo")
                .get(login::userinfo)
                .post(login::userinfo)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/verify-email")
                .get(account::verify_email)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .service(
            web::resource("/signup")
                .get(account::signup_get)
                .post(account::signup_post)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/password/forgot")
                .get(account::forgot_get)
                .post(account::forgot_post)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/password/reset")
                .get(account::reset_get)
                .post(account::reset_post)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            web::resource("/invitations/accept")
                .get(account::accept_get)
                .post(account::accept_post)
                .default_service(web::to(|| async {
                    openfga::method_not_allowed("GET, POST")
                })),
        )
        .service(
            // The management API: audit events written while serving it carry the client's
            // address.
            web::scope("/api")
                .wrap(actix_web::middleware::from_fn(with_request_ip))
                .service(
                    web::resource("/me/sessions")
                        .get(login::my_sessions)
                        .delete(login::end_all_my_sessions)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, DELETE")
                        })),
                )
                .service(
                    web::resource("/organizations")
                        .get(manage::list_organizations)
                        .post(manage::create_organization)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}")
                        .get(manage::get_organization)
                        .patch(manage::patch_organization)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, PATCH")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}/audit")
                        .get(manage::audit)
                        .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
                )
                .service(
                    web::resource("/organizations/{slug}/members")
                        .get(manage::list_members)
                        .post(manage::add_member)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}/members/{user_id}")
                        .delete(manage::remove_member)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}/invitations")
                        .get(manage::list_invitations)
                        .post(manage::invite)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}/invitations/{id}")
                        .delete(manage::withdraw_invitation)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/me/verify-email")
                        .post(account::resend_verification)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/organizations/{slug}/services")
                        .get(manage::list_services)
                        .post(manage::create_service)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/organizations/{slug}/{verb}")
                        .post(manage::decide_organization)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/services/{client_id}")
                        .get(manage::get_service)
                        .patch(manage::patch_service)
                        .delete(manage::delete_service)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, PATCH, DELETE")
                        })),
                )
                .service(
                    web::resource("/services/{client_id}/secret")
                        .post(manage::rotate_service_secret)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/plugins")
                        .get(manage::list_plugins)
                        .post(manage::upload_plugin)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/plugins/{id}")
                        .delete(manage::delete_plugin)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/services/{client_id}/plugins")
                        .get(manage::list_service_plugins)
                        .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
                )
                .service(
                    web::resource("/services/{client_id}/plugins/{plugin}")
                        .put(manage::put_service_plugin)
                        .delete(manage::delete_service_plugin)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("PUT, DELETE")
                        })),
                )
                .service(
                    web::resource("/tiers")
                        .get(manage::list_tiers)
                        .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
                )
                .service(
                    web::resource("/tiers/{name}")
                        .put(manage::put_tier)
                        .default_service(web::to(|| async { openfga::method_not_allowed("PUT") })),
                )
                .service(
                    web::resource("/services/{client_id}/api-keys")
                        .get(manage::list_api_keys)
                        .post(manage::create_api_key)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("GET, POST")
                        })),
                )
                .service(
                    web::resource("/services/{client_id}/api-keys/{id}")
                        .delete(manage::revoke_api_key)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/me/consents")
                        .get(consent::list)
                        .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
                )
                .service(
                    web::resource("/me/consents/{client_id}")
                        .delete(consent::revoke)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/me/mfa")
                        .get(mfa::status)
                        .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
                )
                .service(
                    web::resource("/me/mfa/totp")
                        .post(mfa::begin)
                        .delete(mfa::remove)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("POST, DELETE")
                        })),
                )
                .service(
                    web::resource("/me/mfa/passkey")
                        .post(mfa::passkey_begin)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/me/mfa/passkey/confirm")
                        .post(mfa::passkey_confirm)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/me/mfa/passkey/{id}")
                        .delete(mfa::passkey_remove)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .service(
                    web::resource("/me/mfa/totp/confirm")
                        .post(mfa::confirm)
                        .default_service(web::to(|| async { openfga::method_not_allowed("POST") })),
                )
                .service(
                    web::resource("/me/sessions/{id}")
                        .delete(login::end_my_session)
                        .default_service(web::to(|| async {
                            openfga::method_not_allowed("DELETE")
                        })),
                )
                .default_service(web::to(not_found)),
        )
        .service(
            web::resource("/.well-known/jwks.json")
                .get(jwks)
                .default_service(web::to(|| async { openfga::method_not_allowed("GET") })),
        )
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn route_labels_are_a_fixed_set() {
        assert_eq!(route_label("/healthz"), "/healthz");
        assert_eq!(route_label("/stores"), "/stores");
        assert_eq!(route_label("/stores/01ABC"), "/stores/{store_id}");
        assert_eq!(
            route_label("/stores/01ABC/check"),
            "/stores/{store_id}/check"
        );
        assert_eq!(
            route_label("/stores/01ABC/authorization-models/01X"),
            "/stores/{store_id}/authorization-models/{model_id}"
        );
        assert_eq!(
            route_label("/stores/01ABC/assertions/01X"),
            "/stores/{store_id}/assertions/{model_id}"
        );
        assert_eq!(
            route_label("/stores/01ABC/policy-versions/01V/activate"),
            "/stores/{store_id}/policy-versions/{version_id}/activate"
        );
        assert_eq!(
            route_label("/stores/01ABC/access/v1/evaluations"),
            "/stores/{store_id}/access/v1/evaluations"
        );
        assert_eq!(
            route_label("/stores/01ABC/risk/rules"),
            "/stores/{store_id}/risk/rules"
        );
        assert_eq!(
            route_label("/stores/01ABC/policies/dry-run"),
            "/stores/{store_id}/policies/dry-run"
        );
        assert_eq!(
            route_label("/stores/01ABC/access/v1/search/subject"),
            "/stores/{store_id}/access/v1/search/subject"
        );
        assert_eq!(
            route_label("/stores/01ABC/access/v1/search/subject/x"),
            "other"
        );
        assert_eq!(
            route_label("/.well-known/authzen-configuration/stores/01ABC"),
            "/.well-known/authzen-configuration/stores/{store_id}"
        );
        assert_eq!(route_label("/stores/01ABC/risk/else"), "other");
        assert_eq!(
            route_label("/stores/01ABC/access/v1/evaluations/x"),
            "other"
        );
        assert_eq!(route_label("/stores/01ABC/nope"), "other");
        assert_eq!(route_label("/random/path/here"), "other");
    }
}
