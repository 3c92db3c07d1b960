//! Settlement graphs as stored: edges never change and a graph's state only moves forward.

use pactum_memory::{Constellation, GraphEdgeRow};

fn edge(index: u32) -> GraphEdgeRow {
    GraphEdgeRow {
        edge_index: index,
        payer: format!("payer-{index}"),
        payee: "hub".into(),
        amount_minor: 5,
        currency: "USD".into(),
        rail: "ledger".into(),
    }
}

#[test]
fn a_graph_state_only_moves_forward_and_its_edges_never_change() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("c.db");
    let db = Constellation::open(&path).expect("open");
    let created = db.create_graph("g", &[edge(0), edge(1)], "pid:1", 1_000).expect("create");
    assert_eq!((created.state.as_str(), created.edges.len()), ("preparing", 2));
    let again = db.create_graph("g", &[edge(5)], "pid:2", 2_000).expect("exists");
    assert_eq!(again.edges, [edge(0), edge(1)], "an existing graph is returned as stored");
    assert_eq!(db.unfinished_graphs().expect("unfinished"), ["g"]);
    assert!(db.set_graph_state("g", "committed", None, 2_000).is_err(), "committed only after committing");
    assert!(db.set_graph_state("g", "failed", None, 2_000).is_err(), "a failure has a reason");
    db.set_graph_state("g", "committing", None, 2_000).expect("commit point");
    assert!(db.set_graph_state("g", "failed", Some("late"), 3_000).is_err(), "no failure past the commit point");
    db.set_graph_state("g", "committed", None, 3_000).expect("committed");
    assert!(db.unfinished_graphs().expect("unfinished").is_empty());
    assert_eq!(db.set_graph_state("nope", "committing", None, 1).expect_err("missing").code(), "NOT_FOUND");
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    for sql in [
        "UPDATE settlement_graph_edges SET amount_minor = 1",
        "DELETE FROM settlement_graph_edges",
        "DELETE FROM settlement_graphs",
        "UPDATE settlement_graphs SET state = 'preparing'",
    ] {
        assert!(raw.execute_batch(sql).is_err(), "{sql} was allowed");
    }
}
