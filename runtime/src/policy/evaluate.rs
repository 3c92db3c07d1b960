//! Evaluating a policy's rules on a context, explaining the outcome and verifying a recorded
//! evaluation.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Stage;
use super::document::{Policy, RuleTest};
use super::expr::{self, ENV};
use crate::intent::Intent;
use crate::money::Money;

/// What rules see: plain data, built by the session core from the session's own records (never
/// the clock). Integers are CEL ints; an unset optional field is null.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Context {
    stage: Stage,
    value: Value,
}

fn intent_json(intent: &Intent) -> Value {
    json!({
        "type": intent.intent_type().as_str(),
        "scope": intent.scope(),
        "max_price": price_json(intent.max_price()),
        "urgency": intent.urgency().as_str(),
        "settlement_mode": intent.settlement_mode().as_str(),
        "latency_ms_max": intent.latency_ms_max(),
        "deadline_ms": intent.deadline_ms(),
    })
}

fn price_json(price: Money) -> Value {
    json!({ "amount_minor": price.amount_minor(), "currency": price.currency().code() })
}

/// A provider's offer as rules see it (`offer` in a round, `selection` before settlement).
#[derive(Clone, Copy, Debug)]
pub struct OfferFacts<'a> {
    pub provider: &'a str,
    pub price: Money,
    pub latency_ms: u32,
}

impl Context {
    /// The context of admission: one provider found by discovery.
    pub fn admission(intent: &Intent, provider_id: &str, provider_name: &str, rail: &str) -> Self {
        Self {
            stage: Stage::Admission,
            value: json!({
                "intent": intent_json(intent),
                "provider": { "id": provider_id, "name": provider_name },
                "rail": rail,
            }),
        }
    }

    /// The context of a round: one provider's ask.
    pub fn round(
        intent: &Intent,
        provider_name: &str,
        rail: &str,
        round: u32,
        rounds_max: u32,
        offer: OfferFacts<'_>,
    ) -> Self {
        Self::with_offer(Stage::Round, "offer", intent, provider_name, rail, round, rounds_max, offer)
    }

    /// The context before settlement: the selected offer.
    pub fn settlement(
        intent: &Intent,
        provider_name: &str,
        rail: &str,
        round: u32,
        rounds_max: u32,
        selection: OfferFacts<'_>,
    ) -> Self {
        Self::with_offer(Stage::Settlement, "selection", intent, provider_name, rail, round, rounds_max, selection)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_offer(
        stage: Stage,
        field: &str,
        intent: &Intent,
        provider_name: &str,
        rail: &str,
        round: u32,
        rounds_max: u32,
        offer: OfferFacts<'_>,
    ) -> Self {
        let mut value = json!({
            "intent": intent_json(intent),
            "provider": { "id": offer.provider, "name": provider_name },
            "rail": rail,
            "round": round,
            "rounds_max": rounds_max,
        });
        if let Some(object) = value.as_object_mut() {
            object.insert(
                field.to_owned(),
                json!({ "provider": offer.provider, "price": price_json(offer.price), "latency_ms": offer.latency_ms }),
            );
        }
        Self { stage, value }
    }

    /// A recorded context: its variables must be exactly the stage's.
    pub fn from_json(stage: Stage, value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("the context is not an object")?;
        let expected: Vec<&str> = expr::variables(stage).iter().map(|(name, _)| *name).collect();
        if object.len() != expected.len() || !expected.iter().all(|name| object.contains_key(*name)) {
            return Err(format!("a {} context holds exactly {}", stage.as_str(), expected.join(", ")));
        }
        Ok(Self { stage, value: value.clone() })
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn to_json(&self) -> &Value {
        &self.value
    }

    /// The provider the context is about.
    pub fn subject(&self) -> &str {
        self.value.pointer("/provider/id").and_then(Value::as_str).unwrap_or_default()
    }

    fn lookup(&self, path: &str) -> Option<&Value> {
        let pointer = format!("/{}", path.replace('.', "/"));
        self.value.pointer(&pointer)
    }
}

fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(int), _) => cel::Value::Int(int),
            (None, Some(uint)) => cel::Value::UInt(uint),
            // Contexts hold integers only; anything else is not a value rules can use.
            _ => cel::Value::Null,
        },
        Value::String(text) => cel::Value::String(std::sync::Arc::new(text.clone())),
        Value::Array(items) => cel::Value::List(std::sync::Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(object) => {
            let map: HashMap<String, cel::Value> = object.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

/// What one rule decided.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    /// The expression could not be evaluated (a missing value, a type error, an overflow):
    /// counted as a denial (fail closed).
    Error,
}

/// One rule's line of an evaluation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTrace {
    pub rule: String,
    pub outcome: Outcome,
    /// Plain words: the rule's description and the values it read (deny), the error (error).
    pub message: String,
}

/// The evaluation of one stage's rules on one context: recorded in `policy.evaluated`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    pub stage: Stage,
    /// The provider the context is about.
    pub subject: String,
    pub context: Value,
    /// Every enforced rule of the stage, in the policy's order.
    pub trace: Vec<RuleTrace>,
    /// The first rule that denied (or failed), if any.
    pub denied_by: Option<String>,
}

/// An evaluation as read back from a transcript.
pub type RecordedEvaluation = Evaluation;

impl Evaluation {
    pub fn allowed(&self) -> bool {
        self.denied_by.is_none()
    }
}

/// A cel error in words that do not depend on hash-map order (values are not printed).
fn error_text(error: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match error {
        E::NoSuchKey(key) => format!("no such key: {key}"),
        E::UndeclaredReference(name) => format!("undeclared reference to {name}"),
        E::NoSuchOverload(overload) => overload.to_string(),
        E::DivisionByZero(_) => "division by zero".into(),
        E::RemainderByZero(_) => "remainder by zero".into(),
        E::Overflow(operator, _, _) => format!("integer overflow in {operator}"),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        E::ValuesNotComparable(_, _) => "values that cannot be compared".into(),
        E::UnsupportedBinaryOperator(operator, _, _) => format!("operator {operator} does not apply to these values"),
        E::InvalidArgumentCount { expected, actual } => format!("{actual} arguments where {expected} are expected"),
        E::UnexpectedType { got, want } => format!("a {got} where a {want} is expected"),
        E::FunctionError { function, .. } => format!("{function}() failed"),
        _ => "the expression could not be evaluated".into(),
    }
}

fn type_name(value: &cel::Value) -> &'static str {
    match value {
        cel::Value::List(_) => "list",
        cel::Value::Map(_) => "map",
        cel::Value::Int(_) => "int",
        cel::Value::UInt(_) => "uint",
        cel::Value::String(_) => "string",
        cel::Value::Bool(_) => "bool",
        cel::Value::Null => "null",
        _ => "value",
    }
}

struct Run<'p, 'c> {
    policy: &'p Policy,
    context: &'c Context,
    cel: cel::Context<'static, 'static>,
    /// Outcomes worked out so far, by rule index (groups reuse their members').
    memo: Vec<Option<(Outcome, String)>>,
}

impl Run<'_, '_> {
    fn outcome(&mut self, index: usize) -> (Outcome, String) {
        if let Some(known) = &self.memo[index] {
            return known.clone();
        }
        let rule = &self.policy.rules()[index];
        let decided = match &rule.test {
            RuleTest::When(_) => match self.policy.compiled(index) {
                None => (Outcome::Error, "the rule was not compiled".to_owned()),
                Some(compiled) => match compiled.program.execute(&self.cel) {
                    Ok(cel::Value::Bool(true)) => (Outcome::Allow, "allowed".to_owned()),
                    Ok(cel::Value::Bool(false)) => {
                        let values: Vec<String> = compiled
                            .paths
                            .iter()
                            .map(|path| {
                                let value = self.context.lookup(path).map_or("absent".to_owned(), Value::to_string);
                                format!("{path} is {value}")
                            })
                            .collect();
                        let message = if values.is_empty() {
                            rule.description.clone()
                        } else {
                            format!("{} ({})", rule.description, values.join(", "))
                        };
                        (Outcome::Deny, message)
                    }
                    Ok(other) => (Outcome::Error, format!("the expression gave a {}, not a bool", type_name(&other))),
                    Err(error) => (Outcome::Error, error_text(&error)),
                },
            },
            RuleTest::All(members) | RuleTest::Any(members) => {
                let any = matches!(rule.test, RuleTest::Any(_));
                let results: Vec<(String, Outcome)> =
                    members.iter().map(|member| (member.clone(), self.member(member))).collect();
                let allowed = if any {
                    results.iter().any(|(_, o)| *o == Outcome::Allow)
                } else {
                    results.iter().all(|(_, o)| *o == Outcome::Allow)
                };
                if allowed {
                    (Outcome::Allow, "allowed".to_owned())
                } else {
                    let failing: Vec<String> = results
                        .iter()
                        .filter(|(_, o)| *o != Outcome::Allow)
                        .map(|(name, o)| format!("{name} {}", if *o == Outcome::Deny { "denied" } else { "failed" }))
                        .collect();
                    // All: any failure fails the group. Any: the group fails only if every member did.
                    let failed = if any {
                        results.iter().all(|(_, o)| *o == Outcome::Error)
                    } else {
                        results.iter().any(|(_, o)| *o == Outcome::Error)
                    };
                    let outcome = if failed { Outcome::Error } else { Outcome::Deny };
                    (outcome, format!("{} ({})", rule.description, failing.join(", ")))
                }
            }
            RuleTest::Not(member) => match self.member(member) {
                Outcome::Allow => (Outcome::Deny, format!("{} ({member} allowed)", rule.description)),
                Outcome::Deny => (Outcome::Allow, "allowed".to_owned()),
                Outcome::Error => (Outcome::Error, format!("{member} could not be evaluated")),
            },
        };
        self.memo[index] = Some(decided.clone());
        decided
    }

    fn member(&mut self, name: &str) -> Outcome {
        match self.policy.rules().iter().position(|rule| rule.name == name) {
            Some(index) => self.outcome(index).0,
            None => Outcome::Error,
        }
    }
}

/// Evaluates every enforced rule of the context's stage. Pure and deterministic: the same
/// policy and context give the same evaluation, byte for byte.
pub fn evaluate(policy: &Policy, context: &Context) -> Evaluation {
    let mut cel = cel::Context::with_env(ENV.clone());
    if let Some(object) = context.value.as_object() {
        for (name, value) in object {
            cel.add_variable_from_value(name.clone(), to_cel(value));
        }
    }
    let mut run = Run { policy, context, cel, memo: vec![None; policy.rules().len()] };
    let mut trace = Vec::new();
    for (index, rule) in policy.rules().iter().enumerate() {
        if !rule.enforce || rule.stage != context.stage {
            continue;
        }
        let (outcome, message) = run.outcome(index);
        trace.push(RuleTrace { rule: rule.name.clone(), outcome, message });
    }
    let denied_by = trace.iter().find(|line| line.outcome != Outcome::Allow).map(|line| line.rule.clone());
    Evaluation {
        stage: context.stage,
        subject: context.subject().to_owned(),
        context: context.value.clone(),
        trace,
        denied_by,
    }
}

/// The evaluation in plain words: the verdict first, then one line per rule.
pub fn explain(evaluation: &Evaluation) -> String {
    let subject = &evaluation.subject;
    let at = match evaluation.context.get("round").and_then(Value::as_u64) {
        Some(round) if evaluation.stage == Stage::Round => format!("round {round}"),
        Some(round) if evaluation.stage == Stage::Settlement => format!("settlement (round {round})"),
        _ => evaluation.stage.as_str().to_owned(),
    };
    let mut lines = Vec::new();
    match evaluation.trace.iter().find(|line| Some(&line.rule) == evaluation.denied_by.as_ref()) {
        Some(line) if line.outcome == Outcome::Error => lines.push(format!(
            "rule {} denied provider {subject} at {at}: it could not be evaluated ({}), and a rule that fails denies",
            line.rule, line.message
        )),
        Some(line) => lines.push(format!("rule {} denied provider {subject} at {at}: {}", line.rule, line.message)),
        None => lines.push(format!("every {} rule allowed provider {subject} at {at}", evaluation.stage.as_str())),
    }
    for line in &evaluation.trace {
        let outcome = match line.outcome {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny ",
            Outcome::Error => "error",
        };
        lines.push(format!("  {outcome}  {}: {}", line.rule, line.message));
    }
    lines.join("\n")
}

/// How a recorded evaluation differs from its re-evaluation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mismatch {
    pub detail: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: re-evaluated {}, recorded {}", self.detail, self.expected, self.found)
    }
}

impl std::error::Error for Mismatch {}

/// Re-evaluates a recorded evaluation with `policy` and compares everything.
pub fn verify(policy: &Policy, recorded: &RecordedEvaluation) -> Result<(), Mismatch> {
    let context = Context::from_json(recorded.stage, &recorded.context).map_err(|detail| Mismatch {
        detail,
        expected: "a context of the stage".into(),
        found: recorded.context.to_string(),
    })?;
    let again = evaluate(policy, &context);
    let describe = |evaluation: &Evaluation| serde_json::to_string(&evaluation.trace).unwrap_or_default();
    if again.subject != recorded.subject {
        return Err(Mismatch {
            detail: "the subject differs".into(),
            expected: again.subject,
            found: recorded.subject.clone(),
        });
    }
    if again.denied_by != recorded.denied_by {
        return Err(Mismatch {
            detail: "the verdict differs".into(),
            expected: format!("{:?}", again.denied_by),
            found: format!("{:?}", recorded.denied_by),
        });
    }
    if again.trace != recorded.trace {
        return Err(Mismatch {
            detail: "the trace differs".into(),
            expected: describe(&again),
            found: describe(recorded),
        });
    }
    Ok(())
}
