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
