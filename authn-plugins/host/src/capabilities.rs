//! The host side of each capability, and the state of one step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;

use crate::bindings::gatehouse::authn as wit;

/// A Gatehouse user, as a login plugin sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
}

/// What the server provides behind the capabilities. Keys reaching the key-value methods are
/// already scoped to the plugin and the organization by the host; error strings go back to
/// the plugin, so they must not carry internal detail.
#[async_trait::async_trait]
pub trait Services: Send + Sync + 'static {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    async fn kv_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), String>;
    async fn kv_take(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    async fn kv_delete(&self, key: &str) -> Result<(), String>;
    async fn find_account(&self, email: &str) -> Result<Option<Account>, String>;
    /// The credential `name` of `user` kept for `plugin`, decrypted.
    async fn credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<String>, String>;
    /// Keeps (or, with `None`, removes) a credential, encrypted.
    async fn set_credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String>;
    async fn argon2_hash(&self, password: &str) -> Result<String, String>;
    async fn argon2_verify(&self, hash: &str, password: &str) -> Result<bool, String>;
    /// Sends a plain-text message to the address of `user` (already checked: one line of
    /// subject, a bounded body). By default, no mail is sent.
    async fn send_email(&self, _user: &str, _subject: &str, _body: &str) -> Result<(), String> {
        Err("this server sends no mail".into())
    }
}

/// Limits on what a plugin may pass to a capability.
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;
const MAX_TTL_SECS: u32 = 86_400;
const MAX_RANDOM: u32 = 4096;
const MAX_LOG: usize = 4096;
const MAX_CREDENTIAL: usize = 16 << 10;
const MAX_NAME: usize = 64;
const MAX_PASSWORD: usize = 4096;
const MAX_SUBJECT: usize = 200;
const MAX_BODY: usize = 16 << 10;
/// Messages a step may send.
const EMAILS_PER_STEP: u32 = 1;

/// The memory cap of one step; remembers that it refused, so that the failure is reported as
/// memory rather than as a trap.
pub(crate) struct Limiter {
    cap: usize,
    pub(crate) exceeded: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached",
                self.cap
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What one step carries: who runs, for whom, and its limits.
pub(crate) struct StepState {
    plugin: String,
    organization: String,
    services: Arc<dyn Services>,
    pub(crate) limiter: Limiter,
    started: Instant,
    host_time: Duration,
    pub(crate) guest_budget: Duration,
    log_lines: u32,
    /// Messages sent in this step.
    emails: u32,
    /// A panic message the plugin logged before it trapped.
    pub(crate) panic: Option<String>,
    /// What the step may reach over HTTP.
    pub(crate) http: crate::http::StepHttp,
    /// The relying party of passkey ceremonies.
    relying_party: Option<crate::webauthn::RelyingParty>,
}

impl StepState {
    #[allow(clippy::too_many_arguments, reason = "a step is all of these")]
    pub(crate) fn new(
        plugin: String,
        organization: String,
        services: Arc<dyn Services>,
        memory: usize,
        guest_budget: Duration,
        log_lines: u32,
        http: crate::http::StepHttp,
        relying_party: Option<crate::webauthn::RelyingParty>,
    ) -> StepState {
        StepState {
            plugin,
            organization,
            services,
            limiter: Limiter {
                cap: memory,
                exceeded: false,
            },
            started: Instant::now(),
            host_time: Duration::ZERO,
            guest_budget,
            log_lines,
            emails: 0,
            panic: None,
            http,
            relying_party,
        }
    }

    /// Time the step has spent outside host calls.
    pub(crate) fn guest_time_spent(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_time)
    }

    fn scoped(&self, key: &str) -> Result<String, String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("a key must be 1 to {MAX_KEY} bytes"));
        }
        // Plugin ids and organization ids never hold `:`, so no key of one plugin or
        // organization can name another's.
        Ok(format!(
            "plugin-kv:{}:{}:{}",
            self.plugin, self.organization, key
        ))
    }

    /// Runs a host call, counting its time as host time.
    async fn timed<F: std::future::Future>(
        &mut self,
        f: impl FnOnce(Arc<dyn Services>) -> F,
    ) -> F::Output {
        let t = Instant::now();
        let out = f(self.services.clone()).await;
        self.host_time += t.elapsed();
        out
    }
}

impl wit::types::Host for StepState {}

impl wit::log::Host for StepState {
    async fn log(&mut self, level: wit::log::Level, message: String) -> wasmtime::Result<()> {
        if message.starts_with("plugin panicked: ") {
            self.panic = Some(truncate(&message, MAX_LOG).to_string());
        }
        if self.log_lines == 0 {
            return Ok(());
        }
        self.log_lines -= 1;
        let message = truncate(&message, MAX_LOG);
        let (plugin, org) = (&self.plugin, &self.organization);
        match level {
            wit::log::Level::Debug => tracing::debug!(plugin, organization = org, "{message}"),
            wit::log::Level::Info => tracing::info!(plugin, organization = org, "{message}"),
            wit::log::Level::Warn => tracing::warn!(plugin, organization = org, "{message}"),
            wit::log::Level::Error => tracing::error!(plugin, organization = org, "{message}"),
        }
        Ok(())
    }
}

impl wit::clock::Host for StepState {
    async fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }
}

impl wit::random::Host for StepState {
    async fn bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut b = vec![0u8; len.min(MAX_RANDOM) as usize];
        getrandom::fill(&mut b).map_err(|e| wasmtime::Error::msg(format!("no randomness: {e}")))?;
        Ok(b)
    }
}

impl wit::kv::Host for StepState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        let key = match self.scoped(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.timed(|s| async move { s.kv_get(&key).await }).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        let key = match self.scoped(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if value.len() > MAX_VALUE {
            return Ok(Err(format!("a value must be at most {MAX_VALUE} bytes")));
        }
        if !(1..=MAX_TTL_SECS).contains(&ttl_seconds) {
            return Ok(Err(format!("ttl-seconds must be 1 to {MAX_TTL_SECS}")));
        }
        let ttl = Duration::from_secs(ttl_seconds.into());
        Ok(self
            .timed(|s| async move { s.kv_set(&key, &value, ttl).await })
            .await)
    }

    async fn take(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        let key = match self.scoped(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.timed(|s| async move { s.kv_take(&key).await }).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        let key = match self.scoped(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.timed(|s| async move { s.kv_delete(&key).await }).await)
    }
}

impl wit::accounts::Host for StepState {
    async fn find_by_email(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Option<wit::accounts::Account>, String>> {
        if email.len() > 254 {
            return Ok(Ok(None));
        }
        let found = self
            .timed(|s| async move { s.find_account(&email).await })
            .await;
        Ok(found.map(|a| {
            a.map(|a| wit::accounts::Account {
                id: a.id,
                email: a.email,
                email_verified: a.email_verified,
            })
        }))
    }
}

fn check_credential_name(user: &str, name: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 64 {
        return Err("unknown user".into());
    }
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a credential name must be 1 to {MAX_NAME} bytes"));
    }
    Ok(())
}

impl wit::credentials::Host for StepState {
    async fn get(
        &mut self,
        user_id: String,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, String>> {
        if let Err(e) = check_credential_name(&user_id, &name) {
            return Ok(Err(e));
        }
        let plugin = self.plugin.clone();
        Ok(self
            .timed(|s| async move { s.credential(&plugin, &user_id, &name).await })
            .await)
    }

    async fn put(
        &mut self,
        user_id: String,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(e) = check_credential_name(&user_id, &name) {
            return Ok(Err(e));
        }
        if value.len() > MAX_CREDENTIAL {
            return Ok(Err(format!(
                "a credential must be at most {MAX_CREDENTIAL} bytes"
            )));
        }
        let plugin = self.plugin.clone();
        Ok(self
            .timed(|s| async move {
                s.set_credential(&plugin, &user_id, &name, Some(&value))
                    .await
            })
            .await)
    }

    async fn delete(
        &mut self,
        user_id: String,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(e) = check_credential_name(&user_id, &name) {
            return Ok(Err(e));
        }
        let plugin = self.plugin.clone();
        Ok(self
            .timed(|s| async move { s.set_credential(&plugin, &user_id, &name, None).await })
            .await)
    }
}

impl wit::argon2::Host for StepState {
    async fn hash(&mut self, password: String) -> wasmtime::Result<Result<String, String>> {
        if password.len() > MAX_PASSWORD {
            return Ok(Err(format!(
                "a password must be at most {MAX_PASSWORD} bytes"
            )));
        }
        Ok(self
            .timed(|s| async move { s.argon2_hash(&password).await })
            .await)
    }

    async fn verify(
        &mut self,
        hash: String,
        password: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        if password.len() > MAX_PASSWORD || hash.len() > 512 {
            return Ok(Ok(false));
        }
        Ok(self
            .timed(|s| async move { s.argon2_verify(&hash, &password).await })
            .await)
    }
}

impl wit::http::Host for StepState {
    async fn fetch(
        &mut self,
        request: wit::http::Request,
    ) -> wasmtime::Result<Result<wit::http::Response, String>> {
        let t = Instant::now();
        let out = self
            .http
            .fetch(crate::http::Request {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
            })
            .await;
        self.host_time += t.elapsed();
        if let Err(e) = &out {
            tracing::warn!(plugin = %self.plugin, organization = %self.organization, error = %e, "a plugin's HTTP request was refused or failed");
        }
        Ok(out.map(|r| wit::http::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }))
    }
}

impl wit::jwt::Host for StepState {
    async fn verify(
        &mut self,
        token: String,
        jwks: String,
        issuer: String,
        audience: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let t = Instant::now();
        let out = crate::jwt::verify(&token, &jwks, &issuer, &audience);
        self.host_time += t.elapsed();
        Ok(out)
    }
}

/// Why a message may not be sent as given, if it may not.
fn check_email(subject: &str, body: &str) -> Result<(), String> {
    if subject.trim().is_empty() || subject.chars().count() > MAX_SUBJECT {
        return Err(format!("a subject must be 1 to {MAX_SUBJECT} characters"));
    }
    if subject.chars().any(char::is_control) {
        return Err("a subject must be one line without control characters".into());
    }
    if body.len() > MAX_BODY {
        return Err(format!("a body must be at most {MAX_BODY} bytes"));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err("a body must be plain text".into());
    }
    Ok(())
}

impl wit::email::Host for StepState {
    async fn send(
        &mut self,
        user_id: String,
        subject: String,
        body: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.emails >= EMAILS_PER_STEP {
            return Ok(Err(format!(
                "a step may send at most {EMAILS_PER_STEP} message"
            )));
        }
        if user_id.is_empty() || user_id.len() > 64 {
            return Ok(Err("unknown user".into()));
        }
        if let Err(e) = check_email(&subject, &body) {
            return Ok(Err(e));
        }
        self.emails += 1;
        let out = self
            .timed(|s| async move { s.send_email(&user_id, &subject, &body).await })
            .await;
        if out.is_ok() {
            tracing::info!(plugin = %self.plugin, organization = %self.organization, "a plugin sent a message to a user");
        }
        Ok(out)
    }
}

impl StepState {
    /// Runs a ceremony of the `webauthn` capability, counting its time as host time.
    fn ceremony<T>(
        &mut self,
        f: impl FnOnce(&crate::webauthn::RelyingParty) -> Result<T, String>,
    ) -> Result<T, String> {
        let t = Instant::now();
        let out = match &self.relying_party {
            Some(rp) => f(rp),
            None => Err("this platform has no WebAuthn relying party".into()),
        };
        self.host_time += t.elapsed();
        out
    }
}

impl wit::webauthn::Host for StepState {
    async fn start_registration(
        &mut self,
        user_id: String,
        user_name: String,
        display_name: String,
        passkeys: Vec<String>,
    ) -> wasmtime::Result<Result<wit::webauthn::Started, String>> {
        Ok(self.ceremony(|rp| {
            crate::webauthn::start_registration(rp, &user_id, &user_name, &display_name, &passkeys)
                .map(|s| wit::webauthn::Started {
                    options: s.options,
                    state: s.state,
                })
        }))
    }

    async fn finish_registration(
        &mut self,
        state: String,
        response: String,
    ) -> wasmtime::Result<Result<wit::webauthn::Registered, String>> {
        Ok(self.ceremony(|rp| {
            crate::webauthn::finish_registration(rp, &state, &response).map(
                |(passkey, credential_id)| wit::webauthn::Registered {
                    passkey,
                    credential_id,
                },
            )
        }))
    }

    async fn start_authentication(
        &mut self,
        passkeys: Vec<String>,
    ) -> wasmtime::Result<Result<wit::webauthn::Started, String>> {
        Ok(self.ceremony(|rp| {
            crate::webauthn::start_authentication(rp, &passkeys).map(|s| wit::webauthn::Started {
                options: s.options,
                state: s.state,
            })
        }))
    }

    async fn identify(&mut self, response: String) -> wasmtime::Result<Result<String, String>> {
        Ok(self.ceremony(|rp| crate::webauthn::identify(rp, &response)))
    }

    async fn finish_authentication(
        &mut self,
        state: String,
        response: String,
        passkeys: Vec<String>,
    ) -> wasmtime::Result<Result<wit::webauthn::Authenticated, String>> {
        Ok(self.ceremony(|rp| {
            crate::webauthn::finish_authentication(rp, &state, &response, &passkeys).map(|a| {
                wit::webauthn::Authenticated {
                    user_id: a.user_id,
                    credential_id: a.credential_id,
                    user_verified: a.user_verified,
                    passkeys: a.passkeys,
                }
            })
        }))
    }
}

fn saml_sp(sp: wit::saml::ServiceProvider) -> crate::saml::ServiceProviderConfig {
    crate::saml::ServiceProviderConfig {
        entity_id: sp.entity_id,
        acs_url: sp.acs_url,
        signing_key: sp.signing_key,
    }
}

fn saml_idp(idp: wit::saml::IdentityProvider) -> crate::saml::IdentityProvider {
    crate::saml::IdentityProvider {
        entity_id: idp.entity_id,
        sso_url: idp.sso_url,
        certificates: idp.certificates,
    }
}

impl StepState {
    /// Runs a call of the `saml` capability (synchronous XML and signature work), counting its
    /// time as host time.
    fn saml<T>(&mut self, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let t = Instant::now();
        let out = f();
        self.host_time += t.elapsed();
        if let Err(e) = &out {
            tracing::info!(plugin = %self.plugin, organization = %self.organization, error = %e, "a SAML call was refused");
        }
        out
    }
}

impl wit::saml::Host for StepState {
    async fn parse_metadata(
        &mut self,
        xml: String,
    ) -> wasmtime::Result<Result<wit::saml::IdentityProvider, String>> {
        Ok(self.saml(|| {
            crate::saml::parse_metadata(&xml).map(|idp| wit::saml::IdentityProvider {
                entity_id: idp.entity_id,
                sso_url: idp.sso_url,
                certificates: idp.certificates,
            })
        }))
    }

    async fn authn_request(
        &mut self,
        sp: wit::saml::ServiceProvider,
        idp: wit::saml::IdentityProvider,
        request_id: String,
        relay_state: String,
    ) -> wasmtime::Result<Result<String, String>> {
        Ok(self.saml(|| {
            crate::saml::authn_request(&saml_sp(sp), &saml_idp(idp), &request_id, &relay_state)
        }))
    }

    async fn verify_response(
        &mut self,
        sp: wit::saml::ServiceProvider,
        idp: wit::saml::IdentityProvider,
        saml_response: String,
        request_id: String,
    ) -> wasmtime::Result<Result<wit::saml::SamlIdentity, String>> {
        Ok(self.saml(|| {
            crate::saml::verify_response(&saml_sp(sp), &saml_idp(idp), &saml_response, &request_id)
                .map(|i| wit::saml::SamlIdentity {
                    issuer: i.issuer,
                    name_id: i.name_id,
                    name_id_format: i.name_id_format,
                    assertion_id: i.assertion_id,
                    session_index: i.session_index,
                    authn_context: i.authn_context,
                    attributes: i
                        .attributes
                        .into_iter()
                        .map(|a| wit::saml::Attribute {
                            name: a.name,
                            friendly_name: a.friendly_name,
                            values: a.values,
                        })
                        .collect(),
                })
        }))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Answers the harmless WASI functions Rust's standard library calls on its own (an empty
/// environment and argument list, no working directory, a hash-map seed), so that ordinary
/// std code runs. Every other WASI function of the allowed interfaces traps when called.
pub(crate) fn link_wasi_baggage(
    linker: &mut Linker<StepState>,
    imports: &[String],
) -> wasmtime::Result<()> {
    for name in imports {
        if name.starts_with("wasi:cli/environment@") {
            let mut i = linker.instance(name)?;
            i.func_wrap("get-environment", |_, (): ()| {
                Ok((Vec::<(String, String)>::new(),))
            })?;
            i.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            i.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        } else if name.starts_with("wasi:random/insecure-seed@") {
            let mut i = linker.instance(name)?;
            i.func_wrap("insecure-seed", |_, (): ()| {
                let mut b = [0u8; 16];
                getrandom::fill(&mut b)
                    .map_err(|e| wasmtime::Error::msg(format!("no randomness: {e}")))?;
                let seed = u128::from_le_bytes(b);
                Ok(((seed as u64, (seed >> 64) as u64),))
            })?;
        }
    }
    Ok(())
}
