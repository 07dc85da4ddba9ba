//! Starts the real `gatehouse` binary on a free port with its own data dir, API key and
//! database (SQLite, or a fresh PostgreSQL database), and talks to it over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The PostgreSQL server the tests create their databases on.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The Redis server of the multi-node tests.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Which database a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async scenario `fn name(Backend)` once per backend, as tests `name::sqlite` and
/// `name::postgres`.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name(crate::harness::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name(crate::harness::Backend::Postgres).await;
            }
        }
    )*};
}
pub(crate) use for_each_backend;

/// The workspace root (`tests/..`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `gatehouse` binary: `GATEHOUSE_BIN`, or `<target>/debug/gatehouse` built once per
/// test process with `cargo build --workspace --tests --bins` (a no-op after the test run's
/// own build, whose dependency features it shares).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GATEHOUSE_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "GATEHOUSE_BIN `{}` is not a file",
                bin.display()
            );
            return bin;
        }
        // The test executable is `<target>/debug/deps/gatehouse-<hash>`.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut args = vec![
            "build",
            "--quiet",
            // The whole workspace's tests and binaries, as the test run selected them: the
            // same features everywhere, so the binary reuses every dependency the run built
            // (building the one package alone resolves other features and rebuilds minutes'
            // worth of crates).
            "--workspace",
            "--tests",
            "--bins",
        ];
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let out = Command::new(cargo)
            .args(&args)
            .current_dir(workspace_dir())
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .output()
            .expect("cannot run cargo to build the gatehouse binary");
        assert!(
            out.status.success(),
            "cannot build the gatehouse binary:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("gatehouse");
        assert!(
            bin.is_file(),
            "built gatehouse but `{}` does not exist",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A fresh scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-test-{label}-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn psql(sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([PG_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("cannot run psql")
}

/// A PostgreSQL database of its own, dropped with it.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create() -> Self {
        let name = format!(
            "gatehouse_t_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let out = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "cannot create database `{name}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Self { name, url }
    }

    /// Runs SQL in this database and returns its unaligned output.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([self.url.as_str(), "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// How to start a server.
#[derive(Clone)]
pub struct ServerOptions {
    pub backend: Backend,
    /// Share a PostgreSQL database with another server instead of creating one.
    pub database: Option<Arc<PgDatabase>>,
    /// `REDIS_URL` and `GATEHOUSE_REDIS_PREFIX`.
    pub redis: Option<(String, String)>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Start as the README's command does: no `GATEHOUSE_DATA_DIR`, so the data dir is the
    /// default `./data`, relative to the server's working directory (the test's own scratch
    /// directory). `data_dir()` is the same directory either way.
    pub default_data_dir: bool,
}

impl ServerOptions {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            database: None,
            redis: None,
            env: Vec::new(),
            default_data_dir: false,
        }
    }
}

/// A running `gatehouse serve`, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
    pub database: Option<Arc<PgDatabase>>,
    dir: Arc<TempDir>,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    /// The body as JSON, failing the test if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {}, body {:?}",
                self.status, self.text
            )
        })
    }

    /// The JSON body of a 2xx answer.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {} {}",
            self.status,
            self.text
        );
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts an error answer: this status, a JSON body with `code` (this one when given)
    /// and a non-empty `message`, and a request id.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: Option<&str>) -> Value {
        assert_eq!(
            self.status, status,
            "want status {status}, got {} with body {}",
            self.status, self.text
        );
        let v: Value = serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "error body is not JSON ({e}): status {}, body {:?}",
                self.status, self.text
            )
        });
        let got_code = v["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error body has no string `code`: {v}"));
        assert!(!got_code.is_empty(), "empty error code: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error body has no `message`: {v}"
        );
        if let Some(code) = code {
            assert_eq!(got_code, code, "error code of {v}");
        }
        let id = self.header("x-request-id").unwrap_or_default();
        assert!(!id.is_empty(), "error without x-request-id: {v}");
        assert_eq!(
            v["request_id"].as_str(),
            Some(id.as_str()),
            "the error body's request_id is the x-request-id header: {v}"
        );
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
            (v["code"].as_str(), v["message"].as_str()),
            "the error object repeats code and message: {v}"
        );
        v
    }

    /// The consistency token of the body.
    pub fn token(&self) -> String {
        let v = self.json();
        v["consistency_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no consistency_token in {v}"))
            .to_string()
    }
}

impl Server {
    /// A server on SQLite or a fresh PostgreSQL database.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(ServerOptions::new(backend)).await
    }

    pub async fn start_with(opts: ServerOptions) -> Self {
        let database = match (opts.backend, &opts.database) {
            (Backend::Postgres, Some(db)) => Some(db.clone()),
            (Backend::Postgres, None) => Some(Arc::new(
                tokio::task::spawn_blocking(PgDatabase::create)
                    .await
                    .unwrap(),
            )),
            (Backend::Sqlite, _) => None,
        };
        let bin = tokio::task::spawn_blocking(binary).await.unwrap();
        let dir = Arc::new(TempDir::new("server"));
        let key = format!("test_{}", ulid::Ulid::new());
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GATEHOUSE_ADDR", format!("127.0.0.1:{port}"))
                .env("GATEHOUSE_API_KEYS", &key)
                .env("GATEHOUSE_WORKERS", "2")
                .env("GATEHOUSE_DB_POOL", "4")
                .env("GATEHOUSE_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if opts.default_data_dir {
                cmd.current_dir(dir.path());
            } else {
                cmd.env("GATEHOUSE_DATA_DIR", dir.path().join("data"));
            }
            if let Some(db) = &database {
                cmd.env("DATABASE_URL", &db.url);
            }
            if let Some((url, prefix)) = &opts.redis {
                cmd.env("REDIS_URL", url)
                    .env("GATEHOUSE_REDIS_PREFIX", prefix);
            }
            // The console client takes the code grant at the tests' usual redirect URI, so
            // that tests get tokens for Gatehouse's own APIs (`/api/…`) by signing in to it.
            if !opts
                .env
                .iter()
                .any(|(k, _)| k == "GATEHOUSE_CONSOLE_REDIRECT_URIS")
            {
                cmd.env("GATEHOUSE_CONSOLE_REDIRECT_URIS", crate::login::REDIRECT);
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", bin.display()));
            let mut server = Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
                key: key.clone(),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap(),
                database: database.clone(),
                dir: dir.clone(),
            };
            match server.wait_healthy().await {
                Ok(()) => return server,
                // Most likely another process took the port in the meantime: try another.
                Err(e) => last_log = format!("{e}\n{}", server.log()),
            }
        }
        panic!("gatehouse did not become healthy:\n{last_log}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("gatehouse exited with {status}"));
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no healthy /healthz within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server printed so far.
    /// Sends the server SIGTERM (as an orchestrator stopping it does) and waits up to
    /// `within` for it to exit; its exit status, or `None` if it was still running.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The server's data dir (`GATEHOUSE_DATA_DIR`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Any request, with full control over body, content type and credentials.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        auth: Option<&str>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let r = req.send().await.unwrap_or_else(|e| {
            panic!("request to {path} failed: {e}\nserver log:\n{}", self.log())
        });
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            text,
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// An authenticated JSON request.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let ct = body.as_ref().map(|_| "application/json");
        self.raw(method, path, ct, body, Some(&self.bearer())).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None).await
    }

    // ---- helpers ----

    pub async fn create_store(&self, name: &str) -> String {
        let v = self.post("/stores", &json!({ "name": name })).await.ok();
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no store id in {v}"))
            .to_string()
    }

    pub async fn write_model(&self, store: &str, model: &Value) -> String {
        let v = self
            .post(&format!("/stores/{store}/authorization-models"), model)
            .await
            .ok();
        v["authorization_model_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no model id in {v}"))
            .to_string()
    }

    /// A store with [`sample_model`] written to it: `(store, model id)`.
    pub async fn sample_store(&self) -> (String, String) {
        let store = self.create_store("sample").await;
        let model = self.write_model(&store, &sample_model()).await;
        (store, model)
    }

    /// Writes and deletes tuples in one request.
    pub async fn write(&self, store: &str, writes: &[Value], deletes: &[Value]) -> Resp {
        let mut body = json!({});
        if !writes.is_empty() {
            body["writes"] = json!({ "tuple_keys": writes });
        }
        if !deletes.is_empty() {
            body["deletes"] = json!({ "tuple_keys": deletes });
        }
        self.post(&format!("/stores/{store}/write"), &body).await
    }

    /// Writes tuples, failing the test on error; returns the consistency token.
    pub async fn write_ok(&self, store: &str, writes: &[Value]) -> String {
        let r = self.write(store, writes, &[]).await;
        r.ok();
        r.token()
    }

    /// A check's full answer.
    pub async fn check_req(&self, store: &str, body: &Value) -> Resp {
        self.post(&format!("/stores/{store}/check"), body).await
    }

    /// `user relation object`, failing the test on error.
    pub async fn check(&self, store: &str, user: &str, relation: &str, object: &str) -> bool {
        self.check_with(store, json!({ "tuple_key": tk(user, relation, object) }))
            .await
    }

    /// A check with any extra fields, failing the test on error.
    pub async fn check_with(&self, store: &str, body: Value) -> bool {
        let v = self.check_req(store, &body).await.ok();
        v["allowed"]
            .as_bool()
            .unwrap_or_else(|| panic!("no `allowed` in {v} for {body}"))
    }

    /// All tuples of a store (or matching `tuple_key`), following continuation tokens.
    pub async fn read_all(&self, store: &str, tuple_key: Option<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let mut body = json!({ "page_size": 50, "continuation_token": token });
            if let Some(k) = &tuple_key {
                body["tuple_key"] = k.clone();
            }
            let v = self
                .post(&format!("/stores/{store}/read"), &body)
                .await
                .ok();
            out.extend(v["tuples"].as_array().unwrap().iter().cloned());
            token = v["continuation_token"].as_str().unwrap_or("").to_string();
            if token.is_empty() {
                return out;
            }
        }
        panic!("read did not finish after 1000 pages");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "---- gatehouse log ({}) ----\n{}",
                self.base,
                tail.join("\n")
            );
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `{"user", "relation", "object"}`.
pub fn tk(user: &str, relation: &str, object: &str) -> Value {
    json!({ "user": user, "relation": relation, "object": object })
}

/// A tuple key under a condition with bound context.
pub fn tk_cond(user: &str, relation: &str, object: &str, condition: &str, context: Value) -> Value {
    json!({ "user": user, "relation": relation, "object": object, "condition": { "name": condition, "context": context } })
}

/// The sorted `object#relation@user` keys of read tuples.
pub fn keys(tuples: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = tuples
        .iter()
        .map(|t| {
            let k = &t["key"];
            format!(
                "{}#{}@{}",
                k["object"].as_str().unwrap(),
                k["relation"].as_str().unwrap(),
                k["user"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

fn direct(types: &[Value]) -> Value {
    json!({ "directly_related_user_types": types })
}

fn this() -> Value {
    json!({ "this": {} })
}

fn computed(relation: &str) -> Value {
    json!({ "computedUserset": { "object": "", "relation": relation } })
}

/// The JSON form (OpenFGA schema 1.1) of:
///
/// ```text
/// model
///   schema 1.1
/// type user
/// type group
///   relations
///     define member: [user, user:*, group#member]
/// type folder
///   relations
///     define owner: [user]
///     define viewer: [user, group#member] or owner
/// type document
///   relations
///     define parent: [folder]
///     define owner: [user]
///     define editor: [user, group#member] or owner
///     define viewer: [user, user:*, group#member] or editor or viewer from parent
///     define approver: [user]
///     define blocked: [user]
///     define can_share: editor and approver
///     define can_view: viewer but not blocked
///     define spender: [user with within_limit]
/// condition within_limit(amount: int, limit: int) {
///   amount <= limit
/// }
/// ```
pub fn sample_model() -> Value {
    let user = json!({ "type": "user" });
    let user_wild = json!({ "type": "user", "wildcard": {} });
    let group_member = json!({ "type": "group", "relation": "member" });
    json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            {
                "type": "group",
                "relations": { "member": this() },
                "metadata": { "relations": { "member": direct(&[user.clone(), user_wild.clone(), group_member.clone()]) } }
            },
            {
                "type": "folder",
                "relations": {
                    "owner": this(),
                    "viewer": { "union": { "child": [this(), computed("owner")] } }
                },
                "metadata": { "relations": {
                    "owner": direct(std::slice::from_ref(&user)),
                    "viewer": direct(&[user.clone(), group_member.clone()])
                } }
            },
            {
                "type": "document",
                "relations": {
                    "parent": this(),
                    "owner": this(),
                    "editor": { "union": { "child": [this(), computed("owner")] } },
                    "viewer": { "union": { "child": [
                        this(),
                        computed("editor"),
                        { "tupleToUserset": {
                            "tupleset": { "object": "", "relation": "parent" },
                            "computedUserset": { "object": "", "relation": "viewer" }
                        } }
                    ] } },
                    "approver": this(),
                    "blocked": this(),
                    "can_share": { "intersection": { "child": [computed("editor"), computed("approver")] } },
                    "can_view": { "difference": { "base": computed("viewer"), "subtract": computed("blocked") } },
                    "spender": this()
                },
                "metadata": { "relations": {
                    "parent": direct(&[json!({ "type": "folder" })]),
                    "owner": direct(std::slice::from_ref(&user)),
                    "editor": direct(&[user.clone(), group_member.clone()]),
                    "viewer": direct(&[user.clone(), user_wild, group_member]),
                    "approver": direct(std::slice::from_ref(&user)),
                    "blocked": direct(std::slice::from_ref(&user)),
                    "spender": direct(&[json!({ "type": "user", "condition": "within_limit" })])
                } }
            }
        ],
        "conditions": {
            "within_limit": {
                "name": "within_limit",
                "expression": "amount <= limit",
                "parameters": {
                    "amount": { "type_name": "TYPE_NAME_INT" },
                    "limit": { "type_name": "TYPE_NAME_INT" }
                }
            }
        }
    })
}
