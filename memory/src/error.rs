//! Store errors, each with a stable code (specs/error-codes.toml).

use std::path::{Path, PathBuf};

/// Everything the constellation store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not an SQLite database.
    #[error("{} is not a Pactum constellation: it is not an SQLite database", path.display())]
    NotSqlite { path: PathBuf },
    /// An SQLite database that Pactum did not create (its application id is not Pactum's).
    #[error("{} is not a Pactum constellation: it is an SQLite database of another application (application_id {application_id:#010x})", path.display())]
    NotConstellation { path: PathBuf, application_id: u32 },
    /// Written by a newer Pactum; opening it could misread or damage data.
    #[error("{} was written by a newer Pactum (schema version {found}; this build supports up to {supported}): upgrade Pactum to open it", path.display())]
    SchemaTooNew { path: PathBuf, found: u32, supported: u32 },
    /// A filesystem operation failed.
    #[error("{}: {what}: {source}", path.display())]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
    /// Another process held the write lock for longer than the busy timeout.
    #[error("{} is locked by another process; try again", path.display())]
    Busy { path: PathBuf },
    /// SQLite reported an error.
    #[error("{}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    /// Stored data breaks an invariant when read back.
    #[error("constellation data is corrupt: {detail}")]
    Corrupt { detail: String },
    /// No constellation file at this path (and the caller asked not to create one).
    #[error("no constellation at {}", path.display())]
    NotFound { path: PathBuf },
    /// No stream with this id.
    #[error("no transcript with id {0:?} in this constellation")]
    StreamNotFound(String),
    /// An append that does not extend the stream's head; nothing was written.
    #[error("transcript {stream}: event {seq} does not extend the head: {detail}")]
    Conflict { stream: String, seq: u64, detail: String },
    /// A key id already bound to another public key.
    #[error("key id {0} is already bound to a different public key")]
    KeyConflict(String),
    /// No record of this kind with this id.
    #[error("no {what} with id {id:?} in this constellation")]
    NotFoundId { what: &'static str, id: String },
    /// A value the store refuses to keep (too long, empty, out of range); nothing was written.
    #[error("{detail}")]
    Invalid { detail: String },
    /// No signing key with this key id.
    #[error("no key with key id {0:?} in this constellation")]
    KeyNotFound(String),
    /// The key is on the revocation list already; the list is append-only.
    #[error("key {0} is revoked already")]
    KeyAlreadyRevoked(String),
    /// A lifecycle move the store refuses (an execution or artifact moving backwards, or out of
    /// a terminal state); nothing was written.
    #[error("{what} {id}: {detail}")]
    Refused { what: &'static str, id: String, detail: String },
    /// A write stopped before its commit by fault injection
    /// ([`crate::Constellation::stop_before_write`]); nothing of it was written.
    #[error("write {write} was stopped before its commit (injected fault); nothing of it was written")]
    Stopped { write: u64 },
    /// A backup would overwrite an existing file.
    #[error("{} already exists; choose a new backup path", path.display())]
    DestinationExists { path: PathBuf },
}

impl StoreError {
    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), what, source }
    }

    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Busy { path: path.to_owned() }
            }
            Some(rusqlite::ErrorCode::NotADatabase) => Self::NotSqlite { path: path.to_owned() },
            Some(
                rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::PermissionDenied,
            ) => Self::Io {
                path: path.to_owned(),
                what: "cannot open for writing",
                source: std::io::Error::other(source.to_string()),
            },
            _ => Self::Sqlite { path: path.to_owned(), source },
        }
    }

    /// The stable code printed with the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSqlite { .. } | Self::NotConstellation { .. } => "STORE_NOT_CONSTELLATION",
            Self::SchemaTooNew { .. } => "STORE_SCHEMA_TOO_NEW",
            Self::Io { .. } | Self::Stopped { .. } => "IO_ERROR",
            Self::Busy { .. } => "STORE_BUSY",
            Self::Sqlite { .. } => "STORE_SQLITE",
            Self::Corrupt { .. } => "STORE_CORRUPT",
            Self::StreamNotFound(_) => "TRANSCRIPT_NOT_FOUND",
            Self::NotFound { .. } => "CONSTELLATION_NOT_FOUND",
            Self::Conflict { .. } => "STORE_CONFLICT",
            Self::KeyConflict(_) => "KEY_CONFLICT",
            Self::KeyNotFound(_) => "KEY_NOT_FOUND",
            Self::KeyAlreadyRevoked(_) => "KEY_ALREADY_REVOKED",
            Self::DestinationExists { .. } => "DESTINATION_EXISTS",
            Self::NotFoundId { .. } => "NOT_FOUND",
            Self::Invalid { .. } => "STORE_INPUT_INVALID",
            Self::Refused { .. } => "TRANSITION_REFUSED",
        }
    }
}
