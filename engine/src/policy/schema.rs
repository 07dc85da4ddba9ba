//! The Cedar schema generated from an authorization model: each type an entity type (its
//! parents from [`Hierarchy`]), each relation an action on the types that define it, every
//! action with the context Gatehouse supplies (`rebac`, `relations`, `risk`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::hierarchy::{Hierarchy, cedar_type};
use crate::model::AuthorizationModel;

/// The context attributes Gatehouse supplies to every action, as a Cedar JSON record type.
/// Tenants who send context of their own declare it beside these in a schema they supply.
pub fn gatehouse_context() -> Value {
    json!({
        "type": "Record",
        "attributes": {
            "rebac": { "type": "Boolean" },
            "relations": { "type": "Set", "element": { "type": "String" } },
            "risk": {
                "type": "Record",
                "attributes": {
                    "score": { "type": "Long" },
                    "level": { "type": "String" },
                    "signals": { "type": "Set", "element": { "type": "String" } }
                }
            },
            // Risk signals callers send that policies may also read; `location` and `time`
            // are consumed by the risk engine.
            "ip": { "type": "Extension", "name": "ipaddr", "required": false },
            "device_id": { "type": "String", "required": false }
        }
    })
}

/// The Cedar schema (JSON form, empty namespace) of a model. Types whose names are not Cedar
/// identifiers (or are `Action`) are left out, and so are relations only they define.
pub fn generate(model: &AuthorizationModel) -> Value {
    let hierarchy = Hierarchy::new(model);
    let types: Vec<&str> = model
        .type_definitions
        .iter()
        .map(|t| t.type_name.as_str())
        .filter(|t| cedar_type(t))
        .collect();
    let mut entity_types = serde_json::Map::new();
    for t in &types {
        let parents: Vec<&String> = hierarchy
            .member_of
            .get(*t)
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        let mut def = serde_json::Map::new();
        if !parents.is_empty() {
            def.insert("memberOfTypes".into(), json!(parents));
        }
        entity_types.insert((*t).to_string(), Value::Object(def));
    }
    let mut resources: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for td in &model.type_definitions {
        if !cedar_type(&td.type_name) {
            continue;
        }
        for rel in td.relations.keys() {
            resources
                .entry(rel.as_str())
                .or_default()
                .insert(td.type_name.as_str());
        }
    }
    let mut context = gatehouse_context();
    if let Some(attributes) = context["attributes"].as_object_mut() {
        for (name, t) in condition_parameters(model) {
            attributes.entry(name).or_insert(t);
        }
    }
    let mut actions = serde_json::Map::new();
    for (rel, on) in resources {
        actions.insert(
            rel.to_string(),
            json!({
                "appliesTo": {
                    "principalTypes": types,
                    "resourceTypes": on,
                    "context": context,
                }
            }),
        );
    }
    json!({ "": { "entityTypes": entity_types, "actions": actions } })
}

/// The parameters of the model's conditions, as optional context attributes: a caller may
/// send them with a decision (the graph reads them for conditional tuples) and policies may
/// read them. A parameter declared with different types by two conditions, or of a type Cedar
/// cannot hold as it is sent (`double`, `map`, `any`), is left out: a schema supplied with the
/// policies can declare it.
fn condition_parameters(model: &AuthorizationModel) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for def in model.conditions.values() {
        for (name, t) in &def.parameters {
            if ["rebac", "relations", "risk"].contains(&name.as_str()) {
                continue;
            }
            let Some(mut t) = cedar_param_type(t) else {
                out.insert(name.clone(), None);
                continue;
            };
            t["required"] = Value::Bool(false);
            match out.get(name) {
                None => {
                    out.insert(name.clone(), Some(t));
                }
                Some(Some(seen)) if *seen == t => {}
                Some(_) => {
                    out.insert(name.clone(), None);
                }
            }
        }
    }
    out.into_iter()
        .filter_map(|(name, t)| t.map(|t| (name, t)))
        .collect()
}

/// The Cedar type that holds a condition parameter's value as callers send it in JSON.
fn cedar_param_type(t: &crate::model::ConditionParamType) -> Option<Value> {
    use crate::model::TypeName as T;
    Some(match t.type_name {
        T::TYPE_NAME_BOOL => json!({ "type": "Boolean" }),
        T::TYPE_NAME_INT | T::TYPE_NAME_UINT => json!({ "type": "Long" }),
        // Timestamps and durations are strings in JSON; Cedar reads them as such.
        T::TYPE_NAME_STRING | T::TYPE_NAME_TIMESTAMP | T::TYPE_NAME_DURATION => {
            json!({ "type": "String" })
        }
        T::TYPE_NAME_IPADDRESS => json!({ "type": "Extension", "name": "ipaddr" }),
        T::TYPE_NAME_LIST => {
            let element = cedar_param_type(t.generic_types.first()?)?;
            json!({ "type": "Set", "element": element })
        }
        T::TYPE_NAME_DOUBLE | T::TYPE_NAME_MAP | T::TYPE_NAME_ANY | T::TYPE_NAME_UNSPECIFIED => {
            return None;
        }
    })
}
