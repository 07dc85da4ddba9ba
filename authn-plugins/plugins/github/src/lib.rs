//! GitHub: the OAuth web flow (with `state`), the code redeemed with the organization's own
//! OAuth app, then the REST API's user and email addresses. Only a verified address is
//! vouched for: the primary one if it is verified, else the first verified one; none, and the
//! assertion carries no address (which the server refuses).
//!
//! `enterprise_url` points it at a GitHub Enterprise Server (web flow at its root, REST API
//! under `/api/v3`); without it, github.com and api.github.com.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_pdk::*;
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "required": ["client_id", "client_secret"],
  "properties": {
    "client_id": { "type": "string", "minLength": 1, "maxLength": 256 },
    "client_secret": { "type": "string", "minLength": 1, "maxLength": 256, "writeOnly": true },
    "enterprise_url": { "type": "string", "pattern": "^https?://[^/?#@]+/?$", "maxLength": 256,
                        "description": "A GitHub Enterprise Server's URL; github.com when absent" },
    "display_name": { "type": "string", "minLength": 1, "maxLength": 80 }
  }
}"#;

/// How long a flow may take from `begin` to `complete`.
const FLOW_SECONDS: u32 = 600;

#[derive(Deserialize)]
struct Config {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    enterprise_url: Option<String>,
}

impl Config {
    /// The web flow's base and the REST API's base.
    fn bases(&self) -> (String, String) {
        match &self.enterprise_url {
            Some(u) => {
                let u = u.trim_end_matches('/');
                (u.to_string(), format!("{u}/api/v3"))
            }
            None => ("https://github.com".into(), "https://api.github.com".into()),
        }
    }

    /// The provider an account belongs to: github.com, or the enterprise server's host.
    fn provider(&self) -> String {
        match &self.enterprise_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => "https://github.com".into(),
        }
    }
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

fn config(request: &Request) -> Result<Config, Failure> {
    serde_json::from_str(request.config())
        .map_err(|e| Failure::Unavailable(format!("the GitHub configuration is not usable: {e}")))
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A REST API call with the user's token.
fn api<T: for<'de> Deserialize<'de>>(url: &str, token: &str) -> Result<T, Failure> {
    let auth = format!("Bearer {token}");
    let r = http::get(
        url,
        &[
            ("authorization", &auth),
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
        ],
    )
    .map_err(|e| Failure::Unavailable(format!("cannot reach GitHub's API: {e}")))?;
    if r.status != 200 {
        log::warn(&format!("GitHub's API answered {} for {url}", r.status));
        return Err(if r.status >= 500 {
            Failure::Unavailable(format!("GitHub's API answered {}", r.status))
        } else {
            Failure::BadRequest("GitHub did not let this server read your account".into())
        });
    }
    serde_json::from_slice(&r.body)
        .map_err(|e| Failure::Unavailable(format!("GitHub's API answered something else: {e}")))
}

struct GitHub;

impl Plugin for GitHub {
    fn describe() -> Description {
        Description {
            id: "github".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: Kind::Provider,
            display_name: "GitHub".into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let cfg = config(&request)?;
        if request.flow_id().is_empty() || request.callback_url().is_empty() {
            return Err(Failure::BadRequest("no login flow to begin".into()));
        }
        let state = URL_SAFE_NO_PAD.encode(random::bytes(32));
        kv::set(
            &format!("flow:{}", request.flow_id()),
            state.as_bytes(),
            FLOW_SECONDS,
        )
        .map_err(Failure::Unavailable)?;
        let (web, _) = cfg.bases();
        let query = encode(&[
            ("client_id", &cfg.client_id),
            ("redirect_uri", request.callback_url()),
            ("scope", "read:user user:email"),
            ("state", &state),
            ("allow_signup", "false"),
        ]);
        Ok(BeginResult::Redirect(format!(
            "{web}/login/oauth/authorize?{query}"
        )))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let cfg = config(&request)?;
        if let Some(error) = request.param("error") {
            let detail = request.param("error_description").unwrap_or_default();
            return Err(Failure::BadRequest(format!(
                "GitHub did not sign you in ({error}{}{detail})",
                if detail.is_empty() { "" } else { ": " }
            )));
        }
        let taken =
            kv::take(&format!("flow:{}", request.flow_id())).map_err(Failure::Unavailable)?;
        let Some(state) = taken else {
            return Err(Failure::BadRequest(
                "this sign-in has expired or was used already; start again".into(),
            ));
        };
        if request.param("state").map(str::as_bytes) != Some(state.as_slice()) {
            return Err(Failure::BadRequest(
                "GitHub's answer does not belong to this sign-in".into(),
            ));
        }
        let Some(code) = request.param("code").filter(|c| !c.is_empty()) else {
            return Err(Failure::BadRequest(
                "GitHub sent no authorization code".into(),
            ));
        };
        let (web, api_base) = cfg.bases();
        let body = encode(&[
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("code", code),
            ("redirect_uri", request.callback_url()),
        ]);
        let r = http::post_form(
            &format!("{web}/login/oauth/access_token"),
            &body,
            &[("accept", "application/json")],
        )
        .map_err(|e| Failure::Unavailable(format!("cannot reach GitHub: {e}")))?;
        let tokens: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        // GitHub answers errors with 200 and an `error` field.
        let Some(token) = tokens.get("access_token").and_then(|t| t.as_str()) else {
            let error = tokens
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no access token");
            log::warn(&format!(
                "GitHub's token endpoint answered {} {error}",
                r.status
            ));
            return Err(if r.status >= 500 {
                Failure::Unavailable(format!("GitHub's token endpoint answered {}", r.status))
            } else if error == "incorrect_client_credentials" || error == "redirect_uri_mismatch" {
                Failure::Unavailable(format!("the GitHub app is misconfigured: {error}"))
            } else {
                Failure::BadRequest("GitHub did not accept this sign-in; start again".into())
            });
        };
        let user: User = api(&format!("{api_base}/user"), token)?;
        let emails: Vec<Email> = api(&format!("{api_base}/user/emails"), token)?;
        let email = emails
            .iter()
            .find(|e| e.primary && e.verified)
            .or_else(|| emails.iter().find(|e| e.verified))
            .map(|e| e.email.clone());
        let mut claims = serde_json::Map::new();
        claims.insert("preferred_username".into(), user.login.clone().into());
        if let Some(n) = user.name.filter(|n| !n.is_empty()) {
            claims.insert("name".into(), n.into());
        }
        if let Some(a) = user.avatar_url {
            claims.insert("picture".into(), a.into());
        }
        Ok(Assertion {
            provider: cfg.provider(),
            subject: user.id.to_string(),
            email_verified: email.is_some(),
            email,
            claims: serde_json::Value::Object(claims).to_string(),
            methods: vec!["fed".into()],
        })
    }
}

gatehouse_pdk::plugin!(GitHub);
