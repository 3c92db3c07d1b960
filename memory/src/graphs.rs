//! Settlement graphs as stored: a graph's edges (written once, with the graph) and its state,
//! which only moves forward (`preparing` → `committing` → `committed`, or `preparing` →
//! `failed`; triggers enforce it). The runtime drives the payments; this module keeps the record
//! that recovery reads.

use rusqlite::{OptionalExtension, params};

use crate::agents::sql_error;
use crate::error::StoreError;
use crate::store::Constellation;

/// One edge as stored: a payment from `payer` to `payee`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GraphEdgeRow {
    pub edge_index: u32,
    pub payer: String,
    pub payee: String,
    pub amount_minor: u64,
    pub currency: String,
    pub rail: String,
}

/// A graph as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GraphRow {
    pub graph_id: String,
    /// `preparing`, `committing`, `committed` or `failed`.
    pub state: String,
    pub failure: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub edges: Vec<GraphEdgeRow>,
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

fn read_graph(tx: &rusqlite::Connection, graph_id: &str) -> Result<Option<GraphRow>, StoreError> {
    let head = tx
        .prepare_cached(
            "SELECT graph_id, state, failure, created_at_ms, updated_at_ms FROM settlement_graphs WHERE graph_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![graph_id], |r| {
                Ok(GraphRow {
                    graph_id: r.get(0)?,
                    state: r.get(1)?,
                    failure: r.get(2)?,
                    created_at_ms: u64_of(r.get(3)?),
                    updated_at_ms: u64_of(r.get(4)?),
                    edges: Vec::new(),
                })
            })
            .optional()
        })
        .map_err(sql_error)?;
    let Some(mut graph) = head else { return Ok(None) };
    let mut statement = tx
        .prepare_cached(
            "SELECT edge_index, payer, payee, amount_minor, currency, rail FROM settlement_graph_edges
             WHERE graph_id = ?1 ORDER BY edge_index",
        )
        .map_err(sql_error)?;
    let edges = statement
        .query_map(params![graph_id], |r| {
            Ok(GraphEdgeRow {
                edge_index: r.get(0)?,
                payer: r.get(1)?,
                payee: r.get(2)?,
                amount_minor: u64_of(r.get(3)?),
                currency: r.get(4)?,
                rail: r.get(5)?,
            })
        })
        .map_err(sql_error)?;
    graph.edges = edges.collect::<Result<_, _>>().map_err(sql_error)?;
    Ok(Some(graph))
}

impl Constellation {
    /// Records a new graph in state `preparing` with its edges, owned by `owner`, in one
    /// transaction. If the graph exists already it is returned as stored (the caller compares the
    /// edges and claims it with [`Constellation::claim_graph`]).
    pub fn create_graph(
        &self,
        graph_id: &str,
        edges: &[GraphEdgeRow],
        owner: &str,
        at_ms: u64,
    ) -> Result<GraphRow, StoreError> {
        self.write(|tx| {
            if let Some(existing) = read_graph(tx, graph_id)? {
                return Ok(existing);
            }
            tx.prepare_cached(
                "INSERT INTO settlement_graphs (graph_id, state, failure, created_at_ms, updated_at_ms)
                 VALUES (?1, 'preparing', NULL, ?2, ?2)",
            )
            .and_then(|mut s| s.execute(params![graph_id, i64_of(at_ms)]))
            .map_err(sql_error)?;
            tx.prepare_cached("INSERT INTO settlement_graph_owners (graph_id, owner, claimed_at_ms) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![graph_id, owner, i64_of(at_ms)]))
                .map_err(sql_error)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO settlement_graph_edges (graph_id, edge_index, payer, payee, amount_minor, currency, rail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_error)?;
            for edge in edges {
                insert
                    .execute(params![
                        graph_id,
                        edge.edge_index,
                        edge.payer,
                        edge.payee,
                        i64_of(edge.amount_minor),
                        edge.currency,
                        edge.rail
                    ])
                    .map_err(sql_error)?;
            }
            read_graph(tx, graph_id)?.ok_or_else(|| StoreError::Corrupt { detail: format!("graph {graph_id} vanished") })
        })
        .map_err(|e| self.with_path(e))
    }

    /// Moves a graph to `state` (`committing`, `committed`, or `failed` with `failure`). The
    /// triggers refuse any move that is not forward.
    pub fn set_graph_state(
        &self,
        graph_id: &str,
        state: &str,
        failure: Option<&str>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE settlement_graphs SET state = ?2, failure = ?3, updated_at_ms = ?4 WHERE graph_id = ?1",
                )
                .and_then(|mut s| s.execute(params![graph_id, state, failure, i64_of(at_ms)]))
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(StoreError::NotFoundId { what: "settlement graph", id: graph_id.to_owned() });
            }
            // An ended graph has no owner: nothing is left to do for it.
            if matches!(state, "committed" | "failed") {
                tx.prepare_cached("DELETE FROM settlement_graph_owners WHERE graph_id = ?1")
                    .and_then(|mut s| s.execute(params![graph_id]))
                    .map_err(sql_error)?;
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// Claims an unfinished graph for `owner` if nobody holds it, `owner` holds it already, or
    /// its holder is gone (`is_gone`), in one transaction; returns the holder otherwise. An ended
    /// graph is never claimed (`Ok(Err(None))`).
    pub fn claim_graph(
        &self,
        graph_id: &str,
        owner: &str,
        at_ms: u64,
        is_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Result<(), Option<String>>, StoreError> {
        self.write(|tx| {
            let Some(graph) = read_graph(tx, graph_id)? else {
                return Err(StoreError::NotFoundId { what: "settlement graph", id: graph_id.to_owned() });
            };
            if matches!(graph.state.as_str(), "committed" | "failed") {
                return Ok(Err(None));
            }
            let holder: Option<String> = tx
                .prepare_cached("SELECT owner FROM settlement_graph_owners WHERE graph_id = ?1")
                .and_then(|mut s| s.query_row(params![graph_id], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            if let Some(holder) = holder
                && holder != owner
                && !is_gone(&holder)
            {
                return Ok(Err(Some(holder)));
            }
            tx.prepare_cached(
                "INSERT INTO settlement_graph_owners (graph_id, owner, claimed_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (graph_id) DO UPDATE SET owner = excluded.owner, claimed_at_ms = excluded.claimed_at_ms",
            )
            .and_then(|mut s| s.execute(params![graph_id, owner, i64_of(at_ms)]))
            .map_err(sql_error)?;
            Ok(Ok(()))
        })
        .map_err(|e| self.with_path(e))
    }

    /// Who holds an unfinished graph (`None` for an ended graph, or one recorded before owners).
    pub fn graph_owner(&self, graph_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT owner FROM settlement_graph_owners WHERE graph_id = ?1")
                .and_then(|mut s| s.query_row(params![graph_id], |r| r.get(0)).optional())
                .map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    pub fn graph(&self, graph_id: &str) -> Result<Option<GraphRow>, StoreError> {
        self.read(|tx| read_graph(tx, graph_id)).map_err(|e| self.with_path(e))
    }

    /// Ids of the graphs not yet `committed` or `failed`, oldest first: what recovery finishes.
    pub fn unfinished_graphs(&self) -> Result<Vec<String>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT graph_id FROM settlement_graphs WHERE state IN ('preparing', 'committing')
                     ORDER BY created_at_ms, graph_id",
                )
                .map_err(sql_error)?;
            let ids = statement.query_map([], |r| r.get(0)).map_err(sql_error)?;
            ids.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }
}
