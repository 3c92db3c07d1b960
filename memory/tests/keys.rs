//! Key generations and the revocation list: rotation keeps the old key bound, the current key only
//! moves forward, the list is append-only, and a constellation from before migration 10 gets its
//! agents' first keys recorded.

use pactum_memory::{AgentRecord, AgentRole, Constellation, KeyStatus, Rotation, SecretSeed, StoreError};

fn agent(id: &str, key_id: &str, public_key: [u8; 32]) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        display_name: id.into(),
        role: AgentRole::Buyer,
        key_id: key_id.into(),
        public_key,
        secret_key: SecretSeed::new([1; 32]),
        created_at_ms: 1_000,
    }
}

fn rotation(from: &str, to: &str, generation: u32) -> Rotation {
    Rotation {
        agent_id: "buyer".into(),
        from_key_id: from.into(),
        key_id: to.into(),
        generation,
        public_key: [generation as u8; 32],
        secret_key: SecretSeed::new([9; 32]),
        created_at_ms: 2_000,
    }
}

fn statuses(db: &Constellation) -> Vec<(String, u32, KeyStatus)> {
    db.agent_keys().expect("keys").into_iter().map(|key| (key.key_id.clone(), key.generation, key.status())).collect()
}

#[test]
fn rotation_retires_the_old_key_and_revocation_is_append_only() {
    let dir = tempfile::tempdir().expect("temp");
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    db.ensure_agent(agent("buyer", "agent:buyer#1", [1; 32])).expect("agent");
    assert_eq!(statuses(&db), [("agent:buyer#1".to_owned(), 1, KeyStatus::Current)]);

    let rotated = db.rotate_agent_key(&rotation("agent:buyer#1", "agent:buyer#2", 2)).expect("rotate");
    assert_eq!(rotated.key_id, "agent:buyer#2");
    assert_eq!(rotated.public_key, [2; 32]);
    assert_eq!(
        statuses(&db),
        [("agent:buyer#1".to_owned(), 1, KeyStatus::Retired), ("agent:buyer#2".to_owned(), 2, KeyStatus::Current)]
    );
    // The retired key stays bound for verification.
    assert!(db.signing_keys().expect("keys").iter().any(|(id, key)| id == "agent:buyer#1" && *key == [1; 32]));
    // A stale rotation (another process rotated first) writes nothing.
    assert!(matches!(
        db.rotate_agent_key(&rotation("agent:buyer#1", "agent:buyer#3", 3)),
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(db.newest_key_generation("buyer").expect("generation"), 2);

    db.revoke_key("agent:buyer#1", "lost", 3_000).expect("revoke");
    assert!(matches!(db.revoke_key("agent:buyer#1", "again", 4_000), Err(StoreError::KeyAlreadyRevoked(_))));
    assert!(matches!(db.revoke_key("agent:nobody#1", "x", 4_000), Err(StoreError::KeyNotFound(_))));
    assert!(matches!(db.revoke_key("agent:buyer#2", &"x".repeat(513), 4_000), Err(StoreError::Invalid { .. })));
    let list = db.key_revocations().expect("list");
    assert_eq!((list.len(), list[0].reason.as_str(), list[0].revoked_at_ms), (1, "lost", 3_000));
    assert_eq!(statuses(&db)[0].2, KeyStatus::Revoked);
}

#[test]
fn the_triggers_keep_history_and_move_the_current_key_forward_only() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("c.db");
    let db = Constellation::open(&path).expect("open");
    db.ensure_agent(agent("buyer", "agent:buyer#1", [1; 32])).expect("agent");
    db.rotate_agent_key(&rotation("agent:buyer#1", "agent:buyer#2", 2)).expect("rotate");
    db.revoke_key("agent:buyer#1", "lost", 3_000).expect("revoke");
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    for sql in [
        "UPDATE agents SET key_id = 'agent:buyer#1' WHERE agent_id = 'buyer'",
        "DELETE FROM agent_keys",
        "UPDATE agent_keys SET generation = 5",
        "DELETE FROM key_revocations",
        "UPDATE key_revocations SET reason = 'never mind'",
    ] {
        assert!(raw.execute_batch(sql).is_err(), "{sql} was allowed");
    }
}

#[test]
fn a_constellation_from_before_key_generations_records_its_agents_first_keys() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("c.db");
    let db = Constellation::open(&path).expect("open");
    db.ensure_agent(agent("buyer", "agent:buyer#1", [1; 32])).expect("agent");
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    raw.execute_batch(
        "DROP TRIGGER agents_key_moves_forward; DROP TRIGGER agents_fixed;
         DROP TABLE settlement_graph_owners; DROP TABLE artifact_parents; DROP TABLE artifacts; DROP TABLE execution_state; DROP TABLE execution_log; DROP TABLE executions; DROP TABLE settlement_graph_edges; DROP TABLE settlement_graphs; DROP TABLE spends; DROP TABLE agent_constraints;
         DROP TABLE key_revocations; DROP TABLE agent_keys; PRAGMA user_version = 9;",
    )
    .expect("back to version 9");
    drop(raw);
    let db = Constellation::open(&path).expect("migrates");
    assert_eq!(statuses(&db), [("agent:buyer#1".to_owned(), 1, KeyStatus::Current)]);
}
