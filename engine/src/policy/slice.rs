//! Policy slicing: only the policies whose scope (`principal`, `action`, `resource`
//! constraints) can match a request are evaluated. A policy whose scope does not match is
//! false without its condition being evaluated, so leaving it out changes neither the decision
//! nor the determining policies nor the errors. Slices are cached by the set of policies they
//! hold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint, Schema,
};

/// A principal or resource scope, in one form for both.
#[derive(Debug, Clone)]
enum Scope {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl From<PrincipalConstraint> for Scope {
    fn from(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Scope::Any,
            PrincipalConstraint::Eq(u) => Scope::Eq(u),
            PrincipalConstraint::In(u) => Scope::In(u),
            PrincipalConstraint::Is(t) => Scope::Is(t),
            PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

impl From<ResourceConstraint> for Scope {
    fn from(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Scope::Any,
            ResourceConstraint::Eq(u) => Scope::Eq(u),
            ResourceConstraint::In(u) => Scope::In(u),
            ResourceConstraint::Is(t) => Scope::Is(t),
            ResourceConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

impl Scope {
    /// Whether an entity with these ancestors can satisfy the scope.
    fn admits(&self, uid: &EntityUid, entities: &Entities) -> bool {
        let within = |u: &EntityUid| u == uid || entities.is_ancestor_of(u, uid);
        match self {
            Scope::Any => true,
            Scope::Eq(u) => u == uid,
            Scope::In(u) => within(u),
            Scope::Is(t) => uid.type_name() == t,
            Scope::IsIn(t, u) => uid.type_name() == t && within(u),
        }
    }
}

#[derive(Debug)]
struct Entry {
    policy: Policy,
    principal: Scope,
    action: ActionConstraint,
    resource: Scope,
}

/// The policies of a set with their scopes, and the slices built so far.
#[derive(Debug)]
pub struct Slicer {
    entries: Vec<Entry>,
    /// Policies by the entity their principal scope names (`==`, `in`, `is … in`), so that a
    /// request only looks at those naming its principal or one of its ancestors.
    by_principal: HashMap<EntityUid, Vec<u32>>,
    /// Policies whose principal scope names no entity (`principal`, `principal is T`).
    open_principal: Vec<u32>,
    /// Templates by id, to re-link linked policies into a slice.
    templates: HashMap<PolicyId, cedar_policy::Template>,
    /// Actions that have member actions (action groups): `action in [group]` may match any
    /// member, so such constraints are kept.
    action_groups: HashSet<EntityUid>,
    slices: moka::sync::Cache<Vec<u32>, Arc<PolicySet>>,
}

impl Slicer {
    pub fn new(set: &PolicySet, schema: &Schema) -> Self {
        let entries: Vec<Entry> = set
            .policies()
            .map(|p| Entry {
                principal: p.principal_constraint().into(),
                action: p.action_constraint(),
                resource: p.resource_constraint().into(),
                policy: p.clone(),
            })
            .collect();
        let mut by_principal: HashMap<EntityUid, Vec<u32>> = HashMap::new();
        let mut open_principal = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { continue };
            match &e.principal {
                Scope::Eq(u) | Scope::In(u) | Scope::IsIn(_, u) => {
                    by_principal.entry(u.clone()).or_default().push(i);
                }
                Scope::Any | Scope::Is(_) => open_principal.push(i),
            }
        }
        let templates = set
            .templates()
            .map(|t| (t.id().clone(), t.clone()))
            .collect();
        // An action's ancestors in the schema are its groups.
        let mut action_groups = HashSet::new();
        if let Ok(actions) = schema.action_entities() {
            for a in actions.iter() {
                if let Some(groups) = actions.ancestors(&a.uid()) {
                    action_groups.extend(groups.cloned());
                }
            }
        }
        Self {
            entries,
            by_principal,
            open_principal,
            templates,
            action_groups,
            slices: moka::sync::Cache::new(1_000),
        }
    }

    fn action_admits(&self, c: &ActionConstraint, action: &EntityUid) -> bool {
        match c {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => a == action,
            ActionConstraint::In(list) => list
                .iter()
                .any(|a| a == action || self.action_groups.contains(a)),
        }
    }

    /// The policies that can apply to this request, as a set to evaluate.
    pub fn slice(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Result<Arc<PolicySet>, String> {
        let mut candidates: Vec<u32> = self.open_principal.clone();
        let ancestors = entities.ancestors(principal).into_iter().flatten();
        for u in std::iter::once(principal).chain(ancestors) {
            if let Some(list) = self.by_principal.get(u) {
                candidates.extend(list);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let key: Vec<u32> = candidates
            .into_iter()
            .filter(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.entries.get(i))
                    .is_some_and(|e| {
                        self.action_admits(&e.action, action)
                            && e.principal.admits(principal, entities)
                            && e.resource.admits(resource, entities)
                    })
            })
            .collect();
        if let Some(s) = self.slices.get(&key) {
            return Ok(s);
        }
        let mut set = PolicySet::new();
        for &i in &key {
            let Some(e) = usize::try_from(i).ok().and_then(|i| self.entries.get(i)) else {
                continue;
            };
            let p = &e.policy;
            match (p.template_id(), p.template_links()) {
                (Some(t), Some(links)) => {
                    if set.template(t).is_none() {
                        let template = self
                            .templates
                            .get(t)
                            .ok_or_else(|| format!("template `{t}` is missing"))?;
                        set.add_template(template.clone())
                            .map_err(|e| e.to_string())?;
                    }
                    set.link(t.clone(), p.id().clone(), links)
                        .map_err(|e| e.to_string())?;
                }
                _ => set.add(p.clone()).map_err(|e| e.to_string())?,
            }
        }
        let set = Arc::new(set);
        self.slices.insert(key, set.clone());
        Ok(set)
    }
}
