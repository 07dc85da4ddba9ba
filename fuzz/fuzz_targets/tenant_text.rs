//! What a tenant writes, deeply nested and oversized, through the real actix-web app: CEL
//! conditions in models, Cedar policies (through the dry run), Cedar templates with links, Cedar
//! schemas of nested records, and condition contexts whose lists make evaluation expensive.
//!
//! The first byte picks what is written; every further byte picks a token of that language
//! (low five bits) and how many times it is repeated (high three bits: 1, 2, 4, … 128), so that
//! short inputs reach thousands of brackets, operators or `if`s. Whatever comes out, the
//! answer is a 2xx or a 4xx with a JSON `code` — never a 5xx, a crash (a stack overflow aborts
//! the fuzzer) or a pinned worker (run with `-timeout=10`).

#![no_main]

mod app;

use actix_web::http::Method;
use app::{FIXTURE, exercise};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const CEL: &[&str] = &[
    "(", ")", "[", "]", "{", "}", "!", "-", "+", "*", " && ", " || ", " == ", " < ", ".a", "x",
    "1", "xs", "\"s\"", "'s'", "r\"\\\"", "//c\n", "xs.all(a, ", "xs.exists(b, ", "xs.map(c, ",
    " ? ", " : ", "size(", ", ", "true", " in ", "\"\"\"",
];

const CEDAR: &[&str] = &[
    "(", ")", "[", "]", "{", "}", "!", "-", "+", "*", " && ", " || ", " == ", " < ", ".a",
    "context", "1", "\"s\"", "if true then ", " else ", " in ", " has a", " like \"*\"",
    "principal", "resource", ",", ";", "permit (principal, action, resource) when { ",
    "forbid (principal, action, resource) unless { ", "?principal", "//c\n", "@id(\"x\")",
];

/// Text built from `tokens` as the bytes say.
fn text(tokens: &[&str], bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        let token = tokens[usize::from(b & 0x1f) % tokens.len()];
        for _ in 0..(1usize << (b >> 5)) {
            out.push_str(token);
        }
    }
    out
}

/// The body of a dry run whose Cedar schema nests context records as deep as the bytes say,
/// written as text: a `serde_json::Value` that deep would cost the harness more to drop (under
/// ASan) than the server spends refusing it.
fn nested_schema_body(bytes: &[u8]) -> Vec<u8> {
    let depth: usize = bytes.iter().map(|b| usize::from(*b)).sum::<usize>() % 4096;
    let open = r#"{"type":"Record","attributes":{"a":"#.repeat(depth);
    let close = "}}".repeat(depth);
    format!(
        r#"{{"policies":"permit (principal, action, resource) when {{ context.rebac }};","limit":1,"schema":{{"":{{"entityTypes":{{"user":{{}},"doc":{{}}}},"actions":{{"viewer":{{"appliesTo":{{"principalTypes":["user"],"resourceTypes":["doc"],"context":{{"type":"Record","attributes":{{"deep":{open}{{"type":"Long"}}{close}}}}}}}}}}}}}}}}}"#
    )
    .into_bytes()
}

fuzz_target!(
    init: FIXTURE.with(|_| ()),
    |data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with(|fx| {
        let (method, path, body) = match selector % 6 {
            0 => (
                Method::POST,
                format!("/stores/{}/authorization-models", fx.model_store),
                json!({
                    "schema_version": "1.1",
                    "type_definitions": [
                        { "type": "user" },
                        { "type": "doc", "relations": { "viewer": { "this": {} } },
                          "metadata": { "relations": { "viewer": { "directly_related_user_types": [
                              { "type": "user", "condition": "c" }
                          ] } } } }
                    ],
                    "conditions": { "c": { "name": "c", "expression": text(CEL, rest), "parameters": {
                        "x": { "type_name": "TYPE_NAME_INT" },
                        "xs": { "type_name": "TYPE_NAME_LIST", "generic_types": [{ "type_name": "TYPE_NAME_INT" }] },
                        "m": { "type_name": "TYPE_NAME_MAP", "generic_types": [{ "type_name": "TYPE_NAME_ANY" }] }
                    } } }
                }),
            ),
            // Policies go through the dry run, which compiles them as a save does and keeps
            // nothing (saved versions would pile up in memory across inputs).
            1 => (
                Method::POST,
                format!("/stores/{}/policies/dry-run", fx.store),
                json!({ "policies": text(CEDAR, rest), "limit": 1 }),
            ),
            2 => (
                Method::POST,
                format!("/stores/{}/policies/dry-run", fx.store),
                json!({ "policies": text(CEDAR, rest), "limit": 5 }),
            ),
            3 => (
                Method::POST,
                format!("/stores/{}/policies/dry-run", fx.store),
                json!({
                    "policies": format!("@id(\"t\")\npermit (principal == ?principal, action, resource) when {{ {} }};", text(CEDAR, rest)),
                    "links": [{ "id": "l", "template": "t", "principal": "user:anne" }],
                    "limit": 1,
                }),
            ),
            4 => {
                let path = format!("/stores/{}/policies/dry-run", fx.store);
                fx.runner
                    .block_on(exercise(fx, Method::POST, path, nested_schema_body(rest)));
                return;
            }
            _ => {
                let n = rest.iter().map(|b| usize::from(*b)).sum::<usize>() % 20_000;
                (
                    Method::POST,
                    format!("/stores/{}/check", fx.store),
                    json!({
                        "tuple_key": { "user": "user:anne", "relation": "reader", "object": "doc:costly" },
                        "context": { "xs": (0..n).collect::<Vec<usize>>() }
                    }),
                )
            }
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        fx.runner.block_on(exercise(fx, method, path, body));
    });
    }
);
