//! The constellation store: all durable state of one constellation in one SQLite file.
//!
//! - [`Constellation::open`]: identifies the file (SQLite header, `application_id`), refuses
//!   foreign and newer-schema files before touching them, sets WAL, foreign keys, the busy
//!   timeout and the `synchronous` level, and runs versioned migrations (`user_version`).
//! - Transcript rows ([`EventRow`]): append-only (enforced by triggers), link-checked on write
//!   and on read-back. The hashing recipe lives in the transcripts crate; this crate does not
//!   depend on it.
//! - [`Constellation::info`] and [`Constellation::backup`] (SQLite online backup API).
//!
//! - Versioned memory ([`blocks`]): Loro documents with their full history, and archival passages
//!   searched with FTS5 ([`Passage`]).
//!
//! Callers pass every timestamp stored with data; the only clock and randomness read here are
//! SQLite's: the constellation's creation time and random id in `meta`, and the random ids of
//! memory blocks and Loro peers.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod agents;
mod archive;
pub mod blocks;
mod constraints;
mod conversations;
mod error;
mod events;
mod executions;
mod graphs;
mod keys;
mod ledger;
mod passport;
mod policies;
mod schema;
mod sessions;
mod store;

pub use agents::{AgentRecord, AgentRole, SecretSeed};
pub use archive::{PASSAGE_CHARS_MAX, Passage, SEARCH_LIMIT_MAX};
pub use constraints::{
    AGENT_CONSTRAINTS_MAX, CONSTRAINT_NAME_BYTES_MAX, ConstraintRow, ConstraintStoreError, SpendRow, SpendTotals,
};
pub use conversations::{
    CONVERSATION_TITLE_BYTES_MAX, CONVERSATION_UPDATE_BYTES_MAX, CONVERSATION_UPDATES_MAX, ConversationMode,
    ConversationRow, ConversationUpdate,
};
pub use error::StoreError;
pub use events::{CheckpointRow, EventRow, StreamOrigin, StreamRecord};
pub use executions::{
    ArtifactFilter, ArtifactRow, ExecutionEnd, ExecutionLogEntry, ExecutionRow, ExecutionStart, LIST_ROWS_MAX,
    LOG_TRANSITION, NewArtifact, NewExecution,
};
pub use graphs::{GraphEdgeRow, GraphRow};
pub use keys::{AgentKey, KeyRevocation, KeyStatus, REVOCATION_REASON_BYTES_MAX, Rotation};
pub use ledger::{
    Account, AccountKind, LedgerCheck, LedgerError, LedgerTx, Transfer, TransferOutcome, TransferRequest,
};
pub use passport::{PassportEventRow, PassportRowRef, PassportSource};
pub use policies::{PolicyAdded, PolicyRow};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use sessions::{OwnerChange, SessionRow};
pub use store::{BUSY_TIMEOUT_MS, BackupReport, Constellation, Durability, Info, OpenOptions};
