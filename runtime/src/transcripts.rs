//! Transcript operations on a constellation: list, read, verify, export and import.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use pactum_memory::{Constellation, StoreError, StreamOrigin, StreamRecord};
use pactum_transcripts::jsonl::{self, FileHeader};
use pactum_transcripts::limits::READ_PAGE_EVENTS;
use pactum_transcripts::{Anchor, Clock, Digest, Event, KeyId, KeyRing, StreamId, Verifier, VerifyReport};

use crate::error::RuntimeError;

/// Largest transcript file `import` accepts. Imports are checked whole before anything is
/// written, so the file is held in memory; 256 MiB is far beyond any negotiation transcript.
pub const IMPORT_BYTES_MAX: u64 = 256 * 1024 * 1024;
use crate::event_store::{from_row, to_row};

/// A stream as `pactum transcript list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream: StreamId,
    pub origin: StreamOrigin,
    pub created_at_ms: u64,
    pub event_count: u64,
    pub head_hash: Option<Digest>,
    pub head_at_ms: Option<u64>,
}

impl StreamSummary {
    fn from_record(record: StreamRecord) -> Result<Self, RuntimeError> {
        let stream = StreamId::new(record.stream_id.clone())
            .map_err(|e| StoreError::Corrupt { detail: format!("stream id {:?}: {e}", record.stream_id) })?;
        Ok(Self {
            stream,
            origin: record.origin,
            created_at_ms: record.created_at_ms,
            event_count: record.event_count,
            head_hash: record.head_hash.map(Digest::from_bytes),
            head_at_ms: record.head_at_ms,
        })
    }

    pub fn anchor(&self) -> Anchor {
        Anchor { event_count: self.event_count, head_hash: self.head_hash }
    }
}

/// Every stream in the constellation, newest first.
pub fn list_streams(db: &Constellation) -> Result<Vec<StreamSummary>, RuntimeError> {
    db.list_streams()?.into_iter().map(StreamSummary::from_record).collect()
}

fn summary(db: &Constellation, stream_id: &str) -> Result<StreamSummary, RuntimeError> {
    let record = db.stream(stream_id)?.ok_or_else(|| StoreError::StreamNotFound(stream_id.to_owned()))?;
    StreamSummary::from_record(record)
}

/// The keys this constellation verifies signatures with.
pub fn key_ring(db: &Constellation) -> Result<KeyRing, RuntimeError> {
    let mut ring = KeyRing::new();
    for (key_id, public_key) in db.signing_keys()? {
        let key_id = KeyId::new(key_id.clone())
            .map_err(|e| StoreError::Corrupt { detail: format!("key id {key_id:?}: {e}") })?;
        ring.insert_bytes(key_id, &public_key)?;
    }
    Ok(ring)
}

/// Visits a stream's events page by page, as stored (see [`Constellation::read_events_raw`]):
/// the callers audit what is there, so tampered rows reach the verifier instead of an error.
fn for_each_event(
    db: &Constellation,
    stream: &StreamId,
    mut visit: impl FnMut(&Event) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut next = 0;
    loop {
        let page = db.read_events_raw(stream.as_str(), next, READ_PAGE_EVENTS)?;
        let page_len = page.len();
        for row in page {
            next = row.seq + 1;
            let event = from_row(stream, row).map_err(pactum_transcripts::TranscriptError::from)?;
            visit(&event)?;
        }
        if page_len < READ_PAGE_EVENTS {
            return Ok(());
        }
    }
}

/// A stream's summary and all its events (for `pactum transcript show`).
pub fn stream_events(db: &Arc<Constellation>, stream_id: &str) -> Result<(StreamSummary, Vec<Event>), RuntimeError> {
    let summary = summary(db, stream_id)?;
    let mut events = Vec::new();
    for_each_event(db, &summary.stream, |event| {
        events.push(event.clone());
        Ok(())
    })?;
    Ok((summary, events))
}

/// Verifies a stored stream against the constellation's keys and its recorded head.
pub fn verify_stream(db: &Arc<Constellation>, stream_id: &str) -> Result<VerifyReport, RuntimeError> {
    let summary = summary(db, stream_id)?;
    let keys = key_ring(db)?;
    let mut verifier = Verifier::new(summary.stream.clone(), &keys);
    for_each_event(db, &summary.stream, |event| {
        verifier.push(event);
        Ok(())
    })?;
    Ok(verifier.finish(Some(summary.anchor())))
}

/// What an export wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub stream: StreamId,
    pub events: u64,
    pub head_hash: Option<Digest>,
    /// The stored stream's verification, done while exporting.
    pub report: VerifyReport,
}

/// Writes a stream as a `pactum-transcript/1` file, with the public keys of its signers in the
/// header. The file is written whatever the stream's state (an auditor may want a broken one);
/// the returned report says whether it verifies.
pub fn export_stream(
    db: &Arc<Constellation>,
    stream_id: &str,
    out: &mut dyn Write,
) -> Result<ExportSummary, RuntimeError> {
    let summary = summary(db, stream_id)?;
    let all_keys = key_ring(db)?;
    let mut signers = BTreeSet::new();
    for_each_event(db, &summary.stream, |event| {
        if let Some(signer) = &event.signer {
            signers.insert(signer.clone());
        }
        Ok(())
    })?;
    let mut keys = KeyRing::new();
    for signer in signers {
        if let Some(key) = all_keys.get(&signer) {
            keys.insert(signer, *key)?;
        }
    }
    let header = FileHeader {
        stream: summary.stream.clone(),
        event_count: summary.event_count,
        head_hash: summary.head_hash,
        keys: keys.clone(),
    };
    let mut buffered = std::io::BufWriter::new(out);
    jsonl::write_header(&mut buffered, &header)?;
    let mut verifier = Verifier::new(summary.stream.clone(), &keys);
    let mut events = 0;
    // Events are written as they are read, so memory stays flat for long streams.
    for_each_event(db, &summary.stream, |event| {
        jsonl::write_event(&mut buffered, event)?;
        verifier.push(event);
        events += 1;
        Ok(())
    })?;
    buffered.flush()?;
    let report = verifier.finish(Some(summary.anchor()));
    tracing::debug!(stream = %summary.stream, events, valid = report.is_valid(), "exported transcript");
    Ok(ExportSummary { stream: summary.stream, events, head_hash: summary.head_hash, report })
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The stream was stored.
    Imported { stream: StreamId, events: u64, signed: u64 },
    /// An identical stream (same length and head hash) was already present; nothing changed.
    AlreadyPresent { stream: StreamId, events: u64 },
}

/// Imports a transcript file. The whole file is verified (with the keys of its header) before
/// anything is written, then stored with its keys in one transaction. A header key that would
/// rebind a key id this constellation already knows is refused.
///
/// The file is held in memory while it is checked, so its size is bounded by [`IMPORT_BYTES_MAX`].
pub fn import_file(db: &Arc<Constellation>, path: &Path, clock: &dyn Clock) -> Result<ImportOutcome, RuntimeError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > IMPORT_BYTES_MAX {
        return Err(RuntimeError::TooLarge { size, limit: IMPORT_BYTES_MAX });
    }
    let (header, events) = jsonl::read_file(std::io::BufReader::new(file))?;
    let report = pactum_transcripts::verify_events(&header.stream, &events, &header.keys, Some(header.anchor()));
    if let Some(broken) = report.first_break {
        return Err(RuntimeError::Tampered { stream: header.stream.to_string(), broken });
    }
    let local_keys = key_ring(db)?;
    for (key_id, key) in header.keys.iter() {
        if local_keys.get(key_id).is_some_and(|local| local != key) {
            return Err(RuntimeError::Key(pactum_transcripts::KeyError::Conflict(key_id.clone())));
        }
    }
    if let Some(existing) = db.stream(header.stream.as_str())? {
        let same = existing.event_count == header.event_count
            && existing.head_hash.map(Digest::from_bytes) == header.head_hash;
        return if same {
            Ok(ImportOutcome::AlreadyPresent { stream: header.stream, events: existing.event_count })
        } else {
            Err(RuntimeError::ImportConflict(header.stream.to_string()))
        };
    }
    let rows =
        events.iter().map(to_row).collect::<Result<Vec<_>, _>>().map_err(pactum_transcripts::TranscriptError::from)?;
    let keys: Vec<(String, [u8; 32])> =
        header.keys.iter().map(|(id, key)| (id.as_str().to_owned(), key.to_bytes())).collect();
    let created_at_ms = events.first().map_or_else(|| clock.now_ms(), |e| e.at_ms);
    db.import_stream(header.stream.as_str(), *header.stream.genesis().as_bytes(), created_at_ms, &keys, &rows)?;
    tracing::info!(stream = %header.stream, events = events.len(), "imported transcript");
    Ok(ImportOutcome::Imported {
        stream: header.stream,
        events: events.len() as u64,
        signed: report.signatures_verified,
    })
}
