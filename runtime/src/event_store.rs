//! [`EventStore`] over the constellation's SQLite tables: the durable home of transcript streams.

use std::sync::Arc;

use pactum_memory::{CheckpointRow, Constellation, EventRow, LedgerTx, OwnerChange, StoreError as DbError};
use pactum_transcripts::canonical::{parse_strict, to_canonical_string};
use pactum_transcripts::{
    Checkpoint, CheckpointId, Digest, Event, EventKind, EventStore, Head, KeyId, SignatureBytes, StoreError, StreamId,
    TranscriptError, state_hash_of_canonical,
};
use serde_json::Value;

use crate::error::RuntimeError;

/// Transcript streams stored in a constellation. Appends are single SQLite transactions: an
/// event is durable when `append` returns `Ok`. A stream is created by its first append, in the
/// same transaction, so a crash never leaves an empty stream behind; `ensure_stream` only
/// checks that an existing stream has the expected genesis.
#[derive(Clone, Debug)]
pub struct ConstellationEventStore {
    db: Arc<Constellation>,
}

impl ConstellationEventStore {
    pub fn new(db: Arc<Constellation>) -> Self {
        Self { db }
    }

    pub fn constellation(&self) -> &Constellation {
        &self.db
    }
}

fn backend(error: DbError) -> StoreError {
    StoreError::Backend(Box::new(error))
}

fn corrupt(stream: &StreamId, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { stream: stream.clone(), detail: detail.into() }
}

/// Converts an event to its row; the body is stored as canonical JSON text.
pub(crate) fn to_row(event: &Event) -> Result<EventRow, StoreError> {
    let body = to_canonical_string(&event.body).map_err(|e| corrupt(&event.stream, e.to_string()))?;
    Ok(EventRow {
        seq: event.seq,
        kind: event.kind.as_str().to_owned(),
        body,
        at_ms: event.at_ms,
        prev: *event.prev.as_bytes(),
        hash: *event.hash.as_bytes(),
        signer: event.signer.as_ref().map(|k| k.as_str().to_owned()),
        sig: event.sig.map(|s| *s.as_bytes()),
    })
}

/// Converts a stored row back to an event, refusing rows whose fields are malformed.
pub(crate) fn from_row(stream: &StreamId, row: EventRow) -> Result<Event, StoreError> {
    let seq = row.seq;
    let bad = |what: String| corrupt(stream, format!("event {seq}: {what}"));
    Ok(Event {
        stream: stream.clone(),
        seq,
        kind: EventKind::new(row.kind).map_err(|e| bad(e.to_string()))?,
        body: parse_strict(&row.body).map_err(|e| bad(format!("body: {e}")))?,
        at_ms: row.at_ms,
        prev: Digest::from_bytes(row.prev),
        signer: row.signer.map(KeyId::new).transpose().map_err(|e| bad(e.to_string()))?,
        hash: Digest::from_bytes(row.hash),
        sig: row.sig.map(SignatureBytes::from_bytes),
    })
}

fn map_db_error(stream: &StreamId, error: DbError) -> StoreError {
    match error {
        DbError::Conflict { seq, detail, .. } => StoreError::Conflict { stream: stream.clone(), seq, detail },
        DbError::Corrupt { detail } => StoreError::Corrupt { stream: stream.clone(), detail },
        other => backend(other),
    }
}

impl ConstellationEventStore {
    /// Appends a session's events, an optional checkpoint and an optional change of the
    /// session's owner in one transaction.
    pub fn append_session(
        &self,
        stream: &StreamId,
        events: &[Event],
        checkpoint: Option<&SealedCheckpoint>,
        owner_change: Option<OwnerChange<'_>>,
    ) -> Result<Option<CheckpointId>, StoreError> {
        let rows = events.iter().map(to_row).collect::<Result<Vec<_>, _>>()?;
        let genesis = *stream.genesis().as_bytes();
        self.db
            .append_session_events(stream.as_str(), genesis, &rows, checkpoint.map(|c| &c.row), owner_change)
            .map(|id| id.map(CheckpointId))
            .map_err(|e| map_db_error(stream, e))
    }

    /// [`ConstellationEventStore::append_session`], then `then` with the ledger, in the same
    /// transaction: an error from `then` rolls the events back too.
    pub fn append_session_then<T>(
        &self,
        stream: &StreamId,
        events: &[Event],
        checkpoint: Option<&SealedCheckpoint>,
        owner_change: Option<OwnerChange<'_>>,
        then: impl FnOnce(&LedgerTx<'_>) -> Result<T, RuntimeError>,
    ) -> Result<(Option<CheckpointId>, T), RuntimeError> {
        /// Tells the write's own failures (mapped like every append's) from `then`'s.
        enum WriteError {
            Db(DbError),
            Then(RuntimeError),
        }
        impl From<DbError> for WriteError {
            fn from(error: DbError) -> Self {
                Self::Db(error)
            }
        }
        let rows = events.iter().map(to_row).collect::<Result<Vec<_>, _>>().map_err(TranscriptError::from)?;
        let genesis = *stream.genesis().as_bytes();
        let checkpoint = checkpoint.map(|c| &c.row);
        self.db
            .append_session_events_then(stream.as_str(), genesis, &rows, checkpoint, owner_change, |ledger| {
                then(ledger).map_err(WriteError::Then)
            })
            .map(|(id, value)| (id.map(CheckpointId), value))
            .map_err(|error| match error {
                WriteError::Db(error) => TranscriptError::from(map_db_error(stream, error)).into(),
                WriteError::Then(error) => error,
            })
    }
}

impl ConstellationEventStore {
    /// [`ConstellationEventStore::append_session`] inside a transaction already open (the one
    /// [`ConstellationEventStore::append_session_then`] hands to `then`): more of the session's
    /// events, committed with the rest of that transaction.
    pub fn append_session_in(
        ledger: &LedgerTx<'_>,
        stream: &StreamId,
        events: &[Event],
        checkpoint: Option<&SealedCheckpoint>,
        owner_change: Option<OwnerChange<'_>>,
    ) -> Result<Option<CheckpointId>, RuntimeError> {
        let rows = events.iter().map(to_row).collect::<Result<Vec<_>, _>>().map_err(TranscriptError::from)?;
        let genesis = *stream.genesis().as_bytes();
        ledger
            .append_session_events(stream.as_str(), genesis, &rows, checkpoint.map(|c| &c.row), owner_change)
            .map(|id| id.map(CheckpointId))
            .map_err(|error| TranscriptError::from(map_db_error(stream, error)).into())
    }
}

impl EventStore for ConstellationEventStore {
    fn ensure_stream(&self, stream: &StreamId, _created_at_ms: u64) -> Result<(), StoreError> {
        match self.db.stream(stream.as_str()).map_err(backend)? {
            Some(record) if record.genesis != *stream.genesis().as_bytes() => {
                Err(corrupt(stream, "the stored stream has a different genesis"))
            }
            _ => Ok(()),
        }
    }

    fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
        let record = self.db.stream(stream.as_str()).map_err(backend)?;
        Ok(record.and_then(|r| match (r.event_count, r.head_hash, r.head_at_ms) {
            (count, Some(hash), Some(at_ms)) if count > 0 => {
                Some(Head { seq: count - 1, hash: Digest::from_bytes(hash), at_ms })
            }
            _ => None,
        }))
    }

    fn append(&self, stream: &StreamId, events: &[Event]) -> Result<(), StoreError> {
        let rows = events.iter().map(to_row).collect::<Result<Vec<_>, _>>()?;
        let genesis = *stream.genesis().as_bytes();
        self.db.append_events_creating(stream.as_str(), genesis, &rows).map_err(|e| map_db_error(stream, e))
    }

    fn read(&self, stream: &StreamId, from_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let rows = self.db.read_events(stream.as_str(), from_seq, limit).map_err(|e| map_db_error(stream, e))?;
        rows.into_iter().map(|row| from_row(stream, row)).collect()
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<CheckpointId, StoreError> {
        self.db.put_checkpoint(&checkpoint_row(checkpoint)?).map(CheckpointId).map_err(backend)
    }

    fn append_with_checkpoint(
        &self,
        stream: &StreamId,
        events: &[Event],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Option<CheckpointId>, StoreError> {
        let checkpoint = checkpoint.map(SealedCheckpoint::of).transpose()?;
        self.append_session(stream, events, checkpoint.as_ref(), None)
    }

    fn checkpoint(&self, stream: &StreamId, id: CheckpointId) -> Result<Option<Checkpoint>, StoreError> {
        let row = self.db.checkpoint(stream.as_str(), Some(id.0)).map_err(backend)?;
        row.map(|row| checkpoint_from_row(stream, row)).transpose()
    }

    fn latest_checkpoint(&self, stream: &StreamId) -> Result<Option<(CheckpointId, Checkpoint)>, StoreError> {
        let row = self.db.checkpoint(stream.as_str(), None).map_err(backend)?;
        row.map(|row| Ok((CheckpointId(row.checkpoint_id), checkpoint_from_row(stream, row)?))).transpose()
    }
}

/// A checkpoint ready to be stored: its state's canonical text is worked out once, for both
/// its hash and its row (a session's state is the largest thing a write canonicalizes).
#[derive(Debug)]
pub struct SealedCheckpoint {
    row: CheckpointRow,
}

impl SealedCheckpoint {
    /// The checkpoint of `state`, the fold of `stream` up to the event `seq` whose hash is
    /// `event_hash`.
    pub fn new(
        stream: &StreamId,
        seq: u64,
        event_hash: Digest,
        state: &Value,
        created_at_ms: u64,
    ) -> Result<Self, TranscriptError> {
        let state = to_canonical_string(state)?;
        Ok(Self {
            row: CheckpointRow {
                checkpoint_id: 0,
                stream_id: stream.as_str().to_owned(),
                seq,
                event_hash: *event_hash.as_bytes(),
                state_hash: *state_hash_of_canonical(&state).as_bytes(),
                state,
                created_at_ms,
            },
        })
    }

    fn of(checkpoint: &Checkpoint) -> Result<Self, StoreError> {
        Ok(Self { row: checkpoint_row(checkpoint)? })
    }
}

fn checkpoint_row(checkpoint: &Checkpoint) -> Result<CheckpointRow, StoreError> {
    let state = to_canonical_string(&checkpoint.state).map_err(|e| corrupt(&checkpoint.stream, e.to_string()))?;
    Ok(CheckpointRow {
        checkpoint_id: 0,
        stream_id: checkpoint.stream.as_str().to_owned(),
        seq: checkpoint.seq,
        event_hash: *checkpoint.event_hash.as_bytes(),
        state_hash: *checkpoint.state_hash.as_bytes(),
        state,
        created_at_ms: checkpoint.created_at_ms,
    })
}

fn checkpoint_from_row(stream: &StreamId, row: CheckpointRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        stream: stream.clone(),
        seq: row.seq,
        event_hash: Digest::from_bytes(row.event_hash),
        state_hash: Digest::from_bytes(row.state_hash),
        state: parse_strict(&row.state)
            .map_err(|e| corrupt(stream, format!("checkpoint {}: {e}", row.checkpoint_id)))?,
        created_at_ms: row.created_at_ms,
    })
}
