//! Parser for OpenFGA's model DSL (schema 1.1), producing the same JSON form OpenFGA produces.
//!
//! Parsing keeps the position of every definition, so that the type checker's findings (which
//! name a [`Site`] in the model) can be reported with the line and column they come from.

mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

pub(crate) use parser::{
    Header, LeafLoc, ParsedCondition, ParsedType, SyntaxError, parse as parse_file,
};

use super::typecheck::{self, Site};
use super::{
    AuthorizationModel, ConditionDef, RelationMetadata, TypeDefinition, TypeMetadata, Userset,
};
use crate::error::{Error, ModelIssue, Result};

/// Parses DSL text into a model and type-checks it; errors carry line and column.
pub fn parse_dsl(src: &str) -> Result<AuthorizationModel> {
    let (model, map) = parse_unchecked(src)?;
    let findings = typecheck::check(&model);
    if findings.is_empty() {
        return Ok(model);
    }
    Err(invalid(
        findings
            .into_iter()
            .map(|f| (map.locate(&f.site), f.message))
            .collect(),
        None,
    ))
}

/// Parses DSL text into a model without the semantic checks, with the positions of its parts.
pub(crate) fn parse_unchecked(src: &str) -> Result<(AuthorizationModel, SourceMap)> {
    let file = parse_file(src, 0).map_err(|e| syntax_errors(e, None))?;
    let mut problems = Vec::new();
    let (schema_version, schema_loc) = match file.header {
        Header::Model { version, loc } => (version, loc),
        Header::Module { loc, .. } => {
            let first = Loc {
                file: 0,
                line: 1,
                column: 1,
            };
            let message = "schema version required: a `module` file is part of a modular model, loaded through its `fga.mod`";
            return Err(invalid(vec![(Some(first.min(loc)), message.into())], None));
        }
    };
    let mut model = AuthorizationModel {
        schema_version,
        ..AuthorizationModel::default()
    };
    let mut map = SourceMap {
        schema: Some(schema_loc),
        ..SourceMap::default()
    };
    for t in &file.types {
        if t.extend {
            problems.push((
                Some(t.loc),
                "`extend type` can only be used in a module of a modular model".to_owned(),
            ));
        }
        let relations = build_relations(t, &mut problems);
        let mut type_def = TypeDefinition {
            type_name: t.name.clone(),
            ..TypeDefinition::default()
        };
        let mut locs = TypeLocs {
            name: t.loc,
            relations: HashMap::new(),
        };
        let mut metadata = BTreeMap::new();
        for r in relations {
            type_def.relations.insert(r.name.clone(), r.rewrite);
            metadata.insert(r.name.clone(), r.metadata);
            locs.relations.insert(r.name, r.locs);
        }
        if !metadata.is_empty() {
            type_def.metadata = Some(TypeMetadata {
                relations: metadata,
                ..TypeMetadata::default()
            });
        }
        model.type_definitions.push(type_def);
        map.types.push(locs);
    }
    for c in &file.conditions {
        if model.conditions.contains_key(&c.name) {
            problems.push((
                Some(c.loc),
                format!("condition `{}` is already defined in the model", c.name),
            ));
            continue;
        }
        let (def, locs) = build_condition(c);
        model.conditions.insert(c.name.clone(), def);
        map.conditions.insert(c.name.clone(), locs);
    }
    if problems.is_empty() {
        Ok((model, map))
    } else {
        Err(invalid(problems, None))
    }
}

/// A position in one of the files of a model: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Loc {
    /// Index of the file among those of a modular model; 0 for a single DSL text.
    pub file: usize,
    pub line: usize,
    pub column: usize,
}

/// Where the parts of a model were written.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceMap {
    pub schema: Option<Loc>,
    /// Parallel to the model's `type_definitions`.
    pub types: Vec<TypeLocs>,
    pub conditions: HashMap<String, ConditionLocs>,
}

/// Where a type and its relations were written.
#[derive(Debug, Clone)]
pub(crate) struct TypeLocs {
    pub name: Loc,
    pub relations: HashMap<String, RelationLocs>,
}

/// Where a relation, its restrictions and its rewrite operands were written.
#[derive(Debug, Clone)]
pub(crate) struct RelationLocs {
    pub name: Loc,
    pub restrictions: Vec<Loc>,
    pub leaves: Vec<LeafLoc>,
}

/// Where a condition and its parameters were written.
#[derive(Debug, Clone)]
pub(crate) struct ConditionLocs {
    pub name: Loc,
    pub params: HashMap<String, Loc>,
}

impl SourceMap {
    /// The position of a site, or of the closest enclosing definition that has one.
    pub(crate) fn locate(&self, site: &Site) -> Option<Loc> {
        let relation = |t: &usize, r: &String| self.types.get(*t).and_then(|t| t.relations.get(r));
        match site {
            Site::Schema => self.schema,
            Site::Type(t) => self.types.get(*t).map(|t| t.name),
            Site::Relation(t, r) => relation(t, r).map(|r| r.name),
            Site::Restriction(t, r, k) => {
                relation(t, r).map(|r| r.restrictions.get(*k).copied().unwrap_or(r.name))
            }
            Site::Leaf(t, r, k) => {
                relation(t, r).map(|r| r.leaves.get(*k).map_or(r.name, |l| l.start))
            }
            Site::Tupleset(t, r, k) => relation(t, r).map(|r| {
                r.leaves
                    .get(*k)
                    .map_or(r.name, |l| l.tupleset.unwrap_or(l.start))
            }),
            Site::Condition(c) => self.conditions.get(c).map(|c| c.name),
            Site::ConditionParam(c, p) => self
                .conditions
                .get(c)
                .map(|c| c.params.get(p).copied().unwrap_or(c.name)),
        }
        .or_else(|| match site {
            Site::Relation(t, _)
            | Site::Restriction(t, _, _)
            | Site::Leaf(t, _, _)
            | Site::Tupleset(t, _, _) => self.types.get(*t).map(|t| t.name),
            _ => None,
        })
    }
}

/// A relation of a parsed type, in the model's form, with its positions.
pub(crate) struct BuiltRelation {
    pub name: String,
    pub rewrite: Userset,
    pub metadata: RelationMetadata,
    pub locs: RelationLocs,
}

/// The relations of a parsed type; a relation defined twice is reported and its repeat dropped.
pub(crate) fn build_relations(
    t: &ParsedType,
    problems: &mut Vec<(Option<Loc>, String)>,
) -> Vec<BuiltRelation> {
    let mut out: Vec<BuiltRelation> = Vec::new();
    for r in &t.relations {
        if out.iter().any(|b| b.name == r.name) {
            problems.push((
                Some(r.loc),
                format!(
                    "relation `{}` is already defined in type `{}`",
                    r.name, t.name
                ),
            ));
            continue;
        }
        out.push(BuiltRelation {
            name: r.name.clone(),
            rewrite: r.rewrite.clone(),
            metadata: RelationMetadata {
                directly_related_user_types: r.restrictions.clone(),
                ..RelationMetadata::default()
            },
            locs: RelationLocs {
                name: r.loc,
                restrictions: r.restriction_locs.clone(),
                leaves: r.leaves.clone(),
            },
        });
    }
    out
}

/// A parsed condition in the model's form, with its positions.
pub(crate) fn build_condition(c: &ParsedCondition) -> (ConditionDef, ConditionLocs) {
    let def = ConditionDef {
        name: c.name.clone(),
        expression: c.expression.clone(),
        parameters: c
            .params
            .iter()
            .map(|(n, _, t)| (n.clone(), t.clone()))
            .collect(),
        metadata: None,
    };
    let locs = ConditionLocs {
        name: c.loc,
        params: c.params.iter().map(|(n, l, _)| (n.clone(), *l)).collect(),
    };
    (def, locs)
}

/// Syntax errors as the engine's error.
pub(crate) fn syntax_errors(errors: Vec<SyntaxError>, files: Option<&[String]>) -> Error {
    invalid(
        errors
            .into_iter()
            .map(|e| (Some(e.loc), e.message))
            .collect(),
        files,
    )
}

/// Located problems as [`Error::InvalidModel`], sorted by position. With `files`, each message
/// starts with the name of the file it is in.
pub(crate) fn invalid(mut problems: Vec<(Option<Loc>, String)>, files: Option<&[String]>) -> Error {
    problems.sort_by_key(|(loc, _)| loc.unwrap_or_default());
    Error::InvalidModel(
        problems
            .into_iter()
            .map(|(loc, message)| {
                let message = match (loc, files) {
                    (Some(l), Some(files)) => match files.get(l.file) {
                        Some(name) => format!("in `{name}`: {message}"),
                        None => message,
                    },
                    _ => message,
                };
                let loc = loc.unwrap_or_default();
                ModelIssue {
                    message,
                    line: loc.line,
                    column: loc.column,
                }
            })
            .collect(),
    )
}
