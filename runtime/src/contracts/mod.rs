//! Runtime contracts: how work enters the runtime and what it leaves behind.
//!
//! - [`IntentRegistry`]: handlers keyed by intent type (`negotiate`, `transcript.export`, ...),
//!   registered once each. [`IntentRegistry::execute`] creates an execution, validates its
//!   [`ExecutionContext`], invokes the handler and records how it ended; handlers never write the
//!   execution record.
//! - Executions: `created` → `running` → `completed` | `failed` | `cancelled`, durable in the
//!   constellation (migration 13), forward-only (SQLite triggers), each transition in the
//!   execution's log ([`Wal`]). One transaction starts an execution, one ends it (with the
//!   artifacts it made). An execution whose process stopped while it ran is marked `failed` with
//!   `EXECUTION_INTERRUPTED` by the next execution that starts on the constellation
//!   ([`recover_interrupted`]).
//! - [`StateSurface`]: session- and execution-scoped values, and negotiation sessions' state
//!   read through the session runtime.
//! - [`ArtifactRegistry`]: artifacts (receipts, transcripts, exports, bundles, backups) with
//!   their producer, parents, descriptor, materializations and a forward-only lifecycle.
//!
//! Nothing here reads the OS clock or randomness: execution ids and the owner's identity come
//! from the caller, times from a [`pactum_transcripts::Clock`], artifact ids derive from the
//! execution id.

mod artifacts;
mod context;
mod registry;
mod state;

use pactum_memory::StoreError;

pub use artifacts::{
    Artifact, ArtifactDraft, ArtifactQuery, ArtifactRegistry, Lifecycle, Materialization, artifact_id_for,
    check_artifact_id,
};
pub use context::{Binding, ExecutionContext, ExecutionRequest, Intent, check_execution_id};
pub use registry::{
    Executed, ExecutionStatus, Handler, HandlerError, HandlerOutput, IntentRegistry, RegisteredIntent,
    RunningExecution, recover_interrupted,
};
pub use state::{STATE_KEY_BYTES_MAX, STATE_VALUE_BYTES_MAX, StateSurface, Wal};

/// Intent types are short names: 1 to this many bytes.
pub const INTENT_TYPE_BYTES_MAX: usize = 64;
/// Tenant, solution and session ids: 1 to this many bytes.
pub const CONTEXT_ID_BYTES_MAX: usize = 1_024;
/// An intent's parameters and metadata, as canonical JSON: generous for a command line.
pub const INTENT_JSON_BYTES_MAX: usize = 64 * 1_024;
/// An execution's result and an artifact's descriptor, as canonical JSON.
pub const RESULT_JSON_BYTES_MAX: usize = 256 * 1_024;
/// Artifacts one execution may register (an export writes one, a negotiation two).
pub const ARTIFACTS_PER_EXECUTION_MAX: usize = 64;

/// What the contracts refuse, each with a stable code (specs/error-codes.toml).
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// No handler is registered for the intent type; nothing was recorded.
    #[error("no handler for intent {0:?}")]
    UnknownIntent(String),
    /// A second registration of an intent type.
    #[error("intent {intent_type:?} has a handler already ({handler_name})")]
    DuplicateIntent { intent_type: String, handler_name: String },
    /// The context is incomplete or inconsistent with the intent; the handler was not invoked
    /// (and the execution is recorded `failed` when its constellation is known).
    #[error("execution {execution_id}: invalid context: {reason}")]
    ContextInvalid { execution_id: String, reason: String },
    /// The process running the execution stopped before it ended.
    #[error("execution {execution_id} was interrupted: the process running it ({owner}) stopped")]
    Interrupted { execution_id: String, owner: String },
    #[error("{0:?} is not an execution id (exec- and 16 hexadecimal digits)")]
    InvalidExecutionId(String),
    #[error("no execution {0:?} in this constellation (see `pactum execution list`)")]
    ExecutionNotFound(String),
    #[error("{0:?} is not an artifact id (art- and 16 hexadecimal digits)")]
    InvalidArtifactId(String),
    #[error("no artifact {0:?} in this constellation (see `pactum artifact list`)")]
    ArtifactNotFound(String),
    /// An artifact that cannot be registered, or a filter that names no lifecycle.
    #[error("{0}")]
    ArtifactInvalid(String),
    /// A state key or value, or a log entry, the contracts refuse.
    #[error("{0}")]
    InputInvalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ContractError {
    /// The stable code printed with the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownIntent(_) => "INTENT_UNKNOWN",
            Self::DuplicateIntent { .. } => "INTENT_EXISTS",
            Self::ContextInvalid { .. } => "EXECUTION_CONTEXT_INVALID",
            Self::Interrupted { .. } => "EXECUTION_INTERRUPTED",
            Self::InvalidExecutionId(_) => "EXECUTION_ID_INVALID",
            Self::ExecutionNotFound(_) => "EXECUTION_NOT_FOUND",
            Self::InvalidArtifactId(_) => "ARTIFACT_ID_INVALID",
            Self::ArtifactNotFound(_) => "ARTIFACT_NOT_FOUND",
            Self::ArtifactInvalid(_) => "ARTIFACT_INVALID",
            Self::InputInvalid(_) => "CONTRACT_INPUT_INVALID",
            Self::Store(error) => error.code(),
        }
    }
}

/// Canonical JSON of `value`, refused past `bytes_max` or when it is not I-JSON.
fn canonical(value: &serde_json::Value, what: &str, bytes_max: usize) -> Result<String, String> {
    let text = pactum_transcripts::canonical::to_canonical_string(value).map_err(|error| format!("{what}: {error}"))?;
    if text.len() > bytes_max {
        return Err(format!("{what}: {} bytes of JSON, more than {bytes_max}", text.len()));
    }
    Ok(text)
}

/// Lowercase hex of the first 8 bytes of SHA-256 over `parts` joined by NUL bytes.
fn short_digest(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update([0]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix` followed by exactly 16 lowercase hexadecimal digits.
fn is_prefixed_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
