//! Archival memory: passages an agent keeps for later, searched with SQLite FTS5 and ranked by
//! BM25. Passages are append-only.

use rusqlite::params;

use crate::blocks::{Author, MemoryError};
use crate::error::StoreError;
use crate::store::Constellation;

/// At most this many characters in one passage.
pub const PASSAGE_CHARS_MAX: usize = 20_000;
/// At most this many results from one search.
pub const SEARCH_LIMIT_MAX: usize = 100;
/// At most this many terms in a query.
const QUERY_TERMS_MAX: usize = 32;

/// One archived passage.
#[derive(Clone, PartialEq, Debug)]
pub struct Passage {
    pub passage_id: u64,
    pub agent_id: String,
    pub text: String,
    pub author: String,
    pub created_at_ms: u64,
    /// BM25 rank from a search (lower is better, as FTS5 reports it); 0 outside searches.
    pub rank: f64,
}

fn sql(error: rusqlite::Error) -> MemoryError {
    MemoryError::Store(StoreError::Sqlite { path: Default::default(), source: error })
}

/// The words of a query as an FTS5 expression: each term quoted (so punctuation and FTS5
/// operators in the query are plain text), any term may match, BM25 ranks the passages that
/// match more and rarer terms first.
fn fts_query(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|term| !term.is_empty())
        .take(QUERY_TERMS_MAX)
        .map(|term| format!("\"{term}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

impl Constellation {
    /// Archives a passage for `agent`.
    pub fn insert_passage(&self, agent: &str, text: &str, author: &Author, at_ms: u64) -> Result<Passage, MemoryError> {
        if text.trim().is_empty() {
            return Err(MemoryError::Invalid("an archival passage needs some text".into()));
        }
        let chars = text.chars().count();
        if chars > PASSAGE_CHARS_MAX {
            return Err(MemoryError::Invalid(format!(
                "an archival passage holds at most {PASSAGE_CHARS_MAX} characters; this one has {chars}"
            )));
        }
        if let Author::Agent(writer) = author
            && writer != agent
        {
            return Err(MemoryError::PermissionDenied(format!("{author} cannot archive passages for agent {agent}")));
        }
        self.write_as(|tx| {
            let exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = ?1)", [agent], |r| r.get(0))
                .map_err(sql)?;
            if !exists {
                return Err(StoreError::NotFoundId { what: "agent", id: agent.to_owned() }.into());
            }
            let author = author.to_string();
            tx.execute(
                "INSERT INTO memory_passages (agent_id, text, author, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![agent, text, author, i64::try_from(at_ms).unwrap_or(i64::MAX)],
            )
            .map_err(sql)?;
            Ok(Passage {
                passage_id: u64::try_from(tx.last_insert_rowid()).unwrap_or(0),
                agent_id: agent.to_owned(),
                text: text.to_owned(),
                author,
                created_at_ms: at_ms,
                rank: 0.0,
            })
        })
    }

    /// The passages of `agent` matching `query`, best first (BM25), at most `limit`.
    pub fn search_passages(&self, agent: &str, query: &str, limit: usize) -> Result<Vec<Passage>, MemoryError> {
        let Some(expression) = fts_query(query) else {
            return Err(MemoryError::Invalid("a search needs at least one word".into()));
        };
        let limit = limit.clamp(1, SEARCH_LIMIT_MAX);
        self.read_as(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT p.passage_id, p.text, p.author, p.created_at_ms, bm25(memory_passages_fts) AS rank
                     FROM memory_passages_fts JOIN memory_passages p ON p.passage_id = memory_passages_fts.rowid
                     WHERE memory_passages_fts MATCH ?1 AND p.agent_id = ?2
                     ORDER BY rank, p.passage_id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = statement
                .query_map(params![expression, agent, limit as i64], |row| {
                    Ok(Passage {
                        passage_id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        agent_id: agent.to_owned(),
                        text: row.get(1)?,
                        author: row.get(2)?,
                        created_at_ms: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        rank: row.get(4)?,
                    })
                })
                .map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_quoted_terms() {
        assert_eq!(fts_query("weather-data \"NEAR\" OR"), Some("\"weather\" OR \"data\" OR \"NEAR\" OR \"OR\"".into()));
        assert_eq!(fts_query(" --- "), None);
    }
}
