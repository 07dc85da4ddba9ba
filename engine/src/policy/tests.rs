#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::model::parse_dsl;

const MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type folder
  relations
    define owner: [user]
    define viewer: [user, group#member] or owner
type doc
  relations
    define parent: [folder]
    define owner: [user]
    define viewer: [user, user:*, group#member] or owner or viewer from parent
";

fn schema() -> Arc<Schema> {
    let model = parse_dsl(MODEL).unwrap();
    Arc::new(parse_schema(&schema::generate(&model)).unwrap())
}

fn uid(s: &str) -> EntityUid {
    entity_uid(s).unwrap()
}

fn target(principal: &str, action: &str, resource: &str) -> Target {
    Target {
        principal: uid(principal),
        action: action_uid(action).unwrap(),
        resource: uid(resource),
    }
}

fn issues(r: Result<CompiledPolicies, PolicyError>) -> Vec<PolicyIssue> {
    match r {
        Err(PolicyError::InvalidPolicies(i)) => i,
        other => panic!("want invalid policies, got {other:?}"),
    }
}

#[test]
fn generated_schema_has_types_parents_and_actions() {
    let model = parse_dsl(MODEL).unwrap();
    let s = schema::generate(&model);
    let types = &s[""]["entityTypes"];
    // Direct relations make the user a child of the object; `parent` is a tupleset, so a doc
    // is a child of its folder.
    assert_eq!(
        types["user"]["memberOfTypes"],
        json_list(&["doc", "folder", "group"])
    );
    assert_eq!(types["doc"]["memberOfTypes"], json_list(&["folder"]));
    assert_eq!(types["folder"].as_object().map(|o| o.len()), Some(0));
    let viewer = &s[""]["actions"]["viewer"]["appliesTo"];
    assert_eq!(viewer["resourceTypes"], json_list(&["doc", "folder"]));
    assert_eq!(viewer["context"]["attributes"]["rebac"]["type"], "Boolean");
    assert!(s[""]["actions"]["member"].is_object());
}

fn json_list(items: &[&str]) -> serde_json::Value {
    serde_json::json!(items)
}

#[test]
fn hierarchy_edges_follow_tuplesets_and_membership() {
    let h = Hierarchy::new(&parse_dsl(MODEL).unwrap());
    assert_eq!(
        h.edge("doc:1", "parent", "folder:a"),
        Some(("doc:1".into(), "folder:a".into()))
    );
    assert_eq!(
        h.edge("group:eng", "member", "user:anne"),
        Some(("user:anne".into(), "group:eng".into()))
    );
    assert_eq!(h.edge("doc:1", "viewer", "user:*"), None);
    assert_eq!(h.edge("doc:1", "viewer", "group:eng#member"), None);
}

#[test]
fn baseline_compiles_and_lets_the_graph_decide() {
    let p = CompiledPolicies::compile(BASELINE, &[], schema()).unwrap();
    let es = entities(
        [
            (uid("user:anne"), vec![], None),
            (uid("doc:1"), vec![], None),
        ],
        &p,
    )
    .unwrap();
    let yes = GraphContext {
        rebac: true,
        relations: vec!["viewer".into()],
    };
    let e = evaluate(
        &p,
        target("user:anne", "viewer", "doc:1"),
        None,
        &yes,
        &Risk::default(),
        &es,
    )
    .unwrap();
    assert!(e.allowed);
    assert_eq!(e.policies.len(), 1);
    assert_eq!(e.policies[0].id, "baseline");
    assert_eq!(
        e.policies[0].annotations.get("id").map(String::as_str),
        Some("baseline")
    );
    let no = GraphContext::default();
    let e = evaluate(
        &p,
        target("user:anne", "viewer", "doc:1"),
        None,
        &no,
        &Risk::default(),
        &es,
    )
    .unwrap();
    assert!(!e.allowed);
    assert!(e.policies.is_empty(), "a default deny names no policy");
}

#[test]
fn forbid_on_risk_and_hierarchy_membership() {
    let text = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("risky")
@reason("risk too high")
forbid (principal, action, resource) when { context.risk.score > 70 };

@id("eng-reads-folder-a")
permit (principal in group::"eng", action == Action::"viewer", resource in folder::"a");
"#;
    let p = CompiledPolicies::compile(text, &[], schema()).unwrap();
    let es = entities(
        [
            (uid("user:anne"), vec![uid("group:eng")], None),
            (uid("group:eng"), vec![], None),
            (uid("doc:1"), vec![uid("folder:a")], None),
            (uid("folder:a"), vec![], None),
        ],
        &p,
    )
    .unwrap();
    let run = |risk: i64| {
        evaluate(
            &p,
            target("user:anne", "viewer", "doc:1"),
            None,
            &GraphContext::default(),
            &Risk {
                score: risk,
                level: "x".into(),
                signals: vec![],
            },
            &es,
        )
        .unwrap()
    };
    let low = run(10);
    assert!(
        low.allowed,
        "group member reads a doc in the folder: {low:?}"
    );
    assert_eq!(low.policies[0].id, "eng-reads-folder-a");
    let high = run(90);
    assert!(!high.allowed);
    assert_eq!(high.policies[0].id, "risky");
    assert_eq!(
        high.policies[0]
            .annotations
            .get("reason")
            .map(String::as_str),
        Some("risk too high")
    );
}

#[test]
fn invalid_policies_carry_id_and_position() {
    // Unknown entity type on line 3.
    let text = "@id(\"ok\")\npermit (principal, action, resource) when { context.rebac };\npermit (principal == spaceship::\"x\", action, resource);\n";
    let i = issues(CompiledPolicies::compile(text, &[], schema()));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].policy_id.as_deref(), Some("policy1"));
    assert_eq!(i[0].line, 3, "{i:?}");
    assert!(i[0].message.contains("spaceship"), "{i:?}");

    // An attribute that the context does not declare.
    let text = "@id(\"uses-colour\")\npermit (principal, action, resource) when { context.colour == \"1\" };\n";
    let i = issues(CompiledPolicies::compile(text, &[], schema()));
    assert_eq!(i[0].policy_id.as_deref(), Some("uses-colour"));
    assert_eq!(i[0].line, 2, "{i:?}");
    assert!(i[0].message.contains("uses-colour"), "{i:?}");

    // A syntax error.
    let i = issues(CompiledPolicies::compile(
        "permit (principal, action, resource)\nwhen { context.rebac ",
        &[],
        schema(),
    ));
    assert!(i[0].line >= 1, "{i:?}");

    // Duplicate ids.
    let text = "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);\n";
    let i = issues(CompiledPolicies::compile(text, &[], schema()));
    assert!(i[0].message.contains('a'), "{i:?}");

    // Too large.
    let big = "permit (principal, action, resource);\n".repeat(MAX_POLICY_BYTES / 30);
    let i = issues(CompiledPolicies::compile(&big, &[], schema()));
    assert!(i[0].message.contains("bytes"), "{i:?}");
}

#[test]
fn gatehouse_context_cannot_be_overridden_and_undeclared_context_is_refused() {
    let p = CompiledPolicies::compile(BASELINE, &[], schema()).unwrap();
    let es = entities(
        [
            (uid("user:anne"), vec![], None),
            (uid("doc:1"), vec![], None),
        ],
        &p,
    )
    .unwrap();
    for ctx in [
        serde_json::json!({ "rebac": true }),
        serde_json::json!({ "colour": "blue" }),
        serde_json::json!({ "ip": "not an address" }),
    ] {
        let r = evaluate(
            &p,
            target("user:anne", "viewer", "doc:1"),
            ctx.as_object(),
            &GraphContext::default(),
            &Risk::default(),
            &es,
        );
        assert!(r.is_err(), "{ctx} was accepted");
    }
    // An action the resource type does not have.
    let r = evaluate(
        &p,
        target("user:anne", "parent", "user:bob"),
        None,
        &GraphContext::default(),
        &Risk::default(),
        &es,
    );
    assert!(r.is_err());
}

/// Evaluating only the slice of policies whose scope matches gives exactly the answer of the
/// whole set: decision, determining policies and errors.
#[test]
fn slices_decide_as_the_whole_set() {
    let text = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };
@id("anne-only")
forbid (principal == user::"anne", action, resource) when { context.risk.score > 5 };
@id("eng")
permit (principal in group::"eng", action == Action::"viewer", resource in folder::"a");
@id("users-own")
permit (principal is user, action in [Action::"owner", Action::"viewer"], resource is doc);
@id("eng-users-folders")
permit (principal is user in group::"eng", action, resource is folder);
@id("doc1")
forbid (principal, action == Action::"owner", resource == doc::"1");
@id("overflow")
permit (principal, action == Action::"parent", resource) when { context.risk.score * 9223372036854775807 > 1 };
@id("share")
permit (principal == ?principal, action == Action::"viewer", resource == ?resource);
"#;
    let links = [crate::store::TemplateLink {
        id: "share-bob".into(),
        template: "share".into(),
        principal: Some("user:bob".into()),
        resource: Some("doc:2".into()),
    }];
    let p = CompiledPolicies::compile(text, &links, schema()).unwrap();
    let es = entities(
        [
            (uid("user:anne"), vec![uid("group:eng")], None),
            (uid("user:bob"), vec![], None),
            (uid("group:eng"), vec![], None),
            (uid("doc:1"), vec![uid("folder:a")], None),
            (uid("doc:2"), vec![], None),
            (uid("folder:a"), vec![], None),
        ],
        &p,
    )
    .unwrap();
    let mut checked = 0;
    for principal in ["user:anne", "user:bob", "group:eng"] {
        for resource in ["doc:1", "doc:2", "folder:a"] {
            for action in ["viewer", "owner", "parent"] {
                for (rebac, score) in [(false, 0), (true, 9), (false, 9)] {
                    let graph = GraphContext {
                        rebac,
                        relations: vec![],
                    };
                    let risk = Risk {
                        score,
                        level: "x".into(),
                        signals: vec![],
                    };
                    let Ok(sliced) = evaluate(
                        &p,
                        target(principal, action, resource),
                        None,
                        &graph,
                        &risk,
                        &es,
                    ) else {
                        continue; // an action the resource type lacks
                    };
                    let request = Request::new(
                        uid(principal),
                        action_uid(action).unwrap(),
                        uid(resource),
                        gatehouse_context(&graph, &risk).unwrap(),
                        Some(&p.schema),
                    )
                    .unwrap();
                    let whole = Authorizer::new().is_authorized(&request, &p.set, &es);
                    let mut want: Vec<String> = whole
                        .diagnostics()
                        .reason()
                        .map(ToString::to_string)
                        .collect();
                    want.sort();
                    let mut got: Vec<String> =
                        sliced.policies.iter().map(|d| d.id.clone()).collect();
                    got.sort();
                    let what =
                        format!("{principal} {action} {resource} rebac={rebac} score={score}");
                    assert_eq!(
                        sliced.allowed,
                        whole.decision() == Decision::Allow,
                        "{what}"
                    );
                    assert_eq!(got, want, "{what}");
                    assert_eq!(
                        sliced.errors.len(),
                        whole.diagnostics().errors().count(),
                        "{what}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} requests compared");
}

/// A schema whose `view` context uses every kind the direct conversion handles (a common type
/// included) and whose `edit` context holds an entity reference, which it leaves to Cedar.
fn context_schema() -> serde_json::Value {
    let mut view = schema::gatehouse_context();
    let attributes = view["attributes"].as_object_mut().unwrap();
    for (name, t) in [
        ("n", serde_json::json!({ "type": "Long" })),
        (
            "tags",
            serde_json::json!({ "type": "Set", "element": { "type": "String" } }),
        ),
        ("mfa", serde_json::json!({ "type": "Boolean" })),
        (
            "where",
            serde_json::json!({ "type": "EntityOrCommon", "name": "Where" }),
        ),
        (
            "limit",
            serde_json::json!({ "type": "Extension", "name": "decimal" }),
        ),
        (
            "at",
            serde_json::json!({ "type": "Extension", "name": "datetime" }),
        ),
    ] {
        let mut t = t;
        t["required"] = serde_json::json!(false);
        attributes.insert(name.into(), t);
    }
    let mut edit = schema::gatehouse_context();
    edit["attributes"]["owner"] =
        serde_json::json!({ "type": "Entity", "name": "user", "required": false });
    serde_json::json!({ "": {
        "commonTypes": { "Where": { "type": "Record", "attributes": {
            "ip": { "type": "Extension", "name": "ipaddr" },
            "country": { "type": "String", "required": false },
        } } },
        "entityTypes": { "user": {}, "doc": {} },
        "actions": {
            "view": { "appliesTo": {
                "principalTypes": ["user"], "resourceTypes": ["doc"], "context": view } },
            "edit": { "appliesTo": {
                "principalTypes": ["user"], "resourceTypes": ["doc"], "context": edit } },
        },
    } })
}

const CONTEXT_POLICIES: &str = r#"
@id("n") permit (principal, action == Action::"view", resource) when { context has n && context.n > 3 };
@id("tags") permit (principal, action == Action::"view", resource) when { context has tags && context.tags.contains("x") };
@id("net") permit (principal, action == Action::"view", resource) when { context has where && context.where.ip.isInRange(ip("10.0.0.0/8")) };
@id("mfa") permit (principal, action == Action::"view", resource) when { context has mfa && context.mfa };
@id("limit") forbid (principal, action == Action::"view", resource) when { context has limit && context.limit.greaterThan(decimal("1.5")) };
@id("late") forbid (principal, action == Action::"view", resource) when { context has at && context.at > datetime("2026-01-01") };
@id("edit") permit (principal, action == Action::"edit", resource) when { context has owner && context.owner == principal };
"#;

/// A caller's context converted directly by the schema's declared types decides exactly as one
/// read by Cedar's JSON reader, and whatever the direct conversion does not cover (escapes,
/// entity references, values of the wrong kind) still gets Cedar's reading and its error.
#[test]
fn caller_context_converted_directly_decides_as_cedar_reads_it() {
    let json = context_schema();
    let schema = Arc::new(parse_schema(&json).unwrap());
    let direct = CompiledPolicies::compile(CONTEXT_POLICIES, &[], schema.clone())
        .unwrap()
        .with_context_types(&json);
    let by_cedar = CompiledPolicies::compile(CONTEXT_POLICIES, &[], schema).unwrap();
    let es = entities(
        [
            (uid("user:anne"), vec![], None),
            (uid("doc:1"), vec![], None),
        ],
        &direct,
    )
    .unwrap();
    let view = &direct.context_types[&action_uid("view").unwrap()];
    assert!(
        !direct
            .context_types
            .contains_key(&action_uid("edit").unwrap())
    );
    let decide = |p: &CompiledPolicies, action: &str, ctx: &serde_json::Value| {
        evaluate(
            p,
            target("user:anne", action, "doc:1"),
            ctx.as_object(),
            &GraphContext {
                rebac: true,
                relations: vec!["viewer".into()],
            },
            &Risk {
                score: 7,
                level: "low".into(),
                signals: vec!["new_device".into()],
            },
            &es,
        )
        .map(|e| {
            let mut ids: Vec<String> = e.policies.iter().map(|d| d.id.clone()).collect();
            ids.sort();
            (e.allowed, ids, e.errors)
        })
        .map_err(|e| e.0)
    };
    let j = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    // Converted directly: each decided as Cedar's reader decides it.
    let converted = [
        (r#"{"n": 5}"#, true),
        (r#"{"n": 2}"#, false),
        (r#"{"n": -9223372036854775808}"#, false),
        (r#"{"tags": ["x", "y"]}"#, true),
        (r#"{"tags": []}"#, false),
        (r#"{"mfa": true}"#, true),
        (r#"{"where": {"ip": "10.1.2.3"}}"#, true),
        (
            r#"{"where": {"ip": "192.168.0.1", "country": "NZ"}}"#,
            false,
        ),
        (r#"{"limit": "2.0", "mfa": true}"#, false),
        (r#"{"limit": "1.0", "mfa": true}"#, true),
        (r#"{"at": "2026-06-01", "mfa": true}"#, false),
        (r#"{"at": "2025-06-01T10:00:00Z", "mfa": true}"#, true),
    ];
    for (ctx, allowed) in converted {
        let ctx = j(ctx);
        assert!(
            context::pairs(ctx.as_object().unwrap(), view).is_some(),
            "{ctx} was not converted directly"
        );
        let got = decide(&direct, "view", &ctx);
        assert_eq!(got, decide(&by_cedar, "view", &ctx), "{ctx}");
        assert_eq!(got.unwrap().0, allowed, "{ctx}");
    }
    // Left to Cedar's reader: escapes it accepts, and bad values it refuses with its own words.
    let accepted = [
        (
            "view",
            r#"{"limit": {"__extn": {"fn": "decimal", "arg": "1.0"}}, "mfa": true}"#,
        ),
        ("edit", r#"{"owner": {"type": "user", "id": "anne"}}"#),
        (
            "edit",
            r#"{"owner": {"__entity": {"type": "user", "id": "anne"}}}"#,
        ),
    ];
    for (action, ctx) in accepted {
        let ctx = j(ctx);
        let got = decide(&direct, action, &ctx);
        assert_eq!(got, decide(&by_cedar, action, &ctx), "{ctx}");
        assert!(got.unwrap().0, "{ctx}");
    }
    let refused = [
        r#"{"n": "5"}"#,
        r#"{"n": 1.5}"#,
        r#"{"n": 18446744073709551615}"#,
        r#"{"tags": "x"}"#,
        r#"{"tags": [1]}"#,
        r#"{"where": {"ip": "not an address"}}"#,
        r#"{"where": {"country": "NZ"}}"#,
        r#"{"where": {"ip": "10.0.0.1", "extra": 1}}"#,
        r#"{"colour": "blue"}"#,
        r#"{"limit": "lots"}"#,
        r#"{"at": "yesterday"}"#,
        r#"{"mfa": null}"#,
        r#"{"risk": {"score": 0}}"#,
    ];
    for ctx in refused {
        let ctx = j(ctx);
        let got = decide(&direct, "view", &ctx);
        assert!(got.is_err(), "{ctx} was accepted");
        assert_eq!(got, decide(&by_cedar, "view", &ctx), "{ctx}");
    }
}

/// The platform's own schema (the sign-in context with `ip` an `ipaddr`) resolves for direct
/// conversion, and so does the schema generated from a model.
#[test]
fn context_types_resolve_for_the_platform_and_generated_schemas() {
    let platform: serde_json::Value =
        serde_json::from_str(include_str!("../../../policies/platform/schema.json")).unwrap();
    let shapes = context::shapes(&platform);
    let sign_in = &shapes[&action_uid("authenticate").unwrap()];
    assert_eq!(sign_in["ip"], context::Shape::Extension("ip"));
    assert_eq!(
        sign_in["amr"],
        context::Shape::Set(Box::new(context::Shape::String))
    );
    let generated = schema::generate(&parse_dsl(MODEL).unwrap());
    let shapes = context::shapes(&generated);
    let actions: Vec<EntityUid> = parse_schema(&generated)
        .unwrap()
        .actions()
        .cloned()
        .collect();
    assert!(!actions.is_empty());
    for a in &actions {
        assert!(
            shapes.contains_key(a),
            "{a} has no context type: {shapes:?}"
        );
    }
    assert!(matches!(
        shapes[&action_uid("viewer").unwrap()]["risk"],
        context::Shape::Record(_)
    ));
}
