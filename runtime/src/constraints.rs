//! Spending and usage constraints: Temporal, Usage, Budget, Combined and Custom.
//!
//! Pure and deterministic: every check takes the time from the caller (the runtime's injected
//! clock), never the wall clock. The flaws this avoids: `duration` is enforced (a grant lasts
//! `duration_ms` from its start, whatever `valid_until` says), windows are computed from the
//! supplied time, and windows reset (a window is a fixed slot `[anchor + k·length,
//! anchor + (k+1)·length)`, and only the uses and spends inside the current slot count).
//!
//! A constraint is checked against the history of what it allowed ([`Ledger`]); a use or spend
//! is recorded only after it was allowed, so a budget is never exceeded in any window, whatever
//! the sequence of requests (a property test checks it).

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// Longest constraint text read (a file, a stored row), in bytes.
pub const CONSTRAINT_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of `combined` constraints.
pub const CONSTRAINT_DEPTH_MAX: usize = 4;
/// Most constraints (leaves and `combined` alike) in one constraint.
pub const CONSTRAINT_NODES_MAX: usize = 64;

/// A fixed, resetting window.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Length of each slot, in milliseconds (at least 1).
    pub length_ms: u64,
    /// Where the slots start: slot `k` is `[anchor_ms + k·length_ms, anchor_ms + (k+1)·length_ms)`.
    pub anchor_ms: u64,
}

impl Window {
    /// The slot containing `now_ms`: its start and end (exclusive); slots repeat before the
    /// anchor too.
    pub fn slot(&self, now_ms: u64) -> (u64, u64) {
        // Signed arithmetic: a slot before the anchor may begin before time zero (then it is
        // clamped there; no time is earlier).
        let length = i128::from(self.length_ms.max(1));
        let offset = i128::from(now_ms) - i128::from(self.anchor_ms);
        let start = i128::from(self.anchor_ms) + offset.div_euclid(length) * length;
        let clamp = |value: i128| u64::try_from(value.max(0)).unwrap_or(u64::MAX);
        (clamp(start), clamp(start + length))
    }
}

/// When a grant may be used.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Temporal {
    pub valid_from_ms: Option<u64>,
    pub valid_until_ms: Option<u64>,
    /// How long the grant lasts from its start (`valid_from_ms`, or its first use when there is
    /// none). Enforced together with `valid_until_ms`: the earlier end wins.
    pub duration_ms: Option<u64>,
}

/// How many times something may be used (per window, if one is given).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub max_uses: u64,
    pub window: Option<Window>,
}

/// How much may be spent (per window, if one is given), in one currency's minor units.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_amount_minor: u64,
    /// ISO 4217 code; a spend in another currency is refused (no conversion).
    pub currency: String,
    pub window: Option<Window>,
}

/// A vendor's own constraint: carried and reported, never enforced here.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    /// `<lowercase dns name>/<name>`.
    pub id: String,
    pub payload: serde_json::Value,
}

/// A constraint.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    Temporal(Temporal),
    Usage(Usage),
    Budget(Budget),
    /// Every one must pass.
    Combined {
        all: Vec<Constraint>,
    },
    Custom(Custom),
}

/// What a constraint's history comes to at one moment (see [`Constraint::tally`]), in the
/// constraint's own shape.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tally {
    Temporal { first_use_ms: Option<u64> },
    Usage { uses: u64 },
    Budget { spent_minor: u64 },
    Combined { all: Vec<Tally> },
    Custom,
}

/// What a constraint's history can be asked: uses and spends in a time range `[from, to)`, and
/// the first use.
pub trait History {
    type Error;
    fn uses(&self, from_ms: u64, to_ms: u64) -> Result<u64, Self::Error>;
    /// The sum spent in `currency` in the range (saturating).
    fn spent_minor(&self, currency: &str, from_ms: u64, to_ms: u64) -> Result<u64, Self::Error>;
    fn first_use_ms(&self) -> Result<Option<u64>, Self::Error>;
}

impl History for Ledger {
    type Error = std::convert::Infallible;

    fn uses(&self, from_ms: u64, to_ms: u64) -> Result<u64, Self::Error> {
        Ok(self.entries.iter().filter(|e| e.at_ms >= from_ms && e.at_ms < to_ms).count() as u64)
    }

    fn spent_minor(&self, currency: &str, from_ms: u64, to_ms: u64) -> Result<u64, Self::Error> {
        Ok(self
            .entries
            .iter()
            .filter(|e| e.at_ms >= from_ms && e.at_ms < to_ms && e.currency.as_deref() == Some(currency))
            .fold(0u64, |sum, e| sum.saturating_add(e.amount_minor)))
    }

    fn first_use_ms(&self) -> Result<Option<u64>, Self::Error> {
        Ok(self.entries.first().map(|e| e.at_ms))
    }
}

/// One allowed use (and its spend, if any), as recorded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub at_ms: u64,
    pub amount_minor: u64,
    pub currency: Option<String>,
}

/// What a constraint has allowed so far, oldest first.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub entries: Vec<Entry>,
}

/// What is asked: one use, optionally spending an amount.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Request {
    pub at_ms: u64,
    pub amount: Option<Money>,
}

/// Why a request was refused (stable code `E_CONSTRAINT_VIOLATION`; the failure code of a
/// session is PACT-1xx).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{constraint} constraint: {detail}")]
pub struct Violation {
    /// `temporal`, `usage`, `budget`, or a custom id.
    pub constraint: String,
    pub detail: String,
}

impl Violation {
    pub fn code(&self) -> &'static str {
        "E_CONSTRAINT_VIOLATION"
    }
}

/// A constraint that cannot be used as written.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid constraint: {0}")]
pub struct ConstraintError(pub String);

impl ConstraintError {
    pub fn code(&self) -> &'static str {
        "CONSTRAINT_INVALID"
    }
}

/// What a check found: allowed, with the custom constraints it could not judge.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Allowed {
    /// Ids of custom constraints carried but not enforced.
    pub informational: Vec<String>,
}

fn violation(constraint: &str, detail: String) -> Violation {
    Violation { constraint: constraint.to_owned(), detail }
}

impl Constraint {
    /// Checks the constraint's own consistency and size (at most [`CONSTRAINT_DEPTH_MAX`] levels
    /// and [`CONSTRAINT_NODES_MAX`] constraints).
    pub fn validate(&self) -> Result<(), ConstraintError> {
        fn shape(constraint: &Constraint, depth: usize, nodes: &mut usize) -> Result<(), ConstraintError> {
            *nodes += 1;
            if depth > CONSTRAINT_DEPTH_MAX || *nodes > CONSTRAINT_NODES_MAX {
                return Err(ConstraintError(format!(
                    "more than {CONSTRAINT_DEPTH_MAX} levels or {CONSTRAINT_NODES_MAX} constraints"
                )));
            }
            if let Constraint::Combined { all } = constraint {
                if all.is_empty() {
                    return Err(ConstraintError("a combined constraint needs at least one constraint".into()));
                }
                for inner in all {
                    shape(inner, depth + 1, nodes)?;
                }
            }
            Ok(())
        }
        shape(self, 1, &mut 0)?;
        self.validate_fields()
    }

    fn validate_fields(&self) -> Result<(), ConstraintError> {
        let window_ok = |window: &Option<Window>| window.is_none_or(|w| w.length_ms > 0);
        match self {
            Self::Temporal(t) => {
                if let (Some(from), Some(until)) = (t.valid_from_ms, t.valid_until_ms)
                    && until <= from
                {
                    return Err(ConstraintError("valid_until must be after valid_from".into()));
                }
                if t.duration_ms == Some(0) {
                    return Err(ConstraintError("a duration must be above zero".into()));
                }
                Ok(())
            }
            Self::Usage(u) if !window_ok(&u.window) => Err(ConstraintError("a window needs a length".into())),
            Self::Usage(_) => Ok(()),
            Self::Budget(b) => {
                if !window_ok(&b.window) {
                    return Err(ConstraintError("a window needs a length".into()));
                }
                crate::money::Currency::parse(&b.currency)
                    .map_err(|e| ConstraintError(format!("budget currency: {e}")))?;
                if b.max_amount_minor > crate::money::AMOUNT_MINOR_MAX {
                    return Err(ConstraintError("the budget is above 2^53 - 1 minor units".into()));
                }
                Ok(())
            }
            Self::Combined { all } => all.iter().try_for_each(Self::validate_fields),
            Self::Custom(custom) => {
                let valid = custom.id.split_once('/').is_some_and(|(domain, name)| {
                    domain.contains('.')
                        && domain
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                        && !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
                if valid {
                    Ok(())
                } else {
                    Err(ConstraintError(format!("custom id {:?} is not <dns name>/<name>", custom.id)))
                }
            }
        }
    }

    /// Whether `request` is allowed given what `ledger` says was allowed before.
    pub fn check(&self, ledger: &Ledger, request: Request) -> Result<Allowed, Violation> {
        let tally = self.tally(ledger, request.at_ms);
        self.check_tally(&tally, request).unwrap_or_else(|mismatch| Err(violation("tally", mismatch.0)))
    }

    /// What `ledger` comes to for this constraint at `now_ms`: the uses and spends in each
    /// window's current slot, and the first use. All a check needs, so a check can be recorded
    /// (and checked again) without the history behind it.
    pub fn tally(&self, ledger: &Ledger, now_ms: u64) -> Tally {
        self.tally_with(ledger, now_ms).unwrap_or_else(|never: std::convert::Infallible| match never {})
    }

    /// [`Constraint::tally`] over any [`History`] (the constellation's spends answer with
    /// aggregate queries instead of reading every entry).
    pub fn tally_with<H: History>(&self, history: &H, now_ms: u64) -> Result<Tally, H::Error> {
        // The current slot, or all time. A use recorded with a later time (another session's
        // clock ran ahead) still counts: it happened.
        let range = |window: &Option<Window>| window.map_or((0, u64::MAX), |w| w.slot(now_ms));
        Ok(match self {
            Self::Temporal(_) => Tally::Temporal { first_use_ms: history.first_use_ms()? },
            Self::Usage(u) => {
                let (from, to) = range(&u.window);
                Tally::Usage { uses: history.uses(from, to)? }
            }
            Self::Budget(b) => {
                let (from, to) = range(&b.window);
                Tally::Budget { spent_minor: history.spent_minor(&b.currency, from, to)? }
            }
            Self::Combined { all } => {
                Tally::Combined { all: all.iter().map(|c| c.tally_with(history, now_ms)).collect::<Result<_, _>>()? }
            }
            Self::Custom(_) => Tally::Custom,
        })
    }

    /// Whether `request` is allowed given a tally of this constraint's history. A tally of
    /// another shape than the constraint's is an error, not a verdict.
    pub fn check_tally(&self, tally: &Tally, request: Request) -> Result<Result<Allowed, Violation>, ConstraintError> {
        let now = request.at_ms;
        let verdict = match (self, tally) {
            (Self::Temporal(t), Tally::Temporal { first_use_ms }) => {
                if let Some(from) = t.valid_from_ms
                    && now < from
                {
                    return Ok(Err(violation("temporal", format!("not valid before {from} (now {now})"))));
                }
                let start = t.valid_from_ms.or(*first_use_ms).unwrap_or(now);
                let by_duration = t.duration_ms.map(|d| start.saturating_add(d));
                let end = match (t.valid_until_ms, by_duration) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match end {
                    Some(end) if now >= end => Err(violation("temporal", format!("expired at {end} (now {now})"))),
                    _ => Ok(Allowed::default()),
                }
            }
            (Self::Usage(u), Tally::Usage { uses }) => {
                if *uses >= u.max_uses {
                    let scope = if u.window.is_some() { " in this window" } else { "" };
                    Err(violation("usage", format!("{uses} of {} uses taken{scope}", u.max_uses)))
                } else {
                    Ok(Allowed::default())
                }
            }
            (Self::Budget(b), Tally::Budget { spent_minor }) => match request.amount {
                None => Ok(Allowed::default()),
                Some(amount) if amount.currency().code() != b.currency => Err(violation(
                    "budget",
                    format!("a spend in {} against a budget in {}", amount.currency().code(), b.currency),
                )),
                Some(amount) => {
                    let after = spent_minor.saturating_add(amount.amount_minor());
                    if after > b.max_amount_minor {
                        Err(violation(
                            "budget",
                            format!(
                                "{} more would make {after} of {} {} minor units{}",
                                amount.amount_minor(),
                                b.max_amount_minor,
                                b.currency,
                                if b.window.is_some() { " in this window" } else { "" }
                            ),
                        ))
                    } else {
                        Ok(Allowed::default())
                    }
                }
            },
            (Self::Combined { all }, Tally::Combined { all: tallies }) if all.len() == tallies.len() => {
                let mut allowed = Allowed::default();
                for (constraint, tally) in all.iter().zip(tallies) {
                    match constraint.check_tally(tally, request)? {
                        Ok(more) => allowed.informational.extend(more.informational),
                        Err(violation) => return Ok(Err(violation)),
                    }
                }
                Ok(allowed)
            }
            (Self::Custom(custom), Tally::Custom) => Ok(Allowed { informational: vec![custom.id.clone()] }),
            _ => return Err(ConstraintError("the tally does not have the constraint's shape".into())),
        };
        Ok(verdict)
    }

    /// The constraint's kind: `temporal`, `usage`, `budget`, `combined` or `custom`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Temporal(_) => "temporal",
            Self::Usage(_) => "usage",
            Self::Budget(_) => "budget",
            Self::Combined { .. } => "combined",
            Self::Custom(_) => "custom",
        }
    }

    /// The canonical JSON (RFC 8785) of the constraint, as stored and recorded.
    pub fn canonical_json(&self) -> Result<String, ConstraintError> {
        let value = serde_json::to_value(self).map_err(|e| ConstraintError(e.to_string()))?;
        pactum_transcripts::canonical::to_canonical_string(&value).map_err(|e| ConstraintError(e.to_string()))
    }

    /// `sha256:<hex>` of the canonical JSON: the constraint's identity.
    pub fn hash(&self) -> Result<String, ConstraintError> {
        let canonical = self.canonical_json()?;
        Ok(format!("sha256:{}", pactum_transcripts::Digest::tagged(&[], canonical.as_bytes()).to_hex()))
    }

    /// Reads a constraint from JSON text (strict: no duplicate members) and validates it.
    pub fn from_json_text(text: &str) -> Result<Self, ConstraintError> {
        if text.len() > CONSTRAINT_BYTES_MAX {
            return Err(ConstraintError(format!("a constraint is at most {CONSTRAINT_BYTES_MAX} bytes of JSON")));
        }
        let value = pactum_transcripts::canonical::parse_strict(text).map_err(|e| ConstraintError(e.to_string()))?;
        let constraint: Self = serde_json::from_value(value).map_err(|e| ConstraintError(e.to_string()))?;
        constraint.validate()?;
        constraint.canonical_json()?;
        Ok(constraint)
    }

    /// Reads a constraint from a JSON file (at most [`CONSTRAINT_BYTES_MAX`] bytes).
    pub fn load(path: &std::path::Path) -> Result<Self, ConstraintError> {
        use std::io::Read as _;
        let file =
            std::fs::File::open(path).map_err(|e| ConstraintError(format!("{}: cannot open: {e}", path.display())))?;
        let mut text = String::new();
        file.take(CONSTRAINT_BYTES_MAX as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConstraintError(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_json_text(&text).map_err(|e| ConstraintError(format!("{}: {}", path.display(), e.0)))
    }

    /// Checks `request` and, if allowed, records it in `ledger`. A refused request changes nothing.
    pub fn apply(&self, ledger: &mut Ledger, request: Request) -> Result<Allowed, Violation> {
        let allowed = self.check(ledger, request)?;
        ledger.entries.push(Entry {
            at_ms: request.at_ms,
            amount_minor: request.amount.map_or(0, |m| m.amount_minor()),
            currency: request.amount.map(|m| m.currency().code().to_owned()),
        });
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn usd(minor: u64) -> Option<Money> {
        Currency::parse("USD").ok().and_then(|c| Money::from_minor(minor, c).ok())
    }

    fn spend(at_ms: u64, minor: u64) -> Request {
        Request { at_ms, amount: usd(minor) }
    }

    #[test]
    fn duration_is_enforced_from_the_first_use() {
        let grant = Constraint::Temporal(Temporal {
            valid_from_ms: None,
            valid_until_ms: Some(10_000),
            duration_ms: Some(100),
        });
        let mut ledger = Ledger::default();
        assert!(grant.apply(&mut ledger, spend(1_000, 0)).is_ok());
        assert!(grant.apply(&mut ledger, spend(1_099, 0)).is_ok());
        assert!(
            grant.check(&ledger, spend(1_100, 0)).is_err(),
            "100 ms after the first use, although valid_until is later"
        );
        let from =
            Constraint::Temporal(Temporal { valid_from_ms: Some(500), valid_until_ms: None, duration_ms: Some(100) });
        assert!(from.check(&Ledger::default(), spend(499, 0)).is_err());
        assert!(from.check(&Ledger::default(), spend(599, 0)).is_ok());
        assert!(from.check(&Ledger::default(), spend(600, 0)).is_err());
    }

    #[test]
    fn windows_reset() {
        let window = Window { length_ms: 1_000, anchor_ms: 0 };
        let usage = Constraint::Usage(Usage { max_uses: 2, window: Some(window) });
        let mut ledger = Ledger::default();
        assert!(usage.apply(&mut ledger, spend(10, 0)).is_ok());
        assert!(usage.apply(&mut ledger, spend(20, 0)).is_ok());
        assert!(usage.apply(&mut ledger, spend(999, 0)).is_err());
        assert!(usage.apply(&mut ledger, spend(1_000, 0)).is_ok(), "a new window");
        assert_eq!(window.slot(2_500), (2_000, 3_000));
        assert_eq!(Window { length_ms: 1_000, anchor_ms: 5_000 }.slot(3_500), (3_000, 4_000));
    }

    /// Found by the budget property test: a slot before the anchor that would begin before time
    /// zero underflowed.
    #[test]
    fn a_slot_before_the_anchor_can_begin_before_time_zero() {
        let window = Window { length_ms: 300, anchor_ms: 100 };
        assert_eq!(window.slot(50), (0, 100));
        assert_eq!(window.slot(100), (100, 400));
        assert_eq!(Window { length_ms: 1, anchor_ms: u64::MAX }.slot(0), (0, 1));
    }

    #[test]
    fn a_budget_refuses_other_currencies_and_overspending() {
        let budget = Constraint::Budget(Budget { max_amount_minor: 100, currency: "USD".into(), window: None });
        let mut ledger = Ledger::default();
        assert!(budget.apply(&mut ledger, spend(1, 60)).is_ok());
        assert!(budget.apply(&mut ledger, spend(2, 41)).is_err());
        assert!(budget.apply(&mut ledger, spend(3, 40)).is_ok());
        let eur = Currency::parse("EUR").ok().and_then(|c| Money::from_minor(1, c).ok());
        assert!(budget.check(&ledger, Request { at_ms: 4, amount: eur }).is_err());
        assert_eq!(ledger.entries.len(), 2, "refused requests are not recorded");
    }

    #[test]
    fn combined_needs_all_and_custom_is_informational() {
        let combined = Constraint::Combined {
            all: vec![
                Constraint::Usage(Usage { max_uses: 1, window: None }),
                Constraint::Custom(Custom { id: "example.com/tier".into(), payload: serde_json::json!({"tier": 2}) }),
            ],
        };
        combined.validate().expect("valid");
        let mut ledger = Ledger::default();
        assert_eq!(
            combined.apply(&mut ledger, spend(1, 0)).map(|a| a.informational),
            Ok(vec!["example.com/tier".to_owned()])
        );
        assert_eq!(combined.apply(&mut ledger, spend(2, 0)).map_err(|v| v.constraint), Err("usage".to_owned()));
        let bad = Constraint::Custom(Custom { id: "Tier".into(), payload: serde_json::Value::Null });
        assert!(bad.validate().is_err());
    }

    proptest::proptest! {
        /// Whatever the sequence of spends (times in order, any amounts), no window ever holds
        /// more than the budget, and a refused spend changes nothing.
        #[test]
        fn a_budget_is_never_exceeded(
            steps in proptest::collection::vec((0u64..5_000, 0u64..400), 0..200),
            max in 1u64..1_000,
            length in 1u64..3_000,
            anchor in 0u64..3_000,
        ) {
            let window = Window { length_ms: length, anchor_ms: anchor };
            let budget = Constraint::Budget(Budget { max_amount_minor: max, currency: "USD".into(), window: Some(window) });
            let mut ledger = Ledger::default();
            let mut now = 0;
            for (advance, amount) in steps {
                now += advance;
                let before = ledger.clone();
                if budget.apply(&mut ledger, spend(now, amount)).is_err() {
                    proptest::prop_assert_eq!(&ledger, &before);
                }
            }
            for entry in &ledger.entries {
                let (start, end) = window.slot(entry.at_ms);
                let total: u64 = ledger.entries.iter().filter(|e| e.at_ms >= start && e.at_ms < end).map(|e| e.amount_minor).sum();
                proptest::prop_assert!(total <= max, "window [{start}, {end}) holds {total} > {max}");
            }
        }

        /// Usage per window never exceeds its maximum, and a window that starts empty takes
        /// `max_uses` again.
        #[test]
        fn usage_windows_reset(times in proptest::collection::vec(0u64..10_000, 0..100), max in 1u64..5) {
            let mut times = times;
            times.sort_unstable();
            let window = Window { length_ms: 1_000, anchor_ms: 0 };
            let usage = Constraint::Usage(Usage { max_uses: max, window: Some(window) });
            let mut ledger = Ledger::default();
            for at in times {
                let (start, end) = window.slot(at);
                let used = ledger.entries.iter().filter(|e| e.at_ms >= start && e.at_ms < end).count() as u64;
                let allowed = usage.apply(&mut ledger, spend(at, 0)).is_ok();
                proptest::prop_assert_eq!(allowed, used < max);
            }
        }
    }
}
