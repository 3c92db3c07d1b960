//! The intent registry and the execution lifecycle it owns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use pactum_memory::{Constellation, ExecutionEnd, NewArtifact};
use pactum_transcripts::Clock;

use super::context::{Binding, ExecutionContext, ExecutionRequest, check_intent_type_name, validate_request};
use super::{ContractError, RESULT_JSON_BYTES_MAX, canonical, check_execution_id};
use crate::session::shell::OwnerLiveness;

/// Where an execution is in its lifecycle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExecutionStatus {
    Created,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Created, Self::Running, Self::Completed, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A handler's error as the execution records it: a stable code and a message.
pub trait HandlerError {
    fn code(&self) -> &str;
    fn message(&self) -> String;
}

/// What a handler returns when it did its job.
#[derive(Clone, PartialEq, Debug)]
pub struct HandlerOutput<O> {
    /// Given back to the caller, not stored.
    pub value: O,
    /// Stored as the execution's result (a JSON value).
    pub result: Value,
    /// The session the execution turned out to concern (a negotiation learns its id as it runs).
    pub session_id: Option<String>,
    /// The work stopped on request: the execution ends `cancelled` rather than `completed`.
    pub cancelled: bool,
}

impl<O> HandlerOutput<O> {
    pub fn new(value: O, result: Value) -> Self {
        Self { value, result, session_id: None, cancelled: false }
    }
}

/// A registered handler: invoked with the execution's context and the caller's payload (the
/// typed command; its JSON form is the intent's parameters).
pub type Handler<P, O, E> = Box<dyn Fn(&ExecutionContext, P) -> Result<HandlerOutput<O>, E> + Send + Sync>;

/// What is registered for an intent type, besides its handler.
#[derive(Clone, PartialEq, Debug)]
pub struct RegisteredIntent {
    pub intent_type: String,
    pub handler_name: String,
    pub metadata: Value,
}

/// An execution's end as the caller sees it.
#[derive(Debug)]
pub struct Executed<O, E> {
    pub execution_id: String,
    /// The recorded final status; `None` when the execution never reached a constellation (the
    /// handler refused its input before opening one), so nothing was recorded.
    pub status: Option<ExecutionStatus>,
    /// The handler's own outcome.
    pub outcome: Result<O, E>,
    /// Recording the end failed (the handler's work stands; the execution stays `running` until
    /// recovery marks it interrupted).
    pub record_error: Option<ContractError>,
}

/// Handlers by intent type; registering a type twice is an error.
pub struct IntentRegistry<P, O, E> {
    handlers: BTreeMap<String, (RegisteredIntent, Handler<P, O, E>)>,
    clock: Arc<dyn Clock>,
    liveness: Option<Arc<dyn OwnerLiveness>>,
}

impl<P, O, E> std::fmt::Debug for IntentRegistry<P, O, E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IntentRegistry").field("intents", &self.handlers.keys().collect::<Vec<_>>()).finish()
    }
}

impl<P, O, E: HandlerError> IntentRegistry<P, O, E> {
    /// A registry whose executions take their times from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { handlers: BTreeMap::new(), clock, liveness: None }
    }

    /// Before an execution starts on a constellation, executions left `running` by a process
    /// that `liveness` says is gone are marked `failed` (`EXECUTION_INTERRUPTED`).
    #[must_use]
    pub fn with_liveness(mut self, liveness: Arc<dyn OwnerLiveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Registers `handler` for `intent_type` under `handler_name`, with free-form `metadata`.
    pub fn register_intent(
        &mut self,
        intent_type: &str,
        handler_name: &str,
        handler: impl Fn(&ExecutionContext, P) -> Result<HandlerOutput<O>, E> + Send + Sync + 'static,
        metadata: Value,
    ) -> Result<(), ContractError> {
        check_intent_type_name(intent_type)?;
        if let Some((existing, _)) = self.handlers.get(intent_type) {
            return Err(ContractError::DuplicateIntent {
                intent_type: intent_type.to_owned(),
                handler_name: existing.handler_name.clone(),
            });
        }
        let registered =
            RegisteredIntent { intent_type: intent_type.to_owned(), handler_name: handler_name.to_owned(), metadata };
        self.handlers.insert(intent_type.to_owned(), (registered, Box::new(handler)));
        Ok(())
    }

    /// Every registered intent, by type.
    pub fn intents(&self) -> impl Iterator<Item = &RegisteredIntent> {
        self.handlers.values().map(|(registered, _)| registered)
    }

    pub fn is_registered(&self, intent_type: &str) -> bool {
        self.handlers.contains_key(intent_type)
    }

    fn prepare(
        &self,
        request: &ExecutionRequest,
        db: Option<&Arc<Constellation>>,
    ) -> Result<(&RegisteredIntent, Binding), ContractError> {
        let Some((registered, _)) = self.handlers.get(&request.intent.intent_type) else {
            return Err(ContractError::UnknownIntent(request.intent.intent_type.chars().take(80).collect()));
        };
        check_execution_id(&request.execution_id)?;
        let canonical = match validate_request(request) {
            Ok(canonical) => canonical,
            Err(reason) => {
                if let Some(db) = db {
                    Binding::refuse(db, request, &registered.handler_name, &reason);
                }
                return Err(ContractError::ContextInvalid { execution_id: request.execution_id.clone(), reason });
            }
        };
        let binding = Binding::new(
            request.clone(),
            registered.handler_name.clone(),
            canonical,
            self.liveness.clone(),
            Arc::clone(&self.clock),
        );
        if let Some(db) = db {
            binding.bind(db)?;
        }
        Ok((registered, binding))
    }

    /// Runs `request`: validates it, records the execution (`created` → `running`) on `db` — or,
    /// with no `db`, when the handler binds one — invokes the handler with `payload`, and
    /// records how it ended with the artifacts it registered. An unknown intent type records
    /// nothing; a context that fails validation is recorded `failed` (when the constellation is
    /// known) and its handler is not invoked.
    pub fn execute(
        &self,
        request: ExecutionRequest,
        db: Option<&Arc<Constellation>>,
        payload: P,
    ) -> Result<Executed<O, E>, ContractError> {
        let (_, binding) = self.prepare(&request, db)?;
        let (_, handler) = &self.handlers[&request.intent.intent_type];
        let context = ExecutionContext::new(&request, binding.clone(), Arc::clone(&self.clock));
        let outcome = handler(&context, payload);
        let Some(db) = binding.running_on() else {
            return Ok(Executed {
                execution_id: request.execution_id,
                status: None,
                outcome: outcome.map(|o| o.value),
                record_error: None,
            });
        };
        let running = RunningExecution { context, db, clock: Arc::clone(&self.clock) };
        let (status, record_error, outcome) = match outcome {
            Ok(output) => {
                let status = if output.cancelled { ExecutionStatus::Cancelled } else { ExecutionStatus::Completed };
                let recorded = running.end(status, None, &output.result, output.session_id.clone());
                match recorded {
                    Ok(()) => (status, None, Ok(output.value)),
                    Err((status, error)) => (status, Some(error), Ok(output.value)),
                }
            }
            Err(error) => {
                let failure = (error.code().to_owned(), error.message());
                match running.end(ExecutionStatus::Failed, Some(failure), &Value::Null, None) {
                    Ok(()) => (ExecutionStatus::Failed, None, Err(error)),
                    Err((status, record_error)) => (status, Some(record_error), Err(error)),
                }
            }
        };
        Ok(Executed { execution_id: request.execution_id, status: Some(status), outcome, record_error })
    }

    /// Starts an execution whose work the caller drives itself (an asynchronous front end): the
    /// intent type must be registered, the context is validated and the execution recorded
    /// `running` on `db`; the caller ends it with [`RunningExecution`]'s methods.
    pub fn start(&self, request: ExecutionRequest, db: &Arc<Constellation>) -> Result<RunningExecution, ContractError> {
        let (_, binding) = self.prepare(&request, Some(db))?;
        let context = ExecutionContext::new(&request, binding, Arc::clone(&self.clock));
        Ok(RunningExecution { context, db: Arc::clone(db), clock: Arc::clone(&self.clock) })
    }
}

/// An execution recorded `running`, ended by one of its methods (one transaction each).
#[derive(Debug)]
pub struct RunningExecution {
    context: ExecutionContext,
    db: Arc<Constellation>,
    clock: Arc<dyn Clock>,
}

impl RunningExecution {
    pub fn context(&self) -> &ExecutionContext {
        &self.context
    }

    pub fn execution_id(&self) -> &str {
        self.context.execution_id()
    }

    /// Ends the execution `completed` with `result`, writing the artifacts it registered.
    pub fn complete(self, result: &Value, session_id: Option<String>) -> Result<(), ContractError> {
        self.end(ExecutionStatus::Completed, None, result, session_id).map_err(|(_, error)| error)
    }

    /// Ends the execution `cancelled` (registered artifacts are written: what was made stands).
    pub fn cancel(self, result: &Value, session_id: Option<String>) -> Result<(), ContractError> {
        self.end(ExecutionStatus::Cancelled, None, result, session_id).map_err(|(_, error)| error)
    }

    /// Ends the execution `failed` with `code` and `message` (registered artifacts are dropped).
    pub fn fail(self, code: &str, message: &str, session_id: Option<String>) -> Result<(), ContractError> {
        self.end(ExecutionStatus::Failed, Some((code.to_owned(), message.to_owned())), &Value::Null, session_id)
            .map_err(|(_, error)| error)
    }

    /// Writes the end. If it cannot be written with the artifacts (one refused), the execution
    /// is ended `failed` with that error instead; the status recorded is returned with the error.
    fn end(
        self,
        status: ExecutionStatus,
        failure: Option<(String, String)>,
        result: &Value,
        session_id: Option<String>,
    ) -> Result<(), (ExecutionStatus, ContractError)> {
        let at_ms = self.clock.now_ms();
        let execution_id = self.context.execution_id().to_owned();
        let tenant = self.context.intent().tenant.clone();
        let intent_type = self.context.intent().intent_type.clone();
        let drafts = self.context.take_artifacts();
        let attempt = || -> Result<(), ContractError> {
            let result = match result {
                Value::Null => None,
                value => Some(
                    canonical(value, "the execution's result", RESULT_JSON_BYTES_MAX)
                        .map_err(ContractError::InputInvalid)?,
                ),
            };
            let artifacts = if status == ExecutionStatus::Failed {
                Vec::new()
            } else {
                drafts
                    .iter()
                    .map(|(artifact_id, draft)| draft.to_new(artifact_id, &tenant, &execution_id, &intent_type, at_ms))
                    .collect::<Result<Vec<NewArtifact>, _>>()?
            };
            let end = ExecutionEnd {
                status: status.as_str().to_owned(),
                error_code: failure.as_ref().map(|(code, _)| code.clone()),
                error_message: failure.as_ref().map(|(_, message)| message.clone()),
                result,
                session_id: session_id.clone(),
                at_ms,
            };
            self.db.finish_execution(&execution_id, &end, &artifacts)?;
            Ok(())
        };
        match attempt() {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(execution = %execution_id, "recording the end of the execution failed: {error}");
                let end = ExecutionEnd {
                    status: ExecutionStatus::Failed.as_str().to_owned(),
                    error_code: Some(error.code().to_owned()),
                    error_message: Some(error.to_string()),
                    result: None,
                    session_id,
                    at_ms,
                };
                match self.db.finish_execution(&execution_id, &end, &[]) {
                    Ok(()) => Err((ExecutionStatus::Failed, error)),
                    Err(_) => Err((ExecutionStatus::Running, error)),
                }
            }
        }
    }
}

/// Marks `failed` (`EXECUTION_INTERRUPTED`) every execution still `created` or `running` whose
/// owner is neither `current_owner` nor alive. Returns their ids.
pub fn recover_interrupted(
    db: &Arc<Constellation>,
    liveness: &dyn OwnerLiveness,
    current_owner: &str,
    now_ms: u64,
) -> Result<Vec<String>, ContractError> {
    let mut recovered = Vec::new();
    for execution in db.unfinished_executions()? {
        if execution.owner == current_owner || liveness.is_alive(&execution.owner) {
            continue;
        }
        let error =
            ContractError::Interrupted { execution_id: execution.execution_id.clone(), owner: execution.owner.clone() };
        let end = ExecutionEnd {
            status: ExecutionStatus::Failed.as_str().to_owned(),
            error_code: Some(error.code().to_owned()),
            error_message: Some(error.to_string()),
            result: None,
            session_id: None,
            at_ms: now_ms.max(execution.updated_at_ms),
        };
        match db.finish_execution(&execution.execution_id, &end, &[]) {
            Ok(()) => {
                tracing::warn!(execution = %execution.execution_id, "marked an execution interrupted by a stopped process");
                recovered.push(execution.execution_id);
            }
            // Another process recovered it first.
            Err(pactum_memory::StoreError::Refused { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(recovered)
}
