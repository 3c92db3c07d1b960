//! Disputes: the buyer's signed ruling that a counterparty of an ended session did (upheld) or
//! did not (dismissed) fail it after the fact — a service not delivered, say. A dispute is its
//! own transcript stream, `dispute:<session>:<agent>`, of one `dispute.resolved` event signed by
//! the session's buyer; the passport ingests it like a session (only if it verifies), and an
//! upheld dispute is a lost dispute for the agent it is against.

use std::sync::Arc;

use pactum_memory::{Constellation, PassportEventRow, PassportSource, StreamOrigin};
use pactum_transcripts::public_key_bytes_to_base64url;
use pactum_transcripts::{Clock, EventKind, EventSigner, StreamId, TranscriptStream};
use serde::{Deserialize, Serialize};

use super::{Ingested, Outcome};
use crate::error::RuntimeError;
use crate::event_store::ConstellationEventStore;
use crate::identities::signer_for;
use crate::session::model::{Phase, SESSION_STREAM_PREFIX, SessionState};
use crate::transcripts::{stream_events, verify_stream};

/// Stream ids of disputes start with this.
pub const DISPUTE_STREAM_PREFIX: &str = "dispute:";
/// The event kind and format of a dispute.
pub const DISPUTE_RESOLVED: &str = "dispute.resolved";
pub const DISPUTE_FORMAT: &str = "pactum-dispute/1";
/// Longest reason.
pub const DISPUTE_REASON_BYTES_MAX: usize = 1_000;

/// `dispute.resolved`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeBody {
    pub format: String,
    pub session_id: String,
    /// Head hash of the session's transcript: the record the dispute is about.
    pub session_head: String,
    pub against: String,
    pub filed_by: String,
    /// `upheld` or `dismissed`.
    pub outcome: String,
    pub reason: String,
}

/// The stream of a dispute against `against` over `session_id`.
pub fn dispute_stream_id(session_id: &str, against: &str) -> String {
    format!("{DISPUTE_STREAM_PREFIX}{session_id}:{against}")
}

/// Records the buyer's ruling on a dispute over an ended session. One ruling per session and
/// party: a second is refused (`DISPUTE_EXISTS`).
pub fn record_dispute(
    db: &Arc<Constellation>,
    clock: Arc<dyn Clock>,
    session_id: &str,
    against: &str,
    upheld: bool,
    reason: &str,
) -> Result<DisputeBody, RuntimeError> {
    if reason.trim().is_empty() || reason.len() > DISPUTE_REASON_BYTES_MAX || reason.chars().any(char::is_control) {
        return Err(RuntimeError::Dispute(format!(
            "a dispute needs a reason of 1 to {DISPUTE_REASON_BYTES_MAX} bytes of printable text"
        )));
    }
    let session = disputed_session(db, session_id).map_err(|error| match error {
        RuntimeError::PassportSource(detail) => RuntimeError::Dispute(detail),
        other => other,
    })?;
    let (state, head) = (&session.state, &session.head);
    let buyer = state.buyer_id().unwrap_or_default().to_owned();
    if let Err(detail) = took_part(state, against) {
        return Err(RuntimeError::Dispute(format!("session {session_id}: {detail}")));
    }
    let stream_id = dispute_stream_id(session_id, against);
    if db.stream(&stream_id)?.is_some_and(|s| s.event_count > 0) {
        return Err(RuntimeError::DisputeExists(stream_id));
    }
    let agent = db
        .agent(&buyer)?
        .ok_or_else(|| RuntimeError::Dispute(format!("the buyer {buyer} is not an agent of this constellation")))?;
    let signer = signer_for(&agent)?;
    let recorded = state.created.as_ref().map(|c| c.buyer.public_key.as_str()).unwrap_or_default();
    if public_key_bytes_to_base64url(&signer.verifying_key().to_bytes()) != recorded {
        return Err(RuntimeError::Dispute(format!(
            "session {session_id} was signed by another key for {buyer} than this constellation's {}",
            signer.key_id()
        )));
    }
    let body = DisputeBody {
        format: DISPUTE_FORMAT.to_owned(),
        session_id: session_id.to_owned(),
        session_head: head.clone(),
        against: against.to_owned(),
        filed_by: buyer,
        outcome: if upheld { "upheld" } else { "dismissed" }.to_owned(),
        reason: reason.to_owned(),
    };
    let stream = TranscriptStream::open(
        ConstellationEventStore::new(Arc::clone(db)),
        StreamId::new(stream_id.clone()).map_err(|e| RuntimeError::Dispute(e.to_string()))?,
        clock,
    )?;
    let value = serde_json::to_value(&body).map_err(|e| RuntimeError::Dispute(e.to_string()))?;
    let kind = EventKind::new(DISPUTE_RESOLVED).map_err(|e| RuntimeError::Dispute(e.to_string()))?;
    stream.append(kind, value, Some(&signer as &dyn EventSigner))?;
    Ok(body)
}

/// A verified local session, folded.
struct DisputedSession {
    state: SessionState,
    head: String,
}

/// The session a dispute is about: it must be one this constellation ran (not imported: its
/// parties' keys would be someone else's), verify, follow the protocol and have ended.
fn disputed_session(db: &Arc<Constellation>, session_id: &str) -> Result<DisputedSession, RuntimeError> {
    let stream_id = format!("{SESSION_STREAM_PREFIX}{session_id}");
    let Some(record) = db.stream(&stream_id)?.filter(|s| s.event_count > 0) else {
        return Err(RuntimeError::SessionNotFound(session_id.to_owned()));
    };
    if record.origin != StreamOrigin::Local {
        return Err(RuntimeError::PassportSource(format!(
            "{stream_id} was imported: only sessions this constellation ran can be disputed"
        )));
    }
    let report = verify_stream(db, &stream_id)?;
    if let Some(broken) = report.first_break {
        return Err(RuntimeError::Tampered { stream: stream_id, broken });
    }
    let (_, events) = stream_events(db, &stream_id)?;
    let state = SessionState::fold(&events).map_err(|e| RuntimeError::PassportSource(e.to_string()))?;
    if !state.phase.is_terminal() {
        return Err(RuntimeError::SessionNotTerminal {
            session_id: session_id.to_owned(),
            phase: state.phase.as_str(),
        });
    }
    Ok(DisputedSession { state, head: report.head_hash.map(|h| h.to_hex()).unwrap_or_default() })
}

/// Whether `against` was the buyer's counterparty: the provider paid in a completed session, an
/// admitted provider in a failed one.
fn took_part(state: &SessionState, against: &str) -> Result<(), String> {
    let ok = match state.phase {
        Phase::Completed => state.agreement.as_ref().is_some_and(|a| a.provider == against),
        _ => state.admitted.iter().any(|p| p == against) && state.buyer_id() != Some(against),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{against} was not the buyer's counterparty (a dispute is against the provider paid, or one that negotiated \
             in a failed session)"
        ))
    }
}

/// Ingests a dispute stream (it must verify, be signed by the session's buyer and name a
/// session that is in this constellation and still ends at the recorded head).
pub fn ingest_dispute(db: &Arc<Constellation>, stream_id: &str, now_ms: u64) -> Result<Ingested, RuntimeError> {
    let bad = |detail: &str| RuntimeError::PassportSource(format!("{stream_id}: {detail}"));
    if db.stream(stream_id)?.is_none_or(|s| s.origin != StreamOrigin::Local) {
        return Err(bad("only rulings made in this constellation count"));
    }
    let report = verify_stream(db, stream_id)?;
    if let Some(broken) = report.first_break {
        return Err(RuntimeError::Tampered { stream: stream_id.to_owned(), broken });
    }
    let head = report.head_hash.map(|h| h.to_hex()).unwrap_or_default();
    if db.passport_source(&head)?.is_some() {
        return Ok(Ingested::AlreadyIngested);
    }
    let (_, events) = stream_events(db, stream_id)?;
    let [event] = events.as_slice() else { return Err(bad("a dispute is exactly one event")) };
    if event.kind.as_str() != DISPUTE_RESOLVED {
        return Err(bad("not a dispute.resolved event"));
    }
    let body: DisputeBody = serde_json::from_value(event.body.clone()).map_err(|e| bad(&e.to_string()))?;
    if body.format != DISPUTE_FORMAT || !matches!(body.outcome.as_str(), "upheld" | "dismissed") {
        return Err(bad("not a pactum-dispute/1 ruling"));
    }
    if dispute_stream_id(&body.session_id, &body.against) != stream_id {
        return Err(bad("the ruling is not about the session and party its transcript is named for"));
    }
    let session = disputed_session(db, &body.session_id)?;
    if session.head != body.session_head {
        return Err(bad("the disputed session is not the verified transcript the ruling names"));
    }
    took_part(&session.state, &body.against).map_err(|detail| bad(&detail))?;
    let created = session.state.created.as_ref().ok_or_else(|| bad("the session has no session.created"))?;
    // The key that signed the ruling must be the very key the session recorded for its buyer
    // (key ids alone are the same in every constellation).
    let signer = event.signer.as_ref().map(|k| k.as_str().to_owned()).unwrap_or_default();
    let signer_key = db
        .signing_keys()?
        .into_iter()
        .find(|(key_id, _)| *key_id == signer)
        .map(|(_, key)| public_key_bytes_to_base64url(&key));
    if signer_key.as_deref() != Some(created.buyer.public_key.as_str()) || created.buyer.agent_id != body.filed_by {
        return Err(bad("a ruling must be signed by the disputed session's buyer"));
    }
    let rows = if body.outcome == "upheld" {
        vec![PassportEventRow {
            agent_id: body.against.clone(),
            counterparty: body.filed_by.clone(),
            outcome: Outcome::DisputeLost.as_str().to_owned(),
            code: None,
            fault_domain: None,
            at_ms: event.at_ms,
            amount_minor: None,
            currency: None,
            transcript_hash: head.clone(),
        }]
    } else {
        Vec::new()
    };
    let source = PassportSource {
        transcript_hash: head,
        source: stream_id.to_owned(),
        format: DISPUTE_FORMAT.to_owned(),
        ended_at_ms: event.at_ms,
        ingested_at_ms: now_ms,
    };
    super::store(db, &source, &rows)
}
