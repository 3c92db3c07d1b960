//! `commit_graph` with 100 edges: 100 payers paying one payee together, every hold and payment
//! on the constellation's ledger, the graph's record and its commit point durable.
//!
//! `cargo bench -p pactum-runtime --bench graph`
//!
//! A plain `main`: one warm-up graph, then [`GRAPHS`] graphs on one constellation file
//! (synchronous NORMAL); prints the median, p90 and max time per graph and per edge. The ledger
//! is checked at the end, and every escrow must be empty.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pactum_memory::Constellation;
use pactum_runtime::graph::{GraphOwner, GraphState, SettlementGraph, commit_graph};
use pactum_runtime::session::shell::OwnerLiveness;

#[derive(Debug)]
struct Alone;

impl OwnerLiveness for Alone {
    fn is_alive(&self, _owner: &str) -> bool {
        false
    }
}

const OWNER: GraphOwner<'static> = GraphOwner { id: "bench", liveness: &Alone };
use pactum_runtime::{Currency, LedgerRail, Money, fund_wallet};

const EDGES: usize = 100;
const GRAPHS: usize = 30;
const NOW: u64 = 1_767_225_600_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Constellation::open(dir.path().join("bench.db")).unwrap());
    let usd = Currency::parse("USD").unwrap();
    for index in 0..EDGES {
        fund_wallet(
            &db,
            &format!("payer-{index}"),
            Money::from_minor(1_000_000, usd).unwrap(),
            &format!("f{index}"),
            NOW,
        )
        .unwrap();
    }
    let rail = LedgerRail::new(db.clone());
    let mut times = Vec::with_capacity(GRAPHS);
    for round in 0..=GRAPHS {
        let mut graph = SettlementGraph::new(&format!("bench-{round}")).unwrap();
        graph.add_node("hub").unwrap();
        for index in 0..EDGES {
            let payer = format!("payer-{index}");
            graph.add_node(&payer).unwrap();
            graph.add_edge(&payer, "hub", Money::from_minor(index as u64 + 1, usd).unwrap(), "ledger").unwrap();
        }
        let started = Instant::now();
        let status = commit_graph(&db, &rail, &graph, OWNER, NOW).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(status.state, GraphState::Committed);
        if round > 0 {
            times.push(elapsed);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (median, p90, max) = (times[times.len() / 2], times[times.len() * 9 / 10], times[times.len() - 1]);
    println!(
        "commit_graph, {EDGES} edges ({GRAPHS} graphs): median {:.1} ms ({:.0} µs per edge), p90 {:.1} ms, max {:.1} ms",
        ms(median),
        ms(median) * 1e3 / EDGES as f64,
        ms(p90),
        ms(max)
    );
    let ledger = db.check_ledger().unwrap();
    assert!(ledger.is_sound(), "{ledger:?}");
    assert!(db.accounts().unwrap().iter().all(|a| !a.account_id.starts_with("escrow:") || a.balance_minor == 0));
}
