//! Commands that do work run as intents: the registry of `pactum`'s intent types, each handled by
//! the command's own function, and the executions the runtime records for them.
//!
//! An intent's parameters are the command line it came from (`{"argv": [...]}`); its tenant is
//! the constellation's path; its solution id says which front end asked (`cli`, or
//! `acp:<conversation>` for an editor's slash command). The execution is bound to the
//! constellation when the command first opens it — at once when it exists — so a command that
//! refuses its input before opening a constellation records nothing and creates nothing.
//!
//! Commands that only read (list, show, verify, replay, check, info, exports to stdout, ...) do
//! not run as intents: reading records nothing.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};

use pactum_memory::Constellation;
use pactum_runtime::contracts::{
    ArtifactDraft, ArtifactRegistry, ExecutionContext, ExecutionRequest, HandlerError, HandlerOutput, Intent,
    IntentRegistry, Materialization, RunningExecution,
};
use pactum_runtime::session::model::{Phase, SessionState};

use crate::cli::{Command, ConstellationCommand, Context, ExportFormat, SessionCommand, TranscriptCommand};
use crate::failure::{EXIT_OK, Failure};
use crate::memory_cmd::MemoryCommand;

/// The solution id of commands typed on the command line.
pub const SOLUTION_CLI: &str = "cli";

/// A command to run as an intent: its payload.
#[derive(Debug)]
pub struct Invocation {
    context: Context,
    command: Command,
}

type Registry = IntentRegistry<Invocation, u8, Failure>;
type HandlerFn = fn(&ExecutionContext, Invocation) -> Result<HandlerOutput<u8>, Failure>;

impl HandlerError for Failure {
    fn code(&self) -> &str {
        self.code
    }

    fn message(&self) -> String {
        self.message.clone()
    }
}

impl From<pactum_runtime::contracts::ContractError> for Failure {
    fn from(error: pactum_runtime::contracts::ContractError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// Every intent type `pactum` handles: (type, handler, what it does).
const INTENTS: &[(&str, HandlerFn, &str)] = &[
    ("negotiate", negotiate, "negotiate, settle and sign a receipt"),
    ("session.resume", drive_session, "drive on a session whose process stopped"),
    ("session.abort", drive_session, "abort a session still negotiating"),
    ("transcript.export", transcript_export, "write a transcript to a file"),
    ("transcript.import", transcript_import, "verify and store a transcript file"),
    ("transcript.bundle", transcript_bundle, "write a session's evidence bundle"),
    ("memory.set", plain, "replace a memory block's content"),
    ("memory.append", plain, "append to a memory block"),
    ("memory.edit", plain, "edit a memory block in $EDITOR"),
    ("memory.rollback", plain, "roll a memory block back to a version"),
    ("memory.export", memory_export, "write a memory block's history to a file"),
    ("memory.import", plain, "import a memory block export"),
    ("memory.archive", plain, "keep an archival passage"),
    ("memory.create", plain, "create a memory block"),
    ("memory.configure", plain, "change a memory block's settings"),
    ("memory.share", plain, "share a memory block with another agent"),
    ("budget.set", plain, "set a spending constraint"),
    ("budget.remove", plain, "remove a spending constraint"),
    ("keys.rotate", plain, "rotate an agent to a new key"),
    ("keys.revoke", plain, "revoke a key"),
    ("policy.add", plain, "store a policy"),
    ("passport.ingest", plain, "ingest ended sessions into the passport"),
    ("passport.dispute", plain, "record a ruling on a dispute"),
    ("constellation.backup", constellation_backup, "copy the constellation to a file"),
    ("provider.serve", plain, "serve a provider to remote buyers over HTTP until stopped"),
];

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut registry =
        Registry::new(Arc::new(crate::clock::SystemClock)).with_liveness(Arc::new(crate::edge::ProcessLiveness));
    for (intent_type, handler, doc) in INTENTS {
        if let Err(error) = registry.register_intent(intent_type, "pactum", *handler, json!({ "doc": doc })) {
            // A programming error (the list names a type twice); the registry test catches it.
            tracing::error!("{error}");
        }
    }
    registry
});

/// The registry of `pactum`'s intents.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The intent a command runs as: its type and the session it concerns, or `None` for a command
/// that only reads.
pub fn intent_of(command: &Command) -> Option<(&'static str, Option<String>)> {
    // Only well-formed session ids are recorded: a malformed one is the command's to refuse.
    let session = |id: &str| pactum_runtime::session::shell::check_session_id(id).is_ok().then(|| id.to_owned());
    let session_of_stream = |id: &str| id.strip_prefix("session:").and_then(session);
    Some(match command {
        Command::Negotiate(_) => ("negotiate", None),
        Command::Session(SessionCommand::Resume { id, .. }) => ("session.resume", session(id)),
        Command::Session(SessionCommand::Abort { id, .. }) => ("session.abort", session(id)),
        Command::Transcript(TranscriptCommand::Export { id, out: Some(_), .. }) => {
            ("transcript.export", session_of_stream(id))
        }
        Command::Transcript(TranscriptCommand::Import { .. }) => ("transcript.import", None),
        Command::Transcript(TranscriptCommand::Bundle { session: id, .. }) => ("transcript.bundle", session(id)),
        Command::Memory { command, .. } => (
            match command {
                MemoryCommand::Set { .. } => "memory.set",
                MemoryCommand::Append { .. } => "memory.append",
                MemoryCommand::Edit { .. } => "memory.edit",
                MemoryCommand::Rollback { .. } => "memory.rollback",
                MemoryCommand::Export { out: Some(_), .. } => "memory.export",
                MemoryCommand::Import { .. } => "memory.import",
                MemoryCommand::Archive { .. } => "memory.archive",
                MemoryCommand::Create { .. } => "memory.create",
                MemoryCommand::Configure { .. } => "memory.configure",
                MemoryCommand::Share { .. } => "memory.share",
                MemoryCommand::List
                | MemoryCommand::Show { .. }
                | MemoryCommand::Log { .. }
                | MemoryCommand::Diff { .. }
                | MemoryCommand::Export { out: None, .. }
                | MemoryCommand::Search { .. } => return None,
            },
            None,
        ),
        Command::Budget(command) => (command.intent_type()?, None),
        Command::Keys(command) => (command.intent_type()?, None),
        Command::Policy(command) => (command.intent_type()?, None),
        Command::Passport(command) => (command.intent_type()?, None),
        Command::Constellation(ConstellationCommand::Backup { .. }) => ("constellation.backup", None),
        Command::Provider(_) => ("provider.serve", None),
        _ => return None,
    })
}

/// A new execution id: `exec-` and 16 hexadecimal digits from the OS's randomness.
pub fn new_execution_id() -> String {
    let random = getrandom::u64().unwrap_or_else(|error| {
        tracing::error!("the operating system gave no randomness: {error}");
        std::process::abort();
    });
    format!("exec-{random:016x}")
}

/// The request for an intent of `intent_type` on the constellation at `tenant`.
pub fn request(
    intent_type: &str,
    parameters: Value,
    tenant: &Path,
    session_id: Option<String>,
    solution_id: &str,
) -> ExecutionRequest {
    ExecutionRequest {
        execution_id: new_execution_id(),
        intent: Intent {
            intent_type: intent_type.to_owned(),
            parameters,
            metadata: json!({}),
            tenant: tenant.display().to_string(),
            session_id,
            solution_id: solution_id.to_owned(),
        },
        owner: crate::edge::owner_identity(),
        metadata: json!({ "program": "pactum", "version": env!("CARGO_PKG_VERSION") }),
        created_at_ms: crate::clock::now_ms(),
    }
}

/// Runs `command` as the intent `intent`: the registry records the execution and invokes the
/// command's handler.
pub fn execute(
    context: &Context,
    command: Command,
    (intent_type, session_id): (&'static str, Option<String>),
    argv: Vec<String>,
    solution_id: &str,
) -> Result<u8, Failure> {
    let tenant = context.constellation_path()?;
    let request = request(intent_type, json!({ "argv": argv }), &tenant, session_id, solution_id);
    // An existing constellation is bound before the handler runs (validation first); a missing
    // one is bound if and when the command creates it.
    let existing = context.open_existing()?.ok();
    let executed = registry().execute(request, existing.as_ref(), Invocation { context: context.clone(), command })?;
    if let Some(error) = executed.record_error {
        tracing::warn!(execution = %executed.execution_id, "the execution's end was not recorded as it happened: {error}");
    }
    tracing::debug!(execution = %executed.execution_id, status = ?executed.status, "execution ended");
    executed.outcome
}

fn output(code: u8, result: Value) -> HandlerOutput<u8> {
    let mut result = result;
    if let Some(object) = result.as_object_mut() {
        object.insert("exit_code".to_owned(), json!(code));
    }
    HandlerOutput::new(code, result)
}

/// Runs the command with its own function; registers nothing.
fn plain(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let context = invocation.context.for_execution(execution.binding());
    let code = crate::cli::dispatch(&context, invocation.command)?;
    Ok(output(code, json!({})))
}

fn bound_db(context: &Context) -> Result<Arc<Constellation>, Failure> {
    context
        .open_existing()?
        .map_err(|path| Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display())))
}

/// The transcript and (when it completed) the receipt of an ended session, as artifacts of the
/// execution that ended it. Returns their ids.
pub fn register_session_artifacts(execution: &ExecutionContext, state: &SessionState) -> Result<Vec<String>, Failure> {
    let Some(session_id) = state.session_id() else { return Ok(Vec::new()) };
    if !matches!(state.phase, Phase::Completed | Phase::Failed) {
        return Ok(Vec::new());
    }
    let stream_id = format!("session:{session_id}");
    let transcript = execution.register_artifact(ArtifactDraft::ready(
        "transcript",
        json!({ "stream_id": stream_id, "session_id": session_id, "phase": state.phase.as_str(), "events": state.next_seq }),
        vec![Materialization::at(format!("stream:{stream_id}"))],
    ))?;
    let mut ids = vec![transcript.clone()];
    if let (Phase::Completed, Some(agreement)) = (&state.phase, &state.agreement) {
        let receipt = execution.register_artifact(
            ArtifactDraft::ready(
                "receipt",
                json!({
                    "receipt_id": format!("rcpt-{session_id}"),
                    "session_id": session_id,
                    "provider": agreement.provider,
                    "price": { "amount_minor": agreement.price.amount_minor, "currency": agreement.price.currency },
                }),
                vec![Materialization::at(format!("session:{session_id}"))],
            )
            .with_parents([transcript]),
        )?;
        ids.push(receipt);
    }
    Ok(ids)
}

fn session_output(
    execution: &ExecutionContext,
    code: u8,
    state: Option<&SessionState>,
) -> Result<HandlerOutput<u8>, Failure> {
    let Some(state) = state else { return Ok(output(code, json!({}))) };
    register_session_artifacts(execution, state)?;
    let mut output = output(code, json!({ "session_id": state.session_id(), "phase": state.phase.as_str() }));
    output.session_id = state.session_id().map(str::to_owned);
    Ok(output)
}

fn negotiate(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Negotiate(args) = invocation.command else { return mismatch(execution) };
    let context = invocation.context.for_execution(execution.binding());
    let (code, states) = crate::negotiate_cmd::negotiate(&context, args)?;
    if let [state] = states.as_slice() {
        return session_output(execution, code, Some(state));
    }
    // Several sessions (`--parallel`, or a purchase through a broker): each one's artifacts.
    for state in &states {
        register_session_artifacts(execution, state)?;
    }
    let sessions: Vec<Value> =
        states.iter().map(|s| json!({ "session_id": s.session_id(), "phase": s.phase.as_str() })).collect();
    Ok(output(code, json!({ "sessions": sessions })))
}

fn drive_session(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Session(command) = invocation.command else { return mismatch(execution) };
    let context = invocation.context.for_execution(execution.binding());
    let (code, state) = crate::session_cmd::drive(&context, command)?;
    session_output(execution, code, state.as_ref())
}

/// The newest live artifact of `artifact_type` at `uri`, if the constellation has one.
fn parent_at(db: &Arc<Constellation>, artifact_type: &str, uri: &str) -> Result<Option<String>, Failure> {
    Ok(ArtifactRegistry::new(Arc::clone(db)).latest_at(artifact_type, uri)?.map(|a| a.artifact_id))
}

fn file_of(path: &Path, media_type: &str) -> Result<Materialization, Failure> {
    Materialization::file(path, media_type)
        .map_err(|error| Failure::new("IO_ERROR", format!("{}: {error}", path.display())))
}

fn transcript_export(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Transcript(TranscriptCommand::Export { id, format, out: Some(out), force }) = invocation.command
    else {
        return mismatch(execution);
    };
    let context = invocation.context.for_execution(execution.binding());
    let code = crate::cli::dispatch(
        &context,
        Command::Transcript(TranscriptCommand::Export { id: id.clone(), format, out: Some(out.clone()), force }),
    )?;
    let db = bound_db(&context)?;
    let (format_name, media_type) = match format {
        ExportFormat::PactumV1 => ("pactum-transcript/1", "application/jsonl"),
        ExportFormat::PactV4 => ("pact-transcript/4.0", "application/json"),
    };
    let parents = parent_at(&db, "transcript", &format!("stream:{id}"))?;
    let artifact_id = execution.register_artifact(
        ArtifactDraft::ready(
            "transcript_export",
            json!({ "stream_id": id, "format": format_name }),
            vec![file_of(&out, media_type)?],
        )
        .with_parents(parents),
    )?;
    Ok(output(code, json!({ "artifact_id": artifact_id })))
}

fn transcript_import(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Transcript(TranscriptCommand::Import { file, json }) = invocation.command else {
        return mismatch(execution);
    };
    let context = invocation.context.for_execution(execution.binding());
    let source = file_of(&file, "application/jsonl")?;
    let (stream_id, imported) = crate::transcript_cmd::import_stream(&context, &file, json)?;
    if !imported {
        return Ok(output(EXIT_OK, json!({ "stream_id": stream_id, "imported": false })));
    }
    let artifact_id = execution.register_artifact(ArtifactDraft::ready(
        "transcript",
        json!({ "stream_id": stream_id, "imported": true }),
        vec![Materialization::at(format!("stream:{stream_id}")), source],
    ))?;
    Ok(output(EXIT_OK, json!({ "stream_id": stream_id, "imported": true, "artifact_id": artifact_id })))
}

fn transcript_bundle(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Transcript(TranscriptCommand::Bundle { session, dir, view, force, json }) = invocation.command else {
        return mismatch(execution);
    };
    let context = invocation.context.for_execution(execution.binding());
    let code = crate::bundle_cmd::write(&context, &session, &dir, view, force, json)?;
    let db = bound_db(&context)?;
    let mut parents = Vec::new();
    parents.extend(parent_at(&db, "transcript", &format!("stream:session:{session}"))?);
    parents.extend(parent_at(&db, "receipt", &format!("session:{session}"))?);
    let manifest = file_of(&dir.join(pactum_runtime::bundle::MANIFEST_FILE), "application/json")?;
    let directory = std::path::absolute(&dir).unwrap_or(dir);
    let artifact_id = execution.register_artifact(
        ArtifactDraft::ready(
            "evidence_bundle",
            json!({ "session_id": session, "view": view.name(), "directory": directory.display().to_string() }),
            vec![manifest],
        )
        .with_parents(parents),
    )?;
    let mut output = output(code, json!({ "artifact_id": artifact_id }));
    output.session_id = Some(session);
    Ok(output)
}

fn memory_export(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Memory { options, command: MemoryCommand::Export { label, out: Some(out), force } } =
        invocation.command
    else {
        return mismatch(execution);
    };
    let context = invocation.context.for_execution(execution.binding());
    let descriptor = json!({ "label": label, "agent": options.agent });
    let code =
        crate::memory_cmd::run(&context, &options, MemoryCommand::Export { label, out: Some(out.clone()), force })?;
    let artifact_id = execution.register_artifact(ArtifactDraft::ready(
        "memory_block_export",
        descriptor,
        vec![file_of(&out, "application/json")?],
    ))?;
    Ok(output(code, json!({ "artifact_id": artifact_id })))
}

fn constellation_backup(execution: &ExecutionContext, invocation: Invocation) -> Result<HandlerOutput<u8>, Failure> {
    let Command::Constellation(ConstellationCommand::Backup { dest, json }) = invocation.command else {
        return mismatch(execution);
    };
    let context = invocation.context.for_execution(execution.binding());
    let code = crate::cli::dispatch(
        &context,
        Command::Constellation(ConstellationCommand::Backup { dest: dest.clone(), json }),
    )?;
    let artifact_id = execution.register_artifact(ArtifactDraft::ready(
        "constellation_backup",
        json!({ "schema_version": pactum_memory::SCHEMA_VERSION }),
        vec![file_of(&dest, "application/vnd.sqlite3")?],
    ))?;
    Ok(output(code, json!({ "artifact_id": artifact_id })))
}

fn mismatch(execution: &ExecutionContext) -> Result<HandlerOutput<u8>, Failure> {
    Err(Failure::new(
        "EXECUTION_CONTEXT_INVALID",
        format!("the command given is not a {} intent", execution.intent().intent_type),
    ))
}

/// Starts an execution whose work the caller drives (an editor's negotiation turn).
pub fn start(
    db: &Arc<Constellation>,
    intent_type: &str,
    parameters: Value,
    session_id: Option<String>,
    solution_id: &str,
) -> Result<RunningExecution, Failure> {
    let request = request(intent_type, parameters, db.path(), session_id, solution_id);
    Ok(registry().start(request, db)?)
}

/// The intent parameters of a negotiation asked for outside the command line.
pub fn negotiate_parameters(args: &crate::negotiate_cmd::NegotiateArgs) -> Value {
    json!({
        "intent_type": args.intent_type,
        "max_price": args.max_price,
        "currency": args.currency,
        "latency_ms": args.latency_ms,
        "deadline_ms": args.deadline_ms,
        "scope": args.scope,
        "urgency": args.urgency,
        "strategy": args.strategy,
        "seed": args.seed,
        "clock": args.clock,
        "policy": args.policy.as_ref().map(|p| p.display().to_string()),
        "constraint": args.constraint.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "starting_balance": args.starting_balance,
        "yes": args.yes,
    })
}

/// Ends a negotiation's execution started with [`start`]: `completed` with the session's
/// artifacts, `cancelled` when the person stopped it, `failed` when the runtime failed. A record
/// that cannot be written is logged (the negotiation's own outcome stands).
pub fn finish_negotiation(running: RunningExecution, outcome: &Result<SessionState, Failure>, cancelled: bool) {
    let execution_id = running.execution_id().to_owned();
    let recorded = match outcome {
        Ok(state) => {
            let session_id = state.session_id().map(str::to_owned);
            let result = json!({ "session_id": session_id, "phase": state.phase.as_str() });
            match register_session_artifacts(running.context(), state) {
                Err(failure) => running.fail(failure.code, &failure.message, session_id),
                Ok(_) if cancelled => running.cancel(&result, session_id),
                Ok(_) => running.complete(&result, session_id),
            }
        }
        Err(failure) => running.fail(failure.code, &failure.message, None),
    };
    if let Err(error) = recorded {
        tracing::warn!(execution = %execution_id, "the negotiation's execution could not be ended: {error}");
    }
}

/// Runs `work` as an execution of `intent_type` on `db` (work done outside the command line's
/// dispatch, such as an editor's memory edits): recorded `running`, then `completed` with the
/// result `work` gives or `failed` with its error.
pub fn run_as_execution<T>(
    db: &Arc<Constellation>,
    intent_type: &str,
    parameters: Value,
    solution_id: &str,
    work: impl FnOnce() -> Result<(T, Value), Failure>,
) -> Result<T, Failure> {
    let running = start(db, intent_type, parameters, None, solution_id)?;
    let execution_id = running.execution_id().to_owned();
    let recorded = match work() {
        Ok((value, result)) => running.complete(&result, None).map(|()| Ok(value)),
        Err(failure) => running.fail(failure.code, &failure.message, None).map(|()| Err(failure)),
    };
    recorded.unwrap_or_else(|error| {
        tracing::warn!(execution = %execution_id, "the execution's end could not be recorded: {error}");
        Err(Failure::from(error))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_intent_type_is_registered_once() {
        let registered: Vec<_> = super::registry().intents().map(|i| i.intent_type.clone()).collect();
        assert_eq!(registered.len(), super::INTENTS.len(), "{registered:?}");
    }
}
