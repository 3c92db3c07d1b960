//! Export of a stored session as a PACT v4 transcript (`pact-transcript/4.0`).
//!
//! The mapping (docs/TRANSCRIPT-FORMAT.md, "PACT v4"): the rounds are the session's negotiation
//! messages in stream order (`round.intent` → INTENT, `round.bid` → BID, `round.counter` →
//! COUNTER, `round.ask` → ASK, `round.reject` → REJECT, `round.accept` → ACCEPT, `round.abort` →
//! ABORT); a session with none (it failed at admission) has one INTENT round made from
//! `session.created`. Each round reuses its Pactum event's hash as `envelope_hash` and the event's
//! own Ed25519 signature (already over those 32 bytes), so nothing is signed again; the events
//! themselves travel in `metadata.pactum_envelopes`, which lets Pactum's checker see that each
//! round's type, sender and price are signed. The document is written in canonical JSON (RFC 8785)
//! with a final newline, so a session always exports to the same bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_transcripts::pact_v4::{
    PACT_V4_FORMAT, base58_encode, canonical_hash, canonical_hash_without, genesis_round_hash, pactum_round_type,
    round_from_event, sealed_round_from_event,
};
use pactum_transcripts::{Event, KeyRing, public_key_from_base64url};
use serde_json::{Map, Value, json};

use crate::error::RuntimeError;
use crate::session::model::{
    CreatedBody, DiscoveryBody, FailureBody, SELECTION_RULE, SELECTION_RULE_PREFERRED, SESSION_STREAM_PREFIX, kind,
    parse_event_ref,
};
use crate::transcripts::{stream_events, stream_key_ring, verify_stream};

/// Value of `metadata.exported_by`.
pub const V4_EXPORTER: &str = "pactum";

/// A session exported as PACT v4.
#[derive(Debug)]
pub struct V4Export {
    /// The session's stream (`session:<id>`).
    pub stream: String,
    pub rounds: usize,
    /// The transcript.
    pub document: Value,
    /// What is written: the canonical JSON of `document` and a newline.
    pub text: String,
}

/// Exports session `id` (a session id, or its stream id `session:<id>`) as PACT v4. The stored
/// stream is verified first: a transcript that does not verify is refused
/// (`TRANSCRIPT_TAMPERED`), because the v4 form would no longer show where it broke.
pub fn export_session_v4(db: &Arc<Constellation>, id: &str) -> Result<V4Export, RuntimeError> {
    let stream =
        if id.starts_with(SESSION_STREAM_PREFIX) { id.to_owned() } else { format!("{SESSION_STREAM_PREFIX}{id}") };
    let report = verify_stream(db, &stream)?;
    if let Some(broken) = report.first_break {
        return Err(RuntimeError::Tampered { stream, broken });
    }
    let (summary, events) = stream_events(db, &stream)?;
    let (keys, _) = stream_key_ring(db, &summary)?;
    let document = build_v4_transcript(&events, &keys)?;
    let rounds = document["rounds"].as_array().map_or(0, Vec::len);
    let mut text = pactum_transcripts::canonical::to_canonical_string(&document).map_err(invalid)?;
    text.push('\n');
    tracing::debug!(stream = %stream, rounds, bytes = text.len(), "exported PACT v4 transcript");
    Ok(V4Export { stream, rounds, document, text })
}

fn invalid(error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::PactV4Export(error.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, RuntimeError> {
    T::deserialize(&event.body).map_err(|e| invalid(format!("event {} ({}): {e}", event.seq, event.kind)))
}

fn base58_of_base64url(public_key: &str) -> Result<String, RuntimeError> {
    Ok(base58_encode(&public_key_from_base64url(public_key).map_err(invalid)?))
}

/// Builds the PACT v4 transcript of a session's events (all of them, in order), with the public
/// keys of their signers in `keys`. Pure: the same events give the same document.
pub fn build_v4_transcript(events: &[Event], keys: &KeyRing) -> Result<Value, RuntimeError> {
    let first = events.first().ok_or_else(|| invalid("the session has no events"))?;
    if first.kind.as_str() != kind::CREATED {
        return Err(invalid(format!("event 0 is {}, not {}", first.kind, kind::CREATED)));
    }
    let created: CreatedBody = parse(first)?;
    let stream = first.stream.as_str();

    let mut round_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind.as_str() != kind::CREATED && pactum_round_type(e.kind.as_str()).is_some())
        .collect();
    if round_events.is_empty() {
        round_events.push(first);
    }
    let intent_id = format!("intent:{}", created.session_id);
    let mut previous_round_hash = genesis_round_hash(&intent_id, first.at_ms);
    let mut rounds = Vec::with_capacity(round_events.len());
    // Seq of each round's event → (round number, round hash), for evidence refs.
    let mut round_of_seq = BTreeMap::new();
    let discovery_offering: Vec<crate::session::model::ProviderRef> = events
        .iter()
        .find(|e| e.kind.as_str() == kind::DISCOVERY)
        .map(parse::<DiscoveryBody>)
        .transpose()?
        .map(|d| d.offering)
        .unwrap_or_default();
    for (round_number, event) in round_events.iter().enumerate() {
        let round = round_of(round_number, event, keys, &discovery_offering, &previous_round_hash)?;
        let round_hash = round["round_hash"].as_str().unwrap_or_default().to_owned();
        round_of_seq.insert(event.seq, (round_number, round_hash.clone()));
        previous_round_hash = round_hash;
        rounds.push(round);
    }

    let mut transcript = Map::new();
    transcript.insert("transcript_version".into(), Value::String(PACT_V4_FORMAT.to_owned()));
    transcript.insert("transcript_id".into(), Value::String(stream.to_owned()));
    transcript.insert("intent_id".into(), Value::String(intent_id));
    let intent_type = created.intent.get("intent_type").cloned().unwrap_or(Value::Null);
    transcript.insert("intent_type".into(), intent_type);
    transcript.insert("created_at_ms".into(), Value::from(first.at_ms));
    let policy_hash = created.policy_hash.strip_prefix("sha256:").unwrap_or(&created.policy_hash);
    transcript.insert("policy_hash".into(), Value::String(policy_hash.to_owned()));
    transcript.insert("strategy_hash".into(), Value::String(strategy_hash(&created)?));
    let discovery =
        events.iter().find(|e| e.kind.as_str() == kind::DISCOVERY).map(parse::<DiscoveryBody>).transpose()?;
    transcript
        .insert("identity_snapshot_hash".into(), Value::String(identity_snapshot_hash(&created, discovery.as_ref())?));
    transcript.insert("rounds".into(), Value::Array(rounds));

    let last = events.last().unwrap_or(first);
    let failed = (last.kind.as_str() == kind::FAILED).then(|| parse::<FailureBody>(last)).transpose()?;
    let terminal = failed.is_some() || last.kind.as_str() == kind::COMPLETED;
    let mut metadata = Map::new();
    metadata.insert("exported_by".into(), Value::String(V4_EXPORTER.to_owned()));
    metadata.insert("pactum_stream".into(), Value::String(stream.to_owned()));
    metadata.insert("pactum_head".into(), Value::String(last.hash.to_hex()));
    metadata.insert("pactum_envelopes".into(), Value::Array(round_events.iter().map(|e| e.to_json()).collect()));
    if let Some(failure) = &failed {
        metadata.insert("pactum_failure".into(), json!({ "name": failure.name, "detail": failure.detail }));
    }
    transcript.insert("metadata".into(), Value::Object(metadata));

    if let Some(failure) = failed {
        let transcript_hash = canonical_hash_without(&transcript, &["failure_event", "final_hash"]).map_err(invalid)?;
        let mut evidence_refs = Vec::with_capacity(failure.evidence_refs.len() * 2);
        for reference in failure.evidence_refs {
            let round = parse_event_ref(&reference).and_then(|seq| round_of_seq.get(&seq));
            evidence_refs.push(Value::String(reference));
            if let Some((number, hash)) = round {
                evidence_refs.push(Value::String(format!("round:{number}:{hash}")));
            }
        }
        transcript.insert(
            "failure_event".into(),
            json!({
                "code": failure.code,
                "stage": failure.stage,
                "fault_domain": failure.fault_domain,
                "terminality": failure.terminality,
                "evidence_refs": evidence_refs,
                "timestamp": last.at_ms,
                "transcript_hash": transcript_hash,
            }),
        );
    }
    if terminal {
        let final_hash = canonical_hash_without(&transcript, &["final_hash"]).map_err(invalid)?;
        transcript.insert("final_hash".into(), Value::String(final_hash));
    }
    Ok(Value::Object(transcript))
}

/// One round from a Pactum event, signed by a key in `keys` — or, for a remote provider's
/// message, by the provider's seal (its key from discovery): the round's `envelope_hash` is then
/// the seal's digest, so the round is signed by its sender.
fn round_of(
    round_number: usize,
    event: &Event,
    keys: &KeyRing,
    offering: &[crate::session::model::ProviderRef],
    previous_round_hash: &str,
) -> Result<Value, RuntimeError> {
    if let Some(seal) = event.body.get("envelope") {
        let seal: crate::remote::EnvelopeSeal = serde_json::from_value(seal.clone())
            .map_err(|e| invalid(format!("event {} ({}): its seal: {e}", event.seq, event.kind)))?;
        let sender = event.body.get("sender").and_then(Value::as_str).unwrap_or_default();
        let provider = offering.iter().find(|p| p.agent_id == sender && p.key_id == seal.key_id).ok_or_else(|| {
            invalid(format!("event {} ({}): no key {} for {sender}", event.seq, event.kind, seal.key_id))
        })?;
        let public_key = public_key_from_base64url(&provider.public_key).map_err(invalid)?;
        let session_id = event.stream.as_str().strip_prefix(SESSION_STREAM_PREFIX).unwrap_or(event.stream.as_str());
        let digest = crate::remote::envelope_digest(
            session_id,
            event.kind.as_str(),
            &event.body,
            &seal.reply_to,
            &seal.key_id,
            seal.signed_at_ms,
        )
        .map_err(invalid)?;
        let signature = pactum_transcripts::SignatureBytes::from_base64url(&seal.signature).map_err(invalid)?;
        return sealed_round_from_event(
            round_number,
            event,
            &public_key,
            &digest,
            &signature,
            seal.signed_at_ms,
            previous_round_hash,
        )
        .map_err(invalid);
    }
    let signer =
        event.signer.as_ref().ok_or_else(|| invalid(format!("event {} ({}) is not signed", event.seq, event.kind)))?;
    let public_key = keys
        .get(signer)
        .ok_or_else(|| invalid(format!("event {} ({}): no public key for {signer}", event.seq, event.kind)))?;
    round_from_event(round_number, event, public_key.as_bytes(), previous_round_hash).map_err(invalid)
}

/// `H(canon(...))` of what decides the buyer's bids and choice: the strategy, the intent's
/// maximum price, the policy's round limit and the selection rule with its preferred providers.
fn strategy_hash(created: &CreatedBody) -> Result<String, RuntimeError> {
    let preferred = created.preferences.as_ref().map(|p| p.preferred_providers.clone()).unwrap_or_default();
    let rule = if preferred.is_empty() { SELECTION_RULE } else { SELECTION_RULE_PREFERRED };
    let strategy = json!({
        "format": "pactum-strategy/1",
        "strategy": created.strategy,
        "max_price": created.intent.get("max_price"),
        // A pactum-policy/1 policy records it at the top; a pactum-policy/2 one in its static part.
        "rounds_max": created.policy.get("rounds_max").or_else(|| created.policy.pointer("/static/rounds_max")),
        "selection_rule": rule,
        "preferred_providers": preferred,
    });
    canonical_hash(&strategy).map_err(invalid)
}

/// `H(canon(...))` of the parties: the buyer and every provider discovery found, with their key
/// ids and public keys (base58).
fn identity_snapshot_hash(created: &CreatedBody, discovery: Option<&DiscoveryBody>) -> Result<String, RuntimeError> {
    let buyer = &created.buyer;
    let mut providers = Vec::new();
    for provider in discovery.map(|d| d.offering.as_slice()).unwrap_or_default() {
        providers.push(json!({
            "agent_id": provider.agent_id,
            "name": provider.name,
            "key_id": provider.key_id,
            "public_key_b58": base58_of_base64url(&provider.public_key)?,
        }));
    }
    let snapshot = json!({
        "format": "pactum-identities/1",
        "buyer": {
            "agent_id": buyer.agent_id,
            "key_id": buyer.key_id,
            "public_key_b58": base58_of_base64url(&buyer.public_key)?,
        },
        "providers": providers,
    });
    canonical_hash(&snapshot).map_err(invalid)
}
