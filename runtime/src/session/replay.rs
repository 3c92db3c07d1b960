//! `session replay`: re-derives every decision of a recorded session and compares it with what
//! the transcript says was decided.
//!
//! The transcript's events are of two sorts: inputs (what arrived: the session's start, the
//! directory's answer, provider answers, approvals, rail results, receipt signatures) and
//! decisions (bids, counters, selections, accepts, commitments, failures). The replayer walks the
//! stream, rebuilds each input from its event, runs the core's [`step`] on the state folded so
//! far, at the input's recorded time and with the step's derived RNG, and requires the recorded
//! events to be exactly the ones the core produces now: same kind, body, signer and time. The
//! latest checkpoint is compared with the fold at its seq; a failure's evidence must resolve; a
//! receipt must verify against the session.

use std::sync::Arc;

use serde_json::Value;

use pactum_memory::Constellation;
use pactum_transcripts::{Event, EventStore as _, KeyId, StreamId};

use crate::error::RuntimeError;
use crate::event_store::ConstellationEventStore;
use crate::intent::PolicyRule;
use crate::session::model::{Phase, SessionState, parse_event_ref};
use crate::session::receipt::verify_receipt_in_session;
use crate::session::shell::{check_session_id, session_stream_id};
use crate::session::step::{Input, input_of, step, step_rng};
use crate::transcripts::{stream_events, verify_stream};

/// Where a recorded session differs from its recomputation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Divergence {
    /// Stable code: `DECISION_DIVERGES`, `INPUT_REFUSED`, `EVENT_INVALID`, `CHECKPOINT_MISMATCH`,
    /// `EVIDENCE_UNRESOLVED` or `RECEIPT_INVALID`.
    pub code: &'static str,
    pub seq: u64,
    pub problem: String,
    pub expected: String,
    pub found: String,
}

/// The outcome of a replay.
#[derive(Clone, PartialEq, Debug)]
pub struct ReplayReport {
    pub session_id: String,
    pub events: u64,
    /// Inputs re-run through the core.
    pub inputs: u64,
    /// Recorded events compared with recomputed ones.
    pub events_compared: u64,
    /// The state folded from the whole transcript.
    pub state: SessionState,
    /// The seq of the latest checkpoint, if it was compared.
    pub checkpoint_seq: Option<u64>,
    /// Every problem found; the first divergence stops the walk.
    pub problems: Vec<Divergence>,
}

impl ReplayReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 400 { format!("{}…", text.chars().take(400).collect::<String>()) } else { text }
}

/// Replays session `session_id` of `db`; see the module docs.
pub fn replay_session(db: &Arc<Constellation>, session_id: &str) -> Result<ReplayReport, RuntimeError> {
    check_session_id(session_id)?;
    let stream_id = session_stream_id(session_id);
    if db.stream(&stream_id)?.is_none_or(|s| s.event_count == 0) {
        return Err(RuntimeError::SessionNotFound(session_id.to_owned()));
    }
    let verification = verify_stream(db, &stream_id)?;
    if let Some(broken) = verification.first_break {
        return Err(RuntimeError::Tampered { stream: stream_id, broken });
    }
    let (_, events) = stream_events(db, &stream_id)?;
    let store = ConstellationEventStore::new(db.clone());
    let stream = StreamId::new(stream_id.clone()).map_err(|_| RuntimeError::SessionNotFound(session_id.to_owned()))?;
    let checkpoint = store.latest_checkpoint(&stream).map_err(pactum_transcripts::TranscriptError::from)?;
    let (state, walk) = walk(&events, checkpoint.as_ref().map(|(_, c)| c.seq));
    let mut report = ReplayReport {
        session_id: session_id.to_owned(),
        events: events.len() as u64,
        inputs: walk.inputs,
        events_compared: walk.compared,
        state,
        checkpoint_seq: None,
        problems: walk.problems,
    };
    if let (Some((id, checkpoint)), Some(folded)) = (checkpoint, walk.state_at_checkpoint) {
        report.checkpoint_seq = Some(checkpoint.seq);
        let folded = serde_json::to_value(&folded).unwrap_or(Value::Null);
        if folded != checkpoint.state {
            report.problems.push(Divergence {
                code: "CHECKPOINT_MISMATCH",
                seq: checkpoint.seq,
                problem: format!("checkpoint {id} differs from the fold of events 0..={}", checkpoint.seq),
                expected: short(&folded),
                found: short(&checkpoint.state),
            });
        }
    }
    if report.problems.is_empty() {
        report.problems.extend(outcome_problems(&report.state));
    }
    Ok(report)
}

struct Walk {
    inputs: u64,
    compared: u64,
    problems: Vec<Divergence>,
    state_at_checkpoint: Option<SessionState>,
}

fn seed_of(state: &SessionState, input: &Input) -> Option<u64> {
    match input {
        Input::Start(start) => Some(start.seed),
        _ => state.config().ok().map(|c| c.seed),
    }
}

/// Folds `events` while re-running every input through the core.
fn walk(events: &[Event], checkpoint_seq: Option<u64>) -> (SessionState, Walk) {
    let mut state = SessionState::default();
    let mut walk = Walk { inputs: 0, compared: 0, problems: Vec::new(), state_at_checkpoint: None };
    let mut index = 0;
    let diverge = |code, seq, problem: String, expected: String, found: String| Divergence {
        code,
        seq,
        problem,
        expected,
        found,
    };
    while index < events.len() {
        let event = &events[index];
        let input = match input_of(&state, event) {
            Ok(Some(input)) => input,
            Ok(None) => {
                walk.problems.push(diverge(
                    "DECISION_DIVERGES",
                    event.seq,
                    format!("{} is a decision, but no input precedes it", event.kind),
                    "an input event".into(),
                    event.kind.to_string(),
                ));
                break;
            }
            Err(problem) => {
                walk.problems.push(diverge(
                    "EVENT_INVALID",
                    event.seq,
                    problem,
                    "a well-formed input".into(),
                    short(&event.body),
                ));
                break;
            }
        };
        let Some(seed) = seed_of(&state, &input) else {
            walk.problems.push(diverge(
                "EVENT_INVALID",
                event.seq,
                "the session has no seed".into(),
                String::new(),
                String::new(),
            ));
            break;
        };
        walk.inputs += 1;
        let mut rng = step_rng(seed, event.seq);
        let decided = match step(&state, input, event.at_ms, &mut rng) {
            Ok(decided) => decided,
            Err(error) => {
                walk.problems.push(diverge(
                    "INPUT_REFUSED",
                    event.seq,
                    format!("the recorded {} is refused now: {error}", event.kind),
                    "an input the session accepts".into(),
                    short(&event.body),
                ));
                break;
            }
        };
        for (offset, draft) in decided.events.iter().enumerate() {
            let Some(recorded) = events.get(index + offset) else {
                walk.problems.push(diverge(
                    "DECISION_DIVERGES",
                    draft.seq,
                    "the transcript ends where the runtime decides more".into(),
                    format!("{} {}", draft.kind, short(&draft.body)),
                    "nothing".into(),
                ));
                return (state, walk);
            };
            let recorded_signer = recorded.signer.as_ref().map(KeyId::as_str).unwrap_or("nobody");
            let mismatch = if recorded.kind.as_str() != draft.kind {
                Some(("kind", draft.kind.to_owned(), recorded.kind.to_string()))
            } else if recorded.body != draft.body {
                Some(("body", short(&draft.body), short(&recorded.body)))
            } else if recorded_signer != draft.key_id {
                Some(("signer", draft.key_id.clone(), recorded_signer.to_owned()))
            } else if recorded.at_ms != draft.at_ms {
                Some(("time", draft.at_ms.to_string(), recorded.at_ms.to_string()))
            } else {
                None
            };
            if let Some((what, expected, found)) = mismatch {
                walk.problems.push(diverge(
                    "DECISION_DIVERGES",
                    recorded.seq,
                    format!("the recorded {what} of {} differs from the recomputed decision", recorded.kind),
                    expected,
                    found,
                ));
                return (state, walk);
            }
            walk.compared += 1;
            if let Err(error) = state.apply(
                recorded.seq,
                recorded.kind.as_str(),
                &recorded.body,
                recorded.signer.as_ref().map(KeyId::as_str),
                recorded.at_ms,
                Some(&recorded.hash),
            ) {
                walk.problems.push(diverge(
                    "EVENT_INVALID",
                    recorded.seq,
                    error.to_string(),
                    String::new(),
                    String::new(),
                ));
                return (state, walk);
            }
            if Some(recorded.seq) == checkpoint_seq {
                walk.state_at_checkpoint = Some(state.clone());
            }
        }
        index += decided.events.len().max(1);
    }
    (state, walk)
}

/// Checks of a session's outcome: its failure's evidence resolves, its receipt verifies.
pub fn outcome_problems(state: &SessionState) -> Vec<Divergence> {
    let mut problems = Vec::new();
    if let (Some(failure), Some(failure_seq)) = (&state.failure, state.failure_seq) {
        for reference in &failure.evidence_refs {
            let resolves = if let Some(seq) = parse_event_ref(reference) {
                seq < failure_seq
            } else if let Some(rule) = reference.strip_prefix("policy_rule:") {
                match state.config() {
                    Ok(config) => config.resolved.names_rule(rule),
                    Err(_) => PolicyRule::named(rule).is_some(),
                }
            } else if let Some(named) = reference.strip_prefix("constraint:") {
                state.constraints.as_ref().is_some_and(|checked| {
                    checked.checks.iter().any(|check| !check.allowed && check.evidence_ref() == *reference)
                }) && !named.is_empty()
            } else if let Some(member) = reference.strip_prefix("coalition:") {
                state.coalition().is_some_and(|coalition| coalition.member(member).is_some())
            } else if let Some(denial) = reference.strip_prefix("passport:") {
                state.passport.as_ref().is_some_and(|record| {
                    record.checks.iter().any(|check| {
                        check.reason.is_some_and(|reason| denial == format!("{}:{}", check.agent_id, reason.as_str()))
                    })
                })
            } else {
                false
            };
            if !resolves {
                problems.push(Divergence {
                    code: "EVIDENCE_UNRESOLVED",
                    seq: failure_seq,
                    problem: format!("evidence {reference:?} does not resolve inside the transcript"),
                    expected: "event:<seq before the failure>, policy_rule:<a rule of the recorded policy>, passport:<agent>:<a recorded denial>, constraint:<scope>:<a recorded refusal> or coalition:<a member>".into(),
                    found: reference.clone(),
                });
            }
        }
    }
    if state.phase == Phase::Completed
        && let Err(error) = verify_receipt_in_session(state)
    {
        problems.push(Divergence {
            code: "RECEIPT_INVALID",
            seq: state.receipt_seq.unwrap_or_default(),
            problem: error.to_string(),
            expected: "a receipt that verifies".into(),
            found: "see problem".into(),
        });
    }
    problems
}
