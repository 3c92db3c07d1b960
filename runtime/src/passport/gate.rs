//! The passport gate: does an agent's passport meet a requirement, and if not, why — with a
//! stable reason code, the factor that triggered the denial and a sentence for people.

use serde::{Deserialize, Serialize};

use super::score::{DAY_MS, Latest, Score};

/// Fewer transactions (outcomes that were not neutral) than this is a new agent:
/// `INSUFFICIENT_HISTORY`.
pub const BOOTSTRAP_TRANSACTIONS: u64 = 3;
/// A dispute lost within this window before `as_of` is `DISPUTE_FLAGGED`.
pub const DISPUTE_WINDOW_MS: u64 = 90 * DAY_MS;
/// A policy violation within this window before `as_of` is `RECENT_POLICY_VIOLATION`.
pub const POLICY_VIOLATION_WINDOW_MS: u64 = 30 * DAY_MS;

/// What a policy asks of a counterparty's passport.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassportRequirement {
    /// Minimum score, thousandths of a point (60 points = 60,000).
    pub min_score_milli: u32,
    /// Minimum confidence, thousandths (0.5 = 500).
    pub min_confidence_milli: u32,
}

/// Why a passport gate denied an agent. The names are stable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DenialReason {
    LowScore,
    LowConfidence,
    InsufficientHistory,
    DisputeFlagged,
    RecentPolicyViolation,
}

impl DenialReason {
    pub const ALL: [DenialReason; 5] = [
        Self::InsufficientHistory,
        Self::DisputeFlagged,
        Self::RecentPolicyViolation,
        Self::LowScore,
        Self::LowConfidence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LowScore => "LOW_SCORE",
            Self::LowConfidence => "LOW_CONFIDENCE",
            Self::InsufficientHistory => "INSUFFICIENT_HISTORY",
            Self::DisputeFlagged => "DISPUTE_FLAGGED",
            Self::RecentPolicyViolation => "RECENT_POLICY_VIOLATION",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// The gate's answer for one agent. Recorded in transcripts as is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassportCheck {
    pub agent_id: String,
    pub pass: bool,
    pub reason: Option<DenialReason>,
    pub score_milli: u32,
    pub confidence_milli: u32,
    pub min_score_milli: u32,
    pub min_confidence_milli: u32,
    /// Outcomes the score was computed from.
    pub events: u64,
    pub as_of_ms: u64,
    pub triggering_factor: Option<String>,
}

impl PassportCheck {
    /// Whether the answer agrees with its own numbers: a pass meets both thresholds and has no
    /// reason; a denial has a reason and a triggering factor, and `LOW_SCORE` / `LOW_CONFIDENCE`
    /// only below their threshold. (Other reasons depend on the history behind the score.)
    pub fn is_consistent(&self) -> bool {
        let score_ok = self.score_milli >= self.min_score_milli;
        let confidence_ok = self.confidence_milli >= self.min_confidence_milli;
        match self.reason {
            None => score_ok && confidence_ok && self.triggering_factor.is_none(),
            Some(reason) => {
                self.triggering_factor.is_some()
                    && !self.pass
                    && match reason {
                        DenialReason::LowScore => !score_ok,
                        DenialReason::LowConfidence => score_ok && !confidence_ok,
                        _ => true,
                    }
            }
        }
    }
}

/// `45.2` for 45,200 thousandths: trailing zeros dropped, at most three decimals.
pub fn milli_text(milli: u32) -> String {
    let (whole, fraction) = (milli / 1000, milli % 1000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `0.45` for 450 thousandths.
pub fn confidence_text(milli: u32) -> String {
    milli_text(milli)
}

/// The calendar day (UTC) of a Unix time in milliseconds: `2026-11-20`.
pub fn day_text(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{at_ms} ms"), |ts| ts.strftime("%Y-%m-%d").to_string())
}

fn describe(latest: &Latest, what: &str) -> String {
    let code = latest.code.as_deref().map_or(String::new(), |code| format!("{code} "));
    let domain = latest.fault_domain.as_deref().map_or(String::new(), |d| format!(" in {d} domain"));
    format!("{code}{what}{domain} with {} ({})", latest.counterparty, day_text(latest.at_ms))
}

/// Checks `score` against `requirement`. Reasons are tried in a fixed order: too little
/// history, a recent lost dispute, a recent policy violation, a low score, a low confidence;
/// the first that applies is the answer.
pub fn require_passport(score: &Score, requirement: PassportRequirement) -> PassportCheck {
    let breakdown = &score.breakdown;
    let as_of_ms = score.as_of_ms;
    fn recent(latest: &Option<Latest>, as_of_ms: u64, window: u64) -> Option<&Latest> {
        latest.as_ref().filter(|latest| as_of_ms.saturating_sub(latest.at_ms) <= window)
    }
    let denial: Option<(DenialReason, String)> = if breakdown.transactions < BOOTSTRAP_TRANSACTIONS {
        Some((
            DenialReason::InsufficientHistory,
            format!("{} transaction(s) on record; {BOOTSTRAP_TRANSACTIONS} are needed", breakdown.transactions),
        ))
    } else if let Some(latest) = recent(&breakdown.latest_dispute_lost, as_of_ms, DISPUTE_WINDOW_MS) {
        Some((DenialReason::DisputeFlagged, describe(latest, "dispute lost")))
    } else if let Some(latest) = recent(&breakdown.latest_policy_violation, as_of_ms, POLICY_VIOLATION_WINDOW_MS) {
        Some((DenialReason::RecentPolicyViolation, describe(latest, "failure")))
    } else if score.score_milli < requirement.min_score_milli {
        Some((DenialReason::LowScore, low_score_factor(score)))
    } else if score.confidence_milli < requirement.min_confidence_milli {
        Some((
            DenialReason::LowConfidence,
            format!(
                "{} outcome(s) with {} counterpart{}",
                breakdown.events,
                breakdown.counterparties,
                if breakdown.counterparties == 1 { "y" } else { "ies" }
            ),
        ))
    } else {
        None
    };
    PassportCheck {
        agent_id: score.agent_id.clone(),
        pass: denial.is_none(),
        reason: denial.as_ref().map(|(reason, _)| *reason),
        score_milli: score.score_milli,
        confidence_milli: score.confidence_milli,
        min_score_milli: requirement.min_score_milli,
        min_confidence_milli: requirement.min_confidence_milli,
        events: breakdown.events,
        as_of_ms: score.as_of_ms,
        triggering_factor: denial.map(|(_, factor)| factor),
    }
}

/// What cost a low score the most: failures, policy violations, disputes or concentration.
fn low_score_factor(score: &Score) -> String {
    let b = &score.breakdown;
    let candidates = [
        (b.failure_cost_milli, b.latest_failure.as_ref().map(|l| describe(l, "failure")), b.failures.count, "failure"),
        (
            b.policy_violation_cost_milli,
            b.latest_policy_violation.as_ref().map(|l| describe(l, "failure")),
            b.policy_violations.count,
            "policy violation",
        ),
        (
            b.dispute_cost_milli,
            b.latest_dispute_lost.as_ref().map(|l| describe(l, "dispute lost")),
            b.disputes_lost.count,
            "lost dispute",
        ),
    ];
    let worst = candidates.iter().filter(|c| c.2 > 0).max_by_key(|c| c.0);
    match worst {
        Some((cost, latest, count, what)) if *cost >= b.concentration_penalty_milli => format!(
            "{count} {what}{} cost {} points; latest: {}",
            if *count == 1 { "" } else { "s" },
            milli_text(*cost),
            latest.clone().unwrap_or_default()
        ),
        _ if b.concentration_penalty_milli > 0 => format!(
            "volume concentrated on few counterparties cost {} points",
            milli_text(b.concentration_penalty_milli)
        ),
        _ => format!("{} outcome(s), none of them successes", b.events),
    }
}

/// One sentence for people: `Passport policy gate denied provider-x: score 45.2 is below the
/// required minimum 60. Triggering factor: ...`.
pub fn narrate(check: &PassportCheck) -> String {
    let who = &check.agent_id;
    let score = milli_text(check.score_milli);
    let confidence = confidence_text(check.confidence_milli);
    let Some(reason) = check.reason else {
        return format!(
            "Passport policy gate admitted {who}: score {score} (minimum {}), confidence {confidence} (minimum {}).",
            milli_text(check.min_score_milli),
            confidence_text(check.min_confidence_milli)
        );
    };
    let why = match reason {
        DenialReason::LowScore => {
            format!("score {score} is below the required minimum {}", milli_text(check.min_score_milli))
        }
        DenialReason::LowConfidence => format!(
            "confidence {confidence} is below the required minimum {}",
            confidence_text(check.min_confidence_milli)
        ),
        DenialReason::InsufficientHistory => "it has too little history to judge".to_owned(),
        DenialReason::DisputeFlagged => "it lost a dispute recently".to_owned(),
        DenialReason::RecentPolicyViolation => "it caused a policy violation recently".to_owned(),
    };
    let factor = check.triggering_factor.as_deref().unwrap_or("none recorded");
    format!("Passport policy gate denied {who} ({}): {why}. Triggering factor: {factor}.", reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passport::score::{Outcome, PassportEvent, score};

    const NOW: u64 = 400 * DAY_MS;
    const EASY: PassportRequirement = PassportRequirement { min_score_milli: 10_000, min_confidence_milli: 0 };

    fn event(counterparty: &str, outcome: Outcome, code: Option<&str>, at_ms: u64) -> PassportEvent {
        PassportEvent {
            counterparty: counterparty.into(),
            outcome,
            code: code.map(str::to_owned),
            fault_domain: code.map(|c| if c.starts_with("PACT-1") { "policy" } else { "provider" }.to_owned()),
            at_ms,
            transcript_hash: format!("{at_ms:064x}"),
        }
    }

    fn good_record() -> Vec<PassportEvent> {
        (0..12u64).map(|i| event(&format!("c{}", i % 6), Outcome::Success, None, NOW - (i + 1) * DAY_MS)).collect()
    }

    fn gate(events: &[PassportEvent], requirement: PassportRequirement) -> PassportCheck {
        require_passport(&score("p", events, NOW), requirement)
    }

    #[test]
    fn a_good_record_passes() {
        let check = gate(&good_record(), PassportRequirement { min_score_milli: 60_000, min_confidence_milli: 500 });
        assert!(check.pass, "{check:?}");
        assert_eq!(check.reason, None);
        assert_eq!(check.triggering_factor, None);
        assert!(narrate(&check).starts_with("Passport policy gate admitted p"));
    }

    #[test]
    fn insufficient_history() {
        let mut events: Vec<_> = good_record().into_iter().take(2).collect();
        // Neutral outcomes are not transactions.
        events.extend((0..5).map(|i| event("x", Outcome::Neutral, Some("PACT-106"), NOW - i)));
        let check = gate(&events, EASY);
        assert_eq!(check.reason, Some(DenialReason::InsufficientHistory));
        assert_eq!(check.triggering_factor.as_deref(), Some("2 transaction(s) on record; 3 are needed"));
    }

    #[test]
    fn dispute_flagged_within_the_window_only() {
        let mut events = good_record();
        events.push(event("c1", Outcome::DisputeLost, None, NOW - 10 * DAY_MS));
        let check = gate(&events, EASY);
        assert_eq!(check.reason, Some(DenialReason::DisputeFlagged));
        assert!(check.triggering_factor.as_deref().unwrap_or_default().contains("dispute lost with c1"), "{check:?}");
        // As of a time long after, the dispute is no longer recent.
        let later = require_passport(&score("p", &events, NOW + DISPUTE_WINDOW_MS), EASY);
        assert_ne!(later.reason, Some(DenialReason::DisputeFlagged));
    }

    #[test]
    fn recent_policy_violation() {
        let mut events = good_record();
        events.push(event("c2", Outcome::PolicyViolation, Some("PACT-101"), NOW - 2 * DAY_MS));
        let check = gate(&events, EASY);
        assert_eq!(check.reason, Some(DenialReason::RecentPolicyViolation));
        let factor = check.triggering_factor.clone().unwrap_or_default();
        assert!(factor.starts_with("PACT-101 failure in policy domain with c2 ("), "{factor}");
        assert!(narrate(&check).contains("Triggering factor: PACT-101 failure in policy domain"));
    }

    #[test]
    fn low_score_names_what_cost_most() {
        let mut events = good_record();
        events.extend((0..20).map(|i| event("c3", Outcome::Failure, Some("PACT-311"), NOW - i * DAY_MS)));
        let check = gate(&events, PassportRequirement { min_score_milli: 60_000, min_confidence_milli: 0 });
        assert_eq!(check.reason, Some(DenialReason::LowScore));
        assert!(check.score_milli < 60_000);
        let factor = check.triggering_factor.clone().unwrap_or_default();
        assert!(factor.starts_with("20 failures cost "), "{factor}");
        assert!(narrate(&check).contains("is below the required minimum 60"));
    }

    #[test]
    fn low_confidence() {
        let events: Vec<_> = (0..3).map(|i| event("only", Outcome::Success, None, NOW - i)).collect();
        let check = gate(&events, PassportRequirement { min_score_milli: 0, min_confidence_milli: 900 });
        assert_eq!(check.reason, Some(DenialReason::LowConfidence));
        assert_eq!(check.triggering_factor.as_deref(), Some("3 outcome(s) with 1 counterparty"));
    }

    #[test]
    fn checks_agree_with_their_numbers() {
        let mut check = gate(&good_record(), PassportRequirement { min_score_milli: 60_000, min_confidence_milli: 0 });
        assert!(check.is_consistent());
        check.score_milli = 10;
        assert!(!check.is_consistent(), "a pass below the minimum score");
        let mut denied = gate(&good_record(), PassportRequirement { min_score_milli: 99_000, min_confidence_milli: 0 });
        assert_eq!(denied.reason, Some(DenialReason::LowScore));
        assert!(denied.is_consistent());
        denied.score_milli = 99_500;
        assert!(!denied.is_consistent(), "LOW_SCORE at or above the minimum");
        denied.score_milli = 10;
        denied.triggering_factor = None;
        assert!(!denied.is_consistent(), "a denial without its factor");
    }

    #[test]
    fn reason_names_are_stable() {
        let names: Vec<_> = DenialReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["INSUFFICIENT_HISTORY", "DISPUTE_FLAGGED", "RECENT_POLICY_VIOLATION", "LOW_SCORE", "LOW_CONFIDENCE"]
        );
        for reason in DenialReason::ALL {
            assert_eq!(DenialReason::parse(reason.as_str()), Some(reason));
            assert_eq!(serde_json::to_value(reason).ok(), Some(serde_json::Value::from(reason.as_str())));
        }
    }

    #[test]
    fn milli_text_prints_exact_decimals() {
        assert_eq!(milli_text(45_200), "45.2");
        assert_eq!(milli_text(60_000), "60");
        assert_eq!(milli_text(5), "0.005");
        assert_eq!(confidence_text(450), "0.45");
    }
}
