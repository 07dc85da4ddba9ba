//! AuthZEN 1.0 certification scenario (`shared/conformance/authzen/cert/`), set up as a
//! tenant would from the scenario's published rules — a model, the fixture's tuples and
//! attributes, a schema and Cedar policies — and every evaluation and batch case sent as it
//! is. The search cases wait for the search endpoints.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, for_each_backend, tk};

for_each_backend!(certification_evaluations);

fn cert(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/authzen/cert")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The rules of the certification scenario: the graph grants `read`, `write` and `delete`;
/// an archived record is written only by an admin (rules 5 and 6); a delete whose action
/// says it is not soft is refused (rules 7 and 8).
const RULES: &str = r#"@id("read")
permit (principal, action == Action::"read", resource) when { context.rebac };

@id("write")
permit (principal, action == Action::"write", resource is record)
when { context.rebac && !(resource has status && resource.status == "archived") };

@id("admin-writes-archived")
permit (principal is user, action == Action::"write", resource is record)
when { resource has status && resource.status == "archived" && principal has role && principal.role == "admin" };

@id("delete")
permit (principal, action == Action::"delete", resource) when { context.rebac };

@id("no-hard-delete")
forbid (principal, action == Action::"delete", resource)
when { context has action && context.action has soft && !context.action.soft };
"#;

async fn setup(backend: Backend) -> (Server, String) {
    let s = Server::start(backend).await;
    let store = s.create_store("authzen-cert").await;
    let direct = json!({ "directly_related_user_types": [{ "type": "user" }] });
    s.write_model(
        &store,
        &json!({
            "schema_version": "1.1",
            "type_definitions": [
                { "type": "user" },
                { "type": "record",
                  "relations": { "read": { "this": {} }, "write": { "this": {} }, "delete": { "this": {} } },
                  "metadata": { "relations": { "read": direct, "write": direct, "delete": direct } } }
            ]
        }),
    )
    .await;
    let fixture = cert("fixture.json");
    let tuples: Vec<Value> = fixture["tuples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            tk(
                t["user"].as_str().unwrap(),
                t["relation"].as_str().unwrap(),
                t["object"].as_str().unwrap(),
            )
        })
        .collect();
    s.write_ok(&store, &tuples).await;
    // The generated schema, with the attributes the rules read and the action's properties.
    let mut schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok()["schema"].clone();
    let types = schema[""]["entityTypes"].as_object_mut().unwrap();
    types.get_mut("user").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "role": { "type": "String", "required": false } }
    });
    types.get_mut("record").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "status": { "type": "String", "required": false } }
    });
    for action in schema[""]["actions"].as_object_mut().unwrap().values_mut() {
        action["appliesTo"]["context"]["attributes"]["action"] = json!({
            "type": "Record",
            "required": false,
            "attributes": { "soft": { "type": "Boolean", "required": false } }
        });
    }
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": RULES, "schema": schema }),
    )
    .await
    .ok();
    for (entity, attributes) in fixture["attributes"].as_object().unwrap() {
        s.put(
            &format!("/stores/{store}/entity-attributes"),
            &json!({ "entity": entity, "attributes": attributes }),
        )
        .await
        .ok();
    }
    (s, store)
}

async fn certification_evaluations(backend: Backend) {
    let (s, store) = setup(backend).await;
    let cases = cert("cases.json");
    let mut ran = 0;
    for case in cases.as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        // Search cases need the search endpoints, which are not built yet.
        if case["bucket"] == "search" {
            continue;
        }
        let endpoint = case["endpoint"].as_str().unwrap();
        let r = s
            .post(
                &format!("/stores/{store}/access/v1/{endpoint}"),
                &case["body"],
            )
            .await;
        let expect = &case["expect"];
        assert_eq!(
            u64::from(r.status),
            expect["status"].as_u64().unwrap(),
            "{id} {}: {}",
            case["title"],
            r.text
        );
        let v: Value = serde_json::from_str(&r.text).unwrap_or(Value::Null);
        if r.status != 200 {
            assert!(
                v["code"].is_string(),
                "{id}: a 4xx is JSON with a code: {}",
                r.text
            );
        }
        if let Some(want) = expect.get("decision") {
            assert_eq!(&v["decision"], want, "{id} {}: {v}", case["title"]);
        }
        if let Some(want) = expect.get("evaluations").and_then(Value::as_array) {
            let got = v["evaluations"]
                .as_array()
                .unwrap_or_else(|| panic!("{id}: {v}"));
            assert_eq!(got.len(), want.len(), "{id}: {v}");
            for (g, w) in got.iter().zip(want) {
                assert!(g["decision"].is_boolean(), "{id}: {v}");
                // `null` in the fixture: either answer is allowed.
                if !w.is_null() {
                    assert_eq!(&g["decision"], w, "{id} {}: {v}", case["title"]);
                }
            }
        }
        ran += 1;
    }
    assert_eq!(ran, 34, "every evaluation and batch case ran");
}
