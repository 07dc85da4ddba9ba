//! Bad input on every endpoint: a clear 4xx with a JSON `code` and `message`, never a 500,
//! never a partial write.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, Resp, Server, for_each_backend, keys, sample_model, tk, tk_cond};

for_each_backend!(
    malformed_json,
    wrong_content_type,
    oversized_body,
    unknown_store,
    unknown_model,
    unknown_type_and_relation,
    invalid_tuple_strings,
    writes_are_all_or_nothing,
    write_and_delete_of_one_tuple_is_refused,
    write_limits,
    batch_check_limits,
    bad_consistency,
    bad_continuation_tokens,
    invalid_models,
    nul_bytes,
    wrong_methods_and_unknown_paths,
    assertions_against_the_model,
    bad_changes_start_time,
);

/// One request of an endpoint that succeeds on a store with [`sample_model`].
struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Endpoint {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn ep(method: Method, path: String, body: Option<Value>) -> Endpoint {
    Endpoint { method, path, body }
}

/// Every endpoint of a store, with a valid body.
fn store_endpoints(store: &str, model: &str) -> Vec<Endpoint> {
    let s = format!("/stores/{store}");
    vec![
        ep(Method::GET, s.clone(), None),
        ep(
            Method::POST,
            format!("{s}/authorization-models"),
            Some(sample_model()),
        ),
        ep(Method::GET, format!("{s}/authorization-models"), None),
        ep(
            Method::GET,
            format!("{s}/authorization-models/{model}"),
            None,
        ),
        ep(
            Method::POST,
            format!("{s}/write"),
            Some(json!({ "writes": { "tuple_keys": [tk("user:v", "owner", "document:v")] } })),
        ),
        ep(Method::POST, format!("{s}/read"), Some(json!({}))),
        ep(Method::GET, format!("{s}/changes"), None),
        ep(
            Method::POST,
            format!("{s}/check"),
            Some(json!({ "tuple_key": tk("user:v", "viewer", "document:v") })),
        ),
        ep(
            Method::POST,
            format!("{s}/batch-check"),
            Some(
                json!({ "checks": [{ "tuple_key": tk("user:v", "viewer", "document:v"), "correlation_id": "1" }] }),
            ),
        ),
        ep(
            Method::POST,
            format!("{s}/expand"),
            Some(json!({ "tuple_key": { "relation": "viewer", "object": "document:v" } })),
        ),
        ep(
            Method::POST,
            format!("{s}/list-objects"),
            Some(json!({ "type": "document", "relation": "viewer", "user": "user:v" })),
        ),
        ep(
            Method::POST,
            format!("{s}/streamed-list-objects"),
            Some(json!({ "type": "document", "relation": "viewer", "user": "user:v" })),
        ),
        ep(
            Method::POST,
            format!("{s}/list-users"),
            Some(
                json!({ "object": { "type": "document", "id": "v" }, "relation": "viewer", "user_filters": [{ "type": "user" }] }),
            ),
        ),
        ep(
            Method::PUT,
            format!("{s}/assertions/{model}"),
            Some(
                json!({ "assertions": [{ "tuple_key": tk("user:v", "viewer", "document:v"), "expectation": false }] }),
            ),
        ),
        ep(Method::GET, format!("{s}/assertions/{model}"), None),
        ep(Method::DELETE, s, None),
    ]
}

/// Every endpoint that reads a JSON body.
fn body_endpoints(store: &str, model: &str) -> Vec<Endpoint> {
    let mut v = vec![ep(
        Method::POST,
        "/stores".into(),
        Some(json!({ "name": "x" })),
    )];
    v.extend(
        store_endpoints(store, model)
            .into_iter()
            .filter(|e| e.body.is_some()),
    );
    v
}

async fn send(s: &Server, e: &Endpoint) -> Resp {
    s.request(e.method.clone(), &e.path, e.body.as_ref()).await
}

/// A 4xx (never 5xx) JSON error with `code` and `message`; `status` and `code` when given.
#[track_caller]
fn client_error(r: &Resp, what: &str, status: Option<u16>, code: Option<&str>) -> Value {
    assert!(
        (400..500).contains(&r.status),
        "{what}: want a 4xx, got {} {}",
        r.status,
        r.text
    );
    r.assert_error(status.unwrap_or(r.status), code)
}

async fn post_error(s: &Server, path: &str, body: Value, status: u16, code: Option<&str>) -> Value {
    let r = s.post(path, &body).await;
    client_error(&r, &format!("POST {path} {body}"), Some(status), code)
}

/// Asserts that these requests all succeed, so that the failures below are about the input.
async fn baseline(s: &Server, store: &str, model: &str) {
    for e in store_endpoints(store, model) {
        if e.method == Method::DELETE {
            continue;
        }
        let r = send(s, &e).await;
        assert!(
            (200..300).contains(&r.status),
            "{} should succeed: {} {}",
            e.name(),
            r.status,
            r.text
        );
    }
}

async fn malformed_json(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    baseline(&s, &store, &model).await;
    let bad_bodies: [&[u8]; 5] = [
        b"{\"tuple_key\": ",
        b"not json",
        b"{\"a\":1,}",
        b"",
        b"\xff\xfe",
    ];
    for e in body_endpoints(&store, &model) {
        for body in bad_bodies {
            let r = s
                .raw(
                    e.method.clone(),
                    &e.path,
                    Some("application/json"),
                    Some(body.to_vec()),
                    Some(&format!("Bearer {}", s.key)),
                )
                .await;
            client_error(
                &r,
                &format!("{} with body {:?}", e.name(), String::from_utf8_lossy(body)),
                Some(400),
                None,
            );
        }
        // Well-formed JSON of the wrong shape.
        for body in [json!([1, 2]), json!("text"), json!(42)] {
            let r = s.request(e.method.clone(), &e.path, Some(&body)).await;
            client_error(
                &r,
                &format!("{} with body {body}", e.name()),
                Some(400),
                None,
            );
        }
    }
    // Wrongly typed fields.
    let p = |x: &str| format!("/stores/{store}/{x}");
    post_error(&s, &p("check"), json!({ "tuple_key": 5 }), 400, None).await;
    post_error(
        &s,
        &p("check"),
        json!({ "tuple_key": tk("user:v", "viewer", "document:v"), "context": [1] }),
        400,
        None,
    )
    .await;
    post_error(&s, &p("check"), json!({ "tuple_key": tk("user:v", "viewer", "document:v"), "contextual_tuples": [tk("user:v", "owner", "document:v")] }), 400, None).await;
    post_error(
        &s,
        &p("write"),
        json!({ "writes": [tk("user:v", "owner", "document:v")] }),
        400,
        None,
    )
    .await;
    post_error(&s, &p("write"), json!({ "writes": { "tuple_keys": [{ "user": 1, "relation": "owner", "object": "document:v" }] } }), 400, None).await;
    post_error(&s, &p("read"), json!({ "page_size": "ten" }), 400, None).await;
    post_error(
        &s,
        &p("batch-check"),
        json!({ "checks": { "a": 1 } }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("list-objects"),
        json!({ "type": "document", "relation": "viewer", "user": "user:v", "page_size": -1 }),
        400,
        None,
    )
    .await;
    post_error(&s, &p("list-users"), json!({ "object": "document:v", "relation": "viewer", "user_filters": [{ "type": "user" }] }), 400, None).await;
    post_error(
        &s,
        &p("authorization-models"),
        json!({ "schema_version": "1.1", "type_definitions": "user" }),
        400,
        None,
    )
    .await;
    let r = s
        .put(
            &p(&format!("assertions/{model}")),
            &json!({ "assertions": [{ "tuple_key": "x", "expectation": "yes" }] }),
        )
        .await;
    client_error(
        &r,
        "PUT assertions with a malformed assertion",
        Some(400),
        None,
    );
    // Missing required parts.
    post_error(&s, &p("check"), json!({}), 400, None).await;
    post_error(
        &s,
        &p("check"),
        json!({ "tuple_key": { "user": "user:v", "relation": "viewer" } }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("expand"),
        json!({ "tuple_key": { "object": "document:v" } }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("list-objects"),
        json!({ "type": "document", "relation": "viewer" }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("list-users"),
        json!({ "relation": "viewer", "user_filters": [{ "type": "user" }] }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("batch-check"),
        json!({ "checks": [{ "correlation_id": "1" }] }),
        400,
        None,
    )
    .await;
    post_error(&s, &p("write"), json!({}), 400, None).await;
    post_error(&s, "/stores", json!({}), 400, None).await;
    post_error(&s, "/stores", json!({ "name": "x".repeat(65) }), 400, None).await;
    // Bad query strings.
    for path in [
        "/stores?page_size=abc".to_string(),
        format!("/stores/{store}/changes?page_size=-5"),
        format!("/stores/{store}/authorization-models?page_size=100000"),
    ] {
        let r = s.get(&path).await;
        client_error(&r, &format!("GET {path}"), Some(400), None);
    }
}

async fn wrong_content_type(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    let auth = format!("Bearer {}", s.key);
    for e in body_endpoints(&store, &model) {
        let body = serde_json::to_vec(e.body.as_ref().unwrap()).unwrap();
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let r = s
                .raw(
                    e.method.clone(),
                    &e.path,
                    ct,
                    Some(body.clone()),
                    Some(&auth),
                )
                .await;
            client_error(
                &r,
                &format!("{} with content type {ct:?}", e.name()),
                Some(415),
                Some("unsupported_media_type"),
            );
        }
        // A JSON content type with parameters is fine.
        let r = s
            .raw(
                e.method.clone(),
                &e.path,
                Some("application/json; charset=utf-8"),
                Some(body),
                Some(&auth),
            )
            .await;
        assert!(
            (200..300).contains(&r.status),
            "{} with a charset: {} {}",
            e.name(),
            r.status,
            r.text
        );
    }
    // Nothing was written by the rejected writes (the charset one wrote once).
    assert_eq!(
        keys(&s.read_all(&store, None).await),
        ["document:v#owner@user:v"]
    );
}

async fn oversized_body(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    let auth = format!("Bearer {}", s.key);
    let padding = "x".repeat(1024 * 1024 + 16);
    for e in body_endpoints(&store, &model) {
        let mut body = e.body.clone().unwrap();
        body["padding"] = json!(padding);
        let r = s
            .raw(
                e.method.clone(),
                &e.path,
                Some("application/json"),
                Some(serde_json::to_vec(&body).unwrap()),
                Some(&auth),
            )
            .await;
        client_error(
            &r,
            &format!("{} with a body over 1 MiB", e.name()),
            Some(413),
            Some("payload_too_large"),
        );
    }
    // 100 tuples with long ids stay under the limit and are accepted.
    let writes: Vec<Value> = (0..100)
        .map(|i| {
            tk(
                &format!("user:{i}{}", "u".repeat(100)),
                "viewer",
                &format!("document:{i}"),
            )
        })
        .collect();
    s.write(&store, &writes, &[]).await.ok();
}

async fn unknown_store(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    baseline(&s, &store, &model).await;
    let missing = ulid::Ulid::new().to_string();
    for e in store_endpoints(&missing, &model) {
        let r = send(&s, &e).await;
        client_error(
            &r,
            &format!("{} on a store that does not exist", e.name()),
            Some(404),
            Some("store_id_not_found"),
        );
    }
    for bad in [
        "not-a-ulid",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "../etc",
        "%20",
    ] {
        for e in store_endpoints(bad, &model) {
            let r = send(&s, &e).await;
            // `%20` and `../etc` may not even route; either way it is a client error.
            let want = if bad.contains('%') || bad.contains('/') {
                None
            } else {
                Some(400)
            };
            client_error(
                &r,
                &format!("{} with store id `{bad}`", e.name()),
                want,
                None,
            );
        }
    }
    // A deleted store is as gone as one that never existed.
    let doomed = s.create_store("doomed").await;
    s.write_model(&doomed, &sample_model()).await;
    assert_eq!(s.delete(&format!("/stores/{doomed}")).await.status, 204);
    for e in store_endpoints(&doomed, &model) {
        let r = send(&s, &e).await;
        client_error(
            &r,
            &format!("{} on a deleted store", e.name()),
            Some(404),
            Some("store_id_not_found"),
        );
    }
}

async fn unknown_model(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    let missing = ulid::Ulid::new().to_string();
    let p = |x: &str| format!("/stores/{store}/{x}");
    let mid = |mut body: Value, id: &str| {
        body["authorization_model_id"] = json!(id);
        body
    };
    for id in [missing.as_str(), "not-a-model"] {
        let bodies = [
            (
                "write",
                json!({ "writes": { "tuple_keys": [tk("user:v", "owner", "document:v")] } }),
            ),
            (
                "check",
                json!({ "tuple_key": tk("user:v", "viewer", "document:v") }),
            ),
            (
                "batch-check",
                json!({ "checks": [{ "tuple_key": tk("user:v", "viewer", "document:v"), "correlation_id": "1" }] }),
            ),
            (
                "expand",
                json!({ "tuple_key": { "relation": "viewer", "object": "document:v" } }),
            ),
            (
                "list-objects",
                json!({ "type": "document", "relation": "viewer", "user": "user:v" }),
            ),
            (
                "streamed-list-objects",
                json!({ "type": "document", "relation": "viewer", "user": "user:v" }),
            ),
            (
                "list-users",
                json!({ "object": { "type": "document", "id": "v" }, "relation": "viewer", "user_filters": [{ "type": "user" }] }),
            ),
        ];
        let code = if id == missing {
            Some("authorization_model_not_found")
        } else {
            None
        };
        for (path, body) in bodies {
            post_error(&s, &p(path), mid(body, id), 400, code).await;
        }
        for path in [
            p(&format!("authorization-models/{id}")),
            p(&format!("assertions/{id}")),
        ] {
            let r = s.get(&path).await;
            client_error(&r, &format!("GET {path}"), Some(400), code);
        }
        let r = s
            .put(
                &p(&format!("assertions/{id}")),
                &json!({ "assertions": [] }),
            )
            .await;
        client_error(&r, "PUT assertions of an unknown model", Some(400), code);
    }
    // A model of another store is unknown here.
    let other = s.create_store("other").await;
    let foreign = s.write_model(&other, &sample_model()).await;
    post_error(&s, &p("check"), json!({ "tuple_key": tk("user:v", "viewer", "document:v"), "authorization_model_id": foreign }), 400, Some("authorization_model_not_found")).await;
    let r = s.get(&p(&format!("authorization-models/{foreign}"))).await;
    client_error(
        &r,
        "reading another store's model",
        Some(400),
        Some("authorization_model_not_found"),
    );
    // No model at all.
    let empty = s.create_store("empty").await;
    let q = |x: &str| format!("/stores/{empty}/{x}");
    post_error(
        &s,
        &q("check"),
        json!({ "tuple_key": tk("user:v", "viewer", "document:v") }),
        400,
        Some("latest_authorization_model_not_found"),
    )
    .await;
    post_error(
        &s,
        &q("write"),
        json!({ "writes": { "tuple_keys": [tk("user:v", "owner", "document:v")] } }),
        400,
        Some("latest_authorization_model_not_found"),
    )
    .await;
    let _ = model;
}

async fn unknown_type_and_relation(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let p = |x: &str| format!("/stores/{store}/{x}");
    let check = |u: &str, r: &str, o: &str| json!({ "tuple_key": tk(u, r, o) });
    post_error(
        &s,
        &p("check"),
        check("user:v", "viewer", "nosuch:1"),
        400,
        Some("type_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("check"),
        check("user:v", "nosuch", "document:1"),
        400,
        Some("relation_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("check"),
        check("nosuch:v", "viewer", "document:1"),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("check"),
        check("group:eng#nosuch", "viewer", "document:1"),
        400,
        None,
    )
    .await;
    let write = |t: Value| json!({ "writes": { "tuple_keys": [t] } });
    post_error(
        &s,
        &p("write"),
        write(tk("user:v", "owner", "nosuch:1")),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk("user:v", "nosuch", "document:1")),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        json!({ "deletes": { "tuple_keys": [tk("user:v", "nosuch", "document:1")] } }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        json!({ "deletes": { "tuple_keys": [tk("user:v", "owner", "nosuch:1")] } }),
        400,
        None,
    )
    .await;
    // Type restrictions: a folder cannot own a document, no wildcard owners, no userset editors of this kind.
    post_error(
        &s,
        &p("write"),
        write(tk("folder:f", "owner", "document:1")),
        400,
        Some("invalid_tuple"),
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk("user:*", "owner", "document:1")),
        400,
        Some("invalid_tuple"),
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk("folder:f#viewer", "editor", "document:1")),
        400,
        Some("invalid_tuple"),
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk("nosuch:x", "owner", "document:1")),
        400,
        None,
    )
    .await;
    // Conditions: required on `spender`, unknown names, not allowed elsewhere.
    post_error(
        &s,
        &p("write"),
        write(tk("user:e", "spender", "document:1")),
        400,
        Some("invalid_tuple"),
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk_cond(
            "user:e",
            "spender",
            "document:1",
            "nosuch",
            json!({}),
        )),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk_cond(
            "user:e",
            "owner",
            "document:1",
            "within_limit",
            json!({}),
        )),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk_cond(
            "user:e",
            "spender",
            "document:1",
            "within_limit",
            json!({ "limit": "lots" }),
        )),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p("write"),
        write(tk_cond(
            "user:e",
            "spender",
            "document:1",
            "within_limit",
            json!({ "other": 1 }),
        )),
        400,
        None,
    )
    .await;
    post_error(&s, &p("write"), json!({ "deletes": { "tuple_keys": [tk_cond("user:e", "spender", "document:1", "within_limit", json!({}))] } }), 400, None).await;
    // Contextual tuples are validated like written ones.
    post_error(&s, &p("check"), json!({ "tuple_key": tk("user:v", "viewer", "document:1"), "contextual_tuples": { "tuple_keys": [tk("user:v", "nosuch", "document:1")] } }), 400, None).await;
    post_error(&s, &p("check"), json!({ "tuple_key": tk("user:v", "viewer", "document:1"), "contextual_tuples": { "tuple_keys": [tk("folder:f", "owner", "document:1")] } }), 400, None).await;
    // Context values of the wrong type for a condition's parameters.
    s.write_ok(
        &store,
        &[tk_cond(
            "user:e",
            "spender",
            "document:1",
            "within_limit",
            json!({ "limit": 10 }),
        )],
    )
    .await;
    post_error(&s, &p("check"), json!({ "tuple_key": tk("user:e", "spender", "document:1"), "context": { "amount": "ten" } }), 400, None).await;
    // Queries.
    let lo = |t: &str, r: &str, u: &str| json!({ "type": t, "relation": r, "user": u });
    post_error(
        &s,
        &p("list-objects"),
        lo("nosuch", "viewer", "user:v"),
        400,
        Some("type_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("list-objects"),
        lo("document", "nosuch", "user:v"),
        400,
        Some("relation_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("streamed-list-objects"),
        lo("nosuch", "viewer", "user:v"),
        400,
        Some("type_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("list-objects"),
        lo("document", "viewer", "bad user"),
        400,
        None,
    )
    .await;
    let lu = |t: &str, r: &str, f: &str| json!({ "object": { "type": t, "id": "1" }, "relation": r, "user_filters": [{ "type": f }] });
    post_error(
        &s,
        &p("list-users"),
        lu("nosuch", "viewer", "user"),
        400,
        Some("type_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("list-users"),
        lu("document", "nosuch", "user"),
        400,
        Some("relation_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("list-users"),
        lu("document", "viewer", "nosuch"),
        400,
        None,
    )
    .await;
    let ex = |r: &str, o: &str| json!({ "tuple_key": { "relation": r, "object": o } });
    post_error(
        &s,
        &p("expand"),
        ex("viewer", "nosuch:1"),
        400,
        Some("type_not_found"),
    )
    .await;
    post_error(
        &s,
        &p("expand"),
        ex("nosuch", "document:1"),
        400,
        Some("relation_not_found"),
    )
    .await;
    // Read filters naming a type that does not exist find nothing or are rejected, never fail.
    let r = s
        .post(
            &p("read"),
            &json!({ "tuple_key": { "object": "nosuch:1" } }),
        )
        .await;
    assert!(
        r.status == 200 || (400..500).contains(&r.status),
        "{} {}",
        r.status,
        r.text
    );
    // Nothing of the above was written.
    assert_eq!(
        keys(&s.read_all(&store, None).await),
        ["document:1#spender@user:e"]
    );
}

/// Whether an answer is a proper client error; the reason it is not, otherwise.
fn not_a_client_error(r: &Resp, status: u16) -> Option<String> {
    if r.status != status {
        return Some(format!("got {} {}", r.status, r.text));
    }
    let v: Value = serde_json::from_str(&r.text).ok()?;
    let ok = v["code"].as_str().is_some_and(|c| !c.is_empty())
        && v["message"].as_str().is_some_and(|m| !m.is_empty());
    (!ok).then(|| format!("error body without code and message: {}", r.text))
}

async fn invalid_tuple_strings(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let p = |x: &str| format!("/stores/{store}/{x}");
    let bad = [
        tk("anne", "owner", "document:1"),
        tk("user:", "owner", "document:1"),
        tk(":anne", "owner", "document:1"),
        tk("user:an ne", "owner", "document:1"),
        tk("user:anne#", "owner", "document:1"),
        tk("user:anne#owner#x", "owner", "document:1"),
        tk("", "owner", "document:1"),
        tk("user:anne", "", "document:1"),
        tk("user:anne", "owner", ""),
        tk("user:anne", "owner", "document"),
        tk("user:anne", "owner", "document:"),
        tk("user:anne", "owner", ":1"),
        tk("user:anne", "owner", "document:1#owner"),
        tk("user:anne", "owner", "document:*"),
        tk("user:anne", "own er", "document:1"),
        tk("user:anne", "owner", "docu ment:1"),
    ];
    // Every request is made; all that are not a 400 JSON error are reported together.
    let mut wrong = Vec::new();
    let mut expect_400 = |what: String, r: Resp| {
        if let Some(why) = not_a_client_error(&r, 400) {
            wrong.push(format!("{what}: {why}"));
        }
    };
    for t in &bad {
        expect_400(
            format!("write {t}"),
            s.post(&p("write"), &json!({ "writes": { "tuple_keys": [t] } }))
                .await,
        );
        expect_400(
            format!("delete {t}"),
            s.post(&p("write"), &json!({ "deletes": { "tuple_keys": [t] } }))
                .await,
        );
        expect_400(
            format!("check {t}"),
            s.check_req(&store, &json!({ "tuple_key": t })).await,
        );
        let ctx = json!({ "tuple_key": tk("user:v", "viewer", "document:1"), "contextual_tuples": { "tuple_keys": [t] } });
        expect_400(
            format!("check with contextual tuple {t}"),
            s.check_req(&store, &ctx).await,
        );
        let batch = json!({ "checks": [{ "tuple_key": t, "correlation_id": "1" }] });
        let r = s.post(&p("batch-check"), &batch).await;
        // Either the whole batch is refused, or the item reports its error.
        let item_error = r.status == 200 && r.json()["result"]["1"]["error"].is_object();
        if !item_error {
            expect_400(format!("batch-check {t}"), r);
        }
    }
    for user in ["anne", "user:", "user:an ne", "user:*#member"] {
        let body = json!({ "type": "document", "relation": "viewer", "user": user });
        expect_400(
            format!("list-objects for `{user}`"),
            s.post(&p("list-objects"), &body).await,
        );
    }
    for object in ["document", "document:", "document:1 2", "document:*"] {
        let body = json!({ "tuple_key": { "relation": "viewer", "object": object } });
        expect_400(
            format!("expand `{object}`"),
            s.post(&p("expand"), &body).await,
        );
    }
    for object in ["1", ""] {
        let body = json!({ "tuple_key": { "object": object, "user": "user:anne" } });
        expect_400(
            format!("read `{object}` for user:anne"),
            s.post(&p("read"), &body).await,
        );
    }
    let body = json!({ "tuple_key": { "object": "document:1", "user": "anne" } });
    expect_400(
        "read with user `anne`".into(),
        s.post(&p("read"), &body).await,
    );
    for id in ["", "*", "1 2"] {
        let body = json!({ "object": { "type": "document", "id": id }, "relation": "viewer", "user_filters": [{ "type": "user" }] });
        expect_400(
            format!("list-users of document `{id}`"),
            s.post(&p("list-users"), &body).await,
        );
    }
    assert!(
        wrong.is_empty(),
        "invalid tuple strings not rejected with a 400:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        s.read_all(&store, None).await.len(),
        0,
        "an invalid tuple was written"
    );
}

async fn writes_are_all_or_nothing(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    s.write_ok(&store, &[tk("user:a", "owner", "document:1")])
        .await;
    let before = keys(&s.read_all(&store, None).await);
    let good: Vec<Value> = (0..5)
        .map(|i| tk(&format!("user:g{i}"), "viewer", "document:1"))
        .collect();
    let p = format!("/stores/{store}/write");
    let with = |extra: Value| {
        let mut w = good.clone();
        w.insert(2, extra);
        w
    };
    // A tuple that already exists.
    let v = post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": with(tk("user:a", "owner", "document:1")) } }),
        400,
        None,
    )
    .await;
    assert_eq!(v["code"], "write_failed_due_to_invalid_input", "{v}");
    // A tuple that already exists under another condition is still the same tuple.
    s.write_ok(
        &store,
        &[tk_cond(
            "user:c",
            "spender",
            "document:1",
            "within_limit",
            json!({ "limit": 1 }),
        )],
    )
    .await;
    let before = {
        let mut b = before;
        b.push("document:1#spender@user:c".into());
        b.sort();
        b
    };
    post_error(&s, &p, json!({ "writes": { "tuple_keys": with(tk_cond("user:c", "spender", "document:1", "within_limit", json!({ "limit": 2 }))) } }), 400, None).await;
    // The same tuple twice in one request.
    post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": with(good[0].clone()) } }),
        400,
        None,
    )
    .await;
    // An invalid tuple.
    post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": with(tk("user:x", "nosuch", "document:1")) } }),
        400,
        None,
    )
    .await;
    post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": with(tk("folder:x", "owner", "document:1")) } }),
        400,
        None,
    )
    .await;
    // A delete of a tuple that does not exist, alongside good writes and a good delete.
    let v = post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": good }, "deletes": { "tuple_keys": [tk("user:a", "owner", "document:1"), tk("user:nobody", "owner", "document:1")] } }),
        400,
        None,
    )
    .await;
    assert_eq!(v["code"], "write_failed_due_to_invalid_input", "{v}");
    // The same tuple deleted twice.
    post_error(&s, &p, json!({ "deletes": { "tuple_keys": [tk("user:a", "owner", "document:1"), tk("user:a", "owner", "document:1")] } }), 400, None).await;
    // Unknown on_duplicate / on_missing values.
    post_error(
        &s,
        &p,
        json!({ "writes": { "tuple_keys": good, "on_duplicate": "overwrite" } }),
        400,
        None,
    )
    .await;
    post_error(&s, &p, json!({ "deletes": { "tuple_keys": [tk("user:a", "owner", "document:1")], "on_missing": "maybe" } }), 400, None).await;

    assert_eq!(
        keys(&s.read_all(&store, None).await),
        before,
        "a failed write changed the store"
    );
    let v = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    assert_eq!(
        v["changes"].as_array().unwrap().len(),
        2,
        "a failed write reached the changelog: {v}"
    );
    // The store still works and a good write lands whole.
    s.write_ok(&store, &good).await;
    assert_eq!(
        s.read_all(&store, None).await.len(),
        before.len() + good.len()
    );
}

async fn write_limits(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let many = |n: usize, prefix: &str| -> Vec<Value> {
        (0..n)
            .map(|i| tk(&format!("user:{prefix}{i}"), "viewer", "document:1"))
            .collect()
    };
    let r = s.write(&store, &many(101, "w"), &[]).await;
    client_error(&r, "write of 101 tuples", Some(400), None);
    let r = s.write(&store, &many(60, "a"), &many(41, "b")).await;
    client_error(&r, "write of 60 + delete of 41 tuples", Some(400), None);
    assert_eq!(s.read_all(&store, None).await.len(), 0);
    s.write(&store, &many(100, "w"), &[]).await.ok();
    assert_eq!(s.read_all(&store, None).await.len(), 100);
    s.write(&store, &many(50, "x"), &many(50, "w")).await.ok();
    assert_eq!(s.read_all(&store, None).await.len(), 100);
    // An empty write changes nothing and says so.
    let r = s
        .post(
            &format!("/stores/{store}/write"),
            &json!({ "writes": { "tuple_keys": [] } }),
        )
        .await;
    client_error(&r, "an empty write", Some(400), None);
    // Contextual tuples are limited too.
    let body = json!({ "tuple_key": tk("user:v", "viewer", "document:1"), "contextual_tuples": { "tuple_keys": many(101, "c") } });
    post_error(&s, &format!("/stores/{store}/check"), body, 400, None).await;
}

async fn batch_check_limits(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let p = format!("/stores/{store}/batch-check");
    let checks = |n: usize| -> Vec<Value> {
        (0..n).map(|i| json!({ "tuple_key": tk(&format!("user:{i}"), "viewer", "document:1"), "correlation_id": format!("c{i}") })).collect()
    };
    post_error(&s, &p, json!({ "checks": checks(51) }), 400, None).await;
    let v = s.post(&p, &json!({ "checks": checks(50) })).await.ok();
    assert_eq!(v["result"].as_object().unwrap().len(), 50, "{v}");
    post_error(&s, &p, json!({ "checks": [] }), 400, None).await;
    post_error(&s, &p, json!({}), 400, None).await;
    let mut dup = checks(3);
    dup[2]["correlation_id"] = json!("c0");
    post_error(&s, &p, json!({ "checks": dup }), 400, None).await;
    let mut missing = checks(3);
    missing[1].as_object_mut().unwrap().remove("correlation_id");
    post_error(&s, &p, json!({ "checks": missing }), 400, None).await;
    let mut empty = checks(3);
    empty[1]["correlation_id"] = json!("");
    post_error(&s, &p, json!({ "checks": empty }), 400, None).await;
    let mut long = checks(1);
    long[0]["correlation_id"] = json!("x".repeat(37));
    post_error(&s, &p, json!({ "checks": long }), 400, None).await;
}

async fn bad_consistency(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let token = s
        .write_ok(&store, &[tk("user:a", "owner", "document:1")])
        .await;
    let other = s.create_store("other").await;
    s.write_model(&other, &sample_model()).await;
    let other_token = s
        .write_ok(&other, &[tk("user:a", "owner", "document:1")])
        .await;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    let future = format!("gh1.{}", b64(&format!("999999999:{store}")));
    let not_a_revision = format!("gh1.{}", b64(&format!("abc:{store}")));
    let queries = [
        (
            "check",
            json!({ "tuple_key": tk("user:a", "viewer", "document:1") }),
        ),
        (
            "batch-check",
            json!({ "checks": [{ "tuple_key": tk("user:a", "viewer", "document:1"), "correlation_id": "1" }] }),
        ),
        ("read", json!({})),
        (
            "expand",
            json!({ "tuple_key": { "relation": "viewer", "object": "document:1" } }),
        ),
        (
            "list-objects",
            json!({ "type": "document", "relation": "viewer", "user": "user:a" }),
        ),
        (
            "streamed-list-objects",
            json!({ "type": "document", "relation": "viewer", "user": "user:a" }),
        ),
        (
            "list-users",
            json!({ "object": { "type": "document", "id": "1" }, "relation": "viewer", "user_filters": [{ "type": "user" }] }),
        ),
    ];
    for (path, body) in &queries {
        let path = format!("/stores/{store}/{path}");
        let with = |k: &str, v: &str| {
            let mut b = body.clone();
            b[k] = json!(v);
            b
        };
        for c in ["STRONG", "minimize_latency_", "1"] {
            post_error(&s, &path, with("consistency", c), 400, None).await;
        }
        for t in [
            "garbage",
            "gh1.!!!",
            not_a_revision.as_str(),
            future.as_str(),
            other_token.as_str(),
            "gh1.",
        ] {
            post_error(&s, &path, with("consistency_token", t), 400, None).await;
        }
        // The right token and the named levels work.
        let r = s.post(&path, &with("consistency_token", &token)).await;
        assert_eq!(r.status, 200, "{path} with its store's token: {}", r.text);
        for c in ["MINIMIZE_LATENCY", "HIGHER_CONSISTENCY", "UNSPECIFIED"] {
            let r = s.post(&path, &with("consistency", c)).await;
            assert_eq!(r.status, 200, "{path} with {c}: {}", r.text);
        }
    }
}

async fn bad_continuation_tokens(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let writes: Vec<Value> = (0..5)
        .map(|i| tk(&format!("user:{i}"), "viewer", &format!("document:{i}")))
        .collect();
    s.write_ok(&store, &writes).await;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    let bad_tokens = [
        "garbage!",
        "%%%",
        &b64("nonsense"),
        &b64("99999999|document:0"),
        &b64("tuple:notanumber"),
    ];
    for t in bad_tokens {
        let q = urlencode(t);
        for path in [
            format!("/stores?continuation_token={q}"),
            format!("/stores/{store}/authorization-models?continuation_token={q}"),
            format!("/stores/{store}/changes?continuation_token={q}"),
        ] {
            let r = s.get(&path).await;
            client_error(&r, &format!("GET {path}"), Some(400), None);
        }
        let bodies = [
            ("read", json!({ "continuation_token": t })),
            (
                "list-objects",
                json!({ "type": "document", "relation": "viewer", "user": "user:1", "continuation_token": t }),
            ),
            (
                "list-users",
                json!({ "object": { "type": "document", "id": "1" }, "relation": "viewer", "user_filters": [{ "type": "user" }], "continuation_token": t }),
            ),
        ];
        for (path, body) in bodies {
            post_error(&s, &format!("/stores/{store}/{path}"), body, 400, None).await;
        }
    }
    // A token of one endpoint is not a token of another.
    let read = s
        .post(&format!("/stores/{store}/read"), &json!({ "page_size": 2 }))
        .await
        .ok();
    let read_token = read["continuation_token"].as_str().unwrap().to_string();
    assert!(!read_token.is_empty(), "{read}");
    let r = s
        .get(&format!(
            "/stores?continuation_token={}",
            urlencode(&read_token)
        ))
        .await;
    client_error(&r, "a read token on list stores", Some(400), None);
    let r = s
        .get(&format!(
            "/stores/{store}/changes?continuation_token={}",
            urlencode(&read_token)
        ))
        .await;
    client_error(&r, "a read token on changes", Some(400), None);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn invalid_models(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("invalid-models").await;
    let p = format!("/stores/{store}/authorization-models");
    let mut undefined = sample_model();
    undefined["type_definitions"][3]["relations"]["viewer"] =
        json!({ "computedUserset": { "object": "", "relation": "nope" } });
    let mut bad_ttu = sample_model();
    bad_ttu["type_definitions"][3]["relations"]["viewer"] = json!({ "tupleToUserset": { "tupleset": { "object": "", "relation": "nope" }, "computedUserset": { "object": "", "relation": "viewer" } } });
    let mut unknown_type = sample_model();
    unknown_type["type_definitions"][3]["metadata"]["relations"]["owner"] =
        json!({ "directly_related_user_types": [{ "type": "nosuch" }] });
    let mut self_loop = sample_model();
    self_loop["type_definitions"][3]["relations"]["approver"] =
        json!({ "computedUserset": { "object": "", "relation": "approver" } });
    let mut bad_cel = sample_model();
    bad_cel["conditions"]["within_limit"]["expression"] = json!("amount <= ");
    let mut unknown_condition = sample_model();
    unknown_condition["type_definitions"][3]["metadata"]["relations"]["spender"] =
        json!({ "directly_related_user_types": [{ "type": "user", "condition": "nosuch" }] });
    let mut undeclared_param = sample_model();
    undeclared_param["conditions"]["within_limit"]["expression"] = json!("amount <= limit + bonus");
    let mut old_schema = sample_model();
    old_schema["schema_version"] = json!("1.0");
    let mut duplicate_type = sample_model();
    duplicate_type["type_definitions"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": "user" }));
    let mut direct_without_types = sample_model();
    direct_without_types["type_definitions"][3]["metadata"]["relations"]["owner"] =
        json!({ "directly_related_user_types": [] });
    let mut bad_name = sample_model();
    bad_name["type_definitions"][0]["type"] = json!("us er");
    let cases = [
        ("undefined relation", undefined),
        ("from an undefined tupleset", bad_ttu),
        ("restriction to an unknown type", unknown_type),
        ("relation defined as itself", self_loop),
        ("condition that does not parse", bad_cel),
        ("unknown condition", unknown_condition),
        ("undeclared condition parameter", undeclared_param),
        ("schema 1.0", old_schema),
        ("duplicate type", duplicate_type),
        ("direct relation without types", direct_without_types),
        ("type name with a space", bad_name),
        (
            "no schema version",
            json!({ "type_definitions": [{ "type": "user" }] }),
        ),
        (
            "unknown rewrite",
            json!({ "schema_version": "1.1", "type_definitions": [{ "type": "doc", "relations": { "r": { "magic": {} } } }] }),
        ),
    ];
    for (what, model) in cases {
        let r = s.post(&p, &model).await;
        let v = client_error(&r, &format!("model with {what}"), Some(400), None);
        assert!(
            ["invalid_authorization_model", "validation_error"]
                .contains(&v["code"].as_str().unwrap()),
            "model with {what}: code {v}"
        );
    }
    let v = s.get(&p).await.ok();
    assert_eq!(
        v["authorization_models"].as_array().unwrap().len(),
        0,
        "an invalid model was stored: {v}"
    );
    post_error(
        &s,
        &format!("/stores/{store}/check"),
        json!({ "tuple_key": tk("user:a", "viewer", "document:1") }),
        400,
        Some("latest_authorization_model_not_found"),
    )
    .await;
}

/// NUL bytes in identifiers: writes are refused with a 400 on every backend, and no request
/// fails with a 5xx (PostgreSQL cannot store NUL in text).
async fn nul_bytes(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    s.write_ok(&store, &[tk("user:a", "owner", "document:1")])
        .await;
    let p = |x: &str| format!("/stores/{store}/{x}");
    let mut wrong = Vec::new();
    // Requests that must be refused.
    let refused = [
        (
            "write user",
            p("write"),
            json!({ "writes": { "tuple_keys": [tk("user:a\u{0}b", "owner", "document:1")] } }),
        ),
        (
            "write object",
            p("write"),
            json!({ "writes": { "tuple_keys": [tk("user:a", "owner", "document:1\u{0}")] } }),
        ),
        (
            "delete user",
            p("write"),
            json!({ "deletes": { "tuple_keys": [tk("user:a\u{0}", "owner", "document:1")] } }),
        ),
        (
            "create store",
            "/stores".to_string(),
            json!({ "name": "a\u{0}b" }),
        ),
    ];
    for (what, path, body) in refused {
        let r = s.post(&path, &body).await;
        if let Some(why) = not_a_client_error(&r, 400) {
            wrong.push(format!("{what} with a NUL byte: {why}"));
        }
    }
    // Requests that may answer (nothing matches) or refuse, but never fail.
    let queries = [
        (
            "check user",
            p("check"),
            json!({ "tuple_key": tk("user:a\u{0}", "owner", "document:1") }),
        ),
        (
            "check object",
            p("check"),
            json!({ "tuple_key": tk("user:a", "owner", "document:1\u{0}") }),
        ),
        (
            "read user",
            p("read"),
            json!({ "tuple_key": { "object": "document:", "user": "user:a\u{0}" } }),
        ),
        (
            "read object",
            p("read"),
            json!({ "tuple_key": { "object": "document:1\u{0}" } }),
        ),
        (
            "read relation",
            p("read"),
            json!({ "tuple_key": { "object": "document:1", "relation": "own\u{0}er" } }),
        ),
        (
            "expand",
            p("expand"),
            json!({ "tuple_key": { "relation": "owner", "object": "document:1\u{0}" } }),
        ),
        (
            "list-objects",
            p("list-objects"),
            json!({ "type": "document", "relation": "owner", "user": "user:a\u{0}" }),
        ),
        (
            "list-users",
            p("list-users"),
            json!({ "object": { "type": "document", "id": "1\u{0}" }, "relation": "owner", "user_filters": [{ "type": "user" }] }),
        ),
        (
            "batch-check",
            p("batch-check"),
            json!({ "checks": [{ "tuple_key": tk("user:a", "owner", "document:1\u{0}"), "correlation_id": "1" }] }),
        ),
    ];
    for (what, path, body) in queries {
        let r = s.post(&path, &body).await;
        if r.status >= 500 || !(r.status == 200 || (400..500).contains(&r.status)) {
            wrong.push(format!(
                "{what} with a NUL byte: got {} {}",
                r.status, r.text
            ));
        }
    }
    for (what, path) in [
        ("list stores by name", "/stores?name=a%00b".to_string()),
        ("changes by type", p("changes?type=docu%00ment")),
        ("assertions", p(&format!("assertions/{model}"))),
    ] {
        let r = s.get(&path).await;
        if r.status >= 500 {
            wrong.push(format!(
                "{what} with a NUL byte: got {} {}",
                r.status, r.text
            ));
        }
    }
    let r = s.put(&p(&format!("assertions/{model}")), &json!({ "assertions": [{ "tuple_key": tk("user:a\u{0}", "owner", "document:1"), "expectation": true }] })).await;
    if r.status >= 500 {
        wrong.push(format!(
            "assertions with a NUL byte: got {} {}",
            r.status, r.text
        ));
    }
    assert!(
        wrong.is_empty(),
        "NUL bytes mishandled:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        keys(&s.read_all(&store, None).await),
        ["document:1#owner@user:a"]
    );
}

/// One tuple both written and deleted in a request is refused, as OpenFGA does (error 2004,
/// `cannot_allow_duplicate_tuples_in_one_request`), whether or not it exists.
async fn write_and_delete_of_one_tuple_is_refused(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    s.write_ok(&store, &[tk("user:a", "owner", "document:1")])
        .await;
    let p = format!("/stores/{store}/write");
    let both = |t: Value| json!({ "writes": { "tuple_keys": [t.clone(), tk("user:new", "viewer", "document:1")] }, "deletes": { "tuple_keys": [t] } });
    let mut wrong = Vec::new();
    for t in [
        tk("user:a", "owner", "document:1"),
        tk("user:b", "owner", "document:1"),
    ] {
        let r = s.post(&p, &both(t.clone())).await;
        if let Some(why) = not_a_client_error(&r, 400) {
            wrong.push(format!("{t}: {why}"));
        }
    }
    let v = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    let changes = v["changes"].as_array().map(Vec::len);
    assert!(
        wrong.is_empty() && changes == Some(1),
        "writing and deleting one tuple in a request was accepted:\n{}\nchanges: {v}",
        wrong.join("\n")
    );
}

/// A known path with a method it does not serve is 405 with `Allow` and a JSON body; an
/// unknown path is 404; neither changes anything, and an unknown path under `/stores` still
/// needs the API key.
async fn wrong_methods_and_unknown_paths(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    baseline(&s, &store, &model).await;
    let before = keys(&s.read_all(&store, None).await);
    let mut endpoints = store_endpoints(&store, &model);
    endpoints.push(ep(Method::GET, "/stores".into(), None));
    endpoints.push(ep(Method::GET, "/healthz".into(), None));
    endpoints.push(ep(Method::GET, "/metrics".into(), None));
    for e in &endpoints {
        // Every method this path serves, from the table itself (`POST /stores` creates stores).
        let mut allowed: Vec<Method> = endpoints
            .iter()
            .filter(|o| o.path == e.path)
            .map(|o| o.method.clone())
            .collect();
        if e.path == "/stores" {
            allowed.push(Method::POST);
        }
        for wrong in [Method::PATCH, Method::PUT, Method::DELETE, Method::POST] {
            if allowed.contains(&wrong) {
                continue;
            }
            let r = s.request(wrong.clone(), &e.path, e.body.as_ref()).await;
            client_error(
                &r,
                &format!("{wrong} {}", e.path),
                Some(405),
                Some("method_not_allowed"),
            );
            let allow = r.header("allow").unwrap_or_default();
            for m in &allowed {
                assert!(
                    allow.split(", ").any(|a| a == m.as_str()),
                    "{wrong} {}: Allow `{allow}` lacks {m}",
                    e.path
                );
            }
        }
    }
    for path in [
        format!("/stores/{store}/nope"),
        format!("/stores/{store}/check/extra"),
        format!("/stores/{store}/authorization-models/{model}/extra"),
        format!("/stores/{store}/assertions"),
        format!("/stores/{store}/"),
        format!("/stores/{store}//check"),
        "/nope".to_string(),
    ] {
        for m in [Method::GET, Method::POST] {
            let r = s.request(m.clone(), &path, Some(&json!({}))).await;
            client_error(
                &r,
                &format!("{m} {path}"),
                Some(404),
                Some("undefined_endpoint"),
            );
        }
    }
    let r = s
        .raw(
            Method::GET,
            &format!("/stores/{store}/nope"),
            None,
            None,
            None,
        )
        .await;
    client_error(
        &r,
        "unknown path without a key",
        Some(401),
        Some("unauthenticated"),
    );
    let r = s
        .raw(
            Method::PATCH,
            &format!("/stores/{store}/check"),
            None,
            None,
            None,
        )
        .await;
    client_error(
        &r,
        "wrong method without a key",
        Some(401),
        Some("unauthenticated"),
    );
    assert_eq!(keys(&s.read_all(&store, None).await), before);
}

/// Assertions are validated against their model: unknown types and relations, malformed
/// users and invalid contextual tuples are refused, and the stored assertions stay as they were.
async fn assertions_against_the_model(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    let path = format!("/stores/{store}/assertions/{model}");
    let good = json!({ "assertions": [{ "tuple_key": tk("user:anne", "viewer", "document:1"), "expectation": true }] });
    assert_eq!(s.put(&path, &good).await.status, 204);
    let one = |a: Value| json!({ "assertions": [a] });
    let cases = [
        (
            "unknown object type",
            one(
                json!({ "tuple_key": tk("user:anne", "viewer", "spaceship:1"), "expectation": true }),
            ),
            Some("type_not_found"),
        ),
        (
            "unknown relation",
            one(
                json!({ "tuple_key": tk("user:anne", "pilot", "document:1"), "expectation": true }),
            ),
            Some("relation_not_found"),
        ),
        (
            "unknown user type",
            one(
                json!({ "tuple_key": tk("robot:r2", "viewer", "document:1"), "expectation": false }),
            ),
            Some("type_not_found"),
        ),
        (
            "userset with an unknown relation",
            one(
                json!({ "tuple_key": tk("group:eng#boss", "viewer", "document:1"), "expectation": false }),
            ),
            Some("relation_not_found"),
        ),
        (
            "malformed object",
            one(json!({ "tuple_key": tk("user:anne", "viewer", "document"), "expectation": true })),
            None,
        ),
        (
            "malformed user",
            one(json!({ "tuple_key": tk("anne", "viewer", "document:1"), "expectation": true })),
            None,
        ),
        (
            "contextual tuple not allowed by the model",
            one(json!({
                "tuple_key": tk("user:anne", "viewer", "document:1"),
                "expectation": true,
                "contextual_tuples": [tk("user:anne", "parent", "document:1")],
            })),
            Some("invalid_tuple"),
        ),
        (
            "contextual tuples not a list",
            one(json!({
                "tuple_key": tk("user:anne", "viewer", "document:1"),
                "expectation": true,
                "contextual_tuples": "user:anne",
            })),
            Some("validation_error"),
        ),
        (
            "context not an object",
            one(json!({
                "tuple_key": tk("user:anne", "viewer", "document:1"),
                "expectation": true,
                "context": [1, 2],
            })),
            Some("validation_error"),
        ),
        (
            "one bad assertion among good ones",
            json!({ "assertions": [
                { "tuple_key": tk("user:bob", "viewer", "document:1"), "expectation": true },
                { "tuple_key": tk("user:bob", "nope", "document:1"), "expectation": true },
            ] }),
            Some("relation_not_found"),
        ),
    ];
    for (what, body, code) in cases {
        let r = s.put(&path, &body).await;
        client_error(&r, &format!("assertions: {what}"), Some(400), code);
        let stored = s.get(&path).await.ok();
        assert_eq!(
            stored["assertions"], good["assertions"],
            "assertions: {what} changed the stored assertions"
        );
    }
}

/// `start_time` on changes must be an RFC 3339 time.
async fn bad_changes_start_time(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    for t in [
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-01",
        "1700000000",
        "2024-01-01T00:00:00",
    ] {
        let r = s
            .get(&format!("/stores/{store}/changes?start_time={t}"))
            .await;
        client_error(
            &r,
            &format!("changes with start_time `{t}`"),
            Some(400),
            Some("validation_error"),
        );
    }
}
