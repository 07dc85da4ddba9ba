//! What the server gives login plugins: the services behind the host's capabilities, and
//! the host itself with the first-party plugins installed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use gatehouse_plugin_host::{Account, Capability, Host, Limits, Services, embedded};

use super::users::{hash_password, normalize_email, verify_password};
use crate::cache::ephemeral::Ephemeral;
use crate::db::SqlStore;

/// What a plugin is told when the server cannot do what it asked; the cause is logged.
const UNAVAILABLE: &str = "the server cannot do this now";

/// The server side of the capabilities.
#[derive(Debug)]
pub struct ServerServices {
    pub store: Arc<SqlStore>,
    pub kv: Arc<dyn Ephemeral>,
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
        Err(format!(
            "this server keeps no credential `{name}` for `{plugin}`"
        ))
    }

    async fn set_credential(
        &self,
        plugin: &str,
        _user: &str,
        name: &str,
        _value: Option<&str>,
    ) -> Result<(), String> {
        Err(format!(
            "this server keeps no credential `{name}` for `{plugin}`"
        ))
    }

    async fn argon2_hash(&self, password: &str) -> Result<String, String> {
        hash_password(password)
            .await
            .map_err(|e| unavailable("password hashing", e))
    }

    async fn argon2_verify(&self, hash: &str, password: &str) -> Result<bool, String> {
        if argon2::PasswordHash::new(hash).is_err() {
            return Err("not an Argon2 PHC string".into());
        }
        Ok(verify_password(password, hash).await)
    }
}

/// The plugin host of this server, with every first-party plugin installed.
pub async fn host(services: ServerServices) -> anyhow::Result<Host> {
    let host = Host::new(Limits::default(), &Capability::ALL, Arc::new(services))?;
    for p in embedded::ALL {
        host.install(p.manifest, p.wasm).await?;
    }
    Ok(host)
}
