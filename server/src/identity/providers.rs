//! Login plugins per service: which plugins a service offers, and its organization's
//! configuration of each ("bring your own OAuth app": their own client id and secret at
//! their identity provider).
//!
//! A plugin's configuration schema (JSON Schema, from `describe`) says what a configuration
//! holds; fields it marks `"writeOnly": true` are secrets. Secrets are sealed with AES-256-GCM
//! under the master key, bound to the service and the plugin, and never returned: the API shows
//! which are set, not what they are. A configuration that does not validate against the
//! schema is refused whole.

use std::sync::Arc;

use chrono::Utc;
use gatehouse_engine::{Error, Result};
use serde_json::{Map, Value};

use crate::db::SqlStore;
use crate::db::users::ServicePluginRow;
use crate::secrets::MasterKey;

/// What the sealing of a service's plugin secrets is bound to.
fn purpose(service: &str, plugin: &str) -> String {
    format!("service-plugin:{service}:{plugin}")
}

/// The secret fields of a configuration schema: its properties marked `writeOnly`.
pub fn secret_fields(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter(|(_, p)| p.get("writeOnly").and_then(Value::as_bool) == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A plugin a service offers, as the API shows it: the configuration without its secrets,
/// and the names of the secrets that are set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Offered {
    pub plugin: String,
    pub config: Value,
    pub secrets_set: Vec<String>,
    pub position: i32,
    pub updated_at: chrono::DateTime<Utc>,
}

/// The plugins of services, and their sealed configuration.
pub struct ServicePlugins {
    pub store: Arc<SqlStore>,
    pub master: Arc<MasterKey>,
}

impl ServicePlugins {
    /// The plugins `service` offers, in order, as the API shows them.
    pub async fn list(&self, service: &str) -> Result<Vec<Offered>> {
        let rows = self.store.service_plugins(service).await?;
        rows.iter().map(|r| self.view(r)).collect()
    }

    fn view(&self, row: &ServicePluginRow) -> Result<Offered> {
        let config: Value = serde_json::from_str(&row.config)
            .map_err(|e| Error::Storage(format!("a stored plugin configuration: {e}")))?;
        let mut secrets_set: Vec<String> = self.secrets(row)?.keys().cloned().collect();
        secrets_set.sort();
        Ok(Offered {
            plugin: row.plugin.clone(),
            config,
            secrets_set,
            position: row.position,
            updated_at: chrono::DateTime::<Utc>::from_naive_utc_and_offset(row.updated_at, Utc),
        })
    }

    fn secrets(&self, row: &ServicePluginRow) -> Result<Map<String, Value>> {
        let Some(sealed) = &row.secrets else {
            return Ok(Map::new());
        };
        let opened = self
            .master
            .open(&purpose(&row.service_id, &row.plugin), sealed)
            .map_err(|_| {
                Error::Storage(format!(
                    "the secrets of plugin `{}` on service `{}` do not open",
                    row.plugin, row.service_id
                ))
            })?;
        serde_json::from_slice(&opened)
            .map_err(|e| Error::Storage(format!("sealed plugin secrets: {e}")))
    }

    /// Enables `plugin` on `service` with `config`, or replaces its configuration. A secret
    /// field left out keeps the value set before (so that a configuration can be edited
    /// without retyping a client secret); a secret field set to `null` is removed. The whole
    /// configuration, secrets included, must validate against `schema`.
    pub async fn configure(
        &self,
        service: &str,
        plugin: &str,
        schema: &Value,
        config: Value,
    ) -> Result<Offered> {
        let Value::Object(given) = config else {
            return Err(Error::Validation("`config` must be a JSON object".into()));
        };
        let secret_names = secret_fields(schema);
        let existing = self
            .store
            .service_plugins(service)
            .await?
            .into_iter()
            .find(|r| r.plugin == plugin);
        let mut secrets = match &existing {
            Some(r) => self.secrets(r)?,
            None => Map::new(),
        };
        secrets.retain(|k, _| secret_names.contains(k));
        let mut public = Map::new();
        for (k, v) in given {
            if secret_names.contains(&k) {
                if v.is_null() {
                    secrets.remove(&k);
                } else {
                    secrets.insert(k, v);
                }
            } else {
                public.insert(k, v);
            }
        }
        let mut whole = public.clone();
        whole.extend(secrets.clone());
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            Error::Validation(format!(
                "plugin `{plugin}` has a configuration schema that cannot be used: {e}"
            ))
        })?;
        let whole = Value::Object(whole);
        let problems: Vec<String> = validator
            .iter_errors(&whole)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                // A secret's value never goes into an error message.
                let field = at.trim_start_matches('/');
                if secret_names.iter().any(|s| s == field) {
                    format!("`{field}` is not valid")
                } else if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::Validation(format!(
                "the configuration of `{plugin}` is not valid: {}",
                problems.join("; ")
            )));
        }
        let sealed = if secrets.is_empty() {
            None
        } else {
            let bytes = serde_json::to_vec(&Value::Object(secrets))
                .map_err(|e| Error::Storage(e.to_string()))?;
            Some(
                self.master
                    .seal(&purpose(service, plugin), &bytes)
                    .map_err(|e| Error::Storage(e.to_string()))?,
            )
        };
        let now = Utc::now().naive_utc();
        let row = ServicePluginRow {
            service_id: service.into(),
            plugin: plugin.into(),
            config: Value::Object(public).to_string(),
            secrets: sealed,
            position: 0,
            created_at: existing.as_ref().map_or(now, |r| r.created_at),
            updated_at: now,
        };
        self.store.put_service_plugin(&row).await?;
        let stored = self
            .store
            .service_plugins(service)
            .await?
            .into_iter()
            .find(|r| r.plugin == plugin)
            .ok_or_else(|| Error::Storage("a plugin configuration vanished".into()))?;
        self.view(&stored)
    }

    /// Stops `service` offering `plugin`; false if it did not.
    pub async fn remove(&self, service: &str, plugin: &str) -> Result<bool> {
        self.store.delete_service_plugin(service, plugin).await
    }

    /// The configuration a plugin step of `service` gets (secrets opened), or `None` when the
    /// service does not offer `plugin`.
    pub async fn step_config(&self, service: &str, plugin: &str) -> Result<Option<String>> {
        let Some(row) = self
            .store
            .service_plugins(service)
            .await?
            .into_iter()
            .find(|r| r.plugin == plugin)
        else {
            return Ok(None);
        };
        let mut config: Map<String, Value> = serde_json::from_str(&row.config)
            .map_err(|e| Error::Storage(format!("a stored plugin configuration: {e}")))?;
        config.extend(self.secrets(&row)?);
        Ok(Some(Value::Object(config).to_string()))
    }

    /// The plugins `service` offers, in order, with their configuration without its secrets
    /// (nothing is opened).
    pub async fn offered(&self, service: &str) -> Result<Vec<(String, Value)>> {
        Ok(self
            .store
            .service_plugins(service)
            .await?
            .into_iter()
            .map(|r| {
                let config = serde_json::from_str(&r.config).unwrap_or(Value::Null);
                (r.plugin, config)
            })
            .collect())
    }
}
