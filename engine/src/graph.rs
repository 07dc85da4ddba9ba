//! Graph evaluation at one revision: check, expand, list objects, list users.
//!
//! A [`Query`] binds a compiled model, a datastore snapshot (`revision`), the request's
//! contextual tuples and condition context. Every sub-problem goes through one dispatcher
//! ([`Query::check`]) that consults the per-request memo, then the cross-request [`CheckCache`],
//! then resolves; cycles are cut (and never cached) and depth is bounded.

mod cache;
mod check;
mod expand;
mod list_objects;
mod list_users;
mod model;
mod path;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub use cache::CheckCache;
pub use expand::expand;
pub use list_objects::list_objects;
pub use list_users::{ListUsersFilter, UserResult, list_users};
pub use model::CompiledModel;
pub use path::path;

use crate::condition::ConditionOutcome;
use crate::error::{Error, Result};
use crate::store::{Datastore, Page, Revision, TupleFilter};
use crate::tuple::{ContextMap, TupleKey, UserRef};

/// OpenFGA's default resolution depth.
pub const DEFAULT_MAX_DEPTH: u32 = 25;

/// The answer to one sub-problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Outcome {
    pub allowed: bool,
    /// The answer is false only because a condition lacked parameters somewhere.
    pub missing: bool,
    /// A cycle was cut below this node: the answer is right for this request but not cacheable.
    pub cycle: bool,
}

impl Outcome {
    const ALLOW: Self = Self {
        allowed: true,
        missing: false,
        cycle: false,
    };
    const DENY: Self = Self {
        allowed: false,
        missing: false,
        cycle: false,
    };
}

/// One evaluation context: everything a query needs, evaluated at exactly one revision.
pub struct Query<'a> {
    pub store: &'a str,
    pub model: &'a CompiledModel,
    pub datastore: &'a dyn Datastore,
    pub revision: Revision,
    pub contextual: &'a [TupleKey],
    pub context: Option<&'a ContextMap>,
    pub max_depth: u32,
    /// Cross-request cache; `None` bypasses it (HIGHER_CONSISTENCY, cache disabled).
    pub cache: Option<&'a CheckCache>,
    /// Hash of contextual tuples and context, part of every cache key.
    scope: u64,
    memo: Mutex<HashMap<String, Outcome>>,
    reads: Mutex<HashMap<TupleFilter, Arc<Vec<TupleKey>>>>,
    /// The earliest expiry (µs since the epoch) of anything the answers so far rest on: the
    /// tuples read and the cached sub-results used. An answer stays true until then only.
    horizon: AtomicI64,
    /// The first condition found lacking parameters, and which: what the error names.
    lacking: Mutex<Option<(String, Vec<String>)>>,
}

impl<'a> Query<'a> {
    /// Builds a query; `contextual` tuples are visible to this query only.
    pub fn new(
        store: &'a str,
        model: &'a CompiledModel,
        datastore: &'a dyn Datastore,
        revision: Revision,
        contextual: &'a [TupleKey],
        context: Option<&'a ContextMap>,
    ) -> Self {
        use std::hash::{Hash, Hasher};
        Self {
            store,
            model,
            datastore,
            revision,
            contextual,
            context,
            max_depth: DEFAULT_MAX_DEPTH,
            cache: None,
            scope: if contextual.is_empty() && context.is_none() {
                0
            } else {
                // Only queries with context pay for hashing it.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                contextual.hash(&mut h);
                context.hash(&mut h);
                h.finish()
            },
            memo: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
            horizon: AtomicI64::new(i64::MAX),
            lacking: Mutex::new(None),
        }
    }

    /// Uses a cross-request cache.
    pub fn with_cache(mut self, cache: Option<&'a CheckCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Bounds the resolution depth.
    pub fn with_max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth;
        self
    }

    /// Tuples matching `filter` at the query's revision, contextual tuples included.
    /// Results are memoised for the query, so each distinct read hits storage once.
    pub(crate) async fn read(&self, filter: TupleFilter) -> Result<Arc<Vec<TupleKey>>> {
        if let Some(hit) = self.reads.lock().map_err(|_| lock_err())?.get(&filter) {
            return Ok(hit.clone());
        }
        let page = self
            .datastore
            .read_tuples(self.store, &filter, self.revision, &Page::default())
            .await?;
        let now = chrono::Utc::now();
        let mut out: Vec<TupleKey> = page
            .items
            .into_iter()
            .map(|t| t.key)
            .filter(|k| k.live_at(now))
            .collect();
        if let Some(first) = out.iter().filter_map(|k| k.expires_at).min() {
            self.bound(first.timestamp_micros());
        }
        for c in self.contextual {
            if filter.matches(c) && !out.iter().any(|t| t.identity() == c.identity()) {
                out.push(c.clone());
            }
        }
        let out = Arc::new(out);
        self.reads
            .lock()
            .map_err(|_| lock_err())?
            .insert(filter, out.clone());
        Ok(out)
    }

    /// Notes that what is being answered holds until `until` (µs since the epoch) at most.
    pub(crate) fn bound(&self, until: i64) {
        self.horizon.fetch_min(until, Ordering::Relaxed);
    }

    /// Until when the answers given so far hold: the earliest expiry among the tuples they
    /// rest on (`None`: until the next write). Caches must not keep them longer.
    pub fn valid_until(&self) -> Option<i64> {
        let h = self.horizon.load(Ordering::Relaxed);
        (h != i64::MAX).then_some(h)
    }

    /// The wall clock now, µs since the epoch: read at each use, so that a long query (a
    /// list walk) never serves a cached answer past the expiry it rests on.
    pub(crate) fn now_micros(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    /// Evaluates the tuple's condition (a tuple without one is unconditional). Callers have
    /// checked the tuple against the model ([`CompiledModel::allows_tuple`]), so its condition
    /// is defined; one that is not counts as unsatisfied.
    pub(crate) fn condition(&self, t: &TupleKey) -> Result<ConditionOutcome> {
        let Some(c) = &t.condition else {
            return Ok(ConditionOutcome::Satisfied);
        };
        let Some(compiled) = self.model.conditions.get(&c.name) else {
            return Ok(ConditionOutcome::NotSatisfied);
        };
        let out = compiled.evaluate(c.context.as_ref(), self.context)?;
        if let ConditionOutcome::MissingParameters(params) = &out {
            let mut lacking = self.lacking.lock().map_err(|_| lock_err())?;
            if lacking.is_none() {
                *lacking = Some((c.name.clone(), params.clone()));
            }
        }
        Ok(out)
    }

    /// Whether the tuple's condition may hold, for the walks of the list queries: a condition
    /// lacking parameters counts as holding there, and [`Query::lacked`] then has every
    /// candidate confirmed by check, which errs where the answer depends on it.
    pub(crate) fn condition_may_hold(&self, t: &TupleKey) -> Result<bool> {
        Ok(self.condition(t)? != ConditionOutcome::NotSatisfied)
    }

    /// Whether a condition lacked parameters anywhere in this query so far.
    pub(crate) fn lacked(&self) -> bool {
        self.lacking.lock().map(|l| l.is_some()).unwrap_or(true)
    }

    /// The error of an answer that lacked condition parameters, naming the condition.
    pub(crate) fn lacking_error(&self) -> Error {
        let lacking = self.lacking.lock().ok().and_then(|l| l.clone());
        let (name, params) = lacking.unwrap_or_default();
        let params = params
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Error::Condition {
            name,
            reason: format!(
                "the request context is missing the parameter{} {params}",
                if params.contains(',') { "s" } else { "" }
            ),
        }
    }

    /// The cache key of a sub-problem, scoped to the store, model, revision and request context.
    fn cache_key(&self, object: &str, relation: &str, user: &str) -> String {
        use std::fmt::Write as _;
        // Sized up front: built for every sub-problem of every check, and `format!` grew it
        // two or three times.
        let model = self.model.id();
        let mut key = String::with_capacity(
            self.store.len() + model.len() + object.len() + relation.len() + user.len() + 48,
        );
        let _ = write!(
            key,
            "{}|{model}|{}|{:x}|{object}#{relation}@{user}",
            self.store, self.revision, self.scope
        );
        key
    }
}

fn lock_err() -> Error {
    Error::Storage("query memo lock poisoned".into())
}

/// Resolves `user` holding `relation` on `object`; the top-level entry point of check.
pub async fn check(q: &Query<'_>, object: &str, relation: &str, user: &str) -> Result<bool> {
    q.model.validate_check(object, relation, user)?;
    let out = q.check(object, relation, user, 0, &mut Vec::new()).await?;
    if !out.allowed && out.missing {
        return Err(q.lacking_error());
    }
    Ok(out.allowed)
}

/// Splits a user string into its parts, or explains why it is invalid.
pub(crate) fn parse_user(user: &str) -> Result<UserRef<'_>> {
    UserRef::parse(user).ok_or_else(|| {
        Error::Validation(format!(
            "invalid user `{user}`: expected `type:id`, `type:*` or `type:id#relation`"
        ))
    })
}

#[cfg(test)]
mod tests;
