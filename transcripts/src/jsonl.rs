//! The `pactum-transcript/1` file: JSON Lines, one header line, then one event per line, each
//! line the canonical JSON of its object followed by `\n`. A file verifies without any database.
//!
//! Header: `{"event_count":N,"format":"pactum-transcript/1","head_hash":"<hex>"|null,
//! "keys":{"<key id>":"<base64url Ed25519 public key>"},"stream":"<id>"}`.
//! `event_count` and `head_hash` anchor the end of the stream, so a file cut at a line boundary
//! is reported as `TRUNCATED`. The keys are the signers' public keys as the exporter knew them;
//! they prove integrity relative to those keys. Pass a trusted key ring to prove authorship.

use std::io::{BufRead, Write};

use serde_json::{Map, Value};

use crate::canonical::{self, StrictJsonError};
use crate::event::{Digest, Event, FORMAT, FormatError, StreamId};
use crate::keys::{KeyError, KeyId, KeyRing, public_key_to_base64url};
use crate::limits::{HEADER_KEYS_MAX, JSONL_LINE_BYTES_MAX, STREAM_EVENTS_MAX};
use crate::verify::{Anchor, Verifier, VerifyReport};

/// The first line of a transcript file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileHeader {
    pub stream: StreamId,
    pub event_count: u64,
    pub head_hash: Option<Digest>,
    pub keys: KeyRing,
}

impl FileHeader {
    pub fn anchor(&self) -> Anchor {
        Anchor { event_count: self.event_count, head_hash: self.head_hash }
    }

    fn to_json(&self) -> Value {
        let mut keys = Map::new();
        for (key_id, key) in self.keys.iter() {
            keys.insert(key_id.as_str().to_owned(), Value::String(public_key_to_base64url(key)));
        }
        let mut object = Map::new();
        object.insert("format".into(), Value::String(FORMAT.into()));
        object.insert("stream".into(), Value::String(self.stream.as_str().into()));
        object.insert("event_count".into(), Value::from(self.event_count));
        object.insert("head_hash".into(), self.head_hash.map_or(Value::Null, |h| Value::String(h.to_hex())));
        object.insert("keys".into(), Value::Object(keys));
        Value::Object(object)
    }

    fn from_json(value: Value) -> Result<Self, FileErrorKind> {
        let Value::Object(mut object) = value else {
            return Err(FileErrorKind::Format(FormatError::new("header", "must be a JSON object")));
        };
        match object.remove("format") {
            Some(Value::String(format)) if format == FORMAT => {}
            Some(Value::String(format)) => return Err(FileErrorKind::UnsupportedFormat(format)),
            _ => {
                return Err(FileErrorKind::Format(FormatError::new(
                    "format",
                    "missing; this is not a Pactum transcript",
                )));
            }
        }
        let stream = match object.remove("stream") {
            Some(Value::String(text)) => StreamId::new(text).map_err(FileErrorKind::Format)?,
            _ => return Err(FileErrorKind::Format(FormatError::new("stream", "must be a string"))),
        };
        let event_count =
            object.remove("event_count").and_then(|v| v.as_u64()).filter(|n| *n <= STREAM_EVENTS_MAX).ok_or_else(
                || {
                    FileErrorKind::Format(FormatError::new(
                        "event_count",
                        format!("must be an integer from 0 to {STREAM_EVENTS_MAX}"),
                    ))
                },
            )?;
        let head_hash = match object.remove("head_hash") {
            Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                text.parse::<Digest>().map_err(|e| FileErrorKind::Format(FormatError::new("head_hash", e.problem)))?,
            ),
            _ => return Err(FileErrorKind::Format(FormatError::new("head_hash", "must be a hex digest or null"))),
        };
        let mut keys = KeyRing::new();
        match object.remove("keys") {
            Some(Value::Object(entries)) if entries.len() <= HEADER_KEYS_MAX => {
                for (key_id, key) in entries {
                    let key_id = KeyId::new(key_id).map_err(FileErrorKind::Format)?;
                    let Value::String(text) = key else {
                        return Err(FileErrorKind::Format(FormatError::new(
                            "keys",
                            "values must be base64url strings",
                        )));
                    };
                    keys.insert_base64url(key_id, &text).map_err(FileErrorKind::Key)?;
                }
            }
            _ => {
                return Err(FileErrorKind::Format(FormatError::new(
                    "keys",
                    format!("must be an object of at most {HEADER_KEYS_MAX} key ids"),
                )));
            }
        }
        if let Some(unknown) = object.keys().next() {
            return Err(FileErrorKind::Format(FormatError::new(unknown.clone(), "unknown header field")));
        }
        Ok(Self { stream, event_count, head_hash, keys })
    }
}

/// What is wrong with a transcript file, without the line number.
#[derive(Debug, thiserror::Error)]
pub enum FileErrorKind {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("file is empty; a transcript starts with a header line")]
    Empty,
    #[error("line is longer than {JSONL_LINE_BYTES_MAX} bytes")]
    LineTooLong,
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line does not end with a newline (the file is truncated)")]
    Incomplete,
    #[error("blank line")]
    Blank,
    #[error(transparent)]
    Json(#[from] StrictJsonError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("format {0:?} is not supported; this build reads {FORMAT}")]
    UnsupportedFormat(String),
    #[error("line is not in canonical form (was the file edited by hand?)")]
    NotCanonical,
    #[error("more than {STREAM_EVENTS_MAX} events")]
    TooManyEvents,
}

/// A transcript file that could not be read, with the 1-based line at fault.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct FileError {
    pub line: u64,
    #[source]
    pub kind: FileErrorKind,
}

impl FileError {
    /// Stable code (specs/error-codes.toml).
    pub fn code(&self) -> &'static str {
        match self.kind {
            FileErrorKind::Io(_) => "IO_ERROR",
            FileErrorKind::UnsupportedFormat(_) => "FORMAT_UNSUPPORTED",
            FileErrorKind::Empty => "FILE_EMPTY",
            _ => "FILE_MALFORMED",
        }
    }
}

/// Writes a transcript file: the header, then each event as canonical JSON.
pub fn write_file<'e>(
    out: &mut impl Write,
    header: &FileHeader,
    events: impl IntoIterator<Item = &'e Event>,
) -> std::io::Result<()> {
    write_header(out, header)?;
    for event in events {
        write_event(out, event)?;
    }
    out.flush()
}

/// Writes the header line (for writers that stream events after it with [`write_event`]).
pub fn write_header(out: &mut impl Write, header: &FileHeader) -> std::io::Result<()> {
    write_line(out, &header.to_json())
}

/// Writes one event line.
pub fn write_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    write_line(out, &event.to_json())
}

fn write_line(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    let line = canonical::to_canonical_string(value).map_err(std::io::Error::other)?;
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// Reads a transcript file line by line, with bounded memory per line.
#[derive(Debug)]
pub struct FileReader<R> {
    input: R,
    line: u64,
    buffer: Vec<u8>,
    events_read: u64,
}

impl<R: BufRead> FileReader<R> {
    /// Reads and checks the header line.
    pub fn open(input: R) -> Result<(Self, FileHeader), FileError> {
        let mut reader = Self { input, line: 0, buffer: Vec::new(), events_read: 0 };
        let header = match reader.next_value()? {
            None => return Err(FileError { line: 1, kind: FileErrorKind::Empty }),
            Some(value) => FileHeader::from_json(value).map_err(|kind| FileError { line: 1, kind })?,
        };
        Ok((reader, header))
    }

    /// The next event, or `None` at the end of the file.
    pub fn next_event(&mut self) -> Result<Option<Event>, FileError> {
        let Some(value) = self.next_value()? else { return Ok(None) };
        self.events_read += 1;
        if self.events_read > STREAM_EVENTS_MAX {
            return Err(self.error(FileErrorKind::TooManyEvents));
        }
        Event::from_json(value).map(Some).map_err(|e| self.error(FileErrorKind::Format(e)))
    }

    fn error(&self, kind: FileErrorKind) -> FileError {
        FileError { line: self.line, kind }
    }

    fn next_value(&mut self) -> Result<Option<Value>, FileError> {
        self.buffer.clear();
        self.line += 1;
        let limit = JSONL_LINE_BYTES_MAX as u64 + 1;
        let read = std::io::Read::take(&mut self.input, limit)
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| self.error(FileErrorKind::Io(e)))?;
        if read == 0 {
            return Ok(None);
        }
        if self.buffer.last() != Some(&b'\n') {
            let kind = if read as u64 >= limit { FileErrorKind::LineTooLong } else { FileErrorKind::Incomplete };
            return Err(self.error(kind));
        }
        let text = std::str::from_utf8(&self.buffer[..self.buffer.len() - 1])
            .map_err(|_| FileError { line: self.line, kind: FileErrorKind::NotUtf8 })?;
        if text.trim().is_empty() {
            return Err(self.error(FileErrorKind::Blank));
        }
        let value = canonical::parse_strict(text).map_err(|e| self.error(FileErrorKind::Json(e)))?;
        // One transcript has exactly one file form; anything else was produced by another tool or
        // edited, and is refused rather than silently normalised.
        match canonical::to_canonical_string(&value) {
            Ok(canonical) if canonical == text => Ok(Some(value)),
            _ => Err(self.error(FileErrorKind::NotCanonical)),
        }
    }
}

/// Which keys signatures were checked against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeySource {
    /// The keys listed in the file header (integrity relative to the exporter's claims).
    Embedded,
    /// A key ring supplied by the verifier.
    Trusted,
}

/// The outcome of verifying a file.
#[derive(Debug)]
pub struct FileVerification {
    pub header: FileHeader,
    pub report: VerifyReport,
    pub key_source: KeySource,
    /// Key ids that signed the events read (up to the first break).
    pub signers: std::collections::BTreeSet<crate::keys::KeyId>,
    /// Timestamp of the first event, if any.
    pub first_at_ms: Option<u64>,
}

/// What file verification should demand beyond a sound chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileVerifyOptions<'k> {
    /// Verify signatures against these keys instead of the header's.
    pub trusted: Option<&'k KeyRing>,
    /// Every event must be signed.
    pub require_signed: bool,
    /// A head hash obtained independently: the file must end exactly there.
    pub expected_head: Option<Digest>,
}

/// Verifies a transcript file with the keys of its header, or with `trusted` keys if given.
/// Malformed lines are errors; a well-formed file with a broken chain is a report with a break.
pub fn verify_file(input: impl BufRead, trusted: Option<&KeyRing>) -> Result<FileVerification, FileError> {
    verify_file_with(input, FileVerifyOptions { trusted, ..FileVerifyOptions::default() })
}

/// [`verify_file`] with options.
pub fn verify_file_with(input: impl BufRead, options: FileVerifyOptions<'_>) -> Result<FileVerification, FileError> {
    let (mut reader, header) = FileReader::open(input)?;
    let (keys, key_source) = match options.trusted {
        Some(keys) => (keys, KeySource::Trusted),
        None => (&header.keys, KeySource::Embedded),
    };
    let verifier = Verifier::new(header.stream.clone(), keys);
    let mut verifier = if options.require_signed { verifier.require_signed() } else { verifier };
    let mut signers = std::collections::BTreeSet::new();
    let mut first_at_ms = None;
    // The first break is the answer: what follows it (even a malformed line) cannot hide it.
    loop {
        match reader.next_event() {
            Ok(Some(event)) => {
                first_at_ms.get_or_insert(event.at_ms);
                if let Some(signer) = &event.signer {
                    signers.insert(signer.clone());
                }
                if !verifier.push(&event) {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                verifier.flush();
                if verifier.first_break().is_some() {
                    break;
                }
                return Err(error);
            }
        }
    }
    let anchor = match options.expected_head {
        Some(head) => Anchor { event_count: header.event_count, head_hash: Some(head) },
        None => header.anchor(),
    };
    let report = verifier.finish(Some(anchor));
    Ok(FileVerification { header, report, key_source, signers, first_at_ms })
}

/// Reads a whole file into memory (for import), checking its shape but not its chain.
pub fn read_file(input: impl BufRead) -> Result<(FileHeader, Vec<Event>), FileError> {
    let (mut reader, header) = FileReader::open(input)?;
    let mut events = Vec::new();
    while let Some(event) = reader.next_event()? {
        events.push(event);
    }
    Ok((header, events))
}
