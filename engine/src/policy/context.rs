//! Caller context built straight from JSON with the schema's declared types.
//!
//! Cedar's own JSON reader (`Context::from_json_value`) tries every escape form (`__extn`,
//! `__entity`, `unknown`) on every value, and each failed try builds and drops a serde error:
//! for a sign-in's small context that was an eighth of an HTTP worker's time. Here the
//! context's record type is read once from the schema JSON when policies are compiled, and a
//! caller's JSON is converted by that type directly: strings declared `ipaddr`, `decimal`,
//! `datetime` or `duration` become calls of their constructors, everything else maps one to
//! one.
//!
//! Anything this conversion does not cover (entity references, escapes, types it cannot
//! resolve, values of the wrong JSON kind) returns `None`, and the caller falls back to Cedar's
//! reader, which also words the error. The request built from the result is still checked
//! against the schema, so a shape read wrongly here can only cost the fallback, never a
//! decision.

use std::collections::HashMap;

use cedar_policy::{EntityUid, RestrictedExpression as E};
use serde_json::Value;

/// A context value's declared type, as far as the direct conversion needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Boolean,
    Long,
    String,
    Set(Box<Shape>),
    Record(HashMap<String, Shape>),
    /// An extension type, by its constructor (`ip`, `decimal`, `datetime`, `duration`).
    Extension(&'static str),
}

/// Deepest nesting of common types followed while resolving a type (they cannot be cyclic in a
/// valid schema; the bound keeps a bad one from looping).
const MAX_DEPTH: usize = 32;

/// The declared context record of every action in a schema (JSON form), by action. Actions
/// whose context cannot be resolved (entity references, unknown forms) are left out.
pub fn shapes(schema: &Value) -> HashMap<EntityUid, HashMap<String, Shape>> {
    let mut out = HashMap::new();
    let Some(namespaces) = schema.as_object() else {
        return out;
    };
    for (ns, def) in namespaces {
        let common = def.get("commonTypes").and_then(Value::as_object);
        let Some(actions) = def.get("actions").and_then(Value::as_object) else {
            continue;
        };
        for (name, action) in actions {
            let context = action.get("appliesTo").and_then(|a| a.get("context"));
            let record = match context {
                // No context declared: the empty record.
                None | Some(Value::Null) => Some(HashMap::new()),
                Some(t) => match resolve(t, common, 0) {
                    Some(Shape::Record(r)) => Some(r),
                    _ => None,
                },
            };
            let uid = if ns.is_empty() {
                format!("Action::{}", Value::String(name.clone()))
            } else {
                format!("{ns}::Action::{}", Value::String(name.clone()))
            };
            if let (Some(record), Ok(uid)) = (record, uid.parse::<EntityUid>()) {
                out.insert(uid, record);
            }
        }
    }
    out
}

/// What a schema (JSON form) declares by name: the context keys of each action and the
/// attribute names of each entity type, into nested records. A request that may carry more
/// (AuthZEN) leaves the rest out of the Cedar request: no policy can read them, as validation
/// refuses a policy that reads an undeclared key. An action or type whose record cannot be
/// resolved is left out, and nothing is left out of its requests.
#[derive(Debug, Default)]
pub struct Declared {
    pub context: HashMap<EntityUid, Keys>,
    pub attributes: HashMap<String, Keys>,
}

/// The attribute names of a record type; a record-typed attribute has its own.
#[derive(Debug, Default)]
pub struct Keys(HashMap<String, Option<Keys>>);

impl Keys {
    /// Leaves out of `map` what this record does not declare, into nested records.
    pub fn prune(&self, map: &mut serde_json::Map<String, Value>) {
        map.retain(|k, _| self.0.contains_key(k));
        for (k, v) in map.iter_mut() {
            if let (Some(Some(inner)), Value::Object(m)) = (self.0.get(k), v) {
                inner.prune(m);
            }
        }
    }
}

pub fn declared(schema: &Value) -> Declared {
    let mut out = Declared::default();
    let Some(namespaces) = schema.as_object() else {
        return out;
    };
    for (ns, def) in namespaces {
        let common = def.get("commonTypes").and_then(Value::as_object);
        let qualified = |name: &str| {
            if ns.is_empty() {
                name.to_string()
            } else {
                format!("{ns}::{name}")
            }
        };
        for (name, action) in def
            .get("actions")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let keys = match action.get("appliesTo").and_then(|a| a.get("context")) {
                None | Some(Value::Null) => Some(Keys::default()),
                Some(t) => record_keys(t, common, 0),
            };
            let uid = format!("{}::{}", qualified("Action"), Value::String(name.clone()));
            if let (Some(keys), Ok(uid)) = (keys, uid.parse::<EntityUid>()) {
                out.context.insert(uid, keys);
            }
        }
        for (name, entity) in def
            .get("entityTypes")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let keys = match entity.get("shape") {
                None | Some(Value::Null) => Some(Keys::default()),
                Some(t) => record_keys(t, common, 0),
            };
            if let Some(keys) = keys {
                out.attributes.insert(qualified(name), keys);
            }
        }
    }
    out
}

/// The attribute names of a record type, following common types; `None` for a type that is
/// not a record (or cannot be resolved).
fn record_keys(
    t: &Value,
    common: Option<&serde_json::Map<String, Value>>,
    depth: usize,
) -> Option<Keys> {
    if depth > MAX_DEPTH {
        return None;
    }
    let kind = t.get("type")?.as_str()?;
    let name = match kind {
        "Record" => {
            let mut keys = HashMap::new();
            if let Some(attributes) = t.get("attributes") {
                for (name, a) in attributes.as_object()? {
                    keys.insert(name.clone(), record_keys(a, common, depth + 1));
                }
            }
            return Some(Keys(keys));
        }
        "EntityOrCommon" => t.get("name")?.as_str()?,
        other => other,
    };
    record_keys(common?.get(name)?, common, depth + 1)
}

/// One type of the JSON schema format, following common types of the same namespace.
fn resolve(
    t: &Value,
    common: Option<&serde_json::Map<String, Value>>,
    depth: usize,
) -> Option<Shape> {
    if depth > MAX_DEPTH {
        return None;
    }
    let kind = t.get("type")?.as_str()?;
    let named = |name: &str| -> Option<Shape> {
        match common.and_then(|c| c.get(name)) {
            Some(def) => resolve(def, common, depth + 1),
            None => builtin(name),
        }
    };
    match kind {
        "Record" => {
            let attributes = match t.get("attributes") {
                None => return Some(Shape::Record(HashMap::new())),
                Some(a) => a.as_object()?,
            };
            let mut record = HashMap::with_capacity(attributes.len());
            for (name, a) in attributes {
                record.insert(name.clone(), resolve(a, common, depth + 1)?);
            }
            Some(Shape::Record(record))
        }
        "Set" => Some(Shape::Set(Box::new(resolve(
            t.get("element")?,
            common,
            depth + 1,
        )?))),
        "Extension" => extension(t.get("name")?.as_str()?),
        // `{"type": "EntityOrCommon", "name": N}`: a common type or a builtin; an entity type
        // is not converted here.
        "EntityOrCommon" => named(t.get("name")?.as_str()?),
        "Entity" => None,
        other => named(other),
    }
}

fn builtin(name: &str) -> Option<Shape> {
    match name.strip_prefix("__cedar::").unwrap_or(name) {
        "Boolean" | "Bool" => Some(Shape::Boolean),
        "Long" => Some(Shape::Long),
        "String" => Some(Shape::String),
        other => extension(other),
    }
}

fn extension(name: &str) -> Option<Shape> {
    match name.strip_prefix("__cedar::").unwrap_or(name) {
        "ipaddr" => Some(Shape::Extension("ip")),
        "decimal" => Some(Shape::Extension("decimal")),
        "datetime" => Some(Shape::Extension("datetime")),
        "duration" => Some(Shape::Extension("duration")),
        _ => None,
    }
}

/// The value of `json` as a Cedar expression of type `shape`, or `None` when it does not fit
/// the direct conversion.
pub fn convert(json: &Value, shape: &Shape) -> Option<E> {
    Some(match (shape, json) {
        (Shape::Boolean, Value::Bool(b)) => E::new_bool(*b),
        (Shape::Long, Value::Number(n)) => E::new_long(n.as_i64()?),
        (Shape::String, Value::String(s)) => E::new_string(s.clone()),
        (Shape::Set(element), Value::Array(items)) => E::new_set(
            items
                .iter()
                .map(|i| convert(i, element))
                .collect::<Option<Vec<_>>>()?,
        ),
        (Shape::Record(attributes), Value::Object(fields)) => E::new_record(
            fields
                .iter()
                .map(|(k, v)| Some((k.clone(), convert(v, attributes.get(k)?)?)))
                .collect::<Option<Vec<_>>>()?,
        )
        .ok()?,
        (Shape::Extension(ctor), Value::String(s)) => match *ctor {
            "ip" => E::new_ip(s),
            "decimal" => E::new_decimal(s),
            "datetime" => E::new_datetime(s),
            "duration" => E::new_duration(s),
            _ => return None,
        },
        _ => return None,
    })
}

/// The attributes of `fields` converted by the declared `record`, or `None` when one does not
/// fit (an undeclared attribute included).
pub fn pairs(
    fields: &serde_json::Map<String, Value>,
    record: &HashMap<String, Shape>,
) -> Option<Vec<(String, E)>> {
    fields
        .iter()
        .map(|(k, v)| Some((k.clone(), convert(v, record.get(k)?)?)))
        .collect()
}
