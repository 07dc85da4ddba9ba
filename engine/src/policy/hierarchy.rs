//! Which direct tuples make Cedar entity parents, so that `in` follows the relationship graph.
//!
//! Two readings of a tuple `object#relation@user` where the user is a plain object:
//! * a relation used as a tupleset (`viewer from parent`) links the object to its parent, the
//!   user: `doc::"1" in folder::"a"` for `doc:1#parent@folder:a`;
//! * any other relation makes the user a member of the object: `user::"anne" in group::"eng"`
//!   for `group:eng#member@user:anne`.
//!
//! Wildcards and usersets make no parents.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;

use cedar_policy::EntityTypeName;

use crate::model::{AuthorizationModel, Userset};
use crate::tuple::{ObjectRef, UserRef};

/// The parent links an authorization model defines.
#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    /// The model these links come from.
    pub model_id: String,
    /// `(type, relation)` used as a tupleset somewhere on `type`.
    tuplesets: HashSet<(String, String)>,
    /// Entity type -> the types its entities may be children of.
    pub member_of: BTreeMap<String, BTreeSet<String>>,
}

/// Whether a model type can be a Cedar entity type: an identifier, and not `Action`.
pub fn cedar_type(name: &str) -> bool {
    name != "Action" && !name.contains("::") && EntityTypeName::from_str(name).is_ok()
}

fn tuplesets_of(u: &Userset, out: &mut HashSet<String>) {
    match u {
        Userset::This(_) | Userset::ComputedUserset(_) => {}
        Userset::TupleToUserset(t) => {
            out.insert(t.tupleset.relation.clone());
        }
        Userset::Union(c) | Userset::Intersection(c) => {
            c.child.iter().for_each(|c| tuplesets_of(c, out));
        }
        Userset::Difference(d) => {
            tuplesets_of(&d.base, out);
            tuplesets_of(&d.subtract, out);
        }
    }
}

impl Hierarchy {
    pub fn new(model: &AuthorizationModel) -> Self {
        let mut tuplesets = HashSet::new();
        let mut member_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for td in &model.type_definitions {
            let mut ts = HashSet::new();
            td.relations.values().for_each(|u| tuplesets_of(u, &mut ts));
            for rel in td.relations.keys() {
                let is_tupleset = ts.contains(rel);
                if is_tupleset {
                    tuplesets.insert((td.type_name.clone(), rel.clone()));
                }
                for d in model.directly_related(&td.type_name, rel) {
                    if d.wildcard.is_some() || d.relation.is_some() {
                        continue;
                    }
                    let (child, parent) = if is_tupleset {
                        (&td.type_name, &d.type_name)
                    } else {
                        (&d.type_name, &td.type_name)
                    };
                    if cedar_type(child) && cedar_type(parent) {
                        member_of
                            .entry(child.clone())
                            .or_default()
                            .insert(parent.clone());
                    }
                }
            }
        }
        Self {
            model_id: model.id.clone(),
            tuplesets,
            member_of,
        }
    }

    /// The `(child, parent)` link a tuple makes, as `type:id` strings, if any.
    pub fn edge(&self, object: &str, relation: &str, user: &str) -> Option<(String, String)> {
        let o = ObjectRef::parse(object)?;
        let UserRef::Object(u) = UserRef::parse(user)? else {
            return None;
        };
        let (child, parent) = if self
            .tuplesets
            .contains(&(o.object_type.to_string(), relation.to_string()))
        {
            (o, u)
        } else {
            (u, o)
        };
        let allowed = self
            .member_of
            .get(child.object_type)
            .is_some_and(|p| p.contains(parent.object_type));
        let name = |o: ObjectRef<'_>| format!("{}:{}", o.object_type, o.object_id);
        allowed.then(|| (name(child), name(parent)))
    }

    /// Whether tuples of `type#relation` link the object to a parent (a tupleset relation).
    pub fn is_tupleset(&self, type_name: &str, relation: &str) -> bool {
        self.tuplesets
            .contains(&(type_name.to_string(), relation.to_string()))
    }
}
