//! Settlement graphs: every edge paid or none, whatever the moment the process stops — before,
//! during or after the commit point — once recovery has run; a refused edge releases every hold;
//! committing again pays nothing twice.

use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::graph::{
    GraphOwner, GraphState, SettlementGraph, StopAt, commit_graph, commit_graph_stopping, get_graph_state,
    recover_graphs,
};
use pactum_runtime::{Currency, LedgerRail, Money, fund_wallet};

const NOW: u64 = 1_700_000_000_000;

/// Which owners are running: `pid:me` (this test) and `pid:busy` (another live process).
#[derive(Debug)]
struct Running;

impl pactum_runtime::session::shell::OwnerLiveness for Running {
    fn is_alive(&self, owner: &str) -> bool {
        matches!(owner, "pid:me" | "pid:busy")
    }
}

/// This process.
const ME: GraphOwner<'static> = GraphOwner { id: "pid:me", liveness: &Running };
/// A process that stopped (crashed) while committing.
const STOPPED: GraphOwner<'static> = GraphOwner { id: "pid:stopped", liveness: &Running };
/// Another process that is still running.
const BUSY: GraphOwner<'static> = GraphOwner { id: "pid:busy", liveness: &Running };

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("usd")).expect("money")
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<Constellation>,
    rail: LedgerRail,
}

fn fixture(agents: &[(&str, u64)]) -> Fixture {
    let dir = tempfile::tempdir().expect("temp");
    let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
    for (agent, balance) in agents {
        if *balance > 0 {
            fund_wallet(&db, agent, usd(*balance), &format!("fund:{agent}"), NOW).expect("fund");
        }
    }
    let rail = LedgerRail::new(db.clone());
    Fixture { _dir: dir, db, rail }
}

fn balance(fixture: &Fixture, account: &str) -> i64 {
    fixture
        .db
        .accounts()
        .expect("accounts")
        .into_iter()
        .find(|a| a.account_id == account)
        .map_or(0, |a| a.balance_minor)
}

fn sound(fixture: &Fixture) {
    let ledger = fixture.db.check_ledger().expect("check");
    assert!(ledger.is_sound(), "{ledger:?}");
    for account in fixture.db.accounts().expect("accounts") {
        if account.account_id.starts_with("escrow:") {
            assert_eq!(account.balance_minor, 0, "{} holds money", account.account_id);
        }
    }
}

/// A chain of `n` payers paying one payee each, one minor unit more each time.
fn fan(n: usize) -> (Vec<(String, u64)>, SettlementGraph) {
    let mut graph = SettlementGraph::new("fan").expect("graph");
    let mut agents = Vec::new();
    graph.add_node("hub").expect("node");
    for index in 0..n {
        let payer = format!("payer-{index}");
        graph.add_node(&payer).expect("node");
        graph.add_edge(&payer, "hub", usd(index as u64 + 1), "ledger").expect("edge");
        agents.push((payer, 1_000));
    }
    (agents, graph)
}

fn fixture_for(agents: &[(String, u64)]) -> Fixture {
    let refs: Vec<(&str, u64)> = agents.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    fixture(&refs)
}

#[test]
fn a_graph_of_100_edges_commits_every_edge_once() {
    let (agents, graph) = fan(100);
    let fixture = fixture_for(&agents);
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW).expect("commit");
    assert_eq!(status.state, GraphState::Committed);
    assert_eq!(balance(&fixture, "provider:hub:USD"), (1..=100).sum::<i64>());
    assert_eq!(balance(&fixture, "wallet:payer-99:USD"), 900);
    // Again: nothing moves twice.
    let again = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW + 1).expect("again");
    assert_eq!(again.state, GraphState::Committed);
    assert_eq!(balance(&fixture, "provider:hub:USD"), (1..=100).sum::<i64>());
    sound(&fixture);
}

#[test]
fn an_edge_that_cannot_be_held_fails_the_graph_and_releases_every_hold() {
    let (mut agents, graph) = fan(10);
    agents[7].1 = 3; // payer-7 cannot pay 8
    let fixture = fixture_for(&agents);
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW).expect("commit");
    assert_eq!(status.state, GraphState::Failed);
    let failure = status.failure.expect("reason");
    assert!(failure.contains("edge 7") && failure.contains("insufficient funds"), "{failure}");
    assert_eq!(balance(&fixture, "provider:hub:USD"), 0);
    for (agent, funded) in &agents {
        assert_eq!(balance(&fixture, &format!("wallet:{agent}:USD")), *funded as i64, "{agent} got its hold back");
    }
    sound(&fixture);
}

#[test]
fn a_stop_anywhere_then_recovery_leaves_every_edge_paid_or_none() {
    let total: i64 = (1..=20).sum();
    let stops = [
        (StopAt::Prepared(0), false),
        (StopAt::Prepared(1), false),
        (StopAt::Prepared(13), false),
        (StopAt::Prepared(20), false),
        (StopAt::CommitPoint, true),
        (StopAt::Committed(0), true),
        (StopAt::Committed(9), true),
        (StopAt::Committed(19), true),
    ];
    for (stop, paid) in stops {
        let (agents, graph) = fan(20);
        let fixture = fixture_for(&agents);
        let error =
            commit_graph_stopping(&fixture.db, &fixture.rail, &graph, STOPPED, NOW, Some(stop)).expect_err("stopped");
        assert_eq!(error.code(), "IO_ERROR", "{stop:?}: {error}");
        let recovered = recover_graphs(&fixture.db, &fixture.rail, ME, NOW + 5).expect("recover");
        assert_eq!(recovered.len(), 1, "{stop:?}");
        let state = get_graph_state(&fixture.db, "fan").expect("state").expect("exists").state;
        let expected = if paid { GraphState::Committed } else { GraphState::Failed };
        assert_eq!(state, expected, "{stop:?}");
        assert_eq!(balance(&fixture, "provider:hub:USD"), if paid { total } else { 0 }, "{stop:?}");
        sound(&fixture);
        assert!(recover_graphs(&fixture.db, &fixture.rail, ME, NOW + 6).expect("again").is_empty());
    }
}

#[test]
fn a_multi_hop_payment_moves_along_its_hops() {
    let fixture = fixture(&[("alice", 500), ("broker", 500)]);
    let mut graph = SettlementGraph::new("hops").expect("graph");
    for node in ["alice", "broker", "carol"] {
        graph.add_node(node).expect("node");
    }
    graph.add_edge("alice", "broker", usd(120), "ledger").expect("edge");
    graph.add_edge("broker", "carol", usd(100), "ledger").expect("edge");
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW).expect("commit");
    assert_eq!(status.state, GraphState::Committed);
    assert_eq!(balance(&fixture, "provider:broker:USD"), 120);
    assert_eq!(balance(&fixture, "provider:carol:USD"), 100);
    sound(&fixture);
}

#[test]
fn graphs_refuse_what_cannot_be_settled() {
    let fixture = fixture(&[("alice", 500)]);
    assert_eq!(SettlementGraph::new("Bad Id").expect_err("id").code(), "GRAPH_INVALID");
    let mut graph = SettlementGraph::new("g").expect("graph");
    graph.add_node("alice").expect("node");
    assert_eq!(graph.add_edge("alice", "bob", usd(1), "ledger").expect_err("bob").code(), "GRAPH_INVALID");
    graph.add_node("bob").expect("node");
    assert_eq!(graph.add_edge("alice", "alice", usd(1), "ledger").expect_err("self").code(), "GRAPH_INVALID");
    assert_eq!(graph.add_edge("alice", "bob", usd(1), "x402").expect_err("rail").code(), "GRAPH_INVALID");
    assert_eq!(commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW).expect_err("empty").code(), "GRAPH_INVALID");
    graph.add_edge("alice", "bob", usd(10), "ledger").expect("edge");
    commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW).expect("commit");
    let mut other = SettlementGraph::new("g").expect("graph");
    other.add_node("alice").expect("node");
    other.add_node("bob").expect("node");
    other.add_edge("alice", "bob", usd(11), "ledger").expect("edge");
    assert_eq!(
        commit_graph(&fixture.db, &fixture.rail, &other, ME, NOW).expect_err("conflict").code(),
        "GRAPH_CONFLICT"
    );
    assert_eq!(balance(&fixture, "provider:bob:USD"), 10);
}

/// A graph failed by recovery while a process it thought gone still held edges: committing it
/// again pays nothing and releases any hold left.
#[test]
fn a_failed_graph_pays_nothing_and_keeps_no_hold() {
    let (agents, graph) = fan(5);
    let fixture = fixture_for(&agents);
    commit_graph_stopping(&fixture.db, &fixture.rail, &graph, STOPPED, NOW, Some(StopAt::Prepared(3)))
        .expect_err("stopped");
    fixture.db.set_graph_state("fan", "failed", Some("failed elsewhere"), NOW + 1).expect("failed");
    assert!(balance(&fixture, "escrow:graph-fan-0") > 0, "a hold left behind");
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW + 2).expect("commit");
    assert_eq!(status.state, GraphState::Failed);
    assert_eq!(balance(&fixture, "provider:hub:USD"), 0);
    sound(&fixture);
}

#[test]
fn a_graph_held_by_a_running_process_is_left_to_it_and_taken_over_once_it_stops() {
    let (agents, graph) = fan(5);
    let fixture = fixture_for(&agents);
    // Another process stops (as if it were slow, or frozen) after preparing two edges.
    commit_graph_stopping(&fixture.db, &fixture.rail, &graph, BUSY, NOW, Some(StopAt::Prepared(2)))
        .expect_err("stopped");
    assert_eq!(fixture.db.graph_owner("fan").expect("owner").as_deref(), Some("pid:busy"));
    // While it runs, neither recovery nor a second commit touches the graph.
    assert!(recover_graphs(&fixture.db, &fixture.rail, ME, NOW + 1).expect("recover").is_empty());
    let error = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW + 1).expect_err("busy");
    assert_eq!(error.code(), "GRAPH_BUSY", "{error}");
    assert_eq!(get_graph_state(&fixture.db, "fan").expect("state").expect("exists").state, GraphState::Preparing);
    // Its holder finishes it; the ended graph has no owner.
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, BUSY, NOW + 2).expect("finished by its holder");
    assert_eq!(status.state, GraphState::Committed);
    assert_eq!(fixture.db.graph_owner("fan").expect("owner"), None);
    sound(&fixture);

    // A graph whose holder stopped is taken over: by recovery, or by committing it again.
    let (agents, graph) = fan(5);
    let fixture = fixture_for(&agents);
    commit_graph_stopping(&fixture.db, &fixture.rail, &graph, STOPPED, NOW, Some(StopAt::CommitPoint))
        .expect_err("stopped");
    let status = commit_graph(&fixture.db, &fixture.rail, &graph, ME, NOW + 1).expect("taken over");
    assert_eq!(status.state, GraphState::Committed);
    sound(&fixture);
}
