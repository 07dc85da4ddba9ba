//! Arbitrary bytes as the JSON the API accepts: authorization models, tuple keys, condition
//! contexts, and consistency and continuation tokens. Every parse and every check on what parses
//! answers `Ok` or `Err`; none panics.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use gatehouse_engine::condition::{self, CompiledCondition};
use gatehouse_engine::graph::CompiledModel;
use gatehouse_engine::model::{
    AuthorizationModel, ConditionDef, ConditionParamType, TypeName, parse_dsl, validate_model,
};
use gatehouse_engine::service::{Engine, EngineConfig, PageTokens, decode_token, encode_token};
use gatehouse_engine::store::memory::MemoryStore;
use gatehouse_engine::store::Page;
use gatehouse_engine::tuple::{ContextMap, ObjectRef, TupleKey, UserRef};
use libfuzzer_sys::fuzz_target;

/// A model with every kind of direct restriction and conditions over every parameter type.
const MODEL: &str = r#"
model
  schema 1.1

type user

type group
  relations
    define member: [user, user:*, group#member]

type folder
  relations
    define owner: [user, group#member]
    define viewer: [user, user with in_network, user:* with before_expiry, group#member with grants] or owner

type doc
  relations
    define parent: [folder]
    define editor: [user with grants, user:*]
    define blocked: [user]
    define viewer: (editor or viewer from parent) but not blocked

condition in_network(ip: ipaddress, cidr: string) {
  ip.in_cidr(cidr)
}

condition before_expiry(current_time: timestamp, grant_time: timestamp, grant_duration: duration) {
  current_time < grant_time + grant_duration
}

condition grants(enabled: bool, level: int, quota: uint, ratio: double, tags: list<string>,
    limits: map<int>) {
  enabled && level + 1 > 1 && quota >= 1u && ratio * 2.0 < 3.0 && "x" in tags && limits["n"] < level
}
"#;

/// The store id tokens are checked against.
const STORE: &str = "01ARZ3NDEKTSV4RZMYSQ3ZZZZZ";

struct Fixture {
    model: CompiledModel,
    /// One condition per parameter type, with its definition.
    conditions: Vec<(ConditionDef, CompiledCondition)>,
    /// Sorted items for pagination.
    items: Vec<String>,
    /// The signer of continuation tokens.
    pages: PageTokens,
}

fn ty(type_name: TypeName, generic_types: Vec<ConditionParamType>) -> ConditionParamType {
    ConditionParamType {
        type_name,
        generic_types,
    }
}

fn scalar(type_name: TypeName) -> ConditionParamType {
    ty(type_name, Vec::new())
}

/// Conditions reading one parameter `x` of each type, the way a model would use it.
fn per_type_conditions() -> Vec<ConditionDef> {
    use TypeName::*;
    let cases = [
        (scalar(TYPE_NAME_ANY), "x != null"),
        (scalar(TYPE_NAME_BOOL), "x"),
        (
            scalar(TYPE_NAME_STRING),
            r#"x.startsWith("a") || size(x) > 3 || x == "b""#,
        ),
        (
            scalar(TYPE_NAME_INT),
            "x + 1 > 0 && x * 2 != 4 && x - 1 < x",
        ),
        (scalar(TYPE_NAME_UINT), "x + 1u > 1u && x * 2u != 4u"),
        (scalar(TYPE_NAME_DOUBLE), "x * 2.0 > 1.0 && x / 0.5 < 1e300"),
        (
            scalar(TYPE_NAME_DURATION),
            r#"x > duration("1h") && x + duration("1s") > x"#,
        ),
        (
            scalar(TYPE_NAME_TIMESTAMP),
            r#"x + duration("24h") > timestamp("2024-01-01T00:00:00Z")"#,
        ),
        (
            scalar(TYPE_NAME_IPADDRESS),
            r#"x.in_cidr("10.0.0.0/8") || x.in_cidr("::1/128")"#,
        ),
        (
            ty(TYPE_NAME_LIST, vec![scalar(TYPE_NAME_STRING)]),
            r#""a" in x && size(x) > 1"#,
        ),
        (
            ty(TYPE_NAME_MAP, vec![scalar(TYPE_NAME_INT)]),
            r#""k" in x && x["k"] > 1"#,
        ),
        (
            ty(
                TYPE_NAME_LIST,
                vec![ty(TYPE_NAME_MAP, vec![scalar(TYPE_NAME_ANY)])],
            ),
            "size(x) > 0",
        ),
        (
            ty(
                TYPE_NAME_MAP,
                vec![ty(TYPE_NAME_LIST, vec![scalar(TYPE_NAME_IPADDRESS)])],
            ),
            "size(x) > 0",
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (param, expression))| ConditionDef {
            name: format!("c{i}"),
            expression: expression.to_owned(),
            parameters: BTreeMap::from([("x".to_owned(), param)]),
            metadata: None,
        })
        .collect()
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let model = match parse_dsl(MODEL).map(CompiledModel::new) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) | Err(e) => panic!("the fixed model does not compile: {e}"),
    };
    let mut defs = per_type_conditions();
    defs.extend(model.model.conditions.values().cloned());
    let conditions = defs
        .into_iter()
        .map(|def| match CompiledCondition::compile(&def) {
            Ok(c) => (def, c),
            Err(e) => panic!("a fixed condition does not compile: {e}"),
        })
        .collect();
    let items = (0..20).map(|i| format!("doc:{i:02}")).collect();
    Fixture {
        model,
        conditions,
        items,
        pages: Engine::new(
            std::sync::Arc::new(MemoryStore::new()),
            EngineConfig::default(),
        )
        .page_tokens(),
    }
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    authorization_model(data);
    tuple_keys(fx, data);
    context_map(fx, data);
    tokens(fx, data);
});

/// A model as written by `POST /stores/{id}/authorization-models`.
fn authorization_model(data: &[u8]) {
    let Ok(model) = serde_json::from_slice::<AuthorizationModel>(data) else {
        return;
    };
    if let Ok(json) = serde_json::to_string(&model) {
        match serde_json::from_str::<AuthorizationModel>(&json) {
            Ok(back) => assert_eq!(
                without_metadata(back),
                without_metadata(model.clone()),
                "the JSON round trip changed the model"
            ),
            Err(e) => panic!("a model does not deserialize from its own JSON: {e}\n{json}"),
        }
    }
    let valid = validate_model(&model).is_ok();
    let compiled = CompiledModel::new(model);
    // A valid model whose conditions compile can be queried for any tuple shape.
    if let (true, Ok(m)) = (valid, compiled) {
        for td in &m.model.type_definitions {
            for rel in td.relations.keys() {
                let t = TupleKey::new("user:anne", rel.as_str(), format!("{}:1", td.type_name));
                let _ = m.validate_tuple(&t);
                let _ = m.validate_check(&t.object, &t.relation, &t.user);
            }
        }
    }
}

/// The model without its conditions' opaque metadata, whose floats need not read back exactly.
fn without_metadata(mut model: AuthorizationModel) -> AuthorizationModel {
    for c in model.conditions.values_mut() {
        c.metadata = None;
    }
    model
}

/// Tuples as written, deleted or passed as contextual tuples.
fn tuple_keys(fx: &Fixture, data: &[u8]) {
    let Ok(keys) = serde_json::from_slice::<Vec<TupleKey>>(data) else {
        return;
    };
    for t in &keys {
        let _ = fx.model.validate_tuple(t);
        let _ = fx.model.validate_check(&t.object, &t.relation, &t.user);
        let _ = t.to_string();
        check_object_ref(&t.object);
        check_object_ref(&t.user);
        check_user_ref(&t.user);
        check_user_ref(&t.object);
        if let Some(ctx) = t.condition.as_ref().and_then(|c| c.context.as_ref()) {
            evaluate_all(fx, ctx);
        }
    }
}

/// A parsed object reference prints back as the text it came from.
fn check_object_ref(s: &str) {
    if let Some(o) = ObjectRef::parse(s) {
        assert_eq!(format!("{}:{}", o.object_type, o.object_id), s);
        assert!(!o.object_type.is_empty() && !o.object_id.is_empty());
    }
}

/// A parsed user reference prints back as the text it came from.
fn check_user_ref(s: &str) {
    let Some(u) = UserRef::parse(s) else {
        return;
    };
    let printed = match u {
        UserRef::Object(o) => format!("{}:{}", o.object_type, o.object_id),
        UserRef::Wildcard(t) => format!("{t}:*"),
        UserRef::Userset(o, r) => format!("{}:{}#{r}", o.object_type, o.object_id),
    };
    assert_eq!(printed, s);
    assert!(!u.user_type().is_empty());
}

/// A request's or a tuple's condition context.
fn context_map(fx: &Fixture, data: &[u8]) {
    if let Ok(ctx) = serde_json::from_slice::<ContextMap>(data) {
        evaluate_all(fx, &ctx);
    }
}

fn evaluate_all(fx: &Fixture, ctx: &ContextMap) {
    for (def, compiled) in &fx.conditions {
        let _ = compiled.evaluate(Some(ctx), None);
        let _ = compiled.evaluate(None, Some(ctx));
        let _ = compiled.evaluate(Some(ctx), Some(ctx));
        let checked = compiled.validate_context(ctx).is_ok();
        let written = condition::validate_context(def, ctx).is_ok();
        assert_eq!(
            checked, written,
            "the compiled and the declared condition `{}` disagree on a context",
            def.name
        );
    }
}

/// Consistency and continuation tokens arrive as raw strings.
fn tokens(fx: &Fixture, data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    if let Ok(rev) = decode_token(STORE, &raw) {
        assert_eq!(
            decode_token(STORE, &encode_token(STORE, rev)).ok(),
            Some(rev)
        );
    }
    let rev = fx.pages.revision(&raw, "q").unwrap_or(7);
    let size = data.first().map_or(0, |b| usize::from(*b) % 30);
    let page = Page {
        size,
        token: Some(raw.into_owned()),
    };
    if let Ok((items, next)) = fx
        .pages
        .paginate_sorted(&fx.items, |s| s.as_str(), &page, rev, "q")
    {
        assert!(size == 0 || items.len() <= size);
        if let Some(next) = next {
            assert_eq!(fx.pages.revision(&next, "q").ok(), Some(rev));
            assert!(fx.pages.revision(&next, "other").is_err());
        }
    }
}
