//! Why a check is true: one chain of tuples through the model's rewrites that grants it, for
//! `explain`. Branches are chosen with [`check`], so the path agrees with the answer.

use std::future::Future;
use std::pin::Pin;

use super::{Query, check};
use crate::error::{Error, Result};
use crate::model::Userset;
use crate::store::TupleFilter;
use crate::tuple::{ObjectRef, TupleKey, UserRef};

type PathFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<TupleKey>>>> + Send + 'a>>;

/// The tuples of one path that grants `user` `relation` on `object`, or `None` when the check
/// is false.
pub async fn path(
    q: &Query<'_>,
    object: &str,
    relation: &str,
    user: &str,
) -> Result<Option<Vec<TupleKey>>> {
    if !check(q, object, relation, user).await? {
        return Ok(None);
    }
    relation_path(
        q,
        object.to_string(),
        relation.to_string(),
        user.to_string(),
        0,
    )
    .await
}

fn relation_path<'a>(
    q: &'a Query<'a>,
    object: String,
    relation: String,
    user: String,
    depth: u32,
) -> PathFuture<'a> {
    Box::pin(async move {
        if depth > q.max_depth {
            return Err(Error::DepthExceeded(q.max_depth));
        }
        let Some(o) = ObjectRef::parse(&object) else {
            return Ok(None);
        };
        let Some(rewrite) = q.model.model.relation(o.object_type, &relation) else {
            return Ok(None);
        };
        rewrite_path(q, rewrite.clone(), object.clone(), relation, user, depth).await
    })
}

fn rewrite_path<'a>(
    q: &'a Query<'a>,
    rewrite: Userset,
    object: String,
    relation: String,
    user: String,
    depth: u32,
) -> PathFuture<'a> {
    Box::pin(async move {
        let Some(o) = ObjectRef::parse(&object) else {
            return Ok(None);
        };
        match rewrite {
            Userset::This(_) => {
                let tuples = q
                    .read(TupleFilter {
                        object_type: Some(o.object_type.to_string()),
                        object_id: Some(o.object_id.to_string()),
                        relation: Some(relation.clone()),
                        users: vec![],
                    })
                    .await?;
                let user_type = UserRef::parse(&user).map(|u| u.user_type().to_string());
                for t in tuples.iter() {
                    match UserRef::parse(&t.user) {
                        Some(UserRef::Object(_)) if t.user == user => {
                            return Ok(Some(vec![t.clone()]));
                        }
                        Some(UserRef::Wildcard(wt)) if user_type.as_deref() == Some(wt) => {
                            return Ok(Some(vec![t.clone()]));
                        }
                        Some(UserRef::Userset(u, r)) => {
                            if t.user == user {
                                return Ok(Some(vec![t.clone()]));
                            }
                            let via = format!("{}:{}", u.object_type, u.object_id);
                            if check(q, &via, r, &user).await? {
                                let rest =
                                    relation_path(q, via, r.to_string(), user.clone(), depth + 1)
                                        .await?;
                                if let Some(mut rest) = rest {
                                    rest.insert(0, t.clone());
                                    return Ok(Some(rest));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Ok(None)
            }
            Userset::ComputedUserset(c) => {
                if check(q, &object, &c.relation, &user).await? {
                    relation_path(q, object, c.relation, user, depth + 1).await
                } else {
                    Ok(None)
                }
            }
            Userset::TupleToUserset(t) => {
                let parents = q
                    .read(TupleFilter {
                        object_type: Some(o.object_type.to_string()),
                        object_id: Some(o.object_id.to_string()),
                        relation: Some(t.tupleset.relation.clone()),
                        users: vec![],
                    })
                    .await?;
                for p in parents.iter() {
                    if ObjectRef::parse(&p.user).is_none() {
                        continue;
                    }
                    let cu = t.computed_userset.relation.clone();
                    if check(q, &p.user, &cu, &user).await? {
                        let rest =
                            relation_path(q, p.user.clone(), cu, user.clone(), depth + 1).await?;
                        if let Some(mut rest) = rest {
                            rest.insert(0, p.clone());
                            return Ok(Some(rest));
                        }
                    }
                }
                Ok(None)
            }
            Userset::Union(u) => {
                for child in u.child {
                    let p = rewrite_path(
                        q,
                        child,
                        object.clone(),
                        relation.clone(),
                        user.clone(),
                        depth + 1,
                    )
                    .await?;
                    if p.is_some() {
                        return Ok(p);
                    }
                }
                Ok(None)
            }
            Userset::Intersection(u) => {
                let mut all = Vec::new();
                for child in u.child {
                    match rewrite_path(
                        q,
                        child,
                        object.clone(),
                        relation.clone(),
                        user.clone(),
                        depth + 1,
                    )
                    .await?
                    {
                        Some(p) => all.extend(p),
                        None => return Ok(None),
                    }
                }
                Ok(Some(all))
            }
            // The subtracted side is false when the whole is true: the base explains it.
            Userset::Difference(d) => {
                rewrite_path(q, *d.base, object, relation, user, depth + 1).await
            }
        }
    })
}
