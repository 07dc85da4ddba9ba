//! Configuration from the environment and an optional TOML file; the environment wins.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (`GATEHOUSE_ADDR`).
    pub addr: SocketAddr,
    /// Where the embedded database and generated secrets live (`GATEHOUSE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `postgres://…`; absent means SQLite in the data dir (`DATABASE_URL`).
    pub database_url: Option<String>,
    /// `redis://…`; absent means an in-process cache only (`REDIS_URL`).
    pub redis_url: Option<String>,
    /// Preshared API keys (`GATEHOUSE_API_KEYS`, comma-separated).
    pub api_keys: Vec<String>,
    /// Cross-request check cache on or off (`GATEHOUSE_CHECK_CACHE`).
    pub check_cache: bool,
    /// Resolution depth bound (`GATEHOUSE_MAX_DEPTH`).
    pub max_depth: u32,
    /// Largest accepted request body in bytes (`GATEHOUSE_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Log as JSON lines (`GATEHOUSE_LOG_JSON`).
    pub log_json: bool,
    /// HTTP worker threads, 0 for one per core (`GATEHOUSE_WORKERS`).
    pub workers: usize,
    /// Database connections in the pool (`GATEHOUSE_DB_POOL`).
    pub db_pool: usize,
    /// The algorithm tokens are signed with: `RS256`, `ES256` or `EdDSA`
    /// (`GATEHOUSE_SIGNING_ALG`).
    pub signing_alg: String,
    /// The issuer of tokens, the public base URL (`GATEHOUSE_ISSUER`; default
    /// `http://<addr>`).
    pub issuer: Option<String>,
    /// Requests one address may make per minute to the token, introspection, revocation and
    /// device endpoints, 0 for no limit (`GATEHOUSE_TOKEN_RATE_PER_IP`).
    pub token_rate_per_ip: u64,
    /// How recent a sign-in must be for sensitive changes to the account (factors), in seconds.
    pub reauth_secs: u64,
    /// Requests per second each tenant API key (`ak_live_…`) may make to one node (0: none).
    pub api_key_rate: u64,
    /// Proxies (CIDRs) whose `X-Forwarded-For` names the client; none by default, so that a
    /// client cannot choose the address it is counted under.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Password attempts one address may make per minute on the login pages, 0 for no limit
    /// (`GATEHOUSE_LOGIN_RATE_PER_IP`).
    pub login_rate_per_ip: u64,
    /// How long an authorization code may wait to be redeemed, in seconds, 1 to 600
    /// (`GATEHOUSE_CODE_TTL_SECS`).
    pub code_ttl_secs: u64,
    /// How often the sweeper removes tuples past their expiry, in seconds, 1 to 86400
    /// (`GATEHOUSE_EXPIRED_TUPLE_SWEEP_SECS`). Queries stop counting a tuple at its expiry
    /// whatever this is; it only decides when its row is freed.
    pub expired_tuple_sweep_secs: u64,
    /// The time one AuthZEN search may spend deciding its candidates, in milliseconds, 1 to
    /// 600000 (`GATEHOUSE_SEARCH_BUDGET_MS`): past it the search is a 400, never partial.
    pub search_budget_ms: u64,
    /// Whether people may create their own accounts at `/signup` (`GATEHOUSE_SIGNUP`).
    pub signup: bool,
    /// Redirect URIs of the console client (`gatehouse-console`), comma-separated in
    /// `GATEHOUSE_CONSOLE_REDIRECT_URIS`; without any it signs in by the device grant only.
    pub console_redirect_uris: Vec<String>,
    /// Argon2id computations at once, 1 to 256; the cores when absent
    /// (`GATEHOUSE_PASSWORD_HASH_SLOTS`).
    pub password_hash_slots: Option<usize>,
    /// A directory of third-party login plugins, one subdirectory each holding `plugin.toml`
    /// and `plugin.wasm` (`GATEHOUSE_PLUGIN_DIR`).
    pub plugin_dir: Option<std::path::PathBuf>,
    /// Lets plugins reach names that resolve to loopback, over plain HTTP too
    /// (`GATEHOUSE_PLUGIN_HTTP_LOOPBACK`): for development and tests against an identity
    /// provider on the same machine, never for production.
    pub plugin_http_loopback: bool,
    /// Keeps plugins' compiled code in `<data dir>/plugin-cache`, so that a restart does not
    /// compile them again (`GATEHOUSE_PLUGIN_CACHE`, default true).
    pub plugin_cache: bool,
    /// The capabilities a third-party plugin (from the plugin directory, or uploaded) may
    /// declare, comma-separated in `GATEHOUSE_PLUGIN_CAPABILITIES`; none when empty or absent,
    /// so that the operator grants each one deliberately. A plugin that declares another is
    /// refused. First-party plugins always get theirs.
    pub plugin_capabilities: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            api_keys: Vec::new(),
            check_cache: true,
            max_depth: gatehouse_engine::graph::DEFAULT_MAX_DEPTH,
            max_body_bytes: 1024 * 1024,
            log_json: false,
            workers: 0,
            db_pool: 16,
            signing_alg: "RS256".into(),
            issuer: None,
            token_rate_per_ip: 6000,
            reauth_secs: 300,
            api_key_rate: 1000,
            trusted_proxies: Vec::new(),
            login_rate_per_ip: 30,
            code_ttl_secs: 60,
            expired_tuple_sweep_secs: 60,
            search_budget_ms: 10_000,
            signup: true,
            console_redirect_uris: Vec::new(),
            password_hash_slots: None,
            plugin_dir: None,
            plugin_http_loopback: false,
            plugin_cache: true,
            plugin_capabilities: None,
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => anyhow::bail!("`{name}` must be true or false, got `{v}`"),
    }
}

impl Config {
    /// The capabilities third-party plugins may declare (see `plugin_capabilities`).
    pub fn third_party_capabilities(&self) -> Result<Vec<gatehouse_plugin_host::Capability>> {
        let Some(names) = &self.plugin_capabilities else {
            return Ok(Vec::new());
        };
        names
            .iter()
            .map(|n| {
                n.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "`plugin_capabilities` names `{n}`, which is not a capability (one of: {})",
                        gatehouse_plugin_host::Capability::ALL
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect()
    }

    /// Reads the TOML file (if given, or `GATEHOUSE_CONFIG`), then applies the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self> {
        let file = file
            .map(PathBuf::from)
            .or_else(|| env("GATEHOUSE_CONFIG").map(PathBuf::from));
        let mut c = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read config file `{}`", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file `{}`", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = env("GATEHOUSE_ADDR") {
            c.addr = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_ADDR` is not an address: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_DATA_DIR") {
            c.data_dir = v.into();
        }
        if let Some(v) = env("DATABASE_URL") {
            c.database_url = Some(v);
        }
        if let Some(v) = env("REDIS_URL") {
            c.redis_url = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_API_KEYS") {
            c.api_keys = v
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
        }
        if let Some(v) = env("GATEHOUSE_CHECK_CACHE") {
            c.check_cache = parse_bool("GATEHOUSE_CHECK_CACHE", &v)?;
        }
        if let Some(v) = env("GATEHOUSE_MAX_DEPTH") {
            c.max_depth = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_MAX_DEPTH` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_MAX_BODY_BYTES") {
            c.max_body_bytes = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_MAX_BODY_BYTES` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_LOG_JSON") {
            c.log_json = parse_bool("GATEHOUSE_LOG_JSON", &v)?;
        }
        if let Some(v) = env("GATEHOUSE_WORKERS") {
            c.workers = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_WORKERS` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_DB_POOL") {
            c.db_pool = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_DB_POOL` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_ISSUER") {
            c.issuer = Some(v);
        }
        if let Some(i) = &c.issuer {
            let ok = (i.starts_with("https://") || i.starts_with("http://"))
                && !i.ends_with('/')
                && !i.contains(['?', '#']);
            if !ok {
                anyhow::bail!(
                    "`issuer` must be an http(s) URL without a trailing slash, query or fragment, got `{i}`"
                );
            }
        }
        if let Some(v) = env("GATEHOUSE_TOKEN_RATE_PER_IP") {
            c.token_rate_per_ip = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_TOKEN_RATE_PER_IP` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_TRUSTED_PROXIES") {
            c.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    n.parse::<ipnet::IpNet>()
                        .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .with_context(|| {
                            format!("`GATEHOUSE_TRUSTED_PROXIES` names `{n}`, which is not a CIDR or an address")
                        })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(v) = env("GATEHOUSE_API_KEY_RATE") {
            c.api_key_rate = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_API_KEY_RATE` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_REAUTH_SECS") {
            c.reauth_secs = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_REAUTH_SECS` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_LOGIN_RATE_PER_IP") {
            c.login_rate_per_ip = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_LOGIN_RATE_PER_IP` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_CODE_TTL_SECS") {
            c.code_ttl_secs = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_CODE_TTL_SECS` is not a number: `{v}`"))?;
        }
        if let Some(v) = env("GATEHOUSE_EXPIRED_TUPLE_SWEEP_SECS") {
            c.expired_tuple_sweep_secs = v.parse().with_context(|| {
                format!("`GATEHOUSE_EXPIRED_TUPLE_SWEEP_SECS` is not a number: `{v}`")
            })?;
        }
        if !(1..=86_400).contains(&c.expired_tuple_sweep_secs) {
            anyhow::bail!("`expired_tuple_sweep_secs` must be between 1 and 86400");
        }
        if let Some(v) = env("GATEHOUSE_SEARCH_BUDGET_MS") {
            c.search_budget_ms = v
                .parse()
                .with_context(|| format!("`GATEHOUSE_SEARCH_BUDGET_MS` is not a number: `{v}`"))?;
        }
        if !(1..=600_000).contains(&c.search_budget_ms) {
            anyhow::bail!("`search_budget_ms` must be between 1 and 600000");
        }
        if let Some(v) = env("GATEHOUSE_SIGNUP") {
            c.signup = parse_bool("GATEHOUSE_SIGNUP", &v)?;
        }
        if let Some(v) = env("GATEHOUSE_CONSOLE_REDIRECT_URIS") {
            c.console_redirect_uris = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = env("GATEHOUSE_PLUGIN_DIR") {
            c.plugin_dir = Some(v.into());
        }
        if let Some(v) = env("GATEHOUSE_PLUGIN_CACHE") {
            c.plugin_cache = parse_bool("GATEHOUSE_PLUGIN_CACHE", &v)?;
        }
        if let Ok(v) = std::env::var("GATEHOUSE_PLUGIN_CAPABILITIES") {
            c.plugin_capabilities = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        c.third_party_capabilities()?;
        if let Some(v) = env("GATEHOUSE_PLUGIN_HTTP_LOOPBACK") {
            c.plugin_http_loopback = parse_bool("GATEHOUSE_PLUGIN_HTTP_LOOPBACK", &v)?;
        }
        if let Some(v) = env("GATEHOUSE_PASSWORD_HASH_SLOTS") {
            c.password_hash_slots = Some(v.parse().with_context(|| {
                format!("`GATEHOUSE_PASSWORD_HASH_SLOTS` is not a number: `{v}`")
            })?);
        }
        if c.password_hash_slots
            .is_some_and(|n| !(1..=256).contains(&n))
        {
            anyhow::bail!("`password_hash_slots` must be between 1 and 256");
        }
        if !(1..=600).contains(&c.code_ttl_secs) {
            anyhow::bail!("`code_ttl_secs` must be between 1 and 600");
        }
        if let Some(v) = env("GATEHOUSE_SIGNING_ALG") {
            c.signing_alg = v;
        }
        crate::oidc::keys::parse_alg(&c.signing_alg).context("`signing_alg`")?;
        if c.max_depth == 0 || c.max_depth > 100 {
            anyhow::bail!("`max_depth` must be between 1 and 100");
        }
        Ok(c)
    }

    /// The issuer of tokens.
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
    }

    /// The database to use: `DATABASE_URL`, or SQLite under the data dir.
    pub fn database(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("gatehouse.db").display()),
        }
    }
}
