//! List users: walk the graph forwards from `object#relation` collecting the users of the
//! requested types, then confirm candidates with check where intersection or exclusion is involved.

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Query, parse_user};
use crate::error::{Error, Result};
use crate::model::Userset;
use crate::store::TupleFilter;
use crate::tuple::{ObjectRef, UserRef};

/// Which users to return: objects of a type, or usersets `type#relation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListUsersFilter {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
}

/// One user in a list-users answer, as a string: `user:anne`, `user:*` or `group:eng#member`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserResult(pub String);

/// Every user matching one of `filters` that holds `relation` on `object`, sorted and complete.
pub async fn list_users(
    q: &Query<'_>,
    object: &str,
    relation: &str,
    filters: &[ListUsersFilter],
) -> Result<Vec<UserResult>> {
    let o = super::model::query_object(object)?;
    q.model.require_relation(o.object_type, relation)?;
    if filters.is_empty() {
        return Err(Error::Validation(
            "at least one user filter is required".into(),
        ));
    }
    for f in filters {
        match &f.relation {
            Some(r) if !r.is_empty() => q.model.require_relation(&f.type_name, r)?,
            _ => q.model.require_type(&f.type_name)?,
        }
    }
    let wants = |t: &str, r: Option<&str>| {
        filters
            .iter()
            .any(|f| f.type_name == t && f.relation.as_deref().filter(|s| !s.is_empty()) == r)
    };

    let mut seen: HashSet<(String, String)> = HashSet::new();
    // Breadth first, so every node is reached at its smallest depth.
    let mut frontier = VecDeque::from([(object.to_string(), relation.to_string(), 0u32)]);
    let mut candidates = BTreeSet::new();
    while let Some((obj, rel, depth)) = frontier.pop_front() {
        if depth > q.max_depth {
            return Err(Error::DepthExceeded(q.max_depth));
        }
        if !seen.insert((obj.clone(), rel.clone())) {
            continue;
        }
        let Some(no) = ObjectRef::parse(&obj) else {
            continue;
        };
        if wants(no.object_type, Some(&rel)) {
            candidates.insert(format!("{obj}#{rel}"));
        }
        let Some(rw) = q.model.model.relation(no.object_type, &rel) else {
            continue;
        };
        let mut parts = Vec::new();
        flatten(rw, &mut parts);
        for part in parts {
            match part {
                Userset::This(_) => {
                    let tuples = q
                        .read(TupleFilter {
                            object_type: Some(no.object_type.into()),
                            object_id: Some(no.object_id.into()),
                            relation: Some(rel.clone()),
                            users: vec![],
                        })
                        .await?;
                    for t in tuples.iter() {
                        let Some(tu) = UserRef::parse(&t.user) else {
                            continue;
                        };
                        if !q.model.allows_tuple(no.object_type, &rel, &tu, t)
                            || !q.condition_may_hold(t)?
                        {
                            continue;
                        }
                        match tu {
                            UserRef::Object(uo) if wants(uo.object_type, None) => {
                                candidates.insert(t.user.clone());
                            }
                            UserRef::Wildcard(wt) if wants(wt, None) => {
                                candidates.insert(t.user.clone());
                            }
                            UserRef::Userset(so, sr) => {
                                frontier.push_back((
                                    format!("{}:{}", so.object_type, so.object_id),
                                    sr.to_string(),
                                    depth + 1,
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                Userset::ComputedUserset(c) => {
                    frontier.push_back((obj.clone(), c.relation.clone(), depth + 1))
                }
                Userset::TupleToUserset(ttu) => {
                    let tuples = q
                        .read(TupleFilter {
                            object_type: Some(no.object_type.into()),
                            object_id: Some(no.object_id.into()),
                            relation: Some(ttu.tupleset.relation.clone()),
                            users: vec![],
                        })
                        .await?;
                    for t in tuples.iter() {
                        let Some(tu @ UserRef::Object(_)) = UserRef::parse(&t.user) else {
                            continue;
                        };
                        if !q
                            .model
                            .allows_tuple(no.object_type, &ttu.tupleset.relation, &tu, t)
                            || !q.condition_may_hold(t)?
                        {
                            continue;
                        }
                        frontier.push_back((
                            t.user.clone(),
                            ttu.computed_userset.relation.clone(),
                            depth + 1,
                        ));
                    }
                }
                Userset::Union(_) | Userset::Intersection(_) | Userset::Difference(_) => {}
            }
        }
    }

    let verify = q.lacked()
        || q.model
            .needs_verify
            .contains(&(o.object_type.to_string(), relation.to_string()));
    let mut out = Vec::new();
    for c in candidates {
        if verify {
            let r = q.check(object, relation, &c, 0, &mut Vec::new()).await?;
            if !r.allowed {
                if r.missing {
                    return Err(q.lacking_error());
                }
                continue;
            }
        }
        parse_user(&c)?;
        out.push(UserResult(c));
    }
    Ok(out)
}

/// The leaves a rewrite may grant through: every branch of unions and intersections and the
/// base of an exclusion (never the subtracted part).
fn flatten<'m>(u: &'m Userset, out: &mut Vec<&'m Userset>) {
    match u {
        Userset::Union(c) | Userset::Intersection(c) => {
            c.child.iter().for_each(|c| flatten(c, out))
        }
        Userset::Difference(d) => flatten(&d.base, out),
        leaf => out.push(leaf),
    }
}
