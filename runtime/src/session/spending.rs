//! Spending constraints in a session: what is checked before the payment is held, and how the
//! check is recorded so that a replay can judge it again.
//!
//! Two kinds of constraint apply to a payment: the session's own (given when it starts and
//! recorded in `session.created`, named `1`, `2`, ...) and the buyer agent's (`pactum budget
//! set`, stored in the constellation). The shell reads the buyer's constraints and the payments
//! they count inside the write transaction that would hold the money, and hands the core each
//! constraint with its [`Tally`]; the core adds the session's constraints (whose tally is always
//! empty: a session pays once), judges every one and records them all in one
//! `constraints.checked` event. Any refusal is PACT-109 with `constraint:<scope>:<name>`
//! evidence, and nothing is held. The event holds everything the verdicts follow from (the
//! constraint, its tally, the amount and the time), so the fold judges them again.

use serde::{Deserialize, Serialize};

use crate::constraints::{Constraint, Ledger, Request, Tally};
use crate::money::Money;
use crate::session::model::PriceBody;

/// Most constraints a session may carry of its own.
pub const SESSION_CONSTRAINTS_MAX: usize = 16;

/// A session's own constraint, as recorded in `session.created`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedConstraint {
    pub name: String,
    pub constraint: Constraint,
}

/// One of the buyer agent's constraints with what its history comes to, as the shell read it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentConstraint {
    pub name: String,
    pub constraint: Constraint,
    /// When the constraint started counting payments.
    pub since_ms: u64,
    pub tally: Tally,
}

/// One constraint judged before a payment.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintCheck {
    /// `session` or `agent:<buyer id>`.
    pub scope: String,
    pub name: String,
    pub constraint_hash: String,
    pub constraint: Constraint,
    /// When the buyer's constraint started counting (none for the session's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    pub tally: Tally,
    pub allowed: bool,
    /// Why it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// Custom constraints it carries but cannot judge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub informational: Vec<String>,
}

impl ConstraintCheck {
    /// Judges `constraint` for paying `amount` at `at_ms`, given its tally.
    pub fn judge(
        scope: String,
        name: String,
        constraint: Constraint,
        since_ms: Option<u64>,
        tally: Tally,
        amount: Money,
        at_ms: u64,
    ) -> Result<Self, String> {
        let constraint_hash = constraint.hash().map_err(|e| e.to_string())?;
        let verdict =
            constraint.check_tally(&tally, Request { at_ms, amount: Some(amount) }).map_err(|e| e.to_string())?;
        let (allowed, violation, informational) = match verdict {
            Ok(allowed) => (true, None, allowed.informational),
            Err(violation) => (false, Some(violation.to_string()), Vec::new()),
        };
        Ok(Self { scope, name, constraint_hash, constraint, since_ms, tally, allowed, violation, informational })
    }

    /// `constraint:<scope>:<name>`: the evidence a refusal cites.
    pub fn evidence_ref(&self) -> String {
        format!("constraint:{}:{}", self.scope, self.name)
    }
}

/// The `constraints.checked` event: every constraint judged before a payment was held.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintsCheckedBody {
    pub payment_id: String,
    pub amount: PriceBody,
    /// The session's own constraints first (by name), then the buyer's (by name).
    pub checks: Vec<ConstraintCheck>,
}

impl ConstraintsCheckedBody {
    /// The first refusal, if any.
    pub fn refusal(&self) -> Option<&ConstraintCheck> {
        self.checks.iter().find(|check| !check.allowed)
    }

    /// The buyer's constraints as the shell handed them in (for replays).
    pub fn agent_constraints(&self) -> Vec<AgentConstraint> {
        self.checks
            .iter()
            .filter(|check| check.scope != SESSION_SCOPE)
            .map(|check| AgentConstraint {
                name: check.name.clone(),
                constraint: check.constraint.clone(),
                since_ms: check.since_ms.unwrap_or_default(),
                tally: check.tally.clone(),
            })
            .collect()
    }
}

/// The scope of a session's own constraints.
pub const SESSION_SCOPE: &str = "session";

/// The scope of an agent's constraints.
pub fn agent_scope(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// Checks a session's own constraints as given: at most [`SESSION_CONSTRAINTS_MAX`], named
/// `1`, `2`, ... in order, each valid. A duration needs `valid_from` (a session pays once, so
/// "from its first use" would never end).
pub fn validate_session_constraints(constraints: &[NamedConstraint]) -> Result<(), String> {
    if constraints.len() > SESSION_CONSTRAINTS_MAX {
        return Err(format!("a session carries at most {SESSION_CONSTRAINTS_MAX} constraints"));
    }
    for (index, named) in constraints.iter().enumerate() {
        if named.name != (index + 1).to_string() {
            return Err(format!("session constraint {} must be named {}", named.name, index + 1));
        }
        named.constraint.validate().map_err(|e| format!("session constraint {}: {e}", named.name))?;
        if has_open_duration(&named.constraint) {
            return Err(format!(
                "session constraint {}: a duration needs valid_from (a session pays once)",
                named.name
            ));
        }
    }
    Ok(())
}

fn has_open_duration(constraint: &Constraint) -> bool {
    match constraint {
        Constraint::Temporal(t) => t.duration_ms.is_some() && t.valid_from_ms.is_none(),
        Constraint::Combined { all } => all.iter().any(has_open_duration),
        _ => false,
    }
}

/// Judges the session's own constraints and the buyer's for paying `amount` at `at_ms`.
pub fn judge_all(
    session: &[NamedConstraint],
    buyer_id: &str,
    agent: Vec<AgentConstraint>,
    payment_id: &str,
    amount: Money,
    at_ms: u64,
) -> Result<ConstraintsCheckedBody, String> {
    let mut checks = Vec::with_capacity(session.len() + agent.len());
    for named in session {
        let tally = named.constraint.tally(&Ledger::default(), at_ms);
        checks.push(ConstraintCheck::judge(
            SESSION_SCOPE.to_owned(),
            named.name.clone(),
            named.constraint.clone(),
            None,
            tally,
            amount,
            at_ms,
        )?);
    }
    let mut agent = agent;
    agent.sort_by(|a, b| a.name.cmp(&b.name));
    if agent.windows(2).any(|pair| pair[0].name == pair[1].name) {
        return Err("the buyer has two constraints of one name".into());
    }
    for given in agent {
        given.constraint.validate().map_err(|e| format!("the buyer's constraint {}: {e}", given.name))?;
        checks.push(ConstraintCheck::judge(
            agent_scope(buyer_id),
            given.name,
            given.constraint,
            Some(given.since_ms),
            given.tally,
            amount,
            at_ms,
        )?);
    }
    Ok(ConstraintsCheckedBody { payment_id: payment_id.to_owned(), amount: PriceBody::of(amount), checks })
}
