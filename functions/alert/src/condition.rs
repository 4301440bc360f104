//! CEL conditions: compiled once per call, evaluated against the variables of one alert series
//! (see the crate documentation for the variable set).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, MapExpr, StructExpr};
use cel::{Context, Env, IdedExpr, Program};

use crate::depth;
use crate::state::Seen;
use crate::types::{Severity, Value, to_cel};
use weir_contract::pattern::KeyPattern;

/// The variables a condition may use.
pub const VARIABLES: [&str; 7] = ["value", "previous", "key", "parts", "device", "ts", "keys"];

/// The longest condition accepted, in bytes: room for some twenty comparisons joined by `&&`
/// or `||`. It bounds what compiling and evaluating one condition costs besides its depth.
pub const MAX_CONDITION_BYTES: usize = 1_000;

/// The deepest condition accepted, as bounded by a scan of its text before cel parses it: a
/// level for each link of a chain (`.x`, `+ 1`, `in`), each ternary and each bracket's content,
/// two for an opening bracket (`[0]`, `.f()`), and ⌈log₂ n⌉ for a run of n `&&` or `||`.
///
/// How it was chosen. cel 0.15 recurses once per level when it parses, evaluates and drops an
/// expression, and limits only the nesting of brackets (96), not chains. Natively (x86-64,
/// release) parsing takes some 7 KiB of stack per nested bracket and 0.5 KiB per link of a
/// chain (`value` followed by 4,375 `.x` overflowed a 2 MiB thread), evaluating 1.5 KiB per
/// level. The alerter component was measured in wasmtime with its default 512 KiB wasm stack
/// and Rust's 1 MiB shadow stack: parsing needs 31 KiB, plus 2.5 KiB per nested bracket and
/// 0.25 KiB per link (it trapped at some 1,800 links); evaluating needs 1.3 KiB of shadow stack
/// per level (it trapped at some 800 levels of `value[0][0]…` or `value + 1 + 1…`). The deepest
/// conditions under 64 levels, 21 nested brackets, need 83 KiB of the wasm stack and 200 KiB
/// natively, a sixth and a tenth of what there is (the stacks would hold nine and twelve times
/// as many brackets); a 64-link chain evaluates twelve times below the shadow stack's trap.
/// Hand-written conditions need far less: one of [`MAX_CONDITION_BYTES`] joining comparisons
/// with `&&` and `||` uses about a dozen levels.
pub const MAX_CONDITION_LEVELS: usize = 64;

/// The standard CEL environment, built once per instance.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// One compiled CEL expression and its source (for messages).
#[derive(Debug)]
pub struct Condition {
    source: String,
    program: Program,
    /// Which of [`VARIABLES`] the expression reads: only those are built for an evaluation
    /// (building `keys` and `parts` costs allocations a plain `value > 80` does not need).
    uses: [bool; VARIABLES.len()],
}

impl Condition {
    /// Compiles `source`, refusing a syntax error, a variable outside [`VARIABLES`], and a
    /// condition past [`MAX_CONDITION_BYTES`] or [`MAX_CONDITION_LEVELS`] (checked first,
    /// without cel: it would overflow the stack on some).
    pub fn compile(source: &str) -> Result<Condition, String> {
        check_size(source)?;
        let program = env()
            .compile(source)
            .map_err(|e| format!("invalid CEL expression `{source}`: {}", describe(e)))?;
        let references = program.references();
        let mut declared = Vec::new();
        comprehension_variables(program.expression(), &mut declared);
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|name| !VARIABLES.contains(name) && !declared.contains(name))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(format!(
                "CEL expression `{source}` uses unknown variable(s) {}; the variables are {}",
                unknown.join(", "),
                VARIABLES.join(", ")
            ));
        }
        let variables = references.variables();
        let uses = VARIABLES.map(|name| variables.contains(&name));
        Ok(Condition {
            source: source.to_owned(),
            program,
            uses,
        })
    }

    /// Whether the expression reads `variable` (one of [`VARIABLES`]).
    fn uses(&self, variable: &str) -> bool {
        VARIABLES
            .iter()
            .position(|name| *name == variable)
            .is_some_and(|at| self.uses[at])
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition holds. An evaluation error (a missing `keys` entry, a comparison
    /// between a number and a string, ...) or a result that is not a boolean counts as "does not
    /// hold": rules see devices whose keys come and go, and an alert must not fire on a type error.
    pub fn holds(&self, bindings: &Bindings<'_>) -> bool {
        let mut context = Context::with_env(Arc::clone(env()));
        if self.uses("value") {
            context.add_variable_from_value("value", to_cel(bindings.value));
        }
        if self.uses("previous") {
            context.add_variable_from_value(
                "previous",
                bindings.previous.map_or(cel::Value::Null, to_cel),
            );
        }
        if self.uses("key") {
            context.add_variable_from_value("key", bindings.key);
        }
        if self.uses("parts") {
            context.add_variable_from_value(
                "parts",
                cel::Value::List(Arc::new(
                    bindings.key.split('.').map(cel::Value::from).collect(),
                )),
            );
        }
        if self.uses("device") {
            context.add_variable_from_value("device", bindings.device);
        }
        if self.uses("ts") {
            context.add_variable_from_value("ts", bindings.ts);
        }
        if self.uses("keys") {
            let keys: HashMap<String, cel::Value> = bindings
                .keys
                .iter()
                .map(|(key, seen)| (key.clone(), to_cel(&seen.value)))
                .collect();
            context.add_variable_from_value("keys", keys);
        }
        matches!(self.program.execute(&context), Ok(cel::Value::Bool(true)))
    }
}

/// Refuses a condition too long or too deep for cel to parse and evaluate safely, before cel
/// sees it. The messages quote no source: it may be long.
fn check_size(source: &str) -> Result<(), String> {
    if source.len() > MAX_CONDITION_BYTES {
        return Err(format!(
            "the CEL expression is {} bytes long; at most {MAX_CONDITION_BYTES} are accepted",
            source.len()
        ));
    }
    let levels =
        depth::bound(source).map_err(|e| format!("invalid CEL expression `{source}`: {e}"))?;
    if levels > MAX_CONDITION_LEVELS {
        return Err(format!(
            "the CEL expression is nested or chained too deeply: {levels} levels, at most \
             {MAX_CONDITION_LEVELS} are accepted (a level is a `.`, an operator, a ternary; \
             a bracket is two)"
        ));
    }
    Ok(())
}

/// cel's errors as a one-line message: what and where, without the debug dumps some of them
/// carry (its recursion limit is reported as `OtherError(ParseError { .. })`) nor the
/// complaints of its own visitor (``No `ExprContextAll`!``) that follow a syntax error. cel's
/// `Display` is not used: it panics on some of its own positions (a column of -1).
fn describe(errors: cel::ParseErrors) -> String {
    let mut parts = Vec::new();
    for error in &errors.errors {
        let what = if error.msg.contains("Recursion limit") {
            "it is nested too deeply"
        } else if error.msg.starts_with("No `") {
            continue;
        } else if ["Error(", "Error {", "{ source"]
            .iter()
            .any(|dump| error.msg.contains(dump))
        {
            "Syntax error"
        } else {
            error.msg.as_str()
        };
        let part = match error.pos {
            (line, column) if line > 0 && column > 0 => {
                format!("{what} (line {line}, column {column})")
            }
            _ => what.to_owned(),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        return "Syntax error".to_owned();
    }
    parts.join("; ")
}

/// Collects the variables that macros such as `exists(k, ...)` declare, which
/// [`Program::references`] reports as if they were free.
fn comprehension_variables<'e>(expression: &'e IdedExpr, declared: &mut Vec<&'e str>) {
    if let Expr::Comprehension(c) = &expression.expr {
        declared.push(&c.iter_var);
        declared.extend(c.iter_var2.as_deref());
        declared.push(&c.accu_var);
    }
    for child in children(expression) {
        comprehension_variables(child, declared);
    }
}

/// The direct sub-expressions of `expression` in cel's tree.
pub(crate) fn children(expression: &IdedExpr) -> Vec<&IdedExpr> {
    match &expression.expr {
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::StructField(field) => vec![&field.value],
                EntryExpr::MapEntry(entry) => vec![&entry.key, &entry.value],
            })
            .collect(),
        Expr::Select(select) => vec![&*select.operand],
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Vec::new(),
    }
}

/// What one evaluation of a rule's conditions sees.
pub struct Bindings<'a> {
    /// The alerting key's current value.
    pub value: &'a Value,
    /// The key's value before that, if any.
    pub previous: Option<&'a Value>,
    /// The alerting key.
    pub key: &'a str,
    /// The device.
    pub device: &'a str,
    /// The timestamp of the point being evaluated.
    pub ts: i64,
    /// The latest value of every key in the rule's scope that the state remembers.
    pub keys: &'a BTreeMap<String, Seen>,
}

/// A rule's compiled conditions and patterns.
#[derive(Debug)]
pub struct Conditions {
    /// The raise conditions, strongest level first.
    pub levels: Vec<(Severity, Condition)>,
    /// The clear condition.
    pub clear: Option<Condition>,
    /// The alerting key patterns.
    pub keys: Vec<KeyPattern>,
    /// The context key patterns.
    pub context: Vec<KeyPattern>,
}

/// What a key is to a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It has alerts of its own.
    Alerting,
    /// Conditions read it through `keys`.
    Context,
}

impl Conditions {
    /// The key's role in the rule, `None` if the rule does not watch it.
    pub fn role(&self, key: &str) -> Option<Role> {
        if self.keys.iter().any(|p| p.matches(key)) {
            Some(Role::Alerting)
        } else if self.context.iter().any(|p| p.matches(key)) {
            Some(Role::Context)
        } else {
            None
        }
    }
}
