//! Runtime errors with stable codes (specs/error-codes.toml).

use pactum_memory::StoreError;
use pactum_transcripts::jsonl::FileError;
use pactum_transcripts::{Break, KeyError, TranscriptError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transcript(#[from] TranscriptError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A transcript offered for import does not verify; nothing was stored.
    #[error("transcript {stream} does not verify: {broken}")]
    Tampered { stream: String, broken: Break },
    /// The file changed between verification and storage; nothing was stored.
    #[error("transcript {0}: the file changed while it was being imported; nothing was stored")]
    ImportChanged(String),
    /// An agent id that is not 1-64 lowercase letters, digits or '-'.
    #[error("{0:?} is not an agent id (1-64 lowercase letters, digits or '-')")]
    InvalidAgentId(String),
    /// A stream already exists with different content.
    #[error("a different transcript with id {0} already exists in this constellation")]
    ImportConflict(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No session with this id in the constellation.
    #[error("no session {0:?} in this constellation (see `pactum session list`)")]
    SessionNotFound(String),
    /// Another running process is driving the session.
    #[error("session {session_id} is being driven by another running process ({owner})")]
    SessionBusy { session_id: String, owner: String },
    /// The operation needs an ended session.
    #[error("session {session_id} is still {phase}")]
    SessionNotTerminal { session_id: String, phase: &'static str },
    #[error("every session id derived from seed {0} is taken; use another seed")]
    SessionIdsExhausted(u64),
    /// A test stopped the runtime on purpose (see `AgentRuntime::with_injected_stop_after`).
    #[error("stopped on purpose after the rail's {0} step, before recording it")]
    InjectedStop(&'static str),
    #[error(transparent)]
    Intent(#[from] crate::intent::IntentError),
    #[error(transparent)]
    Step(#[from] crate::session::step::StepError),
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    #[error(transparent)]
    Receipt(#[from] crate::session::receipt::ReceiptError),
    #[error(transparent)]
    Memory(#[from] pactum_memory::blocks::MemoryError),
    /// A transcript offered to the passport cannot be read as a negotiation's outcome.
    #[error("{0}")]
    PassportSource(String),
    /// A dispute that cannot be recorded.
    #[error("{0}")]
    Dispute(String),
    /// A ruling on this dispute is recorded already; rulings are never replaced.
    #[error("{0} has a ruling already; a ruling is never replaced")]
    DisputeExists(String),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    Contract(#[from] crate::contracts::ContractError),
    /// A stored session that cannot be expressed as a PACT v4 transcript (an event without a
    /// signature or without the fields of its kind).
    #[error("cannot export as PACT v4: {0}")]
    PactV4Export(String),
    /// A remote provider did not sign the receipt of a paid session; the session stays
    /// resumable (`pactum session resume`) and asks again.
    #[error("remote provider {provider} did not sign the receipt of session {session_id}: {detail}")]
    RemoteReceipt { session_id: String, provider: String, detail: String },
    /// The HTTP client for remote providers could not be made.
    #[error("cannot reach remote providers: {0}")]
    RemoteClient(String),
}

impl RuntimeError {
    /// The stable code printed with the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(error) => error.code(),
            Self::Transcript(TranscriptError::Store(pactum_transcripts::StoreError::Conflict { .. })) => {
                "STORE_CONFLICT"
            }
            Self::Transcript(TranscriptError::Store(pactum_transcripts::StoreError::Corrupt { .. })) => "STORE_CORRUPT",
            Self::Transcript(TranscriptError::Broken { .. }) => "TRANSCRIPT_TAMPERED",
            Self::Transcript(_) => "TRANSCRIPT_ERROR",
            Self::File(error) => error.code(),
            Self::Key(KeyError::Conflict(_)) => "KEY_CONFLICT",
            Self::Key(_) => "KEY_INVALID",
            Self::Tampered { .. } => "TRANSCRIPT_TAMPERED",
            Self::ImportConflict(_) => "IMPORT_CONFLICT",
            Self::ImportChanged(_) => "IMPORT_CHANGED",
            Self::InvalidAgentId(_) => "AGENT_ID_INVALID",
            Self::Io(_) => "IO_ERROR",
            Self::SessionNotFound(_) => "SESSION_NOT_FOUND",
            Self::SessionBusy { .. } => "SESSION_BUSY",
            Self::SessionNotTerminal { .. } => "SESSION_NOT_TERMINAL",
            Self::SessionIdsExhausted(_) => "SESSION_IDS_EXHAUSTED",
            Self::InjectedStop(_) => "IO_ERROR",
            Self::Intent(error) => error.code(),
            Self::Step(error) => error.code(),
            Self::Directory(error) => error.code(),
            Self::Receipt(error) => error.code(),
            Self::Memory(error) => error.code(),
            Self::PassportSource(_) => "PASSPORT_SOURCE_INVALID",
            Self::Dispute(_) => "DISPUTE_INVALID",
            Self::DisputeExists(_) => "DISPUTE_EXISTS",
            Self::Bundle(error) => error.code(),
            Self::Contract(error) => error.code(),
            Self::PactV4Export(_) => "PACT_V4_EXPORT_FAILED",
            Self::RemoteReceipt { .. } => "REMOTE_RECEIPT_FAILED",
            Self::RemoteClient(_) => "REMOTE_CLIENT_FAILED",
        }
    }
}
