//! The real actix-web app, in process, shared by the HTTP targets: the engine on its in-memory
//! store, one store with a model that has conditions (and a few tuples) and a second store that
//! receives model writes, built once per process; and the check every answer must pass (no 5xx,
//! every 4xx a JSON body with a `code`).
//!
//! Tuples written by earlier inputs stay visible to later ones; the model the queries run
//! against never changes.

// Each target uses what it needs of this module.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_http::Request;
use actix_web::body::{MessageBody, to_bytes};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, ContentType};
use actix_web::http::{Method, StatusCode};
use actix_web::rt::SystemRunner;
use actix_web::web::Bytes;
use actix_web::{App, test, web};
use gatehouse_engine::model::parse_dsl;
use gatehouse_engine::service::{Engine, EngineConfig};
use gatehouse_engine::store::WriteOptions;
use gatehouse_engine::store::memory::MemoryStore;
use gatehouse_engine::tuple::{ContextMap, RelationshipCondition, TupleKey};
use gatehouse_server::api::{AppState, Metrics, configure, hash_key, observe};

/// LeakSanitizer's hook for built-in suppressions. actix-router leaks the capture names of every
/// route it registers, by design (once per app, which is built once here), and LeakSanitizer
/// would otherwise blame that on the first input.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:actix_router::resource::ResourceDef\n".as_ptr()
}

/// The model every query runs against: direct, wildcard, userset, conditional, computed,
/// tuple-to-userset and exclusion relations.
const MODEL: &str = r#"
model
  schema 1.1

type user

type group
  relations
    define member: [user, user:*, group#member]

type folder
  relations
    define owner: [user, group#member]
    define viewer: [user, user with in_network, user:* with before_expiry, group#member with grants] or owner

type doc
  relations
    define parent: [folder]
    define editor: [user with grants, user:*]
    define blocked: [user]
    define viewer: (editor or viewer from parent) but not blocked
    define can_share: editor and viewer
    define reader: [user with costly]

condition in_network(ip: ipaddress, cidr: string) {
  ip.in_cidr(cidr)
}

condition before_expiry(current_time: timestamp, grant_time: timestamp, grant_duration: duration) {
  current_time < grant_time + grant_duration
}

condition costly(xs: list<int>) {
  xs.all(a, xs.all(b, a <= b || b <= a))
}

condition grants(enabled: bool, level: int, quota: uint, ratio: double, tags: list<string>,
    limits: map<int>) {
  enabled && level + 1 > 1 && quota >= 1u && ratio * 2.0 < 3.0 && "x" in tags && limits["n"] < level
}
"#;

/// A well-formed store id that names no store.
pub const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RZMYSQ3ZZZZZ";
pub const API_KEY: &str = "k";

pub struct Fixture {
    pub runner: SystemRunner,
    pub app: Rc<dyn Client>,
    /// The store with [`MODEL`] and a few tuples.
    pub store: String,
    pub model_id: String,
    /// The store that `POST authorization-models` writes to, so that the model of `store` stays.
    pub model_store: String,
}

thread_local! {
    // Never dropped: dropping the app at exit would touch actix's thread-locals after their
    // destruction.
    pub static FIXTURE: &'static Fixture = Box::leak(Box::new(setup()));
}

/// The status and the whole body of a request's answer.
type Answer = (StatusCode, Option<Bytes>);

/// The app's service with its body type erased, so that it can be kept between inputs.
pub trait Client {
    fn send(&self, req: Request) -> Pin<Box<dyn Future<Output = Answer> + '_>>;
}

impl<S, B> Client for S
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    fn send(&self, req: Request) -> Pin<Box<dyn Future<Output = Answer> + '_>> {
        Box::pin(async move {
            // An error that escapes the service is what the server's dispatcher answers with.
            match test::try_call_service(self, req).await {
                Ok(res) => (res.status(), to_bytes(res.into_body()).await.ok()),
                Err(e) => {
                    let res = e.error_response();
                    (res.status(), to_bytes(res.into_body()).await.ok())
                }
            }
        })
    }
}

fn setup() -> Fixture {
    let runner = actix_web::rt::System::new();
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        EngineConfig::default(),
    ));
    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(e) => panic!("metrics: {e}"),
    };
    let seeded = runner.block_on(seed(&engine));
    let (store, model_id, model_store) = match seeded {
        Ok(ids) => ids,
        Err(e) => panic!("seeding the engine failed: {e}"),
    };
    let state = web::Data::new(AppState {
        engine,
        api_key_hashes: vec![hash_key(API_KEY)],
        metrics,
        backend: "memory",
        keys: None,
        identity: None,
        issuer: "http://127.0.0.1".into(),
        sessions: None,
        store_owners: moka::sync::Cache::builder().max_capacity(1_000).build(),
        token_rate_per_ip: 0,
        reauth_secs: 300,
        key_rate: gatehouse_server::cache::limits::KeyRate::new(0),
        trusted_proxies: Vec::new(),
        login_rate_per_ip: 0,
        signup: false,
        mailer: None,
        plugins: None,
        service_plugins: None,
    });
    let app = runner.block_on(async move {
        let app = test::init_service(
            App::new()
                .app_data(state)
                .wrap(actix_web::middleware::from_fn(observe))
                .configure(|c| configure(c, 1 << 20)),
        )
        .await;
        Rc::new(app) as Rc<dyn Client>
    });
    Fixture {
        runner,
        app,
        store,
        model_id,
        model_store,
    }
}

/// Creates the two stores, writes the model and a few tuples through the engine's service API.
async fn seed(engine: &Engine) -> gatehouse_engine::Result<(String, String, String)> {
    let store = engine.create_store("fuzz").await?.id;
    let model_store = engine.create_store("fuzz-models").await?.id;
    let model_id = engine.write_model(&store, parse_dsl(MODEL)?).await?;
    engine.write_model(&model_store, parse_dsl(MODEL)?).await?;
    let ctx = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => Some(ContextMap(m)),
        _ => None,
    };
    let with = |mut t: TupleKey, name: &str, context: Option<ContextMap>| {
        t.condition = Some(RelationshipCondition {
            name: name.into(),
            context,
        });
        t
    };
    let tuples = vec![
        TupleKey::new("user:anne", "member", "group:eng"),
        TupleKey::new("group:eng#member", "member", "group:all"),
        TupleKey::new("user:*", "member", "group:public"),
        TupleKey::new("group:all#member", "owner", "folder:root"),
        TupleKey::new("folder:root", "parent", "doc:readme"),
        TupleKey::new("user:mallory", "blocked", "doc:readme"),
        TupleKey::new("user:*", "editor", "doc:public"),
        with(TupleKey::new("user:anne", "reader", "doc:costly"), "costly", None),
        with(
            TupleKey::new("user:bob", "viewer", "folder:root"),
            "in_network",
            ctx(serde_json::json!({ "cidr": "10.0.0.0/8" })),
        ),
        with(
            TupleKey::new("user:*", "viewer", "folder:shared"),
            "before_expiry",
            ctx(serde_json::json!({
                "grant_time": "2024-01-01T00:00:00Z",
                "grant_duration": "720h",
            })),
        ),
        with(
            TupleKey::new("group:eng#member", "viewer", "folder:eng"),
            "grants",
            None,
        ),
        with(
            TupleKey::new("user:carol", "editor", "doc:plan"),
            "grants",
            ctx(serde_json::json!({ "enabled": true, "tags": ["x"] })),
        ),
    ];
    engine
        .write(&store, None, &tuples, &[], WriteOptions::default())
        .await?;
    Ok((store, model_id, model_store))
}

/// The endpoints that take a JSON body.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "write"),
    ("POST", "read"),
    ("POST", "check"),
    ("POST", "batch-check"),
    ("POST", "expand"),
    ("POST", "list-objects"),
    ("POST", "streamed-list-objects"),
    ("POST", "list-users"),
    ("POST", "authorization-models"),
    ("PUT", "assertions"),
    ("PUT", "policies"),
    ("POST", "policies/dry-run"),
    ("POST", "decide"),
    ("POST", "access/v1/evaluation"),
    ("POST", "access/v1/evaluations"),
    ("PUT", "entity-attributes"),
    ("PUT", "risk/rules"),
    ("POST", "risk/failures"),
    ("PUT", "decision-log/settings"),
    ("POST", "access/v1/search/subject"),
    ("POST", "access/v1/search/resource"),
    ("POST", "access/v1/search/action"),
];

/// The method and path an input's first byte selects. Half the selectors name the seeded store
/// (and model); the rest name a store that does not exist or an id that is not a ULID.
pub fn route(fx: &Fixture, selector: u8) -> (Method, String) {
    let n = ENDPOINTS.len();
    let (method, endpoint) = ENDPOINTS[usize::from(selector) % n];
    let variant = usize::from(selector) / n % 4;
    let store = match (variant, endpoint) {
        (0 | 1, "authorization-models") => fx.model_store.as_str(),
        (0 | 1, _) => fx.store.as_str(),
        (2, _) => UNKNOWN_ID,
        _ => "not-a-store",
    };
    let path = if endpoint == "assertions" {
        let model = match variant {
            0 | 2 => fx.model_id.as_str(),
            1 => UNKNOWN_ID,
            _ => "not-a-model",
        };
        format!("/stores/{}/assertions/{model}", fx.store)
    } else {
        format!("/stores/{store}/{endpoint}")
    };
    let method = if method == "PUT" {
        Method::PUT
    } else {
        Method::POST
    };
    (method, path)
}

pub async fn exercise(fx: &Fixture, method: Method, path: String, body: Vec<u8>) {
    let req = test::TestRequest::default()
        .method(method.clone())
        .uri(&path)
        .insert_header((AUTHORIZATION, format!("Bearer {API_KEY}")))
        .insert_header(ContentType::json())
        .set_payload(body)
        .to_request();
    let (status, bytes) = fx.app.send(req).await;
    let Some(bytes) = bytes else {
        panic!("{method} {path} answered {status} with a body that could not be read");
    };
    assert!(
        !status.is_server_error(),
        "{method} {path} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status == StatusCode::NO_CONTENT {
        return;
    }
    // A streamed list is one JSON document per line.
    let documents: Vec<&[u8]> = if path.ends_with("/streamed-list-objects") && status.is_success() {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        vec![&bytes[..]]
    };
    for doc in documents {
        let json: serde_json::Value = match serde_json::from_slice(doc) {
            Ok(v) => v,
            Err(e) => panic!(
                "{method} {path} answered {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ),
        };
        if status.is_client_error() {
            assert!(
                json.get("code").is_some_and(serde_json::Value::is_string),
                "{method} {path} answered {status} without a `code`: {json}"
            );
        }
    }
}

