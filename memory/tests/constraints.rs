//! Agents' constraints and spends: versions are append-only and keep their start, a spend is
//! written once and released once, and a constellation from before migration 11 gets the holds
//! already on its ledger as spends.

use pactum_memory::{
    AGENT_CONSTRAINTS_MAX, AccountKind, AgentRecord, AgentRole, Constellation, ConstraintStoreError, SecretSeed,
    TransferRequest,
};

fn buyer(db: &Constellation) {
    db.ensure_agent(AgentRecord {
        agent_id: "buyer".into(),
        display_name: "Buyer".into(),
        role: AgentRole::Buyer,
        key_id: "agent:buyer#1".into(),
        public_key: [1; 32],
        secret_key: SecretSeed::new([1; 32]),
        created_at_ms: 1_000,
    })
    .expect("agent");
}

fn transfer(db: &Constellation, key: &str, from: (&str, AccountKind), to: (&str, AccountKind), minor: u64, at_ms: u64) {
    let request = TransferRequest {
        idempotency_key: key.into(),
        from_account: from.0.into(),
        to_account: to.0.into(),
        amount_minor: minor,
        currency: "USD".into(),
        memo: key.into(),
        at_ms,
    };
    db.transfer_ensuring(&[from, to], &request).expect("store").expect("transfer");
}

#[test]
fn versions_keep_their_start_and_removal_is_a_version() {
    let dir = tempfile::tempdir().expect("temp");
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    buyer(&db);
    let first = db.set_agent_constraint("buyer", "monthly", Some(("{\"a\":1}", "sha256:a")), 5_000).expect("db");
    assert_eq!(first.as_ref().map(|row| (row.version, row.since_ms)), Ok((1, 5_000)));
    let second = db.set_agent_constraint("buyer", "monthly", Some(("{\"a\":2}", "sha256:b")), 9_000).expect("db");
    assert_eq!(second.as_ref().map(|row| (row.version, row.since_ms)), Ok((2, 5_000)), "the start is kept");
    let current = db.agent_constraints("buyer").expect("current");
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].body.as_deref(), Some("{\"a\":2}"));
    let removed = db.set_agent_constraint("buyer", "monthly", None, 10_000).expect("db").expect("removed");
    assert_eq!((removed.version, removed.body), (3, None));
    assert!(db.agent_constraints("buyer").expect("current").is_empty());
    assert_eq!(
        db.set_agent_constraint("buyer", "monthly", None, 11_000).expect("db"),
        Err(ConstraintStoreError::NotFound { agent_id: "buyer".into(), name: "monthly".into() })
    );
    let again =
        db.set_agent_constraint("buyer", "monthly", Some(("{}", "sha256:c")), 12_000).expect("db").expect("set");
    assert_eq!((again.version, again.since_ms), (4, 12_000), "a new start after a removal");
    assert_eq!(db.agent_constraint_history("buyer").expect("history").len(), 4);

    assert_eq!(
        db.set_agent_constraint("nobody", "x", Some(("{}", "sha256:c")), 1).expect("db"),
        Err(ConstraintStoreError::UnknownAgent("nobody".into()))
    );
    for name in ["", "a b", &"n".repeat(65)] {
        assert_eq!(
            db.set_agent_constraint("buyer", name, Some(("{}", "h")), 1).expect("db"),
            Err(ConstraintStoreError::InvalidName)
        );
    }
    for index in 1..AGENT_CONSTRAINTS_MAX {
        db.set_agent_constraint("buyer", &format!("c{index}"), Some(("{}", "h")), 1).expect("db").expect("set");
    }
    assert_eq!(
        db.set_agent_constraint("buyer", "one-too-many", Some(("{}", "h")), 1).expect("db"),
        Err(ConstraintStoreError::TooMany("buyer".into()))
    );
}

#[test]
fn constraints_and_spends_cannot_be_rewritten() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("c.db");
    let db = Constellation::open(&path).expect("open");
    buyer(&db);
    db.set_agent_constraint("buyer", "daily", Some(("{}", "h")), 1).expect("db").expect("set");
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    raw.execute_batch(
        "INSERT INTO spends (payment_id, agent_id, amount_minor, currency, at_ms) VALUES ('pay-1', 'buyer', 5, 'USD', 10)",
    )
    .expect("a spend");
    raw.execute_batch("UPDATE spends SET released_at_ms = 20 WHERE payment_id = 'pay-1'").expect("released once");
    for sql in [
        "UPDATE agent_constraints SET body = '{\"x\":1}'",
        "DELETE FROM agent_constraints",
        "UPDATE spends SET released_at_ms = 30",
        "UPDATE spends SET amount_minor = 1",
        "DELETE FROM spends",
    ] {
        assert!(raw.execute_batch(sql).is_err(), "{sql} was allowed");
    }
}

#[test]
fn a_constellation_from_before_constraints_counts_the_holds_on_its_ledger() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("c.db");
    let db = Constellation::open(&path).expect("open");
    buyer(&db);
    let wallet = ("wallet:buyer:USD", AccountKind::Wallet);
    transfer(&db, "fund:buyer:USD", ("external:USD", AccountKind::External), wallet, 1_000, 1_000);
    transfer(&db, "pay-s-1:prepare", wallet, ("escrow:pay-s-1", AccountKind::Escrow), 30, 2_000);
    transfer(
        &db,
        "pay-s-1:commit",
        ("escrow:pay-s-1", AccountKind::Escrow),
        ("provider:p:USD", AccountKind::Provider),
        30,
        2_100,
    );
    transfer(&db, "pay-s-2:prepare", wallet, ("escrow:pay-s-2", AccountKind::Escrow), 40, 3_000);
    transfer(&db, "pay-s-2:abort", ("escrow:pay-s-2", AccountKind::Escrow), wallet, 40, 3_100);
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    raw.execute_batch("DROP TABLE settlement_graph_owners; DROP TABLE artifact_parents; DROP TABLE artifacts; DROP TABLE execution_state; DROP TABLE execution_log; DROP TABLE executions; DROP TABLE settlement_graph_edges; DROP TABLE settlement_graphs; DROP TABLE spends; DROP TABLE agent_constraints; PRAGMA user_version = 10;")
        .expect("back to 10");
    drop(raw);
    let db = Constellation::open(&path).expect("migrates");
    let spends: Vec<(String, String, u64, u64, Option<u64>)> = db
        .spends()
        .expect("spends")
        .into_iter()
        .map(|s| (s.payment_id, s.agent_id, s.amount_minor, s.at_ms, s.released_at_ms))
        .collect();
    assert_eq!(
        spends,
        [
            ("pay-s-1".to_owned(), "buyer".to_owned(), 30, 2_000, None),
            ("pay-s-2".to_owned(), "buyer".to_owned(), 40, 3_000, Some(3_100)),
        ]
    );
    let live: Vec<String> = db.live_spends("buyer", 0).expect("live").into_iter().map(|s| s.payment_id).collect();
    assert_eq!(live, ["pay-s-1"]);
    assert!(db.live_spends("buyer", 2_001).expect("live").is_empty(), "only spends since the start count");
    let totals = db.spend_totals("buyer", 0, 10_000, "USD").expect("totals");
    assert_eq!((totals.count, totals.sum_minor), (1, 30), "a released hold is not a spend");
    assert_eq!(db.spend_totals("buyer", 0, 10_000, "EUR").expect("totals").sum_minor, 0);
    assert_eq!(db.spend_totals("buyer", 2_001, 10_000, "USD").expect("totals").count, 0);
    assert_eq!(db.first_spend_ms("buyer", 0).expect("first"), Some(2_000));
    assert_eq!(db.first_spend_ms("buyer", 2_001).expect("first"), None);
}

/// An agent's first constraint counts the holds it already has on the ledger since its start.
#[test]
fn the_first_constraint_copies_the_agents_earlier_holds() {
    let dir = tempfile::tempdir().expect("temp");
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    buyer(&db);
    let wallet = ("wallet:buyer:USD", AccountKind::Wallet);
    transfer(&db, "fund:buyer:USD", ("external:USD", AccountKind::External), wallet, 1_000, 1_000);
    transfer(&db, "pay-s-1:prepare", wallet, ("escrow:pay-s-1", AccountKind::Escrow), 30, 2_000);
    transfer(&db, "pay-s-2:prepare", wallet, ("escrow:pay-s-2", AccountKind::Escrow), 40, 3_000);
    transfer(&db, "pay-s-2:abort", ("escrow:pay-s-2", AccountKind::Escrow), wallet, 40, 3_100);
    transfer(&db, "pay-s-3:prepare", wallet, ("escrow:pay-s-3", AccountKind::Escrow), 50, 4_000);
    assert!(db.spends().expect("spends").is_empty(), "no constraint, no spends");
    db.set_agent_constraint("buyer", "daily", Some(("{}", "h")), 2_500).expect("db").expect("set");
    let spends: Vec<(String, Option<u64>)> =
        db.spends().expect("spends").into_iter().map(|s| (s.payment_id, s.released_at_ms)).collect();
    assert_eq!(spends, [("pay-s-2".to_owned(), Some(3_100)), ("pay-s-3".to_owned(), None)], "holds since 2,500");
    let live: Vec<String> = db.live_spends("buyer", 2_500).expect("live").into_iter().map(|s| s.payment_id).collect();
    assert_eq!(live, ["pay-s-3"]);
}
