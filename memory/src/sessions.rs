//! Session ownership and the session index. A negotiation session is a local transcript stream
//! whose id starts with a prefix the runtime chooses; everything about it is in that stream.
//! This module adds only who is driving it (`session_owners`), so that a process recovering
//! after a crash resumes the sessions of dead processes and never one a live process is driving.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::StoreError;
use crate::events::StreamOrigin;
use crate::store::Constellation;

/// One session stream as the index sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionRow {
    pub stream_id: String,
    pub created_at_ms: u64,
    pub event_count: u64,
    /// Kind and time of the last event, if any.
    pub last_kind: Option<String>,
    pub last_at_ms: Option<u64>,
    /// The process driving the session, if one claimed it.
    pub owner: Option<String>,
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt { detail: format!("{value} does not fit SQLite's integer") })
}

/// A change of a session's owner made together with a write of its events.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OwnerChange<'a> {
    /// The session is new: `owner` claims it; refused if anyone holds it.
    Claim { session_id: &'a str, owner: &'a str, at_ms: u64 },
    /// The session has ended: `owner` lets go of it.
    Release { session_id: &'a str, owner: &'a str },
}

pub(crate) fn change_owner(tx: &Transaction<'_>, change: &OwnerChange<'_>, stream_id: &str) -> Result<(), StoreError> {
    match *change {
        OwnerChange::Claim { session_id, owner, at_ms } => {
            if let Some(current) = read_owner(tx, session_id)?
                && current != owner
            {
                return Err(StoreError::Conflict {
                    stream: stream_id.to_owned(),
                    seq: 0,
                    detail: format!("session {session_id} is held by {current}"),
                });
            }
            tx.prepare_cached(
                "INSERT INTO session_owners (session_id, owner, claimed_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session_id) DO NOTHING",
            )
            .and_then(|mut insert| insert.execute(params![session_id, owner, to_i64(at_ms).unwrap_or(i64::MAX)]))
            .map_err(sql_error)?;
        }
        OwnerChange::Release { session_id, owner } => {
            tx.prepare_cached("DELETE FROM session_owners WHERE session_id = ?1 AND owner = ?2")
                .and_then(|mut delete| delete.execute(params![session_id, owner]))
                .map_err(sql_error)?;
        }
    }
    Ok(())
}

fn read_owner(tx: &Transaction<'_>, session_id: &str) -> Result<Option<String>, StoreError> {
    tx.prepare_cached("SELECT owner FROM session_owners WHERE session_id = ?1")
        .and_then(|mut statement| statement.query_row([session_id], |row| row.get(0)).optional())
        .map_err(sql_error)
}

impl Constellation {
    /// Makes `owner` the owner of `session_id` if its current owner is `expected` (`None`: no
    /// owner). Returns whether the claim took: a compare-and-swap, so two processes recovering
    /// the same session cannot both win.
    pub fn claim_session(
        &self,
        session_id: &str,
        owner: &str,
        expected: Option<&str>,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let current = read_owner(tx, session_id)?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO session_owners (session_id, owner, claimed_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, claimed_at_ms = excluded.claimed_at_ms",
            )
            .and_then(|mut statement| statement.execute(params![session_id, owner, to_i64(at_ms).unwrap_or(i64::MAX)]))
            .map_err(sql_error)?;
            Ok(true)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Whether a new session could take this id now: nobody holds it and its stream holds no
    /// events. (The claim itself is made by the session's first write.)
    pub fn session_id_free(&self, session_id: &str, stream_id: &str) -> Result<bool, StoreError> {
        self.read(|tx| {
            if read_owner(tx, session_id)?.is_some() {
                return Ok(false);
            }
            let events: Option<i64> = tx
                .prepare_cached("SELECT event_count FROM transcript_streams WHERE stream_id = ?1")
                .and_then(|mut statement| statement.query_row([stream_id], |row| row.get(0)).optional())
                .map_err(sql_error)?;
            Ok(events.is_none_or(|count| count == 0))
        })
        .map_err(|e| self.with_path(e))
    }

    /// Gives up ownership of a session, if `owner` holds it.
    pub fn release_session(&self, session_id: &str, owner: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM session_owners WHERE session_id = ?1 AND owner = ?2")
                .and_then(|mut statement| statement.execute(params![session_id, owner]))
                .map_err(sql_error)?;
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// The owner of a session, if any.
    pub fn session_owner(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| read_owner(tx, session_id)).map_err(|e| self.with_path(e))
    }

    /// Every local stream whose id starts with `stream_prefix`, oldest first, with its last
    /// event's kind and its owner (looked up by the id after the prefix).
    pub fn session_streams(&self, stream_prefix: &str) -> Result<Vec<SessionRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT s.stream_id, s.created_at_ms, s.event_count, e.kind, e.at_ms, o.owner
                     FROM transcript_streams s
                     LEFT JOIN transcript_events e ON e.stream_id = s.stream_id AND e.seq = s.event_count - 1
                     LEFT JOIN session_owners o ON o.session_id = substr(s.stream_id, length(?1) + 1)
                     WHERE s.origin = ?2 AND substr(s.stream_id, 1, length(?1)) = ?1
                     ORDER BY s.created_at_ms, s.stream_id",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![stream_prefix, StreamOrigin::Local.as_str()], |row| {
                    let count: i64 = row.get(2)?;
                    let created: i64 = row.get(1)?;
                    let last_at: Option<i64> = row.get(4)?;
                    Ok(SessionRow {
                        stream_id: row.get(0)?,
                        created_at_ms: u64::try_from(created).unwrap_or(0),
                        event_count: u64::try_from(count).unwrap_or(0),
                        last_kind: row.get(3)?,
                        last_at_ms: last_at.map(|at| u64::try_from(at).unwrap_or(0)),
                        owner: row.get(5)?,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }
}
