//! Agents' spending constraints in the constellation (`pactum budget`): set one, remove one, and
//! see where each stands at a given time.
//!
//! A constraint counts the payments its agent made since it was first set (`since`); a new
//! version keeps that start, so raising a limit does not forget what was spent. Before every
//! payment the session judges the buyer's constraints inside the transaction that would hold
//! the money (see [`crate::session::spending`]).

use pactum_memory::{Constellation, ConstraintRow, ConstraintStoreError, LedgerTx, SpendTotals, StoreError};
use serde_json::{Value, json};

use crate::constraints::{Constraint, ConstraintError, History, Request, Tally, Window};
use crate::error::RuntimeError;

/// Why a budget operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Invalid(#[from] ConstraintError),
    #[error("{0}")]
    Store(ConstraintStoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl BudgetError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(error) => error.code(),
            Self::Store(ConstraintStoreError::NotFound { .. }) => "CONSTRAINT_NOT_FOUND",
            Self::Store(ConstraintStoreError::UnknownAgent(_)) => "AGENT_NOT_FOUND",
            Self::Store(_) => "CONSTRAINT_INVALID",
            Self::Runtime(error) => error.code(),
        }
    }
}

impl From<pactum_memory::StoreError> for BudgetError {
    fn from(error: pactum_memory::StoreError) -> Self {
        Self::Runtime(error.into())
    }
}

/// Stores `constraint` as the current version of the agent's constraint `name`.
pub fn set(
    db: &Constellation,
    agent_id: &str,
    name: &str,
    constraint: &Constraint,
    at_ms: u64,
) -> Result<ConstraintRow, BudgetError> {
    constraint.validate()?;
    let body = constraint.canonical_json()?;
    let hash = constraint.hash()?;
    db.set_agent_constraint(agent_id, name, Some((&body, &hash)), at_ms)?.map_err(BudgetError::Store)
}

/// Removes the agent's constraint `name` (a new version without a body; history is kept).
pub fn remove(db: &Constellation, agent_id: &str, name: &str, at_ms: u64) -> Result<ConstraintRow, BudgetError> {
    db.set_agent_constraint(agent_id, name, None, at_ms)?.map_err(BudgetError::Store)
}

/// Where one of an agent's constraints stands.
#[derive(Clone, Debug)]
pub struct ConstraintStatus {
    pub row: ConstraintRow,
    pub constraint: Constraint,
    pub tally: Tally,
    /// Whether a use without spending would be allowed now (temporal and usage limits).
    pub open: Result<(), String>,
}

/// Every current constraint of `agent_id`, with its tally as of `now_ms`.
pub fn status(db: &Constellation, agent_id: &str, now_ms: u64) -> Result<Vec<ConstraintStatus>, BudgetError> {
    let mut statuses = Vec::new();
    for row in db.agent_constraints(agent_id)? {
        let constraint = parse_row(&row)?;
        // As of `now_ms`: the payments held by then.
        let spends = StoredSpends::new(db, agent_id, row.since_ms, Some(now_ms));
        let tally = constraint.tally_with(&spends, now_ms)?;
        let open = match constraint.check_tally(&tally, Request { at_ms: now_ms, amount: None })? {
            Ok(_) => Ok(()),
            Err(violation) => Err(violation.to_string()),
        };
        statuses.push(ConstraintStatus { row, constraint, tally, open });
    }
    Ok(statuses)
}

/// Where the spends of a constellation are read: the constellation itself, or a payment's write.
pub(crate) trait SpendSource {
    fn totals(&self, agent_id: &str, from_ms: u64, to_ms: u64, currency: &str) -> Result<SpendTotals, StoreError>;
    fn first(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError>;
}

impl SpendSource for Constellation {
    fn totals(&self, agent_id: &str, from_ms: u64, to_ms: u64, currency: &str) -> Result<SpendTotals, StoreError> {
        self.spend_totals(agent_id, from_ms, to_ms, currency)
    }

    fn first(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
        self.first_spend_ms(agent_id, since_ms)
    }
}

impl SpendSource for LedgerTx<'_> {
    fn totals(&self, agent_id: &str, from_ms: u64, to_ms: u64, currency: &str) -> Result<SpendTotals, StoreError> {
        self.spend_totals(agent_id, from_ms, to_ms, currency)
    }

    fn first(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
        self.first_spend_ms(agent_id, since_ms)
    }
}

/// A ledger transaction's spends without one payment's own: what a payment is judged against
/// when its hold is on the ledger already (its session resumed after a crash between the write
/// that held the money and the one that records its evidence). The judgement recorded then is
/// the one made before the hold.
pub(crate) struct SpendsWithout<'a, 't> {
    pub ledger: &'a LedgerTx<'t>,
    pub payment_id: &'a str,
}

impl SpendSource for SpendsWithout<'_, '_> {
    fn totals(&self, agent_id: &str, from_ms: u64, to_ms: u64, currency: &str) -> Result<SpendTotals, StoreError> {
        self.ledger.spend_totals_without(agent_id, from_ms, to_ms, currency, self.payment_id)
    }

    fn first(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
        self.ledger.first_spend_ms_without(agent_id, since_ms, self.payment_id)
    }
}

/// Totals read for a range, summing a currency.
type TotalsRead = ((u64, u64), String, SpendTotals);

/// An agent's spends since a constraint's start, as the [`History`] the constraint is judged
/// against: aggregate queries on the covering index, never every row.
pub(crate) struct StoredSpends<'a, S: SpendSource + ?Sized> {
    source: &'a S,
    agent_id: &'a str,
    since_ms: u64,
    /// Only payments held at or before this time (for a view as of a past time).
    until_ms: Option<u64>,
    /// Totals already read, by range and currency: a budget and a count over the same window
    /// share one query (its count and sum come together).
    read: std::cell::RefCell<Vec<TotalsRead>>,
}

impl<'a, S: SpendSource + ?Sized> StoredSpends<'a, S> {
    pub fn new(source: &'a S, agent_id: &'a str, since_ms: u64, until_ms: Option<u64>) -> Self {
        Self { source, agent_id, since_ms, until_ms, read: Default::default() }
    }

    /// `[from_ms, to_ms)` cut to the constraint's start and `until_ms`.
    fn range(&self, from_ms: u64, to_ms: u64) -> (u64, u64) {
        (from_ms.max(self.since_ms), self.until_ms.map_or(to_ms, |until| to_ms.min(until.saturating_add(1))))
    }

    /// The totals of `range`, summing `currency` (any cached totals of the range will do when
    /// `currency` is `None`: counts do not depend on it).
    fn totals(&self, range: (u64, u64), currency: Option<&str>) -> Result<SpendTotals, StoreError> {
        let cached = self
            .read
            .borrow()
            .iter()
            .find(|(r, c, _)| *r == range && currency.is_none_or(|currency| c == currency))
            .map(|(_, _, totals)| *totals);
        if let Some(totals) = cached {
            return Ok(totals);
        }
        let currency = currency.unwrap_or_default();
        let totals = self.source.totals(self.agent_id, range.0, range.1, currency)?;
        self.read.borrow_mut().push((range, currency.to_owned(), totals));
        Ok(totals)
    }
}

impl<S: SpendSource + ?Sized> History for StoredSpends<'_, S> {
    type Error = StoreError;

    fn uses(&self, from_ms: u64, to_ms: u64) -> Result<u64, StoreError> {
        Ok(self.totals(self.range(from_ms, to_ms), None)?.count)
    }

    fn spent_minor(&self, currency: &str, from_ms: u64, to_ms: u64) -> Result<u64, StoreError> {
        Ok(self.totals(self.range(from_ms, to_ms), Some(currency))?.sum_minor)
    }

    fn first_use_ms(&self) -> Result<Option<u64>, StoreError> {
        let first = self.source.first(self.agent_id, self.since_ms)?;
        Ok(first.filter(|at| self.until_ms.is_none_or(|until| *at <= until)))
    }
}

/// The constraint a stored row holds (its hash checked).
pub fn parse_row(row: &ConstraintRow) -> Result<Constraint, BudgetError> {
    let body = row.body.as_deref().unwrap_or_default();
    let constraint = Constraint::from_json_text(body)?;
    if row.constraint_hash.as_deref() != Some(constraint.hash()?.as_str()) {
        return Err(BudgetError::Runtime(RuntimeError::Store(pactum_memory::StoreError::Corrupt {
            detail: format!("constraint {} of {}: its hash does not match", row.name, row.agent_id),
        })));
    }
    Ok(constraint)
}

/// A constraint and its tally as JSON, each part with where it stands as of `now_ms`.
pub fn describe(constraint: &Constraint, tally: &Tally, now_ms: u64) -> Value {
    let slot = |window: &Option<Window>| {
        window.map(|w| {
            let (start, end) = w.slot(now_ms);
            json!({"length_ms": w.length_ms, "anchor_ms": w.anchor_ms, "current_start_ms": start, "resets_at_ms": end})
        })
    };
    match (constraint, tally) {
        (Constraint::Budget(b), Tally::Budget { spent_minor }) => json!({
            "type": "budget",
            "currency": b.currency,
            "max_amount_minor": b.max_amount_minor,
            "spent_minor": spent_minor,
            "remaining_minor": b.max_amount_minor.saturating_sub(*spent_minor),
            "window": slot(&b.window),
        }),
        (Constraint::Usage(u), Tally::Usage { uses }) => json!({
            "type": "usage",
            "max_uses": u.max_uses,
            "uses": uses,
            "remaining_uses": u.max_uses.saturating_sub(*uses),
            "window": slot(&u.window),
        }),
        (Constraint::Temporal(t), Tally::Temporal { first_use_ms }) => {
            let start = t.valid_from_ms.or(*first_use_ms);
            let by_duration = t.duration_ms.and_then(|d| start.map(|s| s.saturating_add(d)));
            let ends = match (t.valid_until_ms, by_duration) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            json!({
                "type": "temporal",
                "valid_from_ms": t.valid_from_ms,
                "valid_until_ms": t.valid_until_ms,
                "duration_ms": t.duration_ms,
                "first_use_ms": first_use_ms,
                "ends_at_ms": ends,
            })
        }
        (Constraint::Combined { all }, Tally::Combined { all: tallies }) => json!({
            "type": "combined",
            "all": all.iter().zip(tallies).map(|(c, t)| describe(c, t, now_ms)).collect::<Vec<_>>(),
        }),
        (Constraint::Custom(custom), _) => json!({"type": "custom", "id": custom.id, "enforced": false}),
        _ => json!({"type": constraint.kind(), "error": "the tally does not match the constraint"}),
    }
}
