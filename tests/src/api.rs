//! The OpenFGA-compatible HTTP API end to end, on SQLite and on PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, Server, for_each_backend, keys, sample_model, tk, tk_cond};

for_each_backend!(
    stores,
    models,
    tuples_and_read,
    changes,
    check,
    batch_check,
    expand,
    list_objects,
    list_users,
    assertions,
    health_and_metrics,
    auth_required,
    unauthenticated_requests_are_observed,
    depth_and_cycles,
    stores_are_isolated,
);

/// The tuples most scenarios start from; see [`sample_model`].
fn seed_tuples() -> Vec<Value> {
    vec![
        tk("user:anne", "owner", "document:1"),
        tk("user:anne", "approver", "document:1"),
        tk("user:bob", "editor", "document:1"),
        tk("folder:a", "parent", "document:1"),
        tk("user:carol", "owner", "folder:a"),
        tk("user:dave", "member", "group:eng"),
        tk("group:eng#member", "viewer", "document:1"),
        tk("user:dave", "blocked", "document:1"),
        tk("user:*", "viewer", "document:public"),
        tk_cond(
            "user:erin",
            "spender",
            "document:1",
            "within_limit",
            json!({ "limit": 100 }),
        ),
    ]
}

async fn seeded(backend: Backend) -> (Server, String, String) {
    let server = Server::start(backend).await;
    let (store, model) = server.sample_store().await;
    server.write_ok(&store, &seed_tuples()).await;
    (server, store, model)
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn stores(backend: Backend) {
    let s = Server::start(backend).await;
    let r = s.post("/stores", &json!({ "name": "alpha" })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let alpha = r.json();
    assert_eq!(alpha["name"], "alpha");
    let alpha_id = alpha["id"].as_str().unwrap().to_string();
    assert!(
        ulid::Ulid::from_string(&alpha_id).is_ok(),
        "store id is not a ULID: {alpha_id}"
    );
    assert!(
        alpha["created_at"].is_string() && alpha["updated_at"].is_string(),
        "{alpha}"
    );
    let beta = s.create_store("beta").await;
    let gamma = s.create_store("gamma").await;

    let got = s.get(&format!("/stores/{beta}")).await.ok();
    assert_eq!(got["id"], beta.as_str());
    assert_eq!(got["name"], "beta");

    // Pages of two, following continuation tokens, see every store exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let v = s
            .get(&format!("/stores?page_size=2&continuation_token={token}"))
            .await
            .ok();
        let page = v["stores"].as_array().unwrap();
        assert!(page.len() <= 2, "page larger than page_size: {v}");
        seen.extend(page.iter().map(|st| st["id"].as_str().unwrap().to_string()));
        token = v["continuation_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    seen.sort();
    let mut want = vec![alpha_id.clone(), beta.clone(), gamma.clone()];
    want.sort();
    assert_eq!(seen, want);

    let named = s.get("/stores?name=gamma").await.ok();
    let named: Vec<&str> = named["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["id"].as_str().unwrap())
        .collect();
    assert_eq!(named, vec![gamma.as_str()]);

    let r = s.delete(&format!("/stores/{beta}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&format!("/stores/{beta}"))
        .await
        .assert_error(404, Some("store_id_not_found"));
    s.delete(&format!("/stores/{beta}"))
        .await
        .assert_error(404, Some("store_id_not_found"));
    let all = s.get("/stores").await.ok();
    let ids: Vec<&str> = all["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&beta.as_str()) && ids.contains(&alpha_id.as_str()),
        "{all}"
    );
    // A deleted store accepts nothing.
    s.write(&beta, &[tk("user:a", "owner", "document:1")], &[])
        .await
        .assert_error(404, Some("store_id_not_found"));
}

async fn models(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("models").await;
    s.get(&format!("/stores/{store}/authorization-models"))
        .await
        .ok();
    let r = s
        .post(
            &format!("/stores/{store}/authorization-models"),
            &sample_model(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = r.json()["authorization_model_id"]
        .as_str()
        .unwrap()
        .to_string();

    let read = s
        .get(&format!("/stores/{store}/authorization-models/{first}"))
        .await
        .ok();
    let m = &read["authorization_model"];
    assert_eq!(m["id"], first.as_str());
    assert_eq!(m["schema_version"], "1.1");
    let types: Vec<&str> = m["type_definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user", "group", "folder", "document"]);
    let doc = &m["type_definitions"][3];
    assert!(
        doc["relations"]["can_view"]["difference"].is_object(),
        "{doc}"
    );
    assert!(
        doc["relations"]["can_share"]["intersection"].is_object(),
        "{doc}"
    );
    assert!(
        doc["relations"]["viewer"]["union"]["child"][2]["tupleToUserset"].is_object(),
        "{doc}"
    );
    assert_eq!(
        doc["metadata"]["relations"]["spender"]["directly_related_user_types"][0]["condition"],
        "within_limit"
    );
    assert_eq!(
        m["conditions"]["within_limit"]["expression"],
        "amount <= limit"
    );

    let second = s.write_model(&store, &sample_model()).await;
    assert_ne!(first, second);
    let third = s.write_model(&store, &sample_model()).await;

    // Newest first, one per page.
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let v = s
            .get(&format!(
                "/stores/{store}/authorization-models?page_size=1&continuation_token={token}"
            ))
            .await
            .ok();
        let page = v["authorization_models"].as_array().unwrap();
        assert!(page.len() <= 1, "{v}");
        ids.extend(page.iter().map(|m| m["id"].as_str().unwrap().to_string()));
        token = v["continuation_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(ids, vec![third.clone(), second.clone(), first.clone()]);
}

async fn tuples_and_read(backend: Backend) {
    let (s, store, _) = seeded(backend).await;
    let t1 = s
        .write_ok(&store, &[tk("user:x1", "viewer", "document:r1")])
        .await;
    let t2 = s
        .write_ok(&store, &[tk("user:x2", "viewer", "document:r1")])
        .await;
    assert_ne!(t1, t2, "a write must return a new consistency token");
    let del = s
        .write(&store, &[], &[tk("user:x1", "viewer", "document:r1")])
        .await;
    del.ok();
    let t3 = del.token();
    assert_ne!(t2, t3);
    assert_eq!(
        del.header("gatehouse-consistency-token").as_deref(),
        Some(t3.as_str()),
        "header and body token differ"
    );

    // Everything.
    let all = s.read_all(&store, None).await;
    assert_eq!(all.len(), seed_tuples().len() + 1, "{all:?}");
    assert!(
        all.iter().all(|t| t["timestamp"].is_string()),
        "tuples need timestamps: {all:?}"
    );
    let erin = all
        .iter()
        .find(|t| t["key"]["user"] == "user:erin")
        .unwrap();
    assert_eq!(erin["key"]["condition"]["name"], "within_limit");
    assert_eq!(erin["key"]["condition"]["context"]["limit"], 100);

    // Filters.
    let by_type = keys(
        &s.read_all(&store, Some(json!({ "object": "folder:" })))
            .await,
    );
    assert_eq!(by_type, ["folder:a#owner@user:carol"]);
    let by_object = keys(
        &s.read_all(&store, Some(json!({ "object": "document:r1" })))
            .await,
    );
    assert_eq!(by_object, ["document:r1#viewer@user:x2"]);
    let by_relation = keys(
        &s.read_all(
            &store,
            Some(json!({ "object": "document:1", "relation": "owner" })),
        )
        .await,
    );
    assert_eq!(by_relation, ["document:1#owner@user:anne"]);
    let by_user = keys(
        &s.read_all(
            &store,
            Some(json!({ "object": "document:", "user": "user:anne" })),
        )
        .await,
    );
    assert_eq!(
        by_user,
        [
            "document:1#approver@user:anne",
            "document:1#owner@user:anne"
        ]
    );
    let by_userset = keys(
        &s.read_all(
            &store,
            Some(json!({ "object": "document:", "user": "group:eng#member" })),
        )
        .await,
    );
    assert_eq!(by_userset, ["document:1#viewer@group:eng#member"]);

    // Pagination: pages of 3 cover all tuples exactly once.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let v = s
            .post(
                &format!("/stores/{store}/read"),
                &json!({ "page_size": 3, "continuation_token": token }),
            )
            .await
            .ok();
        let page = v["tuples"].as_array().unwrap();
        assert!(page.len() <= 3, "{v}");
        paged.extend(page.iter().cloned());
        pages += 1;
        token = v["continuation_token"].as_str().unwrap().to_string();
        if token.is_empty() || pages > 20 {
            break;
        }
    }
    assert!(pages >= 4, "expected several pages, got {pages}");
    assert_eq!(keys(&paged), keys(&all));

    // A delete is seen by checks and reads at once.
    assert!(
        !s.check_with(
            &store,
            json!({ "tuple_key": tk("user:x1", "viewer", "document:r1"), "consistency_token": t3 })
        )
        .await
    );
    assert!(s.check(&store, "user:x2", "viewer", "document:r1").await);

    // on_duplicate / on_missing = ignore.
    let r = s
        .post(
            &format!("/stores/{store}/write"),
            &json!({
                "writes": { "tuple_keys": [tk("user:x2", "viewer", "document:r1"), tk("user:x3", "viewer", "document:r1")], "on_duplicate": "ignore" },
                "deletes": { "tuple_keys": [tk("user:nobody", "viewer", "document:r1")], "on_missing": "ignore" },
            }),
        )
        .await;
    r.ok();
    let r1 = keys(
        &s.read_all(&store, Some(json!({ "object": "document:r1" })))
            .await,
    );
    assert_eq!(
        r1,
        ["document:r1#viewer@user:x2", "document:r1#viewer@user:x3"]
    );
}

async fn changes(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    s.write_ok(
        &store,
        &[
            tk("user:a", "owner", "document:1"),
            tk("user:c", "owner", "folder:f"),
        ],
    )
    .await;
    s.write_ok(&store, &[tk("user:b", "editor", "document:1")])
        .await;
    let r = s
        .write(&store, &[], &[tk("user:a", "owner", "document:1")])
        .await;
    r.ok();
    s.write_ok(&store, &[tk("user:d", "owner", "folder:f")])
        .await;

    let describe = |c: &Value| {
        format!(
            "{} {}#{}@{}",
            c["operation"].as_str().unwrap(),
            c["tuple_key"]["object"].as_str().unwrap(),
            c["tuple_key"]["relation"].as_str().unwrap(),
            c["tuple_key"]["user"].as_str().unwrap()
        )
    };
    // Document changes only, two per page, in revision order.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let v = s
            .get(&format!(
                "/stores/{store}/changes?type=document&page_size=2&continuation_token={token}"
            ))
            .await
            .ok();
        let page = v["changes"].as_array().unwrap();
        assert!(page.len() <= 2, "{v}");
        assert!(page.iter().all(|c| c["timestamp"].is_string()), "{v}");
        seen.extend(page.iter().map(describe));
        let next = v["continuation_token"].as_str().unwrap_or("").to_string();
        if page.is_empty() || next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(
        seen,
        [
            "TUPLE_OPERATION_WRITE document:1#owner@user:a",
            "TUPLE_OPERATION_WRITE document:1#editor@user:b",
            "TUPLE_OPERATION_DELETE document:1#owner@user:a",
        ]
    );
    // Polling with the last token resumes after what was read.
    s.write_ok(&store, &[tk("user:e", "viewer", "document:2")])
        .await;
    let v = s
        .get(&format!(
            "/stores/{store}/changes?type=document&continuation_token={token}"
        ))
        .await
        .ok();
    let more: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(describe)
        .collect();
    assert!(
        more.ends_with(&["TUPLE_OPERATION_WRITE document:2#viewer@user:e".to_string()]),
        "{more:?}"
    );
    assert!(
        !more
            .iter()
            .any(|c| c.contains("user:a") || c.contains("user:b")),
        "old changes repeated: {more:?}"
    );

    // Without a type filter, every change.
    let v = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    let all: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(describe)
        .collect();
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.contains(&"TUPLE_OPERATION_WRITE folder:f#owner@user:d".to_string()),
        "{all:?}"
    );

    // `start_time` (RFC 3339) starts at the first change made at or after it.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let start = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.write_ok(&store, &[tk("user:f", "viewer", "document:3")])
        .await;
    let since = |t: chrono::DateTime<chrono::Utc>| {
        let t = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        format!(
            "/stores/{store}/changes?start_time={}",
            t.replace('+', "%2B")
        )
    };
    let v = s.get(&since(start)).await.ok();
    let later: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(describe)
        .collect();
    assert_eq!(
        later,
        ["TUPLE_OPERATION_WRITE document:3#viewer@user:f"],
        "changes since {start}: {v}"
    );
    let v = s.get(&since(start - chrono::Duration::hours(1))).await.ok();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(7), "{v}");
    // A start in the future: nothing, and a token that resumes at the next write.
    let v = s.get(&since(start + chrono::Duration::hours(1))).await.ok();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(0), "{v}");
    let token = v["continuation_token"].as_str().unwrap().to_string();
    s.write_ok(&store, &[tk("user:g", "viewer", "document:3")])
        .await;
    let v = s
        .get(&format!(
            "/stores/{store}/changes?continuation_token={token}"
        ))
        .await
        .ok();
    let polled: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(describe)
        .collect();
    assert_eq!(
        polled,
        ["TUPLE_OPERATION_WRITE document:3#viewer@user:g"],
        "{v}"
    );
}

async fn check(backend: Backend) {
    let (s, store, model) = seeded(backend).await;
    let cases = [
        ("user:anne", "owner", "document:1", true),
        ("user:anne", "editor", "document:1", true),
        ("user:anne", "viewer", "document:1", true),
        ("user:bob", "viewer", "document:1", true),
        ("user:bob", "owner", "document:1", false),
        ("user:carol", "viewer", "folder:a", true),
        ("user:carol", "viewer", "document:1", true),
        ("user:carol", "editor", "document:1", false),
        ("user:dave", "viewer", "document:1", true),
        ("user:dave", "member", "group:eng", true),
        ("group:eng#member", "viewer", "document:1", true),
        ("user:anne", "can_share", "document:1", true),
        ("user:bob", "can_share", "document:1", false),
        ("user:anne", "can_view", "document:1", true),
        ("user:dave", "can_view", "document:1", false),
        ("user:zed", "viewer", "document:public", true),
        ("user:zed", "can_view", "document:public", true),
        ("user:zed", "viewer", "document:1", false),
        ("user:erin", "viewer", "document:1", false),
    ];
    let mut wrong = Vec::new();
    for (user, relation, object, want) in cases {
        let r = s
            .check_req(&store, &json!({ "tuple_key": tk(user, relation, object) }))
            .await;
        let v = r.ok();
        assert!(
            r.header("x-request-id").is_some(),
            "check without x-request-id"
        );
        assert!(
            v["consistency_token"].is_string(),
            "check without consistency_token: {v}"
        );
        assert!(
            r.header("gatehouse-consistency-token").is_some(),
            "check without token header"
        );
        if v["allowed"] != want {
            wrong.push(format!(
                "{user} {relation} {object}: got {}, want {want}",
                v["allowed"]
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));

    // Contextual tuples count for the request only.
    let ctx = json!({ "tuple_key": tk("user:zed", "editor", "document:2"), "contextual_tuples": { "tuple_keys": [tk("user:zed", "owner", "document:2")] } });
    assert!(s.check_with(&store, ctx).await);
    assert!(!s.check(&store, "user:zed", "editor", "document:2").await);
    let ctx = json!({ "tuple_key": tk("user:zed", "viewer", "document:3"), "contextual_tuples": { "tuple_keys": [tk("folder:z", "parent", "document:3"), tk("user:zed", "owner", "folder:z")] } });
    assert!(s.check_with(&store, ctx).await);

    // Conditions: satisfied, not satisfied, parameters missing.
    let spend = |amount: Value| json!({ "tuple_key": tk("user:erin", "spender", "document:1"), "context": { "amount": amount } });
    assert!(s.check_with(&store, spend(json!(50))).await);
    assert!(s.check_with(&store, spend(json!(100))).await);
    assert!(!s.check_with(&store, spend(json!(500))).await);
    s.check_req(
        &store,
        &json!({ "tuple_key": tk("user:erin", "spender", "document:1") }),
    )
    .await
    .assert_error(400, None);
    s.check_req(
        &store,
        &json!({ "tuple_key": tk("user:erin", "spender", "document:1"), "context": {} }),
    )
    .await
    .assert_error(400, None);
    // A user without a tuple needs no context.
    assert!(!s.check(&store, "user:zed", "spender", "document:1").await);
    // A condition's bound context cannot be overridden by the request.
    assert!(!s.check_with(&store, json!({ "tuple_key": tk("user:erin", "spender", "document:1"), "context": { "amount": 500, "limit": 1000 } })).await);

    // Pinning a model: a later model without `owner` in `editor` changes the latest answer only.
    let mut narrower = sample_model();
    narrower["type_definitions"][3]["relations"]["editor"] = json!({ "this": {} });
    let newer = s.write_model(&store, &narrower).await;
    assert!(
        !s.check(&store, "user:anne", "editor", "document:1").await,
        "the latest model must be used by default"
    );
    assert!(!s.check_with(&store, json!({ "tuple_key": tk("user:anne", "editor", "document:1"), "authorization_model_id": newer })).await);
    assert!(s.check_with(&store, json!({ "tuple_key": tk("user:anne", "editor", "document:1"), "authorization_model_id": model })).await);

    // HIGHER_CONSISTENCY answers the same.
    assert!(s.check_with(&store, json!({ "tuple_key": tk("user:carol", "viewer", "document:1"), "consistency": "HIGHER_CONSISTENCY" })).await);
    assert!(s.check_with(&store, json!({ "tuple_key": tk("user:carol", "viewer", "document:1"), "consistency": "MINIMIZE_LATENCY" })).await);
}

async fn batch_check(backend: Backend) {
    let (s, store, _) = seeded(backend).await;
    let item = |id: &str, user: &str, relation: &str, object: &str| json!({ "tuple_key": tk(user, relation, object), "correlation_id": id });
    let mut with_ctx = item("ctx", "user:zed", "owner", "document:9");
    with_ctx["contextual_tuples"] =
        json!({ "tuple_keys": [tk("user:zed", "owner", "document:9")] });
    let mut cond = item("cond", "user:erin", "spender", "document:1");
    cond["context"] = json!({ "amount": 3 });
    let r = s
        .post(
            &format!("/stores/{store}/batch-check"),
            &json!({ "checks": [
                item("a", "user:anne", "viewer", "document:1"),
                item("b", "user:zed", "viewer", "document:1"),
                item("c-9f3a", "user:dave", "can_view", "document:1"),
                item("d", "user:zed", "viewer", "document:public"),
                with_ctx,
                cond,
                item("bad", "user:anne", "no_such_relation", "document:1"),
            ] }),
        )
        .await;
    let v = r.ok();
    assert!(v["consistency_token"].is_string(), "{v}");
    let res = v["result"]
        .as_object()
        .unwrap_or_else(|| panic!("no result map: {v}"));
    assert_eq!(res.len(), 7, "{v}");
    assert_eq!(res["a"]["allowed"], true, "{v}");
    assert_eq!(res["b"]["allowed"], false, "{v}");
    assert_eq!(res["c-9f3a"]["allowed"], false, "{v}");
    assert_eq!(res["d"]["allowed"], true, "{v}");
    assert_eq!(res["ctx"]["allowed"], true, "{v}");
    assert_eq!(res["cond"]["allowed"], true, "{v}");
    assert!(res["a"].get("error").is_none_or(Value::is_null), "{v}");
    assert!(
        res["bad"]["error"].is_object(),
        "an invalid check reports its error: {v}"
    );
    // Contextual tuples of one check do not leak into another.
    let r = s
        .post(
            &format!("/stores/{store}/batch-check"),
            &json!({ "checks": [
                { "tuple_key": tk("user:zed", "owner", "document:9"), "correlation_id": "with", "contextual_tuples": { "tuple_keys": [tk("user:zed", "owner", "document:9")] } },
                { "tuple_key": tk("user:zed", "owner", "document:9"), "correlation_id": "without" },
            ] }),
        )
        .await;
    let v = r.ok();
    assert_eq!(v["result"]["with"]["allowed"], true, "{v}");
    assert_eq!(v["result"]["without"]["allowed"], false, "{v}");
}

async fn expand(backend: Backend) {
    let (s, store, _) = seeded(backend).await;
    let r = s
        .post(
            &format!("/stores/{store}/expand"),
            &json!({ "tuple_key": { "relation": "viewer", "object": "document:1" } }),
        )
        .await;
    let v = r.ok();
    assert!(v["consistency_token"].is_string(), "{v}");
    let root = &v["tree"]["root"];
    assert_eq!(root["name"], "document:1#viewer", "{v}");
    let nodes = root["union"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("viewer is a union: {v}"));
    assert_eq!(nodes.len(), 3, "{v}");
    assert_eq!(
        strings(&nodes[0]["leaf"]["users"]["users"]),
        ["group:eng#member"],
        "{v}"
    );
    assert_eq!(
        nodes[1]["leaf"]["computed"]["userset"], "document:1#editor",
        "{v}"
    );
    let ttu = &nodes[2]["leaf"]["tupleToUserset"];
    assert_eq!(ttu["tupleset"], "document:1#parent", "{v}");
    assert_eq!(
        ttu["computed"],
        json!([{ "userset": "folder:a#viewer" }]),
        "{v}"
    );

    let v = s
        .post(
            &format!("/stores/{store}/expand"),
            &json!({ "tuple_key": { "relation": "can_view", "object": "document:1" } }),
        )
        .await
        .ok();
    let diff = &v["tree"]["root"]["difference"];
    assert_eq!(
        diff["base"]["leaf"]["computed"]["userset"], "document:1#viewer",
        "{v}"
    );
    assert_eq!(
        diff["subtract"]["leaf"]["computed"]["userset"], "document:1#blocked",
        "{v}"
    );
    let v = s
        .post(
            &format!("/stores/{store}/expand"),
            &json!({ "tuple_key": { "relation": "can_share", "object": "document:1" } }),
        )
        .await
        .ok();
    assert_eq!(
        v["tree"]["root"]["intersection"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{v}"
    );
    let v = s
        .post(
            &format!("/stores/{store}/expand"),
            &json!({ "tuple_key": { "relation": "owner", "object": "document:1" } }),
        )
        .await
        .ok();
    assert_eq!(
        strings(&v["tree"]["root"]["leaf"]["users"]["users"]),
        ["user:anne"],
        "{v}"
    );
}

async fn list_objects(backend: Backend) {
    let (s, store, _) = seeded(backend).await;
    let lo = |user: &str, relation: &str| json!({ "type": "document", "relation": relation, "user": user });
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &lo("user:anne", "viewer"),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:1", "document:public"]);
    assert!(v["consistency_token"].is_string(), "{v}");
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &lo("user:carol", "viewer"),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:1", "document:public"]);
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &lo("user:dave", "can_view"),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:public"]);
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &lo("user:anne", "can_share"),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:1"]);
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &json!({ "type": "folder", "relation": "viewer", "user": "user:carol" }),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["folder:a"]);
    let mut ctx = lo("user:zed", "viewer");
    ctx["contextual_tuples"] = json!({ "tuple_keys": [tk("user:zed", "owner", "document:2")] });
    let v = s
        .post(&format!("/stores/{store}/list-objects"), &ctx)
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:2", "document:public"]);
    let mut cond = lo("user:erin", "spender");
    cond["context"] = json!({ "amount": 1 });
    let v = s
        .post(&format!("/stores/{store}/list-objects"), &cond)
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["document:1"]);
    cond["context"] = json!({ "amount": 1000 });
    let v = s
        .post(&format!("/stores/{store}/list-objects"), &cond)
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), Vec::<String>::new());

    // Pagination at one snapshot: a write between pages does not show on later pages.
    let pat: Vec<Value> = (1..=5)
        .map(|i| tk("user:pat", "viewer", &format!("document:p{i}")))
        .collect();
    s.write_ok(&store, &pat).await;
    let mut body = lo("user:pat", "viewer");
    body["page_size"] = json!(4);
    let first = s
        .post(&format!("/stores/{store}/list-objects"), &body)
        .await
        .ok();
    let page1 = strings(&first["objects"]);
    assert_eq!(
        page1,
        ["document:p1", "document:p2", "document:p3", "document:p4"]
    );
    let token = first["continuation_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty(), "{first}");
    s.write_ok(&store, &[tk("user:pat", "viewer", "document:pz")])
        .await;
    body["continuation_token"] = json!(token);
    let second = s
        .post(&format!("/stores/{store}/list-objects"), &body)
        .await
        .ok();
    assert_eq!(
        strings(&second["objects"]),
        ["document:p5", "document:public"],
        "{second}"
    );
    assert_eq!(second["continuation_token"], "", "{second}");
    let fresh = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &lo("user:pat", "viewer"),
        )
        .await
        .ok();
    assert_eq!(fresh["objects"].as_array().unwrap().len(), 7, "{fresh}");

    // Streamed: NDJSON, one `{"result":{"object":…}}` per line.
    let r = s
        .post(
            &format!("/stores/{store}/streamed-list-objects"),
            &lo("user:anne", "viewer"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut streamed: Vec<String> = r
        .text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l:?}"));
            v["result"]["object"]
                .as_str()
                .unwrap_or_else(|| panic!("line without result.object: {l}"))
                .to_string()
        })
        .collect();
    streamed.sort();
    assert_eq!(streamed, ["document:1", "document:public"]);
}

async fn list_users(backend: Backend) {
    let (s, store, _) = seeded(backend).await;
    let lu = |object_id: &str, relation: &str, filter: Value| json!({ "object": { "type": "document", "id": object_id }, "relation": relation, "user_filters": [filter] });
    let names = |v: &Value| {
        let mut out: Vec<String> = v["users"]
            .as_array()
            .unwrap_or_else(|| panic!("no users: {v}"))
            .iter()
            .map(|u| {
                if let Some(o) = u.get("object") {
                    format!(
                        "{}:{}",
                        o["type"].as_str().unwrap(),
                        o["id"].as_str().unwrap()
                    )
                } else if let Some(w) = u.get("wildcard") {
                    format!("{}:*", w["type"].as_str().unwrap())
                } else if let Some(us) = u.get("userset") {
                    format!(
                        "{}:{}#{}",
                        us["type"].as_str().unwrap(),
                        us["id"].as_str().unwrap(),
                        us["relation"].as_str().unwrap()
                    )
                } else {
                    panic!("unknown user shape {u}")
                }
            })
            .collect();
        out.sort();
        out
    };
    let v = s
        .post(
            &format!("/stores/{store}/list-users"),
            &lu("1", "viewer", json!({ "type": "user" })),
        )
        .await
        .ok();
    assert!(v["consistency_token"].is_string(), "{v}");
    assert_eq!(
        names(&v),
        ["user:anne", "user:bob", "user:carol", "user:dave"],
        "{v}"
    );
    assert_eq!(
        v["users"].as_array().unwrap()[0],
        json!({ "object": { "type": "user", "id": "anne" } }),
        "{v}"
    );
    let v = s
        .post(
            &format!("/stores/{store}/list-users"),
            &lu("1", "can_view", json!({ "type": "user" })),
        )
        .await
        .ok();
    assert_eq!(names(&v), ["user:anne", "user:bob", "user:carol"], "{v}");
    let v = s
        .post(
            &format!("/stores/{store}/list-users"),
            &lu("public", "viewer", json!({ "type": "user" })),
        )
        .await
        .ok();
    assert_eq!(
        v["users"],
        json!([{ "wildcard": { "type": "user" } }]),
        "{v}"
    );
    let v = s
        .post(
            &format!("/stores/{store}/list-users"),
            &lu(
                "1",
                "viewer",
                json!({ "type": "group", "relation": "member" }),
            ),
        )
        .await
        .ok();
    assert_eq!(
        v["users"],
        json!([{ "userset": { "type": "group", "id": "eng", "relation": "member" } }]),
        "{v}"
    );
    let v = s
        .post(
            &format!("/stores/{store}/list-users"),
            &lu("1", "viewer", json!({ "type": "folder" })),
        )
        .await
        .ok();
    assert_eq!(names(&v), Vec::<String>::new(), "{v}");
    // Contextual tuples are a plain array in list-users.
    let mut body = lu("7", "viewer", json!({ "type": "user" }));
    body["contextual_tuples"] = json!([tk("user:zed", "editor", "document:7")]);
    let v = s
        .post(&format!("/stores/{store}/list-users"), &body)
        .await
        .ok();
    assert_eq!(names(&v), ["user:zed"], "{v}");
}

async fn assertions(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, model) = s.sample_store().await;
    let empty = s
        .get(&format!("/stores/{store}/assertions/{model}"))
        .await
        .ok();
    assert_eq!(
        empty["assertions"].as_array().map(Vec::len),
        Some(0),
        "{empty}"
    );
    let body = json!({ "assertions": [
        { "tuple_key": tk("user:anne", "viewer", "document:1"), "expectation": true },
        { "tuple_key": tk("user:bob", "viewer", "document:1"), "expectation": false },
    ] });
    let r = s
        .put(&format!("/stores/{store}/assertions/{model}"), &body)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let got = s
        .get(&format!("/stores/{store}/assertions/{model}"))
        .await
        .ok();
    assert_eq!(got["authorization_model_id"], model.as_str(), "{got}");
    assert_eq!(got["assertions"], body["assertions"], "{got}");
    // Replaced, not appended.
    let one = json!({ "assertions": [{ "tuple_key": tk("user:c", "owner", "document:2"), "expectation": true }] });
    s.put(&format!("/stores/{store}/assertions/{model}"), &one)
        .await
        .ok();
    let got = s
        .get(&format!("/stores/{store}/assertions/{model}"))
        .await
        .ok();
    assert_eq!(got["assertions"], one["assertions"], "{got}");
}

async fn health_and_metrics(backend: Backend) {
    let s = Server::start(backend).await;
    let h = s.raw(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(h.status, 200, "{}", h.text);
    let backend_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(h.json()["backend"], backend_name);
    assert!(h.header("x-request-id").is_some_and(|id| !id.is_empty()));
    let other = s.raw(Method::GET, "/healthz", None, None, None).await;
    assert_ne!(
        h.header("x-request-id"),
        other.header("x-request-id"),
        "request ids repeat"
    );

    // An incoming request id is echoed; a hostile one is replaced.
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "trace-123_abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "trace-123_abc");
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    let id = r.headers().get("x-request-id").unwrap().to_str().unwrap();
    assert!(!id.is_empty() && id != "a b<script>", "{id}");

    // Successful and failed store requests carry a request id.
    let store = s.create_store("ids").await;
    let r = s.get(&format!("/stores/{store}")).await;
    assert!(
        r.header("x-request-id").is_some(),
        "GET store without x-request-id"
    );
    s.get(&format!("/stores/{}", ulid::Ulid::new()))
        .await
        .assert_error(404, Some("store_id_not_found"));

    let m = s.raw(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(m.status, 200);
    assert!(
        m.text.contains("gatehouse_http_requests_total{"),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("status=\"404\""),
        "404s are counted: {}",
        m.text
    );
    assert!(
        m.text
            .contains("\ngatehouse_decision_log_dropped_total 0\n"),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("route=\"/stores/{store_id}\""),
        "requests are counted by route pattern: {}",
        m.text
    );
    assert!(
        m.text.contains("gatehouse_http_request_duration_seconds"),
        "{}",
        m.text
    );

    let r = s.get("/no/such/endpoint").await;
    r.assert_error(404, None);
}

/// The requests of [`auth_required`]: every kind of /stores route.
fn guarded_routes(store: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/stores".to_string()),
        (Method::POST, "/stores".to_string()),
        (Method::GET, format!("/stores/{store}")),
        (Method::POST, format!("/stores/{store}/check")),
        (Method::POST, format!("/stores/{store}/write")),
        (Method::GET, format!("/stores/{store}/changes")),
        (Method::DELETE, format!("/stores/{store}")),
    ]
}

fn bad_credentials(key: &str) -> Vec<Option<String>> {
    vec![
        None,
        Some("Bearer wrong-key".to_string()),
        Some(format!("Basic {key}")),
        Some(key.to_string()),
        Some("Bearer ".into()),
    ]
}

async fn auth_required(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("auth").await;
    for (method, path) in guarded_routes(&store) {
        for auth in bad_credentials(&s.key) {
            let r = s
                .raw(
                    method.clone(),
                    &path,
                    Some("application/json"),
                    Some(b"{}".to_vec()),
                    auth.as_deref(),
                )
                .await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with {auth:?}: {} {}",
                r.status, r.text
            );
            let v = r.json();
            assert_eq!(v["code"], "unauthenticated", "{v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
    }
    // The store survived the unauthenticated DELETE, and the right key works in either case.
    s.get(&format!("/stores/{store}")).await.ok();
    let r = s
        .raw(
            Method::GET,
            "/stores",
            None,
            None,
            Some(&format!("bearer {}", s.key)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // /healthz and /metrics need no key.
    assert_eq!(
        s.raw(Method::GET, "/healthz", None, None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        s.raw(Method::GET, "/metrics", None, None, None)
            .await
            .status,
        200
    );
}

/// 401 answers are answers like any other: they carry `x-request-id` and are counted.
async fn unauthenticated_requests_are_observed(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("auth").await;
    let mut missing = Vec::new();
    for (method, path) in guarded_routes(&store) {
        let r = s
            .raw(
                method.clone(),
                &path,
                Some("application/json"),
                Some(b"{}".to_vec()),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
        if r.header("x-request-id").is_none() {
            missing.push(format!("{method} {path}"));
        }
    }
    let m = s.raw(Method::GET, "/metrics", None, None, None).await;
    let counted = m.text.contains("status=\"401\"");
    assert!(
        missing.is_empty() && counted,
        "401 answers without x-request-id: {missing:?}; 401s counted in gatehouse_http_requests_total: {counted}"
    );
}

/// A model where groups nest: `define member: [user, group#member]`.
fn nesting_model() -> Value {
    json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            {
                "type": "group",
                "relations": { "member": { "this": {} } },
                "metadata": { "relations": { "member": { "directly_related_user_types": [
                    { "type": "user" }, { "type": "group", "relation": "member" }
                ] } } }
            }
        ]
    })
}

/// Cycles are cut with a correct answer; chains deeper than the bound are an error (never a
/// wrong answer); list queries never answer wrongly either.
async fn depth_and_cycles(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("depth").await;
    s.write_model(&store, &nesting_model()).await;
    // A cycle: a <- b <- a, with user:in a member of b.
    s.write_ok(
        &store,
        &[
            tk("group:b#member", "member", "group:a"),
            tk("group:a#member", "member", "group:b"),
            tk("user:in", "member", "group:b"),
        ],
    )
    .await;
    assert!(!s.check(&store, "user:out", "member", "group:a").await);
    assert!(s.check(&store, "user:in", "member", "group:a").await);
    assert!(s.check(&store, "user:in", "member", "group:b").await);
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &json!({ "type": "group", "relation": "member", "user": "user:in" }),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), ["group:a", "group:b"]);

    // A chain g0 <- g1 <- ... <- g40 <- user:deep.
    let mut chain: Vec<Value> = (0..40)
        .map(|i| {
            tk(
                &format!("group:g{}#member", i + 1),
                "member",
                &format!("group:g{i}"),
            )
        })
        .collect();
    chain.push(tk("user:deep", "member", "group:g40"));
    s.write_ok(&store, &chain).await;
    // Near the user: an answer.
    assert!(s.check(&store, "user:deep", "member", "group:g30").await);
    assert!(!s.check(&store, "user:other", "member", "group:g30").await);
    // Past the bound (25): an error, not a wrong answer.
    let r = s
        .check_req(
            &store,
            &json!({ "tuple_key": tk("user:deep", "member", "group:g0") }),
        )
        .await;
    if r.status == 200 {
        assert_eq!(
            r.json()["allowed"],
            true,
            "a wrong answer past the depth bound: {}",
            r.text
        );
    } else {
        r.assert_error(400, Some("authorization_model_resolution_too_complex"));
    }
    // List objects may answer or refuse, but never name a group user:deep is not in.
    let r = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &json!({ "type": "group", "relation": "member", "user": "user:deep" }),
        )
        .await;
    if r.status == 200 {
        let got = strings(&r.json()["objects"]);
        let all: Vec<String> = (0..=40).map(|i| format!("group:g{i}")).collect();
        assert!(got.iter().all(|g| all.contains(g)), "{got:?}");
        assert!(
            got.contains(&"group:g40".to_string()) && got.contains(&"group:g30".to_string()),
            "{got:?}"
        );
    } else {
        r.assert_error(400, Some("authorization_model_resolution_too_complex"));
    }
}

/// Two stores with the same objects and users share nothing.
async fn stores_are_isolated(backend: Backend) {
    let s = Server::start(backend).await;
    let (a, _) = s.sample_store().await;
    let (b, _) = s.sample_store().await;
    s.write_ok(&a, &seed_tuples()).await;
    s.write_ok(&b, &[tk("user:zed", "owner", "document:2")])
        .await;
    assert!(s.check(&a, "user:anne", "viewer", "document:1").await);
    assert!(!s.check(&b, "user:anne", "viewer", "document:1").await);
    assert!(!s.check(&a, "user:zed", "viewer", "document:2").await);
    assert!(!s.check(&b, "user:zed", "viewer", "document:public").await);
    assert_eq!(
        keys(&s.read_all(&b, None).await),
        ["document:2#owner@user:zed"]
    );
    let v = s
        .post(
            &format!("/stores/{b}/list-objects"),
            &json!({ "type": "document", "relation": "viewer", "user": "user:anne" }),
        )
        .await
        .ok();
    assert_eq!(strings(&v["objects"]), Vec::<String>::new());
    let v = s
        .post(&format!("/stores/{b}/list-users"), &json!({ "object": { "type": "document", "id": "1" }, "relation": "viewer", "user_filters": [{ "type": "user" }] }))
        .await
        .ok();
    assert_eq!(v["users"], json!([]));
    let v = s
        .get(&format!("/stores/{b}/changes?page_size=100"))
        .await
        .ok();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(1), "{v}");
    // Deleting one store leaves the other whole.
    assert_eq!(s.delete(&format!("/stores/{b}")).await.status, 204);
    assert!(s.check(&a, "user:anne", "viewer", "document:1").await);
    assert_eq!(s.read_all(&a, None).await.len(), seed_tuples().len());
}
