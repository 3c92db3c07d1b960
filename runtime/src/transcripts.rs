//! Transcript operations on a constellation: list, read, verify, export and import.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use pactum_memory::{Constellation, EventRow, StoreError, StreamOrigin, StreamRecord};
use pactum_transcripts::canonical::to_canonical_string;
use pactum_transcripts::jsonl::{self, FileHeader, FileReader};
use pactum_transcripts::limits::READ_PAGE_EVENTS;
use pactum_transcripts::{Anchor, BreakReason, Clock, Digest, Event, KeyId, KeyRing, StreamId, Verifier, VerifyReport};

use crate::error::RuntimeError;
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

fn ring_from(keys: Vec<(String, [u8; 32])>) -> Result<KeyRing, RuntimeError> {
    let mut ring = KeyRing::new();
    for (key_id, public_key) in keys {
        let key_id = KeyId::new(key_id.clone())
            .map_err(|e| StoreError::Corrupt { detail: format!("key id {key_id:?}: {e}") })?;
        ring.insert_bytes(key_id, &public_key)?;
    }
    Ok(ring)
}

/// The constellation's own keys: what its local transcripts are verified against.
pub fn key_ring(db: &Constellation) -> Result<KeyRing, RuntimeError> {
    ring_from(db.signing_keys()?)
}

/// Which keys a stored transcript is verified against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeySource {
    /// The constellation's own keys (local transcripts).
    Constellation,
    /// The keys that came with the file it was imported from (imported transcripts): they prove
    /// integrity relative to the exporter's claims, not who the signers are.
    Imported,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Constellation => "constellation",
            Self::Imported => "imported",
        }
    }
}

/// The key ring for one stream: local streams use the constellation's keys, imported streams
/// only the keys that came with them.
pub fn stream_key_ring(db: &Constellation, summary: &StreamSummary) -> Result<(KeyRing, KeySource), RuntimeError> {
    match summary.origin {
        StreamOrigin::Local => Ok((key_ring(db)?, KeySource::Constellation)),
        StreamOrigin::Imported => Ok((ring_from(db.stream_keys(summary.stream.as_str())?)?, KeySource::Imported)),
    }
}

/// A stored row as the auditor sees it: an event, or why the row cannot be one.
enum Audited {
    Event(Box<Event>),
    Malformed { reason: BreakReason, detail: String },
}

/// Converts a stored row for auditing. Beyond parsing, the body must be stored in exactly its
/// canonical form: an equivalent rewrite (`7` → `7.0`) is a change to the record.
fn audit_row(stream: &StreamId, row: EventRow) -> Audited {
    let malformed = |detail: String| Audited::Malformed { reason: BreakReason::EventMalformed, detail };
    let stored_body = row.body.clone();
    let event = match from_row(stream, row) {
        Ok(event) => event,
        Err(pactum_transcripts::StoreError::Corrupt { detail, .. }) => return malformed(detail),
        Err(other) => return malformed(other.to_string()),
    };
    if to_canonical_string(&event.body).as_deref() != Ok(stored_body.as_str()) {
        return malformed("body is not stored in canonical form".into());
    }
    Audited::Event(Box::new(event))
}

/// Visits the first `count` stored rows of a stream, page by page, as stored: the callers audit
/// what is there, so tampered rows reach the verifier instead of an error. Reading stops at
/// `count` (taken from the head read first), so events appended meanwhile by another process
/// are not mistaken for a mismatched head.
fn for_each_stored(
    db: &Constellation,
    stream: &StreamId,
    count: u64,
    mut visit: impl FnMut(Audited) -> Result<bool, RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut next = 0;
    while next < count {
        let want = usize::try_from(count - next).map_or(READ_PAGE_EVENTS, |n| n.min(READ_PAGE_EVENTS));
        let page = db.read_events_raw(stream.as_str(), next, want)?;
        let page_len = page.len();
        for row in page {
            next = row.seq + 1;
            if !visit(audit_row(stream, row))? {
                return Ok(());
            }
        }
        if page_len < want {
            return Ok(());
        }
    }
    Ok(())
}

/// A stream's summary and all its events (for `pactum transcript show`). Rows that cannot be
/// read as events are an error here; `verify` names them.
pub fn stream_events(db: &Arc<Constellation>, stream_id: &str) -> Result<(StreamSummary, Vec<Event>), RuntimeError> {
    let summary = summary(db, stream_id)?;
    let mut events = Vec::new();
    let mut next = 0;
    while next < summary.event_count {
        let page = db.read_events_raw(stream_id, next, READ_PAGE_EVENTS)?;
        let page_len = page.len();
        for row in page {
            next = row.seq + 1;
            events.push(from_row(&summary.stream, row).map_err(pactum_transcripts::TranscriptError::from)?);
        }
        if page_len < READ_PAGE_EVENTS {
            break;
        }
    }
    events.truncate(usize::try_from(summary.event_count).unwrap_or(usize::MAX));
    Ok((summary, events))
}

/// What verification should demand beyond a sound chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Every event must be signed by a key in the ring.
    pub require_signed: bool,
    /// A head hash obtained independently; the stream must end exactly there.
    pub expected_head: Option<Digest>,
}

impl VerifyOptions {
    fn verifier<'k>(&self, stream: StreamId, keys: &'k KeyRing) -> Verifier<'k> {
        let verifier = Verifier::new(stream, keys);
        if self.require_signed { verifier.require_signed() } else { verifier }
    }

    fn anchor(&self, recorded: Anchor) -> Anchor {
        match self.expected_head {
            Some(head) => Anchor { event_count: recorded.event_count, head_hash: Some(head) },
            None => recorded,
        }
    }
}

/// The outcome of verifying a stored stream.
#[derive(Debug)]
pub struct StoredVerification {
    pub report: VerifyReport,
    pub key_source: KeySource,
}

/// Verifies a stored stream against its keys (see [`stream_key_ring`]) and its recorded head.
pub fn verify_stream(db: &Arc<Constellation>, stream_id: &str) -> Result<VerifyReport, RuntimeError> {
    Ok(verify_stream_with(db, stream_id, VerifyOptions::default())?.report)
}

/// [`verify_stream`] with options.
pub fn verify_stream_with(
    db: &Arc<Constellation>,
    stream_id: &str,
    options: VerifyOptions,
) -> Result<StoredVerification, RuntimeError> {
    let summary = summary(db, stream_id)?;
    let (keys, key_source) = stream_key_ring(db, &summary)?;
    let mut verifier = options.verifier(summary.stream.clone(), &keys);
    for_each_stored(db, &summary.stream, summary.event_count, |item| match item {
        Audited::Event(event) => Ok(verifier.push(&event)),
        Audited::Malformed { reason, detail } => {
            verifier.fail_next(reason, "a well-formed event".into(), detail);
            Ok(false)
        }
    })?;
    Ok(StoredVerification { report: verifier.finish(Some(options.anchor(summary.anchor()))), key_source })
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
/// header. The file is written whatever the stream's state (an auditor may want a broken one),
/// up to a row that cannot be read as an event; the returned report says whether it verifies.
pub fn export_stream(
    db: &Arc<Constellation>,
    stream_id: &str,
    out: &mut dyn Write,
) -> Result<ExportSummary, RuntimeError> {
    let summary = summary(db, stream_id)?;
    let (all_keys, _) = stream_key_ring(db, &summary)?;
    let mut signers = BTreeSet::new();
    for_each_stored(db, &summary.stream, summary.event_count, |item| {
        if let Audited::Event(event) = item
            && let Some(signer) = event.signer
        {
            signers.insert(signer);
        }
        Ok(true)
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
    for_each_stored(db, &summary.stream, summary.event_count, |item| match item {
        Audited::Event(event) => {
            jsonl::write_event(&mut buffered, &event)?;
            verifier.push(&event);
            events += 1;
            Ok(true)
        }
        Audited::Malformed { reason, detail } => {
            verifier.fail_next(reason, "a well-formed event".into(), detail);
            Ok(false)
        }
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

fn open_file(path: &Path) -> Result<std::io::BufReader<std::fs::File>, RuntimeError> {
    Ok(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// What the first pass over an import file learns.
struct Scan {
    header: FileHeader,
    signers: BTreeSet<KeyId>,
    first_at_ms: Option<u64>,
}

/// First pass: verifies the whole file as a stream (bounded memory) and collects its signers.
fn scan_file(path: &Path) -> Result<Scan, RuntimeError> {
    let verification = jsonl::verify_file(open_file(path)?, None)?;
    if let Some(broken) = verification.report.first_break {
        return Err(RuntimeError::Tampered { stream: verification.header.stream.to_string(), broken });
    }
    Ok(Scan { header: verification.header, signers: verification.signers, first_at_ms: verification.first_at_ms })
}

/// Imports a transcript file. It is verified completely (with the keys of its header) as a
/// stream, then read again and stored in one transaction, page by page, so memory stays bounded
/// whatever the file's size. The second pass is verified as it goes and must end at the same
/// head before the transaction commits, so a file changed between the passes is refused and
/// nothing is stored. Only the header keys that events use are kept, and only for this stream:
/// a file's claims about its signers never become the constellation's trust.
pub fn import_file(db: &Arc<Constellation>, path: &Path, clock: &dyn Clock) -> Result<ImportOutcome, RuntimeError> {
    let Scan { header, signers, first_at_ms } = scan_file(path)?;
    if let Some(existing) = db.stream(header.stream.as_str())? {
        let same = existing.event_count == header.event_count
            && existing.head_hash.map(Digest::from_bytes) == header.head_hash;
        return if same {
            Ok(ImportOutcome::AlreadyPresent { stream: header.stream, events: existing.event_count })
        } else {
            Err(RuntimeError::ImportConflict(header.stream.to_string()))
        };
    }
    let keys: Vec<(String, [u8; 32])> = header
        .keys
        .iter()
        .filter(|(id, _)| signers.contains(*id))
        .map(|(id, key)| (id.as_str().to_owned(), key.to_bytes()))
        .collect();

    let (mut reader, second_header) = FileReader::open(open_file(path)?)?;
    if second_header != header {
        return Err(RuntimeError::ImportChanged(header.stream.to_string()));
    }
    let changed = || "the file changed while it was being imported".to_owned();
    let mut verifier = Verifier::new(header.stream.clone(), &header.keys);
    let (mut seen, mut last_hash) = (0_u64, None);
    let mut next_row = || -> Result<Option<EventRow>, String> {
        match reader.next_event().map_err(|e| e.to_string())? {
            Some(event) => {
                if !verifier.push(&event) {
                    return Err(changed());
                }
                seen += 1;
                last_hash = Some(event.hash);
                to_row(&event).map(Some).map_err(|e| e.to_string())
            }
            None => {
                // The end must be exactly the verified one, before the transaction commits.
                verifier.flush();
                if verifier.first_break().is_some() || seen != header.event_count || last_hash != header.head_hash {
                    return Err(changed());
                }
                Ok(None)
            }
        }
    };
    let created_at_ms = first_at_ms.unwrap_or_else(|| clock.now_ms());
    let stored = db.import_stream(
        header.stream.as_str(),
        *header.stream.genesis().as_bytes(),
        created_at_ms,
        &keys,
        &mut next_row,
    );
    let events = match stored {
        Ok(events) => events,
        Err(StoreError::Corrupt { detail }) if detail == changed() => {
            return Err(RuntimeError::ImportChanged(header.stream.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    let report = verifier.finish(Some(header.anchor()));
    tracing::info!(stream = %header.stream, events, "imported transcript");
    Ok(ImportOutcome::Imported { stream: header.stream, events, signed: report.signatures_verified })
}
