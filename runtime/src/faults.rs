//! Fault injection: the seam through which a simulation makes the runtime's outside world
//! misbehave on purpose, deterministically (`runtime/tests/simulation.rs`, docs/HARDENING.md).
//!
//! Off by default: an [`crate::session::shell::AgentRuntime`] has no [`Faults`] unless one is
//! given with `with_faults`, and the program never gives one. The faults go through the same
//! code as real ones: a refused rail step is handled as any refusal of the rail, and a step
//! delivered twice goes through the rail's idempotency keys twice. Crashes between two durable
//! writes are injected in the store (`pactum_memory::Constellation::stop_before_write`), and
//! providers' timeouts, refusals and unreachability by the directory's failure rates.

use std::fmt;

use crate::rail::RailPhase;

/// What happens to one rail step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RailFault {
    /// The rail refuses the step (a payment processor declining it): nothing moves, and the
    /// session handles the refusal as any other (a refused prepare fails the session, a refused
    /// commit releases the hold, a refused release is tried again and then left for recovery).
    /// A step already done is not refused: a rail answers a retried step with its evidence.
    Refuse,
    /// The step is delivered twice (a retried request, a callback sent again): it is applied,
    /// then applied again under the same idempotency key. The second delivery must find the
    /// step done and return the same evidence; anything else fails the write (nothing of it
    /// is kept).
    Duplicate,
}

/// Decides the faults of the runtime's outside world. Called once per rail step, in the write
/// that applies it; implementations must be deterministic in their arguments and their own
/// seeded state for a simulation to replay.
pub trait Faults: Send + Sync + fmt::Debug {
    /// The fault of the rail step `phase` of payment `payment_id`, or `None` for none.
    fn rail_step(&self, payment_id: &str, phase: RailPhase) -> Option<RailFault>;
}

/// Applies a rail step inside a session's write as the runtime does, with its injected fault:
/// a coalition's prepare and abort move each member's `parts`, anything else the whole amount.
/// Returns the step's outcome, each part's transfer, and the member whose part failed.
pub(crate) fn apply_rail_step(
    faults: Option<&dyn Faults>,
    rail: &crate::rail::LedgerRail,
    ledger: &pactum_memory::LedgerTx<'_>,
    phase: RailPhase,
    request: &crate::rail::PaymentRequest,
    parts: Option<&[(String, u64)]>,
    now: u64,
) -> RailStepOutcome {
    let apply = || match parts {
        Some(parts) if phase != RailPhase::Commit => match rail.apply_parts_in(ledger, phase, request, parts, now) {
            Ok((evidence, parts)) => (Ok(evidence), parts, None),
            Err((error, member)) => (Err(error), Vec::new(), member),
        },
        _ => (rail.apply_in(ledger, phase, request, now), Vec::new(), None),
    };
    match faults.and_then(|faults| faults.rail_step(&request.payment_id, phase)) {
        None => apply(),
        // A rail answers a step it has done already with its evidence (every step is
        // idempotent), so only a step not done yet can be refused.
        Some(RailFault::Refuse) if rail.step_done_in(ledger, phase, request, parts).unwrap_or(true) => apply(),
        Some(RailFault::Refuse) => {
            tracing::debug!(payment = %request.payment_id, phase = phase.as_str(), "rail step refused (injected)");
            let detail = format!("the rail refused the {} of payment {}", phase.as_str(), request.payment_id);
            (Err(crate::rail::RailError::Refused(detail)), Vec::new(), None)
        }
        Some(RailFault::Duplicate) => {
            let first = apply();
            let (Ok(evidence), parts, _) = &first else { return first };
            let (again, again_parts, _) = apply();
            let same = match &again {
                Ok(repeat) => {
                    !repeat.applied_now
                        && repeat.reference == evidence.reference
                        && repeat.amount_minor == evidence.amount_minor
                        && again_parts == *parts
                }
                Err(_) => false,
            };
            if same {
                first
            } else {
                let detail = format!(
                    "the {} of payment {} delivered twice did not find itself done: {again:?}",
                    phase.as_str(),
                    request.payment_id
                );
                (Err(crate::rail::RailError::Store(pactum_memory::StoreError::Corrupt { detail })), Vec::new(), None)
            }
        }
    }
}

/// What [`apply_rail_step`] returns: the step's outcome, each coalition part's transfer, and the
/// member whose part failed.
pub(crate) type RailStepOutcome =
    (Result<crate::rail::RailEvidence, crate::rail::RailError>, Vec<crate::rail::PartTransfer>, Option<String>);
