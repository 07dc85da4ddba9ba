//! Modular models (schema 1.2): an `fga.mod` manifest and module files.
//!
//! Each module file starts with `module <name>` and holds `type`, `extend type` and `condition`
//! definitions. The files are merged into one model the way OpenFGA merges them: types in the
//! order they are defined, each extension's relations added to the type it extends, and every
//! type, extension relation and condition marked with its module and file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_yaml_ng::Value;

use super::dsl::{self, Header, Loc, SourceMap, TypeLocs};
use super::typecheck;
use super::{
    AuthorizationModel, RelationMetadata, SourceInfo, TypeDefinition, TypeMetadata, Userset,
};
use crate::error::{Error, Result};

/// Reads an `fga.mod` manifest and the module files it lists, merges them into one model and
/// type-checks it; errors name the file and give line and column.
pub fn load_modular(manifest_path: &Path) -> Result<AuthorizationModel> {
    let manifest_name = manifest_path.file_name().map_or_else(
        || manifest_path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = std::fs::read_to_string(manifest_path).map_err(|e| {
        Error::Validation(format!("cannot read `{}`: {e}", manifest_path.display()))
    })?;
    let contents =
        read_manifest(&text).map_err(|problems| dsl::invalid(problems, Some(&[manifest_name])))?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let mut modules = Vec::with_capacity(contents.len());
    for name in contents {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Validation(format!("cannot read module file `{}`: {e}", path.display()))
        })?;
        modules.push((name, text));
    }
    merge_modules(&modules)
}

/// The `contents` of a manifest, or what is wrong with it (positions in file 0).
fn read_manifest(text: &str) -> std::result::Result<Vec<String>, Vec<(Option<Loc>, String)>> {
    let at = |line: usize, column: usize| {
        Some(Loc {
            file: 0,
            line,
            column,
        })
    };
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let loc = e.location().and_then(|l| at(l.line(), l.column()));
        vec![(loc, format!("the manifest is not valid YAML: {e}"))]
    })?;
    let mut problems = Vec::new();
    match doc.get("schema") {
        None => problems.push((None, "the manifest has no `schema` field".to_owned())),
        Some(v) => {
            let version = match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match version.as_deref() {
                Some("1.2") => {}
                Some(other) => problems.push((
                    None,
                    format!("unsupported schema version `{other}`: a modular model must use `1.2`"),
                )),
                None => problems.push((
                    None,
                    "the `schema` field must be a string such as `'1.2'`".to_owned(),
                )),
            }
        }
    }
    let mut files = Vec::new();
    match doc.get("contents") {
        None => problems.push((None, "the manifest has no `contents` field".to_owned())),
        Some(Value::Sequence(items)) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::String(s) if s.ends_with(".fga") => files.push(s.clone()),
                    Value::String(s) => {
                        problems.push((
                            None,
                            format!("`contents` items must be `.fga` files, found `{s}`"),
                        ));
                    }
                    _ => problems.push((None, "`contents` items must be file names".to_owned())),
                }
            }
        }
        Some(_) => problems.push((
            None,
            "`contents` must be a non-empty list of `.fga` files".to_owned(),
        )),
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// Merges module files, given as (name, text) pairs, into one checked model.
pub(crate) fn merge_modules(modules: &[(String, String)]) -> Result<AuthorizationModel> {
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let fail = |problems: Vec<(Option<Loc>, String)>| dsl::invalid(problems, Some(&names));

    let mut parsed = Vec::new();
    let mut syntax = Vec::new();
    for (i, (_, text)) in modules.iter().enumerate() {
        match dsl::parse_file(text, i) {
            Ok(f) => parsed.push((i, f)),
            Err(errors) => syntax.extend(errors.into_iter().map(|e| (Some(e.loc), e.message))),
        }
    }
    if !syntax.is_empty() {
        return Err(fail(syntax));
    }

    let mut problems = Vec::new();
    let mut model = AuthorizationModel {
        schema_version: "1.2".into(),
        ..AuthorizationModel::default()
    };
    let mut map = SourceMap::default();
    let mut positions: HashMap<String, usize> = HashMap::new();
    let mut extensions = Vec::new();
    for (file, f) in &parsed {
        let module = match &f.header {
            Header::Module { name, .. } => name.clone(),
            Header::Model { loc, .. } => {
                problems.push((
                    Some(*loc),
                    "a module file must start with `module <name>`, not `model`".to_owned(),
                ));
                continue;
            }
        };
        let source = || {
            Some(SourceInfo {
                file: names.get(*file).cloned().unwrap_or_default(),
            })
        };
        for t in &f.types {
            if t.extend {
                extensions.push((module.clone(), *file, t));
                continue;
            }
            if positions.contains_key(&t.name) {
                problems.push((
                    Some(t.loc),
                    format!("the type `{}` is defined more than once", t.name),
                ));
                continue;
            }
            let mut type_def = TypeDefinition {
                type_name: t.name.clone(),
                ..TypeDefinition::default()
            };
            let mut locs = TypeLocs {
                name: t.loc,
                relations: HashMap::new(),
            };
            let mut metadata = BTreeMap::new();
            for r in dsl::build_relations(t, &mut problems) {
                type_def.relations.insert(r.name.clone(), r.rewrite);
                metadata.insert(r.name.clone(), r.metadata);
                locs.relations.insert(r.name, r.locs);
            }
            type_def.metadata = Some(TypeMetadata {
                relations: metadata,
                module: Some(module.clone()),
                source_info: source(),
            });
            positions.insert(t.name.clone(), model.type_definitions.len());
            model.type_definitions.push(type_def);
            map.types.push(locs);
        }
        for c in &f.conditions {
            if model.conditions.contains_key(&c.name) {
                problems.push((
                    Some(c.loc),
                    format!("condition `{}` is already defined in the model", c.name),
                ));
                continue;
            }
            let (mut def, locs) = dsl::build_condition(c);
            def.metadata = Some(serde_json::json!({
                "module": module,
                "source_info": { "file": names.get(*file).cloned().unwrap_or_default() },
            }));
            model.conditions.insert(c.name.clone(), def);
            map.conditions.insert(c.name.clone(), locs);
        }
    }

    for (module, file, t) in extensions {
        let Some(&ti) = positions.get(&t.name) else {
            problems.push((
                Some(t.loc),
                format!("extended type `{}` is not defined in any module", t.name),
            ));
            continue;
        };
        let (Some(type_def), Some(locs)) =
            (model.type_definitions.get_mut(ti), map.types.get_mut(ti))
        else {
            continue;
        };
        for r in dsl::build_relations(t, &mut problems) {
            if type_def.relations.contains_key(&r.name) {
                problems.push((
                    Some(r.locs.name),
                    format!(
                        "relation `{}` is already defined in type `{}`",
                        r.name, t.name
                    ),
                ));
                continue;
            }
            extend(
                type_def,
                r.name.clone(),
                r.rewrite,
                r.metadata,
                &module,
                names.get(file),
            );
            locs.relations.insert(r.name, r.locs);
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let findings = typecheck::check(&model);
    if findings.is_empty() {
        return Ok(model);
    }
    let located = findings
        .into_iter()
        .map(|f| (map.locate(&f.site), f.message))
        .collect();
    Err(fail(located))
}

/// Adds an extension's relation to the type it extends, marked with the extending module.
fn extend(
    type_def: &mut TypeDefinition,
    name: String,
    rewrite: Userset,
    metadata: RelationMetadata,
    module: &str,
    file: Option<&String>,
) {
    type_def.relations.insert(name.clone(), rewrite);
    let meta = type_def.metadata.get_or_insert_with(TypeMetadata::default);
    meta.relations.insert(
        name,
        RelationMetadata {
            module: Some(module.to_owned()),
            source_info: Some(SourceInfo {
                file: file.cloned().unwrap_or_default(),
            }),
            ..metadata
        },
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ModelIssue;

    fn sample() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/openfga-sample-stores/stores/modular/fga.mod")
    }

    fn issues(r: Result<AuthorizationModel>) -> Vec<ModelIssue> {
        match r {
            Err(Error::InvalidModel(issues)) => issues,
            other => panic!("expected an invalid model, got {other:?}"),
        }
    }

    fn modules(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn loads_the_modular_sample() {
        let m = load_modular(&sample()).unwrap();
        assert_eq!(m.schema_version, "1.2");
        let names: Vec<&str> = m
            .type_definitions
            .iter()
            .map(|t| t.type_name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "user",
                "organization",
                "group",
                "project",
                "ticket",
                "space",
                "page"
            ]
        );

        let org = m.type_def("organization").unwrap();
        let rels: Vec<&str> = org.relations.keys().map(String::as_str).collect();
        assert_eq!(
            rels,
            ["admin", "can_create_project", "can_create_space", "member"]
        );
        let meta = org.metadata.as_ref().unwrap();
        assert_eq!(meta.module.as_deref(), Some("core"));
        assert_eq!(meta.source_info.as_ref().unwrap().file, "core.fga");
        let ext = &meta.relations["can_create_project"];
        assert_eq!(ext.module.as_deref(), Some("issue-tracker"));
        assert_eq!(
            ext.source_info.as_ref().unwrap().file,
            "issue-tracker/projects.fga"
        );
        assert_eq!(meta.relations["member"].module, None);
        assert_eq!(
            meta.relations["can_create_space"].module.as_deref(),
            Some("wiki")
        );

        let ticket = m.type_def("ticket").unwrap().metadata.as_ref().unwrap();
        assert_eq!(ticket.module.as_deref(), Some("issue-tracker"));
        assert_eq!(
            ticket.source_info.as_ref().unwrap().file,
            "issue-tracker/tickets.fga"
        );
        let user = m.type_def("user").unwrap();
        assert!(user.relations.is_empty());
        assert_eq!(
            user.metadata.as_ref().unwrap().module.as_deref(),
            Some("core")
        );
    }

    #[test]
    fn conditions_are_marked_with_their_module() {
        let m = merge_modules(&modules(&[
            ("core.fga", "module core\ntype user\n"),
            (
                "docs.fga",
                "module docs\ntype doc\n  relations\n    define viewer: [user with fresh]\ncondition fresh(age: int) {\n  age < 10\n}\n",
            ),
        ]))
        .unwrap();
        assert_eq!(
            m.conditions["fresh"].metadata,
            Some(serde_json::json!({ "module": "docs", "source_info": { "file": "docs.fga" } }))
        );
    }

    #[test]
    fn errors_name_the_file_and_position() {
        let got = issues(merge_modules(&modules(&[
            (
                "core.fga",
                "module core\n\ntype user\ntype org\n  relations\n    define member: [user]\n",
            ),
            (
                "wiki.fga",
                "module wiki\n\nextend type org\n  relations\n    define can_edit: admin\n",
            ),
        ])));
        assert_eq!(
            got,
            [ModelIssue {
                message: "in `wiki.fga`: relation `admin` is not defined on type `org`".into(),
                line: 5,
                column: 22
            }]
        );
    }

    #[test]
    fn merge_problems_are_reported() {
        let got = issues(merge_modules(&modules(&[
            (
                "a.fga",
                "module a\ntype user\ntype org\n  relations\n    define member: [user]\n",
            ),
            (
                "b.fga",
                "module b\ntype user\nextend type team\n  relations\n    define x: [user]\nextend type org\n  relations\n    define member: [user]\n",
            ),
        ])));
        let got: Vec<(String, usize, usize)> = got
            .into_iter()
            .map(|i| (i.message, i.line, i.column))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "in `b.fga`: the type `user` is defined more than once".to_owned(),
                    2,
                    6
                ),
                (
                    "in `b.fga`: extended type `team` is not defined in any module".to_owned(),
                    3,
                    13
                ),
                (
                    "in `b.fga`: relation `member` is already defined in type `org`".to_owned(),
                    8,
                    12
                ),
            ]
        );
    }

    #[test]
    fn syntax_errors_and_model_headers_are_reported_per_file() {
        let got = issues(merge_modules(&modules(&[
            ("a.fga", "model\n  schema 1.1\ntype user\n"),
            (
                "b.fga",
                "module b\ntype doc\n  relations\n    define viewer [user]\n",
            ),
        ])));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, "in `b.fga`: expected `:`, found `[`");
        assert_eq!((got[0].line, got[0].column), (4, 19));

        let got = issues(merge_modules(&modules(&[(
            "a.fga",
            "model\n  schema 1.1\ntype user\n",
        )])));
        assert_eq!(
            got[0].message,
            "in `a.fga`: a module file must start with `module <name>`, not `model`"
        );
    }

    #[test]
    fn bad_manifests() {
        let bad = |text: &str| {
            read_manifest(text)
                .unwrap_err()
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bad("contents: [a.fga]"),
            ["the manifest has no `schema` field"]
        );
        assert_eq!(
            bad("schema: '1.1'\ncontents: [a.txt]"),
            [
                "unsupported schema version `1.1`: a modular model must use `1.2`",
                "`contents` items must be `.fga` files, found `a.txt`"
            ]
        );
        assert_eq!(
            bad("schema: '1.2'"),
            ["the manifest has no `contents` field"]
        );
        assert_eq!(
            read_manifest("schema: '1.2'\ncontents:\n  - a.fga\n  - b/c.fga\n").unwrap(),
            ["a.fga", "b/c.fga"]
        );
    }

    #[test]
    fn missing_files_are_reported() {
        let err = load_modular(Path::new("/nonexistent/fga.mod")).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read `/nonexistent/fga.mod`"),
            "{err}"
        );
    }
}
