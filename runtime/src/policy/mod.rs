//! Policies as code: `pactum-policy/2`, rules written in CEL (see docs/POLICY.md).
//!
//! A [`Policy`] is a static part (the [`StaticPolicy`] limits of `pactum-policy/1`), an optional
//! passport requirement and rules. Each rule belongs to a [`Stage`] (admission, round,
//! settlement) and is a CEL expression over the stage's context (`when`), or a group of other
//! rules (`all`, `any`, `not`). A policy is resolved when built (`extends` followed, groups
//! checked, every expression compiled once) and is self-contained: its canonical JSON — what
//! `session.created` records — holds everything, the CEL source included, and `policy_hash` is
//! the SHA-256 of that JSON.
//!
//! Evaluation is a pure function of the policy and a [`Context`] of plain data: rules cannot
//! read the clock, randomness or anything else of the host, so a recorded [`Evaluation`] can be
//! re-run and compared ([`verify`]) by anyone holding the transcript.

mod document;
mod evaluate;
mod expr;
#[cfg(test)]
mod tests;

pub use document::{
    EXTENDS_DEPTH_MAX, Mode, POLICY_FORMAT_V2, POLICY_NAME_BYTES_MAX, PassportRequirement, Policy, PolicyLayer,
    RULE_NAME_BYTES_MAX, RULES_MAX, Rule, RuleTest, compose, negate, override_with,
};
pub use evaluate::{
    Context, Evaluation, Mismatch, OfferFacts, Outcome, RecordedEvaluation, RuleTrace, evaluate, explain, verify,
};
pub use expr::{COMPREHENSION_NESTING_MAX, WHEN_BYTES_MAX};

/// When a rule is checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Per provider found by discovery: a denied provider is not admitted.
    Admission,
    /// Per ask at the end of each round: a denied ask is not a candidate.
    Round,
    /// Once, on the selected offer, before the payment is accepted.
    Settlement,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Admission, Stage::Round, Stage::Settlement];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Round => "round",
            Self::Settlement => "settlement",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.as_str() == text)
    }
}

/// A policy that cannot be used. Every variant has a stable code.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not a valid policy: TOML, fields, names, groups or a CEL expression that does not parse,
    /// refers to something outside the context or is not bool (`POLICY_INVALID`).
    #[error("{0}")]
    Invalid(String),
    /// A rule would read the clock, randomness or the host, or depend on an unordered iteration
    /// (`POLICY_NONDETERMINISTIC`).
    #[error("{0}")]
    Nondeterministic(String),
    /// A policy beyond the bounds that keep evaluation fast and finite: too many rules, an
    /// expression too long, comprehensions nested too deep, `extends` too deep or in a cycle
    /// (`POLICY_UNBOUNDED`).
    #[error("{0}")]
    Unbounded(String),
}

impl PolicyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "POLICY_INVALID",
            Self::Nondeterministic(_) => "POLICY_NONDETERMINISTIC",
            Self::Unbounded(_) => "POLICY_UNBOUNDED",
        }
    }

    /// The same error, its message prefixed with where it comes from (a file name).
    pub fn within(self, source_name: &str) -> Self {
        match self {
            Self::Invalid(detail) => Self::Invalid(format!("{source_name}: {detail}")),
            Self::Nondeterministic(detail) => Self::Nondeterministic(format!("{source_name}: {detail}")),
            Self::Unbounded(detail) => Self::Unbounded(format!("{source_name}: {detail}")),
        }
    }
}

use crate::intent::StaticPolicy;
