#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Mutex;

use std::time::Instant;

use super::*;

const HOSTILE: &[u8] = include_bytes!(concat!(
    env!("GATEHOUSE_PLUGIN_WASM_DIR"),
    "/gatehouse_plugin_hostile.wasm"
));
const HOSTILE_MANIFEST: &str = include_str!("../../testing/hostile/plugin.toml");

/// Services kept in memory, for the host's own tests (the server's are tested through it).
#[derive(Default)]
struct Memory {
    kv: Mutex<HashMap<String, Vec<u8>>>,
    /// Makes every key-value read take this long.
    slow: Mutex<Option<Duration>>,
    /// The accounts `find_account` knows.
    accounts: Mutex<Vec<Account>>,
    /// The messages sent: user, subject, body.
    sent: Mutex<Vec<(String, String, String)>>,
}

#[async_trait::async_trait]
impl Services for Memory {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let slow = *self.slow.lock().unwrap();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        Ok(self.kv.lock().unwrap().get(key).cloned())
    }
    async fn kv_set(&self, key: &str, value: &[u8], _: Duration) -> Result<(), String> {
        self.kv.lock().unwrap().insert(key.into(), value.to_vec());
        Ok(())
    }
    async fn kv_take(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.kv.lock().unwrap().remove(key))
    }
    async fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.kv.lock().unwrap().remove(key);
        Ok(())
    }
    async fn find_account(&self, email: &str) -> Result<Option<Account>, String> {
        Ok(self
            .accounts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.email == email)
            .cloned())
    }
    async fn credential(&self, _: &str, _: &str, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    async fn set_credential(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<(), String> {
        Err("not kept here".into())
    }
    async fn argon2_hash(&self, _: &str) -> Result<String, String> {
        Err("not here".into())
    }
    async fn argon2_verify(&self, _: &str, _: &str) -> Result<bool, String> {
        Ok(false)
    }
    async fn send_email(&self, user: &str, subject: &str, body: &str) -> Result<(), String> {
        self.sent
            .lock()
            .unwrap()
            .push((user.into(), subject.into(), body.into()));
        Ok(())
    }
}

fn limits() -> Limits {
    Limits {
        guest_time: Duration::from_millis(300),
        step_time: Duration::from_secs(2),
        memory_bytes: 32 << 20,
        ..Limits::default()
    }
}

async fn host_with(limits: Limits, granted: &[Capability]) -> (Host, Arc<Memory>) {
    let mem = Arc::new(Memory::default());
    let host = Host::new(limits, granted, mem.clone()).unwrap();
    (host, mem)
}

async fn hostile(limits: Limits) -> (Host, Arc<Memory>) {
    let (host, mem) = host_with(limits, &Capability::ALL).await;
    host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap();
    (host, mem)
}

fn req(params: &[(&str, &str)]) -> StepRequest {
    StepRequest {
        config: "{}".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        flow_id: "flow".into(),
        callback_url: "http://127.0.0.1/callback".into(),
        user_id: None,
    }
}

/// `complete` of the hostile plugin doing `what`, for organization `org`: the message of
/// its bad-request answer, or the error.
async fn hostile_says(
    host: &Host,
    org: &str,
    what: &str,
    arg: &str,
) -> Result<String, PluginError> {
    match host
        .complete("hostile", org, req(&[("do", what), ("arg", arg)]))
        .await?
    {
        Err(Failure::BadRequest(m)) => Ok(m),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn first_party_plugins_load_and_describe_themselves() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    for e in embedded::ALL {
        let p = host.install(e.manifest, e.wasm).await.unwrap();
        assert_eq!(p.description.id, p.manifest.id);
        assert_eq!(p.description.version, p.manifest.version);
    }
    let d = host.describe("password").await.unwrap();
    assert_eq!(d.display_name, "Password");
    assert_eq!(d.kind, Kind::Strategy);
    match host
        .begin("password", "org1", req(&[]))
        .await
        .unwrap()
        .unwrap()
    {
        BeginResult::Form(fields) => {
            let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["email", "password"]);
            assert_eq!(fields[1].input_type, "password");
            assert_eq!(fields[1].autocomplete.as_deref(), Some("current-password"));
        }
        other => panic!("{other:?}"),
    }
    // No account: a refusal that names nobody, not an error.
    let r = host
        .complete(
            "password",
            "org1",
            req(&[("email", "a@example.com"), ("password", "pw")]),
        )
        .await
        .unwrap();
    assert_eq!(r, Err(Failure::InvalidCredentials(None)));
    let r = host.complete("password", "org1", req(&[])).await.unwrap();
    assert!(matches!(r, Err(Failure::BadRequest(_))), "{r:?}");
    assert!(matches!(
        host.describe("nope").await,
        Err(PluginError::Unknown(_))
    ));
}

#[tokio::test]
async fn an_endless_loop_is_stopped_and_the_host_carries_on() {
    let (host, _) = hostile(limits()).await;
    let t = Instant::now();
    let e = hostile_says(&host, "o", "loop", "").await.unwrap_err();
    assert!(matches!(e, PluginError::GuestTime { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(e.kind(), "guest_time");
    // The next step of the same plugin runs normally.
    assert_eq!(hostile_says(&host, "o", "std", "").await.unwrap(), "std 1");
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap() {
    let (host, _) = hostile(limits()).await;
    let e = hostile_says(&host, "o", "oom", "").await.unwrap_err();
    assert!(
        matches!(e, PluginError::Memory { limit, .. } if limit == 32 << 20),
        "{e}"
    );
    assert_eq!(hostile_says(&host, "o", "std", "").await.unwrap(), "std 1");
}

#[tokio::test]
async fn a_panic_fails_the_step_with_its_message() {
    let (host, _) = hostile(limits()).await;
    let e = hostile_says(&host, "o", "panic", "").await.unwrap_err();
    match &e {
        PluginError::Trap { plugin, message } => {
            assert_eq!(plugin, "hostile");
            assert!(message.contains("asked to panic"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn an_enormous_answer_is_refused() {
    let (host, _) = hostile(limits()).await;
    let e = hostile_says(&host, "o", "flood", "").await.unwrap_err();
    assert!(
        matches!(e, PluginError::OutputTooLarge { size, limit: 65536, .. } if size == 8 << 20),
        "{e}"
    );
}

#[tokio::test]
async fn std_runs_but_files_and_the_environment_are_not_there() {
    let (host, _) = hostile(limits()).await;
    assert_eq!(hostile_says(&host, "o", "std", "").await.unwrap(), "std 1");
    assert_eq!(
        hostile_says(&host, "o", "env", "").await.unwrap(),
        "env None"
    );
    let e = hostile_says(&host, "o", "file", "").await.unwrap_err();
    match &e {
        PluginError::Trap { message, .. } => {
            assert!(message.contains("wasi:filesystem"), "{message}")
        }
        other => panic!("{other}"),
    }
    let said = hostile_says(&host, "o", "time", "").await.unwrap();
    let (t, n) = said.split_once(' ').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now.abs_diff(t.parse::<u64>().unwrap()) < 5_000, "{said}");
    assert_eq!(n, "16");
}

#[tokio::test]
async fn each_organization_has_its_own_key_value_space() {
    let (host, mem) = hostile(limits()).await;
    assert_eq!(
        hostile_says(&host, "org-a", "kv-set", "secret")
            .await
            .unwrap(),
        "set"
    );
    assert_eq!(
        hostile_says(&host, "org-b", "kv-get", "").await.unwrap(),
        "nothing"
    );
    assert_eq!(
        hostile_says(&host, "org-a", "kv-get", "").await.unwrap(),
        "found secret"
    );
    let keys: Vec<String> = mem.kv.lock().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["plugin-kv:hostile:org-a:shared"]);
    assert_eq!(
        hostile_says(&host, "org-a", "kv-take", "").await.unwrap(),
        "took secret"
    );
    assert_eq!(
        hostile_says(&host, "org-a", "kv-take", "").await.unwrap(),
        "nothing"
    );
}

#[tokio::test]
async fn slow_host_calls_count_against_the_step_not_the_guest() {
    let (host, mem) = hostile(limits()).await;
    // 0.5 s in a host call: more than the guest budget (0.3 s), within the step's 2 s.
    *mem.slow.lock().unwrap() = Some(Duration::from_millis(500));
    assert_eq!(
        hostile_says(&host, "o", "kv-get", "").await.unwrap(),
        "nothing"
    );
    // 3 s: past the step's deadline.
    *mem.slow.lock().unwrap() = Some(Duration::from_secs(3));
    let e = hostile_says(&host, "o", "kv-get", "").await.unwrap_err();
    assert!(matches!(e, PluginError::StepTime { .. }), "{e}");
}

#[tokio::test]
async fn steps_beyond_the_pool_are_refused_as_busy() {
    let (host, mem) = hostile(Limits {
        concurrent_steps: 1,
        ..limits()
    })
    .await;
    *mem.slow.lock().unwrap() = Some(Duration::from_millis(800));
    let host = Arc::new(host);
    let first = {
        let host = host.clone();
        tokio::spawn(async move { hostile_says(&host, "o", "kv-get", "").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = hostile_says(&host, "o", "std", "").await.unwrap_err();
    assert!(matches!(e, PluginError::Busy), "{e}");
    assert_eq!(first.await.unwrap().unwrap(), "nothing");
    assert_eq!(hostile_says(&host, "o", "std", "").await.unwrap(), "std 1");
}

#[tokio::test]
async fn an_undeclared_capability_is_refused_at_load() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    let manifest = HOSTILE_MANIFEST.replace(r#", "kv""#, "");
    assert_ne!(manifest, HOSTILE_MANIFEST);
    let e = host.install(&manifest, HOSTILE).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("imports the capability `kv` but its manifest does not declare it"),
        "{e}"
    );
    assert!(matches!(
        host.plugin("hostile").await,
        Err(PluginError::Unknown(_))
    ));
}

#[tokio::test]
async fn a_capability_the_platform_withholds_is_refused_at_load() {
    let granted: Vec<_> = Capability::ALL
        .into_iter()
        .filter(|c| *c != Capability::Kv)
        .collect();
    let (host, _) = host_with(limits(), &granted).await;
    let e = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("`kv`, which this platform does not grant"),
        "{e}"
    );
}

#[tokio::test]
async fn third_party_plugins_get_only_the_capabilities_the_platform_grants_them() {
    let mut l = limits();
    l.third_party_capabilities = Capability::ALL
        .into_iter()
        .filter(|c| *c != Capability::Email)
        .collect();
    let (host, _) = host_with(l, &Capability::ALL).await;
    let e = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap_err();
    assert!(
        e.to_string().contains(
            "declares the capability `email`, which this platform does not grant to plugins it was not built with"
        ),
        "{e}"
    );
    assert!(matches!(
        host.plugin("hostile").await,
        Err(PluginError::Unknown(_))
    ));
    // A built-in plugin still gets what it needs (here the password plugin, which declares
    // capabilities third-party plugins are not granted either).
    let mut l = limits();
    l.third_party_capabilities = Vec::new();
    let (host, _) = host_with(l, &Capability::ALL).await;
    host.register(embedded::PASSWORD.manifest, embedded::PASSWORD.wasm)
        .unwrap();
    assert!(host.plugin("password").await.is_ok());
    let e = host
        .install(embedded::PASSWORD.manifest, embedded::PASSWORD.wasm)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not grant"), "{e}");
}

#[tokio::test]
async fn malformed_components_are_refused() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    let core_module = b"\0asm\x01\0\0\0";
    for (bytes, needle) in [
        (&b"not wasm at all"[..], "not a valid WebAssembly component"),
        (&core_module[..], "not a valid WebAssembly component"),
        (
            &HOSTILE[..HOSTILE.len() / 2],
            "not a valid WebAssembly component",
        ),
    ] {
        let e = host.install(HOSTILE_MANIFEST, bytes).await.unwrap_err();
        assert!(matches!(e, PluginError::Rejected(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    // A component whose manifest claims to be something else.
    let e = host
        .install(
            &embedded::PASSWORD
                .manifest
                .replace("id = \"password\"", "id = \"impostor\""),
            embedded::PASSWORD.wasm,
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("describes itself as `password`"),
        "{e}"
    );
    let e = host.install("id = 1", HOSTILE).await.unwrap_err();
    assert!(e.to_string().contains("plugin.toml"), "{e}");
    assert!(host.plugins().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_configuration_schema_is_the_manifests_or_describes_and_they_agree() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    // The template's schema is in its manifest, and `describe` answers none; its secret field
    // is marked `writeOnly`.
    let p = host
        .install(embedded::TEMPLATE.manifest, embedded::TEMPLATE.wasm)
        .await
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&p.description.config_schema).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["code"]), "{schema}");
    assert_eq!(schema["properties"]["code"]["writeOnly"], true, "{schema}");
    assert_eq!(schema["properties"]["code"]["minLength"], 1, "{schema}");
    // Without it there is no schema at all.
    let bare = embedded::TEMPLATE
        .manifest
        .split("# Configuration fields")
        .next()
        .unwrap();
    assert_ne!(bare, embedded::TEMPLATE.manifest);
    let e = host
        .install(bare, embedded::TEMPLATE.wasm)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("describe answers no configuration schema, and its manifest has none"),
        "{e}"
    );
    // A manifest's schema that is not what `describe` answers.
    let other = format!("{HOSTILE_MANIFEST}\n[config-schema]\ntype = \"object\"\n");
    let e = host.install(&other, HOSTILE).await.unwrap_err();
    assert!(e.to_string().contains("other than its manifest's"), "{e}");
    // The same schema in both: accepted. A secret field the schema lacks: refused.
    let same = format!(
        "{HOSTILE_MANIFEST}\n[config-schema]\ntype = \"object\"\nadditionalProperties = false\n"
    );
    host.install(&same, HOSTILE).await.unwrap();
    let e = host
        .install(
            &format!("{HOSTILE_MANIFEST}secret-fields = [\"key\"]\n"),
            HOSTILE,
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("secret field `key` is not a property of its configuration schema"),
        "{e}"
    );
}

/// A component that imports an empty instance under each of `names`, and exports nothing.
fn component_importing(names: &[&str]) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut c = Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    c.section(&types);
    let mut imports = ComponentImportSection::new();
    for name in names {
        imports.import(*name, ComponentTypeRef::Instance(0));
    }
    c.section(&imports);
    c.finish()
}

#[tokio::test]
async fn components_that_reach_for_the_system_or_miss_the_world_are_refused() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    // Well-formed components, checked against the world and the manifest.
    for (bytes, needle) in [
        (
            component_importing(&["wasi:sockets/tcp@0.2.0"]),
            "imports `wasi:sockets/tcp@0.2.0`; plugins get no files, sockets or other system access",
        ),
        (
            component_importing(&["wasi:sockets/ip-name-lookup@0.2.0"]),
            "plugins get no files, sockets",
        ),
        (
            component_importing(&["wasi:http/outgoing-handler@0.2.0"]),
            "plugins get no files, sockets",
        ),
        (
            component_importing(&["gatehouse:authn/teleport@0.1.0"]),
            "which no host provides",
        ),
        (
            component_importing(&["gatehouse:authn/kv@0.2.0"]),
            "this host implements gatehouse:authn 0.1",
        ),
        // Imports nothing, exports nothing: not a plugin.
        (
            component_importing(&[]),
            "does not implement the world gatehouse:authn/authn-plugin",
        ),
        // Only WASI's harmless parts, and still no exports.
        (
            component_importing(&["wasi:cli/environment@0.2.0"]),
            "does not implement the world",
        ),
    ] {
        let e = host.install(HOSTILE_MANIFEST, &bytes).await.unwrap_err();
        assert!(matches!(e, PluginError::Rejected(_)), "{e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    assert!(host.plugins().await.unwrap().is_empty());
}

#[tokio::test]
async fn registered_plugins_are_loaded_on_first_use() {
    let (host, _) = host_with(limits(), &Capability::ALL).await;
    host.register(embedded::PASSWORD.manifest, embedded::PASSWORD.wasm)
        .unwrap();
    host.register(HOSTILE_MANIFEST, &HOSTILE[..HOSTILE.len() / 2])
        .unwrap();
    assert_eq!(host.ids(), ["hostile", "password"]);
    // The good one loads when first used, and its checks run then.
    let d = host.describe("password").await.unwrap();
    assert_eq!(d.id, "password");
    let e = host.describe("hostile").await.unwrap_err();
    assert!(
        e.to_string().contains("not a valid WebAssembly component"),
        "{e}"
    );
    assert!(host.plugins().await.is_err());
    // A bad manifest is refused when registering.
    assert!(matches!(
        host.register("id = 1", embedded::PASSWORD.wasm),
        Err(PluginError::Rejected(_))
    ));
}

/// A small HTTP server on loopback for the `http` capability's tests: `/ok` answers `hello`,
/// `/redirect-in` sends to `/ok`, `/redirect-out` to a host the plugin may not reach, `/big`
/// streams 2 MiB with no length. It keeps the `Host` header of every request it reads.
struct Loopback {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn loopback() -> Loopback {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let host = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("host: ")
                            .or_else(|| l.strip_prefix("Host: "))
                    })
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(host);
                let reply = match path.as_str() {
                    "/ok" => "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_string(),
                    // Answers after 3 s.
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlate".to_string()
                    }
                    "/redirect-in" => "HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                    "/redirect-out" => format!("HTTP/1.1 302 Found\r\nlocation: http://elsewhere.localhost:{port}/ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
                    "/redirect-ip" => format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}/ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
                    "/big" => {
                        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").await;
                        let block = vec![b'x'; 64 << 10];
                        for _ in 0..32 {
                            if sock.write_all(&block).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Loopback { port, seen }
}

fn loopback_limits(allow_loopback: bool) -> Limits {
    Limits {
        http: HttpPolicy {
            allow_loopback,
            ..HttpPolicy::default()
        },
        ..limits()
    }
}

/// The hostile plugin allowed to reach `hosts`, and the hosts named by its configuration's
/// `issuer`.
async fn fetcher(allow_loopback: bool, hosts: &[String]) -> Host {
    let (host, _) = host_with(loopback_limits(allow_loopback), &Capability::ALL).await;
    let list = hosts
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest =
        format!("{HOSTILE_MANIFEST}\nallowed-hosts = [{list}]\nconfig-hosts = [\"issuer\"]\n");
    host.install(&manifest, HOSTILE).await.unwrap();
    host
}

async fn fetch(host: &Host, config: &str, url: &str, header: Option<&str>) -> String {
    let mut params = vec![("do", "fetch"), ("arg", url)];
    if let Some(h) = header {
        params.push(("header", h));
    }
    let mut r = req(&params);
    r.config = config.into();
    match host.complete("hostile", "org1", r).await.unwrap() {
        Err(Failure::BadRequest(m)) => m,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn http_reaches_allowed_hosts_only() {
    let server = loopback().await;
    let port = server.port;
    let host = fetcher(true, &[format!("localhost:{port}")]).await;
    let base = format!("http://localhost:{port}");

    assert_eq!(
        fetch(&host, "{}", &format!("{base}/ok"), None).await,
        "status 200 body hello"
    );
    assert_eq!(
        fetch(&host, "{}", &format!("{base}/redirect-in"), None).await,
        "status 200 body hello"
    );
    assert_eq!(
        server.seen.lock().unwrap().clone(),
        vec![format!("localhost:{port}"); 3]
    );

    for (url, header, needle) in [
        // Another host, and the allowed host on another port.
        (
            format!("http://elsewhere.localhost:{port}/ok"),
            None,
            "is not a host this plugin may reach",
        ),
        (
            "http://localhost:1/ok".to_string(),
            None,
            "`localhost:1` is not a host",
        ),
        // IP literals, whatever they point at.
        (
            format!("http://127.0.0.1:{port}/ok"),
            None,
            "names an IP address",
        ),
        (
            format!("http://[::1]:{port}/ok"),
            None,
            "names an IP address",
        ),
        (
            "http://2130706433/ok".to_string(),
            None,
            "names an IP address",
        ),
        // A forged Host header, and other framing headers.
        (
            format!("{base}/ok"),
            Some("Host: internal.example"),
            "`Host` is set by the host",
        ),
        (
            format!("{base}/ok"),
            Some("transfer-encoding: chunked"),
            "set by the host",
        ),
        // Redirects to a host it may not reach, or to an address.
        (
            format!("{base}/redirect-out"),
            None,
            "is not a host this plugin may reach",
        ),
        (format!("{base}/redirect-ip"), None, "names an IP address"),
        // Credentials in the URL, and schemes other than HTTP.
        (
            format!("http://user:pw@localhost:{port}/ok"),
            None,
            "credentials",
        ),
        ("file:///etc/passwd".to_string(), None, "names no host"),
        (format!("ftp://localhost:{port}/"), None, "not HTTP"),
        // A body larger than the cap, streamed with no length.
        (format!("{base}/big"), None, "larger than 1048576 bytes"),
    ] {
        let said = fetch(&host, "{}", &url, header).await;
        assert!(
            said.starts_with("refused: ") && said.contains(needle),
            "{url}: {said}"
        );
    }
    // Of those, only the redirects and the big body reached the server: every other refusal
    // came before a connection.
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");

    // A host named by the organization's configuration (an issuer) is reachable in the steps
    // that carry that configuration, and only in those.
    let other = loopback().await;
    let url = format!("http://localhost:{}/ok", other.port);
    let config = format!(r#"{{"issuer":"http://localhost:{}/realms/x"}}"#, other.port);
    assert_eq!(
        fetch(&host, &config, &url, None).await,
        "status 200 body hello"
    );
    assert!(
        fetch(&host, "{}", &url, None)
            .await
            .contains("is not a host this plugin may reach")
    );
    assert!(
        fetch(
            &host,
            r#"{"issuer":"http://127.0.0.1/"}"#,
            &format!("http://127.0.0.1:{}/ok", other.port),
            None
        )
        .await
        .contains("names an IP address")
    );
}

#[tokio::test]
async fn http_refuses_names_that_resolve_to_private_addresses() {
    let server = loopback().await;
    let port = server.port;
    // The platform of production: loopback is off limits, and so is plain HTTP.
    let host = fetcher(false, &["localhost".into(), format!("localhost:{port}")]).await;
    let said = fetch(&host, "{}", &format!("https://localhost:{port}/ok"), None).await;
    assert!(
        said.contains("`localhost` resolves to")
            && said.contains("an address plugins may not reach"),
        "{said}"
    );
    let said = fetch(&host, "{}", &format!("http://localhost:{port}/ok"), None).await;
    assert!(said.contains("plugins may use only HTTPS"), "{said}");
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn http_refuses_names_pinned_to_private_addresses() {
    // Names whose addresses come from the platform's fixed table are vetted like DNS's
    // answers: a name for a private, link-local (cloud metadata), CGNAT or IPv4-mapped loopback
    // address is refused before any connection, on a platform that even allows loopback.
    let names = [
        ("intranet.example", "10.0.0.5"),
        ("metadata.example", "169.254.169.254"),
        ("carrier.example", "100.64.0.1"),
        ("mapped.example", "::ffff:10.1.2.3"),
        ("unique.example", "fd00::1"),
    ];
    let mut limits = loopback_limits(true);
    for (name, ip) in names {
        limits
            .http
            .fixed_addresses
            .insert(name.into(), vec![ip.parse().unwrap()]);
    }
    // One good address and one bad: refused as a whole.
    limits.http.fixed_addresses.insert(
        "mixed.example".into(),
        vec!["127.0.0.1".parse().unwrap(), "192.168.1.1".parse().unwrap()],
    );
    let (host, _) = host_with(limits, &Capability::ALL).await;
    let list = names
        .iter()
        .map(|(n, _)| format!("{n:?}"))
        .chain(["\"mixed.example\"".to_string()])
        .collect::<Vec<_>>()
        .join(", ");
    host.install(
        &format!("{HOSTILE_MANIFEST}\nallowed-hosts = [{list}]\n"),
        HOSTILE,
    )
    .await
    .unwrap();
    for (name, ip) in names
        .iter()
        .copied()
        .chain([("mixed.example", "192.168.1.1")])
    {
        let said = fetch(&host, "{}", &format!("https://{name}/ok"), None).await;
        assert!(
            said.contains(&format!("`{name}` resolves to"))
                && said.contains("an address plugins may not reach")
                && said.contains(&ip.parse::<std::net::IpAddr>().unwrap().to_string()),
            "{name}: {said}"
        );
    }
}

#[tokio::test]
async fn http_requests_have_a_timeout() {
    let server = loopback().await;
    let port = server.port;
    let mut limits = loopback_limits(true);
    limits.http.timeout = Duration::from_millis(300);
    let (host, _) = host_with(limits, &Capability::ALL).await;
    host.install(
        &format!("{HOSTILE_MANIFEST}\nallowed-hosts = [\"localhost:{port}\"]\n"),
        HOSTILE,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let said = fetch(&host, "{}", &format!("http://localhost:{port}/slow"), None).await;
    assert!(said.starts_with("refused:"), "{said}");
    assert!(said.contains("did not answer in time"), "{said}");
    // The plugin was told well before the server answered.
    assert!(started.elapsed() < Duration::from_secs(3), "{said}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_plugin_that_does_not_declare_http_cannot_load_with_it() {
    let (host, _) = host_with(loopback_limits(true), &Capability::ALL).await;
    let manifest = HOSTILE_MANIFEST.replace(r#", "http""#, "");
    assert_ne!(manifest, HOSTILE_MANIFEST);
    let e = host.install(&manifest, HOSTILE).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("`http` but its manifest does not declare it"),
        "{e}"
    );
    // Nor when the platform withholds it.
    let (host, _) = host_with(
        loopback_limits(true),
        &[
            Capability::Log,
            Capability::Clock,
            Capability::Random,
            Capability::Kv,
        ],
    )
    .await;
    let e = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap_err();
    assert!(e.to_string().contains("does not grant"), "{e}");
}

/// The answer of the hostile plugin's `mail` step with these parameters.
async fn mail(host: &Host, params: &[(&str, &str)]) -> String {
    let mut all = vec![("do", "mail")];
    all.extend_from_slice(params);
    match host.complete("hostile", "org1", req(&all)).await.unwrap() {
        Err(Failure::BadRequest(m)) => m,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn email_reaches_users_only_one_plain_message_a_step() {
    let (host, mem) = hostile(limits()).await;
    // One message per step: the second is refused.
    let said = mail(&host, &[("arg", "u1"), ("n", "2")]).await;
    assert_eq!(
        said, "sent; refused: a step may send at most 1 message",
        "{said}"
    );
    // The next step may send again.
    assert_eq!(mail(&host, &[("arg", "u1")]).await, "sent");
    // A subject that is not one line, or too long, or no user: refused before anything is sent.
    let long = "s".repeat(201);
    for (user, subject) in [
        ("u1", "Hello\r\nBcc: victim@example.com"),
        ("u1", long.as_str()),
        ("u1", " "),
        ("", "Hello"),
    ] {
        let said = mail(&host, &[("arg", user), ("subject", subject)]).await;
        assert!(said.starts_with("refused: "), "{subject:?}: {said}");
    }
    let sent = mem.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|(u, s, b)| u == "u1" && s == "Hello" && b == "plain text")
    );
}

#[tokio::test]
async fn a_platform_that_does_not_grant_email_refuses_a_plugin_that_needs_it() {
    let granted: Vec<Capability> = Capability::ALL
        .into_iter()
        .filter(|c| *c != Capability::Email)
        .collect();
    let (host, _) = host_with(limits(), &granted).await;
    let e = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap_err();
    assert!(e.to_string().contains("`email`"), "{e}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn compiled_components_are_kept_on_disk_and_a_damaged_cache_is_ignored() {
    let dir = std::env::temp_dir().join(format!("gh-plugin-cache-{}", ulid::Ulid::new()));
    let limits = Limits {
        compile_cache: Some(dir.clone()),
        ..Limits::default()
    };
    let (host, _) = host_with(limits.clone(), &Capability::ALL).await;
    let p = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap();
    assert_eq!(host.compile_cache_counts(), Some((0, 1)));
    drop(host);
    let kept = files_under(&dir);
    assert!(!kept.is_empty(), "nothing was kept in {}", dir.display());
    let size: u64 = kept
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(size > HOSTILE.len() as u64 / 2, "{size} bytes kept");

    // Another host (a restart) loads it from there, without compiling, and it runs.
    let (host, _) = host_with(limits.clone(), &Capability::ALL).await;
    assert_eq!(host.compile_cache_counts(), Some((0, 0)));
    let again = host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap();
    assert_eq!(again.sha256, p.sha256);
    assert_eq!(host.compile_cache_counts(), Some((1, 0)));
    assert!(matches!(
        host.begin("hostile", "org", req(&[])).await.unwrap(),
        Ok(BeginResult::Form(_))
    ));
    drop(host);

    // Damaged entries are not trusted: the component is compiled again and runs.
    for f in files_under(&dir) {
        std::fs::write(&f, b"not compiled code").unwrap();
    }
    let (host, _) = host_with(limits, &Capability::ALL).await;
    host.install(HOSTILE_MANIFEST, HOSTILE).await.unwrap();
    assert_eq!(host.compile_cache_counts(), Some((0, 1)));
    assert!(matches!(
        host.begin("hostile", "org", req(&[])).await.unwrap(),
        Ok(BeginResult::Form(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
