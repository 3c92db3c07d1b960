//! What the buyer wants (an [`Intent`]) and what it is allowed to agree to (a [`StaticPolicy`]).
//! Both are checked when built and recorded in the transcript in canonical JSON; the policy is
//! identified by `policy_hash` = SHA-256 of its canonical JSON.

use pactum_transcripts::Digest;
use pactum_transcripts::canonical::to_canonical_string;
use serde_json::{Value, json};

use crate::directory::IntentType;
use crate::money::{Currency, Money};

/// Longest scope text.
const SCOPE_BYTES_MAX: usize = 256;
/// The most rounds any policy may allow: a negotiation is a handful of rounds, and the bound keeps
/// a misconfigured policy from running one for ever.
pub const ROUNDS_MAX: u32 = 32;
/// The round limit when a policy does not set one.
pub const ROUNDS_DEFAULT: u32 = 6;
/// Longest latency limit a buyer may ask for.
const LATENCY_MS_MAX: u32 = 600_000;

/// How much the buyer cares about getting an answer quickly rather than cheaply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Urgency {
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }

    pub fn parse(text: &str) -> Result<Self, IntentError> {
        match text {
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            other => Err(IntentError(format!("urgency {other:?} is not low, normal or high"))),
        }
    }
}

/// How the payment is settled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SettlementMode {
    /// Held in escrow at commitment, released to the provider at settlement.
    Escrow,
}

impl SettlementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escrow => "escrow",
        }
    }

    pub fn parse(text: &str) -> Result<Self, IntentError> {
        match text {
            "escrow" => Ok(Self::Escrow),
            other => Err(IntentError(format!("settlement mode {other:?} is not supported (escrow)"))),
        }
    }
}

/// An intent or policy that cannot be used, with the reason.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{0}")]
pub struct IntentError(pub String);

impl IntentError {
    pub fn code(&self) -> &'static str {
        "INTENT_INVALID"
    }
}

/// What the buyer wants to acquire, under which constraints.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Intent {
    intent_type: IntentType,
    scope: String,
    max_price: Money,
    latency_ms_max: Option<u32>,
    deadline_ms: Option<u64>,
    urgency: Urgency,
    settlement_mode: SettlementMode,
}

impl Intent {
    /// Builds a checked intent.
    pub fn new(
        intent_type: IntentType,
        scope: &str,
        max_price: Money,
        latency_ms_max: Option<u32>,
        deadline_ms: Option<u64>,
        urgency: Urgency,
        settlement_mode: SettlementMode,
    ) -> Result<Self, IntentError> {
        if scope.len() > SCOPE_BYTES_MAX || scope.chars().any(char::is_control) {
            return Err(IntentError(format!("scope must be at most {SCOPE_BYTES_MAX} bytes of printable text")));
        }
        if max_price.amount_minor() == 0 {
            return Err(IntentError("the maximum price must be above zero".into()));
        }
        if latency_ms_max.is_some_and(|ms| ms == 0 || ms > LATENCY_MS_MAX) {
            return Err(IntentError(format!("the latency limit must be 1 to {LATENCY_MS_MAX} ms")));
        }
        Ok(Self {
            intent_type,
            scope: scope.to_owned(),
            max_price,
            latency_ms_max,
            deadline_ms,
            urgency,
            settlement_mode,
        })
    }

    pub fn intent_type(&self) -> &IntentType {
        &self.intent_type
    }
    pub fn scope(&self) -> &str {
        &self.scope
    }
    pub fn max_price(&self) -> Money {
        self.max_price
    }
    pub fn latency_ms_max(&self) -> Option<u32> {
        self.latency_ms_max
    }
    pub fn deadline_ms(&self) -> Option<u64> {
        self.deadline_ms
    }
    pub fn urgency(&self) -> Urgency {
        self.urgency
    }
    pub fn settlement_mode(&self) -> SettlementMode {
        self.settlement_mode
    }

    /// The form recorded in the transcript.
    pub fn to_json(&self) -> Value {
        json!({
            "intent_type": self.intent_type.as_str(),
            "scope": self.scope,
            "max_price": { "amount_minor": self.max_price.amount_minor(), "currency": self.max_price.currency().code() },
            "latency_ms_max": self.latency_ms_max,
            "deadline_ms": self.deadline_ms,
            "urgency": self.urgency.as_str(),
            "settlement_mode": self.settlement_mode.as_str(),
        })
    }
}

/// A static policy: limits every negotiation of the buyer must respect. Checked at admission, on
/// every round and before settlement.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StaticPolicy {
    /// A cap on any price, whatever the intent says.
    pub max_price: Option<Money>,
    pub rounds_max: u32,
    pub allowed_rails: Vec<String>,
    pub allowed_settlement_modes: Vec<SettlementMode>,
    /// If set, only these providers may be admitted.
    pub allowed_providers: Option<Vec<String>>,
    pub blocked_providers: Vec<String>,
}

impl Default for StaticPolicy {
    fn default() -> Self {
        Self {
            max_price: None,
            rounds_max: ROUNDS_DEFAULT,
            allowed_rails: vec!["ledger".to_owned()],
            allowed_settlement_modes: vec![SettlementMode::Escrow],
            allowed_providers: None,
            blocked_providers: Vec::new(),
        }
    }
}

/// Which rule of a policy refused something: recorded as `policy_rule:<name>` evidence.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PolicyRule {
    MaxPrice,
    RoundsMax,
    AllowedRails,
    AllowedSettlementModes,
    AllowedProviders,
    BlockedProviders,
}

impl PolicyRule {
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxPrice => "max_price",
            Self::RoundsMax => "rounds_max",
            Self::AllowedRails => "allowed_rails",
            Self::AllowedSettlementModes => "allowed_settlement_modes",
            Self::AllowedProviders => "allowed_providers",
            Self::BlockedProviders => "blocked_providers",
        }
    }
}

impl StaticPolicy {
    /// Checks the policy's own consistency.
    pub fn check(&self) -> Result<(), IntentError> {
        if self.rounds_max == 0 || self.rounds_max > ROUNDS_MAX {
            return Err(IntentError(format!("rounds_max must be 1 to {ROUNDS_MAX}")));
        }
        if self.allowed_rails.is_empty() || self.allowed_settlement_modes.is_empty() {
            return Err(IntentError("a policy must allow at least one rail and one settlement mode".into()));
        }
        Ok(())
    }

    /// The canonical form: lists sorted, so equal policies have equal hashes.
    pub fn to_json(&self) -> Value {
        let sorted = |items: &[String]| {
            let mut items = items.to_vec();
            items.sort();
            items.dedup();
            items
        };
        let mut modes: Vec<&str> = self.allowed_settlement_modes.iter().map(|m| m.as_str()).collect();
        modes.sort_unstable();
        modes.dedup();
        json!({
            "max_price": self.max_price.map(|m| json!({ "amount_minor": m.amount_minor(), "currency": m.currency().code() })),
            "rounds_max": self.rounds_max,
            "allowed_rails": sorted(&self.allowed_rails),
            "allowed_settlement_modes": modes,
            "allowed_providers": self.allowed_providers.as_deref().map(sorted),
            "blocked_providers": sorted(&self.blocked_providers),
        })
    }

    /// `policy_hash` = `sha256:` + hex SHA-256 of the canonical JSON of the policy.
    pub fn policy_hash(&self) -> String {
        // The policy holds only strings, small integers and amounts within 2^53: it always has
        // a canonical form. An empty tag makes `tagged` plain SHA-256, as the format requires.
        let canonical = to_canonical_string(&self.to_json()).unwrap_or_default();
        format!("sha256:{}", Digest::tagged(&[], canonical.as_bytes()).to_hex())
    }

    /// Whether `provider_id` may be admitted; the refusing rule otherwise.
    pub fn admits_provider(&self, provider_id: &str) -> Result<(), PolicyRule> {
        if self.blocked_providers.iter().any(|p| p == provider_id) {
            return Err(PolicyRule::BlockedProviders);
        }
        if self.allowed_providers.as_ref().is_some_and(|allowed| !allowed.iter().any(|p| p == provider_id)) {
            return Err(PolicyRule::AllowedProviders);
        }
        Ok(())
    }

    /// Whether a price is acceptable under both the intent and the policy cap.
    pub fn admits_price(&self, intent: &Intent, price: Money) -> Result<(), PolicyRule> {
        let within = |cap: Money| cap.currency() == price.currency() && price.amount_minor() <= cap.amount_minor();
        if !within(intent.max_price()) || self.max_price.is_some_and(|cap| !within(cap)) {
            return Err(PolicyRule::MaxPrice);
        }
        Ok(())
    }

    /// Whether the intent's rail and settlement mode are allowed.
    pub fn admits_settlement(&self, rail: &str, mode: SettlementMode) -> Result<(), PolicyRule> {
        if !self.allowed_rails.iter().any(|r| r == rail) {
            return Err(PolicyRule::AllowedRails);
        }
        if !self.allowed_settlement_modes.contains(&mode) {
            return Err(PolicyRule::AllowedSettlementModes);
        }
        Ok(())
    }
}

/// Reads an amount recorded as `{"amount_minor": N, "currency": "XXX"}`.
pub(crate) fn money_from_json(value: &Value, field: &str) -> Result<Money, IntentError> {
    let bad = |what: &str| IntentError(format!("{field}: {what}"));
    let object = value.as_object().ok_or_else(|| bad("not an amount object"))?;
    if object.len() != 2 {
        return Err(bad("an amount has exactly amount_minor and currency"));
    }
    let amount =
        object.get("amount_minor").and_then(Value::as_u64).ok_or_else(|| bad("amount_minor is not a whole number"))?;
    let currency = object.get("currency").and_then(Value::as_str).ok_or_else(|| bad("currency is not text"))?;
    let currency = Currency::parse(currency).map_err(|e| bad(&e.to_string()))?;
    if currency.code() != object.get("currency").and_then(Value::as_str).unwrap_or_default() {
        return Err(bad("currency must be written in upper case"));
    }
    Money::from_minor(amount, currency).map_err(|e| bad(&e.to_string()))
}

fn strict_object<'v>(
    value: &'v Value,
    what: &str,
    fields: &[&str],
) -> Result<&'v serde_json::Map<String, Value>, IntentError> {
    let object = value.as_object().ok_or_else(|| IntentError(format!("{what} is not an object")))?;
    if let Some(unknown) = object.keys().find(|key| !fields.contains(&key.as_str())) {
        return Err(IntentError(format!("{what} has an unknown field {unknown:?}")));
    }
    if let Some(missing) = fields.iter().find(|field| !object.contains_key(**field)) {
        return Err(IntentError(format!("{what} lacks {missing:?}")));
    }
    Ok(object)
}

fn optional_u64(object: &serde_json::Map<String, Value>, field: &str) -> Result<Option<u64>, IntentError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| IntentError(format!("{field} is not a whole number"))),
    }
}

fn text<'v>(object: &'v serde_json::Map<String, Value>, field: &str) -> Result<&'v str, IntentError> {
    object.get(field).and_then(Value::as_str).ok_or_else(|| IntentError(format!("{field} is not text")))
}

fn text_list(value: &Value, field: &str) -> Result<Vec<String>, IntentError> {
    value
        .as_array()
        .ok_or_else(|| IntentError(format!("{field} is not a list")))?
        .iter()
        .map(|item| {
            item.as_str().map(str::to_owned).ok_or_else(|| IntentError(format!("{field} holds a non-text item")))
        })
        .collect()
}

impl Intent {
    /// Reads the form [`Intent::to_json`] writes, with every check of [`Intent::new`].
    pub fn from_json(value: &Value) -> Result<Self, IntentError> {
        let fields =
            ["intent_type", "scope", "max_price", "latency_ms_max", "deadline_ms", "urgency", "settlement_mode"];
        let object = strict_object(value, "intent", &fields)?;
        let intent_type = IntentType::new(text(object, "intent_type")?).map_err(IntentError)?;
        let latency_ms_max = optional_u64(object, "latency_ms_max")?
            .map(|ms| u32::try_from(ms).map_err(|_| IntentError("latency_ms_max is too large".into())))
            .transpose()?;
        Self::new(
            intent_type,
            text(object, "scope")?,
            money_from_json(&object["max_price"], "max_price")?,
            latency_ms_max,
            optional_u64(object, "deadline_ms")?,
            Urgency::parse(text(object, "urgency")?)?,
            SettlementMode::parse(text(object, "settlement_mode")?)?,
        )
    }
}

impl StaticPolicy {
    /// Reads the form [`StaticPolicy::to_json`] writes, and checks it.
    pub fn from_json(value: &Value) -> Result<Self, IntentError> {
        let fields = [
            "max_price",
            "rounds_max",
            "allowed_rails",
            "allowed_settlement_modes",
            "allowed_providers",
            "blocked_providers",
        ];
        let object = strict_object(value, "policy", &fields)?;
        let max_price = match &object["max_price"] {
            Value::Null => None,
            other => Some(money_from_json(other, "policy max_price")?),
        };
        let rounds_max = object["rounds_max"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| IntentError("rounds_max is not a whole number".into()))?;
        let allowed_settlement_modes = text_list(&object["allowed_settlement_modes"], "allowed_settlement_modes")?
            .iter()
            .map(|mode| SettlementMode::parse(mode))
            .collect::<Result<_, _>>()?;
        let allowed_providers = match &object["allowed_providers"] {
            Value::Null => None,
            other => Some(text_list(other, "allowed_providers")?),
        };
        let policy = Self {
            max_price,
            rounds_max,
            allowed_rails: text_list(&object["allowed_rails"], "allowed_rails")?,
            allowed_settlement_modes,
            allowed_providers,
            blocked_providers: text_list(&object["blocked_providers"], "blocked_providers")?,
        };
        policy.check()?;
        Ok(policy)
    }
}

impl PolicyRule {
    /// Every rule, for resolving `policy_rule:<name>` evidence.
    pub const ALL: &'static [PolicyRule] = &[
        Self::MaxPrice,
        Self::RoundsMax,
        Self::AllowedRails,
        Self::AllowedSettlementModes,
        Self::AllowedProviders,
        Self::BlockedProviders,
    ];

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|rule| rule.name() == name)
    }
}

/// Name and version of the policy file format.
pub const POLICY_FORMAT: &str = "pactum-policy/1";
/// Largest policy file read.
const POLICY_BYTES_MAX: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyWire {
    format: String,
    max_price: Option<PolicyPriceWire>,
    rounds_max: Option<u32>,
    allowed_rails: Option<Vec<String>>,
    allowed_settlement_modes: Option<Vec<String>>,
    allowed_providers: Option<Vec<String>>,
    blocked_providers: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPriceWire {
    amount: String,
    currency: String,
}

/// A policy file that cannot be used (stable code `POLICY_INVALID`).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{source_name}: {detail}")]
pub struct PolicyError {
    pub source_name: String,
    pub detail: String,
}

impl PolicyError {
    pub fn code(&self) -> &'static str {
        "POLICY_INVALID"
    }
}

impl StaticPolicy {
    /// Parses a `pactum-policy/1` TOML file; fields left out keep their defaults.
    pub fn parse_toml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let fail = |detail: String| PolicyError { source_name: source_name.to_owned(), detail };
        if text.len() > POLICY_BYTES_MAX {
            return Err(fail(format!("larger than {POLICY_BYTES_MAX} bytes")));
        }
        let wire: PolicyWire = toml::from_str(text).map_err(|e| fail(e.message().trim_end().replace('\n', " ")))?;
        if wire.format != POLICY_FORMAT {
            return Err(fail(format!("format {:?} is not supported; this build reads {POLICY_FORMAT}", wire.format)));
        }
        let defaults = Self::default();
        let max_price = match wire.max_price {
            None => None,
            Some(price) => {
                let currency = Currency::parse(&price.currency).map_err(|e| fail(format!("max_price: {e}")))?;
                Some(Money::parse_major(&price.amount, currency).map_err(|e| fail(format!("max_price: {e}")))?)
            }
        };
        let modes = match wire.allowed_settlement_modes {
            None => defaults.allowed_settlement_modes,
            Some(modes) => modes
                .iter()
                .map(|mode| SettlementMode::parse(mode))
                .collect::<Result<_, _>>()
                .map_err(|e| fail(e.to_string()))?,
        };
        let policy = Self {
            max_price,
            rounds_max: wire.rounds_max.unwrap_or(defaults.rounds_max),
            allowed_rails: wire.allowed_rails.unwrap_or(defaults.allowed_rails),
            allowed_settlement_modes: modes,
            allowed_providers: wire.allowed_providers,
            blocked_providers: wire.blocked_providers.unwrap_or_default(),
        };
        policy.check().map_err(|e| fail(e.to_string()))?;
        Ok(policy)
    }
}
