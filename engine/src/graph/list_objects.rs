//! List objects: walk the graph backwards from the user to every object that may hold the
//! relation, then confirm candidates with check where intersection or exclusion is involved.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{Query, parse_user};
use crate::error::Result;
use crate::store::TupleFilter;
use crate::tuple::{ObjectRef, TupleKey, UserRef};

/// Every object of `object_type` on which `user` holds `relation`, sorted and complete.
pub async fn list_objects(
    q: &Query<'_>,
    object_type: &str,
    relation: &str,
    user: &str,
) -> Result<Vec<String>> {
    q.model.require_relation(object_type, relation)?;
    let u = parse_user(user)?;
    match u {
        UserRef::Object(o) => q.model.require_type(o.object_type)?,
        UserRef::Wildcard(t) => q.model.require_type(t)?,
        UserRef::Userset(o, r) => q.model.require_relation(o.object_type, r)?,
    }

    // Nodes are `(object, relation)` usersets known (or, under intersection/exclusion, suspected)
    // to contain the user.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut frontier: Vec<(String, String)> = Vec::new();
    let mut subjects = vec![user.to_string()];
    if let UserRef::Object(o) = u {
        subjects.push(format!("{}:*", o.object_type));
    }
    if let UserRef::Userset(o, r) = u {
        frontier.push((format!("{}:{}", o.object_type, o.object_id), r.to_string()));
    }
    let direct = q
        .read(TupleFilter {
            users: subjects,
            ..Default::default()
        })
        .await?;
    push_tuples(q, &direct, &mut frontier)?;

    let mut candidates = BTreeSet::new();
    let mut level = 0u32;
    loop {
        frontier.retain(|n| !seen.contains(n));
        if frontier.is_empty() {
            break;
        }
        // Level n holds what check would reach at depth n - 1: past the bound is an error there too.
        level += 1;
        if level > q.max_depth + 1 {
            return Err(crate::error::Error::DepthExceeded(q.max_depth));
        }
        let mut next = Vec::new();
        let mut userset_subjects = Vec::new();
        // (type, tupleset) -> parent object -> relations reached through `from`.
        let mut ttu: BTreeMap<(String, String), BTreeMap<String, BTreeSet<String>>> =
            BTreeMap::new();
        for (object, rel) in frontier.drain(..) {
            if !seen.insert((object.clone(), rel.clone())) {
                continue;
            }
            let Some(o) = ObjectRef::parse(&object) else {
                continue;
            };
            if o.object_type == object_type && rel == relation {
                candidates.insert(object.clone());
            }
            let key = (o.object_type.to_string(), rel.clone());
            if let Some(edges) = q.model.computed_edges.get(&key) {
                for (_, r2) in edges {
                    next.push((object.clone(), r2.clone()));
                }
            }
            if let Some(edges) = q.model.ttu_edges.get(&key) {
                for (t, r, ts) in edges {
                    ttu.entry((t.clone(), ts.clone()))
                        .or_default()
                        .entry(object.clone())
                        .or_default()
                        .insert(r.clone());
                }
            }
            userset_subjects.push(format!("{object}#{rel}"));
        }
        if !userset_subjects.is_empty() {
            let ts = q
                .read(TupleFilter {
                    users: userset_subjects,
                    ..Default::default()
                })
                .await?;
            push_tuples(q, &ts, &mut next)?;
        }
        // One read per (type, tupleset) and level, for all parents at once.
        for ((t, ts), parents) in ttu {
            let users = parents.keys().cloned().collect();
            let tuples = q
                .read(TupleFilter {
                    object_type: Some(t.clone()),
                    relation: Some(ts.clone()),
                    users,
                    ..Default::default()
                })
                .await?;
            for tk in tuples.iter() {
                let Some(tu) = UserRef::parse(&tk.user) else {
                    continue;
                };
                if !q.model.allows_tuple(&t, &ts, &tu, tk) || !q.condition_may_hold(tk)? {
                    continue;
                }
                for r in parents.get(&tk.user).into_iter().flatten() {
                    next.push((tk.object.clone(), r.clone()));
                }
            }
        }
        frontier = next;
    }

    if !q.lacked()
        && !q
            .model
            .needs_verify
            .contains(&(object_type.to_string(), relation.to_string()))
    {
        return Ok(candidates.into_iter().collect());
    }
    let mut out = Vec::new();
    for c in candidates {
        let r = q.check(&c, relation, user, 0, &mut Vec::new()).await?;
        if r.allowed {
            out.push(c);
        } else if r.missing {
            return Err(q.lacking_error());
        }
    }
    Ok(out)
}

/// Turns tuples that name the user (or a userset holding it) into graph nodes, keeping only
/// tuples the model allows and whose condition holds.
fn push_tuples(q: &Query<'_>, tuples: &[TupleKey], out: &mut Vec<(String, String)>) -> Result<()> {
    for t in tuples {
        let Some(o) = ObjectRef::parse(&t.object) else {
            continue;
        };
        let Some(tu) = UserRef::parse(&t.user) else {
            continue;
        };
        if !q.model.allows_tuple(o.object_type, &t.relation, &tu, t) || !q.condition_may_hold(t)? {
            continue;
        }
        out.push((t.object.clone(), t.relation.clone()));
    }
    Ok(())
}
