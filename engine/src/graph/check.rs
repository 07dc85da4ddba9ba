//! The check dispatcher: memo -> cross-request cache -> resolve, with cycle cutting and a depth bound.

use futures::future::BoxFuture;

use super::{Outcome, Query, lock_err, parse_user};
use crate::condition::ConditionOutcome;
use crate::error::{Error, Result};
use crate::model::Userset;
use crate::store::TupleFilter;
use crate::tuple::{ObjectRef, TupleKey, UserRef};

impl Query<'_> {
    /// Does `user` hold `relation` on `object`? `path` holds the sub-problems being resolved
    /// above this one, so that a cycle is recognised and cut instead of followed.
    pub(crate) fn check<'s>(
        &'s self,
        object: &'s str,
        relation: &'s str,
        user: &'s str,
        depth: u32,
        path: &'s mut Vec<String>,
    ) -> BoxFuture<'s, Result<Outcome>> {
        Box::pin(async move {
            if depth > self.max_depth {
                return Err(Error::DepthExceeded(self.max_depth));
            }
            let key = format!("{object}#{relation}@{user}");
            if path.contains(&key) {
                return Ok(Outcome {
                    cycle: true,
                    ..Outcome::DENY
                });
            }
            if let Some(hit) = self.memo.lock().map_err(|_| lock_err())?.get(&key) {
                return Ok(*hit);
            }
            let cache_key = self.cache.map(|_| self.cache_key(object, relation, user));
            if let (Some(cache), Some(ck)) = (self.cache, &cache_key)
                && let Some((allowed, until)) = cache.get(ck, self.now_micros())
            {
                self.bound(until);
                return Ok(Outcome {
                    allowed,
                    ..Outcome::DENY
                });
            }
            path.push(key.clone());
            let result = self.resolve(object, relation, user, depth, path).await;
            path.pop();
            let out = result?;
            if !out.cycle {
                self.memo.lock().map_err(|_| lock_err())?.insert(key, out);
                if let (Some(cache), Some(ck)) = (self.cache, cache_key)
                    && !out.missing
                {
                    // Bounded by every expiry the query has met so far, this sub-problem's
                    // among them: conservative, never too long.
                    cache.insert(ck, out.allowed, self.valid_until());
                }
            }
            Ok(out)
        })
    }

    async fn resolve(
        &self,
        object: &str,
        relation: &str,
        user: &str,
        depth: u32,
        path: &mut Vec<String>,
    ) -> Result<Outcome> {
        let o = ObjectRef::parse(object)
            .ok_or_else(|| Error::Validation(format!("invalid object `{object}`")))?;
        let u = parse_user(user)?;
        // A userset always contains itself: `group:x#member` is a member of `group:x#member`.
        if let UserRef::Userset(uo, ur) = u
            && uo.object_type == o.object_type
            && uo.object_id == o.object_id
            && ur == relation
        {
            return Ok(Outcome::ALLOW);
        }
        let Some(rewrite) = self.model.model.relation(o.object_type, relation) else {
            // Reached through a `from` or userset whose target lacks the relation: no access.
            return Ok(Outcome::DENY);
        };
        self.rewrite(rewrite, o, relation, user, u, depth, path)
            .await
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the recursion carries the whole sub-problem"
    )]
    fn rewrite<'s>(
        &'s self,
        rw: &'s Userset,
        o: ObjectRef<'s>,
        relation: &'s str,
        user: &'s str,
        u: UserRef<'s>,
        depth: u32,
        path: &'s mut Vec<String>,
    ) -> BoxFuture<'s, Result<Outcome>> {
        Box::pin(async move {
            match rw {
                Userset::This(_) => self.direct(o, relation, user, u, depth, path).await,
                Userset::ComputedUserset(c) => {
                    let object = format!("{}:{}", o.object_type, o.object_id);
                    self.check(&object, &c.relation, user, depth + 1, path)
                        .await
                }
                Userset::TupleToUserset(t) => {
                    self.tuple_to_userset(
                        o,
                        &t.tupleset.relation,
                        &t.computed_userset.relation,
                        user,
                        depth,
                        path,
                    )
                    .await
                }
                Userset::Union(c) => {
                    let mut acc = Outcome::DENY;
                    for child in &c.child {
                        let r = self
                            .rewrite(child, o, relation, user, u, depth, path)
                            .await?;
                        if r.allowed {
                            return Ok(Outcome::ALLOW);
                        }
                        acc.missing |= r.missing;
                        acc.cycle |= r.cycle;
                    }
                    Ok(acc)
                }
                Userset::Intersection(c) => {
                    let mut acc = Outcome::ALLOW;
                    for child in &c.child {
                        let r = self
                            .rewrite(child, o, relation, user, u, depth, path)
                            .await?;
                        acc.cycle |= r.cycle;
                        acc.missing |= r.missing;
                        if !r.allowed {
                            acc.allowed = false;
                            if !r.missing {
                                // A definite no: nothing else can change the answer.
                                return Ok(Outcome {
                                    missing: false,
                                    ..acc
                                });
                            }
                        }
                    }
                    if !acc.allowed {
                        return Ok(acc);
                    }
                    Ok(Outcome {
                        missing: false,
                        ..acc
                    })
                }
                Userset::Difference(d) => {
                    let base = self
                        .rewrite(&d.base, o, relation, user, u, depth, path)
                        .await?;
                    if !base.allowed && !base.missing {
                        return Ok(base);
                    }
                    let sub = self
                        .rewrite(&d.subtract, o, relation, user, u, depth, path)
                        .await?;
                    let cycle = base.cycle | sub.cycle;
                    if !base.allowed {
                        // The base lacks a condition parameter: a subtracted part that holds
                        // decides "no" without it (as OpenFGA answers); otherwise the answer
                        // still needs it.
                        return Ok(Outcome {
                            allowed: false,
                            missing: !sub.allowed,
                            cycle,
                        });
                    }
                    if sub.allowed || sub.cycle {
                        // A cycle cut inside the subtracted part leaves its "no" unproven:
                        // never an allow (OpenFGA answers false there too).
                        Ok(Outcome {
                            cycle,
                            ..Outcome::DENY
                        })
                    } else if sub.missing {
                        Ok(Outcome {
                            allowed: false,
                            missing: true,
                            cycle,
                        })
                    } else {
                        Ok(Outcome {
                            cycle,
                            ..Outcome::ALLOW
                        })
                    }
                }
            }
        })
    }

    /// Direct relationships: exact user, the user type's wildcard, or membership of a userset.
    async fn direct(
        &self,
        o: ObjectRef<'_>,
        relation: &str,
        user: &str,
        u: UserRef<'_>,
        depth: u32,
        path: &mut Vec<String>,
    ) -> Result<Outcome> {
        let tuples = self
            .read(TupleFilter {
                object_type: Some(o.object_type.into()),
                object_id: Some(o.object_id.into()),
                relation: Some(relation.into()),
                users: vec![],
            })
            .await?;
        let mut acc = Outcome::DENY;
        let mut usersets: Vec<&TupleKey> = Vec::new();
        for t in tuples.iter() {
            let Some(tu) = UserRef::parse(&t.user) else {
                continue;
            };
            if !self.model.allows_tuple(o.object_type, relation, &tu, t) {
                continue;
            }
            let hit = t.user == user
                || matches!((tu, u), (UserRef::Wildcard(wt), UserRef::Object(uo)) if wt == uo.object_type);
            if hit {
                match self.condition(t)? {
                    ConditionOutcome::Satisfied => return Ok(Outcome::ALLOW),
                    ConditionOutcome::NotSatisfied => {}
                    ConditionOutcome::MissingParameters(_) => acc.missing = true,
                }
            } else if matches!(tu, UserRef::Userset(..)) {
                usersets.push(t);
            }
        }
        for t in usersets {
            let UserRef::Userset(so, sr) = parse_user(&t.user)? else {
                continue;
            };
            let cond = self.condition(t)?;
            if cond == ConditionOutcome::NotSatisfied {
                continue;
            }
            let set_object = format!("{}:{}", so.object_type, so.object_id);
            let r = self.check(&set_object, sr, user, depth + 1, path).await?;
            acc.cycle |= r.cycle;
            if r.allowed {
                if cond == ConditionOutcome::Satisfied {
                    return Ok(Outcome::ALLOW);
                }
                acc.missing = true;
            }
            acc.missing |= r.missing;
        }
        Ok(acc)
    }

    /// `computed from tupleset`: the relation `computed` on every object related through `tupleset`.
    async fn tuple_to_userset(
        &self,
        o: ObjectRef<'_>,
        tupleset: &str,
        computed: &str,
        user: &str,
        depth: u32,
        path: &mut Vec<String>,
    ) -> Result<Outcome> {
        let tuples = self
            .read(TupleFilter {
                object_type: Some(o.object_type.into()),
                object_id: Some(o.object_id.into()),
                relation: Some(tupleset.into()),
                users: vec![],
            })
            .await?;
        let mut acc = Outcome::DENY;
        for t in tuples.iter() {
            let Some(UserRef::Object(parent)) = UserRef::parse(&t.user) else {
                continue;
            };
            if !self
                .model
                .allows_tuple(o.object_type, tupleset, &UserRef::Object(parent), t)
            {
                continue;
            }
            let cond = self.condition(t)?;
            if cond == ConditionOutcome::NotSatisfied {
                continue;
            }
            let r = self.check(&t.user, computed, user, depth + 1, path).await?;
            acc.cycle |= r.cycle;
            if r.allowed {
                if cond == ConditionOutcome::Satisfied {
                    return Ok(Outcome::ALLOW);
                }
                acc.missing = true;
            }
            acc.missing |= r.missing;
        }
        Ok(acc)
    }
}
