//! A model prepared for evaluation: compiled conditions and the reverse edges list objects walks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::condition::{self, CompiledCondition};
use crate::error::{Error, Result};
use crate::model::{AuthorizationModel, RelationReference, Userset};
use crate::tuple::{ObjectRef, UserRef};

/// `(target type, computed relation)` -> `(type, relation, tupleset)` reaching it through `from`.
type TtuEdges = HashMap<(String, String), Vec<(String, String, String)>>;

/// An authorization model ready for evaluation. Build once per model version and share.
#[derive(Debug)]
pub struct CompiledModel {
    pub model: AuthorizationModel,
    pub(crate) conditions: HashMap<String, Arc<CompiledCondition>>,
    /// `(type, relation)` -> relations `(type, r2)` whose rewrite uses `relation` positively.
    pub(crate) computed_edges: HashMap<(String, String), Vec<(String, String)>>,
    /// `(target type, computed relation)` -> `(type, relation, tupleset)` that reach it through `from`.
    pub(crate) ttu_edges: TtuEdges,
    /// `(type, relation)` whose answer depends on an intersection or exclusion somewhere below.
    pub(crate) needs_verify: HashSet<(String, String)>,
}

impl CompiledModel {
    /// Compiles the conditions and indexes the model's edges.
    pub fn new(model: AuthorizationModel) -> Result<Self> {
        let conditions = condition::compile_all(&model)?;
        let mut computed_edges: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
        let mut ttu_edges: TtuEdges = HashMap::new();
        let mut direct_deps: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
        let mut local_verify = HashSet::new();
        for td in &model.type_definitions {
            for (rel, rewrite) in &td.relations {
                let me = (td.type_name.clone(), rel.clone());
                let mut refs = Vec::new();
                let mut complex = false;
                collect_refs(rewrite, true, &mut refs, &mut complex);
                if complex {
                    local_verify.insert(me.clone());
                }
                let deps = direct_deps.entry(me.clone()).or_default();
                for r in refs {
                    match r {
                        Ref::Computed(r2, positive) => {
                            deps.push((td.type_name.clone(), r2.clone()));
                            if positive {
                                computed_edges
                                    .entry((td.type_name.clone(), r2))
                                    .or_default()
                                    .push(me.clone());
                            }
                        }
                        Ref::Ttu(ts, computed, positive) => {
                            for target in model.directly_related(&td.type_name, &ts) {
                                if target.relation.is_some() || target.wildcard.is_some() {
                                    continue;
                                }
                                if model.relation(&target.type_name, &computed).is_none() {
                                    continue;
                                }
                                deps.push((target.type_name.clone(), computed.clone()));
                                if positive {
                                    ttu_edges
                                        .entry((target.type_name.clone(), computed.clone()))
                                        .or_default()
                                        .push((td.type_name.clone(), rel.clone(), ts.clone()));
                                }
                            }
                        }
                        Ref::This => {
                            for d in model.directly_related(&td.type_name, rel) {
                                if let Some(r) = &d.relation {
                                    deps.push((d.type_name.clone(), r.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        // A relation needs verification if anything it depends on (transitively) is complex.
        let mut needs_verify = HashSet::new();
        for start in direct_deps.keys() {
            let mut seen = HashSet::new();
            let mut stack = vec![start.clone()];
            while let Some(n) = stack.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                if local_verify.contains(&n) {
                    needs_verify.insert(start.clone());
                    break;
                }
                if let Some(ds) = direct_deps.get(&n) {
                    stack.extend(ds.iter().cloned());
                }
            }
        }
        Ok(Self {
            model,
            conditions,
            computed_edges,
            ttu_edges,
            needs_verify,
        })
    }

    /// The model's id.
    pub fn id(&self) -> &str {
        &self.model.id
    }

    /// Checks that `type` exists.
    pub fn require_type(&self, type_name: &str) -> Result<()> {
        self.model
            .type_def(type_name)
            .map(|_| ())
            .ok_or_else(|| Error::TypeNotFound(type_name.into()))
    }

    /// Checks that `type#relation` exists.
    pub fn require_relation(&self, type_name: &str, relation: &str) -> Result<()> {
        let td = self
            .model
            .type_def(type_name)
            .ok_or_else(|| Error::TypeNotFound(type_name.into()))?;
        if td.relations.contains_key(relation) {
            Ok(())
        } else {
            Err(Error::RelationNotFound {
                type_name: type_name.into(),
                relation: relation.into(),
            })
        }
    }

    /// Validates the parts of a check request against the model.
    pub fn validate_check(&self, object: &str, relation: &str, user: &str) -> Result<()> {
        let o = query_object(object)?;
        self.require_relation(o.object_type, relation)?;
        match super::parse_user(user)? {
            UserRef::Object(u) => self.require_type(u.object_type),
            UserRef::Wildcard(t) => self.require_type(t),
            UserRef::Userset(u, r) => self.require_relation(u.object_type, r),
        }
    }

    /// Validates a tuple to be written: types, relation, direct restriction and condition.
    pub fn validate_tuple(&self, t: &crate::tuple::TupleKey) -> Result<()> {
        let invalid = |reason: String| Error::InvalidTuple {
            tuple: t.to_string(),
            reason,
        };
        let o = ObjectRef::parse(&t.object)
            .ok_or_else(|| invalid(format!("invalid object `{}`: expected `type:id`", t.object)))?;
        if o.object_id == "*" {
            return Err(invalid("the object cannot be a wildcard".into()));
        }
        self.require_relation(o.object_type, &t.relation)?;
        let user = UserRef::parse(&t.user).ok_or_else(|| {
            invalid(format!(
                "invalid user `{}`: expected `type:id`, `type:*` or `type:id#relation`",
                t.user
            ))
        })?;
        if let UserRef::Userset(u, r) = user {
            self.require_relation(u.object_type, r)?;
        } else {
            self.require_type(user.user_type())?;
        }
        let cond = t.condition.as_ref().map(|c| c.name.as_str()).unwrap_or("");
        let allowed = self.model.directly_related(o.object_type, &t.relation);
        let shape_ok = |d: &RelationReference| restriction_matches(d, &user);
        if !allowed.iter().any(shape_ok) {
            return Err(invalid(format!(
                "type `{}` is not allowed as a user of `{}#{}`",
                shape(&user),
                o.object_type,
                t.relation
            )));
        }
        if !allowed.iter().any(|d| shape_ok(d) && d.condition == cond) {
            return Err(invalid(if cond.is_empty() {
                format!(
                    "`{}#{}` requires a condition for `{}`",
                    o.object_type,
                    t.relation,
                    shape(&user)
                )
            } else {
                format!(
                    "condition `{cond}` is not allowed for `{}` on `{}#{}`",
                    shape(&user),
                    o.object_type,
                    t.relation
                )
            }));
        }
        if let Some(c) = &t.condition {
            let def = self
                .model
                .conditions
                .get(&c.name)
                .ok_or_else(|| invalid(format!("condition `{}` is not defined", c.name)))?;
            if let Some(ctx) = &c.context {
                condition::validate_context(def, ctx).map_err(|e| invalid(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Whether a stored tuple `t` (of `object_type`, `relation`, with user `user`) fits the
    /// relation's current restrictions, its condition included: OpenFGA ignores tuples a newer
    /// model no longer allows, such as those whose condition it dropped.
    pub(crate) fn allows_tuple(
        &self,
        object_type: &str,
        relation: &str,
        user: &UserRef<'_>,
        t: &crate::tuple::TupleKey,
    ) -> bool {
        let cond = t.condition.as_ref().map_or("", |c| c.name.as_str());
        self.model
            .directly_related(object_type, relation)
            .iter()
            .any(|d| restriction_matches(d, user) && d.condition == cond)
            && (cond.is_empty() || self.conditions.contains_key(cond))
    }
}

/// Parses the object of a query: `type:id`, never a wildcard.
pub(crate) fn query_object(object: &str) -> Result<ObjectRef<'_>> {
    let o = ObjectRef::parse(object).ok_or_else(|| {
        Error::Validation(format!("invalid object `{object}`: expected `type:id`"))
    })?;
    if o.object_id == "*" {
        return Err(Error::Validation(format!(
            "invalid object `{object}`: the object cannot be a wildcard"
        )));
    }
    Ok(o)
}

fn shape(u: &UserRef<'_>) -> String {
    match u {
        UserRef::Object(o) => o.object_type.to_string(),
        UserRef::Wildcard(t) => format!("{t}:*"),
        UserRef::Userset(o, r) => format!("{}#{r}", o.object_type),
    }
}

fn restriction_matches(d: &RelationReference, u: &UserRef<'_>) -> bool {
    match u {
        UserRef::Object(o) => {
            d.type_name == o.object_type && d.relation.is_none() && d.wildcard.is_none()
        }
        UserRef::Wildcard(t) => d.type_name == *t && d.wildcard.is_some(),
        UserRef::Userset(o, r) => d.type_name == o.object_type && d.relation.as_deref() == Some(*r),
    }
}

enum Ref {
    This,
    Computed(String, bool),
    Ttu(String, String, bool),
}

/// Collects what a rewrite refers to; `positive` is false under a `but not` subtract.
fn collect_refs(u: &Userset, positive: bool, out: &mut Vec<Ref>, complex: &mut bool) {
    match u {
        Userset::This(_) => out.push(Ref::This),
        Userset::ComputedUserset(c) => out.push(Ref::Computed(c.relation.clone(), positive)),
        Userset::TupleToUserset(t) => out.push(Ref::Ttu(
            t.tupleset.relation.clone(),
            t.computed_userset.relation.clone(),
            positive,
        )),
        Userset::Union(c) => c
            .child
            .iter()
            .for_each(|c| collect_refs(c, positive, out, complex)),
        Userset::Intersection(c) => {
            *complex = true;
            c.child
                .iter()
                .for_each(|c| collect_refs(c, positive, out, complex));
        }
        Userset::Difference(d) => {
            *complex = true;
            collect_refs(&d.base, positive, out, complex);
            collect_refs(&d.subtract, false, out, complex);
        }
    }
}
