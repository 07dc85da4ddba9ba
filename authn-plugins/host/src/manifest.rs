//! `plugin.toml`: what a plugin is and what it may use.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A host capability a plugin may import (an interface of `gatehouse:authn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Log,
    Clock,
    Random,
    Kv,
    Accounts,
    Credentials,
    Argon2,
    Http,
    Jwt,
    Email,
    Webauthn,
    Saml,
}

impl Capability {
    pub const ALL: [Capability; 12] = [
        Capability::Log,
        Capability::Clock,
        Capability::Random,
        Capability::Kv,
        Capability::Accounts,
        Capability::Credentials,
        Capability::Argon2,
        Capability::Http,
        Capability::Jwt,
        Capability::Email,
        Capability::Webauthn,
        Capability::Saml,
    ];

    /// Its interface name in `gatehouse:authn` (and in manifests).
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::Kv => "kv",
            Capability::Accounts => "accounts",
            Capability::Credentials => "credentials",
            Capability::Argon2 => "argon2",
            Capability::Http => "http",
            Capability::Jwt => "jwt",
            Capability::Email => "email",
            Capability::Webauthn => "webauthn",
            Capability::Saml => "saml",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown capability `{s}` (known: {})",
                    Capability::ALL.map(Capability::name).join(", ")
                )
            })
    }
}

/// Whether a plugin checks the user itself or vouches from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Strategy,
    Provider,
}

/// A parsed and checked `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub kind: PluginKind,
    pub display_name: String,
    pub capabilities: BTreeSet<Capability>,
    /// Hosts the plugin may reach over HTTP (for the `http` capability), lowercase, each
    /// `name` (the scheme's default port) or `name:port`.
    pub allowed_hosts: Vec<String>,
    /// Configuration fields whose values (a URL, a host name, or a list of them) the plugin
    /// may also reach: an identity provider's issuer, set by each organization.
    pub config_hosts: Vec<String>,
    /// Its memory cap in MiB, if lower than the platform's.
    pub memory_mib: Option<u32>,
    /// The JSON Schema of an organization's configuration (`[config-schema]`, a TOML table);
    /// when given, `describe` answers it or nothing.
    pub config_schema: Option<serde_json::Value>,
    /// Configuration fields that are secrets (sealed at rest, never returned): marked
    /// `writeOnly` in the schema the host keeps.
    pub secret_fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    id: String,
    version: String,
    kind: PluginKind,
    display_name: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    config_hosts: Vec<String>,
    memory_mib: Option<u32>,
    config_schema: Option<toml::Table>,
    #[serde(default)]
    secret_fields: Vec<String>,
}

/// Plugin ids: 1 to 40 of `a-z`, `0-9` and `-`, starting with a letter.
pub fn valid_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `MAJOR.MINOR.PATCH` with an optional `-pre` part.
fn valid_version(v: &str) -> bool {
    let core = v
        .split_once('-')
        .map_or(v, |(c, pre)| if pre.is_empty() { "" } else { c });
    let parts: Vec<&str> = core.split('.').collect();
    v.len() <= 64
        && parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Whether `name` is a DNS host name (not an IP address).
pub fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // The last label of a name is never all digits: `10.0.0.1` is an address.
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
}

/// A host the `http` capability may reach, checked and lowercased: `name` or `name:port`.
pub fn host_entry(entry: &str) -> Result<String, String> {
    let e = entry.to_ascii_lowercase();
    let (name, port) = match e.rsplit_once(':') {
        Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => (n, Some(p)),
        _ => (e.as_str(), None),
    };
    if !dns_name(name) {
        return Err(format!(
            "`{entry}` is not a DNS name (IP addresses are never allowed)"
        ));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("`{entry}` has a bad port"));
    }
    Ok(e)
}

impl Manifest {
    /// Parses `plugin.toml`; every problem is named.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!(
                "plugin.toml: line {}: {}",
                text.get(..span.start)
                    .map_or(0, |t| t.matches('\n').count())
                    + 1,
                e.message()
            ),
            None => format!("plugin.toml: {}", e.message()),
        })?;
        if !valid_id(&raw.id) {
            return Err(format!(
                "plugin.toml: id `{}` must be 1 to 40 of a-z, 0-9 and -, starting with a letter",
                raw.id
            ));
        }
        if !valid_version(&raw.version) {
            return Err(format!(
                "plugin.toml: version `{}` is not MAJOR.MINOR.PATCH",
                raw.version
            ));
        }
        let name = raw.display_name.trim();
        if name.is_empty() || name.len() > 80 {
            return Err("plugin.toml: display-name must be 1 to 80 bytes".into());
        }
        let mut capabilities = BTreeSet::new();
        for c in &raw.capabilities {
            let cap = c.parse().map_err(|e| format!("plugin.toml: {e}"))?;
            if !capabilities.insert(cap) {
                return Err(format!("plugin.toml: capability `{c}` is listed twice"));
            }
        }
        let mut allowed_hosts = Vec::new();
        for h in &raw.allowed_hosts {
            allowed_hosts
                .push(host_entry(h).map_err(|e| format!("plugin.toml: allowed host {e}"))?);
        }
        for f in &raw.config_hosts {
            if f.is_empty() || f.len() > 64 {
                return Err(format!(
                    "plugin.toml: config-hosts field `{f}` must be 1 to 64 bytes"
                ));
            }
        }
        if let Some(m) = raw.memory_mib
            && !(1..=4096).contains(&m)
        {
            return Err("plugin.toml: memory-mib must be 1 to 4096".into());
        }
        let config_schema = match raw.config_schema {
            Some(t) => Some(
                serde_json::to_value(&t).map_err(|e| format!("plugin.toml: config-schema: {e}"))?,
            ),
            None => None,
        };
        for f in &raw.secret_fields {
            if f.is_empty() || f.len() > 64 {
                return Err(format!(
                    "plugin.toml: secret field `{f}` must be 1 to 64 bytes"
                ));
            }
            if let Some(schema) = &config_schema
                && schema
                    .pointer(&format!(
                        "/properties/{}",
                        f.replace('~', "~0").replace('/', "~1")
                    ))
                    .is_none()
            {
                return Err(format!(
                    "plugin.toml: secret field `{f}` is not a property of config-schema"
                ));
            }
        }
        Ok(Manifest {
            id: raw.id,
            version: raw.version,
            kind: raw.kind,
            display_name: name.to_string(),
            capabilities,
            allowed_hosts,
            config_hosts: raw.config_hosts,
            memory_mib: raw.memory_mib,
            config_schema,
            secret_fields: raw.secret_fields,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest() {
        let m = Manifest::parse(
            r#"
            id = "github"
            version = "1.2.3"
            kind = "provider"
            display-name = "GitHub"
            capabilities = ["log", "kv"]
            allowed-hosts = ["github.com", "API.github.com:8443"]
            config-hosts = ["issuer"]
            memory-mib = 16
            secret-fields = ["client_secret"]

            [config-schema]
            type = "object"
            required = ["client_id"]
            additionalProperties = false
            properties.client_id = { type = "string", minLength = 1 }
            properties.client_secret = { type = "string" }
            "#,
        )
        .unwrap();
        assert_eq!(
            m.config_schema,
            Some(serde_json::json!({
                "type": "object",
                "required": ["client_id"],
                "additionalProperties": false,
                "properties": {
                    "client_id": { "type": "string", "minLength": 1 },
                    "client_secret": { "type": "string" },
                },
            }))
        );
        assert_eq!(m.secret_fields, vec!["client_secret"]);
        assert_eq!(m.id, "github");
        assert_eq!(m.kind, PluginKind::Provider);
        assert_eq!(
            m.capabilities.iter().copied().collect::<Vec<_>>(),
            vec![Capability::Log, Capability::Kv]
        );
        assert_eq!(m.allowed_hosts, vec!["github.com", "api.github.com:8443"]);
        assert_eq!(m.config_hosts, vec!["issuer"]);
        assert_eq!(m.memory_mib, Some(16));
    }

    #[test]
    fn bad_manifests_are_named() {
        let base = |extra: &str| {
            format!(
                "id = \"x\"\nversion = \"0.1.0\"\nkind = \"strategy\"\ndisplay-name = \"X\"\n{extra}"
            )
        };
        for (text, needle) in [
            (
                base("capabilities = [\"sockets\"]"),
                "unknown capability `sockets`",
            ),
            (base("capabilities = [\"kv\", \"kv\"]"), "listed twice"),
            (base("allowed-hosts = [\"http://x\"]"), "not a DNS name"),
            (
                base("allowed-hosts = [\"10.0.0.1\"]"),
                "IP addresses are never allowed",
            ),
            (base("allowed-hosts = [\"[::1]:443\"]"), "not a DNS name"),
            (base("allowed-hosts = [\"x.com:0\"]"), "bad port"),
            (base("allowed-hosts = [\"x.com:99999\"]"), "bad port"),
            (base("config-hosts = [\"\"]"), "config-hosts"),
            (base("memory-mib = 0"), "memory-mib"),
            (
                base("secret-fields = [\"key\"]\n[config-schema]\ntype = \"object\""),
                "secret field `key` is not a property of config-schema",
            ),
            (base("secret-fields = [\"\"]"), "secret field"),
            (
                base("config-schema = 3"),
                "line 5: invalid type: integer `3`, expected a map",
            ),
            (base("surprise = 1"), "unknown field"),
            (
                "id = \"X\"\nversion = \"0.1.0\"\nkind = \"strategy\"\ndisplay-name = \"X\"".into(),
                "id `X`",
            ),
            (
                "id = \"x\"\nversion = \"1\"\nkind = \"strategy\"\ndisplay-name = \"X\"".into(),
                "version `1`",
            ),
            (
                "id = \"x\"\nversion = \"0.1.0\"\nkind = \"daemon\"\ndisplay-name = \"X\"".into(),
                "unknown variant `daemon`",
            ),
            (
                "id = \"x\"\nversion = \"0.1.0\"\nkind = \"strategy\"\ndisplay-name = \" \"".into(),
                "display-name",
            ),
            ("not toml".into(), "plugin.toml"),
        ] {
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
