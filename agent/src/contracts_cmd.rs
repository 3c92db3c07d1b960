//! `pactum artifact list|show` and `pactum execution list|show`: what commands produced and the
//! executions that did the work. Reads only: a missing constellation is listed as empty and
//! never created. The `--json` documents are also the answers of `_pactum/artifact/*` and
//! `_pactum/execution/status`.

use std::sync::Arc;

use serde_json::{Value, json};

use pactum_memory::{Constellation, ExecutionRow};
use pactum_runtime::contracts::{
    Artifact, ArtifactQuery, ArtifactRegistry, ContractError, ExecutionStatus, Lifecycle, check_execution_id,
};
use pactum_runtime::session::shell::OwnerLiveness as _;

use crate::cli::Context;
use crate::clock::format_ms;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

/// Executions `execution list` shows by default.
const EXECUTIONS_LISTED_DEFAULT: u32 = 20;

#[derive(Debug, clap::Subcommand)]
pub enum ArtifactCommand {
    /// Artifacts, oldest first: type, lifecycle state, the execution that produced them, parents.
    List {
        /// Only artifacts of this type (receipt, transcript, transcript_export, evidence_bundle,
        /// memory_block_export, constellation_backup).
        #[arg(long = "type", value_name = "TYPE")]
        artifact_type: Option<String>,
        /// Only artifacts produced by this execution.
        #[arg(long, value_name = "ID")]
        execution: Option<String>,
        /// Only artifacts in this lifecycle state (PENDING, READY, FAILED, ARCHIVED, DELETED).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One artifact: its producer, parents, descriptor and materializations.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

impl ArtifactCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::List { json, .. } | Self::Show { json, .. } => *json,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ExecutionCommand {
    /// The latest executions, oldest first.
    List {
        /// How many.
        #[arg(long, value_name = "N", default_value_t = EXECUTIONS_LISTED_DEFAULT)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One execution: intent, status, error, result, log and artifacts.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

impl ExecutionCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::List { json, .. } | Self::Show { json, .. } => *json,
        }
    }
}

fn not_found(path: &std::path::Path) -> Failure {
    Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display()))
}

/// The artifact filter given on the command line or to `_pactum/artifact/list`.
pub fn query(
    artifact_type: Option<String>,
    execution: Option<String>,
    state: Option<&str>,
) -> Result<ArtifactQuery, Failure> {
    if let Some(execution) = &execution {
        check_execution_id(execution)?;
    }
    Ok(ArtifactQuery {
        artifact_type,
        execution_id: execution,
        lifecycle: state.map(Lifecycle::parse).transpose()?,
        locator: None,
    })
}

/// `{"artifacts": [...]}`.
pub fn artifacts_json(db: Option<&Arc<Constellation>>, query: &ArtifactQuery) -> Result<Value, Failure> {
    let artifacts = match db {
        Some(db) => ArtifactRegistry::new(Arc::clone(db)).list(query)?,
        None => Vec::new(),
    };
    Ok(json!({ "artifacts": artifacts.iter().map(Artifact::to_json).collect::<Vec<_>>() }))
}

/// One artifact's document.
pub fn artifact_json(db: &Arc<Constellation>, artifact_id: &str) -> Result<Value, Failure> {
    Ok(ArtifactRegistry::new(Arc::clone(db)).resolve(artifact_id)?.to_json())
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn execution_summary(row: &ExecutionRow) -> Value {
    let mut document = json!({
        "execution_id": row.execution_id,
        "intent": {
            "intent_type": row.intent_type,
            "parameters": parse_json(&row.parameters),
        },
        "handler_name": row.handler_name,
        "tenant": row.tenant,
        "session_id": row.session_id,
        "solution_id": row.solution_id,
        "status": row.status,
        "error": row.error_code.as_ref().map(|code| json!({ "code": code, "message": row.error_message })),
        "result": row.result.as_deref().map_or(Value::Null, parse_json),
        "created_at_ms": row.created_at_ms,
        "updated_at_ms": row.updated_at_ms,
    });
    // A record still running whose process is gone: the next command on this constellation marks
    // it failed; a read only says so.
    if ExecutionStatus::parse(&row.status).is_some_and(|status| !status.is_terminal())
        && let Some(object) = document.as_object_mut()
    {
        object.insert("interrupted".to_owned(), json!(!crate::edge::ProcessLiveness.is_alive(&row.owner)));
    }
    document
}

/// One execution's document: its record, log and artifacts.
pub fn execution_json(db: &Arc<Constellation>, execution_id: &str) -> Result<Value, Failure> {
    check_execution_id(execution_id)?;
    let row = db
        .execution(execution_id)?
        .ok_or_else(|| Failure::from(ContractError::ExecutionNotFound(execution_id.to_owned())))?;
    let log = db.execution_log(execution_id)?;
    let artifacts = ArtifactRegistry::new(Arc::clone(db))
        .list(&ArtifactQuery { execution_id: Some(execution_id.to_owned()), ..ArtifactQuery::default() })?;
    let mut document = execution_summary(&row);
    if let Some(object) = document.as_object_mut() {
        if let Some(intent) = object.get_mut("intent").and_then(Value::as_object_mut) {
            intent.insert("metadata".to_owned(), parse_json(&row.metadata));
        }
        object.insert("owner".to_owned(), json!(row.owner));
        object.insert(
            "log".to_owned(),
            log.iter()
                .map(|entry| {
                    json!({ "seq": entry.seq, "at_ms": entry.at_ms, "kind": entry.entry_kind, "detail": parse_json(&entry.detail) })
                })
                .collect(),
        );
        object.insert("artifacts".to_owned(), artifacts.iter().map(|a| json!(a.artifact_id)).collect());
    }
    Ok(document)
}

fn artifact_line(artifact: &Value) -> String {
    let text = |pointer: &str| artifact.pointer(pointer).and_then(Value::as_str).unwrap_or("-").to_owned();
    let parents: Vec<_> =
        artifact["parent_artifacts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    format!(
        "{} {} {} by {} {} at {}{}",
        text("/artifact_id"),
        text("/artifact_type"),
        text("/lifecycle_state"),
        text("/produced_by/intent_type"),
        text("/produced_by/execution_id"),
        text("/materializations/0/uri"),
        if parents.is_empty() { String::new() } else { format!(" (from {})", parents.join(", ")) }
    )
}

pub fn run_artifact(context: &Context, command: ArtifactCommand) -> Result<u8, Failure> {
    match command {
        ArtifactCommand::List { artifact_type, execution, state, json } => {
            let query = query(artifact_type, execution, state.as_deref())?;
            let db = context.open_existing()?.ok();
            let document = artifacts_json(db.as_ref(), &query)?;
            if json {
                print_json(&document);
            } else {
                let artifacts = document["artifacts"].as_array().cloned().unwrap_or_default();
                if artifacts.is_empty() {
                    print_lines(&["no artifacts".to_owned()]);
                } else {
                    print_lines(&artifacts.iter().map(artifact_line).collect::<Vec<_>>());
                }
            }
            Ok(EXIT_OK)
        }
        ArtifactCommand::Show { id, json } => {
            pactum_runtime::contracts::check_artifact_id(&id)?;
            let db = context.open_existing()?.map_err(|path| not_found(&path))?;
            let document = artifact_json(&db, &id)?;
            if json {
                print_json(&document);
            } else {
                let mut lines = vec![artifact_line(&document)];
                lines.push(format!("descriptor: {}", document["semantic_descriptor"]));
                for materialization in document["materializations"].as_array().into_iter().flatten() {
                    lines.push(format!("materialization: {materialization}"));
                }
                lines.push(format!("created {}", format_ms(document["created_at_ms"].as_u64().unwrap_or_default())));
                print_lines(&lines);
            }
            Ok(EXIT_OK)
        }
    }
}

pub fn run_execution(context: &Context, command: ExecutionCommand) -> Result<u8, Failure> {
    match command {
        ExecutionCommand::List { limit, json } => {
            let rows = match context.open_existing()? {
                Ok(db) => db.executions(limit)?,
                Err(_) => Vec::new(),
            };
            if json {
                print_json(&json!({ "executions": rows.iter().map(execution_summary).collect::<Vec<_>>() }));
            } else if rows.is_empty() {
                print_lines(&["no executions".to_owned()]);
            } else {
                print_lines(
                    &rows
                        .iter()
                        .map(|row| {
                            format!(
                                "{} {} {} {}{}",
                                row.execution_id,
                                format_ms(row.created_at_ms),
                                row.intent_type,
                                row.status,
                                row.error_code.as_ref().map(|code| format!(" {code}")).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>(),
                );
            }
            Ok(EXIT_OK)
        }
        ExecutionCommand::Show { id, json } => {
            check_execution_id(&id)?;
            let db = context.open_existing()?.map_err(|path| not_found(&path))?;
            let document = execution_json(&db, &id)?;
            if json {
                print_json(&document);
            } else {
                let text = |pointer: &str| document.pointer(pointer).and_then(Value::as_str).unwrap_or("-").to_owned();
                let mut lines = vec![format!(
                    "execution {} ({}): {}",
                    text("/execution_id"),
                    text("/intent/intent_type"),
                    text("/status")
                )];
                if let Some(error) = document.get("error").filter(|e| !e.is_null()) {
                    lines.push(format!(
                        "error[{}]: {}",
                        error["code"].as_str().unwrap_or("-"),
                        error["message"].as_str().unwrap_or("-")
                    ));
                }
                if document.get("interrupted").and_then(Value::as_bool) == Some(true) {
                    lines.push("interrupted: the process running it is gone".to_owned());
                }
                lines.push(format!("parameters: {}", document["intent"]["parameters"]));
                if let Some(session) = document["session_id"].as_str() {
                    lines.push(format!("session: {session}"));
                }
                for entry in document["log"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "  {} {} {}",
                        format_ms(entry["at_ms"].as_u64().unwrap_or_default()),
                        entry["kind"].as_str().unwrap_or("-"),
                        entry["detail"]
                    ));
                }
                for artifact in document["artifacts"].as_array().into_iter().flatten() {
                    lines.push(format!("artifact {}", artifact.as_str().unwrap_or("-")));
                }
                print_lines(&lines);
            }
            Ok(EXIT_OK)
        }
    }
}
