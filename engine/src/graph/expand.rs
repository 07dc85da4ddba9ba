//! Expand: one level of the userset tree of `object#relation`, in OpenFGA's response shape.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::Query;
use crate::error::{Error, Result};
use crate::model::Userset;
use crate::store::TupleFilter;
use crate::tuple::{ObjectRef, UserRef};

/// The userset tree of `object#relation`: `{"root": node}` as OpenFGA's `Expand` returns it.
pub async fn expand(q: &Query<'_>, object: &str, relation: &str) -> Result<Value> {
    let o = super::model::query_object(object)?;
    q.model.require_relation(o.object_type, relation)?;
    let Some(rw) = q.model.model.relation(o.object_type, relation) else {
        return Err(Error::RelationNotFound {
            type_name: o.object_type.into(),
            relation: relation.into(),
        });
    };
    let root = node(q, o, relation, rw).await?;
    Ok(json!({ "root": root }))
}

fn node<'s>(
    q: &'s Query<'_>,
    o: ObjectRef<'s>,
    relation: &'s str,
    rw: &'s Userset,
) -> BoxFuture<'s, Result<Value>> {
    Box::pin(async move {
        let name = format!("{}:{}#{relation}", o.object_type, o.object_id);
        let object = format!("{}:{}", o.object_type, o.object_id);
        Ok(match rw {
            Userset::This(_) => {
                let tuples = q
                    .read(TupleFilter {
                        object_type: Some(o.object_type.into()),
                        object_id: Some(o.object_id.into()),
                        relation: Some(relation.into()),
                        users: vec![],
                    })
                    .await?;
                let users: Vec<&str> = tuples
                    .iter()
                    .filter(|t| {
                        UserRef::parse(&t.user)
                            .is_some_and(|u| q.model.allows_tuple(o.object_type, relation, &u, t))
                    })
                    .map(|t| t.user.as_str())
                    .collect();
                json!({ "name": name, "leaf": { "users": { "users": users } } })
            }
            Userset::ComputedUserset(c) => {
                json!({ "name": name, "leaf": { "computed": { "userset": format!("{object}#{}", c.relation) } } })
            }
            Userset::TupleToUserset(t) => {
                let tuples = q
                    .read(TupleFilter {
                        object_type: Some(o.object_type.into()),
                        object_id: Some(o.object_id.into()),
                        relation: Some(t.tupleset.relation.clone()),
                        users: vec![],
                    })
                    .await?;
                let computed: Vec<Value> = tuples
                    .iter()
                    .filter(|tk| matches!(UserRef::parse(&tk.user), Some(UserRef::Object(_))))
                    .map(|tk| json!({ "userset": format!("{}#{}", tk.user, t.computed_userset.relation) }))
                    .collect();
                json!({ "name": name, "leaf": { "tupleToUserset": {
                    "tupleset": format!("{object}#{}", t.tupleset.relation),
                    "computed": computed,
                } } })
            }
            Userset::Union(c) | Userset::Intersection(c) => {
                let mut nodes = Vec::with_capacity(c.child.len());
                for child in &c.child {
                    nodes.push(node(q, o, relation, child).await?);
                }
                let kind = if matches!(rw, Userset::Union(_)) {
                    "union"
                } else {
                    "intersection"
                };
                json!({ "name": name, kind: { "nodes": nodes } })
            }
            Userset::Difference(d) => {
                let base = node(q, o, relation, &d.base).await?;
                let subtract = node(q, o, relation, &d.subtract).await?;
                json!({ "name": name, "difference": { "base": base, "subtract": subtract } })
            }
        })
    })
}
