//! The `http` capability: outbound requests to the hosts a plugin may reach, and nothing else.
//!
//! Every request and every redirect is checked before a connection is made:
//! - its host must be one the plugin may reach (its manifest's `allowed-hosts`, or a host named
//!   by one of its `config-hosts` fields in the organization's configuration), port included;
//! - an IP address is never a host: a plugin names hosts;
//! - the name is resolved by the host, and refused if any address it resolves to is private,
//!   loopback, link-local, multicast or otherwise reserved; the connection goes to the
//!   addresses checked, so a name cannot change its answer in between (DNS rebinding);
//! - the plugin cannot set `Host` or any header that frames the connection;
//! - HTTPS only, unless the platform lets plugins reach loopback (development and tests).
//!
//! Responses are capped in size and each request in time; the step's own deadline covers all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

/// The platform's rules for the `http` capability.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Time for one request, connection to last byte.
    pub timeout: Duration,
    /// The largest response body.
    pub max_response_bytes: usize,
    /// Requests one step may send (redirects count).
    pub max_requests: u32,
    /// Redirects followed per request.
    pub max_redirects: u32,
    /// Lets plugins reach names that resolve to loopback (127.0.0.0/8, ::1), over plain HTTP
    /// too. For development and tests only: in production an identity provider is never on
    /// the server's own machine.
    pub allow_loopback: bool,
    /// Addresses for names, used instead of asking DNS (as curl's `--resolve`): an operator
    /// pins an identity provider's name. They are vetted like any answer from DNS.
    pub fixed_addresses: std::collections::HashMap<String, Vec<IpAddr>>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            max_requests: 16,
            max_redirects: 5,
            allow_loopback: false,
            fixed_addresses: std::collections::HashMap::new(),
        }
    }
}

const MAX_URL: usize = 8 << 10;
const MAX_HEADERS: usize = 64;
const MAX_REQUEST_BODY: usize = 64 << 10;

/// Headers a plugin may not set: the host frames the connection itself.
const FORBIDDEN_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-connection",
];

/// Whether a plugin may connect to `ip`.
pub(crate) fn permitted(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // IETF protocol assignments, 192.0.0.0/24; benchmarking, 198.18.0.0/15.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                // Reserved, 240.0.0.0/4.
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_multicast()
                // Unique local, fc00::/7; link-local, fe80::/10; site-local, fec0::/10.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // Documentation, 2001:db8::/32; NAT64, 64:ff9b::/96 (it reaches IPv4 inside).
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Why the resolver refused a name.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves names for plugin requests, refusing a name if any of its addresses is one a
/// plugin may not reach. The client connects only to the addresses returned here.
struct Vetted {
    allow_loopback: bool,
    fixed: std::collections::HashMap<String, Vec<IpAddr>>,
}

impl Resolve for Vetted {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let fixed = self.fixed.get(name.as_str()).cloned();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = match fixed {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| Box::new(Refused(format!("cannot resolve `{host}`: {e}"))))?
                    .collect(),
            };
            if let Some(bad) = addrs.iter().find(|a| !permitted(a.ip(), allow_loopback)) {
                return Err(Box::new(Refused(format!(
                    "`{host}` resolves to {}, an address plugins may not reach",
                    bad.ip()
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            if addrs.is_empty() {
                return Err(Box::new(Refused(format!("`{host}` has no address"))) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The client and rules shared by every plugin step. The client (its TLS context and the
/// system's root certificates) is built when a plugin first sends a request: a server whose
/// plugins never do keeps neither in memory.
#[derive(Clone)]
pub(crate) struct Outbound {
    client: Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
    pub(crate) policy: HttpPolicy,
}

impl Outbound {
    pub(crate) fn new(policy: HttpPolicy) -> Outbound {
        Outbound {
            client: Arc::default(),
            policy,
        }
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| Self::build(&self.policy))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build(policy: &HttpPolicy) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Vetted {
                allow_loopback: policy.allow_loopback,
                fixed: policy.fixed_addresses.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .user_agent(concat!("Gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// The hosts (`name` or `name:port`) named by the configuration fields `fields` of `config`
/// (a URL, a host name, or a list of them); values that name no host are skipped.
pub(crate) fn config_hosts(config: &str, fields: &[String]) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(config)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut add = |s: &str| {
        let host = match Url::parse(s) {
            Ok(u) if s.contains("://") => match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return,
            },
            _ => s.to_string(),
        };
        if let Ok(h) = crate::manifest::host_entry(&host) {
            out.push(h);
        }
    };
    for f in fields {
        match map.get(f) {
            Some(serde_json::Value::String(s)) => add(s),
            Some(serde_json::Value::Array(a)) => {
                for v in a.iter().filter_map(serde_json::Value::as_str) {
                    add(v)
                }
            }
            _ => {}
        }
    }
    out
}

/// What one step may reach, and what it has used.
pub(crate) struct StepHttp {
    pub(crate) outbound: Outbound,
    /// Hosts this step may reach (`name` or `name:port`, lowercase).
    pub(crate) hosts: Vec<String>,
    pub(crate) sent: u32,
}

/// A plugin's request, as the WIT gives it.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl StepHttp {
    /// Checks `url` against the step's hosts and the platform's rules.
    fn check_url(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                return Err(format!(
                    "`{url}` names an IP address; plugins may reach only the host names they are allowed"
                ));
            }
            None => return Err(format!("`{url}` names no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a URL may not carry credentials".into());
        }
        let default_port = match scheme {
            "https" => 443,
            "http" if self.outbound.policy.allow_loopback => 80,
            "http" => return Err(format!("`{url}`: plugins may use only HTTPS")),
            other => return Err(format!("`{url}`: the scheme `{other}` is not HTTP")),
        };
        let port = url.port().unwrap_or(default_port);
        let allowed = self.hosts.iter().any(|h| match h.rsplit_once(':') {
            Some((name, p)) => *name == host && p.parse::<u16>().ok() == Some(port),
            None => *h == host && port == default_port,
        });
        if !allowed {
            let shown = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            return Err(format!("`{shown}` is not a host this plugin may reach"));
        }
        Ok(())
    }

    /// Sends a plugin's request, following redirects to allowed hosts.
    pub(crate) async fn fetch(&mut self, request: Request) -> Result<Response, String> {
        let policy = self.outbound.policy.clone();
        if request.url.len() > MAX_URL {
            return Err(format!("a URL must be at most {MAX_URL} bytes"));
        }
        if request.body.len() > MAX_REQUEST_BODY {
            return Err(format!(
                "a request body must be at most {MAX_REQUEST_BODY} bytes"
            ));
        }
        if request.headers.len() > MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} headers"));
        }
        let mut method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", request.method))?;
        if method == Method::CONNECT {
            return Err("CONNECT is not allowed".into());
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &request.headers {
            let lower = k.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(format!(
                    "the header `{k}` is set by the host, not by a plugin"
                ));
            }
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("the header `{k}` has a bad value"))?;
            headers.append(name, value);
        }
        let mut url = Url::parse(&request.url).map_err(|e| format!("`{}`: {e}", request.url))?;
        let mut body = request.body;
        let mut redirects = 0;
        loop {
            self.check_url(&url)?;
            if self.sent >= policy.max_requests {
                return Err(format!(
                    "a step may send at most {} requests",
                    policy.max_requests
                ));
            }
            self.sent += 1;
            let mut builder = self
                .outbound
                .client()?
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if !body.is_empty() {
                builder = builder.body(body.clone());
            }
            let mut res = builder.send().await.map_err(|e| describe(&e, &url))?;
            let status = res.status();
            if status.is_redirection()
                && let Some(location) = res.headers().get(reqwest::header::LOCATION)
            {
                if redirects >= policy.max_redirects {
                    return Err(format!("more than {} redirects", policy.max_redirects));
                }
                redirects += 1;
                let location = location
                    .to_str()
                    .map_err(|_| "a redirect with a bad Location".to_string())?;
                let next = url
                    .join(location)
                    .map_err(|e| format!("a redirect to `{location}`: {e}"))?;
                self.check_url(&next)
                    .map_err(|e| format!("redirected to `{next}`, refused: {e}"))?;
                // 303, and 301/302 after a POST, turn into a GET without a body; credentials
                // go to no other host than the one they were meant for.
                if status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
                {
                    method = Method::GET;
                    body.clear();
                    headers.remove(reqwest::header::CONTENT_TYPE);
                }
                if next.host_str() != url.host_str() || next.port() != url.port() {
                    headers.remove(reqwest::header::AUTHORIZATION);
                    headers.remove(reqwest::header::COOKIE);
                }
                url = next;
                continue;
            }
            if res
                .content_length()
                .is_some_and(|n| n > policy.max_response_bytes as u64)
            {
                return Err(format!(
                    "the response is larger than {} bytes",
                    policy.max_response_bytes
                ));
            }
            let headers_out = res
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .take(MAX_HEADERS)
                .collect();
            let mut out = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| describe(&e, &url))? {
                if out.len() + chunk.len() > policy.max_response_bytes {
                    return Err(format!(
                        "the response is larger than {} bytes",
                        policy.max_response_bytes
                    ));
                }
                out.extend_from_slice(&chunk);
            }
            return Ok(Response {
                status: status.as_u16(),
                headers: headers_out,
                body: out,
            });
        }
    }
}

/// A client error as the plugin sees it: the resolver's refusal if that is what it was.
fn describe(e: &reqwest::Error, url: &Url) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return r.0.clone();
        }
        // The connector may keep the resolver's error boxed, which hides its type.
        let text = s.to_string();
        if text.contains("an address plugins may not reach")
            || text.starts_with("cannot resolve `")
            || text.ends_with("has no address")
        {
            return text;
        }
        source = s.source();
    }
    if e.is_timeout() {
        return format!("`{url}` did not answer in time");
    }
    if e.is_connect() {
        return format!("cannot connect to `{url}`");
    }
    format!("`{url}`: the request failed")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "fd00::1",
            "fe80::1",
            "::",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!permitted(a.parse().unwrap(), false), "{a}");
            assert!(
                !permitted(a.parse().unwrap(), true) || a.contains("127"),
                "{a}"
            );
        }
        for a in ["127.0.0.1", "::1"] {
            assert!(!permitted(a.parse().unwrap(), false), "{a}");
            assert!(permitted(a.parse().unwrap(), true), "{a}");
        }
        for a in ["140.82.112.3", "8.8.8.8", "2606:4700::1111"] {
            assert!(permitted(a.parse().unwrap(), false), "{a}");
        }
    }

    #[test]
    fn configuration_names_hosts() {
        let c = r#"{"issuer":"https://Login.Example.com/realms/x","extra":["api.example.com","http://localhost:8080/"],"n":3,"bad":"http://10.0.0.1/"}"#;
        let fields = ["issuer", "extra", "n", "bad", "missing"].map(String::from);
        assert_eq!(
            config_hosts(c, &fields),
            vec!["login.example.com", "api.example.com", "localhost:8080"]
        );
        assert!(config_hosts("not json", &fields).is_empty());
    }
}
