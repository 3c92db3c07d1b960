//! Agents and identities: created once, stable, signing verifiably, secrets never shown.

use std::sync::Arc;

use pactum_memory::{AgentRole, Constellation};
use pactum_runtime::{ConstellationEventStore, ensure_agent, ensure_default_buyer, signer_for};
use pactum_transcripts::{EventKind, EventSigner, ManualClock, StreamId, TranscriptStream};

fn db() -> (tempfile::TempDir, Arc<Constellation>) {
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
    (dir, db)
}

#[test]
fn the_default_buyer_is_created_once_and_keeps_its_identity() {
    let (_dir, db) = db();
    let first = ensure_default_buyer(&db, [1; 32], 10).expect("create");
    let again = ensure_default_buyer(&db, [2; 32], 20).expect("existing");
    assert_eq!(first, again, "a second call with another seed returns the same agent");
    assert_eq!(
        (first.agent_id.as_str(), first.key_id.as_str(), first.role),
        ("buyer", "agent:buyer#1", AgentRole::Buyer)
    );
    assert_eq!(db.agents().expect("agents").len(), 1);
    // Its key is the constellation's, so its signatures verify in local transcripts.
    let ring = pactum_runtime::key_ring(&db).expect("ring");
    assert_eq!(ring.len(), 1);
}

#[test]
fn an_agent_signs_events_that_verify() {
    let (_dir, db) = db();
    let agent = ensure_agent(&db, "nimbus-weather", "Nimbus Weather", AgentRole::Provider, [7; 32], 1).expect("agent");
    let signer = signer_for(&agent).expect("signer");
    let stream = TranscriptStream::open(
        ConstellationEventStore::new(Arc::clone(&db)),
        StreamId::new("s").expect("id"),
        Arc::new(ManualClock::new(5)),
    )
    .expect("stream");
    stream
        .append(
            EventKind::new("round.ask").expect("kind"),
            serde_json::json!({"price": 6}),
            Some(&signer as &dyn EventSigner),
        )
        .expect("append");
    let report = pactum_runtime::verify_stream(&db, "s").expect("verify");
    assert!(report.is_valid());
    assert_eq!(report.signatures_verified, 1);
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let (_dir, db) = db();
    let agent = ensure_default_buyer(&db, [0xAB; 32], 1).expect("create");
    let debug = format!("{agent:?} {:?}", signer_for(&agent).expect("signer"));
    assert!(debug.contains("redacted"), "{debug}");
    for needle in ["171, 171", "0xab", "abab", "AB, AB"] {
        assert!(!debug.to_lowercase().contains(&needle.to_lowercase()), "secret bytes leaked: {debug}");
    }
}

#[test]
fn invalid_agent_ids_are_refused_and_nothing_is_stored() {
    let (_dir, db) = db();
    for id in ["", "Buyer", "a b", "x".repeat(65).as_str(), "agent:1"] {
        let error = ensure_agent(&db, id, "X", AgentRole::Buyer, [1; 32], 1).expect_err("invalid");
        assert_eq!(error.code(), "AGENT_ID_INVALID", "{id:?}");
    }
    assert!(db.agents().expect("agents").is_empty());
}
