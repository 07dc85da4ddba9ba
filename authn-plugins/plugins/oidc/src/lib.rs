//! Any OpenID provider (Google, Microsoft, Okta, Keycloak, …) found by discovery: the
//! authorization code flow with PKCE (S256), `state` and `nonce`, the code redeemed with the
//! organization's client id and secret, and the ID token verified by the host against the
//! provider's JWKS (signature, `iss`, `aud`, `exp`), then its `nonce` here.
//!
//! What a flow needs between `begin` and `complete` (state, nonce, PKCE verifier) is kept in
//! this plugin's key-value space under the flow's id for 10 minutes and taken once.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse_pdk::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["issuer", "client_id", "client_secret"],
  "properties": {
    "issuer": { "type": "string", "pattern": "^https?://[^/?#@]+(/[^?#]*)?$", "maxLength": 512,
                "description": "The provider's issuer URL, as its discovery document names it" },
    "client_id": { "type": "string", "minLength": 1, "maxLength": 512 },
    "client_secret": { "type": "string", "minLength": 1, "maxLength": 1024, "writeOnly": true },
    "scopes": { "type": "string", "maxLength": 512, "description": "Scopes besides openid (default: email profile)" },
    "display_name": { "type": "string", "minLength": 1, "maxLength": 80, "description": "The login button's label" },
    "extra_hosts": { "type": "array", "maxItems": 8, "items": { "type": "string", "maxLength": 253 },
                     "description": "Further hosts of the provider's endpoints, when not the issuer's" }
  }
}"#;

/// How long a flow may take from `begin` to `complete`.
const FLOW_SECONDS: u32 = 600;
/// How long a discovery document and a key set are kept.
const CACHE_SECONDS: u32 = 3600;

#[derive(Deserialize)]
struct Config {
    issuer: String,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scopes: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
}

fn config(request: &Request) -> Result<Config, Failure> {
    serde_json::from_str(request.config()).map_err(|e| {
        Failure::Unavailable(format!(
            "the OpenID Connect configuration is not usable: {e}"
        ))
    })
}

fn random_b64(n: u32) -> String {
    URL_SAFE_NO_PAD.encode(random::bytes(n))
}

fn get_json<T: for<'de> Deserialize<'de>>(url: &str, what: &str) -> Result<T, Failure> {
    let r = http::get(url, &[("accept", "application/json")])
        .map_err(|e| Failure::Unavailable(format!("cannot fetch the {what}: {e}")))?;
    if r.status != 200 {
        return Err(Failure::Unavailable(format!(
            "the {what} at {url} answered {}",
            r.status
        )));
    }
    serde_json::from_slice(&r.body)
        .map_err(|e| Failure::Unavailable(format!("the {what} is not valid: {e}")))
}

/// The provider's discovery document, from the cache or fetched; its issuer must be the one
/// configured (OpenID Connect Discovery 1.0, section 4.3).
fn discovery(issuer: &str) -> Result<Discovery, Failure> {
    let key = format!("discovery:{issuer}");
    if let Ok(Some(bytes)) = kv::get(&key)
        && let Ok(d) = serde_json::from_slice::<Discovery>(&bytes)
    {
        return Ok(d);
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let d: Discovery = get_json(&url, "discovery document")?;
    if d.issuer != issuer {
        return Err(Failure::Unavailable(format!(
            "the discovery document names the issuer `{}`, not `{issuer}`",
            d.issuer
        )));
    }
    if let Ok(bytes) = serde_json::to_vec(&d) {
        let _ = kv::set(&key, &bytes, CACHE_SECONDS);
    }
    Ok(d)
}

/// The provider's key set; `fresh` skips the cache (after a key rotation).
fn jwks(uri: &str, fresh: bool) -> Result<String, Failure> {
    let key = format!("jwks:{uri}");
    if !fresh && let Ok(Some(bytes)) = kv::get(&key) {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    let r = http::get(uri, &[("accept", "application/json")])
        .map_err(|e| Failure::Unavailable(format!("cannot fetch the key set: {e}")))?;
    if r.status != 200 {
        return Err(Failure::Unavailable(format!(
            "the key set at {uri} answered {}",
            r.status
        )));
    }
    let _ = kv::set(&key, &r.body, CACHE_SECONDS);
    Ok(r.text())
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// RFC 6749, 2.3.1: the client id and secret are form-encoded before they are joined.
fn basic_auth(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

struct Oidc;

impl Plugin for Oidc {
    fn describe() -> Description {
        Description {
            id: "oidc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: Kind::Provider,
            display_name: "OpenID Connect".into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let cfg = config(&request)?;
        if request.flow_id().is_empty() || request.callback_url().is_empty() {
            return Err(Failure::BadRequest("no login flow to begin".into()));
        }
        let d = discovery(&cfg.issuer)?;
        let flow = Flow {
            state: random_b64(32),
            nonce: random_b64(32),
            verifier: random_b64(32),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(flow.verifier.as_bytes()));
        let bytes = serde_json::to_vec(&flow).map_err(|e| Failure::Unavailable(e.to_string()))?;
        kv::set(&format!("flow:{}", request.flow_id()), &bytes, FLOW_SECONDS)
            .map_err(Failure::Unavailable)?;
        let scope = format!(
            "openid {}",
            cfg.scopes.as_deref().unwrap_or("email profile").trim()
        );
        let query = encode(&[
            ("response_type", "code"),
            ("client_id", &cfg.client_id),
            ("redirect_uri", request.callback_url()),
            ("scope", scope.trim()),
            ("state", &flow.state),
            ("nonce", &flow.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(BeginResult::Redirect(format!(
            "{}{sep}{query}",
            d.authorization_endpoint
        )))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let cfg = config(&request)?;
        if let Some(error) = request.param("error") {
            let detail = request.param("error_description").unwrap_or_default();
            return Err(Failure::BadRequest(format!(
                "the identity provider did not sign you in ({error}{}{detail})",
                if detail.is_empty() { "" } else { ": " }
            )));
        }
        let taken =
            kv::take(&format!("flow:{}", request.flow_id())).map_err(Failure::Unavailable)?;
        let Some(flow) = taken.and_then(|b| serde_json::from_slice::<Flow>(&b).ok()) else {
            return Err(Failure::BadRequest(
                "this sign-in has expired or was used already; start again".into(),
            ));
        };
        if request.param("state") != Some(flow.state.as_str()) {
            return Err(Failure::BadRequest(
                "the identity provider's answer does not belong to this sign-in".into(),
            ));
        }
        // RFC 9207: a provider that names itself must be the one this flow went to.
        if let Some(iss) = request.param("iss")
            && iss != cfg.issuer
        {
            return Err(Failure::BadRequest(
                "the answer came from another identity provider".into(),
            ));
        }
        let Some(code) = request.param("code").filter(|c| !c.is_empty()) else {
            return Err(Failure::BadRequest(
                "the identity provider sent no authorization code".into(),
            ));
        };
        let d = discovery(&cfg.issuer)?;
        let body = encode(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", request.callback_url()),
            ("code_verifier", &flow.verifier),
        ]);
        let auth = basic_auth(&cfg.client_id, &cfg.client_secret);
        let r = http::post_form(
            &d.token_endpoint,
            &body,
            &[("authorization", &auth), ("accept", "application/json")],
        )
        .map_err(|e| Failure::Unavailable(format!("cannot reach the token endpoint: {e}")))?;
        if r.status != 200 {
            let error = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_default();
            log::warn(&format!("the token endpoint answered {} {error}", r.status));
            return Err(if r.status >= 500 {
                Failure::Unavailable(format!("the token endpoint answered {}", r.status))
            } else {
                Failure::BadRequest(
                    "the identity provider did not accept this sign-in; start again".into(),
                )
            });
        }
        let tokens: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| Failure::Unavailable(format!("the token response is not JSON: {e}")))?;
        let Some(id_token) = tokens.get("id_token").and_then(|t| t.as_str()) else {
            return Err(Failure::Unavailable(
                "the token response has no id_token".into(),
            ));
        };
        let keys = jwks(&d.jwks_uri, false)?;
        let claims = match jwt::verify(id_token, &keys, &cfg.issuer, &cfg.client_id) {
            Ok(c) => c,
            // A key the cached set does not have: the provider may have rotated.
            Err(e) if e.starts_with("no key") => {
                let keys = jwks(&d.jwks_uri, true)?;
                jwt::verify(id_token, &keys, &cfg.issuer, &cfg.client_id)
                    .map_err(|e| Failure::BadRequest(format!("the ID token is not valid: {e}")))?
            }
            Err(e) => {
                return Err(Failure::BadRequest(format!(
                    "the ID token is not valid: {e}"
                )));
            }
        };
        let claims: serde_json::Value =
            serde_json::from_str(&claims).map_err(|e| Failure::Unavailable(e.to_string()))?;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(flow.nonce.as_str()) {
            return Err(Failure::BadRequest(
                "the ID token was not issued for this sign-in (nonce)".into(),
            ));
        }
        let Some(subject) = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
        else {
            return Err(Failure::BadRequest("the ID token names no subject".into()));
        };
        let email = claims
            .get("email")
            .and_then(|e| e.as_str())
            .map(str::to_string);
        // Some providers send the flag as a string.
        let verified = match claims.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        let mut kept = serde_json::Map::new();
        for k in [
            "name",
            "given_name",
            "family_name",
            "preferred_username",
            "picture",
            "locale",
        ] {
            if let Some(v) = claims.get(k) {
                kept.insert(k.into(), v.clone());
            }
        }
        Ok(Assertion {
            provider: cfg.issuer.clone(),
            subject: subject.to_string(),
            email,
            email_verified: verified,
            claims: serde_json::Value::Object(kept).to_string(),
            methods: vec!["fed".into()],
        })
    }
}

gatehouse_pdk::plugin!(Oidc);
