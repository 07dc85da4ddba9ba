//! Type checking of authorization models.
//!
//! The rules are OpenFGA's: a model is rejected when it names types, relations or conditions that
//! do not exist, when a `from` clause walks a relation that is not a plain direct relation, when a
//! relation can never be satisfied by any tuple (no entrypoint), and when it defines things twice.
//! Every problem is reported, not only the first; each names the [`Site`] it was found at so that
//! the DSL parser can turn it into a line and column.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    AuthorizationModel, ConditionParamType, RelationReference, TypeDefinition, TypeName, Userset,
};
use crate::error::{Error, ModelIssue, Result};

/// Checks a model (from DSL or JSON) for undefined types and relations, bad restrictions and duplicates.
pub fn validate_model(model: &AuthorizationModel) -> Result<()> {
    let findings = check(model);
    if findings.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidModel(
        findings
            .into_iter()
            .map(|f| ModelIssue {
                message: f.message,
                line: 0,
                column: 0,
            })
            .collect(),
    ))
}

/// Where in a model a problem was found. Types are named by their index in `type_definitions`
/// (names may be duplicated); rewrite leaves by their pre-order index (see [`leaves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Site {
    /// The schema version.
    Schema,
    /// A type definition.
    Type(usize),
    /// A relation definition of a type.
    Relation(usize, String),
    /// One direct type restriction of a relation, by index in `directly_related_user_types`.
    Restriction(usize, String, usize),
    /// One leaf of a relation's rewrite (`this`, a computed userset or a tuple-to-userset).
    Leaf(usize, String, usize),
    /// The tupleset (the part after `from`) of a tuple-to-userset leaf.
    Tupleset(usize, String, usize),
    /// A condition definition.
    Condition(String),
    /// A parameter of a condition.
    ConditionParam(String, String),
}

/// One problem found in a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub site: Site,
    pub message: String,
}

/// The leaves of a rewrite in pre-order: `this`, computed usersets and tuple-to-usersets, left to right.
pub(crate) fn leaves(rewrite: &Userset) -> Vec<&Userset> {
    fn walk<'a>(u: &'a Userset, out: &mut Vec<&'a Userset>) {
        match u {
            Userset::This(_) | Userset::ComputedUserset(_) | Userset::TupleToUserset(_) => {
                out.push(u)
            }
            Userset::Union(s) | Userset::Intersection(s) => {
                s.child.iter().for_each(|c| walk(c, out))
            }
            Userset::Difference(d) => {
                walk(&d.base, out);
                walk(&d.subtract, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(rewrite, &mut out);
    out
}

/// `user`, `user:*`, `group#member` (with ` with cond` when conditioned).
pub(crate) fn restriction_string(r: &RelationReference) -> String {
    let mut s = r.type_name.clone();
    if r.wildcard.is_some() {
        s.push_str(":*");
    }
    if let Some(rel) = &r.relation {
        s.push('#');
        s.push_str(rel);
    }
    if !r.condition.is_empty() {
        s.push_str(" with ");
        s.push_str(&r.condition);
    }
    s
}

const RESERVED: [&str; 2] = ["self", "this"];

/// OpenFGA's naming rule for types (`^[^:#@\s]{1,254}$`) and relations (`{1,50}`).
fn valid_name(name: &str, max: usize) -> bool {
    let n = name.chars().count();
    (1..=max).contains(&n)
        && !name
            .chars()
            .any(|c| matches!(c, ':' | '#' | '@') || c.is_whitespace() || c.is_control())
}

/// The model as seen by the checks: the first definition of each type name wins.
struct Index<'a> {
    model: &'a AuthorizationModel,
    types: HashMap<&'a str, &'a TypeDefinition>,
}

impl<'a> Index<'a> {
    fn new(model: &'a AuthorizationModel) -> Self {
        let mut types = HashMap::new();
        for td in &model.type_definitions {
            types.entry(td.type_name.as_str()).or_insert(td);
        }
        Index { model, types }
    }

    fn has_relation(&self, type_name: &str, relation: &str) -> bool {
        self.types
            .get(type_name)
            .is_some_and(|t| t.relations.contains_key(relation))
    }

    fn restrictions(&self, type_name: &str, relation: &str) -> &'a [RelationReference] {
        self.types
            .get(type_name)
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.relations.get(relation))
            .map(|r| r.directly_related_user_types.as_slice())
            .unwrap_or(&[])
    }
}

/// Runs every check on `model` and returns what it found, in a stable order.
pub(crate) fn check(model: &AuthorizationModel) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |site: Site, message: String| out.push(Finding { site, message });

    match model.schema_version.as_str() {
        "1.1" | "1.2" => {}
        "" => push(Site::Schema, "schema version required".into()),
        v => push(
            Site::Schema,
            format!("unsupported schema version `{v}`: expected `1.1` or `1.2`"),
        ),
    }

    let index = Index::new(model);
    check_names(model, &mut push);
    for (ti, td) in model.type_definitions.iter().enumerate() {
        if !std::ptr::eq(
            index
                .types
                .get(td.type_name.as_str())
                .copied()
                .unwrap_or(td),
            td,
        ) {
            continue; // a duplicate, already reported
        }
        for (name, rewrite) in &td.relations {
            check_restrictions(&index, ti, td, name, rewrite, &mut push);
            check_rewrite(&index, ti, td, name, rewrite, &mut push);
        }
    }
    let used = check_conditions(model, &mut push);
    for name in model.conditions.keys() {
        if !used.contains(name.as_str()) {
            push(
                Site::Condition(name.clone()),
                format!("condition `{name}` is defined but not used in the model"),
            );
        }
    }

    // Entrypoints only mean something once every reference resolves.
    if out.is_empty() {
        out.extend(check_entrypoints(&index));
    }
    out
}

fn check_names(model: &AuthorizationModel, push: &mut impl FnMut(Site, String)) {
    let mut seen = HashSet::new();
    for (ti, td) in model.type_definitions.iter().enumerate() {
        let t = td.type_name.as_str();
        if t.is_empty() {
            push(Site::Type(ti), "a type name cannot be empty".into());
        } else if RESERVED.contains(&t) {
            push(
                Site::Type(ti),
                format!("a type cannot be named `{t}`: `self` and `this` are reserved"),
            );
        } else if !valid_name(t, 254) {
            push(
                Site::Type(ti),
                format!(
                    "type name `{t}` is invalid: it must have 1 to 254 characters and no `:`, `#`, `@` or whitespace"
                ),
            );
        }
        if !seen.insert(t) {
            push(
                Site::Type(ti),
                format!("the type `{t}` is defined more than once"),
            );
        }
        for r in td.relations.keys() {
            if r.is_empty() {
                push(
                    Site::Type(ti),
                    format!("type `{t}` has a relation with an empty name"),
                );
            } else if RESERVED.contains(&r.as_str()) {
                push(
                    Site::Relation(ti, r.clone()),
                    format!("a relation cannot be named `{r}`: `self` and `this` are reserved"),
                );
            } else if !valid_name(r, 50) {
                push(
                    Site::Relation(ti, r.clone()),
                    format!(
                        "relation name `{r}` of type `{t}` is invalid: it must have 1 to 50 characters and no `:`, `#`, `@` or whitespace"
                    ),
                );
            }
        }
    }
}

fn contains_this(u: &Userset) -> bool {
    leaves(u).iter().any(|l| matches!(l, Userset::This(_)))
}

fn check_restrictions(
    index: &Index<'_>,
    ti: usize,
    td: &TypeDefinition,
    relation: &str,
    rewrite: &Userset,
    push: &mut impl FnMut(Site, String),
) {
    let t = td.type_name.as_str();
    let restrictions = index.restrictions(t, relation);
    let assignable = contains_this(rewrite);
    if assignable && restrictions.is_empty() {
        push(
            Site::Relation(ti, relation.to_owned()),
            format!(
                "relation `{relation}` of type `{t}` allows direct assignment but has no type restrictions"
            ),
        );
    }
    if !assignable && !restrictions.is_empty() {
        push(
            Site::Relation(ti, relation.to_owned()),
            format!(
                "relation `{relation}` of type `{t}` has type restrictions but does not allow direct assignment"
            ),
        );
    }
    let mut seen = HashSet::new();
    for (k, r) in restrictions.iter().enumerate() {
        let site = || Site::Restriction(ti, relation.to_owned(), k);
        let shown = restriction_string(r);
        if !seen.insert((
            &r.type_name,
            &r.relation,
            r.wildcard.is_some(),
            &r.condition,
        )) {
            push(
                site(),
                format!(
                    "the type restriction `{shown}` is a duplicate in the relation `{relation}`"
                ),
            );
        }
        if r.wildcard.is_some() && r.relation.is_some() {
            push(
                site(),
                format!("type restriction `{shown}` cannot be both a wildcard and a userset"),
            );
        }
        if !index.types.contains_key(r.type_name.as_str()) {
            push(site(), format!("type `{}` is not defined", r.type_name));
        } else if let Some(rel) = &r.relation
            && !index.has_relation(&r.type_name, rel)
        {
            push(
                site(),
                format!("relation `{rel}` is not defined on type `{}`", r.type_name),
            );
        }
        if !r.condition.is_empty() && !index.model.conditions.contains_key(&r.condition) {
            push(
                site(),
                format!("condition `{}` is not defined in the model", r.condition),
            );
        }
    }
}

/// A name for a leaf that makes duplicates visible: `viewer` or `viewer from parent`.
fn leaf_key(u: &Userset) -> Option<String> {
    match u {
        Userset::ComputedUserset(c) => Some(c.relation.clone()),
        Userset::TupleToUserset(t) => Some(format!(
            "{} from {}",
            t.computed_userset.relation, t.tupleset.relation
        )),
        _ => None,
    }
}

fn check_rewrite(
    index: &Index<'_>,
    ti: usize,
    td: &TypeDefinition,
    relation: &str,
    rewrite: &Userset,
    push: &mut impl FnMut(Site, String),
) {
    let t = td.type_name.as_str();
    let all = leaves(rewrite);
    let leaf_index = |u: &Userset| all.iter().position(|l| std::ptr::eq(*l, u));
    let rel_site = || Site::Relation(ti, relation.to_owned());

    for (k, leaf) in all.iter().enumerate() {
        let site = || Site::Leaf(ti, relation.to_owned(), k);
        match leaf {
            Userset::ComputedUserset(c) => {
                let target = c.relation.as_str();
                if target == relation {
                    push(
                        site(),
                        format!(
                            "relation `{relation}` of type `{t}` cannot be rewritten to itself"
                        ),
                    );
                } else if !td.relations.contains_key(target) {
                    push(
                        site(),
                        format!("relation `{target}` is not defined on type `{t}`"),
                    );
                }
            }
            Userset::TupleToUserset(ttu) => {
                let tupleset = ttu.tupleset.relation.as_str();
                let computed = ttu.computed_userset.relation.as_str();
                let ts_site = || Site::Tupleset(ti, relation.to_owned(), k);
                let Some(ts_rewrite) = td.relations.get(tupleset) else {
                    push(
                        ts_site(),
                        format!("relation `{tupleset}` is not defined on type `{t}`"),
                    );
                    continue;
                };
                if !matches!(ts_rewrite, Userset::This(_)) {
                    push(
                        ts_site(),
                        format!(
                            "relation `{tupleset}` is used after `from`, so it must be a direct relation without a rewrite"
                        ),
                    );
                    continue;
                }
                let related = index.restrictions(t, tupleset);
                if let Some(bad) = related
                    .iter()
                    .find(|r| r.relation.is_some() || r.wildcard.is_some())
                {
                    push(
                        ts_site(),
                        format!(
                            "relation `{tupleset}` is used after `from`, so it can only relate plain types, not `{}`",
                            restriction_string(bad)
                        ),
                    );
                    continue;
                }
                if !related.is_empty()
                    && !related
                        .iter()
                        .any(|r| index.has_relation(&r.type_name, computed))
                {
                    let names: Vec<String> = related
                        .iter()
                        .map(|r| format!("`{}`", r.type_name))
                        .collect();
                    push(
                        site(),
                        format!(
                            "relation `{computed}` is not defined on any type related by `{tupleset}` ({})",
                            names.join(", ")
                        ),
                    );
                }
            }
            Userset::This(_)
            | Userset::Union(_)
            | Userset::Intersection(_)
            | Userset::Difference(_) => {}
        }
    }

    // Empty operators and repeated operands.
    let mut stack = vec![rewrite];
    while let Some(u) = stack.pop() {
        let children: Vec<&Userset> = match u {
            Userset::Union(s) | Userset::Intersection(s) => {
                if s.child.is_empty() {
                    push(
                        rel_site(),
                        format!(
                            "relation `{relation}` of type `{t}` has an operator with no operands"
                        ),
                    );
                }
                s.child.iter().collect()
            }
            Userset::Difference(d) => vec![d.base.as_ref(), d.subtract.as_ref()],
            _ => Vec::new(),
        };
        let mut seen = HashSet::new();
        for c in &children {
            if let Some(key) = leaf_key(c)
                && !seen.insert(key.clone())
            {
                let site =
                    leaf_index(c).map_or_else(rel_site, |k| Site::Leaf(ti, relation.to_owned(), k));
                push(
                    site,
                    format!(
                        "the partial relation definition `{key}` is a duplicate in the relation `{relation}`"
                    ),
                );
            }
        }
        stack.extend(children.into_iter().rev());
    }
}

/// Checks condition definitions and returns the names of the conditions used by some restriction.
fn check_conditions<'a>(
    model: &'a AuthorizationModel,
    push: &mut impl FnMut(Site, String),
) -> HashSet<&'a str> {
    for (key, cond) in &model.conditions {
        let site = || Site::Condition(key.clone());
        if cond.name != *key {
            push(
                site(),
                format!("condition `{key}` has a different name `{}`", cond.name),
            );
        }
        if key.is_empty()
            || key.chars().count() > 50
            || key.chars().any(|c| c == '*' || c.is_whitespace())
        {
            push(
                site(),
                format!(
                    "condition name `{key}` is invalid: it must have 1 to 50 characters and no `*` or whitespace"
                ),
            );
        }
        if cond.expression.trim().is_empty() {
            push(site(), format!("condition `{key}` has an empty expression"));
        }
        for (param, ty) in &cond.parameters {
            if let Err(reason) = check_param_type(ty) {
                push(
                    Site::ConditionParam(key.clone(), param.clone()),
                    format!("parameter `{param}` of condition `{key}` {reason}"),
                );
            }
        }
    }
    model
        .type_definitions
        .iter()
        .filter_map(|td| td.metadata.as_ref())
        .flat_map(|m| m.relations.values())
        .flat_map(|r| &r.directly_related_user_types)
        .filter(|r| !r.condition.is_empty())
        .map(|r| r.condition.as_str())
        .collect()
}

fn check_param_type(ty: &ConditionParamType) -> Result<(), String> {
    match ty.type_name {
        TypeName::TYPE_NAME_UNSPECIFIED => Err("has no type".into()),
        TypeName::TYPE_NAME_LIST | TypeName::TYPE_NAME_MAP => {
            let [generic] = ty.generic_types.as_slice() else {
                return Err(format!(
                    "has type `{:?}`, which needs exactly one generic type",
                    ty.type_name
                ));
            };
            check_param_type(generic)
        }
        other if !ty.generic_types.is_empty() => Err(format!(
            "has type `{other:?}`, which takes no generic types"
        )),
        _ => Ok(()),
    }
}

/// Finds relations that no tuple can ever satisfy: the least fixpoint of "has an entrypoint",
/// where a direct restriction to a plain type or a wildcard is an entrypoint, a userset
/// restriction is one when its relation has one, and operators combine their operands
/// (any for union; all for intersection and difference).
fn check_entrypoints(index: &Index<'_>) -> Vec<Finding> {
    let model = index.model;
    let mut reachable: HashSet<(&str, &str)> = HashSet::new();
    loop {
        let mut changed = false;
        for td in index.types.values() {
            for (name, rewrite) in &td.relations {
                let key = (td.type_name.as_str(), name.as_str());
                if !reachable.contains(&key)
                    && has_entry(index, &reachable, &td.type_name, name, rewrite)
                {
                    reachable.insert(key);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }

    let mut out = Vec::new();
    for (ti, td) in model.type_definitions.iter().enumerate() {
        if !std::ptr::eq(
            index
                .types
                .get(td.type_name.as_str())
                .copied()
                .unwrap_or(td),
            td,
        ) {
            continue;
        }
        for name in td.relations.keys() {
            if reachable.contains(&(td.type_name.as_str(), name.as_str())) {
                continue;
            }
            let why = if on_computed_cycle(td, name) {
                "potential loop"
            } else {
                "no entrypoint"
            };
            out.push(Finding {
                site: Site::Relation(ti, name.clone()),
                message: format!(
                    "`{name}` is an impossible relation for `{}` ({why})",
                    td.type_name
                ),
            });
        }
    }
    out
}

fn has_entry(
    index: &Index<'_>,
    reachable: &HashSet<(&str, &str)>,
    t: &str,
    relation: &str,
    u: &Userset,
) -> bool {
    match u {
        Userset::This(_) => index
            .restrictions(t, relation)
            .iter()
            .any(|r| match &r.relation {
                None => true,
                Some(rel) => reachable.contains(&(r.type_name.as_str(), rel.as_str())),
            }),
        Userset::ComputedUserset(c) => reachable.contains(&(t, c.relation.as_str())),
        Userset::TupleToUserset(ttu) => {
            let computed = ttu.computed_userset.relation.as_str();
            index
                .restrictions(t, &ttu.tupleset.relation)
                .iter()
                .any(|r| reachable.contains(&(r.type_name.as_str(), computed)))
        }
        Userset::Union(s) => s
            .child
            .iter()
            .any(|c| has_entry(index, reachable, t, relation, c)),
        Userset::Intersection(s) => {
            !s.child.is_empty()
                && s.child
                    .iter()
                    .all(|c| has_entry(index, reachable, t, relation, c))
        }
        Userset::Difference(d) => {
            has_entry(index, reachable, t, relation, &d.base)
                && has_entry(index, reachable, t, relation, &d.subtract)
        }
    }
}

/// Whether `relation` reaches itself through computed usersets of its own type.
fn on_computed_cycle(td: &TypeDefinition, relation: &str) -> bool {
    let edges: BTreeMap<&str, Vec<&str>> = td
        .relations
        .iter()
        .map(|(name, rw)| {
            let targets = leaves(rw)
                .into_iter()
                .filter_map(|l| match l {
                    Userset::ComputedUserset(c) => Some(c.relation.as_str()),
                    _ => None,
                })
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    let mut seen = HashSet::new();
    let mut stack: Vec<&str> = edges.get(relation).cloned().unwrap_or_default();
    while let Some(r) = stack.pop() {
        if r == relation {
            return true;
        }
        if seen.insert(r) {
            stack.extend(edges.get(r).into_iter().flatten());
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn model(json: serde_json::Value) -> AuthorizationModel {
        serde_json::from_value(json).unwrap()
    }

    fn messages(m: &AuthorizationModel) -> Vec<String> {
        match validate_model(m) {
            Ok(()) => Vec::new(),
            Err(Error::InvalidModel(issues)) => {
                assert!(issues.iter().all(|i| i.line == 0 && i.column == 0));
                issues.into_iter().map(|i| i.message).collect()
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn direct(types: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "directly_related_user_types": types })
    }

    #[test]
    fn accepts_a_valid_json_model() {
        let m = model(serde_json::json!({
            "schema_version": "1.1",
            "type_definitions": [
                { "type": "user" },
                { "type": "folder",
                  "relations": { "viewer": { "this": {} } },
                  "metadata": { "relations": { "viewer": direct(serde_json::json!([{ "type": "user" }])) } } },
                { "type": "doc",
                  "relations": {
                      "parent": { "this": {} },
                      "viewer": { "union": { "child": [
                          { "this": {} },
                          { "tupleToUserset": { "tupleset": { "relation": "parent" }, "computedUserset": { "relation": "viewer" } } }
                      ] } }
                  },
                  "metadata": { "relations": {
                      "parent": direct(serde_json::json!([{ "type": "folder" }])),
                      "viewer": direct(serde_json::json!([{ "type": "user", "condition": "c" }, { "type": "user", "wildcard": {} }]))
                  } } }
            ],
            "conditions": { "c": { "name": "c", "expression": "x < 3", "parameters": { "x": { "type_name": "TYPE_NAME_INT" } } } }
        }));
        assert_eq!(messages(&m), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem() {
        let m = model(serde_json::json!({
            "schema_version": "1.0",
            "type_definitions": [
                { "type": "user" },
                { "type": "user" },
                { "type": "doc",
                  "relations": {
                      "a": { "computedUserset": { "relation": "a" } },
                      "b": { "computedUserset": { "relation": "missing" } },
                      "c": { "this": {} },
                      "d": { "computedUserset": { "relation": "c" } }
                  },
                  "metadata": { "relations": {
                      "d": direct(serde_json::json!([{ "type": "user" }])),
                      "c": direct(serde_json::json!([{ "type": "nope" }, { "type": "user", "condition": "undefined" }]))
                  } } }
            ],
            "conditions": {
                "unused": { "name": "unused", "expression": "true", "parameters": { "l": { "type_name": "TYPE_NAME_LIST" } } }
            }
        }));
        let got = messages(&m);
        let expected = [
            "unsupported schema version `1.0`: expected `1.1` or `1.2`",
            "the type `user` is defined more than once",
            "relation `a` of type `doc` cannot be rewritten to itself",
            "relation `missing` is not defined on type `doc`",
            "type `nope` is not defined",
            "condition `undefined` is not defined in the model",
            "relation `d` of type `doc` has type restrictions but does not allow direct assignment",
            "parameter `l` of condition `unused` has type `TYPE_NAME_LIST`, which needs exactly one generic type",
            "condition `unused` is defined but not used in the model",
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn rejects_computed_cycles_without_entrypoint_but_allows_them_with_one() {
        let cyclic = model(serde_json::json!({
            "schema_version": "1.1",
            "type_definitions": [{ "type": "doc", "relations": {
                "a": { "computedUserset": { "relation": "b" } },
                "b": { "computedUserset": { "relation": "a" } }
            } }]
        }));
        assert_eq!(
            messages(&cyclic),
            [
                "`a` is an impossible relation for `doc` (potential loop)",
                "`b` is an impossible relation for `doc` (potential loop)"
            ]
        );
        let fine = model(serde_json::json!({
            "schema_version": "1.1",
            "type_definitions": [{ "type": "user" }, { "type": "doc", "relations": {
                "admin": { "this": {} },
                "a": { "union": { "child": [{ "computedUserset": { "relation": "admin" } }, { "computedUserset": { "relation": "b" } }] } },
                "b": { "union": { "child": [{ "computedUserset": { "relation": "admin" } }, { "computedUserset": { "relation": "a" } }] } }
            }, "metadata": { "relations": { "admin": direct(serde_json::json!([{ "type": "user" }])) } } }]
        }));
        assert_eq!(messages(&fine), Vec::<String>::new());
    }

    #[test]
    fn tupleset_must_be_plain_direct() {
        let m = model(serde_json::json!({
            "schema_version": "1.1",
            "type_definitions": [{ "type": "user" }, { "type": "folder", "relations": {
                "parent": { "this": {} },
                "viewer": { "union": { "child": [
                    { "this": {} },
                    { "tupleToUserset": { "tupleset": { "relation": "parent" }, "computedUserset": { "relation": "viewer" } } }
                ] } }
            }, "metadata": { "relations": {
                "parent": direct(serde_json::json!([{ "type": "folder" }, { "type": "folder", "relation": "parent" }])),
                "viewer": direct(serde_json::json!([{ "type": "user" }]))
            } } }]
        }));
        assert_eq!(
            messages(&m),
            [
                "relation `parent` is used after `from`, so it can only relate plain types, not `folder#parent`"
            ]
        );
    }

    #[test]
    fn wildcard_with_relation_is_rejected() {
        let m = model(serde_json::json!({
            "schema_version": "1.1",
            "type_definitions": [{ "type": "user", "relations": { "r": { "this": {} } },
                "metadata": { "relations": { "r": direct(serde_json::json!([{ "type": "user", "relation": "r", "wildcard": {} }])) } } }]
        }));
        assert_eq!(
            messages(&m),
            ["type restriction `user:*#r` cannot be both a wildcard and a userset"]
        );
    }
}
