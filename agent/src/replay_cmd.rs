//! `pactum transcript replay <id|file>`: what happened in a negotiation, told from its
//! transcript once it verifies — who offered what, what policy and the passport decided, the
//! failure with its code, fault and evidence, the receipt.

use std::path::Path;

use pactum_runtime::session::model::SESSION_STREAM_PREFIX;
use pactum_runtime::session::story::{Story, tell};
use pactum_transcripts::Event;
use pactum_transcripts::jsonl;
use serde_json::json;

use crate::cli::Context;
use crate::clock::format_ms;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};
use crate::session_view::describe;

/// Where the transcript came from and how it verified.
struct Source {
    name: String,
    origin: &'static str,
    events: Vec<Event>,
    signatures: u64,
}

pub fn run(context: &Context, target: &str, json: bool) -> Result<u8, Failure> {
    let source = if crate::transcript_cmd::is_file_target(target) {
        from_file(Path::new(target))?
    } else {
        from_constellation(context, target)?
    };
    let story = tell(&source.events).map_err(|reason| {
        Failure::new(
            "TRANSCRIPT_NOT_A_SESSION",
            format!("{}: verifies, but is not a negotiation session Pactum can tell: {reason}", source.name),
        )
    })?;
    if json {
        print_json(&json!({
            "transcript": source.name,
            "origin": source.origin,
            "verified": { "events": source.events.len(), "signatures": source.signatures },
            "story": story,
        }));
    } else {
        print_lines(&text(&source, &story));
    }
    Ok(EXIT_OK)
}

fn from_constellation(context: &Context, target: &str) -> Result<Source, Failure> {
    let stream_id = if target.contains(':') { target.to_owned() } else { format!("{SESSION_STREAM_PREFIX}{target}") };
    let db = context.open_existing()?.map_err(|path| {
        Failure::new(
            "TRANSCRIPT_NOT_FOUND",
            format!("no transcript {target:?}: there is no constellation at {} yet", path.display()),
        )
    })?;
    let report = pactum_runtime::verify_stream(&db, &stream_id)?;
    if let Some(broken) = &report.first_break {
        return Err(Failure::new("TRANSCRIPT_TAMPERED", format!("{stream_id} does not verify: {broken}")));
    }
    let (_, events) = pactum_runtime::stream_events(&db, &stream_id)?;
    Ok(Source { name: stream_id, origin: "constellation", events, signatures: report.signatures_verified })
}

/// Largest transcript file `replay` reads: it is read once into memory, then verified and
/// parsed from those same bytes (a file that changes while being read cannot tell one story
/// and verify another).
const REPLAY_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

fn from_file(path: &Path) -> Result<Source, Failure> {
    let io = |e: std::io::Error| Failure::new("IO_ERROR", format!("{}: cannot read: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, REPLAY_FILE_BYTES_MAX + 1), &mut bytes).map_err(io)?;
    if bytes.len() as u64 > REPLAY_FILE_BYTES_MAX {
        return Err(Failure::new(
            "TRANSCRIPT_FILE_TOO_LARGE",
            format!("{}: larger than {REPLAY_FILE_BYTES_MAX} bytes", path.display()),
        ));
    }
    let verification = jsonl::verify_file(bytes.as_slice(), None)
        .map_err(|error| Failure::new(error.code(), format!("{}: {error}", path.display())))?;
    if let Some(broken) = &verification.report.first_break {
        return Err(Failure::new("TRANSCRIPT_TAMPERED", format!("{} does not verify: {broken}", path.display())));
    }
    let (header, events) = jsonl::read_file(bytes.as_slice())
        .map_err(|error| Failure::new(error.code(), format!("{}: {error}", path.display())))?;
    Ok(Source {
        name: header.stream.as_str().to_owned(),
        origin: "file",
        events,
        signatures: verification.report.signatures_verified,
    })
}

fn text(source: &Source, story: &Story) -> Vec<String> {
    let mut lines = vec![format!(
        "{} ({}): {} events verified, {} signatures valid — {}",
        source.name,
        source.origin,
        source.events.len(),
        source.signatures,
        story.phase
    )];
    lines.push(String::new());
    lines.extend(story.narrative.iter().cloned());
    lines.push(String::new());
    lines.push("timeline".to_owned());
    for event in &source.events {
        if let Some(line) = describe(event) {
            lines.push(format!("{:>4}  {}  {line}", event.seq, format_ms(event.at_ms)));
        }
    }
    lines
}
