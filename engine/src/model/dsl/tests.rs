#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn stores() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/openfga-sample-stores/stores")
}

/// The model OpenFGA would produce, given in its JSON form.
fn openfga(value: serde_json::Value) -> AuthorizationModel {
    serde_json::from_value(value).unwrap()
}

/// The issues of a rejected model as `(line, column, message)`.
fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match parse_dsl(src) {
        Ok(m) => panic!("expected an error, got {m:#?}"),
        Err(Error::InvalidModel(issues)) => issues
            .into_iter()
            .map(|i| (i.line, i.column, i.message))
            .collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn one_error(src: &str) -> (usize, usize, String) {
    let mut all = errors(src);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn every_sample_model_file_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(stores()).unwrap() {
        let path = entry.unwrap().path().join("model.fga");
        if path.exists() {
            let src = std::fs::read_to_string(&path).unwrap();
            parse_dsl(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 7, "only {seen} model files found");
}

#[test]
fn every_inline_sample_model_parses() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(stores()).unwrap() {
        for file in std::fs::read_dir(entry.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.to_string_lossy().ends_with(".fga.yaml") {
                files.push(path);
            }
        }
    }
    let mut seen = 0;
    for path in files {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if let Some(src) = doc.get("model").and_then(|m| m.as_str()) {
            parse_dsl(src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} inline models found");
}

#[test]
fn gdrive_sample_matches_openfga() {
    let src = std::fs::read_to_string(stores().join("gdrive/model.fga")).unwrap();
    let viewer_types = json!([
        { "type": "user" },
        { "type": "user", "wildcard": {} },
        { "type": "group", "relation": "member" }
    ]);
    let cu = |r: &str| json!({ "computedUserset": { "relation": r } });
    let ttu = |ts: &str, r: &str| json!({ "tupleToUserset": { "tupleset": { "relation": ts }, "computedUserset": { "relation": r } } });
    let this = json!({ "this": {} });
    let none = json!({ "directly_related_user_types": [] });
    let only = |t: &str| json!({ "directly_related_user_types": [{ "type": t }] });
    let expected = openfga(json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user", "relations": {}, "metadata": null },
            { "type": "group",
              "relations": { "member": this },
              "metadata": { "relations": { "member": only("user") } } },
            { "type": "folder",
              "relations": {
                  "can_create_file": cu("owner"),
                  "owner": this,
                  "parent": this,
                  "viewer": { "union": { "child": [this, cu("owner"), ttu("parent", "viewer")] } }
              },
              "metadata": { "relations": {
                  "can_create_file": none,
                  "owner": only("user"),
                  "parent": only("folder"),
                  "viewer": { "directly_related_user_types": viewer_types }
              } } },
            { "type": "doc",
              "relations": {
                  "can_change_owner": cu("owner"),
                  "can_read": { "union": { "child": [cu("viewer"), cu("owner"), ttu("parent", "viewer")] } },
                  "can_share": { "union": { "child": [cu("owner"), ttu("parent", "owner")] } },
                  "can_write": { "union": { "child": [cu("owner"), ttu("parent", "owner")] } },
                  "owner": this,
                  "parent": this,
                  "viewer": this
              },
              "metadata": { "relations": {
                  "can_change_owner": none,
                  "can_read": none,
                  "can_share": none,
                  "can_write": none,
                  "owner": only("user"),
                  "parent": only("folder"),
                  "viewer": { "directly_related_user_types": viewer_types }
              } } }
        ]
    }));
    assert_eq!(parse_dsl(&src).unwrap(), expected);
}

#[test]
fn operators_restrictions_and_conditions_match_openfga() {
    let src = r#"
# A model touching every construct.
model
  schema 1.1

type user

type group
  relations
    define member: [user, group#member]

type folder
  relations
    define owner: [user]
    define parent: [folder]
    # direct, computed and tuple-to-userset together
    define viewer: [user, user:*, group#member, user with in_office] or owner or viewer from parent

type document
  relations
    define parent: [folder]
    define owner: [user] # trailing comment
    define editor: [
      user
    ] and owner
    define blocked: [user]
    define viewer: (owner or viewer from parent) but not blocked
    define can_share: owner and editor

condition in_office(ip: ipaddress, allowed: list<string>,
    attrs: map<int>) {
  ip.in_cidr("10.0.0.0/8") &&   
    "x" in allowed # why
}
"#;
    let cu = |r: &str| json!({ "computedUserset": { "relation": r } });
    let this = json!({ "this": {} });
    let only = |t: &str| json!({ "directly_related_user_types": [{ "type": t }] });
    let expected = openfga(json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user", "relations": {}, "metadata": null },
            { "type": "group",
              "relations": { "member": this },
              "metadata": { "relations": { "member": { "directly_related_user_types": [
                  { "type": "user" }, { "type": "group", "relation": "member" }
              ] } } } },
            { "type": "folder",
              "relations": {
                  "owner": this,
                  "parent": this,
                  "viewer": { "union": { "child": [
                      this,
                      cu("owner"),
                      { "tupleToUserset": { "tupleset": { "relation": "parent" }, "computedUserset": { "relation": "viewer" } } }
                  ] } }
              },
              "metadata": { "relations": {
                  "owner": only("user"),
                  "parent": only("folder"),
                  "viewer": { "directly_related_user_types": [
                      { "type": "user" },
                      { "type": "user", "wildcard": {} },
                      { "type": "group", "relation": "member" },
                      { "type": "user", "condition": "in_office" }
                  ] }
              } } },
            { "type": "document",
              "relations": {
                  "parent": this,
                  "owner": this,
                  "editor": { "intersection": { "child": [this, cu("owner")] } },
                  "blocked": this,
                  "viewer": { "difference": {
                      "base": { "union": { "child": [
                          cu("owner"),
                          { "tupleToUserset": { "tupleset": { "relation": "parent" }, "computedUserset": { "relation": "viewer" } } }
                      ] } },
                      "subtract": cu("blocked")
                  } },
                  "can_share": { "intersection": { "child": [cu("owner"), cu("editor")] } }
              },
              "metadata": { "relations": {
                  "parent": only("folder"),
                  "owner": only("user"),
                  "editor": only("user"),
                  "blocked": only("user"),
                  "viewer": { "directly_related_user_types": [] },
                  "can_share": { "directly_related_user_types": [] }
              } } }
        ],
        "conditions": {
            "in_office": {
                "name": "in_office",
                "expression": "ip.in_cidr(\"10.0.0.0/8\") &&\n    \"x\" in allowed",
                "parameters": {
                    "ip": { "type_name": "TYPE_NAME_IPADDRESS" },
                    "allowed": { "type_name": "TYPE_NAME_LIST", "generic_types": [{ "type_name": "TYPE_NAME_STRING" }] },
                    "attrs": { "type_name": "TYPE_NAME_MAP", "generic_types": [{ "type_name": "TYPE_NAME_INT" }] }
                }
            }
        }
    }));
    assert_eq!(parse_dsl(src).unwrap(), expected);
}

#[test]
fn nested_parentheses_match_openfga() {
    let src = "model
  schema 1.1
type user
type document
  relations
    define allowed: [user]
    define base: [user]
    define blocked: [user]
    define relation1: (base and allowed) but not blocked
    define relation2: base and (allowed but not blocked)
    define relation3: ((relation1 and relation2) or (allowed but not blocked)) and allowed
    define relation4: (allowed but not (relation1 or relation2 or relation3)) but not (base and blocked)
    define relation7: allowed and ((base but not blocked) or (relation1 and (relation2 but not relation3 from relation4)))
    define relation9: ([user] or base) and allowed
";
    let cu = |r: &str| json!({ "computedUserset": { "relation": r } });
    let and = |c: serde_json::Value| json!({ "intersection": { "child": c } });
    let or = |c: serde_json::Value| json!({ "union": { "child": c } });
    let but_not = |b: serde_json::Value, s: serde_json::Value| json!({ "difference": { "base": b, "subtract": s } });
    let this = json!({ "this": {} });
    let user = json!({ "directly_related_user_types": [{ "type": "user" }] });
    let none = json!({ "directly_related_user_types": [] });
    let expected = openfga(json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user", "relations": {}, "metadata": null },
            { "type": "document",
              "relations": {
                  "allowed": this, "base": this, "blocked": this,
                  "relation1": but_not(and(json!([cu("base"), cu("allowed")])), cu("blocked")),
                  "relation2": and(json!([cu("base"), but_not(cu("allowed"), cu("blocked"))])),
                  "relation3": and(json!([
                      or(json!([and(json!([cu("relation1"), cu("relation2")])), but_not(cu("allowed"), cu("blocked"))])),
                      cu("allowed")
                  ])),
                  "relation4": but_not(
                      but_not(cu("allowed"), or(json!([cu("relation1"), cu("relation2"), cu("relation3")]))),
                      and(json!([cu("base"), cu("blocked")]))
                  ),
                  "relation7": and(json!([
                      cu("allowed"),
                      or(json!([
                          but_not(cu("base"), cu("blocked")),
                          and(json!([
                              cu("relation1"),
                              but_not(cu("relation2"), json!({ "tupleToUserset": {
                                  "tupleset": { "relation": "relation4" },
                                  "computedUserset": { "relation": "relation3" }
                              } }))
                          ]))
                      ]))
                  ])),
                  "relation9": and(json!([or(json!([this, cu("base")])), cu("allowed")]))
              },
              "metadata": { "relations": {
                  "allowed": user, "base": user, "blocked": user,
                  "relation1": none, "relation2": none, "relation3": none, "relation4": none, "relation7": none,
                  "relation9": user
              } } }
        ]
    }));
    // `relation3 from relation4` does not type-check (relation4 is not direct), so compare the parse.
    assert_eq!(parse_unchecked(src).unwrap().0, expected);
    assert_eq!(
        errors(src),
        [(13, 111, "relation `relation4` is used after `from`, so it must be a direct relation without a rewrite".into())]
    );
}

#[test]
fn indentation_spacing_and_comments_are_free() {
    let src = "\n# header comment\nmodel  \n  # between\n  schema 1.1\n\n  type user   \n  type doc\n\n    relations\n\n\
               \x20     define viewer :   [  user ,user:*  ]   # c\n      define can_view: viewer\n";
    let m = parse_dsl(src).unwrap();
    let doc = m.type_def("doc").unwrap();
    assert_eq!(doc.relations.len(), 2);
    assert_eq!(m.directly_related("doc", "viewer").len(), 2);
}

#[test]
fn error_undefined_type() {
    let src =
        "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define parent: [unknown]\n";
    assert_eq!(
        one_error(src),
        (6, 21, "type `unknown` is not defined".into())
    );
}

#[test]
fn error_undefined_relation() {
    let src = "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define member: [user]\n    define reader: member or allowed\n";
    assert_eq!(
        one_error(src),
        (
            7,
            30,
            "relation `allowed` is not defined on type `group`".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\ntype org\ntype group\n  relations\n    define parent: [group, group#org]\n";
    assert_eq!(
        one_error(src),
        (
            7,
            28,
            "relation `org` is not defined on type `group`".into()
        )
    );
}

#[test]
fn error_bad_from_target() {
    let src = "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define parent: [group]\n    define viewer: reader from parent\n";
    assert_eq!(
        one_error(src),
        (
            7,
            20,
            "relation `reader` is not defined on any type related by `parent` (`group`)".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\ntype folder\n  relations\n    define root: [folder]\n    define parent: [folder] or root\n    define viewer: [user] or viewer from parent\n";
    assert_eq!(
        one_error(src),
        (8, 42, "relation `parent` is used after `from`, so it must be a direct relation without a rewrite".into())
    );
    let src = "model\n  schema 1.1\ntype user\ntype folder\n  relations\n    define parent: [folder, folder#parent]\n    define viewer: [user] or viewer from parent\n";
    assert_eq!(
        one_error(src),
        (
            7,
            42,
            "relation `parent` is used after `from`, so it can only relate plain types, not `folder#parent`".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define viewer: viewer from nothing\n";
    assert_eq!(
        one_error(src),
        (
            6,
            32,
            "relation `nothing` is not defined on type `group`".into()
        )
    );
}

#[test]
fn error_duplicate_relation_and_type() {
    let src = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user]\n    define viewer: [user]\ntype member\n";
    assert_eq!(
        one_error(src),
        (
            7,
            12,
            "relation `viewer` is already defined in type `document`".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\ntype user\n";
    assert_eq!(
        one_error(src),
        (4, 6, "the type `user` is defined more than once".into())
    );
}

#[test]
fn error_missing_schema() {
    assert_eq!(
        one_error("type user\n"),
        (
            1,
            1,
            "expected `model` and `schema 1.1` at the start of the model, found `type`".into()
        )
    );
    assert_eq!(
        one_error("model\ntype user\n"),
        (
            2,
            1,
            "expected `schema` on the line after `model`, found `type`".into()
        )
    );
    assert_eq!(
        one_error("model\n  schema 0.9\ntype user\n"),
        (
            2,
            10,
            "unsupported schema version `0.9`: expected `1.1` or `1.2`".into()
        )
    );
    assert_eq!(one_error("module foo\ntype user\n").0, 1);
}

#[test]
fn error_mixing_operators_without_parentheses() {
    let src = "model\n  schema 1.1\ntype user\n  relations\n    define own: [user]\n    define follower: [user]\n    define blocked: [user]\n    define viewer: [user] and follower or own but not blocked\n";
    assert_eq!(
        one_error(src),
        (
            8,
            40,
            "cannot mix `and` and `or` without parentheses; group the operands with `(` and `)`"
                .into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\n  relations\n    define a: [user]\n    define b: [user]\n    define c: [user]\n    define d: a but not b but not c\n";
    assert_eq!(
        one_error(src),
        (
            8,
            27,
            "`but not` cannot be chained; group the operands with `(` and `)`".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\n  relations\n    define a: [user]\n    define b: a or [user]\n";
    assert_eq!(
        one_error(src),
        (
            6,
            20,
            "direct type restrictions `[...]` must come first in a relation definition and appear only once".into()
        )
    );
}

#[test]
fn error_conditions() {
    let unused = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user]\ncondition allowed_ip(current_ip: ipaddress) {\n  current_ip.in_cidr(\"192.168.0.0/24\")\n}\n";
    assert_eq!(
        one_error(unused),
        (
            7,
            11,
            "condition `allowed_ip` is defined but not used in the model".into()
        )
    );
    let undefined = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user with allowed_ip]\n";
    assert_eq!(
        one_error(undefined),
        (
            6,
            21,
            "condition `allowed_ip` is not defined in the model".into()
        )
    );
    let bad_type = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user with c]\ncondition c(s: map<map>) {\n  s != \"x\"\n}\n";
    assert_eq!(one_error(bad_type).0, 7);
    let no_generic = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user with c]\ncondition c(s: list) {\n  s != \"x\"\n}\n";
    assert_eq!(
        one_error(no_generic),
        (
            7,
            20,
            "expected `<` after `list` (e.g. `list<string>`), found `)`".into()
        )
    );
    let twice = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user with c]\ncondition c(s: string) {\n  s != \"x\"\n}\ncondition c(s: string) {\n  s == \"x\"\n}\n";
    assert_eq!(
        one_error(twice),
        (
            10,
            11,
            "condition `c` is already defined in the model".into()
        )
    );
    let param_twice = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user with c]\ncondition c(s: string, s: int) {\n  s != \"x\"\n}\n";
    assert_eq!(
        one_error(param_twice),
        (
            7,
            24,
            "parameter `s` is already defined in the condition `c`".into()
        )
    );
}

#[test]
fn error_impossible_relations() {
    let src = "model\n  schema 1.1\ntype document\n  relations\n    define reader: writer\n    define writer: reader\n";
    assert_eq!(
        errors(src),
        [
            (
                5,
                12,
                "`reader` is an impossible relation for `document` (potential loop)".into()
            ),
            (
                6,
                12,
                "`writer` is an impossible relation for `document` (potential loop)".into()
            )
        ]
    );
    let src = "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define parent: [group]\n    define viewer: viewer from parent\n";
    assert_eq!(
        one_error(src),
        (
            7,
            12,
            "`viewer` is an impossible relation for `group` (no entrypoint)".into()
        )
    );
    let src = "model\n  schema 1.1\ntype group\n  relations\n    define viewer: [group#viewer]\n";
    assert_eq!(
        one_error(src),
        (
            5,
            12,
            "`viewer` is an impossible relation for `group` (no entrypoint)".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define a: a\n";
    assert_eq!(
        one_error(src),
        (
            6,
            15,
            "relation `a` of type `doc` cannot be rewritten to itself".into()
        )
    );
    // A union needs only one operand with an entrypoint.
    let src = "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define admin: [user]\n    define a1: admin or a2\n    define a2: admin or a1\n    define i: [document#i] or admin\n";
    assert_eq!(
        one_error(src),
        (9, 16, "type `document` is not defined".into())
    );
}

#[test]
fn error_duplicates_inside_a_relation() {
    let src = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user, user]\n    define editor: viewer or viewer\n";
    assert_eq!(
        errors(src),
        [
            (
                6,
                27,
                "the type restriction `user` is a duplicate in the relation `viewer`".into()
            ),
            (
                7,
                30,
                "the partial relation definition `viewer` is a duplicate in the relation `editor`"
                    .into()
            )
        ]
    );
}

#[test]
fn error_reserved_and_misplaced() {
    let src = "model\n  schema 1.1\ntype self\n";
    assert_eq!(
        one_error(src),
        (
            3,
            6,
            "a type cannot be named `self`: `self` and `this` are reserved".into()
        )
    );
    let src =
        "model\n  schema 1.1\ntype user\nextend type user\n  relations\n    define x: [user]\n";
    assert_eq!(
        one_error(src),
        (
            4,
            13,
            "`extend type` can only be used in a module of a modular model".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\n  define x: [user]\n";
    assert_eq!(
        one_error(src),
        (
            4,
            3,
            "`define` must be inside the `relations` of a type".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\n  relations\ntype doc\n";
    assert_eq!(
        one_error(src),
        (
            4,
            3,
            "expected at least one `define` after `relations`".into()
        )
    );
    let src = "model\n  schema 1.1\ntype user\n  relations\n    define x: [user:* #c]\n";
    assert_eq!(
        one_error(src),
        (
            5,
            15,
            "this `[` is never closed: expected `,` or `]` after a type restriction".into()
        )
    );
}

#[test]
fn syntax_errors_are_all_collected() {
    let src = "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define a [user]\n    define b: [user]\n    define c: b or or\ntype 9x\n  relations\n    define d: [user]\n";
    let got: Vec<(usize, usize)> = errors(src).into_iter().map(|(l, c, _)| (l, c)).collect();
    assert_eq!(got, [(6, 14), (8, 20), (9, 6)]);
}
