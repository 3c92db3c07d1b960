//! Extension methods for scripts (`_pactum/...`): structured JSON in and out, no conversation
//! needed. Each reads the same data as the matching `pactum ... --json` command and returns the
//! same document. Documented with examples in docs/PROTOCOL.md.
//!
//! - `_pactum/negotiate` {intentType, approve, maxPrice?, currency?, latencyMs?, deadlineMs?,
//!   strategy?, seed?, clock?, scope?, cwd?}: runs a negotiation (omitted price, currency and
//!   strategy come from the buyer's preferences). `approve: true` is consent to
//!   pay the negotiated price (never above maxPrice); `false` negotiates without paying.
//! - `_pactum/session/get` {sessionId, cwd?}, `_pactum/transcript/get` {transcriptId, cwd?},
//!   `_pactum/transcript/verify` {transcriptId, cwd?}, `_pactum/receipt/get` {sessionId, cwd?}.
//!
//! - `_pactum/memory/<verb>` for list, show, set, append, log, diff, rollback, export, import,
//!   search and archive: the `pactum memory` verbs, with {agent?, asAgent?, label, version, text,
//!   message, base, from, to, before, query, limit, document (import)}; each returns the verb's
//!   `--json` document.
//!
//! - `_pactum/execution/status` {executionId, cwd?}: an execution's record, log and artifacts
//!   (`pactum execution show --json`); `_pactum/artifact/resolve` {artifactId, cwd?} (`pactum
//!   artifact show --json`); `_pactum/artifact/list` {type?, executionId?, state?, cwd?}
//!   (`pactum artifact list --json`).
//!
//! `cwd` (absolute) picks the constellation as for a session opened there.

use std::path::PathBuf;
use std::sync::Arc;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::{Client, Error};
use serde::Deserialize;
use serde_json::Value;

use pactum_runtime::session::shell::{Approver, OfferToApprove, Quiet};

use crate::acp::state::{Server, Workspace};
use crate::failure::Failure;
use crate::negotiate_cmd::{NegotiateArgs, build_request, result_json, runtime_on};

/// The solution id of work asked through extension methods.
pub const SOLUTION_EXT: &str = "acp:ext";

pub const NEGOTIATE: &str = "_pactum/negotiate";
pub const SESSION_GET: &str = "_pactum/session/get";
pub const TRANSCRIPT_GET: &str = "_pactum/transcript/get";
pub const TRANSCRIPT_VERIFY: &str = "_pactum/transcript/verify";
pub const RECEIPT_GET: &str = "_pactum/receipt/get";
pub const EXECUTION_STATUS: &str = "_pactum/execution/status";
pub const ARTIFACT_RESOLVE: &str = "_pactum/artifact/resolve";
pub const ARTIFACT_LIST: &str = "_pactum/artifact/list";
pub const TRANSCRIPT_REPLAY: &str = "_pactum/transcript/replay";
pub const PASSPORT_GET: &str = "_pactum/passport/get";
/// `_pactum/memory/<verb>`: the verbs of `pactum memory`.
pub const MEMORY_PREFIX: &str = "_pactum/memory/";
/// The memory verbs served as extension methods.
pub const MEMORY_VERBS: &[&str] =
    &["list", "show", "set", "append", "log", "diff", "rollback", "export", "import", "search", "archive"];

/// Parameters of the `_pactum/memory/*` methods (each verb uses the ones it needs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MemoryParams {
    agent: Option<String>,
    #[serde(default)]
    as_agent: bool,
    cwd: Option<PathBuf>,
    label: Option<String>,
    version: Option<u64>,
    text: Option<String>,
    message: Option<String>,
    base: Option<u64>,
    from: Option<u64>,
    to: Option<u64>,
    before: Option<u64>,
    query: Option<String>,
    limit: Option<usize>,
    /// For `import`: the export document itself.
    document: Option<Value>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

/// The `pactum memory` arguments of a `_pactum/memory/<verb>` request.
fn memory_argv(verb: &str, request: &MemoryParams) -> Result<Vec<String>, Failure> {
    let need = |value: &Option<String>, name: &str| {
        value.clone().ok_or_else(|| Failure::new("USAGE", format!("_pactum/memory/{verb} needs {name}")))
    };
    let number = |value: Option<u64>, name: &str| {
        value.map(|n| n.to_string()).ok_or_else(|| Failure::new("USAGE", format!("_pactum/memory/{verb} needs {name}")))
    };
    let mut argv = vec!["memory".to_owned(), verb.to_owned()];
    match verb {
        "list" => {}
        "show" => {
            let label = need(&request.label, "label")?;
            argv.push(match request.version {
                Some(version) => format!("{label}@{version}"),
                None => label,
            });
        }
        "set" | "append" => {
            argv.extend([need(&request.label, "label")?, need(&request.text, "text")?]);
            if let (Some(base), "set") = (request.base, verb) {
                argv.extend(["--base".to_owned(), base.to_string()]);
            }
        }
        "log" => {
            argv.push(need(&request.label, "label")?);
            if let Some(limit) = request.limit {
                argv.extend(["--limit".to_owned(), limit.to_string()]);
            }
            if let Some(before) = request.before {
                argv.extend(["--before".to_owned(), before.to_string()]);
            }
        }
        "diff" => {
            argv.extend([need(&request.label, "label")?, number(request.from, "from")?, number(request.to, "to")?])
        }
        "rollback" => argv.extend([need(&request.label, "label")?, number(request.version, "version")?]),
        "export" => argv.push(need(&request.label, "label")?),
        "search" => {
            argv.push(need(&request.query, "query")?);
            if let Some(limit) = request.limit {
                argv.extend(["--limit".to_owned(), limit.to_string()]);
            }
        }
        "archive" => argv.push(need(&request.text, "text")?),
        _ => return Err(Failure::new("USAGE", format!("no memory verb {verb:?}"))),
    }
    if let Some(message) = &request.message {
        argv.extend(["--message".to_owned(), message.clone()]);
    }
    if let Some(agent) = &request.agent {
        argv.extend(["--agent".to_owned(), agent.clone()]);
    }
    if request.as_agent {
        argv.push("--as-agent".to_owned());
    }
    Ok(argv)
}

fn memory(server: &Server, verb: &str, request: MemoryParams) -> Result<Value, Failure> {
    let workspace = workspace(server, request.cwd.as_ref())?;
    if verb == "import" {
        if request.as_agent {
            return Err(Failure::new("MEMORY_PERMISSION_DENIED", "imports are made by the partner, not as an agent"));
        }
        let document = request
            .document
            .as_ref()
            .ok_or_else(|| Failure::new("USAGE", "_pactum/memory/import needs document (an export document)"))?;
        let dir = tempfile::tempdir().map_err(|e| Failure::new("IO_ERROR", format!("a temporary directory: {e}")))?;
        let path = dir.path().join("import.json");
        let bytes = serde_json::to_vec(document).map_err(|e| Failure::new("INTERNAL", e.to_string()))?;
        std::fs::write(&path, bytes).map_err(|e| Failure::new("IO_ERROR", format!("{}: {e}", path.display())))?;
        let path = path.display().to_string();
        let mut argv = vec!["memory", "import", path.as_str()];
        if let Some(label) = &request.label {
            argv.extend(["--label", label]);
        }
        if let Some(agent) = &request.agent {
            argv.extend(["--agent", agent]);
        }
        return cli_json(&workspace, &argv);
    }
    let argv = memory_argv(verb, &request)?;
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    cli_json(&workspace, &argv)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NegotiateParams {
    intent_type: String,
    #[serde(default)]
    max_price: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    approve: bool,
    latency_ms: Option<u32>,
    deadline_ms: Option<u64>,
    #[serde(default)]
    strategy: Option<String>,
    seed: Option<u64>,
    clock: Option<u64>,
    #[serde(default)]
    scope: String,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionParams {
    session_id: String,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TranscriptParams {
    transcript_id: String,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecutionParams {
    #[serde(alias = "execution_id")]
    execution_id: String,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArtifactParams {
    #[serde(alias = "artifact_id")]
    artifact_id: String,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArtifactListParams {
    #[serde(default, rename = "type", alias = "artifactType", alias = "artifact_type")]
    artifact_type: Option<String>,
    #[serde(default, alias = "execution_id")]
    execution_id: Option<String>,
    #[serde(default, alias = "lifecycleState", alias = "lifecycle_state")]
    state: Option<String>,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PassportParams {
    agent_id: String,
    /// RFC 3339 or Unix milliseconds.
    as_of: Option<String>,
    cwd: Option<PathBuf>,
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

fn params<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, Error> {
    serde_json::from_value(params).map_err(|error| Error::invalid_params().data(format!("{method}: {error}")))
}

/// The JSON-RPC error for a command's failure: not found → -32002, bad input → -32602, anything
/// else → -32603; `data` carries Pactum's stable code and the message.
fn error_of(failure: &Failure) -> Error {
    let data = serde_json::json!({ "code": failure.code, "message": failure.message });
    let not_found = failure.code.ends_with("NOT_FOUND");
    let bad_input = (crate::failure::exit_code_of(failure.code) == crate::EXIT_USAGE
        && !matches!(failure.code, "IO_ERROR" | "STORE_BUSY" | "STORE_SQLITE" | "INTERNAL"))
        // A document the script sent that is not a valid export.
        || failure.code == "MEMORY_IMPORT_INVALID";
    if not_found {
        Error::new(-32002, "Resource not found").data(data)
    } else if bad_input {
        Error::invalid_params().data(data)
    } else {
        Error::internal_error().data(data)
    }
}

fn workspace(server: &Server, cwd: Option<&PathBuf>) -> Result<Arc<Workspace>, Failure> {
    match cwd {
        Some(cwd) if !cwd.is_absolute() => {
            Err(Failure::new("USAGE", format!("cwd must be an absolute path, got {}", cwd.display())))
        }
        Some(cwd) => server.workspace(cwd),
        None => server.default_workspace(),
    }
}

/// Runs a `pactum ... --json` command in `workspace` and returns its JSON document.
fn cli_json(workspace: &Workspace, argv: &[&str]) -> Result<Value, Failure> {
    let mut full = vec!["pactum".to_owned()];
    full.extend(workspace.context.global_args());
    full.extend(argv.iter().map(|&a| a.to_owned()));
    full.push("--json".to_owned());
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&full)
        .map_err(|error| Failure::new("USAGE", error.render().to_string()))?;
    let (result, text) = crate::output::capture(|| crate::cli::run_as(cli, full[1..].to_vec(), SOLUTION_EXT));
    let code = result?;
    let mut document: Value = serde_json::from_str(&text)
        .map_err(|error| Failure::new("INTERNAL", format!("a command's JSON could not be read: {error}")))?;
    if code != crate::EXIT_OK
        && let Some(object) = document.as_object_mut()
    {
        object.insert("exitCode".to_owned(), Value::from(code));
    }
    Ok(document)
}

/// Declines every payment: `approve: false` negotiates without paying.
struct NegotiateOnly;

impl Approver for NegotiateOnly {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (false, "client")
    }
}

fn negotiate(server: &Server, request: NegotiateParams) -> Result<Value, Failure> {
    let workspace = workspace(server, request.cwd.as_ref())?;
    let args = NegotiateArgs {
        intent_type: request.intent_type,
        max_price: request.max_price,
        currency: request.currency,
        latency_ms: request.latency_ms,
        deadline_ms: request.deadline_ms,
        scope: request.scope,
        urgency: "normal".to_owned(),
        strategy: request.strategy,
        seed: request.seed,
        clock: request.clock,
        policy: None,
        constraint: Vec::new(),
        coalition: Vec::new(),
        parallel: None,
        broker: None,
        broker_margin: 10,
        starting_balance: None,
        yes: request.approve,
        json: true,
    };
    let directory = workspace.directory.clone();
    let (new_session, starting_balance) = build_request(&args, &directory, Some(&workspace.db))?;
    let clock: Arc<dyn pactum_transcripts::Clock> = match args.clock {
        Some(start_ms) => Arc::new(pactum_transcripts::ManualClock::new(start_ms)),
        None => Arc::new(crate::clock::SystemClock),
    };
    let runtime = runtime_on(&workspace.db, directory, clock).with_starting_balance(starting_balance);
    let execution = crate::intents::start(
        &workspace.db,
        "negotiate",
        crate::intents::negotiate_parameters(&args),
        None,
        SOLUTION_EXT,
    )?;
    let outcome = runtime.negotiate(new_session, &mut NegotiateOnly, &mut Quiet).map_err(Failure::from);
    crate::intents::finish_negotiation(execution, &outcome, false);
    Ok(result_json(&outcome?))
}

/// An extension request's work, run on a blocking thread.
type Work = Box<dyn FnOnce(&Server) -> Result<Value, Failure> + Send>;

/// Handles one extension request.
pub async fn handle(
    server: &Arc<Server>,
    _cx: &ConnectionTo<Client>,
    method: &str,
    raw: Value,
) -> Result<Value, Error> {
    let server = Arc::clone(server);
    let work: Work = match method {
        NEGOTIATE => {
            let request: NegotiateParams = params(method, raw)?;
            Box::new(move |server| negotiate(server, request))
        }
        SESSION_GET | RECEIPT_GET => {
            let request: SessionParams = params(method, raw)?;
            let command = if method == SESSION_GET { ["session", "show"] } else { ["receipt", "show"] };
            Box::new(move |server| {
                let workspace = workspace(server, request.cwd.as_ref())?;
                cli_json(&workspace, &[command[0], command[1], &request.session_id])
            })
        }
        TRANSCRIPT_GET | TRANSCRIPT_VERIFY | TRANSCRIPT_REPLAY => {
            let request: TranscriptParams = params(method, raw)?;
            let action = match method {
                TRANSCRIPT_GET => "show",
                TRANSCRIPT_VERIFY => "verify",
                _ => "replay",
            };
            Box::new(move |server| {
                let workspace = workspace(server, request.cwd.as_ref())?;
                cli_json(&workspace, &["transcript", action, &request.transcript_id])
            })
        }
        EXECUTION_STATUS => {
            let request: ExecutionParams = params(method, raw)?;
            Box::new(move |server| {
                pactum_runtime::contracts::check_execution_id(&request.execution_id)?;
                let workspace = workspace(server, request.cwd.as_ref())?;
                crate::contracts_cmd::execution_json(&workspace.db, &request.execution_id)
            })
        }
        ARTIFACT_RESOLVE => {
            let request: ArtifactParams = params(method, raw)?;
            Box::new(move |server| {
                pactum_runtime::contracts::check_artifact_id(&request.artifact_id)?;
                let workspace = workspace(server, request.cwd.as_ref())?;
                crate::contracts_cmd::artifact_json(&workspace.db, &request.artifact_id)
            })
        }
        ARTIFACT_LIST => {
            let request: ArtifactListParams = params(method, raw)?;
            Box::new(move |server| {
                let query =
                    crate::contracts_cmd::query(request.artifact_type, request.execution_id, request.state.as_deref())?;
                let workspace = workspace(server, request.cwd.as_ref())?;
                crate::contracts_cmd::artifacts_json(Some(&workspace.db), &query)
            })
        }
        PASSPORT_GET => {
            let request: PassportParams = params(method, raw)?;
            Box::new(move |server| {
                let workspace = workspace(server, request.cwd.as_ref())?;
                let mut argv = vec!["passport", "show", request.agent_id.as_str()];
                if let Some(as_of) = &request.as_of {
                    argv.extend(["--as-of", as_of.as_str()]);
                }
                cli_json(&workspace, &argv)
            })
        }
        other if other.strip_prefix(MEMORY_PREFIX).is_some_and(|verb| MEMORY_VERBS.contains(&verb)) => {
            let verb = other[MEMORY_PREFIX.len()..].to_owned();
            let request: MemoryParams = params(method, raw)?;
            Box::new(move |server| memory(server, &verb, request))
        }
        other => return Err(Error::method_not_found().data(other.to_owned())),
    };
    tokio::task::spawn_blocking(move || work(&server))
        .await
        .map_err(|error| Error::internal_error().data(format!("a background task failed: {error}")))?
        .map_err(|failure| error_of(&failure))
}
