//! Conditions: CEL expressions over typed parameters, evaluated against tuple and request context.
//!
//! A condition is compiled once per model ([`compile_all`]); evaluating it converts the context
//! values of its declared parameters to their types (the tuple's context wins over the request's
//! for the same key) and runs the expression, which must yield a bool. Parameters the
//! expression reads but neither context supplies are reported, not evaluated, as OpenFGA does.

mod ipaddr;
mod params;
mod refs;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use std::cell::Cell;

use cel::common::ast::{CallExpr, Expr, IdedExpr};
use cel::common::types::{CelBool, DYN_TYPE};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, Value};

use crate::error::{Error, Result};
use crate::model::{AuthorizationModel, ConditionDef};
use crate::tuple::ContextMap;
use params::ParamType;

/// Longest condition expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// Most list or map elements one evaluation of a condition may iterate over, all its
/// comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) together. Past it the
/// evaluation is an error for that check alone, so that `xs.all(a, xs.all(b, …))` over a long
/// list cannot pin a worker.
pub const MAX_EVALUATION_COST: u64 = 10_000;

/// The function every comprehension's range passes through, charging its size to the
/// evaluation's budget. Tenants cannot call it: `@` is not in CEL's identifiers.
const CHARGE: &str = "@gatehouse_charge";

thread_local! {
    /// What is left of the running evaluation's budget on this thread.
    static BUDGET_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Whether the running evaluation went over its budget: CEL swallows some errors
    /// (`err || true`), so the overrun is remembered beside the result.
    static OVER_BUDGET: Cell<bool> = const { Cell::new(false) };
}

/// A condition compiled once per model.
#[derive(Debug)]
pub struct CompiledCondition {
    name: String,
    /// The parsed expression, every comprehension's range charged to the budget.
    expr: IdedExpr,
    /// Declared parameters in name order, with whether the expression reads each.
    params: Vec<Param>,
}

#[derive(Debug)]
struct Param {
    name: String,
    ty: ParamType,
    referenced: bool,
}

/// Outcome of evaluating a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionOutcome {
    /// The expression evaluated to `true`.
    Satisfied,
    /// The expression evaluated to `false`.
    NotSatisfied,
    /// The expression reads these declared parameters (sorted) and no context supplied them.
    MissingParameters(Vec<String>),
}

/// Type names an expression may read without declaring them, e.g. `type(x) == string`.
const TYPE_IDENTIFIERS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

impl CompiledCondition {
    /// Decodes the parameter types and parses the expression; syntax errors, invalid parameter
    /// types and undeclared names are [`Error::Condition`].
    pub fn compile(def: &ConditionDef) -> Result<Self> {
        let fail = |reason: String| Error::Condition {
            name: def.name.clone(),
            reason,
        };
        let env = shared_env().map_err(fail)?;

        let mut params = Vec::with_capacity(def.parameters.len());
        for (name, t) in &def.parameters {
            let ty = ParamType::decode(t)
                .map_err(|e| fail(format!("invalid type for parameter `{name}`: {e}")))?;
            params.push(Param {
                name: name.clone(),
                ty,
                referenced: false,
            });
        }

        if def.expression.len() > MAX_EXPRESSION_BYTES {
            return Err(fail(format!(
                "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are accepted",
                def.expression.len()
            )));
        }
        crate::bounds::check(&def.expression, crate::bounds::Language::Cel).map_err(|e| {
            fail(format!(
                "invalid expression: {}:{}: {}",
                e.line, e.column, e.message
            ))
        })?;
        let (mut expr, _) = env
            .parser()
            .max_recursion_depth(crate::bounds::MAX_NESTING as u16 * 2)
            .parse_with_source_info(&def.expression)
            .map_err(|errors| {
                let msgs: Vec<String> = errors
                    .errors
                    .iter()
                    .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, lowercase_first(&e.msg)))
                    .collect();
                fail(format!("invalid expression: {}", msgs.join("; ")))
            })?;

        let mut read = BTreeSet::new();
        for r in refs::references(&expr) {
            if params.iter().any(|p| p.name == r.root) {
                read.insert(r.root);
            } else if !(r.call_target
                || TYPE_IDENTIFIERS.contains(&r.root)
                || env.types().find_type(&r.qualified).is_some())
            {
                return Err(fail(format!("undeclared reference to `{}`", r.qualified)));
            }
        }
        for p in &mut params {
            p.referenced = read.contains(p.name.as_str());
        }

        let param_type = |name: &str| {
            params
                .iter()
                .find(|p| p.name == name)
                .filter(|p| !p.ty.may_be_bool())
                .map(|p| p.ty.to_string())
        };
        if let Some(t) = refs::evident_non_bool(&expr, param_type) {
            return Err(fail(format!(
                "expected the expression to evaluate to a bool, but it evaluates to {}",
                type_phrase(&t)
            )));
        }

        charge_comprehensions(&mut expr);
        Ok(Self {
            name: def.name.clone(),
            expr,
            params,
        })
    }

    /// The condition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Evaluates the condition. Tuple context wins over request context for the same key
    /// (OpenFGA semantics); keys that are not declared parameters are ignored.
    pub fn evaluate(
        &self,
        tuple_ctx: Option<&ContextMap>,
        request_ctx: Option<&ContextMap>,
    ) -> Result<ConditionOutcome> {
        let env = shared_env().map_err(|reason| self.error(reason))?;
        let mut ctx = Context::with_env(Arc::clone(env));
        let mut missing = Vec::new();
        for p in &self.params {
            let value = tuple_ctx
                .and_then(|c| c.0.get(&p.name))
                .or_else(|| request_ctx.and_then(|c| c.0.get(&p.name)));
            match value {
                Some(v) => {
                    let val =
                        p.ty.to_val(v)
                            .map_err(|e| self.error(conversion_error(p, &e)))?;
                    ctx.add_variable_as_val(p.name.as_str(), val);
                }
                None if p.referenced => missing.push(p.name.clone()),
                None => {}
            }
        }
        if !missing.is_empty() {
            return Ok(ConditionOutcome::MissingParameters(missing));
        }

        let result = {
            let _budget = Budget::start(MAX_EVALUATION_COST);
            let result = Value::resolve_val(&self.expr, &ctx);
            if OVER_BUDGET.get() {
                return Err(self.error(format!(
                    "the evaluation went over its cost budget of {MAX_EVALUATION_COST} iterations"
                )));
            }
            result
        }
        .map_err(|e| {
            self.error(format!(
                "failed to evaluate the expression: {}",
                lowercase_first(&e.to_string())
            ))
        })?;
        match result.downcast_ref::<CelBool>().map(|b| *b.inner()) {
            Some(true) => Ok(ConditionOutcome::Satisfied),
            Some(false) => Ok(ConditionOutcome::NotSatisfied),
            None => Err(self.error(format!(
                "expected the expression to evaluate to a bool, but it evaluated to {}",
                type_phrase(result.get_type().name())
            ))),
        }
    }

    /// Checks a context written with a tuple against the declared parameter types.
    pub fn validate_context(&self, ctx: &ContextMap) -> Result<()> {
        for (key, value) in &ctx.0 {
            let Some(p) = self.params.iter().find(|p| &p.name == key) else {
                return Err(self.error(format!("found invalid context parameter `{key}`")));
            };
            p.ty.to_val(value)
                .map_err(|e| self.error(conversion_error(p, &e)))?;
        }
        Ok(())
    }

    fn error(&self, reason: String) -> Error {
        Error::Condition {
            name: self.name.clone(),
            reason,
        }
    }
}

/// Compiles all conditions of a model, keyed by name.
pub fn compile_all(model: &AuthorizationModel) -> Result<HashMap<String, Arc<CompiledCondition>>> {
    model
        .conditions
        .iter()
        .map(|(key, def)| {
            let compiled = if def.name.is_empty() {
                // The model's key names a condition whose definition left its name out.
                let named = ConditionDef {
                    name: key.clone(),
                    ..def.clone()
                };
                CompiledCondition::compile(&named)?
            } else {
                CompiledCondition::compile(def)?
            };
            Ok::<_, Error>((key.clone(), Arc::new(compiled)))
        })
        .collect()
}

/// Validates a context value against the declared parameter types (used when writing tuples):
/// unknown keys and type mismatches are errors.
pub fn validate_context(def: &ConditionDef, ctx: &ContextMap) -> Result<()> {
    let fail = |reason: String| Error::Condition {
        name: def.name.clone(),
        reason,
    };
    for (key, value) in &ctx.0 {
        let Some(t) = def.parameters.get(key) else {
            return Err(fail(format!("found invalid context parameter `{key}`")));
        };
        let ty = ParamType::decode(t)
            .map_err(|e| fail(format!("invalid type for parameter `{key}`: {e}")))?;
        ty.to_val(value).map_err(|e| {
            fail(format!(
                "failed to convert parameter `{key}` to type `{ty}`: {e}"
            ))
        })?;
    }
    Ok(())
}

fn conversion_error(p: &Param, reason: &str) -> String {
    format!(
        "failed to convert parameter `{}` to type `{}`: {reason}",
        p.name, p.ty
    )
}

fn type_phrase(t: &str) -> String {
    if t.starts_with("the ") {
        t.to_owned()
    } else {
        format!("a value of type `{t}`")
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The running evaluation's budget on this thread, reset when it ends (even by a panic), so
/// that the next evaluation starts afresh.
struct Budget;

impl Budget {
    fn start(cost: u64) -> Self {
        BUDGET_LEFT.set(cost);
        OVER_BUDGET.set(false);
        Budget
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        BUDGET_LEFT.set(u64::MAX);
        OVER_BUDGET.set(false);
    }
}

/// Charges a comprehension's range (its size, at least 1) to the running evaluation's budget
/// and passes it on; past the budget every charge fails.
fn charge<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> std::result::Result<CowVal<'b, 'v>, ExecutionError> {
    let range = args
        .pop()
        .ok_or_else(|| ExecutionError::function_error(CHARGE, "a range is required"))?;
    let size = range
        .as_sizer()
        .map_or(1, |s| u64::try_from(*s.size().inner()).unwrap_or(0).max(1));
    let left = BUDGET_LEFT.get();
    if OVER_BUDGET.get() || size > left {
        OVER_BUDGET.set(true);
        BUDGET_LEFT.set(0);
        return Err(ExecutionError::function_error(
            CHARGE,
            "the evaluation cost budget is exhausted",
        ));
    }
    BUDGET_LEFT.set(left - size);
    Ok(range)
}

/// Wraps the range of every comprehension in `expr` in [`CHARGE`]. Walks with a stack of its
/// own: the expression's depth is bounded, but not by this function's frames.
fn charge_comprehensions(expr: &mut IdedExpr) {
    let mut stack: Vec<&mut IdedExpr> = vec![expr];
    while let Some(e) = stack.pop() {
        match &mut e.expr {
            Expr::Comprehension(c) => {
                let range = std::mem::take(&mut c.iter_range);
                c.iter_range = IdedExpr {
                    id: range.id,
                    expr: Expr::Call(CallExpr {
                        func_name: CHARGE.into(),
                        target: None,
                        args: vec![range],
                    }),
                };
                let c = &mut **c;
                if let Expr::Call(call) = &mut c.iter_range.expr {
                    stack.extend(call.args.iter_mut());
                }
                stack.push(&mut c.accu_init);
                stack.push(&mut c.loop_cond);
                stack.push(&mut c.loop_step);
                stack.push(&mut c.result);
            }
            Expr::Call(call) => {
                if let Some(t) = call.target.as_deref_mut() {
                    stack.push(t);
                }
                stack.extend(call.args.iter_mut());
            }
            Expr::List(l) => stack.extend(l.elements.iter_mut()),
            Expr::Map(m) => {
                for entry in &mut m.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                        stack.push(&mut me.key);
                        stack.push(&mut me.value);
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &mut st.entries {
                    if let cel::common::ast::EntryExpr::StructField(f) = &mut entry.expr {
                        stack.push(&mut f.value);
                    }
                }
            }
            Expr::Select(sel) => stack.push(&mut sel.operand),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
}

/// The CEL environment shared by every condition: the standard library plus `ipaddress`, and
/// the budget's charge.
fn shared_env() -> std::result::Result<&'static Arc<Env>, String> {
    static ENV: LazyLock<std::result::Result<Arc<Env>, String>> = LazyLock::new(|| {
        let mut env = Env::stdlib();
        ipaddr::register(&mut env)
            .map_err(|e| format!("failed to declare the ipaddress functions: {e}"))?;
        env.add_overload(CHARGE, "gatehouse_charge_dyn", vec![DYN_TYPE], charge)
            .map_err(|e| format!("failed to declare the cost budget: {e}"))?;
        Ok(Arc::new(env))
    });
    ENV.as_ref().map_err(Clone::clone)
}
