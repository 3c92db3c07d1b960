//! Executions, their audit log, the state surface's values and artifacts, as stored (migration
//! 13). The runtime (`pactum_runtime::contracts`) decides what to write; this module keeps the
//! record and the triggers keep it honest: an execution's status and an artifact's lifecycle only
//! move forward, the log and artifact parents are append-only.
//!
//! Every lifecycle change is written with its log entry in the same transaction, so the log
//! tells every transition the record went through.

use rusqlite::{OptionalExtension, params};

use crate::agents::sql_error;
use crate::error::StoreError;
use crate::store::Constellation;

/// Entries of the execution log the store writes itself: one per status change.
pub const LOG_TRANSITION: &str = "transition";

/// Listing bounds: at most this many rows per list.
pub const LIST_ROWS_MAX: u32 = 1_000;

/// An execution about to be recorded (its status starts at `created`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewExecution {
    pub execution_id: String,
    pub intent_type: String,
    pub handler_name: String,
    /// Canonical JSON.
    pub parameters: String,
    /// Canonical JSON.
    pub metadata: String,
    pub tenant: String,
    pub solution_id: String,
    pub session_id: Option<String>,
    /// The process running it (`pid:<pid>:<start ticks>`), for recovery.
    pub owner: String,
    pub created_at_ms: u64,
}

/// How an execution's first transaction leaves it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ExecutionStart {
    /// `created` → `running`: the handler is invoked next.
    Running,
    /// `created` → `failed`: refused before its handler ran (validation).
    Refused { error_code: String, error_message: String },
}

/// How an execution ends: its status (`completed`, `failed` or `cancelled`) and what it made.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExecutionEnd {
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Canonical JSON, or none.
    pub result: Option<String>,
    /// The session the execution turned out to concern (learnt once).
    pub session_id: Option<String>,
    pub at_ms: u64,
}

/// An execution as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExecutionRow {
    pub execution_id: String,
    pub intent_type: String,
    pub handler_name: String,
    pub parameters: String,
    pub metadata: String,
    pub tenant: String,
    pub solution_id: String,
    pub session_id: Option<String>,
    pub owner: String,
    /// `created`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// One entry of an execution's log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExecutionLogEntry {
    pub seq: u64,
    pub at_ms: u64,
    pub entry_kind: String,
    /// Canonical JSON.
    pub detail: String,
}

/// An artifact about to be registered.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewArtifact {
    pub artifact_id: String,
    pub artifact_type: String,
    pub tenant: String,
    pub execution_id: String,
    pub intent_type: String,
    /// `PENDING`, `READY` or `FAILED`.
    pub lifecycle: String,
    /// The first materialization's URI, indexed so an artifact is found by what it names.
    pub locator: Option<String>,
    /// Canonical JSON.
    pub descriptor: String,
    /// Canonical JSON (an array).
    pub materializations: String,
    pub parents: Vec<String>,
    pub created_at_ms: u64,
}

/// An artifact as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArtifactRow {
    pub artifact_id: String,
    pub artifact_type: String,
    pub tenant: String,
    pub execution_id: String,
    pub intent_type: String,
    pub lifecycle: String,
    pub locator: Option<String>,
    pub descriptor: String,
    pub materializations: String,
    pub parents: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Which artifacts to list (every filter given must match), newest last.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ArtifactFilter {
    pub artifact_type: Option<String>,
    pub execution_id: Option<String>,
    pub lifecycle: Option<String>,
    pub locator: Option<String>,
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

const EXECUTION_COLUMNS: &str = "execution_id, intent_type, handler_name, parameters, metadata, tenant, solution_id, \
     session_id, owner, status, error_code, error_message, result, created_at_ms, updated_at_ms";

fn execution_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok(ExecutionRow {
        execution_id: r.get(0)?,
        intent_type: r.get(1)?,
        handler_name: r.get(2)?,
        parameters: r.get(3)?,
        metadata: r.get(4)?,
        tenant: r.get(5)?,
        solution_id: r.get(6)?,
        session_id: r.get(7)?,
        owner: r.get(8)?,
        status: r.get(9)?,
        error_code: r.get(10)?,
        error_message: r.get(11)?,
        result: r.get(12)?,
        created_at_ms: u64_of(r.get(13)?),
        updated_at_ms: u64_of(r.get(14)?),
    })
}

const ARTIFACT_COLUMNS: &str = "artifact_id, artifact_type, tenant, execution_id, intent_type, lifecycle, locator, \
     descriptor, materializations, created_at_ms, updated_at_ms";

fn artifact_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactRow> {
    Ok(ArtifactRow {
        artifact_id: r.get(0)?,
        artifact_type: r.get(1)?,
        tenant: r.get(2)?,
        execution_id: r.get(3)?,
        intent_type: r.get(4)?,
        lifecycle: r.get(5)?,
        locator: r.get(6)?,
        descriptor: r.get(7)?,
        materializations: r.get(8)?,
        parents: Vec::new(),
        created_at_ms: u64_of(r.get(9)?),
        updated_at_ms: u64_of(r.get(10)?),
    })
}

fn read_execution(tx: &rusqlite::Connection, execution_id: &str) -> Result<Option<ExecutionRow>, StoreError> {
    tx.prepare_cached(&format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?1"))
        .and_then(|mut s| s.query_row(params![execution_id], execution_of).optional())
        .map_err(sql_error)
}

fn next_log_seq(tx: &rusqlite::Connection, execution_id: &str) -> Result<u64, StoreError> {
    let next: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq) + 1, 0) FROM execution_log WHERE execution_id = ?1")
        .and_then(|mut s| s.query_row(params![execution_id], |r| r.get(0)))
        .map_err(sql_error)?;
    Ok(u64_of(next))
}

fn log(
    tx: &rusqlite::Connection,
    execution_id: &str,
    seq: u64,
    at_ms: u64,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO execution_log (execution_id, seq, at_ms, entry_kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![execution_id, i64_of(seq), i64_of(at_ms), kind, detail]))
    .map_err(sql_error)?;
    Ok(())
}

fn transition_detail(from: &str, to: &str, error_code: Option<&str>) -> String {
    // Keys in canonical (sorted) order.
    match error_code {
        Some(code) => serde_json::json!({ "error_code": code, "from": from, "to": to }).to_string(),
        None => serde_json::json!({ "from": from, "to": to }).to_string(),
    }
}

/// Moves an execution from its stored status to `end.status`, logging the transition; the
/// trigger refuses a move that is not forward.
fn transition(tx: &rusqlite::Connection, execution_id: &str, end: &ExecutionEnd) -> Result<(), StoreError> {
    let current = read_execution(tx, execution_id)?
        .ok_or_else(|| StoreError::NotFoundId { what: "execution", id: execution_id.to_owned() })?;
    tx.prepare_cached(
        "UPDATE executions SET status = ?2, error_code = ?3, error_message = ?4, result = ?5,
         session_id = COALESCE(session_id, ?6), updated_at_ms = ?7 WHERE execution_id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            execution_id,
            end.status,
            end.error_code,
            end.error_message,
            end.result,
            end.session_id,
            i64_of(end.at_ms)
        ])
    })
    .map_err(|error| refused_or(error, "execution", execution_id))?;
    let seq = next_log_seq(tx, execution_id)?;
    log(
        tx,
        execution_id,
        seq,
        end.at_ms,
        LOG_TRANSITION,
        &transition_detail(&current.status, &end.status, end.error_code.as_deref()),
    )
}

/// A trigger's refusal becomes [`StoreError::Refused`]; anything else stays an SQLite error.
fn refused_or(error: rusqlite::Error, what: &'static str, id: &str) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, Some(message))
            if failure.code == rusqlite::ErrorCode::ConstraintViolation && message.contains("only moves forward") =>
        {
            StoreError::Refused { what, id: id.to_owned(), detail: message.clone() }
        }
        _ => sql_error(error),
    }
}

fn insert_artifact(tx: &rusqlite::Connection, artifact: &NewArtifact) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO artifacts (artifact_id, artifact_type, tenant, execution_id, intent_type, lifecycle, locator,
         descriptor, materializations, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            artifact.artifact_id,
            artifact.artifact_type,
            artifact.tenant,
            artifact.execution_id,
            artifact.intent_type,
            artifact.lifecycle,
            artifact.locator,
            artifact.descriptor,
            artifact.materializations,
            i64_of(artifact.created_at_ms)
        ])
    })
    .map_err(sql_error)?;
    let mut parent = tx
        .prepare_cached("INSERT INTO artifact_parents (artifact_id, parent_id) VALUES (?1, ?2)")
        .map_err(sql_error)?;
    for parent_id in &artifact.parents {
        let known: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM artifacts WHERE artifact_id = ?1)")
            .and_then(|mut s| s.query_row(params![parent_id], |r| r.get(0)))
            .map_err(sql_error)?;
        if !known {
            return Err(StoreError::NotFoundId { what: "artifact", id: parent_id.clone() });
        }
        parent.execute(params![artifact.artifact_id, parent_id]).map_err(sql_error)?;
    }
    Ok(())
}

fn with_parents(tx: &rusqlite::Connection, mut artifact: ArtifactRow) -> Result<ArtifactRow, StoreError> {
    let mut statement = tx
        .prepare_cached("SELECT parent_id FROM artifact_parents WHERE artifact_id = ?1 ORDER BY parent_id")
        .map_err(sql_error)?;
    let parents = statement.query_map(params![artifact.artifact_id], |r| r.get(0)).map_err(sql_error)?;
    artifact.parents = parents.collect::<Result<_, _>>().map_err(sql_error)?;
    Ok(artifact)
}

impl Constellation {
    /// Records a new execution and its first move in one transaction: `created` → `running`, or
    /// `created` → `failed` when it was refused before its handler ran. Both transitions are
    /// logged. An execution id already recorded is refused.
    pub fn begin_execution(&self, execution: &NewExecution, start: &ExecutionStart) -> Result<(), StoreError> {
        self.write(|tx| {
            if read_execution(tx, &execution.execution_id)?.is_some() {
                return Err(StoreError::Invalid {
                    detail: format!("execution {} exists already", execution.execution_id),
                });
            }
            tx.prepare_cached(
                "INSERT INTO executions (execution_id, intent_type, handler_name, parameters, metadata, tenant,
                 solution_id, session_id, owner, status, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'created', ?10, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    execution.execution_id,
                    execution.intent_type,
                    execution.handler_name,
                    execution.parameters,
                    execution.metadata,
                    execution.tenant,
                    execution.solution_id,
                    execution.session_id,
                    execution.owner,
                    i64_of(execution.created_at_ms)
                ])
            })
            .map_err(sql_error)?;
            log(
                tx,
                &execution.execution_id,
                0,
                execution.created_at_ms,
                LOG_TRANSITION,
                &serde_json::json!({ "to": "created" }).to_string(),
            )?;
            let end = match start {
                ExecutionStart::Running => ExecutionEnd {
                    status: "running".to_owned(),
                    error_code: None,
                    error_message: None,
                    result: None,
                    session_id: None,
                    at_ms: execution.created_at_ms,
                },
                ExecutionStart::Refused { error_code, error_message } => ExecutionEnd {
                    status: "failed".to_owned(),
                    error_code: Some(error_code.clone()),
                    error_message: Some(error_message.clone()),
                    result: None,
                    session_id: None,
                    at_ms: execution.created_at_ms,
                },
            };
            transition(tx, &execution.execution_id, &end)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Ends an execution (`completed`, `failed` or `cancelled`) and registers the artifacts it
    /// made, in one transaction: all of it or none.
    pub fn finish_execution(
        &self,
        execution_id: &str,
        end: &ExecutionEnd,
        artifacts: &[NewArtifact],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            for artifact in artifacts {
                insert_artifact(tx, artifact)?;
            }
            transition(tx, execution_id, end)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Appends an entry to an execution's log (the handler's own audit entries).
    pub fn append_execution_log(
        &self,
        execution_id: &str,
        at_ms: u64,
        entry_kind: &str,
        detail: &str,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            if read_execution(tx, execution_id)?.is_none() {
                return Err(StoreError::NotFoundId { what: "execution", id: execution_id.to_owned() });
            }
            let seq = next_log_seq(tx, execution_id)?;
            log(tx, execution_id, seq, at_ms, entry_kind, detail)?;
            Ok(seq)
        })
        .map_err(|e| self.with_path(e))
    }

    pub fn execution(&self, execution_id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        self.read(|tx| read_execution(tx, execution_id)).map_err(|e| self.with_path(e))
    }

    /// The latest `limit` executions (at most [`LIST_ROWS_MAX`]), oldest first.
    pub fn executions(&self, limit: u32) -> Result<Vec<ExecutionRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "SELECT * FROM (SELECT {EXECUTION_COLUMNS} FROM executions
                     ORDER BY created_at_ms DESC, execution_id DESC LIMIT ?1) ORDER BY created_at_ms, execution_id"
                ))
                .map_err(sql_error)?;
            let rows = statement.query_map(params![limit.min(LIST_ROWS_MAX)], execution_of).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Executions still `created` or `running`: what recovery looks at.
    pub fn unfinished_executions(&self) -> Result<Vec<ExecutionRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions WHERE status IN ('created', 'running')
                     ORDER BY created_at_ms, execution_id"
                ))
                .map_err(sql_error)?;
            let rows = statement.query_map([], execution_of).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    pub fn execution_log(&self, execution_id: &str) -> Result<Vec<ExecutionLogEntry>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT seq, at_ms, entry_kind, detail FROM execution_log WHERE execution_id = ?1 ORDER BY seq",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![execution_id], |r| {
                    Ok(ExecutionLogEntry {
                        seq: u64_of(r.get(0)?),
                        at_ms: u64_of(r.get(1)?),
                        entry_kind: r.get(2)?,
                        detail: r.get(3)?,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Sets a state value (`scope` is `session` or `execution`), replacing the key's last one.
    pub fn set_state_value(
        &self,
        scope: &str,
        scope_id: &str,
        key: &str,
        value: &str,
        execution_id: Option<&str>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO execution_state (scope, scope_id, key, value, execution_id, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (scope, scope_id, key) DO UPDATE
                 SET value = excluded.value, execution_id = excluded.execution_id, updated_at_ms = excluded.updated_at_ms",
            )
            .and_then(|mut s| s.execute(params![scope, scope_id, key, value, execution_id, i64_of(at_ms)]))
            .map_err(sql_error)?;
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    pub fn state_value(&self, scope: &str, scope_id: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT value FROM execution_state WHERE scope = ?1 AND scope_id = ?2 AND key = ?3")
                .and_then(|mut s| s.query_row(params![scope, scope_id, key], |r| r.get(0)).optional())
                .map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Every key and value of one scope, by key.
    pub fn state_values(&self, scope: &str, scope_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT key, value FROM execution_state WHERE scope = ?1 AND scope_id = ?2 ORDER BY key",
                )
                .map_err(sql_error)?;
            let rows =
                statement.query_map(params![scope, scope_id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Registers one artifact on its own (outside an execution's end), with its parents.
    pub fn register_artifact(&self, artifact: &NewArtifact) -> Result<(), StoreError> {
        self.write(|tx| insert_artifact(tx, artifact)).map_err(|e| self.with_path(e))
    }

    pub fn artifact(&self, artifact_id: &str) -> Result<Option<ArtifactRow>, StoreError> {
        self.read(|tx| {
            let row = tx
                .prepare_cached(&format!("SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE artifact_id = ?1"))
                .and_then(|mut s| s.query_row(params![artifact_id], artifact_of).optional())
                .map_err(sql_error)?;
            row.map(|row| with_parents(tx, row)).transpose()
        })
        .map_err(|e| self.with_path(e))
    }

    /// The artifacts matching `filter`, oldest first, at most [`LIST_ROWS_MAX`].
    pub fn artifacts(&self, filter: &ArtifactFilter) -> Result<Vec<ArtifactRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "SELECT {ARTIFACT_COLUMNS} FROM artifacts
                     WHERE (?1 IS NULL OR artifact_type = ?1) AND (?2 IS NULL OR execution_id = ?2)
                       AND (?3 IS NULL OR lifecycle = ?3) AND (?4 IS NULL OR locator = ?4)
                     ORDER BY created_at_ms, rowid LIMIT ?5"
                ))
                .map_err(sql_error)?;
            let rows = statement
                .query_map(
                    params![filter.artifact_type, filter.execution_id, filter.lifecycle, filter.locator, LIST_ROWS_MAX],
                    artifact_of,
                )
                .map_err(sql_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_error)?;
            rows.into_iter().map(|row| with_parents(tx, row)).collect()
        })
        .map_err(|e| self.with_path(e))
    }

    /// Moves an artifact's lifecycle forward; the trigger refuses any other move.
    pub fn set_artifact_lifecycle(&self, artifact_id: &str, lifecycle: &str, at_ms: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached("UPDATE artifacts SET lifecycle = ?2, updated_at_ms = ?3 WHERE artifact_id = ?1")
                .and_then(|mut s| s.execute(params![artifact_id, lifecycle, i64_of(at_ms)]))
                .map_err(|error| refused_or(error, "artifact", artifact_id))?;
            if changed == 0 {
                return Err(StoreError::NotFoundId { what: "artifact", id: artifact_id.to_owned() });
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }
}
