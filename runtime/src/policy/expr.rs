//! Checking and compiling the CEL expression of a rule (`when`).
//!
//! cel-rust parses and interprets CEL but has no type checker, so what the policy engine needs to
//! know before a rule ever runs is checked here, on the parsed expression: every identifier is a
//! variable of the rule's stage (or a comprehension's own variable), every field path exists in
//! the context, every function is on the allowed list, nothing reads the clock or randomness,
//! comprehensions nest at most [`COMPREHENSION_NESTING_MAX`] deep and iterate lists only (a CEL
//! map is a hash map here: its iteration order is not fixed), and the expression can be bool.

use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::{Env, IdedExpr, Program};

use super::{PolicyError, Stage};

/// Longest `when` expression, in bytes: a rule is a line or two of logic, and the bound keeps
/// parsing and the checks here cheap.
pub const WHEN_BYTES_MAX: usize = 4 * 1024;
/// Deepest nesting of comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`): two levels
/// bound the work of a rule to the square of its list literals' lengths.
pub const COMPREHENSION_NESTING_MAX: usize = 2;
/// The most loop iterations one rule may run: the product of the lengths of the lists its nested
/// comprehensions iterate, summed over its comprehensions (every list is written in the rule, so
/// this is known before it runs).
pub const RULE_ITERATIONS_MAX: u64 = 4_096;
/// The most loop iterations all the rules of one policy may run together.
pub const POLICY_ITERATIONS_MAX: u64 = 16_384;

/// The standard CEL environment, built once: compiling and evaluating never rebuild it.
pub(crate) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Operators and functions a rule may call. Everything else is refused when the policy is
/// checked; clock and randomness functions are named separately to give the precise reason.
const ALLOWED_FUNCTIONS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "string",
];

/// Functions that would make a verdict depend on when or where it is computed.
const NONDETERMINISTIC_FUNCTIONS: &[&str] =
    &["now", "timestamp", "duration", "getDate", "getFullYear", "getHours", "rand", "random", "uuid", "env"];

/// A field of the context: a leaf or a nested object.
pub(crate) enum Field {
    Leaf,
    Object(&'static [(&'static str, Field)]),
}

const PRICE: Field = Field::Object(&[("amount_minor", Field::Leaf), ("currency", Field::Leaf)]);
const INTENT: Field = Field::Object(&[
    ("type", Field::Leaf),
    ("scope", Field::Leaf),
    ("max_price", PRICE),
    ("urgency", Field::Leaf),
    ("settlement_mode", Field::Leaf),
    ("latency_ms_max", Field::Leaf),
    ("deadline_ms", Field::Leaf),
]);
const PROVIDER: Field = Field::Object(&[("id", Field::Leaf), ("name", Field::Leaf)]);
const OFFER: Field = Field::Object(&[("provider", Field::Leaf), ("price", PRICE), ("latency_ms", Field::Leaf)]);

/// The variables of each stage, with their fields (docs/POLICY.md lists them).
pub(crate) fn variables(stage: Stage) -> &'static [(&'static str, Field)] {
    const ADMISSION: &[(&str, Field)] = &[("intent", INTENT), ("provider", PROVIDER), ("rail", Field::Leaf)];
    const ROUND: &[(&str, Field)] = &[
        ("intent", INTENT),
        ("provider", PROVIDER),
        ("rail", Field::Leaf),
        ("round", Field::Leaf),
        ("rounds_max", Field::Leaf),
        ("offer", OFFER),
    ];
    const SETTLEMENT: &[(&str, Field)] = &[
        ("intent", INTENT),
        ("provider", PROVIDER),
        ("rail", Field::Leaf),
        ("round", Field::Leaf),
        ("rounds_max", Field::Leaf),
        ("selection", OFFER),
    ];
    match stage {
        Stage::Admission => ADMISSION,
        Stage::Round => ROUND,
        Stage::Settlement => SETTLEMENT,
    }
}

/// A rule's compiled program and the context paths it reads (for explanations).
#[derive(Debug)]
pub(crate) struct Compiled {
    pub program: Program,
    pub paths: Vec<String>,
    /// The most loop iterations the rule can run.
    pub iterations: u64,
}

/// Parses, checks and compiles `source` for a rule of `stage`.
pub(crate) fn compile(rule: &str, stage: Stage, source: &str) -> Result<Compiled, PolicyError> {
    let invalid = |detail: String| PolicyError::Invalid(format!("rule {rule}: {detail}"));
    if source.len() > WHEN_BYTES_MAX {
        return Err(PolicyError::Unbounded(format!(
            "rule {rule}: the expression is {} bytes, more than {WHEN_BYTES_MAX}",
            source.len()
        )));
    }
    if source.trim().is_empty() {
        return Err(invalid("the expression is empty".into()));
    }
    let program = ENV.compile(source).map_err(|errors| {
        let first = errors.errors.first();
        match first {
            Some(error) => {
                invalid(format!("parse error at line {}, column {}: {}", error.pos.0, error.pos.1, error.msg))
            }
            None => invalid("parse error".into()),
        }
    })?;
    let mut checker = Checker { rule, stage, scopes: Vec::new(), paths: Vec::new(), multiplier: 1, iterations: 0 };
    checker.check(program.expression(), 0)?;
    if definitely_not_bool(program.expression()) {
        return Err(invalid("the expression does not give a bool (true allows, false denies)".into()));
    }
    let iterations = checker.iterations;
    let mut paths = checker.paths;
    paths.sort();
    paths.dedup();
    Ok(Compiled { program, paths, iterations })
}

struct Checker<'a> {
    rule: &'a str,
    stage: Stage,
    /// Variables bound by the comprehensions around the node being checked.
    scopes: Vec<String>,
    /// Context paths read, such as `offer.latency_ms`.
    paths: Vec<String>,
    /// How many times the node being checked runs (the product of the enclosing ranges).
    multiplier: u64,
    /// Loop iterations counted so far.
    iterations: u64,
}

/// The most elements a comprehension's range can have: a list written in the rule, or a
/// `map`/`filter` over one (never longer than its own range). `None` for anything else — a
/// variable could be a map, and maps iterate in no fixed order.
fn range_len(node: &IdedExpr) -> Option<u64> {
    match &node.expr {
        Expr::List(list) => Some(list.elements.len() as u64),
        Expr::Comprehension(inner) => range_len(&inner.iter_range),
        _ => None,
    }
}

impl Checker<'_> {
    fn invalid(&self, detail: String) -> PolicyError {
        PolicyError::Invalid(format!("rule {}: {detail}", self.rule))
    }

    fn check(&mut self, node: &IdedExpr, depth: usize) -> Result<(), PolicyError> {
        match &node.expr {
            Expr::Unspecified => Err(self.invalid("an incomplete expression".into())),
            Expr::Literal(LiteralValue::Double(_)) => Err(self.invalid(
                "floating-point numbers are not allowed: amounts are integer minor units, times whole milliseconds"
                    .into(),
            )),
            Expr::Literal(LiteralValue::Bytes(_)) => Err(self.invalid("bytes literals are not allowed".into())),
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => self.check_path(&[name.as_str()]),
            Expr::Select(select) => {
                let mut segments = vec![select.field.as_str()];
                let mut operand = &select.operand;
                loop {
                    match &operand.expr {
                        Expr::Select(inner) if !inner.test => {
                            segments.push(inner.field.as_str());
                            operand = &inner.operand;
                        }
                        Expr::Ident(root) => {
                            segments.push(root.as_str());
                            segments.reverse();
                            return self.check_path(&segments);
                        }
                        _ => return self.check(operand, depth),
                    }
                }
            }
            Expr::Call(call) => {
                let name = call.func_name.as_str();
                if NONDETERMINISTIC_FUNCTIONS.contains(&name) {
                    return Err(PolicyError::Nondeterministic(format!(
                        "rule {}: {name}() reads the clock, randomness or the host; a rule sees only the context \
                         it is given (the session's time is not part of it)",
                        self.rule
                    )));
                }
                if !ALLOWED_FUNCTIONS.contains(&name) {
                    return Err(self.invalid(format!(
                        "function {name}() is not allowed (allowed: size, contains, startsWith, endsWith, int, \
                         string, the operators and the macros has, all, exists, exists_one, map, filter)"
                    )));
                }
                if let Some(target) = &call.target {
                    self.check(target, depth)?;
                }
                call.args.iter().try_for_each(|arg| self.check(arg, depth))
            }
            Expr::List(list) => list.elements.iter().try_for_each(|element| self.check(element, depth)),
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => {
                    self.check(&entry.key, depth)?;
                    self.check(&entry.value, depth)
                }
                EntryExpr::StructField(_) => Err(self.invalid("struct fields are not allowed".into())),
            }),
            Expr::Struct(_) => Err(self.invalid("message literals are not allowed".into())),
            Expr::Comprehension(comprehension) => {
                if depth + 1 > COMPREHENSION_NESTING_MAX {
                    return Err(PolicyError::Unbounded(format!(
                        "rule {}: comprehensions (all, exists, exists_one, map, filter) nest more than \
                         {COMPREHENSION_NESTING_MAX} deep",
                        self.rule
                    )));
                }
                let Some(length) = range_len(&comprehension.iter_range) else {
                    return Err(PolicyError::Nondeterministic(format!(
                        "rule {}: a comprehension must iterate a list written in the rule, or a map or filter \
                         over one (a variable may hold a map, and maps have no fixed order)",
                        self.rule
                    )));
                };
                self.check(&comprehension.iter_range, depth + 1)?;
                self.check(&comprehension.accu_init, depth + 1)?;
                let outer = self.multiplier;
                self.multiplier = outer.saturating_mul(length.max(1));
                self.iterations = self.iterations.saturating_add(outer.saturating_mul(length));
                if self.iterations > RULE_ITERATIONS_MAX {
                    return Err(PolicyError::Unbounded(format!(
                        "rule {}: its comprehensions may run {} iterations, more than {RULE_ITERATIONS_MAX}",
                        self.rule, self.iterations
                    )));
                }
                let bound = 1 + usize::from(comprehension.iter_var2.is_some()) + 1;
                self.scopes.push(comprehension.iter_var.clone());
                if let Some(second) = &comprehension.iter_var2 {
                    self.scopes.push(second.clone());
                }
                self.scopes.push(comprehension.accu_var.clone());
                let checked = [&comprehension.loop_cond, &comprehension.loop_step, &comprehension.result]
                    .into_iter()
                    .try_for_each(|part| self.check(part, depth + 1));
                self.scopes.truncate(self.scopes.len() - bound);
                self.multiplier = outer;
                checked
            }
        }
    }

    /// A variable, or a field path rooted at one: it must exist in the stage's context.
    fn check_path(&mut self, segments: &[&str]) -> Result<(), PolicyError> {
        let Some((root, rest)) = segments.split_first() else { return Ok(()) };
        if self.scopes.iter().any(|bound| bound == root) {
            return Ok(());
        }
        if matches!(*root, "now" | "time" | "clock" | "random") {
            return Err(PolicyError::Nondeterministic(format!(
                "rule {}: {root} is not in the context: rules cannot read the clock or randomness",
                self.rule
            )));
        }
        let Some((_, field)) = variables(self.stage).iter().find(|(name, _)| name == root) else {
            let known: Vec<&str> = variables(self.stage).iter().map(|(name, _)| *name).collect();
            return Err(self.invalid(format!(
                "{root} is not a variable of the {} stage (known: {})",
                self.stage.as_str(),
                known.join(", ")
            )));
        };
        let mut field: &Field = field;
        for (index, segment) in rest.iter().enumerate() {
            match field {
                Field::Object(fields) => match fields.iter().find(|(name, _)| name == segment) {
                    Some((_, next)) => field = next,
                    None => {
                        return Err(self.invalid(format!("{} has no field {segment}", segments[..=index].join("."))));
                    }
                },
                Field::Leaf => {
                    return Err(self.invalid(format!("{} has no fields", segments[..=index].join("."))));
                }
            }
        }
        if matches!(field, Field::Leaf) {
            self.paths.push(segments.join("."));
        }
        Ok(())
    }
}

/// Whether the expression's value is certainly not a bool (what can be known without types).
fn definitely_not_bool(node: &IdedExpr) -> bool {
    match &node.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => false,
        Expr::Literal(_) | Expr::List(_) | Expr::Map(_) | Expr::Struct(_) => true,
        Expr::Call(call) => {
            matches!(call.func_name.as_str(), "-_" | "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "size" | "int" | "string")
        }
        _ => false,
    }
}
