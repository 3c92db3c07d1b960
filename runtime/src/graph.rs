//! Settlement graphs: several payments between agents that happen together or not at all.
//!
//! Nodes are agents; edges are commitments (payer → payee, an amount, a rail). [`commit_graph`]
//! is two-phase over the [`Rail`] trait:
//!
//! 1. the graph and its edges are recorded in state `preparing` (one transaction);
//! 2. every edge is prepared (its money held), in order; if one fails, every hold is released
//!    and the graph is `failed`, naming the edge and why;
//! 3. the state becomes `committing`: **the commit point**, one durable write;
//! 4. every edge is committed, then the state becomes `committed`.
//!
//! Every rail step is idempotent under the edge's payment id (`graph-<id>-<index>`), so
//! [`recover_graphs`], run when a constellation is opened after a crash, finishes each graph
//! left unfinished by the state it reached: before the commit point every hold is released
//! (`failed`); after it every edge is committed (`committed`). Whatever the moment of a SIGKILL,
//! either every edge is paid or none is.
//!
//! A multi-hop payment (A → B → C) is a graph of its hops; each hop is held from its own payer's
//! wallet (the ledger pays a payee's provider account, not its wallet).

use std::collections::BTreeSet;

use pactum_memory::{Constellation, GraphEdgeRow, GraphRow};

use crate::error::RuntimeError;
use crate::money::{Currency, Money};
use crate::rail::{LedgerRail, PaymentRequest, Rail, RailError};
use crate::session::shell::OwnerLiveness;

/// Most edges in one graph: each is a hold and a payment in the commit.
pub const GRAPH_EDGES_MAX: usize = 1_000;
/// Longest graph id, in bytes.
pub const GRAPH_ID_BYTES_MAX: usize = 64;

/// Where a graph stands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GraphState {
    /// Recorded; its edges are being held.
    Preparing,
    /// Past the commit point: every edge is held and is being paid.
    Committing,
    Committed,
    Failed,
}

impl GraphState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Committing => "committing",
            Self::Committed => "committed",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, RuntimeError> {
        Ok(match text {
            "preparing" => Self::Preparing,
            "committing" => Self::Committing,
            "committed" => Self::Committed,
            "failed" => Self::Failed,
            other => {
                return Err(pactum_memory::StoreError::Corrupt { detail: format!("graph state {other:?}") }.into());
            }
        })
    }
}

/// A commitment: `payer` pays `amount` to `payee` on `rail`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Edge {
    pub payer: String,
    pub payee: String,
    pub amount: Money,
    pub rail: String,
}

/// Why a graph cannot be built or committed as asked.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{0}")]
    Invalid(String),
    /// A graph of this id exists with other edges.
    #[error("settlement graph {0} exists already with other edges")]
    Conflict(String),
    /// Another running process is committing the graph.
    #[error("settlement graph {graph_id} is being committed by another running process ({owner})")]
    Busy { graph_id: String, owner: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl GraphError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "GRAPH_INVALID",
            Self::Conflict(_) => "GRAPH_CONFLICT",
            Self::Busy { .. } => "GRAPH_BUSY",
            Self::Runtime(error) => error.code(),
        }
    }
}

impl From<pactum_memory::StoreError> for GraphError {
    fn from(error: pactum_memory::StoreError) -> Self {
        Self::Runtime(error.into())
    }
}

/// A graph being built.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SettlementGraph {
    graph_id: String,
    nodes: BTreeSet<String>,
    edges: Vec<Edge>,
}

impl SettlementGraph {
    /// An empty graph; `graph_id` is 1 to 64 bytes of lowercase letters, digits and '-'.
    pub fn new(graph_id: &str) -> Result<Self, GraphError> {
        let valid = !graph_id.is_empty()
            && graph_id.len() <= GRAPH_ID_BYTES_MAX
            && graph_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(GraphError::Invalid(format!(
                "{graph_id:?} is not a graph id (1-{GRAPH_ID_BYTES_MAX} lowercase letters, digits or '-')"
            )));
        }
        Ok(Self { graph_id: graph_id.to_owned(), nodes: BTreeSet::new(), edges: Vec::new() })
    }

    pub fn graph_id(&self) -> &str {
        &self.graph_id
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    pub fn add_node(&mut self, agent_id: &str) -> Result<(), GraphError> {
        crate::identities::check_agent_id(agent_id).map_err(|e| GraphError::Invalid(e.to_string()))?;
        self.nodes.insert(agent_id.to_owned());
        Ok(())
    }

    /// Adds a commitment between two nodes already added.
    pub fn add_edge(&mut self, payer: &str, payee: &str, amount: Money, rail: &str) -> Result<usize, GraphError> {
        for node in [payer, payee] {
            if !self.nodes.contains(node) {
                return Err(GraphError::Invalid(format!("{node} is not a node of graph {}", self.graph_id)));
            }
        }
        if payer == payee {
            return Err(GraphError::Invalid(format!("an edge from {payer} to itself")));
        }
        if rail != LedgerRail::ID {
            return Err(GraphError::Invalid(format!("rail {rail:?}: settlement graphs settle on the ledger")));
        }
        if amount.amount_minor() == 0 {
            return Err(GraphError::Invalid("an edge pays more than zero".into()));
        }
        if self.edges.len() >= GRAPH_EDGES_MAX {
            return Err(GraphError::Invalid(format!("a graph has at most {GRAPH_EDGES_MAX} edges")));
        }
        self.edges.push(Edge { payer: payer.to_owned(), payee: payee.to_owned(), amount, rail: rail.to_owned() });
        Ok(self.edges.len() - 1)
    }

    fn rows(&self) -> Vec<GraphEdgeRow> {
        self.edges
            .iter()
            .enumerate()
            .map(|(index, edge)| GraphEdgeRow {
                edge_index: u32::try_from(index).unwrap_or(u32::MAX),
                payer: edge.payer.clone(),
                payee: edge.payee.clone(),
                amount_minor: edge.amount.amount_minor(),
                currency: edge.amount.currency().code().to_owned(),
                rail: edge.rail.clone(),
            })
            .collect()
    }
}

/// The payment id of a graph's edge: every rail idempotency key derives from it.
pub fn edge_payment_id(graph_id: &str, edge_index: u32) -> String {
    format!("graph-{graph_id}-{edge_index}")
}

/// A graph as recorded, with where it stands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GraphStatus {
    pub graph_id: String,
    pub state: GraphState,
    pub failure: Option<String>,
    pub edges: Vec<GraphEdgeRow>,
}

fn status_of(row: GraphRow) -> Result<GraphStatus, RuntimeError> {
    Ok(GraphStatus {
        state: GraphState::parse(&row.state)?,
        graph_id: row.graph_id,
        failure: row.failure,
        edges: row.edges,
    })
}

fn request_of(graph_id: &str, edge: &GraphEdgeRow) -> Result<PaymentRequest, RuntimeError> {
    let currency = Currency::parse(&edge.currency).map_err(|e| crate::intent::IntentError(e.to_string()))?;
    let amount =
        Money::from_minor(edge.amount_minor, currency).map_err(|e| crate::intent::IntentError(e.to_string()))?;
    Ok(PaymentRequest {
        payment_id: edge_payment_id(graph_id, edge.edge_index),
        payer: edge.payer.clone(),
        payee: edge.payee.clone(),
        amount,
    })
}

/// Where a graph stands, if it exists.
pub fn get_graph_state(db: &Constellation, graph_id: &str) -> Result<Option<GraphStatus>, RuntimeError> {
    db.graph(graph_id)?.map(status_of).transpose()
}

/// A point at which [`commit_graph_stopping`] stops, as a crash would.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopAt {
    /// After preparing this many edges.
    Prepared(usize),
    /// Right after the commit point.
    CommitPoint,
    /// After committing this many edges.
    Committed(usize),
}

/// The process committing or recovering graphs: its owner id (as for sessions,
/// `pid:<pid>:<start>` from the edge) and how to tell whether another owner is still running.
#[derive(Clone, Copy)]
pub struct GraphOwner<'a> {
    pub id: &'a str,
    pub liveness: &'a dyn OwnerLiveness,
}

impl std::fmt::Debug for GraphOwner<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GraphOwner").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Claims an unfinished graph for `owner` (see [`Constellation::claim_graph`]).
fn claim(db: &Constellation, graph_id: &str, owner: GraphOwner<'_>, now_ms: u64) -> Result<bool, GraphError> {
    match db.claim_graph(graph_id, owner.id, now_ms, &|holder| !owner.liveness.is_alive(holder))? {
        Ok(()) => Ok(true),
        Err(None) => Ok(false),
        Err(Some(holder)) => Err(GraphError::Busy { graph_id: graph_id.to_owned(), owner: holder }),
    }
}

/// Prepares every edge, then commits them all; any failure before the commit point releases
/// every hold. The graph is recorded as `owner`'s, so recovery elsewhere leaves it alone while
/// `owner` runs. Committing a graph that exists already with the same edges finishes it, once
/// its holder (if another) has stopped; while that holder runs it is `GRAPH_BUSY`.
pub fn commit_graph(
    db: &Constellation,
    rail: &LedgerRail,
    graph: &SettlementGraph,
    owner: GraphOwner<'_>,
    now_ms: u64,
) -> Result<GraphStatus, GraphError> {
    commit_graph_stopping(db, rail, graph, owner, now_ms, None)
}

/// [`commit_graph`], stopping at `stop` as a crash would (for tests of recovery).
pub fn commit_graph_stopping(
    db: &Constellation,
    rail: &LedgerRail,
    graph: &SettlementGraph,
    owner: GraphOwner<'_>,
    now_ms: u64,
    stop: Option<StopAt>,
) -> Result<GraphStatus, GraphError> {
    if graph.edges.is_empty() {
        return Err(GraphError::Invalid(format!("graph {} has no edges", graph.graph_id)));
    }
    let rows = graph.rows();
    let stored = db.create_graph(&graph.graph_id, &rows, owner.id, now_ms)?;
    if stored.edges != rows {
        return Err(GraphError::Conflict(graph.graph_id.clone()));
    }
    // An existing graph: finish it only if it is ours, unheld, or its holder is gone.
    let claimed = claim(db, &graph.graph_id, owner, now_ms)?;
    let stopped = || GraphError::Runtime(RuntimeError::InjectedStop("graph"));
    // Ended by another process since it was read: as stored now.
    let mut status = if claimed { status_of(stored)? } else { load(db, &graph.graph_id)? };
    if status.state == GraphState::Failed {
        // Nothing may stay held for a failed graph (holds a stopped process took late).
        release_all(rail, &status, now_ms)?;
        return Ok(status);
    }
    if status.state == GraphState::Preparing {
        for (index, edge) in status.edges.iter().enumerate() {
            if stop == Some(StopAt::Prepared(index)) {
                return Err(stopped());
            }
            let request = request_of(&graph.graph_id, edge)?;
            match rail.prepare(&request, now_ms) {
                Ok(_) => {}
                Err(RailError::Store(error)) => return Err(error.into()),
                Err(error) => {
                    let reason = format!("edge {} ({} → {}): {error}", edge.edge_index, edge.payer, edge.payee);
                    release_all(rail, &status, now_ms)?;
                    db.set_graph_state(&graph.graph_id, GraphState::Failed.as_str(), Some(&reason), now_ms)?;
                    return Ok(load(db, &graph.graph_id)?);
                }
            }
        }
        if stop == Some(StopAt::Prepared(status.edges.len())) {
            return Err(stopped());
        }
        if let Err(error) = db.set_graph_state(&graph.graph_id, GraphState::Committing.as_str(), None, now_ms) {
            // Another process's recovery may have failed the graph meanwhile (the triggers refuse
            // to move a failed graph): then the holds taken here are released too.
            let current = load(db, &graph.graph_id)?;
            if current.state != GraphState::Failed {
                return Err(error.into());
            }
            release_all(rail, &current, now_ms)?;
            return Ok(current);
        }
        status.state = GraphState::Committing;
        if stop == Some(StopAt::CommitPoint) {
            return Err(stopped());
        }
    }
    if status.state == GraphState::Committing {
        commit_all(db, rail, &status, now_ms, stop)?;
        status.state = GraphState::Committed;
    }
    Ok(status)
}

fn missing(graph_id: &str) -> RuntimeError {
    pactum_memory::StoreError::NotFoundId { what: "settlement graph", id: graph_id.to_owned() }.into()
}

/// The graph as stored now.
fn load(db: &Constellation, graph_id: &str) -> Result<GraphStatus, RuntimeError> {
    status_of(db.graph(graph_id)?.ok_or_else(|| missing(graph_id))?)
}

/// Past the commit point: commits every edge (idempotent), then records `committed`. A held
/// edge cannot be refused by the ledger; if one is, the graph stays `committing` and recovery
/// tries again.
fn commit_all(
    db: &Constellation,
    rail: &LedgerRail,
    status: &GraphStatus,
    now_ms: u64,
    stop: Option<StopAt>,
) -> Result<(), GraphError> {
    for (index, edge) in status.edges.iter().enumerate() {
        if stop == Some(StopAt::Committed(index)) {
            return Err(GraphError::Runtime(RuntimeError::InjectedStop("graph")));
        }
        let request = request_of(&status.graph_id, edge)?;
        rail.commit(&request, now_ms).map_err(|error| match error {
            RailError::Store(error) => GraphError::from(error),
            other => GraphError::Runtime(RuntimeError::Store(pactum_memory::StoreError::Corrupt {
                detail: format!("graph {} edge {}: {other}", status.graph_id, edge.edge_index),
            })),
        })?;
    }
    db.set_graph_state(&status.graph_id, GraphState::Committed.as_str(), None, now_ms)?;
    Ok(())
}

/// Releases every edge's hold (an edge never held is left alone).
fn release_all(rail: &LedgerRail, status: &GraphStatus, now_ms: u64) -> Result<(), GraphError> {
    for edge in &status.edges {
        let request = request_of(&status.graph_id, edge)?;
        // Refused when never prepared (or already released): nothing is held then.
        if let Err(RailError::Store(error)) = rail.abort(&request, now_ms) {
            return Err(error.into());
        }
    }
    Ok(())
}

/// Finishes every graph a stopped process left unfinished: before the commit point every hold
/// is released and the graph fails; after it every edge is committed. A graph whose holder is
/// still running is left to it. Returns the graphs finished, with their states.
pub fn recover_graphs(
    db: &Constellation,
    rail: &LedgerRail,
    owner: GraphOwner<'_>,
    now_ms: u64,
) -> Result<Vec<GraphStatus>, GraphError> {
    let mut finished = Vec::new();
    for graph_id in db.unfinished_graphs()? {
        match claim(db, &graph_id, owner, now_ms) {
            Ok(true) => {}
            // Ended meanwhile, or another running process holds it.
            Ok(false) | Err(GraphError::Busy { .. }) => continue,
            Err(error) => return Err(error),
        }
        let status = load(db, &graph_id)?;
        match status.state {
            GraphState::Preparing => {
                release_all(rail, &status, now_ms)?;
                let reason = "the process stopped before the commit point; every hold was released";
                db.set_graph_state(&graph_id, GraphState::Failed.as_str(), Some(reason), now_ms)?;
            }
            GraphState::Committing => commit_all(db, rail, &status, now_ms, None)?,
            GraphState::Committed | GraphState::Failed => continue,
        }
        tracing::info!(graph = %graph_id, "settlement graph finished on recovery");
        finished.push(load(db, &graph_id)?);
    }
    Ok(finished)
}
