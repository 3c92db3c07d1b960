//! The policy document: `pactum-policy/2` files, `extends`, rule groups, composition, the
//! canonical JSON recorded in `session.created` and `policy_hash`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use pactum_transcripts::Digest;
use pactum_transcripts::canonical::to_canonical_string;

use super::expr::{self, Compiled};
use super::{PolicyError, Stage, StaticPolicy};
use crate::intent::{POLICY_FORMAT, PolicyRule, SettlementMode};
use crate::money::{Currency, Money};

/// Name and version of the format of policies with rules.
pub const POLICY_FORMAT_V2: &str = "pactum-policy/2";
/// The most rules a resolved policy may hold: every rule of a stage runs for every provider or
/// ask, and the bound keeps a stage's evaluation well under a millisecond.
pub const RULES_MAX: usize = 64;
/// The longest chain of `extends`: deeper inheritance is a sign of a mistake, and the bound
/// keeps loading finite.
pub const EXTENDS_DEPTH_MAX: usize = 8;
/// Longest policy name.
pub const POLICY_NAME_BYTES_MAX: usize = 64;
/// Longest rule name.
pub const RULE_NAME_BYTES_MAX: usize = 64;
/// Longest rule description (plain words used by explanations).
const DESCRIPTION_BYTES_MAX: usize = 512;
/// Largest policy file read.
const POLICY_FILE_BYTES_MAX: usize = 64 * 1024;
/// Largest passport score, in thousandths (100).
const SCORE_MILLI_MAX: u32 = 100_000;
/// Largest passport confidence, in thousandths (1).
const CONFIDENCE_MILLI_MAX: u32 = 1_000;

/// The minimum passport a provider must hold: parsed, hashed and recorded with the policy;
/// enforced by the passport gate (`crate::passport`) when providers are admitted.
pub use crate::passport::PassportRequirement;

/// What a rule tests.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RuleTest {
    /// A CEL expression: true allows, false denies.
    When(String),
    /// Allows when every named rule allows.
    All(Vec<String>),
    /// Allows when at least one named rule allows.
    Any(Vec<String>),
    /// Allows when the named rule denies.
    Not(String),
}

/// One rule of a policy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rule {
    pub name: String,
    pub stage: Stage,
    pub test: RuleTest,
    pub description: String,
    /// `false`: the rule only serves groups; it does not decide anything on its own.
    pub enforce: bool,
}

impl Rule {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("name".into(), json!(self.name));
        object.insert("stage".into(), json!(self.stage.as_str()));
        object.insert("description".into(), json!(self.description));
        object.insert("enforce".into(), json!(self.enforce));
        let (key, value) = match &self.test {
            RuleTest::When(source) => ("when", json!(source)),
            RuleTest::All(names) => ("all", json!(names)),
            RuleTest::Any(names) => ("any", json!(names)),
            RuleTest::Not(name) => ("not", json!(name)),
        };
        object.insert(key.into(), value);
        Value::Object(object)
    }

    fn members(&self) -> &[String] {
        match &self.test {
            RuleTest::When(_) => &[],
            RuleTest::All(names) | RuleTest::Any(names) => names,
            RuleTest::Not(name) => std::slice::from_ref(name),
        }
    }

    fn renamed(&self, rename: &dyn Fn(&str) -> String, enforce: bool) -> Rule {
        let test = match &self.test {
            RuleTest::When(source) => RuleTest::When(source.clone()),
            RuleTest::All(names) => RuleTest::All(names.iter().map(|n| rename(n)).collect()),
            RuleTest::Any(names) => RuleTest::Any(names.iter().map(|n| rename(n)).collect()),
            RuleTest::Not(name) => RuleTest::Not(rename(name)),
        };
        Rule { name: rename(&self.name), stage: self.stage, test, description: self.description.clone(), enforce }
    }
}

/// A parsed `pactum-policy/2` file before `extends` is resolved: only what it sets itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PolicyLayer {
    pub name: String,
    pub version: u32,
    pub extends: Option<String>,
    pub max_price: Option<Money>,
    pub rounds_max: Option<u32>,
    pub allowed_rails: Option<Vec<String>>,
    pub allowed_settlement_modes: Option<Vec<SettlementMode>>,
    pub allowed_providers: Option<Vec<String>>,
    pub blocked_providers: Option<Vec<String>>,
    pub passport: Option<PassportRequirement>,
    pub rules: Vec<Rule>,
}

/// A resolved, checked and compiled policy. Cheap to clone (shared).
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read from `pactum-policy/1` (or built with no file): recorded in the v1 form, so its
    /// hash is the one v1 always had.
    v1: bool,
    name: String,
    version: u32,
    static_part: StaticPolicy,
    passport: Option<PassportRequirement>,
    rules: Vec<Rule>,
    /// The compiled program of each `when` rule, by rule index.
    compiled: Vec<Option<Compiled>>,
    json: Value,
    hash: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Policy")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("policy_hash", &self.inner.hash)
            .field("rules", &self.inner.rules.len())
            .finish()
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.inner.hash == other.inner.hash
    }
}

impl Eq for Policy {}

impl Default for Policy {
    fn default() -> Self {
        Self::from_static(StaticPolicy::default())
    }
}

fn invalid(detail: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(detail.into())
}

fn check_policy_name(name: &str) -> Result<(), PolicyError> {
    let valid = !name.is_empty()
        && name.len() <= POLICY_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "policy name {name:?} must be 1 to {POLICY_NAME_BYTES_MAX} bytes of a-z, 0-9, _ and - (not starting with -)"
        )))
    }
}

fn check_rule_name(name: &str) -> Result<(), PolicyError> {
    let valid = !name.is_empty()
        && name.len() <= RULE_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(invalid(format!("rule name {name:?} must be 1 to {RULE_NAME_BYTES_MAX} bytes of a-z, 0-9 and _")));
    }
    if PolicyRule::named(name).is_some() {
        return Err(invalid(format!("rule name {name:?} is the name of a static rule")));
    }
    Ok(())
}

impl Policy {
    /// A policy of static limits only, recorded in the `pactum-policy/1` form (same hash).
    pub fn from_static(static_part: StaticPolicy) -> Self {
        let json = static_part.to_json();
        let hash = static_part.policy_hash();
        Self {
            inner: Arc::new(Inner {
                v1: true,
                name: String::new(),
                version: 0,
                static_part,
                passport: None,
                rules: Vec::new(),
                compiled: Vec::new(),
                json,
                hash,
            }),
        }
    }

    /// Checks everything and compiles every expression once.
    fn build(
        name: String,
        version: u32,
        static_part: StaticPolicy,
        passport: Option<PassportRequirement>,
        rules: Vec<Rule>,
    ) -> Result<Self, PolicyError> {
        check_policy_name(&name)?;
        if version == 0 {
            return Err(invalid("version must be 1 or more"));
        }
        static_part.check().map_err(|e| invalid(e.0))?;
        if let Some(passport) = passport
            && (passport.min_score_milli > SCORE_MILLI_MAX || passport.min_confidence_milli > CONFIDENCE_MILLI_MAX)
        {
            return Err(invalid("passport: min_score is 0 to 100 and min_confidence 0 to 1"));
        }
        if rules.len() > RULES_MAX {
            return Err(PolicyError::Unbounded(format!("{} rules: a policy holds at most {RULES_MAX}", rules.len())));
        }
        let mut names = BTreeSet::new();
        for rule in &rules {
            check_rule_name(&rule.name)?;
            if !names.insert(rule.name.as_str()) {
                return Err(invalid(format!("rule {} is defined twice", rule.name)));
            }
            if rule.description.trim().is_empty()
                || rule.description.len() > DESCRIPTION_BYTES_MAX
                || rule.description.chars().any(char::is_control)
            {
                return Err(invalid(format!(
                    "rule {}: description must be 1 to {DESCRIPTION_BYTES_MAX} bytes of printable text",
                    rule.name
                )));
            }
        }
        let mut compiled: Vec<Option<expr::Compiled>> = Vec::with_capacity(rules.len());
        for rule in &rules {
            match &rule.test {
                RuleTest::When(source) => compiled.push(Some(expr::compile(&rule.name, rule.stage, source)?)),
                RuleTest::All(members) | RuleTest::Any(members) if members.is_empty() => {
                    return Err(invalid(format!("rule {}: a group names at least one rule", rule.name)));
                }
                _ => compiled.push(None),
            }
            for member in rule.members() {
                let Some(target) = rules.iter().find(|r| &r.name == member) else {
                    return Err(invalid(format!("rule {}: no rule is named {member}", rule.name)));
                };
                if target.stage != rule.stage {
                    return Err(invalid(format!(
                        "rule {}: {member} is a {} rule, not {}",
                        rule.name,
                        target.stage.as_str(),
                        rule.stage.as_str()
                    )));
                }
            }
        }
        check_groups_acyclic(&rules)?;
        let json = json!({
            "format": POLICY_FORMAT_V2,
            "name": name,
            "version": version,
            "static": static_part.to_json(),
            "passport": passport.map(|p| json!({
                "min_score_milli": p.min_score_milli,
                "min_confidence_milli": p.min_confidence_milli,
            })),
            "rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
        });
        let iterations: u64 = compiled.iter().flatten().map(|c| c.iterations).sum();
        if iterations > expr::POLICY_ITERATIONS_MAX {
            return Err(PolicyError::Unbounded(format!(
                "policy {name}: its rules may run {iterations} comprehension iterations together, more than {}",
                expr::POLICY_ITERATIONS_MAX
            )));
        }
        let hash = hash_of(&json)?;
        Ok(Self {
            inner: Arc::new(Inner { v1: false, name, version, static_part, passport, rules, compiled, json, hash }),
        })
    }

    /// Reads a policy file, `pactum-policy/1` or `/2`, following `extends` (relative to the
    /// file's directory).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        load_chain(path, &mut Vec::new())
    }

    /// Parses policy text. `extends` needs a file to be relative to: use [`Policy::load`].
    pub fn parse_toml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        match parse_any(text, source_name)? {
            Parsed::V1(policy) => Ok(policy),
            Parsed::V2(layer) if layer.extends.is_some() => {
                Err(invalid(format!("{source_name}: extends needs the policy to be read from a file")))
            }
            Parsed::V2(layer) => layer.resolve_alone().map_err(|e| e.within(source_name)),
        }
    }

    /// Reads the canonical JSON a session recorded (either form) and compiles it again.
    pub fn from_json(value: &Value) -> Result<Self, PolicyError> {
        let Some(object) = value.as_object().filter(|o| o.contains_key("format")) else {
            return StaticPolicy::from_json(value).map(Self::from_static).map_err(|e| invalid(e.0));
        };
        let fields = ["format", "name", "version", "static", "passport", "rules"];
        if let Some(unknown) = object.keys().find(|key| !fields.contains(&key.as_str())) {
            return Err(invalid(format!("policy has an unknown field {unknown:?}")));
        }
        if object.get("format").and_then(Value::as_str) != Some(POLICY_FORMAT_V2) {
            return Err(invalid(format!("policy format is not {POLICY_FORMAT_V2}")));
        }
        let text = |field: &str| {
            object
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("{field} is not text")))
        };
        let version = object
            .get("version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| invalid("version is not a whole number"))?;
        let static_part =
            StaticPolicy::from_json(object.get("static").unwrap_or(&Value::Null)).map_err(|e| invalid(e.0))?;
        let passport = match object.get("passport") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) if p.len() == 2 => {
                let milli = |field: &str| {
                    p.get(field)
                        .and_then(Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| invalid(format!("passport {field} is not a whole number")))
                };
                Some(PassportRequirement {
                    min_score_milli: milli("min_score_milli")?,
                    min_confidence_milli: milli("min_confidence_milli")?,
                })
            }
            Some(_) => return Err(invalid("passport is not {min_score_milli, min_confidence_milli}")),
        };
        let rules = object
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("rules is not a list"))?
            .iter()
            .map(rule_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let policy = Self::build(text("name")?, version, static_part, passport, rules)?;
        if policy.inner.json != *value {
            return Err(invalid("the recorded policy is not in canonical form"));
        }
        Ok(policy)
    }

    /// The canonical JSON recorded in `session.created`.
    pub fn to_json(&self) -> Value {
        self.inner.json.clone()
    }

    /// `sha256:` + hex SHA-256 of the canonical JSON.
    pub fn policy_hash(&self) -> &str {
        &self.inner.hash
    }

    /// The static limits (price cap, rounds, rails, settlement modes, providers).
    pub fn static_part(&self) -> &StaticPolicy {
        &self.inner.static_part
    }

    /// The passport a provider must hold, if the policy sets one (not enforced by rules).
    pub fn passport_requirement(&self) -> Option<PassportRequirement> {
        self.inner.passport
    }

    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// Whether any rule decides something: only then are evaluations recorded.
    pub fn has_rules(&self) -> bool {
        self.inner.rules.iter().any(|rule| rule.enforce)
    }

    /// Whether any enforced rule belongs to `stage`.
    pub fn has_rules_at(&self, stage: Stage) -> bool {
        self.inner.rules.iter().any(|rule| rule.enforce && rule.stage == stage)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.inner.rules.iter().find(|rule| rule.name == name)
    }

    /// Whether `name` resolves as `policy_rule:<name>` evidence: a static rule or one of these.
    pub fn names_rule(&self, name: &str) -> bool {
        PolicyRule::named(name).is_some() || self.rule(name).is_some()
    }

    /// The policy name (empty for a `pactum-policy/1` policy).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// The format this policy is recorded in.
    pub fn format(&self) -> &'static str {
        if self.inner.v1 { POLICY_FORMAT } else { POLICY_FORMAT_V2 }
    }

    pub(crate) fn compiled(&self, index: usize) -> Option<&Compiled> {
        self.inner.compiled.get(index).and_then(Option::as_ref)
    }

    /// The same policy with more blocked providers (from the buyer's preferences).
    pub fn with_blocked_providers(&self, extra: &[String]) -> Result<Self, PolicyError> {
        let mut static_part = self.inner.static_part.clone();
        let before = static_part.blocked_providers.len();
        for blocked in extra {
            if !static_part.blocked_providers.contains(blocked) {
                static_part.blocked_providers.push(blocked.clone());
            }
        }
        if static_part.blocked_providers.len() == before {
            return Ok(self.clone());
        }
        if self.inner.v1 {
            return Ok(Self::from_static(static_part));
        }
        let inner = &self.inner;
        Self::build(inner.name.clone(), inner.version, static_part, inner.passport, inner.rules.clone())
    }
}

fn hash_of(json: &Value) -> Result<String, PolicyError> {
    let canonical = to_canonical_string(json).map_err(|e| invalid(format!("no canonical form: {e}")))?;
    Ok(format!("sha256:{}", Digest::tagged(&[], canonical.as_bytes()).to_hex()))
}

fn check_groups_acyclic(rules: &[Rule]) -> Result<(), PolicyError> {
    // Depth-first search; `visiting` holds the current path.
    fn visit<'r>(
        rules: &'r [Rule],
        rule: &'r Rule,
        visiting: &mut Vec<&'r str>,
        done: &mut BTreeSet<&'r str>,
    ) -> Result<(), PolicyError> {
        if done.contains(rule.name.as_str()) {
            return Ok(());
        }
        if visiting.contains(&rule.name.as_str()) {
            visiting.push(&rule.name);
            return Err(PolicyError::Unbounded(format!("rule groups form a cycle: {}", visiting.join(" -> "))));
        }
        visiting.push(&rule.name);
        for member in rule.members() {
            if let Some(target) = rules.iter().find(|r| &r.name == member) {
                visit(rules, target, visiting, done)?;
            }
        }
        visiting.pop();
        done.insert(&rule.name);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for rule in rules {
        visit(rules, rule, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

fn rule_from_json(value: &Value) -> Result<Rule, PolicyError> {
    let object = value.as_object().ok_or_else(|| invalid("a rule is not an object"))?;
    let text = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("rule {field} is not text")))
    };
    let names = |field: &str| -> Result<Vec<String>, PolicyError> {
        object
            .get(field)
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("rule {field} is not a list")))?
            .iter()
            .map(|n| {
                n.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("rule {field} holds a non-text item")))
            })
            .collect()
    };
    let tests: Vec<&str> = ["when", "all", "any", "not"].into_iter().filter(|k| object.contains_key(*k)).collect();
    if tests.len() != 1 || object.len() != 5 {
        return Err(invalid("a rule has name, stage, description, enforce and one of when, all, any, not"));
    }
    let test = match tests[0] {
        "when" => RuleTest::When(text("when")?),
        "all" => RuleTest::All(names("all")?),
        "any" => RuleTest::Any(names("any")?),
        _ => RuleTest::Not(text("not")?),
    };
    let stage_text = text("stage")?;
    Ok(Rule {
        name: text("name")?,
        stage: Stage::parse(&stage_text).ok_or_else(|| invalid(format!("stage {stage_text:?} is unknown")))?,
        test,
        description: text("description")?,
        enforce: object.get("enforce").and_then(Value::as_bool).ok_or_else(|| invalid("enforce is not a bool"))?,
    })
}

// ---- Files ----

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Wire {
    format: String,
    name: String,
    version: u32,
    extends: Option<String>,
    max_price: Option<PriceWire>,
    rounds_max: Option<u32>,
    allowed_rails: Option<Vec<String>>,
    allowed_settlement_modes: Option<Vec<String>>,
    allowed_providers: Option<Vec<String>>,
    blocked_providers: Option<Vec<String>>,
    passport: Option<PassportWire>,
    #[serde(default)]
    rules: Vec<RuleWire>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceWire {
    amount: String,
    currency: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PassportWire {
    min_score: Option<toml::Value>,
    min_confidence: Option<toml::Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWire {
    name: String,
    stage: String,
    when: Option<String>,
    all: Option<Vec<String>>,
    any: Option<Vec<String>>,
    not: Option<String>,
    description: String,
    enforce: Option<bool>,
}

enum Parsed {
    V1(Policy),
    V2(Box<PolicyLayer>),
}

/// Line and column (1-based) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn toml_error(text: &str, source_name: &str, error: &toml::de::Error) -> PolicyError {
    let message = error.message().trim_end().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            invalid(format!("{source_name}: line {line}, column {column}: {message}"))
        }
        None => invalid(format!("{source_name}: {message}")),
    }
}

fn parse_any(text: &str, source_name: &str) -> Result<Parsed, PolicyError> {
    if text.len() > POLICY_FILE_BYTES_MAX {
        return Err(invalid(format!("{source_name}: larger than {POLICY_FILE_BYTES_MAX} bytes")));
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, source_name, &e))?;
    match table.get("format").and_then(toml::Value::as_str) {
        Some(POLICY_FORMAT) => StaticPolicy::parse_toml(text, source_name)
            .map(|p| Parsed::V1(Policy::from_static(p)))
            .map_err(|e| invalid(e.to_string())),
        Some(POLICY_FORMAT_V2) => {
            let wire: V2Wire = toml::from_str(text).map_err(|e| toml_error(text, source_name, &e))?;
            PolicyLayer::from_wire(wire).map(|layer| Parsed::V2(Box::new(layer))).map_err(|e| e.within(source_name))
        }
        other => Err(invalid(format!(
            "{source_name}: format {:?} is not supported; this build reads {POLICY_FORMAT} and {POLICY_FORMAT_V2}",
            other.unwrap_or("(missing)")
        ))),
    }
}

/// Thousandths from decimal text or a TOML number (`72.5`, `"0.8"`, `90`): no float arithmetic,
/// a float is read through its shortest decimal text.
fn milli(value: &toml::Value, field: &str, max_milli: u32) -> Result<u32, PolicyError> {
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => format!("{number}"),
        _ => return Err(invalid(format!("passport {field} is not a number"))),
    };
    let bad = || invalid(format!("passport {field} {text:?} is not a decimal with at most 3 decimals in range"));
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 3 {
        return Err(bad());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let fraction_milli: u32 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
    let value = whole.checked_mul(1000).and_then(|w| w.checked_add(fraction_milli)).ok_or_else(bad)?;
    if value > max_milli {
        return Err(bad());
    }
    Ok(value)
}

impl PolicyLayer {
    fn from_wire(wire: V2Wire) -> Result<Self, PolicyError> {
        if wire.format != POLICY_FORMAT_V2 {
            return Err(invalid(format!("format is not {POLICY_FORMAT_V2}")));
        }
        let max_price = match wire.max_price {
            None => None,
            Some(price) => {
                let currency = Currency::parse(&price.currency).map_err(|e| invalid(format!("max_price: {e}")))?;
                Some(Money::parse_major(&price.amount, currency).map_err(|e| invalid(format!("max_price: {e}")))?)
            }
        };
        let allowed_settlement_modes = wire
            .allowed_settlement_modes
            .map(|modes| modes.iter().map(|m| SettlementMode::parse(m)).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|e| invalid(e.0))?;
        let passport = match wire.passport {
            None => None,
            Some(passport) => Some(PassportRequirement {
                min_score_milli: passport
                    .min_score
                    .as_ref()
                    .map(|v| milli(v, "min_score", SCORE_MILLI_MAX))
                    .transpose()?
                    .unwrap_or(0),
                min_confidence_milli: passport
                    .min_confidence
                    .as_ref()
                    .map(|v| milli(v, "min_confidence", CONFIDENCE_MILLI_MAX))
                    .transpose()?
                    .unwrap_or(0),
            }),
        };
        if wire.rules.len() > RULES_MAX {
            return Err(PolicyError::Unbounded(format!(
                "{} rules: a policy holds at most {RULES_MAX}",
                wire.rules.len()
            )));
        }
        let rules = wire
            .rules
            .into_iter()
            .map(|rule| {
                let stage = Stage::parse(&rule.stage).ok_or_else(|| {
                    invalid(format!("rule {}: stage {:?} is not admission, round or settlement", rule.name, rule.stage))
                })?;
                let test = match (rule.when, rule.all, rule.any, rule.not) {
                    (Some(when), None, None, None) => RuleTest::When(when),
                    (None, Some(all), None, None) => RuleTest::All(all),
                    (None, None, Some(any), None) => RuleTest::Any(any),
                    (None, None, None, Some(not)) => RuleTest::Not(not),
                    _ => {
                        return Err(invalid(format!("rule {}: give exactly one of when, all, any or not", rule.name)));
                    }
                };
                Ok(Rule {
                    name: rule.name,
                    stage,
                    test,
                    description: rule.description,
                    enforce: rule.enforce.unwrap_or(true),
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(Self {
            name: wire.name,
            version: wire.version,
            extends: wire.extends,
            max_price,
            rounds_max: wire.rounds_max,
            allowed_rails: wire.allowed_rails,
            allowed_settlement_modes,
            allowed_providers: wire.allowed_providers,
            blocked_providers: wire.blocked_providers,
            passport,
            rules,
        })
    }

    /// Parses a `pactum-policy/2` file's text without resolving `extends`.
    pub fn parse_toml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        match parse_any(text, source_name)? {
            Parsed::V2(layer) => Ok(*layer),
            Parsed::V1(_) => Err(invalid(format!("{source_name}: a {POLICY_FORMAT} file has no layer form"))),
        }
    }

    /// The layer on the defaults (no `extends`).
    pub fn resolve_alone(&self) -> Result<Policy, PolicyError> {
        override_with(&Policy::default(), self)
    }
}

fn load_chain(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Policy, PolicyError> {
    let source_name = path.display().to_string();
    let canonical = std::fs::canonicalize(path).map_err(|e| invalid(format!("{source_name}: cannot read: {e}")))?;
    if chain.contains(&canonical) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(canonical.display().to_string());
        return Err(PolicyError::Unbounded(format!("extends forms a cycle: {}", names.join(" -> "))));
    }
    if chain.len() > EXTENDS_DEPTH_MAX {
        return Err(PolicyError::Unbounded(format!(
            "{source_name}: extends is more than {EXTENDS_DEPTH_MAX} files deep"
        )));
    }
    let text = std::fs::read_to_string(&canonical).map_err(|e| invalid(format!("{source_name}: cannot read: {e}")))?;
    match parse_any(&text, &source_name)? {
        Parsed::V1(policy) => Ok(policy),
        Parsed::V2(layer) => {
            let base = match &layer.extends {
                None => Policy::default(),
                Some(relative) => {
                    if Path::new(relative).is_absolute() {
                        return Err(invalid(format!("{source_name}: extends must be a relative path")));
                    }
                    let directory = canonical.parent().unwrap_or(Path::new("."));
                    chain.push(canonical.clone());
                    let base = load_chain(&directory.join(relative), chain)?;
                    chain.pop();
                    base
                }
            };
            override_with(&base, &layer).map_err(|e| e.within(&source_name))
        }
    }
}

// ---- Composition ----

/// How [`compose`] joins policies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Everything must allow: the strictest static limits, every rule.
    All,
    /// One policy allowing is enough, stage by stage: the loosest static limits, and for each
    /// stage a rule allowing when any policy's rules of that stage all allow.
    Any,
}

/// `child` over `base`: the child's static fields replace the base's, a child rule with a
/// base rule's name replaces it (in its place), other child rules are added after the base's.
/// The name and version are the child's.
pub fn override_with(base: &Policy, child: &PolicyLayer) -> Result<Policy, PolicyError> {
    let mut static_part = base.static_part().clone();
    if let Some(max_price) = child.max_price {
        static_part.max_price = Some(max_price);
    }
    if let Some(rounds_max) = child.rounds_max {
        static_part.rounds_max = rounds_max;
    }
    if let Some(rails) = &child.allowed_rails {
        static_part.allowed_rails = rails.clone();
    }
    if let Some(modes) = &child.allowed_settlement_modes {
        static_part.allowed_settlement_modes = modes.clone();
    }
    if let Some(allowed) = &child.allowed_providers {
        static_part.allowed_providers = Some(allowed.clone());
    }
    if let Some(blocked) = &child.blocked_providers {
        static_part.blocked_providers = blocked.clone();
    }
    let mut rules = base.rules().to_vec();
    for rule in &child.rules {
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(existing) => *existing = rule.clone(),
            None => rules.push(rule.clone()),
        }
    }
    Policy::build(child.name.clone(), child.version, static_part, child.passport.or(base.passport_requirement()), rules)
}

fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
    out
}

/// Joins policies (see [`Mode`]). The result is named after the mode and the parts.
pub fn compose(policies: &[Policy], mode: Mode) -> Result<Policy, PolicyError> {
    let Some((first, rest)) = policies.split_first() else {
        return Err(invalid("compose needs at least one policy"));
    };
    let mut static_part = first.static_part().clone();
    let mut passport = first.passport_requirement();
    for policy in rest {
        let other = policy.static_part();
        static_part.max_price = match (static_part.max_price, other.max_price) {
            (Some(a), Some(b)) if a.currency() != b.currency() => {
                return Err(invalid(format!("price caps in {} and {} cannot be composed", a.currency(), b.currency())));
            }
            (Some(a), Some(b)) => Some(match mode {
                Mode::All if b.amount_minor() < a.amount_minor() => b,
                Mode::Any if b.amount_minor() > a.amount_minor() => b,
                _ => a,
            }),
            (a, b) if mode == Mode::All => a.or(b),
            _ => None,
        };
        static_part.rounds_max = match mode {
            Mode::All => static_part.rounds_max.min(other.rounds_max),
            Mode::Any => static_part.rounds_max.max(other.rounds_max),
        };
        let (rails, modes) = match mode {
            Mode::All => (
                intersect(&static_part.allowed_rails, &other.allowed_rails),
                static_part
                    .allowed_settlement_modes
                    .iter()
                    .filter(|m| other.allowed_settlement_modes.contains(m))
                    .copied()
                    .collect(),
            ),
            Mode::Any => {
                let mut modes = static_part.allowed_settlement_modes.clone();
                modes.extend(
                    other.allowed_settlement_modes.iter().filter(|m| !modes.contains(m)).copied().collect::<Vec<_>>(),
                );
                (union(&static_part.allowed_rails, &other.allowed_rails), modes)
            }
        };
        static_part.allowed_rails = rails;
        static_part.allowed_settlement_modes = modes;
        static_part.allowed_providers = match (&static_part.allowed_providers, &other.allowed_providers, mode) {
            (Some(a), Some(b), Mode::All) => Some(intersect(a, b)),
            (Some(a), Some(b), Mode::Any) => Some(union(a, b)),
            (a, b, Mode::All) => a.clone().or_else(|| b.clone()),
            (_, _, Mode::Any) => None,
        };
        static_part.blocked_providers = match mode {
            Mode::All => union(&static_part.blocked_providers, &other.blocked_providers),
            Mode::Any => intersect(&static_part.blocked_providers, &other.blocked_providers),
        };
        passport = match (passport, policy.passport_requirement(), mode) {
            (Some(a), Some(b), Mode::All) => Some(PassportRequirement {
                min_score_milli: a.min_score_milli.max(b.min_score_milli),
                min_confidence_milli: a.min_confidence_milli.max(b.min_confidence_milli),
            }),
            (Some(a), Some(b), Mode::Any) => Some(PassportRequirement {
                min_score_milli: a.min_score_milli.min(b.min_score_milli),
                min_confidence_milli: a.min_confidence_milli.min(b.min_confidence_milli),
            }),
            (a, b, Mode::All) => a.or(b),
            (_, _, Mode::Any) => None,
        };
    }
    let label = match mode {
        Mode::All => "all",
        Mode::Any => "any",
    };
    let mut name = format!(
        "{label}-{}",
        policies.iter().map(|p| if p.name().is_empty() { "v1" } else { p.name() }).collect::<Vec<_>>().join("-")
    );
    name.truncate(POLICY_NAME_BYTES_MAX);
    let mut rules: Vec<Rule> = Vec::new();
    match mode {
        Mode::All => {
            for rule in policies.iter().flat_map(Policy::rules) {
                match rules.iter().find(|r| r.name == rule.name) {
                    Some(existing) if existing == rule => {}
                    Some(_) => {
                        return Err(invalid(format!("two policies define rule {} differently", rule.name)));
                    }
                    None => rules.push(rule.clone()),
                }
            }
        }
        Mode::Any => {
            for (index, policy) in policies.iter().enumerate() {
                let prefix = format!("p{index}_");
                let rename = |name: &str| format!("{prefix}{name}");
                rules.extend(policy.rules().iter().map(|rule| rule.renamed(&rename, false)));
            }
            for stage in Stage::ALL {
                // A policy without rules at this stage allows everything there: so does the union.
                if policies.iter().any(|p| !p.has_rules_at(stage)) {
                    continue;
                }
                let mut members = Vec::new();
                for (index, policy) in policies.iter().enumerate() {
                    let group = format!("p{index}_{}", stage.as_str());
                    let enforced: Vec<String> = policy
                        .rules()
                        .iter()
                        .filter(|r| r.enforce && r.stage == stage)
                        .map(|r| format!("p{index}_{}", r.name))
                        .collect();
                    rules.push(Rule {
                        name: group.clone(),
                        stage,
                        test: RuleTest::All(enforced),
                        description: format!("every {} rule of policy {} allows", stage.as_str(), policy.name()),
                        enforce: false,
                    });
                    members.push(group);
                }
                rules.push(Rule {
                    name: format!("any_{}", stage.as_str()),
                    stage,
                    test: RuleTest::Any(members),
                    description: format!("at least one of the composed policies allows at {}", stage.as_str()),
                    enforce: true,
                });
            }
        }
    }
    Policy::build(name, 1, static_part, passport, rules)
}

/// The policy whose rules allow exactly what `policy`'s rules deny, stage by stage. The static
/// limits are kept as they are (a limit is not negated).
pub fn negate(policy: &Policy) -> Result<Policy, PolicyError> {
    let mut rules: Vec<Rule> = policy.rules().iter().map(|rule| rule.renamed(&|n| n.to_owned(), false)).collect();
    for stage in Stage::ALL {
        let enforced: Vec<String> =
            policy.rules().iter().filter(|r| r.enforce && r.stage == stage).map(|r| r.name.clone()).collect();
        if enforced.is_empty() {
            continue;
        }
        let group = format!("negated_{}_all", stage.as_str());
        rules.push(Rule {
            name: group.clone(),
            stage,
            test: RuleTest::All(enforced),
            description: format!("every {} rule of policy {} allows", stage.as_str(), policy.name()),
            enforce: false,
        });
        rules.push(Rule {
            name: format!("negated_{}", stage.as_str()),
            stage,
            test: RuleTest::Not(group),
            description: format!("some {} rule of policy {} denies", stage.as_str(), policy.name()),
            enforce: true,
        });
    }
    let base = if policy.name().is_empty() { "v1" } else { policy.name() };
    let mut name = format!("not-{base}");
    name.truncate(POLICY_NAME_BYTES_MAX);
    Policy::build(name, policy.version().max(1), policy.static_part().clone(), policy.passport_requirement(), rules)
}
