//! Static look at a parsed expression: the names it reads (to know which parameters it needs and
//! to reject undeclared ones) and whether its result obviously cannot be a bool.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};

/// A name read by the expression outside any comprehension variable's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference<'a> {
    /// The first segment: `a` for `a`, `a.b` and `a.f()`.
    pub root: &'a str,
    /// The whole qualified name as written, e.g. `google.protobuf.Duration`.
    pub qualified: String,
    /// The name is only the target of a call, `ns.f()`, so it may name a function namespace.
    pub call_target: bool,
}

/// Every free name the expression reads.
pub(crate) fn references(expr: &IdedExpr) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    walk(expr, &mut Vec::new(), &mut out);
    out
}

fn walk<'a>(e: &'a IdedExpr, bound: &mut Vec<&'a str>, out: &mut Vec<Reference<'a>>) {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str()) {
                out.push(Reference {
                    root: name,
                    qualified: name.clone(),
                    call_target: false,
                });
            }
        }
        Expr::Select(sel) => {
            if !sel.test
                && let Some((root, qualified)) = qualified_name(e)
            {
                if !bound.contains(&root) {
                    out.push(Reference {
                        root,
                        qualified,
                        call_target: false,
                    });
                }
                return;
            }
            walk(&sel.operand, bound, out);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                match &target.expr {
                    Expr::Ident(name) if !bound.contains(&name.as_str()) => out.push(Reference {
                        root: name,
                        qualified: name.clone(),
                        call_target: true,
                    }),
                    _ => walk(target, bound, out),
                }
            }
            for arg in &call.args {
                walk(arg, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, out);
            walk(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            walk(&c.loop_cond, bound, out);
            walk(&c.loop_step, bound, out);
            walk(&c.result, bound, out);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for el in &list.elements {
                walk(el, bound, out);
            }
        }
        Expr::Map(map) => walk_entries(map.entries.iter().map(|e| &e.expr), bound, out),
        Expr::Struct(s) => walk_entries(s.entries.iter().map(|e| &e.expr), bound, out),
    }
}

fn walk_entries<'a>(
    entries: impl Iterator<Item = &'a EntryExpr>,
    bound: &mut Vec<&'a str>,
    out: &mut Vec<Reference<'a>>,
) {
    for entry in entries {
        match entry {
            EntryExpr::StructField(f) => walk(&f.value, bound, out),
            EntryExpr::MapEntry(m) => {
                walk(&m.key, bound, out);
                walk(&m.value, bound, out);
            }
        }
    }
}

/// `a.b.c` spelled with identifiers only: its root `a` and the whole name.
fn qualified_name(e: &IdedExpr) -> Option<(&str, String)> {
    match &e.expr {
        Expr::Ident(name) => Some((name.as_str(), name.clone())),
        Expr::Select(sel) if !sel.test => {
            let (root, mut q) = qualified_name(&sel.operand)?;
            q.push('.');
            q.push_str(&sel.field);
            Some((root, q))
        }
        _ => None,
    }
}

/// What the expression evaluates to when it is evidently not a bool (a literal, a list, an
/// arithmetic operation, a parameter of another type), judged without a type checker.
pub(crate) fn evident_non_bool(
    e: &IdedExpr,
    param_type: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    match &e.expr {
        Expr::Literal(lit) => match lit {
            LiteralValue::Boolean(_) => None,
            LiteralValue::Bytes(_) => Some("bytes".to_owned()),
            LiteralValue::Double(_) => Some("double".to_owned()),
            LiteralValue::Int(_) => Some("int".to_owned()),
            LiteralValue::Null => Some("null".to_owned()),
            LiteralValue::String(_) => Some("string".to_owned()),
            LiteralValue::UInt(_) => Some("uint".to_owned()),
        },
        Expr::List(_) => Some("list".to_owned()),
        Expr::Map(_) => Some("map".to_owned()),
        Expr::Struct(s) => Some(s.type_name.clone()),
        Expr::Ident(name) => param_type(name),
        Expr::Call(call) => match call.func_name.as_str() {
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE => Some(format!(
                "the result of `{}`",
                call.func_name.trim_matches('_')
            )),
            _ => None,
        },
        Expr::Unspecified | Expr::Select(_) | Expr::Comprehension(_) => None,
    }
}
