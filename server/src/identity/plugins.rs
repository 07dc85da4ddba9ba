//! What the server gives login plugins: the services behind the host's capabilities, and
//! the host itself with the first-party plugins installed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use gatehouse_plugin_host::{Account, Capability, Host, Kind, Limits, Plugin, Services, embedded};

use super::users::{hash_password, normalize_email, verify_password};
use crate::cache::ephemeral::Ephemeral;
use crate::db::SqlStore;
use crate::secrets::MasterKey;

/// What a plugin is told when the server cannot do what it asked; the cause is logged.
const UNAVAILABLE: &str = "the server cannot do this now";

/// The server side of the capabilities.
#[derive(Debug)]
pub struct ServerServices {
    pub store: Arc<SqlStore>,
    pub kv: Arc<dyn Ephemeral>,
    /// Seals credential records.
    pub master: Arc<MasterKey>,
    /// Sends plugins' messages to users; `None` refuses them.
    pub mailer: Option<Arc<crate::mail::Mailer>>,
}

/// What a credential record is sealed for: its plugin, user and name.
fn purpose(plugin: &str, user: &str, name: &str) -> String {
    format!("plugin-credential:{plugin}:{user}:{name}")
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> String {
    tracing::error!(error = %e, "a plugin's {what} failed");
    UNAVAILABLE.to_string()
}

fn decode(v: Option<String>) -> Result<Option<Vec<u8>>, String> {
    v.map(|s| B64.decode(s).map_err(|e| unavailable("key-value read", e)))
        .transpose()
}

#[async_trait::async_trait]
impl Services for ServerServices {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        decode(
            self.kv
                .get(key)
                .await
                .map_err(|e| unavailable("key-value read", e))?,
        )
    }

    async fn kv_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), String> {
        self.kv
            .put(key, &B64.encode(value), ttl)
            .await
            .map_err(|e| unavailable("key-value write", e))
    }

    async fn kv_take(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        decode(
            self.kv
                .take(key)
                .await
                .map_err(|e| unavailable("key-value read", e))?,
        )
    }

    async fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.kv
            .delete(key)
            .await
            .map_err(|e| unavailable("key-value write", e))
    }

    async fn find_account(&self, email: &str) -> Result<Option<Account>, String> {
        let Some(email) = normalize_email(email) else {
            return Ok(None);
        };
        let user = self
            .store
            .user_by_email(&email)
            .await
            .map_err(|e| unavailable("account lookup", e))?;
        Ok(user.map(|u| Account {
            id: u.id,
            email: u.email,
            email_verified: u.email_verified,
        }))
    }

    async fn credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<String>, String> {
        // The password plugin's credential is the user's password hash, which sign-up, the
        // password reset and the CLI keep in the user's record.
        if plugin == "password" && name == "password" {
            let user = self
                .store
                .user(user)
                .await
                .map_err(|e| unavailable("credential read", e))?;
            return Ok(user.and_then(|u| u.password_hash));
        }
        let sealed = self
            .store
            .plugin_credential(plugin, user, name)
            .await
            .map_err(|e| unavailable("credential read", e))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let plain = self
            .master
            .open(&purpose(plugin, user, name), &sealed)
            .map_err(|e| unavailable("credential read", e))?;
        String::from_utf8(plain.to_vec())
            .map(Some)
            .map_err(|e| unavailable("credential read", e))
    }

    async fn set_credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        if plugin == "password" && name == "password" {
            return Err("the password is changed through the account pages".into());
        }
        let exists = self
            .store
            .user(user)
            .await
            .map_err(|e| unavailable("credential write", e))?
            .is_some();
        if !exists {
            return Err("unknown user".into());
        }
        let sealed = value
            .map(|v| self.master.seal(&purpose(plugin, user, name), v.as_bytes()))
            .transpose()
            .map_err(|e| unavailable("credential write", e))?;
        self.store
            .set_plugin_credential(plugin, user, name, sealed.as_deref())
            .await
            .map_err(|e| unavailable("credential write", e))
    }

    async fn argon2_hash(&self, password: &str) -> Result<String, String> {
        hash_password(password)
            .await
            .map_err(|e| unavailable("password hashing", e))
    }

    async fn send_email(&self, user: &str, subject: &str, body: &str) -> Result<(), String> {
        let Some(mailer) = &self.mailer else {
            return Err("this server sends no mail".into());
        };
        let Some(user) = self
            .store
            .user(user)
            .await
            .map_err(|e| unavailable("user lookup", e))?
        else {
            return Err("unknown user".into());
        };
        // In the background, as every message of the server: the step answers in the same
        // time whoever it wrote to.
        mailer.send("plugin", user.email, subject.to_string(), body.to_string());
        Ok(())
    }

    async fn argon2_verify(&self, hash: &str, password: &str) -> Result<bool, String> {
        if argon2::PasswordHash::new(hash).is_err() {
            return Err("not an Argon2 PHC string".into());
        }
        Ok(verify_password(password, hash).await)
    }
}

/// The plugin host of this server, with every first-party plugin installed, and the
/// third-party plugins of `plugin_dir`. A plugin there that does not pass every check stops
/// the server with the reason: an operator who installs a plugin expects it to run.
pub async fn host(
    services: ServerServices,
    plugin_dir: Option<&Path>,
    http_loopback: bool,
    third_party_capabilities: Vec<Capability>,
    issuer: &str,
    compile_cache: Option<PathBuf>,
) -> anyhow::Result<(Host, UploadSync)> {
    let mut limits = Limits {
        compile_cache,
        third_party_capabilities,
        ..Limits::default()
    };
    limits.http.allow_loopback = http_loopback;
    // Passkeys belong to the issuer's host (a loopback issuer's are `localhost`'s).
    limits.relying_party = gatehouse_plugin_host::RelyingParty::for_issuer(issuer, "Gatehouse");
    if limits.relying_party.is_none() {
        tracing::warn!(
            issuer,
            "the issuer's host is an IP address, which cannot be a WebAuthn relying party: passkeys are off"
        );
    }
    if http_loopback {
        tracing::warn!(
            "plugins may reach loopback over plain HTTP (GATEHOUSE_PLUGIN_HTTP_LOOPBACK): for development only"
        );
    }
    let store = services.store.clone();
    let host = Host::new(limits, &Capability::ALL, Arc::new(services))?;
    // Compiled when first used: a server nobody signs in to never runs the compiler.
    for p in embedded::ALL {
        host.register(p.manifest, p.wasm)?;
    }
    let mut from_dir = Vec::new();
    if let Some(root) = plugin_dir {
        for dir in plugin_dirs(root)? {
            let p = install_dir(&host, &dir)
                .await
                .with_context(|| format!("the plugin in `{}`", dir.display()))?;
            tracing::info!(plugin = %p.manifest.id, version = %p.manifest.version, dir = %dir.display(), "installed a plugin");
            from_dir.push(p.manifest.id.clone());
        }
    }
    let mut sync = UploadSync {
        store,
        from_dir,
        known: HashSet::new(),
        refused: HashSet::new(),
    };
    sync.reconcile(&host).await?;
    Ok((host, sync))
}

/// How often a node looks for plugins uploaded or removed through another node.
pub const UPLOAD_SYNC_EVERY: Duration = Duration::from_secs(2);

/// Keeps a node's uploaded plugins the database's: a plugin uploaded (or replaced, or removed)
/// through one node is installed (or removed) on every node within [`UPLOAD_SYNC_EVERY`].
#[derive(Debug)]
pub struct UploadSync {
    store: Arc<SqlStore>,
    /// Ids of the plugin directory's plugins, which win over uploads.
    from_dir: Vec<String>,
    /// The uploaded plugins' ids at the last look.
    known: HashSet<String>,
    /// Uploads that did not pass the checks here (id, digest): logged once, not retried.
    refused: HashSet<(String, String)>,
}

impl UploadSync {
    /// Installs the uploads this node lacks or has another build of, and removes those gone
    /// from the database. Uploaded plugins were checked when they were uploaded; one that no
    /// longer passes (a newer host) is left out and logged rather than stopping the server.
    pub async fn reconcile(&mut self, host: &Host) -> anyhow::Result<()> {
        let digests = self.store.uploaded_plugin_digests().await?;
        let now: HashSet<String> = digests.iter().map(|(id, _)| id.clone()).collect();
        for (id, sha256) in digests {
            if self.from_dir.contains(&id) {
                if !self.known.contains(&id) {
                    tracing::warn!(plugin = %id, "an uploaded plugin has the id of one in the plugin directory, which wins");
                }
                continue;
            }
            if host.installed_sha256(&id).as_deref() == Some(sha256.as_str())
                || self.refused.contains(&(id.clone(), sha256.clone()))
            {
                continue;
            }
            let Some(u) = self.store.uploaded_plugin(&id).await? else {
                continue;
            };
            match install_checked(host, &u.manifest, &u.wasm).await {
                Ok(p) => {
                    tracing::info!(plugin = %p.manifest.id, version = %p.manifest.version, sha256 = %u.sha256, "installed an uploaded plugin")
                }
                Err(e) => {
                    tracing::error!(plugin = %u.id, error = %e, "an uploaded plugin cannot be installed");
                    self.refused.insert((id, u.sha256));
                }
            }
        }
        for gone in self.known.difference(&now) {
            if !self.from_dir.contains(gone)
                && !embedded::is_first_party(gone)
                && host.uninstall(gone)
            {
                tracing::info!(plugin = %gone, "removed a plugin no longer uploaded");
            }
        }
        self.known = now;
        Ok(())
    }

    /// Reconciles every [`UPLOAD_SYNC_EVERY`] until the server stops.
    pub fn spawn(mut self, host: Arc<Host>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPLOAD_SYNC_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = self.reconcile(&host).await {
                    tracing::warn!(error = %e, "cannot look for uploaded plugins; will retry");
                }
            }
        });
    }
}

/// The plugin directories under `root`: each subdirectory, in name order.
fn plugin_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(root)
        .with_context(|| format!("cannot read the plugin directory `{}`", root.display()))?;
    let mut dirs = Vec::new();
    for e in entries {
        let path = e
            .with_context(|| format!("cannot read the plugin directory `{}`", root.display()))?
            .path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Checks the plugin in `dir` (`plugin.toml` and `plugin.wasm`) and installs it. A
/// third-party plugin may not take a first-party plugin's id.
pub async fn install_dir(host: &Host, dir: &Path) -> anyhow::Result<Arc<Plugin>> {
    let manifest = std::fs::read_to_string(dir.join("plugin.toml"))
        .with_context(|| format!("cannot read `{}`", dir.join("plugin.toml").display()))?;
    let wasm = std::fs::read(dir.join("plugin.wasm"))
        .with_context(|| format!("cannot read `{}`", dir.join("plugin.wasm").display()))?;
    install_checked(host, &manifest, &wasm).await
}

/// Checks a third-party plugin and installs it; it may not take a first-party plugin's id.
pub async fn install_checked(
    host: &Host,
    manifest: &str,
    wasm: &[u8],
) -> anyhow::Result<Arc<Plugin>> {
    Ok(host.install_loaded(check_third_party(host, manifest, wasm).await?))
}

/// Checks a third-party plugin without installing it.
pub async fn check_third_party(host: &Host, manifest: &str, wasm: &[u8]) -> anyhow::Result<Plugin> {
    let checked = host.load(manifest, wasm).await?;
    if embedded::is_first_party(&checked.manifest.id) {
        anyhow::bail!(
            "plugin refused: `{}` is the id of a first-party plugin",
            checked.manifest.id
        );
    }
    Ok(checked)
}

/// A plugin as the API and the CLI show it.
pub fn describe(p: &Plugin) -> serde_json::Value {
    let d = &p.description;
    serde_json::json!({
        "id": d.id,
        "version": d.version,
        "kind": match d.kind { Kind::Strategy => "strategy", Kind::Provider => "provider" },
        "display_name": d.display_name,
        "capabilities": p.manifest.capabilities.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "allowed_hosts": p.manifest.allowed_hosts,
        "config_schema": serde_json::from_str::<serde_json::Value>(&d.config_schema).unwrap_or_default(),
        "first_party": embedded::is_first_party(&d.id),
        "sha256": p.sha256,
    })
}

/// Services that refuse every call: for checking a plugin (which runs only `describe`)
/// without a database.
#[derive(Debug)]
pub struct Refusing;

#[async_trait::async_trait]
impl Services for Refusing {
    async fn kv_get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err(UNAVAILABLE.into())
    }
    async fn kv_set(&self, _: &str, _: &[u8], _: Duration) -> Result<(), String> {
        Err(UNAVAILABLE.into())
    }
    async fn kv_take(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err(UNAVAILABLE.into())
    }
    async fn kv_delete(&self, _: &str) -> Result<(), String> {
        Err(UNAVAILABLE.into())
    }
    async fn find_account(&self, _: &str) -> Result<Option<Account>, String> {
        Err(UNAVAILABLE.into())
    }
    async fn credential(&self, _: &str, _: &str, _: &str) -> Result<Option<String>, String> {
        Err(UNAVAILABLE.into())
    }
    async fn set_credential(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<(), String> {
        Err(UNAVAILABLE.into())
    }
    async fn argon2_hash(&self, _: &str) -> Result<String, String> {
        Err(UNAVAILABLE.into())
    }
    async fn argon2_verify(&self, _: &str, _: &str) -> Result<bool, String> {
        Err(UNAVAILABLE.into())
    }
}

/// `gatehouse plugin check DIR`: checks the plugin in `dir` as the server would at start,
/// granting third-party plugins these capabilities.
pub async fn check_dir(
    dir: &Path,
    third_party_capabilities: Vec<Capability>,
) -> anyhow::Result<serde_json::Value> {
    let limits = Limits {
        third_party_capabilities,
        ..Limits::default()
    };
    let host = Host::new(limits, &Capability::ALL, Arc::new(Refusing))?;
    let p = install_dir(&host, dir).await?;
    Ok(describe(&p))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use gatehouse_engine::service::{Engine, EngineConfig};

    use super::*;
    use crate::cache::ephemeral::InProcess;
    use crate::identity::{Identity, OPERATOR};

    async fn services() -> (ServerServices, Identity) {
        let dir = std::env::temp_dir().join(format!("gh-plugins-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("db.sqlite").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let engine = Arc::new(Engine::new(store.clone(), EngineConfig::default()));
        let identity = Identity::bootstrap(store.clone(), engine).await.unwrap();
        let services = ServerServices {
            store,
            kv: Arc::new(InProcess::default()),
            master: Arc::new(MasterKey::generate().unwrap().0),
            mailer: None,
        };
        (services, identity)
    }

    #[tokio::test]
    async fn credentials_are_sealed_and_bound_to_plugin_user_and_name() {
        let (s, id) = services().await;
        let u = id
            .create_user(
                OPERATOR,
                "ada@example.com",
                "",
                Some("correct horse battery"),
                true,
            )
            .await
            .unwrap();
        assert_eq!(s.credential("totp", &u.id, "seed").await.unwrap(), None);
        s.set_credential("totp", &u.id, "seed", Some("JBSWY3DPEHPK3PXP"))
            .await
            .unwrap();
        assert_eq!(
            s.credential("totp", &u.id, "seed")
                .await
                .unwrap()
                .as_deref(),
            Some("JBSWY3DPEHPK3PXP")
        );
        // At rest it is sealed.
        let raw = s
            .store
            .plugin_credential("totp", &u.id, "seed")
            .await
            .unwrap()
            .unwrap();
        assert!(
            raw.starts_with("v1.") && !raw.contains("JBSWY3DPEHPK3PXP"),
            "{raw}"
        );
        // Another plugin, another name: nothing.
        assert_eq!(s.credential("passkey", &u.id, "seed").await.unwrap(), None);
        assert_eq!(s.credential("totp", &u.id, "other").await.unwrap(), None);
        // A sealed value copied to another name or plugin does not open.
        s.store
            .set_plugin_credential("totp", &u.id, "other", Some(&raw))
            .await
            .unwrap();
        assert_eq!(
            s.credential("totp", &u.id, "other").await.unwrap_err(),
            UNAVAILABLE
        );
        // Replaced, then removed.
        s.set_credential("totp", &u.id, "seed", Some("NEW"))
            .await
            .unwrap();
        assert_eq!(
            s.credential("totp", &u.id, "seed")
                .await
                .unwrap()
                .as_deref(),
            Some("NEW")
        );
        s.set_credential("totp", &u.id, "seed", None).await.unwrap();
        assert_eq!(s.credential("totp", &u.id, "seed").await.unwrap(), None);
        assert_eq!(
            s.set_credential("totp", "01NOBODY", "seed", Some("x"))
                .await
                .unwrap_err(),
            "unknown user"
        );
        // The password plugin's credential is the password hash, read-only.
        let h = s
            .credential("password", &u.id, "password")
            .await
            .unwrap()
            .unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(
            s.set_credential("password", &u.id, "password", Some("x"))
                .await
                .is_err()
        );
        assert!(s.argon2_verify(&h, "correct horse battery").await.unwrap());
        assert!(!s.argon2_verify(&h, "wrong").await.unwrap());
        assert!(s.argon2_verify("not a hash", "x").await.is_err());
    }

    #[tokio::test]
    async fn accounts_and_the_key_value_space() {
        let (s, id) = services().await;
        let u = id
            .create_user(OPERATOR, "ada@example.com", "", None, false)
            .await
            .unwrap();
        let a = s.find_account(" ADA@Example.com ").await.unwrap().unwrap();
        assert_eq!((a.id.as_str(), a.email_verified), (u.id.as_str(), false));
        assert_eq!(s.find_account("not an address").await.unwrap(), None);
        assert_eq!(s.find_account("bob@example.com").await.unwrap(), None);
        let bytes = [0u8, 255, 1, 2];
        s.kv_set("k", &bytes, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.kv_get("k").await.unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(s.kv_take("k").await.unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(s.kv_get("k").await.unwrap(), None);
    }
}
