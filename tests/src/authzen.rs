//! AuthZEN 1.0 through the real server, set up as a tenant would from each scenario's
//! published rules (a model, relationships, attributes, a schema and Cedar policies):
//! the interop Todo scenario (`shared/conformance/authzen/todo/`), every decision; the
//! certification scenario (`shared/conformance/authzen/cert/`), every case sent as it is
//! (Basic, Batch and Search), and the search scenario (`shared/conformance/authzen/search/`),
//! every request answered with its complete results.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions, for_each_backend, tk};

for_each_backend!(
    todo_scenario,
    certification,
    search_scenario,
    search_paging_and_bad_input,
);

/// A file of `shared/conformance/authzen/`, as JSON.
fn scenario(path: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/authzen")
        .join(path);
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
    let fixture = scenario("cert/fixture.json");
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

async fn certification(backend: Backend) {
    let (s, store) = setup(backend).await;
    let cases = scenario("cert/cases.json");
    let mut ran = 0;
    for case in cases.as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
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
        if let Some(include) = expect.get("include").and_then(Value::as_array) {
            let got = names(&v["results"]);
            for want in include {
                let want = match expect.get("type").and_then(Value::as_str) {
                    Some(t) => format!("{t}:{}", want.as_str().unwrap()),
                    None => want.as_str().unwrap().to_string(),
                };
                assert!(
                    got.contains(&want),
                    "{id} {}: {want} missing in {v}",
                    case["title"]
                );
            }
        }
        if let Some(want) = expect.get("results") {
            assert_eq!(&v["results"], want, "{id} {}: {v}", case["title"]);
        }
        if expect.get("paging") == Some(&Value::Bool(true)) {
            // Follow the pages to the end: one result each, together the whole answer.
            let mut body = case["body"].clone();
            let mut all = names(&v["results"]);
            let mut token = v["page"]["next_token"].as_str().unwrap().to_string();
            assert!(!token.is_empty(), "{id}: one page of many: {v}");
            while !token.is_empty() {
                body["page"]["token"] = json!(token);
                let p = s
                    .post(&format!("/stores/{store}/access/v1/{endpoint}"), &body)
                    .await
                    .ok();
                assert!(p["results"].as_array().unwrap().len() <= 1, "{id}: {p}");
                all.extend(names(&p["results"]));
                token = p["page"]["next_token"].as_str().unwrap().to_string();
            }
            all.sort();
            let mut whole = case["body"].clone();
            whole.as_object_mut().unwrap().remove("page");
            let w = s
                .post(&format!("/stores/{store}/access/v1/{endpoint}"), &whole)
                .await
                .ok();
            assert_eq!(all, names(&w["results"]), "{id}");
        }
        ran += 1;
    }
    assert_eq!(ran, 54, "every case ran");
}

/// The search scenario's rules: an owner views, edits and deletes; a manager views every
/// record; anyone views the records of their own department; a manager edits the records of
/// their department.
const SEARCH_RULES: &str = r#"@id("owner")
permit (principal, action in [Action::"view", Action::"edit", Action::"delete"], resource)
when { context.rebac };

@id("view")
permit (principal is user, action == Action::"view", resource is record)
when { principal.role == "manager" || principal.department == resource.department };

@id("manager-edits-department")
permit (principal is user, action == Action::"edit", resource is record)
when { principal.role == "manager" && principal.department == resource.department };
"#;

async fn search_setup(backend: Backend) -> (Server, String) {
    let s = Server::start(backend).await;
    let store = s.create_store("authzen-search").await;
    let owner = json!({ "computedUserset": { "relation": "owner" } });
    s.write_model(
        &store,
        &json!({
            "schema_version": "1.1",
            "type_definitions": [
                { "type": "user" },
                { "type": "record",
                  "relations": { "owner": { "this": {} }, "view": owner, "edit": owner, "delete": owner },
                  "metadata": { "relations": { "owner": { "directly_related_user_types": [{ "type": "user" }] } } } }
            ]
        }),
    )
    .await;
    let records = scenario("search/records.json");
    let owners: Vec<Value> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            tk(
                &format!("user:{}", r["owner"].as_str().unwrap()),
                "owner",
                &format!("record:{}", r["id"]),
            )
        })
        .collect();
    s.write_ok(&store, &owners).await;
    let mut schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok()["schema"].clone();
    let types = schema[""]["entityTypes"].as_object_mut().unwrap();
    types.get_mut("user").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "role": { "type": "String" }, "department": { "type": "String" } }
    });
    types.get_mut("record").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "department": { "type": "String" } }
    });
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": SEARCH_RULES, "schema": schema }),
    )
    .await
    .ok();
    let attrs = format!("/stores/{store}/entity-attributes");
    for u in scenario("search/users.json").as_array().unwrap() {
        s.put(
            &attrs,
            &json!({ "entity": format!("user:{}", u["id"].as_str().unwrap()),
                     "attributes": { "role": u["role"], "department": u["department"] } }),
        )
        .await
        .ok();
    }
    for r in records.as_array().unwrap() {
        s.put(
            &attrs,
            &json!({ "entity": format!("record:{}", r["id"]),
                     "attributes": { "department": r["department"] } }),
        )
        .await
        .ok();
    }
    (s, store)
}

fn names(results: &Value) -> Vec<String> {
    let mut out: Vec<String> = results
        .as_array()
        .unwrap_or_else(|| panic!("no results in {results}"))
        .iter()
        .map(|r| match r.get("name") {
            Some(n) => n.as_str().unwrap().to_string(),
            None => format!(
                "{}:{}",
                r["type"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ),
        })
        .collect();
    out.sort();
    out
}

/// Every request of the search scenario (subject, resource and action search) answers its
/// complete expected results, and each result evaluates to true.
async fn search_scenario(backend: Backend) {
    let (s, store) = search_setup(backend).await;
    let mut expectations = 0;
    for (kind, file) in [
        ("subject", "subject-results.json"),
        ("resource", "resource-results.json"),
        ("action", "action-results.json"),
    ] {
        for case in scenario(&format!("search/{file}"))["evaluation"]
            .as_array()
            .unwrap()
        {
            let req = &case["request"];
            let v = s
                .post(&format!("/stores/{store}/access/v1/search/{kind}"), req)
                .await
                .ok();
            let want = names(&case["expected"]["results"]);
            assert_eq!(names(&v["results"]), want, "{kind} search {req}: {v}");
            assert_eq!(v["page"]["next_token"], "", "{v}");
            assert_eq!(v["page"]["total"], want.len(), "{v}");
            expectations += 1;
        }
    }
    assert_eq!(expectations, 198);
    // Each result is an allowed evaluation.
    let v = s
        .post(
            &format!("/stores/{store}/access/v1/search/resource"),
            &json!({ "subject": { "type": "user", "id": "dan" }, "action": { "name": "edit" },
                     "resource": { "type": "record" } }),
        )
        .await
        .ok();
    for r in v["results"].as_array().unwrap() {
        let d = s
            .post(
                &format!("/stores/{store}/access/v1/evaluation"),
                &json!({ "subject": { "type": "user", "id": "dan" }, "action": { "name": "edit" },
                         "resource": r }),
            )
            .await
            .ok();
        assert_eq!(d["decision"], true, "{r}: {d}");
    }
}

/// Pages pin the revision of the first: a relationship written between pages does not show,
/// a page token is bound to its query, and limits and bad input answer 400 JSON.
async fn search_paging_and_bad_input(backend: Backend) {
    let (s, store) = search_setup(backend).await;
    let path = format!("/stores/{store}/access/v1/search/subject");
    let body = |token: &str| {
        json!({ "subject": { "type": "user" }, "action": { "name": "view" },
                "resource": { "type": "record", "id": "101" },
                "page": { "limit": 1, "token": token } })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    for round in 0.. {
        let v = s.post(&path, &body(&token)).await.ok();
        assert_eq!(v["page"]["count"], 1, "{v}");
        assert_eq!(v["page"]["total"], 4, "{v}");
        seen.extend(names(&v["results"]));
        if round == 0 {
            // Erin becomes an owner of 101 after the first page: the pinned pages do not
            // show her.
            s.write_ok(&store, &[tk("user:erin", "owner", "record:101")])
                .await;
        }
        token = v["page"]["next_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["user:alice", "user:bob", "user:carol", "user:dan"]);
    // A fresh search sees her.
    let mut fresh = body("");
    fresh["page"] = json!({});
    let v = s.post(&path, &fresh).await.ok();
    assert!(
        names(&v["results"]).contains(&"user:erin".to_string()),
        "{v}"
    );
    // A token of one query is refused by another, and a forged one by all.
    let first = s.post(&path, &body("")).await.ok();
    let t = first["page"]["next_token"].as_str().unwrap();
    let mut other = body(t);
    other["resource"]["id"] = json!("102");
    s.post(&path, &other).await.assert_error(400, None);
    s.post(&path, &body("MTB8MDAwMHx1c2VyOmFsaWNl"))
        .await
        .assert_error(400, None);
    // Bad input: what each search needs, and shapes that are not objects.
    let base = format!("/stores/{store}/access/v1/search");
    for (kind, bad) in [
        (
            "subject",
            json!({ "subject": { "type": "user" }, "resource": { "type": "record", "id": "101" } }),
        ),
        (
            "subject",
            json!({ "subject": { "type": "user" }, "action": { "name": "view" }, "resource": { "type": "record" } }),
        ),
        (
            "subject",
            json!({ "subject": {}, "action": { "name": "view" }, "resource": { "type": "record", "id": "101" } }),
        ),
        (
            "resource",
            json!({ "action": { "name": "view" }, "resource": { "type": "record" } }),
        ),
        (
            "resource",
            json!({ "subject": { "type": "user" }, "action": { "name": "view" }, "resource": { "type": "record" } }),
        ),
        (
            "resource",
            json!({ "subject": { "type": "user", "id": "alice" }, "resource": { "type": "record" } }),
        ),
        (
            "action",
            json!({ "subject": { "type": "user", "id": "alice" } }),
        ),
        (
            "action",
            json!({ "subject": { "type": "user" }, "resource": { "type": "record", "id": "101" } }),
        ),
        (
            "action",
            json!({ "subject": "user:alice", "resource": { "type": "record", "id": "101" } }),
        ),
        (
            "action",
            json!({ "subject": { "type": "user", "id": "alice" }, "resource": { "type": "record", "id": "101" }, "page": { "limit": -1 } }),
        ),
    ] {
        s.post(&format!("{base}/{kind}"), &bad)
            .await
            .assert_error(400, None);
    }
    s.get(&format!("{base}/subject"))
        .await
        .assert_error(405, Some("method_not_allowed"));
    s.post(&format!("{base}/everything"), &json!({}))
        .await
        .assert_error(404, Some("undefined_endpoint"));
    // An unknown type or id is an empty answer, not an error.
    let v = s
        .post(
            &format!("{base}/subject"),
            &json!({ "subject": { "type": "spaceship" }, "action": { "name": "view" },
                     "resource": { "type": "record", "id": "101" } }),
        )
        .await
        .ok();
    assert_eq!(v["results"], json!([]), "{v}");
    let v = s
        .post(
            &format!("{base}/action"),
            &json!({ "subject": { "type": "user", "id": "nobody" },
                     "resource": { "type": "record", "id": "999" } }),
        )
        .await
        .ok();
    assert_eq!(v["results"], json!([]), "{v}");
    // A search's evaluations are its own work: the decision log, whose buffer every store
    // shares, holds the one evaluation sent here and none of the dozens of candidates the
    // searches above decided.
    let v = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({ "subject": { "type": "user", "id": "alice" }, "action": { "name": "view" },
                     "resource": { "type": "record", "id": "101" } }),
        )
        .await
        .ok();
    assert_eq!(v["decision"], true, "{v}");
    let log = s.get(&format!("/stores/{store}/decisions")).await.ok();
    assert_eq!(log["decisions"].as_array().unwrap().len(), 1, "{log}");
}

/// The Todo scenario's rules: anyone signed in reads users and todos; admins and editors
/// create todos; an evil genius updates and deletes any todo, an editor their own.
const TODO_RULES: &str = r#"@id("read")
permit (principal, action in [Action::"can_read_user", Action::"can_read_todos"], resource);

@id("create")
permit (principal is user, action == Action::"can_create_todo", resource)
when { principal.roles.contains("admin") || principal.roles.contains("editor") };

@id("change")
permit (principal is user, action in [Action::"can_update_todo", Action::"can_delete_todo"], resource is todo)
when {
  principal.roles.contains("evil_genius") ||
  (principal.roles.contains("editor") && resource has ownerID && resource.ownerID == principal.email)
};
"#;

/// Every evaluation (40) and boxcarred request (3) of the AuthZEN interop Todo scenario, as
/// published, against a tenant holding the scenario's directory as attributes.
async fn todo_scenario(backend: Backend) {
    let s = Server::start(backend).await;
    let store = s.create_store("authzen-todo").await;
    let direct = json!({ "directly_related_user_types": [{ "type": "user" }] });
    s.write_model(
        &store,
        &json!({
            "schema_version": "1.1",
            "type_definitions": [
                { "type": "user",
                  "relations": { "can_read_user": { "this": {} } },
                  "metadata": { "relations": { "can_read_user": direct } } },
                { "type": "todo",
                  "relations": { "can_read_todos": { "this": {} }, "can_create_todo": { "this": {} },
                                 "can_update_todo": { "this": {} }, "can_delete_todo": { "this": {} } },
                  "metadata": { "relations": { "can_read_todos": direct, "can_create_todo": direct,
                                               "can_update_todo": direct, "can_delete_todo": direct } } }
            ]
        }),
    )
    .await;
    let mut schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok()["schema"].clone();
    let types = schema[""]["entityTypes"].as_object_mut().unwrap();
    types.get_mut("user").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": {
            "email": { "type": "String" },
            "roles": { "type": "Set", "element": { "type": "String" } }
        }
    });
    types.get_mut("todo").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "ownerID": { "type": "String", "required": false } }
    });
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": TODO_RULES, "schema": schema }),
    )
    .await
    .ok();
    let dir = scenario("todo/directory.json");
    for (id, person) in dir.as_object().unwrap() {
        s.put(
            &format!("/stores/{store}/entity-attributes"),
            &json!({ "entity": format!("user:{id}"),
                     "attributes": { "email": person["email"], "roles": person["roles"] } }),
        )
        .await
        .ok();
    }
    let decisions = scenario("todo/decisions-authorization-api-1_0-02.json");
    let mut n = 0;
    for case in decisions["evaluation"].as_array().unwrap() {
        let v = s
            .post(
                &format!("/stores/{store}/access/v1/evaluation"),
                &case["request"],
            )
            .await
            .ok();
        assert_eq!(v["decision"], case["expected"], "{}: {v}", case["request"]);
        n += 1;
    }
    for case in decisions["evaluations"].as_array().unwrap() {
        let v = s
            .post(
                &format!("/stores/{store}/access/v1/evaluations"),
                &case["request"],
            )
            .await
            .ok();
        let got: Vec<&Value> = v["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|e| &e["decision"])
            .collect();
        let want: Vec<&Value> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["decision"])
            .collect();
        assert_eq!(got, want, "{}: {v}", case["request"]);
        n += 1;
    }
    assert_eq!(n, 43);
}

/// A search that cannot finish within its time budget is refused whole, never answered in
/// part: a tenant cannot hold a worker with a search over a large store.
#[tokio::test(flavor = "multi_thread")]
async fn a_search_past_its_budget_is_refused() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_SEARCH_BUDGET_MS".into(), "1".into()));
    let s = Server::start_with(opts).await;
    let (store, _) = s.sample_store().await;
    for chunk in 0..4 {
        let writes: Vec<Value> = (0..100)
            .map(|i| tk(&format!("user:u{chunk}_{i}"), "viewer", "document:1"))
            .collect();
        s.write_ok(&store, &writes).await;
    }
    let body = json!({
        "subject": { "type": "user" },
        "action": { "name": "viewer" },
        "resource": { "type": "document", "id": "1" }
    });
    let path = format!("/stores/{store}/access/v1/search/subject");
    let e = s
        .post(&path, &body)
        .await
        .assert_error(400, Some("search_too_costly"));
    assert!(e["message"].as_str().unwrap().contains("1 ms"), "{e}");
    // An evaluation is no search: it is decided as always.
    let one = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({
                "subject": { "type": "user", "id": "u0_0" },
                "action": { "name": "viewer" },
                "resource": { "type": "document", "id": "1" }
            }),
        )
        .await
        .ok();
    assert_eq!(one["decision"], true, "{one}");
}
