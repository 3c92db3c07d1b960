//! The passport: every agent's record as a counterparty, built only from transcripts that
//! verify, and the gate that admits providers on it.
//!
//! - [`score`]: the deterministic score (integer fixed point; formula in its module docs).
//! - [`gate`]: `require_passport` (reason codes, triggering factor) and `narrate`.
//! - This module: ingestion. A transcript is verified first (chain, hashes, signatures), folded
//!   through the session protocol, and its outcome becomes one row per party; a transcript is
//!   ingested once, keyed by its hash (a session's head hash). Only the party at fault is
//!   penalised ([`attribution`]); the others' rows are neutral.

pub mod dispute;
pub mod gate;
pub mod score;
pub mod v4;

use std::collections::BTreeSet;
use std::sync::Arc;

use pactum_memory::{Constellation, PassportEventRow, PassportSource};
use pactum_transcripts::Event;
use serde_json::Value;

use crate::error::RuntimeError;
use crate::failure::FailureCode;
use crate::session::model::{Phase, SESSION_STREAM_PREFIX, SessionState, parse_event_ref};
use crate::transcripts::{stream_events, verify_stream};

pub use gate::{DenialReason, PassportCheck, PassportRequirement, narrate, require_passport};
pub use score::{Outcome, PassportEvent, Score};

/// The format name recorded for ingested Pactum sessions.
pub const SESSION_SOURCE_FORMAT: &str = "pactum-transcript/1";

/// Who a failure is held against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Attribution {
    /// Nobody among the parties: a market outcome, the buyer's own limits, the rail, the runtime,
    /// or a gate decision (penalising a passport denial would feed on itself).
    Nobody,
    /// The buyer.
    Buyer,
    /// The parties whose messages the failure's evidence cites (providers that refused, timed
    /// out, asked out of band...); nobody when none is cited.
    Cited,
}

/// Whose fault each failure code is. Exhaustive: a new code must be placed here.
pub fn attribution(code: FailureCode) -> Attribution {
    use FailureCode::*;
    match code {
        // The buyer's own rules refusing an offer: nobody misbehaved.
        PolicyViolation | SettlementPolicyViolation | ConstraintViolation => Attribution::Nobody,
        RailNotAllowed | SettlementModeNotAllowed | MaxPriceExceeded => Attribution::Buyer,
        ProviderNotAllowed | RoundLimitExceeded | DeadlineExceeded => Attribution::Nobody,
        IdentityInvalid | CredentialExpired => Attribution::Cited,
        PassportDenied => Attribution::Nobody,
        ProviderRefused | NegotiationDeadlock | ProviderUnavailable | ProviderTimeout | ProviderAnswerInvalid => {
            Attribution::Cited
        }
        NoProviders => Attribution::Nobody,
        AbortedByBuyer | InsufficientFunds => Attribution::Buyer,
        SettlementPrepareFailed | SettlementCommitFailed | SettlementTimeout | RailEvidenceInvalid => {
            Attribution::Nobody
        }
        DependencyFailed | TranscriptStorageFailed => Attribution::Nobody,
    }
}

/// The outcome of an ended session, one row per party: the buyer and every provider that took
/// part (was admitted and sent the intent). A completed session is a success for the buyer and
/// the provider paid, neutral for the other providers; a failed one is a failure (or, for
/// PACT-1xx, a policy violation) for the parties at fault and neutral for the others. `transcript_hash` is the session's head hash.
pub fn session_outcomes(events: &[Event], transcript_hash: &str) -> Result<(Vec<PassportEventRow>, u64), String> {
    let state = SessionState::fold(events).map_err(|e| e.to_string())?;
    let buyer = state.buyer_id().ok_or("the transcript has no session.created")?.to_owned();
    let ended = match state.phase {
        Phase::Completed => {
            let agreement = state.agreement.as_ref().ok_or("a completed session without an agreement")?;
            Ended::Completed {
                provider: agreement.provider.clone(),
                price: Some((agreement.price.amount_minor, agreement.price.currency.clone())),
            }
        }
        Phase::Failed => {
            let failure = state.failure.as_ref().ok_or("a failed session without its failure event")?;
            let code = failure.failure_code().ok_or_else(|| format!("unknown failure code {}", failure.code))?;
            let cited: BTreeSet<String> = failure
                .evidence_refs
                .iter()
                .filter_map(|reference| parse_event_ref(reference))
                .filter_map(|seq| events.get(usize::try_from(seq).ok()?))
                .filter_map(|event| sender_of(&event.body))
                .filter(|sender| *sender != buyer)
                .collect();
            // A failure that is one coalition member's (its wallet could not pay its part) is
            // held against that member, not the lead.
            let member: Option<String> = failure
                .evidence_refs
                .iter()
                .filter_map(|reference| reference.strip_prefix("coalition:"))
                .find(|member| state.coalition().is_some_and(|c| c.member(member).is_some()))
                .map(str::to_owned);
            if let Some(member) = member.filter(|_| attribution(code) == Attribution::Buyer) {
                let selected = state.selection.as_ref().map(|s| s.provider.clone());
                let at_fault = BTreeSet::from([member]);
                let rows =
                    failure_rows(&buyer, &state.admitted, code, at_fault, selected, transcript_hash, state.last_at_ms);
                return Ok((rows, state.last_at_ms));
            }
            Ended::Failed { code, cited, selected: state.selection.as_ref().map(|s| s.provider.clone()) }
        }
        phase => return Err(format!("the session is still {}", phase.as_str())),
    };
    Ok((outcome_rows(&buyer, &state.admitted, ended, transcript_hash, state.last_at_ms), state.last_at_ms))
}

/// How a negotiation ended, as the passport needs it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Ended {
    Completed {
        provider: String,
        price: Option<(u64, String)>,
    },
    /// `cited`: the parties (not the buyer) whose messages the failure's evidence cites.
    Failed {
        code: FailureCode,
        cited: BTreeSet<String>,
        selected: Option<String>,
    },
}

/// One party's row of an ended negotiation (no amount).
fn passport_row(
    agent: &str,
    counterparty: &str,
    outcome: Outcome,
    code: Option<FailureCode>,
    transcript_hash: &str,
    ended_at_ms: u64,
) -> PassportEventRow {
    PassportEventRow {
        agent_id: agent.to_owned(),
        counterparty: counterparty.to_owned(),
        outcome: outcome.as_str().to_owned(),
        code: code.map(|c| c.code().to_owned()),
        fault_domain: code.map(|c| c.fault_domain().as_str().to_owned()),
        at_ms: ended_at_ms,
        amount_minor: None,
        currency: None,
        transcript_hash: transcript_hash.to_owned(),
    }
}

/// One row per party of an ended negotiation: the buyer and every provider that took part.
pub fn outcome_rows(
    buyer: &str,
    participants: &[String],
    ended: Ended,
    transcript_hash: &str,
    ended_at_ms: u64,
) -> Vec<PassportEventRow> {
    let row = |agent: &str, counterparty: &str, outcome: Outcome, code: Option<FailureCode>| {
        passport_row(agent, counterparty, outcome, code, transcript_hash, ended_at_ms)
    };
    let providers: BTreeSet<&String> = participants.iter().filter(|id| *id != buyer).collect();
    match ended {
        Ended::Completed { provider, price } => {
            let mut rows =
                vec![row(buyer, &provider, Outcome::Success, None), row(&provider, buyer, Outcome::Success, None)];
            if let Some((amount_minor, currency)) = price {
                for r in &mut rows {
                    r.amount_minor = Some(amount_minor);
                    r.currency = Some(currency.clone());
                }
            }
            // The other providers negotiated too; the deal went elsewhere.
            rows.extend(
                providers.into_iter().filter(|id| **id != provider).map(|id| row(id, buyer, Outcome::Neutral, None)),
            );
            rows
        }
        Ended::Failed { code, cited, selected } => {
            let at_fault: BTreeSet<String> = match attribution(code) {
                Attribution::Nobody => BTreeSet::new(),
                Attribution::Buyer => BTreeSet::from([buyer.to_owned()]),
                Attribution::Cited => cited,
            };
            failure_rows(buyer, participants, code, at_fault, selected, transcript_hash, ended_at_ms)
        }
    }
}

/// The rows of a failed negotiation whose parties at fault are known: each of them (a provider,
/// the buyer, or a coalition member whose wallet could not pay its part) gets a failure, every
/// other participant a neutral row carrying the code.
fn failure_rows(
    buyer: &str,
    participants: &[String],
    code: FailureCode,
    at_fault: BTreeSet<String>,
    selected: Option<String>,
    transcript_hash: &str,
    ended_at_ms: u64,
) -> Vec<PassportEventRow> {
    let row = |agent: &str, counterparty: &str, outcome: Outcome, code: Option<FailureCode>| {
        passport_row(agent, counterparty, outcome, code, transcript_hash, ended_at_ms)
    };
    let providers: BTreeSet<&String> = participants.iter().filter(|id| *id != buyer).collect();
    let fault_outcome = if code.code().starts_with("PACT-1") { Outcome::PolicyViolation } else { Outcome::Failure };
    // The buyer's counterparty: the provider at fault, else the selected one, else the
    // first participant, else nobody in particular.
    let buyer_counterparty = at_fault
        .iter()
        .find(|id| *id != buyer)
        .cloned()
        .or(selected)
        .or(providers.iter().next().map(|id| (*id).clone()))
        .unwrap_or_else(|| "directory".to_owned());
    // Everyone who took part carries the code; only the party at fault is penalised.
    let with = |agent: &str, counterparty: &str| {
        let outcome = if at_fault.contains(agent) { fault_outcome } else { Outcome::Neutral };
        row(agent, counterparty, outcome, Some(code))
    };
    let mut rows = vec![with(buyer, &buyer_counterparty)];
    let extra: Vec<&String> = at_fault.iter().filter(|id| *id != buyer && !providers.contains(id)).collect();
    for provider in providers.iter().copied().chain(extra) {
        rows.push(with(provider, buyer));
    }
    rows
}

/// The party that sent (or, for a missing answer, failed to send) an event.
fn sender_of(body: &Value) -> Option<String> {
    body.get("sender").or_else(|| body.get("provider")).and_then(Value::as_str).map(str::to_owned)
}

/// What an ingestion did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Ingested {
    /// New rows were stored.
    Added { rows: usize },
    /// This transcript hash was ingested before; nothing changed.
    AlreadyIngested,
}

/// Ingests an ended local session: verifies its stream, folds it and stores its outcome.
pub fn ingest_session(db: &Arc<Constellation>, session_id: &str, now_ms: u64) -> Result<Ingested, RuntimeError> {
    let stream_id = format!("{SESSION_STREAM_PREFIX}{session_id}");
    let Some(record) = db.stream(&stream_id)?.filter(|s| s.event_count > 0) else {
        return Err(RuntimeError::SessionNotFound(session_id.to_owned()));
    };
    // An imported stream verifies only against the keys its own file carried: anyone can make
    // one in any agent's name. Outside transcripts count as PACT v4 files, under their rules.
    if record.origin != pactum_memory::StreamOrigin::Local {
        return Err(RuntimeError::PassportSource(format!(
            "{stream_id} was imported: only sessions this constellation ran count (see docs/PASSPORT.md)"
        )));
    }
    let report = verify_stream(db, &stream_id)?;
    if let Some(broken) = report.first_break {
        return Err(RuntimeError::Tampered { stream: stream_id, broken });
    }
    let head = report.head_hash.map(|h| h.to_hex()).unwrap_or_default();
    if db.passport_source(&head)?.is_some() {
        return Ok(Ingested::AlreadyIngested);
    }
    let (_, events) = stream_events(db, &stream_id)?;
    // The stream may have grown between the verification and the read: ingest only what was
    // verified.
    let verified = usize::try_from(report.events_verified).unwrap_or(usize::MAX).min(events.len());
    let (rows, ended_at_ms) = session_outcomes(&events[..verified], &head).map_err(|detail| {
        if detail.starts_with("the session is still") {
            RuntimeError::SessionNotTerminal { session_id: session_id.to_owned(), phase: "running" }
        } else {
            RuntimeError::PassportSource(format!("{stream_id}: {detail}"))
        }
    })?;
    let source = PassportSource {
        transcript_hash: head,
        source: stream_id,
        format: SESSION_SOURCE_FORMAT.to_owned(),
        ended_at_ms,
        ingested_at_ms: now_ms,
    };
    store(db, &source, &rows)
}

/// Stores a verified transcript's outcome rows (nothing when its hash was ingested before).
pub(crate) fn store(
    db: &Constellation,
    source: &PassportSource,
    rows: &[PassportEventRow],
) -> Result<Ingested, RuntimeError> {
    Ok(if db.passport_ingest(source, rows)? { Ingested::Added { rows: rows.len() } } else { Ingested::AlreadyIngested })
}

/// What [`ingest_sessions`] did.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct IngestSummary {
    pub sessions_added: usize,
    pub disputes_added: usize,
    pub rows_added: usize,
    /// Sessions that were not ingested, with the reason (they do not verify, say).
    pub refused: Vec<(String, String)>,
}

/// Ingests every ended local session and every dispute ruling not ingested yet. A session that does not verify is
/// reported and left out; the others are still ingested.
pub fn ingest_sessions(db: &Arc<Constellation>, now_ms: u64) -> Result<IngestSummary, RuntimeError> {
    let known = db.passport_source_names()?;
    let mut summary = IngestSummary::default();
    for row in db.session_streams(SESSION_STREAM_PREFIX)? {
        let ended = matches!(row.last_kind.as_deref(), Some("session.completed" | "session.failed"));
        if !ended || known.contains(&row.stream_id) {
            continue;
        }
        let session_id = &row.stream_id[SESSION_STREAM_PREFIX.len()..];
        match ingest_session(db, session_id, now_ms) {
            Ok(Ingested::Added { rows }) => {
                summary.sessions_added += 1;
                summary.rows_added += rows;
            }
            Ok(Ingested::AlreadyIngested) => {}
            Err(error @ (RuntimeError::Tampered { .. } | RuntimeError::PassportSource(_))) => {
                tracing::warn!(stream = %row.stream_id, %error, "session left out of the passport");
                summary.refused.push((row.stream_id.clone(), error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    for row in db.session_streams(dispute::DISPUTE_STREAM_PREFIX)? {
        if row.event_count == 0 || known.contains(&row.stream_id) {
            continue;
        }
        match dispute::ingest_dispute(db, &row.stream_id, now_ms) {
            Ok(Ingested::Added { rows }) => {
                summary.disputes_added += 1;
                summary.rows_added += rows;
            }
            Ok(Ingested::AlreadyIngested) => {}
            Err(error @ (RuntimeError::Tampered { .. } | RuntimeError::PassportSource(_))) => {
                tracing::warn!(stream = %row.stream_id, %error, "dispute left out of the passport");
                summary.refused.push((row.stream_id.clone(), error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(summary)
}

/// `agent_id`'s score as of `as_of_ms`, from what the passport holds.
pub fn passport_score(db: &Constellation, agent_id: &str, as_of_ms: u64) -> Result<Score, RuntimeError> {
    let mut scorer = score::Scorer::new(as_of_ms);
    db.passport_scan(agent_id, as_of_ms, |row| {
        let outcome =
            Outcome::parse(row.outcome).ok_or_else(|| format!("unknown passport outcome {:?}", row.outcome))?;
        scorer.add(score::EventRef {
            counterparty: row.counterparty,
            outcome,
            code: row.code,
            fault_domain: row.fault_domain,
            at_ms: row.at_ms,
            transcript_hash: row.transcript_hash,
        });
        Ok(())
    })?;
    Ok(scorer.finish(agent_id))
}

/// The time of `agent_id`'s latest recorded outcome. A session's clock runs ahead of the wall
/// clock by its simulated latencies, so "now" for a person may be before it.
pub fn latest_outcome_ms(db: &Constellation, agent_id: &str) -> Result<Option<u64>, RuntimeError> {
    Ok(db.passport_latest_ms(agent_id)?)
}

/// The gate for one agent, as of `as_of_ms`.
pub fn check_passport(
    db: &Constellation,
    agent_id: &str,
    requirement: PassportRequirement,
    as_of_ms: u64,
) -> Result<PassportCheck, RuntimeError> {
    Ok(require_passport(&passport_score(db, agent_id, as_of_ms)?, requirement))
}
