//! The passport score: a deterministic function of an agent's outcomes and a point in time.
//!
//! Everything is integer arithmetic in fixed point (`UNIT` = 1.0 = 1,000,000), so the same
//! outcomes and `as_of` give the same score bit for bit on every machine, in any order of the
//! outcomes. The formula (docs/PASSPORT.md explains it with an example):
//!
//! 1. **Time decay.** An outcome `age` ms before `as_of` weighs `2^(-age / HALF_LIFE_MS)`,
//!    computed exactly at whole half-lives and linearly between them. Outcomes after `as_of`
//!    are ignored (the score is reproducible as of any past time).
//! 2. **Outcome component.** Successes `S`, and the outcomes the agent was at fault for:
//!    failures `F`, policy violations `P` (PACT-1xx) and lost disputes `D`, each summed by
//!    weight. Reliability = `(S + 1) / (S + F + 2P + 3D + 2)` (one success and one failure of
//!    prior, so a newcomer starts at 50); outcome points = 100 × reliability. Neutral outcomes
//!    (the agent took part, someone else was at fault) count for volume only.
//! 3. **Concentration penalty.** The Herfindahl index `H` of the agent's weighted volume by
//!    counterparty (1 when all of it is with one counterparty, 1/n across n equal ones). Above
//!    `CONCENTRATION_FREE` it costs up to `CONCENTRATION_PENALTY_MAX` points, linearly.
//! 4. **Score** = outcome points − concentration penalty, clamped to 0–100.
//! 5. **Confidence** = volume × diversity: volume = `V / (V + VOLUME_HALF)` over the weighted
//!    volume `V`; diversity = `1/2 + 1/2 × min(n, DIVERSITY_FULL) / DIVERSITY_FULL` over the
//!    number `n` of distinct counterparties.

use std::collections::HashMap;

/// The name of this formula, printed with every score.
pub const FORMULA: &str = "pactum-passport/1";
/// Fixed-point one.
pub const UNIT: u64 = 1_000_000;
/// A day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;
/// An outcome loses half its weight every 30 days.
pub const HALF_LIFE_MS: u64 = 30 * DAY_MS;
/// Prior: one success and one failure, so an agent with no history scores 50.
const PRIOR: u64 = UNIT;
/// Weights of at-fault outcomes relative to a failure.
pub const POLICY_VIOLATION_WEIGHT: u64 = 2;
pub const DISPUTE_WEIGHT: u64 = 3;
/// Concentration up to this Herfindahl index (in `UNIT`s) costs nothing.
pub const CONCENTRATION_FREE: u64 = UNIT / 2;
/// The most points concentration can cost (all volume with one counterparty).
pub const CONCENTRATION_PENALTY_MAX_MILLI: u64 = 15_000;
/// Weighted volume at which the volume part of confidence is one half.
pub const VOLUME_HALF: u64 = 5 * UNIT;
/// Counterparties needed for full diversity.
pub const DIVERSITY_FULL: u64 = 5;
/// Scores are in thousandths of a point: 100 points = 100,000.
pub const SCORE_MAX_MILLI: u32 = 100_000;
/// Confidence is in thousandths: 1.0 = 1,000.
pub const CONFIDENCE_MAX_MILLI: u32 = 1_000;

/// What an outcome means for the agent it is recorded for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    /// A failure the agent was at fault for (3xx, 4xx, identity).
    Failure,
    /// A PACT-1xx failure the agent was at fault for.
    PolicyViolation,
    /// A dispute the agent lost.
    DisputeLost,
    /// The agent took part; the outcome was someone else's doing (or nobody's).
    Neutral,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Self::Success, Self::Failure, Self::PolicyViolation, Self::DisputeLost, Self::Neutral];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::PolicyViolation => "policy_violation",
            Self::DisputeLost => "dispute_lost",
            Self::Neutral => "neutral",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }
}

/// One outcome of one transcript, for the agent being scored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PassportEvent {
    pub counterparty: String,
    pub outcome: Outcome,
    /// The PACT failure code, for failures and policy violations.
    pub code: Option<String>,
    pub fault_domain: Option<String>,
    pub at_ms: u64,
    /// The transcript it came from (hex).
    pub transcript_hash: String,
}

/// The latest outcome of one kind, for explanations.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Latest {
    pub at_ms: u64,
    pub code: Option<String>,
    pub fault_domain: Option<String>,
    pub counterparty: String,
    pub transcript_hash: String,
}

/// Count and decayed weight of one kind of outcome.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Tally {
    pub count: u64,
    /// Sum of the decayed weights, in `UNIT`s.
    pub weight: u64,
}

/// Every number the score is made of.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Breakdown {
    /// Outcomes recorded up to `as_of`.
    pub events: u64,
    /// Of those, the transactions: outcomes that were not neutral.
    pub transactions: u64,
    pub successes: Tally,
    pub failures: Tally,
    pub policy_violations: Tally,
    pub disputes_lost: Tally,
    pub neutral: Tally,
    /// Reliability `(S + 1) / (S + F + 2P + 3D + 2)`, in `UNIT`s.
    pub reliability: u64,
    /// 100 × reliability, in thousandths of a point.
    pub outcome_points_milli: u32,
    /// Points the denominator's parts cost, in thousandths: what failures, policy violations
    /// and disputes took away from a perfect record (the prior's share is the rest).
    pub failure_cost_milli: u32,
    pub policy_violation_cost_milli: u32,
    pub dispute_cost_milli: u32,
    pub counterparties: u64,
    /// Herfindahl index of volume by counterparty, in `UNIT`s.
    pub concentration: u64,
    pub concentration_penalty_milli: u32,
    /// Weighted volume of every outcome, in `UNIT`s.
    pub volume: u64,
    /// The two parts of confidence, in `UNIT`s.
    pub volume_confidence: u64,
    pub diversity_confidence: u64,
    /// The three counterparties with the most weighted volume (ties by id).
    pub top_counterparties: Vec<(String, u64)>,
    pub latest_failure: Option<Latest>,
    pub latest_policy_violation: Option<Latest>,
    pub latest_dispute_lost: Option<Latest>,
}

/// A passport score as of a point in time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Score {
    pub agent_id: String,
    pub as_of_ms: u64,
    /// 0–100 points, in thousandths.
    pub score_milli: u32,
    /// 0–1, in thousandths.
    pub confidence_milli: u32,
    pub breakdown: Breakdown,
}

/// The weight of an outcome `age_ms` old: `2^(-age/HALF_LIFE_MS)` in `UNIT`s, exact at whole
/// half-lives, linear between them.
pub fn decay(age_ms: u64) -> u64 {
    let halvings = age_ms / HALF_LIFE_MS;
    if halvings >= 40 {
        return 0;
    }
    let start = UNIT >> halvings;
    let into = age_ms % HALF_LIFE_MS;
    // Between start (at a whole half-life) and start / 2 (at the next one).
    let drop = u128::from(start / 2) * u128::from(into) / u128::from(HALF_LIFE_MS);
    start - u64::try_from(drop).unwrap_or(start)
}

fn ratio(numerator: u128, denominator: u128, scale: u64) -> u64 {
    (numerator * u128::from(scale)).checked_div(denominator).map_or(0, |q| u64::try_from(q).unwrap_or(u64::MAX))
}

fn milli_points(numerator: u128, denominator: u128) -> u32 {
    u32::try_from(ratio(numerator, denominator, u64::from(SCORE_MAX_MILLI))).unwrap_or(SCORE_MAX_MILLI)
}

/// One outcome, borrowed: what [`Scorer::add`] reads (rows streamed from the store need no copy).
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub counterparty: &'a str,
    pub outcome: Outcome,
    pub code: Option<&'a str>,
    pub fault_domain: Option<&'a str>,
    pub at_ms: u64,
    pub transcript_hash: &'a str,
}

impl<'a> From<&'a PassportEvent> for EventRef<'a> {
    fn from(event: &'a PassportEvent) -> Self {
        Self {
            counterparty: &event.counterparty,
            outcome: event.outcome,
            code: event.code.as_deref(),
            fault_domain: event.fault_domain.as_deref(),
            at_ms: event.at_ms,
            transcript_hash: &event.transcript_hash,
        }
    }
}

fn newer(current: &mut Option<Latest>, event: &EventRef<'_>) {
    let replace = match current {
        None => true,
        Some(latest) => (event.at_ms, event.transcript_hash) > (latest.at_ms, latest.transcript_hash.as_str()),
    };
    if replace {
        *current = Some(Latest {
            at_ms: event.at_ms,
            code: event.code.map(str::to_owned),
            fault_domain: event.fault_domain.map(str::to_owned),
            counterparty: event.counterparty.to_owned(),
            transcript_hash: event.transcript_hash.to_owned(),
        });
    }
}

/// Scores outcomes one at a time, in any order ([`score`] over a slice uses it too).
#[derive(Debug)]
pub struct Scorer {
    as_of_ms: u64,
    tallies: [Tally; 5],
    by_counterparty: HashMap<String, u64>,
    considered: u64,
    latest_failure: Option<Latest>,
    latest_violation: Option<Latest>,
    latest_dispute: Option<Latest>,
}

impl Scorer {
    pub fn new(as_of_ms: u64) -> Self {
        Self {
            as_of_ms,
            tallies: Default::default(),
            by_counterparty: HashMap::new(),
            considered: 0,
            latest_failure: None,
            latest_violation: None,
            latest_dispute: None,
        }
    }

    /// Adds one outcome; outcomes later than `as_of` are ignored.
    pub fn add(&mut self, event: EventRef<'_>) {
        if event.at_ms > self.as_of_ms {
            return;
        }
        self.considered += 1;
        let weight = decay(self.as_of_ms - event.at_ms);
        let tally = &mut self.tallies[event.outcome as usize];
        tally.count += 1;
        tally.weight += weight;
        match self.by_counterparty.get_mut(event.counterparty) {
            Some(volume) => *volume += weight,
            None => {
                self.by_counterparty.insert(event.counterparty.to_owned(), weight);
            }
        }
        match event.outcome {
            Outcome::Failure => newer(&mut self.latest_failure, &event),
            Outcome::PolicyViolation => newer(&mut self.latest_violation, &event),
            Outcome::DisputeLost => newer(&mut self.latest_dispute, &event),
            Outcome::Success | Outcome::Neutral => {}
        }
    }

    /// The score of everything added.
    pub fn finish(self, agent_id: &str) -> Score {
        let Self { as_of_ms, tallies, by_counterparty, considered, latest_failure, latest_violation, latest_dispute } =
            self;
        finish(
            agent_id,
            as_of_ms,
            tallies,
            &by_counterparty,
            considered,
            latest_failure,
            latest_violation,
            latest_dispute,
        )
    }
}

/// Scores `agent_id` from its outcomes as of `as_of_ms`. Outcomes later than `as_of_ms` are
/// ignored; the order of `events` does not matter.
pub fn score(agent_id: &str, events: &[PassportEvent], as_of_ms: u64) -> Score {
    let mut scorer = Scorer::new(as_of_ms);
    for event in events {
        scorer.add(event.into());
    }
    scorer.finish(agent_id)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    agent_id: &str,
    as_of_ms: u64,
    tallies: [Tally; 5],
    by_counterparty: &HashMap<String, u64>,
    considered: u64,
    latest_failure: Option<Latest>,
    latest_violation: Option<Latest>,
    latest_dispute: Option<Latest>,
) -> Score {
    let [successes, failures, policy_violations, disputes_lost, neutral] = tallies;
    let s = u128::from(successes.weight);
    let f = u128::from(failures.weight);
    let p = u128::from(policy_violations.weight) * u128::from(POLICY_VIOLATION_WEIGHT);
    let d = u128::from(disputes_lost.weight) * u128::from(DISPUTE_WEIGHT);
    let denominator = s + f + p + d + 2 * u128::from(PRIOR);
    let reliability = ratio(s + u128::from(PRIOR), denominator, UNIT);
    let outcome_points_milli = milli_points(s + u128::from(PRIOR), denominator);

    let volume: u64 = by_counterparty.values().sum();
    let concentration = if volume == 0 {
        0
    } else {
        let squares: u128 = by_counterparty.values().map(|&v| u128::from(v) * u128::from(v)).sum();
        ratio(squares, u128::from(volume) * u128::from(volume), UNIT)
    };
    let concentration_penalty_milli = if concentration > CONCENTRATION_FREE {
        let over = u128::from(concentration - CONCENTRATION_FREE);
        u32::try_from(ratio(over, u128::from(UNIT - CONCENTRATION_FREE), CONCENTRATION_PENALTY_MAX_MILLI)).unwrap_or(0)
    } else {
        0
    };
    let score_milli = outcome_points_milli.saturating_sub(concentration_penalty_milli).min(SCORE_MAX_MILLI);

    let counterparties = by_counterparty.values().filter(|&&v| v > 0).count() as u64;
    let volume_confidence = ratio(u128::from(volume), u128::from(volume) + u128::from(VOLUME_HALF), UNIT);
    let diversity_confidence =
        UNIT / 2 + ratio(u128::from(counterparties.min(DIVERSITY_FULL)), u128::from(DIVERSITY_FULL), UNIT / 2);
    let confidence = u128::from(volume_confidence) * u128::from(diversity_confidence) / u128::from(UNIT);
    let confidence_milli = u32::try_from(confidence / u128::from(UNIT / u64::from(CONFIDENCE_MAX_MILLI)))
        .unwrap_or(CONFIDENCE_MAX_MILLI)
        .min(CONFIDENCE_MAX_MILLI);

    let mut top: Vec<(String, u64)> = by_counterparty.iter().map(|(id, v)| (id.clone(), *v)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(3);

    Score {
        agent_id: agent_id.to_owned(),
        as_of_ms,
        score_milli,
        confidence_milli,
        breakdown: Breakdown {
            events: considered,
            transactions: considered - neutral.count,
            successes,
            failures,
            policy_violations,
            disputes_lost,
            neutral,
            reliability,
            outcome_points_milli,
            failure_cost_milli: milli_points(f, denominator),
            policy_violation_cost_milli: milli_points(p, denominator),
            dispute_cost_milli: milli_points(d, denominator),
            counterparties,
            concentration,
            concentration_penalty_milli,
            volume,
            volume_confidence,
            diversity_confidence,
            top_counterparties: top,
            latest_failure,
            latest_policy_violation: latest_violation,
            latest_dispute_lost: latest_dispute,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(counterparty: &str, outcome: Outcome, at_ms: u64) -> PassportEvent {
        PassportEvent {
            counterparty: counterparty.into(),
            outcome,
            code: None,
            fault_domain: None,
            at_ms,
            transcript_hash: format!("{at_ms:064x}"),
        }
    }

    #[test]
    fn decay_halves_every_half_life_and_is_monotonic() {
        assert_eq!(decay(0), UNIT);
        assert_eq!(decay(HALF_LIFE_MS), UNIT / 2);
        assert_eq!(decay(2 * HALF_LIFE_MS), UNIT / 4);
        assert_eq!(decay(HALF_LIFE_MS / 2), UNIT * 3 / 4);
        assert_eq!(decay(40 * HALF_LIFE_MS), 0);
        let mut previous = UNIT;
        for age in (0..5 * HALF_LIFE_MS).step_by((HALF_LIFE_MS / 7) as usize) {
            assert!(decay(age) <= previous);
            previous = decay(age);
        }
    }

    #[test]
    fn no_history_scores_fifty_with_no_confidence() {
        let score = score("a", &[], 1_000);
        assert_eq!(score.score_milli, 50_000);
        assert_eq!(score.confidence_milli, 0);
        assert_eq!(score.breakdown.events, 0);
    }

    #[test]
    fn failures_lower_the_score_and_disputes_more() {
        let now = 100 * DAY_MS;
        let mut events: Vec<_> = (0..6).map(|i| event(&format!("c{i}"), Outcome::Success, now - i * DAY_MS)).collect();
        let clean = score("a", &events, now).score_milli;
        events.push(event("c1", Outcome::Failure, now));
        let failed = score("a", &events, now).score_milli;
        events.pop();
        events.push(event("c1", Outcome::DisputeLost, now));
        let disputed = score("a", &events, now).score_milli;
        assert!(clean > failed && failed > disputed, "{clean} {failed} {disputed}");
    }

    #[test]
    fn old_failures_weigh_less_than_recent_ones() {
        let now = 400 * DAY_MS;
        let base: Vec<_> = (0..6).map(|i| event(&format!("c{i}"), Outcome::Success, now - DAY_MS)).collect();
        let mut old = base.clone();
        old.push(event("c0", Outcome::Failure, now - 200 * DAY_MS));
        let mut recent = base;
        recent.push(event("c0", Outcome::Failure, now - DAY_MS));
        assert!(score("a", &old, now).score_milli > score("a", &recent, now).score_milli);
    }

    #[test]
    fn concentration_costs_points_and_diversity_adds_confidence() {
        let now = 10 * DAY_MS;
        let one: Vec<_> = (0..10).map(|i| event("only", Outcome::Success, now - i)).collect();
        let many: Vec<_> = (0..10).map(|i| event(&format!("c{}", i % 5), Outcome::Success, now - i)).collect();
        let (one, many) = (score("a", &one, now), score("a", &many, now));
        assert_eq!(one.breakdown.concentration, UNIT);
        assert_eq!(one.breakdown.concentration_penalty_milli, 15_000);
        assert_eq!(many.breakdown.concentration_penalty_milli, 0);
        assert!(many.score_milli > one.score_milli);
        assert!(many.confidence_milli > one.confidence_milli);
    }

    #[test]
    fn outcomes_after_as_of_are_ignored_and_order_does_not_matter() {
        let events =
            vec![event("b", Outcome::Success, 5), event("c", Outcome::Failure, 7), event("d", Outcome::Success, 50)];
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(score("a", &events, 10), score("a", &reversed, 10));
        assert_eq!(score("a", &events, 10).breakdown.events, 2);
    }

    proptest::proptest! {
        /// Same outcomes (in any order) and as_of → the same result, bit for bit, within bounds.
        #[test]
        fn deterministic_and_bounded(
            raw in proptest::collection::vec((0u8..8, 0u8..5, 0u64..(400 * DAY_MS)), 0..200),
            as_of in 0u64..(500 * DAY_MS),
            rotate in 0usize..200,
        ) {
            let events: Vec<_> = raw
                .iter()
                .map(|&(who, outcome, at_ms)| event(&format!("c{who}"), Outcome::ALL[usize::from(outcome)], at_ms))
                .collect();
            let first = score("a", &events, as_of);
            let mut shuffled = events.clone();
            if !shuffled.is_empty() {
                let by = rotate % shuffled.len();
                shuffled.rotate_left(by);
                shuffled.reverse();
            }
            proptest::prop_assert_eq!(&first, &score("a", &shuffled, as_of));
            proptest::prop_assert_eq!(&first, &score("a", &events, as_of));
            proptest::prop_assert!(first.score_milli <= SCORE_MAX_MILLI);
            proptest::prop_assert!(first.confidence_milli <= CONFIDENCE_MAX_MILLI);
            proptest::prop_assert_eq!(first.breakdown.events, events.iter().filter(|e| e.at_ms <= as_of).count() as u64);
        }
    }
}
