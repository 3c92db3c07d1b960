//! PACT v4 transcripts as passport sources. A v4 file is believed only if the reference verdict
//! is VALID, Pactum's stricter checks find nothing (every round's content is bound by a signed
//! envelope, and a terminal transcript carries its `final_hash`), and every round is signed by
//! the key this constellation knows for the agent it names: a v4 transcript binds no identity
//! to its keys, so anyone could otherwise sign rounds in another agent's name.

use std::collections::BTreeSet;
use std::sync::Arc;

use pactum_memory::{Constellation, PassportSource};
use pactum_transcripts::canonical::parse_strict;
use pactum_transcripts::pact_v4::base58_encode;
use pactum_transcripts::{IntegrityStatus, verify_v4_text};
use serde_json::Value;

use super::{Ended, Ingested, outcome_rows};
use crate::error::RuntimeError;
use crate::failure::FailureCode;

/// The format recorded for ingested v4 transcripts.
pub const V4_SOURCE_FORMAT: &str = "pact-transcript/4.0";

fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// Ingests a PACT v4 transcript (its text) into the passport.
pub fn ingest_v4(db: &Arc<Constellation>, document: &str, now_ms: u64) -> Result<Ingested, RuntimeError> {
    let bad = |detail: String| RuntimeError::PassportSource(format!("PACT v4 transcript: {detail}"));
    let report = verify_v4_text(document);
    if report.integrity_status != IntegrityStatus::Valid {
        let first = report.errors.first().map(|e| format!(": {}", e.message)).unwrap_or_default();
        return Err(bad(format!("it does not verify ({}{first})", report.integrity_status.as_str())));
    }
    if let Some(finding) = report.pactum_findings.first() {
        return Err(bad(format!("Pactum's checks refuse it: {}", finding.message)));
    }
    let transcript = parse_strict(document).map_err(|e| bad(e.to_string()))?;
    let transcript_hash =
        text(&transcript, "/final_hash").ok_or_else(|| bad("it has no final_hash".into()))?.to_owned();
    if db.passport_source(&transcript_hash)?.is_some() {
        return Ok(Ingested::AlreadyIngested);
    }
    // A v4 export of one of this constellation's sessions is that session, counted once.
    if let Some(stream) = text(&transcript, "/metadata/pactum_stream")
        && db.stream(stream)?.is_some_and(|s| s.event_count > 0)
    {
        return Ok(Ingested::AlreadyIngested);
    }
    let rounds = transcript.get("rounds").and_then(Value::as_array).ok_or_else(|| bad("no rounds".into()))?;
    let mut participants: Vec<String> = Vec::new();
    for (index, round) in rounds.iter().enumerate() {
        let agent_id = text(round, "/agent_id").ok_or_else(|| bad(format!("round {index} has no agent_id")))?;
        let key = text(round, "/public_key_b58").unwrap_or_default();
        let known = db.agent(agent_id)?.map(|agent| base58_encode(&agent.public_key));
        if known.as_deref() != Some(key) {
            return Err(bad(format!(
                "round {index} is signed in the name of {agent_id} by a key this constellation does not know for it"
            )));
        }
        if !participants.iter().any(|p| p == agent_id) {
            participants.push(agent_id.to_owned());
        }
    }
    let buyer = text(&rounds[0], "/agent_id").unwrap_or_default().to_owned();
    let last = rounds.last().unwrap_or(&rounds[0]);
    let mut ended_at_ms = last.get("timestamp_ms").and_then(Value::as_u64).unwrap_or(0);
    let ended = match transcript.get("failure_event") {
        Some(failure) => {
            let code = text(failure, "/code").unwrap_or_default();
            let code = FailureCode::ALL
                .iter()
                .copied()
                .find(|c| c.code() == code)
                .ok_or_else(|| bad(format!("unknown failure code {code:?}")))?;
            ended_at_ms = ended_at_ms.max(failure.get("timestamp").and_then(Value::as_u64).unwrap_or(0));
            // `round:<n>:<round_hash>` evidence names the rounds at fault (the hash must match).
            let cited: BTreeSet<String> = failure
                .get("evidence_refs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|reference| {
                    let mut parts = reference.strip_prefix("round:")?.splitn(2, ':');
                    let number: usize = parts.next()?.parse().ok()?;
                    let round = rounds.get(number)?;
                    (text(round, "/round_hash")? == parts.next()?)
                        .then(|| text(round, "/agent_id").map(str::to_owned))?
                })
                .filter(|agent| *agent != buyer)
                .collect();
            Ended::Failed { code, cited, selected: None }
        }
        None if text(last, "/round_type") == Some("ACCEPT") => {
            let provider = text(last, "/content_summary/receiver")
                .ok_or_else(|| bad("the ACCEPT round names no receiver".into()))?
                .to_owned();
            let price = last.pointer("/content_summary/price").and_then(|price| {
                Some((price.get("amount_minor")?.as_u64()?, price.get("currency")?.as_str()?.to_owned()))
            });
            if !participants.contains(&provider) {
                participants.push(provider.clone());
            }
            Ended::Completed { provider, price }
        }
        None => return Err(bad("it has not ended (no failure_event and no final ACCEPT)".into())),
    };
    let rows = outcome_rows(&buyer, &participants, ended, &transcript_hash, ended_at_ms);
    let source = PassportSource {
        transcript_hash,
        source: format!("pact-v4:{}", text(&transcript, "/transcript_id").unwrap_or_default()),
        format: V4_SOURCE_FORMAT.to_owned(),
        ended_at_ms,
        ingested_at_ms: now_ms,
    };
    super::store(db, &source, &rows)
}
