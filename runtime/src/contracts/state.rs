//! The state surface (session- and execution-scoped values) and the execution's log.

use std::sync::Arc;

use serde_json::Value;

use pactum_memory::{Constellation, ExecutionLogEntry, LOG_TRANSITION};
use pactum_transcripts::Clock;

use super::{ContractError, canonical};
use crate::RuntimeError;
use crate::session::model::SessionState;

/// A state key: 1 to this many bytes.
pub const STATE_KEY_BYTES_MAX: usize = 128;
/// A state value or a log entry's detail, as canonical JSON.
pub const STATE_VALUE_BYTES_MAX: usize = 64 * 1024;

const SCOPE_SESSION: &str = "session";
const SCOPE_EXECUTION: &str = "execution";

fn check_key(key: &str) -> Result<(), ContractError> {
    if key.is_empty() || key.len() > STATE_KEY_BYTES_MAX || key.chars().any(char::is_control) {
        return Err(ContractError::InputInvalid(format!(
            "a state key is 1-{STATE_KEY_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

fn parse_stored(text: &str) -> Result<Value, ContractError> {
    serde_json::from_str(text).map_err(|_| {
        ContractError::Store(pactum_memory::StoreError::Corrupt {
            detail: "a stored state value is not JSON".to_owned(),
        })
    })
}

/// Session- and execution-scoped state over the constellation. Values are JSON, stored as
/// canonical JSON; a write replaces the key's value and remembers which execution wrote it.
#[derive(Clone, Debug)]
pub struct StateSurface {
    db: Arc<Constellation>,
    execution_id: String,
    clock: Arc<dyn Clock>,
}

impl StateSurface {
    pub(super) fn new(db: Arc<Constellation>, execution_id: String, clock: Arc<dyn Clock>) -> Self {
        Self { db, execution_id, clock }
    }

    fn get(&self, scope: &str, scope_id: &str, key: &str) -> Result<Option<Value>, ContractError> {
        check_key(key)?;
        self.db.state_value(scope, scope_id, key)?.as_deref().map(parse_stored).transpose()
    }

    fn set(&self, scope: &str, scope_id: &str, key: &str, value: &Value) -> Result<(), ContractError> {
        check_key(key)?;
        let text = canonical(value, "a state value", STATE_VALUE_BYTES_MAX).map_err(ContractError::InputInvalid)?;
        self.db.set_state_value(scope, scope_id, key, &text, Some(&self.execution_id), self.clock.now_ms())?;
        Ok(())
    }

    /// This execution's value of `key`.
    pub fn get_execution_state(&self, key: &str) -> Result<Option<Value>, ContractError> {
        self.get(SCOPE_EXECUTION, &self.execution_id, key)
    }

    pub fn set_execution_state(&self, key: &str, value: &Value) -> Result<(), ContractError> {
        self.set(SCOPE_EXECUTION, &self.execution_id, key, value)
    }

    /// Every key and value of this execution's state.
    pub fn execution_state(&self) -> Result<Vec<(String, Value)>, ContractError> {
        self.scope_values(SCOPE_EXECUTION, &self.execution_id)
    }

    /// A session's value of `key` (any session id: editor conversations, negotiations).
    pub fn get_session_state(&self, session_id: &str, key: &str) -> Result<Option<Value>, ContractError> {
        self.get(SCOPE_SESSION, session_id, key)
    }

    pub fn set_session_state(&self, session_id: &str, key: &str, value: &Value) -> Result<(), ContractError> {
        if session_id.is_empty() {
            return Err(ContractError::InputInvalid("a session id is needed".to_owned()));
        }
        self.set(SCOPE_SESSION, session_id, key, value)
    }

    /// Every key and value of a session's state.
    pub fn session_state(&self, session_id: &str) -> Result<Vec<(String, Value)>, ContractError> {
        self.scope_values(SCOPE_SESSION, session_id)
    }

    fn scope_values(&self, scope: &str, scope_id: &str) -> Result<Vec<(String, Value)>, ContractError> {
        self.db.state_values(scope, scope_id)?.into_iter().map(|(key, text)| Ok((key, parse_stored(&text)?))).collect()
    }

    /// A negotiation session's state: the fold of its transcript, read through the session
    /// runtime (never written here: a session is its transcript).
    pub fn negotiation_state(&self, session_id: &str) -> Result<SessionState, RuntimeError> {
        crate::session::shell::read_session_state(&self.db, session_id)
    }
}

/// An execution's write-ahead audit log: append-only. The runtime writes each lifecycle
/// transition (kind `transition`) in the transaction that makes it; handlers append their own
/// entries with other kinds, each durable when `append` returns.
#[derive(Clone, Debug)]
pub struct Wal {
    db: Arc<Constellation>,
    execution_id: String,
    clock: Arc<dyn Clock>,
}

impl Wal {
    pub(super) fn new(db: Arc<Constellation>, execution_id: String, clock: Arc<dyn Clock>) -> Self {
        Self { db, execution_id, clock }
    }

    /// Appends an entry; returns its sequence number. The kind `transition` is the runtime's.
    pub fn append(&self, entry_kind: &str, detail: &Value) -> Result<u64, ContractError> {
        if entry_kind == LOG_TRANSITION {
            return Err(ContractError::InputInvalid("log entries of kind `transition` are the runtime's".to_owned()));
        }
        check_key(entry_kind)?;
        let text = canonical(detail, "a log entry", STATE_VALUE_BYTES_MAX).map_err(ContractError::InputInvalid)?;
        Ok(self.db.append_execution_log(&self.execution_id, self.clock.now_ms(), entry_kind, &text)?)
    }

    /// Every entry so far, in order.
    pub fn entries(&self) -> Result<Vec<ExecutionLogEntry>, ContractError> {
        Ok(self.db.execution_log(&self.execution_id)?)
    }
}
