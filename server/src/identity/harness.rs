//! `gatehouse plugin run`: one step of a plugin on the real host, for plugin authors. The
//! server's side of the capabilities is played by a JSON file (`--state`): its accounts, the
//! key-value space, the credential records and the messages sent, kept from step to step, so
//! that a `begin` and then a `complete` run as they would in a sign-in. Nothing else is
//! needed: no database, no server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use gatehouse_plugin_host::{
    Account, BeginResult, Capability, Failure, Host, Limits, RelyingParty, Services, StepRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::users::{hash_password, normalize_email, verify_password};

/// The step to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    Describe,
    Begin,
    Complete,
}

/// What `gatehouse plugin run` was asked.
#[derive(Debug, Clone)]
pub struct Run {
    /// The plugin directory (`plugin.toml`, `plugin.wasm`).
    pub dir: PathBuf,
    pub step: Step,
    /// The organization's configuration (a JSON object), checked against the plugin's schema.
    pub config: String,
    pub params: Vec<(String, String)>,
    pub flow: String,
    pub callback: String,
    pub user: Option<String>,
    pub organization: String,
    pub state: PathBuf,
    /// Accounts to add to the state: `EMAIL` or `EMAIL=ID`.
    pub accounts: Vec<String>,
    /// Let the plugin reach loopback over plain HTTP (a provider running locally).
    pub allow_loopback: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    accounts: Vec<StateAccount>,
    /// Scoped keys (as the host scopes them), values in base64, expiry in Unix seconds.
    #[serde(default)]
    kv: BTreeMap<String, KvEntry>,
    /// `plugin/user/name` → value. In the clear: this file is a developer's.
    #[serde(default)]
    credentials: BTreeMap<String, String>,
    #[serde(default)]
    mail: Vec<Mail>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateAccount {
    id: String,
    email: String,
    #[serde(default = "yes")]
    email_verified: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KvEntry {
    value: String,
    expires: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mail {
    to: String,
    subject: String,
    body: String,
}

/// The capabilities' server side, over the state file's contents.
#[derive(Debug, Default)]
struct Harness {
    state: Mutex<State>,
}

impl Harness {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, String> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| "the harness state is poisoned".to_string())?;
        Ok(f(&mut s))
    }
}

fn cred_key(plugin: &str, user: &str, name: &str) -> String {
    format!("{plugin}/{user}/{name}")
}

#[async_trait::async_trait]
impl Services for Harness {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let now = Utc::now().timestamp();
        self.with(|s| {
            s.kv.get(key)
                .filter(|e| e.expires > now)
                .and_then(|e| B64.decode(&e.value).ok())
        })
    }

    async fn kv_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), String> {
        let expires = Utc::now().timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.with(|s| {
            s.kv.insert(
                key.to_string(),
                KvEntry {
                    value: B64.encode(value),
                    expires,
                },
            );
        })
    }

    async fn kv_take(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let now = Utc::now().timestamp();
        self.with(|s| {
            s.kv.remove(key)
                .filter(|e| e.expires > now)
                .and_then(|e| B64.decode(&e.value).ok())
        })
    }

    async fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.with(|s| {
            s.kv.remove(key);
        })
    }

    async fn find_account(&self, email: &str) -> Result<Option<Account>, String> {
        let Some(email) = normalize_email(email) else {
            return Ok(None);
        };
        self.with(|s| {
            s.accounts
                .iter()
                .find(|a| a.email == email)
                .map(|a| Account {
                    id: a.id.clone(),
                    email: a.email.clone(),
                    email_verified: a.email_verified,
                })
        })
    }

    async fn credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<String>, String> {
        self.with(|s| s.credentials.get(&cred_key(plugin, user, name)).cloned())
    }

    async fn set_credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        self.with(|s| {
            if !s.accounts.iter().any(|a| a.id == user) {
                return Err("unknown user".to_string());
            }
            let key = cred_key(plugin, user, name);
            match value {
                Some(v) => s.credentials.insert(key, v.to_string()),
                None => s.credentials.remove(&key),
            };
            Ok(())
        })?
    }

    async fn argon2_hash(&self, password: &str) -> Result<String, String> {
        hash_password(password).await.map_err(|e| e.to_string())
    }

    async fn argon2_verify(&self, hash: &str, password: &str) -> Result<bool, String> {
        if argon2::PasswordHash::new(hash).is_err() {
            return Err("not an Argon2 PHC string".into());
        }
        Ok(verify_password(password, hash).await)
    }

    async fn send_email(&self, user: &str, subject: &str, body: &str) -> Result<(), String> {
        self.with(|s| {
            let Some(to) = s
                .accounts
                .iter()
                .find(|a| a.id == user)
                .map(|a| a.email.clone())
            else {
                return Err("unknown user".to_string());
            };
            s.mail.push(Mail {
                to,
                subject: subject.into(),
                body: body.into(),
            });
            Ok(())
        })?
    }
}

fn read_state(path: &Path) -> anyhow::Result<State> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not a harness state file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

/// Adds the `EMAIL` or `EMAIL=ID` accounts that are not in the state yet.
fn add_accounts(state: &mut State, accounts: &[String]) -> anyhow::Result<()> {
    for a in accounts {
        let (email, id) = match a.split_once('=') {
            Some((e, id)) => (e, Some(id.to_string())),
            None => (a.as_str(), None),
        };
        let email =
            normalize_email(email).with_context(|| format!("`{email}` is not an email address"))?;
        if state.accounts.iter().any(|x| x.email == email) {
            continue;
        }
        state.accounts.push(StateAccount {
            id: id.unwrap_or_else(|| ulid::Ulid::new().to_string().to_lowercase()),
            email,
            email_verified: true,
        });
    }
    Ok(())
}

fn failure_json(f: &Failure) -> Value {
    match f {
        Failure::InvalidCredentials(user) => json!({ "invalid_credentials": { "user": user } }),
        Failure::BadRequest(m) => json!({ "bad_request": m }),
        Failure::Unavailable(m) => json!({ "unavailable": m }),
    }
}

/// Runs the step and answers what it gave (`result` or `failure`), with the messages it sent.
/// A plugin that breaks (a trap, a limit, a refused load) is an error.
pub async fn run(r: &Run) -> anyhow::Result<Value> {
    let mut state = read_state(&r.state)?;
    add_accounts(&mut state, &r.accounts)?;
    let mail_before = state.mail.len();
    let now = Utc::now().timestamp();
    state.kv.retain(|_, e| e.expires > now);
    let harness = Arc::new(Harness {
        state: Mutex::new(state),
    });
    let mut limits = Limits::default();
    limits.http.allow_loopback = r.allow_loopback;
    limits.relying_party = RelyingParty::for_issuer(&r.callback, "Gatehouse harness");
    let host = Host::new(limits, &Capability::ALL, harness.clone())?;
    let manifest = std::fs::read_to_string(r.dir.join("plugin.toml"))
        .with_context(|| format!("cannot read `{}`", r.dir.join("plugin.toml").display()))?;
    let wasm = std::fs::read(r.dir.join("plugin.wasm"))
        .with_context(|| format!("cannot read `{}`", r.dir.join("plugin.wasm").display()))?;
    let plugin = host.install_loaded(host.load(&manifest, &wasm).await?);
    let id = plugin.manifest.id.clone();
    if r.step == Step::Describe {
        return Ok(super::plugins::describe(&plugin));
    }
    let config: Value = serde_json::from_str(&r.config).context("--plugin-config is not JSON")?;
    let schema: Value = serde_json::from_str(&plugin.description.config_schema)
        .context("the plugin's configuration schema is not JSON")?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("the plugin's configuration schema cannot be used: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(&config)
        .take(5)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !problems.is_empty() {
        anyhow::bail!(
            "the configuration is not valid for `{id}`: {}",
            problems.join("; ")
        );
    }
    let request = StepRequest {
        config: config.to_string(),
        params: r.params.clone(),
        flow_id: r.flow.clone(),
        callback_url: r.callback.clone(),
        user_id: r.user.clone(),
    };
    let answer = match r.step {
        Step::Begin => match host.begin(&id, &r.organization, request).await? {
            Ok(BeginResult::Form(fields)) => {
                json!({ "result": { "form": fields.iter().map(|f| json!({
                "name": f.name, "label": f.label, "input_type": f.input_type, "autocomplete": f.autocomplete,
            })).collect::<Vec<_>>() } })
            }
            Ok(BeginResult::Redirect(url)) => json!({ "result": { "redirect": url } }),
            Ok(BeginResult::Challenge(c)) => json!({ "result": {
                "challenge": serde_json::from_str::<Value>(&c).unwrap_or(Value::String(c)),
            } }),
            Ok(BeginResult::Message(m)) => json!({ "result": { "message": m } }),
            Err(f) => json!({ "failure": failure_json(&f) }),
        },
        Step::Complete => match host.complete(&id, &r.organization, request).await? {
            Ok(a) => json!({ "result": { "assertion": {
                "provider": a.provider,
                "subject": a.subject,
                "email": a.email,
                "email_verified": a.email_verified,
                "claims": serde_json::from_str::<Value>(&a.claims).unwrap_or(Value::String(a.claims.clone())),
                "methods": a.methods,
            } } }),
            Err(f) => json!({ "failure": failure_json(&f) }),
        },
        Step::Describe => Value::Null,
    };
    let state = harness
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("the harness state is poisoned"))?;
    let sent: Vec<&Mail> = state.mail.iter().skip(mail_before).collect();
    let mut answer = answer;
    answer["mail"] = serde_json::to_value(sent)?;
    std::fs::write(&r.state, serde_json::to_string_pretty(&*state)?)
        .with_context(|| format!("cannot write `{}`", r.state.display()))?;
    Ok(answer)
}
