//! Cedar policies over relationships through the real server: versions, the generated schema,
//! decisions (native and AuthZEN), and bad input that changes nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Server, for_each_backend, tk};

for_each_backend!(
    policy_lifecycle,
    tenant_schema_and_context,
    authzen,
    explain,
    templates,
    policy_bad_input,
    decision_bad_input,
);

const POLICIES: &str = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("no-secret")
@reason("secret folder")
forbid (principal, action, resource in folder::"secret");

@id("eng-reads")
permit (principal in group::"eng", action == Action::"viewer", resource is document);
"#;

async fn seeded(backend: Backend) -> (Server, String) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    s.write_ok(
        &store,
        &[
            tk("user:anne", "owner", "document:1"),
            tk("user:anne", "owner", "document:2"),
            tk("folder:secret", "parent", "document:2"),
            tk("user:dave", "member", "group:eng"),
        ],
    )
    .await;
    (s, store)
}

async fn decide(s: &Server, store: &str, subject: &str, action: &str, resource: &str) -> Value {
    s.post(
        &format!("/stores/{store}/decide"),
        &json!({ "subject": subject, "action": action, "resource": resource }),
    )
    .await
    .ok()
}

fn ids(d: &Value) -> Vec<String> {
    d["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("no policies in {d}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

async fn versions(s: &Server, store: &str) -> Vec<Value> {
    s.get(&format!("/stores/{store}/policy-versions"))
        .await
        .ok()["versions"]
        .as_array()
        .unwrap()
        .clone()
}

async fn policy_lifecycle(backend: Backend) {
    let (s, store) = seeded(backend).await;
    // A new store decides with the baseline: the graph's answer.
    let active = s.get(&format!("/stores/{store}/policies")).await.ok();
    assert_eq!(active["id"], "baseline", "{active}");
    assert_eq!(active["schema_generated"], true, "{active}");
    let d = decide(&s, &store, "user:anne", "viewer", "document:1").await;
    assert_eq!(d["allowed"], true, "{d}");
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(ids(&d), ["baseline"]);
    assert_eq!(d["rebac"], true, "{d}");
    let held: Vec<&str> = d["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in ["owner", "editor", "viewer", "can_view"] {
        assert!(held.contains(&r), "anne holds {r} on document:1: {d}");
    }
    assert!(!held.contains(&"blocked"), "{d}");
    assert!(d["consistency_token"].is_string(), "{d}");
    let d = decide(&s, &store, "user:bob", "viewer", "document:1").await;
    assert_eq!(
        (d["allowed"].as_bool(), d["rebac"].as_bool()),
        (Some(false), Some(false)),
        "{d}"
    );
    assert!(ids(&d).is_empty(), "a default deny names no policy: {d}");

    // The generated schema: types with their parent links, relations as actions.
    let schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok();
    assert_eq!(schema["generated"], true);
    assert_eq!(
        schema["schema"][""]["entityTypes"]["document"]["memberOfTypes"],
        json!(["folder"]),
        "{schema}"
    );
    assert!(
        schema["schema"][""]["actions"]["can_view"].is_object(),
        "{schema}"
    );

    // A policy set with a forbid over the folder hierarchy and a permit for a group.
    let r = s
        .put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": POLICIES }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v1 = r.json();
    let v1_id = v1["id"].as_str().unwrap().to_string();
    assert_eq!(v1["active"], true, "{v1}");
    let d = decide(&s, &store, "user:anne", "viewer", "document:2").await;
    assert_eq!(
        d["allowed"], false,
        "the owner is denied in the secret folder: {d}"
    );
    assert_eq!(d["rebac"], true, "{d}");
    assert_eq!(ids(&d), ["no-secret"]);
    assert_eq!(
        d["policies"][0]["annotations"]["reason"], "secret folder",
        "{d}"
    );
    assert_eq!(d["policy_version"], v1_id.as_str(), "{d}");
    let d = decide(&s, &store, "user:dave", "viewer", "document:1").await;
    assert_eq!(
        (d["allowed"].as_bool(), d["rebac"].as_bool()),
        (Some(true), Some(false)),
        "a group member reads through the Cedar permit alone: {d}"
    );
    assert_eq!(ids(&d), ["eng-reads"]);
    let d = decide(&s, &store, "user:dave", "owner", "document:1").await;
    assert_eq!(d["allowed"], false, "eng-reads is for viewer only: {d}");

    // A second version, saved but not active.
    let r = s
        .put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": "@id(\"baseline\")\npermit (principal, action, resource) when { context.rebac };", "activate": false }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v2_id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["active"], false);
    let active = s.get(&format!("/stores/{store}/policies")).await.ok();
    assert_eq!(active["id"], v1_id.as_str(), "{active}");
    let listed = versions(&s, &store).await;
    let listed_ids: Vec<&str> = listed.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, [v2_id.as_str(), v1_id.as_str()], "newest first");
    assert_eq!(listed[1]["active"], true);
    assert_eq!(listed[0]["active"], false);
    let one = s
        .get(&format!("/stores/{store}/policy-versions/{v1_id}"))
        .await
        .ok();
    assert_eq!(one["policies"], POLICIES, "{one}");

    // Activate v2, then roll back to v1.
    let r = s
        .post(
            &format!("/stores/{store}/policy-versions/{v2_id}/activate"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = decide(&s, &store, "user:anne", "viewer", "document:2").await;
    assert_eq!(d["allowed"], true, "v2 has no forbid: {d}");
    assert_eq!(d["policy_version"], v2_id.as_str());
    s.post(
        &format!("/stores/{store}/policy-versions/{v1_id}/activate"),
        &json!({}),
    )
    .await
    .ok();
    let d = decide(&s, &store, "user:anne", "viewer", "document:2").await;
    assert_eq!(d["allowed"], false, "rolled back to v1: {d}");
    assert_eq!(
        versions(&s, &store).await.len(),
        2,
        "activation adds no version"
    );
}

/// A tenant-supplied schema declares the context its callers send; policies use it.
async fn tenant_schema_and_context(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let mut schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok()["schema"].clone();
    let actions = schema[""]["actions"].as_object_mut().unwrap();
    for a in actions.values_mut() {
        a["appliesTo"]["context"]["attributes"]["ip"] =
            json!({ "type": "String", "required": false });
    }
    let policies = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };
@id("blocked-ip")
forbid (principal, action, resource) when { context has ip && context.ip == "10.6.6.6" };
"#;
    // Without the schema, `context.ip` is not declared: refused.
    let unguarded = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };
@id("blocked-ip")
forbid (principal, action, resource) when { context.ip == "10.6.6.6" };
"#;
    let r = s
        .put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": unguarded }),
        )
        .await;
    let e = r.assert_error(400, Some("invalid_policies"));
    assert_eq!(e["error"]["details"][0]["policy_id"], "blocked-ip", "{e}");
    assert_eq!(e["error"]["details"][0]["line"], 4, "{e}");
    let r = s
        .put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": policies, "schema": schema }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["schema_generated"], false);
    let got = s.get(&format!("/stores/{store}/policy-schema")).await.ok();
    assert_eq!(got["generated"], false);
    assert_eq!(got["schema"], schema);
    let ask = |ctx: Value| {
        let s = &s;
        let store = &store;
        async move {
            s.post(
                &format!("/stores/{store}/decide"),
                &json!({ "subject": "user:anne", "action": "viewer", "resource": "document:1", "context": ctx }),
            )
            .await
        }
    };
    let d = ask(json!({ "ip": "10.0.0.1" })).await.ok();
    assert_eq!(d["allowed"], true, "{d}");
    let d = ask(json!({ "ip": "10.6.6.6" })).await.ok();
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(ids(&d), ["blocked-ip"]);
    let d = ask(json!({})).await.ok();
    assert_eq!(d["allowed"], true, "ip is optional: {d}");
    // Context the schema does not declare, or that Gatehouse supplies, is refused.
    ask(json!({ "device": "x" }))
        .await
        .assert_error(400, Some("validation_error"));
    ask(json!({ "rebac": true }))
        .await
        .assert_error(400, Some("validation_error"));
    ask(json!({ "ip": 5 }))
        .await
        .assert_error(400, Some("validation_error"));
}

async fn authzen(backend: Backend) {
    let (s, store) = seeded(backend).await;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": POLICIES }),
    )
    .await
    .ok();
    let path = format!("/stores/{store}/access/v1/evaluation");
    let one = |subject: &str, action: &str, resource: &str| {
        json!({
            "subject": { "type": "user", "id": subject },
            "action": { "name": action },
            "resource": { "type": "document", "id": resource },
        })
    };
    let v = s.post(&path, &one("anne", "viewer", "1")).await.ok();
    assert_eq!(v["decision"], true, "{v}");
    assert_eq!(v["context"]["policies"], json!(["baseline"]), "{v}");
    let v = s.post(&path, &one("anne", "viewer", "2")).await.ok();
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["policies"], json!(["no-secret"]), "{v}");
    // `time` in any RFC 3339 form, here without seconds as AuthZEN's certification sends it.
    for time in [
        "2025-06-27T18:03-07:00",
        "2025-06-28t01:03:00.25z",
        "2025-06-28",
    ] {
        let mut body = one("anne", "viewer", "1");
        body["context"] = json!({ "time": time, "ip": "192.168.1.1" });
        let v = s.post(&path, &body).await.ok();
        assert_eq!(v["decision"], true, "{time}: {v}");
    }
    let mut body = one("anne", "viewer", "1");
    body["context"] = json!({ "time": "2025-06-27T18:03" });
    s.post(&path, &body)
        .await
        .assert_error(400, Some("validation_error"));

    let batch = format!("/stores/{store}/access/v1/evaluations");
    let items = json!([
        { "resource": { "type": "document", "id": "1" } },
        { "resource": { "type": "document", "id": "2" } },
        { "resource": { "type": "document", "id": "1" }, "action": { "name": "owner" } },
    ]);
    let run = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": { "type": "user", "id": "anne" },
            "action": { "name": "viewer" },
            "evaluations": items.clone(),
        });
        if let Some(sm) = semantic {
            body["options"] = json!({ "evaluations_semantic": sm });
        }
        body
    };
    let decisions = |v: &Value| -> Vec<bool> {
        v["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("no evaluations in {v}"))
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    let v = s.post(&batch, &run(None)).await.ok();
    assert_eq!(decisions(&v), [true, false, true], "{v}");
    let v = s.post(&batch, &run(Some("execute_all"))).await.ok();
    assert_eq!(decisions(&v), [true, false, true], "{v}");
    let v = s.post(&batch, &run(Some("deny_on_first_deny"))).await.ok();
    assert_eq!(decisions(&v), [true, false], "{v}");
    let v = s
        .post(&batch, &run(Some("permit_on_first_permit")))
        .await
        .ok();
    assert_eq!(decisions(&v), [true], "{v}");
    // Without `evaluations` the batch endpoint answers the one request.
    let v = s.post(&batch, &one("anne", "viewer", "1")).await.ok();
    assert_eq!(v["decision"], true, "{v}");
    // An item that cannot be decided is a deny with its error; the others still run.
    let mut body = run(None);
    body["evaluations"][1]["resource"] = json!({ "type": "spaceship", "id": "x" });
    let v = s.post(&batch, &body).await.ok();
    assert_eq!(decisions(&v), [true, false, true], "{v}");
    assert_eq!(
        v["evaluations"][1]["context"]["error"]["code"], "type_not_found",
        "{v}"
    );

    // A policy that reads `context.relations` gets every relation held, through AuthZEN too.
    s.write_ok(&store, &[tk("user:carl", "viewer", "document:1")])
        .await;
    let owners_only = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };
@id("owners-only")
forbid (principal, action == Action::"viewer", resource) unless { context.relations.contains("owner") };
"#;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": owners_only }),
    )
    .await
    .ok();
    let v = s.post(&path, &one("anne", "viewer", "1")).await.ok();
    assert_eq!(v["decision"], true, "anne owns document:1: {v}");
    let v = s.post(&path, &one("carl", "viewer", "1")).await.ok();
    assert_eq!(v["decision"], false, "carl only views: {v}");
    assert_eq!(v["context"]["policies"], json!(["owners-only"]), "{v}");
    // An action the resource type lacks is refused on this path as well.
    s.post(&path, &one("anne", "member", "1"))
        .await
        .assert_error(400, Some("validation_error"));

    // Discovery: public, at the store's path and at the one a PEP derives from the PDP
    // identifier, and the endpoints it names answer.
    for well_known in [
        format!("/.well-known/authzen-configuration/{store}"),
        format!("/.well-known/authzen-configuration/stores/{store}"),
    ] {
        let r = s
            .raw(reqwest::Method::GET, &well_known, None, None, None)
            .await;
        let m = r.ok();
        let pdp = m["policy_decision_point"].as_str().unwrap().to_string();
        assert!(pdp.ends_with(&format!("/stores/{store}")), "{m}");
        assert_eq!(
            m["access_evaluation_endpoint"],
            format!("{pdp}/access/v1/evaluation")
        );
        assert_eq!(
            m["access_evaluations_endpoint"],
            format!("{pdp}/access/v1/evaluations")
        );
        for kind in ["subject", "resource", "action"] {
            assert_eq!(
                m[format!("search_{kind}_endpoint")],
                format!("{pdp}/access/v1/search/{kind}"),
                "{m}"
            );
        }
        let endpoint = m["access_evaluation_endpoint"].as_str().unwrap();
        let local = &endpoint[endpoint.find("/stores/").unwrap()..];
        let v = s.post(local, &one("anne", "viewer", "1")).await.ok();
        assert_eq!(v["decision"], true, "{v}");
    }
    // Any well-formed id gets the same shape (no oracle of which stores exist); anything else
    // is a 404, a write a 405, all JSON.
    let other = ulid::Ulid::new().to_string();
    let m = s
        .raw(
            reqwest::Method::GET,
            &format!("/.well-known/authzen-configuration/{other}"),
            None,
            None,
            None,
        )
        .await
        .ok();
    assert!(
        m["policy_decision_point"]
            .as_str()
            .unwrap()
            .ends_with(&other)
    );
    for bad in [
        "not-a-store",
        "stores/",
        "stores/x/y",
        "a/b",
        &format!("{store}/x"),
    ] {
        s.raw(
            reqwest::Method::GET,
            &format!("/.well-known/authzen-configuration/{bad}"),
            None,
            None,
            None,
        )
        .await
        .assert_error(404, Some("undefined_endpoint"));
    }
    s.post(
        &format!("/.well-known/authzen-configuration/{store}"),
        &json!({}),
    )
    .await
    .assert_error(405, Some("method_not_allowed"));
}

async fn policy_bad_input(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let path = format!("/stores/{store}/policies");
    let good = s.put(&path, &json!({ "policies": POLICIES })).await;
    assert_eq!(good.status, 201, "{}", good.text);
    let good_id = good.json()["id"].as_str().unwrap().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a syntax error",
            json!({ "policies": "permit (principal, action, resource)\nwhen { context.rebac " }),
            "invalid_policies",
        ),
        (
            "an unknown entity type",
            json!({ "policies": "@id(\"ok\")\npermit (principal, action, resource);\n@id(\"bad\")\npermit (principal == spaceship::\"x\", action, resource);" }),
            "invalid_policies",
        ),
        (
            "an unknown action",
            json!({ "policies": "permit (principal, action == Action::\"fly\", resource);" }),
            "invalid_policies",
        ),
        (
            "a type error",
            json!({ "policies": "permit (principal, action, resource) when { context.rebac + 1 };" }),
            "invalid_policies",
        ),
        (
            "duplicate ids",
            json!({ "policies": "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);" }),
            "invalid_policies",
        ),
        (
            "an oversized policy set",
            json!({ "policies": "permit (principal, action, resource);\n".repeat(8000) }),
            "invalid_policies",
        ),
        ("no policies", json!({}), "validation_error"),
        (
            "policies not a string",
            json!({ "policies": 5 }),
            "validation_error",
        ),
        (
            "an unknown field",
            json!({ "policies": "permit (principal, action, resource);", "polices": "" }),
            "validation_error",
        ),
        (
            "a schema that is not an object",
            json!({ "policies": "permit (principal, action, resource);", "schema": "x" }),
            "validation_error",
        ),
        (
            "an invalid schema",
            json!({ "policies": "permit (principal, action, resource);", "schema": { "": { "entityTypes": 5 } } }),
            "invalid_policy_schema",
        ),
        (
            "activate not a bool",
            json!({ "policies": "permit (principal, action, resource);", "activate": "yes" }),
            "validation_error",
        ),
    ];
    for (what, body, code) in cases {
        let r = s.put(&path, &body).await;
        let e = r.assert_error(400, Some(code));
        if code == "invalid_policies" {
            let details = e["error"]["details"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no details in {e}"));
            assert!(!details.is_empty(), "{what}: {e}");
        }
        if what == "an unknown entity type" {
            assert_eq!(e["error"]["details"][0]["policy_id"], "bad", "{e}");
            assert_eq!(e["error"]["details"][0]["line"], 4, "{e}");
            assert!(
                e["error"]["details"][0]["column"].as_u64().unwrap() > 0,
                "{e}"
            );
        }
        if what == "a syntax error" {
            assert!(
                e["error"]["details"][0]["line"].as_u64().unwrap() >= 1,
                "{e}"
            );
        }
        let active = s.get(&path).await.ok();
        assert_eq!(
            active["id"],
            good_id.as_str(),
            "{what} changed the active version"
        );
        assert_eq!(
            versions(&s, &store).await.len(),
            1,
            "{what} added a version"
        );
    }
    let v = format!("/stores/{store}/policy-versions");
    s.get(&format!("{v}/not-a-ulid"))
        .await
        .assert_error(400, Some("validation_error"));
    let unknown = ulid::Ulid::new().to_string();
    s.get(&format!("{v}/{unknown}"))
        .await
        .assert_error(404, Some("policy_version_not_found"));
    s.post(&format!("{v}/{unknown}/activate"), &json!({}))
        .await
        .assert_error(404, Some("policy_version_not_found"));
    s.get(&format!("{v}/{good_id}/activate"))
        .await
        .assert_error(405, Some("method_not_allowed"));
    s.post(&path, &json!({ "policies": "x" }))
        .await
        .assert_error(405, Some("method_not_allowed"));
    s.get(&format!("{v}?page_size=0x"))
        .await
        .assert_error(400, None);
    let other = ulid::Ulid::new().to_string();
    s.put(
        &format!("/stores/{other}/policies"),
        &json!({ "policies": POLICIES }),
    )
    .await
    .assert_error(404, Some("store_id_not_found"));
    assert_eq!(versions(&s, &store).await.len(), 1);
}

async fn decision_bad_input(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let path = format!("/stores/{store}/decide");
    let ok = json!({ "subject": "user:anne", "action": "viewer", "resource": "document:1" });
    s.post(&path, &ok).await.ok();
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = vec![
        (
            "no subject",
            with("subject", json!("")),
            Some("validation_error"),
        ),
        (
            "subject without type",
            with("subject", json!("anne")),
            Some("validation_error"),
        ),
        (
            "subject of an unknown type",
            with("subject", json!("robot:r2")),
            Some("type_not_found"),
        ),
        (
            "resource of an unknown type",
            with("resource", json!("spaceship:1")),
            Some("type_not_found"),
        ),
        (
            "no action",
            with("action", json!("")),
            Some("validation_error"),
        ),
        (
            "an action the type lacks",
            with("action", json!("member")),
            Some("validation_error"),
        ),
        (
            "context not an object",
            with("context", json!([1])),
            Some("validation_error"),
        ),
        (
            "context with rebac",
            with("context", json!({ "rebac": true })),
            Some("validation_error"),
        ),
        (
            "undeclared context",
            with("context", json!({ "colour": "blue" })),
            Some("validation_error"),
        ),
        (
            "a bad consistency",
            with("consistency", json!("NOW")),
            Some("validation_error"),
        ),
        ("a bad token", with("consistency_token", json!("x")), None),
    ];
    for (what, body, code) in cases {
        let r = s.post(&path, &body).await;
        assert!(
            (400..500).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.text
        );
        r.assert_error(r.status, code);
    }
    let auth = format!("Bearer {}", s.key);
    let r = s
        .raw(
            reqwest::Method::POST,
            &path,
            Some("application/json"),
            Some(b"{\"subject\": ".to_vec()),
            Some(&auth),
        )
        .await;
    r.assert_error(400, None);

    let az = format!("/stores/{store}/access/v1/evaluation");
    let good = json!({
        "subject": { "type": "user", "id": "anne" },
        "action": { "name": "viewer" },
        "resource": { "type": "document", "id": "1" },
    });
    s.post(&az, &good).await.ok();
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (what, body) in [
        ("no subject", with("subject", Value::Null)),
        (
            "subject without id",
            with("subject", json!({ "type": "user" })),
        ),
        ("subject as a string", with("subject", json!("user:anne"))),
        ("no action name", with("action", json!({}))),
        (
            "resource with an empty id",
            with("resource", json!({ "type": "document", "id": "" })),
        ),
        ("context not an object", with("context", json!("x"))),
    ] {
        let r = s.post(&az, &body).await;
        r.assert_error(400, None);
        assert!(r.status == 400, "{what}");
    }
    // What AuthZEN allows is not refused: properties and context the schema does not declare
    // are left out of the Cedar request (no policy can read them), and the decision stands.
    for (what, body) in [
        (
            "subject properties",
            with(
                "subject",
                json!({ "type": "user", "id": "anne", "properties": { "dept": "x" } }),
            ),
        ),
        (
            "action properties",
            with(
                "action",
                json!({ "name": "viewer", "properties": { "method": "GET" } }),
            ),
        ),
        (
            "context",
            with("context", json!({ "source": "batch", "n": { "x": 1 } })),
        ),
    ] {
        let v = s.post(&az, &body).await.ok();
        assert_eq!(v["decision"], true, "undeclared {what}: {v}");
    }
    // The same context is still refused where Gatehouse's own API asks for a declared one.
    s.post(
        &format!("/stores/{store}/decide"),
        &json!({ "subject": "user:anne", "action": "viewer", "resource": "document:1",
                 "context": { "source": "batch" } }),
    )
    .await
    .assert_error(400, Some("validation_error"));
    let batch = format!("/stores/{store}/access/v1/evaluations");
    let mut too_many = good.clone();
    too_many["evaluations"] = json!(vec![json!({}); 51]);
    let mut bad_semantic = good.clone();
    bad_semantic["evaluations"] = json!([{}]);
    bad_semantic["options"] = json!({ "evaluations_semantic": "sometimes" });
    let mut not_array = good.clone();
    not_array["evaluations"] = json!({});
    for body in [too_many, bad_semantic, not_array] {
        s.post(&batch, &body).await.assert_error(400, None);
    }
    // An item that is itself malformed is a deny with its error; the batch is answered.
    let mut bad_items = good.clone();
    bad_items["evaluations"] = json!([
        {},
        { "subject": { "type": "user" } },
        { "resource": null, "action": { "name": "" } },
        { "resource": { "type": "document", "id": "1" } },
    ]);
    let v = s.post(&batch, &bad_items).await.ok();
    let items = v["evaluations"].as_array().unwrap();
    let decided: Vec<_> = items.iter().map(|e| e["decision"].clone()).collect();
    assert_eq!(decided, [true, false, false, true], "{v}");
    for bad in &items[1..3] {
        assert_eq!(bad["context"]["error"]["code"], "validation_error", "{v}");
        assert_eq!(bad["context"]["error"]["status"], 400, "{v}");
    }
    s.get(&az)
        .await
        .assert_error(405, Some("method_not_allowed"));
}

/// A policy update through node A is enforced by node B: at once through Redis, within the
/// one-second lifetime of B's compiled-policy cache without it. Prints the times measured.
async fn policy_update_reaches_another_node(redis: bool) {
    let (a, b) = crate::consistency::two_nodes(redis).await;
    let store = a.create_store("policy-nodes").await;
    a.write_model(&store, &crate::harness::sample_model()).await;
    a.write_ok(&store, &[tk("user:anne", "owner", "document:1")])
        .await;
    let mut times = Vec::new();
    for round in 0..5 {
        // B decides with (and caches) the permitting set right before the update.
        let permit = format!(
            "@id(\"round-{round}\")\npermit (principal, action, resource) when {{ context.rebac }};"
        );
        a.put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": permit }),
        )
        .await
        .ok();
        let started = Instant::now();
        loop {
            let d = decide(&b, &store, "user:anne", "viewer", "document:1").await;
            if d["allowed"] == true {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "node B never permitted again: {d}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let forbid = format!("@id(\"deny-{round}\")\nforbid (principal, action, resource);");
        a.put(
            &format!("/stores/{store}/policies"),
            &json!({ "policies": forbid }),
        )
        .await
        .ok();
        let started = Instant::now();
        loop {
            let d = decide(&b, &store, "user:anne", "viewer", "document:1").await;
            if d["allowed"] == false {
                assert_eq!(ids(&d), [format!("deny-{round}")], "{d}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "node B still permits 2 s after node A's policy update: {d}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
    }
    println!("policy update to enforcement on node B (redis: {redis}): {times:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_update_reaches_another_node_with_redis() {
    policy_update_reaches_another_node(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_update_reaches_another_node_without_redis() {
    policy_update_reaches_another_node(false).await;
}

/// `explain: true` returns one chain of tuples that granted the action, and the policies.
async fn explain(backend: Backend) {
    let (s, store) = seeded(backend).await;
    s.write_ok(
        &store,
        &[
            tk("user:carol", "owner", "folder:a"),
            tk("folder:a", "parent", "document:3"),
            tk("group:eng#member", "viewer", "document:4"),
        ],
    )
    .await;
    let why = |subject: &str, resource: &str| {
        let s = &s;
        let store = &store;
        let body = json!({ "subject": subject, "action": "viewer", "resource": resource, "explain": true });
        async move { s.post(&format!("/stores/{store}/decide"), &body).await.ok() }
    };
    let path = |d: &Value| -> Vec<String> {
        d["explain"]["rebac_path"]
            .as_array()
            .unwrap_or_else(|| panic!("no path in {d}"))
            .iter()
            .map(|t| {
                format!(
                    "{}#{}@{}",
                    t["object"].as_str().unwrap(),
                    t["relation"].as_str().unwrap(),
                    t["user"].as_str().unwrap()
                )
            })
            .collect()
    };
    let d = why("user:anne", "document:1").await;
    assert_eq!(
        path(&d),
        ["document:1#owner@user:anne"],
        "owner → editor → viewer: {d}"
    );
    assert_eq!(d["explain"]["policies"][0]["id"], "baseline", "{d}");
    let d = why("user:carol", "document:3").await;
    assert_eq!(
        path(&d),
        ["document:3#parent@folder:a", "folder:a#owner@user:carol"],
        "viewer from parent: {d}"
    );
    let d = why("user:dave", "document:4").await;
    assert_eq!(
        path(&d),
        [
            "document:4#viewer@group:eng#member",
            "group:eng#member@user:dave"
        ],
        "through a group: {d}"
    );
    let d = why("user:bob", "document:1").await;
    assert!(d["explain"]["rebac_path"].is_null(), "nothing granted: {d}");
    assert_eq!(d["allowed"], false);
    // Without explain there is no explanation.
    let d = decide(&s, &store, "user:anne", "viewer", "document:1").await;
    assert!(d.get("explain").is_none(), "{d}");
    // A deny by a forbid names the permits it overrode.
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": POLICIES }),
    )
    .await
    .ok();
    let d = why("user:anne", "document:2").await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["explain"]["policies"][0]["id"], "no-secret", "{d}");
    assert_eq!(
        d["explain"]["overridden_permits"][0]["id"], "baseline",
        "{d}"
    );
    assert_eq!(
        d["explain"]["overridden_permits"].as_array().map(Vec::len),
        Some(1),
        "{d}"
    );
    let d = why("user:bob", "document:1").await;
    assert_eq!(
        d["explain"]["overridden_permits"],
        json!([]),
        "a plain deny overrides nothing: {d}"
    );
}

/// Templates with slots and the policies linked from them, through the API.
async fn templates(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let path = format!("/stores/{store}/policies");
    let text = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };
@id("share")
@reason("shared by link")
permit (principal == ?principal, action == Action::"viewer", resource == ?resource);
"#;
    let link = |id: &str, template: &str, principal: Option<&str>, resource: Option<&str>| {
        let mut l = json!({ "id": id, "template": template });
        if let Some(p) = principal {
            l["principal"] = json!(p);
        }
        if let Some(r) = resource {
            l["resource"] = json!(r);
        }
        l
    };
    let r = s
        .put(
            &path,
            &json!({ "policies": text, "links": [link("share-bob-doc1", "share", Some("user:bob"), Some("document:1"))] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["links"][0]["id"], "share-bob-doc1");
    let good_id = r.json()["id"].as_str().unwrap().to_string();
    let d = decide(&s, &store, "user:bob", "viewer", "document:1").await;
    assert_eq!(d["allowed"], true, "{d}");
    assert_eq!(ids(&d), ["share-bob-doc1"]);
    assert_eq!(
        d["policies"][0]["annotations"]["reason"], "shared by link",
        "{d}"
    );
    let d = decide(&s, &store, "user:bob", "editor", "document:1").await;
    assert_eq!(d["allowed"], false, "the link is for viewer only: {d}");
    let d = decide(&s, &store, "user:carl", "viewer", "document:1").await;
    assert_eq!(d["allowed"], false, "{d}");
    let one = s
        .get(&format!("/stores/{store}/policy-versions/{good_id}"))
        .await
        .ok();
    assert_eq!(one["links"][0]["principal"], "user:bob", "{one}");

    for (what, links) in [
        (
            "an unknown template",
            json!([link("x", "nope", Some("user:bob"), Some("document:1"))]),
        ),
        (
            "a malformed slot value",
            json!([link("x", "share", Some("bob"), Some("document:1"))]),
        ),
        (
            "a missing slot",
            json!([link("x", "share", Some("user:bob"), None)]),
        ),
        (
            "an id taken by a policy",
            json!([link(
                "baseline",
                "share",
                Some("user:bob"),
                Some("document:1")
            )]),
        ),
        (
            "a static policy as template",
            json!([link("x", "baseline", Some("user:bob"), Some("document:1"))]),
        ),
        (
            "an unknown entity type",
            json!([link("x", "share", Some("robot:r2"), Some("document:1"))]),
        ),
        ("not a list", json!({ "id": "x" })),
    ] {
        let r = s
            .put(&path, &json!({ "policies": text, "links": links }))
            .await;
        let e = r.assert_error(400, None);
        assert!(
            ["invalid_policies", "validation_error"].contains(&e["code"].as_str().unwrap()),
            "{what}: {e}"
        );
        let active = s.get(&path).await.ok();
        assert_eq!(
            active["id"],
            good_id.as_str(),
            "{what} changed the active version"
        );
    }
    assert_eq!(versions(&s, &store).await.len(), 1);
}
