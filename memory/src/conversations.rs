//! Editor conversations: the durable side of ACP sessions. A conversation is a row (id, working
//! directory, title, approval mode, times) and the `session/update` payloads the agent sent, in
//! order, stored as the JSON text that was sent. Loading a conversation replays them unchanged.
//! This crate does not interpret the payloads; the agent owns their format.

use rusqlite::{OptionalExtension as _, params};

use crate::error::StoreError;
use crate::store::Constellation;

/// Longest title kept (longer ones are cut at a character boundary by the caller's choice of
/// title; the store refuses them).
pub const CONVERSATION_TITLE_BYTES_MAX: usize = 256;
/// Largest single stored update.
pub const CONVERSATION_UPDATE_BYTES_MAX: usize = 1 << 20;
/// Most updates one conversation keeps.
pub const CONVERSATION_UPDATES_MAX: u64 = 1_000_000;

/// How payments are approved in a conversation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConversationMode {
    /// Ask the person before any money moves (the default).
    Ask,
    /// Approve automatically, within the session's policy.
    Auto,
    /// Never settle: negotiations stop before any payment.
    ReadOnly,
}

impl ConversationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Auto => "auto",
            Self::ReadOnly => "read-only",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ask" => Some(Self::Ask),
            "auto" => Some(Self::Auto),
            "read-only" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

/// One conversation, without its updates.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub cwd: String,
    pub title: Option<String>,
    pub mode: ConversationMode,
    pub update_count: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub closed_at_ms: Option<u64>,
}

/// One stored update: its position and the JSON text that was sent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConversationUpdate {
    pub seq: u64,
    pub body: String,
    pub at_ms: u64,
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt { detail: format!("{value} does not fit SQLite's integer") })
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn invalid(detail: impl Into<String>) -> StoreError {
    StoreError::Invalid { detail: detail.into() }
}

const COLUMNS: &str = "conversation_id, cwd, title, mode, update_count, created_at_ms, updated_at_ms, closed_at_ms";

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ConversationRow, String)> {
    let mode: String = row.get(3)?;
    Ok((
        ConversationRow {
            conversation_id: row.get(0)?,
            cwd: row.get(1)?,
            title: row.get(2)?,
            mode: ConversationMode::Ask,
            update_count: to_u64(row.get(4)?),
            created_at_ms: to_u64(row.get(5)?),
            updated_at_ms: to_u64(row.get(6)?),
            closed_at_ms: row.get::<_, Option<i64>>(7)?.map(to_u64),
        },
        mode,
    ))
}

fn with_mode((mut row, mode): (ConversationRow, String)) -> Result<ConversationRow, StoreError> {
    row.mode = ConversationMode::parse(&mode).ok_or_else(|| StoreError::Corrupt {
        detail: format!("conversation {}: mode {mode:?}", row.conversation_id),
    })?;
    Ok(row)
}

impl Constellation {
    /// Records a new conversation. Refused if the id exists.
    pub fn create_conversation(&self, conversation_id: &str, cwd: &str, at_ms: u64) -> Result<(), StoreError> {
        if conversation_id.is_empty() || conversation_id.len() > 128 {
            return Err(invalid("a conversation id is 1 to 128 bytes"));
        }
        let at = to_i64(at_ms)?;
        self.write(|tx| {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO conversations (conversation_id, cwd, created_at_ms, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?3) ON CONFLICT (conversation_id) DO NOTHING",
                )
                .and_then(|mut insert| insert.execute(params![conversation_id, cwd, at]))
                .map_err(sql_error)?;
            if inserted == 0 {
                return Err(invalid(format!("conversation {conversation_id} already exists")));
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// A conversation, if it exists.
    pub fn conversation(&self, conversation_id: &str) -> Result<Option<ConversationRow>, StoreError> {
        self.read(|tx| {
            let row = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM conversations WHERE conversation_id = ?1"))
                .and_then(|mut select| select.query_row([conversation_id], row_of).optional())
                .map_err(sql_error)?;
            row.map(with_mode).transpose()
        })
        .map_err(|e| self.with_path(e))
    }

    /// Conversations, most recently updated first, optionally only those of one working
    /// directory; `before` continues a listing after the last (updated time, id) it returned.
    pub fn conversations(
        &self,
        cwd: Option<&str>,
        before: Option<(u64, &str)>,
        limit: u32,
    ) -> Result<Vec<ConversationRow>, StoreError> {
        let (before_at, before_id) = match before {
            Some((at, id)) => (to_i64(at)?, id.to_owned()),
            None => (i64::MAX, String::new()),
        };
        self.read(|tx| {
            let mut select = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM conversations
                     WHERE (?1 IS NULL OR cwd = ?1)
                       AND (?3 = '' OR updated_at_ms < ?2 OR (updated_at_ms = ?2 AND conversation_id < ?3))
                     ORDER BY updated_at_ms DESC, conversation_id DESC LIMIT ?4"
                ))
                .map_err(sql_error)?;
            let rows = select
                .query_map(params![cwd, before_at, before_id, i64::from(limit)], row_of)
                .map_err(sql_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_error)?;
            rows.into_iter().map(with_mode).collect()
        })
        .map_err(|e| self.with_path(e))
    }

    /// Appends updates to a conversation in one transaction; returns the seq of the first.
    /// `title` is set if the conversation has none yet.
    pub fn append_conversation_updates(
        &self,
        conversation_id: &str,
        bodies: &[String],
        title: Option<&str>,
        at_ms: u64,
    ) -> Result<u64, StoreError> {
        if let Some(body) = bodies.iter().find(|b| b.len() > CONVERSATION_UPDATE_BYTES_MAX) {
            return Err(invalid(format!(
                "an update of {} bytes is larger than the limit of {CONVERSATION_UPDATE_BYTES_MAX}",
                body.len()
            )));
        }
        if let Some(title) = title
            && (title.is_empty() || title.len() > CONVERSATION_TITLE_BYTES_MAX)
        {
            return Err(invalid(format!("a title is 1 to {CONVERSATION_TITLE_BYTES_MAX} bytes")));
        }
        let at = to_i64(at_ms)?;
        self.write(|tx| {
            let current: Option<(i64, i64)> = tx
                .prepare_cached("SELECT update_count, updated_at_ms FROM conversations WHERE conversation_id = ?1")
                .and_then(|mut select| select.query_row([conversation_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(sql_error)?;
            let Some((count, updated)) = current else {
                return Err(StoreError::NotFoundId { what: "conversation", id: conversation_id.to_owned() });
            };
            let first = to_u64(count);
            let new_count = first + bodies.len() as u64;
            if new_count > CONVERSATION_UPDATES_MAX {
                return Err(invalid(format!(
                    "conversation {conversation_id} would exceed {CONVERSATION_UPDATES_MAX} updates"
                )));
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO conversation_updates (conversation_id, seq, body, at_ms) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql_error)?;
            for (offset, body) in bodies.iter().enumerate() {
                insert
                    .execute(params![conversation_id, to_i64(first + offset as u64)?, body, at])
                    .map_err(sql_error)?;
            }
            let new_count = to_i64(new_count)?;
            tx.prepare_cached(
                "UPDATE conversations SET update_count = ?2, updated_at_ms = ?3, title = coalesce(title, ?4)
                 WHERE conversation_id = ?1",
            )
            .and_then(|mut update| update.execute(params![conversation_id, new_count, at.max(updated), title]))
            .map_err(sql_error)?;
            Ok(first)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Every update of a conversation, in order.
    pub fn conversation_updates(&self, conversation_id: &str) -> Result<Vec<ConversationUpdate>, StoreError> {
        self.read(|tx| {
            let mut select = tx
                .prepare_cached(
                    "SELECT seq, body, at_ms FROM conversation_updates WHERE conversation_id = ?1 ORDER BY seq",
                )
                .map_err(sql_error)?;
            let rows = select
                .query_map([conversation_id], |row| {
                    Ok(ConversationUpdate { seq: to_u64(row.get(0)?), body: row.get(1)?, at_ms: to_u64(row.get(2)?) })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Sets a conversation's approval mode.
    pub fn set_conversation_mode(
        &self,
        conversation_id: &str,
        mode: ConversationMode,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let at = to_i64(at_ms)?;
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE conversations SET mode = ?2, updated_at_ms = max(updated_at_ms, ?3) WHERE conversation_id = ?1",
                )
                .and_then(|mut update| update.execute(params![conversation_id, mode.as_str(), at]))
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(StoreError::NotFoundId { what: "conversation", id: conversation_id.to_owned() });
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// Marks a conversation closed (it stays listed and loadable).
    pub fn close_conversation(&self, conversation_id: &str, at_ms: u64) -> Result<(), StoreError> {
        let at = to_i64(at_ms)?;
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE conversations SET closed_at_ms = coalesce(closed_at_ms, ?2) WHERE conversation_id = ?1",
                )
                .and_then(|mut update| update.execute(params![conversation_id, at]))
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(StoreError::NotFoundId { what: "conversation", id: conversation_id.to_owned() });
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }
}
