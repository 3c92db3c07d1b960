//! Buyer strategies and the simulated provider: the pure price logic of a negotiation.
//!
//! Everything here is a function of its arguments: no clock, no random state. The simulated
//! provider draws its behaviour from SHA-256 over (seed, provider, session, round, purpose), so a
//! given negotiation replays exactly, whatever order providers are asked in.
//!
//! Buyer bid schedules, for round `r` of `R` (1-based, `R` the policy's round limit), with `M` the
//! intent's maximum price, all in integer minor units (rounded down):
//! - `baseline`: bids `M` every round: accept anything within policy.
//! - `banded`: opens at 60 % of `M` and concedes in equal steps to `M` at round `R`.
//! - `urgent`: opens at 90 % of `M` and bids `M` from round 2.
//!
//! Every strategy bids `M` in the last round (so a one-round policy bids `M` at once). The buyer
//! accepts an ask when it is at or below its current bid.

use pactum_transcripts::Digest;

use crate::directory::{Concession, ProviderSpec};
use crate::money::Money;

/// A buyer strategy: what to bid in each round. Stateless and shared between threads.
pub trait Strategy: Send + Sync {
    /// The stable name recorded in transcripts.
    fn name(&self) -> &'static str;
    /// The bid for round `round` (1-based) of `rounds_max`, never above `max_price`.
    fn bid(&self, max_price: Money, round: u32, rounds_max: u32) -> Money;
    /// Whether to accept `ask` in `round`.
    fn accepts(&self, ask: Money, max_price: Money, round: u32, rounds_max: u32) -> bool {
        ask.currency() == max_price.currency()
            && ask.amount_minor() <= self.bid(max_price, round, rounds_max).amount_minor()
    }
}

fn percent_of(amount: Money, percent: u64) -> Money {
    let scaled = u128::from(amount.amount_minor()) * u128::from(percent) / 100;
    // scaled <= amount for percent <= 100, so it stays within range.
    Money::from_minor(u64::try_from(scaled).unwrap_or(0), amount.currency()).unwrap_or(amount)
}

impl std::fmt::Debug for dyn Strategy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Strategy({})", self.name())
    }
}

/// Accept anything within the maximum price.
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline;

impl Strategy for Baseline {
    fn name(&self) -> &'static str {
        "baseline"
    }

    fn bid(&self, max_price: Money, _round: u32, _rounds_max: u32) -> Money {
        max_price
    }
}

/// Open low and concede in equal steps to the maximum at the last round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Banded;

/// Where `banded` opens, as a percentage of the maximum price.
const BANDED_OPENING_PERCENT: u64 = 60;

impl Strategy for Banded {
    fn name(&self) -> &'static str {
        "banded"
    }

    fn bid(&self, max_price: Money, round: u32, rounds_max: u32) -> Money {
        if round >= rounds_max {
            return max_price;
        }
        let opening = percent_of(max_price, BANDED_OPENING_PERCENT).amount_minor();
        let span = max_price.amount_minor() - opening;
        let steps = u64::from(rounds_max.max(2) - 1);
        let step = u64::from(round.clamp(1, rounds_max.max(1)) - 1);
        let bid = opening + (u128::from(span) * u128::from(step) / u128::from(steps)) as u64;
        Money::from_minor(bid.min(max_price.amount_minor()), max_price.currency()).unwrap_or(max_price)
    }
}

/// Get it done: open near the maximum, bid the maximum from the second round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Urgent;

/// Where `urgent` opens, as a percentage of the maximum price.
const URGENT_OPENING_PERCENT: u64 = 90;

impl Strategy for Urgent {
    fn name(&self) -> &'static str {
        "urgent"
    }

    fn bid(&self, max_price: Money, round: u32, rounds_max: u32) -> Money {
        if round <= 1 && rounds_max > 1 { percent_of(max_price, URGENT_OPENING_PERCENT) } else { max_price }
    }
}

/// The strategy named `name`.
pub fn strategy_named(name: &str) -> Option<&'static dyn Strategy> {
    match name {
        "baseline" => Some(&Baseline),
        "banded" => Some(&Banded),
        "urgent" => Some(&Urgent),
        _ => None,
    }
}

/// What a simulated provider does with a request for a quote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProviderAnswer {
    /// It asks this price, after this many milliseconds.
    Ask { price: Money, latency_ms: u32 },
    /// It declines the intent.
    Refuse { latency_ms: u32 },
    /// It does not answer in time.
    Timeout,
    /// It cannot be reached.
    Unreachable,
}

/// Domain tag of the simulation's draws.
const DRAW_TAG: &[u8] = b"pactum-sim/1 draw\0";

/// A number in `0..bound` drawn from (seed, provider, session, round, purpose).
fn draw(seed: u64, provider_id: &str, session_id: &str, round: u32, purpose: &str, bound: u64) -> u64 {
    let mut input = Vec::with_capacity(64);
    input.extend_from_slice(&seed.to_be_bytes());
    for part in [provider_id, session_id, purpose] {
        input.extend_from_slice(&(part.len() as u32).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    input.extend_from_slice(&round.to_be_bytes());
    let digest = Digest::tagged(DRAW_TAG, &input);
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    if bound == 0 { 0 } else { u64::from_be_bytes(first) % bound }
}

/// The price a provider asks in `round` (1-based): its reference price, lowered by its concession
/// behaviour, never below its floor.
pub fn provider_ask(provider: &ProviderSpec, round: u32) -> Money {
    let reference = provider.reference_price.amount_minor();
    let floor = provider.floor_price().amount_minor();
    // Rounded up: a 10 % step on a 6-cent price moves one cent, not zero.
    let step = (reference * u64::from(provider.concession_percent)).div_ceil(100);
    let moves = u64::from(round.saturating_sub(1));
    let ask = match provider.concession {
        Concession::Eager => reference.saturating_sub(step.saturating_mul(moves)),
        Concession::Stubborn => reference.saturating_sub(step.saturating_mul(moves / 2)),
        // Full steps while far from the floor, half steps within two steps of it.
        Concession::Steady => {
            let mut price = reference;
            for _ in 0..moves {
                if step == 0 || price <= floor {
                    break;
                }
                let near_floor = price - floor <= 2 * step;
                price = price.saturating_sub(if near_floor { (step / 2).max(1) } else { step });
            }
            price
        }
    };
    Money::from_minor(ask.max(floor), provider.reference_price.currency()).unwrap_or(provider.reference_price)
}

/// How a simulated provider answers a request for a quote in `round`, deterministically from the
/// seed. An answer slower than `latency_ms_max` is a timeout.
pub fn simulate_provider(
    provider: &ProviderSpec,
    seed: u64,
    session_id: &str,
    round: u32,
    latency_ms_max: Option<u32>,
) -> ProviderAnswer {
    let failure = draw(seed, &provider.id, session_id, round, "failure", 100);
    let rates = provider.failures;
    let timeout = u64::from(rates.timeout_percent);
    let refusal = timeout + u64::from(rates.refusal_percent);
    let unreachable = refusal + u64::from(rates.unreachable_percent);
    let jitter = draw(seed, &provider.id, session_id, round, "latency", u64::from(provider.latency_jitter_ms) + 1);
    let latency_ms = provider.latency_base_ms.saturating_add(u32::try_from(jitter).unwrap_or(u32::MAX));
    if failure < timeout || latency_ms_max.is_some_and(|limit| latency_ms > limit) {
        return ProviderAnswer::Timeout;
    }
    if failure < refusal {
        return ProviderAnswer::Refuse { latency_ms };
    }
    if failure < unreachable {
        return ProviderAnswer::Unreachable;
    }
    ProviderAnswer::Ask { price: provider_ask(provider, round), latency_ms }
}
