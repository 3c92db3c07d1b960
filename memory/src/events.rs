//! Transcript streams as stored rows. This module knows the shape of the chain (each row's
//! `prev` is the previous row's `hash`, the first row's `prev` is the stream's genesis value),
//! not how hashes are computed: that is the transcripts crate's business, and the runtime joins
//! the two.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::StoreError;
use crate::store::Constellation;

/// Where a stream came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StreamOrigin {
    /// Written by this constellation.
    Local,
    /// Imported from a transcript file.
    Imported,
}

impl StreamOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Imported => "imported",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "local" => Ok(Self::Local),
            "imported" => Ok(Self::Imported),
            other => Err(StoreError::Corrupt { detail: format!("unknown stream origin {other:?}") }),
        }
    }
}

/// One stored event, fields as the transcripts crate defines them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventRow {
    pub seq: u64,
    pub kind: String,
    /// Canonical JSON text of the body.
    pub body: String,
    pub at_ms: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
    pub signer: Option<String>,
    pub sig: Option<[u8; 64]>,
}

/// A stream's record, with its head.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamRecord {
    pub stream_id: String,
    pub origin: StreamOrigin,
    pub genesis: [u8; 32],
    pub created_at_ms: u64,
    pub event_count: u64,
    pub head_hash: Option<[u8; 32]>,
    pub head_at_ms: Option<u64>,
}

/// A stored checkpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CheckpointRow {
    pub checkpoint_id: u64,
    pub stream_id: String,
    pub seq: u64,
    pub event_hash: [u8; 32],
    pub state_hash: [u8; 32],
    /// Canonical JSON text of the state.
    pub state: String,
    pub created_at_ms: u64,
}

fn to_sql_u64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt { detail: format!("{value} does not fit SQLite's integer") })
}

fn from_sql_u64(value: i64) -> Result<u64, rusqlite::Error> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, value))
}

fn blob32(row: &rusqlite::Row<'_>, index: usize) -> Result<[u8; 32], rusqlite::Error> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes
        .try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(index, "blob32".into(), rusqlite::types::Type::Blob))
}

const STREAM_COLUMNS: &str = "stream_id, origin, genesis, created_at_ms, event_count, head_hash, head_at_ms";

fn stream_from_row(row: &rusqlite::Row<'_>) -> Result<(StreamRecord, String), rusqlite::Error> {
    let head_hash: Option<Vec<u8>> = row.get(5)?;
    let head_hash = match head_hash {
        None => None,
        Some(bytes) => Some(
            bytes
                .try_into()
                .map_err(|_| rusqlite::Error::InvalidColumnType(5, "head_hash".into(), rusqlite::types::Type::Blob))?,
        ),
    };
    let origin: String = row.get(1)?;
    Ok((
        StreamRecord {
            stream_id: row.get(0)?,
            origin: StreamOrigin::Local,
            genesis: blob32(row, 2)?,
            created_at_ms: from_sql_u64(row.get(3)?)?,
            event_count: from_sql_u64(row.get(4)?)?,
            head_hash,
            head_at_ms: row.get::<_, Option<i64>>(6)?.map(from_sql_u64).transpose()?,
        },
        origin,
    ))
}

fn read_stream(tx: &Transaction<'_>, stream_id: &str) -> Result<Option<StreamRecord>, StoreError> {
    // Runs on every append and read: a cached statement, not re-prepared each time.
    let mut statement = tx
        .prepare_cached(
            "SELECT stream_id, origin, genesis, created_at_ms, event_count, head_hash, head_at_ms
             FROM transcript_streams WHERE stream_id = ?1",
        )
        .map_err(sql_error)?;
    let found = statement.query_row([stream_id], stream_from_row).optional().map_err(sql_error)?;
    match found {
        None => Ok(None),
        Some((mut record, origin)) => {
            record.origin = StreamOrigin::parse(&origin)?;
            Ok(Some(record))
        }
    }
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn event_from_row(row: &rusqlite::Row<'_>) -> Result<EventRow, rusqlite::Error> {
    let sig: Option<Vec<u8>> = row.get(7)?;
    let sig = match sig {
        None => None,
        Some(bytes) => Some(
            bytes
                .try_into()
                .map_err(|_| rusqlite::Error::InvalidColumnType(7, "sig".into(), rusqlite::types::Type::Blob))?,
        ),
    };
    Ok(EventRow {
        seq: from_sql_u64(row.get(0)?)?,
        kind: row.get(1)?,
        body: row.get(2)?,
        at_ms: from_sql_u64(row.get(3)?)?,
        prev: blob32(row, 4)?,
        hash: blob32(row, 5)?,
        signer: row.get(6)?,
        sig,
    })
}

impl Constellation {
    /// Creates the stream if it does not exist. An existing stream must have the same genesis.
    pub fn ensure_stream(
        &self,
        stream_id: &str,
        origin: StreamOrigin,
        genesis: [u8; 32],
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some(existing) = read_stream(tx, stream_id)? {
                if existing.genesis != genesis {
                    return Err(StoreError::Corrupt { detail: format!("stream {stream_id} has a different genesis") });
                }
                return Ok(());
            }
            tx.execute(
                "INSERT INTO transcript_streams (stream_id, origin, genesis, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![stream_id, origin.as_str(), genesis.as_slice(), to_sql_u64(created_at_ms)?],
            )
            .map_err(sql_error)?;
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// The stream's record, or `None`.
    pub fn stream(&self, stream_id: &str) -> Result<Option<StreamRecord>, StoreError> {
        self.read(|tx| read_stream(tx, stream_id)).map_err(|e| self.with_path(e))
    }

    /// Every stream, most recently created first.
    pub fn list_streams(&self) -> Result<Vec<StreamRecord>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare(&format!(
                    "SELECT {STREAM_COLUMNS} FROM transcript_streams ORDER BY created_at_ms DESC, stream_id"
                ))
                .map_err(sql_error)?;
            let rows = statement.query_map([], stream_from_row).map_err(sql_error)?;
            let mut streams = Vec::new();
            for row in rows {
                let (mut record, origin) = row.map_err(sql_error)?;
                record.origin = StreamOrigin::parse(&origin)?;
                streams.push(record);
            }
            Ok(streams)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Appends consecutive events in one transaction. Refuses (writing nothing) events that do
    /// not extend the head: the first must have `seq == event_count` and `prev` equal to the
    /// head's hash (or the genesis value), and each next one must link to the one before.
    pub fn append_events(&self, stream_id: &str, rows: &[EventRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|tx| append_rows(tx, stream_id, rows)).map_err(|e| self.with_path(e))
    }

    /// Like [`Constellation::append_events`], but a missing stream is created in the same
    /// transaction when the rows start it (seq 0): a stream never exists without its first
    /// events, even if the process dies between the two.
    pub fn append_events_creating(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        rows: &[EventRow],
    ) -> Result<(), StoreError> {
        self.append_events_with_checkpoint(stream_id, genesis, rows, None).map(|_| ())
    }

    /// [`Constellation::append_events_creating`], and a checkpoint at the last of the new
    /// events stored in the same transaction: a state and the events it folds become durable
    /// together. Returns the checkpoint's id.
    pub fn append_events_with_checkpoint(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        rows: &[EventRow],
        checkpoint: Option<&CheckpointRow>,
    ) -> Result<Option<u64>, StoreError> {
        self.append_session_events(stream_id, genesis, rows, checkpoint, None)
    }

    /// [`Constellation::append_events_with_checkpoint`] for a session stream, with a change of
    /// the session's owner in the same transaction: a new session is claimed by its first
    /// write (a second claimant's whole write is refused), an ended one released by its last.
    pub fn append_session_events(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        rows: &[EventRow],
        checkpoint: Option<&CheckpointRow>,
        owner_change: Option<crate::sessions::OwnerChange<'_>>,
    ) -> Result<Option<u64>, StoreError> {
        if rows.is_empty() {
            return Ok(None);
        }
        self.append_session_events_then(stream_id, genesis, rows, checkpoint, owner_change, |_| Ok::<_, StoreError>(()))
            .map(|(checkpoint_id, ())| checkpoint_id)
    }

    /// [`Constellation::append_session_events`], then `then` with the ledger, all in one
    /// transaction: what the session recorded and what `then` moves on the ledger commit
    /// together or not at all. `rows` may be empty (only `then` runs). An error from `then`
    /// rolls everything back.
    pub fn append_session_events_then<T, E: From<StoreError>>(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        rows: &[EventRow],
        checkpoint: Option<&CheckpointRow>,
        owner_change: Option<crate::sessions::OwnerChange<'_>>,
        then: impl FnOnce(&crate::ledger::LedgerTx<'_>) -> Result<T, E>,
    ) -> Result<(Option<u64>, T), E> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| E::from(StoreError::sqlite(self.path(), e)))?;
        let checkpoint_id = match rows.first() {
            None => None,
            Some(first) => append_session_rows(&transaction, stream_id, genesis, first, rows, checkpoint, owner_change)
                .map_err(|e| E::from(self.with_path(e)))?,
        };
        let value = then(&crate::ledger::LedgerTx::new(&transaction))?;
        self.before_commit().map_err(E::from)?;
        transaction.commit().map_err(|e| E::from(StoreError::sqlite(self.path(), e)))?;
        Ok((checkpoint_id, value))
    }
}

impl crate::ledger::LedgerTx<'_> {
    /// [`Constellation::append_session_events`] inside this transaction: a further write of
    /// the session in the same commit (its events after the ones the transaction began with).
    pub fn append_session_events(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        rows: &[EventRow],
        checkpoint: Option<&CheckpointRow>,
        owner_change: Option<crate::sessions::OwnerChange<'_>>,
    ) -> Result<Option<u64>, StoreError> {
        match rows.first() {
            None => owner_change
                .map_or(Ok(None), |change| crate::sessions::change_owner(self.tx(), &change, stream_id).map(|()| None)),
            Some(first) => append_session_rows(self.tx(), stream_id, genesis, first, rows, checkpoint, owner_change),
        }
    }
}

fn append_session_rows(
    tx: &Transaction<'_>,
    stream_id: &str,
    genesis: [u8; 32],
    first: &EventRow,
    rows: &[EventRow],
    checkpoint: Option<&CheckpointRow>,
    owner_change: Option<crate::sessions::OwnerChange<'_>>,
) -> Result<Option<u64>, StoreError> {
    if let Some(change) = &owner_change {
        crate::sessions::change_owner(tx, change, stream_id)?;
    }
    match read_stream(tx, stream_id)? {
        Some(existing) if existing.genesis != genesis => {
            return Err(StoreError::Corrupt { detail: format!("stream {stream_id} has a different genesis") });
        }
        Some(_) => {}
        None if first.seq == 0 => {
            tx.prepare_cached(
                "INSERT INTO transcript_streams (stream_id, origin, genesis, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    stream_id,
                    StreamOrigin::Local.as_str(),
                    genesis.as_slice(),
                    i64::try_from(first.at_ms).unwrap_or(i64::MAX)
                ])
            })
            .map_err(sql_error)?;
        }
        None => return Err(StoreError::StreamNotFound(stream_id.to_owned())),
    }
    append_rows(tx, stream_id, rows)?;
    checkpoint.map(|checkpoint| insert_checkpoint(tx, checkpoint)).transpose()
}

impl Constellation {
    /// Up to `limit` events with `seq >= from_seq`. The rows read back are checked against the
    /// chain's shape (contiguous seqs, each `prev` the hash before it, the last one matching the
    /// recorded head); a mismatch is [`StoreError::Corrupt`], never silently returned.
    pub fn read_events(&self, stream_id: &str, from_seq: u64, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        self.read(|tx| {
            let stream = read_stream(tx, stream_id)?.ok_or_else(|| StoreError::StreamNotFound(stream_id.to_owned()))?;
            let mut expected_prev = if from_seq == 0 {
                Some(stream.genesis)
            } else {
                let before = tx
                    .query_row(
                        "SELECT hash FROM transcript_events WHERE stream_id = ?1 AND seq = ?2",
                        params![stream_id, to_sql_u64(from_seq - 1)?],
                        |row| blob32(row, 0),
                    )
                    .optional()
                    .map_err(sql_error)?;
                if before.is_none() && from_seq <= stream.event_count {
                    return Err(StoreError::Corrupt {
                        detail: format!("stream {stream_id}: stored event {} is missing", from_seq - 1),
                    });
                }
                before
            };
            let rows = select_rows(tx, stream_id, from_seq, limit)?;
            let row_count = rows.len();
            let mut expected_seq = from_seq;
            for row in &rows {
                let linked = expected_prev.is_none_or(|prev| prev == row.prev);
                if row.seq != expected_seq || !linked {
                    return Err(StoreError::Corrupt {
                        detail: format!(
                            "stream {stream_id}: stored event {} does not link to event {}",
                            row.seq,
                            expected_seq.wrapping_sub(1)
                        ),
                    });
                }
                expected_prev = Some(row.hash);
                expected_seq += 1;
                if row.seq + 1 == stream.event_count && Some(row.hash) != stream.head_hash {
                    return Err(StoreError::Corrupt {
                        detail: format!("stream {stream_id}: last event does not match the recorded head"),
                    });
                }
            }
            if row_count < limit && from_seq < stream.event_count && expected_seq != stream.event_count {
                return Err(StoreError::Corrupt {
                    detail: format!(
                        "stream {stream_id}: records {} events but only {expected_seq} are stored",
                        stream.event_count
                    ),
                });
            }
            Ok(rows)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Up to `limit` events with `seq >= from_seq`, exactly as stored, without the read-back
    /// checks of [`Constellation::read_events`]. For auditing (verify, export), where the
    /// verifier must see tampered rows to say precisely which link is broken and why.
    pub fn read_events_raw(&self, stream_id: &str, from_seq: u64, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        self.read(|tx| {
            if read_stream(tx, stream_id)?.is_none() {
                return Err(StoreError::StreamNotFound(stream_id.to_owned()));
            }
            select_rows(tx, stream_id, from_seq, limit)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Stores a checkpoint; returns its id.
    pub fn put_checkpoint(&self, checkpoint: &CheckpointRow) -> Result<u64, StoreError> {
        self.write(|tx| insert_checkpoint(tx, checkpoint)).map_err(|e| self.with_path(e))
    }

    /// A checkpoint of `stream_id` by id; `latest` picks the newest one instead.
    pub fn checkpoint(&self, stream_id: &str, id: Option<u64>) -> Result<Option<CheckpointRow>, StoreError> {
        self.read(|tx| {
            let sql = "SELECT checkpoint_id, stream_id, seq, event_hash, state_hash, state, created_at_ms
                       FROM transcript_checkpoints WHERE stream_id = ?1 AND (?2 IS NULL OR checkpoint_id = ?2)
                       ORDER BY checkpoint_id DESC LIMIT 1";
            let id = id.map(to_sql_u64).transpose()?;
            let mut statement = tx.prepare_cached(sql).map_err(sql_error)?;
            statement
                .query_row(params![stream_id, id], |row| {
                    Ok(CheckpointRow {
                        checkpoint_id: from_sql_u64(row.get(0)?)?,
                        stream_id: row.get(1)?,
                        seq: from_sql_u64(row.get(2)?)?,
                        event_hash: blob32(row, 3)?,
                        state_hash: blob32(row, 4)?,
                        state: row.get(5)?,
                        created_at_ms: from_sql_u64(row.get(6)?)?,
                    })
                })
                .optional()
                .map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Binds `key_id` to `public_key`. Binding the same key again is a no-op; a different key
    /// under an existing id is [`StoreError::KeyConflict`].
    pub fn put_signing_key(
        &self,
        key_id: &str,
        public_key: [u8; 32],
        origin: StreamOrigin,
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|tx| put_key(tx, key_id, public_key, origin, created_at_ms)).map_err(|e| self.with_path(e))
    }

    /// Every signing key: (key id, public key).
    pub fn signing_keys(&self) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        self.read(|tx| {
            let mut statement =
                tx.prepare("SELECT key_id, public_key FROM signing_keys ORDER BY key_id").map_err(sql_error)?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, blob32(row, 1)?))).map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The public keys that came with an imported stream (empty for local streams).
    pub fn stream_keys(&self, stream_id: &str) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare("SELECT key_id, public_key FROM stream_keys WHERE stream_id = ?1 ORDER BY key_id")
                .map_err(sql_error)?;
            let rows = statement.query_map([stream_id], |row| Ok((row.get(0)?, blob32(row, 1)?))).map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Imports a whole stream in one transaction: either all of it lands or none. `keys` are
    /// stored for this stream only. `next_row` yields the rows in order (`Ok(None)` at the end);
    /// an `Err` from it aborts the import. Refuses if the stream id is already taken.
    pub fn import_stream(
        &self,
        stream_id: &str,
        genesis: [u8; 32],
        created_at_ms: u64,
        keys: &[(String, [u8; 32])],
        next_row: &mut dyn FnMut() -> Result<Option<EventRow>, String>,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            if read_stream(tx, stream_id)?.is_some() {
                return Err(StoreError::Conflict {
                    stream: stream_id.to_owned(),
                    seq: 0,
                    detail: "a transcript with this id already exists".into(),
                });
            }
            tx.execute(
                "INSERT INTO transcript_streams (stream_id, origin, genesis, created_at_ms) VALUES (?1, 'imported', ?2, ?3)",
                params![stream_id, genesis.as_slice(), to_sql_u64(created_at_ms)?],
            )
            .map_err(sql_error)?;
            for (key_id, public_key) in keys {
                tx.execute(
                    "INSERT INTO stream_keys (stream_id, key_id, public_key) VALUES (?1, ?2, ?3)",
                    params![stream_id, key_id, public_key.as_slice()],
                )
                .map_err(sql_error)?;
            }
            // Rows go in a page at a time through the link-checked path, all in this transaction.
            const IMPORT_PAGE_ROWS: usize = 1024;
            let mut imported = 0;
            let mut page = Vec::with_capacity(IMPORT_PAGE_ROWS);
            loop {
                let row = next_row().map_err(|detail| StoreError::Corrupt { detail })?;
                let done = row.is_none();
                page.extend(row);
                if page.len() == IMPORT_PAGE_ROWS || (done && !page.is_empty()) {
                    append_rows(tx, stream_id, &page)?;
                    imported += page.len() as u64;
                    page.clear();
                }
                if done {
                    return Ok(imported);
                }
            }
        })
        .map_err(|e| self.with_path(e))
    }

    /// Fills in this constellation's path on errors raised inside transactions.
    pub(crate) fn with_path(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Sqlite { path, source } if path.as_os_str().is_empty() => {
                StoreError::sqlite(self.path(), source)
            }
            other => other,
        }
    }
}

fn insert_checkpoint(tx: &Transaction<'_>, checkpoint: &CheckpointRow) -> Result<u64, StoreError> {
    let values = (to_sql_u64(checkpoint.seq)?, to_sql_u64(checkpoint.created_at_ms)?);
    tx.prepare_cached(
        "INSERT INTO transcript_checkpoints (stream_id, seq, event_hash, state_hash, state, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            checkpoint.stream_id,
            values.0,
            checkpoint.event_hash.as_slice(),
            checkpoint.state_hash.as_slice(),
            checkpoint.state,
            values.1,
        ])
    })
    .map_err(sql_error)?;
    Ok(tx.last_insert_rowid() as u64)
}

/// Up to `limit` stored rows of a stream with `seq >= from_seq`, in order, unchecked.
fn select_rows(
    tx: &Transaction<'_>,
    stream_id: &str,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<EventRow>, StoreError> {
    let mut statement = tx
        .prepare_cached(
            "SELECT seq, kind, body, at_ms, prev, hash, signer, sig FROM transcript_events
             WHERE stream_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(sql_error)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows =
        statement.query_map(params![stream_id, to_sql_u64(from_seq)?, limit], event_from_row).map_err(sql_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
}

fn append_rows(tx: &Transaction<'_>, stream_id: &str, rows: &[EventRow]) -> Result<(), StoreError> {
    let stream = read_stream(tx, stream_id)?.ok_or_else(|| StoreError::StreamNotFound(stream_id.to_owned()))?;
    let mut expected_seq = stream.event_count;
    let mut expected_prev = stream.head_hash.unwrap_or(stream.genesis);
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO transcript_events (stream_id, seq, kind, body, at_ms, prev, hash, signer, sig)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql_error)?;
    for row in rows {
        if row.seq != expected_seq || row.prev != expected_prev {
            return Err(StoreError::Conflict {
                stream: stream_id.to_owned(),
                seq: row.seq,
                detail: format!(
                    "expected seq {expected_seq} with prev {}, got seq {} with prev {}",
                    hex(&expected_prev),
                    row.seq,
                    hex(&row.prev)
                ),
            });
        }
        statement
            .execute(params![
                stream_id,
                to_sql_u64(row.seq)?,
                row.kind,
                row.body,
                to_sql_u64(row.at_ms)?,
                row.prev.as_slice(),
                row.hash.as_slice(),
                row.signer,
                row.sig.as_ref().map(|s| s.as_slice()),
            ])
            .map_err(sql_error)?;
        expected_seq += 1;
        expected_prev = row.hash;
    }
    let last = rows.last().map(|row| (row.hash, row.at_ms));
    if let Some((hash, at_ms)) = last {
        let (count, at_ms) = (to_sql_u64(expected_seq)?, to_sql_u64(at_ms)?);
        tx.prepare_cached(
            "UPDATE transcript_streams SET event_count = ?2, head_hash = ?3, head_at_ms = ?4 WHERE stream_id = ?1",
        )
        .and_then(|mut update| update.execute(params![stream_id, count, hash.as_slice(), at_ms]))
        .map_err(sql_error)?;
    }
    Ok(())
}

fn put_key(
    tx: &Transaction<'_>,
    key_id: &str,
    public_key: [u8; 32],
    origin: StreamOrigin,
    created_at_ms: u64,
) -> Result<(), StoreError> {
    let existing: Option<[u8; 32]> = tx
        .query_row("SELECT public_key FROM signing_keys WHERE key_id = ?1", [key_id], |row| blob32(row, 0))
        .optional()
        .map_err(sql_error)?;
    match existing {
        Some(bound) if bound == public_key => Ok(()),
        Some(_) => Err(StoreError::KeyConflict(key_id.to_owned())),
        None => {
            tx.execute(
                "INSERT INTO signing_keys (key_id, public_key, origin, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![key_id, public_key.as_slice(), origin.as_str(), to_sql_u64(created_at_ms)?],
            )
            .map_err(sql_error)?;
            Ok(())
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
