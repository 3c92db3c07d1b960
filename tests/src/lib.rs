//! Support for Pactum's workspace-level tests. The tests are in `tests/tests/`; the programs they
//! drive are `pactum-under-test` (the pactum program) and `crash-appender`.
//!
//! [`write_sample_transcript`] builds the sample transcript shipped as
//! `tests/testdata/sample-transcript.jsonl` (regenerate with `PACTUM_UPDATE_GOLDEN=1 cargo test
//! -p pactum-tests --test golden`). It is made deterministically from fixed keys and a manual clock,
//! so its bytes pin the transcript format.

use std::path::Path;
use std::sync::Arc;

use pactum_memory::{Constellation, StreamOrigin};
use pactum_runtime::ConstellationEventStore;
use pactum_transcripts::{Ed25519Signer, EventKind, EventSigner, KeyId, ManualClock, StreamId, TranscriptStream};
use serde_json::json;

/// Id of the sample stream.
pub const SAMPLE_STREAM: &str = "sample-weather-0001";
/// 2026-11-22T12:00:00Z.
pub const SAMPLE_START_MS: u64 = 1_795_348_800_000;

fn signer(key_id: &str, seed_byte: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed(KeyId::new(key_id).expect("valid key id"), &[seed_byte; 32])
}

/// Writes the sample stream into the constellation at `path` and returns the store holding it.
pub fn write_sample_transcript(path: &Path) -> Arc<Constellation> {
    let db = Arc::new(Constellation::open(path).expect("open constellation"));
    let buyer = signer("agent:buyer#1", 11);
    let provider = signer("agent:provider-nimbus#1", 22);
    for party in [&buyer, &provider] {
        db.put_signing_key(
            party.key_id().as_str(),
            party.verifying_key().to_bytes(),
            StreamOrigin::Local,
            SAMPLE_START_MS,
        )
        .expect("register key");
    }
    let clock = Arc::new(ManualClock::new(SAMPLE_START_MS));
    let stream = TranscriptStream::open(
        ConstellationEventStore::new(Arc::clone(&db)),
        StreamId::new(SAMPLE_STREAM).expect("valid id"),
        clock.clone(),
    )
    .expect("open stream");
    let usd = |amount_minor: u64| json!({ "amount_minor": amount_minor, "currency": "USD" });
    let steps: Vec<(u64, &str, serde_json::Value, Option<&dyn EventSigner>)> = vec![
        (0, "session.created", json!({ "buyer": "agent:buyer", "note": "sample transcript" }), Some(&buyer)),
        (
            3,
            "intent.declared",
            json!({ "intent_type": "weather.data", "scope": "Zürich, hourly", "max_price": usd(5), "latency_ms_max": 200 }),
            Some(&buyer),
        ),
        (41, "round.ask", json!({ "round": 1, "price": usd(7), "provider": "agent:provider-nimbus" }), Some(&provider)),
        (12, "round.counter", json!({ "round": 2, "price": usd(4) }), Some(&buyer)),
        (38, "round.counter", json!({ "round": 3, "price": usd(5) }), Some(&provider)),
        (9, "round.accept", json!({ "round": 4, "price": usd(5) }), Some(&buyer)),
        (2, "session.completed", json!({ "outcome": "accepted", "price": usd(5) }), Some(&buyer)),
    ];
    for (delay_ms, kind, body, by) in steps {
        clock.advance(delay_ms);
        stream.append(EventKind::new(kind).expect("valid kind"), body, by).expect("append");
    }
    db
}
