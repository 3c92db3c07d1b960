//! The child of the settlement-graph crash test (tests/tests/graph_crash.rs): finishes the graphs
//! a killed predecessor left, then commits graphs one after another on one constellation,
//! printing a line per finished one, until it is killed (or has committed `count`).
//!
//! Usage: graph-workload <db> <first-graph> <count>
//! Output lines: `recovered <graph> <state>`, `ready`, `done <graph> <state>`.
//! Graph `n` has 20 edges, payer-<i> → hub of i + 1 minor units; every fifth graph also has an
//! edge from `broke`, who has no money, so it fails after holding the others.

use std::io::Write as _;
use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::graph::{GraphOwner, SettlementGraph, commit_graph, recover_graphs};
use pactum_runtime::session::shell::OwnerLiveness;
use pactum_runtime::{Currency, LedgerRail, Money, fund_wallet};

const EDGES: u64 = 20;
const NOW: u64 = 1_767_225_600_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db_path, first, count] = args.as_slice() else {
        eprintln!("usage: graph-workload <db> <first-graph> <count>");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("first graph");
    let count: u64 = count.parse().expect("count");
    let db = Arc::new(Constellation::open(db_path).expect("open"));
    let usd = Currency::parse("USD").expect("usd");
    for index in 0..EDGES {
        let payer = format!("payer-{index}");
        fund_wallet(&db, &payer, Money::from_minor(1_000_000, usd).expect("money"), &format!("fund:{payer}"), NOW)
            .expect("fund");
    }
    let rail = LedgerRail::new(db.clone());
    // One child runs at a time: every owner but this process is gone.
    let me = format!("pid:{}", std::process::id());
    let liveness = OnlyMe(me.clone());
    let owner = GraphOwner { id: &me, liveness: &liveness };
    let mut out = std::io::stdout().lock();
    for status in recover_graphs(&db, &rail, owner, NOW).expect("recover") {
        writeln!(out, "recovered {} {}", status.graph_id, status.state.as_str()).expect("stdout");
    }
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("flush");
    for number in first..first + count {
        let mut graph = SettlementGraph::new(&format!("g-{number}")).expect("graph");
        graph.add_node("hub").expect("node");
        for index in 0..EDGES {
            let payer = format!("payer-{index}");
            graph.add_node(&payer).expect("node");
            graph.add_edge(&payer, "hub", Money::from_minor(index + 1, usd).expect("money"), "ledger").expect("edge");
        }
        if number % 5 == 0 {
            graph.add_node("broke").expect("node");
            graph.add_edge("broke", "hub", Money::from_minor(1, usd).expect("money"), "ledger").expect("edge");
        }
        let status = commit_graph(&db, &rail, &graph, owner, NOW).expect("commit");
        writeln!(out, "done {} {}", status.graph_id, status.state.as_str()).expect("stdout");
        out.flush().expect("flush");
    }
}

#[derive(Debug)]
struct OnlyMe(String);

impl OwnerLiveness for OnlyMe {
    fn is_alive(&self, owner: &str) -> bool {
        owner == self.0
    }
}
