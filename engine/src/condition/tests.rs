//! Condition compilation and evaluation, on every condition of the OpenFGA sample stores.

use serde_json::{Value as Json, json};

use super::params::parse_go_duration;
use super::*;
use crate::model::{ConditionParamType, TypeName};

use ConditionOutcome::{MissingParameters, NotSatisfied, Satisfied};

fn ty(type_name: TypeName) -> ConditionParamType {
    ConditionParamType {
        type_name,
        generic_types: Vec::new(),
    }
}

fn generic(type_name: TypeName, inner: TypeName) -> ConditionParamType {
    ConditionParamType {
        type_name,
        generic_types: vec![ty(inner)],
    }
}

fn def(name: &str, expression: &str, params: &[(&str, ConditionParamType)]) -> ConditionDef {
    ConditionDef {
        name: name.to_owned(),
        expression: expression.to_owned(),
        parameters: params
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect(),
        metadata: None,
    }
}

fn compile(
    name: &str,
    expression: &str,
    params: &[(&str, ConditionParamType)],
) -> CompiledCondition {
    CompiledCondition::compile(&def(name, expression, params)).expect("condition compiles")
}

fn ctx(value: Json) -> ContextMap {
    match value {
        Json::Object(map) => ContextMap(map),
        other => panic!("context must be an object, got {other}"),
    }
}

/// Evaluates with the given tuple and request contexts.
fn eval(
    c: &CompiledCondition,
    tuple: Option<Json>,
    request: Option<Json>,
) -> Result<ConditionOutcome> {
    let tuple = tuple.map(ctx);
    let request = request.map(ctx);
    c.evaluate(tuple.as_ref(), request.as_ref())
}

/// Evaluates with the context in the tuple, then again in the request: both must agree.
fn both(c: &CompiledCondition, context: Json) -> ConditionOutcome {
    let in_tuple = eval(c, Some(context.clone()), None).expect("evaluates with tuple context");
    let in_request = eval(c, None, Some(context)).expect("evaluates with request context");
    assert_eq!(
        in_tuple,
        in_request,
        "tuple and request context disagree for `{}`",
        c.name()
    );
    in_tuple
}

/// The reason of an `Error::Condition`, which must name `c`.
fn reason(c: &CompiledCondition, result: Result<ConditionOutcome>) -> String {
    match result {
        Err(Error::Condition { name, reason }) => {
            assert_eq!(name, c.name());
            reason
        }
        other => panic!("expected a condition error, got {other:?}"),
    }
}

fn compile_error(expression: &str, params: &[(&str, ConditionParamType)]) -> String {
    match CompiledCondition::compile(&def("bad", expression, params)) {
        Err(Error::Condition { name, reason }) => {
            assert_eq!(name, "bad");
            reason
        }
        Ok(_) => panic!("`{expression}` should not compile"),
        Err(other) => panic!("expected a condition error, got {other:?}"),
    }
}

fn missing(names: &[&str]) -> ConditionOutcome {
    MissingParameters(names.iter().map(|n| (*n).to_owned()).collect())
}

// --- stores/condition-data-types ---------------------------------------------------------------

#[test]
fn data_types_string() {
    let c = compile(
        "is_valid_string",
        r#"_string != "" && _string.startsWith("1") && _string.endsWith("1") && _string.contains("1") && _string.matches("[0-9]")"#,
        &[("_string", ty(TypeName::TYPE_NAME_STRING))],
    );
    assert_eq!(both(&c, json!({"_string": "1"})), Satisfied);
    assert_eq!(both(&c, json!({"_string": "1a1"})), Satisfied);
    assert_eq!(both(&c, json!({"_string": "2"})), NotSatisfied);
    assert_eq!(both(&c, json!({"_string": ""})), NotSatisfied);
    assert_eq!(both(&c, json!({})), missing(&["_string"]));
    let r = reason(&c, eval(&c, None, Some(json!({"_string": 1}))));
    assert!(
        r.contains("failed to convert parameter `_string` to type `string`"),
        "{r}"
    );
}

#[test]
fn data_types_int() {
    let c = compile(
        "is_valid_int",
        "_int != 0 && _int > 0",
        &[("_int", ty(TypeName::TYPE_NAME_INT))],
    );
    assert_eq!(both(&c, json!({"_int": 1})), Satisfied);
    assert_eq!(
        both(&c, json!({"_int": 1.0})),
        Satisfied,
        "integral floats are ints"
    );
    assert_eq!(
        both(&c, json!({"_int": "7"})),
        Satisfied,
        "OpenFGA parses numeric strings"
    );
    assert_eq!(both(&c, json!({"_int": 0})), NotSatisfied);
    assert_eq!(both(&c, json!({"_int": -5})), NotSatisfied);
    let r = reason(&c, eval(&c, Some(json!({"_int": 1.5})), None));
    assert!(
        r.contains("failed to convert parameter `_int` to type `int`"),
        "{r}"
    );
    reason(&c, eval(&c, Some(json!({"_int": true})), None));
    reason(&c, eval(&c, Some(json!({"_int": "seven"})), None));
    reason(&c, eval(&c, Some(json!({"_int": u64::MAX})), None));
}

#[test]
fn data_types_uint() {
    let c = compile(
        "is_valid_uint",
        "_uint != 0u && _uint > 0u",
        &[("_uint", ty(TypeName::TYPE_NAME_UINT))],
    );
    assert_eq!(both(&c, json!({"_uint": 1})), Satisfied);
    assert_eq!(both(&c, json!({"_uint": u64::MAX})), Satisfied);
    assert_eq!(both(&c, json!({"_uint": 0})), NotSatisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"_uint": -1}))));
    assert!(r.contains("to type `uint`"), "{r}");
    reason(&c, eval(&c, None, Some(json!({"_uint": 2.5}))));
}

#[test]
fn data_types_double() {
    let c = compile(
        "is_valid_double",
        "_double != 0.0 && _double > 0.0",
        &[("_double", ty(TypeName::TYPE_NAME_DOUBLE))],
    );
    assert_eq!(
        both(&c, json!({"_double": 1})),
        Satisfied,
        "JSON integers are doubles too"
    );
    assert_eq!(both(&c, json!({"_double": 0.5})), Satisfied);
    assert_eq!(both(&c, json!({"_double": 0})), NotSatisfied);
    assert_eq!(both(&c, json!({"_double": -0.5})), NotSatisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"_double": "abc"}))));
    assert!(r.contains("to type `double`"), "{r}");
}

#[test]
fn data_types_duration() {
    let c = compile(
        "is_valid_duration",
        r#"_duration != null && _duration != duration("0s") && _duration > duration("0s")"#,
        &[("_duration", ty(TypeName::TYPE_NAME_DURATION))],
    );
    for ok in ["10s", "1h30m", "1.5h", "100ms", "2us", "3ns", "1m0.5s"] {
        assert_eq!(both(&c, json!({ "_duration": ok })), Satisfied, "{ok}");
    }
    assert_eq!(both(&c, json!({"_duration": "0s"})), NotSatisfied);
    assert_eq!(both(&c, json!({"_duration": "0"})), NotSatisfied);
    assert_eq!(both(&c, json!({"_duration": "-1m"})), NotSatisfied);
    assert_eq!(both(&c, json!({})), missing(&["_duration"]));
    let r = reason(&c, eval(&c, Some(json!({"_duration": "10 seconds"})), None));
    assert!(
        r.starts_with("failed to convert parameter `_duration` to type `duration`"),
        "{r}"
    );
    reason(&c, eval(&c, Some(json!({"_duration": 10})), None));
    reason(&c, eval(&c, Some(json!({"_duration": null})), None));
}

/// A timestamp with an offset is the same instant in UTC, as OpenFGA (Go's CEL, protobuf
/// timestamps) reads it: its hour, day and string form are UTC's, and fractional seconds stay.
#[test]
fn timestamps_with_offsets_are_read_in_utc() {
    let c = compile(
        "utc",
        r#"t.getHours() == 8 && t.getDayOfMonth() == 0 && string(t) == "2023-01-01T08:00:00.25Z" && t == timestamp("2023-01-01T08:00:00.25Z")"#,
        &[("t", ty(TypeName::TYPE_NAME_TIMESTAMP))],
    );
    for t in [
        "2023-01-01T10:00:00.25+02:00",
        "2023-01-01T08:00:00.250Z",
        "2022-12-31T23:00:00.25-09:00",
    ] {
        assert_eq!(both(&c, json!({ "t": t })), Satisfied, "{t}");
    }
}

#[test]
fn data_types_timestamp() {
    let c = compile(
        "is_valid_timestamp",
        r#"_timestamp != null && _timestamp != timestamp("2019-01-01T00:00:00Z") && _timestamp > timestamp("2019-01-01T00:00:00Z")"#,
        &[("_timestamp", ty(TypeName::TYPE_NAME_TIMESTAMP))],
    );
    assert_eq!(
        both(&c, json!({"_timestamp": "2019-02-01T00:00:00Z"})),
        Satisfied
    );
    assert_eq!(
        both(&c, json!({"_timestamp": "2019-01-01T01:00:00.5+01:00"})),
        Satisfied
    );
    assert_eq!(
        both(&c, json!({"_timestamp": "2019-01-01T00:00:00Z"})),
        NotSatisfied
    );
    assert_eq!(
        both(&c, json!({"_timestamp": "2019-01-01T01:00:00+01:00"})),
        NotSatisfied,
        "same instant"
    );
    assert_eq!(
        both(&c, json!({"_timestamp": "2018-12-31T23:59:59Z"})),
        NotSatisfied
    );
    let r = reason(&c, eval(&c, None, Some(json!({"_timestamp": "yesterday"}))));
    assert!(r.contains("to type `timestamp`"), "{r}");
    reason(
        &c,
        eval(&c, None, Some(json!({"_timestamp": "2019-02-01"}))),
    );
    reason(
        &c,
        eval(&c, None, Some(json!({"_timestamp": 1_549_000_000}))),
    );
}

#[test]
fn data_types_map() {
    let c = compile(
        "is_valid_map_string",
        r#""key" in _mapstring && _mapstring["key"] != ""  && _mapstring["key"] > """#,
        &[(
            "_mapstring",
            generic(TypeName::TYPE_NAME_MAP, TypeName::TYPE_NAME_STRING),
        )],
    );
    assert_eq!(both(&c, json!({"_mapstring": {"key": "1"}})), Satisfied);
    assert_eq!(
        both(&c, json!({"_mapstring": {"other": "1"}})),
        NotSatisfied
    );
    assert_eq!(both(&c, json!({"_mapstring": {"key": ""}})), NotSatisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"_mapstring": {"key": 1}}))));
    assert!(
        r.contains("to type `map<string>`") && r.contains("`key`"),
        "{r}"
    );
    reason(&c, eval(&c, None, Some(json!({"_mapstring": ["key"]}))));
}

#[test]
fn data_types_list() {
    let c = compile(
        "is_valid_list_string",
        r#""1" in _liststring && _liststring[0] != "" && _liststring[0] > "" && _liststring.exists(x, x > "") && _liststring.exists_one(x, x > "") && _liststring.all(x, x > "")"#,
        &[(
            "_liststring",
            generic(TypeName::TYPE_NAME_LIST, TypeName::TYPE_NAME_STRING),
        )],
    );
    assert_eq!(both(&c, json!({"_liststring": ["1"]})), Satisfied);
    assert_eq!(
        both(&c, json!({"_liststring": ["1", "2"]})),
        NotSatisfied,
        "exists_one fails"
    );
    assert_eq!(both(&c, json!({"_liststring": ["2"]})), NotSatisfied);
    assert_eq!(both(&c, json!({"_liststring": []})), NotSatisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"_liststring": [1]}))));
    assert!(r.contains("to type `list<string>`"), "{r}");
    reason(&c, eval(&c, None, Some(json!({"_liststring": "1"}))));
}

#[test]
fn data_types_ipaddress() {
    let c = compile(
        "is_valid_ipaddress",
        r#"_ipaddress != null &&  _ipaddress != ipaddress("192.0.0.1")"#,
        &[("_ipaddress", ty(TypeName::TYPE_NAME_IPADDRESS))],
    );
    assert_eq!(both(&c, json!({"_ipaddress": "192.168.0.1"})), Satisfied);
    assert_eq!(both(&c, json!({"_ipaddress": "::1"})), Satisfied);
    assert_eq!(both(&c, json!({"_ipaddress": "192.0.0.1"})), NotSatisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"_ipaddress": "not-an-ip"}))));
    assert!(r.contains("to type `ipaddress`"), "{r}");
    reason(
        &c,
        eval(&c, None, Some(json!({"_ipaddress": "192.168.0.0/24"}))),
    );
}

// --- other sample stores -------------------------------------------------------------------------

#[test]
fn ip_based_access() {
    let c = compile(
        "in_company_network",
        "user_ip.in_cidr(cidr)",
        &[
            ("cidr", ty(TypeName::TYPE_NAME_STRING)),
            ("user_ip", ty(TypeName::TYPE_NAME_IPADDRESS)),
        ],
    );
    let tuple = || Some(json!({"cidr": "192.168.0.0/24"}));
    assert_eq!(
        eval(&c, tuple(), Some(json!({"user_ip": "192.168.0.1"}))).unwrap(),
        Satisfied
    );
    assert_eq!(
        eval(&c, tuple(), Some(json!({"user_ip": "192.168.1.1"}))).unwrap(),
        NotSatisfied
    );
    assert_eq!(
        eval(&c, tuple(), Some(json!({"user_ip": "::ffff:192.168.0.1"}))).unwrap(),
        NotSatisfied
    );
    assert_eq!(eval(&c, tuple(), None).unwrap(), missing(&["user_ip"]));
    assert_eq!(eval(&c, None, None).unwrap(), missing(&["cidr", "user_ip"]));
    assert_eq!(
        eval(
            &c,
            Some(json!({"cidr": "2001:db8::/32"})),
            Some(json!({"user_ip": "2001:db8::7"}))
        )
        .unwrap(),
        Satisfied
    );
    let r = reason(
        &c,
        eval(
            &c,
            Some(json!({"cidr": "192.168.0.0/33"})),
            Some(json!({"user_ip": "192.168.0.1"})),
        ),
    );
    assert!(r.contains("malformed CIDR"), "{r}");
}

#[test]
fn ipaddress_constructor_and_in_cidr_on_literals() {
    let c = compile(
        "ip_literals",
        r#"ipaddress("10.1.2.3").in_cidr("10.0.0.0/8") && ip == ipaddress("10.1.2.3") && !ip.in_cidr("11.0.0.0/8")"#,
        &[("ip", ty(TypeName::TYPE_NAME_IPADDRESS))],
    );
    assert_eq!(both(&c, json!({"ip": "10.1.2.3"})), Satisfied);
    assert_eq!(both(&c, json!({"ip": "10.1.2.4"})), NotSatisfied);
    let c = compile(
        "bad_literal",
        r#"ip == ipaddress("10.1.2")"#,
        &[("ip", ty(TypeName::TYPE_NAME_IPADDRESS))],
    );
    let r = reason(&c, eval(&c, None, Some(json!({"ip": "10.1.2.3"}))));
    assert!(r.contains("not a well-formed IP address"), "{r}");
}

fn temporal(name: &str) -> CompiledCondition {
    compile(
        name,
        "current_time < grant_time + grant_duration",
        &[
            ("current_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
            ("grant_duration", ty(TypeName::TYPE_NAME_DURATION)),
            ("grant_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
        ],
    )
}

#[test]
fn temporal_access() {
    // stores/temporal-access, and time_based_grant / non_expired_time_grant of the modeling guide
    // and superadmin stores, which share the expression.
    for name in [
        "temporal_access",
        "time_based_grant",
        "non_expired_time_grant",
    ] {
        let c = temporal(name);
        let one_hour =
            || Some(json!({"grant_time": "2023-01-01T00:00:00Z", "grant_duration": "1h"}));
        let five_secs =
            || Some(json!({"grant_time": "2023-01-01T00:00:00Z", "grant_duration": "5s"}));
        let at = |t: &str| Some(json!({ "current_time": t }));
        assert_eq!(
            eval(&c, one_hour(), at("2023-01-01T00:10:00Z")).unwrap(),
            Satisfied
        );
        assert_eq!(
            eval(&c, one_hour(), at("2023-01-01T02:00:00Z")).unwrap(),
            NotSatisfied
        );
        assert_eq!(
            eval(&c, one_hour(), at("2023-01-01T01:00:00Z")).unwrap(),
            NotSatisfied,
            "strictly before"
        );
        assert_eq!(
            eval(&c, five_secs(), at("2023-01-01T00:00:09Z")).unwrap(),
            NotSatisfied
        );
        assert_eq!(
            eval(&c, five_secs(), at("2023-01-01T00:00:01Z")).unwrap(),
            Satisfied
        );
        assert_eq!(
            eval(&c, one_hour(), None).unwrap(),
            missing(&["current_time"])
        );
        assert_eq!(
            eval(&c, None, None).unwrap(),
            missing(&["current_time", "grant_duration", "grant_time"])
        );
    }
}

#[test]
fn groups_resource_attributes() {
    let c = compile(
        "doc_viewer_condition",
        r#"document_attributes["status"] in allowed_statuses "#,
        &[
            (
                "allowed_statuses",
                generic(TypeName::TYPE_NAME_LIST, TypeName::TYPE_NAME_STRING),
            ),
            (
                "document_attributes",
                generic(TypeName::TYPE_NAME_MAP, TypeName::TYPE_NAME_STRING),
            ),
        ],
    );
    let engineering = || Some(json!({"allowed_statuses": ["draft", "published"]}));
    let marketing = || Some(json!({"allowed_statuses": ["published"]}));
    let status = |s: &str| Some(json!({"document_attributes": {"status": s}}));
    assert_eq!(eval(&c, engineering(), status("draft")).unwrap(), Satisfied);
    assert_eq!(
        eval(&c, engineering(), status("published")).unwrap(),
        Satisfied
    );
    assert_eq!(
        eval(&c, marketing(), status("draft")).unwrap(),
        NotSatisfied
    );
    assert_eq!(
        eval(&c, marketing(), status("published")).unwrap(),
        Satisfied
    );
    assert_eq!(
        eval(&c, marketing(), None).unwrap(),
        missing(&["document_attributes"])
    );
    // A map without the key is an evaluation error, as in CEL.
    let r = reason(
        &c,
        eval(&c, marketing(), Some(json!({"document_attributes": {}}))),
    );
    assert!(r.starts_with("failed to evaluate the expression"), "{r}");
}

#[test]
fn advanced_entitlements_limits() {
    for (name, count, limit) in [
        (
            "is_below_collaborator_limit",
            "collaborator_count",
            "collaborator_limit",
        ),
        (
            "is_below_row_sync_limit",
            "row_sync_count",
            "row_sync_limit",
        ),
        (
            "is_below_page_history_days_limit",
            "page_history_days_count",
            "page_history_days_limit",
        ),
    ] {
        let c = compile(
            name,
            &format!("{count} <= {limit}"),
            &[
                (count, ty(TypeName::TYPE_NAME_INT)),
                (limit, ty(TypeName::TYPE_NAME_INT)),
            ],
        );
        let plan = || Some(json!({ limit: 10 }));
        assert_eq!(
            eval(&c, plan(), Some(json!({ count: 9 }))).unwrap(),
            Satisfied
        );
        assert_eq!(
            eval(&c, plan(), Some(json!({ count: 10 }))).unwrap(),
            Satisfied
        );
        assert_eq!(
            eval(&c, plan(), Some(json!({ count: 11 }))).unwrap(),
            NotSatisfied
        );
        assert_eq!(eval(&c, plan(), None).unwrap(), missing(&[count]));
    }
}

#[test]
fn banking_transfer_limit() {
    let c = compile(
        "transfer_limit_policy",
        "transaction_amount <= transaction_limit || transaction_amount <= new_transaction_limit_approved",
        &[
            (
                "new_transaction_limit_approved",
                ty(TypeName::TYPE_NAME_DOUBLE),
            ),
            ("transaction_amount", ty(TypeName::TYPE_NAME_DOUBLE)),
            ("transaction_limit", ty(TypeName::TYPE_NAME_DOUBLE)),
        ],
    );
    let limits = || Some(json!({"transaction_limit": 100, "new_transaction_limit_approved": 200}));
    let amount = |a: f64| Some(json!({ "transaction_amount": a }));
    assert_eq!(eval(&c, limits(), amount(50.0)).unwrap(), Satisfied);
    assert_eq!(eval(&c, limits(), amount(150.0)).unwrap(), Satisfied);
    assert_eq!(eval(&c, limits(), amount(200.5)).unwrap(), NotSatisfied);
    // Every parameter the expression reads must be supplied, even one a short circuit would skip.
    assert_eq!(
        eval(&c, Some(json!({"transaction_limit": 100})), amount(50.0)).unwrap(),
        missing(&["new_transaction_limit_approved"])
    );
}

// --- context handling ----------------------------------------------------------------------------

#[test]
fn tuple_context_wins_over_request_context() {
    let c = compile(
        "eq",
        "x == 1 && y == 2",
        &[
            ("x", ty(TypeName::TYPE_NAME_INT)),
            ("y", ty(TypeName::TYPE_NAME_INT)),
        ],
    );
    assert_eq!(
        eval(&c, Some(json!({"x": 1})), Some(json!({"x": 5, "y": 2}))).unwrap(),
        Satisfied
    );
    assert_eq!(
        eval(&c, Some(json!({"x": 5})), Some(json!({"x": 1, "y": 2}))).unwrap(),
        NotSatisfied
    );
    assert_eq!(
        eval(&c, Some(json!({"x": 1, "y": 2})), Some(json!({"y": 3}))).unwrap(),
        Satisfied
    );
    // A bad value in the request is not looked at when the tuple supplies the key.
    assert_eq!(
        eval(&c, Some(json!({"x": 1, "y": 2})), Some(json!({"x": "bad"}))).unwrap(),
        Satisfied
    );
}

#[test]
fn undeclared_keys_are_ignored_at_evaluation() {
    let c = compile("eq", "x == 1", &[("x", ty(TypeName::TYPE_NAME_INT))]);
    assert_eq!(
        eval(
            &c,
            Some(json!({"x": 1, "extra": [1, 2]})),
            Some(json!({"other": "z"}))
        )
        .unwrap(),
        Satisfied
    );
}

#[test]
fn conversion_errors_win_over_missing_parameters() {
    let c = compile(
        "two",
        "a && b",
        &[
            ("a", ty(TypeName::TYPE_NAME_BOOL)),
            ("b", ty(TypeName::TYPE_NAME_BOOL)),
        ],
    );
    let r = reason(&c, eval(&c, None, Some(json!({"b": "yes"}))));
    assert!(
        r.contains("failed to convert parameter `b` to type `bool`"),
        "{r}"
    );
    assert_eq!(
        eval(&c, None, Some(json!({"b": true}))).unwrap(),
        missing(&["a"])
    );
}

#[test]
fn declared_but_unread_parameters_are_not_required() {
    let c = compile(
        "unused",
        "x > 1",
        &[
            ("x", ty(TypeName::TYPE_NAME_INT)),
            ("unused", ty(TypeName::TYPE_NAME_STRING)),
        ],
    );
    assert_eq!(eval(&c, None, Some(json!({"x": 2}))).unwrap(), Satisfied);
}

#[test]
fn any_parameters_take_json_as_is() {
    let c = compile(
        "any",
        r#"a != null && a.role == "admin" && a.level >= 3 && "x" in a.tags"#,
        &[("a", ty(TypeName::TYPE_NAME_ANY))],
    );
    assert_eq!(
        both(
            &c,
            json!({"a": {"role": "admin", "level": 3, "tags": ["x"]}})
        ),
        Satisfied
    );
    assert_eq!(
        both(
            &c,
            json!({"a": {"role": "admin", "level": 2, "tags": ["x"]}})
        ),
        NotSatisfied
    );
    let c = compile(
        "null_any",
        "a == null",
        &[("a", ty(TypeName::TYPE_NAME_ANY))],
    );
    assert_eq!(both(&c, json!({"a": null})), Satisfied);
    assert_eq!(both(&c, json!({"a": 1})), NotSatisfied);
}

#[test]
fn nested_generic_types() {
    let list_of_maps = ConditionParamType {
        type_name: TypeName::TYPE_NAME_LIST,
        generic_types: vec![generic(
            TypeName::TYPE_NAME_MAP,
            TypeName::TYPE_NAME_DURATION,
        )],
    };
    let c = compile(
        "nested",
        r#"xs.exists(m, m["ttl"] > duration("1m"))"#,
        &[("xs", list_of_maps)],
    );
    assert_eq!(
        both(&c, json!({"xs": [{"ttl": "30s"}, {"ttl": "2m"}]})),
        Satisfied
    );
    assert_eq!(both(&c, json!({"xs": [{"ttl": "30s"}]})), NotSatisfied);
    let r = reason(
        &c,
        eval(&c, None, Some(json!({"xs": [{"ttl": "forever"}]}))),
    );
    assert!(r.contains("to type `list<map<duration>>`"), "{r}");
    let ips = generic(TypeName::TYPE_NAME_LIST, TypeName::TYPE_NAME_IPADDRESS);
    let c = compile(
        "ips",
        r#"ips.all(ip, ip.in_cidr("10.0.0.0/8"))"#,
        &[("ips", ips)],
    );
    assert_eq!(
        both(&c, json!({"ips": ["10.0.0.1", "10.9.9.9"]})),
        Satisfied
    );
    assert_eq!(
        both(&c, json!({"ips": ["10.0.0.1", "11.0.0.1"]})),
        NotSatisfied
    );
}

#[test]
fn non_bool_results_are_errors() {
    let c = compile("any_result", "a", &[("a", ty(TypeName::TYPE_NAME_ANY))]);
    assert_eq!(both(&c, json!({"a": true})), Satisfied);
    let r = reason(&c, eval(&c, None, Some(json!({"a": 5}))));
    assert!(r.contains("to evaluate to a bool"), "{r}");
    let c = compile(
        "map_result",
        r#"m["k"]"#,
        &[(
            "m",
            generic(TypeName::TYPE_NAME_MAP, TypeName::TYPE_NAME_STRING),
        )],
    );
    let r = reason(&c, eval(&c, None, Some(json!({"m": {"k": "v"}}))));
    assert!(r.contains("`string`"), "{r}");
    let c = compile(
        "ip_result",
        r#"[ip][0]"#,
        &[("ip", ty(TypeName::TYPE_NAME_IPADDRESS))],
    );
    let r = reason(&c, eval(&c, None, Some(json!({"ip": "10.0.0.1"}))));
    assert!(r.contains("`IPAddress`"), "{r}");
}

#[test]
fn evidently_non_bool_expressions_do_not_compile() {
    let int = [("x", ty(TypeName::TYPE_NAME_INT))];
    for expression in [
        "x + 1",
        "x",
        "1",
        r#""yes""#,
        "[true]",
        "{'a': true}",
        "-x",
        "null",
    ] {
        let r = compile_error(expression, &int);
        assert!(
            r.starts_with("expected the expression to evaluate to a bool"),
            "{expression}: {r}"
        );
    }
}

#[test]
fn invalid_conditions_do_not_compile() {
    let int = [("x", ty(TypeName::TYPE_NAME_INT))];
    let r = compile_error("x ==", &int);
    assert!(r.starts_with("invalid expression: "), "{r}");
    compile_error("x > 1 &&& true", &int);
    compile_error("", &int);
    let r = compile_error("y > 1", &int);
    assert_eq!(r, "undeclared reference to `y`");
    let r = compile_error("x > 1 && a.b.c", &int);
    assert_eq!(r, "undeclared reference to `a.b.c`");
    let r = compile_error("x > 1", &[("x", ty(TypeName::TYPE_NAME_UNSPECIFIED))]);
    assert!(r.contains("invalid type for parameter `x`"), "{r}");
    compile_error("size(x) > 1", &[("x", ty(TypeName::TYPE_NAME_LIST))]);
    compile_error(
        "x > 1",
        &[(
            "x",
            generic(TypeName::TYPE_NAME_INT, TypeName::TYPE_NAME_INT),
        )],
    );
    compile_error(
        "size(x) > 1",
        &[(
            "x",
            ConditionParamType {
                type_name: TypeName::TYPE_NAME_MAP,
                generic_types: vec![
                    ty(TypeName::TYPE_NAME_STRING),
                    ty(TypeName::TYPE_NAME_STRING),
                ],
            },
        )],
    );
}

#[test]
fn comprehension_variables_and_type_names_are_not_references() {
    let xs = [(
        "xs",
        generic(TypeName::TYPE_NAME_LIST, TypeName::TYPE_NAME_INT),
    )];
    let c = compile(
        "scoped",
        "xs.all(x, x > 0) && xs.exists(y, xs.exists(z, y < z)) && type(xs) == list",
        &xs,
    );
    assert_eq!(both(&c, json!({"xs": [1, 2]})), Satisfied);
    assert_eq!(both(&c, json!({"xs": [2, 2]})), NotSatisfied);
    // A comprehension variable does not leak out of its scope.
    assert_eq!(
        compile_error("xs.all(x, x > 0) && x > 0", &xs),
        "undeclared reference to `x`"
    );
    // A comprehension variable named like a parameter shadows it.
    let c = compile("shadow", "xs.all(xs, xs > 0)", &xs);
    assert_eq!(both(&c, json!({"xs": [1]})), Satisfied);
}

#[test]
fn validating_tuple_context() {
    let d = def(
        "temporal_access",
        "current_time < grant_time + grant_duration",
        &[
            ("current_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
            ("grant_duration", ty(TypeName::TYPE_NAME_DURATION)),
            ("grant_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
        ],
    );
    let c = CompiledCondition::compile(&d).unwrap();
    let good = ctx(json!({"grant_time": "2023-01-01T00:00:00Z", "grant_duration": "1h"}));
    validate_context(&d, &good).unwrap();
    c.validate_context(&good).unwrap();
    validate_context(&d, &ctx(json!({}))).unwrap();

    let unknown = ctx(json!({"grant_time": "2023-01-01T00:00:00Z", "nope": 1}));
    for err in [validate_context(&d, &unknown), c.validate_context(&unknown)] {
        match err {
            Err(Error::Condition { name, reason }) => {
                assert_eq!(name, "temporal_access");
                assert_eq!(reason, "found invalid context parameter `nope`");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mismatch = ctx(json!({"grant_duration": 3600}));
    for err in [
        validate_context(&d, &mismatch),
        c.validate_context(&mismatch),
    ] {
        match err {
            Err(Error::Condition { reason, .. }) => {
                assert!(
                    reason.starts_with(
                        "failed to convert parameter `grant_duration` to type `duration`"
                    ),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn compiles_all_conditions_of_a_model() {
    let mut model = AuthorizationModel {
        schema_version: "1.1".to_owned(),
        ..Default::default()
    };
    let cond = def(
        "in_company_network",
        "user_ip.in_cidr(cidr)",
        &[
            ("cidr", ty(TypeName::TYPE_NAME_STRING)),
            ("user_ip", ty(TypeName::TYPE_NAME_IPADDRESS)),
        ],
    );
    model.conditions.insert(cond.name.clone(), cond);
    let temporal = def(
        "temporal_access",
        "current_time < grant_time + grant_duration",
        &[
            ("current_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
            ("grant_duration", ty(TypeName::TYPE_NAME_DURATION)),
            ("grant_time", ty(TypeName::TYPE_NAME_TIMESTAMP)),
        ],
    );
    model.conditions.insert(temporal.name.clone(), temporal);
    let unnamed = def("", "x > 1", &[("x", ty(TypeName::TYPE_NAME_INT))]);
    model.conditions.insert("unnamed".to_owned(), unnamed);
    let all = compile_all(&model).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["in_company_network"].name(), "in_company_network");
    assert_eq!(all["unnamed"].name(), "unnamed");

    model
        .conditions
        .insert("broken".to_owned(), def("broken", "(", &[]));
    assert!(matches!(compile_all(&model), Err(Error::Condition { name, .. }) if name == "broken"));
}

#[test]
fn compiled_conditions_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledCondition>();
    assert_send_sync::<Arc<CompiledCondition>>();
}

// --- Go duration strings -------------------------------------------------------------------------

#[test]
fn go_durations() {
    let ns = |s: &str| parse_go_duration(s).map(|d| d.num_nanoseconds().unwrap());
    assert_eq!(ns("10s"), Ok(10_000_000_000));
    assert_eq!(ns("1h30m"), Ok(5_400_000_000_000));
    assert_eq!(ns("1.5h"), Ok(5_400_000_000_000));
    assert_eq!(ns("100ms"), Ok(100_000_000));
    assert_eq!(ns("2us"), Ok(2_000));
    assert_eq!(ns("2\u{b5}s"), Ok(2_000));
    assert_eq!(ns("2\u{3bc}s"), Ok(2_000));
    assert_eq!(ns("3ns"), Ok(3));
    assert_eq!(ns("-1m"), Ok(-60_000_000_000));
    assert_eq!(ns("+5s"), Ok(5_000_000_000));
    assert_eq!(ns("0"), Ok(0));
    assert_eq!(ns("-0"), Ok(0));
    assert_eq!(ns("1.s"), Ok(1_000_000_000));
    assert_eq!(ns(".5s"), Ok(500_000_000));
    assert_eq!(ns("1h2m3.5s4ms"), Ok(3_723_504_000_000));
    assert_eq!(ns("0.000000001s"), Ok(1));
    assert_eq!(ns("2562047h47m16.854775807s"), Ok(i64::MAX));
    assert_eq!(ns("-2562047h47m16.854775808s"), Ok(i64::MIN));
    for bad in [
        "",
        "1",
        "s",
        ".s",
        "1d",
        "1 s",
        "10seconds",
        "-",
        "1h-1m",
        "2562047h47m16.854775808s",
        "9999999999999999999h",
    ] {
        assert!(parse_go_duration(bad).is_err(), "`{bad}` should not parse");
    }
}
