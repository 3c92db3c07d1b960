//! Intents, execution requests, the context a handler receives and its binding to a
//! constellation.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use pactum_memory::{Constellation, ExecutionStart, NewExecution};
use pactum_transcripts::Clock;

use super::artifacts::{ArtifactDraft, artifact_id_for};
use super::state::{StateSurface, Wal};
use super::{
    ARTIFACTS_PER_EXECUTION_MAX, CONTEXT_ID_BYTES_MAX, ContractError, INTENT_JSON_BYTES_MAX, INTENT_TYPE_BYTES_MAX,
    canonical, is_prefixed_id,
};
use crate::session::shell::OwnerLiveness;

/// Something asked of the runtime: its type, its parameters, and where it applies.
#[derive(Clone, PartialEq, Debug)]
pub struct Intent {
    /// `negotiate`, `transcript.export`, ...: lowercase letters, digits, `.`, `_` and `-`.
    pub intent_type: String,
    /// A JSON object (the command line's arguments, for the `pactum` program).
    pub parameters: Value,
    /// A JSON object.
    pub metadata: Value,
    /// The constellation it applies to (its path).
    pub tenant: String,
    /// The negotiation session it concerns, when known before it runs.
    pub session_id: Option<String>,
    /// The front end and its context (`cli`, `acp:<conversation id>`).
    pub solution_id: String,
}

/// An intent with what the caller supplies for its execution: the id (from the caller's
/// randomness), the process that runs it, and the time.
#[derive(Clone, PartialEq, Debug)]
pub struct ExecutionRequest {
    /// `exec-` and 16 lowercase hexadecimal digits.
    pub execution_id: String,
    pub intent: Intent,
    /// This process as an owner (`pid:<pid>:<start ticks>`): recovery asks whether it still runs.
    pub owner: String,
    /// The context's metadata (a JSON object).
    pub metadata: Value,
    pub created_at_ms: u64,
}

/// Checks an execution id's form: `exec-` and 16 lowercase hexadecimal digits.
pub fn check_execution_id(execution_id: &str) -> Result<(), ContractError> {
    if is_prefixed_id(execution_id, "exec-") {
        Ok(())
    } else {
        Err(ContractError::InvalidExecutionId(execution_id.chars().take(80).collect()))
    }
}

fn check_context_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} is missing"));
    }
    if id.len() > CONTEXT_ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(format!("{what} is not an id (1-{CONTEXT_ID_BYTES_MAX} bytes, no control characters)"));
    }
    Ok(())
}

fn check_intent_type(intent_type: &str) -> Result<(), String> {
    let valid = !intent_type.is_empty()
        && intent_type.len() <= INTENT_TYPE_BYTES_MAX
        && intent_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "intent type {:?} is not 1-{INTENT_TYPE_BYTES_MAX} lowercase letters, digits, '.', '_' or '-'",
            intent_type.chars().take(80).collect::<String>()
        ))
    }
}

pub(super) fn check_intent_type_name(intent_type: &str) -> Result<(), ContractError> {
    check_intent_type(intent_type)
        .map_err(|reason| ContractError::ContextInvalid { execution_id: String::new(), reason })
}

/// What validation checks before a handler runs, apart from the constellation: the request's ids
/// are present and well formed, parameters and metadata are JSON objects within their bound.
/// Returns the canonical parameters and metadata.
pub(super) fn validate_request(request: &ExecutionRequest) -> Result<(String, String), String> {
    let intent = &request.intent;
    check_intent_type(&intent.intent_type)?;
    check_context_id("the tenant", &intent.tenant)?;
    check_context_id("the solution id", &intent.solution_id)?;
    if let Some(session_id) = &intent.session_id {
        check_context_id("the session id", session_id)?;
    }
    check_context_id("the owner", &request.owner)?;
    for (what, value) in
        [("parameters", &intent.parameters), ("metadata", &intent.metadata), ("context metadata", &request.metadata)]
    {
        if !value.is_object() {
            return Err(format!("the intent's {what} are not a JSON object"));
        }
    }
    let parameters = canonical(&intent.parameters, "parameters", INTENT_JSON_BYTES_MAX)?;
    let metadata = canonical(
        &serde_json::json!({ "context": request.metadata, "intent": intent.metadata }),
        "metadata",
        INTENT_JSON_BYTES_MAX,
    )?;
    Ok((parameters, metadata))
}

/// The constellation an execution is recorded in, bound when known: before the handler runs
/// when the caller has it open, or by the handler when it opens (or creates) it — so an intent
/// refused before it touches any constellation leaves no record and creates nothing.
///
/// The first bind validates the context against the constellation (the intent's tenant must be
/// the constellation's path) and writes the execution's first transaction: `created` →
/// `running`, or `created` → `failed` when validation fails.
#[derive(Clone, Debug)]
pub struct Binding(Arc<Mutex<BindingState>>);

#[derive(Debug)]
struct BindingState {
    request: ExecutionRequest,
    handler_name: String,
    parameters: String,
    metadata: String,
    liveness: Option<Arc<dyn OwnerLiveness>>,
    clock: Arc<dyn Clock>,
    db: Option<Arc<Constellation>>,
    /// `Some(Ok)` once running, `Some(Err(reason))` once refused.
    started: Option<Result<(), String>>,
}

impl Binding {
    pub(super) fn new(
        request: ExecutionRequest,
        handler_name: String,
        (parameters, metadata): (String, String),
        liveness: Option<Arc<dyn OwnerLiveness>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self(Arc::new(Mutex::new(BindingState {
            request,
            handler_name,
            parameters,
            metadata,
            liveness,
            clock,
            db: None,
            started: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BindingState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds the execution to `db` and starts it (idempotent for the same constellation). An
    /// interrupted execution of a process that stopped is marked first ([`super::recover_interrupted`]).
    pub fn bind(&self, db: &Arc<Constellation>) -> Result<(), ContractError> {
        let mut state = self.lock();
        let execution_id = state.request.execution_id.clone();
        if let Some(bound) = &state.db {
            if bound.path() != db.path() {
                return Err(ContractError::ContextInvalid {
                    execution_id,
                    reason: format!("bound to {} already, not {}", bound.path().display(), db.path().display()),
                });
            }
            return match &state.started {
                Some(Err(reason)) => Err(ContractError::ContextInvalid { execution_id, reason: reason.clone() }),
                _ => Ok(()),
            };
        }
        if let Some(liveness) = &state.liveness {
            super::recover_interrupted(db, liveness.as_ref(), &state.request.owner, state.clock.now_ms())?;
        }
        let tenant = db.path().display().to_string();
        let refusal = (state.request.intent.tenant != tenant).then(|| {
            format!("the intent's tenant {:?} is not the constellation {tenant:?}", state.request.intent.tenant)
        });
        let start = match &refusal {
            None => ExecutionStart::Running,
            Some(reason) => ExecutionStart::Refused {
                error_code: "EXECUTION_CONTEXT_INVALID".to_owned(),
                error_message: ContractError::ContextInvalid {
                    execution_id: execution_id.clone(),
                    reason: reason.clone(),
                }
                .to_string(),
            },
        };
        let record = NewExecution {
            execution_id: execution_id.clone(),
            intent_type: state.request.intent.intent_type.clone(),
            handler_name: state.handler_name.clone(),
            parameters: state.parameters.clone(),
            metadata: state.metadata.clone(),
            tenant: state.request.intent.tenant.clone(),
            solution_id: state.request.intent.solution_id.clone(),
            session_id: state.request.intent.session_id.clone(),
            owner: state.request.owner.clone(),
            created_at_ms: state.request.created_at_ms,
        };
        db.begin_execution(&record, &start)?;
        state.db = Some(Arc::clone(db));
        match refusal {
            None => {
                state.started = Some(Ok(()));
                Ok(())
            }
            Some(reason) => {
                state.started = Some(Err(reason.clone()));
                Err(ContractError::ContextInvalid { execution_id, reason })
            }
        }
    }

    /// Records a refusal found before the handler ran (validation), when the constellation is
    /// known: `created` → `failed`.
    pub(super) fn refuse(db: &Arc<Constellation>, request: &ExecutionRequest, handler_name: &str, reason: &str) {
        let canonical_or_empty = |value: &Value| {
            pactum_transcripts::canonical::to_canonical_string(value).unwrap_or_else(|_| "{}".to_owned())
        };
        let record = NewExecution {
            execution_id: request.execution_id.clone(),
            intent_type: request.intent.intent_type.chars().take(INTENT_TYPE_BYTES_MAX).collect(),
            handler_name: handler_name.to_owned(),
            parameters: if request.intent.parameters.is_object() {
                canonical_or_empty(&request.intent.parameters)
            } else {
                "{}".to_owned()
            },
            metadata: "{}".to_owned(),
            tenant: request.intent.tenant.clone(),
            solution_id: request.intent.solution_id.clone(),
            session_id: None,
            owner: request.owner.clone(),
            created_at_ms: request.created_at_ms,
        };
        let start = ExecutionStart::Refused {
            error_code: "EXECUTION_CONTEXT_INVALID".to_owned(),
            error_message: ContractError::ContextInvalid {
                execution_id: request.execution_id.clone(),
                reason: reason.to_owned(),
            }
            .to_string(),
        };
        if let Err(error) = db.begin_execution(&record, &start) {
            tracing::warn!(execution = %request.execution_id, "the refused execution could not be recorded: {error}");
        }
    }

    /// The constellation, once the execution runs on it.
    pub(super) fn running_on(&self) -> Option<Arc<Constellation>> {
        let state = self.lock();
        match state.started {
            Some(Ok(())) => state.db.clone(),
            _ => None,
        }
    }

    pub(super) fn tenant(&self) -> Option<String> {
        self.lock().db.as_ref().map(|db| db.path().display().to_string())
    }
}

/// What a handler receives: the execution's ids, its intent, and (once the execution is bound
/// to its constellation) the state surface and the log. Artifacts registered here are written
/// when the execution ends, in the transaction that completes it.
#[derive(Debug)]
pub struct ExecutionContext {
    execution_id: String,
    intent: Intent,
    metadata: Value,
    created_at_ms: u64,
    binding: Binding,
    clock: Arc<dyn Clock>,
    artifacts: Mutex<Vec<(String, ArtifactDraft)>>,
}

impl ExecutionContext {
    pub(super) fn new(request: &ExecutionRequest, binding: Binding, clock: Arc<dyn Clock>) -> Self {
        Self {
            execution_id: request.execution_id.clone(),
            intent: request.intent.clone(),
            metadata: request.metadata.clone(),
            created_at_ms: request.created_at_ms,
            binding,
            clock,
            artifacts: Mutex::new(Vec::new()),
        }
    }

    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// The constellation's path once bound (it equals the intent's tenant: validation checks it).
    pub fn tenant(&self) -> Option<String> {
        self.binding.tenant()
    }

    pub fn session_id(&self) -> Option<&str> {
        self.intent.session_id.as_deref()
    }

    pub fn solution_id(&self) -> &str {
        &self.intent.solution_id
    }

    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// The binding, for a handler that opens the constellation itself.
    pub fn binding(&self) -> Binding {
        self.binding.clone()
    }

    fn bound(&self) -> Result<Arc<Constellation>, ContractError> {
        self.binding.running_on().ok_or_else(|| ContractError::ContextInvalid {
            execution_id: self.execution_id.clone(),
            reason: "the execution is not running on a constellation".to_owned(),
        })
    }

    /// The state surface of this execution (once bound).
    pub fn state(&self) -> Result<StateSurface, ContractError> {
        Ok(StateSurface::new(self.bound()?, self.execution_id.clone(), Arc::clone(&self.clock)))
    }

    /// This execution's log (once bound).
    pub fn wal(&self) -> Result<Wal, ContractError> {
        Ok(Wal::new(self.bound()?, self.execution_id.clone(), Arc::clone(&self.clock)))
    }

    /// Registers an artifact this execution made; returns its id (derived from the execution id
    /// and the artifact's position, so usable as a parent of the next one at once). It is
    /// written when the execution ends, and only if it completes.
    pub fn register_artifact(&self, draft: ArtifactDraft) -> Result<String, ContractError> {
        draft.check()?;
        let mut artifacts = self.artifacts.lock().unwrap_or_else(PoisonError::into_inner);
        if artifacts.len() >= ARTIFACTS_PER_EXECUTION_MAX {
            return Err(ContractError::ArtifactInvalid(format!(
                "an execution registers at most {ARTIFACTS_PER_EXECUTION_MAX} artifacts"
            )));
        }
        let artifact_id = artifact_id_for(&self.execution_id, artifacts.len());
        artifacts.push((artifact_id.clone(), draft));
        Ok(artifact_id)
    }

    pub(super) fn take_artifacts(&self) -> Vec<(String, ArtifactDraft)> {
        std::mem::take(&mut *self.artifacts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
