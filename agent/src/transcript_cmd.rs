//! `pactum transcript list|show|verify|export|import`.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use pactum_runtime::{ImportOutcome, StreamSummary, VerifyOptions};
use pactum_transcripts::jsonl::{self, KeySource};
use pactum_transcripts::pact_v4::{PACT_V4_FORMAT, V4_DOCUMENT_BYTES_MAX, V4Report, verify_v4_bytes};
use pactum_transcripts::{Digest, Event, IntegrityStatus, KeyId, KeyRing, VerifyReport};
use serde_json::{Value, json};

use crate::cli::{Context, ExportFormat, TranscriptCommand};
use crate::clock::{SystemClock, format_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};

/// Largest `--keys` file: a key ring is a few dozen keys.
const KEYS_FILE_BYTES_MAX: u64 = 1024 * 1024;

pub fn run(context: &Context, command: TranscriptCommand) -> Result<u8, Failure> {
    match command {
        TranscriptCommand::List { json } => list(context, json),
        TranscriptCommand::Show { id, json } => show(context, &id, json),
        TranscriptCommand::Verify { target, keys, require_signed, head, json, allow_compromised } => {
            let expected_head = head
                .map(|text| {
                    text.parse::<Digest>().map_err(|_| {
                        Failure::new("USAGE", format!("--head {text:?}: expected 64 lowercase hex digits"))
                    })
                })
                .transpose()?;
            let options = VerifyOptions { require_signed, expected_head };
            if is_file_target(&target)
                && let Some(report) = detect_v4(Path::new(&target))?
            {
                if keys.is_some() || require_signed || options.expected_head.is_some() {
                    return Err(Failure::new(
                        "USAGE",
                        "--keys, --require-signed and --head apply to pactum-transcript/1; a PACT v4 file carries its own keys",
                    ));
                }
                return Ok(print_v4_report(&report, &target, json, allow_compromised));
            }
            if allow_compromised {
                return Err(Failure::new("USAGE", "--allow-compromised applies to PACT v4 files only"));
            }
            if is_file_target(&target) {
                verify_file(Path::new(&target), keys.as_deref(), options, json)
            } else {
                if keys.is_some() {
                    return Err(Failure::new(
                        "USAGE",
                        "--keys applies to files; a stored transcript is verified with the keys it is stored with",
                    ));
                }
                verify_stored(context, &target, options, json)
            }
        }
        TranscriptCommand::Export { id, out, force, format } => match format {
            ExportFormat::PactumV1 => export(context, &id, out, force),
            ExportFormat::PactV4 => export_v4(context, &id, out, force),
        },
        TranscriptCommand::Import { file, json } => import(context, &file, json),
        TranscriptCommand::Replay { target, json } => crate::replay_cmd::run(context, &target, json),
        TranscriptCommand::Agree { buyer, provider, json } => agree(&buyer, &provider, json),
        TranscriptCommand::Bundle { session, dir, view, force, json } => {
            crate::bundle_cmd::write(context, &session, &dir, view, force, json)
        }
    }
}

/// A verify target is a file if it looks like a path or names an existing file; otherwise an id.
/// (Transcript ids cannot contain '/', so `./name` always means a file.)
pub fn is_file_target(target: &str) -> bool {
    target.contains('/') || target.ends_with(".jsonl") || Path::new(target).is_file()
}

fn summary_json(summary: &StreamSummary) -> Value {
    json!({
        "id": summary.stream.as_str(),
        "origin": summary.origin.as_str(),
        "created_at_ms": summary.created_at_ms,
        "events": summary.event_count,
        "head_hash": summary.head_hash.map(|h| h.to_hex()),
        "head_at_ms": summary.head_at_ms,
    })
}

/// Opens the constellation for a command about transcript `id`; a missing constellation means
/// the transcript is not found (and nothing is created).
fn open_for(context: &Context, id: &str) -> Result<std::sync::Arc<pactum_memory::Constellation>, Failure> {
    context.open_existing()?.map_err(|path| {
        Failure::new(
            "TRANSCRIPT_NOT_FOUND",
            format!("no transcript with id {id:?}: there is no constellation at {} yet", path.display()),
        )
    })
}

fn list(context: &Context, json: bool) -> Result<u8, Failure> {
    let db = match context.open_existing()? {
        Ok(db) => db,
        Err(path) => {
            if json {
                print_json(&Value::Array(Vec::new()));
            } else {
                print_lines(&[format!("no transcripts: there is no constellation at {} yet", path.display())]);
            }
            return Ok(EXIT_OK);
        }
    };
    let streams = pactum_runtime::list_streams(&db)?;
    if json {
        print_json(&Value::Array(streams.iter().map(summary_json).collect()));
        return Ok(EXIT_OK);
    }
    if streams.is_empty() {
        print_lines(&[format!("no transcripts in {}", db.path().display())]);
        return Ok(EXIT_OK);
    }
    let width = streams.iter().map(|s| s.stream.as_str().len()).max().unwrap_or(2).max(2);
    let mut lines = vec![format!("{:<width$}  {:<8}  {:>6}  {:<24}  HEAD", "ID", "ORIGIN", "EVENTS", "CREATED")];
    for summary in &streams {
        lines.push(format!(
            "{:<width$}  {:<8}  {:>6}  {:<24}  {}",
            summary.stream.as_str(),
            summary.origin.as_str(),
            summary.event_count,
            format_ms(summary.created_at_ms),
            summary.head_hash.map_or_else(|| "-".to_owned(), |h| h.to_hex()[..16].to_owned()),
        ));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn show(context: &Context, id: &str, json: bool) -> Result<u8, Failure> {
    let db = open_for(context, id)?;
    let (summary, events) = pactum_runtime::stream_events(&db, id)?;
    if json {
        let mut document = summary_json(&summary);
        document["event_list"] = Value::Array(events.iter().map(Event::to_json).collect());
        print_json(&document);
        return Ok(EXIT_OK);
    }
    let mut lines = vec![
        format!(
            "transcript {} ({}, {} events, created {})",
            summary.stream,
            summary.origin.as_str(),
            summary.event_count,
            format_ms(summary.created_at_ms)
        ),
        format!("head {}", summary.head_hash.map_or_else(|| "(empty)".to_owned(), |h| h.to_hex())),
    ];
    for event in &events {
        let signed = event.signer.as_ref().map_or_else(String::new, |s| format!("  signed by {s}"));
        lines.push(String::new());
        lines.push(format!("#{:<4} {}  {}{}", event.seq, format_ms(event.at_ms), event.kind, signed));
        lines.push(format!("      {}", event.body));
        lines.push(format!("      hash {}", event.hash));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn report_json(report: &VerifyReport, source: &str, key_source: &str) -> Value {
    json!({
        "valid": report.is_valid(),
        "stream": report.stream.as_str(),
        "source": source,
        "key_source": key_source,
        "events_verified": report.events_verified,
        "signatures_verified": report.signatures_verified,
        "unsigned_events": report.unsigned_events,
        "head_hash": report.head_hash.map(|h| h.to_hex()),
        "break": report.first_break.as_ref().map(|b| json!({
            "seq": b.seq,
            "reason": b.reason.code(),
            "description": b.reason.describe(),
            "expected": b.expected,
            "found": b.found,
        })),
    })
}

fn print_report(report: &VerifyReport, what: &str, key_note: &str, json: bool, source: &str, key_source: &str) -> u8 {
    if json {
        print_json(&report_json(report, source, key_source));
    } else {
        match &report.first_break {
            None => print_lines(&[format!(
                "{what}: VALID: {} events, {} signatures verified ({key_note}){}, head {}",
                report.events_verified,
                report.signatures_verified,
                if report.unsigned_events > 0 {
                    format!(", {} unsigned", report.unsigned_events)
                } else {
                    String::new()
                },
                report.head_hash.map_or_else(|| "(empty)".to_owned(), |h| h.to_hex()),
            )]),
            Some(broken) => print_lines(&[
                format!(
                    "{what}: TAMPERED at seq {}: {} ({})",
                    broken.seq,
                    broken.reason.code(),
                    broken.reason.describe()
                ),
                format!("  expected: {}", broken.expected),
                format!("  found:    {}", broken.found),
                format!("  {} events passed their own checks", report.events_verified),
            ]),
        }
    }
    if report.is_valid() { EXIT_OK } else { EXIT_INVALID }
}

fn verify_stored(context: &Context, id: &str, options: VerifyOptions, json: bool) -> Result<u8, Failure> {
    let db = open_for(context, id)?;
    let verification = pactum_runtime::verify_stream_with(&db, id, options)?;
    let (key_note, key_source) = match verification.key_source {
        pactum_runtime::KeySource::Constellation => ("constellation keys", "constellation"),
        pactum_runtime::KeySource::Imported => ("keys that came with the imported file", "imported"),
    };
    Ok(print_report(&verification.report, &format!("transcript {id}"), key_note, json, "constellation", key_source))
}

fn verify_file(path: &Path, keys: Option<&Path>, options: VerifyOptions, json: bool) -> Result<u8, Failure> {
    let trusted = keys.map(read_key_file).transpose()?;
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot open: {e}", path.display())))?;
    let file_options = jsonl::FileVerifyOptions {
        trusted: trusted.as_ref(),
        require_signed: options.require_signed,
        expected_head: options.expected_head,
    };
    let verification = jsonl::verify_file_with(BufReader::new(file), file_options)
        .map_err(|error| Failure::new(error.code(), format!("{}: {error}", path.display())))?;
    let (key_note, key_source) = match verification.key_source {
        KeySource::Embedded => ("keys from the file header", "embedded"),
        KeySource::Trusted => ("trusted keys", "trusted"),
    };
    Ok(print_report(&verification.report, &path.display().to_string(), key_note, json, "file", key_source))
}

/// Reads `{"<key id>": "<base64url public key>"}`.
fn read_key_file(path: &Path) -> Result<KeyRing, Failure> {
    let bad = |message: String| Failure::new("KEYS_FILE_INVALID", format!("{}: {message}", path.display()));
    // Read through a bound: the size in the metadata says nothing for /dev/zero or a pipe.
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, KEYS_FILE_BYTES_MAX + 1), &mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > KEYS_FILE_BYTES_MAX {
        return Err(bad(format!("larger than the limit of {KEYS_FILE_BYTES_MAX} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let value = pactum_transcripts::canonical::parse_strict(&text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(entries) = value else {
        return Err(bad("expected a JSON object of key id -> base64url public key".into()));
    };
    let mut ring = KeyRing::new();
    for (key_id, key) in entries {
        let key_id = KeyId::new(key_id).map_err(|e| bad(e.to_string()))?;
        let Value::String(text) = key else { return Err(bad(format!("{key_id}: expected a base64url string"))) };
        ring.insert_base64url(key_id, &text).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ring)
}

/// Refuses to write over the constellation, or over an existing file without `--force`.
fn check_destination(out: Option<&Path>, db: &pactum_memory::Constellation, force: bool) -> Result<(), Failure> {
    let Some(path) = out else { return Ok(()) };
    if is_same_file(path, db.path()) {
        return Err(Failure::new("USAGE", format!("{}: that is the constellation itself", path.display())));
    }
    if path.exists() && !force {
        return Err(Failure::new(
            "DESTINATION_EXISTS",
            format!("{} already exists; pass --force to replace it", path.display()),
        ));
    }
    Ok(())
}

/// `transcript export --format pact-v4`: the session as one canonical JSON document.
fn export_v4(context: &Context, id: &str, out: Option<PathBuf>, force: bool) -> Result<u8, Failure> {
    let db = open_for(context, id)?;
    check_destination(out.as_deref(), &db, force)?;
    let export = pactum_runtime::export_session_v4(&db, id)?;
    match &out {
        None => crate::constellation_cmd::write_stdout(&export.text),
        Some(path) => {
            write_whole(path, export.text.as_bytes())?;
            tracing::info!(path = %path.display(), rounds = export.rounds, "PACT v4 transcript exported");
        }
    }
    Ok(EXIT_OK)
}

/// Bytes looked at to tell a PACT v4 document from a pactum-transcript/1 file: the JSONL header
/// line is short, and a v4 document names `transcript_version` near its start.
const DETECT_PREFIX_BYTES: usize = 64 * 1024;

/// Recognises a PACT v4 file by its content (a JSON object with `transcript_version`) and
/// verifies it; `None` for anything else (a pactum-transcript/1 file goes its own way).
fn detect_v4(path: &Path) -> Result<Option<V4Report>, Failure> {
    use std::io::Read as _;
    let io = |e: std::io::Error| Failure::new("IO_ERROR", format!("{}: cannot read: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(V4_DOCUMENT_BYTES_MAX + 1).unwrap_or(u64::MAX);
    let mut reader = file.take(limit);
    (&mut reader).take(DETECT_PREFIX_BYTES as u64).read_to_end(&mut bytes).map_err(io)?;
    let prefix = String::from_utf8_lossy(&bytes).into_owned();
    if !prefix.trim_start().starts_with('{') || !prefix.contains("\"transcript_version\"") {
        return Ok(None);
    }
    // A pactum-transcript/1 header line is a complete object naming its `format`.
    if let Some(line) = prefix.lines().next()
        && let Ok(Value::Object(header)) = pactum_transcripts::canonical::parse_strict(line)
        && header.contains_key("format")
        && !header.contains_key("transcript_version")
    {
        return Ok(None);
    }
    reader.read_to_end(&mut bytes).map_err(io)?;
    Ok(Some(verify_v4_bytes(&bytes)))
}

fn print_v4_report(report: &V4Report, what: &str, json: bool, allow_compromised: bool) -> u8 {
    let accepted = report.is_valid() || (allow_compromised && report.integrity_status == IntegrityStatus::Tampered);
    if json {
        print_json(&report.to_json());
    } else {
        let status = report.integrity_status.as_str();
        let mut lines = vec![match report.errors.first() {
            None => format!(
                "{what}: {PACT_V4_FORMAT} {status}: {} rounds, {} signatures verified",
                report.rounds, report.signatures_verified
            ),
            Some(error) => {
                format!("{what}: {PACT_V4_FORMAT} {status}: {}: {}", error.entry_type.as_str(), error.message)
            }
        }];
        for warning in &report.warnings {
            lines.push(format!("  warning {}: {}", warning.entry_type.as_str(), warning.message));
        }
        for finding in &report.pactum_findings {
            lines.push(format!("  pactum {}: {}", finding.entry_type.as_str(), finding.message));
        }
        if accepted && !report.is_valid() {
            lines.push("  exit status 0: TAMPERED accepted by --allow-compromised".into());
        }
        print_lines(&lines);
    }
    if accepted { EXIT_OK } else { EXIT_INVALID }
}

fn export(context: &Context, id: &str, out: Option<PathBuf>, force: bool) -> Result<u8, Failure> {
    let db = open_for(context, id)?;
    check_destination(out.as_deref(), &db, force)?;
    let summary = match &out {
        None => {
            let mut stdout = std::io::BufWriter::new(crate::output::Stdout);
            let summary = pactum_runtime::export_stream(&db, id, &mut stdout)?;
            std::io::Write::flush(&mut stdout)
                .map_err(|e| Failure::new("IO_ERROR", format!("cannot write the transcript: {e}")))?;
            summary
        }
        Some(path) => {
            // Written under a temporary name and renamed, so FILE is never half-written.
            let partial = partial_path(path);
            let result = std::fs::File::create(&partial)
                .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot create: {e}", partial.display())))
                .and_then(|mut file| {
                    let summary = pactum_runtime::export_stream(&db, id, &mut file)?;
                    file.sync_all().map_err(|e| Failure::new("IO_ERROR", format!("{}: {e}", partial.display())))?;
                    Ok(summary)
                })
                .and_then(|summary| {
                    std::fs::rename(&partial, path)
                        .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot write: {e}", path.display())))?;
                    Ok(summary)
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            let summary = result?;
            tracing::info!(path = %path.display(), events = summary.events, "transcript exported");
            summary
        }
    };
    match summary.report.first_break {
        None => Ok(EXIT_OK),
        Some(broken) => Err(Failure::new(
            "TRANSCRIPT_TAMPERED",
            format!("exported {} events, but transcript {} does not verify: {broken}", summary.events, summary.stream),
        )),
    }
}

fn is_same_file(left: &Path, right: &Path) -> bool {
    match (std::fs::canonicalize(left), std::fs::canonicalize(right)) {
        (Ok(left), Ok(right)) => left == right,
        _ => false,
    }
}

/// Writes `bytes` to `path` whole: under a temporary name, synced, then renamed into place.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let partial = partial_path(path);
    let result = std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::File::open(&partial)?.sync_all())
        .and_then(|()| std::fs::rename(&partial, path));
    if let Err(error) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::new("IO_ERROR", format!("{}: cannot write: {error}", path.display())));
    }
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "transcript".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn import(context: &Context, file: &Path, json: bool) -> Result<u8, Failure> {
    import_stream(context, file, json).map(|_| EXIT_OK)
}

/// `pactum transcript import`: returns the stream's id and whether it was stored now.
pub fn import_stream(context: &Context, file: &Path, json: bool) -> Result<(String, bool), Failure> {
    if !file.is_file() {
        return Err(Failure::new("IO_ERROR", format!("{}: no such file", file.display())));
    }
    let db = context.open()?;
    let outcome = pactum_runtime::import_file(&db, file, &SystemClock).map_err(|error| {
        let mut failure = Failure::from(error);
        failure.message = format!("{}: {}", file.display(), failure.message);
        failure
    })?;
    let (status, stream, events) = match &outcome {
        ImportOutcome::Imported { stream, events, .. } => ("imported", stream, *events),
        ImportOutcome::AlreadyPresent { stream, events } => ("already_present", stream, *events),
    };
    if json {
        print_json(&json!({ "status": status, "id": stream.as_str(), "events": events }));
    } else if let ImportOutcome::Imported { signed, .. } = outcome {
        print_lines(&[format!("imported transcript {stream}: {events} events ({signed} signed) verified and stored")]);
    } else {
        print_lines(&[format!(
            "transcript {stream} is already present with the same {events} events; nothing changed"
        )]);
    }
    Ok((stream.as_str().to_owned(), status == "imported"))
}

/// `pactum transcript agree BUYER PROVIDER`: each file verifies against its own header's keys,
/// then the two records are compared.
fn agree(buyer: &Path, provider: &Path, json: bool) -> Result<u8, Failure> {
    let read = |path: &Path| -> Result<Vec<pactum_transcripts::Event>, Failure> {
        let open = || {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot read: {e}", path.display())))
        };
        let verification = pactum_transcripts::jsonl::verify_file(open()?, None)
            .map_err(|e| Failure::new(e.code(), format!("{}: {e}", path.display())))?;
        if let Some(broken) = verification.report.first_break {
            return Err(Failure::new("TRANSCRIPT_TAMPERED", format!("{}: {broken}", path.display())));
        }
        let (_, events) = pactum_transcripts::jsonl::read_file(open()?)
            .map_err(|e| Failure::new(e.code(), format!("{}: {e}", path.display())))?;
        Ok(events)
    };
    let (buyer_events, provider_events) = (read(buyer)?, read(provider)?);
    match pactum_runtime::remote::host::agreement(&buyer_events, &provider_events) {
        Ok(found) => {
            if json {
                print_json(&serde_json::json!({
                    "agree": true,
                    "session_id": found.session_id,
                    "buyer_stream": found.buyer_stream,
                    "provider_stream": found.provider_stream,
                    "provider": found.provider,
                    "buyer_messages": found.buyer_messages,
                    "provider_messages": found.provider_messages,
                }));
            } else {
                print_lines(&[format!(
                    "AGREE: {} and {} ({}) share {} of the buyer's messages and {} of the provider's, each the same on both sides",
                    found.buyer_stream,
                    found.provider_stream,
                    found.provider,
                    found.buyer_messages,
                    found.provider_messages
                )]);
            }
            Ok(EXIT_OK)
        }
        Err(reason) => Err(Failure::new("TRANSCRIPTS_DISAGREE", reason)),
    }
}
